//! Promotion by pull request on GitHub (or GitHub Enterprise, through its API base URL).

use serde::Serialize;

use crate::approvals::{self, Approval, Approved, MergeOutcome, Review, ReviewState, Waiting};

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

/// Where the token comes from: a file (a mounted Secret, read at each use so a rotated token is
/// picked up), else the `GITHUB_TOKEN` environment variable.
#[derive(Debug, Clone)]
pub struct GitHubAccess {
    pub base_url: String,
    pub token_file: Option<std::path::PathBuf>,
}

/// Why there is no token to talk to GitHub with.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the GitHub token file {path}: {detail}; fix: {fix}")]
    Unreadable { path: String, detail: String, fix: String },
    #[error("{what} needs a GitHub token; fix: {fix}")]
    Missing { what: String, fix: String },
}

impl GitHubAccess {
    /// The client, with the token read now. `what` needs it, and `fix` says how to give one.
    pub fn client(&self, what: &str, fix: &str) -> Result<GitHub, TokenError> {
        let token = match &self.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| TokenError::Unreadable {
                    path: f.display().to_string(),
                    detail: e.to_string(),
                    fix: fix.to_string(),
                })?
                .trim()
                .to_string(),
            None => std::env::var("GITHUB_TOKEN")
                .map_err(|_| TokenError::Missing { what: what.to_string(), fix: fix.to_string() })?,
        };
        Ok(GitHub { base_url: self.base_url.clone(), token })
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
    #[error(
        "promotion pull request {repository}#{number} is {state}, not open; fix: open a new one with `shopctl promote --pr`"
    )]
    NotOpen { repository: String, number: u64, state: String },
    #[error(
        "promotion pull request {repository}#{number} was not merged: its head moved{moved_to} after the approvals on {approved} (GitHub answered HTTP 409); fix: have the new commits reviewed and approved, then merge again"
    )]
    HeadMoved { repository: String, number: u64, approved: String, moved_to: String },
    #[error(
        "GitHub will not merge promotion pull request {repository}#{number} (HTTP 405: {message}); fix: check its required status checks and branch protection, and that the target branch has not diverged (`shopctl promote --dry-run`)"
    )]
    NotMergeable { repository: String, number: u64, message: String },
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
                self.find_pull_request(repo_url, head, base).await?.ok_or_else(|| GitHubError::Api {
                    repository: repository.clone(),
                    status: 422,
                    message: "GitHub says a pull request already exists but lists none".into(),
                })
            }
            Err(e) => Err(self.classify(&repository, e)),
        }
    }

    /// The open pull request `head -> base` of the repository at `repo_url`, if there is one.
    pub async fn find_pull_request(
        &self,
        repo_url: &str,
        head: &str,
        base: &str,
    ) -> Result<Option<PullRequest>, GitHubError> {
        let (owner, repo) = owner_repo(repo_url).ok_or_else(|| GitHubError::NotGitHub { url: repo_url.into() })?;
        let repository = format!("{owner}/{repo}");
        let open = self
            .client()?
            .pulls(&owner, &repo)
            .list()
            .state(octocrab::params::State::Open)
            .head(format!("{owner}:{head}"))
            .base(base)
            .send()
            .await
            .map_err(|e| self.classify(&repository, e))?;
        Ok(open.items.into_iter().next().map(|pr| PullRequest {
            repository,
            number: pr.number,
            url: pr.html_url.map(|u| u.to_string()).unwrap_or_default(),
            already_existed: true,
        }))
    }

    /// Adds a comment to pull request `pr` (on GitHub, a pull request's comments are its issue's).
    pub async fn comment(&self, pr: &PullRequest, body: &str) -> Result<(), GitHubError> {
        let (owner, repo) = split_repository(pr)?;
        self.client()?
            .issues(owner, repo)
            .create_comment(pr.number, body)
            .await
            .map_err(|e| self.classify(&pr.repository, e))?;
        Ok(())
    }

    /// Merges pull request `pr` when it has at least `required` approving reviews (counted by
    /// [`approvals::count`]), else leaves it open and says what it waits for: [`Self::approval`]
    /// then [`Self::merge_approved`].
    pub async fn merge_when_approved(&self, pr: &PullRequest, required: u32) -> Result<MergeOutcome, GitHubError> {
        match self.approval(pr, required).await? {
            Approval::Approved(approved) => self.merge_approved(&approved).await,
            Approval::Waiting(waiting) => Ok(MergeOutcome::Waiting(waiting)),
        }
    }

    /// Whether open pull request `pr` has at least `required` approving reviews, without merging:
    /// a promotion of several repositories merges none until each has its approvals.
    pub async fn approval(&self, pr: &PullRequest, required: u32) -> Result<Approval, GitHubError> {
        let (owner, repo) = split_repository(pr)?;
        let repository = pr.repository.clone();
        let octo = self.client()?;
        let pulls = octo.pulls(owner, repo);
        let current = pulls.get(pr.number).await.map_err(|e| self.classify(&repository, e))?;
        if current.merged == Some(true) || current.state == Some(octocrab::models::IssueState::Closed) {
            let state = if current.merged == Some(true) { "merged" } else { "closed" };
            return Err(GitHubError::NotOpen { repository, number: pr.number, state: state.into() });
        }
        let author = current.user.as_ref().map(|u| u.login.clone()).unwrap_or_default();
        let first =
            pulls.list_reviews(pr.number).per_page(100u8).send().await.map_err(|e| self.classify(&repository, e))?;
        let listed = octo.all_pages(first).await.map_err(|e| self.classify(&repository, e))?;
        let reviews: Vec<Review> = listed
            .into_iter()
            .filter_map(|r| {
                let state = match r.state? {
                    octocrab::models::pulls::ReviewState::Approved => ReviewState::Approved,
                    octocrab::models::pulls::ReviewState::ChangesRequested => ReviewState::ChangesRequested,
                    octocrab::models::pulls::ReviewState::Commented => ReviewState::Commented,
                    octocrab::models::pulls::ReviewState::Dismissed => ReviewState::Dismissed,
                    _ => ReviewState::Pending,
                };
                Some(Review { reviewer: r.user?.login, state, commit: r.commit_id })
            })
            .collect();
        let counted = approvals::count(&author, &reviews);
        let have = counted.approved_by.len() as u32;
        if have < required {
            tracing::info!(%repository, number = pr.number, have, required, "promotion pull request waits for approvals");
            return Ok(Approval::Waiting(Waiting {
                repository,
                number: pr.number,
                url: pr.url.clone(),
                have,
                need: required,
                approved_by: counted.approved_by,
                changes_requested_by: counted.changes_requested_by,
            }));
        }
        // With no approval required (or none naming a commit), the head just read is the guard.
        let commit = counted.approved_commit.clone().unwrap_or_else(|| current.head.sha.clone());
        Ok(Approval::Approved(Approved { pr: pr.clone(), commit, approved_by: counted.approved_by }))
    }

    /// Merges an approved pull request, guarded by the commit the latest approval was given on:
    /// if the head moved since, GitHub refuses (409) and nothing is merged, so no commit is
    /// merged that nobody approved.
    pub async fn merge_approved(&self, approved: &Approved) -> Result<MergeOutcome, GitHubError> {
        let pr = &approved.pr;
        let (owner, repo) = split_repository(pr)?;
        let repository = pr.repository.clone();
        let octo = self.client()?;
        let pulls = octo.pulls(owner, repo);
        let guard = approved.commit.clone();
        let merged = pulls
            .merge(pr.number)
            .sha(guard.clone())
            // GitHub has no fast-forward merge method. "rebase" adds no merge commit, but GitHub
            // rewrites the committer of rebased commits, so on github.com TO's branch gets
            // copies of FROM's commits (new shas).
            .method(octocrab::params::pulls::MergeMethod::Rebase)
            .title(format!("Merge promotion pull request #{}", pr.number))
            .send()
            .await;
        match merged {
            Ok(m) if m.merged => {
                let sha = m.sha.unwrap_or(guard);
                tracing::info!(%repository, number = pr.number, %sha, "merged promotion pull request");
                Ok(MergeOutcome::Merged {
                    repository,
                    number: pr.number,
                    sha,
                    approved_by: approved.approved_by.clone(),
                })
            }
            Ok(m) => Err(GitHubError::NotMergeable {
                repository,
                number: pr.number,
                message: m.message.unwrap_or_else(|| "merged: false".into()),
            }),
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 409 => {
                // Name the new head when GitHub still answers; the refusal stands either way.
                let moved_to = match pulls.get(pr.number).await {
                    Ok(now) if now.head.sha != guard => {
                        format!(" to {}", shopset_core::revision::short(&now.head.sha))
                    }
                    _ => String::new(),
                };
                Err(GitHubError::HeadMoved {
                    repository,
                    number: pr.number,
                    approved: shopset_core::revision::short(&guard).to_string(),
                    moved_to,
                })
            }
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 405 => {
                Err(GitHubError::NotMergeable { repository, number: pr.number, message: source.message })
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

/// `(owner, repo)` of a pull request's `owner/repo`.
fn split_repository(pr: &PullRequest) -> Result<(&str, &str), GitHubError> {
    pr.repository.split_once('/').ok_or_else(|| GitHubError::NotGitHub { url: pr.repository.clone() })
}

fn source_errors_say_exists(source: &octocrab::GitHubError) -> bool {
    source.status_code.as_u16() == 422
        && source.errors.iter().flatten().any(|e| e.to_string().contains("already exists"))
}
