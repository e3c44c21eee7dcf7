//! `shopctl shop add|move|remove|where`: shops placed by the written policy, the manifests edited
//! in place (comments and every untouched line kept byte for byte), `--grow` writing the next
//! ShopSet's file, `--dry-run` writing nothing, refusals with exit 2 and nothing written, and
//! `--apply` against a real API server whose CEL rules refuse what shopctl refuses.

mod common;

use std::path::{Path, PathBuf};

use common::{Run, shopctl_command};
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

const EU_SHOPS: &str = "  shops: [shop-0001, shop-0002] # EU canaries\n  capacity: 3\n";
const US_SHOPS: &str = "  # US cells, keep sorted\n  shops:\n  - shop-1001 # the first\n  capacity: 2\n";

/// The example manifests, tier-0's ShopSets with capacities and comments (one flow list, one
/// block list), in a fresh directory.
fn manifests() -> (TempDir, PathBuf) {
    let work = TempDir::new().unwrap();
    let dir = work.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"] {
        let mut text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
        if file == "shopsets.yaml" {
            text = text.replace("  shops: [shop-0001, shop-0002]\n", EU_SHOPS);
            text = text.replace("  shops: [shop-1001]\n", US_SHOPS);
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

/// Every file of `dir` with its text.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), read(&p))).collect();
    files.sort();
    files
}

#[test]
fn add_grow_move_and_remove_edit_in_place_keeping_comments() {
    let (work, dir) = manifests();
    let w = work.path();
    let file = dir.join("shopsets.yaml");
    let original = read(&file);

    // Both have one free place, in the same (no) failure domain: the first by name.
    let run = shopctl(w, &["shop", "add", "shop-0003", "-f", "m"], &[]).success();
    assert!(run.stdout.contains("shop shop-0003 added to ShopSet canary-eu (tier tier-0,"), "{run}");
    assert!(run.stdout.contains("edited m/shopsets.yaml: commit it for review"), "{run}");
    let eu_added = original.replace("[shop-0001, shop-0002] #", "[shop-0001, shop-0002, shop-0003] #");
    assert_eq!(read(&file), eu_added);

    // canary-eu is full now; a block list gains a line after its last item.
    shopctl(w, &["shop", "add", "shop-1002", "-f", "m"], &[]).success();
    let us_added = eu_added.replace("  - shop-1001 # the first\n", "  - shop-1001 # the first\n  - shop-1002\n");
    assert_eq!(read(&file), us_added);

    // Every ShopSet full: refused without --grow, naming the next ShopSet; nothing written.
    let run = shopctl(w, &["shop", "add", "shop-1003", "-f", "m"], &[]).failure(2);
    for word in ["Tier/tier-0", "every ShopSet of the tier is full", "--grow", "ShopSet/canary-us-2", "fix: "] {
        assert!(run.stderr.contains(word), "stderr lacks {word:?}:\n{run}");
    }
    assert!(!dir.join("canary-us-2.yaml").exists());

    let run = shopctl(w, &["shop", "add", "shop-1003", "-f", "m", "--grow"], &[]).success();
    assert!(run.stdout.contains("new ShopSet canary-us-2 (a copy of canary-us)"), "{run}");
    let grown = read(&dir.join("canary-us-2.yaml"));
    for line in
        ["  name: canary-us-2\n", "  tier: tier-0\n", "  - shop-1003\n", "  capacity: 2\n", "newTag: 1.1.0-rc.1"]
    {
        assert!(grown.contains(line), "{grown}");
    }
    assert_eq!(read(&file), us_added, "growth leaves the other file alone");

    // Move: out of the flow list, into the new file's block list.
    let run = shopctl(w, &["shop", "move", "shop-0003", "--to", "canary-us-2", "-f", "m"], &[]).success();
    assert!(run.stdout.contains("shop shop-0003 moved to ShopSet canary-us-2 from ShopSet canary-eu"), "{run}");
    assert_eq!(read(&file), us_added.replace("[shop-0001, shop-0002, shop-0003] #", "[shop-0001, shop-0002] #"));
    assert!(read(&dir.join("canary-us-2.yaml")).contains("  - shop-1003\n  - shop-0003\n"));

    // Remove: the file is the original again, byte for byte.
    shopctl(w, &["shop", "remove", "shop-1002", "-f", "m"], &[]).success();
    assert_eq!(read(&file), original);

    let offline = [("KUBECONFIG", "/nonexistent/kubeconfig")];
    let run = shopctl(w, &["shop", "where", "shop-0003", "-f", "m"], &offline).success();
    assert!(run.stdout.contains("shop shop-0003: ShopSet canary-us-2, tier tier-0, destination"), "{run}");
    assert!(run.stdout.contains("defined in m/canary-us-2.yaml"), "{run}");
    assert!(run.stdout.contains("Application health: not known offline"), "{run}");

    // The result renders: the new ShopSet is a cell like the others.
    shopctl(w, &["render", "--offline", "-f", "m", "--tier", "tier-0", "--out", "out"], &[]).success();
    assert!(read(&w.join("out/applications/canary-us-2.yaml")).contains("canary-us-2"));
}

#[test]
fn dry_run_prints_the_diff_and_writes_nothing() {
    let (work, dir) = manifests();
    let before = snapshot(&dir);
    let run = shopctl(work.path(), &["shop", "add", "shop-0003", "-f", "m", "--dry-run"], &[]).success();
    assert!(run.stdout.contains("shop shop-0003 would be added to ShopSet canary-eu"), "{run}");
    assert!(run.stdout.contains("--- a/m/shopsets.yaml\n+++ b/m/shopsets.yaml\n"), "{run}");
    assert!(run.stdout.contains("+  shops: [shop-0001, shop-0002, shop-0003] # EU canaries\n"), "{run}");
    assert_eq!(snapshot(&dir), before);
    // Growth too: the new file shows as a diff, and is not written.
    shopctl(work.path(), &["shop", "add", "shop-0003", "-f", "m"], &[]).success();
    shopctl(work.path(), &["shop", "add", "shop-1002", "-f", "m"], &[]).success();
    let before = snapshot(&dir);
    let run = shopctl(work.path(), &["shop", "add", "shop-1003", "-f", "m", "--grow", "--dry-run"], &[]).success();
    assert!(run.stdout.contains("new file\n"), "{run}");
    assert!(run.stdout.contains("+  name: canary-us-2\n"), "{run}");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn refusals_exit_2_name_the_fix_and_write_nothing() {
    let (work, dir) = manifests();
    let w = work.path();
    shopctl(w, &["shop", "add", "shop-0003", "-f", "m"], &[]).success();
    let before = snapshot(&dir);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["shop", "add", "shop-1001", "-f", "m"],
            &[
                "shop \"shop-1001\"",
                "already served by ShopSet/canary-us (tier tier-0, spec.shops)",
                "shopctl shop move",
            ],
        ),
        (&["shop", "add", "shop-1001", "--tier", "tier-1", "-f", "m"], &["already served by ShopSet/canary-us"]),
        (
            &["shop", "add", "shop-9", "--tier", "tier-9", "-f", "m"],
            &["Tier/tier-9", "--tier \"tier-9\"", "Tiers: tier-0, tier-1"],
        ),
        (&["shop", "add", "bad/id", "-f", "m"], &["shop \"bad/id\"", shopset::rules::SHOP_ID[0].message]),
        (
            &["shop", "move", "shop-1001", "--to", "canary-eu", "-f", "m"],
            &["ShopSet/canary-eu: full (spec.capacity 3, serving 3)", "raise its spec.capacity"],
        ),
        (&["shop", "move", "shop-1001", "--to", "nope", "-f", "m"], &["ShopSet/nope", "--to names no ShopSet"]),
        (&["shop", "remove", "shop-7777", "-f", "m"], &["shop \"shop-7777\"", "served by no ShopSet"]),
        (&["shop", "where", "shop-7777", "-f", "m"], &["shop \"shop-7777\"", "served by no ShopSet"]),
    ];
    for (args, words) in cases {
        let run = shopctl(w, args, &[]).failure(2);
        for word in words.iter().chain(&["fix: "]) {
            assert!(run.stderr.contains(word), "{args:?}: stderr lacks {word:?}:\n{run}");
        }
        assert!(run.stdout.is_empty(), "{run}");
        assert_eq!(snapshot(&dir), before, "{args:?} wrote something");
    }
    // A manifest that is already over its capacity is refused with the rule's words.
    let file = dir.join("shopsets.yaml");
    std::fs::write(&file, read(&file).replace("  capacity: 3\n", "  capacity: 2\n")).unwrap();
    let before = snapshot(&dir);
    let run = shopctl(w, &["shop", "remove", "shop-1001", "-f", "m"], &[]).failure(2);
    assert!(run.stderr.contains(shopset::rules::SHOPS_OVER_CAPACITY), "{run}");
    assert_eq!(snapshot(&dir), before);
}

