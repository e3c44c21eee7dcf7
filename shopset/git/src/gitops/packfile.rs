//! Pack files (version 2) built from objects whose ids and bytes we hold, and their indexes.
//!
//! A sync's new objects are stored as one pack and its index, written here: one file and its
//! index to create, where loose objects are a file each (creating files is what a file system that
//! deleted many of late makes dear), and no object is inflated and hashed again to index it, as
//! libgit2's indexer would: the ids are known. The same pack is what the push sends. A cache then
//! gains a pack a sync; [`super::packs`] merges such packs by copying their entries as they are.

use std::path::PathBuf;

use git2::{ObjectType, Oid, Repository};

/// A pack as bytes, with where each object's entry starts and the CRC-32 of the entry (what an
/// index records), in the order the objects were given.
pub struct Built {
    pub bytes: Vec<u8>,
    pub entries: Vec<(u64, u32)>,
}

/// Trees this large are stored in a sync's pack without compression: the directories that list a
/// tier (about 45 KB each at 1,000 ShopSets) are written again at every change, and compressing
/// them was most of what one change cost more in a large tier than in a small one. A merge of the
/// cache's packs stores them as deltas, and compresses the versions it keeps whole
/// ([`super::packs`]).
pub const STORED_TREE_BYTES: usize = 16 * 1024;

/// A pack of these objects, whole (no deltas), each compressed for speed but large trees
/// ([`STORED_TREE_BYTES`]).
pub fn build(objects: &[(ObjectType, &[u8])]) -> Result<Built, git2::Error> {
    let mut out = header(objects.len(), objects.iter().map(|(_, b)| b.len() + 16).sum())?;
    let mut entries = Vec::with_capacity(objects.len());
    for (kind, bytes) in objects {
        let start = out.len();
        let code: u8 = match kind {
            ObjectType::Commit => 1,
            ObjectType::Tree => TREE,
            ObjectType::Blob => 3,
            ObjectType::Tag => 4,
            _ => return Err(git2::Error::from_str("an object of no type in a pack")),
        };
        entry_header(code, bytes.len(), &mut out);
        let stored = *kind == ObjectType::Tree && bytes.len() >= STORED_TREE_BYTES;
        deflate_at(bytes, if stored { 0 } else { libz_sys::Z_BEST_SPEED }, &mut out)?;
        entries.push((start as u64, crc32(&out[start..])));
    }
    seal(&mut out);
    Ok(Built { bytes: out, entries })
}

/// Type code of a tree entry.
pub const TREE: u8 = 2;

/// Type code of a delta entry whose base is named by its distance back in the same pack.
pub const OFS_DELTA: u8 = 6;

