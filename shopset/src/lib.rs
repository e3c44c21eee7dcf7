//! ShopSet: tiered GitOps for many copies ("ShopSets", cells) of one application.
//!
//! All the logic lives here; `shopset-controller` and `shopctl` are thin shells over it, so every
//! step the controller takes can be taken by hand with the identical result.

pub mod api;
pub mod argocd;
pub mod doctor;
pub mod github;
pub mod gitops;
pub mod inspect;
pub mod lease;
pub mod manifests;
pub mod metrics;
pub mod promote;
pub mod quickstart;
pub mod reconcile;
pub mod render;
pub mod revision;
pub mod rules;
pub mod sync;
pub mod validation;
pub mod webhook;
