//! `--argocd`: from an app commit to every Application Synced and Healthy at the new system
//! commit, with a real Argo CD (argocd-application-controller, argocd-repo-server, Redis), kwok
//! making the Pods of what it deploys Ready, and the release controller as a process.
//!
//! One control plane: 10 ShopSets first, then 90 more (100). At each size, bumps with the
//! controller's refresh annotation after its push, and bumps with `--argocd-refresh=false`, when
//! only Argo CD's own periodic refresh (`--app-resync`, shortened for the run) finds the new
//! commit. Each bump changes the storefront image, so every ShopSet rolls a Deployment. Also the
//! CPU and peak memory of Argo CD's two servers per run, and how many manifests Argo CD generates
//! when one ShopSet among 100 changes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shopset_e2e::argocd::{ArgoCd, ArgoCdOptions};
use shopset_e2e::controlplane::{ControlPlane, Options};
use shopset_e2e::gitserver::{branch_head, commit_files};

use crate::Row;
use crate::cluster::{Controller, cpu_ticks, post_webhook, proc_field, start_controller_with, wait_until};

const TIER: &str = "tier-0";
/// Argo CD's own periodic refresh during the run (its default is 120 s + up to 60 s).
const APP_RESYNC: Duration = Duration::from_secs(30);
const APP_RESYNC_JITTER: Duration = Duration::from_secs(5);
/// How often the watched status is looked at: the resolution of the figures.
const POLL: Duration = Duration::from_millis(20);

/// What the run measures; `bumps` per size with the refresh, `poll_bumps` without.
pub struct Plan {
    pub sizes: Vec<usize>,
    pub bumps: usize,
    pub poll_bumps: usize,
}

fn manifests(app: &str, config: &str, system: &str, argocd_ns: &str, shopsets: std::ops::Range<usize>) -> String {
    let mut out = shopset_e2e::argocd::tier0_and_configuration(app, config, system, argocd_ns, "1h");
    for i in shopsets {
        out.push_str(&shopset(i, 0));
    }
    out
}

/// ShopSet `cell-NNN`; `generation` changes its shops, hence its overlay only.
fn shopset(i: usize, generation: usize) -> String {
    format!(
        "---
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: cell-{i:03}
spec:
  tier: {TIER}
  configuration: shop-config
  shops: [shop-{i:03}-a, shop-{i:03}-g{generation}]
"
    )
}

/// Every Application's sync status, health and revision as Argo CD writes them, read from one
/// `kubectl get --watch` for the whole run. Listing the Applications every 250 ms instead (a
/// kubectl process decoding 100 Applications' status, and the API server encoding them, four
/// times a second) took about a sixth of the two cores during a bump of 100: the measurement
/// slowed what it measured. A person waiting for a rollout watches too (`kubectl wait`).
struct AppWatch {
    state: Arc<Mutex<HashMap<String, String>>>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
}

impl AppWatch {
    fn start(cp: &ControlPlane, argocd: &ArgoCd) -> AppWatch {
        let state = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let mut command = cp.kubectl_command();
        command
            .args(["get", "applications", "-n", argocd.namespace(), "--watch", "-o"])
            .arg("jsonpath={.metadata.name} {.status.sync.status} {.status.health.status} {.status.sync.revision}{\"\\n\"}")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let (st, sp, ch) = (state.clone(), stop.clone(), child.clone());
        std::thread::spawn(move || {
            // The API server ends a watch after a while: start it again until told to stop.
            while !sp.load(Ordering::Relaxed) {
                let Ok(mut c) = command.spawn() else { return };
                let out = c.stdout.take();
                *ch.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                for line in out.map(BufReader::new).into_iter().flat_map(|r| r.lines()).map_while(Result::ok) {
                    if let Some((name, rest)) = line.trim().split_once(' ') {
                        st.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), rest.to_string());
                    }
                }
                if let Some(mut c) = ch.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        });
        AppWatch { state, stop, child }
    }

    /// How many Applications are Synced and Healthy at `revision`, of how many.
    fn synced_at(&self, revision: &str) -> (usize, usize) {
        let want = format!("Synced Healthy {revision}");
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.values().filter(|v| **v == want).count(), state.len())
    }

    fn wait_synced(&self, n: usize, revision: &str, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let (ok, all) = self.synced_at(revision);
            if ok >= n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{ok} of {all} Applications Synced and Healthy at {revision} after {timeout:?} (want {n})"
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for AppWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut c) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU and peak memory of one of Argo CD's servers over a run.
struct Usage {
    pid: u32,
    name: &'static str,
    own: u64,
    children: u64,
}

