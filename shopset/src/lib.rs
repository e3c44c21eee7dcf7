//! ShopSet: tiered GitOps for many copies ("ShopSets", cells) of one application.
//!
//! All the logic lives in three crates, one per layer, each depending only on those below it:
//!
//! | layer | crate | knows |
//! |---|---|---|
//! | core | `shopset-core` | the API types and their rules, manifests, the renderer: pure functions |
//! | git | `shopset-git` | git: the engine, sync, promotion and rollback |
//! | kube | `shopset-kube` | the cluster: reconcile, Argo CD Applications, status, doctor, the gate |
//!
//! This crate puts them under one name, as the `kube` crate does for kube-core, kube-client and
//! kube-runtime. `shopset-controller` and `shopctl` are thin shells over it, so every step the
//! controller takes can be taken by hand with the identical result.

pub use shopset_core::{
    api, duration, fingerprint, fleet, manifests, placement, policy, render, repository, revision, rules, tree,
    validation,
};
pub use shopset_git::{approvals, fault, github, gitops, promote, quickstart, state, sync};
pub use shopset_kube::{
    argocd, credentials, doctor, error, gate, health, lease, metrics, reconcile, repo_creds, status, tenancy, webhook,
};
