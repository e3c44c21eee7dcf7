//! Faults the controller survives without losing or duplicating anything, against real parts:
//! a real control plane, real `git daemon`s, and the `shopset-controller` binary as a process
//! that is crashed, killed, cut off from git and from the API server, and run twice at once.
//!
//! - Crash at each step of a sync (`SHOPSET_FAULT=before-push|after-push|before-status`) and
//!   SIGKILL while a push is in flight: after a restart exactly one commit for the change.
//! - A person pushes to the system branch: their commit stays in history, the generated files
//!   are restored, the commit message and a Warning Event name the files; files outside
//!   ShopSet's paths are kept.
//! - The git server goes down: Ready=False GitUnavailable, retries back off, no Application is
//!   deleted; it comes back: converged by the next retry.
//! - kube-apiserver restarts: the watches resume, no duplicate commit.
//! - Two replicas: only the Lease holder writes; SIGKILL of the holder hands over in time.
//!
//! Needs `e2e/install-tools` and `cargo build --workspace`. The tests share one control plane
//! (each has its own namespaces, git daemon and controller); `SHOPSET_E2E_KEEP=1` keeps the
//! directories.

mod support;

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shopset_e2e::gitserver::{GitDaemon, branch_head, commit_files, git};
use shopset_e2e::tools::{path_env, workspace_bin};
use support::*;

/// Number of tests in this file (the last one to finish stops the shared control plane).
const TESTS: usize = 8;
/// The tier's poll interval in most tests.
const INTERVAL: Duration = Duration::from_secs(3);
/// Generous bound for a first sync on a loaded machine.
const FIRST_SYNC: Duration = Duration::from_secs(90);

/// A test's world: its git daemon, repositories, manifests and a controller for its namespace.
struct World {
    // Fields drop in order: the controller stops before the git server and the control plane.
    ctl: Controller,
    daemon: GitDaemon,
    s: Setup,
    /// The app commit tier-0 starts at (the app repository's `main`).
    app0: String,
    cp: Plane,
}

impl World {
    /// Sets everything up, starts the controller as `identity`, applies the manifests and waits
    /// for the first sync.
    fn start(cp: Plane, ns: &str, opts: TierOptions, run: &Run) -> World {
        let daemon = GitDaemon::start();
        let s = Setup::on_daemon(&cp, &daemon, ns, &opts);
        // Applied first: a controller already running could render the Tier before its
        // ShopSets exist (two commits, both right).
        s.apply(&cp);
        let mut ctl = Controller::new(&cp, s.work.path(), &s.ns, "controller");
        ctl.start(run);
        let app0 = branch_head(&s.app_url, "main").expect("app main");
        let w = World { cp, daemon, s, ctl, app0 };
        w.converged(&w.app0.clone(), FIRST_SYNC);
        let first = w.s.system_log();
        assert_eq!(first.len(), 1, "one first-render commit: {first:?}");
        w
    }

    fn system_repo(&self) -> std::path::PathBuf {
        self.daemon.path("shop-system")
    }

    fn converged(&self, app: &str, timeout: Duration) {
        wait_converged(&self.cp, &self.s, &self.system_repo(), app, timeout, &self.ctl);
    }

    fn head(&self) -> String {
        branch_head(&self.s.system_url, TIER).expect("system branch")
    }

    /// A developer's commit on the app repository's tier-0 branch.
    fn app_change(&self, what: &str) -> String {
        commit_files(&self.s.app_url, TIER, &[("base/CHANGELOG.md", &format!("{what}\n"))], what)
    }
}

/// The one commit a change must leave: on top of `before`, pinning `app` with a message saying so.
fn assert_one_commit(before: &[(String, String)], after: &[(String, String)], from: &str, to: &str) {
    assert_eq!(after.len(), before.len() + 1, "exactly one new commit:\nbefore {before:#?}\nafter {after:#?}");
    assert_eq!(after[1..], before[..], "the new commit sits on the previous head");
    let line = format!("app: {} -> {} (1 commit)", short(from), short(to));
    assert!(after[0].1.contains(&line), "the commit says {line:?}: {after:?}");
}

