//! Compiles `wovenet/v1/*.proto` with protox (pure Rust: no `protoc` needed)
//! and generates prost messages plus tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=wovenet");
    let files = [
        "wovenet/v1/control.proto",
        "wovenet/v1/site.proto",
        "wovenet/v1/apps.proto",
        "wovenet/v1/events.proto",
    ];
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
