//! `shopctl doctor`: analyzers, each checking one failure mode of a tier and saying what is wrong
//! (Problem), why it matters or happens (Why), and the exact commands that fix it (Fix).
//!
//! The analyzers are pure functions over facts read elsewhere: [`GitState`] (branch heads and
//! pins, read by [`shopset_git::state::read`]), the Tier and its Applications as the cluster shows them
//! ([`ClusterFacts`], read by [`cluster_facts`]), and the controller's metrics. What could not be
//! read is reported as "not checked", never guessed.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::BTreeSet;

use kube::api::{Api, ListParams};
use serde::Serialize;
use shopset_core::api::Tier;
use shopset_core::fleet::{Placed, Target, destination_of, target};
use shopset_core::manifests::TierInput;
use shopset_core::revision::{short, short_or};
pub use shopset_git::state::GitState;

use crate::argocd::{AppState, Problem, application_states, problems};
use crate::error::api_message;

/// The controller's namespace and Deployment as `kubectl apply -k deploy/` installs them.
pub const CONTROLLER_NAMESPACE: &str = "shopset-system";
pub const CONTROLLER_DEPLOYMENT: &str = "shopset-controller";

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The analyzer that found it (see [`CHECKS`]).
    pub check: String,
    /// The tier it concerns; None for the controller as a whole.
    pub tier: Option<String>,
    pub problem: String,
    pub why: String,
    /// Shell lines: commands to run, or `# ` comments between them.
    pub fix: Vec<String>,
}

/// Every analyzer, by the name findings carry, with what it checks.
pub const CHECKS: &[(&str, &str)] = &[
    ("git", "the repositories can be read"),
    ("branch-missing", "the tier branch exists in the app, configuration and system repositories"),
    ("stale-pin", "the system branch pins the heads of the tier's app and configuration branches"),
    ("pin-unreachable", "every pinned commit is still on a branch of its repository"),
    ("hotfix-not-merged", "the tier has no commits the tier it is promoted from lacks"),
    ("tier-not-ready", "the Tier is applied and its Ready condition is True"),
    ("credentials", "the Secret the Tier names exists"),
    ("application", "each ShopSet's Application exists, is Synced and Healthy at the system branch's head"),
    ("webhook", "the controller has received webhook deliveries and refused none"),
    ("maintenance", "no ShopSet has been in maintenance for longer than the maximum age"),
    ("failure-domain", "the ShopSets of a tier with destinations are not all in one failure domain"),
    ("destination-cluster", "an Argo CD cluster Secret names each of the tier's destinations"),
    ("promotion-policy", "no hold on promotions into the tier is older than a day, and each of its windows opens"),
    (
        "auto-promotion",
        "the controller's automatic promotion into the tier is not failing, and its pull requests have not waited for reviews or a merge for over a day",
    ),
];

/// The label of Argo CD's cluster Secrets, and its value.
pub const ARGOCD_SECRET_TYPE: (&str, &str) = ("argocd.argoproj.io/secret-type", "cluster");
/// The cluster Argo CD runs in, which it knows without a Secret (by this URL or this name).
pub const IN_CLUSTER: (&str, &str) = ("https://kubernetes.default.svc", "in-cluster");

/// A hold older than this is a finding: holds are meant to be released.
pub const HOLD_MAX_AGE: i64 = 24 * 3600;

/// What `doctor` found for one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TierReport {
    pub tier: String,
    pub findings: Vec<Finding>,
    /// Analyzers that ran.
    pub checked: Vec<String>,
    /// What could not be checked, and why.
    pub not_checked: Vec<String>,
}

/// The cluster side of a tier.
#[derive(Debug, Clone)]
pub struct ClusterFacts {
    /// The Tier as applied (None: not applied).
    pub tier: Result<Option<Tier>, String>,
    pub applications: Result<Vec<AppState>, String>,
    /// Whether the credentials Secret exists; None when the Tier names none.
    pub secret: Option<Result<bool, String>>,
    /// Argo CD's cluster Secrets; None when the Tier lists no destinations.
    pub argocd_clusters: Option<Result<Vec<ArgoCluster>, String>>,
}

/// An Argo CD cluster Secret, as far as doctor reads it (never its credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgoCluster {
    /// The Secret's name.
    pub secret: String,
    /// Its `name` key: the cluster name Applications use as `destination.name`.
    pub name: Option<String>,
    /// Its `server` key: the API server URL Applications use as `destination.server`.
    pub server: Option<String>,
}

/// How fix commands are written.
#[derive(Debug, Clone)]
pub struct Context {
    /// The manifest paths as the user gave them, joined with ` -f ` (written after `-f`).
    pub manifests: String,
    /// Now, in Unix seconds (the caller's clock: analyzers read none).
    pub now: i64,
    /// Maintenance older than this many seconds is a finding.
    pub maintenance_max_age: i64,
}

/// The namespace the Tier lives in (manifests without one mean `default`).
pub fn tier_namespace(tier: &Tier) -> String {
    tier.namespace().unwrap_or_else(|| "default".into())
}

/// `3h 12m`, `45s`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn finding(check: &str, tier: &str, problem: String, why: String, fix: Vec<String>) -> Finding {
    Finding { check: check.into(), tier: Some(tier.into()), problem, why, fix }
}

