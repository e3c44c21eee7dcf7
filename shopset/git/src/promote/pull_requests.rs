//! Promotion by pull request: the steps of `shopctl promote --pr` and `shopctl merge-promotion`,
//! which the controller's automatic promotion of a tier with `spec.promotion.pullRequest` takes
//! too. The pull request of each repository is FROM's tier branch into TO's; merging them moves
//! TO's branches, and the next sync of TO pins them, as after any promotion.

use shopset_core::api::Tier;

use super::{Move, Plan, RepoMove};
use crate::approvals::{Approval, Approved, MergeOutcome, Waiting};
use crate::github::{GitHub, GitHubError, PullRequest};

/// Who opens a promotion pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Shopctl,
    Controller,
}

impl By {
    /// For its body: "Opened by ...".
    fn says(self) -> &'static str {
        match self {
            By::Shopctl => "`shopctl promote --pr`",
            By::Controller => "shopset-controller (automatic promotion)",
        }
    }
}

/// Title and body of the promotion pull request of `mv`: the commits TO gains, the ShopSets that
/// change, and, when a policy let it through, which (`why`).
pub fn text(
    plan: &Plan,
    mv: &RepoMove,
    shopsets: &[String],
    message: Option<&str>,
    why: Option<&str>,
    opened_by: &str,
) -> (String, String) {
    let title =
        format!("Promote {} to {}{}", plan.from, plan.to, message.map(|m| format!(": {m}")).unwrap_or_default());
    let mut body = format!("Promotes `{}` into `{}` ({}).\n\n", mv.from_branch, mv.to_branch, mv.repository);
    if let Some(m) = message {
        body.push_str(&format!("{m}\n\n"));
    }
    body.push_str("### Commits\n\n");
    for c in &mv.commits {
        body.push_str(&format!("- {c}\n"));
    }
    let listed = shopsets.iter().map(|s| format!("- `{s}`")).collect::<Vec<_>>().join("\n");
    body.push_str(&format!(
        "\n### ShopSets that will change\n\n{listed}\n\nOpened by {opened_by}; once merged, shopset-controller syncs tier `{}`.\n",
        plan.to
    ));
    if let Some(why) = why {
        body.push_str(&format!("\n### Promotion policy\n\n{why}\n"));
    }
    (title, body)
}

/// The repositories of `plan` that move.
fn moving(plan: &Plan) -> impl Iterator<Item = &RepoMove> {
    plan.repositories.iter().filter(|m| m.kind != Move::UpToDate)
}

/// Opens the promotion pull request of every repository `plan` moves, `why` (the policy line) in
/// its body; one already open for the same branches is found and kept (looked up first, so a
/// reconcile that looks again costs no refused create), and gets `audit` as a comment (a person
/// promoting past the policy leaves that on record).
#[allow(clippy::too_many_arguments)]
pub async fn open(
    gh: &GitHub,
    plan: &Plan,
    shopsets: &[String],
    message: Option<&str>,
    why: Option<&str>,
    audit: Option<&str>,
    by: By,
) -> Result<Vec<PullRequest>, GitHubError> {
    let mut prs = Vec::new();
    for mv in moving(plan) {
        let pr = match gh.find_pull_request(&mv.url, &mv.from_branch, &mv.to_branch).await? {
            Some(pr) => {
                if let Some(audit) = audit {
                    gh.comment(&pr, &format!("### Promotion policy\n\n{audit}\n")).await?;
                }
                pr
            }
            None => {
                let (title, body) = text(plan, mv, shopsets, message, why, by.says());
                gh.open_pull_request(&mv.url, &mv.from_branch, &mv.to_branch, &title, &body).await?
            }
        };
        prs.push(pr);
    }
    Ok(prs)
}

/// The open promotion pull requests of every repository of `plan` (moving or not: a pull request
/// opened before TO caught up by other means is still TO's).
pub async fn find(gh: &GitHub, plan: &Plan) -> Result<Vec<PullRequest>, GitHubError> {
    let mut found = Vec::new();
    for mv in &plan.repositories {
        if let Some(pr) = gh.find_pull_request(&mv.url, &mv.from_branch, &mv.to_branch).await? {
            found.push(pr);
        }
    }
    Ok(found)
}

/// The approving reviews TO's promotion pull requests need before they are merged, as its
/// `spec.promotion.approvals` says; None when it says nothing.
pub fn required_approvals(to: &Tier) -> Option<u32> {
    to.spec.promotion.as_ref().and_then(|p| p.approvals).map(|n| u32::try_from(n).unwrap_or(0))
}

/// What [`merge_together`] did.
#[derive(Debug)]
pub enum Together {
    /// At least one lacks approvals: none was merged.
    Waiting { approved: Vec<Approved>, waiting: Vec<Waiting> },
    /// Each had its approvals and was merged, in order.
    Merged(Vec<MergeOutcome>),
    /// GitHub refused one merge (its head moved after the approvals, say): those before it are
    /// merged, it and those after are not.
    Stopped { merged: Vec<MergeOutcome>, error: GitHubError },
}

/// Merges the pull requests of one promotion together: every one is checked before any is
/// merged, so TO's repositories move together or not at all (as a promotion pins them in one
/// commit), never an app without its configuration.
pub async fn merge_together(gh: &GitHub, prs: &[PullRequest], required: u32) -> Result<Together, GitHubError> {
    let (mut approved, mut waiting) = (Vec::new(), Vec::new());
    for pr in prs {
        match gh.approval(pr, required).await? {
            Approval::Approved(a) => approved.push(a),
            Approval::Waiting(w) => waiting.push(w),
        }
    }
    if !waiting.is_empty() {
        return Ok(Together::Waiting { approved, waiting });
    }
    let mut merged = Vec::new();
    for a in &approved {
        match gh.merge_approved(a).await {
            Ok(outcome) => merged.push(outcome),
            Err(error) => return Ok(Together::Stopped { merged, error }),
        }
    }
    Ok(Together::Merged(merged))
}
