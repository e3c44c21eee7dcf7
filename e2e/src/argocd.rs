//! A real Argo CD on the test control plane: `argocd-repo-server` and
//! `argocd-application-controller` (v3.5, built by `e2e/install-tools`) with Redis, plus
//! kube-scheduler and kwok acting as the kubelet of one fake Node, so that the Pods of what Argo
//! CD deploys become Ready and Argo CD reports Healthy. All on 127.0.0.1, started by
//! `e2e/up --argocd` and stopped with the [`ControlPlane`].
//!
//! ```no_run
//! use shopset_e2e::argocd::ArgoCdOptions;
//! use shopset_e2e::controlplane::{ControlPlane, Options};
//!
//! let cp = ControlPlane::start_with(Options::default().argocd(ArgoCdOptions::default()));
//! let argocd = cp.argocd();
//! // Apply Applications into argocd.namespace(), then:
//! # let (names, revision) = (["cell-a"], "0123456789abcdef0123456789abcdef01234567");
//! argocd.wait_synced_healthy(&names, revision, std::time::Duration::from_secs(600));
//! ```
//!
//! Argo CD runs with its default settings but for `argocd-cm`'s `resource.exclusions`, which are
//! those of Argo CD's install manifests (Endpoints, EndpointSlices, Leases...), the `default`
//! AppProject (any source, any destination) and the in-cluster destination
//! `https://kubernetes.default.svc`. Nothing serves its API or UI: tests read and annotate
//! Applications with kubectl, as [`ArgoCd`] does. Both servers serve Go's pprof on their metrics
//! port (`/debug/pprof/profile`), on 127.0.0.1 as their metrics.

use std::fmt;
use std::time::{Duration, Instant};

use crate::controlplane::ControlPlane;

/// How the Argo CD of a control plane runs. The defaults are Argo CD's.
#[derive(Clone, Debug)]
pub struct ArgoCdOptions {
    /// The application controller's `--app-resync`: how often it refreshes every Application
    /// on its own, reading the target branch again (default 120 s). [`Duration::ZERO`] turns
    /// that off: then only the refresh annotation ([`ArgoCd::refresh`]), a change of the
    /// Application or of a resource it manages makes it look again.
    pub app_resync: Duration,
    /// `--app-resync-jitter`: up to this much is added to each periodic refresh (default 60 s).
    pub app_resync_jitter: Duration,
}

impl Default for ArgoCdOptions {
    fn default() -> Self {
        ArgoCdOptions { app_resync: Duration::from_secs(120), app_resync_jitter: Duration::from_secs(60) }
    }
}

impl ArgoCdOptions {
    /// The arguments of `e2e/up` for these options (after `--argocd`).
    pub(crate) fn up_args(&self) -> [String; 2] {
        [
            format!("--argocd-app-resync={}", self.app_resync.as_secs()),
            format!("--argocd-app-resync-jitter={}", self.app_resync_jitter.as_secs()),
        ]
    }
}

/// Where the servers `e2e/up --argocd` started listen, as it wrote them in `cluster.env`.
#[derive(Clone, Debug)]
pub(crate) struct ArgoCdEndpoints {
    pub(crate) namespace: String,
    pub(crate) repo_server: String,
    pub(crate) controller_metrics_url: String,
    pub(crate) repo_server_metrics_url: String,
    pub(crate) redis: String,
    pub(crate) node: String,
}

/// The Argo CD of a running control plane ([`ControlPlane::argocd`]).
pub struct ArgoCd<'a> {
    cp: &'a ControlPlane,
    endpoints: &'a ArgoCdEndpoints,
}

/// The parts of an Application's status that tell whether Argo CD deployed a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplicationStatus {
    /// `.status.sync.status`: `Synced`, `OutOfSync` or `Unknown` ("" before the first look).
    pub sync: String,
    /// `.status.health.status`: `Healthy`, `Progressing`, `Degraded`, `Missing`...
    pub health: String,
    /// `.status.sync.revision`: the commit the sync status is about.
    pub revision: String,
    /// `.status.operationState.phase` of the last sync operation: `Running`, `Succeeded`...
    pub operation_phase: String,
    /// What Argo CD says went wrong or is pending: condition, operation and health messages.
    pub messages: Vec<String>,
}

