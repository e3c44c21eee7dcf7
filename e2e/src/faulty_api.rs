//! The real kube-apiserver behind a front that answers HTTP 500 on cue: `kubectl proxy` holds the
//! real connection (TLS, the control plane's client certificate), and a plain-HTTP proxy in front of
//! it passes every request through, watches streamed as they come, except those the test's fault
//! matches, which get the API server's own answer to a lost etcd leader:
//!
//! ```text
//! 500 {"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","code":500,
//!      "message":"Internal error occurred: etcdserver: leader changed"}
//! ```
//!
//! ```no_run
//! # let cp = shopset_e2e::controlplane::ControlPlane::start();
//! use shopset_e2e::faulty_api::FaultyApi;
//! let api = FaultyApi::start(cp.kubeconfig());
//! api.fail(|call| call.is_list_of("shopset.dev", "shopsets"));
//! // ... a client with api.write_kubeconfig(path) gets 500s for lists of ShopSets ...
//! api.heal();
//! ```
//!
//! Both listen on 127.0.0.1 only. Dropping the [`FaultyApi`] stops both.

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::tools::{kubectl, path_env};

/// The API server's message when etcd lost its leader under a request.
pub const LEADER_CHANGED: &str = "Internal error occurred: etcdserver: leader changed";

/// The body of the 500: a `Status` as kube-apiserver writes it.
pub fn status_body() -> String {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": LEADER_CHANGED,
        "reason": "InternalError",
        "code": 500,
    })
    .to_string()
}

/// A request as a fault sees it.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
}

impl Call<'_> {
    /// A watch (`?watch=true`): a streamed answer, not a list.
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")
    }

    /// A list (not a watch) of `plural` of API group `group` ("" for the core group), in a
    /// namespace or across all of them.
    pub fn is_list_of(&self, group: &str, plural: &str) -> bool {
        if self.method != "GET" || self.is_watch() {
            return false;
        }
        let rest = if group.is_empty() {
            self.path.strip_prefix("/api/")
        } else {
            self.path.strip_prefix("/apis/").and_then(|p| p.strip_prefix(group)).and_then(|p| p.strip_prefix('/'))
        };
        let Some(rest) = rest else { return false };
        match rest.split('/').collect::<Vec<_>>()[..] {
            [_version, p] => p == plural,
            [_version, "namespaces", _ns, p] => p == plural,
            _ => false,
        }
    }
}

type Fault = Arc<dyn Fn(&Call) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    fault: Mutex<Option<Fault>>,
    /// `METHOD path?query` of each request answered 500, oldest first.
    failed: Mutex<Vec<String>>,
}

impl State {
    fn fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `kubectl proxy` to the control plane, with the failing front on `url()`.
pub struct FaultyApi {
    url: String,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
    kubectl_proxy: Child,
}

impl FaultyApi {
    /// Starts `kubectl proxy` with `kubeconfig` and the front before it; nothing fails yet.
    ///
    /// # Panics
    /// If either cannot start.
    pub fn start(kubeconfig: &Path) -> FaultyApi {
        let mut kubectl_proxy = Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["proxy", "--address=127.0.0.1", "--port=0", "--accept-hosts=^127\\.0\\.0\\.1$"])
            .env("PATH", path_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run kubectl proxy: {e}"));
        let upstream = upstream_address(&mut kubectl_proxy);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("faulty-api")
            .enable_all()
            .build()
            .expect("start the proxy's runtime");
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind the proxy on 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("the proxy's address"));
        let state = Arc::new(State::default());
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        runtime.spawn(serve(listener, upstream, client, state.clone()));
        FaultyApi { url, state, runtime: Some(runtime), kubectl_proxy }
    }

