//! Compiles the .proto files with protox, so a fresh machine needs no system `protoc`.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/auth/v1/auth.proto", "proto/person/v1/person.proto"];
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Server reflection serves this set, so grpcurl can discover both services.
    std::fs::write(out.join("descriptor.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
