//! A cache's pack files, kept few.
//!
//! libgit2 stores every fetch as a pack of its own (it has no `unpackLimit`), and a render of 100
//! objects or more is written as one too, so a long-running controller's cache of the app
//! repository gains a pack at every bump. Each look-up of an object the cache lacks (every sync asks
//! whether what it wrote is there) reads the index of every pack, and each pack read from keeps a
//! file open: without a bound, both grow with the controller's uptime. git's own `gc --auto` repacks
//! past 50 packs (`gc.autoPackLimit`); so does a cache here, geometrically, as `git repack
//! --geometric=2` does: the small packs are merged, and a pack at least twice the size of all
//! smaller ones together is left as it is, so the large packs of first clones and first renders are
//! not rewritten at every merge, nor is an earlier merge's pack until the new ones add up to half
//! of it.
//!
//! Merging is safe beside other handles on the same repository: the merged pack holds every object
//! of the packs it replaces (not only what refs reach: a sync may be holding a commit it fetched a
//! moment ago), a handle that already reads a removed pack keeps its open file, and one that looks
//! there afresh finds nothing and goes on to the other packs, the merged one after its refresh.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{Oid, Repository};

/// More packs than this, and the small ones are merged into one (git's `gc.autoPackLimit`).
pub const PACK_LIMIT: usize = 50;

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub packs: usize,
    pub objects: usize,
}

/// One pack of the repository: its `.pack` file and the `.idx` beside it.
struct Pack {
    pack: PathBuf,
    idx: PathBuf,
    bytes: u64,
}

/// Merges the repository's small packs when it holds more than `limit`; None when it holds no more
/// (the usual case: one directory listing) or none is small.
pub fn merge_when_many(repo: &Repository, limit: usize) -> Result<Option<Merged>, git2::Error> {
    let dir = repo.path().join("objects").join("pack");
    let mut packs = list(&dir);
    if packs.len() <= limit {
        return Ok(None);
    }
    let started = Instant::now();
    packs.sort_by_key(|p| p.bytes);
    let small = &packs[..small_packs(&packs.iter().map(|p| p.bytes).collect::<Vec<_>>())];
    if small.len() < 2 {
        return Ok(None);
    }
    let mut ids = BTreeSet::new();
    for p in small {
        ids.extend(index_ids(&p.idx)?);
    }
    let mut builder = repo.packbuilder()?;
    for id in &ids {
        builder.insert_object(*id, None)?;
    }
    builder.write(&dir, 0)?;
    let merged_name = builder.name().ok().flatten().map(|n| format!("pack-{n}.pack"));
    for p in small {
        // A name equal to the merged pack's would be the merged pack itself.
        if p.pack.file_name().and_then(|n| n.to_str()) == merged_name.as_deref() {
            continue;
        }
        // The index first: a handle listing the directory meanwhile does not take up a pack whose
        // data is about to go.
        let _ = std::fs::remove_file(&p.idx);
        let _ = std::fs::remove_file(&p.pack);
    }
    repo.odb()?.refresh()?;
    tracing::info!(
        repository = %repo.path().display(),
        packs = small.len(),
        objects = ids.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "cache packs merged"
    );
    Ok(Some(Merged { packs: small.len(), objects: ids.len() }))
}

/// How many of the packs, sorted by size from the smallest, to merge: all below the first pack
/// from which on each is at least twice the size of all smaller ones together.
fn small_packs(ascending: &[u64]) -> usize {
    let mut below = 0u64;
    let mut split = 0;
    for (i, size) in ascending.iter().enumerate() {
        if *size < below.saturating_mul(2) {
            split = i + 1;
        }
        below = below.saturating_add(*size);
    }
    split
}

/// The packs of a pack directory that have their index and no `.keep` file.
fn list(dir: &Path) -> Vec<Pack> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .filter_map(|pack| {
            let idx = pack.with_extension("idx");
            let keep = pack.with_extension("keep");
            // A pack still being written has no index yet.
            if !idx.is_file() || keep.exists() {
                return None;
            }
            let bytes = std::fs::metadata(&pack).ok()?.len();
            Some(Pack { pack, idx, bytes })
        })
        .collect()
}

