//! The controller fails closed on every failure, not only when git is down: it deletes no
//! Application and writes no commit, and the Tier's Ready condition says why. Each test counts
//! the Applications (names, uids, paths) and reads the system branch before and after, against a
//! real control plane, real `git daemon`s and the `shopset-controller` binary:
//!
//! - a Configuration's path vanished from its repository;
//! - a user's template override (`--templates`) fails to render;
//! - the API server refuses to list ShopSets (the ServiceAccount's ClusterRole loses them at run
//!   time);
//! - the API server answers 500 (`etcdserver: leader changed`) to lists of ShopSets, while the
//!   controller runs and while it starts (through [`FaultyApi`], the real API server behind a
//!   front that fails on cue); `shopctl status` and `doctor` say the server's words too;
//! - the Tier's credentials Secret is deleted mid-run;
//! - the system branch moves under every push (a writer that wins every race).
//!
//! And disaster recovery: the system repository is lost (deleted and re-created empty); the
//! controller rebuilds the tier branch with the same tree for the same pins, and the
//! Applications are the same objects.
//!
//! Needs `e2e/install-tools` and `cargo build --workspace`. `SHOPSET_E2E_KEEP=1` keeps the
//! directories.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::faulty_api::{FaultyApi, LEADER_CHANGED};
use shopset_e2e::gitserver::{GitDaemon, branch_head, commit_files, git};
use shopset_e2e::tools::{kubectl, path_env, repo_root, workspace_bin};
use support::*;

/// Number of tests in this file (the last one to finish stops the shared control plane).
const TESTS: usize = 9;
const INTERVAL: Duration = Duration::from_secs(3);
const FIRST_SYNC: Duration = Duration::from_secs(90);
/// Bound for a failure to show in the Tier's status after its cause, on a loaded machine.
const NOTICED: Duration = Duration::from_secs(60);

struct World {
    // Fields drop in order: the controller stops before the git server and the control plane.
    ctl: Controller,
    daemon: GitDaemon,
    s: Setup,
    app0: String,
    cp: Plane,
}

impl World {
    fn start(cp: Plane, ns: &str, opts: TierOptions, run: &Run) -> World {
        World::start_with(cp, ns, opts, run, |_, _, ctl| ctl)
    }

    /// As [`World::start`], with `prepare` run after the namespaces exist and before the
    /// manifests are applied; it may change how the controller talks to the API server.
    fn start_with(
        cp: Plane,
        ns: &str,
        opts: TierOptions,
        run: &Run,
        prepare: impl FnOnce(&ControlPlane, &Setup, Controller) -> Controller,
    ) -> World {
        let daemon = GitDaemon::start();
        let s = Setup::on_daemon(&cp, &daemon, ns, &opts);
        let ctl = prepare(&cp, &s, Controller::new(&cp, s.work.path(), &s.ns, "controller"));
        s.apply(&cp);
        let mut ctl = ctl;
        ctl.start(run);
        let app0 = branch_head(&s.app_url, "main").expect("app main");
        let w = World { cp, daemon, s, ctl, app0 };
        w.converged(&w.app0.clone(), FIRST_SYNC);
        w
    }

    fn system_repo(&self) -> PathBuf {
        self.daemon.path("shop-system")
    }

    fn converged(&self, app: &str, timeout: Duration) {
        wait_converged(&self.cp, &self.s, &self.system_repo(), app, timeout, &self.ctl);
    }

    fn app_change(&self, what: &str) -> String {
        commit_files(&self.s.app_url, TIER, &[("base/CHANGELOG.md", &format!("{what}\n"))], what)
    }

    /// The Tier's Applications: name, uid and source path, one a line, sorted.
    fn applications(&self) -> Vec<String> {
        let out = self.cp.kubectl_ok([
            "get",
            "applications.argoproj.io",
            "-n",
            &self.s.argocd_ns,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.spec.source.path}{\"\\n\"}{end}",
        ]);
        let mut apps: Vec<String> = out.lines().map(str::to_string).collect();
        apps.sort();
        apps
    }

    /// What must not change while the controller fails.
    fn snapshot(&self) -> Snapshot {
        let apps = self.applications();
        assert_eq!(apps.len(), SHOPSETS.len(), "one Application per ShopSet: {apps:?}");
        Snapshot { apps, log: self.s.system_log(), status_system: self.s.status_commits(&self.cp).1 }
    }

