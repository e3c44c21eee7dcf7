//! The controller and a real Argo CD in one loop. Tier, Configuration and ShopSets are applied
//! with kubectl; `shopset-controller` (a process) pushes the system branch and applies the
//! Applications; Argo CD v3.5 deploys them (kwok makes the Pods Ready). What Argo CD reports comes
//! back to the ShopSets' status and the Tier's `Deployed` condition, which `kubectl wait` waits on.
//! An app commit then reaches the cluster with Argo CD's own periodic refresh off: only the
//! refresh annotation the controller sets after its push can make Argo CD read the branch again.
//! A deleted Application is put back by the controller though nothing moved in git.
//!
//! Nothing here writes a status: every Synced, Healthy and revision is Argo CD's, and the
//! ShopSet and Tier status the controller's.
//!
//! Build the workspace first: the test runs the `shopset-controller` binary of `cargo build`.

mod support;

use std::time::{Duration, Instant};

use shopset_e2e::argocd::ArgoCdOptions;
use shopset_e2e::controlplane::{ControlPlane, Options};
use shopset_e2e::gitserver::{GitDaemon, branch_head, commit_files, seed_dir};
use shopset_e2e::tools::repo_root;
use support::{Controller, Run, WorkDir, jsonpath, short, wait_until};

const NS: &str = "loop";
const TIER: &str = "tier-0";
const SHOPSETS: [&str; 2] = ["canary-eu", "canary-us"];
/// The Tier's poll interval: a deleted Application must be back within it.
const INTERVAL: Duration = Duration::from_secs(20);
/// The first deployment clones, builds and applies from nothing, and Argo CD fills its cluster
/// cache first: generous, the machine may be slow and busy.
const FIRST_DEPLOY: Duration = Duration::from_secs(600);
const NEXT_DEPLOY: Duration = Duration::from_secs(300);

