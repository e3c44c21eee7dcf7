//! Fault-injection points for the crash tests: with `SHOPSET_FAULT=<point>` in the environment, the
//! process aborts at that point (as a SIGKILL would stop it). The points exist only in builds with
//! the `fault-injection` feature, which the test commands enable and a release build does not.
//!
//! Points of a sync that pushes a change: `before-push` (commit written, not pushed), `after-push`
//! (pushed, Applications not applied), `before-status` (applied, status not written).

/// Aborts the process when `SHOPSET_FAULT` names `point`.
#[cfg(feature = "fault-injection")]
pub fn point(point: &str) {
    if std::env::var("SHOPSET_FAULT").is_ok_and(|f| f == point) {
        tracing::error!(point, "SHOPSET_FAULT: aborting");
        std::process::abort();
    }
}

/// Without the `fault-injection` feature there are no fault points.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_point: &str) {}