    /// Waits until the Tier is Ready=False with `reason`, lets the controller try again (a
    /// retry after the backoff, or for a terminal error a poll's worth of time), then checks
    /// that nothing was deleted or committed and that the message says each of `says`.
    fn fails_closed(&self, test: &str, before: &Snapshot, reason: &str, retried: bool, says: &[&str]) -> String {
        let (_, got, message) = wait_until(&format!("Ready=False {reason}"), NOTICED, &self.ctl, || {
            let r = self.s.ready(&self.cp);
            (r.0 == "False" && r.1 == reason).then_some(r)
        });
        assert_eq!(got, reason);
        phase(test, &format!("Ready=False {reason}: {message}"));
        if retried {
            // Transient: retried with backoff (5 s first); the retry fails the same way.
            let failures = self.ctl.errors(reason);
            wait_until("a retry that fails the same way", Duration::from_secs(45), &self.ctl, || {
                (self.ctl.errors(reason) >= (failures + 1.0).max(2.0)).then_some(())
            });
        } else {
            // A terminal error waits for a change of the input; give a poll or two for anything
            // to go wrong meanwhile.
            std::thread::sleep(INTERVAL * 2);
        }
        for part in says {
            assert!(message.contains(part), "the Ready message says {part:?}: {message}");
        }
        self.assert_untouched(before);
        assert!(self.ctl.running(), "{}", self.ctl.log_since_start());
        message
    }

    fn assert_untouched(&self, before: &Snapshot) {
        assert_eq!(self.applications(), before.apps, "the same Applications (names, uids, paths): none deleted");
        assert_eq!(self.s.system_log(), before.log, "no commit on the system branch");
        assert_eq!(self.s.status_commits(&self.cp).1, before.status_system, "status.systemCommit unchanged");
    }
}

struct Snapshot {
    apps: Vec<String>,
    log: Vec<(String, String)>,
    status_system: String,
}

/// A commit on `branch` of `url` that removes `path`.
fn remove_path(url: &str, branch: &str, path: &str, message: &str, work: &Path) -> String {
    let dir = work.join(format!("rm-{}", path.replace('/', "-")));
    let _ = fs::remove_dir_all(&dir);
    git(work, &["clone", "--quiet", "--branch", branch, url, dir.to_str().expect("utf-8 path")]);
    git(&dir, &["rm", "-r", "--quiet", path]);
    git(&dir, &["-c", "user.name=e2e", "-c", "user.email=e2e@127.0.0.1", "commit", "--quiet", "-m", message]);
    git(&dir, &["push", "--quiet", "origin", branch]);
    git(&dir, &["rev-parse", "HEAD"])
}

