//! A rendered tree hashed in memory, as git would hash it, before anything is written.
//!
//! Equal ids mean equal content, so a sync compares the render with the branch by ids: it reads
//! only the subtrees whose ids differ and writes only the objects the repository lacks. The cost of
//! a sync then grows with what changed, not with the number of ShopSets.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use git2::{ObjectType, Odb, Oid, Repository};

use shopset_core::render::Edits;
use shopset_core::tree::{Entry, Tree};

use super::packfile;

/// Git file modes of the entries a render writes.
pub const MODE_FILE: i32 = 0o100644;
pub const MODE_DIR: i32 = 0o040000;
pub const MODE_GITLINK: i32 = 0o160000;

/// An object with its bytes, as a tree holds it: type, id, bytes.
pub type Object<'a> = (ObjectType, Oid, &'a [u8]);

/// From this many new objects on, they are written as one pack instead of loose files: creating
/// thousands of small files costs more than everything else in a first render (git's own
/// `transfer.unpackLimit` draws the same line at 100).
const PACK_THRESHOLD: usize = 100;

/// Writes objects as one pack and its index ([`packfile`]), each object once.
fn write_pack<'o>(repo: &Repository, objects: impl IntoIterator<Item = Object<'o>>) -> Result<Vec<u8>, git2::Error> {
    let mut seen = std::collections::HashSet::new();
    let (mut ids, mut whole) = (Vec::new(), Vec::new());
    for (kind, id, bytes) in objects {
        if seen.insert(id) {
            ids.push(id);
            whole.push((kind, bytes));
        }
    }
    let built = packfile::build(&whole)?;
    packfile::store_indexed(repo, &built.bytes, &ids, &built.entries)?;
    Ok(built.bytes)
}

/// Whether the object is stored. Without the flag, every miss rescans the pack directory, which
/// made the check cost more than the write for a new branch.
fn stored(odb: &Odb<'_>, id: Oid) -> bool {
    odb.exists_ext(id, git2::OdbLookupFlags::NO_REFRESH)
}

fn check_written(hashed: Oid, written: Oid) -> Result<(), git2::Error> {
    if hashed == written {
        Ok(())
    } else {
        Err(git2::Error::from_str(&format!("object hashed as {hashed} was stored as {written}")))
    }
}

/// What was hashed for one branch the last time, kept between its syncs: the hash of one render
/// ([`Edits::render`]). The next render, edited from that one, names the paths it wrote or
/// removed, and only the directories on their way are hashed again: hashing a render costs what
/// changed, with no pass over the paths of the tier.
#[derive(Debug, Default)]
pub struct LastHash {
    last: Option<(u64, Dir)>,
}

/// A [`Tree`] with the id of every blob and subtree.
#[derive(Debug)]
pub struct HashedTree {
    root: Dir,
}

/// A directory: its entries, their ids, and its own. Shared between the hash of one sync and the
/// next where nothing under it changed.
#[derive(Debug, Default, Clone)]
struct Dir {
    id: Option<Oid>,
    /// The tree object, as it is stored.
    object: Arc<[u8]>,
    entries: BTreeMap<Arc<str>, Node>,
    /// Entries of the branch kept as they are (paths ShopSet does not own; root only): name as
    /// stored, mode and id, already in the repository they were read from.
    kept: Vec<(Vec<u8>, i32, Oid)>,
}

#[derive(Debug, Clone)]
enum Node {
    Blob(Oid, Arc<[u8]>),
    Gitlink(Oid),
    Dir(Arc<Dir>),
}

impl Node {
    fn mode_id(&self) -> (i32, Oid) {
        match self {
            Node::Blob(id, _) => (MODE_FILE, *id),
            Node::Gitlink(id) => (MODE_GITLINK, *id),
            // invariant: every Dir gets its id in `Dir::hash` before a HashedTree is returned.
            Node::Dir(d) => (MODE_DIR, d.id.unwrap_or(Oid::ZERO_SHA1)),
        }
    }

    /// Whether this node is `entry` (shared bytes are, without a look).
    fn holds(&self, entry: &Entry) -> bool {
        match (self, entry) {
            (Node::Blob(_, held), Entry::File(bytes)) => Arc::ptr_eq(held, bytes) || held[..] == bytes[..],
            (Node::Gitlink(id), Entry::Gitlink(hex)) => Oid::from_str(hex).is_ok_and(|o| o == *id),
            _ => false,
        }
    }

    /// The node of a tree entry, hashing a file.
    fn of(entry: &Entry) -> Result<Node, git2::Error> {
        Ok(match entry {
            Entry::File(bytes) => Node::Blob(object_id("blob", bytes)?, bytes.clone()),
            Entry::Gitlink(hex) => Node::Gitlink(Oid::from_str(hex)?),
        })
    }
}

