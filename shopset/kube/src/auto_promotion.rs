//! Automatic promotion (`spec.promotion.auto`): at each reconcile of a tier promoted from another,
//! the controller promotes by itself when the promotion gate, the soak and the windows allow it
//! and no hold is set. It takes the steps `shopctl promote FROM TO` takes, with the same library
//! functions: the plan ([`shopset_git::promote::plan`]), the gate ([`crate::gate::check`]), the
//! policy ([`shopset_core::policy::evaluate`]) and the marked promotion
//! ([`shopset_git::promote::start`]), whose marker and system commit carry a `Why:` line saying
//! which policy let it through. A tier with `spec.promotion.pullRequest` is promoted by pull
//! request instead, as `shopctl promote --pr` and `shopctl merge-promotion` do it
//! ([`shopset_git::promote::pull_requests`]). What it found is the Tier's `Promotable` condition.

use std::time::Duration;

use kube::ResourceExt;
use shopset_core::api::Tier;
use shopset_core::manifests::Inventory;
use shopset_core::policy::{self, Decision, Policy, Timestamp};
use shopset_core::revision::short;
use shopset_git::approvals::MergeOutcome;
use shopset_git::github::PullRequest;
use shopset_git::gitops::Auth;
use shopset_git::promote::pull_requests::{self as pr, Together};
use shopset_git::promote::{self, Completed, Move, Only, Plan};

use crate::reconcile::Context;

/// The condition type a tier with automatic promotion carries.
pub const CONDITION: &str = "Promotable";

/// What a reconcile found about promoting into a tier by itself.
#[derive(Debug, Clone)]
pub struct Promotable {
    /// True when the policy allowed a promotion now (and it was done).
    pub ok: bool,
    /// A CamelCase reason: `Promoted`, `UpToDate`, `NotVerified`, `Held`, `Waiting`, `Diverged`,
    /// `PromotionInProgress` (a rollback's marker), `PromotionFailed`, `InvalidPolicy`; by pull
    /// request also `AwaitingApproval`, `AwaitingMerge` (no `approvals` set: a person merges) and
    /// `NoGitHubToken`.
    pub reason: &'static str,
    pub message: String,
    /// When to look again, if sooner than the tier's interval (a soak that ends, a window that
    /// opens, reviews to count again).
    pub look_again: Option<Duration>,
    /// The reason of a Normal Event saying what was done (`Promoted`, `PullRequestOpened`).
    pub announce: Option<&'static str>,
    /// The line of the sync's commit message after promotion pull requests were merged (the
    /// merge itself is GitHub's): which policy let it through.
    pub why: Option<String>,
}

impl Promotable {
    fn no(reason: &'static str, message: String) -> Self {
        Promotable { ok: false, reason, message, look_again: None, announce: None, why: None }
    }
}

/// How often a tier whose promotion pull requests wait for reviews counts them again, when its
/// interval is longer (GitHub sends the controller no Event for a review).
const REVIEWS_LOOK_AGAIN: Duration = Duration::from_secs(30);