/// The object ids a pack index (version 2, SHA-1) lists.
fn index_ids(idx: &Path) -> Result<Vec<Oid>, git2::Error> {
    let bad = |why: &str| git2::Error::from_str(&format!("{}: {why}", idx.display()));
    let bytes = std::fs::read(idx).map_err(|e| bad(&e.to_string()))?;
    // Header: the magic "\377tOc", version 2; then 256 cumulative counts, the last the total.
    const FANOUT: usize = 8;
    const IDS: usize = FANOUT + 256 * 4;
    if bytes.len() < IDS || bytes[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(bad("not a version 2 pack index"));
    }
    let count = u32::from_be_bytes([bytes[IDS - 4], bytes[IDS - 3], bytes[IDS - 2], bytes[IDS - 1]]) as usize;
    let end = IDS + count * 20;
    if bytes.len() < end {
        return Err(bad("shorter than the objects it counts"));
    }
    bytes[IDS..end].chunks_exact(20).map(Oid::from_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `count` blobs of `tag` into the repository as one pack.
    fn write_pack(repo: &Repository, scratch: &Repository, tag: &str, count: usize) -> Vec<Oid> {
        let mut builder = scratch.packbuilder().unwrap();
        let ids: Vec<Oid> =
            (0..count).map(|i| scratch.blob(format!("{tag} object {i}\n").as_bytes()).unwrap()).collect();
        for id in &ids {
            builder.insert_object(*id, None).unwrap();
        }
        builder.write(&repo.path().join("objects/pack"), 0).unwrap();
        ids
    }

    fn packs(repo: &Repository) -> usize {
        list(&repo.path().join("objects/pack")).len()
    }

    #[test]
    fn the_packs_merged_are_those_below_a_geometric_progression() {
        for (sizes, merged) in [
            (vec![], 0),
            (vec![10], 0),
            (vec![1, 1, 1, 1, 100], 4),
            (vec![1, 1, 1, 1, 7], 5),
            (vec![1, 2, 4, 8], 4),
            (vec![1, 3, 9, 27], 0),
            (vec![1, 1, 100, 100], 4),
            (vec![1, 1, 100, 1000], 2),
        ] {
            assert_eq!(small_packs(&sizes), merged, "{sizes:?}");
        }
    }

    #[test]
    fn past_the_limit_the_small_packs_become_one_and_every_object_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("cache.git")).unwrap();
        let scratch = Repository::init_bare(dir.path().join("scratch.git")).unwrap();
        let mut ids = write_pack(&repo, &scratch, "first clone", 5000);
        let largest = list(&repo.path().join("objects/pack")).remove(0).pack;
        // With the first clone's pack, PACK_LIMIT packs.
        for fetch in 0..PACK_LIMIT - 1 {
            ids.extend(write_pack(&repo, &scratch, &format!("fetch {fetch}"), 3));
        }
        // A handle that has read from every pack (their files open) and one that has read nothing.
        let reading = Repository::open_bare(repo.path()).unwrap();
        for id in &ids {
            reading.find_blob(*id).unwrap();
        }
        let idle = Repository::open_bare(repo.path()).unwrap();
        idle.odb().unwrap().refresh().unwrap();

        assert_eq!(merge_when_many(&repo, PACK_LIMIT).unwrap(), None, "{PACK_LIMIT} packs are not too many");
        ids.extend(write_pack(&repo, &scratch, "one fetch more", 3));
        let merged = merge_when_many(&repo, PACK_LIMIT).unwrap().expect("merged past the limit");
        assert_eq!(merged, Merged { packs: PACK_LIMIT, objects: PACK_LIMIT * 3 });
        assert_eq!(packs(&repo), 2, "the first clone's pack and the merged one");
        assert!(largest.exists(), "a pack larger than all others together is left as it is");

        let fresh = Repository::open_bare(repo.path()).unwrap();
        for handle in [&repo, &reading, &idle, &fresh] {
            for id in &ids {
                let blob = handle.find_blob(*id).unwrap_or_else(|e| panic!("{id} lost: {e}"));
                assert!(blob.content().ends_with(b"\n"));
            }
        }
    }

    #[test]
    fn an_index_that_is_not_version_2_is_refused_and_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("cache.git")).unwrap();
        let scratch = Repository::init_bare(dir.path().join("scratch.git")).unwrap();
        // Near in size, so all three are merged; the smallest one's index is broken below.
        for fetch in 0..3 {
            write_pack(&repo, &scratch, &format!("fetch {fetch}"), 4 + fetch);
        }
        let pack_dir = repo.path().join("objects/pack");
        let mut all = list(&pack_dir);
        all.sort_by_key(|p| p.bytes);
        std::fs::write(&all[0].idx, b"not an index").unwrap();
        let err = merge_when_many(&repo, 1).unwrap_err();
        assert!(err.message().contains("not a version 2 pack index"), "{}", err.message());
        assert_eq!(packs(&repo), 3, "nothing removed after a failed merge");
    }
}