/// utime+stime, and cutime+cstime (the git and kustomize it ran and waited for), in ticks.
fn ticks(pid: u32) -> (u64, u64) {
    let own = cpu_ticks(pid).unwrap_or(0);
    let children = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> =
                stat.rsplit_once(')')?.1.split_whitespace().skip(13).take(2).filter_map(|f| f.parse().ok()).collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0);
    (own, children)
}

impl Usage {
    /// Starts measuring: resets the peak RSS (`clear_refs` 5) so that VmHWM is this run's.
    fn start(pid: u32, name: &'static str) -> Usage {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let (own, children) = ticks(pid);
        Usage { pid, name, own, children }
    }

    fn report(&self, seconds: f64) -> String {
        let (own, children) = ticks(self.pid);
        let cpu = (own - self.own) as f64 / 100.0;
        let kids = (children - self.children) as f64 / 100.0;
        let hwm = proc_field(self.pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
        format!(
            "{}: CPU {cpu:.1} s ({:.0}% of a core over {seconds:.0} s){}, peak RSS {hwm:.0} MiB",
            self.name,
            cpu / seconds.max(1e-9) * 100.0,
            if kids > 0.0 { format!(" + {kids:.1} s in git/kustomize") } else { String::new() }
        )
    }
}

/// The CPU time of the other processes on the path of a bump (the control plane, kwok, Redis,
/// the ShopSet controller) and of the whole machine: whether a bump waits for CPU or for
/// something else.
struct Machine {
    others: Vec<(&'static str, u32, u64)>,
    busy: u64,
    all: u64,
}

/// Busy and all CPU ticks of the machine so far (`/proc/stat`: user to steal; idle and iowait
/// are not busy).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let all: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (all.saturating_sub(idle), all)
}

impl Machine {
    fn start(cp: &ControlPlane, controller: u32) -> Machine {
        let components = ["kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok", "redis"];
        let mut others: Vec<(&'static str, u32, u64)> = components
            .iter()
            .filter_map(|name| cp.pid(name).map(|pid| (*name, pid, cpu_ticks(pid).unwrap_or(0))))
            .collect();
        others.push(("shopset-controller", controller, cpu_ticks(controller).unwrap_or(0)));
        let (busy, all) = machine_ticks();
        Machine { others, busy, all }
    }

    fn report(&self) -> String {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let (busy, all) = machine_ticks();
        let share = (busy - self.busy) as f64 / ((all - self.all) as f64).max(1.0) * 100.0;
        let cpu: Vec<String> = self
            .others
            .iter()
            .map(|(name, pid, start)| {
                format!("{name} {:.1} s", cpu_ticks(*pid).unwrap_or(*start).saturating_sub(*start) as f64 / 100.0)
            })
            .collect();
        format!("CPU of the rest: {}; the machine's {cores:.0} cores {share:.0}% busy (/proc/stat)", cpu.join(", "))
    }
}

/// The requests the API server served (`apiserver_request_total`) by resource, subresource and
/// verb: who keeps it busy during a bump.
struct ApiRequests(HashMap<String, f64>);

impl ApiRequests {
    fn read(cp: &ControlPlane) -> ApiRequests {
        let page = String::from_utf8_lossy(&cp.kubectl(["get", "--raw", "/metrics"]).stdout).to_string();
        let mut counts = HashMap::new();
        for line in page.lines().filter_map(|l| l.strip_prefix("apiserver_request_total{")) {
            let Some((labels, value)) = line.rsplit_once("} ") else { continue };
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\""))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap_or_default()
            };
            let (resource, sub) = (label("resource"), label("subresource"));
            let what = if sub.is_empty() { resource } else { format!("{resource}/{sub}") };
            *counts.entry(format!("{} {what}", label("verb"))).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
        ApiRequests(counts)
    }

    /// The requests since `self` per bump, the most frequent first.
    fn report(&self, cp: &ControlPlane, bumps: usize) -> String {
        let now = ApiRequests::read(cp);
        let mut diff: Vec<(String, f64)> = now
            .0
            .iter()
            .map(|(k, v)| (k.clone(), (v - self.0.get(k).copied().unwrap_or(0.0)) / bumps.max(1) as f64))
            .filter(|(_, v)| *v >= 0.5)
            .collect();
        diff.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = diff.iter().map(|(_, v)| v).sum();
        let top: Vec<String> = diff.iter().take(12).map(|(k, v)| format!("{k} {v:.0}")).collect();
        format!("API server requests per bump: {total:.0} ({})", top.join(", "))
    }
}