/// The id git gives an object of `kind` with these bytes. Hashed here rather than by libgit2,
/// whose SHA-1 guards against collision attacks at several times the cost: the ids are the same,
/// and what a sync hashes grows with the directories a change touches (two of them list every
/// ShopSet of the tier). libgit2 checks each id again when it stores the object.
fn object_id(kind: &str, bytes: &[u8]) -> Result<Oid, git2::Error> {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("{kind} {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    Oid::from_bytes(&hasher.finalize())
}

/// A commit written by [`HashedTree::commit_on`].
#[derive(Debug)]
pub struct Committed {
    pub commit: Oid,
    /// The pack of the commit and the objects its tree has that its base lacks, when it was
    /// written on a base: what a push of it on a commit of that base sends.
    pub pack: Option<Vec<u8>>,
}

/// The bytes of a commit object as libgit2 writes them, the author its committer too.
fn commit_object(tree: Oid, parent: Option<Oid>, author: &git2::Signature<'_>, message: &str) -> Vec<u8> {
    let when = author.when();
    let offset = when.offset_minutes();
    let sign = if offset < 0 || when.sign() == '-' { '-' } else { '+' };
    let (hours, minutes) = (offset.abs() / 60, offset.abs() % 60);
    // libgit2 writes the time as an unsigned 32-bit number.
    let time = format!("> {} {sign}{hours:02}{minutes:02}\n", when.seconds() as u32);
    // Name and email as bytes: a signature need not be UTF-8.
    let signature = |header: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(author.name_bytes());
        out.extend_from_slice(b" <");
        out.extend_from_slice(author.email_bytes());
        out.extend_from_slice(time.as_bytes());
    };
    let mut out = format!("tree {tree}\n").into_bytes();
    if let Some(parent) = parent {
        out.extend_from_slice(format!("parent {parent}\n").as_bytes());
    }
    signature("author ", &mut out);
    signature("committer ", &mut out);
    out.push(b'\n');
    out.extend_from_slice(message.as_bytes());
    out
}

/// One path that differs between a tree in the repository and a render: its mode and id before
/// (None: added) and after (None: removed). Directories are never listed, only what is in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub old: Option<(i32, Oid)>,
    pub new: Option<(i32, Oid)>,
}

impl HashedTree {
    /// Hashes every file and directory of `tree`. Fails only on a gitlink that is not an object id.
    pub fn new(tree: &Tree) -> Result<Self, git2::Error> {
        Self::afresh(tree).map(|(root, _)| Self { root })
    }

    /// [`HashedTree::new`] for `tree`, a render with `edits`: started from the hash `known` keeps
    /// when `tree` was edited from that very render, afresh otherwise. Leaves this hash in `known`
    /// for the next time.
    pub fn with_edits(tree: &Tree, edits: &Edits, known: &mut LastHash) -> Result<Self, git2::Error> {
        // Taken out: a hash that fails leaves nothing to start from, and the next one is afresh.
        let edited = match known.last.take() {
            Some((render, root)) if edits.from == Some(render) => Self::edit(root, tree, &edits.paths)?,
            _ => None,
        };
        let (root, editable) = match edited {
            Some(root) => (root, true),
            None => Self::afresh(tree)?,
        };
        if editable {
            known.last = Some((edits.render, root.clone()));
        }
        Ok(Self { root })
    }

    /// The hash of `tree` from nothing, and whether it can be edited later: not when a path of it
    /// is both a file and a directory (the file, inserted first, wins).
    fn afresh(tree: &Tree) -> Result<(Dir, bool), git2::Error> {
        let mut root = Dir::default();
        let mut editable = true;
        for (path, entry) in &tree.entries {
            editable &= root.put(path, Node::of(entry)?);
        }
        root.hash()?;
        Ok((root, editable))
    }

    /// The hash of `tree` made from `root`, the hash of the render it was edited from, where only
    /// `paths` may differ. None when the edits meet a path that is both a file and a directory,
    /// which only a hash afresh settles as it always has.
    fn edit(mut root: Dir, tree: &Tree, paths: &[Arc<str>]) -> Result<Option<Dir>, git2::Error> {
        let mut put = Vec::new();
        // Removed first: a file that becomes a directory, or the reverse, finds its place free.
        for path in paths {
            match (tree.entries.get(path), root.find(path)) {
                (Some(entry), _) => put.push((path, entry)),
                (None, None) => {}
                (None, Some(Node::Dir(_))) => return Ok(None),
                (None, Some(_)) => {
                    root.remove(path);
                }
            }
        }
        for (path, entry) in put {
            // Written again as it was (every render writes the gitlinks and .gitmodules): with
            // nothing changed, nothing is hashed again and the root keeps its id.
            if root.find(path).is_some_and(|node| node.holds(entry)) {
                continue;
            }
            if !root.put(path, Node::of(entry)?) {
                return Ok(None);
            }
        }
        root.hash()?;
        Ok(Some(root))
    }

    /// Takes the root entries of the stored tree `branch` (None: none) whose names `owned` does
    /// not claim, as they are, in place of those taken before: the tree then holds every path of the
    /// branch outside ShopSet's own. Only the root tree is read and hashed again (ShopSet's paths are
    /// all at the root), so this costs the same whatever the number of files.
    pub fn keep_unowned(
        &mut self,
        repo: &Repository,
        branch: Option<Oid>,
        owned: impl Fn(&str) -> bool,
    ) -> Result<(), git2::Error> {
        self.root.kept.clear();
        if let Some(tree) = branch.map(|id| repo.find_tree(id)).transpose()? {
            for entry in tree.iter() {
                // A name that is not UTF-8 cannot be one of ShopSet's: a person's, kept.
                let name = std::str::from_utf8(entry.name_bytes()).ok();
                if name.is_some_and(|n| owned(n) || self.root.entries.contains_key(n)) {
                    continue;
                }
                self.root.kept.push((entry.name_bytes().to_vec(), entry.filemode(), entry.id()));
            }
        }
        self.root.serialize()?;
        Ok(())
    }

    /// The root tree id.
    pub fn id(&self) -> Oid {
        self.root.tree_id()
    }

