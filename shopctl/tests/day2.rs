//! Day-2 commands against real git servers and a real API server: `shopctl diff` (what a
//! promotion would bring), `shopctl apply` (the manual path when Argo CD is down) and `shopctl
//! doctor` (each analyzer, from a failure built for real). One control plane for this binary.

mod common;

use std::convert::Infallible;
use std::net::TcpListener;

use common::{Fixture, example_manifest};
use shopset::revision::short;
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{branch_head, commit_files, git};
use shopset_e2e::tools::{repo_root, tools_bin};
use tempfile::TempDir;

/// PATH with the project's kustomize and kubectl first.
fn path_with_tools() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(tools_bin()).chain(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap().into_string().unwrap()
}

fn m(f: &Fixture) -> String {
    f.manifests().to_str().unwrap().to_string()
}

/// Commits the checkout image at `tag` on the app repository's `branch`.
fn bump_checkout(f: &Fixture, branch: &str, tag: &str) -> String {
    let base = std::fs::read_to_string(repo_root().join("examples/app/base/checkout.yaml")).unwrap();
    commit_files(
        &f.read_url("app"),
        branch,
        &[("base/checkout.yaml", &base.replace("checkout:1.0.0", &format!("checkout:{tag}")))],
        &format!("Bump checkout to {tag}"),
    )
}

/// The Problem lines of a doctor run.
fn problems(stdout: &str) -> Vec<String> {
    stdout.lines().filter_map(|l| l.trim().strip_prefix("Problem: ").map(str::to_string)).collect()
}

fn no_cluster() -> [(&'static str, &'static str); 1] {
    [("KUBECONFIG", "/nonexistent/kubeconfig")]
}

// ---------------------------------------------------------------------------------------------
// diff

#[test]
fn diff_lists_the_commits_and_the_changed_image_of_every_overlay() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    let before = branch_head(&f.app, "tier-1").unwrap();
    let v2 = bump_checkout(&f, "tier-0", "1.2.0");
    f.sync_ok(&["--tier", "tier-0"]);
    let path = path_with_tools();
    let env = [("PATH", path.as_str())];

    let run = f.shopctl_env(&["diff", "tier-0", "tier-1", "-f", &m(&f)], &env).success();
    let out = &run.stdout;
    assert!(out.contains(&format!("fast-forward tier-1 {} -> {} (1 commit)", short(&before), short(&v2))), "{run}");
    assert!(out.contains(&format!("{} Bump checkout to 1.2.0", short(&v2))), "{run}");
    assert!(out.contains("files: base/checkout.yaml"), "{run}");
    assert!(out.contains("config/shop-config   up to date"), "{run}");
    for ss in ["eu-west (namespace eu-west): changed", "us-east (namespace shops-us-east): changed"] {
        assert!(out.contains(&format!("ShopSet {ss}")), "{run}");
    }
    assert!(
        out.contains("-        image: ghcr.io/acme/checkout:1.0.0\n+        image: ghcr.io/acme/checkout:1.2.0"),
        "{run}"
    );
    assert!(out.contains("--- a/shopsets/eu-west\t(tier-1 now: app "), "{run}");
    assert!(!out.contains('\x1b'), "no colour off a terminal:\n{run}");
    // Only the image line changed: one hunk, one line out, one in.
    let eu = &out[out.find("ShopSet eu-west").unwrap()..out.find("ShopSet us-east").unwrap()];
    assert_eq!(eu.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).count(), 1, "{eu}");
    assert_eq!(eu.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count(), 1, "{eu}");

    // Colour when asked for.
    let color = f.shopctl_env(&["diff", "tier-0", "tier-1", "-f", &m(&f), "--color", "always"], &env).success();
    assert!(color.stdout.contains("\x1b[32m+        image: ghcr.io/acme/checkout:1.2.0\x1b[0m"), "{color}");

    // JSON: the commits and the per-ShopSet diffs.
    let json = f.shopctl_env(&["diff", "tier-0", "tier-1", "-f", &m(&f), "-o", "json"], &env).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json}"));
    let app = v["repositories"].as_array().unwrap().iter().find(|r| r["repository"] == "app").unwrap();
    assert_eq!(app["kind"], "fastForward");
    assert_eq!(app["commits"][0]["id"], v2.as_str());
    assert_eq!(app["commits"][0]["subject"], "Bump checkout to 1.2.0");
    assert_eq!(v["after"]["app"], v2.as_str());
    assert_eq!(v["now"]["app"], before.as_str());
    let shopsets = v["shopsets"].as_array().unwrap();
    assert_eq!(shopsets.len(), 2);
    for s in shopsets {
        assert_eq!(s["changed"], true, "{s}");
        assert!(s["diff"].as_str().unwrap().contains("+        image: ghcr.io/acme/checkout:1.2.0"), "{s}");
    }

    // diff moved nothing; after the promotion and a sync there is nothing left to show.
    assert_eq!(branch_head(&f.app, "tier-1").as_deref(), Some(before.as_str()));
    f.shopctl(&["promote", "tier-0", "tier-1", "-f", &m(&f), "--skip-checks"]).success();
    f.sync_ok(&["--tier", "tier-1"]);
    let after = f.shopctl_env(&["diff", "tier-0", "tier-1", "-f", &m(&f)], &env).success();
    assert!(after.stdout.contains("app                  up to date"), "{after}");
    assert!(after.stdout.contains("ShopSet eu-west (namespace eu-west): no change"), "{after}");
}

