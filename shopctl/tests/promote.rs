//! `shopctl promote`, `rollback` and `status` against real git servers (`git daemon`), a real
//! control plane (kube-apiserver with Argo CD's Application CRD) for the promotion gate, and a
//! stand-in for GitHub's REST API for `--pr`.
//!
//! Every test gets its own git server, repositories (the examples seeded onto `main`),
//! manifests pointing at them, and cache; at most one control plane is started.

mod common;

use std::path::PathBuf;

use serde_json::{Value, json};
use shopset::approvals::MergeOutcome;
use shopset::github::{GitHub, GitHubError, PullRequest};
use shopset::gitops::{Auth, GitCache, GitError};
use shopset::manifests::Inventory;
use shopset::promote::{Move, Only, PromoteError, execute, plan};
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::github::{BOT_LOGIN, GitHubStandIn, ReviewEvent, html_url};
use shopset_e2e::gitserver::{GitDaemon, branch_head, commit_files, git, log, seed_dir};
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

const MANIFESTS: &[&str] = &["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"];
/// Author of the commits the git helpers make.
const AUTHOR: &str = shopset_e2e::gitserver::GIT_USER_NAME;

// ---------------------------------------------------------------------------------------------
// Fixture

/// The example app and configuration seeded on a `git daemon`, an empty system repository, the
/// example manifests pointing at them, and a work dir (cache, HOME) of the test's own.
struct Fx {
    daemon: GitDaemon,
    app: String,
    config: String,
    system: String,
    /// The seed commit of the app repository (`main`, where both tiers start).
    app_seed: String,
    work: TempDir,
}

impl Fx {
    fn new() -> Fx {
        Fx::named("app", "config", "system")
    }

    /// Repositories named like GitHub's `owner/repo` give `git://127.0.0.1:<port>/owner/repo.git`,
    /// which `--pr` reads as `owner/repo`.
    fn named(app: &str, config: &str, system: &str) -> Fx {
        let daemon = GitDaemon::start();
        let (app, config, system) = (daemon.create_repo(app), daemon.create_repo(config), daemon.create_repo(system));
        let examples = repo_root().join("examples");
        let app_seed = seed_dir(&app, "main", &examples.join("app"), "Shop application base");
        seed_dir(&config, "main", &examples.join("config"), "Shared shop configuration");
        let work = TempDir::with_prefix("shopctl-promote-").expect("create work dir");
        let fx = Fx { daemon, app, config, system, app_seed, work };
        std::fs::create_dir(fx.manifests()).expect("create manifests dir");
        for name in MANIFESTS {
            let text = std::fs::read_to_string(examples.join(name)).expect("read example manifest");
            let text = shopset::quickstart::with_urls(&text, |local| match local {
                "app.git" => fx.app.clone(),
                "config.git" => fx.config.clone(),
                _ => fx.system.clone(),
            });
            std::fs::write(fx.manifests().join(name), text).expect("write manifest");
        }
        fx
    }

    fn manifests(&self) -> PathBuf {
        self.work.path().join("manifests")
    }

    fn m(&self) -> String {
        self.manifests().to_str().expect("UTF-8 path").to_string()
    }

    /// `shopctl --cache-dir <cache> --color never <args>`, with no cluster (KUBECONFIG names a
    /// file that does not exist) and nothing from the caller's environment.
    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = common::shopctl_command(&self.work.path().join("cache"), self.work.path());
        cmd.args(args).env("KUBECONFIG", self.work.path().join("no-such-kubeconfig")).envs(env.iter().copied());
        let out = cmd.output().expect("run shopctl");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.join(" "),
        }
    }

    /// `shopctl sync` of every tier (or the one named), which must succeed.
    fn sync(&self, tier: Option<&str>) {
        let m = self.m();
        let mut args = vec!["sync", "-f", m.as_str()];
        if let Some(t) = tier {
            args.extend(["--tier", t]);
        }
        self.run(&args).success();
    }

    /// `shopctl promote tier-0 tier-1 -f <manifests> <extra>`.
    fn promote(&self, extra: &[&str]) -> Run {
        self.promote_env(extra, &[])
    }

    fn promote_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let m = self.m();
        let mut args = vec!["promote", "tier-0", "tier-1", "-f", m.as_str()];
        args.extend_from_slice(extra);
        self.run_env(&args, env)
    }

    /// `git <args>` in the bare system repository on the server.
    fn system_git(&self, args: &[&str]) -> String {
        git(&self.daemon.path(repo_name(&self.system)), args)
    }

    /// `git <args>` in the bare app repository on the server.
    fn app_git(&self, args: &[&str]) -> String {
        git(&self.daemon.path(repo_name(&self.app)), args)
    }

    /// The app commit the system branch of `tier` pins (its `base` gitlink).
    fn pinned_app(&self, tier: &str) -> String {
        let entry = self.system_git(&["ls-tree", tier, "base"]);
        // `160000 commit <sha>\tbase`
        entry.split_whitespace().nth(2).unwrap_or_else(|| panic!("no base gitlink on {tier}: {entry:?}")).to_string()
    }
}

/// `app` of `git://127.0.0.1:<port>/app.git`.
fn repo_name(url: &str) -> &str {
    let path = url.splitn(4, '/').nth(3).expect("git:// URL");
    path.strip_suffix(".git").expect("URL ends in .git")
}

fn head(url: &str, branch: &str) -> String {
    branch_head(url, branch).unwrap_or_else(|| panic!("{url} has no branch {branch}"))
}

use shopset::revision::short;

/// The example checkout Deployment with another image tag.
fn checkout(tag: &str) -> String {
    let text =
        std::fs::read_to_string(repo_root().join("examples/app/base/checkout.yaml")).expect("read checkout.yaml");
    assert!(text.contains("checkout:1.0.0"));
    text.replace("checkout:1.0.0", &format!("checkout:{tag}"))
}

/// The example configuration Component with another log level.
fn component(level: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/config/component/kustomization.yaml"))
        .expect("read component");
    assert!(text.contains("LOG_LEVEL=info"));
    text.replace("LOG_LEVEL=info", &format!("LOG_LEVEL={level}"))
}

/// A finished `shopctl` run.
/// Applies tier-0's Application `app` as rendered on the system branch.
fn apply_application(cp: &ControlPlane, fx: &Fx, app: &str) {
    let yaml = fx.system_git(&["show", &format!("tier-0:applications/{app}.yaml")]);
    cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &yaml);
}

/// Writes Application `app`'s status as Argo CD does when it runs `revision` Synced and Healthy.
/// Written by hand: the planes of these tests run no Argo CD (every shopctl test would pay its
/// start-up). Only "Synced and Healthy at the system commit" is written, for the gate to pass and
/// the policy to decide; every refusal Argo CD can cause (OutOfSync in a freeze, Degraded, a
/// previous revision, ComparisonError) is Argo CD's own in e2e/tests/argocd_gate.rs.
fn argocd_says_synced_healthy(cp: &ControlPlane, app: &str, revision: &str) {
    // Argo CD's CRD may or may not serve status as a subresource.
    let subresources = cp.kubectl_ok([
        "get",
        "crd",
        "applications.argoproj.io",
        "-o",
        "jsonpath={.spec.versions[?(@.name==\"v1alpha1\")].subresources}",
    ]);
    let patch =
        json!({"status": {"sync": {"status": "Synced", "revision": revision}, "health": {"status": "Healthy"}}})
            .to_string();
    let mut args = vec!["patch", "applications.argoproj.io", app, "-n", "argocd", "--type=merge", "-p", patch.as_str()];
    if subresources.contains("status") {
        args.push("--subresource=status");
    }
    cp.kubectl_ok(args);
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    args: String,
}

