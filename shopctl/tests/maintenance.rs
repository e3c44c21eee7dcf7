//! `shopctl maintenance on|off`: the manifest is edited in place (comments and layout kept), the
//! render follows (ConfigMap, Application sync policy), `--dry-run` writes nothing, bad input is
//! refused with exit 2 and leaves the file alone, and `--apply` writes the ShopSet to a real API
//! server, whose CEL rules refuse what shopctl refuses.

mod common;

use std::path::{Path, PathBuf};

use common::{Run, shopctl_command};
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

/// The example manifests with a comment in the ShopSets' file, in a fresh directory.
fn manifests() -> (TempDir, PathBuf) {
    let work = TempDir::new().unwrap();
    let dir = work.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"] {
        let mut text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
        if file == "shopsets.yaml" {
            text = text.replace("  shops: [shop-0001, shop-0002]\n", "  shops: [shop-0001, shop-0002] # EU canaries\n");
        }
        std::fs::write(dir.join(file), text).unwrap();
    }
    (work, dir)
}

fn shopctl(work: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = shopctl_command(&work.join("cache"), work);
    cmd.current_dir(work).args(args).envs(env.iter().copied());
    Run::of(cmd, args)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `shopctl render --offline` of tier-0, and one file of it.
fn rendered(work: &Path, file: &str) -> String {
    let _ = std::fs::remove_dir_all(work.join("out"));
    shopctl(work, &["render", "--offline", "-f", "m", "--tier", "tier-0", "--out", "out"], &[]).success();
    read(&work.join("out").join(file))
}

#[test]
fn on_and_off_edit_the_manifest_in_place_and_the_render_follows() {
    let (work, dir) = manifests();
    let w = work.path();
    let file = dir.join("shopsets.yaml");
    let original = read(&file);
    assert!(rendered(w, "applications/canary-eu.yaml").contains("automated:"));
    assert!(!rendered(w, "shopsets/canary-eu/kustomization.yaml").contains("MAINTENANCE"));

    let run =
        shopctl(w, &["maintenance", "on", "canary-eu", "--reason", "database migration", "-f", "m"], &[]).success();
    assert!(run.stdout.contains("ShopSet canary-eu now in maintenance since "), "{run}");
    assert!(run.stdout.contains("edited m/shopsets.yaml"), "{run}");
    let on = read(&file);
    // Every line of the original is still there, in order, and only the block was added after the shops.
    let since = on.lines().find_map(|l| l.trim().strip_prefix("since: ")).expect("since written").to_string();
    assert_eq!(
        on,
        original.replacen(
            "  shops: [shop-0001, shop-0002] # EU canaries\n",
            &format!(
                "  shops: [shop-0001, shop-0002] # EU canaries\n  maintenance:\n    reason: \"database migration\"\n    since: {since}\n"
            ),
            1
        )
    );
    assert!(!rendered(w, "applications/canary-eu.yaml").contains("automated"));
    assert!(rendered(w, "applications/canary-us.yaml").contains("automated:"));
    assert!(
        rendered(w, "shopsets/canary-eu/kustomization.yaml").contains("\"MAINTENANCE_SHOP_IDS=shop-0001,shop-0002\"")
    );

    // The same again keeps when it began.
    shopctl(w, &["maintenance", "on", "canary-eu", "--reason", "database migration", "-f", "m"], &[]).success();
    assert_eq!(read(&file), on);

    let run = shopctl(w, &["maintenance", "off", "canary-eu", "-f", "m"], &[]).success();
    assert!(run.stdout.contains("ShopSet canary-eu now out of maintenance"), "{run}");
    assert_eq!(read(&file), original, "off restores the file byte for byte");
    assert!(rendered(w, "applications/canary-eu.yaml").contains("automated:"));

    // Single shops: listed in the ConfigMap, automated sync stays on.
    let on_shop = ["maintenance", "on", "canary-eu", "--shop", "shop-0002", "--reason", "shop move", "-f", "m"];
    shopctl(w, &on_shop, &[]).success();
    assert!(read(&file).contains("    shops:\n    - shop-0002\n"), "{}", read(&file));
    assert!(rendered(w, "shopsets/canary-eu/kustomization.yaml").contains("\"MAINTENANCE_SHOP_IDS=shop-0002\""));
    assert!(rendered(w, "applications/canary-eu.yaml").contains("automated:"));
    let run =
        shopctl(w, &["maintenance", "off", "canary-eu", "--shop", "shop-0002", "-f", "m", "-o", "json"], &[]).success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["maintenance"], serde_json::Value::Null, "{run}");
    assert_eq!(report["changed"], true, "{run}");
    assert_eq!(read(&file), original);
}

