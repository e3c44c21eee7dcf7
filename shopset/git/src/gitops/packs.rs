//! A cache's pack files, kept few.
//!
//! libgit2 stores every fetch as a pack of its own (it has no `unpackLimit`), and a sync writes what
//! it commits as one too ([`super::packfile`]), so a long-running controller's caches gain a pack
//! at every bump and every sync that changed something. Each look-up of an object the cache lacks (every sync asks
//! whether what it wrote is there) reads the index of every pack, and each pack read from keeps a
//! file open: without a bound, both grow with the controller's uptime. git's own `gc --auto` repacks
//! past 50 packs (`gc.autoPackLimit`); so does a cache here, geometrically, as `git repack
//! --geometric=2` does: the small packs are merged, and a pack at least twice the size of all
//! smaller ones together is left as it is, so the large packs of first clones and first renders are
//! not rewritten at every merge, nor is an earlier merge's pack until the new ones add up to half
//! of it. Packs of whole objects (a sync's) and of deltas of entries in the same pack (merges,
//! git's own fetches) are merged by copying their entries, a large tree written again by each sync
//! stored as a delta of its last version ([`super::delta`]): the cache grows by tens of bytes a
//! change for the 45 KB directories that list a tier, not by the directories. Packs with deltas
//! named by id (libgit2's pack builder) are merged by libgit2's pack builder.
//!
//! Merging is safe beside other handles on the same repository: the merged pack holds every object
//! of the packs it replaces (not only what refs reach: a sync may be holding a commit it fetched a
//! moment ago), a handle that already reads a removed pack keeps its open file, and one that looks
//! there afresh finds nothing and goes on to the other packs, the merged one after its refresh.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{Oid, Repository};

use super::{delta, packfile};

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
    /// When it was written: a merge copies older packs first, so a tree's next version follows it.
    modified: std::time::SystemTime,
}

/// Merges the repository's small packs when it holds more than `limit`; None when it holds no more
/// (the usual case: one directory listing) or none is small. Packs a copy can merge (a sync's,
/// [`super::packfile`], earlier merges, fetches with OFS deltas) are merged by [`copy_merge`]; the
/// others (deltas named by id) by libgit2's pack builder, which searches deltas again: seconds for
/// the 45 KB trees of a large tier, where a copy takes milliseconds.
pub fn merge_when_many(repo: &Repository, limit: usize) -> Result<Option<Merged>, git2::Error> {
    let dir = repo.path().join("objects").join("pack");
    // Counted by name first: a sync asks after every pack it writes, and most find too few.
    let named = std::fs::read_dir(&dir).map_or(0, |entries| {
        entries.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".pack")).count()
    });
    if named <= limit {
        return Ok(None);
    }
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
    let (mut copied, mut other) = (Vec::new(), Vec::new());
    for p in small {
        match copyable(p)? {
            Some(entries) => copied.push((p, entries)),
            None => other.push(p),
        }
    }
    if copied.len() < 2 {
        other.extend(copied.drain(..).map(|(p, _)| p));
    }
    let mut merged = Merged { packs: 0, objects: 0 };
    if !copied.is_empty() {
        merged.objects += copy_merge(repo, &copied)?;
        merged.packs += copied.len();
    }
    // Still too many: the packs with deltas too.
    let left = packs.len() - copied.len() + usize::from(!copied.is_empty());
    if other.len() >= 2 && left > limit {
        let mut ids = BTreeSet::new();
        for p in &other {
            ids.extend(read_index(&p.idx)?.ids);
        }
        let mut builder = repo.packbuilder()?;
        for id in &ids {
            builder.insert_object(*id, None)?;
        }
        builder.write(&dir, 0)?;
        let merged_name = builder.name().ok().flatten().map(|n| format!("pack-{n}.pack"));
        remove(&other, merged_name.as_deref());
        merged.packs += other.len();
        merged.objects += ids.len();
    }
    if merged.packs == 0 {
        return Ok(None);
    }
    repo.odb()?.refresh()?;
    tracing::info!(
        repository = %repo.path().display(),
        packs = merged.packs,
        objects = merged.objects,
        took_ms = started.elapsed().as_millis() as u64,
        "cache packs merged"
    );
    Ok(Some(merged))
}

