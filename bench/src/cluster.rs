//! Cluster scenarios: bump latency (webhook and polling) and the controller's memory and idle CPU,
//! with a real control plane and the release controller as a process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{GitDaemon, branch_head, commit_files, git};

use crate::Row;

pub(crate) const SECRET: &str = "bench-webhook-secret";

pub(crate) struct Controller {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn controller_binary() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "shopset-controller"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build --release -p shopset-controller failed".into());
    }
    Ok(target.join("release/shopset-controller"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18081)
}

pub(crate) fn start_controller(cp: &ControlPlane, scratch: &Path, name: &str) -> Result<Controller, String> {
    start_controller_with(cp, scratch, name, &[])
}

/// [`start_controller`] with more arguments.
pub(crate) fn start_controller_with(
    cp: &ControlPlane,
    scratch: &Path,
    name: &str,
    extra: &[&str],
) -> Result<Controller, String> {
    let secret = scratch.join("webhook-secret");
    std::fs::write(&secret, SECRET).map_err(|e| e.to_string())?;
    let port = free_port();
    let log = std::fs::File::create(scratch.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let child = Command::new(controller_binary()?)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--lease-namespace", "default", "--concurrency", "4"])
        .arg("--cache-dir")
        .arg(scratch.join(format!("{name}-cache")))
        .arg("--webhook-secret-file")
        .arg(&secret)
        .args(extra)
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        // As deploy/deployment.yaml runs it.
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start controller: {e}"))?;
    Ok(Controller { child, port })
}

pub(crate) fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

pub(crate) fn post_webhook(port: u16, app_url: &str) -> Result<(), String> {
    let body = format!(r#"{{"ref":"refs/heads/tier-0","repository":{{"clone_url":"{app_url}"}}}}"#);
    let sig = shopset::webhook::sign(SECRET.as_bytes(), body.as_bytes());
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-GitHub-Event: \
            push\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    if answer.starts_with("HTTP/1.1 202") {
        Ok(())
    } else {
        Err(format!("webhook answered: {}", answer.lines().next().unwrap_or_default()))
    }
}

fn manifests(app: &str, config: &str, system: &str, tiers: &[(&str, usize, &str)]) -> String {
    let mut out = format!(
        "apiVersion: shopset.dev/v1alpha1\nkind: Configuration\nmetadata:\n  name: shop-config\nspec:\n  url: {config}\n  path: component\n"
    );
    for (tier, n, interval) in tiers {
        out.push_str(&format!(
            "---\napiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata:\n  name: {tier}\nspec:\n  branch: \
                {tier}\n  app:\n    url: {app}\n    path: base\n  system:\n    url: {system}\n  interval: \
                {interval}\n"
        ));
        for i in 0..*n {
            out.push_str(&format!(
                "---\napiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: {tier}-cell-{i:04}\n\
                    spec:\n  tier: {tier}\n  configuration: shop-config\n  shops: [shop-{i:04}-a, shop-{i:04}-b]\n  \
                    replicas: 2\n"
            ));
        }
    }
    out
}

fn bumps(
    daemon_app: &str,
    system: &str,
    count: usize,
    mut trigger: impl FnMut() -> Result<(), String>,
) -> Result<Vec<Duration>, String> {
    let mut samples = Vec::new();
    for i in 0..count {
        let before = branch_head(system, "tier-0");
        commit_files(daemon_app, "tier-0", &[("base/BUMP", &format!("{i}\n"))], &format!("bump {i}"));
        let t = Instant::now();
        trigger()?;
        if !wait_until(Duration::from_secs(60), || branch_head(system, "tier-0") != before) {
            return Err(format!("bump {i} did not reach the system branch within 60 s"));
        }
        samples.push(t.elapsed());
    }
    Ok(samples)
}

pub(crate) fn proc_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn upload_packs(daemon: &GitDaemon) -> usize {
    std::fs::read_to_string(daemon.dir().join("daemon.log"))
        .map(|s| s.matches("Request upload-pack").count())
        .unwrap_or(0)
}

/// Latency of a bump (webhook, polling), polling cost, and controller memory/CPU.
pub fn run(quick: bool, scratch: &Path, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<(), String> {
    let cp = ControlPlane::start();
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let crate::Repos { daemon, app, config } = crate::repos();
    let system = daemon.create_repo("system");
    let count = if quick { 5 } else { 20 };

    // Webhook latency: a long interval, so only the webhook triggers.
    cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &manifests(&app, &config, &system, &[("tier-0", 10, "1h")]));
    let ctrl = start_controller(&cp, scratch, "latency")?;
    if !wait_until(Duration::from_secs(120), || branch_head(&system, "tier-0").is_some()) {
        return Err("the controller did not create the system branch".into());
    }
    std::thread::sleep(Duration::from_millis(500));
    let hook = bumps(&app, &system, count, || post_webhook(ctrl.port, &app))?;
    rows.push(Row {
        scenario: format!(
            "bump latency, webhook (p50; p99 {:.0} ms)",
            crate::percentile(&hook, 0.99).as_secs_f64() * 1000.0
        ),
        samples: hook,
        baseline: None,
        note: format!("{count} bumps, 10 ShopSets"),
    });

    // Polling: a 2 s interval; the latency is up to one interval plus the sync.
    cp.kubectl_ok(["patch", "tier", "tier-0", "--type=merge", "-p", r#"{"spec":{"interval":"2s"}}"#]);
    std::thread::sleep(Duration::from_secs(3));
    let poll = bumps(&app, &system, count, || Ok(()))?;
    rows.push(Row {
        scenario: format!(
            "bump latency, polling every 2 s (p50; p99 {:.0} ms)",
            crate::percentile(&poll, 0.99).as_secs_f64() * 1000.0
        ),
        samples: poll,
        baseline: None,
        note: format!("{count} bumps"),
    });
    // Cost of a poll with nothing changed: git requests per interval.
    let before = upload_packs(&daemon);
    std::thread::sleep(Duration::from_secs(10));
    let per_poll = (upload_packs(&daemon) - before) as f64 / 5.0;
    notes.push(format!("polling with nothing changed: {per_poll:.1} git requests per 2 s interval for 3 repositories (app, configuration, system): one ls-remote each"));
    drop(ctrl);

    // Memory and idle CPU with 4 tiers x 250 ShopSets.
    let tiers = memory_tiers(if quick { 25 } else { 250 });
    memory(&cp, &daemon, &manifests(&app, &config, &system, &refs(&tiers)), &tiers, scratch, rows, notes, "memory")
}

/// The controller's peak RSS and idle CPU with 4 tiers x 250 ShopSets (`--memory`: alone, on a
/// control plane of its own).
pub fn memory_alone(scratch: &Path, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<(), String> {
    let cp = ControlPlane::start();
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let crate::Repos { daemon, app, config } = crate::repos();
    let system = daemon.create_repo("system");
    let tiers = memory_tiers(250);
    memory(&cp, &daemon, &manifests(&app, &config, &system, &refs(&tiers)), &tiers, scratch, rows, notes, "memory")
}

/// The 4 tiers of the memory scenario, `per_tier` ShopSets each, polled every 30 s.
fn memory_tiers(per_tier: usize) -> Vec<(String, usize, &'static str)> {
    (1..=4).map(|t| (format!("mem-{t}"), per_tier, "30s")).collect()
}

fn refs<'a>(tiers: &'a [(String, usize, &'a str)]) -> Vec<(&'a str, usize, &'a str)> {
    tiers.iter().map(|(n, c, i)| (n.as_str(), *c, *i)).collect()
}

/// The controller's peak RSS with 10 tiers of `total / 10` ShopSets over 3 destinations, each
/// ShopSet naming one round-robin: a control plane of its own.
pub fn fleet_memory(total: usize, scratch: &Path, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<(), String> {
    let cp = ControlPlane::start();
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let crate::Repos { daemon, app, config } = crate::repos();
    let system = daemon.create_repo("system");
    let tiers: Vec<(String, usize, &str)> =
        (0..crate::fleet::TIERS).map(|t| (format!("fleet-{t}"), total / crate::fleet::TIERS, "30s")).collect();
    let mut text = manifests(&app, &config, &system, &refs(&tiers));
    // The destinations as the Tier's spec.argocd.destinations, and each ShopSet's spec.destination.
    let dests = crate::fleet::destinations();
    let dest_yaml = serde_json::to_string(&dests).map_err(|e| e.to_string())?;
    text = text.replace("  interval: 30s\n", &format!("  interval: 30s\n  argocd:\n    destinations: {dest_yaml}\n"));
    let mut out = String::with_capacity(text.len() * 2);
    let mut i = 0;
    for line in text.split_inclusive('\n') {
        out.push_str(line);
        if line.starts_with("  replicas: ") {
            out.push_str(&format!("  destination: {}\n", dests[i % dests.len()].name));
            i += 1;
        }
    }
    memory(&cp, &daemon, &out, &tiers, scratch, rows, notes, "fleet-memory")
}

/// Applies `text`, starts the controller, waits until every tier is Ready, and measures its memory.
#[allow(clippy::too_many_arguments)]
fn memory(
    cp: &ControlPlane,
    daemon: &GitDaemon,
    text: &str,
    tiers: &[(String, usize, &str)],
    scratch: &Path,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    name: &str,
) -> Result<(), String> {
    let tier_refs = refs(tiers);
    let count = tiers.len();
    let per_tier = tiers.first().map(|t| t.1).unwrap_or(0);
    // Each tier's branches start where tier-0 is, as a promotion would leave them.
    for (tier, ..) in &tier_refs {
        git(&daemon.path("app"), &["branch", tier, "tier-0"]);
        git(&daemon.path("config"), &["branch", tier, "tier-0"]);
    }
    cp.kubectl_with_stdin_ok(["apply", "--server-side", "-f", "-"], text);
    let ctrl = start_controller(cp, scratch, name)?;
    let t = Instant::now();
    // One kubectl a quarter second: polling harder would take the CPU the controller is measured on.
    let ready = || {
        let out = cp
            .kubectl([
                "get",
                "tiers",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
            ])
            .stdout;
        let out = String::from_utf8_lossy(&out).to_string();
        tier_refs.iter().all(|(tier, ..)| out.split_whitespace().any(|w| w == format!("{tier}=True")))
    };
    let start = Instant::now();
    let ready = loop {
        if ready() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(900) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let converge = t.elapsed();
    if !ready {
        return Err(format!("{count} tiers x {per_tier} ShopSets did not become Ready within 15 minutes"));
    }
    let pid = ctrl.child.id();
    let ticks_before = cpu_ticks(pid).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(10));
    let ticks_after = cpu_ticks(pid).unwrap_or(0);
    let hwm = proc_field(pid, "VmHWM:").unwrap_or(0);
    let rss = proc_field(pid, "VmRSS:").unwrap_or(0);
    // Heap versus mapped files (libgit2 maps pack files): only the first is memory of our own.
    let anon = proc_field(pid, "RssAnon:").unwrap_or(0);
    let file = proc_field(pid, "RssFile:").unwrap_or(0);
    rows.push(Row {
        scenario: format!("controller converges {count} tiers x {per_tier} ShopSets"),
        samples: vec![converge],
        baseline: None,
        note: "from start".into(),
    });
    notes.push(format!(
        "controller with {count} tiers x {per_tier} ShopSets: peak RSS {:.1} MiB, RSS {:.1} MiB (heap {:.1} MiB, mapped files {:.1} MiB), idle CPU {:.1}% of one core (10 s, polls every 30 s)",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
        (ticks_after - ticks_before) as f64 / 100.0 / 10.0 * 100.0
    ));
    drop(ctrl);
    Ok(())
}