/// The tier `to` is promoted from by itself: what the policy says now, and the promotion if it
/// allows one. `None` when `to` has no automatic promotion. Git work runs off the async threads.
pub async fn step(ctx: &Context, to: &Tier, inventory: &Inventory, auth: &Auth) -> Option<Promotable> {
    let promotion = to.spec.promotion.as_ref().filter(|p| p.auto)?;
    let (from_name, to_name, by_pull_request) = (promotion.from.clone(), to.name_any(), promotion.pull_request);
    let policy = match Policy::of(to) {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => return Some(Promotable::no("InvalidPolicy", e.to_string())),
    };
    // Cheap first: a hold needs no git and no Argo CD.
    if let Some(hold) = &policy.hold {
        let by = hold.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
        return Some(Promotable::no(
            "Held",
            format!(
                "automatic promotion from {from_name} is held since {}{by}: {}; fix: `shopctl release {to_name}` \
                 (or remove spec.promotion.hold)",
                hold.since.0, hold.reason
            ),
        ));
    }
    let found = (|| {
        let from = inventory.find_tier(&from_name)?.clone();
        let from_input = inventory.tier_input(&from_name)?;
        let to_input = inventory.tier_input(&to_name)?;
        let cfgs = inventory.configurations_of(&[&from_name, &to_name])?;
        Ok::<_, shopset_core::validation::Problems>((from, from_input, to_input, cfgs))
    })();
    let (from, from_input, to_input, cfgs) = match found {
        Ok(found) => found,
        Err(p) => return Some(Promotable::no("InvalidPolicy", p.to_string())),
    };
    let (cache, auth2, to2, from2, from_input2) =
        (ctx.cache.clone(), auth.clone(), to.clone(), from.clone(), from_input.clone());
    let cfgs2 = cfgs.clone();
    let looked = tokio::task::spawn_blocking(move || {
        // A promotion into `to` that was interrupted is finished first, as running
        // `shopctl promote` again would.
        let marker = promote::in_progress(&cache, &auth2, &to2).map_err(|e| e.to_string())?;
        let git = shopset_git::state::read(&cache, &auth2, &from_input2).map_err(|e| e.to_string())?;
        let plan = promote::plan(&cache, &auth2, &from2, &to2, &cfgs2, Only::All).map_err(|e| e.to_string())?;
        Ok::<_, String>((marker, git, plan))
    })
    .await;
    let (marker, git, plan) = match looked {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Some(failed(ctx, to, format!("cannot read the branches to promote: {e}"))),
        Err(e) => return Some(failed(ctx, to, format!("a promotion task failed: {e}"))),
    };
    if let Some(other) = marker.as_ref().filter(|m| m.from.as_deref() != Some(from_name.as_str())) {
        // A rollback of several repositories, say: not this controller's to finish.
        return Some(Promotable::no(
            "PromotionInProgress",
            format!(
                "{} is in progress (marker {}); fix: finish it (`{}`) or undo it (`{}`)",
                other.what(),
                other.refname,
                other.finish_command("MANIFESTS"),
                other.undo_command("MANIFESTS")
            ),
        ));
    }
    if let Some(marker) = marker {
        let targets = promote::targets(to, &to_input.configurations);
        let (cache, auth2, renderer) = (ctx.cache.clone(), auth.clone(), ctx.renderer.clone());
        let done = tokio::task::spawn_blocking(move || {
            promote::finish(&cache, &auth2, &marker, &to_input, &renderer, &targets)
        })
        .await;
        return Some(match done {
            Ok(Ok(done)) => promoted(ctx, to, done, "finished an interrupted promotion".into()),
            Ok(Err(e)) => failed(ctx, to, format!("cannot finish the interrupted promotion: {e}")),
            Err(e) => failed(ctx, to, format!("a promotion task failed: {e}")),
        });
    }
    let moving: Vec<_> = plan.repositories.iter().filter(|m| m.kind != Move::UpToDate).collect();
    if moving.is_empty() {
        return Some(Promotable::no("UpToDate", format!("{to_name} is at {from_name}'s heads: nothing to promote")));
    }
    if let Some(diverged) = moving.iter().find(|m| matches!(m.kind, Move::Diverged { .. })) {
        return Some(Promotable::no(
            "Diverged",
            format!(
                "{} branch {} has commits that {} lacks, and an automatic promotion never forces; fix: merge or \
                 revert them, or promote by hand with `shopctl promote {from_name} {to_name} --force`",
                diverged.repository, diverged.to_branch, diverged.from_branch
            ),
        ));
    }
    let verdict = match crate::gate::check(&ctx.client, &from_input, &git).await {
        Ok(v) => v,
        Err(e) => {
            return Some(failed(
                ctx,
                to,
                format!("cannot read {from_name}'s Applications: {}", crate::error::api_message(&e)),
            ));
        }
    };
    let what =
        moving.iter().map(|m| format!("{} {}", m.repository, short(&m.from_head))).collect::<Vec<_>>().join(", ");
    if !verdict.refusals.is_empty() {
        return Some(Promotable::no(
            "NotVerified",
            format!("{from_name} is not verified, so {what} is not promoted: {}", verdict.refusals.join("; ")),
        ));
    }
    let ready_since = git.system_head.as_deref().and_then(|head| policy::ready_since(&from, head));
    let now = Timestamp::now();
    match policy::evaluate(&policy, ready_since, now) {
        Decision::Refused { reasons, next_possible } => {
            let look_again = next_possible
                .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
                .map(|d| d + Duration::from_secs(1));
            let when = match next_possible {
                Some(t) => format!("possible from {t}"),
                None => "not by waiting alone".into(),
            };
            Some(Promotable {
                ok: false,
                reason: "Waiting",
                message: format!("{what} waits ({when}): {}", reasons.join("; ")),
                look_again,
                announce: None,
                why: None,
            })
        }
        Decision::Allowed { why } => {
            let line = format!("policy of {to_name}: allowed ({why}); promoted automatically by shopset-controller");
            if by_pull_request {
                let shopsets: Vec<String> = to_input.shopsets.iter().map(|s| s.name_any()).collect();
                return Some(pull_requests(ctx, to, &plan, &shopsets, line).await);
            }
            let targets = promote::targets(to, &cfgs);
            let (cache, auth2, renderer, why) = (ctx.cache.clone(), auth.clone(), ctx.renderer.clone(), line.clone());
            let done = tokio::task::spawn_blocking(move || {
                promote::start(&cache, &auth2, &plan, false, &to_input, &renderer, &targets, Some(&why))
            })
            .await;
            Some(match done {
                Ok(Ok(Some(done))) => promoted(ctx, to, done, line),
                Ok(Ok(None)) => Promotable::no("UpToDate", format!("{to_name} is at {from_name}'s heads")),
                Ok(Err(e)) => failed(ctx, to, format!("the promotion from {from_name} failed: {e}")),
                Err(e) => failed(ctx, to, format!("a promotion task failed: {e}")),
            })
        }
    }
}

