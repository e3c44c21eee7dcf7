//! `shopctl`: every step of shopset-controller, by hand.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod apply;
mod destination;
mod diff;
mod doctor;
mod hold;
mod maintenance;
mod man;
mod manifest_files;
mod progress;
mod promote;
mod repo_creds;
mod shop;
mod status;

use anyhow::{Context, Result, anyhow};
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use shopset::gitops::{Auth, GitCache};
use shopset::manifests::{Inventory, LoadError};
use shopset::render::{Pins, Renderer};
use shopset::revision::{short, short_or};
use shopset::sync::{SyncError, SyncOptions, SyncReport, resolve_pins, sync_tier};

/// Exit status for invalid input (bad manifests, flags or templates).
const EXIT_INVALID: u8 = 2;
/// Exit status when a safety check refuses (a diverged branch, the promotion gate, doctor's findings).
const EXIT_REFUSED: u8 = 3;
/// Exit status for a failure while talking to git.
const EXIT_FAILED: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "shopctl",
    version,
    about = "Roll one application out tier by tier with GitOps: every step of shopset-controller, by hand",
    long_about = "Roll one application out tier by tier with GitOps.\n\n\
        shopctl does by hand exactly what shopset-controller does: it reads Tier, Configuration and\n\
        ShopSet manifests, pins the heads of the app and configuration branches of a tier, renders\n\
        Kustomize overlays and Argo CD Applications, and commits them to the tier's branch of the\n\
        system repository, pushing with a lease so no other writer's commit is ever lost.",
    after_help = "Exit status: 0 success, 1 git, cluster or I/O failure, 2 invalid input, 3 refused by a safety check.\n\
        Credentials: --credentials FILE (a Kubernetes Secret with username/password, or identity and\n\
        known_hosts), or SHOPSET_GIT_USERNAME with SHOPSET_GIT_PASSWORD (or SHOPSET_GIT_TOKEN), or\n\
        SHOPSET_GIT_SSH_KEY_FILE with SHOPSET_GIT_KNOWN_HOSTS_FILE. SSH host keys are always verified."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text, global = true)]
    pub(crate) output: Output,
    /// The namespace of objects whose manifests name none, as `kubectl -n` (default: default).
    #[arg(short, long, global = true)]
    pub(crate) namespace: Option<String>,
    /// Where fetched repositories are cached.
    #[arg(long, global = true, env = "SHOPSET_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// A Kubernetes Secret manifest holding git credentials (the one the Tier names).
    #[arg(long, global = true, env = "SHOPSET_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// A directory whose templates replace the embedded ones, file by file.
    #[arg(long, global = true, env = "SHOPSET_TEMPLATES")]
    templates: Option<PathBuf>,
    /// When to colour the output.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render the system tree of tiers into a directory (no cluster; git is only asked for branch heads).
    ///
    /// The render holds the paths ShopSet owns on a system branch (.gitmodules, base, config/,
    /// shopsets/, applications/, README.md); a sync keeps every other path of the branch as it is.
    Render {
        /// Manifest files or directories (their *.yaml files), as `kubectl apply -f`.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Render only this tier (default: every tier, each into OUT/<tier>).
        #[arg(long)]
        tier: Option<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Pin commits instead of asking git: `app=<sha>` or `<configuration>=<sha>`. With --offline,
        /// anything not pinned renders as 0000000.
        #[arg(long = "pin", value_name = "NAME=SHA")]
        pins: Vec<String>,
        /// Do not contact any repository.
        #[arg(long)]
        offline: bool,
    },
    /// Sync tiers: create missing tier branches, pin heads, render, commit when changed, push with a lease.
    Sync {
        /// Manifest files or directories (their *.yaml files), as `kubectl apply -f`.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Sync only this tier (default: every tier, lowest first).
        #[arg(long)]
        tier: Option<String>,
        /// Print the difference and what would be created; write nothing to any repository.
        #[arg(long)]
        dry_run: bool,
        /// Pushes to try when another writer keeps moving the system branch.
        #[arg(long, default_value_t = 5)]
        max_attempts: u32,
    },
    /// Print the CustomResourceDefinitions (as committed under deploy/crds/).
    Crds {
        /// Write one file per CRD and a kustomization.yaml into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Move tier TO's app and configuration branches to tier FROM's heads (fast-forward under a lease) and pin them in one system commit, or open pull requests.
    Promote(promote::PromoteArgs),
    /// Merge the promotion pull requests into a tier (`promote --pr`) once they have their approving reviews.
    #[command(name = "merge-promotion")]
    MergePromotion(promote::MergePromotionArgs),
    /// Move a tier's app branch back (under a lease), or revert to an earlier commit with a new commit.
    Rollback(promote::RollbackArgs),
    /// One view of a tier across git, the controller and Argo CD.
    Status(status::StatusArgs),
    /// What promoting FROM to TO would bring: the commits, and the diff of every built overlay of TO.
    Diff(diff::DiffArgs),
    /// Apply a tier's overlays from its system branch with kubectl (the manual path when Argo CD is down).
    Apply(apply::ApplyArgs),
    /// Find what is wrong with tiers: Problem, Why and the commands that Fix it (exit 3 when something is).
    Doctor(doctor::DoctorArgs),
    /// Put a ShopSet, or some of its shops, in maintenance (`on`), or take it out (`off`): edits its manifest in place.
    Maintenance(maintenance::MaintenanceArgs),
    /// Work on one ShopSet: `move` it to another destination of its Tier (edits its manifest in place).
    #[command(name = "shopset")]
    ShopSet(destination::ShopSetArgs),
    /// Add, remove or move a shop by the placement policy, or find where it is served: edits the ShopSets' manifests in place.
    Shop(shop::ShopArgs),
    /// Hold promotions into a tier, with a reason (`spec.promotion.hold`): edits its manifest in place.
    Hold(hold::HoldArgs),
    /// Clear the hold on promotions into a tier: edits its manifest in place.
    Release(hold::ReleaseArgs),
    /// Print Argo CD's credential templates (repo-creds Secrets) for a tier's repositories, as the controller applies them.
    #[command(name = "argocd-creds")]
    ArgoCdCreds(repo_creds::ArgoCdCredsArgs),
    /// Create local example repositories in DIR, sync tier-0 and show the result (no cluster needed).
    Quickstart {
        /// Where to create the repositories and manifests.
        #[arg(default_value = "shopset-quickstart")]
        dir: PathBuf,
    },
    /// Print the shell completion script of shopctl, e.g. `source <(shopctl completion bash)`.
    Completion {
        /// The shell the script is for.
        shell: clap_complete::Shell,
    },
    /// Print the man page of shopctl (roff), or write it and one page per command into a directory.
    Man {
        /// Write shopctl.1 and shopctl-<command>.1 for every command into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

pub(crate) struct Style {
    pub(crate) on: bool,
}

impl Style {
    pub(crate) fn paint(&self, code: &str, text: &str) -> String {
        if self.on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
    pub(crate) fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub(crate) fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub(crate) fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub(crate) fn diff_line(&self, line: &str) -> String {
        match line.chars().next() {
            Some('+') if !line.starts_with("+++") => self.paint("32", line),
            Some('-') if !line.starts_with("---") => self.paint("31", line),
            Some('@') => self.paint("36", line),
            _ => line.to_string(),
        }
    }
}

fn main() -> ExitCode {
    // A run is short: the CA file is read only if it connects over HTTP(S).
    // SAFETY: first thing in main, before any thread starts.
    unsafe { shopset::gitops::certificates::start_libgit2_deferring_ca_file() };
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let style = Style {
        on: match cli.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        },
    };
    match run(&cli, &style) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let invalid = err.chain().any(|e| {
                e.downcast_ref::<LoadError>().is_some()
                    || e.downcast_ref::<shopset::validation::Problems>().is_some()
                    || matches!(
                        e.downcast_ref::<SyncError>(),
                        Some(SyncError::Render(_) | SyncError::PathMissing { .. } | SyncError::BranchMissing { .. })
                    )
                    || e.downcast_ref::<shopset::render::RenderError>().is_some()
                    || e.downcast_ref::<manifest_files::InvalidInput>().is_some()
                    || matches!(
                        e.downcast_ref::<shopset::promote::PromoteError>(),
                        Some(
                            shopset::promote::PromoteError::WrongOrder { .. }
                                | shopset::promote::PromoteError::NotInHistory { .. }
                                | shopset::promote::PromoteError::BadRevision { .. }
                                | shopset::promote::PromoteError::SourceMissing { .. }
                        )
                    )
                    || matches!(
                        e.downcast_ref::<shopset::promote::MarkerError>(),
                        Some(
                            shopset::promote::MarkerError::NoneInProgress { .. }
                                | shopset::promote::MarkerError::UnknownRepository { .. }
                        )
                    )
            });
            let refused = err.chain().any(|e| {
                e.downcast_ref::<promote::Refused>().is_some()
                    || matches!(
                        e.downcast_ref::<shopset::promote::PromoteError>(),
                        Some(shopset::promote::PromoteError::Diverged { .. })
                    )
                    || matches!(
                        e.downcast_ref::<shopset::promote::MarkerError>(),
                        Some(
                            shopset::promote::MarkerError::OtherSource { .. }
                                | shopset::promote::MarkerError::Moved { .. }
                        )
                    )
                    // A promotion in progress holds the tier's pins: a safety check, like the gate.
                    || matches!(e.downcast_ref::<SyncError>(), Some(SyncError::PromotionInProgress { .. }))
            });
            eprintln!("error: {err:#}");
            ExitCode::from(if refused {
                EXIT_REFUSED
            } else if invalid {
                EXIT_INVALID
            } else {
                EXIT_FAILED
            })
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn run(cli: &Cli, style: &Style) -> Result<()> {
    match &cli.command {
        Command::Crds { write: Some(dir) } => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, yaml) in shopset::api::crd_files()? {
                std::fs::write(dir.join(&name), yaml).with_context(|| format!("cannot write {name}"))?;
                if cli.output == Output::Text {
                    println!("wrote {}", dir.join(&name).display());
                }
            }
            Ok(())
        }
        Command::Crds { write: None } => {
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&shopset::api::crds())?),
                _ => print!("{}", shopset::api::crds_yaml()?),
            }
            Ok(())
        }
        Command::Render { files, tier, out, pins, offline } => render(cli, files, tier.as_deref(), out, pins, *offline),
        Command::Sync { files, tier, dry_run, max_attempts } => {
            let started = std::time::Instant::now();
            let inventory = load(cli, files)?;
            let loaded = started.elapsed();
            let opts = SyncOptions { dry_run: *dry_run, max_attempts: *max_attempts, ..SyncOptions::default() };
            let (cache, auth, renderer) = (cache(cli)?, auth(cli)?, renderer(cli)?);
            let order = tier_order(&inventory, tier.as_deref())?;
            // Render every tier (with placeholder pins) before the first push, so an input or
            // template error in a later tier leaves the earlier ones untouched too.
            for name in &order {
                let input = inventory.tier_input(name)?;
                // The files of ShopSets unchanged since the last run in this cache are not rendered again.
                renderer.load_memo_file(cache.root(), &tier_namespace(&input), name);
                let pins = Pins {
                    app: "0".repeat(40),
                    configurations: input
                        .configurations
                        .iter()
                        .map(|c| (c.metadata.name.clone().unwrap_or_default(), "0".repeat(40)))
                        .collect(),
                };
                renderer.render(shopset::render::RenderInput {
                    tier: &input.tier,
                    configurations: &input.configurations,
                    shopsets: &input.shopsets,
                    pins: &pins,
                })?;
            }
            // `RUST_LOG=shopctl=debug`: where a run's time goes besides the syncs' own split.
            tracing::debug!(
                load_ms = loaded.as_millis() as u64,
                checked_ms = started.elapsed().as_millis() as u64,
                "manifests loaded and every tier rendered"
            );
            let mut reports = Vec::new();
            let progress = progress::Progress::new(cli.output, order.len());
            for name in order {
                let input = inventory.tier_input(&name)?;
                progress.start(&format!("syncing {name}"));
                let report = sync_tier(&cache, &auth, &input, &renderer, &opts)?;
                // Only a cache, so a failure to write it costs the next run time, not this one its result.
                if let Err(e) = renderer.save_memo_file(cache.root(), &tier_namespace(&input), &name) {
                    tracing::warn!(tier = %name, cache = %cache.root().display(), error = %e, "cannot keep the render memo");
                }
                tracing::debug!(tier = %name, elapsed_ms = started.elapsed().as_millis() as u64, "tier synced, memo kept");
                if cli.output == Output::Text {
                    progress.suspend(|| print_report(&report, style));
                }
                progress.done();
                reports.push(report);
            }
            drop(progress);
            print_structured(cli.output, &reports)
        }
        Command::Quickstart { dir } => quickstart(cli, dir, style),
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "shopctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out: None } => man::print(Cli::command()),
        Command::Man { out: Some(dir) } => {
            let written = man::write_all(Cli::command(), dir)?;
            if cli.output == Output::Text {
                for path in &written {
                    println!("wrote {}", path.display());
                }
            }
            print_structured(cli.output, &written)
        }
        Command::Promote(args) => promote::promote(cli, style, args),
        Command::MergePromotion(args) => promote::merge_promotion(cli, style, args),
        Command::Rollback(args) => promote::rollback(cli, style, args),
        Command::Status(args) => status::status(cli, style, args),
        Command::Diff(args) => diff::diff(cli, style, args),
        Command::Apply(args) => apply::apply(cli, style, args),
        Command::Doctor(args) => doctor::doctor(cli, style, args),
        Command::Maintenance(args) => maintenance::maintenance(cli, style, args),
        Command::ShopSet(args) => destination::shopset(cli, style, args),
        Command::Shop(args) => shop::shop(cli, style, args),
        Command::Hold(args) => hold::hold(cli, style, args),
        Command::Release(args) => hold::release(cli, style, args),
        Command::ArgoCdCreds(args) => repo_creds::argocd_creds(cli, args),
    }
}

