//! A storm of pushes and edits, against real parts: four Tiers, each with its own app repository
//! on a real `git daemon`, the `shopset-controller` binary as a process on a real control plane.
//! Signed webhook deliveries naming the pushed repositories arrive while commits are pushed to the
//! app repositories and ShopSets are edited through the API server (`kubectl patch`), all at once.
//!
//! Asserted: every delivery is answered 202 (none 5xx); every change ends up in a system commit
//! (each tier's branch pins its app's last commit and renders every ShopSet's last edit); no tier
//! was reconciled twice at once (`shopset_reconciles_in_flight_max`); the deliveries were
//! coalesced (syncs and pushes far fewer than deliveries). The figures, with the controller's peak
//! RSS, are printed. `cargo run --release -p shopset-bench -- --storm` runs the full-size storm.

mod support;

use std::time::Duration;

use shopset_e2e::gitserver::{GitDaemon, git, seed_dir};
use shopset_e2e::storm::{self, App, Hook, Plan};
use shopset_e2e::tools::repo_root;
use support::*;

const TESTS: usize = 1;
const TIERS: usize = 4;
const SHOPSETS_PER_TIER: usize = 5;
/// Generous bound for the first syncs and for the storm to settle on a loaded machine.
const SETTLE: Duration = Duration::from_secs(180);

fn tier(i: usize) -> String {
    format!("storm-{i}")
}

fn shopset(i: usize, j: usize) -> String {
    format!("storm-{i}-cell-{j}")
}

/// The ShopSet the `e`-th edit changes, and the shop it then serves.
fn edited(e: usize) -> (String, String) {
    let k = e % (TIERS * SHOPSETS_PER_TIER);
    let name = shopset(k / SHOPSETS_PER_TIER, k % SHOPSETS_PER_TIER);
    let shop = format!("{name}-e{e:04}");
    (name, shop)
}

