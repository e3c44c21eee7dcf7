//! What `/readyz` and `/healthz` answer, from what the controller actually does.
//!
//! - Ready: every watch cache a reconcile reads (Tiers, ShopSets, Configurations) holds a complete
//!   list. Until then a reconcile would wait, so the replica is not ready; the answer names the
//!   caches still filling. A watch that never fills (the API server unreachable, a CRD missing)
//!   keeps it unready; the answer then has the watch's last error, in the API server's words. Once
//!   filled, a cache stays ready: a watch that restarts relists into it.
//! - Healthy: unless reconciles are running and none has finished for longer than the stall
//!   timeout. A reconcile that waits forever (a hung connection, a deadlock) then gets the
//!   process restarted; an idle controller is healthy, however long it idles.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

/// Default of `--stall-timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The controller's readiness and liveness, shared by the reconcile loop and the HTTP endpoints.
#[derive(Debug)]
pub struct Health {
    stall_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Kind of each watch cache, and whether it holds a complete list. Empty: no watch started.
    caches: BTreeMap<&'static str, bool>,
    /// The last error of the watch of each kind whose cache is not filled yet.
    errors: BTreeMap<&'static str, String>,
    /// Reconciles started and not finished.
    running: usize,
    /// When the last reconcile finished, or when reconciles started running after none did:
    /// the later of the two is the last sign of progress.
    progress: Option<(Instant, Timestamp)>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_STALL_TIMEOUT)
    }
}

impl Health {
    pub fn new(stall_timeout: Duration) -> Self {
        Health { stall_timeout, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A watch cache of `kind` started filling.
    pub fn watching(&self, kind: &'static str) {
        self.state().caches.entry(kind).or_insert(false);
    }

    /// The watch cache of `kind` holds a complete list.
    pub fn synced(&self, kind: &'static str) {
        let mut state = self.state();
        state.errors.remove(kind);
        if state.caches.insert(kind, true) != Some(true) {
            tracing::info!(kind, "watch cache synced");
        }
    }

    /// The watch of `kind` failed with `error` (it retries with backoff). Kept, until the cache is
    /// filled, to say why it is not.
    pub fn watch_failed(&self, kind: &'static str, error: String) {
        let mut state = self.state();
        if state.caches.get(kind) != Some(&true) {
            state.errors.insert(kind, error);
        }
    }

    /// `kind: error` for each of `kinds` whose cache is not filled and whose watch failed: a
    /// reconcile waiting for them would wait for as long as the failure lasts.
    pub fn unfilled_errors(&self, kinds: &[&str]) -> Vec<String> {
        let state = self.state();
        kinds.iter().filter_map(|kind| state.errors.get(kind).map(|e| format!("{kind}: {e}"))).collect()
    }

    /// Ok with a short text when ready; else why not.
    pub fn readiness(&self) -> Result<String, String> {
        let state = self.state();
        if state.caches.is_empty() {
            return Err("not ready: the watches have not started (this replica may be waiting for the Lease)".into());
        }
        let filling: Vec<&str> = state.caches.iter().filter(|(_, synced)| !**synced).map(|(kind, _)| *kind).collect();
        if filling.is_empty() {
            Ok(format!("ok: watch caches synced: {}", state.caches.keys().copied().collect::<Vec<_>>().join(", ")))
        } else {
            let errors: Vec<String> = state.errors.iter().map(|(kind, e)| format!("{kind}: {e}")).collect();
            let errors = if errors.is_empty() { String::new() } else { format!("; last error: {}", errors.join("; ")) };
            Err(format!(
                "not ready: watch caches not yet synced: {} (the API server is unreachable, refuses the watch, or lacks their CRDs; see the controller's log){errors}",
                filling.join(", ")
            ))
        }
    }

    /// A reconcile started; it counts as finished when the guard is dropped.
    pub fn reconcile_started(&self) -> Running<'_> {
        let mut state = self.state();
        if state.running == 0 {
            state.progress = Some((Instant::now(), Timestamp::now()));
        }
        state.running += 1;
        Running(self)
    }

    /// Ok with a short text when the reconcile loop makes progress or has nothing to do; else since
    /// when it has made none.
    pub fn liveness(&self) -> Result<String, String> {
        let state = self.state();
        match state.progress {
            Some((at, when)) if state.running > 0 && at.elapsed() > self.stall_timeout => Err(format!(
                "unhealthy: {} reconcile(s) running and none finished since {when} ({} s, stall timeout {} s)",
                state.running,
                at.elapsed().as_secs(),
                self.stall_timeout.as_secs()
            )),
            _ => Ok(format!("ok: {} reconcile(s) running", state.running)),
        }
    }
}

/// A running reconcile (see [`Health::reconcile_started`]).
#[must_use = "the reconcile counts as finished when this is dropped"]
pub struct Running<'a>(&'a Health);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.running = state.running.saturating_sub(1);
        state.progress = Some((Instant::now(), Timestamp::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_every_watch_cache_is_synced_and_the_answer_names_the_others() {
        let health = Health::default();
        assert!(health.readiness().unwrap_err().contains("have not started"));
        for kind in ["Tier", "ShopSet", "Configuration"] {
            health.watching(kind);
        }
        health.synced("Tier");
        let why = health.readiness().unwrap_err();
        assert!(why.contains("not yet synced: Configuration, ShopSet"), "{why}");
        assert!(!why.contains("Tier") && !why.contains("last error"), "{why}");
        let leader = "cannot list: Internal error occurred: etcdserver: leader changed";
        health.watch_failed("ShopSet", leader.into());
        health.watch_failed("Tier", "a watch restarted after its cache filled".into());
        let why = health.readiness().unwrap_err();
        assert!(why.ends_with(&format!("; last error: ShopSet: {leader}")), "{why}");
        assert_eq!(health.unfilled_errors(&["ShopSet", "Configuration"]), [format!("ShopSet: {leader}")]);
        health.synced("ShopSet");
        assert!(health.unfilled_errors(&["ShopSet", "Configuration"]).is_empty(), "filled: the error is gone");
        health.synced("Configuration");
        assert!(health.readiness().is_ok());
        health.watching("Tier");
        assert!(health.readiness().is_ok(), "a restarted watch does not unready a filled cache");
    }

    #[test]
    fn unhealthy_only_while_reconciles_run_and_none_finished_within_the_stall_timeout() {
        let health = Health::new(Duration::ZERO);
        assert!(health.liveness().is_ok(), "idle is healthy");
        let first = health.reconcile_started();
        std::thread::sleep(Duration::from_millis(5));
        let why = health.liveness().unwrap_err();
        assert!(why.contains("1 reconcile(s) running and none finished since 20"), "{why}");
        drop(first);
        assert!(health.liveness().is_ok(), "nothing running");

        let patient = Health::new(Duration::from_secs(3600));
        let _running = patient.reconcile_started();
        assert!(patient.liveness().is_ok(), "within the stall timeout");
    }
}