/// Removes merged packs, but not the one named `merged` (the merge's own, should the names meet).
/// The index first: a handle listing the directory meanwhile does not take up a pack whose data is
/// about to go.
fn remove(packs: &[&Pack], merged: Option<&str>) {
    for p in packs {
        if p.pack.file_name().and_then(|n| n.to_str()) == merged {
            continue;
        }
        let _ = std::fs::remove_file(&p.idx);
        let _ = std::fs::remove_file(&p.pack);
    }
}

/// One object's entry in a pack: id, where its bytes are, their CRC-32, and for a delta, where
/// its base starts in the same pack.
struct Entry {
    id: Oid,
    range: std::ops::Range<usize>,
    crc: u32,
    delta: Option<OfsDelta>,
}

/// Where an OFS_DELTA entry's base starts in its pack, and how long the entry's header and base
/// distance are (what a copy writes anew).
struct OfsDelta {
    base: usize,
    header: usize,
    distance: usize,
}

/// A pack read whole: its bytes and its entries, in the order of their offsets.
struct CopyablePack {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

/// The bytes and entries of a pack whose every object is whole or a delta of an object before it
/// in the same pack (an OFS_DELTA: a sync's packs, the merges of them, git's own fetches); None for
/// a pack with a delta named by id (libgit2's pack builder writes those).
fn copyable(pack: &Pack) -> Result<Option<CopyablePack>, git2::Error> {
    let index = read_index(&pack.idx)?;
    let bytes = std::fs::read(&pack.pack)
        .map_err(|e| git2::Error::from_str(&format!("cannot read {}: {e}", pack.pack.display())))?;
    let bad = |why: &str| git2::Error::from_str(&format!("{}: {why}", pack.pack.display()));
    if bytes.len() < 32 || &bytes[..4] != b"PACK" {
        return Err(bad("not a pack"));
    }
    let mut order: Vec<usize> = (0..index.ids.len()).collect();
    order.sort_by_key(|i| index.offsets[*i]);
    let end = bytes.len() - 20;
    let mut entries = Vec::with_capacity(order.len());
    for (n, &i) in order.iter().enumerate() {
        let start = usize::try_from(index.offsets[i]).map_err(|_| bad("an offset out of range"))?;
        let stop = match order.get(n + 1) {
            Some(&next) => usize::try_from(index.offsets[next]).map_err(|_| bad("an offset out of range"))?,
            None => end,
        };
        if start < 12 || stop <= start || stop > end {
            return Err(bad("an entry out of the pack"));
        }
        // Types 1 to 4 are whole objects; 6 is a delta of an entry before it, 7 of an object by id.
        let delta = match (bytes[start] >> 4) & 7 {
            1..=4 => None,
            packfile::OFS_DELTA => {
                let (_, _, header) =
                    packfile::read_entry_header(&bytes[start..stop]).ok_or_else(|| bad("a bad entry"))?;
                let (back, distance) =
                    packfile::ofs_decode(&bytes[start + header..stop]).ok_or_else(|| bad("a bad delta offset"))?;
                let base = usize::try_from(back).ok().and_then(|d| start.checked_sub(d));
                let base = base.filter(|b| *b >= 12).ok_or_else(|| bad("a delta whose base is outside the pack"))?;
                Some(OfsDelta { base, header, distance })
            }
            _ => return Ok(None),
        };
        entries.push(Entry { id: index.ids[i], range: start..stop, crc: index.crcs[i], delta });
    }
    Ok(Some(CopyablePack { bytes, entries }))
}

/// Trees this large are stored as a delta of their last version when packs are merged ([`delta`]).
const DELTA_MIN_BYTES: usize = 4096;

/// The longest chain of deltas a merge makes: reading an object at its end applies them all.
const DELTA_MAX_DEPTH: u32 = 50;

/// The last version seen of a large tree, by its first entry (the tree listing a tier's ShopSets
/// keeps it): its bytes, where its entry starts in the merged pack, and its depth of deltas.
struct Version {
    bytes: Vec<u8>,
    at: usize,
    depth: u32,
}

/// Merges packs into one by copying their entries (each object once), oldest pack first; a large
/// tree is stored as a delta of its version before it ([`delta::tree_delta`]), and a delta copied
/// gets its base's new place. Returns the number of objects.
fn copy_merge(repo: &Repository, packs: &[(&Pack, CopyablePack)]) -> Result<usize, git2::Error> {
    let mut order: Vec<&(&Pack, CopyablePack)> = packs.iter().collect();
    order.sort_by_key(|(p, _)| p.modified);
    let count = {
        let mut seen = std::collections::HashSet::new();
        order.iter().flat_map(|(_, w)| w.entries.iter()).filter(|e| seen.insert(e.id)).count()
    };
    let mut out = packfile::header(count, order.iter().map(|(_, w)| w.bytes.len()).sum())?;
    let mut placed: std::collections::HashMap<Oid, usize> = std::collections::HashMap::with_capacity(count);
    let mut last: std::collections::HashMap<Vec<u8>, Version> = std::collections::HashMap::new();
    let (mut ids, mut entries) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for (pack, w) in order {
        let bad = |why: &str| git2::Error::from_str(&format!("{}: {why}", pack.pack.display()));
        // Where each entry of this pack went, by its offset here: a delta's base is found by it.
        let mut moved: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        for e in &w.entries {
            if let Some(at) = placed.get(&e.id) {
                moved.insert(e.range.start, *at);
                continue;
            }
            let start = out.len();
            let bytes = &w.bytes[e.range.clone()];
            let crc = match &e.delta {
                Some(OfsDelta { base, header, distance }) => {
                    let base_at = *moved.get(base).ok_or_else(|| bad("a delta whose base is not an entry"))?;
                    out.extend_from_slice(&bytes[..*header]);
                    packfile::ofs_encode((start - base_at) as u64, &mut out);
                    out.extend_from_slice(&bytes[header + distance..]);
                    packfile::crc32(&out[start..])
                }
                None => match delta_of_last(bytes, start, &mut last) {
                    Some(Stored::Delta(delta, base_at)) => {
                        packfile::entry_header(packfile::OFS_DELTA, delta.len(), &mut out);
                        packfile::ofs_encode((start - base_at) as u64, &mut out);
                        packfile::deflate(&delta, &mut out)?;
                        packfile::crc32(&out[start..])
                    }
                    Some(Stored::Compressed { size, zlib }) => {
                        packfile::entry_header(packfile::TREE, size, &mut out);
                        out.extend_from_slice(&zlib);
                        packfile::crc32(&out[start..])
                    }
                    None => {
                        out.extend_from_slice(bytes);
                        e.crc
                    }
                },
            };
            moved.insert(e.range.start, start);
            placed.insert(e.id, start);
            ids.push(e.id);
            entries.push((start as u64, crc));
        }
    }
    packfile::seal(&mut out);
    let merged = packfile::store_indexed(repo, &out, &ids, &entries)?;
    remove(&packs.iter().map(|(p, _)| *p).collect::<Vec<_>>(), merged.file_name().and_then(|n| n.to_str()));
    Ok(ids.len())
}

/// How a merge stores a large tree other than by copying its entry.
enum Stored {
    /// As a delta of the entry at this place of the merged pack.
    Delta(Vec<u8>, usize),
    /// Whole, compressed (a sync stored it without, [`packfile::STORED_TREE_BYTES`]): its size and
    /// its zlib stream.
    Compressed { size: usize, zlib: Vec<u8> },
}

/// For a whole entry at `at` of the merged pack: when it is a large tree whose last version was
/// seen, a delta of that version and where that version's entry is; when it is kept whole and was
/// stored without compression, the tree to compress. The tree becomes the last version either
/// way. None for any other object, or a compressed tree kept whole.
fn delta_of_last(entry: &[u8], at: usize, last: &mut std::collections::HashMap<Vec<u8>, Version>) -> Option<Stored> {
    let (code, size, header) = packfile::read_entry_header(entry)?;
    if code != packfile::TREE || size < DELTA_MIN_BYTES {
        return None;
    }
    let tree = packfile::inflate(&entry[header..], size)?;
    // The first entry's mode and name: the versions of one directory share it.
    let key = tree[..tree.iter().position(|b| *b == 0)?].to_vec();
    let delta = last
        .get(&key)
        .filter(|v| v.depth < DELTA_MAX_DEPTH)
        .and_then(|v| delta::tree_delta(&v.bytes, &tree).map(|d| (d, v.at, v.depth + 1)));
    let depth = delta.as_ref().map_or(0, |(_, _, depth)| *depth);
    // A zlib stream of stored blocks is longer than what it holds; a compressed one is not.
    let stored = match delta {
        Some((d, base_at, _)) => Some(Stored::Delta(d, base_at)),
        None if entry.len() - header >= size => {
            let mut zlib = Vec::new();
            packfile::deflate(&tree, &mut zlib).ok().map(|()| Stored::Compressed { size, zlib })
        }
        None => None,
    };
    last.insert(key, Version { bytes: tree, at, depth });
    stored
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
            let meta = std::fs::metadata(&pack).ok()?;
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            Some(Pack { pack, idx, bytes: meta.len(), modified })
        })
        .collect()
}

