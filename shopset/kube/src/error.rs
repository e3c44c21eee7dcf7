//! Why a reconcile failed, each kind with its condition reason and whether retrying can help.
//! Messages read like the rest of ShopSet's errors: what, where, and the fix; never a Rust dump.

use shopset_git::sync::SyncError;

use crate::argocd::ArgoError;
use crate::credentials::CredentialsError;
use crate::repo_creds::RepoCredsError;
use crate::tenancy::LocalUrlRefused;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Tier, its ShopSets or Configurations are invalid: nothing changes until they do.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A repository on the controller's own filesystem, refused without `--allow-local-urls`.
    #[error(transparent)]
    LocalUrl(#[from] LocalUrlRefused),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Argo(#[from] ArgoError),
    /// Argo CD's credential templates for the Tier's repositories could not be written.
    #[error(transparent)]
    RepoCreds(#[from] RepoCredsError),
    /// The API server did not answer as it should (down, refused, or a watch cache not filled).
    #[error("Kubernetes API: {0}")]
    Kube(String),
    /// A bug of ours (a sync task panicked): said so, not blamed on the cluster.
    #[error("internal error: {0}; fix: report this bug with the controller's log")]
    Internal(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(api_message(&e))
    }
}

impl Error {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "InvalidSpec",
            Error::Credentials(_) => "CredentialsMissing",
            Error::LocalUrl(_) => crate::tenancy::LOCAL_URL_REFUSED,
            Error::Sync(e) => e.reason(),
            Error::Argo(_) => "ApplicationsFailed",
            Error::RepoCreds(_) => "RepoCredsFailed",
            Error::Kube(_) => "KubernetesUnavailable",
            Error::Internal(_) => "InternalError",
        }
    }

    /// Whether retrying cannot help: only a change of the Tier, its ShopSets, Configurations or
    /// templates can, and the watches reconcile on such a change. The Tier is Stalled meanwhile.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Error::Invalid(_) | Error::LocalUrl(_) | Error::Sync(SyncError::Render(_)))
    }
}

/// A Kubernetes API error in words: the API server's own message for a refusal (`namespaces
/// "argocd" not found`), not the client's debug form of it.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_refusal_reads_as_the_servers_message() {
        let status = kube::core::Status::failure(r#"namespaces "argocd" not found"#, "NotFound").with_code(404);
        let e = kube::Error::Api(Box::new(status));
        assert_eq!(api_message(&e), r#"namespaces "argocd" not found"#);
        let err: Error = e.into();
        assert!(!err.to_string().contains("Status {"), "{err}");
    }
}
