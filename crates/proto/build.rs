//! Compiles every `.proto` under the workspace's `proto/` directory with protox (pure Rust, no
//! protoc), writes the descriptor set to OUT_DIR for tonic-reflection, and generates prost messages
//! plus tonic clients and servers from that same descriptor set.

use std::{
    env, fs, io,
    path::{Path, PathBuf},
};

/// Name of the encoded `FileDescriptorSet` in OUT_DIR; `lib.rs` includes it.
const DESCRIPTOR_FILE: &str = "jetmart_descriptor.binpb";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto").canonicalize()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Cargo scans a directory given to rerun-if-changed recursively, so added, removed and edited
    // protos all trigger a rebuild.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let mut protos = Vec::new();
    collect_protos(&proto_root, &mut protos)?;
    protos.sort();
    if protos.is_empty() {
        return Err(format!("no .proto files under {}", proto_root.display()).into());
    }

    // protox wants paths relative to an include dir; that keeps descriptor file names like
    // `jetmart/order/v1/events.proto`, matching what buf and grpcurl see.
    let relative: Vec<PathBuf> = protos
        .iter()
        .map(|p| p.strip_prefix(&proto_root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;

    // Imports (google/protobuf/*) are included so reflection clients can resolve every dependency;
    // source info is kept so the generated code carries the proto comments.
    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&relative)?;
    fs::write(
        out_dir.join(DESCRIPTOR_FILE),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    let mut config = tonic_prost_build::Config::new();
    // Every message implements prost::Name; full_name() is the CloudEvents ce-type.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
