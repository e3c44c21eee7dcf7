//! Stage 1 of a sync: the heads of the app and configuration tier branches (planning the
//! creation of missing ones) and of the system repository, read at once. Nothing is written.

use std::collections::BTreeMap;

use git2::Oid;
use shopset_core::api::ResourceExt;
use shopset_core::manifests::TierInput;
use shopset_core::render::Pins;
use shopset_core::revision::short;

use super::{BranchStatus, SyncError};
use crate::gitops::{Auth, GitCache, GitError, RefUpdate, Remote, RemoteHeads};

/// Everything a sync resolved: each human-owned branch with its head, and the system repository.
pub(super) struct Resolved {
    pub tier: String,
    pub branch: String,
    pub from_branch: Option<String>,
    pub system_url: String,
    pub app: Plan,
    pub configs: Vec<(String, Plan)>,
    pub pins: Pins,
}

/// The system repository and its heads. An error here is reported after the render's: a render
/// error is the one to fix first.
pub(super) type System = Result<(Remote, RemoteHeads), SyncError>;

/// Where the system branch stands and what a new commit goes on.
pub(super) struct SystemTarget {
    /// Head of the branch before the sync (None: no branch yet).
    pub previous: Option<Oid>,
    /// What a new commit's parent is: the head, or for a new branch what it is created from.
    pub parent: Option<Oid>,
    /// For a new branch: what it is created from, as people read it.
    pub created_from: Option<String>,
}

impl Resolved {
    /// The status of each human-owned branch, in the order the report lists them.
    pub fn branches(&self) -> Vec<BranchStatus> {
        std::iter::once(branch_status(&self.app, &self.branch))
            .chain(self.configs.iter().map(|(_, p)| branch_status(p, &self.branch)))
            .collect()
    }

    /// Creates the missing human-owned branches at the commits already pinned.
    pub fn create_missing_branches(&mut self) -> Result<(), SyncError> {
        let (tier, branch) = (&self.tier, &self.branch);
        for plan in std::iter::once(&mut self.app).chain(self.configs.iter_mut().map(|(_, p)| p)) {
            if plan.create_from.is_some() {
                create_branch(plan, tier, branch)?;
            }
        }
        Ok(())
    }
}

/// Resolves every branch a tier pins, unless a promotion into the tier is in progress (a marker
/// other than `promotion` in the system repository): then its pins stay where they are.
///
/// The system repository is asked again once the branches are read: a marker that appeared
/// meanwhile holds the pins too, and a system branch that moved meanwhile (a promotion may have
/// begun and completed in between, leaving heads read half-way) means reading them all again.
pub(super) fn resolve(
    cache: &GitCache,
    auth: &Auth,
    input: &TierInput,
    dry_run: bool,
    promotion: Option<Oid>,
) -> Result<(Resolved, System), SyncError> {
    let mut reads = 0;
    loop {
        reads += 1;
        let (resolved, system) = resolve_once(cache, auth, input, dry_run)?;
        let Ok((remote, heads)) = &system else { return Ok((resolved, system)) };
        held(&resolved, input, heads, promotion)?;
        let after = remote.heads().map_err(git_err(&resolved.tier, "spec.system.url"))?;
        held(&resolved, input, &after, promotion)?;
        if after.branches.get(&resolved.branch) == heads.branches.get(&resolved.branch) || reads >= 3 {
            return Ok((resolved, system));
        }
        tracing::info!(branch = %resolved.branch, "the system branch moved while the branches were read: reading them again");
    }
}

/// Refuses to move pins while a promotion other than `promotion` is marked for the tier.
fn held(resolved: &Resolved, input: &TierInput, heads: &RemoteHeads, promotion: Option<Oid>) -> Result<(), SyncError> {
    match heads.promotions.get(&resolved.tier) {
        Some(id) if Some(*id) != promotion => Err(SyncError::PromotionInProgress {
            tier: resolved.tier.clone(),
            from: input.from.as_ref().map_or_else(|| "FROM".to_string(), |t| t.name_any()),
            refname: crate::promote::marker::refname(&resolved.tier),
            marker: id.to_string(),
            url: resolved.system_url.clone(),
        }),
        _ => Ok(()),
    }
}

