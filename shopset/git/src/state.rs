//! The git side of a tier as people inspect it: branch heads, what the system branch pins, how far
//! the tier is behind or ahead of the tier it is promoted from, and whether every pinned commit is
//! still on a branch. One read model, used by `shopctl status`, `doctor` and the promotion gate.

use std::collections::BTreeMap;

use git2::Oid;
use serde::Serialize;
use shopset_core::api::ResourceExt;
use shopset_core::manifests::TierInput;

use crate::gitops::{Auth, GitCache, GitError, MODE_GITLINK};
use crate::promote::marker::{self, Marker};

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
    /// Whether the pinned app commit is still on a branch of the app repository.
    pub pinned_app_reachable: Option<bool>,
    /// Commits on the app branch of the tier this one is promoted from that this tier lacks.
    pub behind: Option<usize>,
    /// Commits on this tier's app branch that the tier it is promoted from lacks.
    pub ahead: Option<usize>,
    /// Commit time (Unix seconds) of the head of the tier's app branch.
    pub app_head_time: Option<i64>,
    /// Commit time of the head of each configuration branch.
    pub configuration_head_times: BTreeMap<String, i64>,
    /// Commits on the tier branch after the pinned commit, by pinned path (`base`, `config/<name>`).
    pub unpinned_commits: BTreeMap<String, usize>,
    /// Pinned commits no branch of their repository contains any more: path -> commit.
    pub unreachable: BTreeMap<String, String>,
    /// Commits on each configuration's tier branch that the promotion source's branch lacks.
    pub configuration_ahead: BTreeMap<String, usize>,
    /// A promotion into this tier that has not completed (its marker in the system repository):
    /// the controller holds the tier's pins until it is finished or undone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Marker>,
}

/// Reads the git side of a tier: one ls-remote per repository, a fetch of the system branch and of
/// every branch of the app and configuration repositories (a pinned commit counts as reachable only
/// when a branch, as the server has it now, contains it).
pub fn read(cache: &GitCache, auth: &Auth, input: &TierInput) -> Result<GitState, GitError> {
    let tier = &input.tier;
    let branch = tier.branch();
    let from_branch = input.from.as_ref().map(|t| t.branch());
    let mut state = GitState { branch: branch.clone(), ..GitState::default() };

    let system = cache.open(&tier.spec.system.url, auth)?;
    let system_heads = system.heads()?;
    if let Some(id) = system_heads.promotions.get(&tier.name_any()) {
        // A ref there that is no marker still holds the pins: it is shown with what is known.
        let unreadable = || Marker {
            id: id.to_string(),
            refname: marker::refname(&tier.name_any()),
            from: input.from.as_ref().map(|t| t.name_any()),
            to: tier.name_any(),
            repositories: Vec::new(),
            why: None,
        };
        state.promotion = Some(marker::read(&system, &tier.name_any(), *id).unwrap_or_else(|_| unreadable()));
    }
    if let Some(head) = system_heads.branches.get(&branch).copied() {
        system.fetch(&[branch.as_str()])?;
        state.system_head = Some(head.to_string());
        let root = system.tree_of(head)?;
        // Only the gitlinks are read, not the rendered files.
        let gitlinks = system.entry(root, "base").map(|e| ("base".to_string(), e)).into_iter().chain(
            system.list_dir(root, "config").into_keys().filter_map(|name| {
                let path = format!("config/{name}");
                system.entry(root, &path).map(|e| (path, e))
            }),
        );
        for (path, (mode, id)) in gitlinks {
            if mode == MODE_GITLINK {
                state.pinned.insert(path, id.to_string());
            }
        }
    }

    let repos = std::iter::once(("base".to_string(), None, tier.spec.app.url.clone())).chain(
        input
            .configurations
            .iter()
            .map(|c| (format!("config/{}", c.name_any()), Some(c.name_any()), c.spec.url.clone())),
    );
    for (path, config, url) in repos {
        let remote = cache.open(&url, auth)?;
        let heads = remote.heads()?.branches;
        let names: Vec<&str> = heads.keys().map(String::as_str).collect();
        remote.fetch(&names)?;
        let head = heads.get(&branch).copied();
        let from = from_branch.as_ref().and_then(|f| heads.get(f)).copied();
        match &config {
            None => {
                state.app_head = head.map(|h| h.to_string());
                state.app_head_time = head.and_then(|h| remote.commit_time(h));
                if let (Some(from), Some(mine)) = (from, head) {
                    state.behind = remote.count_commits(mine, from);
                    state.ahead = remote.count_commits(from, mine);
                }
            }
            Some(name) => {
                state.configuration_heads.insert(name.clone(), head.map(|h| h.to_string()));
                if let Some(time) = head.and_then(|h| remote.commit_time(h)) {
                    state.configuration_head_times.insert(name.clone(), time);
                }
                if let (Some(from), Some(mine)) = (from, head)
                    && let Some(n) = remote.count_commits(from, mine)
                {
                    state.configuration_ahead.insert(name.clone(), n);
                }
            }
        }
        let Some(pinned) = state.pinned.get(&path).cloned() else { continue };
        let pinned_id = Oid::from_str(&pinned).ok().filter(|id| remote.has_commit(&id.to_string()));
        let reachable = pinned_id.is_some_and(|id| heads.values().any(|h| remote.contains(*h, id)));
        if !reachable {
            state.unreachable.insert(path.clone(), pinned.clone());
        }
        if let (Some(head), Some(p)) = (head, pinned_id)
            && head != p
            && let Some(n) = remote.count_commits(p, head)
        {
            state.unpinned_commits.insert(path.clone(), n);
        }
    }
    state.pinned_app_reachable = state.pinned.get("base").map(|_| !state.unreachable.contains_key("base"));
    Ok(state)
}