    /// Mode and id of the file, gitlink or directory at `path` (`shopsets/a` is a directory).
    pub fn get(&self, path: &str) -> Option<(i32, Oid)> {
        self.root.find(path).map(Node::mode_id)
    }

    /// Writes the objects `repo` lacks and returns the root tree id. A subtree already present is
    /// skipped whole: a stored tree implies everything under it is stored.
    pub fn write(&self, repo: &Repository) -> Result<Oid, git2::Error> {
        self.write_on(repo, None)
    }

    /// [`HashedTree::write`] of a tree that replaces the stored tree `base`: what has the id it has
    /// at the same path in `base` is stored already, and is not looked up (a render that changed one
    /// ShopSet asks the object store about that ShopSet only, not about every one).
    pub fn write_on(&self, repo: &Repository, base: Option<Oid>) -> Result<Oid, git2::Error> {
        let odb = repo.odb()?;
        let mut missing = Vec::new();
        let base = base.map(|id| repo.find_tree(id)).transpose()?;
        self.root.missing(repo, base.as_ref(), &|id| stored(&odb, id), &mut missing)?;
        if missing.len() >= PACK_THRESHOLD {
            write_pack(repo, missing.iter().copied())?;
        } else {
            for (kind, id, bytes) in &missing {
                check_written(*id, odb.write(*kind, bytes)?)?;
            }
        }
        if !odb.exists(self.id()) {
            return Err(git2::Error::from_str(&format!("tree {} is missing after it was written", self.id())));
        }
        Ok(self.id())
    }

    /// Writes a commit of this tree on `parent` with its message and author (also its committer),
    /// and the objects of the tree that the stored tree `base` lacks at the same paths (with no
    /// `base`: those the object store lacks), as one pack: a file or two to create for a sync,
    /// where loose objects are a file each (and creating files is what a busy file system makes
    /// dear). The pack returned is what a push of the commit on a commit of `base` sends: an object
    /// written again beside a stored copy is harmless, so nothing is looked up to leave it out.
    pub fn commit_on(
        &self,
        repo: &Repository,
        base: Option<Oid>,
        parent: Option<Oid>,
        message: &str,
        author: &git2::Signature<'_>,
    ) -> Result<Committed, git2::Error> {
        let odb = repo.odb()?;
        let bytes = commit_object(self.id(), parent, author, message);
        let commit = object_id("commit", &bytes)?;
        let mut tree = Vec::new();
        match base {
            Some(base) => self.root.missing(repo, Some(&repo.find_tree(base)?), &|_| false, &mut tree)?,
            None => self.root.missing(repo, None, &|id| stored(&odb, id), &mut tree)?,
        }
        let pack =
            write_pack(repo, std::iter::once((ObjectType::Commit, commit, &bytes[..])).chain(tree.iter().copied()))?;
        if !odb.exists_ext(commit, git2::OdbLookupFlags::NO_REFRESH) {
            return Err(git2::Error::from_str(&format!("commit {commit} is missing after it was written")));
        }
        Ok(Committed { commit, pack: base.map(|_| pack) })
    }

    /// The paths that differ between the stored tree `old` (None: nothing) and this one, sorted.
    /// Only subtrees whose ids differ are read.
    pub fn changes(&self, repo: &Repository, old: Option<Oid>) -> Result<Vec<Change>, git2::Error> {
        let mut out = Vec::new();
        let old = old.map(|id| repo.find_tree(id)).transpose()?;
        diff_dir(repo, old.as_ref(), Some(&NewDir::Rendered(&self.root)), "", &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

impl Dir {
    /// The node at `path`.
    fn find(&self, path: &str) -> Option<&Node> {
        let mut dir = self;
        let mut parts = path.split('/').peekable();
        while let Some(part) = parts.next() {
            let node = dir.entries.get(part)?;
            if parts.peek().is_none() {
                return Some(node);
            }
            match node {
                Node::Dir(d) => dir = d,
                _ => return None,
            }
        }
        None
    }

    /// Puts `node` at `path`, replacing what is there, and marks the directories on the way for
    /// hashing again. False (and nothing put) where a file and a directory of one name meet.
    fn put(&mut self, path: &str, node: Node) -> bool {
        self.id = None;
        match path.split_once('/') {
            Some((head, rest)) => {
                if !self.entries.contains_key(head) {
                    self.entries.insert(Arc::from(head), Node::Dir(Arc::default()));
                }
                match self.entries.get_mut(head) {
                    Some(Node::Dir(d)) => Arc::make_mut(d).put(rest, node),
                    _ => false,
                }
            }
            None => match self.entries.get_mut(path) {
                Some(Node::Dir(_)) => false,
                Some(slot) => {
                    *slot = node;
                    true
                }
                None => {
                    self.entries.insert(Arc::from(path), node);
                    true
                }
            },
        }
    }

    /// Removes the entry at `path`, and the directories that leaves empty (git has no empty
    /// trees); returns whether this one is empty now.
    fn remove(&mut self, path: &str) -> bool {
        self.id = None;
        match path.split_once('/') {
            Some((head, rest)) => {
                if let Some(Node::Dir(d)) = self.entries.get_mut(head)
                    && Arc::make_mut(d).remove(rest)
                {
                    self.entries.remove(head);
                }
            }
            None => {
                self.entries.remove(path);
            }
        }
        self.entries.is_empty()
    }

    fn tree_id(&self) -> Oid {
        self.id.unwrap_or(Oid::ZERO_SHA1)
    }

    /// Computes the ids bottom-up where they are missing: a directory that kept its id kept its
    /// entries.
    fn hash(&mut self) -> Result<Oid, git2::Error> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        for node in self.entries.values_mut() {
            if let Node::Dir(d) = node
                && d.id.is_none()
            {
                Arc::make_mut(d).hash()?;
            }
        }
        self.serialize()
    }

    /// Serializes this tree object from the ids of its entries (computed already) and hashes it.
    fn serialize(&mut self) -> Result<Oid, git2::Error> {
        let rendered = self.entries.iter().map(|(name, node)| {
            let (mode, id) = node.mode_id();
            (name.as_bytes(), mode, id)
        });
        let kept = self.kept.iter().map(|(name, mode, id)| (name.as_slice(), *mode, *id));
        let mut sorted: Vec<(&[u8], i32, Oid)> = rendered.chain(kept).collect();
        // git orders a directory as if its name ended in '/'.
        fn key<'n>(name: &'n [u8], mode: i32) -> impl Iterator<Item = u8> + 'n {
            name.iter().copied().chain((mode == MODE_DIR).then_some(b'/'))
        }
        sorted.sort_by(|a, b| key(a.0, a.1).cmp(key(b.0, b.1)));
        let mut object = Vec::with_capacity(sorted.iter().map(|(name, _, _)| name.len() + 28).sum());
        for (name, mode, id) in sorted {
            match mode {
                MODE_FILE => object.extend_from_slice(b"100644 "),
                MODE_DIR => object.extend_from_slice(b"40000 "),
                MODE_GITLINK => object.extend_from_slice(b"160000 "),
                other => object.extend_from_slice(format!("{other:o} ").as_bytes()),
            }
            object.extend_from_slice(name);
            object.push(0);
            object.extend_from_slice(id.as_bytes());
        }
        let id = object_id("tree", &object)?;
        self.object = object.into();
        self.id = Some(id);
        Ok(id)
    }

