//! `shopset-controller`: the thin process around `shopset::reconcile` — flags, logging, leader
//! election, and the HTTP endpoints (health, metrics, GitHub webhook).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use clap::{Parser, ValueEnum};
use futures::channel::mpsc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use shopset::api::{Configuration, Tier};
use shopset::github::GitHubAccess;
use shopset::gitops::GitCache;
use shopset::health::Health;
use shopset::lease::LeaseLock;
use shopset::metrics::Metrics;
use shopset::reconcile::{ArgoCdSettings, Context, api, tiers_for_push};
use shopset::render::Renderer;
use shopset::webhook;

#[derive(Parser, Debug)]
#[command(
    name = "shopset-controller",
    version,
    about = "Keeps every Tier's system branch and Argo CD Applications converged"
)]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SHOPSET_NAMESPACE")]
    namespace: Option<String>,
    /// Where fetched repositories are cached.
    #[arg(long, env = "SHOPSET_CACHE_DIR", default_value = "/var/cache/shopset")]
    cache_dir: PathBuf,
    /// A directory whose templates replace the embedded ones.
    #[arg(long, env = "SHOPSET_TEMPLATES")]
    templates: Option<PathBuf>,
    /// Address of the HTTP endpoints: /healthz, /readyz, /metrics, POST /hooks/github.
    #[arg(long, env = "SHOPSET_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// File holding the GitHub webhook secret (HMAC-SHA256). Without one, webhooks are refused.
    #[arg(long, env = "SHOPSET_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Tiers reconciled at once (one tier is never reconciled twice at once).
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Take part in leader election; only the holder of the Lease reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the Lease (default: the watched namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "shopset-controller")]
    lease_name: String,
    /// How long a Lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// This replica's identity in the Lease (default: POD_NAME or host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// After each push, set `argocd.argoproj.io/refresh: normal` on the tier's Applications so
    /// Argo CD deploys at once. `false` when Argo CD gets the system repository's webhook itself
    /// (then it sees a push at that webhook or its own poll, `timeout.reconciliation`).
    #[arg(long, env = "SHOPSET_ARGOCD_REFRESH", default_value_t = true, action = clap::ArgAction::Set)]
    argocd_refresh: bool,
    /// Accept Tiers and Configurations naming local repositories (file:// URLs, paths). FOR TESTS
    /// AND LOCAL DEMOS ONLY: with it, whoever may create a Tier can make the controller read its
    /// own filesystem, including every tenant's cached repositories. Without it such a Tier is
    /// Stalled with reason LocalURLRefused.
    #[arg(long, env = "SHOPSET_ALLOW_LOCAL_URLS")]
    allow_local_urls: bool,
    /// /healthz answers 503 when reconciles are running and none has finished for this long
    /// (then the kubelet restarts a stuck controller).
    #[arg(long, env = "SHOPSET_STALL_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    stall_timeout: Duration,
    /// GitHub API base URL for automatic promotions by pull request (GitHub Enterprise:
    /// https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    github_url: String,
    /// File holding the GitHub token that opens and merges automatic promotions' pull requests
    /// (a mounted Secret; read at each use, so a rotated token is picked up). Default: the
    /// GITHUB_TOKEN environment variable.
    #[arg(long, env = "SHOPSET_GITHUB_TOKEN_FILE")]
    github_token_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SHOPSET_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    shopset::duration::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 15s or 1m"))
}

