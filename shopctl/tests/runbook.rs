//! docs/runbook.md, followed literally: every `sh` block marked `<!-- runbook: NAME -->` is taken
//! from the document as it is and run with `sh -eu` in a fresh directory, with the runbook's
//! variables (`$TIER`, `$APP_URL`, ...) set to a real git daemon's repositories. The system branch
//! the blocks push is then compared by tree hash with what ShopSet writes: the library's render
//! written through its git engine, and `shopctl sync` itself (which must find nothing to commit,
//! or, into a fresh branch, write the same tree). The document cannot drift from the product
//! without this test failing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Fixture;
use shopset::gitops::{Auth, GitCache};
use shopset::manifests::Inventory;
use shopset::render::{Entry, OWNED_PATHS, Pins, RenderInput, Renderer, is_owned};
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{branch_head, commit_files};
use shopset_e2e::tools::{repo_root, tools_bin};

/// Every block of the runbook, and the tests below run each of them.
const BLOCKS: &[&str] = &[
    "add-shop-by-hand",
    "apply-applications",
    "argocd-creds",
    "argocd-down",
    "bump",
    "create-branches",
    "first-render",
    "maintenance-by-hand",
    "move-by-hand",
    "policy-facts",
    "promote",
    "promote-done",
    "rerender",
    "rollback",
    "verify",
];

/// The marked `sh` blocks of docs/runbook.md: name -> script.
fn runbook() -> BTreeMap<String, String> {
    let path = repo_root().join("docs").join("runbook.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut blocks = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("<!-- runbook: ").and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        assert_eq!(
            lines.next().map(str::trim),
            Some("```sh"),
            "runbook block {name}: the marker must be followed by a ```sh fence"
        );
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        assert!(blocks.insert(name.to_string(), body).is_none(), "runbook block {name} is defined twice");
    }
    blocks
}

/// Runs runbook blocks as a person would: a shell, an empty directory, the variables set, git's
/// identity in a config file of its own, `shopctl`, `kustomize` and `kubectl` on PATH.
struct Hand<'a> {
    f: &'a Fixture,
    blocks: BTreeMap<String, String>,
    home: PathBuf,
    kubeconfig: Option<PathBuf>,
    runs: std::cell::Cell<usize>,
}

impl<'a> Hand<'a> {
    fn new(f: &'a Fixture) -> Self {
        let home = f.work.path().join("hand-home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = Runbook Reader\n\temail = oncall@shopset.invalid\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n[credential]\n\thelper =\n",
        )
        .unwrap();
        Hand { f, blocks: runbook(), home, kubeconfig: None, runs: std::cell::Cell::new(0) }
    }

    fn command(&self, block: &str, vars: &[(&str, &str)]) -> Command {
        let script = self.blocks.get(block).unwrap_or_else(|| panic!("docs/runbook.md has no block {block}"));
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let dir = self.f.work.path().join(format!("hand-{n}-{block}"));
        std::fs::create_dir(&dir).unwrap();
        let shopctl_dir = Path::new(env!("CARGO_BIN_EXE_shopctl")).parent().unwrap().to_path_buf();
        let path = std::env::join_paths(
            [shopctl_dir, tools_bin()]
                .into_iter()
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-eu").arg("-c").arg(script).current_dir(&dir).env_clear().stdin(Stdio::null());
        cmd.env("PATH", path)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_GLOBAL", self.home.join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("SHOPSET_CACHE_DIR", self.f.work.path().join("hand-cache"))
            .env("MANIFESTS", self.f.manifests())
            .env("APP_URL", &self.f.app)
            .env("CONFIG", "shop-config")
            .env("CONFIG_URL", &self.f.config)
            .env("SYSTEM_URL", &self.f.system)
            .env("ARGOCD_NAMESPACE", "argocd");
        match &self.kubeconfig {
            Some(k) => cmd.env("KUBECONFIG", k),
            None => cmd.env("KUBECONFIG", self.home.join("no-cluster")),
        };
        cmd.envs(vars.iter().copied());
        cmd
    }

    /// Runs a block that must succeed; returns what it printed (stdout and stderr).
    fn run(&self, block: &str, vars: &[(&str, &str)]) -> String {
        let out = self.command(block, vars).output().expect("run sh");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "runbook block {block} with {vars:?} failed ({}):\n{text}\n--- the block:\n{}",
            out.status,
            self.blocks[block]
        );
        text
    }

