//! Deleting a Tier: branches are never deleted (history is data); its Applications follow
//! `spec.deletionPolicy` (Retain by default, or Delete).

mod support;

use std::time::Duration;

use shopset_e2e::gitserver::{GitDaemon, branch_head};
use support::{Controller, Plane, Run, SHOPSETS, Setup, TIER, TierOptions, wait_converged};

const TESTS: usize = 2;

fn deleted_tier(ns: &str, policy: Option<&str>) -> (Vec<String>, Option<String>) {
    let cp = Plane::shared(TESTS);
    let daemon = GitDaemon::start();
    let s = Setup::on_daemon(&cp, &daemon, ns, &TierOptions::default());
    s.apply(&cp);
    if let Some(policy) = policy {
        cp.kubectl_ok([
            "patch",
            "tier",
            TIER,
            "-n",
            ns,
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"deletionPolicy":"{policy}"}}}}"#),
        ]);
    }
    let mut ctl = Controller::new(&cp, s.work.path(), &s.ns, "controller");
    ctl.start(&Run::new(&format!("{ns}-replica")));
    let app = branch_head(&s.app_url, "main").expect("app main");
    wait_converged(&cp, &s, &daemon.path("shop-system"), &app, Duration::from_secs(90), &ctl);
    assert_eq!(s.applications(&cp), SHOPSETS.to_vec(), "Applications before the deletion");
    let head = branch_head(&s.system_url, TIER).expect("system branch before the deletion");

    cp.kubectl_ok(["delete", "tier", TIER, "-n", ns, "--wait", "--timeout=60s"]);
    let gone = cp.kubectl(["get", "tier", TIER, "-n", ns]);
    assert!(!gone.status.success(), "the Tier is still there after its finalizer ran");
    let after = branch_head(&s.system_url, TIER);
    assert_eq!(after.as_deref(), Some(head.as_str()), "deleting a Tier must never move or delete its system branch");
    for (repo, url) in [("app", &s.app_url), ("config", &s.config_url)] {
        assert!(branch_head(url, TIER).is_some(), "the {repo} repository lost branch {TIER}");
    }
    ctl.stop();
    (s.applications(&cp), after)
}

#[test]
fn deleting_a_tier_retains_its_applications_by_default_and_never_its_branches() {
    let (apps, branch) = deleted_tier("deletion-retain", None);
    assert_eq!(apps, SHOPSETS.to_vec(), "deletionPolicy Retain (the default) keeps the Applications");
    assert!(branch.is_some());
}

#[test]
fn deleting_a_tier_with_policy_delete_removes_its_applications_but_never_its_branches() {
    let (apps, branch) = deleted_tier("deletion-delete", Some("Delete"));
    assert!(apps.is_empty(), "deletionPolicy Delete leaves Applications behind: {apps:?}");
    assert!(branch.is_some());
}
