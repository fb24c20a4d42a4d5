// Generates the SPIFFE Workload API gRPC stubs (server for the development
// agent, client for its tests) with a vendored protoc: no system protoc needed.
// Only the `dev-agent` feature serves the Workload API; without it there is
// nothing to generate.
//
// Also the build identity: the git commit and its date, from
// PRECINCT_GIT_COMMIT / PRECINCT_BUILD_DATE when set (image builds, where
// .git is not in the context), else from git. The date is the commit's
// (reproducible: the same commit builds the same binary), unless given.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    println!("cargo:rerun-if-env-changed=PRECINCT_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=PRECINCT_BUILD_DATE");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let commit = from_env("PRECINCT_GIT_COMMIT")
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = from_env("PRECINCT_BUILD_DATE")
        .or_else(|| git(&["log", "-1", "--format=%cI"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PRECINCT_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PRECINCT_BUILD_DATE={date}");
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
