//! A local cache of bare repositories, one per URL, and the repository handles reused across
//! syncs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::Repository;

use super::remote::Remote;
use super::{Auth, GitError, LastHash, stream};

/// A local cache of bare repositories, one per URL, reused across syncs.
pub struct GitCache {
    root: PathBuf,
    // One lock per URL: tiers that share a repository fetch into the same cache.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Handles of closed [`Remote`]s, by URL, for the next open: libgit2 keeps the trees it parsed
    /// in a handle, so a push's walk of the branch it replaces does not read them all again.
    idle: Arc<Mutex<HashMap<String, Vec<Repository>>>>,
    /// The last tree hashed for each branch (`url#branch`), so a sync hashes only what changed
    /// since.
    last_hashes: Mutex<HashMap<String, LastHash>>,
    /// URLs whose repository this process swept of a dead writer's temporary files.
    swept: Mutex<std::collections::HashSet<String>>,
}

/// What libgit2 may keep of parsed objects, over all handles of the process: a few versions of a
/// 1,000-ShopSet tree (its default, 256 MiB, would let a long-running controller grow far past its
/// memory budget).
const OBJECT_CACHE_BYTES: isize = 8 * 1024 * 1024;

/// The largest tree object libgit2 keeps parsed. Its default, 4 KiB, left out the two trees that
/// list every ShopSet of a tier (`shopsets/`, `applications/`: ~40 KB at 1,000 ShopSets), so each
/// look-up of one ShopSet's path (the comparison, the commit message, writing, the push's walk)
/// inflated and parsed all 1,000 entries again.
const TREE_CACHE_LIMIT: usize = 1024 * 1024;

/// libgit2's process-wide settings, made once before the first cache is used.
pub(crate) fn configure_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        stream::install();
        // SAFETY: under the Once, before this process opens any repository through a GitCache.
        if let Err(e) = unsafe { git2::opts::set_cache_max_size(OBJECT_CACHE_BYTES) } {
            tracing::warn!(error = %e, "cannot limit libgit2's object cache");
        }
        // SAFETY: as above.
        if let Err(e) = unsafe { git2::opts::set_cache_object_limit(git2::ObjectType::Tree, TREE_CACHE_LIMIT) } {
            tracing::warn!(error = %e, "cannot let libgit2 cache large trees");
        }
    });
}

impl GitCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        configure_libgit2();
        Self {
            root: root.into(),
            locks: Mutex::new(HashMap::new()),
            idle: Arc::default(),
            last_hashes: Mutex::default(),
            swept: Mutex::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The last hash remembered for `branch` of `url` (none: an empty memo), taken out until
    /// [`GitCache::keep_last_hash`] puts them back.
    pub fn take_last_hash(&self, url: &str, branch: &str) -> LastHash {
        self.last_hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("{url}#{branch}"))
            .unwrap_or_default()
    }

    /// Remembers the last hash for the next sync of `branch` of `url`.
    pub fn keep_last_hash(&self, url: &str, branch: &str, last: LastHash) {
        self.last_hashes.lock().unwrap_or_else(|p| p.into_inner()).insert(format!("{url}#{branch}"), last);
    }

    /// Opens (creating when new) the cached repository of `url`.
    pub fn open(&self, url: &str, auth: &Auth) -> Result<Remote, GitError> {
        super::certificates::before_connect(url);
        let path = self.root.join(cache_name(url));
        let cache_err = |e: git2::Error| GitError::Cache { path: path.clone(), detail: e.message().to_string() };
        let lock = {
            // A poisoned map only means another thread panicked while inserting; the map is intact.
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(url.to_string()).or_default().clone()
        };
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(url).and_then(Vec::pop);
        let repo = match pooled {
            Some(repo) => {
                // Packs another handle wrote since (a fetch, a first render) become visible.
                repo.odb().and_then(|odb| odb.refresh()).map_err(cache_err)?;
                repo
            }
            None => match Repository::open_bare(&path) {
                Ok(repo) => repo,
                Err(_) => {
                    // Two tiers sharing a repository may open it at once: create it under its lock.
                    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    match Repository::open_bare(&path) {
                        Ok(repo) => repo,
                        Err(_) => {
                            std::fs::create_dir_all(&self.root)
                                .map_err(|e| GitError::Cache { path: self.root.clone(), detail: e.to_string() })?;
                            Repository::init_bare(&path).map_err(cache_err)?
                        }
                    }
                }
            },
        };
        // Once a process: a writer killed between writing a pack and renaming it left its file.
        if self.swept.lock().unwrap_or_else(|p| p.into_inner()).insert(url.to_string()) {
            super::packfile::sweep_temporaries(&repo, super::packfile::STALE_TEMPORARY);
        }
        Ok(Remote::new(repo, url, auth.clone(), lock, self.idle.clone()))
    }
}

/// `<last path segment>-<hash of url>.git`: readable, and distinct per URL.
fn cache_name(url: &str) -> String {
    let last = url.trim_end_matches('/').trim_end_matches(".git").rsplit(['/', ':']).next().unwrap_or("repo");
    let readable: String =
        last.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
    let hash = shopset_core::fingerprint::fnv1a(url.as_bytes());
    format!("{readable}-{hash:016x}.git")
}

#[cfg(test)]
mod cache_tests {
    use super::super::HashedTree;
    use super::*;
    use shopset_core::tree::{Entry, Tree};