#[test]
fn diff_and_apply_show_progress_on_a_terminal_only() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    bump_checkout(&f, "tier-0", "1.2.0");
    f.sync_ok(&["--tier", "tier-0"]);
    let path = path_with_tools();
    let env = [("PATH", path.as_str())];
    let diff = ["diff", "tier-0", "tier-1", "-f", &m(&f)];

    // diff: each ShopSet of tier-1 as its overlays are built, with how many are left.
    let run = f.shopctl_in_terminal(&diff, &env);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.terminal.contains("building ShopSet eu-west (2 left)"), "{run}");
    assert!(run.terminal.contains("building ShopSet us-east (1 left)"), "{run}");
    assert!(!run.stdout.contains("building"), "progress went to stdout:\n{run}");
    assert!(run.stdout.contains("ShopSet eu-west (namespace eu-west): changed"), "{run}");
    let piped = f.shopctl_env(&diff, &env).success();
    assert_eq!(piped.stderr, "", "{piped}");
    let json = f.shopctl_in_terminal(&[&diff[..], &["-o", "json"]].concat(), &env);
    assert_eq!((json.code, json.terminal.as_str()), (Some(0), ""), "{json}");

    // apply: each ShopSet as it is applied. Without a cluster kubectl fails for each, but the
    // progress has named every one and the report says which failed.
    let apply = ["apply", "tier-0", "-f", &m(&f)];
    let no_cluster = [("PATH", path.as_str()), ("KUBECONFIG", "/nonexistent/kubeconfig")];
    let run = f.shopctl_in_terminal(&apply, &no_cluster);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.terminal.contains("applying ShopSet canary-eu (2 left)"), "{run}");
    assert!(run.terminal.contains("applying ShopSet canary-us (1 left)"), "{run}");
    assert!(run.stdout.contains("ShopSet canary-us: failed"), "{run}");
    let piped = f.shopctl_env(&apply, &no_cluster).failure(1);
    assert!(!piped.stderr.contains("applying ShopSet"), "{piped}");
    assert!(piped.stderr.starts_with("error: ShopSet canary-eu: `kubectl apply"), "{piped}");
}

// ---------------------------------------------------------------------------------------------
// doctor, git analyzers (no cluster)

#[test]
fn doctor_passes_healthy_tiers_and_says_what_it_could_not_check() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    let run = f.shopctl_env(&["doctor", "-f", &m(&f)], &no_cluster()).success();
    assert!(problems(&run.stdout).is_empty(), "{run}");
    assert!(run.stdout.contains("ok: git, branch-missing, stale-pin, pin-unreachable, hotfix-not-merged"), "{run}");
    assert!(
        run.stdout.contains("not checked: tier-not-ready, auto-promotion, credentials, application: no cluster"),
        "{run}"
    );
    assert!(run.stdout.contains("not checked: webhook: no --controller-url given"), "{run}");
    assert!(run.stdout.trim_end().ends_with("no problems found"), "{run}");

    let json = f.shopctl_env(&["doctor", "-f", &m(&f), "-o", "json"], &no_cluster()).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["problems"], 0);
    assert_eq!(v["tiers"].as_array().unwrap().len(), 2);
}

