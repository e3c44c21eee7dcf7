//! Fault-injection points for the crash tests: with `SHOPSET_FAULT=<point>` in the environment, the
//! process aborts at that point (as a SIGKILL would stop it). The points exist only in builds with
//! the `fault-injection` feature, which the test commands enable and a release build does not.
//!
//! Points of a sync that pushes a change: `before-push` (commit written, not pushed), `after-push`
//! (pushed, Applications not applied), `before-status` (applied, status not written).
//!
//! A point that waits instead: `hold-reconcile` (every reconcile, at its start, while the file
//! named by `SHOPSET_FAULT_HOLD` exists), for the liveness probe's test.

/// Aborts the process when `SHOPSET_FAULT` names `point`.
#[cfg(feature = "fault-injection")]
pub fn point(point: &str) {
    if std::env::var("SHOPSET_FAULT").is_ok_and(|f| f == point) {
        tracing::error!(point, "SHOPSET_FAULT: aborting");
        std::process::abort();
    }
}

/// Whether the work at `point` must wait: `SHOPSET_FAULT` names `point` and the file named by
/// `SHOPSET_FAULT_HOLD` exists. The caller waits while this holds, so a test makes the work stall
/// and resume by creating and removing that file.
#[cfg(feature = "fault-injection")]
pub fn holds(point: &str) -> bool {
    std::env::var("SHOPSET_FAULT").is_ok_and(|f| f == point)
        && std::env::var_os("SHOPSET_FAULT_HOLD").is_some_and(|file| std::path::Path::new(&file).exists())
}

/// Without the `fault-injection` feature nothing waits.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn holds(_point: &str) -> bool {
    false
}

/// Without the `fault-injection` feature there are no fault points.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_point: &str) {}
