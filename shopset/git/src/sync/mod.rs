//! One tier's sync, as a pipeline of named stages:
//!
//! 1. [`resolve`]: the heads of the app and configuration tier branches (missing ones planned, to
//!    be created from the promotion source or the default branch) and of the system repository;
//! 2. render: the renderer of `shopset-core`, at those pins; an input or template error stops
//!    here, before any repository changes;
//! 3. plan the commit: the render hashed and compared with the system branch by object ids
//!    ([`compare`]); a dry run reports here and writes nothing;
//! 4. push with retry: missing branches created, the commit written and pushed under a lease; when
//!    another writer moved the branch, rebuilt on the new head and tried again.
//!
//! `shopctl sync` and the controller both call [`sync_tier`]; nothing here knows which one it is.

mod checkpoint;
pub(crate) mod compare;
mod resolve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::Oid;
use serde::Serialize;
use shopset_core::api::ResourceExt;
use shopset_core::manifests::TierInput;
use shopset_core::render::{Edits, Pins, RenderError, RenderInput, Rendered, Renderer, is_owned};
use shopset_core::tree::Tree;

pub use self::checkpoint::Checkpoint;
use self::compare::{Compare, last_own_tree};
pub use self::resolve::resolve_pins;
use self::resolve::{Resolved, SystemTarget, git_err, system_status, system_target};
use crate::gitops::{Auth, Change, GitCache, GitError, HashedTree, RefUpdate, Remote};
pub use crate::message::{AUTHOR_EMAIL, AUTHOR_NAME};
use crate::message::{Pinned, commit_message, with_why};

/// Called before each push of the system branch with the attempt number (from 1).
pub type PushHook = std::sync::Arc<dyn Fn(u32) + Send + Sync>;

/// How a sync behaves.
#[derive(Clone)]
pub struct SyncOptions {
    /// Resolve and render, print the difference, write nothing anywhere.
    pub dry_run: bool,
    /// Pushes tried before giving up when other writers keep moving the branch.
    pub max_attempts: u32,
    /// A seam for tests and fault injection: runs just before each system push.
    pub before_push: Option<PushHook>,
    /// The marker of the promotion this sync completes (`shopctl promote`): the tier's pins move
    /// while exactly this marker exists. Any other marker holds them ([`SyncError::PromotionInProgress`]).
    pub promotion: Option<Oid>,
    /// What let the promotion through, a line of the commit message (`Why: ...`).
    pub why: Option<String>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self { dry_run: false, max_attempts: 5, before_push: None, promotion: None, why: None }
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("dry_run", &self.dry_run)
            .field("max_attempts", &self.max_attempts)
            .field("before_push", &self.before_push.is_some())
            .field("promotion", &self.promotion)
            .field("why", &self.why)
            .finish()
    }
}

/// Why a sync failed. Nothing was pushed to the system repository when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Tier/{tier}: {field}: {detail}; fix: {fix}")]
    BranchMissing { tier: String, field: String, detail: String, fix: String },
    #[error("Tier/{tier}: {field}: {detail}; fix: {fix}")]
    PathMissing { tier: String, field: String, detail: String, fix: String },
    // `error` is part of the message and deliberately not `source()`: `{:#}` would print it twice.
    #[error("Tier/{tier}: {field}: {error}")]
    Git { tier: String, field: String, error: GitError },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(
        "Tier/{tier}: a promotion into it is in progress (marker {refname} at {marker} in {url}), so its pins stay where they are: \
         what Argo CD deploys moves only once every repository is promoted; fix: finish it with the same command again \
         (`shopctl promote {from} {tier} -f MANIFESTS`), or undo it (`shopctl promote {from} {tier} -f MANIFESTS --abort`)"
    )]
    PromotionInProgress { tier: String, from: String, refname: String, marker: String, url: String },
    #[error(
        "Tier/{tier}: branch {branch} of {url} kept moving: gave up after {attempts} attempts; fix: stop the other writer (only ShopSet writes the system repository) and sync again"
    )]
    Contention { tier: String, branch: String, url: String, attempts: u32 },
}