pub(crate) fn load(cli: &Cli, files: &[PathBuf]) -> Result<Inventory> {
    let mut inventory = Inventory::load(files)?;
    if let Some(namespace) = &cli.namespace {
        inventory = inventory.in_namespace(namespace).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
    }
    inventory.check().map_err(|p| anyhow!(LoadError::Invalid(p)))?;
    Ok(inventory)
}

/// Tiers in promotion order (a tier after the one it is promoted from), or the one asked for.
pub(crate) fn tier_order(inventory: &Inventory, only: Option<&str>) -> Result<Vec<String>> {
    Ok(inventory.tier_order(only)?)
}

pub(crate) fn cache(cli: &Cli) -> Result<GitCache> {
    let dir = match &cli.cache_dir {
        Some(d) => d.clone(),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .ok_or_else(|| anyhow!("neither --cache-dir, XDG_CACHE_HOME nor HOME is set; fix: pass --cache-dir"))?;
            base.join("shopset").join("git")
        }
    };
    Ok(GitCache::new(dir))
}

/// The namespace of a tier's input (where its memo is kept apart from other namespaces' tiers).
fn tier_namespace(input: &shopset::manifests::TierInput) -> String {
    input.tier.metadata.namespace.clone().unwrap_or_default()
}

pub(crate) fn renderer(cli: &Cli) -> Result<Renderer> {
    Ok(Renderer::with_overrides(cli.templates.as_deref())?)
}

