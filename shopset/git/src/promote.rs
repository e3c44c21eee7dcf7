//! Promotion and rollback: moving a tier's branches in the human-owned app and configuration
//! repositories, always under a lease. The controller then follows the moved branch.

pub mod marker;
pub mod pull_requests;

use std::collections::BTreeSet;

use git2::Oid;
use serde::Serialize;
use shopset_core::api::ResourceExt;

use crate::gitops::{Auth, GitCache, GitError, RefUpdate, Remote};
use shopset_core::api::{Configuration, Tier};

/// Which repositories a promotion moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Only {
    #[default]
    All,
    App,
    Config,
}

/// One commit, as a person reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    pub id: String,
    pub author: String,
    pub subject: String,
}

impl std::fmt::Display for CommitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", shopset_core::revision::short(&self.id), self.subject, self.author)
    }
}

/// How a repository's target branch relates to the source branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Move {
    /// Already at the source commit.
    UpToDate,
    /// The target branch does not exist yet.
    Create,
    /// The target is behind: a fast-forward.
    FastForward,
    /// Both sides have commits the other lacks (a hotfix on the target).
    Diverged { only_on_target: Vec<CommitInfo> },
}

/// The planned move of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoMove {
    /// `app` or `config/<name>`.
    pub repository: String,
    pub url: String,
    pub from_branch: String,
    pub to_branch: String,
    pub from_head: String,
    pub to_head: Option<String>,
    #[serde(flatten)]
    pub kind: Move,
    /// Commits the target gains, newest first.
    pub commits: Vec<CommitInfo>,
    /// Files changed between the two heads (for the app, under its base path).
    pub files: Vec<String>,
}

/// What a promotion would do (or did).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub from: String,
    pub to: String,
    pub repositories: Vec<RepoMove>,
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("{repository} ({url}): {source}")]
    Git { repository: String, url: String, source: GitError },
    #[error(
        "{repository} ({url}) has no branch {branch:?} to promote from; fix: sync tier {tier:?} first (`shopctl sync --tier {tier}`), or push that branch"
    )]
    SourceMissing { repository: String, url: String, branch: String, tier: String },
    #[error(
        "{repository} ({url}): branch {to:?} has diverged from {from:?}: it has {n} commit(s) that {from:?} lacks:\n{list}\n\
         Ways out: merge {to:?} into {from:?} (git fetch origin && git checkout {from} && git merge origin/{to} && git push origin {from}), let it reach tier {from_tier:?} and promote again; \
         or pass --force to move {to:?} to {from:?} anyway (those commits leave {to:?}; the push still uses a lease)"
    )]
    Diverged { repository: String, url: String, from: String, to: String, from_tier: String, n: usize, list: String },
    #[error("Tier/{to}: spec.promotion.from is {actual}, not {from:?}; fix: {fix}")]
    WrongOrder { from: String, to: String, actual: String, fix: String },
    #[error(
        "{repository} ({url}): {commit} is not in the history of branch {branch:?}; fix: name a commit of that branch (`git log {branch}`)"
    )]
    NotInHistory { repository: String, url: String, branch: String, commit: String },
    #[error("{repository} ({url}): cannot resolve {what:?}: {detail}")]
    BadRevision { repository: String, url: String, what: String, detail: String },
}

fn git_err(repository: &str, url: &str) -> impl Fn(GitError) -> PromoteError + use<> {
    let (repository, url) = (repository.to_string(), url.to_string());
    move |source| PromoteError::Git { repository: repository.clone(), url: url.clone(), source }
}

fn commit_info(repo: &git2::Repository, id: Oid) -> Option<CommitInfo> {
    let c = repo.find_commit(id).ok()?;
    Some(CommitInfo {
        id: id.to_string(),
        author: c.author().name().unwrap_or_default().to_string(),
        subject: c.summary().ok().flatten().unwrap_or_default().to_string(),
    })
}

