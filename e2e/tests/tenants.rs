//! Tenancy and the probes, against a real control plane, a git daemon and the
//! `shopset-controller` binary as a process.
//!
//! - A Tier whose repositories are local (`file://`) stalls with reason `LocalURLRefused` and the
//!   controller writes nothing; the same Tier syncs under `--allow-local-urls` (tests and demos).
//! - A Tier naming a Secret of another namespace is refused by the API server.
//! - `/readyz` answers 503 while a watch cache cannot fill (its CRD is missing) and says which,
//!   then 200 once it fills; `/healthz` answers 503 while reconciles make no progress past
//!   `--stall-timeout`, and 200 again once they do.
//!
//! Needs `e2e/install-tools` and `cargo build --workspace --features shopset-controller/fault-injection`.

mod support;

use std::time::Duration;

use shopset::rules;
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{GitDaemon, branch_head, ls_remote};
use shopset_e2e::tools::repo_root;
use support::*;

/// Tests of this file on the shared control plane (the last one to finish stops it).
const TESTS: usize = 3;

#[test]
fn a_tier_naming_local_repositories_stalls_and_the_controller_writes_nothing() {
    let test = "local-urls";
    let cp = Plane::shared(TESTS);
    let daemon = GitDaemon::start();
    for repo in ["shop-app", "shop-config", "shop-system"] {
        daemon.create_repo(repo);
    }
    // The app and configuration repositories by path on the controller's machine, as a tenant
    // could name another tenant's cached repository; the system repository on the daemon.
    let file_url = |r: &str| format!("file://{}", daemon.path(r).display());
    let url = |r: &str| if r == "shop-system" { daemon.url(r) } else { file_url(r) };
    let s = Setup::new(&cp, "tenants-local", url, |r| daemon.url(r), &TierOptions::default());
    s.apply(&cp);
    let mut ctl = Controller::new(&cp, s.work.path(), &s.ns, "controller");
    ctl.start(&Run::new("local-urls-refused"));

    let (_, reason, message) = wait_until("Ready=False, LocalURLRefused", Duration::from_secs(60), &ctl, || {
        let r = s.ready(&cp);
        (r.0 == "False" && r.1 == "LocalURLRefused").then_some(r)
    });
    assert_eq!(reason, "LocalURLRefused");
    for words in [
        format!("Tier {}/{TIER}: ", s.ns),
        format!("spec.app.url {:?}", file_url("shop-app")),
        format!("Configuration/shop-config spec.url {:?}", file_url("shop-config")),
        "are local repositories".into(),
        "fix: ".into(),
        "--allow-local-urls".into(),
    ] {
        assert!(message.contains(&words), "{words:?} in {message}");
    }
    let stalled = s.jsonpath(&cp, "tier", TIER, r#"{.status.conditions[?(@.type=="Stalled")].status}"#);
    assert_eq!(stalled, "True", "an invalid spec stalls: only a change of the Tier helps");
    assert!(ls_remote(&s.system_url).is_empty(), "nothing written to the system repository");
    assert!(s.applications(&cp).is_empty(), "no Applications: {:?}", s.applications(&cp));
    phase(test, &format!("refused: {message}"));
    ctl.stop();

    // The flag of tests and local demos: the same Tier syncs from the same local repositories.
    ctl.start(&Run::new("local-urls-allowed").allow_local_urls());
    let app = branch_head(&daemon.url("shop-app"), "main").expect("app main");
    wait_converged(&cp, &s, &daemon.path("shop-system"), &app, Duration::from_secs(90), &ctl);
    phase(test, "synced under --allow-local-urls");
    ctl.stop();
}

#[test]
fn a_tier_naming_a_secret_of_another_namespace_is_refused() {
    let cp = Plane::shared(TESTS);
    let (ns, other) = ("tenants-secret", "tenants-secret-other");
    cp.kubectl_ok(["create", "namespace", ns]);
    cp.kubectl_ok(["create", "namespace", other]);
    cp.kubectl_ok(["create", "secret", "generic", "git-credentials", "-n", other, "--from-literal=password=x"]);
    let tier = |credentials: &str| {
        format!(
            "apiVersion: shopset.dev/v1alpha1
kind: Tier
metadata:
  name: {TIER}
  namespace: {ns}
spec:
  app:
    url: https://git.example.com/acme/shop-app.git
  system:
    url: https://git.example.com/acme/shop-system.git
  credentials:
    secretRef:
{credentials}"
        )
    };

    let out = cp.kubectl_with_stdin(["apply", "-f", "-"], &tier(&format!("      name: {other}/git-credentials\n")));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the API server accepted a Secret of another namespace");
    assert!(
        err.lines().any(|l| l.contains("spec.credentials.secretRef.name") && l.contains(rules::SECRET_OTHER_NAMESPACE)),
        "{err}"
    );

    // A namespace field is no field of a secretRef: refused (kubectl validates strictly), not dropped.
    let out = cp.kubectl_with_stdin(
        ["apply", "-f", "-"],
        &tier(&format!("      name: git-credentials\n      namespace: {other}\n")),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the API server accepted secretRef.namespace");
    assert!(err.contains("unknown field") && err.contains("namespace"), "{err}");
    let tiers = cp.kubectl_ok(["get", "tiers", "-n", ns, "-o", "name"]);
    assert!(tiers.trim().is_empty(), "no Tier stored: {tiers}");
}

#[test]
fn healthz_is_503_while_reconciles_make_no_progress_and_200_once_they_do() {
    let test = "healthz";
    let cp = Plane::shared(TESTS);
    let daemon = GitDaemon::start();
    let s = Setup::on_daemon(&cp, &daemon, "tenants-healthz", &TierOptions::default());
    let hold = s.work.path().join("hold-reconciles");
    std::fs::write(&hold, "").expect("create the hold file");
    let mut ctl = Controller::new(&cp, s.work.path(), &s.ns, "controller");
    // The fault point stands for a reconcile stuck on a hung connection or a deadlock.
    ctl.start(&Run::new("healthz").hold_reconciles_while(&hold).flag("--stall-timeout=2s"));
    let (code, body) = http(&ctl.url("/healthz"), &[], None);
    assert_eq!(code, 200, "idle, nothing queued: {body}");

    s.apply(&cp);
    let body = wait_until("/healthz 503", Duration::from_secs(60), &ctl, || {
        let (code, body) = http(&ctl.url("/healthz"), &[], None);
        (code == 503).then_some(body)
    });
    assert!(body.contains("reconcile(s) running and none finished since 20"), "{body}");
    assert!(body.contains("stall timeout 2 s"), "{body}");
    let (code, ready) = http(&ctl.url("/readyz"), &[], None);
    assert_eq!(code, 200, "stalled, yet its caches are complete: {ready}");
    phase(test, &format!("stalled: {}", body.trim()));

    std::fs::remove_file(&hold).expect("remove the hold file");
    let app = branch_head(&s.app_url, "main").expect("app main");
    wait_converged(&cp, &s, &daemon.path("shop-system"), &app, Duration::from_secs(90), &ctl);
    // Converged: no reconcile left holding (the next polls finish within the stall timeout).
    wait_until("/healthz 200 again", Duration::from_secs(60), &ctl, || {
        (http(&ctl.url("/healthz"), &[], None).0 == 200).then_some(())
    });
    phase(test, "resumed");
    ctl.stop();
}

/// On a control plane of its own: it removes a CRD, which the other tests need.
#[test]
fn readyz_is_503_naming_the_watch_caches_not_synced_until_they_are() {
    let cp = ControlPlane::start();
    let ns = "tenants-readyz";
    cp.kubectl_ok(["create", "namespace", ns]);
    cp.kubectl_ok(["delete", "crd", "configurations.shopset.dev", "--wait=true"]);
    let work = WorkDir::new("readyz");
    let mut ctl = Controller::new(&cp, work.path(), ns, "controller");
    ctl.start(&Run::new("readyz"));
    let body = wait_until("/readyz 503 for the Configuration cache only", Duration::from_secs(60), &ctl, || {
        let (code, body) = http(&ctl.url("/readyz"), &[], None);
        (code == 503 && body.contains("not yet synced: Configuration (")).then_some(body)
    });
    assert!(body.contains("lacks their CRDs"), "{body}");
    let (code, health) = http(&ctl.url("/healthz"), &[], None);
    assert_eq!(code, 200, "nothing reconciles without the caches, so nothing stalls: {health}");

    let crd = repo_root().join("deploy/crds/configurations.shopset.dev.yaml");
    cp.kubectl_ok(["apply", "-f", path_str(&crd)]);
    cp.kubectl_ok(["wait", "--for=condition=Established", "crd/configurations.shopset.dev", "--timeout=60s"]);
    // The watch retries with backoff (at most about 30 s apart).
    let body = wait_until("/readyz 200", Duration::from_secs(90), &ctl, || {
        let (code, body) = http(&ctl.url("/readyz"), &[], None);
        (code == 200).then_some(body)
    });
    assert!(body.contains("Configuration, ShopSet, Tier"), "{body}");
    ctl.stop();
}