#[derive(Clone)]
struct Http {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    secret: Option<Arc<Vec<u8>>>,
    client: kube::Client,
    namespace: Option<String>,
    triggers: mpsc::UnboundedSender<ObjectRef<Tier>>,
    /// The reconcile context, whose watch caches answer which Tiers a push concerns.
    ctx: Arc<Context>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // A crash test that sets SHOPSET_FAULT against a build without fault points would pass for
    // the wrong reason: refuse to run instead.
    if std::env::var_os("SHOPSET_FAULT").is_some() && !cfg!(feature = "fault-injection") {
        anyhow::bail!(
            "SHOPSET_FAULT is set, but this build has no fault points; fix: build with --features fault-injection"
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let renderer = Renderer::with_overrides(args.templates.as_deref()).context("templates")?;
    let secret = webhook_secret(args.webhook_secret_file.as_deref());
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(args.stall_timeout));
    let (tx, rx) = mpsc::unbounded();
    let ctx = Arc::new(
        Context::new(client.clone(), GitCache::new(&args.cache_dir), renderer, metrics.clone())
            .with_argocd(ArgoCdSettings { refresh: args.argocd_refresh })
            .with_local_urls(args.allow_local_urls)
            .with_github(Some(GitHubAccess {
                base_url: args.github_url.clone(),
                token_file: args.github_token_file.clone(),
            }))
            .with_health(health.clone()),
    );
    let http = Http {
        metrics: metrics.clone(),
        health: health.clone(),
        secret,
        client: client.clone(),
        namespace: args.namespace.clone(),
        triggers: tx,
        ctx: ctx.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz /readyz /metrics /hooks/github");
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/hooks/github", post(github_hook))
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY))
        .with_state(http);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let lease = if args.leader_elect {
        let ns = args.lease_namespace.clone().or_else(|| args.namespace.clone()).unwrap_or_else(|| "default".into());
        let identity = args.identity.clone().unwrap_or_else(|| {
            format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "shopset".into()), std::process::id())
        });
        let lock = Arc::new(LeaseLock::new(
            Api::<Lease>::namespaced(client.clone(), &ns),
            &args.lease_name,
            identity,
            args.lease_duration,
        ));
        wait_for_leadership(&lock).await;
        tokio::spawn(keep_leadership(lock.clone(), stop_tx.clone()));
        Some(lock)
    } else {
        None
    };
    {
        let ctrl_c_tx = stop_tx.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            let _ = ctrl_c_tx.send(true);
        });
        let stop_tx = stop_tx.clone();
        #[cfg(unix)]
        tokio::spawn(async move {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                term.recv().await;
                tracing::info!("SIGTERM: shutting down");
                let _ = stop_tx.send(true);
            }
        });
    }
    if args.allow_local_urls {
        tracing::warn!(
            "--allow-local-urls: Tiers may make this controller read local repositories; tests and local demos only"
        );
    }
    shopset::reconcile::run(ctx, args.namespace, rx, args.concurrency, shutdown).await;
    if let Some(lock) = lease {
        let _ = lock.release().await;
    }
    Ok(())
}

/// The webhook secret; without a readable, non-empty one, webhooks are refused (401) and the
/// controller relies on polling. The Secret volume is optional, so a missing file is no error.
fn webhook_secret(path: Option<&std::path::Path>) -> Option<Arc<Vec<u8>>> {
    let path = path?;
    match std::fs::read(path) {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => Some(Arc::new(bytes.trim_ascii().to_vec())),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "webhook secret file is empty: webhooks are refused, polling only");
            None
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the webhook secret file: webhooks are refused, polling only");
            None
        }
    }
}

async fn wait_for_leadership(lock: &LeaseLock) {
    let mut said = false;
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => {
                tracing::info!(identity = lock.identity(), "became leader");
                return;
            }
            // Said once at info: a standby replica should not look idle for no reason.
            Ok(false) if !said => {
                tracing::info!(identity = lock.identity(), "another replica holds the Lease; waiting to take over");
                said = true;
            }
            Ok(false) => tracing::debug!("another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "cannot read the Lease"),
        }
        tokio::time::sleep(lock.duration() / 3).await;
    }
}

/// Renews the Lease; when it cannot be held, stops the controller (a restart waits as a follower).
async fn keep_leadership(lock: Arc<LeaseLock>, stop: tokio::sync::watch::Sender<bool>) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(lock.duration() / 3).await;
        match lock.try_acquire_or_renew().await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!("lost the Lease to another replica; stopping");
                let _ = stop.send(true);
                return;
            }
            Err(e) if last_ok.elapsed() < lock.duration() => {
                tracing::warn!(error = %e, "cannot renew the Lease; retrying")
            }
            Err(e) => {
                tracing::error!(error = %e, "could not renew the Lease within its duration; stopping");
                let _ = stop.send(true);
                return;
            }
        }
    }
}

/// 200 once every watch cache holds a complete list; 503 saying which do not yet.
async fn readyz(State(http): State<Http>) -> (StatusCode, String) {
    probe(http.health.readiness())
}

/// 503 when reconciles run and none has finished within the stall timeout, saying since when.
async fn healthz(State(http): State<Http>) -> (StatusCode, String) {
    probe(http.health.liveness())
}