/// Promotion by pull request, as `shopctl promote --pr` then `shopctl merge-promotion` do it:
/// each repository's pull request opened (or found), then, when the Tier asks for `approvals`,
/// merged together once each has them; without `approvals` a person merges. The sync that follows
/// pins the merged branches, with `why` in its commit message.
async fn pull_requests(ctx: &Context, to: &Tier, plan: &Plan, shopsets: &[String], why: String) -> Promotable {
    let to_name = to.name_any();
    let Some(access) = &ctx.github else {
        return Promotable::no(
            "NoGitHubToken",
            format!(
                "{to_name} promotes by pull request (spec.promotion.pullRequest) but this controller does not talk to \
                 GitHub; fix: start shopset-controller with --github-token-file (and --github-url for GitHub Enterprise)"
            ),
        );
    };
    let fix = "mount a token with `pull_requests: write` and `contents: write` and pass its path as --github-token-file \
               (SHOPSET_GITHUB_TOKEN_FILE)";
    let gh = match access.client("automatic promotion by pull request", fix) {
        Ok(gh) => gh,
        Err(e) => return Promotable::no("NoGitHubToken", e.to_string()),
    };
    let prs = match pr::open(&gh, plan, shopsets, None, Some(&why), None, pr::By::Controller).await {
        Ok(prs) => prs,
        Err(e) => return failed(ctx, to, format!("cannot open the promotion pull requests into {to_name}: {e}")),
    };
    let named = |prs: &[PullRequest]| prs.iter().map(|p| format!("{}#{}", p.repository, p.number)).collect::<Vec<_>>();
    let opened: Vec<PullRequest> = prs.iter().filter(|p| !p.already_existed).cloned().collect();
    let announce = (!opened.is_empty()).then_some("PullRequestOpened");
    if !opened.is_empty() {
        ctx.metrics.promoted(&to.namespace().unwrap_or_default(), &to_name, "opened");
    }
    let opened_line = if opened.is_empty() { String::new() } else { format!("opened {}; ", named(&opened).join(", ")) };
    let Some(required) = pr::required_approvals(to) else {
        return Promotable {
            announce,
            ..Promotable::no(
                "AwaitingMerge",
                format!(
                    "{opened_line}promotion pull request(s) {} wait for a person to merge them (spec.promotion.approvals \
                     is not set, so the controller does not merge): {why}",
                    named(&prs).join(", ")
                ),
            )
        };
    };
    match pr::merge_together(&gh, &prs, required).await {
        Ok(Together::Waiting { waiting, .. }) => Promotable {
            look_again: Some(REVIEWS_LOOK_AGAIN),
            announce,
            ..Promotable::no(
                "AwaitingApproval",
                format!(
                    "{opened_line}{}",
                    waiting.iter().map(|w| format!("{w} ({})", w.url)).collect::<Vec<_>>().join("; ")
                ),
            )
        },
        Ok(Together::Merged(merged)) => {
            ctx.metrics.promoted(&to.namespace().unwrap_or_default(), &to_name, "promoted");
            Promotable {
                ok: true,
                reason: "Promoted",
                message: format!("merged {}: {why}", merged_list(&merged)),
                look_again: None,
                announce: Some("Promoted"),
                why: Some(why),
            }
        }
        Ok(Together::Stopped { merged, error }) => {
            let before =
                if merged.is_empty() { String::new() } else { format!("merged {}, then ", merged_list(&merged)) };
            failed(ctx, to, format!("{before}{error}"))
        }
        Err(e) => failed(ctx, to, format!("cannot merge the promotion pull requests into {to_name}: {e}")),
    }
}

/// `acme/shop-app#41 at 1a2b3c4 (approved by alice)`, for each merged pull request.
fn merged_list(merged: &[MergeOutcome]) -> String {
    merged
        .iter()
        .filter_map(|m| match m {
            MergeOutcome::Merged { repository, number, sha, approved_by } => Some(format!(
                "{repository}#{number} at {}{}",
                short(sha),
                if approved_by.is_empty() {
                    String::new()
                } else {
                    format!(" (approved by {})", approved_by.join(", "))
                }
            )),
            MergeOutcome::Waiting(_) => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn promoted(ctx: &Context, to: &Tier, done: Completed, why: String) -> Promotable {
    ctx.metrics.promoted(&to.namespace().unwrap_or_default(), &to.name_any(), "promoted");
    let moved = done
        .moved
        .iter()
        .map(|m| format!("{} {} -> {}", m.repository, m.previous.as_deref().map_or("-", short), short(&m.target)))
        .collect::<Vec<_>>()
        .join(", ");
    let pinned = done.system_commit.as_deref().or(done.system_head.as_deref()).map(short).unwrap_or("-");
    Promotable {
        ok: true,
        reason: "Promoted",
        message: format!("promoted {moved}, pinned at {pinned}: {why}"),
        look_again: None,
        announce: Some("Promoted"),
        why: None,
    }
}

fn failed(ctx: &Context, to: &Tier, message: String) -> Promotable {
    ctx.metrics.promoted(&to.namespace().unwrap_or_default(), &to.name_any(), "failed");
    // Retried at the next reconcile; a failure that persists shows in the condition.
    Promotable { look_again: Some(Duration::from_secs(30)), ..Promotable::no("PromotionFailed", message) }
}
