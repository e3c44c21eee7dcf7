//! A rendered tree hashed in memory, as git would hash it, before anything is written.
//!
//! Equal ids mean equal content, so a sync compares the render with the branch by ids: it reads
//! only the subtrees whose ids differ and writes only the objects the repository lacks. The cost of
//! a sync then grows with what changed, not with the number of ShopSets.

use std::collections::{BTreeMap, HashMap};
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

/// What was hashed for one branch the last time, kept between its syncs: the blob id of each file
/// and the tree object of each directory below the root. A file whose bytes are those of the same
/// path then (the renderer hands out the very same bytes for a ShopSet it did not render again) is
/// not hashed again, nor a directory whose entries are those of then: hashing a render costs what
/// changed, plus one look-up per path.
#[derive(Debug, Default)]
pub struct BlobIds {
    by_path: HashMap<String, (Arc<[u8]>, Oid)>,
    dirs: HashMap<String, StoredDir>,
    /// Counts the trees hashed; a directory not seen in the last one is forgotten.
    generation: u64,
}

/// A directory as it was last hashed.
#[derive(Debug)]
struct StoredDir {
    entries: Vec<(String, i32, Oid)>,
    id: Oid,
    object: Arc<[u8]>,
    generation: u64,
}

impl StoredDir {
    fn matches(&self, entries: &BTreeMap<&str, Node<'_>>) -> bool {
        self.entries.len() == entries.len()
            && self
                .entries
                .iter()
                .zip(entries)
                .all(|((name, mode, id), (n, node))| name == n && node.mode_id() == (*mode, *id))
    }
}

impl BlobIds {
    /// The blob id of `bytes` at `path`: remembered when the bytes are the same, else hashed now
    /// and remembered.
    fn id(&mut self, path: &str, bytes: &Arc<[u8]>) -> Result<Oid, git2::Error> {
        match self.by_path.get_mut(path) {
            Some((known, id)) if Arc::ptr_eq(known, bytes) => Ok(*id),
            Some((known, id)) => {
                if known[..] != bytes[..] {
                    *id = Oid::hash_object(ObjectType::Blob, bytes)?;
                }
                *known = bytes.clone();
                Ok(*id)
            }
            None => {
                let id = Oid::hash_object(ObjectType::Blob, bytes)?;
                self.by_path.insert(path.to_string(), (bytes.clone(), id));
                Ok(id)
            }
        }
    }

    /// Forgets the files and directories `tree` (hashed as generation `self.generation`) no
    /// longer has. `files` is the number of files it has: every one of them is remembered.
    fn forget_others(&mut self, tree: &Tree, files: usize) {
        if self.by_path.len() > files {
            self.by_path.retain(|path, _| matches!(tree.entries.get(path), Some(Entry::File(_))));
        }
        let generation = self.generation;
        self.dirs.retain(|_, d| d.generation == generation);
    }
}

/// A [`Tree`] with the id of every blob and subtree.
#[derive(Debug)]
pub struct HashedTree<'a> {
    root: Dir<'a>,
}

#[derive(Debug, Default)]
struct Dir<'a> {
    id: Option<Oid>,
    /// The tree object, as it is stored.
    object: Arc<[u8]>,
    entries: BTreeMap<&'a str, Node<'a>>,
    /// Entries of the branch kept as they are (paths ShopSet does not own; root only): name as
    /// stored, mode and id, already in the repository they were read from.
    kept: Vec<(Vec<u8>, i32, Oid)>,
}

