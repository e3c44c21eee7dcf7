//! Fingerprints the renderer's own source (this crate, the embedded templates, the locked
//! dependency versions) as `SHOPSET_RENDER_SOURCE`: a render memo kept on disk by one build is
//! never served by another, whose code may render the same input differently.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let mut inputs = Vec::new();
    files(&manifest.join("src"), &mut inputs);
    files(&root.join("templates"), &mut inputs);
    inputs.push(root.join("Cargo.lock"));
    inputs.sort();
    // FNV-1a 64 over each file's name (relative) and bytes; a file that cannot be read counts as empty.
    let mut hash = 0xcbf29ce484222325u64;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
    };
    for path in &inputs {
        feed(path.strip_prefix(&root).unwrap_or(path).to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&std::fs::read(path).unwrap_or_default());
        feed(&[0]);
    }
    println!("cargo:rustc-env=SHOPSET_RENDER_SOURCE={hash:016x}");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=../../templates");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
}