#[test]
fn dry_run_prints_the_diff_and_writes_nothing() {
    let (work, dir) = manifests();
    let original = read(&dir.join("shopsets.yaml"));
    let run = shopctl(
        work.path(),
        &["maintenance", "on", "us-east", "--reason", "disk full", "-f", "m/shopsets.yaml", "--dry-run"],
        &[],
    )
    .success();
    assert!(run.stdout.contains("ShopSet us-east would be in maintenance since "), "{run}");
    assert!(run.stdout.contains("--- a/m/shopsets.yaml\n+++ b/m/shopsets.yaml\n"), "{run}");
    assert!(run.stdout.contains("   namespace: shops-us-east\n+  maintenance:\n+    reason: \"disk full\"\n"), "{run}");
    assert_eq!(read(&dir.join("shopsets.yaml")), original);
}

#[test]
fn bad_input_is_refused_with_exit_2_and_the_file_is_left_alone() {
    let (work, dir) = manifests();
    let w = work.path();
    let original = read(&dir.join("shopsets.yaml"));
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["maintenance", "on", "canary-eu", "--shop", "shop-9999", "--reason", "x", "-f", "m"],
            &[
                "ShopSet/canary-eu",
                "spec.maintenance.shops",
                "\"shop-9999\"",
                shopset::rules::MAINTENANCE_SHOP_NOT_SERVED,
            ],
        ),
        (
            &["maintenance", "on", "canary-eu", "--reason", "", "-f", "m"],
            &["ShopSet/canary-eu", "spec.maintenance.reason", "\"\"", shopset::rules::MAINTENANCE_REASON[0].message],
        ),
        (&["maintenance", "off", "nope", "-f", "m"], &["ShopSet/nope", "not found"]),
    ];
    for (args, words) in cases {
        let run = shopctl(w, args, &[]).failure(2);
        for word in words.iter().chain(&["fix: "]) {
            assert!(run.stderr.contains(word), "{args:?}: stderr lacks {word:?}:\n{run}");
        }
        assert!(run.stdout.is_empty(), "{run}");
        assert_eq!(read(&dir.join("shopsets.yaml")), original, "{args:?} changed the file");
    }
    // Turning single shops off while the whole ShopSet is in maintenance says what to do instead.
    shopctl(w, &["maintenance", "on", "canary-eu", "--reason", "x", "-f", "m"], &[]).success();
    let whole = read(&dir.join("shopsets.yaml"));
    let run = shopctl(w, &["maintenance", "off", "canary-eu", "--shop", "shop-0001", "-f", "m"], &[]).failure(2);
    assert!(run.stderr.contains("the whole ShopSet is in maintenance"), "{run}");
    assert!(run.stderr.contains("fix: run `shopctl maintenance off canary-eu` without --shop"), "{run}");
    assert_eq!(read(&dir.join("shopsets.yaml")), whole);
}

