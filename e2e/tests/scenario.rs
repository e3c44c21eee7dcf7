//! The flow as a user runs it, against real parts: a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, our CRDs and Argo CD's), a real `git daemon` holding the app,
//! configuration and system repositories seeded from `examples/`, the example manifests applied
//! with `kubectl`, and the `shopset-controller` binary as a process with leader election, webhook
//! and metrics.
//!
//! One test per step of the flow. Each sets up what it needs: its own copy of the examples in a
//! namespace of its own (with its own Argo CD namespace, git daemon and controller), on the
//! control plane the tests of this file share; so each runs alone and beside the others.
//!
//! Needs `e2e/install-tools` and `cargo build --workspace` (the tests run the built binary).
//! On failure the controller's log is printed; `SHOPSET_E2E_KEEP=1` keeps the cluster, the
//! repositories and each test's work directory (controller log, manifests, system checkout).

mod support;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use shopset_e2e::gitserver::{branch_head, clone_recursive, commit_files, git};
use shopset_e2e::tools::{repo_root, tool};
use support::{
    Controller, EXAMPLE_APP_URL, EXAMPLE_SHOPSETS, EXAMPLE_SYSTEM_URL, EXAMPLE_TIERS, Examples, Plane, Run,
    WEBHOOK_SECRET, http, metric, path_str, phase, run_ok, short, sign, wait_until,
};

/// Number of tests in this file (the last one to finish stops the shared control plane).
const TESTS: usize = 8;
/// tier-0's poll interval where a test waits for a poll; tier-1 polls hourly.
const TIER0_INTERVAL: Duration = Duration::from_secs(5);
/// Generous bound for a first sync on a loaded machine.
const FIRST_SYNC: Duration = Duration::from_secs(90);

/// A test's copy of the examples, applied, with a controller that has synced both tiers.
struct Synced {
    // Fields drop in order: the controller stops before the git daemon and the control plane.
    ctl: Controller,
    ex: Examples,
    /// What `kubectl apply` said.
    applied: String,
    /// tier-1's system branch after its first render: nothing here promotes, so it never moves.
    tier1_log: Vec<(String, String)>,
    cp: Plane,
}

impl Synced {
    /// The examples in namespace `ns`, tier-0 polling every `tier0_interval`; the controller
    /// started, then the manifests applied, and both Tiers Ready.
    fn start(ns: &str, tier0_interval: &str) -> Synced {
        let cp = Plane::shared(TESTS);
        let ex = Examples::new(&cp, ns, tier0_interval);
        let mut ctl = ex.controller(&cp, "controller");
        ctl.start(&Run::new(&format!("{ns}-replica-1")));
        let applied = ex.apply(&cp);
        for tier in EXAMPLE_TIERS {
            wait_until(&format!("Tier {ns}/{tier} Ready=True"), FIRST_SYNC, &ctl, || {
                (ex.ready(&cp, "tier", tier) == "True").then_some(())
            });
        }
        phase(ns, "both Tiers Ready");
        let tier1_log = ex.system_log("tier-1");
        Synced { ctl, ex, applied, tier1_log, cp }
    }

    /// The app's `base/<image>.yaml` of `examples/` with its image `ghcr.io/acme/<image>:1.0.0`
    /// tagged `tag`, committed to the app repository's tier-0 branch; the commit.
    fn retag(&self, image: &str, tag: &str) -> String {
        let path = format!("base/{image}.yaml");
        let original = fs::read_to_string(repo_root().join("examples/app").join(&path))
            .unwrap_or_else(|e| panic!("read examples/app/{path}: {e}"));
        let from = format!("ghcr.io/acme/{image}:1.0.0");
        assert!(original.contains(&from), "examples/app/{path} no longer says {from:?}: adapt this test");
        let changed = original.replace(&from, &format!("ghcr.io/acme/{image}:{tag}"));
        commit_files(&self.ex.app_url, "tier-0", &[(&path, &changed)], &format!("{image} {tag}"))
    }