impl Run {
    fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "shopctl {} failed:\n{self}", self.args);
        self
    }

    fn failure(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "shopctl {}: expected exit {code}:\n{self}", self.args);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("shopctl {}: stdout is not JSON ({e}):\n{self}", self.args))
    }

    fn has(&self, text: &str) -> &Run {
        assert!(self.stdout.contains(text), "shopctl {}: stdout lacks {text:?}:\n{self}", self.args);
        self
    }

    fn has_err(&self, text: &str) -> &Run {
        assert!(self.stderr.contains(text), "shopctl {}: stderr lacks {text:?}:\n{self}", self.args);
        self
    }

    fn lacks(&self, text: &str) -> &Run {
        assert!(
            !self.stdout.contains(text) && !self.stderr.contains(text),
            "shopctl {}: output has {text:?}:\n{self}",
            self.args
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Fast-forward

#[test]
fn promote_fast_forwards_tier_1_and_dry_run_only_and_json_say_what_moves() {
    let fx = Fx::new();
    fx.sync(None);
    let t1 = head(&fx.app, "tier-1");
    assert_eq!(t1, fx.app_seed);
    let cfg_t1 = head(&fx.config, "tier-1");
    // A change under the base path and one outside it: only the first is the app's change.
    let c1 = commit_files(
        &fx.app,
        "tier-0",
        &[("base/checkout.yaml", &checkout("1.1.0")), ("docs/notes.md", "release notes\n")],
        "Checkout 1.1.0",
    );

    // --dry-run: the commit (author, subject) and the changed file; nothing moves.
    let dry = fx.promote(&["--skip-checks", "--dry-run"]).success();
    dry.has("Promote tier-0 -> tier-1")
        .has(&format!("fast-forward tier-1 {} -> {} (1 commit)", short(&t1), short(&c1)))
        .has(&format!("{} Checkout 1.1.0 ({AUTHOR})", short(&c1)))
        .has("checks skipped (--skip-checks)");
    let files: Vec<&str> = dry.stdout.lines().map(str::trim).filter(|l| l.starts_with("files:")).collect();
    assert_eq!(files, ["files: base/checkout.yaml"], "{dry}");
    let cfg_line = dry.stdout.lines().find(|l| l.trim_start().starts_with("config/shop-config")).expect("config line");
    assert!(cfg_line.ends_with("up to date"), "{dry}");
    assert_eq!(head(&fx.app, "tier-1"), t1, "a dry run moves nothing");

    // -o json parses and says the same.
    let plan = fx.promote(&["--skip-checks", "--dry-run", "-o", "json"]).success().json();
    assert_eq!((plan["from"].as_str(), plan["to"].as_str()), (Some("tier-0"), Some("tier-1")));
    let repos = plan["repositories"].as_array().expect("repositories");
    assert_eq!(repos.len(), 2, "{plan:#}");
    let app = &repos[0];
    assert_eq!(app["repository"], "app");
    assert_eq!(app["kind"], "fastForward");
    assert_eq!(app["fromBranch"], "tier-0");
    assert_eq!(app["toBranch"], "tier-1");
    assert_eq!(app["fromHead"], c1.as_str());
    assert_eq!(app["toHead"], t1.as_str());
    assert_eq!(app["commits"], json!([{"id": c1, "author": AUTHOR, "subject": "Checkout 1.1.0"}]));
    assert_eq!(app["files"], json!(["base/checkout.yaml"]));
    assert_eq!(repos[1]["repository"], "config/shop-config");
    assert_eq!(repos[1]["kind"], "upToDate");
    assert_eq!(repos[1]["commits"], json!([]));
    assert_eq!(head(&fx.app, "tier-1"), t1);

    // --only config moves only the configuration repository.
    let k1 =
        commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("debug"))], "Debug logging");
    let moved = fx.promote(&["--skip-checks", "--only", "config", "-o", "json"]).success().json();
    let moved = moved.as_array().expect("moved repositories");
    assert_eq!(moved.len(), 1, "{moved:#?}");
    assert_eq!(moved[0]["repository"], "config/shop-config");
    assert_eq!(moved[0]["fromHead"], k1.as_str());
    assert_eq!(moved[0]["toHead"], cfg_t1.as_str());
    assert_eq!(head(&fx.config, "tier-1"), k1);
    assert_eq!(head(&fx.app, "tier-1"), t1, "--only config leaves the app alone");

    // The real thing: the app fast-forwards; the configuration, now up to date, is left alone.
    let run = fx.promote(&["--skip-checks"]).success();
    run.has(&format!("moved app tier-1 -> {}", short(&c1)))
        .has("checks skipped (--skip-checks)")
        .lacks("moved config/shop-config");
    assert_eq!(head(&fx.app, "tier-1"), c1);
    assert_eq!(head(&fx.app, "tier-0"), c1);
    assert_eq!(head(&fx.config, "tier-1"), k1);

    fx.promote(&["--skip-checks"]).success().has("nothing to promote");
}

// ---------------------------------------------------------------------------------------------
// 2. Diverged

#[test]
fn diverged_tier_1_is_refused_then_forced_and_the_force_push_keeps_its_lease() {
    let fx = Fx::new();
    fx.sync(None);
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    // The configuration could fast-forward: it must not move while the app is refused.
    let k1 =
        commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("debug"))], "Debug logging");
    let cfg_t1 = head(&fx.config, "tier-1");
    let hotfix =
        commit_files(&fx.app, "tier-1", &[("base/checkout.yaml", &checkout("1.0.1"))], "Hotfix: checkout 1.0.1");

    let refused = fx.promote(&["--skip-checks"]).failure(3);
    refused
        .has("DIVERGED: tier-1 has 1 commit(s) tier-0 lacks")
        .has_err("diverged")
        .has_err(&format!("{} Hotfix: checkout 1.0.1 ({AUTHOR})", short(&hotfix)))
        .has_err("git merge origin/tier-1")
        .has_err("--force");
    assert_eq!(head(&fx.app, "tier-1"), hotfix, "nothing moved");
    assert_eq!(head(&fx.config, "tier-1"), cfg_t1, "nothing moved, not even what could fast-forward");

    // --force moves tier-1 to tier-0; the hotfix leaves tier-1.
    fx.promote(&["--skip-checks", "--force"]).success().has(&format!("moved app tier-1 -> {}", short(&c1)));
    assert_eq!(head(&fx.app, "tier-1"), c1);
    assert_eq!(head(&fx.config, "tier-1"), k1);
    assert!(log(&fx.app, "tier-1").iter().all(|(sha, _)| *sha != hotfix));

    // The forced push carries a lease: a commit pushed between plan and execute is kept.
    let hotfix2 =
        commit_files(&fx.app, "tier-1", &[("base/checkout.yaml", &checkout("1.1.1"))], "Hotfix: checkout 1.1.1");
    let inv = Inventory::load(&[fx.manifests()]).expect("load manifests");
    let (from, to) = (inv.find_tier("tier-0").expect("tier-0"), inv.find_tier("tier-1").expect("tier-1"));
    let cfgs = inv.tier_input("tier-1").expect("tier-1 input").configurations;
    let cache = GitCache::new(fx.work.path().join("library-cache"));
    let auth = Auth::default();
    let planned = plan(&cache, &auth, from, to, &cfgs, Only::All).expect("plan");
    assert!(
        matches!(&planned.repositories[0].kind, Move::Diverged { only_on_target } if only_on_target.len() == 1 && only_on_target[0].id == hotfix2),
        "{planned:#?}"
    );
    assert_eq!(planned.repositories[1].kind, Move::UpToDate);
    // Without force, execute refuses before pushing anything.
    let err = execute(&cache, &auth, &planned, "tier-0", false).unwrap_err();
    assert!(matches!(err, PromoteError::Diverged { n: 1, .. }), "{err}");
    assert_eq!(head(&fx.app, "tier-1"), hotfix2);

    let concurrent = commit_files(
        &fx.app,
        "tier-1",
        &[("base/checkout.yaml", &checkout("1.1.2"))],
        "Hotfix: checkout 1.1.2 (someone else)",
    );
    let err = execute(&cache, &auth, &planned, "tier-0", true).unwrap_err();
    assert!(
        matches!(&err, PromoteError::Git { repository, source: GitError::LeaseBroken { branch, .. }, .. } if repository == "app" && branch == "tier-1"),
        "expected a broken lease, got: {err}"
    );
    assert!(err.to_string().contains("moved while we worked"), "{err}");
    assert_eq!(head(&fx.app, "tier-1"), concurrent, "the concurrent commit is kept");
}

// ---------------------------------------------------------------------------------------------
// 3. Order

