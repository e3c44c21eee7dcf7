//! One tier's sync: resolve branch heads (creating missing tier branches), render, commit when the
//! tree changed, push under a lease, and on a lost lease rebuild on the new head and try again.
//!
//! `shopctl sync` and the controller both call [`sync_tier`]; nothing here knows which one it is.

use std::collections::BTreeMap;

use git2::Oid;
use kube::ResourceExt;
use serde::Serialize;

use crate::gitops::{Auth, Change, GitCache, GitError, HashedTree, MODE_GITLINK, RefUpdate, Remote, diff_trees};
use crate::manifests::TierInput;
use crate::render::{Entry, Pins, RenderError, RenderInput, Renderer, Tree};

/// Who commits to the system repository.
pub const AUTHOR_NAME: &str = "ShopSet";
pub const AUTHOR_EMAIL: &str = "shopset@shopset.dev";

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
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self { dry_run: false, max_attempts: 5, before_push: None }
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("dry_run", &self.dry_run)
            .field("max_attempts", &self.max_attempts)
            .field("before_push", &self.before_push.is_some())
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
    pub tree: Tree,
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

/// A tier branch to resolve in one repository.
struct Plan {
    label: String,
    field: String,
    remote: Remote,
    head: Oid,
    /// `Some(source)` when the branch must be created from `source`.
    create_from: Option<String>,
}

fn git_err(tier: &str, field: &str) -> impl Fn(GitError) -> SyncError + use<> {
    let (tier, field) = (tier.to_string(), field.to_string());
    move |error| SyncError::Git { tier: tier.clone(), field: field.clone(), error }
}

/// Resolves the head of a human-owned tier branch (app or configuration), planning its creation
/// from the promotion source or the default branch when it is missing.
/// A human-owned tier branch to resolve.
struct Want<'a> {
    tier: &'a str,
    field: &'a str,
    label: &'a str,
    url: &'a str,
    branch: &'a str,
    from_branch: Option<&'a str>,
    /// In a dry run, a promotion source that is itself yet to be created resolves to the default
    /// branch it would be created from.
    dry_run: bool,
}

fn plan_branch(cache: &GitCache, auth: &Auth, w: Want<'_>) -> Result<Plan, SyncError> {
    let Want { tier, field, label, url, branch, from_branch, dry_run } = w;
    let remote = cache.open(url, auth).map_err(git_err(tier, field))?;
    let heads = remote.heads().map_err(git_err(tier, field))?;
    if let Some(head) = heads.branches.get(branch) {
        remote.ensure(branch, *head).map_err(git_err(tier, field))?;
        return Ok(Plan { label: label.into(), field: field.into(), remote, head: *head, create_from: None });
    }
    let default = heads.default_branch.as_ref().and_then(|d| heads.branches.get(d).map(|h| (d.clone(), *h)));
    let (source, why) = match from_branch {
        Some(from) => match (heads.branches.get(from), &default) {
            (Some(h), _) => ((from.to_string(), *h), "promotion.from".to_string()),
            (None, Some(d)) if dry_run => (d.clone(), format!("default branch, as {from} would be created first")),
            _ => {
                return Err(SyncError::BranchMissing {
                    tier: tier.into(),
                    field: "spec.promotion.from".into(),
                    detail: format!("the {label} repository {url} has neither branch {branch:?} nor the branch {from:?} of the tier it is promoted from"),
                    fix: format!("sync and promote tier {from:?} first, or push branch {branch:?} to {url}"),
                });
            }
        },
        None => (
            default.ok_or_else(|| SyncError::BranchMissing {
                tier: tier.into(),
                field: field.into(),
                detail: format!("the {label} repository {url} has no branch {branch:?}, no spec.promotion.from, and no default branch to create it from"),
                fix: format!("push the first commit to branch {branch:?} of {url}"),
            })?,
            "default branch".to_string(),
        ),
    };
    remote.ensure(&source.0, source.1).map_err(git_err(tier, field))?;
    Ok(Plan {
        label: label.into(),
        field: field.into(),
        remote,
        head: source.1,
        create_from: Some(format!("{} ({why})", source.0)),
    })
}

