//! One cached repository and the remote it mirrors: ls-remote, fetch, pushes under a lease, and
//! reading and writing objects without a work tree.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use git2::{Cred, CredentialType, Direction, FetchOptions, ObjectType, Oid, PushOptions, RemoteCallbacks, Repository};
use shopset_core::tree::{Entry, Tree};

use super::hashed::Committed;
use super::known_hosts::{check_known_hosts, known_hosts_name, ssh_port};
use super::receive_pack::{self, Transport};
use super::{Auth, Change, GitError, HashedTree, packs};

/// The branches of a remote and its default branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteHeads {
    pub branches: BTreeMap<String, Oid>,
    /// The branch HEAD points to, when the server says.
    pub default_branch: Option<String>,
    /// Promotion markers (`refs/shopset/promotions/<tier>`), by tier: seen by the same ls-remote.
    pub promotions: BTreeMap<String, Oid>,
}

/// Where the system repository keeps the marker of a promotion into a tier.
pub const PROMOTIONS_PREFIX: &str = "refs/shopset/promotions/";

/// One ref update of a push: `expected` is the lease (None: the ref must not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// A branch name, or a full ref name starting with `refs/`.
    pub branch: String,
    pub expected: Option<Oid>,
    /// The new value; the zero id deletes the ref.
    pub new: Oid,
    /// Allow a non-fast-forward update (still under the lease).
    pub force: bool,
}

/// A cached repository and the remote it mirrors.
pub struct Remote {
    /// Always Some; taken only when the Remote is dropped, to go back to the cache's idle handles.
    repo: Option<Repository>,
    idle: IdleHandles,
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

/// Idle repository handles by URL, shared by a cache and the Remotes it opened.
pub(super) type IdleHandles = Arc<Mutex<HashMap<String, Vec<Repository>>>>;

impl Remote {
    pub(super) fn new(repo: Repository, url: &str, auth: Auth, lock: Arc<Mutex<()>>, idle: IdleHandles) -> Self {
        Self { repo: Some(repo), idle, url: url.to_string(), auth, lock, host_key_refusal: Mutex::new(None) }
    }

