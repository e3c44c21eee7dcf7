//! A render compared with the system branch by object ids: which paths differ, which ShopSets
//! were added, removed or changed, and the diff a dry run prints.

use git2::Oid;
use shopset_core::tree::{Entry, Tree};

use super::ShopSetChanges;
use crate::gitops::{Change, GitError, HashedTree, MODE_GITLINK, Remote, diff_trees};
use crate::message::AUTHOR_EMAIL;

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
pub(crate) struct Compare<'a> {
    pub system: &'a Remote,
    /// Root tree of the branch (None: no branch yet).
    pub old: Option<Oid>,
    pub new: &'a Tree,
    pub hashed: &'a HashedTree,
    /// The paths that differ.
    pub delta: &'a [Change],
}

impl Compare<'_> {
    /// Mode and id of `path` in a stored tree.
    pub(crate) fn stored(&self, tree: Option<Oid>, path: &str) -> Option<(i32, Oid)> {
        tree.and_then(|t| self.system.entry(t, path))
    }

    /// The ids of a ShopSet's files (its directory and its Application) in a stored tree.
    pub(crate) fn stored_ids(&self, tree: Option<Oid>, name: &str) -> [Option<(i32, Oid)>; 2] {
        let (dir, app) = shopset_paths(name);
        [self.stored(tree, &dir), self.stored(tree, &app)]
    }

    /// The same ids in the render.
    pub(crate) fn rendered_ids(&self, name: &str) -> [Option<(i32, Oid)>; 2] {
        let (dir, app) = shopset_paths(name);
        [self.hashed.get(&dir), self.hashed.get(&app)]
    }

    /// ShopSets added, removed and changed, from the paths that differ.
    pub(crate) fn shopset_changes(&self) -> ShopSetChanges {
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
    pub(crate) fn old_is_empty(&self) -> bool {
        // git's empty tree has the same id in every SHA-1 repository.
        self.old.is_none_or(|t| t.to_string() == "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
    }

    /// The old gitlink at `path` (None inside: there was none), when that path changed.
    pub(crate) fn old_gitlink(&self, path: &str) -> Option<Option<String>> {
        let change = self.delta.iter().find(|c| c.path == path)?;
        Some(change.old.filter(|(m, _)| *m == MODE_GITLINK).map(|(_, id)| id.to_string()))
    }

    /// A unified diff of the paths that differ, reading only their old contents.
    pub(crate) fn diff(&self) -> Result<String, GitError> {
        let (mut old, mut new) = (Tree::default(), Tree::default());
        for c in self.delta {
            if let Some((mode, id)) = c.old {
                let entry = if mode == MODE_GITLINK {
                    Entry::Gitlink(id.to_string())
                } else {
                    Entry::file(self.system.blob(id)?)
                };
                old.entries.insert(c.path.as_str().into(), entry);
            }
            if let Some(e) = self.new.entries.get(c.path.as_str()) {
                new.entries.insert(c.path.as_str().into(), e.clone());
            }
        }
        Ok(diff_trees(&old, &new))
    }
}

/// The root tree of the newest commit ShopSet wrote on the first-parent line of `head`, if any.
pub(crate) fn last_own_tree(system: &Remote, head: Option<Oid>) -> Option<Oid> {
    let mut commit = system.repo().find_commit(head?).ok()?;
    while commit.author().email().ok() != Some(AUTHOR_EMAIL) {
        commit = commit.parent(0).ok()?;
    }
    Some(commit.tree_id())
}