/// Runs every analyzer of one tier over the facts; a fact that could not be read turns its
/// analyzers into "not checked" notes (and an unreadable repository is itself a finding).
pub fn diagnose_tier(
    input: &TierInput,
    git: &Result<GitState, String>,
    cluster: &Result<ClusterFacts, String>,
    ctx: &Context,
) -> TierReport {
    let name = input.tier.name_any();
    let mut report = TierReport { tier: name.clone(), ..TierReport::default() };
    let ran = |report: &mut TierReport, check: &str, found: Vec<Finding>| {
        report.checked.push(check.to_string());
        report.findings.extend(found);
    };
    match git {
        Ok(g) => {
            ran(&mut report, "git", Vec::new());
            ran(&mut report, "branch-missing", missing_branches(input, g, ctx));
            ran(&mut report, "stale-pin", stale_pins(input, g, ctx));
            ran(&mut report, "pin-unreachable", unreachable_pins(input, g, ctx));
            ran(&mut report, "hotfix-not-merged", hotfix_not_merged(input, g, ctx));
            ran(&mut report, "promotion-in-progress", promotion_in_progress(input, g, ctx));
        }
        Err(e) => {
            ran(&mut report, "git", vec![git_unreadable(input, e, ctx)]);
            report.not_checked.push(format!("branch-missing, stale-pin, pin-unreachable, hotfix-not-merged, promotion-in-progress: the repositories could not be read ({e})"));
        }
    }
    match cluster {
        Err(e) => report.not_checked.push(format!(
            "tier-not-ready, auto-promotion, credentials, application: no cluster ({e}); set KUBECONFIG to check them"
        )),
        Ok(c) => {
            match &c.tier {
                Ok(t) => {
                    ran(&mut report, "tier-not-ready", tier_not_ready(input, t.as_ref(), ctx));
                    ran(&mut report, "auto-promotion", stuck_auto_promotion(input, t.as_ref(), ctx));
                }
                Err(e) => {
                    let tier = format!("Tier {}/{name}", tier_namespace(&input.tier));
                    report.not_checked.push(format!("tier-not-ready: cannot read {tier}: {e}"));
                    report.not_checked.push(format!("auto-promotion: cannot read {tier}: {e}"));
                }
            }
            match &c.argocd_clusters {
                None => {}
                Some(Ok(clusters)) => ran(&mut report, "destination-cluster", unknown_clusters(input, clusters, ctx)),
                Some(Err(e)) => report.not_checked.push(format!(
                    "destination-cluster: cannot read Argo CD's cluster Secrets in namespace {}: {e}",
                    input.tier.spec.argocd.namespace
                )),
            }
            match &c.secret {
                None => {}
                Some(Ok(exists)) => ran(&mut report, "credentials", credentials_missing(input, *exists)),
                Some(Err(e)) => report.not_checked.push(format!("credentials: cannot read the Secret: {e}")),
            }
            // As the promotion gate: a ShopSet wholly in maintenance has its automated sync off on
            // purpose, so how its Application stands is no finding.
            let judged = c.applications.as_ref().map(|apps| {
                let (skipped, judged): (Vec<AppState>, Vec<AppState>) = apps.iter().cloned().partition(|a| {
                    input.shopsets.iter().any(|s| s.name_any() == a.shopset && s.wholly_in_maintenance())
                });
                for app in skipped {
                    report.not_checked.push(format!(
                        "application: Application {} of ShopSet {}: the ShopSet is in maintenance (automated sync off)",
                        app.application, app.shopset
                    ));
                }
                judged
            });
            match (&judged, git) {
                (Ok(apps), Ok(g)) => ran(&mut report, "application", applications(input, g, apps, ctx)),
                (Ok(apps), Err(_)) => {
                    ran(&mut report, "application", applications(input, &GitState::default(), apps, ctx))
                }
                (Err(e), _) => report.not_checked.push(format!("application: cannot read the Applications: {e}")),
            }
        }
    }
    ran(&mut report, "maintenance", old_maintenance(input, ctx));
    ran(&mut report, "promotion-policy", promotion_policy(input, ctx));
    if !input.tier.spec.argocd.destinations.is_empty() {
        ran(&mut report, "failure-domain", one_failure_domain(input, ctx));
        if cluster.is_err() {
            report.not_checked.push("destination-cluster: no cluster; set KUBECONFIG to check it".into());
        }
    }
    report
}

/// The failure domain of a destination: its labels, or the cluster itself when it has none.
fn domain_of(placed: &Placed<'_>) -> String {
    match placed.failure_domain {
        Some(d) if !d.is_empty() => placed.failure_domain_text(),
        _ => format!("cluster {}", placed.name.unwrap_or_default()),
    }
}

/// A tier with destinations whose ShopSets (more than one) all run in one failure domain: one
/// outage of that zone, region or cloud takes every cell of the tier down.
pub fn one_failure_domain(input: &TierInput, ctx: &Context) -> Vec<Finding> {
    let tier = &input.tier;
    let placed: Vec<(String, String, String)> = input
        .shopsets
        .iter()
        .filter_map(|ss| {
            let p = destination_of(tier, ss).ok()?;
            Some((ss.name_any(), p.name.unwrap_or_default().to_string(), domain_of(&p)))
        })
        .collect();
    let domains: BTreeSet<&str> = placed.iter().map(|(_, _, d)| d.as_str()).collect();
    let domains: Vec<&str> = domains.into_iter().collect();
    let ([domain], true) = (domains.as_slice(), placed.len() > 1) else {
        return Vec::new();
    };
    let name = tier.name_any();
    let names: Vec<&str> = placed.iter().map(|(s, _, _)| s.as_str()).collect();
    // A destination in another domain, if the tier lists one: move the last ShopSet there.
    let elsewhere = tier.spec.argocd.destinations.iter().find(|d| {
        let p = Placed { name: Some(&d.name), target: target(d), failure_domain: Some(&d.failure_domain) };
        domain_of(&p) != *domain
    });
    let last = names.last().copied().unwrap_or_default();
    let fix = match elsewhere {
        Some(d) => vec![
            format!("shopctl shopset move {last} --to {} -f {}", d.name, ctx.manifests),
            "# then commit the manifest for review; the next sync moves its Application".into(),
        ],
        None => vec![
            format!("# add a destination in another failure domain to Tier {name}'s spec.argocd.destinations, then:"),
            format!("shopctl shopset move {last} --to NEW-DESTINATION -f {}", ctx.manifests),
        ],
    };
    vec![finding(
        "failure-domain",
        &name,
        format!(
            "all {} ShopSets of tier {name} run in one failure domain ({domain}): {}",
            names.len(),
            names.join(", ")
        ),
        "one outage of that zone, region or cloud takes every cell of the tier down at once; spread them over \
         destinations in different failure domains"
            .into(),
        fix,
    )]
}