/// Commits reachable from `tip` but not from `hide`, newest first (at most 200).
pub fn commits_between(repo: &git2::Repository, hide: Option<Oid>, tip: Oid) -> Vec<CommitInfo> {
    let Ok(mut walk) = repo.revwalk() else { return Vec::new() };
    if walk.push(tip).is_err() {
        return Vec::new();
    }
    if let Some(h) = hide {
        let _ = walk.hide(h);
    }
    walk.filter_map(Result::ok).take(200).filter_map(|id| commit_info(repo, id)).collect()
}

fn changed_files(repo: &git2::Repository, a: Option<Oid>, b: Oid, under: &str) -> Vec<String> {
    let tree = |id: Oid| repo.find_commit(id).and_then(|c| c.tree()).ok();
    let (Some(new), old) = (tree(b), a.and_then(tree)) else { return Vec::new() };
    let Ok(diff) = repo.diff_tree_to_tree(old.as_ref(), Some(&new), None) else { return Vec::new() };
    let prefix = if under == "." { String::new() } else { format!("{}/", under.trim_end_matches('/')) };
    let mut files = BTreeSet::new();
    for d in diff.deltas() {
        for f in [d.old_file().path(), d.new_file().path()].into_iter().flatten() {
            let p = f.to_string_lossy().to_string();
            if p.starts_with(&prefix) {
                files.insert(p);
            }
        }
    }
    files.into_iter().collect()
}

/// The repositories of a promotion: the app repository and the configuration repositories.
pub fn repositories(to: &Tier, configurations: &[Configuration], only: Only) -> Vec<(String, String, String)> {
    let mut repos = Vec::new();
    if only != Only::Config {
        repos.push(("app".to_string(), to.spec.app.url.clone(), to.spec.app.path.clone()));
    }
    if only != Only::App {
        for c in configurations {
            repos.push((format!("config/{}", c.name_any()), c.spec.url.clone(), c.spec.path.clone()));
        }
    }
    repos
}

fn plan_repo(
    cache: &GitCache,
    auth: &Auth,
    from: &Tier,
    to: &Tier,
    label: &str,
    url: &str,
    path: &str,
) -> Result<(Remote, RepoMove), PromoteError> {
    let err = git_err(label, url);
    let (from_branch, to_branch) = (from.branch(), to.branch());
    let remote = cache.open(url, auth).map_err(&err)?;
    let heads = remote.heads().map_err(&err)?;
    let from_head = *heads.branches.get(&from_branch).ok_or_else(|| PromoteError::SourceMissing {
        repository: label.into(),
        url: url.into(),
        branch: from_branch.clone(),
        tier: from.name_any(),
    })?;
    let to_head = heads.branches.get(&to_branch).copied();
    let mut fetch = vec![from_branch.as_str()];
    if to_head.is_some() {
        fetch.push(to_branch.as_str());
    }
    remote.fetch(&fetch).map_err(&err)?;
    let repo = remote.repo();
    let kind = match to_head {
        None => Move::Create,
        Some(t) if t == from_head => Move::UpToDate,
        Some(t) if repo.graph_descendant_of(from_head, t).unwrap_or(false) => Move::FastForward,
        Some(t) => Move::Diverged { only_on_target: commits_between(repo, Some(from_head), t) },
    };
    let commits = if kind == Move::UpToDate { Vec::new() } else { commits_between(repo, to_head, from_head) };
    let files = changed_files(repo, to_head, from_head, path);
    let mv = RepoMove {
        repository: label.into(),
        url: url.into(),
        from_branch,
        to_branch,
        from_head: from_head.to_string(),
        to_head: to_head.map(|o| o.to_string()),
        kind,
        commits,
        files,
    };
    Ok((remote, mv))
}

/// Plans `from -> to` for every repository; reads only (ls-remote and fetch into the cache).
pub fn plan(
    cache: &GitCache,
    auth: &Auth,
    from: &Tier,
    to: &Tier,
    configurations: &[Configuration],
    only: Only,
) -> Result<Plan, PromoteError> {
    let mut moves = Vec::new();
    for (label, url, path) in repositories(to, configurations, only) {
        moves.push(plan_repo(cache, auth, from, to, &label, &url, &path)?.1);
    }
    Ok(Plan { from: from.name_any(), to: to.name_any(), repositories: moves })
}