#[test]
fn promoting_against_the_promotion_chain_is_refused_as_invalid_input() {
    let fx = Fx::new();
    let m = fx.m();
    let run = fx.run(&["promote", "tier-1", "tier-0", "-f", &m, "--skip-checks"]).failure(2);
    run.has_err("Tier/tier-0").has_err("spec.promotion.from").has_err("shopctl rollback tier-0").lacks("--any-order");
    // Nothing was read or written: the repositories still have only `main`.
    assert_eq!(branch_head(&fx.app, "tier-0"), None);

    // Skipping a tier names the right source.
    let tier2 = std::fs::read_to_string(fx.manifests().join("tier-1.yaml"))
        .unwrap()
        .replace("name: tier-1", "name: tier-2")
        .replace("from: tier-0", "from: tier-1");
    std::fs::write(fx.manifests().join("tier-2.yaml"), tier2).unwrap();
    fx.run(&["promote", "tier-0", "tier-2", "-f", &m, "--skip-checks"])
        .failure(2)
        .has_err("Tier/tier-2: spec.promotion.from is \"tier-1\", not \"tier-0\"")
        .has_err("shopctl promote tier-1 tier-2");
}

// ---------------------------------------------------------------------------------------------
// 4 and 7. The gate and `status` against a real control plane

#[test]
fn the_gate_and_status_read_argo_cd_applications_and_the_tier_from_a_control_plane() {
    let starting = std::thread::spawn(ControlPlane::start);
    let fx = Fx::new();
    fx.sync(None);
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    fx.sync(Some("tier-0"));
    assert_eq!(fx.pinned_app("tier-0"), c1);
    let system1 = head(&fx.system, "tier-0");
    let t1 = head(&fx.app, "tier-1");

    let cp = match starting.join() {
        Ok(cp) => cp,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let kubeconfig = cp.kubeconfig().to_str().expect("UTF-8 path").to_string();
    let kube = [("KUBECONFIG", kubeconfig.as_str())];
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let set = |app: &str, revision: &str| argocd_says_synced_healthy(&cp, app, revision);
    let apply = |app: &str| apply_application(&cp, &fx, app);
    for app in ["canary-eu", "canary-us"] {
        apply(app);
        set(app, &system1);
    }
    let refused = |why: &[&str]| {
        let run = fx.promote_env(&[], &kube).failure(3);
        run.has_err("tier tier-0 is not verified").has_err("--skip-checks");
        for w in why {
            run.has_err(w);
        }
        assert_eq!(head(&fx.app, "tier-1"), t1, "a refused promotion moves nothing");
        run
    };

    cp.kubectl_ok(["delete", "applications.argoproj.io", "canary-us", "-n", "argocd"]);
    refused(&["ShopSet canary-us", "Application canary-us: it does not exist"]).lacks("ShopSet canary-eu");
    // Wholly in maintenance, canary-us is passed over and listed; a single shop of it is not enough.
    let m = fx.m();
    fx.run(&["maintenance", "on", "canary-us", "--reason", "payment outage", "-f", &m]).success();
    let dry = fx.promote_env(&["--dry-run"], &kube).success();
    dry.lacks("not verified").has("ShopSet canary-us in maintenance since ").has("(payment outage): not checked");
    fx.run(&["maintenance", "on", "canary-us", "--shop", "shop-1001", "--reason", "payment outage", "-f", &m])
        .success();
    refused(&["ShopSet canary-us: Application canary-us: it does not exist"])
        .has("ShopSet canary-us: shops shop-1001 in maintenance since ");
    fx.run(&["maintenance", "off", "canary-us", "-f", &m]).success();
    refused(&["ShopSet canary-us", "Application canary-us: it does not exist"]).lacks("in maintenance");
    apply("canary-us");
    set("canary-us", &system1);

    // The configuration branch moved past what the system branch pins: not caught up.
    let k1 =
        commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("debug"))], "Debug logging");
    refused(&["pins configuration shop-config", "not caught up"]).lacks("ShopSet ");
    assert_eq!(head(&fx.config, "tier-1"), head(&fx.config, "main"));

    // Caught up, every Application Synced and Healthy at the system head: promoted, no --skip-checks.
    fx.sync(Some("tier-0"));
    let system2 = head(&fx.system, "tier-0");
    for app in ["canary-eu", "canary-us"] {
        set(app, &system2);
    }
    let dry = fx.promote_env(&["--dry-run"], &kube).success();
    dry.lacks("not verified").lacks("checks skipped");
    let ok = fx.promote_env(&[], &kube).success();
    ok.has(&format!("moved app tier-1 -> {}", short(&c1)))
        .has(&format!("moved config/shop-config tier-1 -> {}", short(&k1)))
        .lacks("checks skipped");
    assert_eq!(head(&fx.app, "tier-1"), c1);
    assert_eq!(head(&fx.config, "tier-1"), k1);

    // The app branch moved past the pin: not caught up, although every Application is fine.
    let c2 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.2.0"))], "Checkout 1.2.0");
    let run = fx.promote_env(&[], &kube).failure(3);
    run.has_err(&format!("pins app {} but the app branch is at {}", short(&c1), short(&c2)))
        .has_err("not caught up")
        .lacks("ShopSet ");
    assert_eq!(head(&fx.app, "tier-1"), c1);
    // A dry run reports the problem but still previews; under -o json stdout stays JSON.
    let dry = fx.promote_env(&["--dry-run", "-o", "json"], &kube).success();
    assert_eq!(dry.json()["repositories"][0]["fromHead"], c2.as_str());
    dry.has_err("not caught up");
    let gate_off = fx.promote_env(&["--dry-run"], &[]).success();
    gate_off.has("not checked: cannot reach the cluster");

    // status with a cluster: the Tier's conditions and the Applications.
    let tier0 = std::fs::read_to_string(fx.manifests().join("tier-0.yaml")).unwrap();
    cp.kubectl_with_stdin_ok(["apply", "-n", "default", "-f", "-"], &tier0);
    // Conditions written by hand: no controller runs here (what `status` prints of them is under
    // test); the controller writing them is covered by the e2e scenario and fault tests.
    let conditions = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Synced", "message": format!("system branch tier-0 at {}", short(&system2)), "lastTransitionTime": "2025-01-01T00:00:00Z"},
        {"type": "Pushed", "status": "False", "reason": "LeaseBroken", "message": "another writer moved the branch", "lastTransitionTime": "2025-01-01T00:00:00Z"},
    ]}})
    .to_string();
    cp.kubectl_ok([
        "patch",
        "tiers.shopset.dev",
        "tier-0",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        &conditions,
    ]);
    let m = fx.m();
    let status = fx.run_env(&["status", "tier-0", "-f", &m, "-o", "json"], &kube).success().json();
    let view = &status[0];
    assert_eq!(view["tier"], "tier-0");
    assert_eq!(view["unavailable"], json!([]), "{status:#}");
    assert_eq!(
        view["conditions"][0],
        json!({"type": "Ready", "status": "True", "reason": "Synced", "message": format!("system branch tier-0 at {}", short(&system2))})
    );
    assert_eq!(view["conditions"][1]["reason"], "LeaseBroken");
    let apps = view["applications"].as_array().expect("applications");
    assert_eq!(apps.len(), 2, "{status:#}");
    for (app, name) in apps.iter().zip(["canary-eu", "canary-us"]) {
        assert_eq!(app["shopset"], name);
        assert_eq!(app["exists"], true);
        assert_eq!(app["sync"], "Synced");
        assert_eq!(app["health"], "Healthy");
        assert_eq!(app["revision"], system2.as_str());
        assert_eq!(app["targetRevision"], "tier-0");
    }
    assert_eq!(view["git"]["appHead"], c2.as_str());
    assert_eq!(view["git"]["pinned"]["base"], c1.as_str());
    let text = fx.run_env(&["status", "tier-0", "-f", &m], &kube).success();
    text.has("Ready")
        .has("LeaseBroken")
        .has("canary-eu")
        .has("Synced")
        .has("Healthy")
        .has("controller lagging")
        .lacks("not read:");
    // tier-1 is not applied: said, not failed.
    let status = fx.run_env(&["status", "tier-1", "-f", &m, "-o", "json"], &kube).success().json();
    let unavailable = status[0]["unavailable"]
        .as_array()
        .expect("unavailable")
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(unavailable.contains("Tier default/tier-1 is not applied"), "{status:#}");
    assert!(status[0]["applications"].as_array().unwrap().iter().all(|a| a["exists"] == false), "{status:#}");
}

// ---------------------------------------------------------------------------------------------
// 5. Pull requests

const TOKEN: &str = "ghp_test0123456789SECRETtokenVALUE";

