// Generates the SPIFFE Workload API gRPC stubs (server for the development
// agent, client for its tests) with a vendored protoc: no system protoc needed.
// Only the `dev-agent` feature serves the Workload API; without it there is
// nothing to generate.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    #[cfg(feature = "dev-agent")]
    {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        let well_known = protoc_bin_vendored::include_path()?;
        // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
        unsafe { std::env::set_var("PROTOC", protoc) };
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .compile_protos(
                &["proto/workload.proto".into()],
                &["proto".into(), well_known],
            )?;
    }
    Ok(())
}