    /// `http://127.0.0.1:<port>`: the API server, failing as told.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes a kubeconfig that talks to the API server through this proxy (no credentials:
    /// `kubectl proxy` adds its own).
    pub fn write_kubeconfig(&self, path: &Path) {
        let config = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: faulty-api
  cluster:
    server: {url}
users:
- name: through-proxy
  user: {{}}
contexts:
- name: faulty-api
  context:
    cluster: faulty-api
    user: through-proxy
    namespace: default
current-context: faulty-api
",
            url = self.url
        );
        std::fs::write(path, config).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// From now on, answer 500 to every request `when` matches (replacing an earlier fault).
    pub fn fail(&self, when: impl Fn(&Call) -> bool + Send + Sync + 'static) {
        *self.state.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(when));
    }

    /// From now on, pass every request through.
    pub fn heal(&self) {
        *self.state.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// `METHOD path?query` of each request answered 500 so far, oldest first.
    pub fn failed(&self) -> Vec<String> {
        self.state.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FaultyApi {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // Our own child.
        let _ = self.kubectl_proxy.kill();
        let _ = self.kubectl_proxy.wait();
    }
}

/// The address `kubectl proxy` says it serves on ("Starting to serve on 127.0.0.1:PORT").
fn upstream_address(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        let _ = lines.read_line(&mut first);
        let _ = tx.send(first);
        // Keep reading so that kubectl never blocks on a full pipe.
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let address = line.trim().rsplit(' ').next().and_then(|a| a.parse().ok());
    address.unwrap_or_else(|| {
        let _ = child.kill();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("kubectl proxy did not say where it serves: {line:?}\n{stderr}")
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    client: Client<HttpConnector, Incoming>,
    state: Arc<State>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (client, state) = (client.clone(), state.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, upstream, client.clone(), state.clone()));
            // A client that goes away mid-watch ends its connection: nothing to report.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, text: String) -> Response<Body> {
    let body: Body = Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

async fn answer(
    mut req: Request<Incoming>,
    upstream: SocketAddr,
    client: Client<HttpConnector, Incoming>,
    state: Arc<State>,
) -> Result<Response<Body>, Infallible> {
    let (method, path, query) =
        (req.method().to_string(), req.uri().path().to_string(), req.uri().query().unwrap_or_default().to_string());
    let call = Call { method: &method, path: &path, query: &query };
    if state.fault().is_some_and(|fault| fault(&call)) {
        let mut failed = state.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.push(format!("{method} {}", req.uri()));
        return Ok(full(StatusCode::INTERNAL_SERVER_ERROR, status_body()));
    }
    let target = format!("http://{upstream}{}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    *req.uri_mut() = match target.parse() {
        Ok(uri) => uri,
        Err(e) => return Ok(full(StatusCode::BAD_REQUEST, format!("{{\"message\":\"bad request URI: {e}\"}}"))),
    };
    req.headers_mut().remove(hyper::header::HOST);
    match client.request(req).await {
        Ok(response) => Ok(response.map(|body| body.boxed())),
        Err(e) => {
            Ok(full(StatusCode::BAD_GATEWAY, serde_json::json!({"message": format!("kubectl proxy: {e}")}).to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_told_from_a_watch_a_get_and_another_resource() {
        let call = |method, path, query| Call { method, path, query };
        let list = call("GET", "/apis/shopset.dev/v1alpha1/namespaces/shop/shopsets", "limit=1");
        assert!(list.is_list_of("shopset.dev", "shopsets"));
        assert!(call("GET", "/apis/shopset.dev/v1alpha1/shopsets", "").is_list_of("shopset.dev", "shopsets"));
        assert!(
            !call("GET", "/apis/shopset.dev/v1alpha1/shopsets", "watch=true").is_list_of("shopset.dev", "shopsets")
        );
        assert!(
            !call("GET", "/apis/shopset.dev/v1alpha1/namespaces/shop/shopsets/eu", "")
                .is_list_of("shopset.dev", "shopsets")
        );
        assert!(
            !call("GET", "/apis/shopset.dev/v1alpha1/namespaces/shop/tiers", "").is_list_of("shopset.dev", "shopsets")
        );
        assert!(
            !call("POST", "/apis/shopset.dev/v1alpha1/namespaces/shop/shopsets", "")
                .is_list_of("shopset.dev", "shopsets")
        );
        assert!(call("GET", "/api/v1/namespaces/shop/secrets", "").is_list_of("", "secrets"));
        assert!(!call("GET", "/apis/x.shopset.dev/v1/shopsets", "").is_list_of("shopset.dev", "shopsets"));
    }
}
