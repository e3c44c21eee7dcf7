//! The committed CRDs are generated from the Rust types; this fails when they drift apart.
//! Regenerate with `cargo run -p shopctl -- crds --write deploy/crds`.

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = shopset_e2e::tools::repo_root().join("deploy/crds");
    for (name, expected) in shopset::api::crd_files().expect("CRDs serialize") {
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| {
            panic!("deploy/crds/{name} is missing ({e}); run `cargo run -p shopctl -- crds --write deploy/crds`")
        });
        assert!(
            committed == expected,
            "deploy/crds/{name} differs from the Rust types; run `cargo run -p shopctl -- crds --write deploy/crds`"
        );
    }
    let committed: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/crds exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let generated: Vec<String> = shopset::api::crd_files().unwrap().into_iter().map(|(n, _)| n).collect();
    for name in committed {
        assert!(generated.contains(&name), "deploy/crds/{name} is not generated from the types: remove it");
    }
}

#[test]
fn crds_have_printer_columns_validation_and_descriptions() {
    let yaml = shopset::api::crds_yaml().unwrap();
    for needle in [
        "name: Ready",
        "name: Branch",
        "name: App",
        "x-kubernetes-validations",
        "fieldPath: .spec.branch",
        "message: 'is immutable: create a new Tier for another branch'",
        "x-kubernetes-list-type: set",
        "fieldPath: .metadata.name",
        "rule: self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "Path of the Kustomize base inside the repository",
    ] {
        assert!(yaml.contains(needle), "the generated CRDs lack {needle:?}");
    }
}
