//! The git engine: a cache of bare repositories, ls-remote, fetch, commits written without a work
//! tree, and pushes guarded by a lease (the expected old value of each branch).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{Cred, CredentialType, Direction, FetchOptions, ObjectType, Oid, PushOptions, RemoteCallbacks, Repository};

use crate::render::{Entry, Tree};

mod hashed;
mod stream;
pub use hashed::{Change, HashedTree, MODE_DIR, MODE_FILE, MODE_GITLINK};
pub use stream::connections;

/// Git credentials. Never printed: `Debug` shows which kind is set, not the values.
#[derive(Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// An SSH private key (PEM/OpenSSH text).
    pub ssh_key: Option<String>,
    pub ssh_passphrase: Option<String>,
    /// SSH host keys to trust, OpenSSH `known_hosts` lines (public, not a secret). When set, an
    /// SSH server must present a key one of them lists for its host (and port); when unset,
    /// libgit2 checks `~/.ssh/known_hosts`. Never "accept any key".
    pub known_hosts: Option<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key.as_ref().map(|_| "<redacted>"))
            .field("known_hosts", &self.known_hosts.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Auth {
    /// Every secret value, so callers can make sure none reaches a message.
    pub fn secrets(&self) -> Vec<&str> {
        [&self.password, &self.ssh_key, &self.ssh_passphrase]
            .into_iter()
            .filter_map(|s| s.as_deref())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none() && self.ssh_key.is_none()
    }
}

/// What went wrong talking to a repository. Messages carry the URL (validated to hold no
/// credentials) and git's words, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "authentication to {url} failed ({detail}); fix: check the username and password/token or SSH key in the credentials (Secret or SHOPSET_GIT_* environment)"
    )]
    Auth { url: String, detail: String },
    #[error("SSH host key check of {url} failed: {detail}")]
    HostKey { url: String, detail: String },
    #[error("repository {url} is unreachable: {detail}; fix: check the URL and that the git server is up")]
    Unreachable { url: String, detail: String },
    #[error("push to {url} branch {branch} was rejected: {reason}")]
    Rejected { url: String, branch: String, reason: String },
    #[error("branch {branch} of {url} moved while we worked (expected {expected}, found {found})")]
    LeaseBroken { url: String, branch: String, expected: String, found: String },
    #[error("git error on {url}: {detail}")]
    Other { url: String, detail: String },
    #[error("git cache {path}: {detail}")]
    Cache { path: PathBuf, detail: String },
}

impl GitError {
    fn from_git(url: &str, err: git2::Error) -> Self {
        let detail = err.message().to_string();
        let url = url.to_string();
        match (err.class(), err.code()) {
            (_, git2::ErrorCode::Auth) => GitError::Auth { url, detail },
            (git2::ErrorClass::Http, _) if detail.contains("401") || detail.contains("authentication") => {
                GitError::Auth { url, detail }
            }
            // libgit2 checked ~/.ssh/known_hosts (no known_hosts in the credentials) and refused.
            (git2::ErrorClass::Ssh, git2::ErrorCode::Certificate) => GitError::HostKey {
                detail: format!(
                    "{detail}: the server's key is not one ~/.ssh/known_hosts lists for it; fix: set `known_hosts` in the credentials Secret (shopctl: SHOPSET_GIT_KNOWN_HOSTS_FILE) to the server's key line, e.g. from ssh-keyscan, checked against a fingerprint you trust"
                ),
                url,
            },
            (git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Ssh | git2::ErrorClass::Http, _) => {
                GitError::Unreachable { url, detail }
            }
            _ if detail.contains("could not find repository") || detail.contains("not found") => {
                GitError::Unreachable { url, detail }
            }
            _ => GitError::Other { url, detail },
        }
    }
}

/// A local cache of bare repositories, one per URL, reused across syncs.
pub struct GitCache {
    root: PathBuf,
    // One lock per URL: tiers that share a repository fetch into the same cache.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Handles of closed [`Remote`]s, by URL, for the next open: libgit2 keeps the trees it parsed
    /// in a handle, so a push's walk of the branch it replaces does not read them all again.
    idle: Arc<Mutex<HashMap<String, Vec<Repository>>>>,
}

