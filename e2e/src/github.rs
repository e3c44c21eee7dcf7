//! A stand-in for GitHub's REST API on 127.0.0.1 (GitHub itself cannot be reached from tests):
//! it answers the calls octocrab makes for promotion pull requests in the shapes GitHub uses, and
//! records every request (method, path, query, `Authorization` header, JSON body) for the test to
//! check. It is the one stand-in of this crate; git underneath it is real.
//!
//! - `POST /repos/{owner}/{repo}/pulls`: 201 with a pull request; 422 "Validation Failed" with
//!   GitHub's "A pull request already exists for owner:head." when one is open for that head and
//!   base.
//! - `GET /repos/{owner}/{repo}/pulls?state=open&head=owner:branch&base=branch`: the pull
//!   requests matching the filters (an array, as GitHub answers).
//! - `GET /repos/{owner}/{repo}/pulls/{number}`: one pull request with `state`, `merged`,
//!   `mergeable` and `head.sha`.
//! - `GET /repos/{owner}/{repo}/pulls/{number}/reviews`: its reviews, oldest first, with
//!   `user.login`, `state` (APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED), `commit_id` (the
//!   head when the review was submitted) and `submitted_at`, paged (`per_page`, `page`, `Link`). Tests add reviews with
//!   [`GitHubStandIn::record_review`] and dismiss them with [`GitHubStandIn::dismiss_review`].
//! - `PUT /repos/{owner}/{repo}/pulls/{number}/merge` with `sha`: 200 `{merged: true, sha}`;
//!   405 "Pull Request is not mergeable"; 409 "Head branch was modified" when `sha` is not the
//!   head. Merging moves the base branch of the real bare repository served for `owner/repo`
//!   ([`GitHubStandIn::serve_repo`]) to the head commit, a fast-forward under a compare-and-swap
//!   (`git update-ref`). GitHub's own merge methods would write a merge commit or rebased
//!   copies; the fast-forward is what a promotion needs (tier branches stay in one line of
//!   history) and what makes the base equal the head afterwards.
//!
//! - `POST /repos/{owner}/{repo}/issues/{number}/comments`: 201 with the comment.
//!
//! Every call answers 401 "Bad credentials" unless it carries `Bearer <token>`; pull requests
//! opened with the token are authored by [`BOT_LOGIN`].
//!
//! It runs on its own thread and runtime, so synchronous tests can use it too; it stops on drop.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::gitserver::{git, try_git};

/// The login GitHub reports for the token's user: the author of the pull requests it opens.
pub const BOT_LOGIN: &str = "shopset-bot";

/// The head sha reported for a repository the stand-in serves no git repository for.
const PLACEHOLDER_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `/repos/{owner}/{repo}/pulls...`
    pub path: String,
    pub query: HashMap<String, String>,
    pub authorization: Option<String>,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

/// A pull request the server holds.
#[derive(Debug, Clone)]
pub struct Pr {
    pub owner: String,
    pub repo: String,
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    /// `user.login`.
    pub author: String,
    /// The commit merged (the head at the merge), once merged.
    pub merged_sha: Option<String>,
    /// `mergeable` as set by the test; `None`: computed from git (the base is an ancestor of the head).
    pub mergeable: Option<bool>,
}

/// What a reviewer submits, as GitHub's `event` of a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewEvent {
    Approve,
    RequestChanges,
    Comment,
}

#[derive(Debug, Clone)]
struct Review {
    id: u64,
    owner: String,
    repo: String,
    number: u64,
    login: String,
    /// APPROVED, CHANGES_REQUESTED, COMMENTED or DISMISSED.
    state: &'static str,
    commit_id: String,
    /// Seconds after the stand-in's epoch (2025-01-01T00:00:00Z): one a review, so order is exact.
    submitted: u64,
}

struct Inner {
    token: String,
    base_url: String,
    requests: Mutex<Vec<Recorded>>,
    prs: Mutex<Vec<Pr>>,
    reviews: Mutex<Vec<Review>>,
    /// `owner/repo` -> the bare repository on disk.
    repos: Mutex<HashMap<String, PathBuf>>,
}