/// Checks that `to` is promoted from `from`.
pub fn check_order(from: &Tier, to: &Tier) -> Result<(), PromoteError> {
    match &to.spec.promotion {
        Some(p) if p.from == from.name_any() => Ok(()),
        Some(p) => Err(PromoteError::WrongOrder {
            from: from.name_any(),
            to: to.name_any(),
            actual: format!("{:?}", p.from),
            fix: format!("promote {} -> {} (`shopctl promote {} {}`)", p.from, to.name_any(), p.from, to.name_any()),
        }),
        None => Err(PromoteError::WrongOrder {
            from: from.name_any(),
            to: to.name_any(),
            actual: "unset (it is the lowest tier: nothing is promoted into it)".into(),
            fix: format!(
                "promote {} into the tier whose spec.promotion.from is {:?}; to undo a change on {}, use `shopctl rollback {}`",
                from.name_any(),
                from.name_any(),
                to.name_any(),
                to.name_any()
            ),
        }),
    }
}

/// Pushes the planned moves: fast-forwards and creations; a diverged branch only with `force`.
/// Every push carries the lease of the head the plan saw, so a branch moved since is never lost.
/// All repositories are checked before any is pushed.
pub fn execute(
    cache: &GitCache,
    auth: &Auth,
    plan: &Plan,
    from_tier: &str,
    force: bool,
) -> Result<Vec<RepoMove>, PromoteError> {
    refuse_diverged(plan, from_tier, force)?;
    let mut moved = Vec::new();
    for mv in &plan.repositories {
        if mv.kind == Move::UpToDate {
            continue;
        }
        let err = git_err(&mv.repository, &mv.url);
        let remote = cache.open(&mv.url, auth).map_err(&err)?;
        let parse = |s: &str| {
            Oid::from_str(s).map_err(|e| PromoteError::BadRevision {
                repository: mv.repository.clone(),
                url: mv.url.clone(),
                what: s.into(),
                detail: e.message().to_string(),
            })
        };
        let update = RefUpdate {
            branch: mv.to_branch.clone(),
            expected: mv.to_head.as_deref().map(parse).transpose()?,
            new: parse(&mv.from_head)?,
            force: matches!(mv.kind, Move::Diverged { .. }),
        };
        remote.push(&[update]).map_err(&err)?;
        tracing::info!(repository = %mv.repository, branch = %mv.to_branch, head = %mv.from_head, "promoted");
        moved.push(mv.clone());
    }
    Ok(moved)
}

/// Where a rollback moves the tier's app branch.
#[derive(Debug, Clone)]
pub enum RollbackTarget {
    /// A commit (full or abbreviated id) of the branch's history.
    Commit(String),
    /// N first-parent steps back from the head.
    Steps(usize),
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub repository: String,
    pub url: String,
    pub branch: String,
    pub previous: String,
    pub head: String,
    /// Commits that left the branch (reset) or were reverted (`--revert`), newest first.
    pub undone: Vec<CommitInfo>,
    pub reverted: bool,
}

/// Moves the tier's app branch back to `target` (a lease-guarded non-fast-forward), or with
/// `revert` adds one commit on top whose tree is the target's (history kept).
pub fn rollback(
    cache: &GitCache,
    auth: &Auth,
    tier: &Tier,
    target: &RollbackTarget,
    revert: bool,
    dry_run: bool,
) -> Result<Rollback, PromoteError> {
    let app = Target { repository: "app".into(), url: tier.spec.app.url.clone() };
    rollback_repository(cache, auth, tier, &app, target, revert, dry_run)
}

/// [`rollback`] of one repository of the tier (`app` or `config/<name>`).
pub fn rollback_repository(
    cache: &GitCache,
    auth: &Auth,
    tier: &Tier,
    repository: &Target,
    target: &RollbackTarget,
    revert: bool,
    dry_run: bool,
) -> Result<Rollback, PromoteError> {
    let (remote, done) = prepare_rollback(cache, auth, tier, repository, target, revert, dry_run)?;
    if !dry_run && done.head != done.previous {
        let err = git_err(&done.repository, &done.url);
        let (head, new) = (
            parse_id(&done.repository, &done.url, &done.previous)?,
            parse_id(&done.repository, &done.url, &done.head)?,
        );
        remote
            .push(&[RefUpdate { branch: done.branch.clone(), expected: Some(head), new, force: !revert }])
            .map_err(&err)?;
    }
    Ok(done)
}

