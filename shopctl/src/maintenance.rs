//! `shopctl maintenance on|off`: puts a ShopSet, or some of its shops, in maintenance by editing
//! its manifest in place (the file lives in git and is reviewed), and with `--apply` writes the
//! edited ShopSet to the cluster by server-side apply.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::Serialize;
use shopset::api::{Maintenance, ShopSet};
use shopset::manifests::edit::set_maintenance;
use shopset::manifests::{Inventory, LoadError};
use shopset::validation::{Problems, check_shopset};

use crate::manifest_files::{FIELD_MANAGER, apply, edit_one, find, invalid, save, yaml_files};
use crate::{Cli, Output, Style, print_structured};

#[derive(clap::Args, Debug)]
pub struct MaintenanceArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Put SHOPSET (or, with --shop, some of its shops) in maintenance, with a reason; since now.
    On {
        #[command(flatten)]
        target: Target,
        /// Why, as `shopctl status` and `doctor` show it.
        #[arg(long, required = true)]
        reason: String,
    },
    /// Take SHOPSET (or, with --shop, some of its shops) out of maintenance.
    Off {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args, Debug)]
struct Target {
    /// The ShopSet.
    shopset: String,
    /// Only this shop (repeatable). Default: the whole ShopSet.
    #[arg(long = "shop", value_name = "ID")]
    shops: Vec<String>,
    /// Manifest files or directories holding the ShopSet; the one that defines it is edited.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Print the change to the manifest as a diff; write nothing.
    #[arg(long, conflicts_with = "apply")]
    dry_run: bool,
    /// Also write the edited ShopSet to the cluster (server-side apply, field manager `shopctl`).
    #[arg(long)]
    apply: bool,
}

/// What a run changed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    shopset: String,
    file: PathBuf,
    maintenance: Option<Maintenance>,
    changed: bool,
    dry_run: bool,
    applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

pub fn maintenance(cli: &Cli, style: &Style, args: &MaintenanceArgs) -> Result<()> {
    let (target, reason) = match &args.action {
        Action::On { target, reason } => (target, Some(reason.as_str())),
        Action::Off { target } => (target, None),
    };
    let files = yaml_files(&target.files)?;
    // Read everything first: a file that does not load edits nothing. Only the ShopSet is checked
    // (below), so its file alone is enough input.
    let mut inventory = Inventory::load(&target.files)?;
    if let Some(namespace) = &cli.namespace {
        inventory = inventory.in_namespace(namespace).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
    }
    let ss = find(&inventory, &target.shopset, cli.namespace.as_deref())?;
    let wanted = wanted(ss, &target.shops, reason)?;
    let mut edited = ss.clone();
    edited.spec.maintenance = wanted.clone();
    let mut problems = Vec::new();
    check_shopset(&edited, &mut problems);
    if !problems.is_empty() {
        return Err(anyhow!(LoadError::Invalid(Problems(problems))));
    }

    let (file, old, new) = edit_one(&files, &format!("ShopSet/{}", target.shopset), |text| {
        set_maintenance(text, &target.shopset, cli.namespace.as_deref(), wanted.as_ref())
    })?;
    let (changed, diff) = save(&file, &old, &new, target.dry_run)?;
    let applied = if target.apply {
        // What is applied is the ShopSet as the edited file now defines it.
        let mut applied = Inventory::parse(&file, &new)?;
        if let Some(namespace) = &cli.namespace {
            applied = applied.in_namespace(namespace).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
        }
        let ss = find(&applied, &target.shopset, cli.namespace.as_deref())?;
        apply(ss, cli.namespace.as_deref())?;
        true
    } else {
        false
    };

    let report = Report {
        shopset: target.shopset.clone(),
        file,
        maintenance: wanted,
        changed,
        dry_run: target.dry_run,
        applied,
        diff,
    };
    if cli.output == Output::Text {
        print_text(&report, style);
    }
    print_structured(cli.output, &report)
}

/// The maintenance the ShopSet should have after this run.
fn wanted(ss: &ShopSet, shops: &[String], reason: Option<&str>) -> Result<Option<Maintenance>> {
    let current = ss.spec.maintenance.as_ref();
    let name = ss.name_any();
    Ok(match reason {
        Some(reason) => {
            // Shops add to shops already in maintenance; without --shop, the whole ShopSet is.
            let mut list: Vec<String> = match current {
                Some(m) if !m.whole() && !shops.is_empty() => m.shops.clone(),
                _ => Vec::new(),
            };
            for shop in shops {
                if !list.contains(shop) {
                    list.push(shop.clone());
                }
            }
            match current {
                // Asked again for the same: keep when it began.
                Some(m) if m.reason == reason && m.shops == list => Some(m.clone()),
                _ => Some(Maintenance { reason: reason.to_string(), since: now(), shops: list }),
            }
        }
        None if shops.is_empty() => None,
        None => match current {
            None => None,
            Some(m) if m.whole() => {
                return Err(invalid(format!(
                    "ShopSet/{name}: spec.maintenance: the whole ShopSet is in maintenance, not single shops; fix: run `shopctl maintenance off {name}` without --shop, then `on --shop` for the shops that stay"
                )));
            }
            Some(m) => {
                if let Some(shop) = shops.iter().find(|s| !m.shops.contains(s)) {
                    return Err(invalid(format!(
                        "ShopSet/{name}: spec.maintenance.shops: {shop:?} is not in maintenance (in maintenance: {}); fix: name one of those",
                        m.shops.join(", ")
                    )));
                }
                let left: Vec<String> = m.shops.iter().filter(|s| !shops.contains(s)).cloned().collect();
                // No shop left means none in maintenance, not the whole ShopSet.
                (!left.is_empty()).then(|| Maintenance { shops: left, ..m.clone() })
            }
        },
    })
}

/// Now, to the second: what `since` records.
pub(crate) fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn print_text(r: &Report, style: &Style) {
    let what = match &r.maintenance {
        None => "out of maintenance".to_string(),
        Some(m) if m.whole() => format!("in maintenance since {} ({})", m.since.0, m.reason),
        Some(m) => format!("shops {} in maintenance since {} ({})", m.shops.join(", "), m.since.0, m.reason),
    };
    let verb = match (r.changed, r.dry_run) {
        (false, _) => "unchanged:",
        (true, true) => "would be",
        (true, false) => "now",
    };
    println!("{} {verb} {what}", style.bold(&format!("ShopSet {}", r.shopset)));
    if let Some(diff) = &r.diff {
        for line in diff.lines() {
            println!("{}", style.diff_line(line));
        }
    } else if r.changed {
        println!("  edited {}: commit it for review", r.file.display());
    }
    if r.applied {
        println!("  {} to the cluster (server-side apply, field manager {FIELD_MANAGER})", style.green("applied"));
    }
}