#[test]
fn doctor_finds_a_lagging_controller() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    let pinned = branch_head(&f.app, "tier-0").unwrap();
    let head = bump_checkout(&f, "tier-0", "1.2.0");
    let run = f.shopctl_env(&["doctor", "tier-0", "-f", &m(&f)], &no_cluster()).failure(3);
    let p = problems(&run.stdout);
    assert_eq!(
        p,
        [format!(
            "the system branch tier-0 pins app {}, but the app branch tier-0 is at {} (1 commit not deployed)",
            short(&pinned),
            short(&head)
        )],
        "{run}"
    );
    assert!(
        run.stdout.contains("the app head was committed ")
            && run.stdout.contains("s ago; the controller pins a new head within the Tier's interval (1m)"),
        "{run}"
    );
    assert!(run.stdout.contains(&format!("shopctl sync -f {} --tier tier-0", m(&f))), "{run}");
    assert!(run.stderr.contains("doctor found 1 problem"), "{run}");

    // JSON names the analyzer; the suggested fix clears it.
    let json = f.shopctl_env(&["doctor", "tier-0", "-f", &m(&f), "-o", "json"], &no_cluster()).failure(3);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["tiers"][0]["findings"][0]["check"], "stale-pin");
    f.sync_ok(&["--tier", "tier-0"]);
    f.shopctl_env(&["doctor", "tier-0", "-f", &m(&f)], &no_cluster()).success();
}

#[test]
fn doctor_finds_missing_tier_branches() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    let run = f.shopctl_env(&["doctor", "tier-1", "-f", &m(&f)], &no_cluster()).failure(3);
    let p = problems(&run.stdout);
    assert_eq!(
        p,
        [
            format!("the app repository {} has no branch tier-1", f.app),
            format!("the configuration shop-config repository {} has no branch tier-1", f.config),
            format!("the system repository {} has no branch tier-1", f.system),
        ],
        "{run}"
    );
    assert!(
        run.stdout.contains("the controller creates it from branch tier-0 of the tier it is promoted from"),
        "{run}"
    );
    assert!(
        run.stdout.contains(
            "git -C repo push --force-with-lease=tier-1: origin refs/remotes/origin/tier-0:refs/heads/tier-1"
        ),
        "{run}"
    );
}

#[test]
fn doctor_finds_a_pinned_commit_that_was_force_pushed_away() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    let pinned = bump_checkout(&f, "tier-0", "1.2.0");
    f.sync_ok(&["--tier", "tier-0"]);
    // Someone rewrites tier-0: the pinned commit is on no branch any more.
    let tmp = TempDir::new().unwrap();
    git(tmp.path(), &["clone", "--quiet", "--branch", "tier-0", &f.read_url("app"), "work"]);
    let work = tmp.path().join("work");
    git(&work, &["commit", "--quiet", "--amend", "-m", "Bump checkout to 1.2.0 (reworded)"]);
    git(&work, &["push", "--quiet", "--force", "origin", "tier-0"]);

    let run = f.shopctl_env(&["doctor", "tier-0", "-f", &m(&f)], &no_cluster()).failure(3);
    let p = problems(&run.stdout);
    assert!(
        p.contains(&format!(
            "the system branch tier-0 pins app commit {}, which no branch of {} contains any more",
            short(&pinned),
            f.app
        )),
        "{run}"
    );
    assert!(run.stdout.contains("someone rewrote branch tier-0 (a force push)"), "{run}");
    // The controller is also behind the rewritten branch.
    assert!(p.iter().any(|l| l.starts_with(&format!("the system branch tier-0 pins app {}", short(&pinned)))), "{run}");
}

#[test]
fn doctor_finds_a_hotfix_not_merged_back() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    commit_files(&f.read_url("app"), "tier-1", &[("HOTFIX.md", "hotfix\n")], "Hotfix on tier-1");
    f.sync_ok(&["--tier", "tier-1"]);
    let run = f.shopctl_env(&["doctor", "-f", &m(&f)], &no_cluster()).failure(3);
    assert_eq!(
        problems(&run.stdout),
        ["the app branch tier-1 has 1 commit(s) that tier-0 lacks (a hotfix not merged back)"],
        "{run}"
    );
    assert!(run.stdout.contains("git checkout tier-0 && git merge origin/tier-1 && git push origin tier-0"), "{run}");
}

