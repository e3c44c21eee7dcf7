//! `shopctl shop add|remove|move|where`: shops placed by the written policy of
//! [`shopset::placement`], by editing the ShopSets' manifests in place (the files live in git and
//! are reviewed: comments and layout are kept), and with `--apply` writing the edited ShopSets to
//! the cluster by server-side apply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kube::ResourceExt;
use kube::api::Api;
use serde::Serialize;
use shopset::api::{ShopSet, Tier};
use shopset::manifests::edit::set_shops;
use shopset::manifests::{Inventory, LoadError};
use shopset::placement::{Growth, Placement, Planner};

use crate::manifest_files::{FIELD_MANAGER, apply_all, invalid, manifest_diff, write_atomically, yaml_files};
use crate::{Cli, Output, Style, print_structured};

#[derive(clap::Args, Debug)]
pub struct ShopArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Add SHOP to the ShopSet the placement policy picks: in the tier where new shops start (the
    /// Tier without spec.promotion) or --tier, the least used failure domain, the most free
    /// capacity, then by name. When every ShopSet is full, --grow creates the next one.
    Add {
        /// The shop ID.
        shop: String,
        /// Place the shop in this tier.
        #[arg(long)]
        tier: Option<String>,
        /// When every ShopSet of the tier is full, write the next ShopSet by the naming convention
        /// into a new file next to the last one's.
        #[arg(long)]
        grow: bool,
        #[command(flatten)]
        edit: Edit,
    },
    /// Remove SHOP from the ShopSet that serves it.
    Remove {
        /// The shop ID.
        shop: String,
        #[command(flatten)]
        edit: Edit,
    },
    /// Move SHOP to ShopSet --to (which must have room).
    Move {
        /// The shop ID.
        shop: String,
        /// The ShopSet that serves the shop from now on.
        #[arg(long, value_name = "SHOPSET")]
        to: String,
        #[command(flatten)]
        edit: Edit,
    },
    /// Where SHOP is served: ShopSet, tier, destination, failure domain, and the Application's
    /// health when a cluster is reachable.
    Where {
        /// The shop ID.
        shop: String,
        /// Manifest files or directories holding the Tiers and ShopSets.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct Edit {
    /// Manifest files or directories holding the Tiers and ShopSets; the files that define the
    /// ShopSets concerned are edited.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Print the change to the manifests as a diff; write nothing.
    #[arg(long, conflicts_with = "apply")]
    dry_run: bool,
    /// Also write the edited ShopSets to the cluster (server-side apply, field manager `shopctl`).
    #[arg(long)]
    apply: bool,
}

/// What a run changed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    action: &'static str,
    shop: String,
    /// The ShopSet that serves the shop after the run (before it, for `remove`).
    shopset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    tier: String,
    destination: Option<String>,
    failure_domain: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grown_from: Option<String>,
    files: Vec<PathBuf>,
    changed: bool,
    dry_run: bool,
    applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

pub fn shop(cli: &Cli, style: &Style, args: &ShopArgs) -> Result<()> {
    match &args.action {
        Action::Add { shop, tier, grow, edit } => add(cli, style, shop, tier.as_deref(), *grow, edit),
        Action::Remove { shop, edit } => remove(cli, style, shop, edit),
        Action::Move { shop, to, edit } => move_shop(cli, style, shop, to, edit),
        Action::Where { shop, files } => where_is(cli, style, shop, files),
    }
}

/// The manifests, and the Tiers and ShopSets of the namespace placement works in: `-n`, else the
/// one namespace the manifests use.
struct Scope {
    namespace: String,
    tiers: Vec<Tier>,
    shopsets: Vec<ShopSet>,
}

fn scope(cli: &Cli, files: &[PathBuf]) -> Result<Scope> {
    let mut inventory = Inventory::load(files)?;
    let namespace = match &cli.namespace {
        Some(ns) => {
            inventory = inventory.in_namespace(ns).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
            ns.clone()
        }
        None => {
            let all: BTreeSet<&String> =
                inventory.tiers.keys().chain(inventory.shopsets.keys()).map(|(ns, _)| ns).collect();
            match all.len() {
                0 | 1 => all.into_iter().next().cloned().unwrap_or_else(|| "default".into()),
                _ => {
                    return Err(invalid(format!(
                        "the manifests hold Tiers and ShopSets of several namespaces ({}); fix: pass -n NAMESPACE",
                        all.into_iter().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
    };
    // Placement reads every ShopSet: manifests that break the rules (e.g. a ShopSet over its
    // capacity) are fixed first.
    inventory.check()?;
    let tiers = inventory.tiers.into_iter().filter(|((ns, _), _)| *ns == namespace).map(|(_, t)| t).collect();
    let shopsets = inventory
        .shopsets
        .into_iter()
        .filter(|((ns, _), _)| *ns == namespace)
        .map(|(_, s)| std::sync::Arc::unwrap_or_clone(s))
        .collect();
    Ok(Scope { namespace, tiers, shopsets })
}

impl Scope {
    fn shopset(&self, name: &str) -> Option<&ShopSet> {
        self.shopsets.iter().find(|s| s.name_any() == name)
    }

    fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name_any() == name)
    }
}

/// The manifest files and their edits so far: path -> (text on disk, edited text).
struct Files {
    order: Vec<PathBuf>,
    texts: BTreeMap<PathBuf, (String, String)>,
}

impl Files {
    fn read(paths: &[PathBuf]) -> Result<Self> {
        let order = yaml_files(paths)?;
        let mut texts = BTreeMap::new();
        for file in &order {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            texts.insert(file.clone(), (text.clone(), text));
        }
        Ok(Files { order, texts })
    }

    /// Sets `spec.shops` of ShopSet `name` in the one file that defines it.
    fn set_shops(&mut self, name: &str, namespace: Option<&str>, shops: &[String]) -> Result<PathBuf> {
        let mut found = Vec::new();
        for file in &self.order {
            let (_, text) = &self.texts[file];
            let new =
                set_shops(text, name, namespace, shops).map_err(|e| invalid(format!("{}: {e}", file.display())))?;
            if let Some(new) = new {
                found.push((file.clone(), new));
            }
        }
        match found.len() {
            1 => {
                let (file, new) = found.remove(0);
                if let Some(entry) = self.texts.get_mut(&file) {
                    entry.1 = new;
                }
                Ok(file)
            }
            0 => Err(invalid(format!(
                "ShopSet/{name}: not found in the files given; fix: pass the manifest that defines it with -f"
            ))),
            _ => Err(invalid(format!(
                "ShopSet/{name}: defined in {}; fix: pass only the file that defines it, or -n its namespace",
                found.iter().map(|(f, _)| f.display().to_string()).collect::<Vec<_>>().join(" and ")
            ))),
        }
    }

    /// The file that defines ShopSet `name`.
    fn defining(&self, name: &str, namespace: &str) -> Result<PathBuf> {
        for file in &self.order {
            let inv = Inventory::parse(file, &self.texts[file].0)?;
            if inv
                .shopsets
                .iter()
                .any(|((ns, n), ss)| n == name && (ns == namespace || ss.metadata.namespace.is_none()))
            {
                return Ok(file.clone());
            }
        }
        Err(invalid(format!(
            "ShopSet/{name}: not found in the files given; fix: pass the manifest that defines it with -f"
        )))
    }

    /// Adds a new file; refused when it exists.
    fn create(&mut self, file: PathBuf, text: String) -> Result<()> {
        if file.exists() || self.texts.contains_key(&file) {
            return Err(invalid(format!(
                "{}: exists already, so the new ShopSet cannot be written there; fix: move that file away, or add the ShopSet by hand",
                file.display()
            )));
        }
        self.order.push(file.clone());
        self.texts.insert(file, (String::new(), text));
        Ok(())
    }

    fn changed(&self) -> Vec<&PathBuf> {
        self.order.iter().filter(|f| self.texts[*f].0 != self.texts[*f].1).collect()
    }

    /// The edited ShopSets `names`, as the edited files define them, checked as `shopctl render`
    /// checks any manifest (the CRDs' rules, e.g. the capacity).
    fn edited(&self, names: &[&str], namespace: &str, cli: &Cli) -> Result<Vec<ShopSet>> {
        let mut out = Vec::new();
        for file in self.changed() {
            let mut inv = Inventory::parse(file, &self.texts[file].1)?;
            if let Some(ns) = &cli.namespace {
                inv = inv.in_namespace(ns).map_err(|p| anyhow!(LoadError::Invalid(p)))?;
            }
            let mut problems = Vec::new();
            for ((ns, name), ss) in &inv.shopsets {
                if names.contains(&name.as_str()) && (ns == namespace || ss.metadata.namespace.is_none()) {
                    shopset::validation::check_shopset(ss, &mut problems);
                    out.push(ShopSet::clone(ss));
                }
            }
            if !problems.is_empty() {
                return Err(anyhow!(LoadError::Invalid(shopset::validation::Problems(problems))));
            }
        }
        Ok(out)
    }

    /// Writes every changed file (or, with `dry_run`, only returns the diff).
    fn write(&self, dry_run: bool) -> Result<(Vec<PathBuf>, Option<String>)> {
        let changed: Vec<PathBuf> = self.changed().into_iter().cloned().collect();
        if dry_run {
            let diff: String = changed
                .iter()
                .map(|f| manifest_diff(f, &self.texts[f].0, &self.texts[f].1))
                .collect::<Vec<_>>()
                .concat();
            return Ok((changed, Some(diff)));
        }
        for file in &changed {
            write_atomically(file, &self.texts[file].1)?;
        }
        Ok((changed, None))
    }
}

fn placement_error(e: shopset::placement::PlacementError) -> anyhow::Error {
    invalid(e.to_string())
}

fn add(cli: &Cli, style: &Style, shop: &str, tier: Option<&str>, grow: bool, edit: &Edit) -> Result<()> {
    let scope = scope(cli, &edit.files)?;
    let mut files = Files::read(&edit.files)?;
    let placement = Planner::new(&scope.tiers, &scope.shopsets).place(shop, tier, grow).map_err(placement_error)?;
    let ns = cli.namespace.as_deref();
    if let Some(growth) = &placement.grown {
        let sibling =
            scope.shopset(&growth.copied_from).context("the sibling of a grown ShopSet is an input ShopSet")?;
        let new = Growth::shopset(&placement, sibling);
        let dir = files.defining(&growth.copied_from, &scope.namespace)?.parent().map(Path::to_path_buf);
        let file = dir.unwrap_or_default().join(format!("{}.yaml", placement.shopset));
        let text = format!(
            "# ShopSet {}: the next cell of tier {}, written by `shopctl shop add {shop} --grow` as a copy of ShopSet {}.\n{}",
            placement.shopset,
            placement.tier,
            growth.copied_from,
            serde_yaml::to_string(&new)?
        );
        files.create(file, text)?;
    } else {
        let current = scope.shopset(&placement.shopset).context("placement picks an input ShopSet")?;
        let mut shops = current.spec.shops.clone();
        shops.push(shop.to_string());
        files.set_shops(&placement.shopset, ns, &shops)?;
    }
    finish(cli, style, "add", None, placement, &files, &scope, edit)
}

fn remove(cli: &Cli, style: &Style, shop: &str, edit: &Edit) -> Result<()> {
    let scope = scope(cli, &edit.files)?;
    let mut files = Files::read(&edit.files)?;
    let planner = Planner::new(&scope.tiers, &scope.shopsets);
    let (from, _) = planner.served_by(shop).ok_or_else(|| {
        invalid(format!(
            "shop {shop:?}: served by no ShopSet (spec.shops); fix: name a shop that `shopctl shop where` finds"
        ))
    })?;
    let ss = scope.shopset(from).context("a served shop is in an input ShopSet")?;
    let shops: Vec<String> = ss.spec.shops.iter().filter(|s| *s != shop).cloned().collect();
    files.set_shops(from, cli.namespace.as_deref(), &shops)?;
    let placement = where_placement(&scope, shop, ss);
    finish(cli, style, "remove", None, placement, &files, &scope, edit)
}

fn move_shop(cli: &Cli, style: &Style, shop: &str, to: &str, edit: &Edit) -> Result<()> {
    let scope = scope(cli, &edit.files)?;
    let mut files = Files::read(&edit.files)?;
    let planner = Planner::new(&scope.tiers, &scope.shopsets);
    let from = planner.check_move(shop, to).map_err(placement_error)?;
    let target = scope.shopset(to).context("check_move found the target")?;
    if from != to {
        let source = scope.shopset(&from).context("check_move found the source")?;
        let left: Vec<String> = source.spec.shops.iter().filter(|s| *s != shop).cloned().collect();
        files.set_shops(&from, cli.namespace.as_deref(), &left)?;
        let mut shops = target.spec.shops.clone();
        shops.push(shop.to_string());
        files.set_shops(to, cli.namespace.as_deref(), &shops)?;
    }
    let placement = where_placement(&scope, shop, target);
    finish(cli, style, "move", (from != to).then_some(from), placement, &files, &scope, edit)
}

/// Where `ss` puts `shop`, as a [`Placement`].
fn where_placement(scope: &Scope, shop: &str, ss: &ShopSet) -> Placement {
    let tier = scope.tier(&ss.spec.tier);
    Placement {
        shop: shop.into(),
        shopset: ss.name_any(),
        tier: ss.spec.tier.clone(),
        destination: ss.spec.destination.clone(),
        failure_domain: tier.and_then(|t| ss.failure_domain(t)).cloned().unwrap_or_default(),
        grown: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    cli: &Cli,
    style: &Style,
    action: &'static str,
    from: Option<String>,
    placement: Placement,
    files: &Files,
    scope: &Scope,
    edit: &Edit,
) -> Result<()> {
    let mut names = vec![placement.shopset.as_str()];
    if let Some(from) = &from {
        names.push(from);
    }
    // Checked before anything is written: a refused edit writes nothing.
    let edited = files.edited(&names, &scope.namespace, cli)?;
    let (changed, diff) = files.write(edit.dry_run)?;
    let applied = if edit.apply {
        apply_all(&edited, cli.namespace.as_deref().or(Some(&scope.namespace)))?;
        true
    } else {
        false
    };
    let report = Report {
        action,
        shop: placement.shop,
        shopset: placement.shopset,
        from,
        tier: placement.tier,
        destination: placement.destination,
        failure_domain: placement.failure_domain,
        grown_from: placement.grown.map(|g| g.copied_from),
        changed: !changed.is_empty(),
        files: changed,
        dry_run: edit.dry_run,
        applied,
        diff,
    };
    if cli.output == Output::Text {
        print_text(&report, style);
    }
    print_structured(cli.output, &report)
}

fn domain_text(domain: &BTreeMap<String, String>) -> String {
    if domain.is_empty() {
        "none".into()
    } else {
        domain.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

fn print_text(r: &Report, style: &Style) {
    let verb = match (r.action, r.dry_run) {
        ("add", false) => "added to",
        ("add", true) => "would be added to",
        ("remove", false) => "removed from",
        ("remove", true) => "would be removed from",
        (_, false) => "moved to",
        (_, true) => "would be moved to",
    };
    let from = r.from.as_deref().map(|f| format!(" from ShopSet {f}")).unwrap_or_default();
    println!(
        "{} {verb} ShopSet {}{from} (tier {}, destination {}, failure domain {})",
        style.bold(&format!("shop {}", r.shop)),
        r.shopset,
        r.tier,
        r.destination.as_deref().unwrap_or("the tier's default"),
        domain_text(&r.failure_domain)
    );
    if let Some(sibling) = &r.grown_from {
        println!("  new ShopSet {} (a copy of {sibling}): every ShopSet of the tier was full", r.shopset);
    }
    if let Some(diff) = &r.diff {
        for line in diff.lines() {
            println!("{}", style.diff_line(line));
        }
    } else if !r.changed {
        println!("  unchanged");
    } else {
        for file in &r.files {
            println!("  edited {}: commit it for review", file.display());
        }
    }
    if r.applied {
        println!("  {} to the cluster (server-side apply, field manager {FIELD_MANAGER})", style.green("applied"));
    }
}

/// Where a shop is served, and what the cluster says of its Application.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WhereReport {
    shop: String,
    shopset: String,
    tier: String,
    destination: Option<String>,
    /// The Argo CD destination: the named destination's server or cluster, else the Tier's server.
    server: String,
    failure_domain: BTreeMap<String, String>,
    file: PathBuf,
    application: Option<String>,
    health: Option<String>,
    sync: Option<String>,
    /// Why health is not known, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
}

fn where_is(cli: &Cli, style: &Style, shop: &str, paths: &[PathBuf]) -> Result<()> {
    let scope = scope(cli, paths)?;
    let files = Files::read(paths)?;
    let planner = Planner::new(&scope.tiers, &scope.shopsets);
    let (name, _) = planner.served_by(shop).ok_or_else(|| {
        invalid(format!("shop {shop:?}: served by no ShopSet of the files given (spec.shops); fix: add it with `shopctl shop add {shop}`, or pass the manifests that hold it with -f"))
    })?;
    let ss = scope.shopset(name).context("a served shop is in an input ShopSet")?;
    let p = where_placement(&scope, shop, ss);
    let tier = scope.tier(&p.tier);
    let server = match (tier, &p.destination) {
        (Some(t), Some(d)) => t
            .spec
            .argocd
            .destinations
            .iter()
            .find(|x| &x.name == d)
            .and_then(|x| x.server.clone().or_else(|| x.cluster.clone()))
            .unwrap_or_else(|| format!("{d} (not a destination of Tier/{})", p.tier)),
        (Some(t), None) => t.spec.argocd.destination.server.clone(),
        (None, _) => format!("unknown: no Tier/{} in the files given", p.tier),
    };
    let status = cluster_status(name, &scope.namespace);
    let (application, health, sync, cluster) = match status {
        Ok(s) => (s.application, s.health_status, s.sync_status, None),
        Err(e) => (None, None, None, Some(format!("{e:#}"))),
    };
    let report = WhereReport {
        shop: shop.into(),
        shopset: p.shopset,
        tier: p.tier,
        destination: p.destination,
        server,
        failure_domain: p.failure_domain,
        file: files.defining(name, &scope.namespace)?,
        application,
        health,
        sync,
        cluster,
    };
    if cli.output == Output::Text {
        println!(
            "{}: ShopSet {}, tier {}, destination {} ({}), failure domain {}",
            style.bold(&format!("shop {}", report.shop)),
            report.shopset,
            report.tier,
            report.destination.as_deref().unwrap_or("the tier's default"),
            report.server,
            domain_text(&report.failure_domain)
        );
        println!("  defined in {}", report.file.display());
        match &report.cluster {
            None => println!(
                "  Application {}: health {}, sync {}",
                report.application.as_deref().unwrap_or("-"),
                report.health.as_deref().unwrap_or("unknown"),
                report.sync.as_deref().unwrap_or("unknown")
            ),
            Some(why) => println!("  Application health: not known offline ({why})"),
        }
    }
    print_structured(cli.output, &report)
}

/// The ShopSet's status from the cluster, within a few seconds.
fn cluster_status(name: &str, namespace: &str) -> Result<shopset::api::ShopSetStatus> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let ask = async {
            let client = kube::Client::try_default().await.map_err(|e| anyhow!("no cluster: {e}"))?;
            let api: Api<ShopSet> = Api::namespaced(client, namespace);
            let ss = api.get(name).await.map_err(|e| anyhow!("ShopSet/{name} in namespace {namespace}: {e}"))?;
            Ok(ss.status.unwrap_or_default())
        };
        tokio::time::timeout(Duration::from_secs(10), ask)
            .await
            .map_err(|_| anyhow!("the cluster did not answer within 10s"))?
    })
}