fn write_hook(repo: &Path, name: &str, script: &str) {
    let hook = repo.join("hooks").join(name);
    fs::write(&hook, script).expect("write hook");
    let chmod = Command::new("chmod").arg("755").arg(&hook).status().expect("chmod");
    assert!(chmod.success());
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_configuration_path_that_vanished_fails_closed() {
    let test = "path vanished";
    let w = World::start(Plane::shared(TESTS), "closed-path", TierOptions::default(), &Run::new("path-replica"));
    let before = w.snapshot();
    let gone = remove_path(&w.s.config_url, TIER, "component", "component moved away", w.s.work.path());
    phase(test, &format!("component/ removed at {}", short(&gone)));
    w.fails_closed(
        test,
        &before,
        "InvalidSpec",
        true,
        &[
            "Tier/tier-0",
            "Configuration/shop-config",
            "\"component\" holds no kustomization.yaml",
            short(&gone),
            "fix: ",
        ],
    );
    // Put back: converged again, nothing lost on the way.
    git(&w.daemon.path("shop-config"), &["update-ref", &format!("refs/heads/{TIER}"), &format!("{gone}^"), &gone]);
    w.converged(&w.app0, Duration::from_secs(60));
    assert_eq!(w.applications(), before.apps, "the same Application objects after the fix");
    assert_eq!(w.s.system_log(), before.log, "the same render as before: no commit");
}

#[test]
fn a_template_override_that_fails_to_render_fails_closed() {
    let test = "template override";
    let run = Run::new("template-replica");
    let mut w = World::start(Plane::shared(TESTS), "closed-template", TierOptions::default(), &run);
    let before = w.snapshot();
    // A user's override of the Application template naming a variable the renderer does not
    // give: it compiles (the controller starts) and fails at render.
    let dir = w.s.work.path().join("templates");
    fs::create_dir_all(&dir).expect("create templates dir");
    let original = fs::read_to_string(repo_root().join("templates/application.yaml")).expect("read template");
    fs::write(dir.join("application.yaml"), format!("{original}# owner: {{{{ owner_team }}}}\n"))
        .expect("write override");
    w.ctl.stop();
    w.ctl.start(&run.clone().templates(&dir));
    let app1 = w.app_change("a change rendered with the broken override");
    phase(test, "restarted with the override, app changed");
    w.fails_closed(
        test,
        &before,
        "RenderFailed",
        false,
        &["application.yaml", &dir.join("application.yaml").display().to_string(), "owner_team"],
    );
    w.ctl.stop();
    w.ctl.start(&run);
    w.converged(&app1, Duration::from_secs(60));
    assert_eq!(w.applications(), before.apps, "the same Application objects after the fix");
    assert_eq!(w.s.system_log().len(), before.log.len() + 1, "one commit: the app change");
}

#[test]
fn a_shopset_list_refused_at_run_time_fails_closed() {
    let test = "rbac removed";
    let ns = "closed-rbac";
    let role = format!("{ns}-controller");
    let rbac = fs::read_to_string(repo_root().join("deploy/rbac.yaml")).expect("read deploy/rbac.yaml");
    // The controller's own ClusterRole, as deploy/ ships it, under a name of this test's.
    let cluster_role = rbac
        .split("\n---\n")
        .next()
        .expect("the first document")
        .replace("\n  name: shopset-controller\n", &format!("\n  name: {role}\n"));
    assert!(cluster_role.contains(&format!("name: {role}")) && cluster_role.contains("kind: ClusterRole"));
    let read = "  resources: [shopsets, configurations]\n  verbs: [get, list, watch]\n";
    assert!(cluster_role.contains(read), "deploy/rbac.yaml grants reading ShopSets so: {cluster_role}");
    let without_shopsets = cluster_role.replace(read, "  resources: [configurations]\n  verbs: [get, list, watch]\n");
    let sa = format!("system:serviceaccount:{ns}:shopset-controller");

    let run = Run::new("rbac-replica");
    let w = World::start_with(Plane::shared(TESTS), ns, TierOptions::default(), &run, |cp, s, ctl| {
        cp.kubectl_ok(["create", "serviceaccount", "shopset-controller", "-n", &s.ns]);
        cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &cluster_role);
        cp.kubectl_ok([
            "create",
            "clusterrolebinding",
            &role,
            &format!("--clusterrole={role}"),
            &format!("--serviceaccount={}:shopset-controller", s.ns),
        ]);
        // Its Lease, in the watched namespace (as deploy/'s leader-election Role, there).
        cp.kubectl_ok(["create", "role", "leases", "-n", &s.ns, "--verb=get,create,update", "--resource=leases"]);
        cp.kubectl_ok([
            "create",
            "rolebinding",
            "leases",
            "-n",
            &s.ns,
            "--role=leases",
            &format!("--serviceaccount={}:shopset-controller", s.ns),
        ]);
        let token = cp.kubectl_ok(["create", "token", "shopset-controller", "-n", &s.ns, "--duration=1h"]);
        let path = s.work.path().join("controller.kubeconfig");
        fs::copy(cp.kubeconfig(), &path).expect("copy kubeconfig");
        let config = |args: &[&str]| run_ok(Command::new(kubectl()).arg("--kubeconfig").arg(&path).args(args));
        config(&["config", "set-credentials", "shopset-controller", &format!("--token={}", token.trim())]);
        config(&["config", "set-context", "--current", "--user=shopset-controller"]);
        config(&["config", "delete-user", "admin"]);
        let me = config(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
        assert_eq!(me, sa, "the controller runs as the ServiceAccount");
        ctl.with_kubeconfig(&path)
    });
    let before = w.snapshot();
    let can_list = || {
        let out = w.cp.kubectl(["auth", "can-i", "list", "shopsets.shopset.dev", "-n", ns, &format!("--as={sa}")]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can_list());

    w.cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &without_shopsets);
    wait_until("the API server to refuse the list", Duration::from_secs(30), &w.ctl, || (!can_list()).then_some(()));
    let app1 = w.app_change("a change while ShopSets cannot be listed");
    phase(test, "list of ShopSets refused, app changed");
    w.fails_closed(
        test,
        &before,
        "KubernetesUnavailable",
        true,
        &[
            &format!("cannot list ShopSets in namespace {ns}"),
            "forbidden",
            "fix: grant the controller's ServiceAccount get, list and watch on shopsets.shopset.dev",
        ],
    );

    w.cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &cluster_role);
    w.converged(&app1, Duration::from_secs(60));
    assert_eq!(w.applications(), before.apps, "the same Application objects after the fix");
    w.cp.kubectl_ok(["delete", "clusterrolebinding", &role]);
    w.cp.kubectl_ok(["delete", "clusterrole", &role]);
}