/// Creates a planned branch; if someone created it meanwhile, takes theirs.
fn create_branch(plan: &mut Plan, tier: &str, branch: &str) -> Result<(), SyncError> {
    let update = RefUpdate { branch: branch.into(), expected: None, new: plan.head, force: false };
    match plan.remote.push(&[update]) {
        Ok(()) => Ok(()),
        Err(GitError::LeaseBroken { .. }) => {
            let heads = plan.remote.heads().map_err(git_err(tier, &plan.field))?;
            if let Some(head) = heads.branches.get(branch) {
                plan.remote.fetch(&[branch]).map_err(git_err(tier, &plan.field))?;
                plan.head = *head;
                plan.create_from = None;
            }
            Ok(())
        }
        Err(e) => Err(git_err(tier, &plan.field)(e)),
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
    let tier_name = tier.name_any();
    let branch = tier.branch();
    let from_branch = input.from.as_ref().map(|t| t.branch());
    let from_branch = from_branch.as_deref();
    let _span = tracing::info_span!("sync", tier = %tier_name, branch = %branch).entered();
    let started = std::time::Instant::now();

    // 1. Resolve every pinned branch; nothing is written yet. The repositories are asked at once,
    // so a sync waits for the slowest ls-remote rather than their sum; results are then taken in
    // a fixed order, so the error reported is the same as if they had been asked one by one.
    let cfg_fields: Vec<(String, String, String)> = input
        .configurations
        .iter()
        .map(|c| (c.name_any(), format!("Configuration/{} spec.url", c.name_any()), format!("config/{}", c.name_any())))
        .collect();
    let span = tracing::Span::current();
    let (app, configs, system) = std::thread::scope(|s| {
        let (tier_name, branch) = (&tier_name, &branch);
        let want =
            |field, label, url| Want { tier: tier_name, field, label, url, branch, from_branch, dry_run: opts.dry_run };
        let app = {
            let (span, want) = (span.clone(), want("spec.app.url", "app", &tier.spec.app.url));
            s.spawn(move || span.in_scope(|| plan_branch(cache, auth, want)))
        };
        let configs: Vec<_> = input
            .configurations
            .iter()
            .zip(&cfg_fields)
            .map(|(cfg, (_, field, label))| {
                let (span, want) = (span.clone(), want(field, label, &cfg.spec.url));
                s.spawn(move || span.in_scope(|| plan_branch(cache, auth, want)))
            })
            .collect();
        let system = {
            let span = span.clone();
            s.spawn(move || {
                span.in_scope(|| -> Result<_, GitError> {
                    let system = cache.open(&tier.spec.system.url, auth)?;
                    let heads = system.heads()?;
                    Ok((system, heads))
                })
            })
        };
        (join(app), configs.into_iter().map(join).collect::<Vec<_>>(), join(system))
    });
    let mut app = app?;
    check_path(&app, &tier_name, "spec.app.path", &tier.spec.app.path, "Kustomize base")?;
    let mut configs_planned = Vec::new();
    for ((cfg, (name, _, _)), plan) in input.configurations.iter().zip(&cfg_fields).zip(configs) {
        let plan = plan?;
        check_path(
            &plan,
            &tier_name,
            &format!("Configuration/{name} spec.path"),
            &cfg.spec.path,
            "Kustomize Component",
        )?;
        configs_planned.push((name.clone(), plan));
    }
    let mut configs = configs_planned;
    let pins = Pins {
        app: app.head.to_string(),
        configurations: configs.iter().map(|(n, p)| (n.clone(), p.head.to_string())).collect(),
    };

    // 2. Render: a template or input error stops here, before any repository changes.
    let resolved = started.elapsed();
    let tree = renderer.render(RenderInput {
        tier,
        configurations: &input.configurations,
        shopsets: &input.shopsets,
        pins: &pins,
    })?;
    let rendered = started.elapsed();

    // 3. The system branch, and what it would be created from.
    let (system, heads) = system.map_err(git_err(&tier_name, "spec.system.url"))?;
    let (mut parent, system_from) =
        system_parent(&system, &heads, &branch, from_branch).map_err(git_err(&tier_name, "spec.system.url"))?;
    let previous = heads.branches.get(&branch).copied();
    // Every outcome reports these; each return fills in what it adds.
    let report = |tree: Tree, branches: Vec<BranchStatus>| SyncReport {
        tier: tier_name.clone(),
        branch: branch.clone(),
        dry_run: false,
        branches,
        pins: pins.clone(),
        previous: previous.map(|o| o.to_string()),
        head: None,
        commit: None,
        message: None,
        attempts: 0,
        shopsets: ShopSetChanges::default(),
        diff: None,
        tree,
    };

    let mut branches = vec![branch_status(&app, &branch)];
    branches.extend(configs.iter().map(|(_, p)| branch_status(p, &branch)));

    let system_err = git_err(&tier_name, "spec.system.url");
    let hashed = HashedTree::new(&tree).map_err(|e| {
        system_err(GitError::Other { url: tier.spec.system.url.clone(), detail: e.message().to_string() })
    })?;
    let old_tree_of = |parent: Option<Oid>| {
        parent.map(|p| system.tree_of(p)).transpose().map_err(git_err(&tier_name, "spec.system.url"))
    };

    if opts.dry_run {
        let old = old_tree_of(parent)?;
        let delta = system.changes(old, &hashed).map_err(&system_err)?;
        let cmp = Compare { system: &system, old, new: &tree, hashed: &hashed, delta: &delta };
        let changes = cmp.shopset_changes();
        branches.push(BranchStatus {
            repository: "system".into(),
            url: tier.spec.system.url.clone(),
            branch: branch.clone(),
            head: previous.map(|o| o.to_string()),
            created_from: system_from.clone(),
        });
        let diff = cmp.diff().map_err(&system_err)?;
        let ours = last_own_tree(&system, parent);
        let message = (!delta.is_empty())
            .then(|| commit_message(&tier_name, previous.is_none(), &cmp, ours, &changes, &app, &configs));
        return Ok(SyncReport {
            dry_run: true,
            head: previous.map(|o| o.to_string()),
            message,
            shopsets: changes,
            diff: Some(diff),
            ..report(tree, branches)
        });
    }

    // 4. Create missing human-owned branches (at the commits already pinned).
    if app.create_from.is_some() {
        create_branch(&mut app, &tier_name, &branch)?;
    }
    for (_, plan) in configs.iter_mut() {
        if plan.create_from.is_some() {
            create_branch(plan, &tier_name, &branch)?;
        }
    }
    // Re-read: a branch someone else created meanwhile is reported as existing.
    branches = std::iter::once(branch_status(&app, &branch))
        .chain(configs.iter().map(|(_, p)| branch_status(p, &branch)))
        .collect();

    // 5. Commit when the tree changed; push under the lease; on a lost lease, rebuild on the new head.
    let author = git2::Signature::now(AUTHOR_NAME, AUTHOR_EMAIL).map_err(|e| {
        git_err(&tier_name, "spec.system.url")(GitError::Other {
            url: tier.spec.system.url.clone(),
            detail: e.message().to_string(),
        })
    })?;
    let new_tree = hashed.id();
    let mut written = false;
    let mut expected = previous;
    let mut attempts = 0;
    loop {
        let old_tree_id = old_tree_of(parent)?;
        if old_tree_id == Some(new_tree) && expected.is_some() {
            tracing::info!(head = %expected.map(|o| o.to_string()).unwrap_or_default(), "system branch already up to date");
            branches.push(system_status(tier, &branch, expected, None));
            return Ok(SyncReport { head: expected.map(|o| o.to_string()), attempts, ..report(tree, branches) });
        }
        // Only the subtrees whose ids differ are read: the cost follows what changed.
        let delta = system.changes(old_tree_id, &hashed).map_err(&system_err)?;
        let cmp = Compare { system: &system, old: old_tree_id, new: &tree, hashed: &hashed, delta: &delta };
        let changes = cmp.shopset_changes();
        // A new branch whose source already has this exact tree needs no commit of its own.
        let commit = if old_tree_id == Some(new_tree) {
            parent.expect("old tree id implies a parent") // invariant: old_tree_id is Some only with a parent
        } else {
            if !written {
                system.write_hashed(&hashed).map_err(&system_err)?;
                written = true;
            }
            let ours = last_own_tree(&system, parent);
            let message = commit_message(&tier_name, previous.is_none(), &cmp, ours, &changes, &app, &configs);
            system.commit(new_tree, parent, &message, &author).map_err(git_err(&tier_name, "spec.system.url"))?
        };
        attempts += 1;
        if let Some(hook) = &opts.before_push {
            hook(attempts);
        }
        let update = RefUpdate { branch: branch.clone(), expected, new: commit, force: false };
        let before_push = started.elapsed();
        match system.push(&[update]) {
            Ok(()) => {
                let message = (Some(commit) != parent).then(|| {
                    system
                        .repo()
                        .find_commit(commit)
                        .ok()
                        .and_then(|c| c.message().ok().map(str::to_string))
                        .unwrap_or_default()
                });
                tracing::info!(commit = %commit, attempts, "pushed system branch");
                // Where the time of a sync goes, cumulative: for `RUST_LOG=shopset=debug` and the benchmarks.
                tracing::debug!(
                    resolve_ms = resolved.as_millis() as u64,
                    render_ms = rendered.as_millis() as u64,
                    commit_ms = before_push.as_millis() as u64,
                    push_ms = started.elapsed().as_millis() as u64,
                    "sync timings"
                );
                branches.push(system_status(
                    tier,
                    &branch,
                    Some(commit),
                    if expected.is_none() { system_from.clone() } else { None },
                ));
                return Ok(SyncReport {
                    head: Some(commit.to_string()),
                    commit: message.as_ref().map(|_| commit.to_string()),
                    message,
                    attempts,
                    shopsets: changes,
                    ..report(tree, branches)
                });
            }
            Err(GitError::LeaseBroken { .. }) if attempts < opts.max_attempts => {
                tracing::warn!(
                    attempt = attempts,
                    "system branch moved under us; fetching and rebuilding on the new head"
                );
                let heads = system.heads().map_err(git_err(&tier_name, "spec.system.url"))?;
                expected = heads.branches.get(&branch).copied();
                if expected.is_some() {
                    system.fetch(&[branch.as_str()]).map_err(git_err(&tier_name, "spec.system.url"))?;
                    parent = expected;
                }
            }
            Err(GitError::LeaseBroken { .. }) => {
                return Err(SyncError::Contention {
                    tier: tier_name,
                    branch,
                    url: tier.spec.system.url.clone(),
                    attempts,
                });
            }
            Err(e) => return Err(git_err(&tier_name, "spec.system.url")(e)),
        }
    }
}

/// A resolver thread's result; a panic there is a bug and surfaces as the same panic here.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn check_path(plan: &Plan, tier: &str, field: &str, path: &str, what: &str) -> Result<(), SyncError> {
    let kustomization = if path == "." {
        "kustomization.yaml".to_string()
    } else {
        format!("{}/kustomization.yaml", path.trim_end_matches('/'))
    };
    let found = plan.remote.has_path(plan.head, &kustomization).map_err(git_err(tier, field))?
        || plan.remote.has_path(plan.head, &kustomization.replace(".yaml", ".yml")).map_err(git_err(tier, field))?;
    if found {
        return Ok(());
    }
    Err(SyncError::PathMissing {
        tier: tier.into(),
        field: field.into(),
        detail: format!(
            "{path:?} holds no kustomization.yaml in {} commit {} of {}",
            plan.label,
            short(&plan.head.to_string()),
            plan.remote.url()
        ),
        fix: format!("point {field} at the directory of the {what}, or add it to the repository"),
    })
}

