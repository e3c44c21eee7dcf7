//! `shopctl argocd-creds`: Argo CD's credential templates for a tier's repositories, printed byte
//! for byte as the controller applies them (the library's `repo_creds::secrets`, which the
//! reconcile applies), from the Tier's manifest and the credentials Secret given with
//! `--credentials`. No repository and no cluster is contacted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::core::v1::Secret;
use shopset::manifests::Inventory;
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

const PASSWORD: &str = "tok-argocd-creds-7c1e";

fn shopctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shopctl"));
    cmd.args(args).stdin(Stdio::null());
    for var in ["SHOPSET_CREDENTIALS", "SHOPSET_GIT_USERNAME", "SHOPSET_GIT_PASSWORD", "SHOPSET_GIT_TOKEN"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run shopctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The examples, tier-0 naming the Secret `git-credentials`, the configuration on another host.
fn manifests(dir: &Path, credentials: bool) -> PathBuf {
    let out = dir.join("manifests");
    std::fs::create_dir_all(&out).unwrap();
    for file in ["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"] {
        let mut text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
        if file == "configuration.yaml" {
            text = text
                .replace("https://git.example.com/acme/shop-config.git", "https://config.example.org/shop-config.git");
        }
        if file == "tier-0.yaml" && credentials {
            assert_eq!(text.matches("\n  interval: 1m\n").count(), 1, "examples/tier-0.yaml changed: adapt this test");
            text = text.replace(
                "\n  interval: 1m\n",
                "\n  interval: 1m\n  credentials:\n    secretRef:\n      name: git-credentials\n",
            );
        }
        std::fs::write(out.join(file), text).unwrap();
    }
    out
}

fn credentials_file(dir: &Path) -> PathBuf {
    let path = dir.join("git-credentials.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: git-credentials\nstringData:\n  username: shopset\n  password: {PASSWORD}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn prints_the_secrets_the_controller_applies_byte_for_byte() {
    let dir = TempDir::new().unwrap();
    let (manifests, creds) = (manifests(dir.path(), true), credentials_file(dir.path()));
    let out = shopctl(
        &["argocd-creds", "tier-0", "-f", manifests.to_str().unwrap(), "--namespace", "shops"],
        &[("SHOPSET_CREDENTIALS", creds.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);

    // What the reconcile builds for the same Tier (in namespace shops) and Secret.
    let inventory = Inventory::load(&[manifests]).unwrap();
    let input = inventory.tier_input("tier-0").unwrap();
    let mut tier = input.tier.clone();
    tier.metadata.namespace = Some("shops".into());
    let secret: Secret = serde_yaml::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    let auth = shopset::credentials::from_secret(&secret).unwrap();
    let expected = shopset::repo_creds::secrets(&tier, &input.configurations, &auth);
    assert_eq!(printed, shopset::repo_creds::to_yaml(&expected).unwrap(), "byte for byte");

    // Two hosts: two templates, each an Argo CD repo-creds Secret in Argo CD's namespace.
    let docs: Vec<Secret> = printed.split("---\n").map(|d| serde_yaml::from_str(d).unwrap()).collect();
    let mut urls = Vec::new();
    for doc in &docs {
        assert_eq!(doc.metadata.namespace.as_deref(), Some("argocd"));
        let labels = doc.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["argocd.argoproj.io/secret-type"], "repo-creds");
        assert_eq!(labels["shopset.dev/tier"], "tier-0");
        assert_eq!(labels["shopset.dev/tier-namespace"], "shops");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "shopset-controller");
        let data = doc.data.clone().unwrap_or_default();
        let value = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(
            (value("type"), value("username"), value("password")),
            ("git".into(), "shopset".into(), PASSWORD.into())
        );
        assert!(doc.metadata.name.as_deref().unwrap().starts_with("shopset-shops-tier-0-"), "{doc:?}");
        urls.push(value("url"));
    }
    urls.sort();
    assert_eq!(urls, ["https://config.example.org/", "https://git.example.com/acme/"]);
    assert!(!text(&out.stderr).contains(PASSWORD), "{}", text(&out.stderr));

    // Without --namespace, the manifest's namespace (none: `default`), as the API server would give it.
    let out = shopctl(
        &["argocd-creds", "tier-0", "-f", dir.path().join("manifests").to_str().unwrap()],
        &[("SHOPSET_CREDENTIALS", creds.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("shopset.dev/tier-namespace: default"), "{}", text(&out.stdout));
}

#[test]
fn nothing_for_a_tier_without_credentials_and_an_error_without_the_secret() {
    let dir = TempDir::new().unwrap();
    let manifests = manifests(dir.path(), false);
    let out = shopctl(&["argocd-creds", "tier-0", "-f", manifests.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no template: the Tier names no credentials");
    assert!(text(&out.stderr).contains("names no credentials"), "{}", text(&out.stderr));

    let dir = TempDir::new().unwrap();
    let manifests = self::manifests(dir.path(), true);
    let out = shopctl(&["argocd-creds", "tier-0", "-f", manifests.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("git-credentials") && stderr.contains("--credentials"),
        "names the Secret and the fix: {stderr}"
    );
    assert_eq!(text(&out.stdout), "");
}