    /// The objects of this directory that `base` (the stored tree at its path, if any) lacks at the
    /// same paths and `stored` does not vouch for, children before parents. The entries kept from
    /// the branch are `base`'s own: nothing of theirs is new.
    fn missing<'s>(
        &'s self,
        repo: &Repository,
        base: Option<&git2::Tree<'_>>,
        stored: &dyn Fn(Oid) -> bool,
        out: &mut Vec<Object<'s>>,
    ) -> Result<(), git2::Error> {
        if base.is_some_and(|b| b.id() == self.tree_id()) || stored(self.tree_id()) {
            return Ok(());
        }
        for (name, node) in &self.entries {
            let was = base.and_then(|b| b.get_name(name)).map(|e| (e.id(), e.kind()));
            match node {
                Node::Blob(id, _) if was.is_some_and(|(w, _)| w == *id) => {}
                Node::Blob(id, bytes) if !stored(*id) => out.push((ObjectType::Blob, *id, bytes)),
                Node::Dir(d) => {
                    let sub = match was {
                        Some((w, _)) if w == d.tree_id() => continue,
                        Some((w, Some(ObjectType::Tree))) => Some(repo.find_tree(w)?),
                        _ => None,
                    };
                    d.missing(repo, sub.as_ref(), stored, out)?
                }
                Node::Blob(..) | Node::Gitlink(_) => {}
            }
        }
        out.push((ObjectType::Tree, self.tree_id(), &self.object[..]));
        Ok(())
    }
}

