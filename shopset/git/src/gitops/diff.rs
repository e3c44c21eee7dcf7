//! Unified diffs of two trees, as `git diff` prints them.

use std::path::Path;

use shopset_core::tree::{Entry, Tree};

/// A unified diff of two trees, as `git diff` prints it (gitlinks as `Subproject commit` lines).
pub fn diff_trees(old: &Tree, new: &Tree) -> String {
    let mut out = String::new();
    let paths: std::collections::BTreeSet<&std::sync::Arc<str>> =
        old.entries.keys().chain(new.entries.keys()).collect();
    for path in paths {
        let (a, b) = (old.entries.get(&**path), new.entries.get(&**path));
        if a == b {
            continue;
        }
        let bytes = |e: Option<&Entry>| match e {
            None => Vec::new(),
            Some(Entry::File(b)) => b.to_vec(),
            Some(Entry::Gitlink(oid)) => format!("Subproject commit {oid}\n").into_bytes(),
        };
        let (old_bytes, new_bytes) = (bytes(a), bytes(b));
        let old_path = a.map(|_| Path::new(&**path));
        let new_path = b.map(|_| Path::new(&**path));
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
