//! Automatic promotion (`spec.promotion.auto`) against a real Argo CD: the examples' tier-0 and
//! tier-1, tier-1 promoted from tier-0 by `shopset-controller` itself after a soak, deployed by
//! Argo CD v3.5 (kwok makes the Pods Ready).
//!
//! 1. A new storefront image on tier-0: once Argo CD runs it Synced and Healthy, and only after
//!    the soak measured from tier-0's `Deployed` condition, the controller promotes it into
//!    tier-1: the system commit says which policy let it through (`Why:`), the Tier gets an Event
//!    `Promoted`, `shopset_auto_promotions_total` counts it, and Argo CD runs it on tier-1.
//! 2. A deny window on tier-1 (`kubectl patch`): the next deployed image is not promoted, and the
//!    `Promotable` condition names the window. The window removed, it is promoted.
//! 3. `shopctl rollback tier-1`: the rollback puts a hold on tier-1 (in its manifest and in the
//!    cluster), so the controller does not promote the rolled back commit again; `shopctl release
//!    --apply` lets it.
//! 4. tier-1 promoted by pull request with one approval required: the controller opens the pull
//!    request on the GitHub stand-in (the policy's line in its body) and merges it only once a
//!    reviewer approved; the merge moves the app's tier-1 branch, the controller pins it with the
//!    policy's line in the system commit, and Argo CD runs it on tier-1.
//!
//! Nothing here writes a status: every Synced, Healthy and condition is Argo CD's or the
//! controller's. The review is the one thing the test does as a person would, on the stand-in.
//!
//! Build the workspace first: the test runs the `shopset-controller` and `shopctl` binaries of
//! `cargo build`.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shopset_e2e::argocd::ArgoCdOptions;
use shopset_e2e::controlplane::{ControlPlane, Options};
use shopset_e2e::github::{BOT_LOGIN, GitHubStandIn, ReviewEvent};
use shopset_e2e::gitserver::{branch_head, commit_files};
use shopset_e2e::tools::repo_root;
use support::{
    Controller, Examples, Run, jsonpath, metric, replace_once, shopctl_in, show, wait_tier_deployed, wait_until,
};

const NS: &str = "auto";
const TIER0_SHOPSETS: [&str; 2] = ["canary-eu", "canary-us"];
const TIER1_SHOPSETS: [&str; 2] = ["eu-west", "us-east"];
/// The soak of tier-1: long enough to tell a promotion that waited from one that did not.
const SOAK_SECONDS: i64 = 20;
/// Generous: the first deployment clones, builds and applies from nothing; the machine may be busy.
const FIRST_DEPLOY: Duration = Duration::from_secs(600);
const NEXT_DEPLOY: Duration = Duration::from_secs(300);