    /// Runs a block that must fail; returns what it printed.
    fn run_fails(&self, block: &str, vars: &[(&str, &str)]) -> String {
        let out = self.command(block, vars).output().expect("run sh");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "runbook block {block} with {vars:?} should have failed:\n{text}");
        text
    }
}

/// `git rev-parse <branch>^{tree}` in the system repository on the server.
fn tree(f: &Fixture, branch: &str) -> String {
    f.system_git(&["rev-parse", &format!("{branch}^{{tree}}")])
}

/// The tree ShopSet writes for `tier` at the current heads of its app and configuration branches:
/// the library's render for ShopSet's paths, and every other file of the branch as it is (read
/// with the git CLI), written as git objects by its git engine (nothing is pushed).
fn shopset_tree(f: &Fixture, tier: &str) -> String {
    let inventory = Inventory::load(&[f.manifests()]).expect("manifests load");
    let input = inventory.tier_input(tier).expect("tier input");
    let pins = Pins {
        app: branch_head(&f.app, tier).expect("app tier branch"),
        configurations: [("shop-config".to_string(), branch_head(&f.config, tier).expect("config tier branch"))].into(),
    };
    let rendered = Renderer::embedded()
        .unwrap()
        .render(RenderInput {
            tier: &input.tier,
            configurations: &input.configurations,
            shopsets: &input.shopsets,
            pins: &pins,
        })
        .expect("render");
    let mut rendered = rendered;
    for path in f.system_git(&["ls-tree", "-r", "--name-only", tier]).lines().filter(|p| !is_owned(p)) {
        let out = Command::new("git")
            .current_dir(f.repo_path("system"))
            .args(["cat-file", "blob", &format!("{tier}:{path}")])
            .output()
            .expect("run git");
        assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
        rendered.entries.insert(path.into(), Entry::file(out.stdout));
    }
    let scratch = f.work.path().join("scratch-cache");
    let remote = GitCache::new(&scratch).open(&f.system, &Auth::default()).expect("open scratch cache");
    remote.write_tree(&rendered).expect("write tree").to_string()
}

/// Asserts the system branch of `tier` holds exactly the tree ShopSet would write; on a mismatch
/// the message has `shopctl sync --dry-run`'s diff.
fn assert_tree_is_shopsets(f: &Fixture, tier: &str, step: &str) {
    let (ours, theirs) = (tree(f, tier), shopset_tree(f, tier));
    if ours != theirs {
        let manifests = f.manifests();
        let run = f.shopctl(&["sync", "-f", manifests.to_str().unwrap(), "--tier", tier, "--dry-run"]);
        panic!("{step}: the by-hand tree {ours} of {tier} differs from ShopSet's {theirs}:\n{run}");
    }
}

/// `shopctl sync` of `tier` commits nothing: the by-hand branch is what the controller writes.
fn assert_sync_is_a_no_op(f: &Fixture, tier: &str) {
    let before = branch_head(&f.system, tier);
    let run = f.sync_ok(&["--tier", tier]);
    assert!(run.stdout.contains("no change: system branch already at"), "{run}");
    assert_eq!(branch_head(&f.system, tier), before, "sync moved {tier}:\n{run}");
}

/// Files a person keeps on a system branch, outside ShopSet's paths.
const KEPT: &[(&str, &str)] =
    &[("NOTES.md", "# Incident notes\n\nkeep me\n"), (".github/CODEOWNERS", "* @acme/platform\n")];

