//! ShopSet's core: what a Tier, a Configuration and a ShopSet are ([`api`]), the rules they must
//! follow ([`rules`], checked offline by [`validation`] and by the API server through the CRDs'
//! CEL), reading them from manifest files ([`manifests`]), choosing the ShopSet of a new shop
//! ([`placement`]), and rendering a tier's system branch
//! ([`render`] -> [`tree`]).
//!
//! No git, no Kubernetes client and no async runtime: everything here is a pure function of its
//! input, which is what lets the controller, `shopctl` and a person by hand agree byte for byte.

pub mod api;
pub mod duration;
pub mod fingerprint;
pub mod fleet;
pub mod manifests;
pub mod placement;
pub mod policy;
pub mod render;
pub mod repository;
pub mod revision;
pub mod rules;
pub mod tree;
pub mod validation;