fn system_parent(
    system: &Remote,
    heads: &crate::gitops::RemoteHeads,
    branch: &str,
    from_branch: Option<&str>,
) -> Result<(Option<Oid>, Option<String>), GitError> {
    if let Some(head) = heads.branches.get(branch) {
        system.ensure(branch, *head)?;
        return Ok((Some(*head), None));
    }
    let source = from_branch
        .filter(|f| heads.branches.contains_key(*f))
        .map(|f| (f.to_string(), "promotion.from"))
        .or_else(|| heads.default_branch.clone().map(|d| (d, "default branch")));
    match source {
        Some((src, why)) => {
            let head = heads.branches.get(&src).copied();
            if let Some(h) = head {
                system.ensure(&src, h)?;
            }
            Ok((head, Some(format!("{src} ({why})"))))
        }
        None => Ok((None, Some("nothing: new root commit (empty repository)".into()))),
    }
}

fn branch_status(plan: &Plan, branch: &str) -> BranchStatus {
    BranchStatus {
        repository: plan.label.clone(),
        url: plan.remote.url().to_string(),
        branch: branch.to_string(),
        head: Some(plan.head.to_string()),
        created_from: plan.create_from.clone(),
    }
}

fn system_status(
    tier: &crate::api::Tier,
    branch: &str,
    head: Option<Oid>,
    created_from: Option<String>,
) -> BranchStatus {
    BranchStatus {
        repository: "system".into(),
        url: tier.spec.system.url.clone(),
        branch: branch.into(),
        head: head.map(|o| o.to_string()),
        created_from,
    }
}