impl ApplicationStatus {
    /// Synced and Healthy, and the sync status is about `revision` (a stale `Synced` of an
    /// older commit does not count).
    pub fn synced_healthy_at(&self, revision: &str) -> bool {
        self.sync == "Synced" && self.health == "Healthy" && self.revision == revision
    }

    fn from_json(app: &serde_json::Value) -> ApplicationStatus {
        let text = |pointer: &str| app.pointer(pointer).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let mut messages: Vec<String> = app
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .map(|c| {
                let field = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or_default();
                format!("{}: {}", field("type"), field("message"))
            })
            .collect();
        for (what, pointer) in [("operation", "/status/operationState/message"), ("health", "/status/health/message")] {
            let message = text(pointer);
            if !message.is_empty() {
                messages.push(format!("{what}: {message}"));
            }
        }
        ApplicationStatus {
            sync: text("/status/sync/status"),
            health: text("/status/health/status"),
            revision: text("/status/sync/revision"),
            operation_phase: text("/status/operationState/phase"),
            messages,
        }
    }
}

impl fmt::Display for ApplicationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
        write!(
            f,
            "sync {} health {} revision {} operation {}",
            or_none(&self.sync),
            or_none(&self.health),
            or_none(&self.revision),
            or_none(&self.operation_phase)
        )?;
        for message in &self.messages {
            write!(f, "\n    {message}")?;
        }
        Ok(())
    }
}

/// How many lines of each Argo CD log a failed wait shows.
const LOG_TAIL: usize = 40;

impl<'a> ArgoCd<'a> {
    pub(crate) fn new(cp: &'a ControlPlane, endpoints: &'a ArgoCdEndpoints) -> ArgoCd<'a> {
        ArgoCd { cp, endpoints }
    }

    /// The namespace of Argo CD's settings, its AppProject `default` and the Applications it
    /// reconciles (`argocd`).
    pub fn namespace(&self) -> &str {
        &self.endpoints.namespace
    }

    /// The fake Node kwok runs Pods on (Ready, room for 1,000 Pods: 100 ShopSets rolling out).
    pub fn node(&self) -> &str {
        &self.endpoints.node
    }

    /// `127.0.0.1:<port>` of argocd-repo-server (plain gRPC).
    pub fn repo_server(&self) -> &str {
        &self.endpoints.repo_server
    }

    /// `127.0.0.1:<port>` of Redis.
    pub fn redis(&self) -> &str {
        &self.endpoints.redis
    }

    /// `http://127.0.0.1:<port>/metrics` of argocd-application-controller (Prometheus text).
    pub fn controller_metrics_url(&self) -> &str {
        &self.endpoints.controller_metrics_url
    }

    /// `http://127.0.0.1:<port>/metrics` of argocd-repo-server (Prometheus text).
    pub fn repo_server_metrics_url(&self) -> &str {
        &self.endpoints.repo_server_metrics_url
    }

    /// The process id of argocd-repo-server (the process itself: the git and kustomize it runs
    /// are its children).
    pub fn repo_server_pid(&self) -> Option<u32> {
        self.cp.pid("argocd-repo-server")
    }

    /// The process id of argocd-application-controller.
    pub fn controller_pid(&self) -> Option<u32> {
        self.cp.pid("argocd-application-controller")
    }

    /// The Application's status, or `None` if there is no such Application.
    ///
    /// # Panics
    /// If kubectl fails otherwise.
    pub fn application(&self, name: &str) -> Option<ApplicationStatus> {
        let out = self.cp.kubectl_ok([
            "get",
            "application",
            name,
            "-n",
            self.namespace(),
            "--ignore-not-found",
            "-o",
            "json",
        ]);
        if out.trim().is_empty() {
            return None;
        }
        let app: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl printed no JSON for Application {name} ({e}):\n{out}"));
        Some(ApplicationStatus::from_json(&app))
    }

    /// Asks Argo CD to look at the Application's source again now, as `argocd app get
    /// --refresh` does: the `argocd.argoproj.io/refresh=normal` annotation, which the
    /// controller removes once it has.
    pub fn refresh(&self, name: &str) {
        self.cp.kubectl_ok([
            "annotate",
            "application",
            name,
            "-n",
            self.namespace(),
            "--overwrite",
            "argocd.argoproj.io/refresh=normal",
        ]);
    }

    /// Waits until every Application of `names` is Synced and Healthy at `revision`.
    ///
    /// # Panics
    /// After `timeout`, with each Application's status and the tails of Argo CD's logs.
    pub fn wait_synced_healthy(&self, names: &[&str], revision: &str, timeout: Duration) {
        let what = format!("Applications {names:?} Synced and Healthy at {revision}");
        self.wait(&what, timeout, || {
            let statuses: Vec<(&str, Option<ApplicationStatus>)> =
                names.iter().map(|name| (*name, self.application(name))).collect();
            if statuses.iter().all(|(_, s)| s.as_ref().is_some_and(|s| s.synced_healthy_at(revision))) {
                return Ok(());
            }
            Err(statuses
                .iter()
                .map(|(name, s)| match s {
                    Some(s) => format!("{name}: {s}"),
                    None => format!("{name}: no such Application"),
                })
                .collect::<Vec<_>>()
                .join("\n"))
        });
    }

    /// Polls `probe` every half second until it returns `Ok`, and returns that value.
    ///
    /// # Panics
    /// After `timeout`, with what `probe` said last (its `Err`) and the tails of Argo CD's,
    /// kwok's and kube-scheduler's logs.
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match probe() {
                Ok(value) => return value,
                Err(last) => last,
            };
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; last:\n{last}\n{}", self.log_tails());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last lines of the logs of the servers that deploy: for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for component in ["argocd-application-controller", "argocd-repo-server", "kube-scheduler", "kwok"] {
            let log = self.cp.log(component);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            out.push_str(&format!("---- last lines of {component}.log\n{}\n", tail.join("\n")));
        }
        out
    }
}

