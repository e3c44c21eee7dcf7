//! Shared by `faults.rs` and `security.rs`: one control plane per test binary, a Tier setup on
//! real git servers in a namespace of its own, and the `shopset-controller` binary as a process.
//!
//! Every test gets its own namespace (the controller runs with `--namespace`, so its watches and
//! its Lease are there too), its own Argo CD namespace (Applications are pruned by the tier label
//! alone, so two tests' `tier-0`s must not share one), and its own git server. Tests of a binary
//! can therefore share one control plane and run in parallel; a test that disturbs the control
//! plane itself takes [`Plane::exclusive`].

#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{GitDaemon, git, log, seed_dir};
use shopset_e2e::tools::{path_env, repo_root, tool, workspace_bin};
use tempfile::TempDir;

/// The webhook secret every controller here is started with.
pub const WEBHOOK_SECRET: &str = "e2e-faults-webhook-s3cret";

// ---------------------------------------------------------------------------------------------
// One control plane per test binary

struct Shared {
    plane: Option<Arc<ControlPlane>>,
    /// Tests of this binary not finished yet; the last one stops the control plane.
    remaining: Option<usize>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared { plane: None, remaining: None });
/// Held for reading by every test, for writing by one that restarts a component of the plane.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// A test's hold on the shared control plane. The last of the binary's `tests` tests to drop
/// its hold stops it (a filtered run leaves that to the watchdog `e2e/up` starts, which stops the
/// servers once the test process is gone).
pub struct Plane {
    cp: Arc<ControlPlane>,
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
}

impl Plane {
    /// The shared control plane, started by the first caller; `tests` is the number of tests in
    /// the binary that call this.
    pub fn shared(tests: usize) -> Plane {
        let guard = EXCLUSIVE.read().unwrap_or_else(|p| p.into_inner());
        Plane { cp: plane(tests), _shared: Some(guard), _exclusive: None }
    }

    /// The shared control plane, with no other test of this binary running meanwhile.
    pub fn exclusive(tests: usize) -> Plane {
        let guard = EXCLUSIVE.write().unwrap_or_else(|p| p.into_inner());
        Plane { cp: plane(tests), _shared: None, _exclusive: Some(guard) }
    }
}

fn plane(tests: usize) -> Arc<ControlPlane> {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    shared.remaining.get_or_insert(tests);
    if shared.plane.is_none() {
        let started = Instant::now();
        shared.plane = Some(Arc::new(ControlPlane::start()));
        eprintln!("control plane up in {:.1?}", started.elapsed());
    }
    shared.plane.clone().expect("just started")
}

impl std::ops::Deref for Plane {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        &self.cp
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = shared.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shared.plane = None; // the last Arc but ours
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tier on real git servers

/// What a test's tier looks like.
#[derive(Clone, Debug)]
pub struct TierOptions {
    pub interval: String,
    /// Name of a Secret in the namespace for `spec.credentials.secretRef`.
    pub credentials: Option<String>,
}

impl Default for TierOptions {
    fn default() -> Self {
        Self { interval: "3s".into(), credentials: None }
    }
}

/// The example repositories and manifests of one test: tier-0 with the example Configuration and
/// its two ShopSets (canary-eu, canary-us), in namespace `ns`, Applications in `argocd_ns`.
pub struct Setup {
    pub ns: String,
    pub argocd_ns: String,
    pub app_url: String,
    pub config_url: String,
    pub system_url: String,
    pub work: TempDir,
    pub manifests: PathBuf,
}

pub const TIER: &str = "tier-0";
pub const SHOPSETS: [&str; 2] = ["canary-eu", "canary-us"];

impl Setup {
    /// Seeds `app`, `config` and `system` repositories (URLs from `url(name)`, pushed to through
    /// `push_url(name)`) from `examples/`, creates the namespaces and writes the manifests (not
    /// applied yet: see [`Setup::apply`]).
    pub fn new(
        cp: &ControlPlane,
        ns: &str,
        url: impl Fn(&str) -> String,
        push_url: impl Fn(&str) -> String,
        opts: &TierOptions,
    ) -> Setup {
        let examples = repo_root().join("examples");
        seed_dir(&push_url("shop-app"), "main", &examples.join("app"), "app from examples/app");
        seed_dir(&push_url("shop-config"), "main", &examples.join("config"), "config from examples/config");
        let argocd_ns = format!("{ns}-argocd");
        cp.kubectl_ok(["create", "namespace", ns]);
        cp.kubectl_ok(["create", "namespace", &argocd_ns]);
        let work = TempDir::with_prefix(&format!("shopset-e2e-{ns}-")).expect("temp dir");
        let manifests = work.path().join("manifests");
        fs::create_dir_all(&manifests).expect("create manifests dir");
        let setup = Setup {
            ns: ns.into(),
            argocd_ns,
            app_url: url("shop-app"),
            config_url: url("shop-config"),
            system_url: url("shop-system"),
            work,
            manifests,
        };
        fs::write(setup.manifests.join("tier.yaml"), setup.tier_yaml(opts)).expect("write manifests");
        setup
    }