/// What libgit2 may keep of parsed objects, over all handles of the process: a few versions of a
/// 1,000-ShopSet tree (its default, 256 MiB, would let a long-running controller grow far past its
/// memory budget).
const OBJECT_CACHE_BYTES: isize = 8 * 1024 * 1024;

/// libgit2's process-wide settings, made once before the first cache is used.
fn configure_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        stream::install();
        // SAFETY: under the Once, before this process opens any repository through a GitCache.
        if let Err(e) = unsafe { git2::opts::set_cache_max_size(OBJECT_CACHE_BYTES) } {
            tracing::warn!(error = %e, "cannot limit libgit2's object cache");
        }
    });
}

impl GitCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        configure_libgit2();
        Self { root: root.into(), locks: Mutex::new(HashMap::new()), idle: Arc::default() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens (creating when new) the cached repository of `url`.
    pub fn open(&self, url: &str, auth: &Auth) -> Result<Remote, GitError> {
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
        Ok(Remote {
            repo: Some(repo),
            url: url.to_string(),
            auth: auth.clone(),
            lock,
            idle: self.idle.clone(),
            host_key_refusal: Mutex::new(None),
        })
    }
}

/// `<last path segment>-<hash of url>.git`: readable, and distinct per URL.
fn cache_name(url: &str) -> String {
    let last = url.trim_end_matches('/').trim_end_matches(".git").rsplit(['/', ':']).next().unwrap_or("repo");
    let readable: String =
        last.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let hash = url.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    format!("{readable}-{hash:016x}.git")
}

/// The branches of a remote and its default branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteHeads {
    pub branches: BTreeMap<String, Oid>,
    /// The branch HEAD points to, when the server says.
    pub default_branch: Option<String>,
}

/// One branch update of a push: `expected` is the lease (None: the branch must not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub branch: String,
    pub expected: Option<Oid>,
    pub new: Oid,
    /// Allow a non-fast-forward update (still under the lease).
    pub force: bool,
}

/// A cached repository and the remote it mirrors.
pub struct Remote {
    /// Always Some; taken only when the Remote is dropped, to go back to the cache's idle handles.
    repo: Option<Repository>,
    idle: Arc<Mutex<HashMap<String, Vec<Repository>>>>,
    url: String,
    auth: Auth,
    lock: Arc<Mutex<()>>,
    /// Why the certificate check refused the SSH host key: libgit2 replaces the callback's
    /// message with a generic one, so the reason travels here.
    host_key_refusal: Mutex<Option<String>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(repo) = self.repo.take() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).entry(self.url.clone()).or_default().push(repo);
        }
    }
}

impl Remote {
    pub fn repo(&self) -> &Repository {
        // invariant: `repo` is taken only in Drop.
        self.repo.as_ref().expect("a Remote's repository is present until it is dropped")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let mut attempts = 0u32;
        let auth = &self.auth;
        cb.credentials(move |_url, username_from_url, allowed| {
            attempts += 1;
            // libgit2 asks again after a refusal; a second ask means the credentials were wrong.
            if attempts > 1 {
                return Err(git2::Error::new(
                    git2::ErrorCode::Auth,
                    git2::ErrorClass::Http,
                    "credentials were refused",
                ));
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(password) = &auth.password {
                    let user = auth.username.as_deref().or(username_from_url).unwrap_or("git");
                    return Cred::userpass_plaintext(user, password);
                }
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                if let Some(key) = &auth.ssh_key {
                    let user = username_from_url.or(auth.username.as_deref()).unwrap_or("git");
                    return Cred::ssh_key_from_memory(user, None, key, auth.ssh_passphrase.as_deref());
                }
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(auth.username.as_deref().or(username_from_url).unwrap_or("git"));
            }
            let what =
                if auth.is_empty() { "no credentials are configured" } else { "the configured credentials do not fit" };
            Err(git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Http,
                format!("the server asks for credentials and {what}"),
            ))
        });
        *self.host_key_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let (url, refusal) = (&self.url, &self.host_key_refusal);
        cb.certificate_check(move |cert, host| {
            // TLS certificates, and SSH without known_hosts: libgit2 decides (for SSH, from
            // ~/.ssh/known_hosts; an unknown host is refused).
            let (Some(known_hosts), Some(hostkey)) = (&auth.known_hosts, cert.as_hostkey()) else {
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            let name = known_hosts_name(host, ssh_port(url));
            let why = match hostkey.hostkey() {
                Some(key) => match check_known_hosts(known_hosts, &name, key) {
                    Ok(()) => return Ok(git2::CertificateCheckStatus::CertificateOk),
                    Err(why) => why,
                },
                None => format!("the server at {name} did not show its raw host key, so it cannot be checked against known_hosts; fix: use an SSH server that offers an ed25519, ECDSA or RSA host key"),
            };
            *refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            Err(git2::Error::new(git2::ErrorCode::Certificate, git2::ErrorClass::Ssh, why))
        });
        cb
    }

