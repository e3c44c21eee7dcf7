//! A rendered tree hashed in memory, as git would hash it, before anything is written.
//!
//! Equal ids mean equal content, so a sync compares the render with the branch by ids: it reads
//! only the subtrees whose ids differ and writes only the objects the repository lacks. The cost of
//! a sync then grows with what changed, not with the number of ShopSets.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use git2::{ObjectType, Odb, Oid, Repository};

use shopset_core::tree::{Entry, Tree};

/// Git file modes of the entries a render writes.
pub const MODE_FILE: i32 = 0o100644;
pub const MODE_DIR: i32 = 0o040000;
pub const MODE_GITLINK: i32 = 0o160000;

/// From this many new objects on, they are written as one pack instead of loose files: creating
/// thousands of small files costs more than everything else in a first render (git's own
/// `transfer.unpackLimit` draws the same line at 100).
const PACK_THRESHOLD: usize = 100;

/// Writes objects as one pack: into an in-memory backend of a second handle on the repository,
/// dumped as a pack and indexed into the repository's own object store.
fn write_pack(repo: &Repository, odb: &Odb<'_>, objects: &[(ObjectType, Oid, &[u8])]) -> Result<(), git2::Error> {
    use std::io::Write;
    // A backend cannot be detached from an object database: the in-memory one lives on a handle
    // dropped here, so later writes through `repo` are not left in memory.
    let scratch = Repository::open(repo.path())?;
    let scratch_odb = scratch.odb()?;
    let _mempack = scratch_odb.add_new_mempack_backend(1000)?;
    for (kind, id, bytes) in objects {
        check_written(*id, scratch_odb.write(*kind, bytes)?)?;
    }
    // `Mempack::dump` packs only what its commits reach; these objects have no commit yet.
    let mut builder = scratch.packbuilder()?;
    for (_, id, _) in objects {
        builder.insert_object(*id, None)?;
    }
    let mut pack = git2::Buf::new();
    builder.write_buf(&mut pack)?;
    let mut writer = odb.packwriter()?;
    writer.write_all(&pack).map_err(|e| git2::Error::from_str(&format!("cannot write the pack: {e}")))?;
    writer.commit()?;
    Ok(())
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

/// What was hashed for one branch the last time, kept between its syncs: the tree and its hashed
/// form. The next tree is compared with it path by path (both are sorted, so in one pass, with
/// no look-ups), and only the directories on the path of a change are hashed again: hashing a
/// render costs what changed, plus one comparison per path.
#[derive(Debug, Default)]
pub struct LastHash {
    /// The tree shared with whoever rendered it (the renderer edits it in place when it is the
    /// only holder left), so that keeping it costs no copy.
    last: Option<(Arc<Tree>, Dir)>,
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

/// Whether two entries of one path are the same content (shared bytes are, without a look).
fn same(a: &Entry, b: &Entry) -> bool {
    match (a, b) {
        (Entry::File(a), Entry::File(b)) => Arc::ptr_eq(a, b) || a[..] == b[..],
        (Entry::Gitlink(a), Entry::Gitlink(b)) => a == b,
        _ => false,
    }
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

    /// [`HashedTree::new`], starting from the tree hashed last with `known` and leaving this one
    /// in it for the next time.
    pub fn with_known(tree: &Arc<Tree>, known: &mut LastHash) -> Result<Self, git2::Error> {
        // Taken out: a hash that fails leaves nothing to start from, and the next one is afresh.
        let edited = match known.last.take() {
            Some((last, root)) => Self::edit(&last, root, tree)?,
            None => None,
        };
        let (root, editable) = match edited {
            Some(root) => (root, true),
            None => Self::afresh(tree)?,
        };
        if editable {
            known.last = Some((Arc::clone(tree), root.clone()));
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

    /// The hash of `tree` made from `root`, the hash of `last`: the paths that differ are found
    /// in one pass over both (sorted alike), and only their directories are hashed again. None
    /// when the tree has a path that is both a file and a directory, which only a hash afresh
    /// settles as it always has.
    fn edit(last: &Tree, mut root: Dir, tree: &Tree) -> Result<Option<Dir>, git2::Error> {
        let (mut removed, mut put) = (Vec::new(), Vec::new());
        let mut old = last.entries.iter().peekable();
        let mut new = tree.entries.iter().peekable();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                // The renderer hands out the same path for an unchanged file: equal without a look.
                (Some((o, _)), Some((n, _))) if Arc::ptr_eq(o, n) => Ordering::Equal,
                (Some((o, _)), Some((n, _))) => o.cmp(n),
            };
            match order {
                Ordering::Less => removed.extend(old.next().map(|(path, _)| &**path)),
                Ordering::Greater => put.extend(new.next().map(|(path, entry)| (&**path, entry))),
                Ordering::Equal => {
                    if let (Some((_, was)), Some((path, entry))) = (old.next(), new.next())
                        && !same(was, entry)
                    {
                        put.push((&**path, entry));
                    }
                }
            }
        }
        // Removed first: a file that becomes a directory, or the reverse, finds its place free. With
        // nothing changed, nothing is touched and the root keeps its id.
        for path in removed {
            root.remove(path);
        }
        for (path, entry) in put {
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
        let mut dir = &self.root;
        let mut parts = path.split('/').peekable();
        while let Some(part) = parts.next() {
            let node = dir.entries.get(part)?;
            if parts.peek().is_none() {
                return Some(node.mode_id());
            }
            match node {
                Node::Dir(d) => dir = d,
                _ => return None,
            }
        }
        None
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
        self.root.missing(repo, &odb, base.as_ref(), &mut missing)?;
        if missing.len() >= PACK_THRESHOLD {
            write_pack(repo, &odb, &missing)?;
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

    /// The objects of this directory the repository lacks, children before parents. `base` is the
    /// stored tree at the same path, if any: an entry with the id it has there is stored.
    fn missing<'s>(
        &'s self,
        repo: &Repository,
        odb: &Odb<'_>,
        base: Option<&git2::Tree<'_>>,
        out: &mut Vec<(ObjectType, Oid, &'s [u8])>,
    ) -> Result<(), git2::Error> {
        if base.is_some_and(|b| b.id() == self.tree_id()) || stored(odb, self.tree_id()) {
            return Ok(());
        }
        for (name, node) in &self.entries {
            let was = base.and_then(|b| b.get_name(name)).map(|e| (e.id(), e.kind()));
            match node {
                Node::Blob(id, _) if was.is_some_and(|(w, _)| w == *id) => {}
                Node::Blob(id, bytes) if !stored(odb, *id) => out.push((ObjectType::Blob, *id, bytes)),
                Node::Dir(d) => {
                    let sub = match was {
                        Some((w, _)) if w == d.tree_id() => continue,
                        Some((w, Some(ObjectType::Tree))) => Some(repo.find_tree(w)?),
                        _ => None,
                    };
                    d.missing(repo, odb, sub.as_ref(), out)?
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

    fn tree(files: &[(&str, &str)]) -> Tree {
        let mut t = Tree::default();
        for (p, c) in files {
            t.entries.insert(p.to_string().into(), Entry::file(c.as_bytes()));
        }
        t.entries.insert("base".into(), Entry::Gitlink("1111111111111111111111111111111111111111".into()));
        t
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

    /// Hashing with what was remembered of earlier trees gives the ids of hashing afresh.
    #[test]
    fn remembered_files_and_directories_hash_as_afresh() {
        let mut known = LastHash::default();
        let mut t = twenty_shopsets();
        t.entries.insert("base".into(), Entry::Gitlink("1111111111111111111111111111111111111111".into()));
        let check = |t: &Tree, known: &mut LastHash| {
            let remembered = HashedTree::with_known(&Arc::new(t.clone()), known).expect("hash").id();
            assert_eq!(remembered, HashedTree::new(t).expect("hash").id());
        };
        check(&t, &mut known);
        check(&t, &mut known);
        // One file changed; one with the same bytes in a new allocation.
        t.entries.insert("shopsets/s03/k.yaml".into(), Entry::file("changed\n"));
        t.entries.insert("shopsets/s04/k.yaml".into(), Entry::file("4\n"));
        check(&t, &mut known);
        // A directory gone, one added, a file added to a directory, the gitlink moved.
        t.entries.remove("shopsets/s05/k.yaml");
        t.entries.insert("shopsets/new/k.yaml".into(), Entry::file("new\n"));
        t.entries.insert("shopsets/s06/extra.yaml".into(), Entry::file("extra\n"));
        t.entries.insert("base".into(), Entry::Gitlink("2222222222222222222222222222222222222222".into()));
        check(&t, &mut known);
        let (_, root) = known.last.as_ref().expect("remembered");
        assert!(
            !matches!(root.entries.get("shopsets"), Some(Node::Dir(d)) if d.entries.contains_key("s05")),
            "a directory gone is forgotten"
        );
        // Back as it was: the directory comes back with its old id.
        t.entries.insert("shopsets/s05/k.yaml".into(), Entry::file("5\n"));
        check(&t, &mut known);
        // A file that becomes a directory, and back.
        t.entries.insert("x".into(), Entry::file("file\n"));
        check(&t, &mut known);
        t.entries.remove("x");
        t.entries.insert("x/y".into(), Entry::file("in a directory\n"));
        check(&t, &mut known);
        t.entries.remove("x/y");
        t.entries.insert("x".into(), Entry::file("file again\n"));
        check(&t, &mut known);
        // A directory emptied is gone; a tree emptied is the empty tree.
        t.entries.retain(|path, _| !path.starts_with("applications/"));
        check(&t, &mut known);
        t.entries.clear();
        check(&t, &mut known);
    }

    /// The proof that a hash starts from the last one: what did not change is the very same
    /// directory, not one hashed again.
    #[test]
    fn unchanged_directories_are_taken_from_the_last_hash() {
        let mut known = LastHash::default();
        let mut t = twenty_shopsets();
        let dir = |known: &LastHash, name: &str| match known.last.as_ref().and_then(|(_, r)| r.entries.get(name)) {
            Some(Node::Dir(d)) => d.clone(),
            _ => panic!("no directory {name}"),
        };
        HashedTree::with_known(&Arc::new(t.clone()), &mut known).expect("hash");
        let (apps, shopsets) = (dir(&known, "applications"), dir(&known, "shopsets"));
        t.entries.insert("shopsets/s03/k.yaml".into(), Entry::file("changed\n"));
        HashedTree::with_known(&Arc::new(t.clone()), &mut known).expect("hash");
        assert!(Arc::ptr_eq(&apps, &dir(&known, "applications")), "an unchanged directory was hashed again");
        assert!(!Arc::ptr_eq(&shopsets, &dir(&known, "shopsets")), "a changed directory was not");
        let unchanged = |known: &LastHash| match dir(known, "shopsets").entries.get("s04") {
            Some(Node::Dir(d)) => d.clone(),
            _ => panic!("no s04"),
        };
        let s04 = unchanged(&known);
        t.entries.insert("shopsets/s05/k.yaml".into(), Entry::file("changed too\n"));
        HashedTree::with_known(&Arc::new(t.clone()), &mut known).expect("hash");
        assert!(Arc::ptr_eq(&s04, &unchanged(&known)), "an unchanged ShopSet directory was hashed again");
    }

    /// A tree with a path that is both a file and a directory hashes as it always has (the file,
    /// first in order, wins), and is not started from the next time.
    #[test]
    fn a_path_both_file_and_directory_hashes_afresh() {
        let mut known = LastHash::default();
        let mut t = Tree::default();
        t.entries.insert("a".into(), Entry::file("file\n"));
        t.entries.insert("a/b".into(), Entry::file("below\n"));
        let id = HashedTree::with_known(&Arc::new(t.clone()), &mut known).expect("hash").id();
        assert_eq!(id, HashedTree::new(&t).expect("hash").id());
        assert!(known.last.is_none());
        t.entries.remove("a");
        let id = HashedTree::with_known(&Arc::new(t.clone()), &mut known).expect("hash").id();
        assert_eq!(id, HashedTree::new(&t).expect("hash").id());
        assert!(known.last.is_some());
        t.entries.insert("a".into(), Entry::file("file\n"));
        let id = HashedTree::with_known(&Arc::new(t.clone()), &mut known).expect("hash").id();
        assert_eq!(id, HashedTree::new(&t).expect("hash").id());
    }
}

#[cfg(test)]
mod write_on_tests {
    use super::*;

    #[test]
    fn a_tree_written_on_its_base_is_stored_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let tree = |files: &[(&str, &str)]| {
            let mut t = Tree::default();
            for (p, c) in files {
                t.entries.insert(p.to_string().into(), Entry::file(c.as_bytes()));
            }
            t
        };
        let old = tree(&[("shopsets/a/k.yaml", "1\n"), ("shopsets/b/k.yaml", "2\n"), ("x", "file, then a dir\n")]);
        let base = HashedTree::new(&old).expect("hash").write(&repo).expect("write");
        // Changed, added, a file become a directory, and content that is only in the base elsewhere.
        let new = tree(&[
            ("shopsets/a/k.yaml", "1\n"),
            ("shopsets/b/k.yaml", "2, changed\n"),
            ("shopsets/c/k.yaml", "2\n"),
            ("x/y", "1\n"),
            ("z", "new\n"),
        ]);
        let hashed = HashedTree::new(&new).expect("hash");
        assert_eq!(hashed.write_on(&repo, Some(base)).expect("write"), hashed.id());
        let mut missing = Vec::new();
        repo.find_tree(hashed.id())
            .expect("root")
            .walk(git2::TreeWalkMode::PreOrder, |_, e| {
                if repo.odb().expect("odb").read_header(e.id()).is_err() {
                    missing.push(e.name().unwrap_or_default().to_string());
                }
                git2::TreeWalkResult::Ok
            })
            .expect("walk");
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
