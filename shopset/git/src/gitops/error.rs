//! What went wrong talking to a repository, sorted into the kinds a person acts on differently.

use std::path::PathBuf;

/// What went wrong talking to a repository. Messages carry the URL (validated to hold no
/// credentials) and git's words, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "authentication to {url} failed ({detail}); fix: check the username and password/token or SSH key in the credentials (Secret or SHOPSET_GIT_* environment)"
    )]
    Auth { url: String, detail: String },
    #[error("SSH host key check of {url} failed: {detail}")]
    HostKey { url: String, detail: String },
    #[error("repository {url} is unreachable: {detail}; fix: check the URL and that the git server is up")]
    Unreachable { url: String, detail: String },
    #[error("push to {url} branch {branch} was rejected: {reason}")]
    Rejected { url: String, branch: String, reason: String },
    #[error("branch {branch} of {url} moved while we worked (expected {expected}, found {found})")]
    LeaseBroken { url: String, branch: String, expected: String, found: String },
    #[error("git error on {url}: {detail}")]
    Other { url: String, detail: String },
    #[error("git cache {path}: {detail}")]
    Cache { path: PathBuf, detail: String },
}

impl GitError {
    pub(crate) fn from_git(url: &str, err: git2::Error) -> Self {
        let detail = err.message().to_string();
        let url = url.to_string();
        match (err.class(), err.code()) {
            (_, git2::ErrorCode::Auth) => GitError::Auth { url, detail },
            (git2::ErrorClass::Http, _) if detail.contains("401") || detail.contains("authentication") => {
                GitError::Auth { url, detail }
            }
            // libgit2 checked ~/.ssh/known_hosts (no known_hosts in the credentials) and refused.
            (git2::ErrorClass::Ssh, git2::ErrorCode::Certificate) => GitError::HostKey {
                detail: format!(
                    "{detail}: the server's key is not one ~/.ssh/known_hosts lists for it; fix: set `known_hosts` \
                        in the credentials Secret (shopctl: SHOPSET_GIT_KNOWN_HOSTS_FILE) to the server's key line, \
                        e.g. from ssh-keyscan, checked against a fingerprint you trust"
                ),
                url,
            },
            (git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Ssh | git2::ErrorClass::Http, _) => {
                GitError::Unreachable { url, detail }
            }
            _ if detail.contains("could not find repository") || detail.contains("not found") => {
                GitError::Unreachable { url, detail }
            }
            _ => GitError::Other { url, detail },
        }
    }
}
