//! ShopSet's cluster layer: the Tier [`reconcile`]r and what it writes, [`auto_promotion`], the Argo CD
//! Applications ([`argocd`]), leader election ([`lease`]), [`health`] for the probes, GitHub push [`webhook`]s, [`metrics`],
//! the promotion [`gate`], the [`credentials`] Secret, what a tenant may ask ([`tenancy`]), Argo CD's credential templates
//! ([`repo_creds`]) and `doctor`'s analyzers.

pub mod argocd;
pub mod auto_promotion;
pub mod credentials;
pub mod doctor;
pub mod error;
pub mod gate;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod repo_creds;
pub mod status;
pub mod tenancy;
pub mod webhook;
