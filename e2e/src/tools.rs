//! Where the external tools live: `<repo>/.tools/bin`, filled by `e2e/install-tools`.
//!
//! Tests always run these by absolute path (or with [`path_env`] for child processes),
//! never whatever `kubectl` or `kustomize` happens to be on the machine's PATH.

use std::ffi::OsString;
use std::path::PathBuf;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    // cargo sets CARGO_MANIFEST_DIR when it runs a test or binary; prefer it to the compile-time
    // value, which goes stale when a shared target dir is reused by a checkout at another path
    // (cargo does not rebuild for that). Every package of the workspace sits one folder down.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).filter(|d| d.join("Cargo.toml").is_file());
    manifest_dir
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("every package lives in a folder of the repository")
        .to_path_buf()
}

/// `<repo>/.tools/bin`, where `e2e/install-tools` links every tool.
pub fn tools_bin() -> PathBuf {
    repo_root().join(".tools").join("bin")
}

/// The tool `name` in `<repo>/.tools/bin`.
///
/// # Panics
/// If it is not there (or its link is dangling): run `e2e/install-tools` first.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_bin().join(name);
    if !path.exists() {
        panic!("{} is missing: run e2e/install-tools first", path.display());
    }
    path
}

/// The project's `kubectl` (v1.34, with kustomize v5 built in).
pub fn kubectl() -> PathBuf {
    tool("kubectl")
}

/// The project's standalone `kustomize` v5.
pub fn kustomize() -> PathBuf {
    tool("kustomize")
}

/// A `PATH` value with `<repo>/.tools/bin` first, for child processes.
pub fn path_env() -> OsString {
    let mut dirs = vec![tools_bin()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries contain no separator")
}

/// A binary of this workspace (e.g. `shopset-controller`, `shopctl`), as `cargo build --workspace`
/// leaves it: in `$CARGO_TARGET_DIR/debug/` when that is set (relative to the repository root if
/// relative), else `<repo>/target/debug/`.
///
/// Tests of one package cannot ask cargo to build another package's binaries, so they run what is
/// there: build first.
///
/// # Panics
/// If the binary is missing: run `cargo build --workspace` first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    };
    let path = target.join("debug").join(name);
    if !path.is_file() {
        panic!("{} is missing: run `cargo build --workspace` first", path.display());
    }
    path
}