/// Destinations of the tier that no Argo CD cluster Secret names (by `server` or by `name`): Argo
/// CD cannot deploy there, so the Applications of the ShopSets on them never sync.
pub fn unknown_clusters(input: &TierInput, clusters: &[ArgoCluster], ctx: &Context) -> Vec<Finding> {
    let tier = &input.tier;
    let argocd_ns = &tier.spec.argocd.namespace;
    let mut out = Vec::new();
    for d in &tier.spec.argocd.destinations {
        let known = match target(d) {
            Target::Server(server) => {
                server == IN_CLUSTER.0 || clusters.iter().any(|c| c.server.as_deref() == Some(server))
            }
            Target::Cluster(cluster) => {
                cluster == IN_CLUSTER.1 || clusters.iter().any(|c| c.name.as_deref() == Some(cluster))
            }
        };
        if known {
            continue;
        }
        let on: Vec<String> = input
            .shopsets
            .iter()
            .filter(|ss| destination_of(tier, ss).is_ok_and(|p| p.name == Some(d.name.as_str())))
            .map(|ss| ss.name_any())
            .collect();
        let users = if on.is_empty() { "no ShopSet yet".to_string() } else { format!("ShopSets {}", on.join(", ")) };
        let (name, server) = match target(d) {
            Target::Server(server) => (d.name.clone(), server.to_string()),
            Target::Cluster(cluster) => (cluster.to_string(), "API-SERVER-URL".to_string()),
        };
        let secret = format!("cluster-{}", d.name);
        out.push(finding(
            "destination-cluster",
            &tier.name_any(),
            format!(
                "destination {} ({}) of tier {}: no Argo CD cluster Secret in namespace {argocd_ns} names it (used by {users})",
                d.name,
                target(d),
                tier.name_any()
            ),
            "Argo CD deploys only to clusters it has a cluster Secret for (label argocd.argoproj.io/secret-type: \
             cluster, matched by its server or name key); Applications sent elsewhere never sync"
                .into(),
            vec![
                format!("# with the argocd CLI: argocd cluster add CONTEXT --name {name}"),
                format!(
                    "kubectl -n {argocd_ns} create secret generic {secret} --from-literal=name={name} --from-literal=server={server} --from-literal=config='{{\"bearerToken\":\"TOKEN\",\"tlsClientConfig\":{{\"caData\":\"CA-BASE64\"}}}}'"
                ),
                format!("kubectl -n {argocd_ns} label secret {secret} {}={}", ARGOCD_SECRET_TYPE.0, ARGOCD_SECRET_TYPE.1),
                format!("shopctl doctor {} -f {}", tier.name_any(), ctx.manifests),
            ],
        ));
    }
    out
}

/// A stuck promotion policy: a hold older than [`HOLD_MAX_AGE`], or a window that never opens.
pub fn promotion_policy(input: &TierInput, ctx: &Context) -> Vec<Finding> {
    let tier = input.tier.name_any();
    let policy = match shopset_core::policy::Policy::of(&input.tier) {
        Ok(Some(p)) => p,
        Ok(None) => return Vec::new(),
        Err(e) => {
            return vec![finding(
                "promotion-policy",
                &tier,
                format!("the promotion policy of tier {tier} cannot be read: {e}"),
                "the controller refuses every promotion into the tier while it cannot be read".into(),
                vec![
                    format!("# correct {} in the Tier's manifest, then:", e.field),
                    format!("kubectl apply -f {}", ctx.manifests),
                ],
            )];
        }
    };
    let mut out = Vec::new();
    if let Some(hold) = &policy.hold {
        let age = ctx.now - hold.since.0.as_second();
        if age > HOLD_MAX_AGE {
            out.push(finding(
                "promotion-policy",
                &tier,
                format!(
                    "promotions into tier {tier} have been on hold for {} (since {}{}): {}",
                    human_duration(age),
                    hold.since.0,
                    hold.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default(),
                    hold.reason
                ),
                "a hold stops automatic promotion until a person releases it; a forgotten one leaves the tier behind the one it is promoted from".into(),
                vec![
                    "# when the reason of the hold is resolved:".into(),
                    format!("shopctl release {tier} -f {}", ctx.manifests),
                    "# then commit the manifest for review".into(),
                ],
            ));
        }
    }
    let now = shopset_core::policy::Timestamp::from_second(ctx.now).unwrap_or_default();
    for (i, w) in policy.windows.iter().enumerate() {
        if w.next_start(now).is_some() || w.open_until(now).is_some() {
            continue;
        }
        let kind = match w.kind {
            shopset_core::api::WindowKind::Allow => "allow",
            shopset_core::api::WindowKind::Deny => "deny",
        };
        let why = match w.kind {
            shopset_core::api::WindowKind::Allow => {
                "no promotion into the tier starts outside every allow window: if none of them opens, the tier is never promoted into"
            }
            shopset_core::api::WindowKind::Deny => {
                "a deny window that never opens does nothing: its schedule is likely not what was meant"
            }
        };
        out.push(finding(
            "promotion-policy",
            &tier,
            format!(
                "tier {tier}: {kind} {} (spec.promotion.windows[{i}]) never opens: its schedule names no day of the coming years",
                w.label
            ),
            why.into(),
            vec![
                "# correct the schedule (minute hour day-of-month month day-of-week), e.g. `0 18 * * FRI`, then:".into(),
                format!("kubectl apply -f {}", ctx.manifests),
            ],
        ));
    }
    out
}

/// The controller's automatic promotion, as its `Promotable` condition says: one that fails (it
/// retries, but a person must act), or pull requests that have waited for reviews or a merge for
/// longer than [`HOLD_MAX_AGE`] (measured from when the tier was last promoted into, the
/// condition's transition to False).
pub fn stuck_auto_promotion(input: &TierInput, applied: Option<&Tier>, ctx: &Context) -> Vec<Finding> {
    let (tier, ns) = (input.tier.name_any(), tier_namespace(&input.tier));
    let conditions = applied.and_then(|t| t.status.as_ref()).map(|s| s.conditions.as_slice()).unwrap_or_default();
    let Some(c) = conditions.iter().find(|c| c.type_ == crate::auto_promotion::CONDITION) else {
        return Vec::new();
    };
    let age = ctx.now - c.last_transition_time.0.as_second();
    let condition = format!(
        "kubectl -n {ns} get tier {tier} -o jsonpath='{{.status.conditions[?(@.type==\"{}\")]}}'",
        crate::auto_promotion::CONDITION
    );
    let (why, fix): (&str, Vec<String>) = match c.reason.as_str() {
        "PromotionFailed" => (
            "the controller tries again at each reconcile and fails the same way: the tier is not promoted into until the cause goes",
            vec![condition, format!("kubectl -n {CONTROLLER_NAMESPACE} logs deploy/{CONTROLLER_DEPLOYMENT} --tail=50")],
        ),
        "NoGitHubToken" => (
            "the tier promotes by pull request, and the controller has no GitHub token to open or merge them with",
            vec![format!(
                "kubectl -n {CONTROLLER_NAMESPACE} create secret generic shopset-github --from-file=token=./github-token"
            )],
        ),
        "InvalidPolicy" => (
            "the controller cannot read the tier's promotion policy or the tier it is promoted from, so it promotes nothing",
            vec!["# correct the Tier's spec.promotion, then:".into(), format!("kubectl apply -f {}", ctx.manifests)],
        ),
        "AwaitingApproval" | "AwaitingMerge" if age > HOLD_MAX_AGE => (
            "the promotion pull requests stay open until they are approved (or merged by a person): the tier falls behind the one it is promoted from",
            vec![
                condition,
                "# review the pull requests it names; or merge them once approved:".into(),
                format!("shopctl merge-promotion {tier} -f {}", ctx.manifests),
            ],
        ),
        _ => return Vec::new(),
    };
    let since = if c.reason.starts_with("Awaiting") {
        format!(" (not promoted into for {})", human_duration(age))
    } else {
        String::new()
    };
    vec![finding(
        "auto-promotion",
        &tier,
        format!("automatic promotion into tier {tier} is {}{since}: {}", c.reason, c.message),
        why.into(),
        fix,
    )]
}

