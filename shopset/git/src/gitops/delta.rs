//! Deltas between versions of one tree object, in git's delta format, for a cache's merged packs.
//!
//! A sync writes the directories that list every ShopSet of a tier (`shopsets/`, `applications/`,
//! about 45 KB each at 1,000 ShopSets) again at every change, whole: kept as they are, a cache
//! would grow by them at every sync. Two versions of such a tree share almost every entry, so when
//! [`super::packs`] merges a cache's packs, each version is stored as a delta of the one before it:
//! tens of bytes where the tree is 45 KB. The delta is found entry by entry (a tree is a sorted
//! list of entries), not by a general search: what git's pack builder takes seconds to find among
//! many large trees is here one pass over the two.

/// A delta that turns `base` into `target`, both tree objects (entries `<mode> <name>\0<id>`), or
/// None when they share too little for one to pay (less than half of `target`).
pub fn tree_delta(base: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    let base_entries = entries(base)?;
    let mut out = Vec::new();
    varint(base.len(), &mut out);
    varint(target.len(), &mut out);
    // Entries of `target` found in `base` (same bytes), as runs of base copied; the rest inserted.
    let mut copied = 0usize;
    let mut run: Option<(usize, usize)> = None;
    let mut literal: Vec<u8> = Vec::new();
    let mut b = 0;
    let mut at = 0;
    while at < target.len() {
        let len = entry_len(&target[at..])?;
        let entry = &target[at..at + len];
        // Base entries sort before this one by name are gone from the target: skip them.
        while b < base_entries.len() && name(&base[base_entries[b].clone()]) < name(entry) {
            b += 1;
        }
        let same = base_entries.get(b).is_some_and(|r| &base[r.clone()] == entry);
        if same {
            let r = base_entries[b].clone();
            flush_literal(&mut literal, &mut out);
            run = match run {
                Some((start, end)) if end == r.start => Some((start, r.end)),
                Some((start, end)) => {
                    copy(start, end - start, &mut out);
                    Some((r.start, r.end))
                }
                None => Some((r.start, r.end)),
            };
            copied += len;
            b += 1;
        } else {
            if let Some((start, end)) = run.take() {
                copy(start, end - start, &mut out);
            }
            literal.extend_from_slice(entry);
        }
        at += len;
    }
    if let Some((start, end)) = run {
        copy(start, end - start, &mut out);
    }
    flush_literal(&mut literal, &mut out);
    (copied * 2 >= target.len() && out.len() < target.len() / 2).then_some(out)
}

/// The byte ranges of a tree's entries; None when it is not a well-formed tree.
fn entries(tree: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < tree.len() {
        let len = entry_len(&tree[at..])?;
        out.push(at..at + len);
        at += len;
    }
    Some(out)
}

/// The length of the entry at the start of `bytes`: mode, space, name, NUL, 20 bytes of id.
fn entry_len(bytes: &[u8]) -> Option<usize> {
    let nul = bytes.iter().position(|b| *b == 0)?;
    let len = nul + 1 + 20;
    (len <= bytes.len()).then_some(len)
}

/// An entry's name, with the mode before it left out: entries are sorted by name (a directory's
/// as if it ended in `/`, which sorts the same here since names within one tree are unique).
fn name(entry: &[u8]) -> &[u8] {
    let nul = entry.iter().position(|b| *b == 0).unwrap_or(entry.len());
    let space = entry[..nul].iter().position(|b| *b == b' ').map_or(0, |s| s + 1);
    &entry[space..nul]
}