/// The running stand-in.
pub struct GitHubStandIn {
    url: String,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked leaves plain data behind; the test sees the panic anyway.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GitHubStandIn {
    /// Starts a server on 127.0.0.1 that accepts only `Bearer <token>`.
    pub fn start(token: &str) -> GitHubStandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let inner = Arc::new(Inner {
            token: token.to_string(),
            base_url: url.clone(),
            requests: Mutex::new(Vec::new()),
            prs: Mutex::new(Vec::new()),
            reviews: Mutex::new(Vec::new()),
            repos: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/repos/{owner}/{repo}/pulls", post(create_pull).get(list_pulls))
            .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
            .route("/repos/{owner}/{repo}/pulls/{number}/reviews", get(list_reviews))
            .route("/repos/{owner}/{repo}/pulls/{number}/merge", put(merge_pull))
            .route("/repos/{owner}/{repo}/issues/{number}/comments", post(create_comment))
            .fallback(not_found)
            .with_state(inner.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve the GitHub stand-in");
            });
        });
        GitHubStandIn { url, inner, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>`, the API base (`--github-url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves `owner/repo` from the bare repository `bare` (e.g. [`GitDaemon::path`](crate::gitserver::GitDaemon::path)):
    /// head shas are read from it and merges move its branches.
    pub fn serve_repo(&self, owner: &str, repo: &str, bare: &FsPath) {
        lock(&self.inner.repos).insert(format!("{owner}/{repo}"), bare.to_path_buf());
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.requests).clone()
    }

    /// The pull requests held, oldest first.
    pub fn pulls(&self) -> Vec<Pr> {
        lock(&self.inner.prs).clone()
    }

    /// Adds an open pull request, as if someone had opened it before; returns its number.
    pub fn add_open(&self, owner: &str, repo: &str, head: &str, base: &str, title: &str) -> u64 {
        let mut prs = lock(&self.inner.prs);
        let number = prs.len() as u64 + 41;
        prs.push(Pr {
            owner: owner.into(),
            repo: repo.into(),
            number,
            head: head.into(),
            base: base.into(),
            title: title.into(),
            body: String::new(),
            author: BOT_LOGIN.into(),
            merged_sha: None,
            mergeable: None,
        });
        number
    }

    /// Submits a review of pull request `number` as `login`, on the current head commit (as
    /// GitHub records it); returns the review's id. GitHub refuses approving or requesting
    /// changes on one's own pull request, and so does this (a panic: the test is wrong).
    pub fn record_review(&self, owner: &str, repo: &str, number: u64, login: &str, event: ReviewEvent) -> u64 {
        let pr = find(&self.inner, owner, repo, number)
            .unwrap_or_else(|| panic!("the stand-in holds no pull request {owner}/{repo}#{number}"));
        let state = match event {
            ReviewEvent::Approve => "APPROVED",
            ReviewEvent::RequestChanges => "CHANGES_REQUESTED",
            ReviewEvent::Comment => "COMMENTED",
        };
        assert!(
            !(pr.author == login && event != ReviewEvent::Comment),
            "GitHub refuses {state} by {login} on their own pull request {owner}/{repo}#{number}"
        );
        let commit_id = head_sha(&self.inner, &pr);
        let mut reviews = lock(&self.inner.reviews);
        let id = 8_000 + reviews.len() as u64 + 1;
        let submitted = 60 * (reviews.len() as u64 + 1);
        reviews.push(Review {
            id,
            owner: owner.into(),
            repo: repo.into(),
            number,
            login: login.into(),
            state,
            commit_id,
            submitted,
        });
        id
    }

    /// Dismisses review `id`, as a maintainer's "Dismiss review" does: its state becomes DISMISSED.
    pub fn dismiss_review(&self, id: u64) {
        let mut reviews = lock(&self.inner.reviews);
        let review = reviews.iter_mut().find(|r| r.id == id).unwrap_or_else(|| panic!("no review {id}"));
        review.state = "DISMISSED";
    }

    /// Sets `mergeable` of a pull request (e.g. `Some(false)`: a required check fails), or lets
    /// git decide again (`None`).
    pub fn set_mergeable(&self, owner: &str, repo: &str, number: u64, mergeable: Option<bool>) {
        let mut prs = lock(&self.inner.prs);
        let pr = prs
            .iter_mut()
            .find(|p| p.owner == owner && p.repo == repo && p.number == number)
            .unwrap_or_else(|| panic!("the stand-in holds no pull request {owner}/{repo}#{number}"));
        pr.mergeable = mergeable;
    }
}