/// Appends an entry's header: its type code and the size of what it inflates to (4 bits of size
/// in the first byte, then 7 bits a byte, low bits first).
pub fn entry_header(code: u8, size: usize, out: &mut Vec<u8>) {
    let mut size = size;
    let mut byte = (code << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// Reads an entry's header at the start of `bytes`: type code, inflated size, header length.
pub fn read_entry_header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let first = *bytes.first()?;
    let code = (first >> 4) & 7;
    let mut size = usize::from(first & 0x0f);
    let (mut shift, mut at, mut byte) = (4u32, 1, first);
    while byte & 0x80 != 0 {
        byte = *bytes.get(at)?;
        size |= usize::from(byte & 0x7f).checked_shl(shift)?;
        shift += 7;
        at += 1;
    }
    Some((code, size, at))
}

/// Appends the distance back to an OFS_DELTA entry's base, as git writes it (big-endian groups of
/// 7 bits, each but the last with its high bit set and one less than its value).
pub fn ofs_encode(mut distance: u64, out: &mut Vec<u8>) {
    let mut groups = vec![(distance & 0x7f) as u8];
    distance >>= 7;
    while distance > 0 {
        distance -= 1;
        groups.push(0x80 | (distance & 0x7f) as u8);
        distance >>= 7;
    }
    out.extend(groups.iter().rev());
}

/// Reads the distance [`ofs_encode`] wrote at the start of `bytes`: the distance and its length.
pub fn ofs_decode(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut byte = *bytes.first()?;
    let mut distance = u64::from(byte & 0x7f);
    let mut at = 1;
    while byte & 0x80 != 0 {
        byte = *bytes.get(at)?;
        distance = distance.checked_add(1)?.checked_shl(7)? | u64::from(byte & 0x7f);
        at += 1;
    }
    Some((distance, at))
}

/// The header of a pack of `count` objects (version 2), with room for `bytes` more.
pub fn header(count: usize, bytes: usize) -> Result<Vec<u8>, git2::Error> {
    let count = u32::try_from(count).map_err(|_| git2::Error::from_str("too many objects for one pack"))?;
    let mut out = Vec::with_capacity(12 + bytes + 20);
    out.extend_from_slice(b"PACK");
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    Ok(out)
}

/// Appends a pack's trailer: the SHA-1 of everything before it.
pub fn seal(pack: &mut Vec<u8>) {
    use sha1::Digest;
    let sum = sha1::Sha1::digest(&pack[..]);
    pack.extend_from_slice(&sum);
}

/// Indexes a sealed pack whose objects are `ids`, their entries at `entries`, and stores both
/// (pack first, index last, each renamed into place); returns the path of the pack.
pub fn store_indexed(
    repo: &Repository,
    pack: &[u8],
    ids: &[Oid],
    entries: &[(u64, u32)],
) -> Result<PathBuf, git2::Error> {
    let checksum = &pack[pack.len().saturating_sub(20)..];
    store(repo, pack, &index(ids, entries, checksum)?)?;
    Ok(repo.path().join("objects").join("pack").join(format!("pack-{}.pack", hex(checksum))))
}

/// Inflates the zlib stream at the start of `bytes` into `size` bytes; None when it is not one.
pub fn inflate(bytes: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; size];
    let mut written = libz_sys::uLong::try_from(size).ok()?;
    let source_len = libz_sys::uLong::try_from(bytes.len()).ok()?;
    // SAFETY: `size` bytes at `out` for the output, `bytes` for the input.
    let rc = unsafe { libz_sys::uncompress(out.as_mut_ptr(), &mut written, bytes.as_ptr(), source_len) };
    (rc == libz_sys::Z_OK && usize::try_from(written).ok()? == size).then_some(out)
}

/// Appends `bytes` as one zlib stream at the fastest level, as libgit2 writes loose objects.
pub fn deflate(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), git2::Error> {
    deflate_at(bytes, libz_sys::Z_BEST_SPEED, out)
}

/// Appends `bytes` as one zlib stream at `level` (0: stored, not compressed).
fn deflate_at(bytes: &[u8], level: std::ffi::c_int, out: &mut Vec<u8>) -> Result<(), git2::Error> {
    let failed = || git2::Error::from_str("zlib could not compress an object");
    let source_len = libz_sys::uLong::try_from(bytes.len()).map_err(|_| failed())?;
    // SAFETY: pure function of a length.
    let bound = unsafe { libz_sys::compressBound(source_len) };
    let start = out.len();
    out.resize(start + usize::try_from(bound).map_err(|_| failed())?, 0);
    let mut written = bound;
    // SAFETY: `bound` bytes free at `start` for the output, `bytes` for the input.
    let rc = unsafe { libz_sys::compress2(out[start..].as_mut_ptr(), &mut written, bytes.as_ptr(), source_len, level) };
    if rc != libz_sys::Z_OK {
        return Err(failed());
    }
    out.truncate(start + usize::try_from(written).map_err(|_| failed())?);
    Ok(())
}

/// CRC-32 (zlib's) of an entry's bytes, as a pack index records it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc: libz_sys::uLong = 0;
    // Chunks: zlib takes a 32-bit length.
    for chunk in bytes.chunks(1 << 30) {
        // SAFETY: the pointer and length of a live slice; the length fits (chunks of 2^30).
        crc = unsafe { libz_sys::crc32(crc, chunk.as_ptr(), chunk.len() as libz_sys::uInt) };
    }
    crc as u32
}