/// Rolls several repositories of the tier back together: each new head is prepared (a revert
/// commit written to the cache), then, as a promotion is, marked, pushed, pinned in one system
/// commit and unmarked ([`finish`]). A dry run only prepares.
#[allow(clippy::too_many_arguments)] // the rollback's own three choices, and what a sync needs
pub fn rollback_together(
    cache: &GitCache,
    auth: &Auth,
    input: &TierInput,
    renderer: &Renderer,
    repositories: &[Target],
    target: &RollbackTarget,
    revert: bool,
    dry_run: bool,
) -> Result<(Vec<Rollback>, Option<Completed>), MarkerError> {
    let tier = &input.tier;
    let mut done = Vec::new();
    for r in repositories {
        // The remote handle is dropped: the prepared commit stays in the cache for the push.
        done.push(prepare_rollback(cache, auth, tier, r, target, revert, dry_run)?.1);
    }
    let moves: Vec<MarkedMove> = done
        .iter()
        .filter(|d| d.head != d.previous)
        .map(|d| MarkedMove {
            repository: d.repository.clone(),
            previous: Some(d.previous.clone()),
            target: d.head.clone(),
        })
        .collect();
    if dry_run || moves.is_empty() {
        return Ok((done, None));
    }
    let url = &tier.spec.system.url;
    let system = cache.open(url, auth).map_err(git_err("system", url))?;
    let id = marker::create(&system, None, &tier.name_any(), &moves, None).map_err(git_err("system", url))?;
    let marker = Marker {
        id: id.to_string(),
        refname: marker::refname(&tier.name_any()),
        from: None,
        to: tier.name_any(),
        repositories: moves,
        why: None,
    };
    let completed = finish(cache, auth, &marker, input, renderer, repositories)?;
    Ok((done, Some(completed)))
}

fn prepare_rollback(
    cache: &GitCache,
    auth: &Auth,
    tier: &Tier,
    repository: &Target,
    target: &RollbackTarget,
    revert: bool,
    dry_run: bool,
) -> Result<(Remote, Rollback), PromoteError> {
    let (label, url, branch) = (repository.repository.as_str(), repository.url.as_str(), tier.branch());
    let err = git_err(label, url);
    let remote = cache.open(url, auth).map_err(&err)?;
    let heads = remote.heads().map_err(&err)?;
    let head = *heads.branches.get(&branch).ok_or_else(|| PromoteError::SourceMissing {
        repository: label.into(),
        url: url.into(),
        branch: branch.clone(),
        tier: tier.name_any(),
    })?;
    remote.fetch(&[branch.as_str()]).map_err(&err)?;
    let repo = remote.repo();
    let bad = |what: &str, detail: String| PromoteError::BadRevision {
        repository: label.into(),
        url: url.into(),
        what: what.into(),
        detail,
    };
    let target_id = match target {
        RollbackTarget::Commit(rev) => {
            let obj = repo.revparse_single(rev).map_err(|e| bad(rev, e.message().to_string()))?;
            let id = obj.peel_to_commit().map_err(|e| bad(rev, e.message().to_string()))?.id();
            if id != head && !repo.graph_descendant_of(head, id).unwrap_or(false) {
                return Err(PromoteError::NotInHistory {
                    repository: label.into(),
                    url: url.into(),
                    branch,
                    commit: rev.clone(),
                });
            }
            id
        }
        RollbackTarget::Steps(n) => {
            let mut c = repo.find_commit(head).map_err(|e| bad("HEAD", e.message().to_string()))?;
            for i in 0..*n {
                c = c.parent(0).map_err(|_| {
                    bad(&format!("{n} steps"), format!("the branch has only {i} commits before its head"))
                })?;
            }
            c.id()
        }
    };
    let undone = commits_between(repo, Some(target_id), head);
    let new_head = if target_id == head || dry_run {
        target_id
    } else if revert {
        let target_tree =
            repo.find_commit(target_id).and_then(|c| c.tree()).map_err(|e| bad("target", e.message().to_string()))?;
        let parent = repo.find_commit(head).map_err(|e| bad("HEAD", e.message().to_string()))?;
        let who = git2::Signature::now(crate::sync::AUTHOR_NAME, crate::sync::AUTHOR_EMAIL)
            .map_err(|e| bad("signature", e.message().to_string()))?;
        let subjects: Vec<String> = undone.iter().map(|c| format!("  {c}")).collect();
        let message = format!(
            "Revert {branch} to {}\n\nReverts {} commit(s):\n{}\n\nGenerated-by: shopctl rollback --revert\n",
            &target_id.to_string()[..7],
            undone.len(),
            subjects.join("\n")
        );
        repo.commit(None, &who, &who, &message, &target_tree, &[&parent])
            .map_err(|e| bad("commit", e.message().to_string()))?
    } else {
        target_id
    };
    let done = Rollback {
        repository: label.into(),
        url: url.into(),
        branch,
        previous: head.to_string(),
        head: new_head.to_string(),
        undone,
        reverted: revert,
    };
    Ok((remote, done))
}

