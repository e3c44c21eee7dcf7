//! The storm (`--storm`): 1,000 signed webhook deliveries in 10 s for 4 tiers, while commits are
//! pushed to the tiers' app repositories and 200 ShopSet edits land through the API server
//! (`kubectl patch`), against the release controller as a process on a real control plane.
//! Measured: deliveries per second, answers by status, delivery response time, reconciles, syncs
//! and pushes (the controller's metrics), the most reconciles of one tier at once, the time until
//! every change is in a system commit, and the controller's peak RSS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{GitDaemon, git, seed_dir, try_git};
use shopset_e2e::storm::{self, App, Hook, Plan};

use crate::cluster::{SECRET, proc_field, start_controller, wait_until};

const TIERS: usize = 4;
const SHOPSETS_PER_TIER: usize = 25;
const DELIVERIES: usize = 1000;
const PUSHES: usize = 40;
const EDITS: usize = 200;

fn tier(i: usize) -> String {
    format!("storm-{i}")
}

fn shopset(i: usize, j: usize) -> String {
    format!("storm-{i}-cell-{j:02}")
}

/// The ShopSet the `e`-th edit changes, and the shop it then serves.
fn edited(e: usize) -> (usize, String, String) {
    let k = e % (TIERS * SHOPSETS_PER_TIER);
    let (i, name) = (k / SHOPSETS_PER_TIER, shopset(k / SHOPSETS_PER_TIER, k % SHOPSETS_PER_TIER));
    let shop = format!("{name}-e{e:04}");
    (i, name, shop)
}