#[derive(Debug)]
enum Node<'a> {
    Blob(Oid, &'a [u8]),
    Gitlink(Oid),
    Dir(Dir<'a>),
}

impl Node<'_> {
    fn mode_id(&self) -> (i32, Oid) {
        match self {
            Node::Blob(id, _) => (MODE_FILE, *id),
            Node::Gitlink(id) => (MODE_GITLINK, *id),
            // invariant: every Dir gets its id in `Dir::hash` before a HashedTree is returned.
            Node::Dir(d) => (MODE_DIR, d.id.unwrap_or(Oid::ZERO_SHA1)),
        }
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

impl<'a> HashedTree<'a> {
    /// Hashes every file and directory of `tree`. Fails only on a gitlink that is not an object id.
    pub fn new(tree: &'a Tree) -> Result<Self, git2::Error> {
        Self::with_known(tree, &mut BlobIds::default())
    }

    /// [`HashedTree::new`], taking the ids of unchanged files and directories from `known`, and
    /// leaving in it those of `tree` for the next time.
    pub fn with_known(tree: &'a Tree, known: &mut BlobIds) -> Result<Self, git2::Error> {
        let mut root = Dir::default();
        let mut files = 0;
        for (path, entry) in &tree.entries {
            let node = match entry {
                Entry::File(bytes) => {
                    files += 1;
                    Node::Blob(known.id(path, bytes)?, bytes)
                }
                Entry::Gitlink(hex) => Node::Gitlink(Oid::from_str(hex)?),
            };
            root.insert(path, node);
        }
        known.generation += 1;
        root.hash(&mut String::new(), known)?;
        known.forget_others(tree, files);
        Ok(Self { root })
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

impl<'a> Dir<'a> {
    fn insert(&mut self, path: &'a str, node: Node<'a>) {
        match path.split_once('/') {
            Some((head, rest)) => {
                let child = self.entries.entry(head).or_insert_with(|| Node::Dir(Dir::default()));
                if let Node::Dir(d) = child {
                    d.insert(rest, node);
                }
                // A file and a directory of one name cannot both come from a BTreeMap of paths
                // written by the renderer; if they did, the file wins, as it was inserted first.
            }
            None => {
                self.entries.insert(path, node);
            }
        }
    }

    fn tree_id(&self) -> Oid {
        self.id.unwrap_or(Oid::ZERO_SHA1)
    }

    /// Computes the ids bottom-up and serializes the tree object in git's entry order; a directory
    /// below the root (at `path`) whose entries `known` holds as they are is taken from there.
    fn hash(&mut self, path: &mut String, known: &mut BlobIds) -> Result<Oid, git2::Error> {
        for (name, node) in self.entries.iter_mut() {
            if let Node::Dir(d) = node {
                let len = path.len();
                if len > 0 {
                    path.push('/');
                }
                path.push_str(name);
                d.hash(path, known)?;
                path.truncate(len);
            }
        }
        // The root holds what is kept of the branch, taken again on every attempt: not remembered.
        if path.is_empty() {
            return self.serialize();
        }
        let generation = known.generation;
        if let Some(stored) = known.dirs.get_mut(path.as_str())
            && stored.matches(&self.entries)
        {
            stored.generation = generation;
            self.id = Some(stored.id);
            self.object = stored.object.clone();
            return Ok(stored.id);
        }
        let id = self.serialize()?;
        let entries = self.entries.iter().map(|(name, node)| (name.to_string(), node.mode_id().0, node.mode_id().1));
        known.dirs.insert(
            path.clone(),
            StoredDir { entries: entries.collect(), id, object: self.object.clone(), generation },
        );
        Ok(id)
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
        let id = Oid::hash_object(ObjectType::Tree, &object)?;
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
    Rendered(&'n Dir<'n>),
    Stored(git2::Tree<'r>),
}

/// A name in a directory: its stored entry (mode, id) and its new entry (mode, id) with the
/// rendered directory when it is one, each if any.
type Pair<'n> = (Option<(i32, Oid)>, Option<(i32, Oid, Option<&'n Dir<'n>>)>);

fn diff_dir<'r>(
    repo: &'r Repository,
    old: Option<&git2::Tree<'_>>,
    new: Option<&NewDir<'_, 'r>>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<(), git2::Error> {
    let mut entries: BTreeMap<String, Pair<'_>> = BTreeMap::new();
    let name_of = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    for e in old.into_iter().flat_map(|t| t.iter()) {
        entries.entry(name_of(e.name_bytes())).or_default().0 = Some((e.filemode(), e.id()));
    }
    match new {
        Some(NewDir::Rendered(d)) => {
            for (name, node) in &d.entries {
                let (mode, id) = node.mode_id();
                let dir = match node {
                    Node::Dir(d) => Some(d),
                    _ => None,
                };
                entries.entry((*name).to_string()).or_default().1 = Some((mode, id, dir));
            }
            for (name, mode, id) in &d.kept {
                entries.entry(name_of(name)).or_default().1 = Some((*mode, *id, None));
            }
        }
        Some(NewDir::Stored(t)) => {
            for e in t.iter() {
                entries.entry(name_of(e.name_bytes())).or_default().1 = Some((e.filemode(), e.id(), None));
            }
        }
        None => {}
    }
    for (name, (o, n)) in entries {
        let nm = n.map(|(mode, id, _)| (mode, id));
        if o == nm {
            continue;
        }
        let path = format!("{prefix}{name}");
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
            t.entries.insert(p.to_string(), Entry::file(c.as_bytes()));
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
            expected.entries.insert(p.to_string(), branch.entries[p].clone());
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

    /// Hashing with what was remembered of earlier trees gives the ids of hashing afresh.
    #[test]
    fn remembered_files_and_directories_hash_as_afresh() {
        let mut known = BlobIds::default();
        let mut t = Tree::default();
        for i in 0..20 {
            t.entries.insert(format!("shopsets/s{i:02}/k.yaml"), Entry::file(format!("{i}\n")));
            t.entries.insert(format!("applications/s{i:02}.yaml"), Entry::file(format!("app {i}\n")));
        }
        t.entries.insert("base".into(), Entry::Gitlink("1111111111111111111111111111111111111111".into()));
        let check = |t: &Tree, known: &mut BlobIds| {
            let remembered = HashedTree::with_known(t, known).expect("hash").id();
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
        assert!(!known.dirs.contains_key("shopsets/s05"), "a directory gone is forgotten");
        assert!(!known.by_path.contains_key("shopsets/s05/k.yaml"), "a file gone is forgotten");
        // Back as it was: the directory comes back with its old id.
        t.entries.insert("shopsets/s05/k.yaml".into(), Entry::file("5\n"));
        check(&t, &mut known);
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
                t.entries.insert(p.to_string(), Entry::file(c.as_bytes()));
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
            t.entries.insert(format!("shopsets/s{i}/k.yaml"), Entry::file(format!("{i}\n")));
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