    /// [`GitError::from_git`], with the reason when our check refused an SSH host key.
    fn git_error(&self, err: git2::Error) -> GitError {
        let refusal = self.host_key_refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
        match refusal {
            Some(detail) if err.code() == git2::ErrorCode::Certificate => {
                GitError::HostKey { url: self.url.clone(), detail }
            }
            _ => GitError::from_git(&self.url, err),
        }
    }

    /// The remote's branches (one round trip, like `git ls-remote`).
    pub fn heads(&self) -> Result<RemoteHeads, GitError> {
        let mut remote = self.repo().remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        let conn =
            remote.connect_auth(Direction::Fetch, Some(self.callbacks()), None).map_err(|e| self.git_error(e))?;
        let mut heads = RemoteHeads::default();
        for head in conn.list().map_err(|e| GitError::from_git(&self.url, e))? {
            if let Some(branch) = head.name().strip_prefix("refs/heads/") {
                heads.branches.insert(branch.to_string(), head.oid());
            }
        }
        heads.default_branch = conn
            .default_branch()
            .ok()
            .and_then(|b| b.as_str().ok().map(|s| s.trim_start_matches("refs/heads/").to_string()))
            .filter(|b| heads.branches.contains_key(b));
        Ok(heads)
    }

    /// Fetches `branch` unless the cache already holds `head` (the remote's value from
    /// [`Remote::heads`]): a sync with nothing new costs the ls-remote alone.
    pub fn ensure(&self, branch: &str, head: Oid) -> Result<(), GitError> {
        if self.repo().find_commit(head).is_ok() {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            return self
                .repo()
                .reference(&format!("refs/remotes/origin/{branch}"), head, true, "shopset: known head")
                .map(|_| ())
                .map_err(|e| GitError::Cache {
                    path: self.repo().path().to_path_buf(),
                    detail: e.message().to_string(),
                });
        }
        self.fetch(&[branch])
    }

    /// Fetches branches into `refs/remotes/origin/*` of the cache.
    pub fn fetch(&self, branches: &[&str]) -> Result<(), GitError> {
        if branches.is_empty() {
            return Ok(());
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut remote = self.repo().remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        let refspecs: Vec<String> =
            branches.iter().map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}")).collect();
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.download_tags(git2::AutotagOption::None);
        remote.fetch(&refspecs, Some(&mut opts), None).map_err(|e| self.git_error(e))?;
        Ok(())
    }