/// The ShopSet a path of the system branch belongs to: `shopsets/<name>/...` or `applications/<name>.yaml`.
fn shopset_of(path: &str) -> Option<&str> {
    path.strip_prefix("shopsets/")
        .and_then(|r| r.split_once('/').map(|(n, _)| n))
        .or_else(|| path.strip_prefix("applications/").and_then(|r| r.strip_suffix(".yaml")))
}

/// A ShopSet's directory and Application file on the system branch.
fn shopset_paths(name: &str) -> (String, String) {
    (format!("shopsets/{name}"), format!("applications/{name}.yaml"))
}

/// A render compared with the system branch by object ids.
struct Compare<'a> {
    system: &'a Remote,
    /// Root tree of the branch (None: no branch yet).
    old: Option<Oid>,
    new: &'a Tree,
    hashed: &'a HashedTree<'a>,
    /// The paths that differ.
    delta: &'a [Change],
}

impl Compare<'_> {
    /// Mode and id of `path` in a stored tree.
    fn stored(&self, tree: Option<Oid>, path: &str) -> Option<(i32, Oid)> {
        tree.and_then(|t| self.system.entry(t, path))
    }

    /// The ids of a ShopSet's files (its directory and its Application) in a stored tree.
    fn stored_ids(&self, tree: Option<Oid>, name: &str) -> [Option<(i32, Oid)>; 2] {
        let (dir, app) = shopset_paths(name);
        [self.stored(tree, &dir), self.stored(tree, &app)]
    }

    /// The same ids in the render.
    fn rendered_ids(&self, name: &str) -> [Option<(i32, Oid)>; 2] {
        let (dir, app) = shopset_paths(name);
        [self.hashed.get(&dir), self.hashed.get(&app)]
    }

    /// ShopSets added, removed and changed, from the paths that differ.
    fn shopset_changes(&self) -> ShopSetChanges {
        let names: std::collections::BTreeSet<&str> = self.delta.iter().filter_map(|c| shopset_of(&c.path)).collect();
        let mut changes = ShopSetChanges::default();
        for name in names {
            let before = self.stored_ids(self.old, name).iter().any(Option::is_some);
            let after = self.rendered_ids(name).iter().any(Option::is_some);
            match (before, after) {
                (false, true) => changes.added.push(name.to_string()),
                (true, false) => changes.removed.push(name.to_string()),
                (true, true) => changes.changed.push(name.to_string()),
                (false, false) => {}
            }
        }
        changes
    }

    /// Whether the branch had no files (no branch, or an empty root tree).
    fn old_is_empty(&self) -> bool {
        // git's empty tree has the same id in every SHA-1 repository.
        self.old.is_none_or(|t| t.to_string() == "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
    }

    /// The old gitlink at `path` (None inside: there was none), when that path changed.
    fn old_gitlink(&self, path: &str) -> Option<Option<String>> {
        let change = self.delta.iter().find(|c| c.path == path)?;
        Some(change.old.filter(|(m, _)| *m == MODE_GITLINK).map(|(_, id)| id.to_string()))
    }

    /// A unified diff of the paths that differ, reading only their old contents.
    fn diff(&self) -> Result<String, GitError> {
        let (mut old, mut new) = (Tree::default(), Tree::default());
        for c in self.delta {
            if let Some((mode, id)) = c.old {
                let entry = if mode == MODE_GITLINK {
                    Entry::Gitlink(id.to_string())
                } else {
                    Entry::File(self.system.blob(id)?)
                };
                old.entries.insert(c.path.clone(), entry);
            }
            if let Some(e) = self.new.entries.get(&c.path) {
                new.entries.insert(c.path.clone(), e.clone());
            }
        }
        Ok(diff_trees(&old, &new))
    }
}