fn probe(answer: Result<String, String>) -> (StatusCode, String) {
    match answer {
        Ok(text) => (StatusCode::OK, format!("{text}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics_text(State(http): State<Http>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        http.metrics.encode(),
    )
}

async fn github_hook(State(http): State<Http>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let Some(secret) = &http.secret else {
        http.metrics.webhooks_refused.inc();
        return (StatusCode::UNAUTHORIZED, "webhooks are disabled: no secret configured\n".into());
    };
    let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    if let Err(e) = webhook::verify_signature(secret, &body, signature) {
        http.metrics.webhooks_refused.inc();
        tracing::warn!(error = %e, "webhook refused");
        return (StatusCode::UNAUTHORIZED, format!("{e}\n"));
    }
    match headers.get("x-github-event").and_then(|v| v.to_str().ok()) {
        Some("ping") => return (StatusCode::OK, "pong\n".into()),
        Some("push") | Some("pull_request_review") | None => {}
        Some(other) => return (StatusCode::ACCEPTED, format!("ignored event {other}\n")),
    }
    let parsed = match headers.get("x-github-event").and_then(|v| v.to_str().ok()) {
        // A review of a promotion pull request wakes the tier it merges into.
        Some("pull_request_review") => webhook::parse_review(&body),
        _ => webhook::parse_push(&body),
    };
    let push = match parsed {
        Ok(p) => p,
        Err(e) => {
            http.metrics.webhooks_refused.inc();
            return (StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    http.metrics.webhooks.inc();
    let matched = match http.ctx.tiers_for_push(&push) {
        Some(matched) => matched,
        None => {
            let namespace = http.namespace.as_deref();
            let (tiers, configurations) =
                (api::<Tier>(&http.client, namespace), api::<Configuration>(&http.client, namespace));
            match (tiers.list(&ListParams::default()).await, configurations.list(&ListParams::default()).await) {
                (Ok(t), Ok(c)) => {
                    tiers_for_push(&push, &t.items.into_iter().map(Arc::new).collect::<Vec<_>>(), &c.items)
                }
                (Err(e), _) | (_, Err(e)) => {
                    let e = shopset::error::api_message(&e);
                    return (StatusCode::SERVICE_UNAVAILABLE, format!("cannot list tiers: {e}\n"));
                }
            }
        }
    };
    tracing::info!(branch = %push.branch, tiers = matched.len(), "webhook push");
    let names: Vec<String> = matched.iter().map(|r| r.name.clone()).collect();
    for r in matched {
        let _ = http.triggers.unbounded_send(r);
    }
    (StatusCode::ACCEPTED, format!("reconciling: {}\n", names.join(", ")))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[test]
    fn argocd_refresh_is_on_unless_set_to_false() {
        let parse = |extra: &[&str]| Args::try_parse_from([&["shopset-controller"], extra].concat()).unwrap();
        assert!(parse(&[]).argocd_refresh);
        assert!(parse(&["--argocd-refresh", "true"]).argocd_refresh);
        assert!(!parse(&["--argocd-refresh=false"]).argocd_refresh);
        assert!(Args::try_parse_from(["shopset-controller", "--argocd-refresh=maybe"]).is_err());
    }

    #[test]
    fn local_urls_are_refused_unless_the_flag_says_otherwise_and_help_says_what_it_is_for() {
        let parse = |extra: &[&str]| Args::try_parse_from([&["shopset-controller"], extra].concat()).unwrap();
        assert!(!parse(&[]).allow_local_urls);
        assert!(parse(&["--allow-local-urls"]).allow_local_urls);
        let help = <Args as clap::CommandFactory>::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            help.contains("--allow-local-urls Accept Tiers and Configurations naming local repositories"),
            "{help}"
        );
        assert!(help.contains("FOR TESTS AND LOCAL DEMOS ONLY"), "{help}");
    }

    #[test]
    fn the_stall_timeout_is_five_minutes_unless_set() {
        let parse = |extra: &[&str]| Args::try_parse_from([&["shopset-controller"], extra].concat()).unwrap();
        assert_eq!(parse(&[]).stall_timeout, std::time::Duration::from_secs(300));
        assert_eq!(parse(&["--stall-timeout=30s"]).stall_timeout, std::time::Duration::from_secs(30));
    }
}