fn git_unreadable(input: &TierInput, error: &str, ctx: &Context) -> Finding {
    let t = &input.tier;
    finding(
        "git",
        &t.name_any(),
        format!("cannot read the repositories of tier {}: {error}", t.name_any()),
        "the controller reads the same repositories: while they cannot be read, nothing is pinned or pushed (the Tier's Ready condition says GitUnavailable or AuthenticationFailed)".into(),
        vec![
            "# check the URL, the server and the credentials by hand:".into(),
            format!("git ls-remote {}", t.spec.app.url),
            format!("git ls-remote {}", t.spec.system.url),
            format!("shopctl status {} -f {}", t.name_any(), ctx.manifests),
        ],
    )
}

/// A ShopSet (or some of its shops) in maintenance for longer than `ctx.maintenance_max_age`:
/// maintenance is meant to end, and a forgotten one keeps shops down and Argo CD from syncing.
pub fn old_maintenance(input: &TierInput, ctx: &Context) -> Vec<Finding> {
    let tier = input.tier.name_any();
    let mut out = Vec::new();
    for ss in &input.shopsets {
        let Some(m) = &ss.spec.maintenance else { continue };
        let age = ctx.now - m.since.0.as_second();
        if age <= ctx.maintenance_max_age {
            continue;
        }
        let name = ss.name_any();
        let what = if m.whole() { "the whole ShopSet".to_string() } else { format!("shops {}", m.shops.join(", ")) };
        let why = if m.whole() {
            "its shops serve the maintenance page and Argo CD does not sync its Application while it lasts: \
             a forgotten maintenance keeps them down and lets the cluster drift from git"
        } else {
            "these shops serve the maintenance page while it lasts: a forgotten maintenance keeps them down"
        };
        out.push(finding(
            "maintenance",
            &tier,
            format!(
                "ShopSet {name}: {what} in maintenance for {} (since {}, longer than {}): {}",
                human_duration(age),
                m.since.0,
                human_duration(ctx.maintenance_max_age),
                m.reason
            ),
            why.into(),
            vec![
                "# when the work is done:".into(),
                format!("shopctl maintenance off {name} -f {}", ctx.manifests),
                "# then commit the manifest for review; or, if it must last, pass a larger --maintenance-max-age"
                    .into(),
            ],
        ));
    }
    out
}

/// A tier branch missing in the app, a configuration or the system repository.
pub fn missing_branches(input: &TierInput, git: &GitState, ctx: &Context) -> Vec<Finding> {
    let t = &input.tier;
    let (tier, branch) = (t.name_any(), t.branch());
    let source = input.from.as_ref().map(|f| f.branch());
    let mut out = Vec::new();
    let mut repos: Vec<(String, String, bool)> = vec![("app".into(), t.spec.app.url.clone(), git.app_head.is_some())];
    for c in &input.configurations {
        let present = git.configuration_heads.get(&c.name_any()).is_some_and(Option::is_some);
        repos.push((format!("configuration {}", c.name_any()), c.spec.url.clone(), present));
    }
    for (what, url, present) in repos {
        if present {
            continue;
        }
        let from = source.clone().unwrap_or_else(|| "main".into());
        let from_what = match &source {
            Some(s) => format!("branch {s} of the tier it is promoted from"),
            None => "the default branch".into(),
        };
        out.push(finding(
            "branch-missing",
            &tier,
            format!("the {what} repository {url} has no branch {branch}"),
            format!(
                "tier {tier} deploys what branch {branch} holds; the controller creates it from {from_what} on its next successful sync, \
                 and until then nothing of this tier is pinned (the Tier is not Ready with BranchMissing if {from_what} is missing too)"
            ),
            vec![
                format!("shopctl sync -f {} --tier {tier}", ctx.manifests),
                format!("# or by hand (`{from}` is {from_what}):"),
                format!("git clone --quiet --no-checkout {url} repo && git -C repo push --force-with-lease={branch}: origin refs/remotes/origin/{from}:refs/heads/{branch}"),
            ],
        ));
    }
    if git.system_head.is_none() {
        out.push(finding(
            "branch-missing",
            &tier,
            format!("the system repository {} has no branch {branch}", t.spec.system.url),
            format!("Argo CD deploys tier {tier}'s Applications from branch {branch} of the system repository: the tier was never synced, so nothing of it can deploy"),
            vec![
                format!("shopctl sync -f {} --tier {tier}", ctx.manifests),
                "# or by hand: docs/runbook.md, \"First render of a tier branch\"".into(),
            ],
        ));
    }
    out
}

/// The system branch pins an app or configuration commit other than the tier branch's head.
pub fn stale_pins(input: &TierInput, git: &GitState, ctx: &Context) -> Vec<Finding> {
    let t = &input.tier;
    let (tier, branch) = (t.name_any(), t.branch());
    // During a promotion the pins wait for it on purpose: promotion-in-progress says so.
    if git.system_head.is_none() || git.promotion.is_some() {
        return Vec::new();
    }
    let mut pairs: Vec<(String, String, Option<String>, Option<i64>)> =
        vec![("base".into(), "app".into(), git.app_head.clone(), git.app_head_time)];
    for c in &input.configurations {
        let name = c.name_any();
        pairs.push((
            format!("config/{name}"),
            format!("configuration {name}"),
            git.configuration_heads.get(&name).cloned().flatten(),
            git.configuration_head_times.get(&name).copied(),
        ));
    }
    let interval = &t.spec.interval;
    let mut out = Vec::new();
    for (path, what, head, time) in pairs {
        let (Some(head), Some(pinned)) = (head, git.pinned.get(&path)) else { continue };
        if &head == pinned {
            continue;
        }
        let count = match git.unpinned_commits.get(&path) {
            Some(0) => " (the branch moved back or was rewritten)".to_string(),
            Some(1) => " (1 commit not deployed)".to_string(),
            Some(n) => format!(" ({n} commits not deployed)"),
            None => String::new(),
        };
        let age = match time {
            Some(time) => format!("the {what} head was committed {} ago", human_duration(ctx.now - time)),
            None => format!("the {what} head moved"),
        };
        out.push(finding(
            "stale-pin",
            &tier,
            format!("the system branch {branch} pins {what} {}, but the {what} branch {branch} is at {}{count}", short(pinned), short(&head)),
            format!(
                "{age}; the controller pins a new head within the Tier's interval ({interval}) or at once on a webhook, \
                 so it is lagging, stopped, or failing on this tier (its Ready condition says why)"
            ),
            vec![
                format!("kubectl -n {} get tier {tier} -o wide", tier_namespace(t)),
                format!("kubectl -n {CONTROLLER_NAMESPACE} logs deploy/{CONTROLLER_DEPLOYMENT} --tail=50"),
                "# do the controller's step by hand (the same commit it would write):".into(),
                format!("shopctl sync -f {} --tier {tier}", ctx.manifests),
            ],
        ));
    }
    out
}