/// The root tree of the newest commit ShopSet wrote on the first-parent line of `head`, if any.
fn last_own_tree(system: &Remote, head: Option<Oid>) -> Option<Oid> {
    let mut commit = system.repo().find_commit(head?).ok()?;
    while commit.author().email().ok() != Some(AUTHOR_EMAIL) {
        commit = commit.parent(0).ok()?;
    }
    Some(commit.tree_id())
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(7)]
}

/// "app: abc1234 -> def5678 (3 commits)" for one pinned repository.
fn pin_change(label: &str, old: Option<String>, new: &str, plan: &Plan) -> Option<String> {
    match old {
        Some(old) if old == new => None,
        Some(old) => {
            let count = match (Oid::from_str(&old), Oid::from_str(new)) {
                (Ok(o), Ok(n)) => plan.remote.count_commits(o, n),
                _ => None,
            };
            let count = match count {
                Some(1) => " (1 commit)".to_string(),
                Some(n)
                    if plan.remote.count_commits(Oid::from_str(new).ok()?, Oid::from_str(&old).ok()?) == Some(0) =>
                {
                    format!(" ({n} commits)")
                }
                Some(n) => format!(" ({n} commits, moved back or rewritten)"),
                None => " (old commit no longer in the repository)".to_string(),
            };
            Some(format!("{label}: {} -> {}{count}", short(&old), short(new)))
        }
        None => Some(format!("{label}: pinned at {}", short(new))),
    }
}

