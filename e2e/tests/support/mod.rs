//! The one harness of the e2e tests: a control plane shared by the tests of a binary, a Tier
//! setup and the example manifests on real git servers in a namespace of their own, the
//! `shopset-controller` binary as a process, and the small helpers every test file uses (waiting,
//! HTTP, metrics, signatures, git links).
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
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{GitDaemon, branch_head, git, log, seed_dir};
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
// A test's work directory

/// A test's temporary directory (manifests, controller logs and caches, checkouts), removed when
/// dropped unless `SHOPSET_E2E_KEEP=1` (as for the control plane and the git servers).
pub struct WorkDir(Option<TempDir>);

impl WorkDir {
    pub fn new(test: &str) -> WorkDir {
        WorkDir(Some(TempDir::with_prefix(format!("shopset-e2e-{test}-")).expect("create a work dir")))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("present until dropped").path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let keep = std::env::var_os("SHOPSET_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        if let Some(dir) = self.0.take().filter(|_| keep) {
            eprintln!("SHOPSET_E2E_KEEP: manifests, controller logs and checkouts kept in {}", dir.keep().display());
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
    pub work: WorkDir,
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
        let work = WorkDir::new(ns);
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
        jsonpath(cp, &self.ns, kind, name, path)
    }

    /// status, reason and message of the Tier's Ready condition.
    pub fn ready(&self, cp: &ControlPlane) -> (String, String, String) {
        ready_condition(cp, &self.ns, "tier", TIER)
    }

    /// The Tier's `status.appCommit` and `status.systemCommit`.
    pub fn status_commits(&self, cp: &ControlPlane) -> (String, String) {
        let out = self.jsonpath(cp, "tier", TIER, "{.status.appCommit}|{.status.systemCommit}");
        let (a, s) = out.split_once('|').unwrap_or(("", ""));
        (a.to_string(), s.to_string())
    }

    /// Names of the Applications in the test's Argo CD namespace, sorted.
    pub fn applications(&self, cp: &ControlPlane) -> Vec<String> {
        applications(cp, &self.argocd_ns)
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
// The examples, as a user applies them

/// The repository URLs of `examples/`, which the tests point at git servers of their own.
pub const EXAMPLE_APP_URL: &str = "https://git.example.com/acme/shop-app.git";
pub const EXAMPLE_CONFIG_URL: &str = "https://git.example.com/acme/shop-config.git";
pub const EXAMPLE_SYSTEM_URL: &str = "https://git.example.com/acme/shop-system.git";

/// The Tiers of `examples/`: tier-1 is promoted from tier-0.
pub const EXAMPLE_TIERS: [&str; 2] = ["tier-0", "tier-1"];

/// The ShopSets of `examples/shopsets.yaml`: name, tier, and the namespace its Application
/// deploys to.
pub const EXAMPLE_SHOPSETS: [(&str, &str, &str); 4] = [
    ("canary-eu", "tier-0", "canary-eu"),
    ("canary-us", "tier-0", "canary-us"),
    ("eu-west", "tier-1", "eu-west"),
    ("us-east", "tier-1", "shops-us-east"),
];

/// `examples/<file>` with the example repository URLs replaced by `app`, `config` and `system`.
///
/// # Panics
/// If the file names another URL of the examples' host (this would not rewrite it).
pub fn example_manifest(file: &str, app: &str, config: &str, system: &str) -> String {
    let path = repo_root().join("examples").join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read examples/{file}: {e}"));
    let text =
        text.replace(EXAMPLE_APP_URL, app).replace(EXAMPLE_CONFIG_URL, config).replace(EXAMPLE_SYSTEM_URL, system);
    assert!(!text.contains("git.example.com"), "examples/{file} has a URL this test does not rewrite:\n{text}");
    text
}

/// `text` (of `what`) with its one `from` replaced by `to`.
///
/// # Panics
/// If `from` does not occur exactly once: the example changed, adapt the test.
pub fn replace_once(text: &str, what: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(n, 1, "{what} says {from:?} {n} times, not once: adapt this test");
    text.replacen(from, to, 1)
}

/// `examples/` as a user applies it (the Configuration, tier-0 and tier-1, and the four
/// ShopSets of [`EXAMPLE_SHOPSETS`]) into namespace `ns`, on a git daemon of the test's own whose
/// app and config repositories are seeded from `examples/app` and `examples/config`, with the
/// Applications in `<ns>-argocd`. The manifests are written, not applied yet: see
/// [`Examples::apply`].
pub struct Examples {
    /// `owner/` of the repositories' names, or nothing.
    pub prefix: String,
    pub ns: String,
    pub argocd_ns: String,
    pub app_url: String,
    pub config_url: String,
    pub system_url: String,
    /// `main` of the app and config repositories, as seeded.
    pub app_main: String,
    pub config_main: String,
    pub work: WorkDir,
    pub manifests: PathBuf,
    pub daemon: GitDaemon,
}

impl Examples {
    /// tier-0 polls every `tier0_interval`; tier-1 hourly (it moves only when promoted).
    pub fn new(cp: &ControlPlane, ns: &str, tier0_interval: &str) -> Examples {
        Examples::owned_by(cp, ns, tier0_interval, "")
    }

    /// As [`Examples::new`], the repositories named like GitHub's (`acme/shop-app`), so that the
    /// GitHub stand-in can serve them by owner and name.
    #[allow(dead_code)] // Not every test binary promotes by pull request.
    pub fn on_github(cp: &ControlPlane, ns: &str, tier0_interval: &str, owner: &str) -> Examples {
        Examples::owned_by(cp, ns, tier0_interval, &format!("{owner}/"))
    }

    fn owned_by(cp: &ControlPlane, ns: &str, tier0_interval: &str, prefix: &str) -> Examples {
        let daemon = GitDaemon::start();
        let examples = repo_root().join("examples");
        let app_url = daemon.create_repo(&format!("{prefix}shop-app"));
        let config_url = daemon.create_repo(&format!("{prefix}shop-config"));
        let system_url = daemon.create_repo(&format!("{prefix}shop-system"));
        let app_main = seed_dir(&app_url, "main", &examples.join("app"), "app from examples/app");
        let config_main = seed_dir(&config_url, "main", &examples.join("config"), "config from examples/config");
        let argocd_ns = format!("{ns}-argocd");
        cp.kubectl_ok(["create", "namespace", ns]);
        cp.kubectl_ok(["create", "namespace", &argocd_ns]);
        let work = WorkDir::new(ns);
        let manifests = work.path().join("manifests");
        fs::create_dir_all(&manifests).expect("create manifests dir");
        let argocd = ("\n    namespace: argocd\n", format!("\n    namespace: {argocd_ns}\n"));
        for (file, edits) in [
            ("configuration.yaml", vec![]),
            ("tier-0.yaml", vec![("\n  interval: 1m\n", format!("\n  interval: {tier0_interval}\n")), argocd.clone()]),
            ("tier-1.yaml", vec![("\n  interval: 5m\n", "\n  interval: 1h\n".to_string()), argocd.clone()]),
            ("shopsets.yaml", vec![]),
        ] {
            let text = example_manifest(file, &app_url, &config_url, &system_url);
            let what = format!("examples/{file}");
            let text = edits.iter().fold(text, |text, (from, to)| replace_once(&text, &what, from, to));
            fs::write(manifests.join(file), text).expect("write manifest");
        }
        Examples {
            prefix: prefix.into(),
            ns: ns.into(),
            argocd_ns,
            app_url,
            config_url,
            system_url,
            app_main,
            config_main,
            work,
            manifests,
            daemon,
        }
    }

    /// `kubectl apply -n <ns> -f` the manifests; kubectl's output.
    pub fn apply(&self, cp: &ControlPlane) -> String {
        cp.kubectl_ok(["apply", "-n", &self.ns, "-f", path_str(&self.manifests)])
    }

    /// A controller for the namespace; `name` names its log and cache in the work directory.
    pub fn controller(&self, cp: &ControlPlane, name: &str) -> Controller {
        Controller::new(cp, self.work.path(), &self.ns, name)
    }

    /// The bare system repository on disk.
    pub fn system_repo(&self) -> PathBuf {
        self.daemon.path(&format!("{}shop-system", self.prefix))
    }

    pub fn jsonpath(&self, cp: &ControlPlane, kind: &str, name: &str, path: &str) -> String {
        jsonpath(cp, &self.ns, kind, name, path)
    }

    /// The status of the Ready condition of `kind/name`.
    pub fn ready(&self, cp: &ControlPlane, kind: &str, name: &str) -> String {
        ready_condition(cp, &self.ns, kind, name).0
    }

    /// Names of the Applications in the test's Argo CD namespace, sorted.
    pub fn applications(&self, cp: &ControlPlane) -> Vec<String> {
        applications(cp, &self.argocd_ns)
    }

    /// repoURL, targetRevision, path, project, destination server and namespace, and the labels
    /// tier, shopset and managed-by of Application `name`.
    pub fn application(&self, cp: &ControlPlane, name: &str) -> Vec<String> {
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
        jsonpath(cp, &self.argocd_ns, "application", name, &path).split('|').map(str::to_string).collect()
    }

    /// Commits on `tier`'s system branch, newest first.
    pub fn system_log(&self, tier: &str) -> Vec<(String, String)> {
        log(&self.system_url, tier)
    }

    /// The commit the gitlink `path` of `tier`'s system branch points to ("" if none).
    pub fn gitlink(&self, tier: &str, path: &str) -> String {
        gitlink(&self.system_repo(), tier, path)
    }
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
    /// More flags, e.g. `--stall-timeout=2s`.
    pub flags: Vec<String>,
    /// `SHOPSET_FAULT_HOLD`: the file whose presence holds the `hold-reconcile` fault point.
    pub hold: Option<PathBuf>,
    /// `--templates`: a directory whose templates replace the embedded ones.
    pub templates: Option<PathBuf>,
}

impl Run {
    pub fn new(identity: &str) -> Run {
        Run {
            identity: identity.into(),
            lease_duration: "6s".into(),
            fault: None,
            log_format: None,
            rust_log: "info,kube=warn".into(),
            flags: Vec::new(),
            hold: None,
            templates: None,
        }
    }
    pub fn flag(mut self, flag: &str) -> Run {
        self.flags.push(flag.into());
        self
    }
    /// `--allow-local-urls`: for tests whose Tiers name `file://` repositories.
    pub fn allow_local_urls(self) -> Run {
        self.flag("--allow-local-urls")
    }
    /// Every reconcile waits at its start while `file` exists (fault point `hold-reconcile`).
    pub fn hold_reconciles_while(mut self, file: &Path) -> Run {
        self.fault = Some("hold-reconcile".into());
        self.hold = Some(file.to_path_buf());
        self
    }
    pub fn fault(mut self, point: &str) -> Run {
        self.fault = Some(point.into());
        self
    }
    pub fn lease(mut self, duration: &str) -> Run {
        self.lease_duration = duration.into();
        self
    }
    pub fn templates(mut self, dir: &Path) -> Run {
        self.templates = Some(dir.to_path_buf());
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

/// `shopset-controller` as a process, logging (stdout and stderr) to a file that every run
/// appends to. By default it watches one namespace and keeps its Lease there; see
/// [`Controller::watching_every_namespace`] for the way the Deployment runs it.
pub struct Controller {
    /// Behind a lock so that `&self` can tell whether the process still runs (probes of
    /// [`wait_for`] borrow the controller while its log is the failure's context).
    child: Mutex<Option<Child>>,
    port: u16,
    /// The namespace of the test's Tiers (their metrics' `namespace` label).
    ns: String,
    /// `--namespace`: None watches every namespace.
    watch: Option<String>,
    /// `--lease-namespace`: None keeps the Lease in the watched namespace.
    lease_namespace: Option<String>,
    kubeconfig: PathBuf,
    /// None: the workspace's `shopset-controller` of `cargo build`.
    binary: Option<PathBuf>,
    /// HOME of the process: its own directory, no user's git or kube configuration.
    home: PathBuf,
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
            child: Mutex::new(None),
            port: 0,
            ns: ns.into(),
            watch: Some(ns.into()),
            lease_namespace: None,
            kubeconfig: cp.kubeconfig().to_path_buf(),
            binary: None,
            home: dir.to_path_buf(),
            cache,
            secret_file,
            log: dir.join(format!("{name}.log")),
            log_offset: 0,
        }
    }

    /// Watches every namespace (no `--namespace`) with its Lease in `lease_namespace`, as the
    /// Deployment of `deploy/` runs it.
    pub fn watching_every_namespace(mut self, lease_namespace: &str) -> Controller {
        self.watch = None;
        self.lease_namespace = Some(lease_namespace.into());
        self
    }

    /// Talks to the API server with this kubeconfig instead of the control plane's admin one.
    pub fn with_kubeconfig(mut self, kubeconfig: &Path) -> Controller {
        self.kubeconfig = kubeconfig.to_path_buf();
        self
    }

    /// Runs this binary instead of the workspace's.
    pub fn with_binary(mut self, binary: &Path) -> Controller {
        self.binary = Some(binary.to_path_buf());
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a process and waits until /healthz answers (it may still wait for the Lease).
    pub fn start(&mut self, run: &Run) {
        assert!(self.child().is_none(), "one process per Controller at a time");
        self.port = free_port();
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open controller log");
        writeln!(log, "==== {} on 127.0.0.1:{} (fault {:?})", run.identity, self.port, run.fault)
            .expect("write controller log");
        self.log_offset = fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0);
        let binary = self.binary.clone().unwrap_or_else(|| workspace_bin("shopset-controller"));
        let mut cmd = Command::new(&binary);
        cmd.arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--cache-dir={}", self.cache.display()))
            .arg(format!("--webhook-secret-file={}", self.secret_file.display()))
            .arg(format!("--lease-duration={}", run.lease_duration))
            .arg(format!("--identity={}", run.identity))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env("PATH", path_env())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", &run.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        // Nothing of the environment the test runs in: only the flags above say what it does.
        for var in [
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "POD_NAME",
            "POD_NAMESPACE",
            "SHOPSET_NAMESPACE",
            "SHOPSET_CACHE_DIR",
            "SHOPSET_TEMPLATES",
            "SHOPSET_LISTEN",
            "SHOPSET_WEBHOOK_SECRET_FILE",
            "SHOPSET_FAULT",
            "SHOPSET_FAULT_HOLD",
            "SHOPSET_LOG_FORMAT",
            "SHOPSET_ALLOW_LOCAL_URLS",
            "SHOPSET_STALL_TIMEOUT",
        ] {
            cmd.env_remove(var);
        }
        if let Some(ns) = &self.watch {
            cmd.arg(format!("--namespace={ns}"));
        }
        if let Some(ns) = &self.lease_namespace {
            cmd.arg(format!("--lease-namespace={ns}"));
        }
        if let Some(fault) = &run.fault {
            cmd.env("SHOPSET_FAULT", fault);
        }
        if let Some(format) = &run.log_format {
            cmd.arg(format!("--log-format={format}"));
        }
        if let Some(hold) = &run.hold {
            cmd.env("SHOPSET_FAULT_HOLD", hold);
        }
        cmd.args(&run.flags);
        if let Some(dir) = &run.templates {
            cmd.arg(format!("--templates={}", dir.display()));
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        *self.child() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.assert_running();
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
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit (it releases its Lease).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child().take() else { return };
        // Our own child, by its pid.
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
    pub fn running(&self) -> bool {
        self.child().as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&self) {
        if let Some(status) = self.child().as_mut().and_then(|c| c.try_wait().expect("poll controller")) {
            panic!("shopset-controller exited ({status}):\n{}", self.log_since_start());
        }
    }

    /// Waits for the process to exit on its own; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.child().as_mut().expect("a running controller").try_wait().expect("poll controller");
            if let Some(status) = status {
                *self.child() = None;
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

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// The port of its HTTP endpoints.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn metrics(&self) -> String {
        let (code, body) = http(&self.url("/metrics"), &[], None);
        assert_eq!(code, 200, "/metrics: {body}");
        body
    }

    /// `shopset_reconciles_total` of [`TIER`].
    pub fn reconciles(&self) -> f64 {
        self.reconciles_of(TIER)
    }

    /// `shopset_pushes_total` of [`TIER`].
    pub fn pushes(&self) -> f64 {
        self.pushes_of(TIER)
    }

    /// `shopset_reconciles_total` of `tier` of the controller's namespace.
    pub fn reconciles_of(&self, tier: &str) -> f64 {
        metric(&self.metrics(), "shopset_reconciles_total", &[("namespace", &self.ns), ("tier", tier)]).unwrap_or(0.0)
    }

    /// `shopset_pushes_total` of `tier` of the controller's namespace.
    pub fn pushes_of(&self, tier: &str) -> f64 {
        metric(&self.metrics(), "shopset_pushes_total", &[("namespace", &self.ns), ("tier", tier)]).unwrap_or(0.0)
    }

    /// `shopset_reconcile_errors_total` of the tier for `reason`.
    pub fn errors(&self, reason: &str) -> f64 {
        metric(&self.metrics(), "shopset_reconcile_errors_total", &[("tier", TIER), ("reason", reason)]).unwrap_or(0.0)
    }

    /// Waits for `n` more reconciles of [`TIER`].
    pub fn wait_for_reconciles(&self, n: u32, timeout: Duration) {
        self.wait_for_reconciles_of(TIER, n, timeout);
    }

    /// Waits for `n` more reconciles of `tier`.
    pub fn wait_for_reconciles_of(&self, tier: &str, n: u32, timeout: Duration) {
        let start = self.reconciles_of(tier);
        wait_until(&format!("{n} more reconciles of {tier}"), timeout, self, || {
            (self.reconciles_of(tier) >= start + n as f64).then_some(())
        });
    }

    /// Waits until the controller is in its steady poll rhythm for `tier` (two reconciles about
    /// `interval` apart, nothing else in between) and returns when the last one was seen: the
    /// next poll is due one interval later.
    pub fn wait_for_poll_tick(&self, tier: &str, interval: Duration) -> Instant {
        let deadline = Instant::now() + interval * 5;
        let mut last = (self.reconciles_of(tier), Instant::now());
        let mut steady = false;
        loop {
            let n = self.reconciles_of(tier);
            if n != last.0 {
                let now = Instant::now();
                // An interval since the previous reconcile (less the sampling slack): a poll.
                if steady && now.duration_since(last.1) + Duration::from_millis(600) >= interval {
                    return now;
                }
                steady = true;
                last = (n, now);
            }
            assert!(
                Instant::now() < deadline,
                "no steady {interval:?} poll of {tier} within {:?}:\n{}",
                interval * 5,
                self.log_since_start()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// POST to /hooks/github with `headers`.
    pub fn webhook(&self, headers: &[&str], body: &str) -> (u16, String) {
        http(&self.url("/hooks/github"), headers, Some(body))
    }

    /// A GitHub push event, with `X-Hub-Signature-256: <signature>` if given.
    pub fn push_event(&self, body: &str, signature: Option<&str>) -> (u16, String) {
        let signature = signature.map(|s| format!("X-Hub-Signature-256: {s}"));
        let mut headers = vec!["X-GitHub-Event: push", "Content-Type: application/json"];
        headers.extend(signature.as_deref());
        self.webhook(&headers, body)
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
// Reading the cluster

/// `kubectl get <kind> <name> -n <ns> -o jsonpath=<path>`.
pub fn jsonpath(cp: &ControlPlane, ns: &str, kind: &str, name: &str, path: &str) -> String {
    cp.kubectl_ok(["get", kind, name, "-n", ns, "-o", &format!("jsonpath={path}")])
}

/// status, reason and message of the Ready condition of `kind/name` in `ns`.
pub fn ready_condition(cp: &ControlPlane, ns: &str, kind: &str, name: &str) -> (String, String, String) {
    const READY: &str = r#".status.conditions[?(@.type=="Ready")]"#;
    let out = jsonpath(cp, ns, kind, name, &format!("{{{READY}.status}}|{{{READY}.reason}}|{{{READY}.message}}"));
    let mut parts = out.splitn(3, '|').map(str::to_string);
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

/// Names of the Applications in `argocd_ns`, sorted.
pub fn applications(cp: &ControlPlane, argocd_ns: &str) -> Vec<String> {
    let out =
        cp.kubectl_ok(["get", "applications.argoproj.io", "-n", argocd_ns, "-o", "jsonpath={.items[*].metadata.name}"]);
    let mut names: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Polls `probe` every 250 ms until it returns `Some`, or panics after `timeout` with `what` and
/// `context()`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// [`wait_for`] with the controller's log since its start as the context.
pub fn wait_until<T>(what: &str, timeout: Duration, ctl: &Controller, probe: impl FnMut() -> Option<T>) -> T {
    wait_for(what, timeout, probe, || format!("---- controller log since its start:\n{}", ctl.log_since_start()))
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

/// Runs `cmd` with the tools first on its PATH and no stdin; its stdout.
///
/// # Panics
/// If it fails, with its status, stdout and stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.env("PATH", path_env()).stdin(Stdio::null()).output().expect("run command");
    assert!(out.status.success(), "{cmd:?} failed {}", show(&out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Output bytes as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's status, stdout and stderr, for a failure message.
pub fn show(output: &Output) -> String {
    format!("({})\nstdout: {}\nstderr: {}", output.status, text(&output.stdout), text(&output.stderr))
}

pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
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

/// `kubectl wait --for=condition=Deployed tier/<tier>` in `ns` until the condition is about the
/// system branch's head and counts every ShopSet; that head.
pub fn wait_tier_deployed(
    cp: &ControlPlane,
    ctl: &Controller,
    ns: &str,
    system_url: &str,
    tier: &str,
    shopsets: &[&str],
    timeout: Duration,
) -> String {
    wait_until(&format!("Tier {tier} Deployed at the system branch's head"), timeout, ctl, || {
        let out = cp.kubectl(["wait", "-n", ns, "--for=condition=Deployed", &format!("tier/{tier}"), "--timeout=30s"]);
        let head = branch_head(system_url, tier)?;
        let message = jsonpath(cp, ns, "tier", tier, "{.status.conditions[?(@.type==\"Deployed\")].message}");
        let want = format!("{n}/{n} at {}", short(&head), n = shopsets.len());
        (out.status.success() && message == want).then_some(head)
    })
}

/// `shopctl --cache-dir shopctl-cache --color never --namespace <ns> <args>` in `work` with the
/// plane's KUBECONFIG, its own cache and HOME, and none of the caller's ShopSet or git settings.
pub fn shopctl_in(cp: &ControlPlane, work: &Path, ns: &str, args: &[&str]) -> Output {
    Command::new(workspace_bin("shopctl"))
        .current_dir(work)
        .args(["--cache-dir", "shopctl-cache", "--color", "never", "--namespace", ns])
        .args(args)
        .env("PATH", path_env())
        .env("HOME", work)
        .env("XDG_CONFIG_HOME", work)
        .env("KUBECONFIG", cp.kubeconfig())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("SHOPSET_CACHE_DIR")
        .env_remove("SHOPSET_CREDENTIALS")
        .env_remove("SHOPSET_TEMPLATES")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run shopctl")
}