/// A promotion into the tier that did not complete (its marker is in the system repository): the
/// controller holds the tier's pins until it is finished or undone.
pub fn promotion_in_progress(input: &TierInput, git: &GitState, ctx: &Context) -> Vec<Finding> {
    let Some(m) = &git.promotion else { return Vec::new() };
    let tier = input.tier.name_any();
    let moves: Vec<String> = m
        .repositories
        .iter()
        .map(|r| format!("{} {} -> {}", r.repository, short_or(r.previous.as_deref(), "-"), short(&r.target)))
        .collect();
    vec![finding(
        "promotion-in-progress",
        &tier,
        format!(
            "{} did not complete: its marker {} ({}) is still in the system repository{}",
            m.what(),
            m.refname,
            short(&m.id),
            if moves.is_empty() { String::new() } else { format!(" ({})", moves.join(", ")) }
        ),
        format!(
            "a promotion pushes the app and configuration branches one after the other and pins them in one system commit; \
             it was interrupted between (a refused push, a crash), so the controller keeps tier {tier}'s pins where they are \
             rather than deploy a new app with an old configuration"
        ),
        vec![
            "# finish it (pushes what is missing, pins the whole set in one commit, removes the marker):".into(),
            m.finish_command(&ctx.manifests),
            "# or undo it (moves back what it moved, removes the marker):".into(),
            m.undo_command(&ctx.manifests),
        ],
    )]
}

/// A pinned commit that no branch of its repository contains (force-pushed away).
pub fn unreachable_pins(input: &TierInput, git: &GitState, ctx: &Context) -> Vec<Finding> {
    let t = &input.tier;
    let (tier, branch) = (t.name_any(), t.branch());
    let mut out = Vec::new();
    for (path, commit) in &git.unreachable {
        let (what, url) = if path == "base" {
            ("app".to_string(), t.spec.app.url.clone())
        } else {
            let name = path.trim_start_matches("config/");
            let url = input
                .configurations
                .iter()
                .find(|c| c.name_any() == name)
                .map(|c| c.spec.url.clone())
                .unwrap_or_default();
            (format!("configuration {name}"), url)
        };
        out.push(finding(
            "pin-unreachable",
            &tier,
            format!("the system branch {branch} pins {what} commit {}, which no branch of {url} contains any more", short(commit)),
            format!(
                "someone rewrote branch {branch} (a force push): git clone --recurse-submodules, and so Argo CD, cannot fetch a commit no branch reaches, \
                 so the overlays of tier {tier} no longer build"
            ),
            vec![
                "# pin the branch's current head again (the controller does so on its next sync):".into(),
                format!("shopctl sync -f {} --tier {tier}", ctx.manifests),
                format!("# or, if the rewrite was a mistake, put {} back from a clone that still has it:", short(commit)),
                format!("git push --force-with-lease={branch}:$(git ls-remote {url} refs/heads/{branch} | cut -f1) {url} {commit}:refs/heads/{branch}"),
            ],
        ));
    }
    out
}

/// The tier has commits the tier it is promoted from lacks (a hotfix not merged back).
pub fn hotfix_not_merged(input: &TierInput, git: &GitState, ctx: &Context) -> Vec<Finding> {
    let Some(from) = &input.from else { return Vec::new() };
    let t = &input.tier;
    let (tier, branch, from_tier, from_branch) = (t.name_any(), t.branch(), from.name_any(), from.branch());
    let mut repos: Vec<(String, String, usize)> = Vec::new();
    if let Some(n) = git.ahead.filter(|n| *n > 0) {
        repos.push(("app".into(), t.spec.app.url.clone(), n));
    }
    for c in &input.configurations {
        if let Some(n) = git.configuration_ahead.get(&c.name_any()).filter(|n| **n > 0) {
            repos.push((format!("configuration {}", c.name_any()), c.spec.url.clone(), *n));
        }
    }
    repos
        .into_iter()
        .map(|(what, url, n)| {
            finding(
                "hotfix-not-merged",
                &tier,
                format!("the {what} branch {branch} has {n} commit(s) that {from_branch} lacks (a hotfix not merged back)"),
                format!(
                    "the next promotion {from_tier} -> {tier} is refused as diverged, and forcing it would take the hotfix out of {tier}: \
                     it has to reach {from_branch} first"
                ),
                vec![
                    format!("git clone --quiet {url} repo && cd repo"),
                    format!("git checkout {from_branch} && git merge origin/{branch} && git push origin {from_branch}"),
                    format!("# then let it reach tier {from_tier} and promote: shopctl promote {from_tier} {tier} -f {}", ctx.manifests),
                ],
            )
        })
        .collect()
}

