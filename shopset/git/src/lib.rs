//! ShopSet's git layer: the engine ([`gitops`]: a cache of bare repositories, ls-remote, fetch,
//! commits written without a work tree, pushes under a lease), one tier's [`sync`] (resolve ->
//! render -> plan the commit -> push with retry), [`promote`] and rollback, and GitHub pull
//! requests ([`github`]). Knows git, not Kubernetes.

pub mod approvals;
pub mod fault;
pub mod github;
pub mod gitops;
mod message;
pub mod promote;
pub mod quickstart;
pub mod state;
pub mod sync;