fn metrics(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Every sample of `name` (across tiers): their sum and their maximum.
fn samples(text: &str, name: &str) -> (f64, f64) {
    text.lines()
        .filter(|l| l.split_once('{').is_some_and(|(n, _)| n == name))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .fold((0.0, 0.0), |(sum, max), v| (sum + v, f64::max(max, v)))
}

pub fn run(scratch: &Path, notes: &mut Vec<String>) -> Result<(), String> {
    let cp = ControlPlane::start();
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let daemon = GitDaemon::start();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let config = daemon.create_repo("config");
    let system = daemon.create_repo("system");
    seed_dir(&config, &tier(0), &examples.join("config"), "config component");
    let mut apps = Vec::new();
    let mut manifests = format!(
        "apiVersion: shopset.dev/v1alpha1\nkind: Configuration\nmetadata:\n  name: shop-config\nspec:\n  url: \
         {config}\n  path: component\n"
    );
    for i in 0..TIERS {
        if i > 0 {
            git(&daemon.path("config"), &["branch", &tier(i), &tier(0)]);
        }
        let url = daemon.create_repo(&format!("app-{i}"));
        seed_dir(&url, &tier(i), &examples.join("app"), "app base");
        let body = storm::push_body(&url, &tier(i));
        let signature = shopset::webhook::sign(SECRET.as_bytes(), body.as_bytes());
        // Hourly polls: only the deliveries and the watches start reconciles.
        manifests.push_str(&format!(
            "---\napiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata:\n  name: {tier}\nspec:\n  app:\n    url: \
             {url}\n    path: base\n  system:\n    url: {system}\n  interval: 1h\n",
            tier = tier(i)
        ));
        for j in 0..SHOPSETS_PER_TIER {
            manifests.push_str(&format!(
                "---\napiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: {name}\nspec:\n  tier: \
                 {tier}\n  configuration: shop-config\n  shops: [{name}-start]\n",
                name = shopset(i, j),
                tier = tier(i)
            ));
        }
        apps.push(App { url, branch: tier(i), hook: Hook { body, signature } });
    }
    cp.kubectl_with_stdin_ok(["apply", "--server-side", "-f", "-"], &manifests);
    let ctrl = start_controller(&cp, scratch, "storm")?;
    let ready = || {
        let out = cp.kubectl([
            "get",
            "tiers",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
        ]);
        let out = String::from_utf8_lossy(&out.stdout).to_string();
        (0..TIERS).all(|i| out.split_whitespace().any(|w| w == format!("{}=True", tier(i))))
    };
    if !wait_until(Duration::from_secs(300), ready) {
        return Err("the 4 storm tiers did not become Ready within 5 minutes".into());
    }
    let before = metrics(ctrl.port)?;

    let plan = Plan {
        port: ctrl.port,
        window: Duration::from_secs(10),
        deliveries: DELIVERIES,
        senders: 8,
        apps,
        pushes: PUSHES,
        edits: EDITS,
        editors: 4,
    };
    let edit = |e: usize| -> Result<(), String> {
        let (_, name, shop) = edited(e);
        let patch = format!(r#"{{"spec":{{"shops":["{shop}"]}}}}"#);
        let out = cp.kubectl(["patch", "shopset", &name, "--type=merge", "-p", &patch]);
        out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
    };
    eprintln!("bench: storm of {DELIVERIES} deliveries, {PUSHES} app pushes, {EDITS} ShopSet edits over 10 s");
    let out = storm::run(&plan, &edit);
    let ended = Instant::now();

    // Every change in a system commit: each app's last commit pinned, each ShopSet's last edit rendered.
    let system_repo = daemon.path("system");
    let last: Vec<(usize, String, String)> =
        (EDITS.saturating_sub(TIERS * SHOPSETS_PER_TIER)..EDITS).map(edited).collect();
    let settled = wait_until(Duration::from_secs(300), || {
        (0..TIERS).all(|i| {
            try_git(&system_repo, &["rev-parse", &format!("{}:base", tier(i))])
                .is_ok_and(|oid| oid.trim() == out.heads[i])
        }) && last.iter().all(|(i, name, shop)| {
            try_git(&system_repo, &["show", &format!("{}:shopsets/{name}/kustomization.yaml", tier(*i))])
                .is_ok_and(|text| text.contains(shop.as_str()))
        })
    });
    let settle = ended.elapsed();
    // The last reconciles (status writes) end.
    std::thread::sleep(Duration::from_secs(2));
    let after = metrics(ctrl.port)?;
    let delta = |name: &str| samples(&after, name).0 - samples(&before, name).0;
    let (reconciles, syncs, pushes) =
        (delta("shopset_reconciles_total"), delta("shopset_syncs_total"), delta("shopset_pushes_total"));
    let max_at_once = samples(&after, "shopset_reconciles_in_flight_max").1;
    let peak = proc_field(ctrl.child.id(), "VmHWM:").unwrap_or(0);
    let statuses: Vec<String> = out.statuses.iter().map(|(code, n)| format!("{n} x {code}")).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    notes.push(format!(
        "storm, 4 tiers x {SHOPSETS_PER_TIER} ShopSets: {} signed deliveries in {:.1} s ({:.0}/s) while {PUSHES} \
         commits were pushed to the 4 app repositories and {EDITS} ShopSet edits landed (kubectl patch, {} \
         failed; pushes and edits done {:.1} s after the start); answers: {} ({} 5xx or none); delivery \
         response p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        out.delivered(),
        out.delivering.as_secs_f64(),
        out.delivered() as f64 / out.delivering.as_secs_f64(),
        out.edit_errors.len(),
        out.elapsed.as_secs_f64(),
        statuses.join(", "),
        out.failed(),
        ms(storm::percentile(&out.latencies, 0.5)),
        ms(storm::percentile(&out.latencies, 0.99)),
        ms(storm::percentile(&out.latencies, 1.0)),
    ));
    notes.push(format!(
        "storm, controller: {reconciles} reconciles, {syncs} syncs (renders), {pushes} pushes to system branches \
         for {} deliveries; most reconciles of one tier at once: {max_at_once}; every change in a system commit \
         {}; peak RSS {:.1} MiB",
        out.delivered(),
        if settled {
            format!("{:.1} s after the storm", settle.as_secs_f64())
        } else {
            format!("NOT within {:.0} s", settle.as_secs_f64())
        },
        peak as f64 / 1024.0
    ));
    if !out.edit_errors.is_empty() {
        notes.push(format!("storm, first failed edit: {}", out.edit_errors[0]));
    }
    drop(ctrl);
    Ok(())
}
