//! Progress of the commands that work through many tiers or ShopSets (`sync`, `diff`, `apply`):
//! which one is being worked on and how many are left, on stderr, for a person watching a
//! terminal. Nothing is drawn when stderr is not a terminal or the output is JSON or YAML, so
//! pipes, logs and scripts only ever see the report.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Output;

/// One line on stderr, rewritten in place, cleared when the work ends (or fails).
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// Progress over `total` items; drawn only for text output with stderr on a terminal.
    pub(crate) fn new(output: Output, total: usize) -> Self {
        if output != Output::Text || !std::io::stderr().is_terminal() {
            return Self { bar: ProgressBar::hidden() };
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        // A fixed template; should it not parse, a plain spinner is still better than failing the command.
        let style = ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        // The spinner keeps turning while one item takes long (a fetch, a kustomize build).
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    /// The next item is `what` (e.g. "syncing tier-1"); says how many are left, this one included.
    pub(crate) fn start(&self, what: &str) {
        let left = self.bar.length().unwrap_or_default().saturating_sub(self.bar.position());
        self.bar.set_message(format!("{what} ({left} left)"));
    }

    /// The current item is done.
    pub(crate) fn done(&self) {
        self.bar.inc(1);
    }

    /// Runs `print` (which writes the report to stdout) with the progress line out of the way,
    /// so the two never interleave on one terminal.
    pub(crate) fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.bar.suspend(print)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