impl SyncError {
    /// A short machine-readable reason, used for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::BranchMissing { .. } => "BranchMissing",
            SyncError::PathMissing { .. } => "InvalidSpec",
            SyncError::Git { error: GitError::Auth { .. }, .. } => "AuthenticationFailed",
            SyncError::Git { error: GitError::HostKey { .. }, .. } => "HostKeyRejected",
            SyncError::Git { error: GitError::Rejected { .. }, .. } => "PushRejected",
            SyncError::Git { error: GitError::LeaseBroken { .. }, .. } | SyncError::Contention { .. } => "PushConflict",
            SyncError::Git { .. } => "GitUnavailable",
            SyncError::Render(_) => "RenderFailed",
            SyncError::PromotionInProgress { .. } => "PromotionInProgress",
        }
    }
}

/// Where a tier branch came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchStatus {
    /// `app`, `config/<name>` or `system`.
    pub repository: String,
    pub url: String,
    pub branch: String,
    /// Head after the sync (None for a system branch that is yet to be written in a dry run).
    pub head: Option<String>,
    /// Set when the branch was missing: what it was (or, in a dry run, would be) created from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_from: Option<String>,
}

/// What a sync did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub tier: String,
    pub branch: String,
    pub dry_run: bool,
    pub branches: Vec<BranchStatus>,
    pub pins: Pins,
    /// System branch head before the sync.
    pub previous: Option<String>,
    /// System branch head after the sync (in a dry run: unchanged).
    pub head: Option<String>,
    /// The commit written, when the tree changed.
    pub commit: Option<String>,
    /// Its message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pushes tried.
    pub attempts: u32,
    /// ShopSets added, removed and changed.
    pub shopsets: ShopSetChanges,
    /// Unified diff of the system tree (dry run only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The rendered tree (the controller applies its Applications).
    #[serde(skip)]
    pub tree: Arc<Tree>,
    /// The time each stage took (resolve, render, ..., push), as logged at debug level.
    #[serde(skip)]
    pub stages: Vec<(&'static str, Duration)>,
}

/// ShopSets whose overlays changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShopSetChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl ShopSetChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Syncs one tier. With `opts.dry_run`, nothing is created, committed or pushed.
pub fn sync_tier(
    cache: &GitCache,
    auth: &Auth,
    input: &TierInput,
    renderer: &Renderer,
    opts: &SyncOptions,
) -> Result<SyncReport, SyncError> {
    let tier = &input.tier;
    let _span = tracing::info_span!("sync", tier = %tier.name_any(), branch = %tier.branch()).entered();
    let mut phases = Phases::start();
    let (mut resolved, system) = resolve::resolve(cache, auth, input, opts.dry_run, opts.promotion)?;
    phases.mark("resolve");
    let Rendered { tree, edits } = renderer.render_edits(RenderInput {
        tier,
        configurations: &input.configurations,
        shopsets: &input.shopsets,
        pins: &resolved.pins,
    })?;
    phases.mark("render");
    let (system, heads) = system?;
    let system_err = git_err(&resolved.tier, "spec.system.url");
    let target =
        system_target(&system, &heads, &resolved.branch, resolved.from_branch.as_deref()).map_err(&system_err)?;
    phases.mark("target");
    let mut hashed = hash(cache, &resolved, &tree, &edits).map_err(&system_err)?;
    phases.mark("hash");
    if opts.dry_run {
        let outcome = preview(&resolved, &system, &target, &tree, &mut hashed)?;
        return Ok(outcome.into_report(&resolved, true, tree));
    }
    resolved.create_missing_branches()?;
    let outcome = push_with_retry(&resolved, &system, target, &tree, &mut hashed, opts, &mut phases)?;
    phases.report();
    Ok(SyncReport { stages: phases.spent, ..outcome.into_report(&resolved, false, tree) })
}

/// The time each stage of a sync took, logged at debug level as one line (`sync timings`): where
/// the cost of a sync goes, without a profiler.
struct Phases {
    started: Instant,
    last: Instant,
    spent: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        let now = Instant::now();
        Self { started: now, last: now, spent: Vec::new() }
    }

    /// Ends the stage `name` (it began where the last one ended); a stage run again adds up.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        let took = now - self.last;
        self.last = now;
        match self.spent.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += took,
            None => self.spent.push((name, took)),
        }
    }

    fn report(&self) {
        let stages: Vec<String> =
            self.spent.iter().map(|(n, t)| format!("{n}={:.1}ms", t.as_secs_f64() * 1000.0)).collect();
        tracing::debug!(
            total_ms = format!("{:.1}", self.started.elapsed().as_secs_f64() * 1000.0),
            stages = %stages.join(" "),
            "sync timings"
        );
    }
}

