//! The file tree a render produces: repository-relative paths to files and gitlinks. Plain data:
//! the git layer turns it into objects, `shopctl render` into a directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file. Shared: a file the renderer reuses from an earlier render is the same
    /// allocation, which lets later layers skip work on files that did not change.
    File(Arc<[u8]>),
    /// A submodule pinned at a commit (tree mode 160000); hex object id.
    Gitlink(String),
}

impl Entry {
    /// A file of these bytes.
    pub fn file(bytes: impl Into<Vec<u8>>) -> Self {
        Entry::File(Arc::from(bytes.into()))
    }
}

/// A tree: repository-relative paths (with `/`) to entries. Paths are shared like files, so a copy
/// of a tree (the renderer's and the git layer's memos keep one) allocates no path again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<Arc<str>, Entry>,
}

impl Tree {
    /// A tree of these entries.
    pub fn from_entries(entries: BTreeMap<Arc<str>, Entry>) -> Self {
        Self { entries }
    }

    /// Writes the files to `dir` (gitlinks become empty directories, as in a clone without
    /// submodules) and returns the number of files written.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<usize> {
        let mut files = 0;
        for (path, entry) in &self.entries {
            let target = dir.join(&**path);
            match entry {
                Entry::File(bytes) => {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&target, bytes)?;
                    files += 1;
                }
                Entry::Gitlink(_) => std::fs::create_dir_all(&target)?,
            }
        }
        Ok(files)
    }

    /// The gitlinks: path -> commit.
    pub fn gitlinks(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().filter_map(|(p, e)| match e {
            Entry::Gitlink(oid) => Some((&**p, oid.as_str())),
            Entry::File(_) => None,
        })
    }
}
