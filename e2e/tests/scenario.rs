//! The whole flow as a user runs it, against real parts: a real control plane (etcd,
//! kube-apiserver, kube-controller-manager, our CRDs and Argo CD's), a real `git daemon` holding
//! the app, configuration and system repositories seeded from `examples/`, and the
//! `shopset-controller` binary as a process with leader election, webhook and metrics.
//!
//! Needs `e2e/install-tools` and `cargo build --workspace` (this test runs the built binary).
//! On failure the controller's log is printed; `SHOPSET_E2E_KEEP=1` keeps the cluster, the
//! repositories and the work directory (controller log, manifests, system checkout).

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{GitDaemon, branch_head, clone_recursive, commit_files, git, log, seed_dir};
use shopset_e2e::tools::{path_env, repo_root, tool, workspace_bin};
use tempfile::TempDir;

/// The webhook secret (the file holds it with a trailing newline, as `echo` writes it).
const SECRET: &str = "e2e-webhook-s3cret";
/// tier-0 polls its branches this often; tier-1 practically never (1h).
const TIER0_INTERVAL: Duration = Duration::from_secs(5);
/// Lease duration of every controller run: a killed leader's Lease expires this fast.
const LEASE: &str = "6s";

const EXAMPLE_APP_URL: &str = "https://git.example.com/acme/shop-app.git";
const EXAMPLE_CONFIG_URL: &str = "https://git.example.com/acme/shop-config.git";
const EXAMPLE_SYSTEM_URL: &str = "https://git.example.com/acme/shop-system.git";