    /// Pushes updates, each only if the remote branch still has its expected value.
    pub fn push(&self, updates: &[RefUpdate]) -> Result<(), GitError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut remote = self.repo().remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        // The pack is built from local refs: point a scratch ref at each new commit.
        let mut refspecs = Vec::new();
        for u in updates {
            let local = format!("refs/shopset/push/{}", u.branch);
            self.repo().reference(&local, u.new, true, "shopset: push").map_err(|e| GitError::Cache {
                path: self.repo().path().to_path_buf(),
                detail: e.message().to_string(),
            })?;
            refspecs.push(format!("{}{local}:refs/heads/{}", if u.force { "+" } else { "" }, u.branch));
        }
        let broken: RefCell<Option<GitError>> = RefCell::new(None);
        let rejected: RefCell<Vec<(String, String)>> = RefCell::new(Vec::new());
        // What the server prints while refusing (a hook's "remote:" lines): the reason people need.
        let remote_said: RefCell<Vec<u8>> = RefCell::new(Vec::new());
        let mut cb = self.callbacks();
        cb.sideband_progress(|data| {
            remote_said.borrow_mut().extend_from_slice(data);
            true
        });
        cb.push_negotiation(|proposed| {
            for p in proposed {
                let Some(branch) = p.dst_refname().ok().and_then(|r| r.strip_prefix("refs/heads/")) else { continue };
                let Some(u) = updates.iter().find(|u| u.branch == branch) else { continue };
                let found = (!p.src().is_zero()).then(|| p.src());
                if found != u.expected {
                    *broken.borrow_mut() = Some(GitError::LeaseBroken {
                        url: self.url.clone(),
                        branch: branch.to_string(),
                        expected: u.expected.map_or("no branch".into(), |o| o.to_string()),
                        found: found.map_or("no branch".into(), |o| o.to_string()),
                    });
                    return Err(git2::Error::from_str("lease broken"));
                }
            }
            Ok(())
        });
        cb.push_update_reference(|refname, status| {
            if let Some(reason) = status {
                rejected.borrow_mut().push((refname.trim_start_matches("refs/heads/").to_string(), reason.to_string()));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let result = remote.push(&refspecs, Some(&mut opts));
        for u in updates {
            // Best effort: a stale scratch ref only costs disk until the next push replaces it.
            if let Ok(mut r) = self.repo().find_reference(&format!("refs/shopset/push/{}", u.branch)) {
                let _ = r.delete();
            }
        }
        drop(opts);
        if let Some(err) = broken.borrow_mut().take() {
            return Err(err);
        }
        let is_lease = |reason: &str| {
            reason.contains("fetch first") || reason.contains("non-fast-forward") || reason.contains("stale")
        };
        if let Some((branch, reason)) = rejected.borrow_mut().drain(..).next() {
            if is_lease(&reason) {
                let expected = updates.iter().find(|u| u.branch == branch).and_then(|u| u.expected);
                return Err(GitError::LeaseBroken {
                    url: self.url.clone(),
                    branch,
                    expected: expected.map_or("no branch".into(), |o| o.to_string()),
                    found: format!("another commit ({reason})"),
                });
            }
            let said = String::from_utf8_lossy(&remote_said.borrow())
                .split(['\n', '\r'])
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let reason = if said.is_empty() { reason } else { format!("{reason} (the server said: {said})") };
            return Err(GitError::Rejected { url: self.url.clone(), branch, reason });
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.message().contains("not present locally") || e.message().contains("non-fast-forward") => {
                let u = &updates[0];
                Err(GitError::LeaseBroken {
                    url: self.url.clone(),
                    branch: u.branch.clone(),
                    expected: u.expected.map_or("no branch".into(), |o| o.to_string()),
                    found: "a commit we do not have".into(),
                })
            }
            Err(e) => Err(self.git_error(e)),
        }
    }

    /// The fetched head of `branch`, if it was fetched.
    pub fn fetched(&self, branch: &str) -> Option<Oid> {
        self.repo().refname_to_id(&format!("refs/remotes/origin/{branch}")).ok()
    }

    /// Number of commits in `to` that are not in `from` (None when either is unknown here).
    pub fn count_commits(&self, from: Oid, to: Oid) -> Option<usize> {
        let mut walk = self.repo().revwalk().ok()?;
        walk.push(to).ok()?;
        walk.hide(from).ok()?;
        Some(walk.count())
    }

    /// Whether a file or directory exists at `path` in `commit` (`.` is the root).
    pub fn has_path(&self, commit: Oid, path: &str) -> Result<bool, GitError> {
        let tree =
            self.repo().find_commit(commit).and_then(|c| c.tree()).map_err(|e| GitError::from_git(&self.url, e))?;
        if path == "." {
            return Ok(true);
        }
        Ok(tree.get_path(Path::new(path.trim_end_matches('/'))).is_ok())
    }

    /// Writes `tree` as git objects and returns the root tree id.
    pub fn write_tree(&self, tree: &Tree) -> Result<Oid, GitError> {
        let hashed = HashedTree::new(tree).map_err(|e| self.cache_error(e))?;
        self.write_hashed(&hashed)
    }

    /// Writes the objects of a hashed tree the cache lacks; returns the root tree id.
    pub fn write_hashed(&self, tree: &HashedTree<'_>) -> Result<Oid, GitError> {
        tree.write(self.repo()).map_err(|e| self.cache_error(e))
    }

    /// The paths that differ between the stored tree `old` and `new`, reading only differing subtrees.
    pub fn changes(&self, old: Option<Oid>, new: &HashedTree<'_>) -> Result<Vec<Change>, GitError> {
        new.changes(self.repo(), old).map_err(|e| self.cache_error(e))
    }

    /// The content of a blob.
    pub fn blob(&self, id: Oid) -> Result<Vec<u8>, GitError> {
        self.repo().find_blob(id).map(|b| b.content().to_vec()).map_err(|e| self.cache_error(e))
    }

    /// Mode and id of the entry at `path` in `tree`, if any.
    pub fn entry(&self, tree: Oid, path: &str) -> Option<(i32, Oid)> {
        let tree = self.repo().find_tree(tree).ok()?;
        tree.get_path(Path::new(path)).ok().map(|e| (e.filemode(), e.id()))
    }

    fn cache_error(&self, e: git2::Error) -> GitError {
        GitError::Cache { path: self.repo().path().to_path_buf(), detail: e.message().to_string() }
    }

    /// Commits `tree` on `parent` (None: a root commit) and returns the commit id.
    pub fn commit(
        &self,
        tree: Oid,
        parent: Option<Oid>,
        message: &str,
        author: &git2::Signature<'_>,
    ) -> Result<Oid, GitError> {
        let cache_err = |e: git2::Error| GitError::Cache {
            path: self.repo().path().to_path_buf(),
            detail: e.message().to_string(),
        };
        let tree = self.repo().find_tree(tree).map_err(cache_err)?;
        let parent = parent.map(|p| self.repo().find_commit(p)).transpose().map_err(cache_err)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo().commit(None, author, author, message, &tree, &parents).map_err(cache_err)
    }

    /// The root tree of a commit.
    pub fn tree_of(&self, commit: Oid) -> Result<Oid, GitError> {
        self.repo()
            .find_commit(commit)
            .map(|c| c.tree_id())
            .map_err(|e| GitError::Cache { path: self.repo().path().to_path_buf(), detail: e.message().to_string() })
    }

    /// Reads a tree back as a [`Tree`] (files and gitlinks).
    pub fn read_tree(&self, tree: Oid) -> Result<Tree, GitError> {
        let cache_err = |e: git2::Error| GitError::Cache {
            path: self.repo().path().to_path_buf(),
            detail: e.message().to_string(),
        };
        let tree = self.repo().find_tree(tree).map_err(cache_err)?;
        let mut out = Tree::default();
        let mut failure = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let path = format!("{dir}{}", entry.name().unwrap_or_default());
            match entry.kind() {
                Some(ObjectType::Blob) => match self.repo().find_blob(entry.id()) {
                    Ok(blob) => {
                        out.entries.insert(path, Entry::File(blob.content().to_vec()));
                    }
                    Err(e) => {
                        failure = Some(e);
                        return git2::TreeWalkResult::Abort;
                    }
                },
                Some(ObjectType::Commit) => {
                    out.entries.insert(path, Entry::Gitlink(entry.id().to_string()));
                }
                _ => {}
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(cache_err)?;
        match failure {
            Some(e) => Err(cache_err(e)),
            None => Ok(out),
        }
    }

    /// The id of the subtree or entry at `path` in `tree`, if any.
    pub fn entry_id(&self, tree: Oid, path: &str) -> Option<Oid> {
        let tree = self.repo().find_tree(tree).ok()?;
        tree.get_path(Path::new(path)).ok().map(|e| e.id())
    }

    /// Names of the entries directly under `path` in `tree`.
    pub fn list_dir(&self, tree: Oid, path: &str) -> BTreeMap<String, Oid> {
        let Some(sub) = self.entry_id(tree, path).and_then(|id| self.repo().find_tree(id).ok()) else {
            return BTreeMap::new();
        };
        sub.iter().filter_map(|e| e.name().ok().map(|n| (n.to_string(), e.id()))).collect()
    }
}

/// A unified diff of two trees, as `git diff` prints it (gitlinks as `Subproject commit` lines).
pub fn diff_trees(old: &Tree, new: &Tree) -> String {
    let mut out = String::new();
    let paths: std::collections::BTreeSet<&String> = old.entries.keys().chain(new.entries.keys()).collect();
    for path in paths {
        let (a, b) = (old.entries.get(path), new.entries.get(path));
        if a == b {
            continue;
        }
        let bytes = |e: Option<&Entry>| match e {
            None => Vec::new(),
            Some(Entry::File(b)) => b.clone(),
            Some(Entry::Gitlink(oid)) => format!("Subproject commit {oid}\n").into_bytes(),
        };
        let (old_bytes, new_bytes) = (bytes(a), bytes(b));
        let old_path = a.map(|_| Path::new(path.as_str()));
        let new_path = b.map(|_| Path::new(path.as_str()));
        out.push_str(&format!("diff --git a/{path} b/{path}\n"));
        match git2::Patch::from_buffers(&old_bytes, old_path, &new_bytes, new_path, None).and_then(|mut p| p.to_buf()) {
            Ok(buf) => {
                let text = String::from_utf8_lossy(&buf);
                // from_buffers writes its own header; keep only the hunks and file markers.
                let body: String =
                    text.lines().skip_while(|l| !l.starts_with("---")).map(|l| format!("{l}\n")).collect();
                if a.is_none() {
                    out.push_str("new file\n");
                } else if b.is_none() {
                    out.push_str("deleted file\n");
                }
                out.push_str(&body);
            }
            Err(e) => out.push_str(&format!("(cannot diff: {})\n", e.message())),
        }
    }
    out
}

impl Auth {
    /// Credentials from a Secret (`data` and `stringData` merged, as the API server does).
    pub fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Result<Self, String> {
        let mut data: BTreeMap<String, Vec<u8>> =
            secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        data.extend(secret.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
        Self::from_secret_data(&data)
    }

    /// Credentials from the data of a Kubernetes Secret, with Flux's keys: `username`, `password`
    /// (a token goes here), `identity` (SSH private key), `identity.passphrase`, `known_hosts`
    /// (the SSH host keys to trust).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let text = |key: &str| -> Result<Option<String>, String> {
            data.get(key)
                .map(|v| String::from_utf8(v.clone()).map_err(|_| format!("key {key:?} is not UTF-8 text")))
                .transpose()
        };
        let auth = Auth {
            username: text("username")?,
            password: text("password")?,
            ssh_key: text("identity")?,
            ssh_passphrase: text("identity.passphrase")?,
            known_hosts: text("known_hosts")?,
        };
        if auth.password.is_none() && auth.ssh_key.is_none() {
            return Err("it has neither `password` nor `identity`".into());
        }
        Ok(auth)
    }
}

// ---------------------------------------------------------------------------------------------
// SSH host keys

/// The port of an SSH URL: `ssh://[user@]host[:port]/path` (also `ssh+git://`, `git+ssh://`);
/// 22 for the scp-like `[user@]host:path` and when none is given.
fn ssh_port(url: &str) -> u16 {
    let Some(rest) = ["ssh://", "ssh+git://", "git+ssh://"].iter().find_map(|s| url.strip_prefix(s)) else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").map(|(_, p)| p),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// The name OpenSSH looks a host up by in known_hosts: `host`, or `[host]:port` off port 22.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// Whether `known_hosts` (OpenSSH format) lists `key` (the raw key blob the server showed) for
/// `name` (see [`known_hosts_name`]). The error says why not, with a fix, and never holds a key.
///
/// Host patterns may be lists, negated (`!`) and use `*` and `?`, or hashed (`|1|salt|hash`, as
/// `ssh-keygen -H` and `HashKnownHosts yes` write them); `@revoked` lines refuse their key.
/// `@cert-authority` lines are not supported: they never match.
fn check_known_hosts(known_hosts: &str, name: &str, key: &[u8]) -> Result<(), String> {
    let (mut listed, mut matched, mut revoked) = (false, false, false);
    for line in known_hosts.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let Some(mut hosts) = fields.next() else { continue };
        let marker = hosts.strip_prefix('@');
        if marker.is_some() {
            let Some(next) = fields.next() else { continue };
            hosts = next;
        }
        if marker.is_some_and(|m| m != "revoked") {
            continue;
        }
        let names_host = match hosts.strip_prefix("|1|") {
            Some(hashed) => hashed_host_matches(hashed, name),
            None => host_patterns_match(hosts, name),
        };
        if !names_host {
            continue;
        }
        let (Some(_kind), Some(b64)) = (fields.next(), fields.next()) else { continue };
        let same = base64_decode(b64).is_some_and(|k| k == key);
        if marker.is_some() {
            revoked |= same;
        } else {
            listed = true;
            matched |= same;
        }
    }
    let keyscan = match name.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        Some((host, port)) => format!("ssh-keyscan -p {port} {host}"),
        None => format!("ssh-keyscan {name}"),
    };
    if revoked {
        Err(format!(
            "the host key of {name} is marked @revoked in known_hosts; fix: do not connect until the server has a new key, then list that key for {name} in known_hosts"
        ))
    } else if matched {
        Ok(())
    } else if listed {
        Err(format!(
            "the host key of {name} does not match known_hosts; fix: if the server's key was changed on purpose, replace its known_hosts line with the new key (`{keyscan}`, its fingerprint checked with the server's owner); otherwise someone may be intercepting the connection: do not connect"
        ))
    } else {
        Err(format!(
            "known_hosts has no entry for {name}; fix: add the server's key line for {name} (e.g. from `{keyscan}`, its fingerprint checked with the server's owner)"
        ))
    }
}

/// Whether a hashed known_hosts host (`salt|hash` after `|1|`, both base64) is `name`: the hash is
/// HMAC-SHA1 of the name, lowercased as OpenSSH looks it up, keyed by the salt.
fn hashed_host_matches(salt_and_hash: &str, name: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
    let (Some(salt), Some(hash)) = (base64_decode(salt), base64_decode(hash)) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.to_ascii_lowercase().as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Whether a comma-separated known_hosts pattern list matches `name`: some pattern matches
/// and no negated (`!`) one does. Matching ignores ASCII case, as OpenSSH does.
fn host_patterns_match(patterns: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut positive = false;
    for pattern in patterns.split(',').map(str::to_ascii_lowercase) {
        match pattern.strip_prefix('!') {
            Some(negated) if glob_match(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => positive |= glob_match(pattern.as_bytes(), name.as_bytes()),
        }
    }
    positive
}

/// `*` (any run) and `?` (one character) wildcard matching.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

/// Standard base64 (padding optional); None for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn a_reused_handle_sees_packs_another_handle_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let cache = GitCache::new(dir.path());
        let url = "git://127.0.0.1:1/system.git";
        let mut tree = Tree::default();
        for i in 0..150 {
            tree.entries.insert(format!("shopsets/s{i}/k.yaml"), Entry::File(format!("{i}\n").into_bytes()));
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
}

#[cfg(test)]
mod known_hosts_tests {
    use super::*;

    // An ed25519 public key blob ("ssh-ed25519", 32 key bytes) and another one.
    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILRTh3+Tjca+a/xcB3OM+WIiaYLnVTtrZHutgORQlZYa";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICB11tfJnXBl2dprl8TNECmmQIzPDPEQ7IJ+5EC12/C0";

    fn key() -> Vec<u8> {
        base64_decode(KEY).unwrap()
    }

    #[test]
    fn base64_round_trips_the_key_type() {
        let k = key();
        assert_eq!(k.len(), 51);
        assert_eq!(&k[4..15], b"ssh-ed25519");
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("a-b"), None);
    }

    #[test]
    fn ports_and_names() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://127.0.0.1/repo.git"), 22);
        assert_eq!(ssh_port("ssh://git@[::1]:2200/repo.git"), 2200);
        assert_eq!(ssh_port("git@github.com:org/repo.git"), 22);
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert_eq!(known_hosts_name("github.com", 22), "github.com");
    }

    #[test]
    fn accepts_only_the_listed_key_for_the_host_and_port() {
        let kh = format!("# comment\n[127.0.0.1]:2222 ssh-ed25519 {KEY} host\nother.example ssh-ed25519 {OTHER}\n");
        assert_eq!(check_known_hosts(&kh, "[127.0.0.1]:2222", &key()), Ok(()));
        // The same key on another port or host is not listed there.
        let err = check_known_hosts(&kh, "[127.0.0.1]:2223", &key()).unwrap_err();
        assert!(err.starts_with("known_hosts has no entry for [127.0.0.1]:2223"), "{err}");
        assert!(err.contains("ssh-keyscan -p 2223 127.0.0.1"), "{err}");
        let err = check_known_hosts(&kh, "127.0.0.1", &key()).unwrap_err();
        assert!(err.contains("no entry for 127.0.0.1"), "{err}");
        // Another key for a listed host is refused.
        let err = check_known_hosts(&kh, "[127.0.0.1]:2222", &base64_decode(OTHER).unwrap()).unwrap_err();
        assert!(err.starts_with("the host key of [127.0.0.1]:2222 does not match known_hosts; fix:"), "{err}");
        assert!(!err.contains(KEY) && !err.contains(OTHER), "{err}");
    }

    #[test]
    fn patterns_markers_and_hashes() {
        let k = key();
        assert_eq!(
            check_known_hosts(&format!("a.example,*.shop.example ssh-ed25519 {KEY}"), "git.shop.example", &k),
            Ok(())
        );
        assert!(check_known_hosts(&format!("*.example,!git.example ssh-ed25519 {KEY}"), "git.example", &k).is_err());
        assert_eq!(check_known_hosts(&format!("GIT.example ssh-ed25519 {KEY}"), "git.example", &k), Ok(()));
        let revoked = format!("git.example ssh-ed25519 {KEY}\n@revoked * ssh-ed25519 {KEY}");
        assert!(check_known_hosts(&revoked, "git.example", &k).unwrap_err().contains("@revoked"));
        assert!(check_known_hosts(&format!("@cert-authority * ssh-ed25519 {KEY}"), "git.example", &k).is_err());
        // A hashed name that is not this host's.
        let err = check_known_hosts(&format!("|1|c2FsdA==|aGFzaA== ssh-ed25519 {KEY}"), "git.example", &k).unwrap_err();
        assert!(err.starts_with("known_hosts has no entry for git.example"), "{err}");
        assert!(check_known_hosts("", "git.example", &k).is_err());
    }

    #[test]
    fn hashed_entries_as_ssh_keygen_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\ngit.example ssh-ed25519 {OTHER}\n"))
            .unwrap();
        let out =
            std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).output().expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&out.stderr));
        let hashed = std::fs::read_to_string(&file).unwrap();
        assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");
        assert_eq!(check_known_hosts(&hashed, "[127.0.0.1]:2222", &key()), Ok(()));
        assert_eq!(check_known_hosts(&hashed, "GIT.example", &base64_decode(OTHER).unwrap()), Ok(()));
        // Listed, but with the other key: a mismatch, not a missing entry.
        let err = check_known_hosts(&hashed, "git.example", &key()).unwrap_err();
        assert!(err.starts_with("the host key of git.example does not match known_hosts"), "{err}");
        let err = check_known_hosts(&hashed, "[127.0.0.1]:2223", &key()).unwrap_err();
        assert!(err.starts_with("known_hosts has no entry for [127.0.0.1]:2223"), "{err}");
    }

    #[test]
    fn debug_does_not_show_known_hosts_or_keys() {
        let auth = Auth {
            ssh_key: Some("PRIVATE".into()),
            known_hosts: Some(format!("h ssh-ed25519 {KEY}")),
            ..Auth::default()
        };
        let debug = format!("{auth:?}");
        assert!(!debug.contains("PRIVATE") && !debug.contains(KEY), "{debug}");
        let data = [("identity", "PRIVATE"), ("known_hosts", "h ssh-ed25519 AAAA")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(Auth::from_secret_data(&data).unwrap().known_hosts.as_deref(), Some("h ssh-ed25519 AAAA"));
    }
}
