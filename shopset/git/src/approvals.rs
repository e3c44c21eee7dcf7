//! Approving reviews of a promotion pull request, counted as GitHub counts them for a required
//! review rule: each reviewer's latest review that says approve, request changes or dismissed
//! decides; a comment changes nothing; the author's own reviews do not count.

use serde::Serialize;

/// The state of one review, as GitHub reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
    /// An approval or change request a maintainer dismissed: it no longer counts.
    Dismissed,
    /// Started, not submitted: not a review yet.
    Pending,
}

/// One review, in the order GitHub lists them (oldest submission first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// `user.login` of the reviewer.
    pub reviewer: String,
    pub state: ReviewState,
    /// The head commit the review was given on (`commit_id`).
    pub commit: Option<String>,
}

/// Where the reviews of one pull request stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Approvals {
    /// Reviewers whose review stands at approve, in the order of their approvals.
    pub approved_by: Vec<String>,
    /// Reviewers whose review stands at request changes.
    pub changes_requested_by: Vec<String>,
    /// The commit the latest counted approval was given on: what the approvers saw, and so the
    /// only head a merge may take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_commit: Option<String>,
}

/// Counts the approvals of a pull request by `author` from its `reviews` (oldest first).
pub fn count(author: &str, reviews: &[Review]) -> Approvals {
    // reviewer -> (state, index of the deciding review)
    let mut standing: Vec<(String, ReviewState, usize)> = Vec::new();
    for (i, r) in reviews.iter().enumerate() {
        // GitHub logins are case-insensitive.
        if r.reviewer.eq_ignore_ascii_case(author) {
            continue;
        }
        if matches!(r.state, ReviewState::Commented | ReviewState::Pending) {
            continue;
        }
        match standing.iter_mut().find(|(who, ..)| who.eq_ignore_ascii_case(&r.reviewer)) {
            Some(entry) => {
                entry.1 = r.state;
                entry.2 = i;
            }
            None => standing.push((r.reviewer.clone(), r.state, i)),
        }
    }
    standing.sort_by_key(|(.., i)| *i);
    let with = |state: ReviewState| -> Vec<String> {
        standing.iter().filter(|(_, s, _)| *s == state).map(|(who, ..)| who.clone()).collect()
    };
    let approved_commit = standing
        .iter()
        .rev()
        .find(|(_, s, _)| *s == ReviewState::Approved)
        .and_then(|(.., i)| reviews[*i].commit.clone());
    Approvals {
        approved_by: with(ReviewState::Approved),
        changes_requested_by: with(ReviewState::ChangesRequested),
        approved_commit,
    }
}

/// A promotion pull request that lacks approvals: it stays open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    /// `owner/repo`
    pub repository: String,
    pub number: u64,
    pub url: String,
    pub have: u32,
    pub need: u32,
    pub approved_by: Vec<String>,
    pub changes_requested_by: Vec<String>,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "promotion pull request {}#{} has {} of {} approving review{}",
            self.repository,
            self.number,
            self.have,
            self.need,
            if self.need == 1 { "" } else { "s" }
        )?;
        if !self.approved_by.is_empty() {
            write!(f, " ({})", self.approved_by.join(", "))?;
        }
        if !self.changes_requested_by.is_empty() {
            write!(f, ", changes requested by {}", self.changes_requested_by.join(", "))?;
        }
        write!(f, "; merge waits")
    }
}

/// A pull request with the approvals it needs, and the commit they were given on (the merge's guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub pr: crate::github::PullRequest,
    pub commit: String,
    pub approved_by: Vec<String>,
}

/// Where a pull request stands against the approvals it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    Approved(Approved),
    Waiting(Waiting),
}

/// What [`merge_when_approved`](crate::github::GitHub::merge_when_approved) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "outcome")]
pub enum MergeOutcome {
    /// Merged: the base branch is now at `sha`.
    Merged { repository: String, number: u64, sha: String, approved_by: Vec<String> },
    /// Not enough approvals: nothing merged.
    Waiting(Waiting),
}

#[cfg(test)]
mod tests {
    use super::ReviewState::*;
    use super::*;

    fn r(reviewer: &str, state: ReviewState, commit: &str) -> Review {
        Review { reviewer: reviewer.into(), state, commit: Some(commit.into()) }
    }