impl Drop for GitHubStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `html_url` GitHub gives pull request `number` of `owner/repo`.
pub fn html_url(owner: &str, repo: &str, number: u64) -> String {
    format!("https://github.com/{owner}/{repo}/pull/{number}")
}

fn find(inner: &Inner, owner: &str, repo: &str, number: u64) -> Option<Pr> {
    lock(&inner.prs).iter().find(|p| p.owner == owner && p.repo == repo && p.number == number).cloned()
}

fn bare_repo(inner: &Inner, owner: &str, repo: &str) -> Option<PathBuf> {
    lock(&inner.repos).get(&format!("{owner}/{repo}")).cloned()
}

fn branch_sha(bare: &FsPath, branch: &str) -> Option<String> {
    try_git(bare, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}^{{commit}}")]).ok()
}

/// The head commit: the merged one once merged, else the head branch's in the served repository.
fn head_sha(inner: &Inner, pr: &Pr) -> String {
    if let Some(sha) = &pr.merged_sha {
        return sha.clone();
    }
    bare_repo(inner, &pr.owner, &pr.repo)
        .and_then(|bare| branch_sha(&bare, &pr.head))
        .unwrap_or_else(|| PLACEHOLDER_SHA.to_string())
}

/// GitHub's `mergeable`: what the test set, else whether the base fast-forwards to the head.
fn mergeable(inner: &Inner, pr: &Pr) -> Option<bool> {
    if pr.merged_sha.is_some() {
        return None;
    }
    if pr.mergeable.is_some() {
        return pr.mergeable;
    }
    let bare = bare_repo(inner, &pr.owner, &pr.repo)?;
    let (base, head) = (branch_sha(&bare, &pr.base)?, branch_sha(&bare, &pr.head)?);
    Some(try_git(&bare, &["merge-base", "--is-ancestor", &base, &head]).is_ok())
}

/// `2025-01-01T00:00:00Z` plus `seconds` (less than a day).
fn timestamp(seconds: u64) -> String {
    format!("2025-01-01T{:02}:{:02}:{:02}Z", seconds / 3600 % 24, seconds / 60 % 60, seconds % 60)
}

/// A user object, in the shape GitHub gives (octocrab's `Author` needs every URL).
fn user_json(login: &str) -> Value {
    let api = "https://api.github.com/users";
    json!({
        "login": login,
        "id": 7_000 + login.len() as u64,
        "node_id": format!("U_{login}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/{login}"),
        "gravatar_id": "",
        "url": format!("{api}/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/{login}/followers"),
        "following_url": format!("{api}/{login}/following{{/other_user}}"),
        "gists_url": format!("{api}/{login}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/{login}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/{login}/subscriptions"),
        "organizations_url": format!("{api}/{login}/orgs"),
        "repos_url": format!("{api}/{login}/repos"),
        "events_url": format!("{api}/{login}/events{{/privacy}}"),
        "received_events_url": format!("{api}/{login}/received_events"),
        "type": if login.ends_with("-bot") { "Bot" } else { "User" },
        "site_admin": false,
    })
}

fn pr_json(inner: &Inner, pr: &Pr) -> Value {
    let api = &inner.base_url;
    let (o, r, n) = (&pr.owner, &pr.repo, pr.number);
    let bare = bare_repo(inner, o, r);
    let base_sha = bare.as_deref().and_then(|b| branch_sha(b, &pr.base)).unwrap_or_else(|| PLACEHOLDER_SHA.into());
    let side = |branch: &str, sha: String| json!({"label": format!("{o}:{branch}"), "ref": branch, "sha": sha});
    let merged = pr.merged_sha.is_some();
    json!({
        "id": 1_000_000 + n,
        "node_id": format!("PR_kwDO{n}"),
        "number": n,
        "url": format!("{api}/repos/{o}/{r}/pulls/{n}"),
        "html_url": html_url(o, r, n),
        "diff_url": format!("https://github.com/{o}/{r}/pull/{n}.diff"),
        "patch_url": format!("https://github.com/{o}/{r}/pull/{n}.patch"),
        "issue_url": format!("{api}/repos/{o}/{r}/issues/{n}"),
        "state": if merged { "closed" } else { "open" },
        "locked": false,
        "title": pr.title,
        "body": pr.body,
        "user": user_json(&pr.author),
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "closed_at": if merged { json!("2025-01-02T00:00:00Z") } else { Value::Null },
        "merged_at": if merged { json!("2025-01-02T00:00:00Z") } else { Value::Null },
        "merge_commit_sha": pr.merged_sha,
        "merged": merged,
        "mergeable": mergeable(inner, pr),
        "draft": false,
        "head": side(&pr.head, head_sha(inner, pr)),
        "base": side(&pr.base, base_sha),
        "author_association": "MEMBER",
    })
}

