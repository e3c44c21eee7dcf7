//! The marker of a promotion in progress: `refs/shopset/promotions/<tier>` in the system
//! repository, a commit with no parent and an empty tree whose message lists, for every repository
//! the promotion moves, the head before and the head it moves to:
//!
//! ```text
//! Promote tier-0 to tier-1
//!
//! app <previous> <target>
//! config/<name> <previous> <target>
//!
//! Why: <what let it through, e.g. the promotion policy's verdict>
//! ```
//!
//! (`previous` is forty zeros when the branch did not exist; the `Why:` line is optional.) The
//! system commit that completes it carries the `Why:` line too, so `git log` says it. It is created with a lease (only
//! where there is none) before the first push, and deleted with a lease after the system commit
//! that pins the whole set. While it exists, a sync of the tier moves no pin, so what Argo CD
//! deploys goes from all old to all new in one system commit. Plain git writes the same marker
//! (docs/runbook.md, step 7).

use git2::Oid;
use serde::Serialize;

use crate::gitops::{GitError, PROMOTIONS_PREFIX, RefUpdate, Remote};

/// One repository of a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkedMove {
    /// `app` or `config/<name>`.
    pub repository: String,
    /// The tier branch's head before the promotion (None: it did not exist).
    pub previous: Option<String>,
    /// The head the promotion moves it to.
    pub target: String,
}

/// A promotion in progress, as its marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// The marker commit.
    pub id: String,
    /// `refs/shopset/promotions/<tier>`.
    pub refname: String,
    /// The tier promoted from; None for a rollback of several repositories (`Roll back <to>`).
    pub from: Option<String>,
    pub to: String,
    pub repositories: Vec<MarkedMove>,
    /// What let it through (the `Why:` line): the policy's verdict, or an override's audit line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Marker {
    /// What it marks, as people say it.
    pub fn what(&self) -> String {
        match &self.from {
            Some(from) => format!("the promotion {from} -> {}", self.to),
            None => format!("the rollback of {}", self.to),
        }
    }

    /// The command that finishes it: the one that started it, run again.
    pub fn finish_command(&self, manifests: &str) -> String {
        match &self.from {
            Some(from) => format!("shopctl promote {from} {} -f {manifests}", self.to),
            None => format!("shopctl rollback {} -f {manifests}", self.to),
        }
    }

    /// The command that undoes it.
    pub fn undo_command(&self, manifests: &str) -> String {
        format!("{} --abort", self.finish_command(manifests))
    }
}

/// The marker ref of a promotion into `tier`.
pub fn refname(tier: &str) -> String {
    format!("{PROMOTIONS_PREFIX}{tier}")
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// The marker commit's message (`from` None: a rollback).
pub fn message(from: Option<&str>, to: &str, moves: &[MarkedMove], why: Option<&str>) -> String {
    let mut text = match from {
        Some(from) => format!("Promote {from} to {to}\n\n"),
        None => format!("Roll back {to}\n\n"),
    };
    for m in moves {
        text.push_str(&format!("{} {} {}\n", m.repository, m.previous.as_deref().unwrap_or(ZERO), m.target));
    }
    if let Some(why) = why {
        // One line: the parser reads it back whole.
        text.push_str(&format!("\n{WHY}{}\n", why.replace('\n', " ")));
    }
    text
}

/// The prefix of the line saying what let a promotion through.
const WHY: &str = "Why: ";

fn is_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads a marker's message; None when it is not one.
pub fn parse(id: &str, to: &str, message: &str) -> Option<Marker> {
    let mut lines = message.lines();
    let subject = lines.next()?.trim();
    let (from, into) = match subject.strip_prefix("Roll back ") {
        Some(into) => (None, into),
        None => subject.strip_prefix("Promote ")?.split_once(" to ").map(|(f, t)| (Some(f.trim().to_string()), t))?,
    };
    if into.trim() != to {
        return None;
    }
    let lines: Vec<&str> = lines.collect();
    let why = lines.iter().find_map(|l| l.strip_prefix(WHY)).map(|w| w.trim().to_string());
    let repositories = lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (repository, previous, target) = (words.next()?, words.next()?, words.next()?);
            (words.next().is_none() && is_id(previous) && is_id(target)).then(|| MarkedMove {
                repository: repository.to_string(),
                previous: (previous != ZERO).then(|| previous.to_lowercase()),
                target: target.to_lowercase(),
            })
        })
        .collect();
    Some(Marker { id: id.to_string(), refname: refname(to), from, to: to.to_string(), repositories, why })
}