/// The new side of a directory compared: rendered (with what it keeps of the branch), or a stored
/// tree (a kept directory, or one under it).
enum NewDir<'n, 'r> {
    Rendered(&'n Dir),
    Stored(git2::Tree<'r>),
}

fn diff_dir<'r>(
    repo: &'r Repository,
    old: Option<&git2::Tree<'_>>,
    new: Option<&NewDir<'_, 'r>>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<(), git2::Error> {
    // Both sides sorted by name and paired in one pass: a directory of 1,000 ShopSets where one
    // changed costs a comparison per name, and only the names that differ are written out.
    let stored: Vec<git2::TreeEntry<'_>> = old.into_iter().flat_map(|t| t.iter()).collect();
    let mut was: Vec<(&[u8], i32, Oid)> = stored.iter().map(|e| (e.name_bytes(), e.filemode(), e.id())).collect();
    was.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let new_stored: Vec<git2::TreeEntry<'_>> = match new {
        Some(NewDir::Stored(t)) => t.iter().collect(),
        _ => Vec::new(),
    };
    let mut now: Vec<(&[u8], i32, Oid, Option<&Dir>)> = match new {
        Some(NewDir::Rendered(d)) => d
            .entries
            .iter()
            .map(|(name, node)| {
                let (mode, id) = node.mode_id();
                let dir = match node {
                    Node::Dir(d) => Some(&**d),
                    _ => None,
                };
                (name.as_bytes(), mode, id, dir)
            })
            .chain(d.kept.iter().map(|(name, mode, id)| (name.as_slice(), *mode, *id, None)))
            .collect(),
        Some(NewDir::Stored(_)) => new_stored.iter().map(|e| (e.name_bytes(), e.filemode(), e.id(), None)).collect(),
        None => Vec::new(),
    };
    now.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let (mut i, mut j) = (0, 0);
    while i < was.len() || j < now.len() {
        let order = match (was.get(i), now.get(j)) {
            (Some(o), Some(n)) => o.0.cmp(n.0),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        let (name, o, n) = match order {
            Ordering::Less => {
                i += 1;
                (was[i - 1].0, Some((was[i - 1].1, was[i - 1].2)), None)
            }
            Ordering::Greater => {
                j += 1;
                let (name, mode, id, dir) = now[j - 1];
                (name, None, Some((mode, id, dir)))
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
                let (name, mode, id, dir) = now[j - 1];
                (name, Some((was[i - 1].1, was[i - 1].2)), Some((mode, id, dir)))
            }
        };
        let nm = n.map(|(mode, id, _)| (mode, id));
        if o == nm {
            continue;
        }
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        let old_dir = match o {
            Some((MODE_DIR, id)) => Some(repo.find_tree(id)?),
            _ => None,
        };
        let new_dir = match n {
            Some((_, _, Some(d))) => Some(NewDir::Rendered(d)),
            Some((MODE_DIR, id, None)) => Some(NewDir::Stored(repo.find_tree(id)?)),
            _ => None,
        };
        if old_dir.is_some() || new_dir.is_some() {
            diff_dir(repo, old_dir.as_ref(), new_dir.as_ref(), &format!("{path}/"), out)?;
        }
        let o_file = o.filter(|(m, _)| *m != MODE_DIR);
        let n_file = nm.filter(|(m, _)| *m != MODE_DIR);
        if o_file.is_some() || n_file.is_some() {
            out.push(Change { path, old: o_file, new: n_file });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of these files.
    pub(super) fn files(files: &[(&str, &str)]) -> Tree {
        let mut t = Tree::default();
        for (p, c) in files {
            t.entries.insert(p.to_string().into(), Entry::file(c.as_bytes()));
        }
        t
    }

    /// A tree of these files and the `base` gitlink.
    fn tree(files_: &[(&str, &str)]) -> Tree {
        let mut t = files(files_);
        t.entries.insert("base".into(), Entry::Gitlink("1111111111111111111111111111111111111111".into()));
        t
    }

    /// A tree and the next one: a file changed, one added with bytes the first has elsewhere, a
    /// file become a directory, a file added.
    pub(super) fn base_and_next() -> (Tree, Tree) {
        let old = files(&[("shopsets/a/k.yaml", "1\n"), ("shopsets/b/k.yaml", "2\n"), ("x", "file, then a dir\n")]);
        let new = files(&[
            ("shopsets/a/k.yaml", "1\n"),
            ("shopsets/b/k.yaml", "2, changed\n"),
            ("shopsets/c/k.yaml", "2\n"),
            ("x/y", "1\n"),
            ("z", "new\n"),
        ]);
        (old, new)
    }

    /// The names of the entries under `id` (a stored tree) the object store lacks.
    pub(super) fn unstored(repo: &Repository, id: Oid) -> Vec<String> {
        let mut missing = Vec::new();
        repo.find_tree(id)
            .expect("root")
            .walk(git2::TreeWalkMode::PreOrder, |_, e| {
                if repo.odb().expect("odb").read_header(e.id()).is_err() {
                    missing.push(e.name().unwrap_or_default().to_string());
                }
                git2::TreeWalkResult::Ok
            })
            .expect("walk");
        missing
    }

    #[test]
    fn ids_equal_what_libgit2_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        // Names that sort differently as directories ("a-b" < "a/" < "a0") catch git's ordering.
        let t = tree(&[
            ("a-b", "1\n"),
            ("a/x.yaml", "2\n"),
            ("a0", "3\n"),
            ("shopsets/s/k.yaml", "4\n"),
            ("README.md", "5\n"),
        ]);
        let hashed = HashedTree::new(&t).expect("hash");
        // The reference: libgit2's own tree builder.
        fn build(repo: &Repository, t: &Tree, prefix: &str) -> Oid {
            let mut b = repo.treebuilder(None).expect("builder");
            let mut dirs = std::collections::BTreeSet::new();
            for (p, e) in &t.entries {
                let Some(rest) = p.strip_prefix(prefix) else {
                    continue;
                };
                match rest.split_once('/') {
                    Some((d, _)) => {
                        dirs.insert(d.to_string());
                    }
                    None => match e {
                        Entry::File(bytes) => {
                            b.insert(rest, repo.blob(bytes).expect("blob"), MODE_FILE).expect("insert");
                        }
                        Entry::Gitlink(h) => {
                            b.insert(rest, Oid::from_str(h).expect("oid"), MODE_GITLINK).expect("insert");
                        }
                    },
                }
            }
            for d in dirs {
                let id = build(repo, t, &format!("{prefix}{d}/"));
                b.insert(&d, id, MODE_DIR).expect("insert");
            }
            b.write().expect("write")
        }
        let expected = build(&repo, &t, "");
        assert_eq!(hashed.id(), expected);
        let dir2 = tempfile::tempdir().expect("tempdir");
        let repo2 = Repository::init_bare(dir2.path()).expect("init");
        assert_eq!(hashed.write(&repo2).expect("write"), expected);
        assert!(repo2.find_tree(expected).is_ok());
    }

    #[test]
    fn changes_list_files_that_differ_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let old = tree(&[
            ("shopsets/a/k.yaml", "1\n"),
            ("shopsets/b/k.yaml", "2\n"),
            ("shopsets/c/k.yaml", "3\n"),
            ("x", "dir later\n"),
        ]);
        let old_id = HashedTree::new(&old).expect("hash").write(&repo).expect("write");
        let new = tree(&[
            ("shopsets/a/k.yaml", "1\n"),
            ("shopsets/b/k.yaml", "2 changed\n"),
            ("shopsets/d/k.yaml", "4\n"),
            ("x/y", "now a dir\n"),
        ]);
        let hashed = HashedTree::new(&new).expect("hash");
        let changes = hashed.changes(&repo, Some(old_id)).expect("changes");
        let summary: Vec<(&str, bool, bool)> =
            changes.iter().map(|c| (c.path.as_str(), c.old.is_some(), c.new.is_some())).collect();
        assert_eq!(
            summary,
            vec![
                ("shopsets/b/k.yaml", true, true),
                ("shopsets/c/k.yaml", true, false),
                ("shopsets/d/k.yaml", false, true),
                ("x", true, false),
                ("x/y", false, true)
            ]
        );
        assert!(hashed.changes(&repo, Some(hashed.write(&repo).expect("write"))).expect("changes").is_empty());
        assert_eq!(hashed.get("shopsets/a").map(|(m, _)| m), Some(MODE_DIR));
        assert_eq!(hashed.get("base").map(|(m, _)| m), Some(MODE_GITLINK));
        assert_eq!(hashed.get("shopsets/zzz"), None);
    }

    #[test]
    fn unowned_root_entries_of_the_branch_are_kept_as_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let owned = |name: &str| ["base", "shopsets", "README.md"].contains(&name);
        let branch = tree(&[
            ("shopsets/a/k.yaml", "edited by hand\n"),
            ("shopsets/stale/k.yaml", "gone\n"),
            ("NOTES.md", "notes\n"),
            (".github/CODEOWNERS", "* @ops\n"),
        ]);
        let branch_id = HashedTree::new(&branch).expect("hash").write(&repo).expect("write");
        let render = tree(&[("shopsets/a/k.yaml", "1\n"), ("README.md", "r\n")]);
        let mut hashed = HashedTree::new(&render).expect("hash");
        hashed.keep_unowned(&repo, Some(branch_id), owned).expect("keep");
        // The same tree as the render with the person's files added to it.
        let mut expected = render.clone();
        for p in ["NOTES.md", ".github/CODEOWNERS"] {
            expected.entries.insert(p.to_string().into(), branch.entries[p].clone());
        }
        assert_eq!(hashed.id(), HashedTree::new(&expected).expect("hash").id());
        let changes = hashed.changes(&repo, Some(branch_id)).expect("changes");
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["README.md", "shopsets/a/k.yaml", "shopsets/stale/k.yaml"]);
        assert_eq!(hashed.write(&repo).expect("write"), hashed.id());
        // Taken again from another head: what was kept before goes.
        hashed.keep_unowned(&repo, None, owned).expect("keep");
        assert_eq!(hashed.id(), HashedTree::new(&render).expect("hash").id());
        // A kept directory compared with another version of it lists the files that differ.
        let later = tree(&[(".github/CODEOWNERS", "* @ops @dev\n"), (".github/x", "x\n")]);
        let later_id = HashedTree::new(&later).expect("hash").write(&repo).expect("write");
        hashed.keep_unowned(&repo, Some(later_id), owned).expect("keep");
        let changes = hashed.changes(&repo, Some(branch_id)).expect("changes");
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert!(paths.contains(&".github/CODEOWNERS") && paths.contains(&".github/x"), "{paths:?}");
        assert!(paths.contains(&"NOTES.md"), "not in that head, so not kept: {paths:?}");
    }
}

