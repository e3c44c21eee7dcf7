//! Security properties of the running controller, against real parts: a real control plane,
//! a git smart-HTTP server behind basic auth (lighttpd + git http-backend), a git daemon, and the
//! `shopset-controller` binary as a process.
//!
//! - Git credentials given through the Tier's `spec.credentials.secretRef` reach git and nothing
//!   else: not a log line (text or JSON, at debug level), not an Event, not a status, not an
//!   error message (the controller's or `shopctl`'s), not a commit or file in any repository,
//!   not the controller's git cache — neither the right password nor a wrong one.
//! - GitHub webhooks without a valid HMAC-SHA256 signature get 401 and start nothing, bodies over
//!   1 MiB get 413, and a validly signed push gets 202 and a sync.
//!
//! Needs `e2e/install-tools` and `cargo build --workspace`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopset_e2e::gitserver::{GitDaemon, HttpGitServer, branch_head, commit_files};
use shopset_e2e::tools::{path_env, workspace_bin};
use support::*;

/// Number of tests in this file (the last one to finish stops the shared control plane).
const TESTS: usize = 2;

const USER: &str = "shopset-bot";
const PASSWORD: &str = "tok-3f9c1a7e-DO-NOT-LEAK";
/// What the Secret holds for a while: wrong, and just as secret.
const WRONG_PASSWORD: &str = "tok-0b5d92e4-WRONG-DO-NOT-LEAK";
const SECRET_NAME: &str = "git-credentials";

fn apply_secret(cp: &support::Plane, ns: &str, password: &str) {
    let manifest = secret_manifest(ns, password);
    cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &manifest);
}

fn secret_manifest(ns: &str, password: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: {SECRET_NAME}
  namespace: {ns}
type: Opaque
stringData:
  username: {USER}
  password: {password}
"
    )
}

