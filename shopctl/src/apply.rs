//! `shopctl apply`: the manual sync path for when Argo CD is down. It does what Argo CD does for
//! each Application of a tier, with the same tools a person would use:
//!
//! ```sh
//! git clone --recurse-submodules --branch <branch> <system url> system && cd system
//! kustomize build shopsets/<name> | kubectl apply --server-side --field-manager=shopset-manual --force-conflicts -f -
//! ```
//!
//! Field manager `shopset-manual`: what was applied by hand is told apart from what Argo CD
//! (`argocd-controller`) and the controller (`shopset-controller`) applied. `--force-conflicts`
//! takes over fields another manager set, as Argo CD's own server-side apply does; when Argo CD
//! is back, its next sync takes them back.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow};
use clap::ValueEnum;
use kube::ResourceExt;
use serde::Serialize;
use shopset::gitops::Auth;
use shopset::revision::short;

use crate::progress::Progress;
use crate::{Cli, Output, Style, auth, load, print_structured};

/// The field manager of everything `shopctl apply` applies.
pub const FIELD_MANAGER: &str = "shopset-manual";

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum DryRun {
    /// Apply.
    None,
    /// Send everything to the API server as a dry run: validated and admitted, nothing stored.
    Server,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The tier whose system branch is applied.
    tier: String,
    /// Manifest files or directories holding the Tier (for its system repository and branch).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Apply only this ShopSet's overlay.
    #[arg(long)]
    shopset: Option<String>,
    /// `--dry-run=server` (or `--dry-run`): the API server checks everything and stores nothing.
    #[arg(long, value_enum, default_value_t = DryRun::None, num_args = 0..=1, require_equals = true, default_missing_value = "server")]
    dry_run: DryRun,
}

/// What was applied for one ShopSet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub shopset: String,
    /// The pipeline run, as a person would type it in the clone.
    pub command: String,
    pub dry_run: bool,
    /// kubectl's report, one line per object.
    pub objects: Vec<String>,
    /// Objects the server could not dry-run because their namespace does not exist yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_checked_by_server: Vec<String>,
}

/// The JSON/YAML document of a run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    tier: String,
    system_url: String,
    branch: String,
    commit: String,
    field_manager: &'static str,
    applied: Vec<Applied>,
}