#[test]
fn a_storm_of_deliveries_pushes_and_edits_ends_in_system_commits_with_no_5xx_and_no_tier_synced_twice_at_once() {
    let cp = Plane::shared(TESTS);
    let ns = "storm";
    let argocd_ns = "storm-argocd";
    cp.kubectl_ok(["create", "namespace", ns]);
    cp.kubectl_ok(["create", "namespace", argocd_ns]);
    let daemon = GitDaemon::start();
    let examples = repo_root().join("examples");
    let config = daemon.create_repo("config");
    let system = daemon.create_repo("system");
    seed_dir(&config, &tier(0), &examples.join("config"), "config from examples/config");
    let mut apps = Vec::new();
    for i in 0..TIERS {
        if i > 0 {
            git(&daemon.path("config"), &["branch", &tier(i), &tier(0)]);
        }
        let url = daemon.create_repo(&format!("app-{i}"));
        seed_dir(&url, &tier(i), &examples.join("app"), "app from examples/app");
        let body = storm::push_body(&url, &tier(i));
        let signature = sign(WEBHOOK_SECRET, body.as_bytes());
        apps.push(App { url, branch: tier(i), hook: Hook { body, signature } });
    }

    let mut manifests = format!(
        "apiVersion: shopset.dev/v1alpha1\nkind: Configuration\nmetadata:\n  name: shop-config\n  namespace: {ns}\n\
         spec:\n  url: {config}\n  path: component\n"
    );
    for (i, app) in apps.iter().enumerate() {
        // Hourly polls: within the test only the deliveries and the watches start a reconcile.
        manifests.push_str(&format!(
            "---\napiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata:\n  name: {tier}\n  namespace: {ns}\n\
             spec:\n  app:\n    url: {app}\n    path: base\n  system:\n    url: {system}\n  argocd:\n    \
             namespace: {argocd_ns}\n  interval: 1h\n",
            tier = tier(i),
            app = app.url,
        ));
        for j in 0..SHOPSETS_PER_TIER {
            manifests.push_str(&format!(
                "---\napiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
                 spec:\n  tier: {tier}\n  configuration: shop-config\n  shops: [{name}-start]\n",
                name = shopset(i, j),
                tier = tier(i),
            ));
        }
    }
    let work = WorkDir::new(ns);
    let mut ctl = Controller::new(&cp, work.path(), ns, "controller");
    ctl.start(&Run::new("storm-replica"));
    cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &manifests);
    for i in 0..TIERS {
        wait_until(&format!("Tier {ns}/{} Ready=True", tier(i)), SETTLE, &ctl, || {
            (ready_condition(&cp, ns, "tier", &tier(i)).0 == "True").then_some(())
        });
    }
    phase(ns, "4 Tiers Ready");
    let count = |text: &str, name: &str| -> f64 {
        (0..TIERS).map(|i| metric(text, name, &[("namespace", ns), ("tier", &tier(i))]).unwrap_or(0.0)).sum()
    };
    // The counts start with no reconcile in flight (Ready's own status writes start more): a sync
    // counted before the start whose push came after would count a push without its sync.
    let before = wait_until("no reconcile in flight", SETTLE, &ctl, || {
        let first = ctl.metrics();
        std::thread::sleep(Duration::from_millis(500));
        let second = ctl.metrics();
        let idle = count(&second, "shopset_reconciles_in_flight") == 0.0
            && count(&second, "shopset_reconciles_total") == count(&first, "shopset_reconciles_total");
        idle.then_some(second)
    });

    let plan = Plan {
        port: ctl.port(),
        window: Duration::from_secs(10),
        deliveries: 500,
        senders: 4,
        apps: apps.clone(),
        pushes: 20,
        edits: 100,
        editors: 4,
    };
    let edit = |e: usize| -> Result<(), String> {
        let (name, shop) = edited(e);
        let patch = format!(r#"{{"spec":{{"shops":["{shop}"]}}}}"#);
        let out = cp.kubectl(["patch", "shopset", &name, "-n", ns, "--type=merge", "-p", &patch]);
        out.status.success().then_some(()).ok_or_else(|| text(&out.stderr))
    };
    let out = storm::run(&plan, &edit);
    phase(ns, &format!("storm sent in {:.1?}", out.elapsed));
    assert!(out.edit_errors.is_empty(), "edits failed: {:?}", out.edit_errors);
    assert_eq!(out.delivered(), plan.deliveries, "{:?}", out.statuses);
    assert_eq!(out.failed(), 0, "deliveries answered 5xx or not at all: {:?}", out.statuses);
    assert_eq!(out.statuses.get(&202), Some(&plan.deliveries), "every signed push accepted: {:?}", out.statuses);

    // Every change ends up in a system commit: the last app commit pinned, the last edit rendered.
    let system_repo = daemon.path("system");
    let last_edit: Vec<(String, String)> =
        (plan.edits.saturating_sub(TIERS * SHOPSETS_PER_TIER)..plan.edits).map(edited).collect();
    wait_until("every push and edit in a system commit", SETTLE, &ctl, || {
        let pinned = (0..TIERS).all(|i| {
            shopset_e2e::gitserver::try_git(&system_repo, &["rev-parse", &format!("{}:base", tier(i))])
                .is_ok_and(|oid| oid.trim() == out.heads[i])
        });
        let rendered = last_edit.iter().all(|(name, shop)| {
            let i: usize =
                name["storm-".len()..].split('-').next().and_then(|n| n.parse().ok()).expect("a ShopSet of the storm");
            shopset_e2e::gitserver::try_git(
                &system_repo,
                &["show", &format!("{}:shopsets/{name}/kustomization.yaml", tier(i))],
            )
            .is_ok_and(|text| text.contains(shop.as_str()))
        });
        (pinned && rendered).then_some(())
    });
    // The statuses say so too, once the last reconciles end.
    for i in 0..TIERS {
        let head = git(&system_repo, &["rev-parse", &tier(i)]);
        wait_until(&format!("{}'s status to name its head", tier(i)), SETTLE, &ctl, || {
            (jsonpath(&cp, ns, "tier", &tier(i), "{.status.systemCommit}") == head.trim()).then_some(())
        });
    }

    let m = ctl.metrics();
    for i in 0..TIERS {
        let name = tier(i);
        let labels = [("namespace", ns), ("tier", name.as_str())];
        assert_eq!(
            metric(&m, "shopset_reconciles_in_flight_max", &labels),
            Some(1.0),
            "{} was reconciled twice at once:\n{m}",
            tier(i)
        );
    }
    let syncs = count(&m, "shopset_syncs_total") - count(&before, "shopset_syncs_total");
    let pushes = count(&m, "shopset_pushes_total") - count(&before, "shopset_pushes_total");
    let reconciles = count(&m, "shopset_reconciles_total") - count(&before, "shopset_reconciles_total");
    let accepted = metric(&m, "shopset_webhook_deliveries_total", &[]).unwrap_or(0.0);
    assert_eq!(accepted, plan.deliveries as f64, "{m}");
    // Each sync follows a push or an edit: far fewer than the deliveries, however fast the machine.
    assert!(pushes >= TIERS as f64, "every tier's app moved, so every tier pushed: {pushes}\n{m}");
    assert!(syncs >= pushes && syncs * 2.0 < plan.deliveries as f64, "{syncs} syncs, {pushes} pushes\n{m}");
    let peak = ctl.pid().and_then(storm::peak_rss_kib).expect("the controller's VmHWM");
    eprintln!(
        "storm: {} deliveries, {} pushes, {} edits in {:.1?}: {reconciles} reconciles, {syncs} syncs, {pushes} \
         system pushes; delivery p50 {:.1?}, max {:.1?}; controller peak RSS {:.1} MiB",
        plan.deliveries,
        plan.pushes,
        plan.edits,
        out.elapsed,
        storm::percentile(&out.latencies, 0.5),
        storm::percentile(&out.latencies, 1.0),
        peak as f64 / 1024.0
    );
    // Bounded: a storm of small deliveries must not grow the controller without end.
    assert!(peak < 512 * 1024, "controller peak RSS {peak} KiB");
    ctl.stop();
    let errors: Vec<String> = ctl.all_logs().lines().filter(|l| l.contains(" ERROR ")).map(str::to_string).collect();
    assert!(errors.is_empty(), "the controller logged errors:\n{}", errors.join("\n"));
}