    /// On a git daemon (no authentication).
    pub fn on_daemon(cp: &ControlPlane, daemon: &GitDaemon, ns: &str, opts: &TierOptions) -> Setup {
        for repo in ["shop-app", "shop-config", "shop-system"] {
            daemon.create_repo(repo);
        }
        Setup::new(cp, ns, |r| daemon.url(r), |r| daemon.url(r), opts)
    }

    fn tier_yaml(&self, opts: &TierOptions) -> String {
        let (ns, argocd_ns) = (&self.ns, &self.argocd_ns);
        let credentials = match &opts.credentials {
            Some(secret) => format!("  credentials:\n    secretRef:\n      name: {secret}\n"),
            None => String::new(),
        };
        let mut out = format!(
            "apiVersion: shopset.dev/v1alpha1
kind: Configuration
metadata:
  name: shop-config
  namespace: {ns}
spec:
  url: {config}
  path: component
---
apiVersion: shopset.dev/v1alpha1
kind: Tier
metadata:
  name: {TIER}
  namespace: {ns}
spec:
  app:
    url: {app}
    path: base
  system:
    url: {system}
  argocd:
    namespace: {argocd_ns}
    project: default
    destination:
      server: https://kubernetes.default.svc
{credentials}  interval: {interval}
",
            config = self.config_url,
            app = self.app_url,
            system = self.system_url,
            interval = opts.interval,
        );
        for name in SHOPSETS {
            out.push_str(&shopset_yaml(ns, name));
        }
        out
    }

    /// `kubectl apply -f` the manifests.
    pub fn apply(&self, cp: &ControlPlane) {
        cp.kubectl_ok(["apply", "-f", path_str(&self.manifests)]);
    }

    pub fn jsonpath(&self, cp: &ControlPlane, kind: &str, name: &str, path: &str) -> String {
        cp.kubectl_ok(["get", kind, name, "-n", &self.ns, "-o", &format!("jsonpath={path}")])
    }

    /// status, reason and message of the Tier's Ready condition.
    pub fn ready(&self, cp: &ControlPlane) -> (String, String, String) {
        let out = self.jsonpath(
            cp,
            "tier",
            TIER,
            r#"{.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Ready")].reason}|{.status.conditions[?(@.type=="Ready")].message}"#,
        );
        let mut parts = out.splitn(3, '|').map(str::to_string);
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
    }

    /// The Tier's `status.appCommit` and `status.systemCommit`.
    pub fn status_commits(&self, cp: &ControlPlane) -> (String, String) {
        let out = self.jsonpath(cp, "tier", TIER, "{.status.appCommit}|{.status.systemCommit}");
        let (a, s) = out.split_once('|').unwrap_or(("", ""));
        (a.to_string(), s.to_string())
    }

    /// Names of the Applications in the test's Argo CD namespace, sorted.
    pub fn applications(&self, cp: &ControlPlane) -> Vec<String> {
        let out =
            cp.kubectl_ok(["get", "applications", "-n", &self.argocd_ns, "-o", "jsonpath={.items[*].metadata.name}"]);
        let mut names: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        names.sort();
        names
    }

