//! `shopctl doctor`: runs the analyzers of [`shopset::doctor`] over what git, the cluster and the
//! controller's metrics show, and prints each problem as Problem / Why / Fix. Exit status 3 when a
//! problem is found. Without a cluster the git analyzers still run, and the output says what could
//! not be checked.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::ACCEPT;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use shopset::doctor::{Context, Finding, TierReport, cluster_facts, diagnose_tier, webhooks};

use crate::promote::Refused;
use crate::{Cli, Output, Style, auth, cache, load, print_structured, tier_order};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Only this tier (default: every tier, in promotion order).
    tier: Option<String>,
    /// Manifest files or directories holding the Tiers, Configurations and ShopSets.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// shopset-controller's HTTP address, to read its webhook counters from /metrics
    /// (e.g. http://localhost:8080 after `kubectl -n shopset-system port-forward svc/shopset-controller 8080`).
    #[arg(long, value_name = "URL")]
    controller_url: Option<String>,
    /// Report ShopSets in maintenance for longer than this (`30m`, `12h`, `7d`).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_max_age)]
    maintenance_max_age: u64,
}

/// A duration as the CRDs write them, or whole days (`7d`), in seconds.
fn parse_max_age(value: &str) -> std::result::Result<u64, String> {
    let days = value.strip_suffix('d').and_then(|d| d.parse::<u64>().ok()).map(|d| d * 86_400);
    days.or_else(|| shopset::duration::parse_duration(value).map(|d| d.as_secs()))
        .ok_or_else(|| format!("{value:?} is not a duration like `7d`, `12h` or `30m`"))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ControllerReport {
    findings: Vec<Finding>,
    not_checked: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DoctorReport {
    tiers: Vec<TierReport>,
    controller: ControllerReport,
    problems: usize,
}

pub fn doctor(cli: &Cli, style: &Style, args: &DoctorArgs) -> Result<()> {
    let inv = load(cli, &args.files)?;
    let (cache, auth) = (cache(cli)?, auth(cli)?);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let ctx = Context {
        manifests: args.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -f "),
        now,
        maintenance_max_age: i64::try_from(args.maintenance_max_age).unwrap_or(i64::MAX),
    };
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let client = rt.block_on(kube::Client::try_default()).map_err(|e| e.to_string());

    let mut tiers = Vec::new();
    for name in tier_order(&inv, args.tier.as_deref())? {
        let input = inv.tier_input(&name)?;
        let git = shopset::state::read(&cache, &auth, &input).map_err(|e| e.to_string());
        let cluster = match &client {
            Ok(c) => Ok(rt.block_on(cluster_facts(c, &input))),
            Err(e) => Err(e.clone()),
        };
        tiers.push(diagnose_tier(&input, &git, &cluster, &ctx));
    }

    let mut controller = ControllerReport { findings: Vec::new(), not_checked: Vec::new() };
    match &args.controller_url {
        None => controller.not_checked.push(
            "webhook: no --controller-url given (pass the controller's address, e.g. http://localhost:8080 \
             after `kubectl -n shopset-system port-forward svc/shopset-controller 8080`)"
                .into(),
        ),
        Some(url) => {
            let base = url.trim_end_matches('/').trim_end_matches("/metrics").to_string();
            match rt.block_on(http_get(&format!("{base}/metrics"))) {
                Ok(text) => controller.findings.extend(webhooks(&text, &base)),
                Err(e) => controller.findings.push(Finding {
                    check: "webhook".into(),
                    tier: None,
                    problem: format!("cannot read the controller's metrics at {base}/metrics: {e:#}"),
                    why: "the controller is down, or the address is wrong: without it nothing is synced except by hand"
                        .into(),
                    fix: vec![
                        format!("kubectl -n {} get deploy,pods", shopset::doctor::CONTROLLER_NAMESPACE),
                        format!(
                            "kubectl -n {} port-forward svc/{} 8080",
                            shopset::doctor::CONTROLLER_NAMESPACE,
                            shopset::doctor::CONTROLLER_DEPLOYMENT
                        ),
                    ],
                }),
            }
        }
    }

    let problems = tiers.iter().map(|t| t.findings.len()).sum::<usize>() + controller.findings.len();
    let report = DoctorReport { tiers, controller, problems };
    if cli.output == Output::Text {
        print_text(&report, style);
    }
    print_structured(cli.output, &report)?;
    if problems > 0 {
        return Err(Refused(format!("doctor found {problems} problem{}", if problems == 1 { "" } else { "s" })).into());
    }
    Ok(())
}

fn print_finding(f: &Finding, style: &Style) {
    println!("  {} {}", style.paint("1;31", "Problem:"), f.problem);
    println!("  {}     {}", style.bold("Why:"), f.why);
    for (i, line) in f.fix.iter().enumerate() {
        let label = if i == 0 { style.bold("Fix:") } else { "    ".into() };
        println!("  {label}     {line}");
    }
    println!();
}

fn print_text(r: &DoctorReport, style: &Style) {
    for t in &r.tiers {
        println!("{}", style.bold(&format!("Tier {}", t.tier)));
        for f in &t.findings {
            print_finding(f, style);
        }
        let ok: Vec<&str> =
            t.checked.iter().filter(|c| !t.findings.iter().any(|f| &f.check == *c)).map(String::as_str).collect();
        if !ok.is_empty() {
            println!("  {} {}", style.green("ok:"), ok.join(", "));
        }
        for n in &t.not_checked {
            println!("  {} {n}", style.yellow("not checked:"));
        }
    }
    println!("{}", style.bold("Controller"));
    for f in &r.controller.findings {
        print_finding(f, style);
    }
    if r.controller.findings.is_empty() && r.controller.not_checked.is_empty() {
        println!("  {} webhook", style.green("ok:"));
    }
    for n in &r.controller.not_checked {
        println!("  {} {n}", style.yellow("not checked:"));
    }
    match r.problems {
        0 => println!("{}", style.green("no problems found")),
        n => println!("{}", style.paint("1;31", &format!("{n} problem{} found", if n == 1 { "" } else { "s" }))),
    }
}

/// A plain-HTTP GET (the metrics endpoint is plain HTTP inside the cluster; reach it with
/// `kubectl port-forward`): the body of a 200 answer, whatever its transfer encoding.
async fn http_get(url: &str) -> Result<String> {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
    if !url.starts_with("http://") {
        return Err(anyhow!(
            "only http:// URLs are read; fix: `kubectl port-forward` the controller's Service and pass \
             http://localhost:<port>"
        ));
    }
    let uri: Uri = url.parse().map_err(|e| anyhow!("{url:?} is not a URL ({e}); fix: pass http://host:port"))?;
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = Request::get(uri).header(ACCEPT, "text/plain").body(Empty::new())?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let response = client.request(request).await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot connect to {authority}: {}", root_cause(&e))
            } else {
                anyhow!("cannot read the answer of {url}: {}", root_cause(&e))
            }
        })?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(anyhow!("{url} answered {status}"));
        }
        let body = response.into_body().collect().await.with_context(|| format!("cannot read the answer of {url}"))?;
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    });
    answer.await.map_err(|_| anyhow!("{url} did not answer within {} s", ANSWER_TIMEOUT.as_secs()))?
}

