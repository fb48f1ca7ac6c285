//! Compiles `proto/agora/v1/agora.proto` with protox (pure Rust, no `protoc` to install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/agora/v1/agora.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