/// A repository a promotion into a tier may move: `app` or `config/<name>`, its URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub repository: String,
    pub url: String,
}

/// The repositories of a promotion into `to`, for finishing or undoing a marked one.
pub fn targets(to: &Tier, configurations: &[Configuration]) -> Vec<Target> {
    repositories(to, configurations, Only::All)
        .into_iter()
        .map(|(repository, url, _)| Target { repository, url })
        .collect()
}

/// What a promotion (or its undoing) did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    pub marker: Marker,
    /// Repositories whose tier branch this run moved (`previous` -> `target`, or back when undone).
    pub moved: Vec<MarkedMove>,
    /// The system commit pinning the whole set (None: the pins were already there).
    pub system_commit: Option<String>,
    /// The system branch head after the promotion.
    pub system_head: Option<String>,
}

/// Why a marked promotion cannot be finished or undone.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error(transparent)]
    Promote(#[from] PromoteError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    #[error("{what} is in progress (marker {refname}); fix: finish it (`{finish}`) or undo it (`{undo}`) first")]
    OtherSource { what: String, refname: String, finish: String, undo: String },
    #[error("no promotion into tier {to} is in progress (no {refname} in {url}): nothing to undo")]
    NoneInProgress { to: String, refname: String, url: String },
    #[error(
        "{repository} ({url}): branch {branch:?} is at {head}, which is neither where the promotion found it ({previous}) \
         nor where it moves it ({target}): someone pushed meanwhile; fix: {fix}"
    )]
    Moved {
        repository: String,
        url: String,
        branch: String,
        head: String,
        previous: String,
        target: String,
        fix: String,
    },
    #[error("the marker {refname} names repository {repository:?}, which tier {to} does not have; fix: {fix}")]
    UnknownRepository { repository: String, refname: String, to: String, fix: String },
}

use self::marker::{MarkedMove, Marker};
use crate::sync::{SyncOptions, sync_tier};
use shopset_core::manifests::TierInput;
use shopset_core::render::Renderer;

/// The promotion marker of `to`, if one exists.
pub fn in_progress(cache: &GitCache, auth: &Auth, to: &Tier) -> Result<Option<Marker>, PromoteError> {
    let url = &to.spec.system.url;
    let err = git_err("system", url);
    let system = cache.open(url, auth).map_err(&err)?;
    let heads = system.heads().map_err(&err)?;
    let Some(id) = heads.promotions.get(&to.name_any()) else { return Ok(None) };
    Ok(Some(marker::read(&system, &to.name_any(), *id).map_err(&err)?))
}