/// The render hashed as git would, starting from the branch's last hash in the cache's memo.
fn hash(cache: &GitCache, resolved: &Resolved, tree: &Tree, edits: &Edits) -> Result<HashedTree, GitError> {
    let mut known = cache.take_last_hash(&resolved.system_url, &resolved.branch);
    let hashed = HashedTree::with_edits(tree, edits, &mut known);
    // A hash that failed left nothing to remember; the next one starts afresh.
    cache.keep_last_hash(&resolved.system_url, &resolved.branch, known);
    hashed.map_err(|e| GitError::Other { url: resolved.system_url.clone(), detail: e.message().to_string() })
}

/// The tree a commit on `branch_tree` (the root tree of the branch's head; None for a new branch)
/// writes: the render for ShopSet's paths ([`is_owned`]), every other path of the branch as it is.
/// A new branch is the render alone, whatever it is created from, as the runbook's first render.
fn keep_unowned(system: &Remote, hashed: &mut HashedTree, branch_tree: Option<Oid>) -> Result<(), GitError> {
    hashed
        .keep_unowned(system.repo(), branch_tree, is_owned)
        .map_err(|e| GitError::Other { url: system.url().to_string(), detail: e.message().to_string() })
}

/// What a sync did to the system branch, beyond what every report says.
#[derive(Default)]
struct Outcome {
    branches: Vec<BranchStatus>,
    previous: Option<Oid>,
    head: Option<Oid>,
    commit: Option<Oid>,
    message: Option<String>,
    attempts: u32,
    shopsets: ShopSetChanges,
    diff: Option<String>,
}

impl Outcome {
    fn into_report(self, resolved: &Resolved, dry_run: bool, tree: Arc<Tree>) -> SyncReport {
        SyncReport {
            tier: resolved.tier.clone(),
            branch: resolved.branch.clone(),
            dry_run,
            branches: self.branches,
            pins: resolved.pins.clone(),
            previous: self.previous.map(|o| o.to_string()),
            head: self.head.map(|o| o.to_string()),
            commit: self.commit.map(|o| o.to_string()),
            message: self.message,
            attempts: self.attempts,
            shopsets: self.shopsets,
            diff: self.diff,
            tree,
            stages: Vec::new(),
        }
    }
}

/// The message of a commit of `cmp` on `parent`.
fn message(
    resolved: &Resolved,
    system: &Remote,
    cmp: &Compare<'_>,
    changes: &ShopSetChanges,
    parent: Option<Oid>,
    new_branch: bool,
    why: Option<&str>,
) -> String {
    fn pinned(p: &resolve::Plan) -> Pinned<'_> {
        Pinned { label: &p.label, head: p.head, remote: &p.remote }
    }
    let configs: Vec<Pinned<'_>> = resolved.configs.iter().map(|(_, p)| pinned(p)).collect();
    let ours = last_own_tree(system, parent);
    let message = commit_message(&resolved.tier, new_branch, cmp, ours, changes, &pinned(&resolved.app), &configs);
    match why {
        Some(why) => with_why(message, why),
        None => message,
    }
}

/// Stage 3 for a dry run: what would be committed, and the diff; nothing is written.
fn preview(
    resolved: &Resolved,
    system: &Remote,
    target: &SystemTarget,
    tree: &Tree,
    hashed: &mut HashedTree,
) -> Result<Outcome, SyncError> {
    let system_err = git_err(&resolved.tier, "spec.system.url");
    let old = target.parent.map(|p| system.tree_of(p)).transpose().map_err(&system_err)?;
    keep_unowned(system, hashed, old.filter(|_| target.previous.is_some())).map_err(&system_err)?;
    let hashed = &*hashed;
    let delta = system.changes(old, hashed).map_err(&system_err)?;
    let cmp = Compare { system, old, new: tree, hashed, delta: &delta };
    let shopsets = cmp.shopset_changes();
    let mut branches = resolved.branches();
    branches.push(system_status(&resolved.system_url, &resolved.branch, target.previous, target.created_from.clone()));
    let diff = cmp.diff().map_err(&system_err)?;
    let message = (!delta.is_empty())
        .then(|| message(resolved, system, &cmp, &shopsets, target.parent, target.previous.is_none(), None));
    Ok(Outcome {
        branches,
        previous: target.previous,
        head: target.previous,
        message,
        shopsets,
        diff: Some(diff),
        ..Outcome::default()
    })
}