pub fn apply(cli: &Cli, style: &Style, args: &ApplyArgs) -> Result<()> {
    let inv = load(cli, &args.files)?;
    let input = inv.tier_input(&args.tier)?;
    let tier = &input.tier;
    let branch = tier.branch();
    let url = &tier.spec.system.url;
    let dry = args.dry_run == DryRun::Server;

    let tmp = temp_dir("shopctl-apply-")?;
    let checkout = tmp.path().join("system");
    let mut urls = vec![url.clone(), tier.spec.app.url.clone()];
    urls.extend(input.configurations.iter().map(|c| c.spec.url.clone()));
    clone_recursive(&auth(cli)?, url, &branch, &checkout, &urls, tmp.path())?;
    let commit = git_out(&checkout, &["rev-parse", "HEAD"]).unwrap_or_default();

    let available: BTreeSet<String> = std::fs::read_dir(checkout.join("shopsets"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<String> = match &args.shopset {
        Some(name) if available.contains(name) => vec![name.clone()],
        Some(name) => {
            return Err(anyhow!(
                "ShopSet {name}: branch {branch} of {url} has no overlay shopsets/{name} (it has: {}); fix: sync the tier first (`shopctl sync -f ... --tier {}`), or name one of those",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.iter().cloned().collect::<Vec<_>>().join(", ")
                },
                args.tier
            ));
        }
        None => available.iter().cloned().collect(),
    };
    if cli.output == Output::Text {
        println!(
            "{} tier {} from {url} branch {branch} at {} (field manager {FIELD_MANAGER}{})",
            style.bold(if dry { "Dry run of" } else { "Applying" }),
            args.tier,
            short(&commit),
            if dry { ", server dry run: nothing is stored" } else { "" }
        );
        for ss in input.shopsets.iter().map(|s| s.name_any()).filter(|n| !available.contains(n)) {
            println!(
                "  {} ShopSet {ss} has no overlay on branch {branch} yet: not applied (sync the tier first)",
                style.yellow("note:")
            );
        }
    }

    let kustomize = Kustomize::find()?;
    let mut applied = Vec::new();
    let mut failures = Vec::new();
    let progress = Progress::new(cli.output, names.len());
    for name in &names {
        let rel = format!("shopsets/{name}");
        progress.start(&format!("{} ShopSet {name}", if dry { "dry-running" } else { "applying" }));
        let result = apply_one(&kustomize, &checkout, name, &rel, dry);
        progress.suspend(|| {
            if cli.output != Output::Text {
                return;
            }
            match &result {
                Ok(a) => {
                    println!("{} {name}: {}", style.bold("ShopSet"), a.command);
                    for line in &a.objects {
                        println!("  {line}");
                    }
                    for line in &a.not_checked_by_server {
                        println!("  {} {line}", style.yellow("not checked:"));
                    }
                }
                Err(_) => println!("{} {name}: {}", style.bold("ShopSet"), style.paint("31", "failed")),
            }
        });
        progress.done();
        match result {
            Ok(a) => applied.push(a),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    drop(progress);
    print_structured(
        cli.output,
        &Report {
            tier: args.tier.clone(),
            system_url: url.clone(),
            branch,
            commit,
            field_manager: FIELD_MANAGER,
            applied,
        },
    )?;
    if !failures.is_empty() {
        return Err(anyhow!("{}", failures.join("\n")));
    }
    Ok(())
}

fn apply_one(kustomize: &Kustomize, checkout: &Path, name: &str, rel: &str, dry: bool) -> Result<Applied> {
    let build_cmd = kustomize.display(rel);
    let yaml = kustomize.build(&checkout.join(rel)).map_err(|e| anyhow!("ShopSet {name}: `{build_cmd}` failed: {e}; fix: build it yourself in a clone of the system branch to see the error"))?;
    let mut kubectl_args: Vec<String> = vec![
        "apply".into(),
        "--server-side".into(),
        format!("--field-manager={FIELD_MANAGER}"),
        "--force-conflicts".into(),
    ];
    if dry {
        kubectl_args.push("--dry-run=server".into());
    }
    kubectl_args.extend(["-f".into(), "-".into()]);
    let command = format!("{build_cmd} | kubectl {}", kubectl_args.join(" "));

    // The server cannot dry-run objects in a namespace that does not exist yet (the Namespace in
    // the same stream is not stored): those are named instead of failing the whole dry run.
    let (stream, not_checked) = if dry { split_for_dry_run(&yaml)? } else { (yaml, Vec::new()) };
    let mut objects = Vec::new();
    if !stream.trim().is_empty() {
        let out = run_with_stdin("kubectl", &kubectl_args, &stream)
            .with_context(|| format!("ShopSet {name}: cannot run kubectl; fix: install kubectl and put it on PATH"))?;
        if !out.status.success() {
            return Err(anyhow!(
                "ShopSet {name}: `kubectl {}` failed ({}): {}; fix: check KUBECONFIG, your permissions in the ShopSet's namespace, and the objects kubectl names",
                kubectl_args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        objects = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect();
    }
    Ok(Applied { shopset: name.into(), command, dry_run: dry, objects, not_checked_by_server: not_checked })
}

/// The documents of a kustomize output whose namespace exists (or that are cluster-scoped), and
/// a note per namespace for the others.
fn split_for_dry_run(yaml: &str) -> Result<(String, Vec<String>)> {
    let docs = split_documents(yaml);
    let mut namespaces: BTreeMap<String, bool> = BTreeMap::new();
    let mut keep = Vec::new();
    let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for doc in docs {
        let value: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap_or(serde_yaml::Value::Null);
        let text = |path: &[&str]| -> Option<String> {
            let mut v = &value;
            for p in path {
                v = v.get(*p)?;
            }
            v.as_str().map(str::to_string)
        };
        match text(&["metadata", "namespace"]) {
            Some(ns) => {
                let exists = match namespaces.get(&ns) {
                    Some(e) => *e,
                    None => {
                        let out = Command::new("kubectl")
                            .args(["get", "namespace", &ns, "--ignore-not-found", "-o", "name"])
                            .stdin(Stdio::null())
                            .output()
                            .context("cannot run kubectl; fix: install kubectl and put it on PATH")?;
                        if !out.status.success() {
                            return Err(anyhow!(
                                "`kubectl get namespace {ns}` failed: {}; fix: check KUBECONFIG",
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                        let e = !out.stdout.is_empty();
                        namespaces.insert(ns.clone(), e);
                        e
                    }
                };
                if exists {
                    keep.push(doc);
                } else {
                    let kind = text(&["kind"]).unwrap_or_default().to_lowercase();
                    let name = text(&["metadata", "name"]).unwrap_or_default();
                    skipped.entry(ns).or_default().push(format!("{kind}/{name}"));
                }
            }
            None => keep.push(doc),
        }
    }
    let notes = skipped
        .into_iter()
        .map(|(ns, objects)| format!("{} object(s) in namespace {ns}, which does not exist yet: the server cannot dry-run them (they would be created with it): {}", objects.len(), objects.join(", ")))
        .collect();
    Ok((keep.iter().map(|d| format!("---\n{d}")).collect(), notes))
}

/// Splits a YAML stream at `---` lines.
fn split_documents(yaml: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in yaml.lines() {
        if line == "---" {
            if !cur.trim().is_empty() {
                docs.push(std::mem::take(&mut cur));
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        docs.push(cur);
    }
    docs
}

fn run_with_stdin(program: &str, args: &[String], input: &str) -> std::io::Result<std::process::Output> {
    let mut child =
        Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    // A kubectl that exits early closes its stdin: its own error says why.
    let _ = writer.join();
    Ok(out)
}

fn git_out(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").current_dir(dir).args(args).stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A private (mode 0700) temporary directory, removed on drop.
pub(crate) fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir().with_context(|| {
        format!(
            "cannot create a temporary directory in {}; fix: set TMPDIR to a writable directory",
            std::env::temp_dir().display()
        )
    })
}

/// `kustomize build DIR`, or `kubectl kustomize DIR` when no `kustomize` is on PATH.
pub(crate) struct Kustomize {
    program: PathBuf,
    name: &'static str,
    sub: &'static str,
}

impl Kustomize {
    pub(crate) fn find() -> Result<Self> {
        if let Some(p) = on_path("kustomize") {
            return Ok(Self { program: p, name: "kustomize", sub: "build" });
        }
        if let Some(p) = on_path("kubectl") {
            return Ok(Self { program: p, name: "kubectl", sub: "kustomize" });
        }
        Err(anyhow!(
            "neither kustomize nor kubectl is on PATH; fix: install kustomize v5 (or kubectl, which has it built in)"
        ))
    }

    /// The command as a person types it.
    pub(crate) fn display(&self, dir: &str) -> String {
        format!("{} {} {dir}", self.name, self.sub)
    }

    /// The build's output, or its error output.
    pub(crate) fn build(&self, dir: &Path) -> std::result::Result<String, String> {
        let out = Command::new(&self.program)
            .arg(self.sub)
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if out.status.success() {
            String::from_utf8(out.stdout).map_err(|_| "the output is not UTF-8".to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `git clone --recurse-submodules --branch BRANCH URL DEST`, with `-c protocol.file.allow=always`
/// when a repository is local. Credentials given to shopctl reach git through the environment
/// (an `http.<origin>.extraHeader` per repository host, or `GIT_SSH_COMMAND` with the key in a
/// private temporary file), never through its arguments; without them git uses its own
/// configuration (credential helpers, SSH agent).
fn clone_recursive(auth: &Auth, url: &str, branch: &str, dest: &Path, urls: &[String], tmp: &Path) -> Result<()> {
    let local = urls.iter().any(|u| u.starts_with("file://") || u.starts_with('/'));
    let mut args: Vec<String> = Vec::new();
    if local {
        args.extend(["-c".into(), "protocol.file.allow=always".into()]);
    }
    args.extend(["clone", "--quiet", "--recurse-submodules", "--branch", branch, url].map(String::from));
    let shown = format!("git {} {}", args.join(" "), dest.display());
    let mut cmd = Command::new("git");
    cmd.args(&args).arg(dest).stdin(Stdio::null()).env("GIT_TERMINAL_PROMPT", "0");
    for (k, v) in credential_env(auth, urls, tmp)? {
        cmd.env(k, v);
    }
    let out = cmd.output().context("cannot run git; fix: install git and put it on PATH")?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        for secret in auth.secrets() {
            stderr = stderr.replace(secret, "<redacted>");
        }
        return Err(anyhow!(
            "cannot clone branch {branch} of {url} with its submodules: `{shown}` failed ({}): {stderr}; fix: check the URL, that the branch exists (`shopctl sync`), and your git credentials",
            out.status
        ));
    }
    Ok(())
}

fn credential_env(auth: &Auth, urls: &[String], tmp: &Path) -> Result<Vec<(OsString, OsString)>> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if let Some(password) = &auth.password {
        let user = auth.username.as_deref().unwrap_or("git");
        let header = format!("Authorization: Basic {}", base64(format!("{user}:{password}").as_bytes()));
        let origins: BTreeSet<String> = urls.iter().filter_map(|u| http_origin(u)).collect();
        let mut n: usize = std::env::var("GIT_CONFIG_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
        for origin in origins {
            env.push((format!("GIT_CONFIG_KEY_{n}").into(), format!("http.{origin}/.extraHeader").into()));
            env.push((format!("GIT_CONFIG_VALUE_{n}").into(), header.clone().into()));
            n += 1;
        }
        env.push(("GIT_CONFIG_COUNT".into(), n.to_string().into()));
    }
    if let Some(key) = &auth.ssh_key {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = tmp.join("identity");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .context("cannot write the SSH key to a temporary file")?;
        f.write_all(key.as_bytes())?;
        if !key.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        env.push((
            "GIT_SSH_COMMAND".into(),
            format!("ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes", path.display()).into(),
        ));
    }
    Ok(env)
}

/// `https://host[:port]` of an HTTP(S) URL.
fn http_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}

fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separator_lines() {
        let docs = split_documents("a: 1\n---\nb: 2\n---\n");
        assert_eq!(docs, vec!["a: 1\n".to_string(), "b: 2\n".to_string()]);
        assert_eq!(http_origin("https://git.example.com/acme/app.git").as_deref(), Some("https://git.example.com"));
        assert_eq!(http_origin("git@host:acme/app.git"), None);
    }
}