// ---------------------------------------------------------------------------------------------
// 1. Crash at each step of a sync

fn crash_at(point: &str) {
    let test = format!("crash {point}");
    let run = Run::new(&format!("{point}-replica"));
    let mut w = World::start(Plane::shared(TESTS), &format!("faults-{point}"), TierOptions::default(), &run);
    phase(&test, "first sync done");
    let before = w.s.system_log();
    let head0 = before[0].0.clone();

    // The same replica (a container restarting in its pod keeps its name) runs with the fault
    // and passes the fault point while there is nothing to push.
    w.ctl.stop();
    w.ctl.start(&run.clone().fault(point));
    w.ctl.wait_for_reconciles(1, Duration::from_secs(30));
    assert!(w.ctl.running(), "a sync with nothing to push passes the fault point:\n{}", w.ctl.log_since_start());

    // A change arrives: the sync of it aborts at the fault point.
    let app1 = w.app_change(&format!("change before a crash at {point}"));
    let status = w.ctl.wait_exit(INTERVAL + Duration::from_secs(45));
    assert!(abnormal(status) && status.signal() == Some(6), "aborted (SIGABRT) at {point}, not {status}");
    let crash_log = w.ctl.log_since_start();
    assert!(crash_log.contains("SHOPSET_FAULT: aborting") && crash_log.contains(point), "{crash_log}");
    phase(&test, "aborted");

    // What the crash left.
    let at_crash = w.head();
    let (app_status, _) = w.s.status_commits(&w.cp);
    assert_eq!(app_status, w.app0, "the status still shows the old app commit after a crash at {point}");
    match point {
        "before-push" => assert_eq!(at_crash, head0, "nothing was pushed before the crash"),
        _ => {
            assert_ne!(at_crash, head0, "the commit was pushed before the crash at {point}");
            assert_eq!(gitlink(&w.system_repo(), TIER, "base"), app1);
        }
    }
    assert_eq!(w.s.applications(&w.cp), SHOPSETS, "the Applications are still there");

    // Restarted without the fault: converged, with exactly one commit for the change.
    w.ctl.start(&run);
    w.converged(&app1, Duration::from_secs(60));
    phase(&test, "converged after restart");
    w.ctl.wait_for_reconciles(2, INTERVAL * 6);
    let after = w.s.system_log();
    assert_one_commit(&before, &after, &w.app0, &app1);
    let pushes = w.ctl.pushes();
    if point == "before-push" {
        assert_eq!(pushes, 1.0, "the restarted controller pushed the lost commit again");
    } else {
        assert_eq!(after[0].0, at_crash, "the commit pushed before the crash is the one kept");
        assert_eq!(pushes, 0.0, "nothing pushed again after a crash at {point}");
    }
    let tree = git(&w.system_repo(), &["ls-tree", &after[0].0, "base"]);
    assert_eq!(tree, format!("160000 commit {app1}\tbase"), "the new app gitlink");
    w.ctl.stop();
}

#[test]
fn crash_before_push_converges_with_one_commit() {
    crash_at("before-push");
}

#[test]
fn crash_after_push_converges_with_one_commit() {
    crash_at("after-push");
}

#[test]
fn crash_before_status_converges_with_one_commit() {
    crash_at("before-status");
}