fn review_json(inner: &Inner, r: &Review) -> Value {
    let (o, p, n, id) = (&r.owner, &r.repo, r.number, r.id);
    json!({
        "id": id,
        "node_id": format!("PRR_kwDO{id}"),
        "user": user_json(&r.login),
        "body": "",
        "state": r.state,
        "html_url": format!("https://github.com/{o}/{p}/pull/{n}#pullrequestreview-{id}"),
        "pull_request_url": format!("{}/repos/{o}/{p}/pulls/{n}", inner.base_url),
        "author_association": "MEMBER",
        "submitted_at": timestamp(r.submitted),
        "commit_id": r.commit_id,
    })
}

fn record(
    inner: &Inner,
    method: &str,
    uri: &Uri,
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Value {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::String(String::from_utf8_lossy(body).into()))
    };
    lock(&inner.requests).push(Recorded {
        method: method.into(),
        path: uri.path().to_string(),
        query,
        authorization: headers.get("authorization").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        body: body.clone(),
    });
    body
}

/// The 401 answer GitHub gives, unless the request carries the token.
fn denial(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let want = format!("Bearer {}", inner.token);
    match headers.get("authorization") {
        Some(v) if v.as_bytes() == want.as_bytes() => None,
        _ => Some(answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        )),
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn create_pull(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = record(&inner, "POST", &uri, HashMap::new(), &headers, &body);
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(title), Some(head), Some(base)) = (text("title"), text("head"), text("base")) else {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "missing_field"}]}),
        );
    };
    let pr = {
        let mut prs = lock(&inner.prs);
        let open = |p: &&Pr| p.merged_sha.is_none();
        if prs.iter().filter(open).any(|p| p.owner == owner && p.repo == repo && p.head == head && p.base == base) {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {owner}:{head}.")}],
                    "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                    "status": "422"
                }),
            );
        }
        let pr = Pr {
            owner,
            repo,
            number: prs.len() as u64 + 41,
            head,
            base,
            title,
            body: text("body").unwrap_or_default(),
            author: BOT_LOGIN.into(),
            merged_sha: None,
            mergeable: None,
        };
        prs.push(pr.clone());
        pr
    };
    answer(StatusCode::CREATED, pr_json(&inner, &pr))
}

async fn list_pulls(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    record(&inner, "GET", &uri, query.clone(), &headers, &Bytes::new());
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    let prs = lock(&inner.prs).clone();
    let state = query.get("state").map(String::as_str).unwrap_or("open");
    let items: Vec<Value> = prs
        .iter()
        .filter(|p| p.owner == owner && p.repo == repo)
        .filter(|p| match state {
            "all" => true,
            "closed" => p.merged_sha.is_some(),
            _ => p.merged_sha.is_none(),
        })
        // GitHub filters `head` as `user:ref`.
        .filter(|p| query.get("head").is_none_or(|h| *h == format!("{}:{}", p.owner, p.head)))
        .filter(|p| query.get("base").is_none_or(|b| *b == p.base))
        .map(|p| pr_json(&inner, p))
        .collect();
    answer(StatusCode::OK, Value::Array(items))
}

/// GitHub's 404 for a pull request it does not have.
fn no_pull() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/pulls/pulls#get-a-pull-request", "status": "404"}),
    )
}

async fn get_pull(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&inner, "GET", &uri, HashMap::new(), &headers, &Bytes::new());
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    match find(&inner, &owner, &repo, number) {
        Some(pr) => answer(StatusCode::OK, pr_json(&inner, &pr)),
        None => no_pull(),
    }
}

