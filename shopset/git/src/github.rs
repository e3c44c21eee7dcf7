//! Promotion by pull request on GitHub (or GitHub Enterprise, through its API base URL).

use serde::Serialize;

/// Where and as whom to talk to GitHub.
#[derive(Clone)]
pub struct GitHub {
    /// API base, `https://api.github.com` or `https://ghe.example.com/api/v3`.
    pub base_url: String,
    pub token: String,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub").field("base_url", &self.base_url).field("token", &"<redacted>").finish()
    }
}

/// A pull request opened (or found already open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub repository: String,
    pub number: u64,
    pub url: String,
    pub already_existed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error(
        "{url} is not a GitHub repository URL (expected https://host/owner/repo or git@host:owner/repo); fix: use --pr only for repositories on GitHub"
    )]
    NotGitHub { url: String },
    #[error(
        "GitHub refused the token (HTTP {status}) for {repository}; fix: set a token with `pull_requests: write` in GITHUB_TOKEN or --github-token-file"
    )]
    Unauthorized { repository: String, status: u16 },
    #[error("GitHub answered HTTP {status} for {repository}: {message}")]
    Api { repository: String, status: u16, message: String },
    #[error("cannot reach GitHub at {base_url}: {detail}; fix: check --github-url (GITHUB_API_URL)")]
    Unreachable { base_url: String, detail: String },
}

/// `owner/repo` of a GitHub URL in any of its forms.
pub fn owner_repo(url: &str) -> Option<(String, String)> {
    let norm = shopset_core::repository::normalize_url(url);
    let mut parts = norm.split_once('/')?.1.split('/');
    let (owner, repo) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && !owner.is_empty() && !repo.is_empty()).then(|| (owner.to_string(), repo.to_string()))
}

impl GitHub {
    fn client(&self) -> Result<octocrab::Octocrab, GitHubError> {
        octocrab::Octocrab::builder()
            .base_uri(self.base_url.as_str())
            .map_err(|e| GitHubError::Unreachable { base_url: self.base_url.clone(), detail: e.to_string() })?
            .personal_token(self.token.clone())
            .build()
            .map_err(|e| GitHubError::Unreachable { base_url: self.base_url.clone(), detail: e.to_string() })
    }

    /// Opens a pull request `head -> base`; when one is already open, returns it.
    pub async fn open_pull_request(
        &self,
        repo_url: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, GitHubError> {
        let (owner, repo) = owner_repo(repo_url).ok_or_else(|| GitHubError::NotGitHub { url: repo_url.into() })?;
        let repository = format!("{owner}/{repo}");
        let octo = self.client()?;
        match octo.pulls(&owner, &repo).create(title, head, base).body(body).send().await {
            Ok(pr) => Ok(PullRequest {
                repository,
                number: pr.number,
                url: pr.html_url.map(|u| u.to_string()).unwrap_or_default(),
                already_existed: false,
            }),
            Err(octocrab::Error::GitHub { source, .. })
                if source.status_code.as_u16() == 422 && source.message.contains("already exists")
                    || source_errors_say_exists(&source) =>
            {
                let existing = octo
                    .pulls(&owner, &repo)
                    .list()
                    .state(octocrab::params::State::Open)
                    .head(format!("{owner}:{head}"))
                    .base(base)
                    .send()
                    .await
                    .map_err(|e| self.classify(&repository, e))?;
                let pr = existing.items.into_iter().next().ok_or_else(|| GitHubError::Api {
                    repository: repository.clone(),
                    status: 422,
                    message: "GitHub says a pull request already exists but lists none".into(),
                })?;
                Ok(PullRequest {
                    repository,
                    number: pr.number,
                    url: pr.html_url.map(|u| u.to_string()).unwrap_or_default(),
                    already_existed: true,
                })
            }
            Err(e) => Err(self.classify(&repository, e)),
        }
    }

    fn classify(&self, repository: &str, e: octocrab::Error) -> GitHubError {
        match e {
            octocrab::Error::GitHub { source, .. } => {
                let status = source.status_code.as_u16();
                if status == 401 || status == 403 {
                    GitHubError::Unauthorized { repository: repository.into(), status }
                } else {
                    GitHubError::Api { repository: repository.into(), status, message: source.message }
                }
            }
            other => GitHubError::Unreachable { base_url: self.base_url.clone(), detail: other.to_string() },
        }
    }
}

fn source_errors_say_exists(source: &octocrab::GitHubError) -> bool {
    source.status_code.as_u16() == 422
        && source.errors.iter().flatten().any(|e| e.to_string().contains("already exists"))
}