#[test]
fn the_controller_promotes_a_healthy_tier_after_its_soak_and_respects_windows_and_a_rollback_hold() {
    let cp = ControlPlane::start_with(
        Options::default().argocd(ArgoCdOptions { app_resync: Duration::ZERO, ..ArgoCdOptions::default() }),
    );
    let argocd = cp.argocd();
    let ex = Examples::on_github(&cp, NS, "5s", "acme");
    let gh = GitHubStandIn::start(TOKEN);
    gh.serve_repo("acme", "shop-app", &ex.daemon.path("acme/shop-app"));
    gh.serve_repo("acme", "shop-config", &ex.daemon.path("acme/shop-config"));
    let token_file = ex.work.path().join("github-token");
    fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    let ours = format!("\n    namespace: {}\n", ex.argocd_ns);
    let theirs = format!("\n    namespace: {}\n", argocd.namespace());
    for file in ["tier-0.yaml", "tier-1.yaml"] {
        let path = ex.manifests.join(file);
        let mut text = replace_once(&fs::read_to_string(&path).expect("read manifest"), file, &ours, &theirs);
        if file == "tier-1.yaml" {
            // Promoted by the controller after a soak; it looks every 5 s.
            text = replace_once(&text, file, "\n  interval: 1h\n", "\n  interval: 5s\n");
            text = replace_once(
                &text,
                file,
                "\n  promotion:\n    from: tier-0\n",
                &format!("\n  promotion:\n    from: tier-0\n    auto: true\n    soak: {SOAK_SECONDS}s\n"),
            );
        }
        fs::write(&path, text).expect("write manifest");
    }
    let mut ctl = ex.controller(&cp, "controller");
    ctl.start(
        &Run::new("auto-promotion")
            .rust_log("info,shopset_kube::reconcile=debug")
            .flag(&format!("--github-url={}", gh.url()))
            .flag(&format!("--github-token-file={}", token_file.display())),
    );
    ex.apply(&cp);

    // Both tiers deployed as created (tier-1's branches start from tier-0's): nothing to promote.
    let head0 = wait_tier_deployed(&cp, &ctl, NS, &ex.system_url, "tier-0", &TIER0_SHOPSETS, FIRST_DEPLOY);
    let head1 = wait_tier_deployed(&cp, &ctl, NS, &ex.system_url, "tier-1", &TIER1_SHOPSETS, FIRST_DEPLOY);
    argocd.wait_synced_healthy(&TIER1_SHOPSETS, &head1, NEXT_DEPLOY);
    wait_promotable(&cp, &ctl, "False", "UpToDate", "nothing to promote");

    // 1. storefront 1.1.0 on tier-0, deployed; promoted into tier-1 after the soak.
    let storefront =
        fs::read_to_string(repo_root().join("examples/app/base/storefront.yaml")).expect("read storefront.yaml");
    let image = |v: &str| format!("ghcr.io/acme/storefront:{v}");
    let version = |v: &str| replace_once(&storefront, "storefront.yaml", &image("1.0.0"), &image(v));
    commit_files(&ex.app_url, "tier-0", &[("base/storefront.yaml", &version("1.1.0"))], "storefront 1.1.0");
    let moved0 = wait_until("the poll to bump tier-0", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-0").filter(|h| *h != head0)
    });
    let promoted = wait_until("tier-1 promoted automatically", FIRST_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-1").filter(|h| *h != head1)
    });
    assert_eq!(ex.gitlink("tier-1", "base"), ex.gitlink("tier-0", "base"), "tier-1 pins tier-0's app");
    // The soak ran from when the cluster said tier-0 runs the promoted commit, not from the push.
    let deployed_since = transition_time(&cp, "tier-0", "Deployed");
    let promoted_at = commit_time(&ex.system_repo(), &promoted);
    assert!(
        promoted_at >= deployed_since + SOAK_SECONDS,
        "promoted at {promoted_at}, {SOAK_SECONDS} s soak from tier-0 Deployed at {deployed_since} (commit {moved0})"
    );
    let message = commit_message(&ex.system_repo(), &promoted);
    assert!(
        message.lines().any(|l| l.starts_with("Why: policy of tier-1: allowed (soak 20s met")
            && l.contains("promoted automatically by shopset-controller")),
        "the system commit says which policy let the promotion through:\n{message}"
    );
    let events = tier1_events(&cp, "Promoted");
    assert!(events.contains("promoted app") && events.contains("soak 20s met"), "an Event says so: {events:?}");
    let count = metric(&ctl.metrics(), "shopset_auto_promotions_total", &[("tier", "tier-1"), ("result", "promoted")]);
    assert_eq!(count, Some(1.0), "the metric counts the promotion");
    let deployed1 = wait_tier_deployed(&cp, &ctl, NS, &ex.system_url, "tier-1", &TIER1_SHOPSETS, NEXT_DEPLOY);
    argocd.wait_synced_healthy(&TIER1_SHOPSETS, &deployed1, NEXT_DEPLOY);
    let running = jsonpath(&cp, "eu-west", "deployment", "storefront", "{.spec.template.spec.containers[0].image}");
    assert_eq!(running, image("1.1.0"), "Argo CD runs the promoted storefront on tier-1");

    // 2. A deny window on tier-1: tier-0's next image is deployed, soaked, and not promoted.
    let window = r#"{"spec":{"promotion":{"windows":[{"kind":"deny","schedule":"* * * * *","duration":"2h","name":"freeze"}]}}}"#;
    cp.kubectl_ok(["patch", "tier", "tier-1", "-n", NS, "--type=merge", "-p", window]);
    let tier1_before = branch_head(&ex.system_url, "tier-1").expect("tier-1 branch");
    commit_files(&ex.app_url, "tier-0", &[("base/storefront.yaml", &version("1.2.0"))], "storefront 1.2.0");
    wait_until("the poll to bump tier-0 again", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-0").filter(|h| *h != moved0)
    });
    wait_tier_deployed(&cp, &ctl, NS, &ex.system_url, "tier-0", &TIER0_SHOPSETS, NEXT_DEPLOY);
    let soaked = Instant::now() + Duration::from_secs(SOAK_SECONDS as u64 + 10);
    wait_promotable(&cp, &ctl, "False", "Waiting", "tier-1 is frozen");
    while Instant::now() < soaked {
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_promotable(&cp, &ctl, "False", "Waiting", "window 'freeze'");
    assert_eq!(branch_head(&ex.system_url, "tier-1").as_deref(), Some(tier1_before.as_str()), "frozen: not promoted");
    cp.kubectl_ok([
        "patch",
        "tier",
        "tier-1",
        "-n",
        NS,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/promotion/windows"}]"#,
    ]);
    let thawed = wait_until("tier-1 promoted once the window is gone", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-1").filter(|h| *h != tier1_before)
    });
    assert_eq!(ex.gitlink("tier-1", "base"), ex.gitlink("tier-0", "base"), "tier-1 pins tier-0's newest app");
    assert_eq!(
        metric(&ctl.metrics(), "shopset_auto_promotions_total", &[("tier", "tier-1"), ("result", "promoted")]),
        Some(2.0)
    );
    let deployed1 = wait_tier_deployed(&cp, &ctl, NS, &ex.system_url, "tier-1", &TIER1_SHOPSETS, NEXT_DEPLOY);
    assert_eq!(deployed1, thawed);

    // 3. A rollback of tier-1 holds automatic promotion into it, in the manifest and the cluster:
    // the controller does not undo it, however long tier-0 stays healthy.
    let app_before = ex.gitlink("tier-1", "base");
    let rollback = shopctl_in(&cp, ex.work.path(), NS, &["rollback", "tier-1", "-f", manifests(&ex), "--steps", "1"]);
    assert!(rollback.status.success(), "rollback:\n{}", show(&rollback));
    let hold = jsonpath(&cp, NS, "tier", "tier-1", "{.spec.promotion.hold.reason}");
    assert!(hold.starts_with("rolled back app"), "the cluster's Tier holds: {hold:?}\n{}", show(&rollback));
    let manifest = fs::read_to_string(ex.manifests.join("tier-1.yaml")).expect("read tier-1.yaml");
    assert!(manifest.contains("hold:") && manifest.contains("rolled back app"), "and its manifest:\n{manifest}");
    let rolled_back = wait_until("the controller to pin the rolled back app", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-1").filter(|h| *h != thawed)
    });
    assert_ne!(ex.gitlink("tier-1", "base"), app_before, "tier-1 pins the app before the rollback's");
    wait_promotable(&cp, &ctl, "False", "Held", "rolled back app");
    std::thread::sleep(Duration::from_secs(SOAK_SECONDS as u64 + 10));
    assert_eq!(
        branch_head(&ex.system_url, "tier-1").as_deref(),
        Some(rolled_back.as_str()),
        "held: the rollback is not undone"
    );
    let release = shopctl_in(&cp, ex.work.path(), NS, &["release", "tier-1", "-f", manifests(&ex), "--apply"]);
    assert!(release.status.success(), "release:\n{}", show(&release));
    wait_until("tier-1 promoted again once released", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-1").filter(|h| *h != rolled_back)
    });
    assert_eq!(ex.gitlink("tier-1", "base"), app_before, "promoted again to tier-0's app");
    let released = branch_head(&ex.system_url, "tier-1").expect("tier-1 branch");

    // 4. By pull request, one approval required: opened by the controller, merged only once approved.
    let by_pr = r#"{"spec":{"promotion":{"pullRequest":true,"approvals":1}}}"#;
    cp.kubectl_ok(["patch", "tier", "tier-1", "-n", NS, "--type=merge", "-p", by_pr]);
    let app_tier1 = branch_head(&ex.app_url, "tier-1").expect("the app's tier-1 branch");
    let c4 = commit_files(&ex.app_url, "tier-0", &[("base/storefront.yaml", &version("1.3.0"))], "storefront 1.3.0");
    wait_until("the poll to bump tier-0 to 1.3.0", NEXT_DEPLOY, &ctl, || {
        (ex.gitlink("tier-0", "base") == c4).then_some(())
    });
    wait_tier_deployed(&cp, &ctl, NS, &ex.system_url, "tier-0", &TIER0_SHOPSETS, NEXT_DEPLOY);
    wait_promotable(&cp, &ctl, "False", "AwaitingApproval", "has 0 of 1 approving review");
    let prs = gh.pulls();
    assert_eq!(prs.len(), 1, "one pull request, for the app (the configuration did not move): {prs:#?}");
    let pr = &prs[0];
    assert_eq!(
        (pr.owner.as_str(), pr.repo.as_str(), pr.head.as_str(), pr.base.as_str(), pr.author.as_str()),
        ("acme", "shop-app", "tier-0", "tier-1", BOT_LOGIN)
    );
    for want in [
        "storefront 1.3.0",
        "### Promotion policy",
        "policy of tier-1: allowed (soak 20s met",
        "Opened by shopset-controller",
    ] {
        assert!(pr.body.contains(want), "the pull request's body lacks {want:?}:\n{}", pr.body);
    }
    let opened = tier1_events(&cp, "PullRequestOpened");
    assert!(opened.contains(&format!("opened acme/shop-app#{}", pr.number)), "an Event says so: {opened:?}");
    // Looked at again and again (tier-1's interval is 5 s): still nothing merged without a review.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(branch_head(&ex.app_url, "tier-1").as_deref(), Some(app_tier1.as_str()), "not merged unapproved");
    assert_eq!(branch_head(&ex.system_url, "tier-1").as_deref(), Some(released.as_str()), "nothing pinned");
    assert_eq!(gh.pulls().len(), 1, "the open pull request is found, not opened again");
    assert!(gh.requests().iter().all(|r| r.method != "PUT"), "no merge was attempted");

    gh.record_review("acme", "shop-app", pr.number, "alice", ReviewEvent::Approve);
    let merged = wait_until("the approved pull request merged and pinned", NEXT_DEPLOY, &ctl, || {
        branch_head(&ex.system_url, "tier-1").filter(|h| *h != released)
    });
    assert_eq!(branch_head(&ex.app_url, "tier-1").as_deref(), Some(c4.as_str()), "the merge moved the app's tier-1");
    assert_eq!(gh.pulls()[0].merged_sha.as_deref(), Some(c4.as_str()), "merged at the approved head");
    assert_eq!(ex.gitlink("tier-1", "base"), c4, "tier-1 pins the merged app");
    let message = commit_message(&ex.system_repo(), &merged);
    assert!(
        message.lines().any(|l| l.starts_with("Why: policy of tier-1: allowed (soak 20s met")),
        "the pin's commit says which policy let the promotion through:\n{message}"
    );
    // The Promoted condition lasts until the next look (5 s): the Event stays.
    let promoted = tier1_events(&cp, "Promoted");
    let said = format!("merged acme/shop-app#{} at {} (approved by alice)", pr.number, &c4[..7]);
    assert!(promoted.contains(&said), "an Event says {said:?}: {promoted:?}");
    let count =
        |result| metric(&ctl.metrics(), "shopset_auto_promotions_total", &[("tier", "tier-1"), ("result", result)]);
    assert_eq!((count("opened"), count("promoted")), (Some(1.0), Some(4.0)), "the metric counts both steps");
    wait_promotable(&cp, &ctl, "False", "UpToDate", "nothing to promote");
    let deployed1 = wait_tier_deployed(&cp, &ctl, NS, &ex.system_url, "tier-1", &TIER1_SHOPSETS, NEXT_DEPLOY);
    argocd.wait_synced_healthy(&TIER1_SHOPSETS, &deployed1, NEXT_DEPLOY);
    let running = jsonpath(&cp, "eu-west", "deployment", "storefront", "{.spec.template.spec.containers[0].image}");
    assert_eq!(running, image("1.3.0"), "Argo CD runs the merged storefront on tier-1");
}

