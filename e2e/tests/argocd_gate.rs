//! The promotion gate, `shopctl status` and `shopctl doctor` against what a real Argo CD reports.
//! The examples' tier-0 and tier-1 (promoted from tier-0) are applied with kubectl;
//! `shopset-controller` (a process) deploys them through Argo CD v3.5 (kwok makes the Pods Ready).
//!
//! 1. tier-0 Deployed: `shopctl promote tier-0 tier-1`, gate on, passes; tier-1 becomes Deployed.
//! 2. A new storefront image on tier-0, deployed, then promoted: tier-1 runs it.
//! 3. An app commit whose Deployment can never become ready (a nodeSelector no Node has, and a
//!    short progress deadline): Argo CD reports it Degraded; the gate refuses (exit 3) naming each
//!    ShopSet, `doctor` says Problem/Why/Fix (exit 3), `status` says "not deployed:".
//! 4. `shopctl rollback tier-0 --steps 1`: tier-0 Deployed again, and the gate passes again.
//! 5. A freeze (a deny sync window): a good commit is OutOfSync, and the gate refuses.
//! 6. Argo CD behind the branch (`shopctl sync` with the controller stopped, no refresh): Synced
//!    at the previous commit, and the gate refuses naming both commits.
//! 7. An app commit whose kustomization names a file that does not exist: Argo CD's
//!    ComparisonError, and the gate refuses naming it.
//!
//! Argo CD's periodic refresh is off: only the controller's refresh annotation after a push (or
//! a change of an Application) makes it read the system branch again, so step 6 holds still.
//!
//! Nothing here writes a status: every Synced, Degraded and revision is Argo CD's.
//!
//! Build the workspace first: the test runs the `shopset-controller` and `shopctl` binaries of
//! `cargo build`.

mod support;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use shopset_e2e::argocd::ArgoCdOptions;
use shopset_e2e::controlplane::{ControlPlane, Options};
use shopset_e2e::gitserver::{branch_head, commit_files};
use shopset_e2e::tools::repo_root;
use support::{Controller, Examples, Run, jsonpath, replace_once, short, wait_until};

const NS: &str = "gate";
const TIER0_SHOPSETS: [&str; 2] = ["canary-eu", "canary-us"];
const TIER1_SHOPSETS: [&str; 2] = ["eu-west", "us-east"];
/// Generous: the first deployment clones, builds and applies from nothing, and Argo CD fills its
/// cluster cache first; the machine may be slow and busy.
const FIRST_DEPLOY: Duration = Duration::from_secs(600);
const NEXT_DEPLOY: Duration = Duration::from_secs(300);

