//! The render memo kept across processes: `shopctl sync` is a new process each time, and without
//! it would render every unchanged ShopSet of a tier again. A memo is the same data the renderer
//! keeps in memory (each ShopSet's files by the key of everything its templates read), written to
//! a file under the cache directory.
//!
//! Never trusted blindly: a file is served only when its checksum holds, it names the tier asked
//! for, and it was written by a renderer of the same identity (this build's source, its locked
//! dependencies and the templates loaded); otherwise it is ignored and the tier renders afresh.
//! Even a served memo only answers for inputs whose key equals the key it was written under,
//! exactly as in memory: a change of any input renders again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Renderer, ShopSetFiles, TierMemo};
use crate::fingerprint::{checksum64, fnv1a};

/// The first bytes of a memo file, with the format's version.
const MAGIC: &[u8] = b"shopset render memo v1\n";

/// Why a memo was not served. None of these is an error of the sync: the tier renders afresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoRejected {
    #[error("not a render memo of this format")]
    NotAMemo,
    #[error("damaged (checksum or structure does not hold)")]
    Damaged,
    #[error("written by another renderer (another build or other templates)")]
    OtherRenderer,
    #[error("written for tier {found:?}, not {wanted:?}")]
    OtherTier { wanted: String, found: String },
}

impl Renderer {
    /// The memo of the last render of `tier` as bytes for [`Renderer::restore_memo`] in another
    /// process; None when there is none, or when it is what was last restored or saved.
    pub fn saved_memo(&self, tier: &str) -> Option<Vec<u8>> {
        let mut memos = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        let memo = memos.get_mut(tier).filter(|m| m.changed)?;
        memo.changed = false;
        let mut body = Vec::new();
        put(&mut body, self.identity.as_bytes());
        put(&mut body, tier.as_bytes());
        put(&mut body, memo.tier_key.as_bytes());
        // Sorted, so one memo always gives the same bytes.
        let shopsets = memo.last.iter().flat_map(|last| last.shopsets.iter());
        let mut keyed: Vec<(String, &ShopSetFiles)> = shopsets
            .map(|(name, m)| (super::shopset_key(name, &m.namespace, &m.shopset.spec, &m.config_path), &m.files))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        put_len(&mut body, keyed.len());
        for (key, files) in keyed {
            put(&mut body, key.as_bytes());
            put_len(&mut body, files.len());
            for (path, bytes) in files.iter() {
                put(&mut body, path.as_bytes());
                put(&mut body, bytes);
            }
        }
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&checksum64(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Some(out)
    }

    /// Takes a memo written by [`Renderer::saved_memo`] as the last render of `tier`, so the next
    /// render reuses the files of every ShopSet whose input did not change. Returns how many
    /// ShopSets it holds; a memo that is damaged, of another tier or of another renderer is
    /// refused and nothing changes.
    pub fn restore_memo(&self, tier: &str, bytes: &[u8]) -> Result<usize, MemoRejected> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(MemoRejected::NotAMemo)?;
        let (sum, body) = rest.split_at_checked(8).ok_or(MemoRejected::Damaged)?;
        let mut expected = [0u8; 8];
        expected.copy_from_slice(sum);
        if checksum64(body) != u64::from_le_bytes(expected) {
            return Err(MemoRejected::Damaged);
        }
        let mut r = Reader(body);
        if r.bytes()? != self.identity.as_bytes() {
            return Err(MemoRejected::OtherRenderer);
        }
        let found = r.text()?;
        if found != tier {
            return Err(MemoRejected::OtherTier { wanted: tier.into(), found });
        }
        let tier_key = r.text()?;
        let count = r.len()?;
        let mut shopsets = HashMap::with_capacity(count.min(body.len()));
        for _ in 0..count {
            let key = r.text()?;
            let n = r.len()?;
            let mut files = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                let path = r.text()?;
                files.push((Arc::from(path), Arc::from(r.bytes()?)));
            }
            let files: ShopSetFiles = Arc::new(files);
            shopsets.insert(key, files);
        }
        if !r.0.is_empty() {
            return Err(MemoRejected::Damaged);
        }
        self.memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tier.to_string(), TierMemo { tier_key, restored: shopsets, ..TierMemo::default() });
        Ok(count)
    }

    /// Restores the memo of `tier` from its file under `dir` ([`memo_path`]), if there is one this
    /// renderer may serve; anything else is ignored (and said at debug level). Returns how many
    /// ShopSets it holds.
    pub fn load_memo_file(&self, dir: &Path, namespace: &str, tier: &str) -> usize {
        let path = memo_path(dir, namespace, tier);
        let Ok(bytes) = std::fs::read(&path) else { return 0 };
        match self.restore_memo(tier, &bytes) {
            Ok(n) => n,
            Err(why) => {
                tracing::debug!(path = %path.display(), %why, "render memo ignored; rendering afresh");
                0
            }
        }
    }

    /// Writes the memo of `tier` to its file under `dir` when it changed since it was restored or
    /// saved (written aside and renamed, so a reader never sees half a file). Returns whether it wrote.
    pub fn save_memo_file(&self, dir: &Path, namespace: &str, tier: &str) -> std::io::Result<bool> {
        let Some(bytes) = self.saved_memo(tier) else { return Ok(false) };
        let path = memo_path(dir, namespace, tier);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let aside = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&aside, &bytes)?;
        std::fs::rename(&aside, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&aside);
        })?;
        Ok(true)
    }
}

/// The memo file of a tier under a cache directory: `render-memo/<tier>-<hash>.memo`, the hash
/// of namespace and name (so tiers of two namespaces never share one).
pub fn memo_path(dir: &Path, namespace: &str, tier: &str) -> PathBuf {
    let readable: String =
        tier.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
    let hash = fnv1a(format!("{namespace}/{tier}").as_bytes());
    dir.join("render-memo").join(format!("{readable}-{hash:016x}.memo"))
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // A memo holds far fewer than 4 G of anything; a length that does not fit is written as
    // u32::MAX, which no reader accepts (the checksum holds, the structure does not).
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Reads what [`put`] wrote; anything short or malformed is [`MemoRejected::Damaged`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn len(&mut self) -> Result<usize, MemoRejected> {
        let (n, rest) = self.0.split_first_chunk::<4>().ok_or(MemoRejected::Damaged)?;
        self.0 = rest;
        let n = u32::from_le_bytes(*n);
        if n == u32::MAX {
            return Err(MemoRejected::Damaged);
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], MemoRejected> {
        let n = self.len()?;
        let (bytes, rest) = self.0.split_at_checked(n).ok_or(MemoRejected::Damaged)?;
        self.0 = rest;
        Ok(bytes)
    }

    fn text(&mut self) -> Result<String, MemoRejected> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| MemoRejected::Damaged)
    }
}
