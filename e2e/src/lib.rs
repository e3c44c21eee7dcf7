//! Test support: real servers on loopback, started and stopped by tests.
//!
//! Everything here drives upstream tools (git, lighttpd, etcd, kube-apiserver, kubectl,
//! kustomize) installed by `e2e/install-tools`; nothing stands in for them.

pub mod controlplane;
pub mod gitserver;
pub mod tools;