/// The index (version 2) of a pack whose objects are `ids`, their entries at `entries` (offset
/// and CRC-32, in the same order), its trailer `checksum`.
fn index(ids: &[Oid], entries: &[(u64, u32)], checksum: &[u8]) -> Result<Vec<u8>, git2::Error> {
    use sha1::Digest;
    if ids.len() != entries.len() || checksum.len() != 20 {
        return Err(git2::Error::from_str("a pack index of mismatched parts"));
    }
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|a, b| ids[*a].as_bytes().cmp(ids[*b].as_bytes()));
    if order.windows(2).any(|w| ids[w[0]] == ids[w[1]]) {
        return Err(git2::Error::from_str("an object twice in one pack"));
    }
    let mut out = Vec::with_capacity(8 + 1024 + ids.len() * 28 + 40);
    out.extend_from_slice(&[0xff, b't', b'O', b'c', 0, 0, 0, 2]);
    let mut fanout = [0u32; 256];
    for id in ids {
        fanout[usize::from(id.as_bytes()[0])] += 1;
    }
    let mut running = 0u32;
    for count in fanout {
        running += count;
        out.extend_from_slice(&running.to_be_bytes());
    }
    for &i in &order {
        out.extend_from_slice(ids[i].as_bytes());
    }
    for &i in &order {
        out.extend_from_slice(&entries[i].1.to_be_bytes());
    }
    // Offsets past 2^31 go to a table of 64-bit ones, the 32-bit slot naming their place there.
    let mut large = Vec::new();
    for &i in &order {
        let offset = entries[i].0;
        if offset < 1 << 31 {
            out.extend_from_slice(&(offset as u32).to_be_bytes());
        } else {
            out.extend_from_slice(&((1u32 << 31) | large.len() as u32).to_be_bytes());
            large.push(offset);
        }
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(checksum);
    let sum = sha1::Sha1::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Stores a pack and its index in the repository's object store and makes it seen there: the pack
/// first, the index last (a pack is taken up only once its index is there), each written under a
/// temporary name and renamed.
fn store(repo: &Repository, pack: &[u8], idx: &[u8]) -> Result<(), git2::Error> {
    let dir = repo.path().join("objects").join("pack");
    let name = hex(&pack[pack.len().saturating_sub(20)..]);
    let write = |to: PathBuf, bytes: &[u8]| -> Result<(), git2::Error> {
        if to.exists() {
            return Ok(());
        }
        let failed = |e: std::io::Error| git2::Error::from_str(&format!("cannot write {}: {e}", to.display()));
        let mut tmp = tempfile::Builder::new().prefix("tmp_pack_").tempfile_in(&dir).map_err(failed)?;
        std::io::Write::write_all(&mut tmp, bytes).map_err(failed)?;
        tmp.persist(&to).map_err(|e| failed(e.error))?;
        Ok(())
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| git2::Error::from_str(&format!("cannot create {}: {e}", dir.display())))?;
    write(dir.join(format!("pack-{name}.pack")), pack)?;
    write(dir.join(format!("pack-{name}.idx")), idx)?;
    repo.odb()?.refresh()
}

/// How old a temporary pack file must be before [`sweep_temporaries`] takes it for a writer's
/// that died: a live writer renames its file into place within the second it wrote it.
pub const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the temporary files [`store`] left behind in `repo` when its process died between
/// writing and renaming one (`tmp_pack_*`, older than `older_than`); returns how many.
pub fn sweep_temporaries(repo: &Repository, older_than: std::time::Duration) -> usize {
    let dir = repo.path().join("objects").join("pack");
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_name().to_string_lossy().starts_with("tmp_pack_") {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified());
        let stale = modified.is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age >= older_than));
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(repository = %repo.path().display(), removed, "removed temporary pack files of a writer that died");
    }
    removed
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_a_dead_writer_left_are_swept_and_a_live_writers_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let packs = dir.path().join("objects").join("pack");
        std::fs::create_dir_all(&packs).expect("pack dir");
        let old = packs.join("tmp_pack_dead01");
        let young = packs.join("tmp_pack_live01");
        let other = packs.join("pack-0000.keep");
        for p in [&old, &young, &other] {
            std::fs::write(p, b"half a pack").expect("write");
        }
        let two_hours_ago = std::time::SystemTime::now() - 2 * STALE_TEMPORARY;
        for p in [&old, &other] {
            let f = std::fs::File::options().write(true).open(p).expect("open");
            f.set_modified(two_hours_ago).expect("age the file");
        }
        assert_eq!(sweep_temporaries(&repo, STALE_TEMPORARY), 1);
        assert!(!old.exists(), "a dead writer's temporary is left");
        assert!(young.exists(), "a live writer's temporary is gone");
        assert!(other.exists(), "a file that is not a temporary of ours is gone");
    }

    #[test]
    fn a_pack_and_index_written_here_are_read_by_libgit2_and_git() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let blobs: Vec<Vec<u8>> = (0..300).map(|i| format!("object {i}\n").repeat(i % 7 + 1).into_bytes()).collect();
        let objects: Vec<(ObjectType, &[u8])> = blobs.iter().map(|b| (ObjectType::Blob, &b[..])).collect();
        let ids: Vec<Oid> = blobs.iter().map(|b| Oid::hash_object(ObjectType::Blob, b).expect("hash")).collect();
        let built = build(&objects).expect("pack");
        let pack = store_indexed(&repo, &built.bytes, &ids, &built.entries).expect("store");
        let odb = repo.odb().expect("odb");
        for (id, bytes) in ids.iter().zip(&blobs) {
            assert_eq!(odb.read(*id).expect("read").data(), &bytes[..]);
        }
        // git checks every entry against the index: ids, CRCs, offsets, both checksums.
        let out = std::process::Command::new("git")
            .args(["verify-pack", "-v"])
            .arg(pack.with_extension("idx"))
            .output()
            .expect("git verify-pack");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("non delta: 300 objects"));
    }

    #[test]
    fn a_large_tree_is_stored_without_compression_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let mut tree = Vec::new();
        for i in 0..1000 {
            tree.extend_from_slice(format!("40000 cell-{i:04}\0").as_bytes());
            tree.extend_from_slice(
                Oid::hash_object(ObjectType::Blob, &i.to_string().into_bytes()).expect("id").as_bytes(),
            );
        }
        let small = b"100644 README.md\0aaaaaaaaaaaaaaaaaaaa".to_vec();
        let objects = [(ObjectType::Tree, &tree[..]), (ObjectType::Tree, &small[..])];
        let ids: Vec<Oid> = objects.iter().map(|(k, b)| Oid::hash_object(*k, b).expect("hash")).collect();
        let built = build(&objects).expect("pack");
        // The large tree's entry holds every byte of it (stored blocks); the small one is compressed.
        let large_entry = built.entries[1].0 - built.entries[0].0;
        assert!(tree.len() >= STORED_TREE_BYTES && large_entry as usize > tree.len(), "{large_entry} bytes");
        let pack = store_indexed(&repo, &built.bytes, &ids, &built.entries).expect("store");
        let odb = repo.odb().expect("odb");
        assert_eq!(odb.read(ids[0]).expect("read").data(), &tree[..]);
        assert_eq!(odb.read(ids[1]).expect("read").data(), &small[..]);
        let out = std::process::Command::new("git").arg("verify-pack").arg(pack.with_extension("idx")).output();
        let out = out.expect("git verify-pack");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn an_index_refuses_an_object_twice_and_mismatched_parts() {
        let id = Oid::hash_object(ObjectType::Blob, b"x").expect("hash");
        assert!(index(&[id, id], &[(12, 0), (20, 0)], &[0; 20]).is_err());
        assert!(index(&[id], &[], &[0; 20]).is_err());
    }

    #[test]
    fn large_offsets_go_to_the_table_of_64_bit_offsets() {
        let a = Oid::from_str("0100000000000000000000000000000000000000").expect("oid");
        let b = Oid::from_str("0200000000000000000000000000000000000000").expect("oid");
        let idx = index(&[a, b], &[(12, 7), (5 << 30, 9)], &[0; 20]).expect("index");
        let offsets = 8 + 1024 + 2 * 20 + 2 * 4;
        assert_eq!(idx[offsets..offsets + 4], 12u32.to_be_bytes());
        assert_eq!(idx[offsets + 4..offsets + 8], (1u32 << 31).to_be_bytes());
        assert_eq!(idx[offsets + 8..offsets + 16], (5u64 << 30).to_be_bytes());
    }
}