    /// A case: name, reviews oldest first, approved by, changes requested by, approved commit.
    type Case = (&'static str, Vec<Review>, &'static [&'static str], &'static [&'static str], Option<&'static str>);

    #[test]
    fn approvals_are_counted_as_github_counts_them() {
        let author = "shopset-bot";
        let cases: Vec<Case> = vec![
            ("no reviews", vec![], &[], &[], None),
            ("one approval", vec![r("alice", Approved, "a1")], &["alice"], &[], Some("a1")),
            (
                "two reviewers approve",
                vec![r("alice", Approved, "a1"), r("bob", Approved, "a2")],
                &["alice", "bob"],
                &[],
                Some("a2"),
            ),
            (
                "one reviewer approving twice counts once",
                vec![r("alice", Approved, "a1"), r("alice", Approved, "a2")],
                &["alice"],
                &[],
                Some("a2"),
            ),
            (
                "a later change request cancels the approval",
                vec![r("alice", Approved, "a1"), r("alice", ChangesRequested, "a1")],
                &[],
                &["alice"],
                None,
            ),
            (
                "a later approval lifts the change request",
                vec![r("alice", ChangesRequested, "a1"), r("alice", Approved, "a2")],
                &["alice"],
                &[],
                Some("a2"),
            ),
            (
                "a dismissed approval does not count",
                vec![r("alice", Dismissed, "a1"), r("bob", Approved, "a1")],
                &["bob"],
                &[],
                Some("a1"),
            ),
            (
                "an approval after a dismissed one counts",
                vec![r("alice", Dismissed, "a1"), r("alice", Approved, "a2")],
                &["alice"],
                &[],
                Some("a2"),
            ),
            (
                "a dismissed review after an approval cancels it",
                vec![r("alice", Approved, "a1"), r("alice", Dismissed, "a2")],
                &[],
                &[],
                None,
            ),
            (
                "a comment keeps the approval",
                vec![r("alice", Approved, "a1"), r("alice", Commented, "a2")],
                &["alice"],
                &[],
                Some("a1"),
            ),
            (
                "a comment keeps the change request",
                vec![r("alice", ChangesRequested, "a1"), r("alice", Commented, "a2")],
                &[],
                &["alice"],
                None,
            ),
            ("a comment alone is no approval", vec![r("alice", Commented, "a1")], &[], &[], None),
            ("a pending review is no approval", vec![r("alice", Pending, "a1")], &[], &[], None),
            (
                "the author's own reviews do not count",
                vec![r("shopset-bot", Approved, "a1"), r("Shopset-Bot", Approved, "a1")],
                &[],
                &[],
                None,
            ),
            (
                "logins differ in case only: one reviewer",
                vec![r("Alice", Approved, "a1"), r("alice", ChangesRequested, "a1")],
                &[],
                &["Alice"],
                None,
            ),
            (
                "order of approvals, not of first reviews",
                vec![r("bob", Commented, "a1"), r("alice", Approved, "a1"), r("bob", Approved, "a2")],
                &["alice", "bob"],
                &[],
                Some("a2"),
            ),
            (
                "mixed",
                vec![
                    r("alice", Approved, "a1"),
                    r("bob", ChangesRequested, "a1"),
                    r("carol", Approved, "a1"),
                    r("carol", Dismissed, "a1"),
                    r("dave", Commented, "a1"),
                ],
                &["alice"],
                &["bob"],
                Some("a1"),
            ),
        ];
        for (case, reviews, approved, changes, commit) in cases {
            let got = count(author, &reviews);
            assert_eq!(got.approved_by, approved.to_vec(), "{case}: approved by");
            assert_eq!(got.changes_requested_by, changes.to_vec(), "{case}: changes requested by");
            assert_eq!(got.approved_commit.as_deref(), commit, "{case}: approved commit");
        }
    }

    #[test]
    fn waiting_says_how_many_of_how_many_and_who() {
        let w = Waiting {
            repository: "acme/shop-system".into(),
            number: 7,
            url: String::new(),
            have: 1,
            need: 2,
            approved_by: vec!["alice".into()],
            changes_requested_by: vec![],
        };
        assert_eq!(
            w.to_string(),
            "promotion pull request acme/shop-system#7 has 1 of 2 approving reviews (alice); merge waits"
        );
        let w = Waiting { have: 0, need: 1, approved_by: vec![], changes_requested_by: vec!["bob".into()], ..w };
        assert_eq!(
            w.to_string(),
            "promotion pull request acme/shop-system#7 has 0 of 1 approving review, changes requested by bob; merge waits"
        );
    }
}