/// `--apply` server-side applies the edited ShopSets; the API server refuses more shops than the
/// capacity with the words shopctl uses; `where` reads the ShopSet from the cluster.
#[test]
fn apply_writes_the_shopsets_and_the_api_server_refuses_what_shopctl_refuses() {
    let (work, dir) = manifests();
    let w = work.path();
    let cp = ControlPlane::start();
    cp.kubectl_ok(["apply", "--server-side", "-k", repo_root().join("deploy/crds").to_str().unwrap()]);
    cp.kubectl_ok(["wait", "--for=condition=Established", "crd/shopsets.shopset.dev"]);
    cp.kubectl_ok(["create", "namespace", "shops"]);
    cp.kubectl_ok(["apply", "--server-side", "-n", "shops", "-f", dir.to_str().unwrap()]);
    let kubeconfig = cp.kubeconfig().to_str().unwrap().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let shops = |name: &str| cp.kubectl_ok(["get", "shopset", name, "-n", "shops", "-o", "jsonpath={.spec.shops}"]);

    let run = shopctl(w, &["shop", "add", "shop-0003", "-f", "m", "-n", "shops", "--apply"], &env).success();
    assert!(run.stdout.contains("applied to the cluster (server-side apply, field manager shopctl)"), "{run}");
    assert_eq!(shops("canary-eu"), r#"["shop-0001","shop-0002","shop-0003"]"#);

    shopctl(w, &["shop", "move", "shop-0003", "--to", "canary-us", "-f", "m", "-n", "shops", "--apply"], &env)
        .success();
    assert_eq!(shops("canary-eu"), r#"["shop-0001","shop-0002"]"#);
    assert_eq!(shops("canary-us"), r#"["shop-1001","shop-0003"]"#);

    let run = shopctl(w, &["shop", "where", "shop-0003", "-f", "m", "-n", "shops"], &env).success();
    assert!(run.stdout.contains("shop shop-0003: ShopSet canary-us, tier tier-0"), "{run}");
    assert!(!run.stdout.contains("not known offline"), "the cluster is reachable: {run}");

    // The same rule, straight to the API server.
    let bad = read(&dir.join("shopsets.yaml")).replacen("  capacity: 2\n", "  capacity: 1\n", 1);
    // --force-conflicts: shopctl manages the fields now; the rule, not the ownership, must refuse.
    let out = cp.kubectl_with_stdin(["apply", "--server-side", "--force-conflicts", "-n", "shops", "-f", "-"], &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the API server accepted more shops than the capacity");
    assert!(stderr.contains("spec.shops"), "{stderr}");
    assert!(stderr.contains(shopset::rules::SHOPS_OVER_CAPACITY), "{stderr}");
}