#[test]
fn pull_requests_are_opened_through_the_github_api() {
    let gh = GitHubStandIn::start(TOKEN);

    // The library: 201, then 422 "already exists" (found by listing), then 401.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let lib = GitHub { base_url: gh.url().to_string(), token: TOKEN.to_string() };
    let url = "https://github.com/acme/storefront.git";
    let pr = rt
        .block_on(lib.open_pull_request(url, "tier-0", "tier-1", "Promote tier-0 to tier-1", "body"))
        .expect("open a pull request");
    assert_eq!(
        pr,
        PullRequest {
            repository: "acme/storefront".into(),
            number: 41,
            url: html_url("acme", "storefront", 41),
            already_existed: false
        }
    );
    let again = rt
        .block_on(lib.open_pull_request(
            "git@github.com:acme/storefront.git",
            "tier-0",
            "tier-1",
            "Promote again",
            "body",
        ))
        .expect("find the open pull request");
    assert_eq!(again, PullRequest { already_existed: true, ..pr.clone() });
    let requests = gh.requests();
    let list = requests.last().expect("a request");
    assert_eq!((list.method.as_str(), list.path.as_str()), ("GET", "/repos/acme/storefront/pulls"));
    assert_eq!(list.query.get("head").map(String::as_str), Some("acme:tier-0"));
    assert_eq!(list.query.get("base").map(String::as_str), Some("tier-1"));
    assert_eq!(list.query.get("state").map(String::as_str), Some("open"));
    let wrong = GitHub { base_url: gh.url().to_string(), token: "wrong-token-value".into() };
    let err = rt.block_on(wrong.open_pull_request(url, "tier-0", "tier-1", "t", "b")).unwrap_err();
    assert!(
        matches!(&err, GitHubError::Unauthorized { status: 401, repository } if repository == "acme/storefront"),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("wrong-token-value") && !format!("{err:?}").contains("wrong-token-value"),
        "{err}"
    );
    assert!(!format!("{lib:?}").contains(TOKEN));
    let not_github =
        rt.block_on(lib.open_pull_request("https://github.com/acme", "tier-0", "tier-1", "t", "b")).unwrap_err();
    assert!(matches!(not_github, GitHubError::NotGitHub { .. }), "{not_github}");
    let unreachable = GitHub { base_url: "http://127.0.0.1:1".into(), token: TOKEN.into() };
    let err = rt.block_on(unreachable.open_pull_request(url, "tier-0", "tier-1", "t", "b")).unwrap_err();
    assert!(matches!(err, GitHubError::Unreachable { .. }), "{err}");
    assert!(!err.to_string().contains(TOKEN));

    // The CLI: repositories named like GitHub's, served by git daemon.
    let fx = Fx::named("acme/shop-app", "acme/shop-config", "acme/shop-system");
    fx.sync(None);
    let t1 = head(&fx.app, "tier-1");
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    let before = gh.requests().len();
    let run = fx
        .promote_env(
            &["--skip-checks", "--pr", "--github-url", gh.url(), "-m", "checkout for everyone", "-vv"],
            &[("GITHUB_TOKEN", TOKEN)],
        )
        .success();
    let number = 42;
    run.has(&format!("opened pull request acme/shop-app #{number}: {}", html_url("acme", "shop-app", number)))
        .has(&format!("{} Checkout 1.1.0 ({AUTHOR})", short(&c1)))
        .lacks(TOKEN);
    assert_eq!(head(&fx.app, "tier-1"), t1, "--pr pushes nothing");
    let requests: Vec<_> = gh.requests().into_iter().skip(before).filter(|r| r.method == "POST").collect();
    assert_eq!(
        requests.len(),
        1,
        "one pull request, for the app only (the configuration is up to date): {requests:#?}"
    );
    let req = &requests[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/repos/acme/shop-app/pulls"));
    assert_eq!(req.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(req.body["title"], "Promote tier-0 to tier-1: checkout for everyone");
    assert_eq!(req.body["head"], "tier-0");
    assert_eq!(req.body["base"], "tier-1");
    let body = req.body["body"].as_str().expect("a body");
    let commit_line = format!("- {} Checkout 1.1.0 ({AUTHOR})", short(&c1));
    for want in [commit_line.as_str(), "checkout for everyone", "- `eu-west`", "- `us-east`", "`tier-0` into `tier-1`"]
    {
        assert!(body.contains(want), "the body lacks {want:?}:\n{body}");
    }

    // Again, with the token from a file: the open pull request is found, not duplicated.
    let token_file = fx.work.path().join("github-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();
    let run = fx
        .promote(&["--skip-checks", "--pr", "--github-url", gh.url(), "--github-token-file", token_file, "-o", "json"])
        .success();
    run.lacks(TOKEN);
    assert_eq!(
        run.json(),
        json!([{"repository": "acme/shop-app", "number": number, "url": html_url("acme", "shop-app", number), "alreadyExisted": true}])
    );
    assert_eq!(gh.pulls().len(), 2, "no duplicate pull request");

    // GITHUB_API_URL works as --github-url; a refused token fails (exit 1) without printing it.
    let run = fx
        .promote_env(&["--skip-checks", "--pr"], &[("GITHUB_TOKEN", "wrong-token-value"), ("GITHUB_API_URL", gh.url())])
        .failure(1);
    run.has_err("refused the token").has_err("acme/shop-app").lacks("wrong-token-value");
    // No token at all: said, before any request.
    let before = gh.requests().len();
    fx.promote(&["--skip-checks", "--pr", "--github-url", gh.url()]).failure(1).has_err("GITHUB_TOKEN");
    assert_eq!(gh.requests().len(), before);

    // tier-1 on hold: refused before any request; overridden, the pull request says so.
    let m = fx.m();
    let alice = [("GITHUB_TOKEN", TOKEN), ("USER", "alice")];
    fx.run_env(&["hold", "tier-1", "--reason", "incident 42", "-f", &m], &alice).success();
    let pr = ["--skip-checks", "--pr", "--github-url", gh.url()];
    fx.promote_env(&pr, &alice).failure(3).has_err("tier-1 is on hold since ").has_err(" by alice: incident 42");
    assert_eq!(gh.requests().len(), before);
    // The pull request is open already: the override goes on record as a comment on it.
    fx.promote_env(&[&pr[..], &["--override-policy"]].concat(), &alice).success().has("already open");
    let posted = gh.requests().into_iter().skip(before).find(|r| r.method == "POST").expect("a comment posted");
    assert_eq!(posted.path, format!("/repos/acme/shop-app/issues/{number}/comments"));
    let body = posted.body["body"].as_str().expect("a body");
    assert!(body.contains("### Promotion policy\n\nforced past tier-1's promotion policy by alice at "), "{body}");
    assert!(body.contains("tier-1 is on hold since "), "{body}");
}

/// The example repositories named like GitHub's, synced, with the stand-in serving their bare
/// repositories (so its merges move real branches) and a new app commit on tier-0, promoted with
/// `--pr`: returns the fixture, the commit, and tier-1's head before.
fn promotion_pull_request(gh: &GitHubStandIn) -> (Fx, String, String) {
    let fx = Fx::named("acme/shop-app", "acme/shop-config", "acme/shop-system");
    gh.serve_repo("acme", "shop-app", &fx.daemon.path("acme/shop-app"));
    gh.serve_repo("acme", "shop-config", &fx.daemon.path("acme/shop-config"));
    fx.sync(None);
    let t1 = head(&fx.app, "tier-1");
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    fx.promote_env(&["--skip-checks", "--pr", "--github-url", gh.url()], &[("GITHUB_TOKEN", TOKEN)])
        .success()
        .has("opened pull request acme/shop-app #41");
    (fx, c1, t1)
}

impl Fx {
    /// `shopctl merge-promotion tier-1 -f <manifests> --github-url <gh> <extra>` with the token.
    fn merge_promotion(&self, gh: &GitHubStandIn, extra: &[&str]) -> Run {
        let m = self.m();
        let mut args = vec!["merge-promotion", "tier-1", "-f", m.as_str(), "--github-url", gh.url()];
        args.extend_from_slice(extra);
        self.run_env(&args, &[("GITHUB_TOKEN", TOKEN)])
    }
}

#[test]
fn a_promotion_pull_request_is_merged_only_once_it_has_the_approvals_required() {
    let gh = GitHubStandIn::start(TOKEN);
    let (fx, c1, t1) = promotion_pull_request(&gh);
    assert_ne!(t1, c1);

    // 0 of 2: waits (exit 3), nothing merged.
    fx.merge_promotion(&gh, &["--approvals", "2"])
        .failure(3)
        .has_err("promotion pull request acme/shop-app#41 has 0 of 2 approving reviews; merge waits");
    assert_eq!(head(&fx.app, "tier-1"), t1);

    // Comments, and the author's own comment, are no approvals; 1 of 2 still waits and names who
    // approved. There are so many comments that alice's approval is on the second page.
    for _ in 0..100 {
        gh.record_review("acme", "shop-app", 41, "carol", ReviewEvent::Comment);
    }
    gh.record_review("acme", "shop-app", 41, BOT_LOGIN, ReviewEvent::Comment);
    gh.record_review("acme", "shop-app", 41, "alice", ReviewEvent::Approve);
    let run = fx.merge_promotion(&gh, &["--approvals", "2", "-o", "json"]).failure(3);
    run.has_err("promotion pull request acme/shop-app#41 has 1 of 2 approving reviews (alice); merge waits");
    assert_eq!(run.json()[0]["outcome"], "waiting", "{}", run.stdout);
    assert_eq!(run.json()[0]["approvedBy"], json!(["alice"]));
    assert_eq!(head(&fx.app, "tier-1"), t1);
    assert!(gh.requests().iter().all(|r| r.method != "PUT"), "no merge was attempted");
    let pages: Vec<_> =
        gh.requests().into_iter().filter(|r| r.path == "/repos/acme/shop-app/pulls/41/reviews").collect();
    assert_eq!(pages.last().and_then(|r| r.query.get("page")).map(String::as_str), Some("2"), "{pages:#?}");

    // The library says the same.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let lib = GitHub { base_url: gh.url().to_string(), token: TOKEN.to_string() };
    let pr = rt.block_on(lib.find_pull_request(&fx.app, "tier-0", "tier-1")).unwrap().expect("the open pull request");
    assert_eq!((pr.repository.as_str(), pr.number), ("acme/shop-app", 41));
    match rt.block_on(lib.merge_when_approved(&pr, 2)).unwrap() {
        MergeOutcome::Waiting(w) => assert_eq!((w.have, w.need, w.approved_by), (1, 2, vec!["alice".to_string()])),
        other => panic!("merged with 1 of 2 approvals: {other:?}"),
    }

    // 2 of 2: merged under the sha guard; tier-1 is now exactly tier-0's head.
    gh.record_review("acme", "shop-app", 41, "bob", ReviewEvent::Approve);
    let run = fx.merge_promotion(&gh, &["--approvals", "2"]).success();
    run.has(&format!("merged promotion pull request acme/shop-app#41 into tier-1 at {c1} (approved by alice, bob)"));
    assert_eq!(head(&fx.app, "tier-1"), c1);
    assert_eq!(head(&fx.app, "tier-1"), head(&fx.app, "tier-0"));
    let merge = gh.requests().into_iter().find(|r| r.method == "PUT").expect("a merge request");
    assert_eq!(merge.path, "/repos/acme/shop-app/pulls/41/merge");
    assert_eq!(merge.body["sha"], c1.as_str(), "the merge carries the approved head as its guard");
    assert_eq!(merge.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(gh.pulls()[0].merged_sha.as_deref(), Some(c1.as_str()));

    // The merge is a plain fast-forward in git: sync pins it as for any promotion.
    fx.sync(Some("tier-1"));
    assert_eq!(fx.pinned_app("tier-1"), c1);
    // Nothing left to merge: said, exit 1.
    fx.merge_promotion(&gh, &[]).failure(1).has_err("no open promotion pull request tier-0 -> tier-1");
}

#[test]
fn a_tier_s_promotion_pull_requests_are_merged_together_or_not_at_all() {
    let gh = GitHubStandIn::start(TOKEN);
    let fx = Fx::named("acme/shop-app", "acme/shop-config", "acme/shop-system");
    gh.serve_repo("acme", "shop-app", &fx.daemon.path("acme/shop-app"));
    gh.serve_repo("acme", "shop-config", &fx.daemon.path("acme/shop-config"));
    fx.sync(None);
    let (app_t1, config_t1) = (head(&fx.app, "tier-1"), head(&fx.config, "tier-1"));
    let app = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    let config =
        commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("debug"))], "Debug logging");
    let run =
        fx.promote_env(&["--skip-checks", "--pr", "--github-url", gh.url()], &[("GITHUB_TOKEN", TOKEN)]).success();
    run.has("opened pull request acme/shop-app #41").has("opened pull request acme/shop-config #42");

    // The app's is approved, the configuration's is not: neither is merged.
    gh.record_review("acme", "shop-app", 41, "alice", ReviewEvent::Approve);
    let run = fx.merge_promotion(&gh, &[]).failure(3);
    run.has("promotion pull request acme/shop-app#41 is approved (alice), merged with the others")
        .has_err("promotion pull request acme/shop-config#42 has 0 of 1 approving review; merge waits");
    assert_eq!((head(&fx.app, "tier-1"), head(&fx.config, "tier-1")), (app_t1, config_t1));
    assert!(gh.requests().iter().all(|r| r.method != "PUT"), "no merge was attempted");

    // Both approved: both merged, each branch at its tier-0 head.
    gh.record_review("acme", "shop-config", 42, "bob", ReviewEvent::Approve);
    let run = fx.merge_promotion(&gh, &["-o", "json"]).success();
    assert_eq!(
        run.json(),
        json!([
            {"outcome": "merged", "repository": "acme/shop-app", "number": 41, "sha": app, "approvedBy": ["alice"]},
            {"outcome": "merged", "repository": "acme/shop-config", "number": 42, "sha": config, "approvedBy": ["bob"]},
        ])
    );
    assert_eq!((head(&fx.app, "tier-1"), head(&fx.config, "tier-1")), (app.clone(), config.clone()));
}

#[test]
fn a_change_request_cancels_an_approval_and_a_head_moved_after_the_approvals_merges_nothing() {
    let gh = GitHubStandIn::start(TOKEN);
    let (fx, c1, t1) = promotion_pull_request(&gh);

    // alice approves, then asks for changes: her approval no longer counts.
    gh.record_review("acme", "shop-app", 41, "alice", ReviewEvent::Approve);
    gh.record_review("acme", "shop-app", 41, "alice", ReviewEvent::RequestChanges);
    fx.merge_promotion(&gh, &[]).failure(3).has_err(
        "promotion pull request acme/shop-app#41 has 0 of 1 approving review, changes requested by alice; merge waits",
    );
    assert_eq!(head(&fx.app, "tier-1"), t1);

    // She approves c1; then c2 lands on tier-0 (the pull request's head) before the merge:
    // GitHub refuses the guard (409), nothing is merged, and the error says why and what to do.
    gh.record_review("acme", "shop-app", 41, "alice", ReviewEvent::Approve);
    let c2 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.2.0"))], "Checkout 1.2.0");
    let run = fx.merge_promotion(&gh, &[]).failure(1);
    run.has_err(&format!(
        "promotion pull request acme/shop-app#41 was not merged: its head moved to {} after the approvals on {}",
        short(&c2),
        short(&c1)
    ))
    .has_err("fix: have the new commits reviewed and approved");
    assert_eq!(head(&fx.app, "tier-1"), t1, "nothing merged");
    assert_eq!(gh.pulls()[0].merged_sha, None, "the pull request stays open");

    // Approved again on c2, but GitHub says it is not mergeable (e.g. a required check): 405, said.
    gh.record_review("acme", "shop-app", 41, "alice", ReviewEvent::Approve);
    gh.set_mergeable("acme", "shop-app", 41, Some(false));
    fx.merge_promotion(&gh, &[]).failure(1).has_err(
        "GitHub will not merge promotion pull request acme/shop-app#41 (HTTP 405: Pull Request is not mergeable)",
    );
    assert_eq!(head(&fx.app, "tier-1"), t1);

    // Mergeable again: merged at c2, the commit approved.
    gh.set_mergeable("acme", "shop-app", 41, None);
    fx.merge_promotion(&gh, &[])
        .success()
        .has(&format!("merged promotion pull request acme/shop-app#41 into tier-1 at {c2} (approved by alice)"));
    assert_eq!(head(&fx.app, "tier-1"), c2);
}

// ---------------------------------------------------------------------------------------------
// 6. Rollback

#[test]
fn rollback_moves_the_branch_back_or_reverts_and_sync_pins_the_older_commit() {
    let fx = Fx::new();
    fx.sync(None);
    let c0 = fx.app_seed.clone();
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    let c2 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.2.0"))], "Checkout 1.2.0");
    fx.sync(Some("tier-0"));
    assert_eq!(fx.pinned_app("tier-0"), c2);
    let m = fx.m();

    // --dry-run says what would go and moves nothing.
    fx.run(&["rollback", "tier-0", "-f", &m, "--steps", "1", "--dry-run"]).success().has(&format!(
        "would move app tier-0 {} -> {}",
        short(&c2),
        short(&c1)
    ));
    assert_eq!(head(&fx.app, "tier-0"), c2);

    // --steps 1: back one commit; the output names what was undone.
    let run = fx.run(&["rollback", "tier-0", "-f", &m, "--steps", "1"]).success();
    run.has(&format!("moved back app tier-0 {} -> {}", short(&c2), short(&c1)))
        .has("undone:")
        .has(&format!("{} Checkout 1.2.0 ({AUTHOR})", short(&c2)));
    assert!(!run.stdout.contains("Checkout 1.1.0"), "{run}");
    assert_eq!(head(&fx.app, "tier-0"), c1);

    // sync pins the older commit.
    fx.sync(Some("tier-0"));
    assert_eq!(fx.pinned_app("tier-0"), c1);

    // A commit that is not in the branch's history (any more), or not at all: refused, named.
    fx.run(&["rollback", "tier-0", "-f", &m, "--to", &c2])
        .failure(2)
        .has_err(&c2)
        .has_err("not in the history of branch \"tier-0\"");
    let nowhere = "0123456789abcdef0123456789abcdef01234567";
    fx.run(&["rollback", "tier-0", "-f", &m, "--to", nowhere]).failure(2).has_err(nowhere);
    fx.run(&["rollback", "tier-0", "-f", &m, "--steps", "5"]).failure(2).has_err("5 steps");
    assert_eq!(head(&fx.app, "tier-0"), c1);

    // --revert: one new commit on top whose tree is the target's; history kept.
    let run = fx.run(&["rollback", "tier-0", "-f", &m, "--to", short(&c0), "--revert", "-o", "json"]).success();
    let done = run.json();
    let reverted = head(&fx.app, "tier-0");
    assert_eq!(done["head"], reverted.as_str());
    assert_eq!(done["previous"], c1.as_str());
    assert_eq!(done["reverted"], true);
    assert_eq!(done["undone"][0]["id"], c1.as_str());
    assert_eq!(
        fx.app_git(&["rev-parse", &format!("{reverted}^")]),
        c1,
        "the revert commit sits on top of the old head"
    );
    assert_eq!(
        fx.app_git(&["rev-parse", &format!("{reverted}^{{tree}}")]),
        fx.app_git(&["rev-parse", &format!("{c0}^{{tree}}")])
    );
    let history: Vec<String> = log(&fx.app, "tier-0").into_iter().map(|(sha, _)| sha).collect();
    assert_eq!(history, [reverted.clone(), c1.clone(), c0.clone()]);
    let subject = &log(&fx.app, "tier-0")[0].1;
    assert!(subject.starts_with("Revert tier-0 to"), "{subject}");
    fx.sync(Some("tier-0"));
    assert_eq!(fx.pinned_app("tier-0"), reverted);
}

// ---------------------------------------------------------------------------------------------
// 7. Status without a cluster

#[test]
fn status_without_a_cluster_reports_git_and_says_what_it_could_not_read() {
    let fx = Fx::new();
    fx.sync(None);
    let c0 = fx.app_seed.clone();
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    let m = fx.m();

    let status = fx.run(&["status", "-f", &m, "-o", "json"]).success().json();
    let views = status.as_array().expect("one view per tier");
    assert_eq!(views.iter().map(|v| v["tier"].as_str().unwrap()).collect::<Vec<_>>(), ["tier-0", "tier-1"]);
    let (t0, t1) = (&views[0], &views[1]);
    assert_eq!(t0["promotedFrom"], Value::Null);
    assert_eq!(t1["promotedFrom"], "tier-0");
    let g0 = &t0["git"];
    assert_eq!(g0["branch"], "tier-0");
    assert_eq!(g0["appHead"], c1.as_str());
    assert_eq!(g0["systemHead"], head(&fx.system, "tier-0").as_str());
    assert_eq!(g0["pinned"]["base"], c0.as_str());
    assert_eq!(g0["pinned"]["config/shop-config"], head(&fx.config, "tier-0").as_str());
    assert_eq!(g0["configurationHeads"]["shop-config"], head(&fx.config, "tier-0").as_str());
    assert_eq!(g0["pinnedAppReachable"], true);
    assert_eq!(g0["behind"], Value::Null);
    let g1 = &t1["git"];
    assert_eq!(g1["appHead"], c0.as_str());
    assert_eq!(g1["systemHead"], head(&fx.system, "tier-1").as_str());
    assert_eq!(g1["pinned"]["base"], c0.as_str());
    assert_eq!(g1["behind"], 1);
    assert_eq!(g1["ahead"], 0);
    for v in views {
        let unavailable = v["unavailable"].as_array().expect("unavailable");
        assert!(
            !unavailable.is_empty() && unavailable.iter().all(|u| u.as_str().unwrap().starts_with("cluster:")),
            "{v:#}"
        );
        assert_eq!(v["conditions"], json!([]));
        assert_eq!(v["applications"], json!([]));
    }

    let text = fx.run(&["status", "-f", &m]).success();
    text.has("Tier tier-0")
        .has("Tier tier-1 (promoted from tier-0)")
        .has(&format!("app            tier-0 {}", short(&c1)))
        .has("app branch has moved on: controller lagging")
        .has("behind tier-0: 1 commit(s); ahead: 0")
        .has("not read:");

    // An unreachable repository is said too, and the other tiers still show.
    let broken = std::fs::read_to_string(fx.manifests().join("tier-1.yaml"))
        .unwrap()
        .replace(&fx.app, &fx.daemon.url("missing"));
    std::fs::write(fx.manifests().join("tier-1.yaml"), broken).unwrap();
    let status = fx.run(&["status", "-f", &m, "-o", "json"]).success().json();
    assert_eq!(status[0]["git"]["appHead"], c1.as_str());
    assert_eq!(status[1]["git"], Value::Null);
    assert!(
        status[1]["unavailable"].as_array().unwrap().iter().any(|u| u.as_str().unwrap().starts_with("git:")),
        "{status:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. A promotion is never deployed half-way

/// A pre-receive hook on the server's configuration repository that refuses every push to tier-1.
fn refuse_config_pushes_to_tier_1(fx: &Fx) -> PathBuf {
    let hook = fx.daemon.path(repo_name(&fx.config)).join("hooks").join("pre-receive");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  if [ \"$ref\" = refs/heads/tier-1 ]; then\n    echo \"tier-1 is frozen\" >&2\n    exit 1\n  fi\ndone\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    hook
}

/// The configuration commit the system branch of `tier` pins.
fn pinned_config(fx: &Fx, tier: &str) -> String {
    fx.system_git(&["rev-parse", &format!("{tier}:config/shop-config")])
}

fn marker(fx: &Fx) -> Option<String> {
    shopset_e2e::gitserver::try_git(
        &fx.daemon.path(repo_name(&fx.system)),
        &["rev-parse", "--verify", "--quiet", "refs/shopset/promotions/tier-1"],
    )
    .ok()
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

#[test]
fn a_refused_configuration_push_holds_the_pins_until_promote_runs_again_and_pins_all_in_one_commit() {
    let fx = Fx::new();
    fx.sync(None);
    let m = fx.m();
    let (app_before, config_before) = (head(&fx.app, "tier-1"), head(&fx.config, "tier-1"));
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    let k1 =
        commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("debug"))], "Debug logging");
    fx.sync(Some("tier-0"));
    let system_before = head(&fx.system, "tier-1");

    // The app push goes through, the configuration push is refused by the server.
    let hook = refuse_config_pushes_to_tier_1(&fx);
    let run = fx.promote(&["--skip-checks"]).failure(1);
    run.has_err("rejected").has_err("tier-1 is frozen");
    assert_eq!(head(&fx.app, "tier-1"), c1, "the app branch moved");
    assert_eq!(head(&fx.config, "tier-1"), config_before, "the configuration branch did not");
    let id = marker(&fx).expect("the promotion marker stays while the promotion is incomplete");
    let text = fx.system_git(&["log", "-1", "--format=%B", &id]);
    assert!(text.starts_with("Promote tier-0 to tier-1\n"), "{text}");
    assert!(text.contains(&format!("app {app_before} {c1}")), "{text}");
    assert!(text.contains(&format!("config/shop-config {config_before} {k1}")), "{text}");

    // A sync (what the controller runs) keeps tier-1's pins: no new app with the old configuration.
    let sync = fx.run(&["sync", "-f", &m, "--tier", "tier-1"]).failure(3);
    sync.has_err("a promotion into it is in progress")
        .has_err("refs/shopset/promotions/tier-1")
        .has_err("shopctl promote tier-0 tier-1 -f MANIFESTS");
    assert_eq!(head(&fx.system, "tier-1"), system_before);
    assert_eq!(fx.pinned_app("tier-1"), app_before);
    assert_eq!(pinned_config(&fx, "tier-1"), config_before);

    // status and doctor say so, with the commands that finish or undo it.
    let status = fx.run(&["status", "tier-1", "-f", &m]).success();
    status
        .has("in progress: the promotion tier-0 -> tier-1 (refs/shopset/promotions/tier-1")
        .has("held until the promotion completes")
        .has("finish: shopctl promote tier-0 tier-1 -f MANIFESTS")
        .has("undo:   shopctl promote tier-0 tier-1 -f MANIFESTS --abort");
    let json = fx.run(&["status", "tier-1", "-f", &m, "-o", "json"]).success().json();
    assert_eq!(json[0]["git"]["promotion"]["id"], id.as_str(), "{json:#}");
    assert_eq!(json[0]["git"]["promotion"]["repositories"][1]["target"], k1.as_str(), "{json:#}");
    let doctor = fx.run(&["doctor", "tier-1", "-f", &m]).failure(3);
    doctor
        .has("the promotion tier-0 -> tier-1 did not complete")
        .has(&format!("shopctl promote tier-0 tier-1 -f {m}"))
        .has(&format!("shopctl promote tier-0 tier-1 -f {m} --abort"))
        .lacks("pins app");
    // The gate of a promotion from tier-1 refuses it while tier-1 is half-promoted.
    let git = shopset::state::read(&fx_cache(&fx), &Auth::default(), &inventory(&fx).tier_input("tier-1").unwrap())
        .expect("read tier-1");
    let refusals = shopset::gate::refusals(&git, &[]);
    assert!(refusals.iter().any(|r| r.contains("the promotion tier-0 -> tier-1 is in progress")), "{refusals:?}");

    // The same command again finishes it: the configuration moves, one system commit pins both.
    std::fs::remove_file(hook).unwrap();
    let run = fx.promote(&["--skip-checks"]).success();
    run.has("Finishing the promotion tier-0 -> tier-1")
        .has(&format!("moved config/shop-config tier-1 -> {}", short(&k1)))
        .lacks("moved app")
        .has("marker refs/shopset/promotions/tier-1 removed");
    assert_eq!(head(&fx.config, "tier-1"), k1);
    assert_eq!(marker(&fx), None, "the marker is removed");
    let commits = fx.system_git(&["rev-list", &format!("{system_before}..tier-1")]);
    assert_eq!(commits.lines().count(), 1, "one system commit: {commits}");
    let changed = fx.system_git(&["diff-tree", "--no-commit-id", "--name-only", "-r", "tier-1"]);
    assert!(changed.lines().any(|l| l == "base") && changed.lines().any(|l| l == "config/shop-config"), "{changed}");
    assert_eq!(fx.pinned_app("tier-1"), c1);
    assert_eq!(pinned_config(&fx, "tier-1"), k1);

    // Nothing is left to do for promote or sync.
    fx.promote(&["--skip-checks"]).success().has("nothing to promote");
    let system_after = head(&fx.system, "tier-1");
    fx.sync(Some("tier-1"));
    assert_eq!(head(&fx.system, "tier-1"), system_after);
}

#[test]
fn a_promotion_killed_between_pushes_is_undone_by_abort_and_a_complete_one_is_one_commit() {
    let fx = Fx::new();
    fx.sync(None);
    let (app_before, config_before) = (head(&fx.app, "tier-1"), head(&fx.config, "tier-1"));
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    let k1 =
        commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("debug"))], "Debug logging");
    let system_before = head(&fx.system, "tier-1");

    // Killed after the app push, before the configuration's (as SIGKILL would).
    let run = fx.promote_env(&["--skip-checks"], &[("SHOPSET_FAULT", "promote-between-pushes")]);
    assert_eq!(run.code, None, "the process was aborted at the fault point:\n{run}");
    assert_eq!(head(&fx.app, "tier-1"), c1);
    assert_eq!(head(&fx.config, "tier-1"), config_before);
    assert!(marker(&fx).is_some());
    fx.run(&["sync", "-f", &fx.m(), "--tier", "tier-1"]).failure(3);
    assert_eq!(head(&fx.system, "tier-1"), system_before);

    // --abort undoes it: the app branch goes back, the marker goes, the pins never moved.
    let preview = fx.promote(&["--abort", "--dry-run"]).success();
    preview.has("Undoing the promotion tier-0 -> tier-1");
    assert!(marker(&fx).is_some(), "a dry run writes nothing");
    let run = fx.promote(&["--abort"]).success();
    run.has(&format!("moved back app tier-1 -> {}", short(&app_before))).lacks("moved back config");
    assert_eq!(head(&fx.app, "tier-1"), app_before);
    assert_eq!(marker(&fx), None);
    assert_eq!(head(&fx.system, "tier-1"), system_before, "nothing to pin: the pins never moved");
    fx.promote(&["--abort"]).failure(2).has_err("no promotion into tier tier-1 is in progress");

    // A promotion that runs through: both branches, one system commit, no marker left.
    let run = fx.promote(&["--skip-checks"]).success();
    run.has(&format!("moved app tier-1 -> {}", short(&c1)))
        .has(&format!("moved config/shop-config tier-1 -> {}", short(&k1)))
        .has("one commit");
    assert_eq!(marker(&fx), None);
    assert_eq!(fx.system_git(&["rev-list", &format!("{system_before}..tier-1")]).lines().count(), 1);
    assert_eq!((fx.pinned_app("tier-1"), pinned_config(&fx, "tier-1")), (c1, k1));
}

