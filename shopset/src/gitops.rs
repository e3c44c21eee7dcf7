//! The git engine: a cache of bare repositories, ls-remote, fetch, commits written without a work
//! tree, and pushes guarded by a lease (the expected old value of each branch).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{Cred, CredentialType, Direction, FetchOptions, ObjectType, Oid, PushOptions, RemoteCallbacks, Repository};

use crate::render::{Entry, Tree};

/// Git credentials. Never printed: `Debug` shows which kind is set, not the values.
#[derive(Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// An SSH private key (PEM/OpenSSH text).
    pub ssh_key: Option<String>,
    pub ssh_passphrase: Option<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key.as_ref().map(|_| "<redacted>"))
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
    #[error("authentication to {url} failed ({detail}); fix: check the username and password/token or SSH key in the credentials (Secret or SHOPSET_GIT_* environment)")]
    Auth { url: String, detail: String },
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
}

impl GitCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), locks: Mutex::new(HashMap::new()) }
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
        let repo = match Repository::open_bare(&path) {
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
        };
        Ok(Remote { repo, url: url.to_string(), auth: auth.clone(), lock })
    }
}

/// `<last path segment>-<hash of url>.git`: readable, and distinct per URL.
fn cache_name(url: &str) -> String {
    let last = url.trim_end_matches('/').trim_end_matches(".git").rsplit(['/', ':']).next().unwrap_or("repo");
    let readable: String = last.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
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
    repo: Repository,
    url: String,
    auth: Auth,
    lock: Arc<Mutex<()>>,
}