#[cfg(test)]
mod known_tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A tier of 20 ShopSets, a file and an Application each.
    fn twenty_shopsets() -> Tree {
        let mut t = Tree::default();
        for i in 0..20 {
            t.entries.insert(format!("shopsets/s{i:02}/k.yaml").into(), Entry::file(format!("{i}\n")));
            t.entries.insert(format!("applications/s{i:02}.yaml").into(), Entry::file(format!("app {i}\n")));
        }
        t
    }

    /// Trees hashed one after the other as a sync hashes renders: each with the edits a renderer
    /// reports from the one before (every path whose entry differs).
    #[derive(Default)]
    struct Renders {
        known: LastHash,
        last: Option<(u64, Tree)>,
        next: u64,
    }

    impl Renders {
        fn hash(&mut self, t: &Tree) -> Oid {
            self.next += 1;
            let edits = match &self.last {
                Some((from, old)) => {
                    let paths: BTreeSet<Arc<str>> = (old.entries.keys().chain(t.entries.keys()))
                        .filter(|p| old.entries.get(*p) != t.entries.get(*p))
                        .cloned()
                        .collect();
                    Edits { render: self.next, from: Some(*from), paths: paths.into_iter().collect() }
                }
                None => Edits { render: self.next, from: None, paths: Vec::new() },
            };
            self.last = Some((self.next, t.clone()));
            HashedTree::with_edits(t, &edits, &mut self.known).expect("hash").id()
        }

        fn dir(&self, path: &str) -> Arc<Dir> {
            let (_, root) = self.known.last.as_ref().expect("remembered");
            match root.find(path) {
                Some(Node::Dir(d)) => d.clone(),
                _ => panic!("no directory {path}"),
            }
        }
    }

    /// Hashing with what was remembered of earlier trees gives the ids of hashing afresh.
    #[test]
    fn remembered_files_and_directories_hash_as_afresh() {
        let mut renders = Renders::default();
        let mut t = twenty_shopsets();
        t.entries.insert("base".into(), Entry::Gitlink("1111111111111111111111111111111111111111".into()));
        let mut check = |t: &Tree| assert_eq!(renders.hash(t), HashedTree::new(t).expect("hash").id());
        check(&t);
        check(&t);
        // One file changed; one with the same bytes in a new allocation.
        t.entries.insert("shopsets/s03/k.yaml".into(), Entry::file("changed\n"));
        t.entries.insert("shopsets/s04/k.yaml".into(), Entry::file("4\n"));
        check(&t);
        // A directory gone, one added, a file added to a directory, the gitlink moved.
        t.entries.remove("shopsets/s05/k.yaml");
        t.entries.insert("shopsets/new/k.yaml".into(), Entry::file("new\n"));
        t.entries.insert("shopsets/s06/extra.yaml".into(), Entry::file("extra\n"));
        t.entries.insert("base".into(), Entry::Gitlink("2222222222222222222222222222222222222222".into()));
        check(&t);
        // Back as it was: the directory comes back with its old id.
        t.entries.insert("shopsets/s05/k.yaml".into(), Entry::file("5\n"));
        check(&t);
        // A file that becomes a directory, and back.
        t.entries.insert("x".into(), Entry::file("file\n"));
        check(&t);
        t.entries.remove("x");
        t.entries.insert("x/y".into(), Entry::file("in a directory\n"));
        check(&t);
        t.entries.remove("x/y");
        t.entries.insert("x".into(), Entry::file("file again\n"));
        check(&t);
        // A directory emptied is gone; a tree emptied is the empty tree.
        t.entries.retain(|path, _| !path.starts_with("applications/"));
        check(&t);
        t.entries.clear();
        check(&t);
    }

    /// A directory gone is forgotten, not kept empty.
    #[test]
    fn a_directory_gone_is_forgotten() {
        let mut renders = Renders::default();
        let mut t = twenty_shopsets();
        renders.hash(&t);
        t.entries.remove("shopsets/s05/k.yaml");
        renders.hash(&t);
        assert!(!renders.dir("shopsets").entries.contains_key("s05"));
    }

    /// The proof that a hash starts from the last one: what did not change is the very same
    /// directory, not one hashed again.
    #[test]
    fn unchanged_directories_are_taken_from_the_last_hash() {
        let mut renders = Renders::default();
        let mut t = twenty_shopsets();
        renders.hash(&t);
        let (apps, shopsets) = (renders.dir("applications"), renders.dir("shopsets"));
        t.entries.insert("shopsets/s03/k.yaml".into(), Entry::file("changed\n"));
        renders.hash(&t);
        assert!(Arc::ptr_eq(&apps, &renders.dir("applications")), "an unchanged directory was hashed again");
        assert!(!Arc::ptr_eq(&shopsets, &renders.dir("shopsets")), "a changed directory was not");
        let s04 = renders.dir("shopsets/s04");
        t.entries.insert("shopsets/s05/k.yaml".into(), Entry::file("changed too\n"));
        renders.hash(&t);
        assert!(Arc::ptr_eq(&s04, &renders.dir("shopsets/s04")), "an unchanged ShopSet directory was hashed again");
    }

    /// A render names paths it wrote again as they were (the gitlinks, .gitmodules): nothing on
    /// their way is hashed again.
    #[test]
    fn a_path_written_as_it_was_hashes_nothing_again() {
        let mut known = LastHash::default();
        let t = twenty_shopsets();
        let first = Edits { render: 1, from: None, paths: Vec::new() };
        let id = HashedTree::with_edits(&t, &first, &mut known).expect("hash").id();
        let shopsets = match known.last.as_ref().and_then(|(_, root)| root.find("shopsets")) {
            Some(Node::Dir(d)) => d.clone(),
            _ => panic!("no shopsets"),
        };
        // The same bytes in a new allocation, as a render writes them again.
        let mut again = t.clone();
        again.entries.insert("shopsets/s03/k.yaml".into(), Entry::file("3\n"));
        let paths = vec![Arc::from("shopsets/s03/k.yaml")];
        let second = Edits { render: 2, from: Some(1), paths };
        assert_eq!(HashedTree::with_edits(&again, &second, &mut known).expect("hash").id(), id);
        match known.last.as_ref().and_then(|(_, root)| root.find("shopsets")) {
            Some(Node::Dir(d)) => assert!(Arc::ptr_eq(d, &shopsets), "a directory was hashed again for nothing"),
            _ => panic!("no shopsets"),
        }
    }

    /// Edits are applied only to the hash of the render they were made from: a render edited from
    /// another one (a render that was not hashed, or another process's) is hashed afresh.
    #[test]
    fn edits_from_another_render_are_not_applied() {
        let mut known = LastHash::default();
        let t = twenty_shopsets();
        HashedTree::with_edits(&t, &Edits { render: 1, from: None, paths: Vec::new() }, &mut known).expect("hash");
        // Render 2 (never hashed) changed a file; render 3, edited from it, changed nothing.
        let mut changed = t.clone();
        changed.entries.insert("shopsets/s03/k.yaml".into(), Entry::file("changed\n"));
        let third = Edits { render: 3, from: Some(2), paths: Vec::new() };
        let id = HashedTree::with_edits(&changed, &third, &mut known).expect("hash").id();
        assert_eq!(id, HashedTree::new(&changed).expect("hash").id());
        assert_eq!(known.last.as_ref().map(|(render, _)| *render), Some(3));
    }

    /// A tree with a path that is both a file and a directory hashes as it always has (the file,
    /// first in order, wins), and is not started from the next time.
    #[test]
    fn a_path_both_file_and_directory_hashes_afresh() {
        let mut renders = Renders::default();
        let mut t = Tree::default();
        t.entries.insert("a".into(), Entry::file("file\n"));
        t.entries.insert("a/b".into(), Entry::file("below\n"));
        assert_eq!(renders.hash(&t), HashedTree::new(&t).expect("hash").id());
        assert!(renders.known.last.is_none());
        t.entries.remove("a");
        assert_eq!(renders.hash(&t), HashedTree::new(&t).expect("hash").id());
        assert!(renders.known.last.is_some());
        t.entries.insert("a".into(), Entry::file("file\n"));
        assert_eq!(renders.hash(&t), HashedTree::new(&t).expect("hash").id());
    }
}