#[test]
fn the_gate_status_and_doctor_follow_argo_cd_through_a_degraded_commit_and_its_rollback() {
    let cp = ControlPlane::start_with(
        Options::default().argocd(ArgoCdOptions { app_resync: Duration::ZERO, ..ArgoCdOptions::default() }),
    );
    let argocd = cp.argocd();
    let ex = Examples::new(&cp, NS, "10s");
    // The Applications go where this Argo CD watches; tier-1 polls as often as tier-0 so that a
    // promotion reaches it without a webhook.
    let ours = format!("\n    namespace: {}\n", ex.argocd_ns);
    let theirs = format!("\n    namespace: {}\n", argocd.namespace());
    for (file, extra) in [("tier-0.yaml", None), ("tier-1.yaml", Some(("\n  interval: 1h\n", "\n  interval: 10s\n")))] {
        let path = ex.manifests.join(file);
        let text = fs::read_to_string(&path).expect("read manifest");
        let mut text = replace_once(&text, file, &ours, &theirs);
        if let Some((from, to)) = extra {
            text = replace_once(&text, file, from, to);
        }
        fs::write(&path, text).expect("write manifest");
    }
    let mut ctl = ex.controller(&cp, "controller");
    ctl.start(&Run::new("argocd-gate"));
    ex.apply(&cp);

    // 1. tier-0 deployed: the gate passes, and tier-1 follows.
    let head0 = wait_deployed(&cp, &ctl, &ex.system_url, "tier-0", &TIER0_SHOPSETS, FIRST_DEPLOY);
    argocd.wait_synced_healthy(&TIER0_SHOPSETS, &head0, NEXT_DEPLOY);
    let promoted = shopctl(&cp, ex.work.path(), &["promote", "tier-0", "tier-1", "-f", manifests(&ex)]);
    assert!(promoted.status.success(), "the gate lets a deployed tier-0 through:\n{}", text(&promoted));
    let head1 = wait_deployed(&cp, &ctl, &ex.system_url, "tier-1", &TIER1_SHOPSETS, FIRST_DEPLOY);
    argocd.wait_synced_healthy(&TIER1_SHOPSETS, &head1, NEXT_DEPLOY);
    assert_eq!(ex.gitlink("tier-1", "base"), ex.gitlink("tier-0", "base"), "tier-1 runs tier-0's app");

    // 2. A promotion that moves tier-1: a new storefront image deployed on tier-0, promoted with
    // the gate on, and Argo CD runs it on tier-1 too.
    let storefront =
        fs::read_to_string(repo_root().join("examples/app/base/storefront.yaml")).expect("read storefront.yaml");
    let (old_image, new_image) = ("ghcr.io/acme/storefront:1.0.0", "ghcr.io/acme/storefront:1.1.0");
    let upgraded = replace_once(&storefront, "examples/app/base/storefront.yaml", old_image, new_image);
    commit_files(&ex.app_url, "tier-0", &[("base/storefront.yaml", &upgraded)], "storefront 1.1.0");
    let upgraded0 = wait_until("the poll to bump tier-0 to storefront 1.1.0", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-0").filter(|h| *h != head0)
    });
    assert_eq!(wait_deployed(&cp, &ctl, &ex.system_url, "tier-0", &TIER0_SHOPSETS, NEXT_DEPLOY), upgraded0);
    argocd.wait_synced_healthy(&TIER0_SHOPSETS, &upgraded0, NEXT_DEPLOY);
    let promoted = shopctl(&cp, ex.work.path(), &["promote", "tier-0", "tier-1", "-f", manifests(&ex)]);
    assert!(promoted.status.success(), "the gate lets storefront 1.1.0 through:\n{}", text(&promoted));
    let moved1 = wait_until("the poll to bump tier-1 to the promoted app", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-1").filter(|h| *h != head1)
    });
    let app0 = ex.gitlink("tier-0", "base");
    assert_eq!(ex.gitlink("tier-1", "base"), app0, "tier-1 pins the promoted app commit");
    assert_eq!(wait_deployed(&cp, &ctl, &ex.system_url, "tier-1", &TIER1_SHOPSETS, NEXT_DEPLOY), moved1);
    argocd.wait_synced_healthy(&TIER1_SHOPSETS, &moved1, NEXT_DEPLOY);
    // The examples' us-east sets its own namespace; eu-west deploys to one named after it.
    for (shopset, namespace) in [("eu-west", "eu-west"), ("us-east", "shops-us-east")] {
        let image = jsonpath(&cp, namespace, "deployment", "storefront", "{.spec.template.spec.containers[0].image}");
        assert_eq!(image, new_image, "Argo CD runs the promoted storefront in ShopSet {shopset}");
    }

    // 3. A commit that can never become ready: no Node has the label, so the Pod stays Pending,
    // and after the progress deadline Kubernetes (and so Argo CD) calls the Deployment Degraded.
    // (Argo CD must build the bumped base: an Application with manifest-generate-paths stayed
    // Synced and Healthy here, built from the submodule checkout of the previous commit.)
    let stuck = replace_once(
        &upgraded,
        "examples/app/base/storefront.yaml",
        "\n  replicas: 1\n",
        "\n  replicas: 1\n  progressDeadlineSeconds: 10\n",
    );
    let stuck = replace_once(
        &stuck,
        "examples/app/base/storefront.yaml",
        "\n    spec:\n      containers:\n",
        "\n    spec:\n      nodeSelector:\n        shopset.dev/no-such-node: \"true\"\n      containers:\n",
    );
    commit_files(&ex.app_url, "tier-0", &[("base/storefront.yaml", &stuck)], "storefront on no node");
    let bad_head = wait_until("the poll to bump tier-0", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-0").filter(|h| *h != upgraded0)
    });
    argocd.wait(&format!("Applications {TIER0_SHOPSETS:?} Synced and Degraded at {bad_head}"), NEXT_DEPLOY, || {
        let statuses: Vec<String> = TIER0_SHOPSETS
            .iter()
            .map(|name| argocd.application(name).map_or_else(|| format!("{name}: none"), |s| format!("{name}: {s}")))
            .collect();
        let degraded = TIER0_SHOPSETS.iter().all(|name| {
            argocd
                .application(name)
                .is_some_and(|s| s.sync == "Synced" && s.health == "Degraded" && s.revision == bad_head)
        });
        if degraded { Ok(()) } else { Err(statuses.join("\n")) }
    });

    let refused = shopctl(&cp, ex.work.path(), &["promote", "tier-0", "tier-1", "-f", manifests(&ex)]);
    assert_eq!(refused.status.code(), Some(3), "the gate refuses a Degraded tier-0:\n{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for shopset in TIER0_SHOPSETS {
        assert!(
            stderr.lines().any(|l| l.contains(&format!("ShopSet {shopset}:")) && l.contains("health is Degraded")),
            "the refusal names ShopSet {shopset} and Argo CD's verdict:\n{stderr}"
        );
    }
    assert_eq!(ex.gitlink("tier-1", "base"), app0, "nothing moved on tier-1");

    let doctor = shopctl(&cp, ex.work.path(), &["doctor", "tier-0", "-f", manifests(&ex)]);
    assert_eq!(doctor.status.code(), Some(3), "doctor finds the Degraded Applications:\n{}", text(&doctor));
    let stdout = String::from_utf8_lossy(&doctor.stdout);
    assert!(stdout.contains("Problem:") && stdout.contains("Why:") && stdout.contains("Fix:"), "{stdout}");
    for shopset in TIER0_SHOPSETS {
        assert!(stdout.contains(shopset), "doctor names ShopSet {shopset}:\n{stdout}");
    }
    assert!(stdout.contains("Degraded"), "doctor gives Argo CD's verdict:\n{stdout}");

    let status = shopctl(&cp, ex.work.path(), &["status", "tier-0", "-f", manifests(&ex)]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("not deployed:") && stdout.contains("health is Degraded"), "{}", text(&status));

    // 4. Rolled back: the controller pins the previous app commit, Argo CD syncs it, and the gate
    // passes again.
    let rollback = shopctl(&cp, ex.work.path(), &["rollback", "tier-0", "-f", manifests(&ex), "--steps", "1"]);
    assert!(rollback.status.success(), "rollback:\n{}", text(&rollback));
    let back = wait_until("the poll to pin the rolled back app", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-0").filter(|h| *h != bad_head)
    });
    assert_eq!(ex.gitlink("tier-0", "base"), app0, "tier-0 pins the app commit before the bad one");
    let deployed = wait_deployed(&cp, &ctl, &ex.system_url, "tier-0", &TIER0_SHOPSETS, NEXT_DEPLOY);
    assert_eq!(deployed, back);
    argocd.wait_synced_healthy(&TIER0_SHOPSETS, &back, NEXT_DEPLOY);
    let preview = shopctl(&cp, ex.work.path(), &["promote", "tier-0", "tier-1", "-f", manifests(&ex), "--dry-run"]);
    assert!(preview.status.success(), "{}", text(&preview));
    assert!(!text(&preview).contains("is not verified"), "the gate passes again:\n{}", text(&preview));

    // 5. A freeze: a sync window of the AppProject denies every sync. A good commit is bumped and
    // refreshed; Argo CD compares it, reports it OutOfSync (still Healthy, running the previous
    // one), and the gate refuses. The window lifted, Argo CD syncs and the gate passes.
    let project = |windows: &str| {
        let patch = format!(r#"{{"spec":{{"syncWindows":{windows}}}}}"#);
        cp.kubectl_ok(["patch", "appproject", "default", "-n", argocd.namespace(), "--type=merge", "-p", &patch]);
    };
    project(r#"[{"kind":"deny","schedule":"* * * * *","duration":"24h","applications":["*"]}]"#);
    let frozen = replace_once(&upgraded, "storefront 1.1.0", new_image, "ghcr.io/acme/storefront:1.2.0");
    commit_files(&ex.app_url, "tier-0", &[("base/storefront.yaml", &frozen)], "storefront 1.2.0");
    let frozen_head = wait_until("the poll to bump tier-0 during the freeze", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-0").filter(|h| *h != back)
    });
    argocd.wait(&format!("Applications {TIER0_SHOPSETS:?} OutOfSync at {frozen_head}"), NEXT_DEPLOY, || {
        let statuses: Vec<String> =
            TIER0_SHOPSETS.iter().map(|n| format!("{n}: {:?}", argocd.application(n))).collect();
        let out_of_sync = TIER0_SHOPSETS.iter().all(|name| {
            argocd
                .application(name)
                .is_some_and(|s| s.sync == "OutOfSync" && s.health == "Healthy" && s.revision == frozen_head)
        });
        if out_of_sync { Ok(()) } else { Err(statuses.join("\n")) }
    });
    let refused = shopctl(&cp, ex.work.path(), &["promote", "tier-0", "tier-1", "-f", manifests(&ex)]);
    assert_eq!(refused.status.code(), Some(3), "the gate refuses an OutOfSync tier-0:\n{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for shopset in TIER0_SHOPSETS {
        assert!(
            stderr.lines().any(|l| l.contains(&format!("ShopSet {shopset}:")) && l.contains("sync is OutOfSync")),
            "the refusal names ShopSet {shopset} and its sync status:\n{stderr}"
        );
    }
    let mut findings = TIER0_SHOPSETS
        .map(|n| format!("ShopSet {n}: Application {}/{n}: sync is OutOfSync", argocd.namespace()))
        .to_vec();
    findings.push(format!("shopctl apply tier-0 -f {} --shopset canary-eu", manifests(&ex)));
    doctor_finds(&cp, &ex, &findings);
    project("[]");
    // Lifting a window makes Argo CD look again only at its next periodic refresh (off here), so
    // ask, as `argocd app get --refresh` does.
    for shopset in TIER0_SHOPSETS {
        argocd.refresh(shopset);
    }
    argocd.wait_synced_healthy(&TIER0_SHOPSETS, &frozen_head, NEXT_DEPLOY);

    // 6. Argo CD behind the branch: with the controller stopped, `shopctl sync` pushes a bump and
    // nobody asks Argo CD to look again (this plane's Argo CD has no periodic refresh). It still
    // reports Synced and Healthy, at the previous commit; the gate refuses naming both.
    ctl.stop();
    let behind =
        replace_once(&frozen, "storefront 1.2.0", "ghcr.io/acme/storefront:1.2.0", "ghcr.io/acme/storefront:1.3.0");
    commit_files(&ex.app_url, "tier-0", &[("base/storefront.yaml", &behind)], "storefront 1.3.0");
    let synced = shopctl(&cp, ex.work.path(), &["sync", "--tier", "tier-0", "-f", manifests(&ex)]);
    assert!(synced.status.success(), "shopctl sync:\n{}", text(&synced));
    let behind_head = branch_head(&ex.system_url, "tier-0").expect("tier-0 system branch");
    assert_ne!(behind_head, frozen_head, "shopctl sync pushed the bump");
    for shopset in TIER0_SHOPSETS {
        let status = argocd.application(shopset).expect("Application exists");
        assert!(status.synced_healthy_at(&frozen_head), "Argo CD has not looked again: {shopset}: {status}");
    }
    let refused = shopctl(&cp, ex.work.path(), &["promote", "tier-0", "tier-1", "-f", manifests(&ex)]);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "the gate refuses a tier-0 Argo CD has not caught up with:\n{}",
        text(&refused)
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let instead = format!("it runs revision {} instead of {}", short(&frozen_head), short(&behind_head));
    assert!(
        stderr.lines().any(|l| l.contains("ShopSet canary-eu:") && l.contains(&instead)),
        "the refusal names ShopSet canary-eu and both revisions:\n{stderr}"
    );
    doctor_finds(
        &cp,
        &ex,
        &[
            format!("ShopSet canary-eu: Application {}/canary-eu: {instead}", argocd.namespace()),
            format!(
                "kubectl -n {} annotate application canary-eu argocd.argoproj.io/refresh=hard --overwrite",
                argocd.namespace()
            ),
        ],
    );
    ctl.start(&Run::new("argocd-gate-again"));

    // 7. A base Argo CD cannot build (a resource file that does not exist): its ComparisonError
    // is the verdict the gate gives.
    let kustomization =
        fs::read_to_string(repo_root().join("examples/app/base/kustomization.yaml")).expect("read kustomization.yaml");
    let broken = format!("{kustomization}- no-such-file.yaml\n");
    commit_files(&ex.app_url, "tier-0", &[("base/kustomization.yaml", &broken)], "a resource that is not there");
    let broken_head = wait_until("the poll to bump tier-0 again", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-0").filter(|h| *h != behind_head)
    });
    argocd.wait(&format!("Application canary-eu's ComparisonError at {broken_head}"), NEXT_DEPLOY, || {
        let status = argocd.application("canary-eu");
        match &status {
            Some(s) if s.messages.iter().any(|m| m.starts_with("ComparisonError:")) => Ok(()),
            _ => Err(format!("{status:?}")),
        }
    });
    let refused = shopctl(&cp, ex.work.path(), &["promote", "tier-0", "tier-1", "-f", manifests(&ex)]);
    assert_eq!(refused.status.code(), Some(3), "the gate refuses a base Argo CD cannot build:\n{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("ShopSet canary-eu:") && l.contains("Argo CD reports ComparisonError")),
        "the refusal names ShopSet canary-eu and Argo CD's ComparisonError:\n{stderr}"
    );
}