/// The system branch `branch` holds the files of [`KEPT`], byte for byte.
fn assert_kept(f: &Fixture, branch: &str) {
    for (path, content) in KEPT {
        let out = Command::new("git")
            .current_dir(f.repo_path("system"))
            .args(["cat-file", "blob", &format!("{branch}:{path}")])
            .output()
            .expect("run git");
        assert!(out.status.success(), "{branch}: {path} is gone: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), *content, "{branch}: {path} changed");
    }
}

fn example(path: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples").join(path)).unwrap()
}

#[test]
fn every_block_of_the_runbook_is_run_by_these_tests() {
    let names: Vec<String> = runbook().into_keys().collect();
    assert_eq!(
        names, BLOCKS,
        "docs/runbook.md's blocks and the ones these tests run differ: add a test for a new block"
    );
}

#[test]
fn first_render_and_bump_by_hand_write_the_tree_shopctl_sync_writes() {
    let f = Fixture::daemon();
    let hand = Hand::new(&f);

    // 1. Tier branches from the default branch, 2. the first render.
    hand.run("create-branches", &[("TIER", "tier-0"), ("FROM", "main")]);
    assert_eq!(branch_head(&f.app, "tier-0"), branch_head(&f.app, "main"));
    assert_eq!(branch_head(&f.config, "tier-0"), branch_head(&f.config, "main"));
    let first = hand.run("first-render", &[("TIER", "tier-0")]);
    assert!(
        first.contains(&format!("ShopSet owns these paths of a system branch: {}", OWNED_PATHS.join(", "))),
        "shopctl render names ShopSet's paths:\n{first}"
    );
    assert_tree_is_shopsets(&f, "tier-0", "first render");
    let by_hand = tree(&f, "tier-0");

    // shopctl sync into a fresh tier-0 branch of the same repository (the by-hand one moved
    // aside: the URL is part of the tree) writes the very same tree.
    f.system_git(&["update-ref", "refs/heads/by-hand/tier-0", "tier-0"]);
    f.system_git(&["update-ref", "-d", "refs/heads/tier-0"]);
    let run = f.sync_ok(&["--tier", "tier-0"]);
    assert!(run.stdout.contains("committed"), "{run}");
    assert_eq!(tree(&f, "tier-0"), by_hand, "shopctl sync wrote another tree than the runbook:\n{run}");

    // A person keeps notes and owners on the branch: every step below keeps them, by hand or not.
    commit_files(&f.read_url("system"), "tier-0", KEPT, "notes and owners, by hand");

    // 3. A merge into the app and the configuration tier branches, pinned by hand.
    let checkout = example("app/base/checkout.yaml").replace("checkout:1.0.0", "checkout:1.2.0");
    let app_head =
        commit_files(&f.read_url("app"), "tier-0", &[("base/checkout.yaml", &checkout)], "Bump checkout to 1.2.0");
    let component = example("config/component/kustomization.yaml").replace("LOG_LEVEL=info", "LOG_LEVEL=debug");
    let config_head =
        commit_files(&f.read_url("config"), "tier-0", &[("component/kustomization.yaml", &component)], "Debug logging");
    hand.run("bump", &[("TIER", "tier-0")]);
    assert_eq!(f.system_git(&["rev-parse", "tier-0:base"]), app_head);
    assert_eq!(f.system_git(&["rev-parse", "tier-0:config/shop-config"]), config_head);
    assert_tree_is_shopsets(&f, "tier-0", "bump");

    // 9. The runbook's own check, then the controller's step: nothing left to do.
    let verify = hand.run("verify", &[("TIER", "tier-0")]);
    assert!(verify.contains("no change: the system branch is up to date"), "{verify}");
    assert_sync_is_a_no_op(&f, "tier-0");
    assert_kept(&f, "tier-0");

    // A bump with nothing new is a no-op too (no empty commit).
    let head = branch_head(&f.system, "tier-0");
    hand.run("bump", &[("TIER", "tier-0")]);
    assert_eq!(branch_head(&f.system, "tier-0"), head);
}

#[test]
fn with_the_controller_stopped_promotion_rollback_and_rerender_complete_by_hand() {
    let f = Fixture::daemon();
    let hand = Hand::new(&f);
    let manifests = f.manifests();
    let manifests = manifests.to_str().unwrap();

    // Both tiers set up by hand: tier-1's branches start at tier-0's (its promotion source).
    hand.run("create-branches", &[("TIER", "tier-0"), ("FROM", "main")]);
    hand.run("first-render", &[("TIER", "tier-0")]);
    hand.run("create-branches", &[("TIER", "tier-1"), ("FROM", "tier-0")]);
    hand.run("first-render", &[("TIER", "tier-1")]);
    assert_tree_is_shopsets(&f, "tier-0", "first render of tier-0");
    assert_tree_is_shopsets(&f, "tier-1", "first render of tier-1");
    let v1 = branch_head(&f.app, "tier-1").unwrap();

    // A change lands on tier-0 and is pinned by hand.
    let checkout = example("app/base/checkout.yaml").replace("checkout:1.0.0", "checkout:1.2.0");
    let v2 = commit_files(&f.read_url("app"), "tier-0", &[("base/checkout.yaml", &checkout)], "Bump checkout to 1.2.0");
    hand.run("bump", &[("TIER", "tier-0")]);
    assert_tree_is_shopsets(&f, "tier-0", "bump of tier-0");

    // `shopctl diff` previews the promotion without moving anything.
    let preview =
        f.shopctl_env(&["diff", "tier-0", "tier-1", "-f", manifests], &[("PATH", &path_with_tools())]).success();
    assert!(preview.stdout.contains("+        image: ghcr.io/acme/checkout:1.2.0"), "{preview}");
    assert_eq!(branch_head(&f.app, "tier-1").as_deref(), Some(v1.as_str()));

    // 7. Promote by plain git push, 3. pin it by hand.
    hand.run("promote", &[("TIER", "tier-1"), ("FROM", "tier-0")]);
    assert_eq!(branch_head(&f.app, "tier-1").as_deref(), Some(v2.as_str()));
    assert_eq!(branch_head(&f.config, "tier-1"), branch_head(&f.config, "tier-0"));
    // The marker written by hand is the one shopctl writes: it reads it, and sync holds the pins.
    let status = f.shopctl(&["status", "tier-1", "-f", manifests]).success();
    assert!(status.stdout.contains("in progress: the promotion tier-0 -> tier-1"), "{status}");
    assert!(status.stdout.contains(&format!("app                  {} -> {}", &v1[..7], &v2[..7])), "{status}");
    f.shopctl(&["sync", "-f", manifests, "--tier", "tier-1"]).failure(3);
    assert_ne!(f.system_git(&["rev-parse", "tier-1:base"]), v2, "the pins wait for the marker");
    hand.run("bump", &[("TIER", "tier-1")]);
    assert_eq!(f.system_git(&["rev-parse", "tier-1:base"]), v2);
    assert_tree_is_shopsets(&f, "tier-1", "bump after promotion");
    hand.run("promote-done", &[("TIER", "tier-1")]);
    assert_eq!(f.system_git(&["for-each-ref", "refs/shopset/"]), "", "the marker is removed");
    // The controller, started again, has nothing to do on either tier.
    assert_sync_is_a_no_op(&f, "tier-0");
    assert_sync_is_a_no_op(&f, "tier-1");

    // 8. Roll tier-1 back to v1 under a lease, pin it by hand.
    hand.run("rollback", &[("TIER", "tier-1"), ("GOOD", &v1)]);
    assert_eq!(branch_head(&f.app, "tier-1").as_deref(), Some(v1.as_str()));
    hand.run("bump", &[("TIER", "tier-1")]);
    assert_eq!(f.system_git(&["rev-parse", "tier-1:base"]), v1);
    assert_tree_is_shopsets(&f, "tier-1", "bump after rollback");
    assert_sync_is_a_no_op(&f, "tier-1");

    // 4. A manifest change (replicas, a new ShopSet, one removed), re-rendered by hand.
    let shopsets = example("shopsets.yaml").replace("replicas: 3", "replicas: 5");
    let (keep, _us_east) = shopsets.split_at(
        shopsets
            .find("---\napiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: us-east")
            .expect("us-east in the example"),
    );
    let changed = format!(
        concat!(
            "{keep}---\napiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: ap-south\n",
            "spec:\n  tier: tier-1\n  configuration: shop-config\n  shops: [shop-2001]\n",
            "  images:\n  - name: ghcr.io/acme/storefront\n    newTag: 1.0.1\n"
        ),
        keep = keep
    );
    f.write_manifest("shopsets.yaml", &changed);
    commit_files(&f.read_url("system"), "tier-1", KEPT, "notes and owners, by hand");
    hand.run("rerender", &[("TIER", "tier-1")]);
    assert_kept(&f, "tier-1");
    let files = f.system_git(&["ls-tree", "-r", "--name-only", "tier-1"]);
    assert!(files.contains("applications/ap-south.yaml") && !files.contains("us-east"), "{files}");
    assert_tree_is_shopsets(&f, "tier-1", "re-render");
    assert_sync_is_a_no_op(&f, "tier-1");
    assert_kept(&f, "tier-1");

    // A hotfix on tier-1: the plain promotion push is refused (a fast-forward or nothing).
    commit_files(&f.read_url("app"), "tier-1", &[("HOTFIX.md", "hotfix\n")], "Hotfix on tier-1");
    let refused = hand.run_fails("promote", &[("TIER", "tier-1"), ("FROM", "tier-0")]);
    assert!(refused.contains("rejected"), "{refused}");
    let doctor = f.shopctl_env(&["doctor", "tier-1", "-f", manifests], &[("KUBECONFIG", "/nonexistent")]).failure(3);
    assert!(doctor.stdout.contains("the app branch tier-1 has 1 commit(s) that tier-0 lacks"), "{doctor}");
}

/// The ShopSet's lines a person adds for maintenance, as `shopctl maintenance on` writes them.
const MAINTENANCE: &str = "  maintenance:\n    reason: \"database migration\"\n    since: \"2026-12-01T08:00:00Z\"\n";

/// Maintenance by hand: the YAML edited, the block run, the tree is ShopSet's, and Argo CD's
/// automated sync of the Application is off while the whole ShopSet is in maintenance, on after.
#[test]
fn maintenance_by_hand_writes_shopsets_tree_and_turns_automated_sync_off_and_on() {
    let cp = ControlPlane::start();
    let f = Fixture::daemon();
    let mut hand = Hand::new(&f);
    hand.kubeconfig = Some(cp.kubeconfig().to_path_buf());
    hand.run("create-branches", &[("TIER", "tier-0"), ("FROM", "main")]);
    hand.run("first-render", &[("TIER", "tier-0")]);
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    hand.run("apply-applications", &[("TIER", "tier-0")]);
    let automated = || {
        cp.kubectl_ok([
            "-n",
            "argocd",
            "get",
            "application",
            "canary-eu",
            "-o",
            "jsonpath={.spec.syncPolicy.automated}",
        ])
    };
    assert!(automated().contains("\"selfHeal\":true"), "{}", automated());

    // The edit a person makes, which is what `shopctl maintenance on` writes.
    let original = example("shopsets.yaml");
    let shops = "  shops: [shop-0001, shop-0002]\n";
    let edited = original.replacen(shops, &format!("{shops}{MAINTENANCE}"), 1);
    let scratch = f.work.path().join("scratch-manifests");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("shopsets.yaml"), &original).unwrap();
    let scratch_file = scratch.join("shopsets.yaml");
    f.shopctl(&[
        "maintenance",
        "on",
        "canary-eu",
        "--reason",
        "database migration",
        "-f",
        scratch_file.to_str().unwrap(),
    ])
    .success();
    let by_shopctl = std::fs::read_to_string(&scratch_file).unwrap();
    let since = by_shopctl.lines().find_map(|l| l.trim().strip_prefix("since: ")).unwrap();
    assert_eq!(by_shopctl.replace(since, "\"2026-12-01T08:00:00Z\""), edited);

    f.write_manifest("shopsets.yaml", &edited);
    hand.run("maintenance-by-hand", &[("TIER", "tier-0"), ("SHOPSET", "canary-eu")]);
    assert_tree_is_shopsets(&f, "tier-0", "maintenance on");
    assert_sync_is_a_no_op(&f, "tier-0");
    assert_eq!(automated(), "", "automated sync is off while canary-eu is in maintenance");
    let overlay = f.system_git(&["show", "tier-0:shopsets/canary-eu/kustomization.yaml"]);
    assert!(overlay.contains("\"MAINTENANCE_SHOP_IDS=shop-0001,shop-0002\""), "{overlay}");

    f.write_manifest("shopsets.yaml", &original);
    hand.run("maintenance-by-hand", &[("TIER", "tier-0"), ("SHOPSET", "canary-eu")]);
    assert_tree_is_shopsets(&f, "tier-0", "maintenance off");
    assert_sync_is_a_no_op(&f, "tier-0");
    assert!(automated().contains("\"selfHeal\":true"), "automated sync is back: {}", automated());
}