/// SIGKILL while the system push is in flight: a `pre-receive` hook holds it for 3 s.
#[test]
fn kill_during_push_converges_with_one_commit() {
    let test = "kill during push";
    let run = Run::new("in-flight-replica");
    let mut w = World::start(Plane::shared(TESTS), "faults-in-flight", TierOptions::default(), &run);
    phase(test, "first sync done");
    let before = w.s.system_log();
    let head0 = before[0].0.clone();

    let marks = w.s.work.path().join("hook");
    std::fs::create_dir_all(&marks).expect("create hook marks dir");
    let hook = w.system_repo().join("hooks").join("pre-receive");
    let m = marks.display();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh
cat >/dev/null
if [ -e '{m}/armed' ]; then
  rm -f '{m}/armed'
  touch '{m}/started'
  sleep 3
  touch '{m}/finished'
fi
exit 0
"
        ),
    )
    .expect("write pre-receive hook");
    let chmod = Command::new("chmod").arg("755").arg(&hook).status().expect("chmod");
    assert!(chmod.success());
    std::fs::write(marks.join("armed"), "").expect("arm the hook");

    let app1 = w.app_change("change pushed while the controller dies");
    let deadline = Instant::now() + INTERVAL + Duration::from_secs(45);
    while !marks.join("started").exists() {
        assert!(Instant::now() < deadline, "the push never reached the hook:\n{}", w.ctl.log_since_start());
        std::thread::sleep(Duration::from_millis(20));
    }
    w.ctl.kill();
    assert!(!marks.join("finished").exists(), "the controller was killed while its push was in flight");
    phase(test, "killed during the push");

    w.ctl.start(&run);
    w.converged(&app1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marks.join("finished").exists() {
        assert!(Instant::now() < deadline, "the hook never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    w.ctl.wait_for_reconciles(2, INTERVAL * 6);
    let after = w.s.system_log();
    assert_one_commit(&before, &after, &w.app0, &app1);
    assert_eq!(git(&w.system_repo(), &["rev-parse", &format!("{}^", after[0].0)]), head0);
    let log = w.ctl.log_since_start();
    eprintln!(
        "kill during push: the killed push {}",
        if log.contains("pushed system branch") {
            "did not land; the restarted controller pushed it again"
        } else {
            "landed; the restarted controller found the branch up to date"
        }
    );
    w.ctl.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. A person pushes to the system branch

#[test]
fn hand_pushed_commits_stay_in_history_and_generated_files_are_restored() {
    let test = "hand push";
    let w =
        World::start(Plane::shared(TESTS), "faults-hand-push", TierOptions::default(), &Run::new("hand-push-replica"));
    phase(test, "first sync done");
    let repo = w.system_repo();
    let head0 = w.head();
    let tree0 = git(&repo, &["rev-parse", &format!("{head0}^{{tree}}")]);

    // (a) A generated file edited by hand.
    let path = "shopsets/canary-eu/kustomization.yaml";
    let original = git(&repo, &["show", &format!("{TIER}:{path}")]) + "\n";
    let theirs = commit_files(
        &w.s.system_url,
        TIER,
        &[(path, &format!("{original}# scaled up by hand during an incident\n"))],
        "canary-eu: hand edit",
    );
    let restored =
        wait_until("the controller to restore the generated file", INTERVAL + Duration::from_secs(30), &w.ctl, || {
            let head = w.head();
            (head != theirs).then_some(head)
        });
    check_restored(&w, &repo, &theirs, &restored, &tree0, path);
    assert_eq!(
        git(&repo, &["show", &format!("{restored}:{path}")]) + "\n",
        original,
        "the file's content before the edit"
    );
    let message = git(&repo, &["log", "-1", "--format=%B", &restored]);
    assert!(!message.contains("shopsets changed"), "no ShopSet changed, a file was restored:\n{message}");
    phase(test, "generated file restored");

    // (b) Files a person keeps outside ShopSet's paths: every sync keeps them. The next app change
    // is committed right on top of them, and they stay byte for byte.
    let kept = [("NOTES.md", "on call this week: ana\n"), (".github/CODEOWNERS", "* @acme/platform\n")];
    let theirs2 = commit_files(&w.s.system_url, TIER, &kept, "notes and owners, by hand");
    let app1 = w.app_change("a change after the notes");
    w.converged(&app1, INTERVAL + Duration::from_secs(30));
    let head = w.head();
    assert_eq!(git(&repo, &["rev-parse", &format!("{head}^")]), theirs2, "built directly on the person's commit");
    assert!(is_ancestor(&repo, &theirs, &head), "the first hand-made commit is still in history");
    for (path, content) in kept {
        // `git` trims the output: each file ends with one newline.
        assert_eq!(git(&repo, &["show", &format!("{head}:{path}")]) + "\n", content, "{path} kept byte for byte");
    }
    let message = git(&repo, &["log", "-1", "--format=%B", &head]);
    assert!(!message.contains("NOTES.md") && !message.contains("CODEOWNERS"), "{message}");
    assert_eq!(w.s.system_log().len(), 5, "render, hand edit, restore, hand-kept files, app change");
    phase(test, "files outside ShopSet's paths kept");

    // A fresh render (`shopctl sync --dry-run`) has nothing to change.
    let out = Command::new(workspace_bin("shopctl"))
        .arg("--cache-dir")
        .arg(w.s.work.path().join("shopctl-cache"))
        .args(["--color", "never", "sync", "--dry-run", "--tier", TIER, "-f"])
        .arg(&w.s.manifests)
        .env("PATH", path_env())
        .output()
        .expect("run shopctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "shopctl sync --dry-run: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("no change: the system branch is up to date") && !stdout.contains("would commit"),
        "a fresh render equals the branch:\n{stdout}"
    );
}

/// `restored` is one commit on top of the hand-made `theirs`, its tree the render `tree0`, its
/// message ("restored: `path`") and a Warning Event on the Tier name `path`.
fn check_restored(w: &World, repo: &Path, theirs: &str, restored: &str, tree0: &str, path: &str) {
    assert!(is_ancestor(repo, theirs, restored), "the person's commit {theirs} stays in history");
    assert_eq!(git(repo, &["rev-parse", &format!("{restored}^")]), theirs, "built directly on the person's commit");
    assert_eq!(git(repo, &["rev-parse", &format!("{restored}^{{tree}}")]), tree0, "the tree is the render again");
    let message = git(repo, &["log", "-1", "--format=%B", restored]);
    assert!(message.lines().any(|l| l == format!("restored: {path}")), "the message names {path}:\n{message}");
    let events = wait_until("a GeneratedFilesRestored Event", Duration::from_secs(20), &w.ctl, || {
        let out = w.cp.kubectl_ok([
            "get",
            "events",
            "-n",
            &w.s.ns,
            "--field-selector",
            &format!("involvedObject.kind=Tier,involvedObject.name={TIER},reason=GeneratedFilesRestored"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ]);
        out.lines().any(|l| l.contains(path)).then_some(out)
    });
    assert!(events.lines().all(|l| l.starts_with("Warning GeneratedFilesRestored: ")), "{events}");
}

// ---------------------------------------------------------------------------------------------
// 3. The git server goes down

#[test]
fn git_server_down_backs_off_and_recovers_without_deleting_anything() {
    let test = "git down";
    let mut w =
        World::start(Plane::shared(TESTS), "faults-git-down", TierOptions::default(), &Run::new("git-down-replica"));
    phase(test, "first sync done");
    let before = w.s.system_log();
    let apps = w.s.applications(&w.cp);
    assert_eq!(apps, SHOPSETS);
    let app_repo = w.daemon.path("shop-app");
    let port = w.daemon.port();

    w.daemon.stop();
    let down = Instant::now();
    let (_, reason, message) = wait_until("Ready=False", INTERVAL + Duration::from_secs(30), &w.ctl, || {
        let r = w.s.ready(&w.cp);
        (r.0 == "False").then_some(r)
    });
    assert_eq!(reason, "GitUnavailable", "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}"))
            && message.contains("is unreachable: ")
            && !message.contains("unreachable: ;"),
        "the message names the repository and git's error: {message}"
    );
    phase(test, &format!("Ready=False GitUnavailable after {:.1?}: {message}", down.elapsed()));

    // Retries back off: watch the error counter until two failures are at least 8 s apart
    // (the first step is 5 s; a status change may add one immediate retry).
    let mut seen = vec![];
    let mut count = w.ctl.errors("GitUnavailable");
    let first = count;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let n = w.ctl.errors("GitUnavailable");
        if n > count {
            seen.push(Instant::now());
            count = n;
            if seen.len() >= 2 && seen[seen.len() - 1] - seen[seen.len() - 2] >= Duration::from_secs(8) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no failure 8 s after the previous one: retries at {seen:?} (errors {count})\n{}",
            w.ctl.log_since_start()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let gaps: Vec<Duration> = seen.windows(2).map(|p| p[1] - p[0]).collect();
    let last_gap = *gaps.last().expect("two retries seen");
    let window = down.elapsed();
    eprintln!("git down: {first} failures before watching, then retries {gaps:.1?} apart; {count} in {window:.1?}");
    // Retrying every second would have failed more than 10 times by now.
    assert!(window >= Duration::from_secs(10) && count <= 5.0, "few retries while git is down: {count} in {window:?}");
    assert!(gaps.iter().skip(1).all(|g| *g >= Duration::from_secs(4)), "retries slower than one a second: {gaps:?}");
    let failed_lines = w
        .ctl
        .log_since_start()
        .lines()
        .filter(|l| l.contains("reconcile failed") && l.contains("GitUnavailable"))
        .count();
    assert!(
        failed_lines >= 1 && failed_lines as f64 <= count,
        "one log line per failure: {failed_lines} lines, {count} failures"
    );
    assert!(w.ctl.running());
    assert_eq!(w.s.applications(&w.cp), apps, "no Application is deleted while git is down");
    assert_eq!(w.s.ready(&w.cp).1, "GitUnavailable");
    let warnings = w.cp.kubectl_ok([
        "get",
        "events",
        "-n",
        &w.s.ns,
        "--field-selector",
        &format!("involvedObject.name={TIER},reason=GitUnavailable"),
        "-o",
        "jsonpath={.items[*].type}",
    ]);
    assert!(warnings.contains("Warning"), "a Warning Event says why: {warnings:?}");
    phase(test, &format!("backing off: last gap {last_gap:.1?}"));

    // A commit lands while the server is down (straight into its repository), then it is back.
    let app1 =
        commit_files(path_str(&app_repo), TIER, &[("base/CHANGELOG.md", "while git was down\n")], "while git was down");
    w.daemon.restart();
    let up = Instant::now();
    // The next retry is at most twice the last gap away (the backoff doubles, capped at 5 min).
    w.converged(&app1, INTERVAL + last_gap * 2 + Duration::from_secs(15));
    phase(test, &format!("converged {:.1?} after git came back", up.elapsed()));
    assert_eq!(w.s.ready(&w.cp).1, "Synced");
    assert_eq!(w.s.applications(&w.cp), apps);
    assert_one_commit(&before, &w.s.system_log(), &w.app0, &app1);
    w.ctl.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. kube-apiserver restarts

#[test]
fn apiserver_restart_resumes_watches_without_duplicate_commits() {
    let test = "apiserver restart";
    // Polling hourly: only a watch can bring the ShopSet added after the restart. The Lease
    // outlasts the restart, so the same process carries on (a shorter one would make it stop,
    // as it should, and its Deployment would restart it).
    let opts = TierOptions { interval: "1h".into(), ..TierOptions::default() };
    let mut w =
        World::start(Plane::exclusive(TESTS), "faults-apiserver", opts, &Run::new("apiserver-replica").lease("90s"));
    phase(test, "first sync done");
    std::thread::sleep(Duration::from_secs(2));
    let before = w.s.system_log();

    let restart = Instant::now();
    w.cp.restart_apiserver();
    phase(test, &format!("kube-apiserver restarted in {:.1?}", restart.elapsed()));
    assert!(w.ctl.running(), "the controller survives an API server restart:\n{}", w.ctl.log_since_start());
    assert_eq!(w.s.system_log(), before, "no commit from the restart");

    let added = Instant::now();
    w.cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &shopset_yaml(&w.s.ns, "late-add"));
    let head =
        wait_until("the ShopSet added after the restart to be rendered", Duration::from_secs(90), &w.ctl, || {
            let log = w.s.system_log();
            (log.len() > before.len()).then_some(log)
        });
    phase(test, &format!("ShopSet rendered {:.1?} after it was added", added.elapsed()));
    assert_eq!(head.len(), before.len() + 1, "{head:#?}");
    assert_eq!(head[1..], before[..]);
    assert!(head[0].1.contains("shopsets added: late-add"), "{head:?}");
    wait_until("Application late-add", Duration::from_secs(30), &w.ctl, || {
        w.s.applications(&w.cp).contains(&"late-add".to_string()).then_some(())
    });
    wait_until("Tier Ready at the new head", Duration::from_secs(30), &w.ctl, || {
        let (status, system) = (w.s.ready(&w.cp).0, w.s.status_commits(&w.cp).1);
        (status == "True" && system == head[0].0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.s.system_log(), head, "no duplicate commit");
    assert!(w.ctl.running());
    w.ctl.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. Two replicas

#[test]
fn only_the_lease_holder_writes_and_a_killed_holder_hands_over() {
    let test = "replicas";
    let lease = Duration::from_secs(6);
    let mut w = World::start(
        Plane::shared(TESTS),
        "faults-replicas",
        TierOptions::default(),
        &Run::new("replica-a").lease("6s"),
    );
    phase(test, "replica-a synced");
    let before = w.s.system_log();
    let holder = |w: &World| {
        w.cp.kubectl_ok(["get", "lease", "shopset-controller", "-n", &w.s.ns, "-o", "jsonpath={.spec.holderIdentity}"])
    };
    assert_eq!(holder(&w), "replica-a");

    let mut b = Controller::new(&w.cp, w.s.work.path(), &w.s.ns, "replica-b");
    b.start(&Run::new("replica-b").lease("6s"));
    wait_until("replica-b to say it waits", Duration::from_secs(20), &b, || {
        b.log_since_start().contains("another replica holds the Lease; waiting").then_some(())
    });

    // A change: replica-a alone writes it.
    let app1 = w.app_change("change while two replicas run");
    w.converged(&app1, INTERVAL + Duration::from_secs(30));
    w.ctl.wait_for_reconciles(2, INTERVAL * 6);
    let after1 = w.s.system_log();
    assert_one_commit(&before, &after1, &w.app0, &app1);
    let b_log = b.log_since_start();
    assert!(
        !b_log.contains("became leader") && !b_log.contains("pushed system branch"),
        "replica-b did nothing:\n{b_log}"
    );
    assert_eq!((b.reconciles(), b.pushes()), (0.0, 0.0), "replica-b reconciled nothing");
    assert_eq!(holder(&w), "replica-a");
    phase(test, "only replica-a wrote");

    // The holder dies without releasing the Lease; a change arrives meanwhile.
    w.ctl.kill();
    let killed = Instant::now();
    let app2 = w.app_change("change after the leader died");
    wait_until("replica-b to take over", lease * 3, &b, || b.log_since_start().contains("became leader").then_some(()));
    let took = killed.elapsed();
    phase(test, &format!("replica-b leads {took:.1?} after replica-a was killed"));
    // Expiry (at most the lease duration after the last renewal) plus one retry period of
    // replica-b (a third of it), with slack for a loaded machine.
    assert!(took <= lease + lease / 3 + Duration::from_secs(3), "hand-over took {took:?}");
    assert!(b.log_since_start().contains("taking over the expired lease"));
    assert_eq!(holder(&w), "replica-b");

    wait_converged(&w.cp, &w.s, &w.system_repo(), &app2, INTERVAL + Duration::from_secs(30), &b);
    b.wait_for_reconciles(2, INTERVAL * 6);
    let after2 = w.s.system_log();
    assert_one_commit(&after1, &after2, &app1, &app2);
    assert_eq!(b.pushes(), 1.0);
    b.stop();
}