const TOKEN: &str = "ghp_autoPromotion0123456789token";

/// Waits until tier-1's `Promotable` condition has `status` and `reason` and its message says `says`.
fn wait_promotable(cp: &ControlPlane, ctl: &Controller, status: &str, reason: &str, says: &str) {
    let mut seen = None;
    wait_until(&format!("tier-1 Promotable={status} ({reason}: {says})"), NEXT_DEPLOY, ctl, || {
        let found = jsonpath(
            cp,
            NS,
            "tier",
            "tier-1",
            "{.status.conditions[?(@.type==\"Promotable\")].status}|{.status.conditions[?(@.type==\"Promotable\")].reason}|{.status.conditions[?(@.type==\"Promotable\")].message}",
        );
        let parts: Vec<&str> = found.splitn(3, '|').collect();
        // What it says meanwhile, for a failure's context.
        if seen.replace(found.clone()) != Some(found.clone()) {
            eprintln!("tier-1 Promotable: {found}");
        }
        (parts.len() == 3 && parts[0] == status && parts[1] == reason && parts[2].contains(says)).then_some(())
    });
}

/// The messages of tier-1's Events with `reason`.
fn tier1_events(cp: &ControlPlane, reason: &str) -> String {
    let selector = format!("--field-selector=involvedObject.name=tier-1,reason={reason}");
    cp.kubectl_ok(["get", "events", "-n", NS, &selector, "-o", "jsonpath={.items[*].message}"])
}

/// The lastTransitionTime of `tier`'s condition `type_`, in Unix seconds.
fn transition_time(cp: &ControlPlane, tier: &str, type_: &str) -> i64 {
    let at =
        jsonpath(cp, NS, "tier", tier, &format!("{{.status.conditions[?(@.type==\"{type_}\")].lastTransitionTime}}"));
    let out = Command::new("date").args(["-u", "-d", &at, "+%s"]).output().expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("not a time: {at:?}"))
}

/// The committer time of `commit` in a bare repository, in Unix seconds.
fn commit_time(repo: &Path, commit: &str) -> i64 {
    let out = shopset_e2e::gitserver::try_git(repo, &["show", "-s", "--format=%ct", commit]).expect("git show");
    out.trim().parse().expect("a time")
}

fn commit_message(repo: &Path, commit: &str) -> String {
    shopset_e2e::gitserver::try_git(repo, &["show", "-s", "--format=%B", commit]).expect("git show")
}

fn manifests(ex: &Examples) -> &str {
    ex.manifests.to_str().expect("a UTF-8 path")
}