async fn list_reviews(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    record(&inner, "GET", &uri, query.clone(), &headers, &Bytes::new());
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    if find(&inner, &owner, &repo, number).is_none() {
        return no_pull();
    }
    let reviews = lock(&inner.reviews).clone();
    let items: Vec<Value> = reviews
        .iter()
        .filter(|r| r.owner == owner && r.repo == repo && r.number == number)
        .map(|r| review_json(&inner, r))
        .collect();
    // GitHub pages lists: 30 a page unless `per_page` (at most 100) says otherwise, and a `Link`
    // header names the next and last pages.
    let number_of = |key: &str, default: usize| query.get(key).and_then(|v| v.parse::<usize>().ok()).unwrap_or(default);
    let per_page = number_of("per_page", 30).clamp(1, 100);
    let page = number_of("page", 1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let shown: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let mut response = answer(StatusCode::OK, Value::Array(shown));
    if page < last {
        let link = |n: usize| format!("<{}{}?per_page={per_page}&page={n}>", inner.base_url, uri.path());
        let value = format!("{}; rel=\"next\", {}; rel=\"last\"", link(page + 1), link(last));
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(axum::http::header::LINK, value);
        }
    }
    response
}

async fn merge_pull(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = record(&inner, "PUT", &uri, HashMap::new(), &headers, &body);
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    let Some(pr) = find(&inner, &owner, &repo, number) else {
        return no_pull();
    };
    let not_mergeable = || {
        answer(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Pull Request is not mergeable", "documentation_url": "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request", "status": "405"}),
        )
    };
    if pr.merged_sha.is_some() {
        return not_mergeable();
    }
    let Some(bare) = bare_repo(&inner, &owner, &repo) else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": format!("the GitHub stand-in serves no git repository for {owner}/{repo}; the test must call serve_repo")}),
        );
    };
    let head = head_sha(&inner, &pr);
    if let Some(sha) = body.get("sha").and_then(Value::as_str)
        && sha != head
    {
        return answer(
            StatusCode::CONFLICT,
            json!({"message": "Head branch was modified. Review and try the merge again.", "documentation_url": "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request", "status": "409"}),
        );
    }
    if mergeable(&inner, &pr) != Some(true) {
        return not_mergeable();
    }
    let Some(base) = branch_sha(&bare, &pr.base) else {
        return not_mergeable();
    };
    // Compare-and-swap: a push to the base since `mergeable` was computed makes this fail.
    if try_git(&bare, &["update-ref", &format!("refs/heads/{}", pr.base), &head, &base]).is_err() {
        return not_mergeable();
    }
    if let Some(p) = lock(&inner.prs).iter_mut().find(|p| p.owner == owner && p.repo == repo && p.number == number) {
        p.merged_sha = Some(head.clone());
    }
    debug_assert_eq!(git(&bare, &["rev-parse", &format!("refs/heads/{}", pr.base)]), head);
    answer(StatusCode::OK, json!({"sha": head, "merged": true, "message": "Pull Request successfully merged"}))
}

/// `POST /repos/{owner}/{repo}/issues/{number}/comments`: a pull request's comments are its
/// issue's. Recorded (the test reads the body from [`GitHubStandIn::requests`]); 201 with the
/// comment, authored by [`BOT_LOGIN`].
async fn create_comment(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = record(&inner, "POST", &uri, HashMap::new(), &headers, &body);
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    if find(&inner, &owner, &repo, number).is_none() {
        return no_pull();
    }
    let id = 5_000_000 + lock(&inner.requests).len() as u64;
    let api = &inner.base_url;
    answer(
        StatusCode::CREATED,
        json!({
            "id": id,
            "node_id": format!("IC_kwDO{id}"),
            "url": format!("{api}/repos/{owner}/{repo}/issues/comments/{id}"),
            "html_url": format!("{}#issuecomment-{id}", html_url(&owner, &repo, number)),
            "issue_url": format!("{api}/repos/{owner}/{repo}/issues/{number}"),
            "body": body.get("body").and_then(Value::as_str).unwrap_or_default(),
            "user": user_json(BOT_LOGIN),
            "author_association": "MEMBER",
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
        }),
    )
}

async fn not_found() -> Response {
    answer(StatusCode::NOT_FOUND, json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}))
}