/// GenerateManifest calls the repo-server answered so far: its gRPC metric if it has one, else
/// the calls its log records.
fn generate_manifest_calls(cp: &ControlPlane, argocd: &ArgoCd) -> (u64, &'static str) {
    let metrics = std::process::Command::new(shopset_e2e::tools::tool("curl"))
        .args(["-fsS", "--max-time", "5", argocd.repo_server_metrics_url()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let from_metrics: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total") && l.contains("grpc_method=\"GenerateManifest\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok().map(|v| v as u64))
        .collect();
    if !from_metrics.is_empty() {
        return (from_metrics.iter().sum(), "grpc_server_handled_total");
    }
    let log = cp.log("argocd-repo-server");
    (log.lines().filter(|l| l.contains("GenerateManifest") && l.contains("finished")).count() as u64, "log")
}

/// The sum of every series of a counter or histogram `_sum` in a Prometheus text page.
fn metric_sum(url: &str, name: &str) -> f64 {
    let page = std::process::Command::new(shopset_e2e::tools::tool("curl"))
        .args(["-fsS", "--max-time", "5", url])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    page.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The application controller's requests to the API server and the time they waited in its
/// client-side rate limiter (`ARGOCD_K8S_CLIENT_QPS`/`_BURST`), all clients of the process.
struct ClientWaits {
    url: String,
    requests: f64,
    waited: f64,
}

impl ClientWaits {
    fn start(argocd: &ArgoCd) -> ClientWaits {
        let url = argocd.controller_metrics_url().to_string();
        let requests = metric_sum(&url, "argocd_kubectl_requests_total");
        let waited = metric_sum(&url, "argocd_kubectl_rate_limiter_duration_seconds_sum");
        ClientWaits { url, requests, waited }
    }

    fn report(&self) -> String {
        let requests = metric_sum(&self.url, "argocd_kubectl_requests_total") - self.requests;
        let waited = metric_sum(&self.url, "argocd_kubectl_rate_limiter_duration_seconds_sum") - self.waited;
        format!(
            "argocd-application-controller: {requests:.0} API requests, {waited:.1} s waited in its client-side \
             rate limiter in all (argocd_kubectl_requests_total, argocd_kubectl_rate_limiter_duration_seconds)"
        )
    }
}

struct Bumps {
    from_webhook: Vec<Duration>,
    from_push: Vec<Duration>,
}

/// `count` app commits, each delivered to the controller by webhook; the clock stops when all `n`
/// Applications are Synced and Healthy at the system commit it pushed.
#[allow(clippy::too_many_arguments)]
fn bumps(
    watch: &AppWatch,
    ctrl: &Controller,
    app: &str,
    system: &str,
    n: usize,
    count: usize,
    seq: &mut usize,
    timeout: Duration,
) -> Result<Bumps, String> {
    let storefront =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/app/base/storefront.yaml"))
            .map_err(|e| format!("read examples/app/base/storefront.yaml: {e}"))?;
    let mut out = Bumps { from_webhook: Vec::new(), from_push: Vec::new() };
    for _ in 0..count {
        *seq += 1;
        let before = branch_head(system, TIER);
        let image = format!("ghcr.io/acme/storefront:1.1.{seq}");
        let changed = storefront.replace("ghcr.io/acme/storefront:1.0.0", &image);
        commit_files(app, TIER, &[("base/storefront.yaml", &changed)], &format!("storefront {image}"));
        let t = Instant::now();
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!("bench: argocd bump {seq}: webhook at unix {:.3}", wall.as_secs_f64());
        post_webhook(ctrl.port, app)?;
        let mut head = None;
        if !wait_until(Duration::from_secs(60), || {
            head = branch_head(system, TIER).filter(|h| Some(h) != before.as_ref());
            head.is_some()
        }) {
            return Err(format!("bump {seq} did not reach the system branch within 60 s"));
        }
        let pushed = Instant::now();
        let head = head.unwrap_or_default();
        watch.wait_synced(n, &head, timeout).map_err(|e| format!("bump {seq}: {e}"))?;
        out.from_webhook.push(t.elapsed());
        out.from_push.push(pushed.elapsed());
        eprintln!("bench: argocd bump {seq}: {:.1?} from webhook, {:.1?} from push", t.elapsed(), pushed.elapsed());
    }
    Ok(out)
}

fn controller(cp: &ControlPlane, scratch: &Path, refresh: bool, name: &str) -> Result<Controller, String> {
    let refresh = format!("--argocd-refresh={refresh}");
    // No Lease: the controller started before this one may still hold it.
    let ctrl = start_controller_with(cp, scratch, name, &["--leader-elect", "false", &refresh])?;
    // Its caches fill and the first reconcile (nothing to push) passes.
    std::thread::sleep(Duration::from_secs(5));
    Ok(ctrl)
}

fn p(v: &[Duration], q: f64) -> String {
    format!("{:.1} s", crate::percentile(v, q).as_secs_f64())
}

/// Rows of one size and mode, and the Argo CD usage note.
fn record(rows: &mut Vec<Row>, notes: &mut Vec<String>, n: usize, mode: &str, b: Bumps, usage: &[Usage], seconds: f64) {
    let count = b.from_webhook.len();
    let p99 = if count < 100 { format!("p99 = max of {count}") } else { "p99".into() };
    notes.push(format!(
        "Argo CD, {n} ShopSets, {mode}: from webhook p50 {} / {p99} {}; from push p50 {} / {p99} {}",
        p(&b.from_webhook, 0.5),
        p(&b.from_webhook, 0.99),
        p(&b.from_push, 0.5),
        p(&b.from_push, 0.99)
    ));
    for u in usage {
        notes.push(format!("  during those bumps, {}", u.report(seconds)));
    }
    rows.push(Row {
        scenario: format!(
            "Argo CD: app commit to {n} Applications Synced+Healthy, {mode} (p50; {p99} {})",
            p(&b.from_webhook, 0.99)
        ),
        samples: b.from_webhook,
        baseline: None,
        note: format!("{count} bumps, clock from webhook"),
    });
    rows.push(Row {
        scenario: format!("  same, clock from the controller's push (p50; {p99} {})", p(&b.from_push, 0.99)),
        samples: b.from_push,
        baseline: None,
        note: format!("{count} bumps, clock from push"),
    });
}

/// The Argo CD scenarios; rows and notes measured before a failure are kept.
pub fn run(plan: &Plan, scratch: &Path, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<(), String> {
    let started = Instant::now();
    let cp = ControlPlane::start_with(
        Options::default().argocd(ArgoCdOptions { app_resync: APP_RESYNC, app_resync_jitter: APP_RESYNC_JITTER }),
    );
    let argocd = cp.argocd();
    eprintln!("bench: control plane with Argo CD up in {:.1?}", started.elapsed());
    notes.push(format!(
        "Argo CD v3.5 (application-controller + repo-server + Redis) on the same 2 shared cores, Pods made \
         Ready by kwok; its own periodic refresh shortened to --app-resync={}s --app-resync-jitter={}s for \
         the run (default 120 s + up to 60 s); each bump changes the storefront image: one Deployment \
         rolls per ShopSet; status read every {} ms",
        APP_RESYNC.as_secs(),
        APP_RESYNC_JITTER.as_secs(),
        POLL.as_millis()
    ));
    let pids = [
        (argocd.repo_server_pid().ok_or("no argocd-repo-server.pid")?, "argocd-repo-server"),
        (argocd.controller_pid().ok_or("no argocd-application-controller.pid")?, "argocd-application-controller"),
    ];
    let crate::Repos { daemon, app, config } = crate::repos();
    let system = daemon.create_repo("system");
    let watch = AppWatch::start(&cp, &argocd);
    let mut seq = 0;
    let mut deployed = 0;
    let mut refresh_on = true;
    let mut ctrl = controller(&cp, scratch, refresh_on, "argocd-refresh")?;
    for (k, &n) in plan.sizes.iter().enumerate() {
        let t = Instant::now();
        cp.kubectl_with_stdin_ok(
            ["apply", "-n", "default", "-f", "-"],
            &manifests(&app, &config, &system, argocd.namespace(), deployed..n),
        );
        deployed = n;
        // The controller pushes once it has every ShopSet: wait for a head that Argo CD deploys
        // for all of them.
        let first = Instant::now();
        loop {
            let head = branch_head(&system, TIER).unwrap_or_default();
            if !head.is_empty() && watch.synced_at(&head).0 >= n {
                break;
            }
            if first.elapsed() > Duration::from_secs(900) {
                return Err(format!("{n} Applications not Synced and Healthy within 15 minutes"));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        notes.push(format!("Argo CD: {n} ShopSets applied to all Synced and Healthy in {:.1?}", t.elapsed()));
        eprintln!("bench: {n} Applications deployed in {:.1?}", t.elapsed());
        // Alternate so each size ends in the mode the next starts with: one restart per size.
        let modes = if k % 2 == 0 { [true, false] } else { [false, true] };
        for refresh in modes {
            // `--argocd-poll-bumps 0` (or `--argocd-bumps 0`) skips that mode, and its restart.
            if (if refresh { plan.bumps } else { plan.poll_bumps }) == 0 {
                continue;
            }
            if refresh != refresh_on {
                drop(ctrl);
                refresh_on = refresh;
                ctrl = controller(&cp, scratch, refresh, if refresh { "argocd-refresh" } else { "argocd-no-refresh" })?;
            }
            let (count, timeout, mode) = if refresh {
                (plan.bumps, Duration::from_secs(300), "controller's refresh".to_string())
            } else {
                (
                    plan.poll_bumps,
                    Duration::from_secs(600),
                    format!(
                        "no refresh, Argo CD's poll ({}s + {}s jitter)",
                        APP_RESYNC.as_secs(),
                        APP_RESYNC_JITTER.as_secs()
                    ),
                )
            };
            let usage: Vec<Usage> = pids.iter().map(|(pid, name)| Usage::start(*pid, name)).collect();
            let waits = ClientWaits::start(&argocd);
            let machine = Machine::start(&cp, ctrl.child.id());
            let requests = ApiRequests::read(&cp);
            let t = Instant::now();
            let b = bumps(&watch, &ctrl, &app, &system, n, count, &mut seq, timeout)?;
            record(rows, notes, n, &mode, b, &usage, t.elapsed().as_secs_f64());
            notes.push(format!("  during those bumps, {}", waits.report()));
            notes.push(format!("  during those bumps, {}", machine.report()));
            notes.push(format!("  during those bumps, {}", requests.report(&cp, count)));
        }
        if n >= 100 || k + 1 == plan.sizes.len() {
            one_changed(&cp, &argocd, &watch, &system, n, refresh_on, notes)?;
        }
    }
    drop(ctrl);
    Ok(())
}

/// One ShopSet's spec changed among `n`: the controller pushes a commit that changes its overlay
/// only; how many manifests the repo-server generates until every Application follows.
fn one_changed(
    cp: &ControlPlane,
    argocd: &ArgoCd,
    watch: &AppWatch,
    system: &str,
    n: usize,
    refresh: bool,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    // Calls still in flight from the last bump settle first.
    std::thread::sleep(Duration::from_secs(5));
    let (before, source) = generate_manifest_calls(cp, argocd);
    let head = branch_head(system, TIER);
    let t = Instant::now();
    cp.kubectl_with_stdin_ok(["apply", "-n", "default", "-f", "-"], &shopset(n / 2, 1));
    let mut new_head = None;
    if !wait_until(Duration::from_secs(60), || {
        new_head = branch_head(system, TIER).filter(|h| Some(h) != head.as_ref());
        new_head.is_some()
    }) {
        return Err("the ShopSet change did not reach the system branch within 60 s".into());
    }
    let new_head = new_head.unwrap_or_default();
    let timeout = if refresh { Duration::from_secs(300) } else { Duration::from_secs(600) };
    watch.wait_synced(n, &new_head, timeout)?;
    let took = t.elapsed();
    // Stragglers (an Application whose refresh comes after it is already Synced) and nothing else.
    std::thread::sleep(Duration::from_secs(5));
    let (after, _) = generate_manifest_calls(cp, argocd);
    notes.push(format!(
        "Argo CD, one ShopSet's shops changed among {n} ({}): all {n} Synced and Healthy at the new commit \
         in {:.1} s; the repo-server answered {} GenerateManifest calls for {n} Applications (counted from \
         its {source}; each Application tracks the system branch, whose head moved for all of them)",
        if refresh { "controller's refresh" } else { "no refresh" },
        took.as_secs_f64(),
        after - before
    ));
    Ok(())
}