/// `shopctl doctor tier-0` exits 3 and says each of `findings` (problems and fixes).
fn doctor_finds(cp: &ControlPlane, ex: &Examples, findings: &[String]) {
    let doctor = shopctl(cp, ex.work.path(), &["doctor", "tier-0", "-f", manifests(ex)]);
    assert_eq!(doctor.status.code(), Some(3), "doctor finds a problem:\n{}", text(&doctor));
    let stdout = String::from_utf8_lossy(&doctor.stdout);
    assert!(!stdout.contains("is not applied"), "doctor reads the Tiers of --namespace {NS}:\n{stdout}");
    for finding in findings {
        assert!(stdout.contains(finding.as_str()), "doctor says {finding:?}:\n{stdout}");
    }
    assert!(stdout.contains("Fix:"), "{stdout}");
}

fn manifests(ex: &Examples) -> &str {
    ex.manifests.to_str().expect("a UTF-8 path")
}

fn wait_deployed(
    cp: &ControlPlane,
    ctl: &Controller,
    system_url: &str,
    tier: &str,
    shopsets: &[&str],
    timeout: Duration,
) -> String {
    support::wait_tier_deployed(cp, ctl, NS, system_url, tier, shopsets, timeout)
}

fn shopctl(cp: &ControlPlane, work: &Path, args: &[&str]) -> Output {
    support::shopctl_in(cp, work, NS, args)
}

/// Exit status, stdout and stderr, for a failure message.
fn text(out: &Output) -> String {
    format!("{}\n{}\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