/// The Tier is not applied, or its Ready condition is not True.
pub fn tier_not_ready(input: &TierInput, applied: Option<&Tier>, ctx: &Context) -> Vec<Finding> {
    let t = &input.tier;
    let (tier, ns) = (t.name_any(), tier_namespace(t));
    let Some(applied) = applied else {
        return vec![finding(
            "tier-not-ready",
            &tier,
            format!("Tier {ns}/{tier} is not applied to the cluster"),
            "the controller only manages Tiers it can see: nothing syncs this tier unless someone runs `shopctl sync`"
                .into(),
            vec![format!("kubectl apply --server-side -f {}", ctx.manifests)],
        )];
    };
    let conditions = applied.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let describe = format!("kubectl -n {ns} describe tier {tier}");
    let logs = format!("kubectl -n {CONTROLLER_NAMESPACE} logs deploy/{CONTROLLER_DEPLOYMENT} --tail=50");
    let Some(ready) = conditions.iter().find(|c| c.type_ == "Ready") else {
        return vec![finding(
            "tier-not-ready",
            &tier,
            format!("Tier {ns}/{tier} has no Ready condition"),
            "the controller has not reconciled it yet: it is not running, not leader, or cannot read Tiers in this namespace".into(),
            vec![format!("kubectl -n {CONTROLLER_NAMESPACE} get deploy,pods"), logs, "# meanwhile, do its step by hand:".into(), format!("shopctl sync -f {} --tier {tier}", ctx.manifests)],
        )];
    };
    if ready.status == "True" {
        return Vec::new();
    }
    let stale = match (applied.metadata.generation, applied.status.as_ref().and_then(|s| s.observed_generation)) {
        (Some(g), Some(o)) if o < g => format!(" (the status describes generation {o}; the Tier is at {g})"),
        _ => String::new(),
    };
    let sync = format!("shopctl sync -f {} --tier {tier}", ctx.manifests);
    let (why, mut fix): (&str, Vec<String>) = match ready.reason.as_str() {
        "GitUnavailable" => (
            "a repository cannot be reached: nothing is pinned or pushed until it can",
            vec![format!("git ls-remote {}", t.spec.app.url), format!("git ls-remote {}", t.spec.system.url)],
        ),
        "AuthenticationFailed" => (
            "the git server refused the credentials of the Secret the Tier names",
            vec![
                format!(
                    "kubectl -n {ns} get secret {} -o jsonpath='{{.data}}'",
                    t.spec.credentials.as_ref().map(|c| c.secret_ref.name.as_str()).unwrap_or("<secret>")
                ),
                "# update username/password (a token goes in password), then wait for the next poll".into(),
            ],
        ),
        "CredentialsMissing" => (
            "the Secret the Tier names is missing or holds neither password nor identity",
            vec![format!(
                "kubectl -n {ns} get secret {}",
                t.spec.credentials.as_ref().map(|c| c.secret_ref.name.as_str()).unwrap_or("<secret>")
            )],
        ),
        "PushConflict" => (
            "another writer keeps moving the system branch; only ShopSet should write it",
            vec![
                format!("git log --format='%h %an %s' -5 {} ", t.branch()),
                "# (in a clone of the system repository) stop the other writer, then:".into(),
                sync.clone(),
            ],
        ),
        "PushRejected" => (
            "the system repository refuses the push (branch protection or a hook)",
            vec!["# allow ShopSet's credentials to push to the tier branch, then:".into(), sync.clone()],
        ),
        "BranchMissing" => (
            "a tier branch is missing and there is nothing to create it from",
            vec![format!("shopctl sync -f {} --tier {tier} --dry-run", ctx.manifests)],
        ),
        "InvalidSpec" | "RenderFailed" => (
            "the Tier, its ShopSets or Configurations are invalid, or a template fails",
            vec![format!("shopctl render -f {} --tier {tier} --offline --out /tmp/{tier}", ctx.manifests)],
        ),
        "ApplicationsFailed" => (
            "the Applications could not be applied (Argo CD's CRD missing, RBAC, or the namespace)",
            vec![format!("kubectl -n {} get applications", t.spec.argocd.namespace)],
        ),
        "RepoCredsFailed" => (
            "Argo CD's credential templates for the tier's repositories could not be written (RBAC, or the namespace)",
            vec![
                format!(
                    "kubectl -n {} get secrets -l shopset.dev/tier={tier},shopset.dev/tier-namespace={ns}",
                    t.spec.argocd.namespace
                ),
                format!("kubectl apply -n {} -f deploy/argocd/repo-creds-rolebinding.yaml", t.spec.argocd.namespace),
            ],
        ),
        _ => ("the controller's last reconcile of this tier failed", vec![]),
    };
    fix.insert(0, describe);
    fix.push(logs);
    vec![finding(
        "tier-not-ready",
        &tier,
        format!("Tier {ns}/{tier} is not Ready: {}: {}{stale}", ready.reason, ready.message),
        why.to_string(),
        fix,
    )]
}

/// The credentials Secret the Tier names does not exist.
pub fn credentials_missing(input: &TierInput, exists: bool) -> Vec<Finding> {
    let t = &input.tier;
    let (Some(creds), false) = (&t.spec.credentials, exists) else { return Vec::new() };
    let (ns, name) = (tier_namespace(t), &creds.secret_ref.name);
    vec![finding(
        "credentials",
        &t.name_any(),
        format!("Secret {ns}/{name}, named by Tier {}'s spec.credentials.secretRef, does not exist", t.name_any()),
        "the controller cannot authenticate to git without it: every sync of the tier fails (Ready False, CredentialsMissing)".into(),
        vec![
            format!("kubectl -n {ns} create secret generic {name} --from-literal=username=<user> --from-literal=password=<token>"),
            format!("# for SSH: kubectl -n {ns} create secret generic {name} --from-file=identity=<private key file>"),
        ],
    )]
}

/// Each ShopSet's Application that is not deployed at the system branch's head, by the verdict the
/// promotion gate and `status` use ([`problems`]): one finding per problem, with why and the fix.
pub fn applications(input: &TierInput, git: &GitState, apps: &[AppState], ctx: &Context) -> Vec<Finding> {
    let t = &input.tier;
    let (tier, branch, argo_ns) = (t.name_any(), t.branch(), t.spec.argocd.namespace.clone());
    let clone =
        format!("git clone --quiet --recurse-submodules --branch {branch} {} system && cd system", t.spec.system.url);
    let mut out = Vec::new();
    for app in apps {
        let (ss, name) = (&app.shopset, &app.application);
        let namespace = input
            .shopsets
            .iter()
            .find(|s| &s.name_any() == ss)
            .map(|s| s.destination_namespace(t))
            .unwrap_or_else(|| ss.clone());
        for problem in problems(app, &branch, git.system_head.as_deref()) {
            let (why, fix): (&str, Vec<String>) = match &problem {
                Problem::Missing => (
                    "Argo CD deploys nothing for this ShopSet; the controller applies the Applications after each sync, \
                     so it has not run (or failed) since the ShopSet was added",
                    vec![
                        clone.clone(),
                        format!(
                            "kubectl apply --server-side --field-manager=shopset-controller -f applications/{name}.yaml"
                        ),
                    ],
                ),
                Problem::Retargeted { .. } => (
                    "someone edited the Application: it deploys another branch or commit than the one ShopSet pins, \
                     until the controller applies it again",
                    vec![
                        clone.clone(),
                        format!(
                            "kubectl apply --server-side --force-conflicts --field-manager=shopset-controller -f applications/{name}.yaml"
                        ),
                    ],
                ),
                Problem::ArgoError { .. } => (
                    "Argo CD cannot build or apply the ShopSet's manifests at this commit: nothing new is deployed \
                     until the input is fixed or the tier is rolled back",
                    vec![
                        format!(
                            "shopctl render -f {} --tier {tier} --out /tmp/{tier} && kustomize build /tmp/{tier}/shopsets/{ss}",
                            ctx.manifests
                        ),
                        format!(
                            "# if the last app change caused it: shopctl rollback {tier} -f {} --steps 1",
                            ctx.manifests
                        ),
                    ],
                ),
                Problem::NotSynced { .. } => (
                    "the cluster does not run what the system branch holds: Argo CD has not synced yet, auto-sync is \
                     off, or the sync failed",
                    vec![
                        format!("kubectl -n {argo_ns} get application {name} -o jsonpath='{{.status.conditions}}'"),
                        format!("argocd app sync {name}"),
                        "# when Argo CD itself is down, apply the overlay by hand:".into(),
                        format!("shopctl apply {tier} -f {} --shopset {ss}", ctx.manifests),
                    ],
                ),
                Problem::Progressing => (
                    "a rollout is under way: a promotion from this tier waits until it is Healthy",
                    vec![format!("kubectl -n {namespace} rollout status deploy --timeout=5m")],
                ),
                Problem::Unhealthy { .. } => (
                    "workloads of the ShopSet are failing (crash loops, failed rollouts, unready pods); a promotion \
                     from this tier is refused until it is Healthy",
                    vec![
                        format!("kubectl -n {namespace} get deploy,pods"),
                        format!("kubectl -n {argo_ns} get application {name} -o jsonpath='{{.status.resources}}'"),
                        format!(
                            "# if the last app change caused it, roll the tier back: shopctl rollback {tier} -f {} --steps 1",
                            ctx.manifests
                        ),
                    ],
                ),
                Problem::StaleRevision { .. } => (
                    "Argo CD has not picked up the newest system commit (it polls every 3 minutes by default, or it \
                     could not fetch the branch)",
                    vec![format!(
                        "kubectl -n {argo_ns} annotate application {name} argocd.argoproj.io/refresh=hard --overwrite"
                    )],
                ),
            };
            let problem = format!("ShopSet {ss}: Application {argo_ns}/{name}: {problem}");
            out.push(finding("application", &tier, problem, why.to_string(), fix));
        }
    }
    out
}

