//! Compiles `src/gitops/stream_layout.c` against the libgit2 headers that libgit2-sys builds with,
//! so a test can hold the socket stream's Rust layout against libgit2's own (see stream.rs).

fn main() {
    println!("cargo:rerun-if-changed=src/gitops/stream_layout.c");
    // libgit2-sys says where its headers are: OUT_DIR (`include/` below it) for the vendored build,
    // the include directory itself for a system libgit2.
    let root = std::env::var("DEP_GIT2_ROOT").expect("libgit2-sys sets DEP_GIT2_ROOT");
    let root = std::path::PathBuf::from(root);
    let include = if root.join("include").join("git2.h").exists() { root.join("include") } else { root };
    cc::Build::new().file("src/gitops/stream_layout.c").include(include).compile("shopset_stream_layout");
}