/// Stage 4: commit when the tree changed, push under the lease, and on a lost lease rebuild on
/// the new head and try again, up to `opts.max_attempts` pushes.
fn push_with_retry(
    resolved: &Resolved,
    system: &Remote,
    target: SystemTarget,
    tree: &Tree,
    hashed: &mut HashedTree,
    opts: &SyncOptions,
    phases: &mut Phases,
) -> Result<Outcome, SyncError> {
    let system_err = git_err(&resolved.tier, "spec.system.url");
    let author = git2::Signature::now(AUTHOR_NAME, AUTHOR_EMAIL).map_err(|e| {
        system_err(GitError::Other { url: resolved.system_url.clone(), detail: e.message().to_string() })
    })?;
    let branches = resolved.branches();
    let system_status = |head: Option<Oid>, created_from: Option<String>| {
        system_status(&resolved.system_url, &resolved.branch, head, created_from)
    };
    let SystemTarget { previous, mut parent, created_from } = target;
    let mut expected = previous;
    let mut attempts = 0;
    loop {
        let old_tree = parent.map(|p| system.tree_of(p)).transpose().map_err(&system_err)?;
        // What people keep on the branch is taken from the head this commit goes on, again on
        // every attempt: a file committed by hand during the sync is kept too.
        keep_unowned(system, hashed, old_tree.filter(|_| expected.is_some())).map_err(&system_err)?;
        phases.mark("keep-unowned");
        let hashed = &*hashed;
        let new_tree = hashed.id();
        if old_tree == Some(new_tree) && expected.is_some() {
            tracing::info!(head = %expected.map(|o| o.to_string()).unwrap_or_default(), "system branch already up to date");
            let branches = branches.into_iter().chain([system_status(expected, None)]).collect();
            return Ok(Outcome { branches, previous, head: expected, attempts, ..Outcome::default() });
        }
        // Only the subtrees whose ids differ are read: the cost follows what changed.
        let delta: Vec<Change> = system.changes(old_tree, hashed).map_err(&system_err)?;
        let cmp = Compare { system, old: old_tree, new: tree, hashed, delta: &delta };
        let shopsets = cmp.shopset_changes();
        phases.mark("compare");
        // A new branch whose source already has this exact tree needs no commit of its own.
        let (commit, message, pack) = match parent.filter(|_| old_tree == Some(new_tree)) {
            Some(parent) => (parent, None, None),
            None => {
                let message =
                    message(resolved, system, &cmp, &shopsets, parent, previous.is_none(), opts.why.as_deref());
                phases.mark("message");
                let committed =
                    system.commit_hashed(hashed, old_tree, parent, &message, &author).map_err(&system_err)?;
                phases.mark("write");
                (committed.commit, Some(message), committed.pack)
            }
        };
        attempts += 1;
        if let Some(hook) = &opts.before_push {
            hook(attempts);
        }
        crate::fault::point("before-push");
        let update = RefUpdate { branch: resolved.branch.clone(), expected, new: commit, force: false };
        let pushed = match (&pack, parent) {
            // A commit of ours on the head the server has: its pack is the one this sync wrote.
            (Some(pack), Some(p)) if expected == Some(p) => system.push_pack(&update, pack),
            _ => system.push(&[update]),
        };
        phases.mark("push");
        match pushed {
            Ok(()) => {
                tracing::info!(commit = %commit, attempts, "pushed system branch");
                let created_from = if expected.is_none() { created_from } else { None };
                let branches = branches.into_iter().chain([system_status(Some(commit), created_from)]).collect();
                return Ok(Outcome {
                    branches,
                    previous,
                    head: Some(commit),
                    commit: message.as_ref().map(|_| commit),
                    message,
                    attempts,
                    shopsets,
                    diff: None,
                });
            }
            Err(GitError::LeaseBroken { .. }) if attempts < opts.max_attempts => {
                tracing::warn!(
                    attempt = attempts,
                    "system branch moved under us; fetching and rebuilding on the new head"
                );
                let heads = system.heads().map_err(&system_err)?;
                expected = heads.branches.get(&resolved.branch).copied();
                if expected.is_some() {
                    system.fetch(&[resolved.branch.as_str()]).map_err(&system_err)?;
                    parent = expected;
                }
                phases.mark("refetch");
            }
            Err(GitError::LeaseBroken { .. }) => {
                return Err(SyncError::Contention {
                    tier: resolved.tier.clone(),
                    branch: resolved.branch.clone(),
                    url: resolved.system_url.clone(),
                    attempts,
                });
            }
            Err(e) => return Err(system_err(e)),
        }
    }
}