/// Webhook deliveries from the controller's Prometheus metrics text.
pub fn webhooks(metrics: &str, controller_url: &str) -> Vec<Finding> {
    let value = |name: &str| -> Option<f64> {
        metrics.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (metric, v) = l.rsplit_once(' ')?;
            (metric.split('{').next() == Some(name)).then(|| v.trim().parse().ok()).flatten()
        })
    };
    let mut out = Vec::new();
    match value("shopset_webhook_deliveries_total") {
        None => out.push(Finding {
            check: "webhook".into(),
            tier: None,
            problem: format!("{controller_url} serves no shopset_webhook_deliveries_total metric"),
            why: "it is not shopset-controller's /metrics endpoint, or a different version".into(),
            fix: vec![format!("curl -s {controller_url}/metrics | grep shopset_")],
        }),
        Some(0.0) => out.push(Finding {
            check: "webhook".into(),
            tier: None,
            problem: "the controller has seen no webhook delivery since it started".into(),
            why: "without webhooks it only notices a merge at each Tier's poll interval; the git host is not sending pushes to POST /hooks/github, or they do not reach the controller".into(),
            fix: vec![
                "# in the app and configuration repositories' settings, add a webhook: content type application/json, event \"push\", secret = the controller's --webhook-secret-file".into(),
                format!("# payload URL: https://<ingress to {CONTROLLER_NAMESPACE}/{CONTROLLER_DEPLOYMENT}:8080>/hooks/github"),
                "# then check its \"Recent Deliveries\" page, and:".into(),
                format!("curl -s {controller_url}/metrics | grep shopset_webhook"),
            ],
        }),
        Some(_) => {}
    }
    if let Some(n) = value("shopset_webhook_refused_total").filter(|n| *n > 0.0) {
        out.push(Finding {
            check: "webhook".into(),
            tier: None,
            problem: format!("the controller refused {n} webhook deliveries"),
            why: "their X-Hub-Signature-256 did not match the secret (or bodies were over 1 MiB): those pushes were only noticed at the next poll".into(),
            fix: vec![
                "# make the webhook's secret equal to the file the controller reads (--webhook-secret-file):".into(),
                format!("kubectl -n {CONTROLLER_NAMESPACE} get deploy {CONTROLLER_DEPLOYMENT} -o jsonpath='{{.spec.template.spec.containers[0].args}}'"),
            ],
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reading the facts

/// Reads the Tier, its Applications and its credentials Secret from the cluster.
pub async fn cluster_facts(client: &kube::Client, input: &TierInput) -> ClusterFacts {
    let t = &input.tier;
    let ns = tier_namespace(t);
    let tier = Api::<Tier>::namespaced(client.clone(), &ns).get_opt(&t.name_any()).await.map_err(|e| api_message(&e));
    let applications = application_states(client, t, &input.shopsets).await.map_err(|e| api_message(&e));
    let secret = match &t.spec.credentials {
        None => None,
        Some(c) => Some(
            Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(&c.secret_ref.name)
                .await
                .map(|s| s.is_some())
                .map_err(|e| api_message(&e)),
        ),
    };
    let argocd_clusters = if t.spec.argocd.destinations.is_empty() {
        None
    } else {
        let selector = format!("{}={}", ARGOCD_SECRET_TYPE.0, ARGOCD_SECRET_TYPE.1);
        let secrets = Api::<Secret>::namespaced(client.clone(), &t.spec.argocd.namespace)
            .list(&ListParams::default().labels(&selector))
            .await;
        Some(secrets.map_err(|e| api_message(&e)).map(|list| {
            list.items
                .into_iter()
                .map(|s| {
                    let key = |k: &str| {
                        s.data.as_ref().and_then(|d| d.get(k)).map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    };
                    ArgoCluster { secret: s.name_any(), name: key("name"), server: key("server") }
                })
                .collect()
        }))
    };
    ClusterFacts { tier, applications, secret, argocd_clusters }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Destinations without failure-domain labels are a domain each, as placement counts them.
    #[test]
    fn destinations_without_labels_are_a_failure_domain_each() {
        let tier: Tier = serde_json::from_value(serde_json::json!({
            "apiVersion": "shopset.dev/v1alpha1", "kind": "Tier", "metadata": {"name": "tier-0"},
            "spec": {"app": {"url": "https://git.example/app"}, "system": {"url": "https://git.example/system"},
                     "argocd": {"destinations": [{"name": "dc-a", "server": "https://a.example"},
                                                 {"name": "dc-b", "server": "https://b.example"}]}}
        }))
        .unwrap();
        let ss = |name: &str, destination: &str| -> shopset_core::api::ShopSet {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "shopset.dev/v1alpha1", "kind": "ShopSet", "metadata": {"name": name},
                "spec": {"tier": "tier-0", "configuration": "c", "shops": ["s"], "destination": destination}
            }))
            .unwrap()
        };
        let ctx = Context { manifests: "m/".into(), now: 0, maintenance_max_age: 3600 };
        let input = |shopsets: Vec<shopset_core::api::ShopSet>| TierInput {
            tier: tier.clone(),
            from: None,
            configurations: Vec::new(),
            shopsets: shopsets.into_iter().map(std::sync::Arc::new).collect(),
        };
        assert!(one_failure_domain(&input(vec![ss("a", "dc-a"), ss("b", "dc-b")]), &ctx).is_empty());
        let found = one_failure_domain(&input(vec![ss("a", "dc-a"), ss("b", "dc-a")]), &ctx);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].problem.contains("one failure domain (cluster dc-a)"), "{found:#?}");
        assert!(found[0].fix.iter().any(|l| l.contains("--to dc-b")), "{found:#?}");
    }

    #[test]
    fn webhook_metrics_are_read_from_prometheus_text() {
        let m = crate::metrics::Metrics::default();
        let none = webhooks(&m.encode(), "http://c:8080");
        assert_eq!(none.len(), 1, "{none:?}");
        assert!(none[0].problem.contains("no webhook delivery"), "{none:?}");
        m.webhooks.inc();
        assert!(webhooks(&m.encode(), "http://c:8080").is_empty());
        m.webhooks_refused.inc();
        let refused = webhooks(&m.encode(), "http://c:8080");
        assert!(refused[0].problem.contains("refused 1 webhook"), "{refused:?}");
        assert!(webhooks("# nothing\n", "http://c:8080")[0].problem.contains("serves no"));
    }

    #[test]
    fn an_old_hold_and_a_window_that_never_opens_are_findings() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use shopset_core::api::{Hold, Promotion, PromotionWindow, TierSpec, WindowKind};
        let window = |name: &str, schedule: &str| PromotionWindow {
            kind: WindowKind::Allow,
            schedule: schedule.into(),
            duration: "1h".into(),
            time_zone: "UTC".into(),
            name: Some(name.into()),
        };
        let tier = Tier::new(
            "tier-1",
            TierSpec {
                branch: None,
                app: shopset_core::api::AppSource { url: "https://git.example/app".into(), path: ".".into() },
                system: shopset_core::api::SystemRepository { url: "https://git.example/system".into() },
                promotion: Some(Promotion {
                    from: "tier-0".into(),
                    windows: vec![window("feb-31", "0 0 31 2 *"), window("daily", "0 9 * * *")],
                    hold: Some(Hold {
                        reason: "rolled back app 1a2b3c4 -> 0f0f0f0".into(),
                        since: Time("2026-12-01T08:00:00Z".parse().unwrap()),
                        by: Some("alice".into()),
                    }),
                    ..Promotion::default()
                }),
                argocd: Default::default(),
                credentials: None,
                interval: "1m".into(),
                deletion_policy: Default::default(),
            },
        );
        let input = TierInput { tier, from: None, configurations: Vec::new(), shopsets: Vec::new() };
        let now = "2026-12-03T08:00:00Z".parse::<shopset_core::policy::Timestamp>().unwrap().as_second();
        let ctx = Context { manifests: "m/".into(), now, maintenance_max_age: 3600 };
        let found = promotion_policy(&input, &ctx);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            found[0].problem,
            "promotions into tier tier-1 have been on hold for 2d 0h (since 2026-12-01T08:00:00Z by alice): rolled back app 1a2b3c4 -> 0f0f0f0"
        );
        assert_eq!(found[0].fix[1], "shopctl release tier-1 -f m/");
        assert!(
            found[1].problem.contains("allow window 'feb-31' (spec.promotion.windows[0]) never opens"),
            "{found:#?}"
        );
        // A hold of an hour is no finding, and neither is a window that opens.
        let ctx = Context { now: now - 2 * 86400 + 3600, ..ctx };
        assert_eq!(promotion_policy(&input, &ctx).len(), 1);
    }

    #[test]
    fn a_failing_or_long_waiting_automatic_promotion_is_a_finding() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let tier = |reason: &str, since: &str| {
            let mut t = Tier::new(
                "tier-1",
                shopset_core::api::TierSpec {
                    branch: None,
                    app: shopset_core::api::AppSource { url: "https://git.example/app".into(), path: ".".into() },
                    system: shopset_core::api::SystemRepository { url: "https://git.example/system".into() },
                    promotion: None,
                    argocd: Default::default(),
                    credentials: None,
                    interval: "1m".into(),
                    deletion_policy: Default::default(),
                },
            );
            t.status = Some(shopset_core::api::TierStatus {
                conditions: vec![Condition {
                    type_: "Promotable".into(),
                    status: "False".into(),
                    reason: reason.into(),
                    message: "promotion pull request acme/shop-app#7 has 0 of 1 approving review; merge waits".into(),
                    last_transition_time: Time(since.parse().unwrap()),
                    observed_generation: None,
                }],
                ..Default::default()
            });
            t
        };
        let now = "2026-12-03T08:00:00Z".parse::<shopset_core::policy::Timestamp>().unwrap().as_second();
        let ctx = Context { manifests: "m/".into(), now, maintenance_max_age: 3600 };
        let check = |reason: &str, since: &str| {
            let applied = tier(reason, since);
            let input = TierInput { tier: applied.clone(), from: None, configurations: vec![], shopsets: vec![] };
            stuck_auto_promotion(&input, Some(&applied), &ctx)
        };
        let waited = check("AwaitingApproval", "2026-12-01T07:00:00Z");
        assert_eq!(waited.len(), 1, "{waited:#?}");
        assert_eq!(
            waited[0].problem,
            "automatic promotion into tier tier-1 is AwaitingApproval (not promoted into for 2d 1h): promotion pull request acme/shop-app#7 has 0 of 1 approving review; merge waits"
        );
        assert_eq!(waited[0].fix.last().map(String::as_str), Some("shopctl merge-promotion tier-1 -f m/"));
        assert!(check("AwaitingApproval", "2026-12-03T07:00:00Z").is_empty(), "an hour is no finding");
        assert_eq!(check("PromotionFailed", "2026-12-03T07:59:00Z").len(), 1, "a failure is one at once");
        assert!(check("NoGitHubToken", "2026-12-03T07:59:00Z")[0].fix[0].contains("shopset-github"));
        for fine in ["Waiting", "Promoted", "UpToDate", "NotVerified", "Held"] {
            assert!(check(fine, "2026-11-01T00:00:00Z").is_empty(), "{fine} is another check's or none");
        }
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(3 * 3600 + 12 * 60 + 5), "3h 12m");
        assert_eq!(human_duration(2 * 86400 + 3600), "2d 1h");
    }
}
