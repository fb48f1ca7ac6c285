//! Compiles the protobuf definitions with protox (pure Rust, no `protoc` to install): Agora's own gRPC protocol
//! (`proto/agora/v1/agora.proto`) and the Mesos v1 subset the HTTP APIs speak (`proto/mesos/v1/...`). The Mesos
//! files' descriptors are also written to `OUT_DIR/mesos_v1.bin`, which `crate::mesos::codec` loads to map messages
//! to and from Mesos's JSON.

use std::path::PathBuf;

use prost::Message;

const AGORA: &str = "proto/agora/v1/agora.proto";
const MESOS: [&str; 4] = [
    "proto/mesos/v1/mesos.proto",
    "proto/mesos/v1/scheduler/scheduler.proto",
    "proto/mesos/v1/master/master.proto",
    "proto/mesos/v1/agent/agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in std::iter::once(AGORA).chain(MESOS) {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(std::iter::once(AGORA).chain(MESOS), ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut mesos = descriptors.clone();
    mesos.file.retain(|f| f.package().starts_with("mesos."));
    std::fs::write(out.join("mesos_v1.bin"), mesos.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