/// Credentials from --credentials (a Secret manifest) or the SHOPSET_GIT_* environment.
pub(crate) fn auth(cli: &Cli) -> Result<Auth> {
    if let Some(path) = &cli.credentials {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read credentials file {}", path.display()))?;
        let secret: k8s_openapi::api::core::v1::Secret = serde_yaml::from_str(&text).map_err(|e| {
            anyhow!(
                "credentials file {}: not a Secret manifest ({}); fix: write a v1 Secret with data or stringData",
                path.display(),
                e.location().map(|l| format!("line {}", l.line())).unwrap_or_default()
            )
        })?;
        return shopset::credentials::from_secret(&secret)
            .map_err(|why| anyhow!("credentials file {}: {why}; fix: set username and password (or a token as password), or identity for SSH", path.display()));
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let ssh_key = match var("SHOPSET_GIT_SSH_KEY_FILE") {
        Some(file) => Some(
            std::fs::read_to_string(&file).with_context(|| format!("cannot read SHOPSET_GIT_SSH_KEY_FILE {file}"))?,
        ),
        None => None,
    };
    Ok(Auth {
        username: var("SHOPSET_GIT_USERNAME"),
        password: var("SHOPSET_GIT_PASSWORD").or_else(|| var("SHOPSET_GIT_TOKEN")),
        ssh_key,
        ssh_passphrase: var("SHOPSET_GIT_SSH_PASSPHRASE"),
        known_hosts: var("SHOPSET_GIT_KNOWN_HOSTS_FILE")
            .map(|f| {
                std::fs::read_to_string(&f).with_context(|| format!("cannot read SHOPSET_GIT_KNOWN_HOSTS_FILE {f}"))
            })
            .transpose()?,
    })
}

fn parse_pins(pins: &[String]) -> Result<Vec<(String, String)>> {
    pins.iter()
        .map(|p| {
            p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| {
                anyhow!(
                    "--pin {p:?}: expected NAME=SHA, e.g. app=0123abc...; fix: write app=<sha> or <configuration>=<sha>"
                )
            })
        })
        .collect()
}