    /// The cached repository. Only the git layer reaches it: everything else asks the Remote.
    pub(crate) fn repo(&self) -> &Repository {
        // invariant: `repo` is taken only in Drop.
        self.repo.as_ref().expect("a Remote's repository is present until it is dropped")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cached bare repository's directory, for reading it with the git command line.
    pub fn git_dir(&self) -> &Path {
        self.repo().path()
    }

    /// Whether the cache holds `commit` (a full or abbreviated id, or any revision git reads).
    pub fn has_commit(&self, commit: &str) -> bool {
        self.repo().revparse_single(commit).and_then(|o| o.peel_to_commit()).is_ok()
    }

    /// The committer time of a cached commit, in Unix seconds.
    pub fn commit_time(&self, commit: Oid) -> Option<i64> {
        self.repo().find_commit(commit).ok().map(|c| c.time().seconds())
    }

    /// Whether `commit` is `head` or one of its ancestors (both cached).
    pub fn contains(&self, head: Oid, commit: Oid) -> bool {
        head == commit || self.repo().graph_descendant_of(head, commit).unwrap_or(false)
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
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some(password) = &auth.password
            {
                let user = auth.username.as_deref().or(username_from_url).unwrap_or("git");
                return Cred::userpass_plaintext(user, password);
            }
            if allowed.contains(CredentialType::SSH_KEY)
                && let Some(key) = &auth.ssh_key
            {
                let user = username_from_url.or(auth.username.as_deref()).unwrap_or("git");
                return Cred::ssh_key_from_memory(user, None, key, auth.ssh_passphrase.as_deref());
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
                None => format!(
                    "the server at {name} did not show its raw host key, so it cannot be checked \
                    against known_hosts; fix: use an SSH server that offers an ed25519, ECDSA or RSA host key"
                ),
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
            } else if let Some(tier) = head.name().strip_prefix(PROMOTIONS_PREFIX) {
                heads.promotions.insert(tier.to_string(), head.oid());
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
            let known = format!("refs/remotes/origin/{branch}");
            // Most syncs find the branch where the last one left it: reading the ref costs less
            // than libgit2's write, which creates a lock file even to find the value unchanged.
            if self.repo().refname_to_id(&known).is_ok_and(|at| at == head) {
                return Ok(());
            }
            return self.repo().reference(&known, head, true, "shopset: known head").map(|_| ()).map_err(|e| {
                GitError::Cache { path: self.repo().path().to_path_buf(), detail: e.message().to_string() }
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
        // Nothing reads FETCH_HEAD in a cache, and writing it is a file to create at every fetch.
        opts.update_fetchhead(false);
        remote.fetch(&refspecs, Some(&mut opts), None).map_err(|e| self.git_error(e))?;
        self.keep_packs_few();
        Ok(())
    }

    /// Merges the cache's packs when a fetch or a render left too many (see [`packs`]). Called
    /// under the URL's lock, so two merges of one cache never run at once. A failed merge removes
    /// nothing and is only a warning: the cache stays correct, just slower.
    fn keep_packs_few(&self) {
        if let Err(e) = packs::merge_when_many(self.repo(), packs::PACK_LIMIT) {
            tracing::warn!(url = %self.url, error = %e.message(), "cannot merge the cache's packs");
        }
    }

    /// Pushes updates, each only if the remote branch still has its expected value.
    pub fn push(&self, updates: &[RefUpdate]) -> Result<(), GitError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut remote = self.repo().remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        // A push refspec's source may be a commit id, as in `git push origin <id>:refs/heads/x`:
        // no scratch ref to write and delete for each push (files, which a busy file system makes
        // dear to create).
        let refspecs: Vec<String> = updates
            .iter()
            .map(|u| match u.new.is_zero() {
                true => format!(":{}", full_ref(&u.branch)),
                false => format!("{}{}:{}", if u.force { "+" } else { "" }, u.new, full_ref(&u.branch)),
            })
            .collect();
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
                let Some(dst) = p.dst_refname().ok() else { continue };
                let Some(u) = updates.iter().find(|u| full_ref(&u.branch) == dst) else { continue };
                let branch = u.branch.as_str();
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
        // Connected first, so the heads the server advertised can be narrowed before the push
        // reads them; the push then goes over this same connection.
        let result = remote.connect_auth(Direction::Push, Some(self.callbacks()), None).and_then(|mut conn| {
            let keep = self.pack_bases(updates);
            narrow_advertised_heads(conn.remote(), |name, oid| keep(name, oid))?;
            conn.remote().push(&refspecs, Some(&mut opts))
        });
        drop(opts);
        if let Some(err) = broken.borrow_mut().take() {
            return Err(err);
        }
        if let Some(err) = self.refusal(updates, rejected.borrow_mut().drain(..).next(), &remote_said.borrow()) {
            return Err(err);
        }
        match result {
            Ok(()) => {
                // Renders of 100 objects or more were written as packs of their own.
                self.keep_packs_few();
                Ok(())
            }
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

    /// The error of a push the server refused (`refused`: the first branch it refused and why;
    /// `said`: what it printed on the way), if it refused one.
    fn refusal(&self, updates: &[RefUpdate], refused: Option<(String, String)>, said: &[u8]) -> Option<GitError> {
        let (branch, reason) = refused?;
        let is_lease = |reason: &str| {
            reason.contains("fetch first") || reason.contains("non-fast-forward") || reason.contains("stale")
        };
        // A writer that moved the branch after the server advertised it, before our update
        // landed: git refuses the update with "cannot lock ref ...: is at X but expected Y"
        // (its own words, on the side band). That is the same lost race as a non-fast-forward.
        let said = String::from_utf8_lossy(said);
        if is_lease(&reason) || said.contains("but expected") {
            let expected = updates.iter().find(|u| u.branch == branch).and_then(|u| u.expected);
            return Some(GitError::LeaseBroken {
                url: self.url.clone(),
                branch,
                expected: expected.map_or("no branch".into(), |o| o.to_string()),
                found: format!("another commit ({reason})"),
            });
        }
        let said = said.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        let reason = if said.is_empty() { reason } else { format!("{reason} (the server said: {said})") };
        Some(GitError::Rejected { url: self.url.clone(), branch, reason })
    }

    /// Pushes `update`, a commit whose only parent is `update.expected`, with `pack`: the commit
    /// and the objects its tree has that its parent's lacks ([`Committed::pack`]). The cost follows
    /// what the sync wrote, not the size of the branch (libgit2's push walks the whole tree it builds
    /// on; see [`super::receive_pack`]). Over a transport that client does not speak (a local
    /// path), libgit2 pushes.
    pub fn push_pack(&self, update: &RefUpdate, pack: &[u8]) -> Result<(), GitError> {
        let (Some(transport), Some(expected)) = (Transport::of(&self.url), update.expected) else {
            return self.push(std::slice::from_ref(update));
        };
        let refname = full_ref(&update.branch);
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut remote = self.repo().remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
        let callbacks = self.callbacks();
        let mut found = None;
        let lease_holds = |advertised: &[(String, Oid)]| {
            found = advertised.iter().find(|(name, _)| *name == refname).map(|(_, oid)| *oid);
            found == Some(expected)
        };
        let command = receive_pack::Command { old: expected, new: update.new, refname: &refname };
        let report = receive_pack::push(&mut remote, &self.url, transport, &callbacks, lease_holds, &[command], pack)
            .map_err(|e| self.git_error(e))?;
        drop(callbacks);
        let Some(report) = report else {
            return Err(GitError::LeaseBroken {
                url: self.url.clone(),
                branch: update.branch.clone(),
                expected: expected.to_string(),
                found: found.map_or("no branch".into(), |o| o.to_string()),
            });
        };
        let refused = match &report.unpack {
            Err(why) => Some((update.branch.clone(), format!("the server could not unpack the pack: {why}"))),
            Ok(()) => report
                .refs
                .iter()
                .find_map(|(name, reason)| Some((name.trim_start_matches("refs/heads/").to_string(), reason.clone()?))),
        };
        if let Some(err) = self.refusal(std::slice::from_ref(update), refused, &report.said) {
            return Err(err);
        }
        if !report.refs.iter().any(|(name, _)| *name == refname) {
            return Err(GitError::Rejected {
                url: self.url.clone(),
                branch: update.branch.clone(),
                reason: "the server did not report on the branch".into(),
            });
        }
        Ok(())
    }

    /// Which advertised heads a push of `updates` builds its pack against: the refs it updates,
    /// the commits it pushes and their parents. See [`narrow_advertised_heads`].
    fn pack_bases<'u>(&self, updates: &'u [RefUpdate]) -> impl Fn(&str, Oid) -> bool + use<'u> {
        let mut bases: std::collections::HashSet<Oid> = std::collections::HashSet::new();
        for u in updates.iter().filter(|u| !u.new.is_zero()) {
            bases.insert(u.new);
            if let Some(e) = u.expected {
                bases.insert(e);
            }
            if let Ok(commit) = self.repo().find_commit(u.new) {
                bases.extend(commit.parent_ids());
            }
        }
        move |name: &str, oid: Oid| bases.contains(&oid) || updates.iter().any(|u| full_ref(&u.branch) == name)
    }

    /// Fetches one ref that is not a branch (a promotion marker) and returns its value.
    pub fn fetch_ref(&self, refname: &str) -> Result<Oid, GitError> {
        {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut remote = self.repo().remote_anonymous(&self.url).map_err(|e| GitError::from_git(&self.url, e))?;
            let mut opts = FetchOptions::new();
            opts.remote_callbacks(self.callbacks());
            opts.download_tags(git2::AutotagOption::None);
            opts.update_fetchhead(false);
            let refspec = format!("+{refname}:refs/shopset/fetched/{refname}");
            remote.fetch(&[refspec], Some(&mut opts), None).map_err(|e| self.git_error(e))?;
            self.keep_packs_few();
        }
        self.repo()
            .refname_to_id(&format!("refs/shopset/fetched/{refname}"))
            .map_err(|e| GitError::Other { url: self.url.clone(), detail: format!("{refname}: {}", e.message()) })
    }

    /// The message of a cached commit.
    pub fn commit_message(&self, commit: Oid) -> Option<String> {
        self.repo().find_commit(commit).ok().and_then(|c| c.message().ok().map(str::to_string))
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
    pub fn write_hashed(&self, tree: &HashedTree) -> Result<Oid, GitError> {
        tree.write(self.repo()).map_err(|e| self.cache_error(e))
    }

    /// Writes a commit of `tree` on `parent` and the objects it adds to `base` (the stored tree of
    /// `parent`) as one pack ([`HashedTree::commit_on`]), then keeps the cache's packs few.
    pub fn commit_hashed(
        &self,
        tree: &HashedTree,
        base: Option<Oid>,
        parent: Option<Oid>,
        message: &str,
        author: &git2::Signature<'_>,
    ) -> Result<Committed, GitError> {
        let committed = tree.commit_on(self.repo(), base, parent, message, author).map_err(|e| self.cache_error(e))?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.keep_packs_few();
        Ok(committed)
    }

    /// The paths that differ between the stored tree `old` and `new`, reading only differing subtrees.
    pub fn changes(&self, old: Option<Oid>, new: &HashedTree) -> Result<Vec<Change>, GitError> {
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
                        out.entries.insert(path.into(), Entry::file(blob.content()));
                    }
                    Err(e) => {
                        failure = Some(e);
                        return git2::TreeWalkResult::Abort;
                    }
                },
                Some(ObjectType::Commit) => {
                    out.entries.insert(path.into(), Entry::Gitlink(entry.id().to_string()));
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

/// Forgets, for the push about to run on `remote` (connected), every advertised head but those
/// `keep` names (by ref name and value).
///
/// libgit2 builds a push's pack by hiding every advertised head the cache also holds and, before
/// anything else, reading the whole tree of each of them to mark what the server has: with one
/// system branch per tier in one cache, a push of one changed ShopSet read every tree of every tier
/// (10,000 directories in a fleet of 10,000 ShopSets, most of the cost of such a change). The pack
/// needs only the commits it is built on (the pushed commits' parents) hidden: what else the server
/// has is at most sent again, and it keeps one copy. libgit2 skips heads whose id is zero, so those
/// are set to zero in the advertisement it keeps for this connection (the list it hands out is that
/// same memory); the refs a push updates keep their value, as the commands sent carry it.
fn narrow_advertised_heads(remote: &mut git2::Remote<'_>, keep: impl Fn(&str, Oid) -> bool) -> Result<(), git2::Error> {
    use git2::Binding;
    let mut heads: *mut *const libgit2_sys::git_remote_head = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: a connected remote; libgit2 returns its transport's array of heads, valid until the
    // remote disconnects or connects again, which nothing does before the push that reads it.
    let rc = unsafe { libgit2_sys::git_remote_ls(&mut heads, &mut len, remote.raw()) };
    if rc < 0 {
        return Err(git2::Error::last_error(rc));
    }
    for i in 0..len {
        // SAFETY: `len` valid pointers to heads the transport allocated and owns (mutable memory
        // handed out as const); nothing else reads them while this loop runs.
        unsafe {
            let head = (*heads.add(i)).cast_mut();
            if head.is_null() || (*head).name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr((*head).name).to_string_lossy();
            let Ok(oid) = Oid::from_bytes(&(*head).oid.id) else { continue };
            if !keep(&name, oid) {
                (*head).oid.id.fill(0);
            }
        }
    }
    Ok(())
}

/// `refs/heads/<branch>`, or the name itself when it is a full ref name.
fn full_ref(name: &str) -> String {
    if name.starts_with("refs/") { name.to_string() } else { format!("refs/heads/{name}") }
}