/// What a pack index (version 2, SHA-1) lists, in its order (by id).
struct Index {
    ids: Vec<Oid>,
    crcs: Vec<u32>,
    offsets: Vec<u64>,
}

fn read_index(idx: &Path) -> Result<Index, git2::Error> {
    let bad = |why: &str| git2::Error::from_str(&format!("{}: {why}", idx.display()));
    let bytes = std::fs::read(idx).map_err(|e| bad(&e.to_string()))?;
    // Header: the magic "\377tOc", version 2; then 256 cumulative counts, the last the total; the
    // ids, their CRC-32s, their 31-bit offsets or places in the table of 64-bit ones that follows.
    const FANOUT: usize = 8;
    const IDS: usize = FANOUT + 256 * 4;
    if bytes.len() < IDS || bytes[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(bad("not a version 2 pack index"));
    }
    let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let count = word(IDS - 4) as usize;
    let (crcs_at, offsets_at) = (IDS + count * 20, IDS + count * 24);
    let large_at = offsets_at + count * 4;
    if bytes.len() < large_at {
        return Err(bad("shorter than the objects it counts"));
    }
    let ids = bytes[IDS..crcs_at].chunks_exact(20).map(Oid::from_bytes).collect::<Result<Vec<_>, _>>()?;
    let crcs = (0..count).map(|i| word(crcs_at + i * 4)).collect();
    let mut offsets = Vec::with_capacity(count);
    for i in 0..count {
        let small = word(offsets_at + i * 4);
        offsets.push(if small & (1 << 31) == 0 {
            u64::from(small)
        } else {
            let at = large_at + (small & !(1 << 31)) as usize * 8;
            let slot = bytes.get(at..at + 8).ok_or_else(|| bad("a large offset past the table"))?;
            u64::from_be_bytes(slot.try_into().map_err(|_| bad("a large offset past the table"))?)
        });
    }
    Ok(Index { ids, crcs, offsets })
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

    /// A pack of whole objects, as a sync writes one ([`packfile`]).
    fn write_whole_pack(repo: &Repository, tag: &str, count: usize) -> Vec<Oid> {
        let blobs: Vec<Vec<u8>> = (0..count).map(|i| format!("{tag} object {i}\n").into_bytes()).collect();
        let ids: Vec<Oid> = blobs.iter().map(|b| Oid::hash_object(git2::ObjectType::Blob, b).unwrap()).collect();
        let objects: Vec<(git2::ObjectType, &[u8])> = blobs.iter().map(|b| (git2::ObjectType::Blob, &b[..])).collect();
        let built = packfile::build(&objects).unwrap();
        packfile::store_indexed(repo, &built.bytes, &ids, &built.entries).unwrap();
        ids
    }

    #[test]
    fn packs_of_whole_objects_are_merged_by_copying_each_object_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("cache.git")).unwrap();
        let mut ids = Vec::new();
        for sync in 0..=PACK_LIMIT {
            ids.extend(write_whole_pack(&repo, &format!("sync {sync}"), 4));
        }
        // The same object in two packs is copied once.
        ids.extend(write_whole_pack(&repo, "sync 0", 2));
        let merged = merge_when_many(&repo, PACK_LIMIT).unwrap().expect("merged past the limit");
        assert_eq!(merged, Merged { packs: PACK_LIMIT + 2, objects: (PACK_LIMIT + 1) * 4 });
        assert_eq!(packs(&repo), 1);
        let fresh = Repository::open_bare(repo.path()).unwrap();
        for id in &ids {
            fresh.find_blob(*id).unwrap_or_else(|e| panic!("{id} lost: {e}"));
        }
        // git checks the merged pack against its index, entry by entry.
        let idx = list(&repo.path().join("objects/pack")).remove(0).idx;
        let out = std::process::Command::new("git").arg("verify-pack").arg(&idx).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn a_pack_with_deltas_named_by_id_is_not_merged_by_copying() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("cache.git")).unwrap();
        let scratch = Repository::init_bare(dir.path().join("scratch.git")).unwrap();
        // Large and alike: libgit2's pack builder stores most as deltas of another.
        let base = "apiVersion: v1\nkind: ConfigMap\n".repeat(400);
        let mut builder = scratch.packbuilder().unwrap();
        for i in 0..10 {
            builder.insert_object(scratch.blob(format!("{base}# {i}\n").as_bytes()).unwrap(), None).unwrap();
        }
        builder.write(&repo.path().join("objects/pack"), 0).unwrap();
        write_whole_pack(&repo, "sync", 3);
        let mut all = list(&repo.path().join("objects/pack"));
        all.sort_by_key(|p| p.bytes);
        assert!(copyable(&all[0]).unwrap().is_some(), "a sync's pack is copied");
        assert!(copyable(&all[1]).unwrap().is_none(), "the builder's pack has deltas named by id");
    }

    /// A sync's pack: one version of a tier's 1,000-entry listing tree (entry `changed` moved to
    /// `id`) and a small blob, whole, as [`packfile`] writes it.
    fn write_listing_version(repo: &Repository, changed: usize, id: u8) -> (Oid, Vec<u8>) {
        let mut tree = Vec::new();
        for i in 0..1000 {
            tree.extend_from_slice(format!("40000 cell-{i:04}\0").as_bytes());
            // Ids as random as real ones, which zlib cannot shrink.
            let version = if i == changed { u32::from(id) } else { 0 };
            let entry_id = Oid::hash_object(git2::ObjectType::Blob, format!("{i} {version}").as_bytes()).unwrap();
            tree.extend_from_slice(entry_id.as_bytes());
        }
        let blob = format!("change {changed} {id}\n").into_bytes();
        let objects = [(git2::ObjectType::Tree, &tree[..]), (git2::ObjectType::Blob, &blob[..])];
        let ids = [
            Oid::hash_object(git2::ObjectType::Tree, &tree).unwrap(),
            Oid::hash_object(git2::ObjectType::Blob, &blob).unwrap(),
        ];
        let built = packfile::build(&objects).unwrap();
        packfile::store_indexed(repo, &built.bytes, &ids, &built.entries).unwrap();
        // Apart in time, as syncs are: a merge copies the older pack first.
        std::thread::sleep(std::time::Duration::from_millis(5));
        (ids[0], tree)
    }

    fn verify(repo: &Repository) {
        for p in list(&repo.path().join("objects/pack")) {
            let out = std::process::Command::new("git").arg("verify-pack").arg(&p.idx).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }

    #[test]
    fn versions_of_a_large_tree_are_merged_as_deltas_and_merged_again_intact() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("cache.git")).unwrap();
        let mut trees = Vec::new();
        for sync in 0..=PACK_LIMIT {
            trees.push(write_listing_version(&repo, sync * 7 % 1000, (sync % 200) as u8 + 2));
        }
        let whole: u64 = list(&repo.path().join("objects/pack")).iter().map(|p| p.bytes).sum();
        merge_when_many(&repo, PACK_LIMIT).unwrap().expect("merged past the limit");
        let merged = list(&repo.path().join("objects/pack"));
        assert_eq!(merged.len(), 1);
        // 51 versions of a 37 KB tree: one kept whole, compressed (a sync stores it without), the
        // others as deltas of tens of bytes.
        assert!(merged[0].bytes * 20 < whole, "{} bytes merged from {whole}", merged[0].bytes);
        assert!((merged[0].bytes as usize) < trees[0].1.len(), "the version kept whole is not compressed");
        verify(&repo);
        // Merged again with more syncs' packs: the deltas copied get their bases' new places. An
        // older pack holding the first sync's blob moves every entry after it closer to its base.
        let blob = b"change 0 2\n";
        let blob_id = Oid::hash_object(git2::ObjectType::Blob, blob).unwrap();
        let built = packfile::build(&[(git2::ObjectType::Blob, &blob[..])]).unwrap();
        let older = packfile::store_indexed(&repo, &built.bytes, &[blob_id], &built.entries).unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&older).unwrap().set_modified(hour_ago).unwrap();
        for sync in 0..=PACK_LIMIT {
            trees.push(write_listing_version(&repo, 999 - sync, 250));
        }
        merge_when_many(&repo, PACK_LIMIT).unwrap().expect("merged past the limit again");
        assert_eq!(packs(&repo), 1, "the first merge's pack, with its deltas, merged again");
        verify(&repo);
        let fresh = Repository::open_bare(repo.path()).unwrap();
        let odb = fresh.odb().unwrap();
        for (id, bytes) in &trees {
            let read = odb.read(*id).unwrap_or_else(|e| panic!("{id} lost: {e}"));
            assert_eq!(read.data(), &bytes[..], "{id} reads back other bytes");
        }
    }
}