/// Moving a ShopSet to another cluster by hand: the manifest edited with `shopctl shopset move`,
/// the block run, the tree is ShopSet's, and the Application in the API server points at the new
/// cluster.
#[test]
fn move_by_hand_writes_shopsets_tree_and_points_the_application_at_the_new_cluster() {
    let cp = ControlPlane::start();
    let f = Fixture::daemon();
    let destinations = "    destinations:\n    - name: dc-a\n      server: https://kubernetes.default.svc\n      failureDomain: {zone: eu-west-1a}\n    - name: dc-b\n      server: https://10.20.0.1:6443\n      failureDomain: {zone: eu-west-1b}\n    syncPolicy:\n";
    f.write_manifest("tier-0.yaml", &example("tier-0.yaml").replacen("    syncPolicy:\n", destinations, 1));
    f.write_manifest(
        "shopsets.yaml",
        &example("shopsets.yaml").replace("spec:\n  tier: tier-0\n", "spec:\n  tier: tier-0\n  destination: dc-a\n"),
    );
    let mut hand = Hand::new(&f);
    hand.kubeconfig = Some(cp.kubeconfig().to_path_buf());
    hand.run("create-branches", &[("TIER", "tier-0"), ("FROM", "main")]);
    hand.run("first-render", &[("TIER", "tier-0")]);
    assert_tree_is_shopsets(&f, "tier-0", "first render with destinations");
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    hand.run("apply-applications", &[("TIER", "tier-0")]);
    let server = || {
        cp.kubectl_ok(["-n", "argocd", "get", "application", "canary-eu", "-o", "jsonpath={.spec.destination.server}"])
    };
    assert_eq!(server(), "https://kubernetes.default.svc");

    let manifests = f.manifests();
    f.shopctl(&["shopset", "move", "canary-eu", "--to", "dc-b", "-f", manifests.to_str().unwrap()]).success();
    hand.run("move-by-hand", &[("TIER", "tier-0"), ("SHOPSET", "canary-eu"), ("TO", "dc-b")]);
    assert_tree_is_shopsets(&f, "tier-0", "move");
    assert_sync_is_a_no_op(&f, "tier-0");
    assert_eq!(server(), "https://10.20.0.1:6443");
    let other =
        cp.kubectl_ok(["-n", "argocd", "get", "application", "canary-us", "-o", "jsonpath={.spec.destination.server}"]);
    assert_eq!(other, "https://kubernetes.default.svc", "only the moved ShopSet's Application changes");
}