#[test]
fn a_credentials_secret_deleted_mid_run_fails_closed() {
    let test = "credentials deleted";
    let secret = "git-credentials";
    let manifest = |ns: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n  namespace: {ns}\ntype: Opaque\n\
             stringData:\n  username: shop\n  password: not-needed-by-git-daemon\n"
        )
    };
    let opts = TierOptions { credentials: Some(secret.into()), ..TierOptions::default() };
    let w = World::start_with(Plane::shared(TESTS), "closed-creds", opts, &Run::new("creds-replica"), |cp, s, ctl| {
        cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &manifest(&s.ns));
        ctl
    });
    let before = w.snapshot();
    w.cp.kubectl_ok(["delete", "secret", secret, "-n", &w.s.ns]);
    let app1 = w.app_change("a change after the credentials were deleted");
    phase(test, "Secret deleted, app changed");
    let secret_ref = format!("Secret {}/{secret} named by spec.credentials.secretRef does not exist", w.s.ns);
    w.fails_closed(test, &before, "CredentialsMissing", true, &[&secret_ref, "fix: create it in namespace"]);

    w.cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &manifest(&w.s.ns));
    w.converged(&app1, Duration::from_secs(60));
    assert_eq!(w.applications(), before.apps, "the same Application objects after the fix");
}

