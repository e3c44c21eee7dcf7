//! A storm: signed webhook deliveries, app pushes and ShopSet edits at once, each paced evenly over
//! one window, against a controller on loopback. Used by the storm test and the benchmark.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::gitserver::commit_files;

/// A push event of one app repository, signed.
#[derive(Clone, Debug)]
pub struct Hook {
    pub body: String,
    /// The `X-Hub-Signature-256` value of `body`.
    pub signature: String,
}

/// An app repository pushed to during the storm.
#[derive(Clone, Debug)]
pub struct App {
    pub url: String,
    pub branch: String,
    /// Its push event, naming `url` and `branch`.
    pub hook: Hook,
}

/// What the storm does within `window`.
pub struct Plan {
    /// The controller's HTTP port (loopback).
    pub port: u16,
    pub window: Duration,
    /// Webhook deliveries in all, spread over the apps in turn. Each push is followed by one
    /// delivery of its repository, as GitHub sends it; the rest arrive evenly over the window.
    pub deliveries: usize,
    /// Threads that send deliveries.
    pub senders: usize,
    pub apps: Vec<App>,
    /// Commits pushed in all, to the apps in turn.
    pub pushes: usize,
    /// ShopSet edits in all, made by `edit(i)` for i in 0..edits.
    pub edits: usize,
    /// Threads that make edits.
    pub editors: usize,
}

/// What the storm saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Deliveries by HTTP status (0: no answer).
    pub statuses: BTreeMap<u16, usize>,
    /// Time from connecting to the whole answer, per delivery.
    pub latencies: Vec<Duration>,
    /// The last commit pushed to each app, in `Plan::apps` order.
    pub heads: Vec<String>,
    /// Edits that failed, with why.
    pub edit_errors: Vec<String>,
    /// From the start to the last delivery, push and edit.
    pub elapsed: Duration,
    /// From the start to the last delivery's answer.
    pub delivering: Duration,
}

impl Outcome {
    /// Deliveries answered with a 5xx or not at all.
    pub fn failed(&self) -> usize {
        self.statuses.iter().filter(|(code, _)| **code == 0 || **code >= 500).map(|(_, n)| n).sum()
    }

    pub fn delivered(&self) -> usize {
        self.statuses.values().sum()
    }
}

/// Runs the plan; `edit(i)` makes the i-th ShopSet edit (through the API server).
pub fn run(plan: &Plan, edit: &(dyn Fn(usize) -> Result<(), String> + Sync)) -> Outcome {
    assert!(!plan.apps.is_empty(), "a storm needs an app repository");
    assert!(plan.deliveries >= plan.pushes, "every push is followed by a delivery: deliveries >= pushes");
    let out = Mutex::new(Outcome { heads: vec![String::new(); plan.apps.len()], ..Outcome::default() });
    let start = Instant::now();
    // The `i`-th of `n` events is due at i/n of the window.
    let due = |i: usize, n: usize| start + plan.window.mul_f64(i as f64 / n.max(1) as f64);
    let wait = |at: Instant| {
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
    };
    let deliver = |app: &App| {
        let (code, took) = post(plan.port, &app.hook);
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        *out.statuses.entry(code).or_default() += 1;
        out.latencies.push(took);
        out.delivering = out.delivering.max(start.elapsed());
    };
    let background = plan.deliveries - plan.pushes;
    std::thread::scope(|s| {
        // One pusher per app: a push (clone, commit, push) takes a good part of a second.
        for (n, app) in plan.apps.iter().enumerate() {
            let (deliver, out) = (&deliver, &out);
            s.spawn(move || {
                for i in (n..plan.pushes).step_by(plan.apps.len()) {
                    wait(due(i, plan.pushes));
                    let file = format!("{i}\n");
                    let head = commit_files(&app.url, &app.branch, &[("base/STORM", &file)], &format!("storm {i}"));
                    out.lock().unwrap_or_else(|p| p.into_inner()).heads[n] = head;
                    deliver(app);
                }
            });
        }
        for t in 0..plan.senders.max(1) {
            let deliver = &deliver;
            s.spawn(move || {
                for i in (t..background).step_by(plan.senders.max(1)) {
                    wait(due(i, background));
                    deliver(&plan.apps[i % plan.apps.len()]);
                }
            });
        }
        for t in 0..plan.editors.max(1) {
            let out = &out;
            s.spawn(move || {
                for i in (t..plan.edits).step_by(plan.editors.max(1)) {
                    wait(due(i, plan.edits));
                    if let Err(e) = edit(i) {
                        out.lock().unwrap_or_else(|p| p.into_inner()).edit_errors.push(format!("edit {i}: {e}"));
                    }
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|p| p.into_inner());
    out.elapsed = start.elapsed();
    out
}

/// POSTs a push event to /hooks/github: its status (0 when nothing answered) and the time taken.
pub fn post(port: u16, hook: &Hook) -> (u16, Duration) {
    let started = Instant::now();
    let answer = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             X-GitHub-Event: push\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            hook.signature,
            hook.body.len(),
            hook.body
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    let took = started.elapsed();
    let code = answer
        .ok()
        .and_then(|a| a.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok()))
        .unwrap_or(0);
    (code, took)
}

/// The push event GitHub sends for `branch` of the repository at `url`, unsigned.
pub fn push_body(url: &str, branch: &str) -> String {
    format!(r#"{{"ref":"refs/heads/{branch}","repository":{{"clone_url":"{url}"}}}}"#)
}

/// The value at `p` (0..=1) of the sorted `samples`.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s.get(i).copied().unwrap_or_default()
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}
