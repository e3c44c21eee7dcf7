//! A stand-in for GitHub's REST API on 127.0.0.1, for `shopctl promote --pr`: it answers the
//! calls octocrab makes for pull requests in the shapes GitHub uses, and records every request
//! (method, path, query, `Authorization` header, JSON body) for the test to check.
//!
//! - `POST /repos/{owner}/{repo}/pulls`: 201 with a pull request; 422 "Validation Failed" with
//!   GitHub's "A pull request already exists for owner:head." when one is open for that head and
//!   base; 401 "Bad credentials" when the token is not the one configured.
//! - `GET /repos/{owner}/{repo}/pulls?state=open&head=owner:branch&base=branch`: the open pull
//!   requests matching the filters (an array, as GitHub answers).
//!
//! It runs on its own thread and runtime, so synchronous tests can use it too; it stops on drop.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `/repos/{owner}/{repo}/pulls`
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
}

struct Inner {
    token: String,
    base_url: Mutex<String>,
    requests: Mutex<Vec<Recorded>>,
    prs: Mutex<Vec<Pr>>,
}

/// The running stand-in.
pub struct FakeGitHub {
    url: String,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGitHub {
    /// Starts a server that accepts only `Bearer <token>`.
    pub fn start(token: &str) -> FakeGitHub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let inner = Arc::new(Inner {
            token: token.to_string(),
            base_url: Mutex::new(url.clone()),
            requests: Mutex::new(Vec::new()),
            prs: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/repos/{owner}/{repo}/pulls", post(create_pull).get(list_pulls))
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
        FakeGitHub { url, inner, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>`, the API base (`--github-url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// The pull requests held, oldest first.
    pub fn pulls(&self) -> Vec<Pr> {
        self.inner.prs.lock().unwrap().clone()
    }

    /// Adds an open pull request, as if someone had opened it before; returns its number.
    pub fn add_open(&self, owner: &str, repo: &str, head: &str, base: &str, title: &str) -> u64 {
        let mut prs = self.inner.prs.lock().unwrap();
        let number = prs.len() as u64 + 41;
        prs.push(Pr {
            owner: owner.into(),
            repo: repo.into(),
            number,
            head: head.into(),
            base: base.into(),
            title: title.into(),
            body: String::new(),
        });
        number
    }
}

impl Drop for FakeGitHub {
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

fn pr_json(api: &str, pr: &Pr) -> Value {
    let (o, r, n) = (&pr.owner, &pr.repo, pr.number);
    let side = |branch: &str| json!({"label": format!("{o}:{branch}"), "ref": branch, "sha": "0123456789abcdef0123456789abcdef01234567"});
    json!({
        "id": 1_000_000 + n,
        "node_id": format!("PR_kwDO{n}"),
        "number": n,
        "url": format!("{api}/repos/{o}/{r}/pulls/{n}"),
        "html_url": html_url(o, r, n),
        "diff_url": format!("https://github.com/{o}/{r}/pull/{n}.diff"),
        "patch_url": format!("https://github.com/{o}/{r}/pull/{n}.patch"),
        "issue_url": format!("{api}/repos/{o}/{r}/issues/{n}"),
        "state": "open",
        "locked": false,
        "title": pr.title,
        "body": pr.body,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "closed_at": null,
        "merged_at": null,
        "draft": false,
        "head": side(&pr.head),
        "base": side(&pr.base),
        "author_association": "MEMBER",
    })
}

fn record(
    inner: &Inner,
    method: &str,
    owner: &str,
    repo: &str,
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Value {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::String(String::from_utf8_lossy(body).into()))
    };
    inner.requests.lock().unwrap().push(Recorded {
        method: method.into(),
        path: format!("/repos/{owner}/{repo}/pulls"),
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
        _ => Some((
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})),
        )
            .into_response()),
    }
}

async fn create_pull(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = record(&inner, "POST", &owner, &repo, HashMap::new(), &headers, &body);
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(title), Some(head), Some(base)) = (text("title"), text("head"), text("base")) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "missing_field"}]}))).into_response();
    };
    let mut prs = inner.prs.lock().unwrap();
    if prs.iter().any(|p| p.owner == owner && p.repo == repo && p.head == head && p.base == base) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({
                "message": "Validation Failed",
                "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {owner}:{head}.")}],
                "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                "status": "422"
            })),
        )
            .into_response();
    }
    let pr =
        Pr { owner, repo, number: prs.len() as u64 + 41, head, base, title, body: text("body").unwrap_or_default() };
    prs.push(pr.clone());
    let api = inner.base_url.lock().unwrap().clone();
    (StatusCode::CREATED, axum::Json(pr_json(&api, &pr))).into_response()
}

async fn list_pulls(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    record(&inner, "GET", &owner, &repo, query.clone(), &headers, &Bytes::new());
    if let Some(denied) = denial(&inner, &headers) {
        return denied;
    }
    let api = inner.base_url.lock().unwrap().clone();
    let prs = inner.prs.lock().unwrap();
    let items: Vec<Value> = prs
        .iter()
        .filter(|p| p.owner == owner && p.repo == repo)
        .filter(|_| query.get("state").is_none_or(|s| s == "open" || s == "all"))
        // GitHub filters `head` as `user:ref`.
        .filter(|p| query.get("head").is_none_or(|h| *h == format!("{}:{}", p.owner, p.head)))
        .filter(|p| query.get("base").is_none_or(|b| *b == p.base))
        .map(|p| pr_json(&api, p))
        .collect();
    (StatusCode::OK, axum::Json(Value::Array(items))).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}