/// A writer that wins every race: a `pre-receive` hook moves the system branch after git
/// advertised it to the controller and before the controller's update lands, as a second writer
/// pushing at that moment would. git refuses the controller's update each time.
#[test]
fn a_system_branch_that_moves_under_every_push_fails_closed() {
    let test = "racing writer";
    let w = World::start(Plane::shared(TESTS), "closed-race", TierOptions::default(), &Run::new("race-replica"));
    let before = w.snapshot();
    let repo = w.system_repo();
    let head0 = before.log[0].0.clone();
    let tree0 = git(&repo, &["rev-parse", &format!("{head0}^{{tree}}")]);
    let marks = w.s.work.path().join("race");
    fs::create_dir_all(&marks).expect("create marks dir");
    let m = marks.display();
    write_hook(
        &repo,
        "pre-receive",
        &format!(
            "#!/bin/sh
while read old new ref; do
  [ \"$ref\" = refs/heads/{TIER} ] && [ -e '{m}/armed' ] || continue
  # Outside the push's quarantine: a ref update of its own, as another pusher's.
  unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
  export GIT_AUTHOR_NAME=racer GIT_AUTHOR_EMAIL=racer@127.0.0.1 GIT_COMMITTER_NAME=racer GIT_COMMITTER_EMAIL=racer@127.0.0.1
  c=$(git commit-tree \"$old^{{tree}}\" -p \"$old\" -m 'racing writer') || exit 1
  git update-ref refs/heads/{TIER} \"$c\" \"$old\" || exit 1
  echo \"$c\" >>'{m}/raced'
done
exit 0
"
        ),
    );
    fs::write(marks.join("armed"), "").expect("arm the racer");
    let app1 = w.app_change("a change pushed against a racing writer");
    phase(test, "racer armed, app changed");

    let (_, reason, message) = wait_until("Ready=False PushConflict", NOTICED, &w.ctl, || {
        let r = w.s.ready(&w.cp);
        (r.0 == "False" && r.1 == "PushConflict").then_some(r)
    });
    phase(test, &format!("Ready=False {reason}: {message}"));
    assert!(
        message.contains(&format!("branch {TIER} of {} kept moving: gave up after 5 attempts", w.s.system_url))
            && message.contains("fix: stop the other writer"),
        "{message}"
    );
    let failures = w.ctl.errors("PushConflict");
    wait_until("a retry that loses the same way", Duration::from_secs(45), &w.ctl, || {
        (w.ctl.errors("PushConflict") > failures).then_some(())
    });
    // The racer's commits alone moved the branch: none of the controller's landed.
    let raced = fs::read_to_string(marks.join("raced")).expect("the racer ran");
    assert!(raced.lines().count() >= 10, "every attempt of two reconciles lost a race: {raced}");
    let head = branch_head(&w.s.system_url, TIER).expect("system branch");
    let subjects = git(&repo, &["log", "--format=%s", &format!("{head0}..{head}")]);
    assert!(
        !subjects.is_empty() && subjects.lines().all(|s| s == "racing writer"),
        "only the racer's commits since {head0}:\n{subjects}"
    );
    assert_eq!(git(&repo, &["rev-parse", &format!("{head}^{{tree}}")]), tree0, "the render of before the change");
    assert_eq!(w.applications(), before.apps, "the same Applications (names, uids, paths): none deleted");
    assert_eq!(w.s.status_commits(&w.cp).1, before.status_system, "status.systemCommit unchanged");

    // The racer stops: the next retry lands one commit on top of the racer's last.
    fs::remove_file(marks.join("armed")).expect("disarm the racer");
    w.converged(&app1, Duration::from_secs(90));
    let after = branch_head(&w.s.system_url, TIER).expect("system branch");
    let racer_last = raced.lines().last().expect("a racer commit").to_string();
    assert!(is_ancestor(&repo, &racer_last, &after), "built on the racer's commits");
    assert_eq!(w.applications(), before.apps, "the same Application objects after the fix");
}

/// The system repository is lost and re-created empty: the controller rebuilds the tier branch
/// from the CRs and the pinned heads (unchanged here), with the very tree it had; Argo CD's
/// Applications stay the same objects. Only the branch's history is gone.
#[test]
fn a_lost_system_repository_is_rebuilt_with_the_same_tree() {
    let test = "disaster recovery";
    let w = World::start(Plane::shared(TESTS), "closed-dr", TierOptions::default(), &Run::new("dr-replica"));
    // One more commit, so that history has something to lose.
    let app1 = w.app_change("a change before the repository was lost");
    w.converged(&app1, Duration::from_secs(60));
    let before = w.snapshot();
    let repo = w.system_repo();
    let head0 = before.log[0].0.clone();
    let tree0 = git(&repo, &["rev-parse", &format!("{head0}^{{tree}}")]);
    let pins = |w: &World| {
        (
            branch_head(&w.s.app_url, TIER).expect("app tier-0"),
            branch_head(&w.s.config_url, TIER).expect("config tier-0"),
        )
    };
    let pins0 = pins(&w);

    // Under the running controller, as a lost disk or a deleted project would.
    fs::remove_dir_all(&repo).expect("delete the system repository");
    w.daemon.create_repo("shop-system");
    phase(test, "system repository re-created empty");

    w.converged(&app1, Duration::from_secs(90));
    let rebuilt = w.s.system_log();
    phase(test, &format!("rebuilt: {}", rebuilt[0].0));
    assert_eq!(rebuilt.len(), 1, "one commit: the history before is gone: {rebuilt:?}");
    assert_ne!(rebuilt[0].0, head0);
    assert_eq!(pins(&w), pins0, "the pins did not move");
    assert_eq!(git(&repo, &["rev-parse", &format!("{}^{{tree}}", rebuilt[0].0)]), tree0, "the same tree");
    assert_eq!(gitlink(&repo, TIER, "base"), app1);
    assert_eq!(w.applications(), before.apps, "the same Applications (names, uids, paths)");
}

// ---------------------------------------------------------------------------------------------
// The API server answers 500

/// A controller that talks to the API server through `api`.
fn through(api: &FaultyApi, s: &Setup, ctl: Controller) -> Controller {
    let path = s.work.path().join("faulty-api.kubeconfig");
    api.write_kubeconfig(&path);
    ctl.with_kubeconfig(&path)
}

/// Lists of ShopSets (not their watch) fail.
fn fail_shopset_lists(api: &FaultyApi) {
    api.fail(|call| call.is_list_of("shopset.dev", "shopsets"));
}

/// A shop more for ShopSet `name`; its id.
fn add_shop(w: &World, name: &str) -> String {
    let shop = format!("{name}-shop-2");
    let patch = format!("{{\"spec\":{{\"shops\":[\"{name}-shop-1\",\"{shop}\"]}}}}");
    w.cp.kubectl_ok(["patch", "shopset", name, "-n", &w.s.ns, "--type=merge", "-p", &patch]);
    shop
}

/// status, reason and message of the Tier's condition `type_` ("" when it has none).
fn condition(w: &World, type_: &str) -> (String, String, String) {
    let c = format!(r#".status.conditions[?(@.type=="{type_}")]"#);
    let out = w.s.jsonpath(&w.cp, "tier", TIER, &format!("{{{c}.status}}|{{{c}.reason}}|{{{c}.message}}"));
    let mut parts = out.splitn(3, '|').map(str::to_string);
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

/// The failure is transient: Reconciling (retried with backoff), not Stalled, and a Warning Event
/// says it, each in the API server's words; the front answered 500 to lists of ShopSets only.
fn reported_as_transient(w: &World, api: &FaultyApi) {
    let (status, reason, message) = condition(w, "Reconciling");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ProgressingWithRetry"), "{message}");
    assert!(message.contains(LEADER_CHANGED), "{message}");
    assert_ne!(condition(w, "Stalled").0, "True", "a server error is retried, not Stalled");
    let events = w.cp.kubectl_ok([
        "get",
        "events",
        "-n",
        &w.s.ns,
        "--field-selector=type=Warning,reason=KubernetesUnavailable",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(events.contains(LEADER_CHANGED), "a Warning Event in the server's words: {events}");
    let failed = api.failed();
    assert!(!failed.is_empty(), "the controller listed ShopSets meanwhile");
    assert!(failed.iter().all(|r| r.starts_with("GET ") && r.contains("/shopsets")), "{failed:?}");
}

/// After the 500s: the ShopSet change of `shop` is rendered and pushed (one commit on top of
/// `before`), the Tier Ready, the same Application objects, by the same process.
fn converged_with(w: &World, before: &Snapshot, shopset: &str, shop: &str, pid: Option<u32>) {
    let repo = w.system_repo();
    let file = format!("{TIER}:shopsets/{shopset}/kustomization.yaml");
    wait_until(&format!("{shop} rendered and pushed, Ready"), Duration::from_secs(90), &w.ctl, || {
        let log = w.s.system_log();
        let rendered = shopset_e2e::gitserver::try_git(&repo, &["show", &file]).is_ok_and(|f| f.contains(shop));
        let head = log.first().map(|c| c.0.clone()).unwrap_or_default();
        (rendered && w.s.ready(&w.cp).0 == "True" && w.s.status_commits(&w.cp).1 == head).then_some(())
    });
    let log = w.s.system_log();
    assert_eq!(log.len(), before.log.len() + 1, "one commit: the ShopSet change: {log:?}");
    assert_eq!(log[1..], before.log[..], "on top of the branch as it was");
    assert_eq!(w.applications(), before.apps, "the same Application objects after the 500s");
    assert_eq!(w.ctl.pid(), pid, "converged without a restart");
    w.ctl.assert_running();
}

/// While the controller runs, the API server answers 500 to lists of ShopSets (the controller
/// lists them before a render that could prune, as a check of its watch caches) and a ShopSet
/// changes: nothing is rendered, committed or pruned, the Tier says why in the server's words and
/// is retried; when the 500s stop, the change is pushed without a restart.
#[test]
fn a_shopset_list_answered_500_while_running_fails_closed() {
    let test = "500 while running";
    let cp = Plane::shared(TESTS);
    let api = FaultyApi::start(cp.kubeconfig());
    let run = Run::new("500-replica");
    let w = World::start_with(cp, "closed-500", TierOptions::default(), &run, |_, s, ctl| through(&api, s, ctl));
    let pid = w.ctl.pid();
    let before = w.snapshot();

    fail_shopset_lists(&api);
    let shop = add_shop(&w, "canary-eu");
    phase(test, &format!("lists of ShopSets answer 500, {shop} added"));
    w.fails_closed(
        test,
        &before,
        "KubernetesUnavailable",
        true,
        &[
            &format!("cannot list ShopSets in namespace {}: {LEADER_CHANGED}", w.s.ns),
            "nothing is rendered, committed or pruned until it can",
            "see the API server's log for a server error",
        ],
    );
    reported_as_transient(&w, &api);

    api.heal();
    phase(test, "500s stopped");
    converged_with(&w, &before, "canary-eu", &shop, pid);
}

/// The controller starts while the API server answers 500 to lists of ShopSets: its ShopSet
/// cache cannot fill, so it renders nothing (an empty list would prune every Application) and
/// the Tier and /readyz say why in the server's words, retried; when the 500s stop, the cache
/// fills and the ShopSet changed meanwhile is pushed without a restart.
#[test]
fn a_shopset_list_answered_500_at_start_fails_closed() {
    let test = "500 at start";
    let cp = Plane::shared(TESTS);
    let api = FaultyApi::start(cp.kubeconfig());
    let run = Run::new("500-start-replica");
    let mut w =
        World::start_with(cp, "closed-500-start", TierOptions::default(), &run, |_, s, ctl| through(&api, s, ctl));
    let before = w.snapshot();

    w.ctl.stop();
    fail_shopset_lists(&api);
    let shop = add_shop(&w, "canary-us");
    w.ctl.start(&run);
    let pid = w.ctl.pid();
    phase(test, &format!("{shop} added, restarted while lists of ShopSets answer 500"));
    w.fails_closed(
        test,
        &before,
        "KubernetesUnavailable",
        true,
        &[
            &format!("the watch caches of namespace {} are not filled: ShopSet: cannot list: {LEADER_CHANGED}", w.s.ns),
            "nothing is rendered, committed or pruned until they are",
            "see the API server's log for a server error",
        ],
    );
    reported_as_transient(&w, &api);
    // The Configuration cache, read through the same proxy, may still be filling on a busy machine:
    // /readyz must come to name the ShopSet cache alone, with the server's words.
    let body = wait_until("/readyz 503 for the ShopSet cache only", Duration::from_secs(30), &w.ctl, || {
        let (code, body) = http(&w.ctl.url("/readyz"), &[], None);
        (code == 503 && body.contains("not yet synced: ShopSet (")).then_some(body)
    });
    assert!(body.contains(LEADER_CHANGED), "{body}");

    api.heal();
    phase(test, "500s stopped");
    converged_with(&w, &before, "canary-us", &shop, pid);
    assert_eq!(http(&w.ctl.url("/readyz"), &[], None).0, 200);
}

/// `shopctl status` and `shopctl doctor` against an API server that answers 500 to every read:
/// no panic; each says what it could not read, in the server's words.
#[test]
fn shopctl_says_the_servers_words_when_it_answers_500() {
    let cp = Plane::shared(TESTS);
    let api = FaultyApi::start(cp.kubeconfig());
    let daemon = GitDaemon::start();
    let s = Setup::on_daemon(&cp, &daemon, "closed-500-cli", &TierOptions::default());
    s.apply(&cp);
    let kubeconfig = s.work.path().join("faulty-api.kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let shopctl = |command: &str| {
        let out = Command::new(workspace_bin("shopctl"))
            .arg("--cache-dir")
            .arg(s.work.path().join("shopctl-cache"))
            .args(["--color", "never", command, "-f"])
            .arg(&s.manifests)
            .env("KUBECONFIG", &kubeconfig)
            .env("PATH", path_env())
            .env("HOME", s.work.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run shopctl");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(!stderr.contains("panicked"), "shopctl {command}: {}", show(&out));
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    let tier = format!("cannot read Tier {}/{TIER}", s.ns);
    // Through the front, healed: the Tier is read.
    let (_, healthy) = shopctl("status");
    assert!(!healthy.contains(&tier) && !healthy.contains("not read: cluster"), "{healthy}");

    api.fail(|call| call.method == "GET" && !call.is_watch());
    let (_, status) = shopctl("status");
    assert!(status.contains(&format!("not read: cluster: {tier}: {LEADER_CHANGED}")), "{status}");
    // Unread is not checked, and said so (its exit code is that of the checks it could run).
    let (_, doctor) = shopctl("doctor");
    for line in [
        format!("not checked: tier-not-ready: {tier}: {LEADER_CHANGED}"),
        format!("not checked: application: cannot read the Applications: {LEADER_CHANGED}"),
    ] {
        assert!(doctor.contains(&line), "doctor says {line:?}:\n{doctor}");
    }
    assert!(
        api.failed().iter().any(|r| r.contains(&format!("/namespaces/{}/tiers/{TIER}", s.ns))),
        "{:?}",
        api.failed()
    );
}