fn fx_cache(fx: &Fx) -> GitCache {
    GitCache::new(fx.work.path().join("lib-cache"))
}

fn inventory(fx: &Fx) -> Inventory {
    Inventory::load(&[fx.manifests()]).expect("load manifests")
}

#[test]
fn rollback_moves_a_configuration_back_or_app_and_configuration_together_in_one_commit() {
    let fx = Fx::new();
    fx.sync(None);
    let m = fx.m();
    let (c0, k0) = (fx.app_seed.clone(), head(&fx.config, "tier-0"));
    let k1 = commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("debug"))], "Debug");
    fx.sync(Some("tier-0"));
    assert_eq!(pinned_config(&fx, "tier-0"), k1);

    // --configuration NAME: that configuration's branch, the app's stays.
    let run = fx.run(&["rollback", "tier-0", "-f", &m, "--configuration", "shop-config", "--steps", "1"]).success();
    run.has(&format!("moved back config/shop-config tier-0 {} -> {}", short(&k1), short(&k0)));
    assert_eq!(head(&fx.config, "tier-0"), k0);
    assert_eq!(head(&fx.app, "tier-0"), c0);
    fx.sync(Some("tier-0"));
    assert_eq!(pinned_config(&fx, "tier-0"), k0);
    fx.run(&["rollback", "tier-0", "-f", &m, "--configuration", "nope", "--steps", "1"])
        .failure(2)
        .has_err("uses no Configuration \"nope\"");

    // --app and --configuration: both move back and are pinned together, in one system commit.
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    let k2 = commit_files(&fx.config, "tier-0", &[("component/kustomization.yaml", &component("warn"))], "Warn");
    assert_eq!(fx.pinned_app("tier-0"), c0, "not synced yet");
    fx.sync(Some("tier-0"));
    assert_eq!((fx.pinned_app("tier-0"), pinned_config(&fx, "tier-0")), (c1, k2.clone()));
    let before = head(&fx.system, "tier-0");
    let both = ["rollback", "tier-0", "-f", &m, "--app", "--configuration", "shop-config", "--steps", "1"];

    // Killed between the two pushes: the pins hold; the same command again finishes it.
    let run = fx.run_env(&both, &[("SHOPSET_FAULT", "promote-between-pushes")]);
    assert_eq!(run.code, None, "aborted at the fault point:\n{run}");
    assert_eq!(head(&fx.app, "tier-0"), c0);
    assert_eq!(head(&fx.config, "tier-0"), k2);
    fx.run(&["sync", "-f", &m, "--tier", "tier-0"]).failure(3);
    assert_eq!(head(&fx.system, "tier-0"), before);
    fx.run(&["status", "tier-0", "-f", &m])
        .success()
        .has("in progress: the rollback of tier-0")
        .has("finish: shopctl rollback tier-0 -f MANIFESTS");
    let run = fx.run(&both).success();
    run.has("Finishing the rollback of tier-0")
        .has(&format!("moved back config/shop-config tier-0 -> {}", short(&k0)))
        .has("one commit");
    // k2 was committed on k0 (where the first rollback left the branch): one step back is k0.
    assert_eq!((head(&fx.app, "tier-0"), head(&fx.config, "tier-0")), (c0.clone(), k0.clone()));
    assert_eq!(fx.system_git(&["rev-list", &format!("{before}..tier-0")]).lines().count(), 1);
    assert_eq!((fx.pinned_app("tier-0"), pinned_config(&fx, "tier-0")), (c0, k0));
    assert!(fx.system_git(&["for-each-ref", "refs/shopset/"]).is_empty(), "the marker is removed");
}