#[cfg(test)]
mod write_on_tests {
    use super::tests::{base_and_next, unstored};
    use super::*;

    #[test]
    fn a_tree_written_on_its_base_is_stored_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let (old, new) = base_and_next();
        let base = HashedTree::new(&old).expect("hash").write(&repo).expect("write");
        let hashed = HashedTree::new(&new).expect("hash");
        assert_eq!(hashed.write_on(&repo, Some(base)).expect("write"), hashed.id());
        let missing = unstored(&repo, hashed.id());
        assert!(missing.is_empty(), "not stored: {missing:?}");
        // Written again on itself: nothing to do, same id.
        assert_eq!(hashed.write_on(&repo, Some(hashed.id())).expect("write"), hashed.id());
    }
}

#[cfg(test)]
mod pack_tests {
    use super::*;

    #[test]
    fn many_new_objects_are_written_as_one_pack_readable_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let mut t = Tree::default();
        for i in 0..150 {
            t.entries.insert(format!("shopsets/s{i}/k.yaml").into(), Entry::file(format!("{i}\n")));
        }
        let hashed = HashedTree::new(&t).expect("hash");
        let id = hashed.write(&repo).expect("write");
        // Readable through the same handle, file by file.
        let tree = repo.find_tree(id).expect("root tree");
        assert_eq!(tree.len(), 1);
        let blob = repo
            .find_blob(tree.get_path(std::path::Path::new("shopsets/s42/k.yaml")).expect("path").id())
            .expect("blob");
        assert_eq!(blob.content(), b"42\n");
        let packs = std::fs::read_dir(dir.path().join("objects/pack"))
            .expect("pack dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .count();
        assert_eq!(packs, 1);
    }
}

