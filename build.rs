// Generates the SPIFFE Workload API gRPC stubs (server for the development
// agent, client for its tests) with a vendored protoc: no system protoc needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/workload.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(
            &["proto/workload.proto".into()],
            &["proto".into(), well_known],
        )?;
    Ok(())
}