/// Starts a promotion: the diverged check of [`execute`], then the marker (created only where
/// there is none), then [`finish`]. A plan that moves nothing writes nothing. `why` (what let the
/// promotion through) goes into the marker and the system commit that completes it.
#[allow(clippy::too_many_arguments)]
pub fn start(
    cache: &GitCache,
    auth: &Auth,
    plan: &Plan,
    force: bool,
    input: &TierInput,
    renderer: &Renderer,
    targets: &[Target],
    why: Option<&str>,
) -> Result<Option<Completed>, MarkerError> {
    refuse_diverged(plan, &plan.from, force)?;
    let moves: Vec<MarkedMove> = plan
        .repositories
        .iter()
        .filter(|m| m.kind != Move::UpToDate)
        .map(|m| MarkedMove {
            repository: m.repository.clone(),
            previous: m.to_head.clone(),
            target: m.from_head.clone(),
        })
        .collect();
    if moves.is_empty() {
        return Ok(None);
    }
    let url = &input.tier.spec.system.url;
    let err = git_err("system", url);
    let system = cache.open(url, auth).map_err(&err)?;
    let id = marker::create(&system, Some(&plan.from), &plan.to, &moves, why).map_err(&err)?;
    tracing::info!(marker = %id, to = %plan.to, "promotion marked");
    let marker = Marker {
        id: id.to_string(),
        refname: marker::refname(&plan.to),
        from: Some(plan.from.clone()),
        to: plan.to.clone(),
        repositories: moves,
        why: why.map(str::to_string),
    };
    finish(cache, auth, &marker, input, renderer, targets).map(Some)
}

fn target_of<'a>(marker: &Marker, targets: &'a [Target], repository: &str) -> Result<&'a Target, MarkerError> {
    targets.iter().find(|t| t.repository == repository).ok_or_else(|| MarkerError::UnknownRepository {
        repository: repository.into(),
        refname: marker.refname.clone(),
        to: marker.to.clone(),
        fix: format!(
            "put the Configuration back, or undo the promotion by hand (runbook step 7) and delete the marker \
             (`git push --force-with-lease={r}:{id} <system url> :{r}`)",
            r = marker.refname,
            id = marker.id
        ),
    })
}

fn parse_id(repository: &str, url: &str, s: &str) -> Result<Oid, PromoteError> {
    Oid::from_str(s).map_err(|e| PromoteError::BadRevision {
        repository: repository.into(),
        url: url.into(),
        what: s.into(),
        detail: e.message().to_string(),
    })
}

/// Moves every repository of a marked promotion from `previous` to `target` (one already there
/// is left alone: running it again is idempotent), syncs the tier once (the pins of the whole set
/// move in one system commit), then deletes the marker. Every push carries a lease.
pub fn finish(
    cache: &GitCache,
    auth: &Auth,
    marker: &Marker,
    input: &TierInput,
    renderer: &Renderer,
    targets: &[Target],
) -> Result<Completed, MarkerError> {
    let undo = format!("undo it (`{}`)", marker.undo_command("MANIFESTS"));
    let moved = move_all(cache, auth, marker, targets, false, &undo)?;
    complete(cache, auth, marker, input, renderer, moved)
}

/// Undoes a marked promotion: every repository it moved goes back to `previous` (a branch it
/// created is deleted), the tier is synced (pins that had already moved move back together), and
/// the marker is deleted.
pub fn abort(
    cache: &GitCache,
    auth: &Auth,
    marker: &Marker,
    input: &TierInput,
    renderer: &Renderer,
    targets: &[Target],
) -> Result<Completed, MarkerError> {
    let fix = format!(
        "move that branch by hand (runbook step 8) or finish {} (`{}`)",
        marker.what(),
        marker.finish_command("MANIFESTS")
    );
    let moved = move_all(cache, auth, marker, targets, true, &fix)?;
    complete(cache, auth, marker, input, renderer, moved)
}