/// Serves `body` as /metrics on 127.0.0.1, line by line in chunks (no Content-Length), as a
/// server streaming its answer does.
fn metrics_server(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let metrics = axum::routing::get(move || {
        let lines: Vec<Result<String, Infallible>> = body.lines().map(|l| Ok(format!("{l}\n"))).collect();
        async move { axum::body::Body::from_stream(futures::stream::iter(lines)) }
    });
    let app = axum::Router::new().route("/metrics", metrics);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

#[test]
fn doctor_reads_webhook_deliveries_from_the_controller_metrics() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    // The controller's own metrics encoding: no delivery yet.
    let metrics = shopset::metrics::Metrics::default();
    let url = metrics_server(metrics.encode());
    let run = f.shopctl_env(&["doctor", "-f", &m(&f), "--controller-url", &url], &no_cluster()).failure(3);
    assert_eq!(problems(&run.stdout), ["the controller has seen no webhook delivery since it started"], "{run}");
    assert!(run.stdout.contains("/hooks/github"), "{run}");

    metrics.webhooks.inc();
    let url = metrics_server(metrics.encode());
    let run = f
        .shopctl_env(&["doctor", "-f", &m(&f), "--controller-url", &format!("{url}/metrics")], &no_cluster())
        .success();
    assert!(run.stdout.contains("ok: webhook"), "{run}");

    // An answer other than 200: said so, with the status.
    let run = f
        .shopctl_env(&["doctor", "-f", &m(&f), "--controller-url", &format!("{url}/elsewhere")], &no_cluster())
        .failure(3);
    assert!(problems(&run.stdout)[0].ends_with(&format!("{url}/elsewhere/metrics answered 404 Not Found")), "{run}");

    // Nothing listening: said so, with how to reach the controller.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let run = f
        .shopctl_env(&["doctor", "-f", &m(&f), "--controller-url", &format!("http://{closed}")], &no_cluster())
        .failure(3);
    assert!(
        problems(&run.stdout)[0]
            .starts_with(&format!("cannot read the controller's metrics at http://{closed}/metrics")),
        "{run}"
    );
}

// ---------------------------------------------------------------------------------------------
// apply and doctor against one real API server

/// An Application as the controller renders it, with a status written by hand (no Argo CD here).
fn application(f: &Fixture, name: &str, sync: &str, health: &str, revision: &str, target: &str) -> String {
    let rendered = f.system_git(&["show", &format!("tier-0:applications/{name}.yaml")]);
    let mut app: serde_yaml::Value = serde_yaml::from_str(&rendered).unwrap();
    app["spec"]["source"]["targetRevision"] = target.into();
    let status = format!("sync: {{status: {sync}, revision: {revision}}}\nhealth: {{status: {health}}}\n");
    app["status"] = serde_yaml::from_str(&status).unwrap();
    serde_yaml::to_string(&app).unwrap()
}