impl Remote {
    pub fn repo(&self) -> &Repository {
        &self.repo
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
                return Err(git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Http, "credentials were refused"));
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
            let what = if auth.is_empty() { "no credentials are configured" } else { "the configured credentials do not fit" };
            Err(git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Http, format!("the server asks for credentials and {what}")))
        });
        cb
    }

    /// The remote's branches (one round trip, like `git ls-remote`).
    pub fn heads(&self) -> Result<RemoteHeads, GitError> {
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        let conn = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks()), None)
            .map_err(|e| GitError::from_git(&self.url, e))?;
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
        if self.repo.find_commit(head).is_ok() {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            return self
                .repo
                .reference(&format!("refs/remotes/origin/{branch}"), head, true, "shopset: known head")
                .map(|_| ())
                .map_err(|e| GitError::Cache { path: self.repo.path().to_path_buf(), detail: e.message().to_string() });
        }
        self.fetch(&[branch])
    }

    /// Fetches branches into `refs/remotes/origin/*` of the cache.
    pub fn fetch(&self, branches: &[&str]) -> Result<(), GitError> {
        if branches.is_empty() {
            return Ok(());
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        let refspecs: Vec<String> = branches.iter().map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}")).collect();
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.download_tags(git2::AutotagOption::None);
        remote.fetch(&refspecs, Some(&mut opts), None).map_err(|e| GitError::from_git(&self.url, e))?;
        Ok(())
    }

    /// Pushes updates, each only if the remote branch still has its expected value.
    pub fn push(&self, updates: &[RefUpdate]) -> Result<(), GitError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        // The pack is built from local refs: point a scratch ref at each new commit.
        let mut refspecs = Vec::new();
        for u in updates {
            let local = format!("refs/shopset/push/{}", u.branch);
            self.repo
                .reference(&local, u.new, true, "shopset: push")
                .map_err(|e| GitError::Cache { path: self.repo.path().to_path_buf(), detail: e.message().to_string() })?;
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
            if let Ok(mut r) = self.repo.find_reference(&format!("refs/shopset/push/{}", u.branch)) {
                let _ = r.delete();
            }
        }
        drop(opts);
        if let Some(err) = broken.borrow_mut().take() {
            return Err(err);
        }
        let is_lease = |reason: &str| reason.contains("fetch first") || reason.contains("non-fast-forward") || reason.contains("stale");
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
            let said = String::from_utf8_lossy(&remote_said.borrow()).split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
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
            Err(e) => Err(GitError::from_git(&self.url, e)),
        }
    }

    /// The fetched head of `branch`, if it was fetched.
    pub fn fetched(&self, branch: &str) -> Option<Oid> {
        self.repo.refname_to_id(&format!("refs/remotes/origin/{branch}")).ok()
    }

    /// Number of commits in `to` that are not in `from` (None when either is unknown here).
    pub fn count_commits(&self, from: Oid, to: Oid) -> Option<usize> {
        let mut walk = self.repo.revwalk().ok()?;
        walk.push(to).ok()?;
        walk.hide(from).ok()?;
        Some(walk.count())
    }

    /// Whether a file or directory exists at `path` in `commit` (`.` is the root).
    pub fn has_path(&self, commit: Oid, path: &str) -> Result<bool, GitError> {
        let tree = self.repo.find_commit(commit).and_then(|c| c.tree()).map_err(|e| GitError::from_git(&self.url, e))?;
        if path == "." {
            return Ok(true);
        }
        Ok(tree.get_path(Path::new(path.trim_end_matches('/'))).is_ok())
    }

    /// Writes `tree` as git objects and returns the root tree id.
    pub fn write_tree(&self, tree: &Tree) -> Result<Oid, GitError> {
        let cache_err = |e: git2::Error| GitError::Cache { path: self.repo.path().to_path_buf(), detail: e.message().to_string() };
        let mut root = Dir::default();
        for (path, entry) in &tree.entries {
            root.insert(path, entry);
        }
        root.write(&self.repo).map_err(cache_err)
    }

    /// Commits `tree` on `parent` (None: a root commit) and returns the commit id.
    pub fn commit(&self, tree: Oid, parent: Option<Oid>, message: &str, author: &git2::Signature<'_>) -> Result<Oid, GitError> {
        let cache_err = |e: git2::Error| GitError::Cache { path: self.repo.path().to_path_buf(), detail: e.message().to_string() };
        let tree = self.repo.find_tree(tree).map_err(cache_err)?;
        let parent = parent.map(|p| self.repo.find_commit(p)).transpose().map_err(cache_err)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo.commit(None, author, author, message, &tree, &parents).map_err(cache_err)
    }

    /// The root tree of a commit.
    pub fn tree_of(&self, commit: Oid) -> Result<Oid, GitError> {
        self.repo
            .find_commit(commit)
            .map(|c| c.tree_id())
            .map_err(|e| GitError::Cache { path: self.repo.path().to_path_buf(), detail: e.message().to_string() })
    }

    /// Reads a tree back as a [`Tree`] (files and gitlinks).
    pub fn read_tree(&self, tree: Oid) -> Result<Tree, GitError> {
        let cache_err = |e: git2::Error| GitError::Cache { path: self.repo.path().to_path_buf(), detail: e.message().to_string() };
        let tree = self.repo.find_tree(tree).map_err(cache_err)?;
        let mut out = Tree::default();
        let mut failure = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let path = format!("{dir}{}", entry.name().unwrap_or_default());
            match entry.kind() {
                Some(ObjectType::Blob) => match self.repo.find_blob(entry.id()) {
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
        let tree = self.repo.find_tree(tree).ok()?;
        tree.get_path(Path::new(path)).ok().map(|e| e.id())
    }

    /// Names of the entries directly under `path` in `tree`.
    pub fn list_dir(&self, tree: Oid, path: &str) -> BTreeMap<String, Oid> {
        let Some(sub) = self.entry_id(tree, path).and_then(|id| self.repo.find_tree(id).ok()) else {
            return BTreeMap::new();
        };
        sub.iter().filter_map(|e| e.name().ok().map(|n| (n.to_string(), e.id()))).collect()
    }
}

/// A directory being assembled for [`Remote::write_tree`].
#[derive(Default)]
struct Dir<'a> {
    files: BTreeMap<&'a str, &'a Entry>,
    dirs: BTreeMap<&'a str, Dir<'a>>,
}

impl<'a> Dir<'a> {
    fn insert(&mut self, path: &'a str, entry: &'a Entry) {
        match path.split_once('/') {
            Some((head, rest)) => self.dirs.entry(head).or_default().insert(rest, entry),
            None => {
                self.files.insert(path, entry);
            }
        }
    }

    fn write(&self, repo: &Repository) -> Result<Oid, git2::Error> {
        let mut builder = repo.treebuilder(None)?;
        for (name, entry) in &self.files {
            match entry {
                Entry::File(bytes) => {
                    let blob = repo.blob(bytes)?;
                    builder.insert(name, blob, 0o100644)?;
                }
                Entry::Gitlink(hex) => {
                    builder.insert(name, Oid::from_str(hex)?, 0o160000)?;
                }
            }
        }
        for (name, dir) in &self.dirs {
            let id = dir.write(repo)?;
            builder.insert(name, id, 0o040000)?;
        }
        builder.write()
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
                let body: String = text.lines().skip_while(|l| !l.starts_with("---")).map(|l| format!("{l}\n")).collect();
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
    /// (a token goes here), `identity` (SSH private key), `identity.passphrase`.
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
        };
        if auth.password.is_none() && auth.ssh_key.is_none() {
            return Err("it has neither `password` nor `identity`".into());
        }
        Ok(auth)
    }
}