/// The example Configuration and tier-0 (polling every `interval`), with the repositories given
/// and Argo CD in `argocd_namespace` deploying to this cluster with automated sync and the sync
/// options README's "Argo CD settings" recommends: what the Argo CD tests and the benchmark apply,
/// before their ShopSets.
pub fn tier0_and_configuration(
    app: &str,
    config: &str,
    system: &str,
    argocd_namespace: &str,
    interval: &str,
) -> String {
    const TIER: &str = "tier-0";
    format!(
        "apiVersion: shopset.dev/v1alpha1
kind: Configuration
metadata:
  name: shop-config
spec:
  url: {config}
  path: component
---
apiVersion: shopset.dev/v1alpha1
kind: Tier
metadata:
  name: {TIER}
spec:
  interval: {interval}
  app:
    url: {app}
    path: base
  system:
    url: {system}
  argocd:
    namespace: {argocd_namespace}
    project: default
    destination:
      server: https://kubernetes.default.svc
    syncPolicy:
      automated:
        prune: true
        selfHeal: true
      syncOptions:
      - ServerSideApply=true
      - Validate=false
      - ApplyOutOfSyncOnly=true
"
    )
}

/// [`tier0_and_configuration`] and the example's two ShopSets of tier-0: what the Argo CD tests
/// apply or sync.
pub fn tier0_manifests(app: &str, config: &str, system: &str, argocd_namespace: &str, interval: &str) -> String {
    const TIER: &str = "tier-0";
    let shopsets = format!(
        "---
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: canary-eu
spec:
  tier: {TIER}
  configuration: shop-config
  shops: [shop-0001, shop-0002]
---
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: canary-us
spec:
  tier: {TIER}
  configuration: shop-config
  shops: [shop-1001]
  images:
  - name: ghcr.io/acme/checkout
    newTag: 1.1.0-rc.1
"
    );
    tier0_and_configuration(app, config, system, argocd_namespace, interval) + &shopsets
}