/// A message a person can read: what moved, which ShopSets changed, and files restored.
/// `ours` is the root tree of ShopSet's own last commit on the branch: only files that differ from
/// it were changed by someone else ("files rewritten"); the rest changed with the render (README.md).
fn commit_message(
    tier: &str,
    new_branch: bool,
    cmp: &Compare<'_>,
    ours: Option<Oid>,
    changes: &ShopSetChanges,
    app: &Plan,
    configs: &[(String, Plan)],
) -> String {
    let mut lines = Vec::new();
    if let Some(line) = cmp.old_gitlink("base").and_then(|old| pin_change("app", old, &app.head.to_string(), app)) {
        lines.push(line);
    }
    for (name, plan) in configs {
        let path = format!("config/{name}");
        if let Some(line) = cmp.old_gitlink(&path).and_then(|old| pin_change(&path, old, &plan.head.to_string(), plan))
        {
            lines.push(line);
        }
    }
    for c in cmp.delta.iter().filter(|c| c.path.starts_with("config/") && c.new.is_none()) {
        lines.push(format!("{}: no longer used", c.path));
    }
    let list = |v: &[String]| v.join(", ");
    if !changes.added.is_empty() {
        lines.push(format!("shopsets added: {}", list(&changes.added)));
    }
    if !changes.removed.is_empty() {
        lines.push(format!("shopsets removed: {}", list(&changes.removed)));
    }
    // A ShopSet whose files differ only because someone edited them is restored, not changed.
    let changed: Vec<String> = changes
        .changed
        .iter()
        .filter(|n| ours.is_none() || cmp.stored_ids(ours, n) != cmp.rendered_ids(n))
        .cloned()
        .collect();
    if !changed.is_empty() {
        lines.push(format!("shopsets changed: {}", list(&changed)));
    }
    // Whatever else differs was changed outside ShopSet (by hand) or by a template change; a
    // ShopSet's generated files count when they differ from what ShopSet last wrote.
    let generated = |p: &str| p.starts_with("shopsets/") || p.starts_with("applications/");
    let other: Vec<&str> = cmp
        .delta
        .iter()
        .filter(|c| c.path != "base" && !c.path.starts_with("config/"))
        .filter(|c| match ours {
            Some(_) => cmp.stored(ours, &c.path) != c.old,
            None => !generated(&c.path),
        })
        .map(|c| c.path.as_str())
        .collect();
    let old_empty = cmp.old_is_empty();
    if !other.is_empty() && !old_empty {
        lines.push(format!("files rewritten: {}", other.join(", ")));
    }
    let subject = if old_empty || new_branch {
        let apps = cmp.new.entries.keys().filter(|p| p.starts_with("applications/")).count();
        format!("{tier}: first render (app {}, {apps} shopsets)", short(&app.head.to_string()))
    } else {
        let mut parts: Vec<String> = lines.iter().take(2).cloned().collect();
        if lines.len() > 2 {
            parts.push(format!("and {} more", lines.len() - 2));
        }
        format!("{tier}: {}", if parts.is_empty() { "render".to_string() } else { parts.join("; ") })
    };
    let mut message = subject;
    if !lines.is_empty() {
        message.push_str("\n\n");
        message.push_str(&lines.join("\n"));
    }
    message.push_str(&format!("\n\nGenerated-by: shopset (reproduce with `shopctl sync --tier {tier}`)\n"));
    message
}