#[test]
fn apply_and_doctor_against_a_real_api_server() {
    let cp = ControlPlane::start();
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    let kubeconfig = cp.kubeconfig().to_str().unwrap().to_string();
    let path = path_with_tools();
    let env = [("PATH", path.as_str()), ("KUBECONFIG", kubeconfig.as_str())];
    let system_head = branch_head(&f.system, "tier-0").unwrap();

    // --- apply --dry-run=server: the server checks, nothing is stored.
    let dry = f.shopctl_env(&["apply", "tier-0", "-f", &m(&f), "--dry-run=server"], &env).success();
    assert!(dry.stdout.contains("namespace/canary-eu serverside-applied (server dry run)"), "{dry}");
    assert!(dry.stdout.contains("object(s) in namespace canary-eu, which does not exist yet"), "{dry}");
    assert!(!cp.kubectl(["get", "namespace", "canary-eu"]).status.success(), "a dry run created the namespace");
    cp.kubectl_ok(["create", "namespace", "canary-us"]);
    let dry = f.shopctl_env(&["apply", "tier-0", "-f", &m(&f), "--shopset", "canary-us", "--dry-run"], &env).success();
    assert!(dry.stdout.contains("deployment.apps/checkout serverside-applied (server dry run)"), "{dry}");
    assert!(!dry.stdout.contains("canary-eu"), "--shopset applies one ShopSet only:\n{dry}");
    assert_eq!(
        cp.kubectl_ok(["-n", "canary-us", "get", "deployments,services", "-o", "name"]),
        "",
        "a dry run created objects"
    );

    // --- apply: every overlay's Deployments and Services appear in its namespace.
    let run = f.shopctl_env(&["apply", "tier-0", "-f", &m(&f)], &env).success();
    assert!(
        run.stdout.contains(&format!(
            "Applying tier tier-0 from {} branch tier-0 at {}",
            f.system,
            short(&system_head)
        )),
        "{run}"
    );
    assert!(run.stdout.contains("ShopSet canary-eu: kustomize build shopsets/canary-eu | kubectl apply --server-side --field-manager=shopset-manual --force-conflicts -f -"), "{run}");
    for (ns, tag) in [("canary-eu", "1.0.0"), ("canary-us", "1.1.0-rc.1")] {
        let objects = cp.kubectl_ok(["-n", ns, "get", "deployments,services", "-o", "name"]);
        assert_eq!(
            objects.lines().collect::<Vec<_>>(),
            ["deployment.apps/checkout", "deployment.apps/storefront", "service/checkout", "service/storefront"],
            "{ns}"
        );
        let image = cp.kubectl_ok([
            "-n",
            ns,
            "get",
            "deployment",
            "checkout",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]);
        assert_eq!(image, format!("ghcr.io/acme/checkout:{tag}"));
        let managers = cp.kubectl_ok([
            "-n",
            ns,
            "get",
            "deployment",
            "checkout",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ]);
        assert!(managers.split_whitespace().any(|m| m == "shopset-manual"), "{managers}");
    }
    // JSON says what was applied.
    let json =
        f.shopctl_env(&["apply", "tier-0", "-f", &m(&f), "--shopset", "canary-eu", "-o", "json"], &env).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["commit"], system_head.as_str());
    assert!(
        v["applied"][0]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "deployment.apps/storefront serverside-applied"),
        "{json}"
    );

    // Errors name the ShopSet and the command.
    let missing = f.shopctl_env(&["apply", "tier-0", "-f", &m(&f), "--shopset", "nope"], &env).failure(1);
    assert!(
        missing.stderr.contains("ShopSet nope: branch tier-0 of")
            && missing.stderr.contains("(it has: canary-eu, canary-us)"),
        "{missing}"
    );
    let down = f
        .shopctl_env(
            &["apply", "tier-0", "-f", &m(&f), "--shopset", "canary-eu"],
            &[("PATH", path.as_str()), ("KUBECONFIG", "/nonexistent/kubeconfig")],
        )
        .failure(1);
    assert!(down.stderr.contains("ShopSet canary-eu: `kubectl apply --server-side --field-manager=shopset-manual --force-conflicts -f -` failed"), "{down}");

    // Over smart HTTP behind basic auth, shopctl's credentials reach git clone and its submodule
    // clones (through the environment, never the command line or the output).
    let h = Fixture::http("shop", "s3cret-pw");
    let creds = [("SHOPSET_GIT_USERNAME", "shop"), ("SHOPSET_GIT_PASSWORD", "s3cret-pw")];
    h.shopctl_env(&["sync", "-f", &m(&h), "--tier", "tier-0"], &creds).success();
    let mut http_env = env.to_vec();
    http_env.extend(creds);
    let run = h
        .shopctl_env(&["apply", "tier-0", "-f", &m(&h), "--shopset", "canary-eu", "--dry-run=server"], &http_env)
        .success();
    assert!(run.stdout.contains("deployment.apps/checkout serverside-applied (server dry run)"), "{run}");
    assert!(!run.stdout.contains("s3cret-pw") && !run.stderr.contains("s3cret-pw"), "{run}");
    let refused = h
        .shopctl_env(
            &["apply", "tier-0", "-f", &m(&h), "--dry-run=server"],
            &[("PATH", path.as_str()), ("SHOPSET_GIT_USERNAME", "shop"), ("SHOPSET_GIT_PASSWORD", "wr0ng-pw")],
        )
        .failure(1);
    assert!(refused.stderr.contains(&format!("cannot clone branch tier-0 of {} with its submodules: `git clone --quiet --recurse-submodules --branch tier-0 {}", h.system, h.system)), "{refused}");
    assert!(!refused.stderr.contains("wr0ng-pw"), "{refused}");

    // --- doctor with a cluster: Tier not applied, then not Ready, then Applications.
    let doctor = |extra: &[&str]| {
        let mut args = vec!["doctor", "tier-0", "-f"];
        let manifests = m(&f);
        args.push(&manifests);
        args.extend_from_slice(extra);
        f.shopctl_env(&args, &env)
    };
    let run = doctor(&[]).failure(3);
    let p = problems(&run.stdout);
    assert!(p.contains(&"Tier default/tier-0 is not applied to the cluster".to_string()), "{run}");
    assert!(p.contains(&"ShopSet canary-eu: Application argocd/canary-eu: it does not exist".to_string()), "{run}");
    assert!(!run.stdout.contains("not checked: tier-not-ready"), "{run}");

    cp.kubectl_ok(["apply", "--server-side", "-f", &m(&f)]);
    let run = doctor(&[]).failure(3);
    assert!(problems(&run.stdout).contains(&"Tier default/tier-0 has no Ready condition".to_string()), "{run}");
    // A Tier condition written by hand: no controller runs in this test (doctor is the unit under
    // test); the controller writing the same reason for an unreachable repository is covered by
    // e2e/tests/faults.rs.
    let not_ready = concat!(
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"GitUnavailable","#,
        r#""message":"repository git://git.invalid/app.git is unreachable","#,
        r#""lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#
    );
    cp.kubectl_ok(["patch", "tier", "tier-0", "--subresource=status", "--type=merge", "-p", not_ready]);
    let run = doctor(&[]).failure(3);
    assert!(
        problems(&run.stdout).contains(
            &"Tier default/tier-0 is not Ready: GitUnavailable: repository git://git.invalid/app.git is unreachable"
                .to_string()
        ),
        "{run}"
    );
    assert!(run.stdout.contains("kubectl -n default describe tier tier-0"), "{run}");

    // Applications: one pointing at another branch than the tier's. Their statuses are written by
    // hand (this plane runs no Argo CD), and only as Synced and Healthy at the system head, so the
    // one problem is the spec's; Argo CD's own verdicts (OutOfSync in a freeze, Degraded, a
    // previous revision, ComparisonError) reach doctor in e2e/tests/argocd_gate.rs.
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let apps = format!(
        "{}---\n{}",
        application(&f, "canary-eu", "Synced", "Healthy", &system_head, "main"),
        application(&f, "canary-us", "Synced", "Healthy", &system_head, "tier-0")
    );
    cp.kubectl_with_stdin_ok(["apply", "--server-side", "-f", "-"], &apps);
    let ready = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Synced","message":"ok","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#;
    cp.kubectl_ok(["patch", "tier", "tier-0", "--subresource=status", "--type=merge", "-p", ready]);
    let run = doctor(&[]).failure(3);
    assert_eq!(
        problems(&run.stdout),
        ["ShopSet canary-eu: Application argocd/canary-eu: it points at revision main, not the tier branch"
            .to_string()],
        "{run}"
    );
    assert!(run.stdout.contains("-f applications/canary-eu.yaml"), "the fix applies the rendered Application: {run}");

    // Healthy: exit 0.
    let apps = application(&f, "canary-eu", "Synced", "Healthy", &system_head, "tier-0");
    cp.kubectl_with_stdin_ok(["apply", "--server-side", "--force-conflicts", "-f", "-"], &apps);
    let run = doctor(&[]).success();
    assert!(
        run.stdout.contains(
            "ok: git, branch-missing, stale-pin, pin-unreachable, hotfix-not-merged, promotion-in-progress, tier-not-ready, auto-promotion, application"
        ),
        "{run}"
    );

    // --- the credentials Secret a Tier names.
    let tier0 = example_manifest("tier-0.yaml")
        .replace("  interval: 1m", "  interval: 1m\n  credentials:\n    secretRef:\n      name: git-credentials");
    f.write_manifest("tier-0.yaml", &tier0);
    let run = doctor(&[]).failure(3);
    assert_eq!(
        problems(&run.stdout),
        ["Secret default/git-credentials, named by Tier tier-0's spec.credentials.secretRef, does not exist"],
        "{run}"
    );
    assert!(run.stdout.contains("kubectl -n default create secret generic git-credentials --from-literal=username=<user> --from-literal=password=<token>"), "{run}");
    cp.kubectl_ok([
        "create",
        "secret",
        "generic",
        "git-credentials",
        "--from-literal=username=u",
        "--from-literal=password=p",
    ]);
    let run = doctor(&[]).success();
    assert!(run.stdout.contains("credentials"), "{run}");
}