    /// A GitHub push event of the app repository's tier-0 branch.
    fn push_event(&self) -> String {
        format!(r#"{{"ref":"refs/heads/tier-0","repository":{{"clone_url":"{}"}}}}"#, self.ex.app_url)
    }

    /// `shopset_pushes_total` of tier-0 and tier-1, with as many reconciles at least.
    fn assert_pushes(&self, tier0: f64, tier1: f64) {
        let m = self.ctl.metrics();
        for (tier, pushes) in [("tier-0", tier0), ("tier-1", tier1)] {
            let labels = [("namespace", self.ex.ns.as_str()), ("tier", tier)];
            let pushed = metric(&m, "shopset_pushes_total", &labels).unwrap_or(0.0);
            assert_eq!(pushed, pushes, "pushes of {tier}:\n{m}");
            let reconciles = metric(&m, "shopset_reconciles_total", &labels).unwrap_or(0.0);
            assert!(reconciles >= pushes, "{tier}: {reconciles} reconciles for {pushes} pushes:\n{m}");
        }
    }

    /// Stops the controller and checks what holds after every test: tier-1 kept its first render
    /// alone, and no run of the controller logged an error.
    fn finish(mut self) {
        self.ctl.stop();
        assert_eq!(self.ex.system_log("tier-1"), self.tier1_log, "tier-1 moved, and nothing promoted it");
        let logs = self.ctl.all_logs();
        let errors: Vec<&str> = logs.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(errors.is_empty(), "the controller logged errors:\n{}", errors.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Validation by the API server

/// Pattern and CEL rules of the CRD, enforced by the API server with the field named; no
/// controller runs in this namespace, so nothing of this may reach one.
#[test]
fn invalid_tiers_are_refused_by_the_api_server_naming_the_field() {
    let cp = Plane::shared(TESTS);
    let ns = "scenario-validation";
    cp.kubectl_ok(["create", "namespace", ns]);
    let tier = |name: &str, app: &str, branch: Option<&str>| {
        let branch = branch.map(|b| format!("  branch: {b}\n")).unwrap_or_default();
        format!(
            "apiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n{branch}  app:\n    url: {app}\n  system:\n    url: {EXAMPLE_SYSTEM_URL}\n"
        )
    };
    // A URL without a scheme.
    let out =
        cp.kubectl_with_stdin(["apply", "-f", "-"], &tier("no-scheme", "git.example.com/acme/shop-app.git", None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a URL without a scheme is refused");
    assert!(
        err.contains("spec.app.url") && err.contains(shopset::rules::URL_NO_SCHEME),
        "the error names spec.app.url:\n{err}"
    );

    // spec.branch is immutable once set: neither changed nor removed.
    cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &tier("pinned", EXAMPLE_APP_URL, Some("release-a")));
    let out = cp.kubectl_with_stdin(["apply", "-f", "-"], &tier("pinned", EXAMPLE_APP_URL, Some("release-b")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "changing spec.branch is refused");
    assert!(err.contains("spec.branch") && err.contains(shopset::rules::BRANCH_IMMUTABLE), "the CEL message:\n{err}");
    let out = cp.kubectl([
        "patch",
        "tier",
        "pinned",
        "-n",
        ns,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/branch"}]"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(shopset::rules::BRANCH_IMMUTABLE),
        "removing spec.branch is refused:\n{err}"
    );
    assert_eq!(cp.kubectl_ok(["get", "tier", "pinned", "-n", ns, "-o", "jsonpath={.spec.branch}"]), "release-a");
    cp.kubectl_ok(["delete", "tier", "pinned", "-n", ns]);
    cp.kubectl_ok(["delete", "namespace", ns, "--wait=false"]);
}

// ---------------------------------------------------------------------------------------------
// The first sync

#[test]
fn first_sync_creates_tier_branches_pins_app_and_config_and_applies_applications() {
    let s = Synced::start("scenario-first-sync", "5s");
    let (cp, ex, ns) = (&s.cp, &s.ex, s.ex.ns.as_str());
    for obj in [
        "configuration.shopset.dev/shop-config",
        "tier.shopset.dev/tier-0",
        "tier.shopset.dev/tier-1",
        "shopset.shopset.dev/canary-us",
    ] {
        assert!(s.applied.contains(&format!("{obj} created")), "{}", s.applied);
    }
    for endpoint in ["/healthz", "/readyz"] {
        let (code, body) = http(&s.ctl.url(endpoint), &[], None);
        assert_eq!(code, 200, "{endpoint}: {body}");
    }

    // Tier branches exist in every repository. tier-0's were created from `main` (the default
    // branch); tier-1's from tier-0 (its promotion source), so they point at the same commits.
    let app0 = branch_head(&ex.app_url, "tier-0").expect("app repository has branch tier-0");
    let config0 = branch_head(&ex.config_url, "tier-0").expect("config repository has branch tier-0");
    assert_eq!(app0, ex.app_main, "app tier-0 branch created from main");
    assert_eq!(config0, ex.config_main, "config tier-0 branch created from main");
    assert_eq!(branch_head(&ex.app_url, "tier-1").as_deref(), Some(app0.as_str()), "app tier-1 from tier-0");
    assert_eq!(branch_head(&ex.config_url, "tier-1").as_deref(), Some(config0.as_str()), "config tier-1 from tier-0");
    let system0 = branch_head(&ex.system_url, "tier-0").expect("system repository has branch tier-0");
    let system1 = branch_head(&ex.system_url, "tier-1").expect("system repository has branch tier-1");

    // The system branch pins the app and configuration with gitlinks (mode 160000).
    let system_repo = ex.system_repo();
    let base = git(&system_repo, &["ls-tree", "tier-0", "base"]);
    assert_eq!(base, format!("160000 commit {app0}\tbase"), "git ls-tree tier-0 base");
    assert_eq!(ex.gitlink("tier-0", "config/shop-config"), config0);
    assert_eq!(ex.gitlink("tier-1", "base"), app0);
    let gitmodules = git(&system_repo, &["show", "tier-0:.gitmodules"]);
    assert!(
        gitmodules.contains(&format!("url = {}", ex.app_url)) && gitmodules.contains("branch = tier-0"),
        "{gitmodules}"
    );
    let first = ex.system_log("tier-0");
    assert_eq!(first.len(), 1, "one first-render commit on tier-0: {first:?}");
    assert!(first[0].1.starts_with("tier-0: first render"), "{first:?}");

    // kubectl shows the state.
    let table = cp.kubectl_ok(["get", "tiers,shopsets", "-n", ns]);
    eprintln!("$ kubectl get tiers,shopsets\n{table}");
    let row = table.lines().find(|l| l.contains("tier.shopset.dev/tier-0")).unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains(short(&app0)) && row.contains("True"),
        "tier-0 row shows the short pinned commit and Ready: {row}"
    );
    assert_eq!(ex.jsonpath(cp, "tier", "tier-0", "{.status.appCommit}"), app0);
    assert_eq!(ex.jsonpath(cp, "tier", "tier-0", "{.status.systemCommit}"), system0);
    assert_eq!(ex.jsonpath(cp, "tier", "tier-0", "{.status.branch}"), "tier-0");
    assert_eq!(ex.jsonpath(cp, "tier", "tier-1", "{.status.systemCommit}"), system1);
    for (ss, _, _) in EXAMPLE_SHOPSETS {
        wait_until(&format!("ShopSet {ss} Ready=True"), Duration::from_secs(20), &s.ctl, || {
            (ex.ready(cp, "shopsets", ss) == "True").then_some(())
        });
        assert_eq!(ex.jsonpath(cp, "shopsets", ss, "{.status.renderedPath}"), format!("shopsets/{ss}"));
        assert_eq!(ex.jsonpath(cp, "shopsets", ss, "{.status.application}"), format!("{}/{ss}", ex.argocd_ns));
    }

    // The Applications, as Argo CD would read them.
    for (app, tier, dest_ns) in EXAMPLE_SHOPSETS {
        let expected = [
            ex.system_url.as_str(),
            tier,
            &format!("shopsets/{app}"),
            "default",
            "https://kubernetes.default.svc",
            dest_ns,
            tier,
            app,
            "shopset-controller",
        ];
        assert_eq!(
            ex.application(cp, app),
            expected,
            "Application {}/{app}: repoURL, targetRevision, path, project, destination server and \
             namespace, labels tier, shopset, managed-by",
            ex.argocd_ns
        );
    }
    let auto = support::jsonpath(
        cp,
        &ex.argocd_ns,
        "application",
        "canary-eu",
        "{.spec.syncPolicy.automated.prune} {.spec.syncPolicy.syncOptions[0]}",
    );
    assert_eq!(auto, "true ServerSideApply=true", "tier-0's syncPolicy is copied");
    // One push per tier: its first render.
    s.assert_pushes(1.0, 1.0);
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Webhook and poll

/// tier-0 polls hourly here: within the test only the webhook can bring the commit in.
#[test]
fn a_signed_push_webhook_bumps_the_app_pin_and_writes_no_shopset() {
    let s = Synced::start("scenario-webhook", "1h");
    let (cp, ex) = (&s.cp, &s.ex);
    let app1 = s.retag("checkout", "1.1.0");
    let push = s.push_event();
    // A bump changes no ShopSet, so it writes no ShopSet's status (that describes the ShopSet's own
    // generation; the Tier's status names the system commit): a bump among 1,000 ShopSets is not
    // 1,000 API writes.
    let canary_version = ex.jsonpath(cp, "shopsets", "canary-eu", "{.metadata.resourceVersion}");
    let reconciled = s.ctl.reconciles_of("tier-0");
    let (code, body) = s.ctl.push_event(&push, Some(&sign(WEBHOOK_SECRET, push.as_bytes())));
    assert_eq!(code, 202, "signed webhook: {body}");
    assert!(body.contains("reconciling: tier-0"), "the push concerns tier-0 only: {body}");
    wait_until("the webhook to bump tier-0's gitlink", Duration::from_secs(15), &s.ctl, || {
        (ex.gitlink("tier-0", "base") == app1).then_some(())
    });
    let bump = ex.system_log("tier-0");
    assert_eq!(bump.len(), 2, "{bump:?}");
    let line = format!("app: {} -> {} (1 commit)", short(&ex.app_main), short(&app1));
    assert!(bump[0].1.contains(&line), "the commit says {line:?}: {bump:?}");
    wait_until("the bump's reconcile to end", Duration::from_secs(15), &s.ctl, || {
        (s.ctl.reconciles_of("tier-0") > reconciled).then_some(())
    });
    assert_eq!(
        ex.jsonpath(cp, "shopsets", "canary-eu", "{.metadata.resourceVersion}"),
        canary_version,
        "the bump wrote ShopSet canary-eu, which it does not change"
    );
    assert_eq!(
        ex.jsonpath(cp, "shopsets", "canary-eu", "{.status.conditions[0].message}"),
        "rendered at shopsets/canary-eu on branch tier-0"
    );
    // A review of a promotion pull request tier-0 -> tier-1 wakes tier-1, the tier it merges into
    // (whose approvals the controller then counts); nothing moved, so it pushes nothing.
    let review = format!(
        r#"{{"action":"submitted","review":{{"state":"approved"}},"pull_request":{{"number":7,"head":{{"ref":"tier-0"}},"base":{{"ref":"tier-1"}}}},"repository":{{"clone_url":"{}"}}}}"#,
        ex.app_url
    );
    let reconciled1 = s.ctl.reconciles_of("tier-1");
    let signature = format!("X-Hub-Signature-256: {}", sign(WEBHOOK_SECRET, review.as_bytes()));
    let (code, body) =
        s.ctl.webhook(&["X-GitHub-Event: pull_request_review", "Content-Type: application/json", &signature], &review);
    assert_eq!(code, 202, "signed review webhook: {body}");
    assert!(body.contains("reconciling: tier-1"), "a review of a pull request into tier-1 concerns tier-1: {body}");
    wait_until("the review's reconcile of tier-1", Duration::from_secs(15), &s.ctl, || {
        (s.ctl.reconciles_of("tier-1") > reconciled1).then_some(())
    });
    let m = s.ctl.metrics();
    assert_eq!(metric(&m, "shopset_webhook_deliveries_total", &[]), Some(2.0), "{m}");
    assert_eq!(metric(&m, "shopset_webhook_refused_total", &[]), Some(0.0), "{m}");
    s.assert_pushes(2.0, 1.0);
    s.finish();
}

/// A badly signed and an unsigned webhook are refused and start nothing; tier-0's poll, every
/// [`TIER0_INTERVAL`], picks the commit up when it is due.
#[test]
fn refused_webhooks_start_no_sync_and_the_poll_picks_the_commit_up() {
    let s = Synced::start("scenario-poll", "5s");
    let ex = &s.ex;
    let push = s.push_event();
    // Right after a poll, so the next one is a whole interval away.
    let tick = s.ctl.wait_for_poll_tick("tier-0", TIER0_INTERVAL);
    let app1 = s.retag("checkout", "1.2.0");
    let committed = Instant::now();
    let (code, body) = s.ctl.push_event(&push, Some(&sign("not-the-secret", push.as_bytes())));
    assert_eq!(code, 401, "badly signed webhook: {body}");
    let (code, body) = s.ctl.push_event(&push, None);
    assert_eq!(code, 401, "unsigned webhook: {body}");
    let m = s.ctl.metrics();
    assert_eq!(metric(&m, "shopset_webhook_refused_total", &[]), Some(2.0), "{m}");
    assert_eq!(metric(&m, "shopset_webhook_deliveries_total", &[]), Some(0.0), "{m}");
    // Until the next poll is due, nothing may move.
    while Instant::now() + Duration::from_millis(800) < tick + TIER0_INTERVAL {
        assert_eq!(
            ex.gitlink("tier-0", "base"),
            ex.app_main,
            "tier-0 moved before its poll was due: a refused webhook triggered a sync"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until("the poll to bump tier-0's gitlink", TIER0_INTERVAL + Duration::from_secs(15), &s.ctl, || {
        (ex.gitlink("tier-0", "base") == app1).then_some(())
    });
    phase(&ex.ns, &format!("the poll picked the commit up {:.2?} after it", committed.elapsed()));
    assert_eq!(ex.system_log("tier-0").len(), 2);
    s.assert_pushes(2.0, 1.0);
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// What Argo CD does with the system branch

/// The manual sync path: `git clone --recurse-submodules` of the system branch, kustomize, and a
/// server-side apply, as Argo CD does it.
#[test]
fn the_system_branch_clones_with_submodules_and_renders_what_argocd_applies() {
    let s = Synced::start("scenario-render", "5s");
    let (cp, ex) = (&s.cp, &s.ex);
    let app1 = s.retag("checkout", "1.2.0");
    wait_until("the poll to bump tier-0's gitlink", TIER0_INTERVAL + Duration::from_secs(30), &s.ctl, || {
        (ex.gitlink("tier-0", "base") == app1).then_some(())
    });

    let checkout_dir = ex.work.path().join("system-tier-0");
    clone_recursive(&ex.system_url, "tier-0", &checkout_dir);
    assert_eq!(
        git(&checkout_dir.join("base"), &["rev-parse", "HEAD"]),
        app1,
        "the submodule is checked out at the gitlink"
    );
    for ss in ["canary-eu", "canary-us"] {
        let dir = checkout_dir.join("shopsets").join(ss);
        let rendered = cp.kubectl_ok(["kustomize", path_str(&dir)]);
        // Standalone kustomize renders the same as kubectl's built-in one (what Argo CD runs).
        let standalone = run_ok(Command::new(tool("kustomize")).args(["build", path_str(&dir)]));
        assert_eq!(rendered, standalone, "kubectl kustomize and kustomize build agree for {ss}");
        // The built overlay's workloads applied as a person does with Argo CD down: no status is written.
        cp.kubectl_with_stdin_ok(["apply", "--server-side", "--field-manager=e2e-by-hand", "-f", "-"], &rendered);
    }
    let image = |ns: &str, deploy: &str| {
        support::jsonpath(cp, ns, "deployment", deploy, "{.spec.template.spec.containers[0].image}")
    };
    assert_eq!(image("canary-eu", "checkout"), "ghcr.io/acme/checkout:1.2.0", "the new base tag");
    assert_eq!(image("canary-eu", "storefront"), "ghcr.io/acme/storefront:1.0.0");
    assert_eq!(
        image("canary-us", "checkout"),
        "ghcr.io/acme/checkout:1.1.0-rc.1",
        "canary-us overrides the checkout image"
    );
    for ns in ["canary-eu", "canary-us"] {
        let services = cp.kubectl_ok(["get", "services", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}"]);
        assert_eq!(services, "checkout storefront", "{ns}");
        let label = support::jsonpath(cp, ns, "deployment", "checkout", "{.metadata.labels.shopset\\.dev/shopset}");
        assert_eq!(label, ns);
    }
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// A ShopSet deleted

#[test]
fn deleting_a_shopset_removes_its_overlay_and_application() {
    let s = Synced::start("scenario-shopset-deleted", "5s");
    let (cp, ex) = (&s.cp, &s.ex);
    let before = ex.system_log("tier-0").len();
    let head = branch_head(&ex.system_url, "tier-0");
    // (`shopsets`, not `shopset`: the CRDs' category is also called `shopset`, and kubectl expands
    // a category before a singular name, so `kubectl delete shopset canary-us` fails with "you
    // must specify only one resource".)
    cp.kubectl_ok(["delete", "shopsets", "canary-us", "-n", &ex.ns]);
    wait_until("canary-us to leave the tier-0 branch", Duration::from_secs(30), &s.ctl, || {
        (branch_head(&ex.system_url, "tier-0") != head).then_some(())
    });
    let removed = ex.system_log("tier-0");
    assert_eq!(removed.len(), before + 1, "{removed:?}");
    assert!(removed[0].1.contains("shopsets removed: canary-us"), "{removed:?}");
    let system_repo = ex.system_repo();
    let full = git(&system_repo, &["log", "-1", "--format=%B", "tier-0"]);
    assert!(full.contains("shopsets removed: canary-us"), "{full}");
    let listing = git(&system_repo, &["ls-tree", "-r", "--name-only", "tier-0"]);
    assert!(!listing.contains("canary-us"), "nothing of canary-us is left:\n{listing}");
    assert!(
        listing.contains("shopsets/canary-eu/kustomization.yaml") && listing.contains("applications/canary-eu.yaml"),
        "{listing}"
    );
    wait_until("Application canary-us to be deleted", Duration::from_secs(20), &s.ctl, || {
        (!ex.applications(cp).contains(&"canary-us".to_string())).then_some(())
    });
    assert_eq!(ex.applications(cp), ["canary-eu", "eu-west", "us-east"], "the other Applications stay");
    // Pushes: tier-0's first render and the removal; tier-1's first render.
    s.assert_pushes(2.0, 1.0);
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Restarts

/// Killed outright (no Lease release): a commit lands while it is down; the next replica takes
/// the Lease over once it expires and writes exactly one commit for it.
#[test]
fn a_killed_controller_is_replaced_and_a_change_made_while_down_gets_one_commit() {
    let mut s = Synced::start("scenario-killed", "5s");
    s.ctl.kill();
    let ex = &s.ex;
    let before = ex.system_log("tier-0");
    let app1 = s.retag("storefront", "1.1.0");
    s.ctl.start(&Run::new(&format!("{}-replica-2", ex.ns)));
    wait_until("the restarted controller to bump tier-0's gitlink", Duration::from_secs(45), &s.ctl, || {
        (ex.gitlink("tier-0", "base") == app1).then_some(())
    });
    assert!(
        s.ctl.log_since_start().contains("taking over the expired lease"),
        "the new replica took the dead one's Lease over"
    );
    // Let it settle (the reconciles its own status writes trigger) and poll again: still exactly
    // one new commit.
    s.ctl.wait_for_poll_tick("tier-0", TIER0_INTERVAL);
    let after = ex.system_log("tier-0");
    assert_eq!(after.len(), before.len() + 1, "exactly one commit for the change made while down:\n{after:#?}");
    assert_eq!(after[1..], before[..], "on top of the previous head");
    let line = format!("app: {} -> {} (1 commit)", short(&ex.app_main), short(&app1));
    assert!(after[0].1.contains(&line), "the commit says {line:?}: {after:?}");
    assert_eq!(ex.jsonpath(&s.cp, "tier", "tier-0", "{.status.appCommit}"), app1);
    s.finish();
}

/// Stopped cleanly and started again with nothing changed: a full sync of both tiers, no commit.
#[test]
fn a_clean_restart_with_nothing_changed_commits_nothing() {
    let mut s = Synced::start("scenario-restart", "5s");
    let tier0_log = s.ex.system_log("tier-0");
    s.ctl.stop();
    s.ctl.start(&Run::new(&format!("{}-replica-2", s.ex.ns)));
    let ns = s.ex.ns.clone();
    wait_until("both tiers synced by the second replica", Duration::from_secs(30), &s.ctl, || {
        let m = s.ctl.metrics();
        EXAMPLE_TIERS
            .iter()
            .all(|tier| {
                metric(&m, "shopset_last_sync_timestamp_seconds", &[("namespace", &ns), ("tier", *tier)]).is_some()
            })
            .then_some(())
    });
    s.ctl.wait_for_reconciles_of("tier-0", 1, TIER0_INTERVAL * 3);
    assert_eq!(s.ex.system_log("tier-0"), tier0_log, "no commit on tier-0 after a restart with nothing changed");
    s.assert_pushes(0.0, 0.0);
    let (code, _) = http(&s.ctl.url("/healthz"), &[], None);
    assert_eq!(code, 200);
    assert_eq!(s.ex.ready(&s.cp, "tier", "tier-0"), "True");
    s.finish();
}