/// `--apply` server-side applies the edited ShopSet; the API server's CEL rule refuses a shop the
/// ShopSet does not serve with the words shopctl uses; `kubectl get` shows the reason.
#[test]
fn apply_writes_the_shopset_and_the_api_server_refuses_what_shopctl_refuses() {
    let (work, dir) = manifests();
    let w = work.path();
    let cp = ControlPlane::start();
    cp.kubectl_ok(["apply", "--server-side", "-k", repo_root().join("deploy/crds").to_str().unwrap()]);
    cp.kubectl_ok(["wait", "--for=condition=Established", "crd/shopsets.shopset.dev"]);
    cp.kubectl_ok(["create", "namespace", "shops"]);
    cp.kubectl_ok(["apply", "--server-side", "-n", "shops", "-f", dir.to_str().unwrap()]);
    let kubeconfig = cp.kubeconfig().to_str().unwrap().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];

    let run = shopctl(
        w,
        &["maintenance", "on", "canary-us", "--reason", "payment provider outage", "-f", "m", "-n", "shops", "--apply"],
        &env,
    )
    .success();
    assert!(run.stdout.contains("applied to the cluster (server-side apply, field manager shopctl)"), "{run}");
    let reason =
        cp.kubectl_ok(["get", "shopset", "canary-us", "-n", "shops", "-o", "jsonpath={.spec.maintenance.reason}"]);
    assert_eq!(reason, "payment provider outage");
    let table = cp.kubectl_ok(["get", "shopsets", "-n", "shops"]);
    assert!(table.lines().next().unwrap().contains("MAINTENANCE"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("canary-us") && l.contains("payment provider outage")), "{table}");

    shopctl(w, &["maintenance", "off", "canary-us", "-f", "m", "-n", "shops", "--apply"], &env).success();
    let gone = cp.kubectl_ok(["get", "shopset", "canary-us", "-n", "shops", "-o", "jsonpath={.spec.maintenance}"]);
    assert_eq!(gone, "", "off --apply removes spec.maintenance that shopctl set");

    // The same bad input, straight to the API server.
    let bad = read(&dir.join("shopsets.yaml")).replacen(
        "  shops: [shop-1001]\n",
        "  shops: [shop-1001]\n  maintenance:\n    reason: x\n    since: \"2026-12-01T08:00:00Z\"\n    shops: [shop-0001]\n",
        1,
    );
    let out = cp.kubectl_with_stdin(["apply", "--server-side", "-n", "shops", "-f", "-"], &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the API server accepted a maintenance shop the ShopSet does not serve");
    assert!(stderr.contains("spec.maintenance.shops"), "{stderr}");
    assert!(stderr.contains(shopset::rules::MAINTENANCE_SHOP_NOT_SERVED), "{stderr}");
}

/// After a sync, the system branch carries the maintenance; `status` shows since when and why, and
/// `doctor` reports a maintenance older than `--maintenance-max-age` with the command that ends it.
#[test]
fn sync_status_and_doctor_show_the_maintenance() {
    let f = common::Fixture::daemon();
    let m = f.manifests().to_str().unwrap().to_string();
    f.sync_ok(&[]);
    let no_cluster = [("KUBECONFIG", "/nonexistent/kubeconfig")];
    f.shopctl(&["maintenance", "on", "canary-eu", "--reason", "database migration", "-f", &m]).success();
    // Begun long ago, as a forgotten maintenance would have.
    let file = f.manifests().join("shopsets.yaml");
    let text = read(&file);
    let since = text.lines().find_map(|l| l.trim().strip_prefix("since: ")).unwrap().to_string();
    std::fs::write(&file, text.replace(&since, "\"2000-01-01T00:00:00Z\"")).unwrap();
    f.sync_ok(&["--tier", "tier-0"]);
    let app = f.system_git(&["show", "tier-0:applications/canary-eu.yaml"]);
    assert!(!app.contains("automated"), "{app}");
    let overlay = f.system_git(&["show", "tier-0:shopsets/canary-eu/kustomization.yaml"]);
    assert!(overlay.contains("\"MAINTENANCE_SHOP_IDS=shop-0001,shop-0002\""), "{overlay}");

    let run = f.shopctl_env(&["status", "tier-0", "-f", &m], &no_cluster).success();
    assert!(run.stdout.contains("in maintenance: ShopSet canary-eu since 2000-01-01T00:00:00Z ("), "{run}");
    assert!(run.stdout.contains(" ago): database migration"), "{run}");

    let run = f.shopctl_env(&["doctor", "tier-0", "-f", &m], &no_cluster).failure(3);
    let problem = run.stdout.lines().find(|l| l.contains("Problem: ")).unwrap_or_default();
    assert!(
        problem.contains("ShopSet canary-eu: the whole ShopSet in maintenance for ")
            && problem.contains("(since 2000-01-01T00:00:00Z, longer than 7d 0h): database migration"),
        "{run}"
    );
    assert!(run.stdout.contains(&format!("shopctl maintenance off canary-eu -f {m}")), "{run}");
    f.shopctl_env(&["doctor", "tier-0", "-f", &m, "--maintenance-max-age", "100000d"], &no_cluster).success();

    // Ended as doctor says: no finding left.
    f.shopctl(&["maintenance", "off", "canary-eu", "-f", &m]).success();
    f.shopctl_env(&["doctor", "tier-0", "-f", &m], &no_cluster).success();
}