#[cfg(test)]
mod commit_tests {
    use super::tests::{base_and_next, files as tree, unstored};
    use super::*;

    #[test]
    fn a_commit_object_is_written_as_libgit2_writes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let id = HashedTree::new(&tree(&[("a", "1\n")])).expect("hash").write(&repo).expect("write");
        let stored = repo.find_tree(id).expect("tree");
        let parent = Oid::from_str("0123456789abcdef0123456789abcdef01234567").expect("oid");
        for (offset, message) in [(0, "sync: one line\n"), (-330, "no newline"), (570, "two\n\nparagraphs\n")] {
            let who = git2::Signature::new("Shop Set", "shopset@example.com", &git2::Time::new(1_764_000_000, offset))
                .expect("signature");
            for parents in [None, Some(parent)] {
                let ours = commit_object(id, parents, &who, message);
                // libgit2 needs the parent as a commit object: the root case checks it, and the
                // parent line is the one line added.
                if parents.is_none() {
                    let theirs = repo.commit_create_buffer(&who, &who, message, &stored, &[]).expect("buffer");
                    assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
                } else {
                    let root = commit_object(id, None, &who, message);
                    let text = String::from_utf8_lossy(&root).replacen('\n', &format!("\nparent {parent}\n"), 1);
                    assert_eq!(String::from_utf8_lossy(&ours), text);
                }
            }
        }
    }

    #[test]
    fn a_commit_on_its_base_is_stored_whole_and_its_pack_holds_what_it_adds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let who = git2::Signature::now("ShopSet", "shopset@example.com").expect("signature");
        let (old, new) = base_and_next();
        let first = HashedTree::new(&old).expect("hash").commit_on(&repo, None, None, "first\n", &who).expect("commit");
        assert!(first.pack.is_none(), "no base, nothing to push from it");
        let first_commit = repo.find_commit(first.commit).expect("the first commit is stored");
        let base = first_commit.tree_id();
        let hashed = HashedTree::new(&new).expect("hash");
        let packs = |repo: &Repository| std::fs::read_dir(repo.path().join("objects/pack")).expect("packs").count();
        let before = packs(&repo);
        let second = hashed.commit_on(&repo, Some(base), Some(first.commit), "second\n", &who).expect("commit");
        assert_eq!(packs(&repo), before + 2, "one pack and its index, no loose objects");
        let commit = repo.find_commit(second.commit).expect("stored");
        assert_eq!((commit.tree_id(), commit.parent_id(0).expect("parent")), (hashed.id(), first.commit));
        assert_eq!(commit.message().ok(), Some("second\n"));
        let missing = unstored(&repo, commit.tree_id());
        assert!(missing.is_empty(), "not stored: {missing:?}");
        // The pack: the commit; the root, shopsets/, shopsets/b/, shopsets/c/ and x/; the blobs of
        // shopsets/b/k.yaml, shopsets/c/k.yaml, x/y and z (what differs at its path, even where the
        // base has the same bytes elsewhere: nothing is looked up). Not shopsets/a/ nor its blob.
        let pack = second.pack.expect("a pack, written on a base");
        assert_eq!(u32::from_be_bytes(pack[8..12].try_into().expect("count")), 10);
    }
}