#[test]
fn gitops_flow_end_to_end() {
    let started = Instant::now();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut lap = Instant::now();
    let mut mark = |what: &str, timings: &mut Vec<(String, Duration)>| {
        timings.push((what.to_string(), lap.elapsed()));
        lap = Instant::now();
    };

    // ------------------------------------------------------------------ setup
    let cp = ControlPlane::start();
    let daemon = GitDaemon::start();
    let examples = repo_root().join("examples");
    let app_url = daemon.create_repo("shop-app");
    let config_url = daemon.create_repo("shop-config");
    let system_url = daemon.create_repo("shop-system");
    let app_main = seed_dir(&app_url, "main", &examples.join("app"), "app from examples/app");
    let config_main = seed_dir(&config_url, "main", &examples.join("config"), "config from examples/config");
    let system_repo = daemon.path("shop-system");
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let work = TempDir::with_prefix("shopset-e2e-scenario-").expect("temp dir");
    let manifests = work.path().join("manifests");
    write_manifests(&manifests, &examples, &app_url, &config_url, &system_url);
    mark("control plane, git daemon, seeded repositories", &mut timings);

    // -------------------------------------- 7. the API server refuses invalid Tiers (no controller yet)
    invalid_tiers_are_refused(&cp, &app_url, &system_url);
    mark("7. invalid Tiers refused", &mut timings);

    let mut ctl = Controller::new(&cp, work.path());
    ctl.start("e2e-replica-1");
    let (code, body) = http(&ctl.url("/healthz"), &[], None);
    assert_eq!(code, 200, "/healthz: {body}");
    let (code, body) = http(&ctl.url("/readyz"), &[], None);
    assert_eq!(code, 200, "/readyz: {body}");

    // ------------------------------------------------------------------ 1. apply the examples
    let out = cp.kubectl_ok(["apply", "-f", path_str(&manifests)]);
    for obj in [
        "configuration.shopset.dev/shop-config",
        "tier.shopset.dev/tier-0",
        "tier.shopset.dev/tier-1",
        "shopset.shopset.dev/canary-us",
    ] {
        assert!(out.contains(&format!("{obj} created")), "{out}");
    }

    // ------------------------------------------------------------------ 2. first sync
    for tier in ["tier-0", "tier-1"] {
        wait_until(&format!("Tier {tier} Ready=True"), Duration::from_secs(60), &ctl, || {
            (ready(&cp, "tier", tier) == "True").then_some(())
        });
    }
    mark("1-2. controller up, both Tiers Ready", &mut timings);

    // Tier branches exist in every repository. tier-0's were created from `main` (the default
    // branch); tier-1's from tier-0 (its promotion source), so they point at the same commits.
    let app0 = branch_head(&app_url, "tier-0").expect("app repository has branch tier-0");
    let config0 = branch_head(&config_url, "tier-0").expect("config repository has branch tier-0");
    assert_eq!(app0, app_main, "app tier-0 branch created from main");
    assert_eq!(config0, config_main, "config tier-0 branch created from main");
    assert_eq!(branch_head(&app_url, "tier-1").as_deref(), Some(app0.as_str()), "app tier-1 from tier-0");
    assert_eq!(branch_head(&config_url, "tier-1").as_deref(), Some(config0.as_str()), "config tier-1 from tier-0");
    let system0 = branch_head(&system_url, "tier-0").expect("system repository has branch tier-0");
    let system1 = branch_head(&system_url, "tier-1").expect("system repository has branch tier-1");
    let tier1_commits = log(&system_url, "tier-1").len();

    // The system branch pins the app and configuration with gitlinks (mode 160000).
    let base = git(&system_repo, &["ls-tree", "tier-0", "base"]);
    assert_eq!(base, format!("160000 commit {app0}\tbase"), "git ls-tree tier-0 base");
    assert_eq!(gitlink(&system_repo, "tier-0", "config/shop-config"), config0);
    assert_eq!(gitlink(&system_repo, "tier-1", "base"), app0);
    let gitmodules = git(&system_repo, &["show", "tier-0:.gitmodules"]);
    assert!(gitmodules.contains(&format!("url = {app_url}")) && gitmodules.contains("branch = tier-0"), "{gitmodules}");
    let first = log(&system_url, "tier-0");
    assert_eq!(first.len(), 1, "one first-render commit on tier-0: {first:?}");
    assert!(first[0].1.starts_with("tier-0: first render"), "{first:?}");

    // kubectl shows the state.
    let table = cp.kubectl_ok(["get", "tiers,shopsets", "-n", "default"]);
    eprintln!("$ kubectl get tiers,shopsets\n{table}");
    let row = table.lines().find(|l| l.contains("tier.shopset.dev/tier-0")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&app0) && row.contains("True"), "tier-0 row shows the pinned commit and Ready: {row}");
    assert_eq!(jsonpath(&cp, "tier", "tier-0", "{.status.appCommit}"), app0);
    assert_eq!(jsonpath(&cp, "tier", "tier-0", "{.status.systemCommit}"), system0);
    assert_eq!(jsonpath(&cp, "tier", "tier-0", "{.status.branch}"), "tier-0");
    assert_eq!(jsonpath(&cp, "tier", "tier-1", "{.status.systemCommit}"), system1);
    for ss in ["canary-eu", "canary-us", "eu-west", "us-east"] {
        wait_until(&format!("ShopSet {ss} Ready=True"), Duration::from_secs(20), &ctl, || {
            (ready(&cp, "shopsets", ss) == "True").then_some(())
        });
        assert_eq!(jsonpath(&cp, "shopsets", ss, "{.status.renderedPath}"), format!("shopsets/{ss}"));
        assert_eq!(jsonpath(&cp, "shopsets", ss, "{.status.application}"), format!("argocd/{ss}"));
    }

    // The Applications, as Argo CD would read them.
    for (app, tier, dest_ns) in [
        ("canary-eu", "tier-0", "canary-eu"),
        ("canary-us", "tier-0", "canary-us"),
        ("eu-west", "tier-1", "eu-west"),
        ("us-east", "tier-1", "shops-us-east"),
    ] {
        let fields = application(&cp, app);
        let expected = [
            system_url.as_str(),
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
            fields, expected,
            "Application argocd/{app}: repoURL, targetRevision, path, project, destination server and namespace, labels tier, shopset, managed-by"
        );
    }
    let auto = cp.kubectl_ok([
        "get",
        "application",
        "-n",
        "argocd",
        "canary-eu",
        "-o",
        "jsonpath={.spec.syncPolicy.automated.prune} {.spec.syncPolicy.syncOptions[0]}",
    ]);
    assert_eq!(auto, "true ServerSideApply=true", "tier-0's syncPolicy is copied");
    mark("2. branches, gitlinks, status and Applications checked", &mut timings);

    // ------------------------------------------------------------------ 3. webhook and poll
    let checkout =
        fs::read_to_string(examples.join("app/base/checkout.yaml")).expect("read examples/app/base/checkout.yaml");
    assert!(
        checkout.contains("ghcr.io/acme/checkout:1.0.0"),
        "examples/app/base/checkout.yaml changed: adapt this test"
    );
    let storefront =
        fs::read_to_string(examples.join("app/base/storefront.yaml")).expect("read examples/app/base/storefront.yaml");
    assert!(
        storefront.contains("ghcr.io/acme/storefront:1.0.0"),
        "examples/app/base/storefront.yaml changed: adapt this test"
    );

    // A signed push webhook: right after a poll, so the next poll is a whole interval away and
    // the bump can only come from the webhook.
    let tick = ctl.wait_for_poll_tick("tier-0");
    let app1 = commit_files(
        &app_url,
        "tier-0",
        &[("base/checkout.yaml", &checkout.replace(":1.0.0", ":1.1.0"))],
        "checkout 1.1.0",
    );
    let push = format!(r#"{{"ref":"refs/heads/tier-0","repository":{{"clone_url":"{app_url}"}}}}"#);
    // A bump changes no ShopSet, so it writes no ShopSet's status (that describes the ShopSet's own
    // generation; the Tier's status names the system commit): a bump among 1,000 ShopSets is not
    // 1,000 API writes.
    let canary_version = jsonpath(&cp, "shopsets", "canary-eu", "{.metadata.resourceVersion}");
    let reconciled = ctl.reconciles("tier-0");
    let sent = Instant::now();
    let (code, body) = ctl.webhook(&push, &sign(SECRET, &push));
    assert_eq!(code, 202, "signed webhook: {body}");
    assert!(body.contains("reconciling: tier-0"), "the push concerns tier-0 only: {body}");
    wait_until("the webhook to bump tier-0's gitlink", Duration::from_secs(15), &ctl, || {
        (gitlink(&system_repo, "tier-0", "base") == app1).then_some(())
    });
    let webhook_latency = sent.elapsed();
    assert!(
        Instant::now() < tick + TIER0_INTERVAL,
        "the bump came {:?} after a poll: later than the next poll, so it proves nothing about the webhook",
        tick.elapsed()
    );
    let bump = log(&system_url, "tier-0");
    assert_eq!(bump.len(), 2, "{bump:?}");
    assert!(bump[0].1.contains(&format!("app: {} -> {} (1 commit)", &app0[..7], &app1[..7])), "{bump:?}");
    wait_until("the bump's reconcile to end", Duration::from_secs(15), &ctl, || {
        (ctl.reconciles("tier-0") > reconciled).then_some(())
    });
    assert_eq!(
        jsonpath(&cp, "shopsets", "canary-eu", "{.metadata.resourceVersion}"),
        canary_version,
        "the bump wrote ShopSet canary-eu, which it does not change"
    );
    assert_eq!(
        jsonpath(&cp, "shopsets", "canary-eu", "{.status.conditions[0].message}"),
        "rendered at shopsets/canary-eu on branch tier-0"
    );
    mark(&format!("3a. signed webhook -> gitlink bumped in {webhook_latency:.2?}"), &mut timings);

    // A badly signed webhook is refused and starts nothing; the poll picks the commit up.
    let metrics = ctl.metrics();
    let (delivered, refused) = (
        metric(&metrics, "shopset_webhook_deliveries_total", &[]),
        metric(&metrics, "shopset_webhook_refused_total", &[]),
    );
    assert_eq!((delivered, refused), (Some(1.0), Some(0.0)), "{metrics}");
    let tick = ctl.wait_for_poll_tick("tier-0");
    let app2 = commit_files(
        &app_url,
        "tier-0",
        &[("base/checkout.yaml", &checkout.replace(":1.0.0", ":1.2.0"))],
        "checkout 1.2.0",
    );
    let committed = Instant::now();
    let (code, body) = ctl.webhook(&push, &sign("not-the-secret", &push));
    assert_eq!(code, 401, "badly signed webhook: {body}");
    let (code, body) = ctl.webhook_unsigned(&push);
    assert_eq!(code, 401, "unsigned webhook: {body}");
    let metrics = ctl.metrics();
    assert_eq!(metric(&metrics, "shopset_webhook_refused_total", &[]), Some(2.0), "{metrics}");
    assert_eq!(metric(&metrics, "shopset_webhook_deliveries_total", &[]), Some(1.0), "{metrics}");
    // Until the next poll is due, nothing may move.
    while Instant::now() + Duration::from_millis(800) < tick + TIER0_INTERVAL {
        assert_eq!(
            gitlink(&system_repo, "tier-0", "base"),
            app1,
            "tier-0 moved before its poll was due: a refused webhook triggered a sync"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until("the poll to bump tier-0's gitlink", TIER0_INTERVAL + Duration::from_secs(15), &ctl, || {
        (gitlink(&system_repo, "tier-0", "base") == app2).then_some(())
    });
    let poll_latency = committed.elapsed();
    assert_eq!(log(&system_url, "tier-0").len(), 3);
    assert_eq!(branch_head(&system_url, "tier-1").as_deref(), Some(system1.as_str()), "tier-1 does not move");
    mark(&format!("3b. refused webhooks, poll picked the commit up {poll_latency:.2?} after it"), &mut timings);

    // ------------------------------------------------------------------ 4. the manual sync path
    let checkout_dir = work.path().join("system-tier-0");
    clone_recursive(&system_url, "tier-0", &checkout_dir);
    assert_eq!(
        git(&checkout_dir.join("base"), &["rev-parse", "HEAD"]),
        app2,
        "the submodule is checked out at the gitlink"
    );
    for ss in ["canary-eu", "canary-us"] {
        let rendered = cp.kubectl_ok(["kustomize", path_str(&checkout_dir.join("shopsets").join(ss))]);
        // Standalone kustomize renders the same as kubectl's built-in one (what Argo CD runs).
        let standalone =
            run_ok(Command::new(tool("kustomize")).args(["build", path_str(&checkout_dir.join("shopsets").join(ss))]));
        assert_eq!(rendered, standalone, "kubectl kustomize and kustomize build agree for {ss}");
        cp.kubectl_with_stdin_ok(["apply", "--server-side", "--field-manager=e2e-argocd", "-f", "-"], &rendered);
    }
    let image = |ns: &str, deploy: &str| {
        cp.kubectl_ok([
            "get",
            "deployment",
            "-n",
            ns,
            deploy,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
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
        let labels = cp.kubectl_ok([
            "get",
            "deployment",
            "-n",
            ns,
            "checkout",
            "-o",
            "jsonpath={.metadata.labels.shopset\\.dev/shopset}",
        ]);
        assert_eq!(labels, ns);
    }
    mark("4. clone --recurse-submodules, kustomize, apply --server-side", &mut timings);

    // ------------------------------------------------------------------ 5. a ShopSet deleted
    let before = log(&system_url, "tier-0").len();
    let head = branch_head(&system_url, "tier-0");
    // (`shopsets`, not `shopset`: the CRDs' category is also called `shopset`, and kubectl expands
    // a category before a singular name, so `kubectl delete shopset canary-us` fails with "you
    // must specify only one resource".)
    cp.kubectl_ok(["delete", "shopsets", "canary-us", "-n", "default"]);
    wait_until("canary-us to leave the tier-0 branch", Duration::from_secs(30), &ctl, || {
        (branch_head(&system_url, "tier-0") != head).then_some(())
    });
    let removed = log(&system_url, "tier-0");
    assert_eq!(removed.len(), before + 1, "{removed:?}");
    assert!(removed[0].1.contains("shopsets removed: canary-us"), "{removed:?}");
    let full = git(&system_repo, &["log", "-1", "--format=%B", "tier-0"]);
    assert!(full.contains("shopsets removed: canary-us"), "{full}");
    let listing = git(&system_repo, &["ls-tree", "-r", "--name-only", "tier-0"]);
    assert!(!listing.contains("canary-us"), "nothing of canary-us is left:\n{listing}");
    assert!(
        listing.contains("shopsets/canary-eu/kustomization.yaml") && listing.contains("applications/canary-eu.yaml"),
        "{listing}"
    );
    wait_until("Application canary-us to be deleted", Duration::from_secs(20), &ctl, || {
        cp.kubectl_ok(["get", "application", "-n", "argocd", "canary-us", "--ignore-not-found", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    let apps = cp.kubectl_ok(["get", "applications", "-n", "argocd", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(apps, "canary-eu eu-west us-east", "the other Applications stay");
    assert_eq!(branch_head(&system_url, "tier-1").as_deref(), Some(system1.as_str()), "tier-1 does not move");
    mark("5. ShopSet deleted: overlay and Application removed", &mut timings);

    // /metrics of the first run, before it is killed.
    let metrics = ctl.metrics();
    for name in ["shopset_reconciles_total{", "shopset_pushes_total{"] {
        assert!(metrics.contains(name), "/metrics has no {name}...}}:\n{metrics}");
    }
    let t0 = [("namespace", "default"), ("tier", "tier-0")];
    let t1 = [("namespace", "default"), ("tier", "tier-1")];
    // Pushes: first render, webhook bump, poll bump, ShopSet removal; tier-1 its first render.
    assert_eq!(metric(&metrics, "shopset_pushes_total", &t0), Some(4.0), "{metrics}");
    assert_eq!(metric(&metrics, "shopset_pushes_total", &t1), Some(1.0), "{metrics}");
    assert!(metric(&metrics, "shopset_reconciles_total", &t0).unwrap_or(0.0) >= 4.0, "{metrics}");
    assert!(metric(&metrics, "shopset_reconciles_total", &t1).unwrap_or(0.0) >= 1.0, "{metrics}");

    // ------------------------------------------------------------------ 6. restarts
    // Killed outright (no Lease release): a commit lands while it is down; the next replica
    // takes the Lease over once it expires and writes exactly one commit for it.
    ctl.kill();
    let before = log(&system_url, "tier-0");
    let app3 = commit_files(
        &app_url,
        "tier-0",
        &[("base/storefront.yaml", &storefront.replace(":1.0.0", ":1.1.0"))],
        "storefront 1.1.0",
    );
    ctl.start("e2e-replica-2");
    wait_until("the restarted controller to bump tier-0's gitlink", Duration::from_secs(45), &ctl, || {
        (gitlink(&system_repo, "tier-0", "base") == app3).then_some(())
    });
    assert!(
        ctl.log_since_start().contains("taking over the expired lease"),
        "the new replica took the dead one's Lease over"
    );
    // Let it settle (the reconciles its own status writes trigger) and poll again: still exactly
    // one new commit.
    ctl.wait_for_poll_tick("tier-0");
    let after = log(&system_url, "tier-0");
    assert_eq!(after.len(), before.len() + 1, "exactly one commit for the change made while down:\n{after:#?}");
    assert_eq!(after[1..], before[..], "on top of the previous head");
    assert!(after[0].1.contains(&format!("app: {} -> {} (1 commit)", &app2[..7], &app3[..7])), "{after:?}");
    assert_eq!(jsonpath(&cp, "tier", "tier-0", "{.status.appCommit}"), app3);
    mark("6a. killed, commit while down, restarted: one commit", &mut timings);

    // Stopped cleanly and started again with nothing changed: a full sync of both tiers, no commit.
    let (heads0, heads1) = (log(&system_url, "tier-0"), log(&system_url, "tier-1"));
    ctl.stop();
    ctl.start("e2e-replica-3");
    wait_until("both tiers synced by the third replica", Duration::from_secs(30), &ctl, || {
        let m = ctl.metrics();
        (metric(&m, "shopset_last_sync_timestamp_seconds", &t0).is_some()
            && metric(&m, "shopset_last_sync_timestamp_seconds", &t1).is_some())
        .then_some(())
    });
    ctl.wait_for_reconciles("tier-0", 1);
    assert_eq!(log(&system_url, "tier-0"), heads0, "no commit on tier-0 after a restart with nothing changed");
    assert_eq!(log(&system_url, "tier-1"), heads1, "no commit on tier-1 after a restart with nothing changed");
    let m = ctl.metrics();
    assert_eq!(metric(&m, "shopset_pushes_total", &t0).unwrap_or(0.0), 0.0, "{m}");
    assert_eq!(metric(&m, "shopset_pushes_total", &t1).unwrap_or(0.0), 0.0, "{m}");
    let (code, _) = http(&ctl.url("/healthz"), &[], None);
    assert_eq!(code, 200);
    assert_eq!(ready(&cp, "tier", "tier-0"), "True");
    mark("6b. clean restart with nothing changed: no commit", &mut timings);

    // tier-1 never moved: same head and one commit (its first render) all along.
    assert_eq!(branch_head(&system_url, "tier-1").as_deref(), Some(system1.as_str()), "tier-1 does not move");
    assert_eq!(log(&system_url, "tier-1").len(), tier1_commits);
    let errors = ctl.all_logs().lines().filter(|l| l.contains(" ERROR ")).map(str::to_string).collect::<Vec<_>>();
    assert!(errors.is_empty(), "the controller logged errors:\n{}", errors.join("\n"));
    ctl.stop();

    if std::env::var_os("SHOPSET_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("SHOPSET_E2E_KEEP: controller log, manifests and checkout kept in {}", work.keep().display());
    }
    eprintln!("timings:");
    for (what, took) in &timings {
        eprintln!("  {took:>8.2?}  {what}");
    }
    eprintln!("  {:>8.2?}  total", started.elapsed());
}

/// 7: pattern and CEL rules of the CRD, enforced by the API server with the field named.
fn invalid_tiers_are_refused(cp: &ControlPlane, app_url: &str, system_url: &str) {
    cp.kubectl_ok(["create", "namespace", "e2e-validation"]);
    let tier = |name: &str, app: &str, branch: Option<&str>| {
        let branch = branch.map(|b| format!("  branch: {b}\n")).unwrap_or_default();
        format!(
            "apiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata:\n  name: {name}\n  namespace: e2e-validation\nspec:\n{branch}  app:\n    url: {app}\n  system:\n    url: {system_url}\n"
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
    cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &tier("pinned", app_url, Some("release-a")));
    let out = cp.kubectl_with_stdin(["apply", "-f", "-"], &tier("pinned", app_url, Some("release-b")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "changing spec.branch is refused");
    assert!(err.contains("spec.branch") && err.contains(shopset::rules::BRANCH_IMMUTABLE), "the CEL message:\n{err}");
    let out = cp.kubectl([
        "patch",
        "tier",
        "pinned",
        "-n",
        "e2e-validation",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/branch"}]"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(shopset::rules::BRANCH_IMMUTABLE),
        "removing spec.branch is refused:\n{err}"
    );
    assert_eq!(
        cp.kubectl_ok(["get", "tier", "pinned", "-n", "e2e-validation", "-o", "jsonpath={.spec.branch}"]),
        "release-a"
    );
    // Nothing of this may reach the controller, which is not running yet.
    cp.kubectl_ok(["delete", "tier", "pinned", "-n", "e2e-validation"]);
    cp.kubectl_ok(["delete", "namespace", "e2e-validation", "--wait=false"]);
}

/// The example manifests with the daemon's URLs, tier-0 polling every 5 s and tier-1 hourly.
fn write_manifests(dir: &Path, examples: &Path, app_url: &str, config_url: &str, system_url: &str) {
    fs::create_dir_all(dir).expect("create manifests dir");
    for (file, edits) in [
        ("configuration.yaml", vec![]),
        ("tier-0.yaml", vec![("interval: 1m", "interval: 5s")]),
        ("tier-1.yaml", vec![("interval: 5m", "interval: 1h")]),
        ("shopsets.yaml", vec![]),
    ] {
        let mut text = fs::read_to_string(examples.join(file)).unwrap_or_else(|e| panic!("read examples/{file}: {e}"));
        for (from, to) in edits.into_iter().chain([
            (EXAMPLE_APP_URL, app_url),
            (EXAMPLE_CONFIG_URL, config_url),
            (EXAMPLE_SYSTEM_URL, system_url),
        ]) {
            if from.starts_with("interval") {
                assert!(text.contains(from), "examples/{file} no longer says {from:?}: adapt this test");
            }
            text = text.replace(from, to);
        }
        assert!(!text.contains("git.example.com"), "examples/{file} has a URL this test does not rewrite:\n{text}");
        fs::write(dir.join(file), text).expect("write manifest");
    }
}

// ---------------------------------------------------------------------------------------------
// The controller process

struct Controller {
    child: Option<Child>,
    port: u16,
    kubeconfig: PathBuf,
    cache: PathBuf,
    secret_file: PathBuf,
    log: PathBuf,
    /// Length of the log when the current process started.
    log_offset: usize,
}

impl Controller {
    fn new(cp: &ControlPlane, dir: &Path) -> Controller {
        let secret_file = dir.join("webhook-secret");
        fs::write(&secret_file, format!("{SECRET}\n")).expect("write webhook secret");
        let cache = dir.join("cache");
        fs::create_dir_all(&cache).expect("create cache dir");
        Controller {
            child: None,
            port: 0,
            kubeconfig: cp.kubeconfig().to_path_buf(),
            cache,
            secret_file,
            log: dir.join("controller.log"),
            log_offset: 0,
        }
    }

    /// Starts a replica and waits until /healthz answers.
    fn start(&mut self, identity: &str) {
        assert!(self.child.is_none(), "one controller at a time");
        self.port = free_port();
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open controller log");
        writeln!(log, "==== {identity} on 127.0.0.1:{}", self.port).expect("write controller log");
        self.log_offset = fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0);
        let child = Command::new(workspace_bin("shopset-controller"))
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--cache-dir={}", self.cache.display()))
            .arg(format!("--webhook-secret-file={}", self.secret_file.display()))
            .args([
                "--lease-namespace=default",
                &format!("--lease-duration={LEASE}"),
                &format!("--identity={identity}"),
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", path_env())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("POD_NAME")
            .env_remove("SHOPSET_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn shopset-controller");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("poll controller")) {
                panic!("shopset-controller exited ({status}) during start-up:\n{}", self.log_since_start());
            }
            if http(&self.url("/healthz"), &[], None).0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shopset-controller not serving /healthz after 20 s:\n{}",
                self.log_since_start()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no Lease release, no clean shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit (it releases its Lease).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("poll controller") {
                assert!(
                    status.success(),
                    "shopset-controller exited with {status} on SIGTERM:\n{}",
                    self.log_since_start()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shopset-controller ignored SIGTERM for 20 s:\n{}", self.log_since_start());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn metrics(&self) -> String {
        let (code, body) = http(&self.url("/metrics"), &[], None);
        assert_eq!(code, 200, "/metrics: {body}");
        body
    }

    fn webhook(&self, body: &str, signature: &str) -> (u16, String) {
        http(
            &self.url("/hooks/github"),
            &["X-GitHub-Event: push", &format!("X-Hub-Signature-256: {signature}"), "Content-Type: application/json"],
            Some(body),
        )
    }

    fn webhook_unsigned(&self, body: &str) -> (u16, String) {
        http(&self.url("/hooks/github"), &["X-GitHub-Event: push", "Content-Type: application/json"], Some(body))
    }

    fn reconciles(&self, tier: &str) -> f64 {
        metric(&self.metrics(), "shopset_reconciles_total", &[("namespace", "default"), ("tier", tier)]).unwrap_or(0.0)
    }

    /// Waits for `n` more reconciles of `tier`.
    fn wait_for_reconciles(&self, tier: &str, n: u32) {
        let start = self.reconciles(tier);
        wait_until(&format!("{n} more reconciles of {tier}"), TIER0_INTERVAL * (n + 2), self, || {
            (self.reconciles(tier) >= start + n as f64).then_some(())
        });
    }

    /// Waits until the controller is in its steady poll rhythm for `tier` (two reconciles about an
    /// interval apart, nothing else in between) and returns when the last one was seen: the next
    /// poll is due one interval later.
    fn wait_for_poll_tick(&self, tier: &str) -> Instant {
        let deadline = Instant::now() + TIER0_INTERVAL * 5;
        let mut last = (self.reconciles(tier), Instant::now());
        let mut steady = false;
        loop {
            let n = self.reconciles(tier);
            if n != last.0 {
                let now = Instant::now();
                // An interval since the previous reconcile (less the sampling slack): a poll.
                if steady && now.duration_since(last.1) + Duration::from_millis(600) >= TIER0_INTERVAL {
                    return now;
                }
                steady = true;
                last = (n, now);
            }
            assert!(
                Instant::now() < deadline,
                "no steady {TIER0_INTERVAL:?} poll of {tier} within {:?}:\n{}",
                TIER0_INTERVAL * 5,
                self.log_since_start()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn all_logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_since_start(&self) -> String {
        self.all_logs().get(self.log_offset..).unwrap_or_default().to_string()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- shopset-controller log ({}):\n{}", self.log.display(), self.all_logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Polls `probe` every 200 ms until it returns `Some`, or panics after `timeout` with the
/// controller's log.
fn wait_until<T>(what: &str, timeout: Duration, ctl: &Controller, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n---- controller log since its start:\n{}",
                ctl.log_since_start()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The commit a gitlink of `branch` points to in a bare repository ("" if there is none).
fn gitlink(repo: &Path, branch: &str, path: &str) -> String {
    let line = git(repo, &["ls-tree", branch, path]);
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["160000", "commit", sha, p] if p == path => sha.to_string(),
        _ => String::new(),
    }
}

fn jsonpath(cp: &ControlPlane, kind: &str, name: &str, path: &str) -> String {
    cp.kubectl_ok(["get", kind, name, "-n", "default", "-o", &format!("jsonpath={path}")])
}

fn ready(cp: &ControlPlane, kind: &str, name: &str) -> String {
    jsonpath(cp, kind, name, r#"{.status.conditions[?(@.type=="Ready")].status}"#)
}

/// repoURL, targetRevision, path, project, destination server and namespace, and the labels
/// tier, shopset and managed-by of an Application.
fn application(cp: &ControlPlane, name: &str) -> Vec<String> {
    let path = [
        "{.spec.source.repoURL}",
        "{.spec.source.targetRevision}",
        "{.spec.source.path}",
        "{.spec.project}",
        "{.spec.destination.server}",
        "{.spec.destination.namespace}",
        "{.metadata.labels.shopset\\.dev/tier}",
        "{.metadata.labels.shopset\\.dev/shopset}",
        "{.metadata.labels.app\\.kubernetes\\.io/managed-by}",
    ]
    .join("|");
    let out = cp.kubectl_ok(["get", "application", "-n", "argocd", name, "-o", &format!("jsonpath={path}")]);
    out.split('|').map(str::to_string).collect()
}

/// `X-Hub-Signature-256` of `body`, computed by openssl (independently of the controller's code).
fn sign(secret: &str, body: &str) -> String {
    let mut child = Command::new(tool("openssl"))
        .args(["dgst", "-sha256", "-hmac", secret, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write openssl stdin");
    let out = child.wait_with_output().expect("wait for openssl");
    assert!(out.status.success(), "openssl dgst: {}", String::from_utf8_lossy(&out.stderr));
    let hex = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(hex.len(), 64, "HMAC-SHA256 hex: {hex}");
    format!("sha256={hex}")
}

/// An HTTP request with curl: (status, body). Status 0 when nothing answered.
fn http(url: &str, headers: &[&str], body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new(tool("curl"));
    cmd.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if body.is_some() {
        cmd.args(["-X", "POST", "--data-binary", "@-"]);
    }
    cmd.arg(url).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run curl");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(body) = body {
        stdin.write_all(body.as_bytes()).expect("write curl stdin");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait for curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of a sample of the OpenMetrics text whose labels include `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric_name != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            return None;
        }
        value.parse().ok()
    })
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.env("PATH", path_env()).stdin(Stdio::null()).output().expect("run command");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local address").port()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
