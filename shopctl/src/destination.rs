//! `shopctl shopset move SHOPSET --to DESTINATION`: moves a ShopSet to another of its Tier's
//! destinations by editing its manifest in place (the file lives in git and is reviewed: a move
//! is never a side effect of something else), and with `--apply` writes the edited ShopSet to the
//! cluster by server-side apply. The sync that follows commits "moved: NAME from X to Y".

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use shopset::api::ShopSet;
use shopset::fleet::{Placed, destination_of};
use shopset::manifests::edit::set_destination;
use shopset::manifests::{Inventory, LoadError};
use shopset::validation::Problems;

use crate::manifest_files::{FIELD_MANAGER, edit_one, find, invalid, save, yaml_files};
use crate::{Cli, Output, Style, print_structured};

#[derive(clap::Args, Debug)]
pub struct ShopSetArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Move SHOPSET to another destination of its Tier: edits `spec.destination` in its manifest.
    Move(MoveArgs),
}

#[derive(clap::Args, Debug)]
struct MoveArgs {
    /// The ShopSet.
    shopset: String,
    /// Name of the Tier's destination (`spec.argocd.destinations[].name`) to move it to.
    #[arg(long, value_name = "DESTINATION")]
    to: String,
    /// Manifest files or directories holding the ShopSet and its Tier; the ShopSet's file is edited.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Print the change to the manifest as a diff; write nothing.
    #[arg(long, conflicts_with = "apply")]
    dry_run: bool,
    /// Also write `spec.destination` to the ShopSet in the cluster (server-side apply, field
    /// manager `shopctl`, taking the field over from whoever applied it before).
    #[arg(long)]
    apply: bool,
}

/// What a move changed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    shopset: String,
    tier: String,
    file: PathBuf,
    /// Where it deployed before: a destination's name, or the Tier's single destination.
    from: Option<String>,
    to: String,
    /// Where Argo CD sends it now: `server URL` or `cluster NAME`.
    target: String,
    failure_domain: String,
    changed: bool,
    dry_run: bool,
    applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

pub fn shopset(cli: &Cli, style: &Style, args: &ShopSetArgs) -> Result<()> {
    match &args.action {
        Action::Move(m) => move_to(cli, style, m),
    }
}

/// A destination as a person reads it: its name, or what the Tier's single one is.
fn describe(placed: &Placed<'_>) -> String {
    match placed.name {
        Some(name) => name.to_string(),
        None => format!("the Tier's spec.argocd.destination ({})", placed.target),
    }
}

fn move_to(cli: &Cli, style: &Style, m: &MoveArgs) -> Result<()> {
    let files = yaml_files(&m.files)?;
    // Read everything first: a file that does not load edits nothing.
    let mut inventory = Inventory::load(&m.files)?;
    if let Some(namespace) = &cli.namespace {
        inventory = inventory.in_namespace(namespace).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
    }
    let ss = find(&inventory, &m.shopset, cli.namespace.as_deref())?;
    let ns = ss.namespace().unwrap_or_else(|| "default".into());
    let tier = inventory.tiers.get(&(ns.clone(), ss.spec.tier.clone())).ok_or_else(|| {
        invalid(format!(
            "ShopSet/{}: spec.tier: {:?} is not in the files given, and only its spec.argocd.destinations say where the ShopSet may go; fix: pass the Tier's manifest with -f too",
            m.shopset, ss.spec.tier
        ))
    })?;
    // A ShopSet whose destination is wrong now can still be moved to a right one: that is the fix.
    let from = destination_of(tier, ss).ok().map(|p| describe(&p));
    let mut edited = ss.clone();
    edited.spec.destination = Some(m.to.clone());
    let placed = destination_of(tier, &edited).map_err(|e| anyhow!(LoadError::Invalid(Problems(vec![e.into()]))))?;

    let (file, old, new) = edit_one(&files, &format!("ShopSet/{}", m.shopset), |text| {
        set_destination(text, &m.shopset, cli.namespace.as_deref(), &m.to)
    })?;
    let (changed, diff) = save(&file, &old, &new, m.dry_run)?;
    let applied = if m.apply {
        apply_destination(&m.shopset, &ns, &m.to)?;
        true
    } else {
        false
    };
    let report = Report {
        shopset: m.shopset.clone(),
        tier: tier.name_any(),
        file,
        from,
        to: m.to.clone(),
        target: placed.target.to_string(),
        failure_domain: placed.failure_domain_text(),
        changed,
        dry_run: m.dry_run,
        applied,
        diff,
    };
    if cli.output == Output::Text {
        print_text(&report, style);
    }
    print_structured(cli.output, &report)
}

/// Server-side applies `spec.destination` alone, taking the field over from the manager that
/// applied the ShopSet before (`kubectl`, a GitOps tool): the move is the explicit, reviewed step
/// that decides it, and no other field of the ShopSet is written or taken.
fn apply_destination(name: &str, ns: &str, destination: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow!("ShopSet/{name}: cannot reach the cluster to apply it ({e}); fix: set KUBECONFIG, or leave out --apply and let GitOps apply the file")
        })?;
        let api: Api<ShopSet> = Api::namespaced(client, ns);
        let patch = serde_json::json!({
            "apiVersion": shopset::api::API_VERSION,
            "kind": "ShopSet",
            "metadata": { "name": name, "namespace": ns },
            "spec": { "destination": destination },
        });
        api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await.map_err(|e| {
            anyhow!(
                "ShopSet/{name} in namespace {ns}: the API server refused spec.destination {destination:?}: {}; fix: create the ShopSet first (kubectl apply --server-side -f the manifest), or correct -n",
                shopset::error::api_message(&e)
            )
        })?;
        Ok(())
    })
}

fn print_text(r: &Report, style: &Style) {
    let name = style.bold(&format!("ShopSet {}", r.shopset));
    let from = r.from.as_deref().unwrap_or("no valid destination");
    let to = format!("{} ({}, failure domain {})", r.to, r.target, r.failure_domain);
    match (r.changed, r.dry_run) {
        (false, _) => println!("{name} unchanged: already on {to}"),
        (true, true) => println!("{name} would move from {from} to {to}"),
        (true, false) => println!("{name} moves from {from} to {to}"),
    }
    if let Some(diff) = &r.diff {
        for line in diff.lines() {
            println!("{}", style.diff_line(line));
        }
    } else if r.changed {
        println!(
            "  edited {}: commit it for review; the next sync of tier {} points its Application there",
            r.file.display(),
            r.tier
        );
    }
    if r.applied {
        println!("  {} to the cluster (server-side apply, field manager {FIELD_MANAGER})", style.green("applied"));
    }
}