/// Adding a shop by hand: the block edits the manifest as `shopctl shop add` does for the ShopSet
/// the policy picks, applies it to a real API server, commits it, and refuses the shop the second
/// time.
#[test]
fn add_a_shop_by_hand_edits_applies_and_commits_what_shopctl_would_write() {
    let cp = ControlPlane::start();
    let f = Fixture::daemon();
    let mut hand = Hand::new(&f);
    hand.kubeconfig = Some(cp.kubeconfig().to_path_buf());
    cp.kubectl_ok(["apply", "--server-side", "-k", repo_root().join("deploy/crds").to_str().unwrap()]);
    cp.kubectl_ok(["wait", "--for=condition=Established", "crd/shopsets.shopset.dev"]);
    cp.kubectl_ok(["create", "namespace", "shops"]);

    // The manifests in a git repository of their own, as a team keeps them.
    let repo = f.work.path().join("shop-manifests");
    std::fs::create_dir_all(&repo).unwrap();
    for file in common::MANIFEST_FILES {
        std::fs::write(repo.join(file), example(file)).unwrap();
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", hand.home.join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "--quiet"]);
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "manifests"]);
    cp.kubectl_ok(["apply", "--server-side", "-n", "shops", "-f", repo.to_str().unwrap()]);

    // What shopctl writes, on a scratch copy: the ShopSet the policy picks, and its file.
    let scratch = f.work.path().join("scratch-shops");
    std::fs::create_dir_all(&scratch).unwrap();
    for file in common::MANIFEST_FILES {
        std::fs::write(scratch.join(file), example(file)).unwrap();
    }
    let run = f.shopctl(&["shop", "add", "shop-0003", "-f", scratch.to_str().unwrap(), "-o", "json"]).success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let shopset = report["shopset"].as_str().unwrap().to_string();
    assert_eq!(shopset, "canary-us", "the tier-0 ShopSet with the most free places: {run}");

    let file = repo.join("shopsets.yaml");
    let vars = [
        ("FILE", file.to_str().unwrap()),
        ("SHOPSET", shopset.as_str()),
        ("SHOP", "shop-0003"),
        ("NAMESPACE", "shops"),
    ];
    hand.run("add-shop-by-hand", &vars);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        std::fs::read_to_string(scratch.join("shopsets.yaml")).unwrap()
    );
    let shops = cp.kubectl_ok(["get", "shopset", "canary-us", "-n", "shops", "-o", "jsonpath={.spec.shops}"]);
    assert_eq!(shops, r#"["shop-1001","shop-0003"]"#);
    assert_eq!(git(&["log", "-1", "--format=%s"]), "Add shop shop-0003 to ShopSet canary-us");
    assert_eq!(git(&["status", "--porcelain"]), "");

    // The same shop again: refused, nothing changed.
    let text = hand.run_fails("add-shop-by-hand", &vars);
    assert!(text.contains("shop-0003 is served already"), "{text}");
    assert_eq!(git(&["status", "--porcelain"]), "");
}