/// The innermost error: what the OS or the peer said, without the client's wrappers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::http_get;

    /// A server on 127.0.0.1 whose /metrics answers in chunks (no Content-Length), as a
    /// streaming server does, and whose other paths answer 404.
    async fn chunked_server() -> String {
        let metrics = get(|| async {
            let chunks = ["shopset_", "webhook_deliveries_total", " 3\n", "# EOF\n"];
            let stream = futures::stream::iter(chunks.map(|c| Ok::<_, Infallible>(c.to_string())));
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response()
        });
        let app = Router::new().route("/metrics", metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_chunked_answer_is_read_whole() {
        let base = chunked_server().await;
        // The server does answer in chunks.
        let mut raw = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
        raw.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.unwrap();
        assert!(answer.to_ascii_lowercase().contains("\r\ntransfer-encoding: chunked\r\n"), "{answer}");

        assert_eq!(http_get(&format!("{base}/metrics")).await.unwrap(), "shopset_webhook_deliveries_total 3\n# EOF\n");
    }

    #[tokio::test]
    async fn a_non_200_answer_is_an_error_naming_the_status() {
        let base = chunked_server().await;
        let err = http_get(&format!("{base}/nothing")).await.unwrap_err();
        assert_eq!(err.to_string(), format!("{base}/nothing answered 404 Not Found"));
    }

    #[tokio::test]
    async fn only_http_urls_are_read() {
        let err = http_get("https://127.0.0.1:1/metrics").await.unwrap_err();
        assert!(err.to_string().starts_with("only http:// URLs are read; fix: `kubectl port-forward`"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_said_with_the_address() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = http_get(&format!("http://{closed}/metrics")).await.unwrap_err();
        assert!(err.to_string().starts_with(&format!("cannot connect to {closed}: ")), "{err}");
    }
}