#[test]
fn credentials_appear_in_no_log_event_status_message_or_commit() {
    let test = "credentials";
    let cp = Plane::shared(TESTS);
    let server = HttpGitServer::start(USER, PASSWORD);
    for repo in ["shop-app", "shop-config", "shop-system"] {
        server.create_repo(repo);
    }
    let opts = TierOptions { interval: "3s".into(), credentials: Some(SECRET_NAME.into()) };
    let s = Setup::new(&cp, "security-credentials", |r| server.url(r), |r| server.authed_url(r), &opts);
    apply_secret(&cp, &s.ns, PASSWORD);
    s.apply(&cp);
    let system_repo = server.path("shop-system");
    let mut ctl = Controller::new(&cp, s.work.path(), &s.ns, "controller");
    let run = Run::new("credentials-replica");

    // The whole flow with the right password: first sync, an app bump.
    ctl.start(&run);
    let app0 = branch_head(&server.authed_url("shop-app"), "main").expect("app main");
    wait_converged(&cp, &s, &system_repo, &app0, Duration::from_secs(90), &ctl);
    let app1 = commit_files(&server.authed_url("shop-app"), TIER, &[("base/CHANGELOG.md", "bump\n")], "bump");
    wait_converged(&cp, &s, &system_repo, &app1, Duration::from_secs(45), &ctl);
    phase(test, "synced and bumped over basic auth");

    // A wrong password: errors, in status, Events and the log.
    apply_secret(&cp, &s.ns, WRONG_PASSWORD);
    let (_, reason, message) = wait_until("Ready=False with the wrong password", Duration::from_secs(45), &ctl, || {
        let r = s.ready(&cp);
        (r.0 == "False").then_some(r)
    });
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    assert!(
        message.contains(&server.url("shop-app")) || message.contains(&format!("127.0.0.1:{}", server.port())),
        "{message}"
    );
    phase(test, &format!("wrong password: {message}"));
    ctl.stop();

    // Again with JSON logs at debug level: still failing, then the right password again.
    ctl.start(&run.clone().json().rust_log("debug"));
    wait_until("an authentication failure logged as JSON", Duration::from_secs(45), &ctl, || {
        (ctl.errors("AuthenticationFailed") >= 1.0).then_some(())
    });
    apply_secret(&cp, &s.ns, PASSWORD);
    let app2 = commit_files(&server.authed_url("shop-app"), TIER, &[("base/CHANGELOG.md", "bump 2\n")], "bump 2");
    wait_converged(&cp, &s, &system_repo, &app2, Duration::from_secs(60), &ctl);
    let json_log = ctl.log_since_start();
    ctl.stop();
    phase(test, "JSON run: failed, then synced");

    // The CLI with the wrong password prints its error (text and JSON output).
    let creds = s.work.path().join("credentials.yaml");
    std::fs::write(&creds, secret_manifest(&s.ns, WRONG_PASSWORD)).expect("write credentials manifest");
    let mut cli_output = String::new();
    for format in ["text", "json"] {
        let out = Command::new(workspace_bin("shopctl"))
            .arg("--cache-dir")
            .arg(s.work.path().join("shopctl-cache"))
            .arg("--credentials")
            .arg(&creds)
            .args(["--color", "never", "-o", format, "-vv", "sync", "-f"])
            .arg(&s.manifests)
            .env("PATH", path_env())
            .stdin(Stdio::null())
            .output()
            .expect("run shopctl");
        assert!(!out.status.success(), "shopctl sync with a wrong password fails");
        cli_output.push_str(&String::from_utf8_lossy(&out.stdout));
        cli_output.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(cli_output.contains("authentication"), "shopctl says why it failed:\n{cli_output}");

    // Non-vacuous: the failures were recorded everywhere we look.
    let logs = ctl.all_logs();
    assert!(logs.contains("AuthenticationFailed"), "the log has the failures:\n{logs}");
    let json_lines = json_log.lines().filter(|l| l.starts_with('{')).count();
    assert!(
        json_lines > 10 && json_log.contains("\"level\":\"DEBUG\"") && json_log.contains("AuthenticationFailed"),
        "a JSON debug log with the failures:\n{json_log}"
    );
    let events = cp.kubectl_ok(["get", "events", "-n", &s.ns, "-o", "yaml"]);
    assert!(events.contains("AuthenticationFailed"), "{events}");

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("controller logs".into(), logs.into_bytes()),
        ("shopctl output".into(), cli_output.into_bytes()),
        ("Events".into(), events.into_bytes()),
        (
            "Events of the Argo CD namespace".into(),
            cp.kubectl_ok(["get", "events", "-n", &s.argocd_ns, "-o", "yaml"]).into_bytes(),
        ),
        (
            "Tier, ShopSet and Configuration objects".into(),
            cp.kubectl_ok(["get", "tiers,shopsets,configurations", "-n", &s.ns, "-o", "yaml"]).into_bytes(),
        ),
        ("kubectl describe tier".into(), cp.kubectl_ok(["describe", "tier", TIER, "-n", &s.ns]).into_bytes()),
        ("Applications".into(), cp.kubectl_ok(["get", "applications", "-n", &s.argocd_ns, "-o", "yaml"]).into_bytes()),
        ("Lease".into(), cp.kubectl_ok(["get", "leases", "-n", &s.ns, "-o", "yaml"]).into_bytes()),
    ];
    for repo in ["shop-app", "shop-config", "shop-system"] {
        haystacks.push((format!("every object and ref of the {repo} repository"), repository_dump(&server.path(repo))));
    }
    for cached in std::fs::read_dir(ctl.cache_dir()).expect("read the controller's cache").flatten() {
        haystacks
            .push((format!("the controller's cache {}", cached.path().display()), repository_dump(&cached.path())));
    }
    let mut secrets = vec![];
    for password in [PASSWORD, WRONG_PASSWORD] {
        secrets.push(password.to_string());
        secrets.push(base64(password.as_bytes()));
        secrets.push(base64(format!("{USER}:{password}").as_bytes())); // a Basic auth header
    }
    for (what, hay) in &haystacks {
        for secret in &secrets {
            assert!(
                !contains(hay, secret.as_bytes()),
                "{what} contain the secret {secret:?}:\n{}",
                String::from_utf8_lossy(hay)
            );
        }
    }
    phase(
        test,
        &format!(
            "no secret in {} places ({} bytes)",
            haystacks.len(),
            haystacks.iter().map(|h| h.1.len()).sum::<usize>()
        ),
    );
}