// ---------------------------------------------------------------------------------------------
// The promotion policy

/// tier-1's promotion policy: a refusal with its words and exit 3 (and `status` saying the same),
/// an override recorded on the Tier, a hold set and released in the manifest, and a rollback that
/// holds promotions into the tier.
#[test]
fn the_promotion_policy_refuses_in_its_words_records_overrides_and_a_rollback_holds_the_tier() {
    let starting = std::thread::spawn(ControlPlane::start);
    let fx = Fx::new();
    fx.sync(None);
    let c1 = commit_files(&fx.app, "tier-0", &[("base/checkout.yaml", &checkout("1.1.0"))], "Checkout 1.1.0");
    fx.sync(Some("tier-0"));
    let system = head(&fx.system, "tier-0");
    let t1 = head(&fx.app, "tier-1");
    let m = fx.m();

    let cp = match starting.join() {
        Ok(cp) => cp,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let kubeconfig = cp.kubeconfig().to_str().expect("UTF-8 path").to_string();
    let kube = [("KUBECONFIG", kubeconfig.as_str()), ("USER", "alice")];
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    for app in ["canary-eu", "canary-us"] {
        apply_application(&cp, &fx, app);
        argocd_says_synced_healthy(&cp, app, &system);
    }

    // tier-1's policy: a soak of a day, and a deny window open all day, every day.
    let tier1 = fx.manifests().join("tier-1.yaml");
    let text = std::fs::read_to_string(&tier1).unwrap().replace(
        "    from: tier-0\n",
        "    from: tier-0\n    soak: 24h\n    windows:\n    - kind: deny\n      name: freeze\n      schedule: \"0 0 * * *\"\n      duration: 24h\n",
    );
    std::fs::write(&tier1, &text).unwrap();
    for file in ["tier-0.yaml", "tier-1.yaml"] {
        let yaml = std::fs::read_to_string(fx.manifests().join(file)).unwrap();
        cp.kubectl_with_stdin_ok(["apply", "-n", "default", "-f", "-"], &yaml);
    }
    // Written by hand: no controller runs here, and a controller would write a Deployed condition
    // 3 hours old only after 3 hours (tests wait for no clock). The controller writing it is
    // covered by shopset-kube's status tests and the e2e scenario. The soak is a day, so that
    // however slowly this test runs, it is not over.
    let since =
        shopset::policy::Timestamp::from_second(shopset::policy::Timestamp::now().as_second() - 3 * 3600).unwrap();
    let deployed = json!({"status": {"conditions": [
        {"type": "Deployed", "status": "True", "reason": "Deployed", "message": format!("2/2 at {}", short(&system)), "lastTransitionTime": since.to_string()},
    ]}})
    .to_string();
    cp.kubectl_ok([
        "patch",
        "tiers.shopset.dev",
        "tier-0",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        &deployed,
    ]);

    let run = fx.promote_env(&[], &kube).failure(3);
    run.has_err("refused by tier-1's promotion policy")
        .has_err("tier-0 has been Healthy for 3h")
        .has_err(" of 24h\n")
        .has_err("tier-1 is frozen with no end in sight (window 'freeze' opens again as it closes)")
        .has_err("--override-policy");
    assert_eq!(head(&fx.app, "tier-1"), t1, "a refused promotion moves nothing");
    let status = fx.run_env(&["status", "tier-1", "-f", &m, "-o", "json"], &kube).success().json();
    let promotion = &status[0]["promotion"];
    assert_eq!(promotion["promotable"], false, "{status:#}");
    let why = promotion["why"].as_array().expect("why");
    assert!(why[0].as_str().unwrap().starts_with("tier-0 has been Healthy for 3h"), "{status:#}");
    assert_eq!(why[1], "tier-1 is frozen with no end in sight (window 'freeze' opens again as it closes)");
    // A freeze with no end: waiting alone will not do.
    assert!(promotion.get("nextPossible").is_none(), "{status:#}");

    // Overridden: promoted, and recorded on Tier tier-1.
    let forced = fx.promote_env(&["--override-policy"], &kube).success();
    forced.has("forced past tier-1's promotion policy by alice at ");
    assert_eq!(head(&fx.app, "tier-1"), c1);
    let record = cp.kubectl_ok([
        "get",
        "tiers.shopset.dev",
        "tier-1",
        "-n",
        "default",
        "-o",
        "jsonpath={.metadata.annotations.shopset\\.dev/forced-promotion}",
    ]);
    assert!(record.starts_with("forced past tier-1's promotion policy by alice at "), "{record}");
    assert!(record.contains(" of 24h; tier-1 is frozen with no end in sight"), "{record}");

    // A hold, set and released in the manifest, and refused in its words in between.
    let policy_free = text.replace(
        "    soak: 24h\n    windows:\n    - kind: deny\n      name: freeze\n      schedule: \"0 0 * * *\"\n      duration: 24h\n",
        "",
    );
    std::fs::write(&tier1, &policy_free).unwrap();
    fx.run_env(&["hold", "tier-1", "--reason", "incident 42", "-f", &m], &kube).success().has("now on hold since");
    let held = std::fs::read_to_string(&tier1).unwrap();
    assert!(held.contains("    hold:\n      reason: \"incident 42\"\n      since: \"20"), "{held}");
    assert!(held.contains("      by: \"alice\"\n"), "{held}");
    let run = fx.promote_env(&[], &kube).failure(3);
    run.has_err("tier-1 is on hold since ").has_err(" by alice: incident 42").lacks("Healthy for");
    // --apply writes it to the cluster too, where kubectl shows it.
    fx.run_env(&["hold", "tier-1", "--reason", "incident 42", "--apply", "-f", &m], &kube)
        .success()
        .has("unchanged: on hold since")
        .has("applied to the cluster");
    let hold = |cp: &ControlPlane| {
        cp.kubectl_ok([
            "get",
            "tiers.shopset.dev",
            "tier-1",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.promotion.hold.reason}",
        ])
    };
    assert_eq!(hold(&cp), "incident 42");
    fx.run_env(&["release", "tier-1", "--apply", "-f", &m], &kube).success().has("now not on hold");
    assert_eq!(std::fs::read_to_string(&tier1).unwrap(), policy_free);
    assert_eq!(hold(&cp), "", "released in the cluster too");

    // A rollback holds promotions into tier-1, so that the next promotion does not undo it.
    let back = fx.run_env(&["rollback", "tier-1", "--steps", "1", "-f", &m], &kube).success();
    back.has("now on hold since").has("shopctl release tier-1");
    assert_eq!(head(&fx.app, "tier-1"), t1);
    let held = std::fs::read_to_string(&tier1).unwrap();
    assert!(held.contains(&format!("      reason: \"rolled back app {} -> {}\"\n", short(&c1), short(&t1))), "{held}");
    assert!(held.contains("      by: \"shopctl rollback (alice)\"\n"), "{held}");
    fx.promote_env(&[], &kube).failure(3).has_err("by shopctl rollback (alice): rolled back app ");
}
