//! The committed fuzz corpus (fuzz/corpus/), replayed on stable with the fuzz targets' own
//! decoding and checks, and every overlay that renders built with the real `kustomize build`:
//! whatever validation accepts either fails with an error or is YAML that kustomize accepts.
//!
//! The app base and config component come from examples/, placed where the tree's gitlinks are,
//! as a clone with submodules would have them.

use std::path::{Path, PathBuf};
use std::process::Command;

use shopset::render::Renderer;

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzzing;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().expect("file name").to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seed inputs", dir.display());
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).expect("read examples") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy example file");
    }
}

/// Writes the tree, fills its submodules from examples/ and builds every overlay; returns how many
/// built, or the first failure.
fn kustomize_builds(what: &str, validated: &fuzzing::Validated) -> Result<usize, String> {
    let dir = tempfile::TempDir::new().expect("temp dir");
    validated.tree.write_to(dir.path()).expect("write tree");
    let examples = repo().join("examples");
    copy_dir(&examples.join("app/base"), &dir.path().join("base").join(&validated.tier.spec.app.path));
    for cfg in &validated.configurations {
        let name = cfg.metadata.name.clone().unwrap_or_default();
        copy_dir(&examples.join("config/component"), &dir.path().join("config").join(name).join(&cfg.spec.path));
    }
    let overlays: Vec<String> = validated
        .tree
        .entries
        .keys()
        .filter_map(|p| p.strip_prefix("shopsets/").and_then(|rest| rest.strip_suffix("/kustomization.yaml")))
        .map(str::to_string)
        .collect();
    for name in &overlays {
        let overlay = dir.path().join("shopsets").join(name);
        let out =
            Command::new(shopset_e2e::tools::kustomize()).arg("build").arg(&overlay).output().expect("run kustomize");
        if !out.status.success() {
            let files: Vec<String> = ["kustomization.yaml", "namespace.yaml", "replicas.yaml"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(overlay.join(f)).ok().map(|text| format!("--- {f}\n{text}")))
                .collect();
            return Err(format!(
                "{what}: `kustomize build shopsets/{name}` failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                files.join("\n")
            ));
        }
    }
    Ok(overlays.len())
}

#[test]
fn render_corpus_renders_safely_and_builds_with_kustomize() {
    let renderer = Renderer::embedded().expect("embedded templates");
    let (mut built, mut failures) = (0, Vec::new());
    for (name, bytes) in corpus("render") {
        let case = fuzzing::decode(&bytes);
        match fuzzing::check_case(&renderer, &case) {
            Err(finding) => failures.push(format!("render/{name}: {finding}")),
            Ok(None) => {}
            Ok(Some(validated)) => match kustomize_builds(&format!("render/{name}"), &validated) {
                Ok(n) => built += n,
                Err(e) => failures.push(e),
            },
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(built >= 5, "only {built} overlays built: the seed corpus no longer reaches the renderer");
}

#[test]
fn manifests_corpus_loads_safely_and_builds_with_kustomize() {
    let renderer = Renderer::embedded().expect("embedded templates");
    let (mut built, mut failures) = (0, Vec::new());
    for (name, bytes) in corpus("manifests") {
        match fuzzing::check_manifests(&renderer, &bytes) {
            Err(finding) => failures.push(format!("manifests/{name}: {finding}")),
            Ok(trees) => {
                for validated in &trees {
                    match kustomize_builds(&format!("manifests/{name}"), validated) {
                        Ok(n) => built += n,
                        Err(e) => failures.push(e),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(built >= 4, "only {built} overlays built: the seed corpus no longer reaches the renderer");
}