fn render(cli: &Cli, files: &[PathBuf], tier: Option<&str>, out: &Path, pins: &[String], offline: bool) -> Result<()> {
    let inventory = load(cli, files)?;
    let renderer = renderer(cli)?;
    let given = parse_pins(pins)?;
    let names = tier_order(&inventory, tier)?;
    let mut written = Vec::new();
    for name in &names {
        let input = inventory.tier_input(name)?;
        let mut resolved = if offline {
            Pins {
                app: "0".repeat(40),
                configurations: input
                    .configurations
                    .iter()
                    .map(|c| (c.metadata.name.clone().unwrap_or_default(), "0".repeat(40)))
                    .collect(),
            }
        } else {
            resolve_pins(&cache(cli)?, &auth(cli)?, &input)?
        };
        for (k, v) in &given {
            if k == "app" {
                resolved.app = v.clone();
            } else if let Some(slot) = resolved.configurations.get_mut(k) {
                *slot = v.clone();
            } else {
                return Err(anyhow!(
                    "--pin {k}={v}: {k:?} is neither `app` nor a Configuration used by Tier {name}; fix: use one of: app, {}",
                    resolved.configurations.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let tree = renderer.render(shopset::render::RenderInput {
            tier: &input.tier,
            configurations: &input.configurations,
            shopsets: &input.shopsets,
            pins: &resolved,
        })?;
        let dir = if tier.is_some() { out.to_path_buf() } else { out.join(name) };
        // Render into a fresh sibling first, so a failure never leaves half a tree at `dir`.
        let staging = dir.with_extension("shopset-tmp");
        let _ = std::fs::remove_dir_all(&staging);
        let files = tree.write_to(&staging).with_context(|| format!("cannot write {}", staging.display()))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        std::fs::rename(&staging, &dir).with_context(|| format!("cannot move the render to {}", dir.display()))?;
        written.push(serde_json::json!({"tier": name, "dir": dir, "files": files, "pins": resolved}));
        if cli.output == Output::Text {
            println!("{name}: {files} files written to {} (app {})", dir.display(), short(&resolved.app));
        }
    }
    if cli.output == Output::Text {
        // What a person copying the render by hand must replace, and what they must leave alone.
        println!(
            "ShopSet owns these paths of a system branch: {}; a sync keeps every other path as it is",
            shopset::render::OWNED_PATHS.join(", ")
        );
    }
    print_structured(cli.output, &written)
}

pub(crate) fn print_structured<T: serde::Serialize>(output: Output, value: &T) -> Result<()> {
    match output {
        Output::Text => {}
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

/// A head as the report prints it: short, or `-` when there is none.
fn head(id: &Option<String>) -> &str {
    short_or(id.as_deref(), "-")
}

fn print_report(r: &SyncReport, s: &Style) {
    println!("{} {} (branch {})", s.bold("Tier"), s.bold(&r.tier), r.branch);
    for b in &r.branches {
        match &b.created_from {
            Some(from) => println!(
                "  {:<20} {} {} at {}",
                b.repository,
                s.yellow(if r.dry_run { "would create branch from" } else { "created branch from" }),
                from,
                head(&b.head)
            ),
            None => println!("  {:<20} {} {}", b.repository, b.branch, head(&b.head)),
        }
    }
    if let Some(diff) = &r.diff {
        if diff.is_empty() {
            println!("  no change: the system branch is up to date");
        } else {
            println!("  would commit:\n{}", indent(r.message.as_deref().unwrap_or_default()));
            for line in diff.lines() {
                println!("{}", s.diff_line(line));
            }
        }
        return;
    }
    match &r.commit {
        Some(commit) => {
            println!(
                "  {} {} ({} push attempt{})",
                s.green("committed"),
                short(commit),
                r.attempts,
                if r.attempts == 1 { "" } else { "s" }
            );
            println!("{}", indent(r.message.as_deref().unwrap_or_default()));
        }
        None => println!("  no change: system branch already at {}", head(&r.head)),
    }
}

pub(crate) fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| if l.is_empty() { String::new() } else { format!("    {l}") })
        .collect::<Vec<_>>()
        .join("\n")
}

fn quickstart(cli: &Cli, dir: &Path, style: &Style) -> Result<()> {
    let setup = shopset::quickstart::create(dir)?;
    println!("{} local repositories in {}", style.bold("Created"), setup.repos.display());
    println!("  app:    {}\n  config: {}\n  system: {}", setup.app_url, setup.config_url, setup.system_url);
    println!("  manifests: {}\n", setup.manifests.display());
    let inventory = load(cli, std::slice::from_ref(&setup.manifests))?;
    let cache = GitCache::new(dir.join("cache"));
    let input = inventory.tier_input("tier-0")?;
    let report = sync_tier(&cache, &Auth::default(), &input, &renderer(cli)?, &SyncOptions::default())?;
    println!("$ shopctl sync -f {} --tier tier-0", setup.manifests.display());
    print_report(&report, style);

    println!("\n$ git log --stat tier-0   (system repository)");
    let log = std::process::Command::new("git")
        .args([
            "--git-dir",
            &setup.repos.join("system.git").display().to_string(),
            "log",
            "--stat",
            "--format=%C(auto)%h %s",
            "tier-0",
        ])
        .output();
    match log {
        Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
        _ => println!("(git not found on PATH: skipped)"),
    }

    let checkout = dir.join("system");
    let clone = std::process::Command::new("git")
        .args([
            "-c",
            "protocol.file.allow=always",
            "clone",
            "-q",
            "--recurse-submodules",
            "--branch",
            "tier-0",
            &setup.system_url,
        ])
        .arg(&checkout)
        .output();
    if !matches!(&clone, Ok(o) if o.status.success()) {
        println!("(git clone --recurse-submodules failed: skipped the overlay build)");
        return Ok(());
    }
    let overlay = checkout.join("shopsets").join("canary-eu");
    println!("\n$ kubectl kustomize {}", overlay.display());
    match std::process::Command::new("kubectl").arg("kustomize").arg(&overlay).output() {
        Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
        Ok(o) => println!("kubectl kustomize failed:\n{}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => println!("(kubectl not found on PATH: run `e2e/install-tools` and `source .tools/env`)"),
    }
    println!(
        "\nNext: `shopctl sync -f {} --tier tier-1`, or edit {}/shopsets.yaml and sync again.",
        setup.manifests.display(),
        setup.manifests.display()
    );
    Ok(())
}