/// A size in a delta's header: 7 bits a byte, low bits first.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Copy instructions for `len` bytes of the base from `offset`, each at most 0xffffff bytes.
fn copy(mut offset: usize, mut len: usize, out: &mut Vec<u8>) {
    while len > 0 {
        let chunk = len.min(0xff_ffff);
        let at = out.len();
        out.push(0x80);
        for i in 0..4 {
            let byte = ((offset >> (8 * i)) & 0xff) as u8;
            if byte != 0 {
                out[at] |= 1 << i;
                out.push(byte);
            }
        }
        for i in 0..3 {
            let byte = ((chunk >> (8 * i)) & 0xff) as u8;
            if byte != 0 {
                out[at] |= 0x10 << i;
                out.push(byte);
            }
        }
        offset += chunk;
        len -= chunk;
    }
}

/// Insert instructions for the literal bytes gathered, 127 at most each.
fn flush_literal(literal: &mut Vec<u8>, out: &mut Vec<u8>) {
    for chunk in literal.chunks(0x7f) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    literal.clear();
}

/// Applies a delta to `base` (git's algorithm); for tests, which check what git and libgit2 read.
#[cfg(test)]
pub fn apply(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    fn size(delta: &[u8], at: &mut usize) -> Option<usize> {
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let byte = *delta.get(*at)?;
            *at += 1;
            n |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return Some(n);
            }
        }
    }
    let mut at = 0;
    if size(delta, &mut at)? != base.len() {
        return None;
    }
    let want = size(delta, &mut at)?;
    let mut out = Vec::with_capacity(want);
    while at < delta.len() {
        let op = delta[at];
        at += 1;
        if op & 0x80 != 0 {
            let (mut offset, mut len) = (0usize, 0usize);
            for i in 0..4 {
                if op & (1 << i) != 0 {
                    offset |= usize::from(*delta.get(at)?) << (8 * i);
                    at += 1;
                }
            }
            for i in 0..3 {
                if op & (0x10 << i) != 0 {
                    len |= usize::from(*delta.get(at)?) << (8 * i);
                    at += 1;
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            out.extend_from_slice(base.get(offset..offset + len)?);
        } else if op != 0 {
            out.extend_from_slice(delta.get(at..at + usize::from(op))?);
            at += usize::from(op);
        } else {
            return None;
        }
    }
    (out.len() == want).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, id) in entries {
            out.extend_from_slice(format!("40000 {name}\0").as_bytes());
            out.extend_from_slice(&[*id; 20]);
        }
        out
    }

    fn cells(n: usize, changed: &[(usize, u8)]) -> Vec<u8> {
        let names: Vec<String> = (0..n).map(|i| format!("cell-{i:04}")).collect();
        let entries: Vec<(&str, u8)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), changed.iter().find(|(c, _)| *c == i).map_or(1, |(_, id)| *id)))
            .collect();
        tree(&entries)
    }

    #[test]
    fn versions_of_a_large_tree_become_small_deltas_that_give_the_target_back() {
        let base = cells(1000, &[]);
        let cases = [
            ("one entry changed", cells(1000, &[(500, 2)])),
            ("three changed far apart", cells(1000, &[(0, 2), (499, 3), (999, 4)])),
            ("one added", {
                let mut t = base.clone();
                let at = base.len() / 2 - base.len() / 2 % 36;
                let mut added = b"40000 cell-0499a\0".to_vec();
                added.extend_from_slice(&[9; 20]);
                t.splice(at..at, added);
                t
            }),
            ("one removed", cells(999, &[])),
            ("the same", base.clone()),
        ];
        for (what, target) in cases {
            let delta = tree_delta(&base, &target).unwrap_or_else(|| panic!("{what}: no delta"));
            assert!(delta.len() < 200, "{what}: a delta of {} bytes", delta.len());
            assert_eq!(apply(&base, &delta).as_deref(), Some(&target[..]), "{what}");
        }
    }

    #[test]
    fn trees_that_share_little_get_no_delta() {
        let base = cells(100, &[]);
        let other: Vec<(usize, u8)> = (0..100).map(|i| (i, 7)).collect();
        assert!(tree_delta(&base, &cells(100, &other)).is_none());
        assert!(tree_delta(b"not a tree", &base).is_none());
    }
}
