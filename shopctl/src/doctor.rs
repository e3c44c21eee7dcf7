//! `shopctl doctor`: runs the analyzers of [`shopset::doctor`] over what git, the cluster and the
//! controller's metrics show, and prints each problem as Problem / Why / Fix. Exit status 3 when a
//! problem is found. Without a cluster the git analyzers still run, and the output says what could
//! not be checked.

use std::io::{Read as _, Write as _};
use std::net::ToSocketAddrs as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
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
    let inv = load(&args.files)?;
    let (cache, auth) = (cache(cli)?, auth(cli)?);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let ctx =
        Context { manifests: args.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -f "), now };
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
        None => controller.not_checked.push("webhook: no --controller-url given (pass the controller's address, e.g. http://localhost:8080 after `kubectl -n shopset-system port-forward svc/shopset-controller 8080`)".into()),
        Some(url) => {
            let base = url.trim_end_matches('/').trim_end_matches("/metrics").to_string();
            match http_get(&format!("{base}/metrics")) {
                Ok(text) => controller.findings.extend(webhooks(&text, &base)),
                Err(e) => controller.findings.push(Finding {
                    check: "webhook".into(),
                    tier: None,
                    problem: format!("cannot read the controller's metrics at {base}/metrics: {e:#}"),
                    why: "the controller is down, or the address is wrong: without it nothing is synced except by hand".into(),
                    fix: vec![
                        format!("kubectl -n {} get deploy,pods", shopset::doctor::CONTROLLER_NAMESPACE),
                        format!("kubectl -n {} port-forward svc/{} 8080", shopset::doctor::CONTROLLER_NAMESPACE, shopset::doctor::CONTROLLER_DEPLOYMENT),
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

/// A plain HTTP/1.1 GET (the metrics endpoint is plain HTTP inside the cluster; reach it with
/// `kubectl port-forward`).
fn http_get(url: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// URLs are read; fix: `kubectl port-forward` the controller's Service and pass http://localhost:<port>"))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let addr = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addrs: Vec<_> = addr.to_socket_addrs().with_context(|| format!("cannot resolve {host}"))?.collect();
    let mut stream = addrs
        .iter()
        .find_map(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(5)).ok())
        .ok_or_else(|| anyhow!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(|| format!("cannot read the answer of {url}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("{url} did not answer HTTP"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(anyhow!("{url} answered {status:?}"));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    Ok(if chunked { dechunk(body) } else { body.to_string() })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
