//! `shopctl hold` and `shopctl release`: set or clear the hold on promotions into a tier
//! (`spec.promotion.hold`), by editing the Tier's manifest in place as `shopctl maintenance` does
//! (the file lives in git and is reviewed), and with `--apply` writing it to the cluster by
//! server-side apply. `kubectl edit tier` changes the same field.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use shopset::api::{Hold, Tier};
use shopset::manifests::edit::set_hold;
use shopset::manifests::{Inventory, LoadError};
use shopset::validation::{Problems, check_tier};

use crate::maintenance::now;
use crate::manifest_files::{FIELD_MANAGER, apply_objects, edit_one, invalid, save, yaml_files};
use crate::{Cli, Output, Style, print_structured};

#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    /// The tier promotions into which are held.
    tier: String,
    /// Why, as `shopctl status` and `promote` show it.
    #[arg(long, required = true)]
    reason: String,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// The tier whose hold is cleared.
    tier: String,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args, Debug)]
struct Target {
    /// Manifest files or directories holding the Tier; the one that defines it is edited.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Print the change to the manifest as a diff; write nothing.
    #[arg(long, conflicts_with = "apply")]
    dry_run: bool,
    /// Also write the edited Tier to the cluster (server-side apply, field manager `shopctl`).
    #[arg(long)]
    apply: bool,
}

/// What a run changed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub tier: String,
    pub file: PathBuf,
    pub hold: Option<Hold>,
    pub changed: bool,
    pub dry_run: bool,
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// Who is running shopctl, for `by` and audit lines.
pub fn who() -> String {
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into())
}

pub fn hold(cli: &Cli, style: &Style, args: &HoldArgs) -> Result<()> {
    let report = set(cli, &args.tier, &args.target.files, Wanted::Hold(&args.reason, who()), &args.target)?;
    finish(cli, style, &report)
}

pub fn release(cli: &Cli, style: &Style, args: &ReleaseArgs) -> Result<()> {
    let report = set(cli, &args.tier, &args.target.files, Wanted::Release, &args.target)?;
    finish(cli, style, &report)
}

fn finish(cli: &Cli, style: &Style, report: &Report) -> Result<()> {
    if cli.output == Output::Text {
        print_text(report, style);
    }
    print_structured(cli.output, report)
}

/// What the hold should be after a run.
pub enum Wanted<'a> {
    Hold(&'a str, String),
    Release,
}

/// Holds promotions into `tier` after a rollback: edits its manifest in `files`, and when the
/// controller promotes into it by itself (`spec.promotion.auto`), sets the same hold on the Tier
/// in the cluster at once, so that the next automatic promotion does not undo the rollback before
/// the edited file is applied. `Ok(None)` when the tier is promoted from none (nothing to hold).
pub fn hold_after_rollback(cli: &Cli, tier: &str, files: &[PathBuf], reason: &str) -> Result<Option<Report>> {
    let Some((ns, found)) = promoted_tier(cli, tier, files)? else { return Ok(None) };
    let auto = found.spec.promotion.as_ref().is_some_and(|p| p.auto);
    let options = Target { files: files.to_vec(), dry_run: false, apply: false };
    let mut report = set(cli, tier, files, Wanted::Hold(reason, format!("shopctl rollback ({})", who())), &options)?;
    if let (true, Some(hold)) = (auto, &report.hold) {
        report.applied = hold_in_cluster(&ns, tier, Some(hold))?;
    }
    Ok(Some(report))
}

/// Before a rollback of `tier` moves anything: when the controller promotes into it by itself,
/// holds it in the cluster, so that no automatic promotion runs between the rollback's push and
/// its hold ([`hold_after_rollback`] then writes the hold with its full reason). A cluster that
/// cannot be reached is a warning: the rollback goes on.
pub fn hold_before_rollback(cli: &Cli, tier: &str, files: &[PathBuf]) -> Result<()> {
    let Some((ns, _)) =
        promoted_tier(cli, tier, files)?.filter(|(_, t)| t.spec.promotion.as_ref().is_some_and(|p| p.auto))
    else {
        return Ok(());
    };
    let by = format!("shopctl rollback ({})", who());
    let hold = Hold { reason: "a rollback is in progress".into(), since: now(), by: Some(by) };
    if let Err(e) = hold_in_cluster(&ns, tier, Some(&hold)) {
        eprintln!("warning: {e:#}");
    }
    Ok(())
}

/// Tier `tier` of the manifests (in `--namespace` when given, as `set` reads them) and its
/// namespace, when it is promoted from another.
fn promoted_tier(cli: &Cli, tier: &str, files: &[PathBuf]) -> Result<Option<(String, Tier)>> {
    let mut inventory = Inventory::load(files)?;
    if let Some(namespace) = &cli.namespace {
        inventory = inventory.in_namespace(namespace).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
    }
    let found = inventory
        .tiers
        .into_iter()
        .find(|((ns, n), t)| n == tier && cli.namespace.as_ref().is_none_or(|w| w == ns) && t.spec.promotion.is_some());
    Ok(found.map(|((ns, _), t)| (ns, t)))
}