fn move_all(
    cache: &GitCache,
    auth: &Auth,
    marker: &Marker,
    targets: &[Target],
    back: bool,
    fix: &str,
) -> Result<Vec<MarkedMove>, MarkerError> {
    let branch = marker.to.clone();
    let mut moved = Vec::new();
    for (i, mv) in marker.repositories.iter().enumerate() {
        let t = target_of(marker, targets, &mv.repository)?;
        let err = git_err(&t.repository, &t.url);
        let remote = cache.open(&t.url, auth).map_err(&err)?;
        let heads = remote.heads().map_err(&err)?;
        let head = heads.branches.get(&branch).map(|h| h.to_string());
        let (from, to) = if back {
            (Some(mv.target.clone()), mv.previous.clone())
        } else {
            (mv.previous.clone(), Some(mv.target.clone()))
        };
        if head == to {
            continue;
        }
        if head != from {
            return Err(MarkerError::Moved {
                repository: t.repository.clone(),
                url: t.url.clone(),
                branch,
                head: head.unwrap_or_else(|| "no branch".into()),
                previous: mv.previous.clone().unwrap_or_else(|| "no branch".into()),
                target: mv.target.clone(),
                fix: fix.to_string(),
            });
        }
        let new = match &to {
            Some(id) => {
                let id = parse_id(&t.repository, &t.url, id)?;
                if !remote.has_commit(&id.to_string()) {
                    // The commit is on the source branch (or was on this one): fetch them all.
                    let names: Vec<&str> = heads.branches.keys().map(String::as_str).collect();
                    remote.fetch(&names).map_err(&err)?;
                }
                id
            }
            None => Oid::ZERO_SHA1,
        };
        let expected = from.as_deref().map(|s| parse_id(&t.repository, &t.url, s)).transpose()?;
        remote.push(&[RefUpdate { branch: branch.clone(), expected, new, force: true }]).map_err(&err)?;
        tracing::info!(repository = %t.repository, branch = %branch, head = ?to, back, "promotion moved a branch");
        moved.push(MarkedMove {
            repository: mv.repository.clone(),
            previous: from,
            target: to.unwrap_or_else(|| Oid::ZERO_SHA1.to_string()),
        });
        if i + 1 < marker.repositories.len() {
            // Between two pushes: where a crash leaves a promotion half-way.
            crate::fault::point("promote-between-pushes");
        }
    }
    Ok(moved)
}

fn complete(
    cache: &GitCache,
    auth: &Auth,
    marker: &Marker,
    input: &TierInput,
    renderer: &Renderer,
    moved: Vec<MarkedMove>,
) -> Result<Completed, MarkerError> {
    let url = &input.tier.spec.system.url;
    let err = git_err("system", url);
    let id = parse_id("system", url, &marker.id)?;
    let opts = SyncOptions { promotion: Some(id), why: marker.why.clone(), ..SyncOptions::default() };
    let report = sync_tier(cache, auth, input, renderer, &opts)?;
    let system = cache.open(url, auth).map_err(&err)?;
    marker::remove(&system, &marker.to, id).map_err(&err)?;
    tracing::info!(marker = %id, to = %marker.to, "promotion complete: marker removed");
    Ok(Completed { marker: marker.clone(), moved, system_commit: report.commit, system_head: report.head })
}

/// `abort` needs the marker; this reads it or says there is none.
pub fn marker_to_abort(cache: &GitCache, auth: &Auth, to: &Tier) -> Result<Marker, MarkerError> {
    in_progress(cache, auth, to)?.ok_or_else(|| MarkerError::NoneInProgress {
        to: to.name_any(),
        refname: marker::refname(&to.name_any()),
        url: to.spec.system.url.clone(),
    })
}

/// A marker of another source than `from` (None: a rollback) is not finished by this command.
pub fn check_source(marker: &Marker, from: Option<&str>) -> Result<(), MarkerError> {
    if marker.from.as_deref() == from {
        return Ok(());
    }
    Err(MarkerError::OtherSource {
        what: marker.what(),
        refname: marker.refname.clone(),
        finish: marker.finish_command("MANIFESTS"),
        undo: marker.undo_command("MANIFESTS"),
    })
}

/// A branch with commits the source lacks is not moved without `--force`: they would be lost.
fn refuse_diverged(plan: &Plan, from_tier: &str, force: bool) -> Result<(), PromoteError> {
    for mv in &plan.repositories {
        if let (Move::Diverged { only_on_target }, false) = (&mv.kind, force) {
            return Err(PromoteError::Diverged {
                repository: mv.repository.clone(),
                url: mv.url.clone(),
                from: mv.from_branch.clone(),
                to: mv.to_branch.clone(),
                from_tier: from_tier.into(),
                n: only_on_target.len(),
                list: only_on_target.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"),
            });
        }
    }
    Ok(())
}