    /// Commits on the system branch, newest first.
    pub fn system_log(&self) -> Vec<(String, String)> {
        log(&self.system_url, TIER)
    }
}

pub fn shopset_yaml(ns: &str, name: &str) -> String {
    format!(
        "---
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: {name}
  namespace: {ns}
spec:
  tier: {TIER}
  configuration: shop-config
  shops: [{name}-shop-1]
"
    )
}

/// Waits until the Tier is Ready=True with `status.appCommit == app` and
/// `status.systemCommit` equal to the system branch head (which has the gitlink `base -> app`),
/// and every ShopSet's Application exists.
pub fn wait_converged(
    cp: &ControlPlane,
    s: &Setup,
    system_repo: &Path,
    app: &str,
    timeout: Duration,
    ctl: &Controller,
) {
    wait_until(&format!("Tier {}/{TIER} Ready at app {}", s.ns, short(app)), timeout, ctl, || {
        let (status, _, _) = s.ready(cp);
        let (app_commit, system_commit) = s.status_commits(cp);
        if status != "True" || app_commit != app {
            return None;
        }
        let head = shopset_e2e::gitserver::try_git(system_repo, &["rev-parse", &format!("refs/heads/{TIER}")]).ok()?;
        (system_commit == head && gitlink(system_repo, TIER, "base") == app && s.applications(cp) == SHOPSETS)
            .then_some(())
    });
}

// ---------------------------------------------------------------------------------------------
// The controller process

/// How a controller process is started.
#[derive(Clone, Debug)]
pub struct Run {
    pub identity: String,
    pub lease_duration: String,
    /// `SHOPSET_FAULT`.
    pub fault: Option<String>,
    pub log_format: Option<String>,
    pub rust_log: String,
}

impl Run {
    pub fn new(identity: &str) -> Run {
        Run {
            identity: identity.into(),
            lease_duration: "6s".into(),
            fault: None,
            log_format: None,
            rust_log: "info,kube=warn".into(),
        }
    }
    pub fn fault(mut self, point: &str) -> Run {
        self.fault = Some(point.into());
        self
    }
    pub fn lease(mut self, duration: &str) -> Run {
        self.lease_duration = duration.into();
        self
    }
    pub fn json(mut self) -> Run {
        self.log_format = Some("json".into());
        self
    }
    pub fn rust_log(mut self, filter: &str) -> Run {
        self.rust_log = filter.into();
        self
    }
}

/// `shopset-controller` as a process watching one namespace, its Lease in that namespace, logging
/// (stdout and stderr) to a file that every run appends to.
pub struct Controller {
    child: Option<Child>,
    port: u16,
    ns: String,
    kubeconfig: PathBuf,
    cache: PathBuf,
    secret_file: PathBuf,
    log: PathBuf,
    /// Length of the log when the current process started.
    log_offset: usize,
}

impl Controller {
    /// A controller for namespace `ns`; `name` names its log file and cache in `dir`.
    pub fn new(cp: &ControlPlane, dir: &Path, ns: &str, name: &str) -> Controller {
        let secret_file = dir.join("webhook-secret");
        fs::write(&secret_file, format!("{WEBHOOK_SECRET}\n")).expect("write webhook secret");
        let cache = dir.join(format!("cache-{name}"));
        fs::create_dir_all(&cache).expect("create cache dir");
        Controller {
            child: None,
            port: 0,
            ns: ns.into(),
            kubeconfig: cp.kubeconfig().to_path_buf(),
            cache,
            secret_file,
            log: dir.join(format!("{name}.log")),
            log_offset: 0,
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Starts a process and waits until /healthz answers (it may still wait for the Lease).
    pub fn start(&mut self, run: &Run) {
        assert!(self.child.is_none(), "one process per Controller at a time");
        self.port = free_port();
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open controller log");
        writeln!(log, "==== {} on 127.0.0.1:{} (fault {:?})", run.identity, self.port, run.fault)
            .expect("write controller log");
        self.log_offset = fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0);
        let mut cmd = Command::new(workspace_bin("shopset-controller"));
        cmd.arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--namespace={}", self.ns))
            .arg(format!("--cache-dir={}", self.cache.display()))
            .arg(format!("--webhook-secret-file={}", self.secret_file.display()))
            .arg(format!("--lease-duration={}", run.lease_duration))
            .arg(format!("--identity={}", run.identity))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", path_env())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", &run.rust_log)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("SHOPSET_NAMESPACE")
            .env_remove("SHOPSET_FAULT")
            .env_remove("SHOPSET_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        if let Some(fault) = &run.fault {
            cmd.env("SHOPSET_FAULT", fault);
        }
        if let Some(format) = &run.log_format {
            cmd.arg(format!("--log-format={format}"));
        }
        self.child = Some(cmd.spawn().expect("spawn shopset-controller"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("poll controller")) {
                panic!("shopset-controller exited ({status}) during start-up:\n{}", self.log_since_start());
            }
            if http(&self.url("/healthz"), &[], None).0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shopset-controller not serving /healthz after 30 s:\n{}",
                self.log_since_start()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no Lease release, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit (it releases its Lease).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
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

    /// Whether the process runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the process to exit on its own; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("a running controller");
            if let Some(status) = child.try_wait().expect("poll controller") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "shopset-controller still running after {timeout:?}:\n{}",
                self.log_since_start()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn metrics(&self) -> String {
        let (code, body) = http(&self.url("/metrics"), &[], None);
        assert_eq!(code, 200, "/metrics: {body}");
        body
    }

    fn labels(&self) -> [(&str, &str); 2] {
        [("namespace", self.ns.as_str()), ("tier", TIER)]
    }

    pub fn reconciles(&self) -> f64 {
        metric(&self.metrics(), "shopset_reconciles_total", &self.labels()).unwrap_or(0.0)
    }

    pub fn pushes(&self) -> f64 {
        metric(&self.metrics(), "shopset_pushes_total", &self.labels()).unwrap_or(0.0)
    }

    /// `shopset_reconcile_errors_total` of the tier for `reason`.
    pub fn errors(&self, reason: &str) -> f64 {
        metric(&self.metrics(), "shopset_reconcile_errors_total", &[("tier", TIER), ("reason", reason)]).unwrap_or(0.0)
    }

    /// Waits for `n` more reconciles of the tier.
    pub fn wait_for_reconciles(&self, n: u32, timeout: Duration) {
        let start = self.reconciles();
        wait_until(&format!("{n} more reconciles"), timeout, self, || {
            (self.reconciles() >= start + n as f64).then_some(())
        });
    }

    pub fn webhook(&self, headers: &[&str], body: &str) -> (u16, String) {
        http(&self.url("/hooks/github"), headers, Some(body))
    }

    pub fn all_logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_since_start(&self) -> String {
        self.all_logs().get(self.log_offset..).unwrap_or_default().to_string()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
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

/// Whether `status` is a crash (a signal, or a failure code), not a clean exit.
pub fn abnormal(status: ExitStatus) -> bool {
    status.signal().is_some() || !status.success()
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Polls `probe` every 250 ms until it returns `Some`, or panics after `timeout` with the
/// controller's log.
pub fn wait_until<T>(what: &str, timeout: Duration, ctl: &Controller, mut probe: impl FnMut() -> Option<T>) -> T {
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
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The commit a gitlink of `branch` points to in a bare repository ("" if there is none).
pub fn gitlink(repo: &Path, branch: &str, path: &str) -> String {
    let line = git(repo, &["ls-tree", branch, path]);
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["160000", "commit", sha, p] if p == path => sha.to_string(),
        _ => String::new(),
    }
}

pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// `git merge-base --is-ancestor a b` in a repository.
pub fn is_ancestor(repo: &Path, a: &str, b: &str) -> bool {
    shopset_e2e::gitserver::try_git(repo, &["merge-base", "--is-ancestor", a, b]).is_ok()
}

/// `X-Hub-Signature-256` of `body`, computed by openssl (independently of the controller's code).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new(tool("openssl"))
        .args(["dgst", "-sha256", "-hmac", secret, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    let body = body.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output().expect("wait for openssl");
    writer.join().expect("writer").expect("write openssl stdin");
    assert!(out.status.success(), "openssl dgst: {}", String::from_utf8_lossy(&out.stderr));
    let hex = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(hex.len(), 64, "HMAC-SHA256 hex: {hex}");
    format!("sha256={hex}")
}

/// An HTTP request with curl: (status, body). Status 0 when nothing answered.
pub fn http(url: &str, headers: &[&str], body: Option<&str>) -> (u16, String) {
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
    let body = body.map(str::to_owned);
    let writer = std::thread::spawn(move || {
        if let Some(body) = body {
            // The server may answer (413) and close before reading it all.
            let _ = stdin.write_all(body.as_bytes());
        }
    });
    let out = child.wait_with_output().expect("wait for curl");
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of a sample of the OpenMetrics text whose labels include `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric_name != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            return None;
        }
        value.parse().ok()
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local address").port()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Progress on stderr (shown with --nocapture or on failure).
pub fn phase(test: &str, what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    eprintln!("[{test} +{:5.1}s] {what}", start.elapsed().as_secs_f64());
}