/// The commits a sync would pin right now, read with one ls-remote per repository and nothing
/// written (missing branches resolve to what they would be created from).
pub fn resolve_pins(cache: &GitCache, auth: &Auth, input: &TierInput) -> Result<Pins, SyncError> {
    let tier = &input.tier;
    let tier_name = tier.name_any();
    let branch = tier.branch();
    let from = input.from.as_ref().map(|t| t.branch());
    let head = |field: &str, url: &str| -> Result<String, SyncError> {
        let remote = cache.open(url, auth).map_err(git_err(&tier_name, field))?;
        let heads = remote.heads().map_err(git_err(&tier_name, field))?;
        let candidates = [Some(branch.clone()), from.clone(), heads.default_branch.clone()];
        candidates.iter().flatten().find_map(|b| heads.branches.get(b)).map(|o| o.to_string()).ok_or_else(|| {
            SyncError::BranchMissing {
                tier: tier_name.clone(),
                field: field.into(),
                detail: format!("{url} has no branch {branch:?} and nothing to create it from"),
                fix: format!("push the first commit to branch {branch:?} of {url}"),
            }
        })
    };
    let app = head("spec.app.url", &tier.spec.app.url)?;
    let mut configurations = BTreeMap::new();
    for cfg in &input.configurations {
        configurations
            .insert(cfg.name_any(), head(&format!("Configuration/{} spec.url", cfg.name_any()), &cfg.spec.url)?);
    }
    Ok(Pins { app, configurations })
}

/// The heads of every repository a tier reads or writes, keyed by `url#branch`: one ls-remote per
/// repository. Equal heads and equal input mean a sync would change nothing.
fn current_heads(
    cache: &GitCache,
    auth: &Auth,
    input: &TierInput,
) -> Result<BTreeMap<String, Option<String>>, SyncError> {
    let tier = &input.tier;
    let tier_name = tier.name_any();
    let branch = tier.branch();
    let mut repos = vec![
        ("spec.app.url".to_string(), tier.spec.app.url.clone()),
        ("spec.system.url".to_string(), tier.spec.system.url.clone()),
    ];
    repos.extend(
        input.configurations.iter().map(|c| (format!("Configuration/{} spec.url", c.name_any()), c.spec.url.clone())),
    );
    let mut out = BTreeMap::new();
    for (field, url) in repos {
        let remote = cache.open(&url, auth).map_err(git_err(&tier_name, &field))?;
        let heads = remote.heads().map_err(git_err(&tier_name, &field))?;
        out.insert(format!("{url}#{branch}"), heads.branches.get(&branch).map(|o| o.to_string()));
    }
    Ok(out)
}

/// What a successful sync saw: with it, telling that the next sync would change nothing costs one
/// ls-remote per repository (the poll of an idle tier), not a render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    input: u64,
    heads: BTreeMap<String, Option<String>>,
}

impl Checkpoint {
    /// The checkpoint of a sync of `input` that reported `report`.
    pub fn after(input: &TierInput, report: &SyncReport) -> Self {
        // The heads the sync left, in the form of `current_heads`.
        let heads = report.branches.iter().map(|b| (format!("{}#{}", b.url, b.branch), b.head.clone())).collect();
        Self { input: fingerprint(input), heads }
    }

    /// Whether neither the input nor any branch has moved since; reads only the remote heads.
    pub fn unchanged(&self, cache: &GitCache, auth: &Auth, input: &TierInput) -> Result<bool, SyncError> {
        if fingerprint(input) != self.input {
            return Ok(false);
        }
        Ok(current_heads(cache, auth, input)? == self.heads)
    }
}

/// A stable hash of everything the render reads besides the pinned commits.
fn fingerprint(input: &TierInput) -> u64 {
    let value = serde_json::json!({
        "tier": input.tier.spec,
        "name": input.tier.name_any(),
        "from": input.from.as_ref().map(|t| t.branch()),
        "shopsets": input.shopsets.iter().map(|s| (s.name_any(), &s.spec)).collect::<Vec<_>>(),
        "configurations": input.configurations.iter().map(|c| (c.name_any(), &c.spec)).collect::<Vec<_>>(),
    });
    // FNV-1a: stable across processes and versions, unlike the std hasher.
    value.to_string().bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}
