//! Reading the state of a tier across the layers: git branch heads and pins, the controller's
//! status, and the Argo CD Applications. Used by `shopctl status`, `doctor` and the promotion gate.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use serde::Serialize;

use crate::api::{ShopSet, Tier};
use crate::argocd::application_resource;
use crate::gitops::{Auth, GitCache, GitError};
use crate::manifests::TierInput;
use crate::render::Entry;

/// The git side of one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitState {
    pub branch: String,
    /// Head of the app repository's tier branch.
    pub app_head: Option<String>,
    /// Heads of the configuration repositories' tier branches, by Configuration.
    pub configuration_heads: BTreeMap<String, Option<String>>,
    /// Head of the system branch.
    pub system_head: Option<String>,
    /// Commits the system branch pins: `base` and `config/<name>`.
    pub pinned: BTreeMap<String, String>,
    /// Whether the pinned app commit still exists in the app repository.
    pub pinned_app_reachable: Option<bool>,
    /// Commits on the app branch of the tier this one is promoted from that this tier lacks.
    pub behind: Option<usize>,
    /// Commits on this tier's app branch that the tier it is promoted from lacks.
    pub ahead: Option<usize>,
}

/// Reads heads and pins with ls-remote and a fetch of the system branch.
pub fn git_state(cache: &GitCache, auth: &Auth, input: &TierInput) -> Result<GitState, GitError> {
    let tier = &input.tier;
    let branch = tier.branch();
    let mut state = GitState { branch: branch.clone(), ..GitState::default() };
    let app = cache.open(&tier.spec.app.url, auth)?;
    let app_heads = app.heads()?;
    state.app_head = app_heads.branches.get(&branch).map(|o| o.to_string());
    for cfg in &input.configurations {
        let remote = cache.open(&cfg.spec.url, auth)?;
        state.configuration_heads.insert(cfg.name_any(), remote.heads()?.branches.get(&branch).map(|o| o.to_string()));
    }
    let system = cache.open(&tier.spec.system.url, auth)?;
    if let Some(head) = system.heads()?.branches.get(&branch).copied() {
        system.fetch(&[branch.as_str()])?;
        state.system_head = Some(head.to_string());
        let tree = system.read_tree(system.tree_of(head)?)?;
        for (path, entry) in &tree.entries {
            if let Entry::Gitlink(oid) = entry {
                state.pinned.insert(path.clone(), oid.clone());
            }
        }
    }
    let from_branch = input.from.as_ref().map(|t| t.branch());
    let mut fetch: Vec<&str> = Vec::new();
    if state.app_head.is_some() {
        fetch.push(&branch);
    }
    if let Some(f) = from_branch.as_deref().filter(|f| app_heads.branches.contains_key(*f)) {
        fetch.push(f);
    }
    app.fetch(&fetch)?;
    if let Some(pinned) = state.pinned.get("base") {
        // Reachable from the branches as the server has them now: the cache may still hold a
        // commit that a force-push removed.
        let heads: Vec<git2::Oid> = fetch.iter().filter_map(|b| app_heads.branches.get(*b).copied()).collect();
        state.pinned_app_reachable =
            Some(git2::Oid::from_str(pinned).ok().is_some_and(|o| {
                heads.iter().any(|h| *h == o || app.repo().graph_descendant_of(*h, o).unwrap_or(false))
            }));
    }
    if let (Some(from), Some(mine)) =
        (from_branch.and_then(|f| app_heads.branches.get(&f).copied()), app_heads.branches.get(&branch).copied())
    {
        state.behind = app.count_commits(mine, from);
        state.ahead = app.count_commits(from, mine);
    }
    Ok(state)
}

/// An Argo CD Application as the promotion gate and `status` see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppState {
    pub shopset: String,
    pub application: String,
    pub exists: bool,
    pub sync: Option<String>,
    pub health: Option<String>,
    pub revision: Option<String>,
    pub target_revision: Option<String>,
}

/// The Applications of a tier's ShopSets, read from the cluster.
pub async fn application_states(
    client: &kube::Client,
    tier: &Tier,
    shopsets: &[ShopSet],
) -> Result<Vec<AppState>, kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &tier.spec.argocd.namespace, &application_resource());
    let mut out = Vec::new();
    for ss in shopsets {
        let name = ss.name_any();
        let app = api.get_opt(&name).await?;
        let text =
            |app: &DynamicObject, path: &str| app.data.pointer(path).and_then(|v| v.as_str()).map(str::to_string);
        out.push(match app {
            None => AppState { shopset: name.clone(), application: name, ..AppState::default() },
            Some(app) => AppState {
                shopset: name.clone(),
                application: name,
                exists: true,
                sync: text(&app, "/status/sync/status"),
                health: text(&app, "/status/health/status"),
                revision: text(&app, "/status/sync/revision"),
                target_revision: text(&app, "/spec/source/targetRevision"),
            },
        });
    }
    Ok(out)
}

/// Why a tier is not ready to be promoted from: each ShopSet's Application must be Synced and
/// Healthy at the system commit that pins the tier's app head.
pub fn gate_problems(git: &GitState, apps: &[AppState]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(system_head) = &git.system_head else {
        return vec![format!("the system branch {} does not exist yet: sync the tier first", git.branch)];
    };
    if git.pinned.get("base") != git.app_head.as_ref() {
        problems.push(format!(
            "the system branch {} pins app {} but the app branch is at {}: the controller has not caught up yet",
            git.branch,
            short(git.pinned.get("base")),
            short(git.app_head.as_ref())
        ));
    }
    for (name, head) in &git.configuration_heads {
        let pinned = git.pinned.get(&format!("config/{name}"));
        if pinned != head.as_ref() {
            problems.push(format!(
                "the system branch {} pins configuration {name} at {} but its branch is at {}: the controller has not caught up yet",
                git.branch,
                short(pinned),
                short(head.as_ref())
            ));
        }
    }
    for app in apps {
        if !app.exists {
            problems.push(format!("ShopSet {}: Application {} does not exist", app.shopset, app.application));
            continue;
        }
        let mut why = Vec::new();
        if app.sync.as_deref() != Some("Synced") {
            why.push(format!("sync is {}", app.sync.as_deref().unwrap_or("unknown")));
        }
        if app.health.as_deref() != Some("Healthy") {
            why.push(format!("health is {}", app.health.as_deref().unwrap_or("unknown")));
        }
        if app.revision.as_ref() != Some(system_head) {
            why.push(format!(
                "it runs revision {} instead of {}",
                short(app.revision.as_ref()),
                short(Some(system_head))
            ));
        }
        if !why.is_empty() {
            problems.push(format!("ShopSet {}: Application {}: {}", app.shopset, app.application, why.join(", ")));
        }
    }
    problems
}

fn short(s: Option<&String>) -> String {
    s.map(|s| s[..7.min(s.len())].to_string()).unwrap_or_else(|| "none".into())
}
