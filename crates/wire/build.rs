//! Generates the gRPC code of `proto/synfed.proto` with a vendored `protoc`, so building needs
//! no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/synfed.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &[proto], &["../../proto"])?;
    Ok(())
}