/// Everything a repository holds: every object's content, refs, reflogs, config and FETCH_HEAD.
fn repository_dump(repo: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let objects = Command::new("git")
        .args(["cat-file", "--batch-all-objects", "--batch", "--unordered"])
        .current_dir(repo)
        .env("GIT_DIR", repo)
        .stdin(Stdio::null())
        .output()
        .expect("git cat-file");
    assert!(
        objects.status.success(),
        "git cat-file in {}: {}",
        repo.display(),
        String::from_utf8_lossy(&objects.stderr)
    );
    assert!(!objects.stdout.is_empty(), "{} holds objects", repo.display());
    out.extend(objects.stdout);
    let refs = Command::new("git").args(["for-each-ref"]).env("GIT_DIR", repo).output().expect("git for-each-ref");
    out.extend(refs.stdout);
    for file in ["config", "FETCH_HEAD", "packed-refs", "HEAD", "description"] {
        out.extend(std::fs::read(repo.join(file)).unwrap_or_default());
    }
    if let Ok(walk) = std::fs::read_dir(repo.join("logs")) {
        for entry in walk.flatten() {
            out.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn webhooks_without_a_valid_signature_or_too_big_are_refused_and_start_nothing() {
    let test = "webhook";
    let cp = Plane::shared(TESTS);
    let daemon = GitDaemon::start();
    // Polling hourly: within the test only a webhook can start a sync.
    let opts = TierOptions { interval: "1h".into(), ..TierOptions::default() };
    let s = Setup::on_daemon(&cp, &daemon, "security-webhook", &opts);
    s.apply(&cp);
    let system_repo = daemon.path("shop-system");
    let mut ctl = Controller::new(&cp, s.work.path(), &s.ns, "controller");
    ctl.start(&Run::new("webhook-replica"));
    let app0 = branch_head(&s.app_url, "main").expect("app main");
    wait_converged(&cp, &s, &system_repo, &app0, Duration::from_secs(90), &ctl);
    // Settled: no reconcile for 3 s (the first sync's status write causes one more).
    let mut last = (ctl.reconciles(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(250));
        let n = ctl.reconciles();
        if n != last.0 {
            last = (n, Instant::now());
        }
    }
    let reconciles = last.0;
    phase(test, &format!("synced; {reconciles} reconciles"));

    // A commit a webhook would bring in.
    let app1 = commit_files(&s.app_url, TIER, &[("base/CHANGELOG.md", "webhook\n")], "webhook");
    let head0 = branch_head(&s.system_url, TIER).expect("system branch");
    let push = format!(r#"{{"ref":"refs/heads/{TIER}","repository":{{"clone_url":"{}"}}}}"#, s.app_url);
    let good = sign(WEBHOOK_SECRET, push.as_bytes());
    let send = |signature: Option<&str>, body: &str| ctl.push_event(body, signature);
    let other_body = push.replace(TIER, "tier-9");
    let sha1 = format!("sha1={}", &good["sha256=".len()..][..40]);
    let refused: Vec<(&str, Option<String>, &str)> = vec![
        ("no signature", None, push.as_str()),
        ("signed with another secret", Some(sign("not-the-secret", push.as_bytes())), &push),
        ("the signature of another body", Some(sign(WEBHOOK_SECRET, other_body.as_bytes())), &push),
        ("a valid signature of this body on another one", Some(good.clone()), &other_body),
        ("a sha1 signature", Some(sha1), &push),
        ("not hex", Some(format!("sha256={}", "zz".repeat(32))), &push),
        ("empty", Some(String::new()), &push),
    ];
    for (what, signature, body) in &refused {
        let (code, reply) = send(signature.as_deref(), body);
        assert_eq!(code, 401, "{what}: {reply}");
    }
    // Over 1 MiB (whitespace keeps it a valid push event), signed and unsigned.
    let big = format!("{push}{}", " ".repeat(1024 * 1024 + 1 - push.len() + 1));
    assert!(big.len() > 1024 * 1024);
    let (code, reply) = send(Some(&sign(WEBHOOK_SECRET, big.as_bytes())), &big);
    assert_eq!(code, 413, "a signed body over 1 MiB: {reply}");
    let (code, reply) = send(None, &big);
    assert_eq!(code, 413, "an unsigned body over 1 MiB: {reply}");
    phase(test, "refused");

    // Nothing started: no reconcile, no delivery, the branch did not move.
    std::thread::sleep(Duration::from_secs(3));
    let m = ctl.metrics();
    assert_eq!(ctl.reconciles(), reconciles, "a refused webhook started a reconcile:\n{}", ctl.log_since_start());
    assert_eq!(metric(&m, "shopset_webhook_deliveries_total", &[]), Some(0.0), "{m}");
    assert_eq!(metric(&m, "shopset_webhook_refused_total", &[]), Some(refused.len() as f64), "{m}");
    assert_eq!(branch_head(&s.system_url, TIER).as_deref(), Some(head0.as_str()), "the system branch moved");

    // A validly signed push is accepted and brings the commit in.
    let (code, reply) = send(Some(&good), &push);
    assert_eq!(code, 202, "a signed push: {reply}");
    assert!(reply.contains(&format!("reconciling: {TIER}")), "{reply}");
    wait_converged(&cp, &s, &system_repo, &app1, Duration::from_secs(30), &ctl);
    assert!(ctl.reconciles() > reconciles);
    assert_eq!(metric(&ctl.metrics(), "shopset_webhook_deliveries_total", &[]), Some(1.0));
    phase(test, "signed push accepted and synced");
    ctl.stop();
}
