//! Test support: real servers on loopback, started and stopped by tests.
//!
//! Everything here drives upstream tools (git, lighttpd, etcd, kube-apiserver, kubectl,
//! kustomize, Argo CD, kwok, Redis) installed by `e2e/install-tools`; nothing stands in for them.
//! The one stand-in is [`github`], for GitHub's REST API, which tests cannot reach.

pub mod argocd;
pub mod controlplane;
pub mod faulty_api;
pub mod github;
pub mod gitserver;
pub mod storm;
pub mod tools;