    #[test]
    fn a_reused_handle_sees_packs_another_handle_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let cache = GitCache::new(dir.path());
        let url = "git://127.0.0.1:1/system.git";
        let mut tree = Tree::default();
        for i in 0..150 {
            tree.entries.insert(format!("shopsets/s{i}/k.yaml").into(), Entry::file(format!("{i}\n")));
        }
        let hashed = HashedTree::new(&tree).unwrap();
        // Two syncs of one repository at once: each has a handle of its own.
        let (first, second) = (cache.open(url, &Auth::default()).unwrap(), cache.open(url, &Auth::default()).unwrap());
        // `first` looks at the pack directory before `second` writes the render as a pack.
        assert!(!first.repo().odb().unwrap().exists(hashed.id()));
        second.write_hashed(&hashed).unwrap();
        drop(second);
        // `first` goes back last, so the next open takes it: it never looked at the new pack.
        drop(first);
        let reused = cache.open(url, &Auth::default()).unwrap();
        // What a sync's existence checks ask (they do not rescan packs on a miss, for speed).
        let odb = reused.repo().odb().unwrap();
        assert!(
            odb.exists_ext(hashed.id(), git2::OdbLookupFlags::NO_REFRESH),
            "the reused handle does not see the other's pack: a sync would store every object again"
        );
    }

    #[test]
    fn a_cache_fetched_at_every_bump_keeps_its_packs_few() {
        use super::super::packs::PACK_LIMIT;
        let dir = tempfile::tempdir().unwrap();
        let upstream = Repository::init_bare(dir.path().join("app.git")).unwrap();
        let url = format!("file://{}", upstream.path().display());
        let cache = GitCache::new(dir.path().join("cache"));
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let pack_count = |remote: &Remote| {
            std::fs::read_dir(remote.git_dir().join("objects/pack"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "pack"))
                .count()
        };
        let (mut commits, mut counts) = (Vec::new(), Vec::new());
        for bump in 0..PACK_LIMIT + 10 {
            let blob = upstream.blob(format!("image: storefront:{bump}\n").as_bytes()).unwrap();
            let mut tree = upstream.treebuilder(None).unwrap();
            tree.insert("kustomization.yaml", blob, 0o100644).unwrap();
            let tree = upstream.find_tree(tree.write().unwrap()).unwrap();
            let parent = commits.last().map(|c| upstream.find_commit(*c).unwrap());
            let parents: Vec<&git2::Commit> = parent.iter().collect();
            commits.push(upstream.commit(Some("refs/heads/tier-0"), &sig, &sig, "bump", &tree, &parents).unwrap());
            let remote = cache.open(&url, &Auth::default()).unwrap();
            remote.fetch(&["tier-0"]).unwrap();
            counts.push(pack_count(&remote));
        }
        // Each fetch stored a pack of its own (what makes the bound needed)...
        assert_eq!(counts[PACK_LIMIT - 1], PACK_LIMIT, "{counts:?}");
        // ...and past the limit they were merged.
        assert!(counts.iter().all(|c| *c <= PACK_LIMIT), "{counts:?}");
        assert!(*counts.last().unwrap() < 15, "{counts:?}");
        let remote = cache.open(&url, &Auth::default()).unwrap();
        assert_eq!(remote.fetched("tier-0"), commits.last().copied());
        for c in &commits {
            let tree = remote.tree_of(*c).unwrap();
            assert!(remote.entry(tree, "kustomization.yaml").is_some(), "{c} lost its tree");
        }
    }

    #[test]
    fn ensure_moves_the_known_head_to_a_cached_commit_without_fetching() {
        use git2::Oid;
        let dir = tempfile::tempdir().unwrap();
        let upstream = Repository::init_bare(dir.path().join("app.git")).unwrap();
        let url = format!("file://{}", upstream.path().display());
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = |n: u32, parent: Option<Oid>| {
            let blob = upstream.blob(format!("{n}\n").as_bytes()).unwrap();
            let mut tree = upstream.treebuilder(None).unwrap();
            tree.insert("f", blob, 0o100644).unwrap();
            let tree = upstream.find_tree(tree.write().unwrap()).unwrap();
            let parent = parent.map(|p| upstream.find_commit(p).unwrap());
            let parents: Vec<&git2::Commit> = parent.iter().collect();
            upstream.commit(None, &sig, &sig, "c", &tree, &parents).unwrap()
        };
        let (one, two) = {
            let one = commit(1, None);
            (one, commit(2, Some(one)))
        };
        upstream.reference("refs/heads/tier-0", two, true, "").unwrap();
        let cache = GitCache::new(dir.path().join("cache"));
        let remote = cache.open(&url, &Auth::default()).unwrap();
        remote.fetch(&["tier-0"]).unwrap();
        // Gone upstream: a fetch would fail.
        std::fs::remove_dir_all(dir.path().join("app.git")).unwrap();
        // The branch went back to a commit the cache holds: the known head follows.
        remote.ensure("tier-0", one).unwrap();
        assert_eq!(remote.fetched("tier-0"), Some(one));
        remote.ensure("tier-0", two).unwrap();
        assert_eq!(remote.fetched("tier-0"), Some(two));
        // Found where it was: still there.
        remote.ensure("tier-0", two).unwrap();
        assert_eq!(remote.fetched("tier-0"), Some(two));
    }
}
