//! Compiles every `.proto` file under `agriportal/` with protox (pure Rust), so building needs
//! no `protoc` on the machine. Files are found, not listed: a new service's contract is a new
//! file (and its package module in `src/lib.rs`), nothing else.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    find_protos(Path::new("agriportal"), &mut files)?;
    // Sorted, so the descriptor set (and so the binary) does not depend on directory order.
    files.sort();
    println!("cargo:rerun-if-changed=agriportal");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("agriportal_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

fn find_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            // A new directory must re-run the build too, not only a changed file.
            println!("cargo:rerun-if-changed={}", path.display());
            find_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
