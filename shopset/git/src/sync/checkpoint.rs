//! What a successful sync saw: with it, telling that the next sync would change nothing costs one
//! ls-remote per repository (the poll of an idle tier), not a render.

use std::collections::BTreeMap;

use shopset_core::api::ResourceExt;
use shopset_core::manifests::TierInput;

use super::resolve::current_heads;
use super::{SyncError, SyncReport};
use crate::gitops::{Auth, GitCache};

/// The input and branch heads of a successful sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    input: u64,
    heads: BTreeMap<String, Option<String>>,
}

impl Checkpoint {
    /// The checkpoint of a sync of `input` that reported `report`.
    pub fn after(input: &TierInput, report: &SyncReport) -> Self {
        // The heads the sync left, in the form of `current_heads`.
        let heads = report.branches.iter().map(|b| (format!("{}#{}", b.url, b.branch), b.head.clone())).collect();
        Self { input: fingerprint(input), heads }
    }

    /// Whether neither the input nor any branch has moved since; reads only the remote heads.
    pub fn unchanged(&self, cache: &GitCache, auth: &Auth, input: &TierInput) -> Result<bool, SyncError> {
        if fingerprint(input) != self.input {
            return Ok(false);
        }
        Ok(current_heads(cache, auth, input)? == self.heads)
    }
}

/// A stable hash of everything the render reads besides the pinned commits.
fn fingerprint(input: &TierInput) -> u64 {
    let value = serde_json::json!({
        "tier": input.tier.spec,
        "name": input.tier.name_any(),
        "from": input.from.as_ref().map(|t| t.branch()),
        "shopsets": input.shopsets.iter().map(|s| (s.name_any(), &s.spec)).collect::<Vec<_>>(),
        "configurations": input.configurations.iter().map(|c| (c.name_any(), &c.spec)).collect::<Vec<_>>(),
    });
    shopset_core::fingerprint::fnv1a(value.to_string().as_bytes())
}