/// One read of every branch a tier pins, asking the repositories at once: a sync waits for the
/// slowest ls-remote rather than their sum. Results are taken in a fixed order, so the error
/// reported is the same as if they had been asked one by one.
fn resolve_once(
    cache: &GitCache,
    auth: &Auth,
    input: &TierInput,
    dry_run: bool,
) -> Result<(Resolved, System), SyncError> {
    let tier = &input.tier;
    let tier_name = tier.name_any();
    let branch = tier.branch();
    let from_branch = input.from.as_ref().map(|t| t.branch());
    let cfg_fields: Vec<(String, String, String)> = input
        .configurations
        .iter()
        .map(|c| (c.name_any(), format!("Configuration/{} spec.url", c.name_any()), format!("config/{}", c.name_any())))
        .collect();
    let span = tracing::Span::current();
    let (app, configs, system) = std::thread::scope(|s| {
        let (tier_name, branch, from_branch) = (&tier_name, &branch, from_branch.as_deref());
        let want = |field, label, url| Want { tier: tier_name, field, label, url, branch, from_branch, dry_run };
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
    let app = app?;
    check_path(&app, &tier_name, "spec.app.path", &tier.spec.app.path, "Kustomize base")?;
    let mut planned = Vec::new();
    for ((cfg, (name, _, _)), plan) in input.configurations.iter().zip(&cfg_fields).zip(configs) {
        let plan = plan?;
        let field = format!("Configuration/{name} spec.path");
        check_path(&plan, &tier_name, &field, &cfg.spec.path, "Kustomize Component")?;
        planned.push((name.clone(), plan));
    }
    let pins = Pins {
        app: app.head.to_string(),
        configurations: planned.iter().map(|(n, p)| (n.clone(), p.head.to_string())).collect(),
    };
    let system = system.map_err(git_err(&tier_name, "spec.system.url"));
    let resolved = Resolved {
        tier: tier_name,
        branch,
        from_branch,
        system_url: tier.spec.system.url.clone(),
        app,
        configs: planned,
        pins,
    };
    Ok((resolved, system))
}

/// A tier branch to resolve in one repository.
pub(super) struct Plan {
    pub label: String,
    pub field: String,
    pub remote: Remote,
    pub head: Oid,
    /// `Some(source)` when the branch must be created from `source`.
    pub create_from: Option<String>,
}

pub(super) fn git_err(tier: &str, field: &str) -> impl Fn(GitError) -> SyncError + use<> {
    let (tier, field) = (tier.to_string(), field.to_string());
    move |error| SyncError::Git { tier: tier.clone(), field: field.clone(), error }
}

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

/// Resolves the head of a human-owned tier branch (app or configuration), planning its creation
/// from the promotion source or the default branch when it is missing.
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

/// Where the system branch stands, and what it would be created from when it is missing.
pub(super) fn system_target(
    system: &Remote,
    heads: &RemoteHeads,
    branch: &str,
    from_branch: Option<&str>,
) -> Result<SystemTarget, GitError> {
    let previous = heads.branches.get(branch).copied();
    let (parent, created_from) = system_parent(system, heads, branch, from_branch)?;
    Ok(SystemTarget { previous, parent, created_from })
}

fn system_parent(
    system: &Remote,
    heads: &RemoteHeads,
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

pub(super) fn system_status(url: &str, branch: &str, head: Option<Oid>, created_from: Option<String>) -> BranchStatus {
    BranchStatus {
        repository: "system".into(),
        url: url.to_string(),
        branch: branch.into(),
        head: head.map(|o| o.to_string()),
        created_from,
    }
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
pub(super) fn current_heads(
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