/// Fetches and reads the marker `id` of a promotion into `to`.
pub fn read(system: &Remote, to: &str, id: Oid) -> Result<Marker, GitError> {
    let name = refname(to);
    let fetched = system.fetch_ref(&name)?;
    let text = system.commit_message(fetched).unwrap_or_default();
    parse(&fetched.to_string(), to, &text).ok_or_else(|| GitError::Other {
        url: system.url().to_string(),
        detail: format!(
            "{name} ({id}) is not a promotion marker (its message does not start with \"Promote <from> to {to}\" or \"Roll back {to}\"); \
             fix: delete it (`git push --force-with-lease={name}:{id} <system url> :{name}`) once no promotion runs"
        ),
    })
}

/// Writes the marker commit and creates the ref, only where there is none.
pub fn create(
    system: &Remote,
    from: Option<&str>,
    to: &str,
    moves: &[MarkedMove],
    why: Option<&str>,
) -> Result<Oid, GitError> {
    let repo = system.repo();
    let other = |e: git2::Error| GitError::Other { url: system.url().to_string(), detail: e.message().to_string() };
    let empty = repo.treebuilder(None).and_then(|b| b.write()).map_err(other)?;
    let tree = repo.find_tree(empty).map_err(other)?;
    let who = git2::Signature::now(crate::sync::AUTHOR_NAME, crate::sync::AUTHOR_EMAIL).map_err(other)?;
    let id = repo.commit(None, &who, &who, &message(from, to, moves, why), &tree, &[]).map_err(other)?;
    system.push(&[RefUpdate { branch: refname(to), expected: None, new: id, force: false }])?;
    Ok(id)
}

/// Deletes the marker, only if it is still `id`.
pub fn remove(system: &Remote, to: &str, id: Oid) -> Result<(), GitError> {
    system.push(&[RefUpdate { branch: refname(to), expected: Some(id), new: Oid::ZERO_SHA1, force: true }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_message_reads_back_and_anything_else_does_not() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let moves = vec![
            MarkedMove { repository: "app".into(), previous: Some(a.clone()), target: b.clone() },
            MarkedMove { repository: "config/shop".into(), previous: None, target: a.clone() },
        ];
        let text = message(Some("tier-0"), "tier-1", &moves, None);
        let m = parse("x", "tier-1", &text).expect("a marker");
        assert_eq!(m.why, None);
        assert_eq!((m.from.as_deref(), m.to.as_str()), (Some("tier-0"), "tier-1"));
        assert_eq!(m.finish_command("m"), "shopctl promote tier-0 tier-1 -f m");
        let back = parse("x", "tier-1", &message(None, "tier-1", &moves, None)).expect("a rollback marker");
        assert_eq!((back.from, back.repositories), (None, moves.clone()));
        assert_eq!(m.repositories, moves);
        assert_eq!(m.refname, "refs/shopset/promotions/tier-1");
        // git commit-tree -m ... -m ... writes the same lines (with a trailing newline trimmed).
        assert_eq!(parse("x", "tier-1", text.trim_end()).expect("a marker").repositories, moves);
        assert!(parse("x", "tier-2", &text).is_none(), "a marker names the tier it promotes into");
        assert!(parse("x", "tier-1", "hello\n").is_none());
        // What let it through reads back, on one line, and is not taken for a repository.
        let why = "policy of tier-1: soak 30m met\n(tier-0 Healthy since 09:00)";
        let m = parse("x", "tier-1", &message(Some("tier-0"), "tier-1", &moves, Some(why))).expect("a marker");
        assert_eq!(m.why.as_deref(), Some("policy of tier-1: soak 30m met (tier-0 Healthy since 09:00)"));
        assert_eq!(m.repositories, moves);
    }
}