/// Sets `hold` (None: clears it) on Tier `ns/name` in the cluster: a merge patch of
/// `spec.promotion.hold` alone, so no other field changes hands, and it clears a hold whoever set
/// it (a server-side apply that leaves the field out removes it only if its own manager set it).
/// `Ok(false)` when the cluster has no such Tier.
fn hold_in_cluster(ns: &str, name: &str, hold: Option<&Hold>) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow!("Tier/{name}: cannot reach the cluster to set the hold ({e}); until the edited manifest is applied, the controller may promote into it again; fix: kubectl apply the file now")
        })?;
        let patch = serde_json::json!({ "spec": { "promotion": { "hold": hold } } });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match Api::<Tier>::namespaced(client, ns).patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(anyhow!(
                "Tier/{name} in namespace {ns}: cannot set the hold in the cluster ({}); until the edited manifest is applied, the controller may promote into it again; fix: kubectl apply the file now",
                shopset::error::api_message(&e)
            )),
        }
    })
}

fn set(cli: &Cli, name: &str, paths: &[PathBuf], wanted: Wanted<'_>, options: &Target) -> Result<Report> {
    let files = yaml_files(paths)?;
    let mut inventory = Inventory::load(paths)?;
    if let Some(namespace) = &cli.namespace {
        inventory = inventory.in_namespace(namespace).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
    }
    let tier = find(&inventory, name, cli.namespace.as_deref())?;
    if tier.spec.promotion.is_none() {
        return Err(invalid(format!(
            "Tier/{name}: spec.promotion: the tier is promoted from none, so there is nothing to hold; fix: name the tier promoted into"
        )));
    }
    let current = tier.spec.promotion.as_ref().and_then(|p| p.hold.clone());
    let hold = match wanted {
        // Asked again for the same: keep when it began.
        Wanted::Hold(reason, _) if current.as_ref().is_some_and(|h| h.reason == reason) => current,
        Wanted::Hold(reason, by) => Some(Hold { reason: reason.to_string(), since: now(), by: Some(by) }),
        Wanted::Release => None,
    };
    let mut edited = tier.clone();
    if let Some(p) = edited.spec.promotion.as_mut() {
        p.hold = hold.clone();
    }
    let mut problems = Vec::new();
    check_tier(&edited, &mut problems);
    if !problems.is_empty() {
        return Err(anyhow!(LoadError::Invalid(Problems(problems))));
    }
    let (file, old, new) = edit_one(&files, &format!("Tier/{name}"), |text| {
        set_hold(text, name, cli.namespace.as_deref(), hold.as_ref())
    })?;
    let (changed, diff) = save(&file, &old, &new, options.dry_run)?;
    let applied = if options.apply {
        let mut applied = Inventory::parse(&file, &new)?;
        if let Some(namespace) = &cli.namespace {
            applied = applied.in_namespace(namespace).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
        }
        let tier = find(&applied, name, cli.namespace.as_deref())?;
        apply_objects(std::slice::from_ref(tier), cli.namespace.as_deref())?;
        if hold.is_none() {
            // A hold set by `shopctl rollback` or `kubectl patch` is not this apply's to remove.
            let ns = tier.namespace().or(cli.namespace.clone()).unwrap_or_else(|| "default".into());
            hold_in_cluster(&ns, name, None)?;
        }
        true
    } else {
        false
    };
    Ok(Report { tier: name.to_string(), file, hold, changed, dry_run: options.dry_run, applied, diff })
}

fn find<'a>(inventory: &'a Inventory, name: &str, namespace: Option<&str>) -> Result<&'a Tier> {
    let matching: Vec<&Tier> = inventory
        .tiers
        .iter()
        .filter(|((ns, n), _)| n == name && namespace.is_none_or(|want| want == ns))
        .map(|(_, t)| t)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(invalid(format!(
            "Tier/{name}: not found in the files given; fix: pass the manifest that defines it with -f"
        ))),
        _ => Err(invalid(format!("Tier/{name}: defined in several namespaces; fix: pass -n NAMESPACE"))),
    }
}

pub fn print_text(r: &Report, style: &Style) {
    let what = match &r.hold {
        None => "not on hold".to_string(),
        Some(h) => format!(
            "on hold since {}{}: {}",
            h.since.0,
            h.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default(),
            h.reason
        ),
    };
    let verb = match (r.changed, r.dry_run) {
        (false, _) => "unchanged:",
        (true, true) => "would be",
        (true, false) => "now",
    };
    println!("{} {verb} {what}", style.bold(&format!("Tier {}", r.tier)));
    if let Some(diff) = &r.diff {
        for line in diff.lines() {
            println!("{}", style.diff_line(line));
        }
    } else if r.changed {
        println!("  edited {}: commit it for review", file_name(&r.file));
    }
    if r.applied {
        println!("  {} to the cluster (field manager {FIELD_MANAGER})", style.green("applied"));
    }
}

fn file_name(file: &Path) -> String {
    file.display().to_string()
}