#[test]
fn the_controller_deploys_through_argo_cd_reports_what_it_runs_and_puts_back_a_deleted_application() {
    let started = Instant::now();
    // No periodic refresh: after the first sync only the refresh annotation (or a change of an
    // Application) makes Argo CD read the system branch again.
    let argocd_options = ArgoCdOptions { app_resync: Duration::ZERO, ..ArgoCdOptions::default() };
    let cp = ControlPlane::start_with(Options::default().argocd(argocd_options));
    let argocd = cp.argocd();
    eprintln!("control plane with Argo CD up in {:.1?}", started.elapsed());

    let daemon = GitDaemon::start();
    let app_url = daemon.create_repo("shop-app");
    let config_url = daemon.create_repo("shop-config");
    let system_url = daemon.create_repo("shop-system");
    let examples = repo_root().join("examples");
    seed_dir(&app_url, "main", &examples.join("app"), "Shop application base");
    seed_dir(&config_url, "main", &examples.join("config"), "Shared shop configuration");

    cp.kubectl_ok(["create", "namespace", NS]);
    let work = WorkDir::new("argocd-loop");
    let mut ctl = Controller::new(&cp, work.path(), NS, "controller");
    ctl.start(&Run::new("argocd-loop"));
    cp.kubectl_with_stdin_ok(
        ["apply", "-n", NS, "-f", "-"],
        &shopset_e2e::argocd::tier0_manifests(
            &app_url,
            &config_url,
            &system_url,
            argocd.namespace(),
            &format!("{}s", INTERVAL.as_secs()),
        ),
    );

    // 1. The controller pushes and applies; Argo CD deploys; the Tier says so. (The first
    // reconcile may push before the watch caches hold every ShopSet: the head is the Tier's.)
    let head = wait_deployed(&cp, &ctl, &system_url, FIRST_DEPLOY);
    argocd.wait_synced_healthy(&SHOPSETS, &head, NEXT_DEPLOY);
    eprintln!("Tier Deployed, Applications Synced and Healthy at {head} after {:.1?}", started.elapsed());
    for shopset in SHOPSETS {
        assert_eq!(
            shopset_status(&cp, shopset),
            ["Synced", "Healthy", head.as_str()],
            "ShopSet {shopset}'s status: what Argo CD reports of its Application"
        );
    }
    let columns = cp.kubectl_ok(["get", "shopsets", "-n", NS]);
    let header: Vec<&str> = columns.lines().next().unwrap_or_default().split_whitespace().collect();
    assert!(header.contains(&"SYNC") && header.contains(&"HEALTH"), "kubectl get shopsets:\n{columns}");
    assert!(columns.lines().skip(1).all(|l| l.contains(" Synced ") && l.contains(" Healthy ")), "{columns}");

    // 2. An app commit: the poll bumps the base gitlink, the controller asks Argo CD to refresh,
    // and Argo CD (no periodic refresh) deploys the new head.
    let storefront = std::fs::read_to_string(examples.join("app/base/storefront.yaml")).expect("read storefront.yaml");
    let (old_image, new_image) = ("ghcr.io/acme/storefront:1.0.0", "ghcr.io/acme/storefront:1.1.0");
    assert_eq!(storefront.matches(old_image).count(), 1, "examples/app/base/storefront.yaml names {old_image} once");
    let app_change = commit_files(
        &app_url,
        TIER,
        &[("base/storefront.yaml", &storefront.replace(old_image, new_image))],
        "storefront 1.1.0",
    );
    let new_head = wait_until("the poll to bump tier-0", INTERVAL * 3, &ctl, || {
        branch_head(&system_url, TIER).filter(|h| *h != head)
    });
    let bumped = Instant::now();
    argocd.wait_synced_healthy(&SHOPSETS, &new_head, NEXT_DEPLOY);
    eprintln!("Applications Synced and Healthy at {new_head} {:.1?} after the bump", bumped.elapsed());
    assert_eq!(wait_deployed(&cp, &ctl, &system_url, NEXT_DEPLOY), new_head);
    for shopset in SHOPSETS {
        wait_until(&format!("ShopSet {shopset}'s status at {new_head}"), NEXT_DEPLOY, &ctl, || {
            (shopset_status(&cp, shopset) == ["Synced", "Healthy", new_head.as_str()]).then_some(())
        });
    }
    let image = jsonpath(&cp, "canary-eu", "deployment", "storefront", "{.spec.template.spec.containers[0].image}");
    assert_eq!(image, new_image, "Argo CD applied the app change {app_change}");

    // 3. An Application deleted in the cluster, nothing moved in git: put back within a poll.
    let uid = || {
        cp.kubectl_ok([
            "get",
            "application",
            "canary-eu",
            "-n",
            argocd.namespace(),
            "--ignore-not-found",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
    };
    let before = uid();
    assert!(!before.is_empty(), "Application canary-eu exists");
    cp.kubectl_ok(["delete", "application", "canary-eu", "-n", argocd.namespace()]);
    wait_until("the controller to put Application canary-eu back", INTERVAL + Duration::from_secs(10), &ctl, || {
        let now = uid();
        (!now.is_empty() && now != before).then_some(())
    });
    assert_eq!(branch_head(&system_url, TIER).as_deref(), Some(new_head.as_str()), "no commit to put it back");
    let events = cp.kubectl_ok([
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        &format!("involvedObject.kind=Tier,involvedObject.name={TIER},reason=ApplicationsRestored"),
        "-o",
        "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
    ]);
    // One: an Application just applied and not yet in the controller's cache is no drift.
    let events: Vec<&str> = events.lines().collect();
    assert_eq!(events.len(), 1, "one ApplicationsRestored Event: {events:?}");
    assert!(
        events[0].starts_with("Warning ") && events[0].contains("canary-eu") && !events[0].contains("canary-us"),
        "a Warning that names the Application put back, and only it: {events:?}"
    );
    argocd.wait_synced_healthy(&SHOPSETS, &new_head, NEXT_DEPLOY);
    assert_eq!(wait_deployed(&cp, &ctl, &system_url, NEXT_DEPLOY), new_head);
}

/// `kubectl wait --for=condition=Deployed tier/tier-0` until the condition is about the system
/// branch's head and counts every ShopSet; that head.
fn wait_deployed(cp: &ControlPlane, ctl: &Controller, system_url: &str, timeout: Duration) -> String {
    wait_until("Tier tier-0 Deployed at the system branch's head", timeout, ctl, || {
        let out = cp.kubectl(["wait", "-n", NS, "--for=condition=Deployed", "tier/tier-0", "--timeout=30s"]);
        let head = branch_head(system_url, TIER)?;
        let message = jsonpath(cp, NS, "tier", TIER, "{.status.conditions[?(@.type==\"Deployed\")].message}");
        let want = format!("{n}/{n} at {}", short(&head), n = SHOPSETS.len());
        (out.status.success() && message == want).then_some(head)
    })
}

/// syncStatus, healthStatus and revision of a ShopSet's status.
fn shopset_status(cp: &ControlPlane, shopset: &str) -> Vec<String> {
    let text = jsonpath(cp, NS, "shopset", shopset, "{.status.syncStatus}|{.status.healthStatus}|{.status.revision}");
    text.split('|').map(str::to_string).collect()
}