fn path_with_tools() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(tools_bin()).chain(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap().into_string().unwrap()
}

/// The kubectl blocks against a real API server: the Applications as the controller applies them
/// (and prunes), and the overlays as Argo CD applies them.
#[test]
fn kubectl_blocks_apply_what_the_controller_and_argo_cd_apply() {
    let cp = ControlPlane::start();
    let f = Fixture::daemon();
    let mut hand = Hand::new(&f);
    hand.kubeconfig = Some(cp.kubeconfig().to_path_buf());
    hand.run("create-branches", &[("TIER", "tier-0"), ("FROM", "main")]);
    hand.run("first-render", &[("TIER", "tier-0")]);

    cp.kubectl_ok(["create", "namespace", "argocd"]);
    // An Application of a ShopSet that is gone, and one of another tier: only the first goes.
    let stale = |name: &str, tier: &str| {
        format!(
            concat!(
                "apiVersion: argoproj.io/v1alpha1\nkind: Application\n",
                "metadata:\n  name: {name}\n  namespace: argocd\n",
                "  labels:\n    app.kubernetes.io/managed-by: shopset-controller\n    shopset.dev/tier: {tier}\n",
                "spec:\n  project: default\n",
                "  source:\n    repoURL: {url}\n    targetRevision: {tier}\n    path: shopsets/{name}\n",
                "  destination:\n    server: https://kubernetes.default.svc\n    namespace: {name}\n"
            ),
            name = name,
            tier = tier,
            url = f.system
        )
    };
    cp.kubectl_with_stdin_ok(
        ["apply", "--server-side", "-f", "-"],
        &format!("{}---\n{}", stale("gone", "tier-0"), stale("other", "tier-1")),
    );

    hand.run("apply-applications", &[("TIER", "tier-0")]);
    let apps = cp.kubectl_ok(["-n", "argocd", "get", "applications", "-o", "name"]);
    let apps: Vec<&str> = apps.lines().collect();
    assert_eq!(
        apps,
        ["application.argoproj.io/canary-eu", "application.argoproj.io/canary-us", "application.argoproj.io/other"]
    );
    let managers = cp.kubectl_ok([
        "-n",
        "argocd",
        "get",
        "application",
        "canary-eu",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers.trim(), "shopset-controller");
    let revision = cp.kubectl_ok([
        "-n",
        "argocd",
        "get",
        "application",
        "canary-eu",
        "-o",
        "jsonpath={.spec.source.targetRevision} {.spec.source.path}",
    ]);
    assert_eq!(revision, "tier-0 shopsets/canary-eu");

    hand.run("argocd-down", &[("TIER", "tier-0")]);
    for (ns, image) in [("canary-eu", "ghcr.io/acme/checkout:1.0.0"), ("canary-us", "ghcr.io/acme/checkout:1.1.0-rc.1")]
    {
        let deploys = cp.kubectl_ok(["-n", ns, "get", "deployments", "-o", "name"]);
        assert_eq!(
            deploys.lines().collect::<Vec<_>>(),
            ["deployment.apps/checkout", "deployment.apps/storefront"],
            "{ns}"
        );
        let services = cp.kubectl_ok(["-n", ns, "get", "services", "-o", "name"]);
        assert_eq!(services.lines().collect::<Vec<_>>(), ["service/checkout", "service/storefront"], "{ns}");
        let got = cp.kubectl_ok([
            "-n",
            ns,
            "get",
            "deployment",
            "checkout",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]);
        assert_eq!(got, image);
        let managers = cp.kubectl_ok([
            "-n",
            ns,
            "get",
            "deployment",
            "checkout",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ]);
        assert!(managers.split_whitespace().any(|m| m == "shopset-manual"), "{managers}");
    }
    // The ShopSet's identity reached the workloads.
    let env = cp.kubectl_ok([
        "-n",
        "canary-eu",
        "get",
        "configmaps",
        "-l",
        "shopset.dev/shopset=canary-eu",
        "-o",
        "jsonpath={.items[*].data.SHOP_IDS}",
    ]);
    assert!(env.contains("shop-0001,shop-0002"), "{env}");

    // The promotion policy's facts, read as step 7a reads them.
    let tier1 = std::fs::read_to_string(f.manifests().join("tier-1.yaml"))
        .unwrap()
        .replace("    from: tier-0\n", "    from: tier-0\n    soak: 30m\n");
    for tier in [std::fs::read_to_string(f.manifests().join("tier-0.yaml")).unwrap(), tier1] {
        cp.kubectl_with_stdin_ok(["apply", "-n", "default", "-f", "-"], &tier);
    }
    let head = branch_head(&f.system, "tier-0").expect("tier-0 system branch");
    // Written by hand: no controller runs here. What the block reads of the condition is under
    // test; the controller writing it is covered by shopset-kube's status tests and the e2e tests.
    let deployed = serde_json::json!({"status": {"conditions": [
        {"type": "Deployed", "status": "True", "reason": "Deployed", "message": format!("2/2 at {}", &head[..7]), "lastTransitionTime": "2026-12-03T05:00:00Z"},
    ]}})
    .to_string();
    cp.kubectl_ok([
        "patch",
        "tiers.shopset.dev",
        "tier-0",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        &deployed,
    ]);
    let facts = hand.run("policy-facts", &[("TIER", "tier-1"), ("FROM", "tier-0"), ("TIER_NAMESPACE", "default")]);
    assert!(facts.contains(&format!("promoted commit: {}", &head[..7])), "{facts}");
    assert!(facts.contains(&format!("Deployed True 2/2 at {} since 2026-12-03T05:00:00Z", &head[..7])), "{facts}");
    assert!(facts.contains(r#"policy {"from":"tier-0","soak":"30m"}"#), "{facts}");
    assert!(facts.contains("now 20"), "{facts}");
}

/// The credential templates block against a real API server: the Secrets the controller applies
/// (the library's `repo_creds::secrets`), by its field manager, and the tier's stale one deleted,
/// another tier's kept.
#[test]
fn argocd_creds_block_applies_the_templates_the_controller_applies() {
    let cp = ControlPlane::start();
    let f = Fixture::daemon();
    let mut hand = Hand::new(&f);
    hand.kubeconfig = Some(cp.kubeconfig().to_path_buf());
    cp.kubectl_ok(["create", "namespace", "argocd"]);

    // The examples (https URLs on one host), tier-0 naming its credentials.
    let manifests = f.work.path().join("creds-manifests");
    std::fs::create_dir(&manifests).unwrap();
    for file in ["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"] {
        let mut text = example(file);
        if file == "tier-0.yaml" {
            text = text.replacen(
                "\n  interval: 1m\n",
                "\n  interval: 1m\n  credentials:\n    secretRef:\n      name: git-credentials\n",
                1,
            );
        }
        std::fs::write(manifests.join(file), text).unwrap();
    }
    let credentials = f.work.path().join("git-credentials.yaml");
    std::fs::write(
        &credentials,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: git-credentials\nstringData:\n  username: shopset\n  password: runbook-pw\n",
    )
    .unwrap();
    // A template of tier-0 no longer wanted, and one of tier-1: only the first goes.
    let template = |name: &str, tier: &str| {
        format!(
            concat!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: argocd\n  labels:\n",
                "    app.kubernetes.io/managed-by: shopset-controller\n    argocd.argoproj.io/secret-type: repo-creds\n",
                "    shopset.dev/tier: {tier}\n    shopset.dev/tier-namespace: shops\n",
                "stringData:\n  type: git\n  url: https://old.example.com/\n"
            ),
            name = name,
            tier = tier
        )
    };
    cp.kubectl_with_stdin_ok(
        ["apply", "--server-side", "-f", "-"],
        &format!("{}---\n{}", template("old-tier-0", "tier-0"), template("other-tier-1", "tier-1")),
    );

    let vars = [
        ("TIER", "tier-0"),
        ("TIER_NAMESPACE", "shops"),
        ("MANIFESTS", manifests.to_str().unwrap()),
        ("CREDENTIALS", credentials.to_str().unwrap()),
    ];
    hand.run("argocd-creds", &vars);

    let inventory = Inventory::load(&[manifests]).unwrap();
    let input = inventory.tier_input("tier-0").unwrap();
    let mut tier = input.tier.clone();
    tier.metadata.namespace = Some("shops".into());
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_yaml::from_str(&std::fs::read_to_string(&credentials).unwrap()).unwrap();
    let auth = shopset::credentials::from_secret(&secret).unwrap();
    let expected = shopset::repo_creds::secrets(&tier, &input.configurations, &auth);
    assert_eq!(expected.len(), 1, "one host: one template");
    let name = expected[0].metadata.name.clone().unwrap();

    let names = cp.kubectl_ok([
        "-n",
        "argocd",
        "get",
        "secrets",
        "-l",
        "argocd.argoproj.io/secret-type=repo-creds",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    let mut want = vec![name.as_str(), "other-tier-1"];
    want.sort();
    assert_eq!(names, want, "the tier's template applied, its stale one deleted, tier-1's kept");
    let live: k8s_openapi::api::core::v1::Secret =
        serde_json::from_str(&cp.kubectl_ok(["-n", "argocd", "get", "secret", &name, "-o", "json"])).unwrap();
    assert_eq!(live.data, expected[0].data);
    assert_eq!(live.metadata.labels, expected[0].metadata.labels);
    let managers = cp.kubectl_ok([
        "-n",
        "argocd",
        "get",
        "secret",
        &name,
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers.trim(), "shopset-controller");
}
