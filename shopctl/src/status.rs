//! `shopctl status`: one view of each tier across git, the controller and Argo CD.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use kube::ResourceExt;
use kube::api::Api;
use serde::Serialize;
use shopset::api::Tier;
use shopset::argocd::{AppState, Problem, application_states, problems};
use shopset::error::api_message;
use shopset::policy::{Decision, Policy, Timestamp, evaluate};
use shopset::revision::{short, short_or};
use shopset::state::GitState;

use crate::{Cli, Output, Style, auth, cache, load, print_structured, tier_order};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Only this tier (default: every tier).
    tier: Option<String>,
    /// Manifest files or directories holding the Tiers, Configurations and ShopSets.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

/// The status of one tier; what could not be read is said in `unavailable`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TierView {
    pub tier: String,
    pub promoted_from: Option<String>,
    pub git: Option<GitState>,
    pub conditions: Vec<ConditionView>,
    pub applications: Vec<ApplicationView>,
    /// ShopSets in maintenance, from the manifests.
    pub maintenance: Vec<MaintenanceView>,
    /// Where the ShopSets run, from the manifests: by failure domain, then destination.
    pub placement: Vec<PlacementView>,
    /// What the tier's promotion policy says of a promotion into it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionView>,
    pub unavailable: Vec<String>,
}

/// The ShopSets of one destination of a tier.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementView {
    /// `cloud=aws,zone=eu-west-1a`, or `-` for none.
    pub failure_domain: String,
    /// The destination's name; None for the Tier's single `spec.argocd.destination`, or for the
    /// ShopSets whose destination cannot be told (`invalid` set).
    pub destination: Option<String>,
    /// `server URL` or `cluster NAME`.
    pub target: Option<String>,
    pub shopsets: Vec<String>,
    /// Why these ShopSets have no destination (the error `shopctl sync` gives).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// The tier's ShopSets by failure domain, then destination; every listed destination appears,
/// with or without ShopSets, so an empty cluster shows.
fn placement(input: &shopset::manifests::TierInput) -> Vec<PlacementView> {
    use shopset::fleet::{destination_of, failure_domain_text, target};
    let tier = &input.tier;
    let mut groups: Vec<PlacementView> = tier
        .spec
        .argocd
        .destinations
        .iter()
        .map(|d| PlacementView {
            failure_domain: failure_domain_text(Some(&d.failure_domain)),
            destination: Some(d.name.clone()),
            target: Some(target(d).to_string()),
            shopsets: Vec::new(),
            invalid: None,
        })
        .collect();
    for ss in &input.shopsets {
        match destination_of(tier, ss) {
            Ok(p) => {
                let destination = p.name.map(String::from);
                let at = groups.iter().position(|g| g.destination == destination && g.invalid.is_none());
                match at {
                    Some(i) => groups[i].shopsets.push(ss.name_any()),
                    None => groups.push(PlacementView {
                        failure_domain: p.failure_domain_text(),
                        destination,
                        target: Some(p.target.to_string()),
                        shopsets: vec![ss.name_any()],
                        invalid: None,
                    }),
                }
            }
            Err(e) => groups.push(PlacementView {
                failure_domain: "-".into(),
                destination: None,
                target: None,
                shopsets: vec![ss.name_any()],
                invalid: Some(e.to_string()),
            }),
        }
    }
    groups.sort_by(|a, b| {
        (a.invalid.is_some(), &a.failure_domain, &a.destination).cmp(&(
            b.invalid.is_some(),
            &b.failure_domain,
            &b.destination,
        ))
    });
    groups
}

/// Whether the tier may be promoted into now ([`shopset::policy::evaluate`]), or when, and why not.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionView {
    pub promotable: bool,
    /// Which policy lets it through, or every reason it does not.
    pub why: Vec<String>,
    /// The first moment the policy could let it through (RFC 3339); absent when waiting alone
    /// will not do (a hold, or the tier promoted from not Healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_possible: Option<String>,
}

/// A ShopSet in maintenance: since when and why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceView {
    pub shopset: String,
    /// The shops in maintenance; empty: the whole ShopSet.
    pub shops: Vec<String>,
    pub since: String,
    /// Seconds since it began.
    pub age_seconds: i64,
    pub reason: String,
}

/// An Application and the verdict the promotion gate and `doctor` give it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationView {
    #[serde(flatten)]
    pub state: AppState,
    /// Synced and Healthy at the system branch's head, with no error.
    pub deployed: bool,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

pub fn status(cli: &Cli, style: &Style, args: &StatusArgs) -> Result<()> {
    let inv = load(cli, &args.files)?;
    let (cache, auth) = (cache(cli)?, auth(cli)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = rt.block_on(kube::Client::try_default());
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let mut views = Vec::new();
    // The Tiers as the cluster has them, for the promotion policy of the tiers above.
    let mut cluster: BTreeMap<String, Tier> = BTreeMap::new();
    for name in tier_order(&inv, args.tier.as_deref())? {
        let input = inv.tier_input(&name)?;
        let mut view = TierView {
            tier: name.clone(),
            promoted_from: input.tier.spec.promotion.as_ref().map(|p| p.from.clone()),
            git: None,
            conditions: Vec::new(),
            applications: Vec::new(),
            maintenance: input
                .shopsets
                .iter()
                .filter_map(|ss| {
                    let m = ss.spec.maintenance.as_ref()?;
                    Some(MaintenanceView {
                        shopset: ss.name_any(),
                        shops: m.shops.clone(),
                        since: m.since.0.to_string(),
                        age_seconds: now - m.since.0.as_second(),
                        reason: m.reason.clone(),
                    })
                })
                .collect(),
            placement: placement(&input),
            promotion: None,
            unavailable: Vec::new(),
        };
        match shopset::state::read(&cache, &auth, &input) {
            Ok(g) => view.git = Some(g),
            Err(e) => view.unavailable.push(format!("git: {e}")),
        }
        match &client {
            Err(e) => view
                .unavailable
                .push(format!("cluster: {e} (set KUBECONFIG to see the controller's conditions and the Applications)")),
            Ok(client) => {
                let ns = input.tier.namespace().unwrap_or_else(|| "default".into());
                match rt.block_on(Api::<Tier>::namespaced(client.clone(), &ns).get_opt(&name)) {
                    Ok(Some(t)) => {
                        cluster.insert(name.clone(), t.clone());
                        view.conditions = t
                            .status
                            .map(|s| s.conditions)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| ConditionView {
                                type_: c.type_,
                                status: c.status,
                                reason: c.reason,
                                message: c.message,
                            })
                            .collect()
                    }
                    Ok(None) => view.unavailable.push(format!("cluster: Tier {ns}/{name} is not applied")),
                    Err(e) => {
                        view.unavailable.push(format!("cluster: cannot read Tier {ns}/{name}: {}", api_message(&e)))
                    }
                }
                match rt.block_on(application_states(client, &input.tier, &input.shopsets)) {
                    Ok(apps) => {
                        let head = view.git.as_ref().and_then(|g| g.system_head.clone());
                        let branch = input.tier.branch();
                        view.applications = apps
                            .into_iter()
                            .map(|state| {
                                let problems = problems(&state, &branch, head.as_deref());
                                ApplicationView { deployed: problems.is_empty(), problems, state }
                            })
                            .collect();
                    }
                    Err(e) => view.unavailable.push(format!("cluster: cannot read Applications: {}", api_message(&e))),
                }
            }
        }
        views.push(view);
    }
    let heads: BTreeMap<String, Option<String>> =
        views.iter().map(|v| (v.tier.clone(), v.git.as_ref().and_then(|g| g.system_head.clone()))).collect();
    for view in &mut views {
        let Ok(input) = inv.tier_input(&view.tier) else { continue };
        match promotion_view(cli, &inv, &rt, &client, &input.tier, &heads, &cluster) {
            Ok(p) => view.promotion = p,
            Err(e) => view.unavailable.push(format!("policy: {e:#}")),
        }
    }
    if cli.output == Output::Text {
        for v in &views {
            print_view(v, style);
        }
    }
    print_structured(cli.output, &views)
}

/// What `tier`'s promotion policy says now, with the soak measured on its `from` tier as the
/// cluster reports it (read here when `from` is not among the tiers shown).
fn promotion_view(
    cli: &Cli,
    inv: &shopset::manifests::Inventory,
    rt: &tokio::runtime::Runtime,
    client: &Result<kube::Client, kube::Error>,
    tier: &Tier,
    heads: &BTreeMap<String, Option<String>>,
    cluster: &BTreeMap<String, Tier>,
) -> Result<Option<PromotionView>> {
    let Some(mut policy) = Policy::of(tier)? else { return Ok(None) };
    let name = tier.name_any();
    if policy.hold.is_none() {
        // A hold set with kubectl that the manifests do not show yet.
        policy.hold = cluster.get(&name).and_then(|t| t.spec.promotion.as_ref()?.hold.clone());
    }
    let from = policy.from.clone();
    let head = match heads.get(&from) {
        Some(head) => head.clone(),
        None => shopset::state::read(&cache(cli)?, &auth(cli)?, &inv.tier_input(&from)?)?.system_head,
    };
    let from_tier = match (cluster.get(&from), client) {
        (Some(t), _) => Some(t.clone()),
        (None, Ok(client)) => {
            let ns = tier.namespace().unwrap_or_else(|| "default".into());
            rt.block_on(Api::<Tier>::namespaced(client.clone(), &ns).get_opt(&from)).ok().flatten()
        }
        (None, Err(_)) => None,
    };
    let ready = match (&from_tier, &head) {
        (Some(t), Some(head)) => shopset::policy::ready_since(t, head),
        _ => None,
    };
    Ok(Some(match evaluate(&policy, ready, Timestamp::now()) {
        Decision::Allowed { why } => PromotionView { promotable: true, why: vec![why], next_possible: None },
        Decision::Refused { reasons, next_possible } => {
            PromotionView { promotable: false, why: reasons, next_possible: next_possible.map(|t| t.to_string()) }
        }
    }))
}

fn print_view(v: &TierView, style: &Style) {
    let from = v.promoted_from.as_deref().map(|f| format!(" (promoted from {f})")).unwrap_or_default();
    println!("{}{from}", style.bold(&format!("Tier {}", v.tier)));
    if let Some(g) = &v.git {
        println!("  app            {} {}", g.branch, short_or(g.app_head.as_deref(), "-"));
        for (name, head) in &g.configuration_heads {
            println!("  config/{name:<7} {} {}", g.branch, short_or(head.as_deref(), "-"));
        }
        println!("  system         {} {}", g.branch, short_or(g.system_head.as_deref(), "-"));
        for (path, oid) in &g.pinned {
            let stale = match path.as_str() {
                "base" if g.app_head.as_ref() != Some(oid) && g.promotion.is_some() => {
                    style.yellow(" (app branch has moved on: held until the promotion completes)")
                }
                "base" if g.app_head.as_ref() != Some(oid) => {
                    style.yellow(" (app branch has moved on: controller lagging)")
                }
                _ => String::new(),
            };
            println!("    pins {path:<18} {}{stale}", short(oid));
        }
        if let (Some(behind), Some(ahead)) = (g.behind, g.ahead) {
            println!("  behind {}: {behind} commit(s); ahead: {ahead}", v.promoted_from.as_deref().unwrap_or("-"));
        }
        if let Some(m) = &g.promotion {
            println!(
                "  {} {} ({} at {}): pins held until it completes",
                style.yellow("in progress:"),
                m.what(),
                m.refname,
                short(&m.id)
            );
            for r in &m.repositories {
                println!("    {:<20} {} -> {}", r.repository, short_or(r.previous.as_deref(), "-"), short(&r.target));
            }
            println!("    finish: {}", m.finish_command("MANIFESTS"));
            println!("    undo:   {}", m.undo_command("MANIFESTS"));
        }
    }
    for c in &v.conditions {
        let status = if c.status == "True" { style.green(&c.status) } else { style.yellow(&c.status) };
        println!("  {:<9} {status:<5} {} {}", c.type_, c.reason, c.message);
    }
    if !v.applications.is_empty() {
        println!("  {:<20} {:<10} {:<12} REVISION", "APPLICATION", "SYNC", "HEALTH");
        for view in &v.applications {
            let a = &view.state;
            let exists = if a.exists { a.sync.clone().unwrap_or_else(|| "Unknown".into()) } else { "Missing".into() };
            println!(
                "  {:<20} {:<10} {:<12} {}",
                a.application,
                exists,
                a.health.clone().unwrap_or_else(|| "-".into()),
                short_or(a.revision.as_deref(), "-")
            );
            if !view.deployed {
                let why: Vec<String> = view.problems.iter().map(ToString::to_string).collect();
                println!("    {} {}", style.yellow("not deployed:"), why.join(", "));
            }
        }
    }
    // By failure domain, then destination: where the tier's cells run.
    let mut domain = None;
    for g in v.placement.iter().filter(|g| g.invalid.is_none()) {
        if domain != Some(&g.failure_domain) {
            println!("  failure domain {}", g.failure_domain);
            domain = Some(&g.failure_domain);
        }
        let name = g.destination.as_deref().unwrap_or("spec.argocd.destination");
        let target = g.target.as_deref().unwrap_or("-");
        let shopsets = match g.shopsets.len() {
            0 => "no ShopSet".to_string(),
            n => format!("{n} ShopSet{}: {}", if n == 1 { "" } else { "s" }, names(&g.shopsets)),
        };
        println!("    {name} ({target}): {shopsets}");
    }
    for g in v.placement.iter().filter_map(|g| g.invalid.as_ref()) {
        println!("  {} {g}", style.yellow("no destination:"));
    }
    for m in &v.maintenance {
        let what = if m.shops.is_empty() {
            format!("ShopSet {}", m.shopset)
        } else {
            format!("ShopSet {} shops {}", m.shopset, m.shops.join(", "))
        };
        println!(
            "  {} {what} since {} ({} ago): {}",
            style.yellow("in maintenance:"),
            m.since,
            shopset::doctor::human_duration(m.age_seconds),
            m.reason
        );
    }
    if let Some(p) = &v.promotion {
        let from = v.promoted_from.as_deref().unwrap_or("-");
        if p.promotable {
            println!("  {} from {from} now ({})", style.green("promotable:"), p.why.join(", "));
        } else {
            let when = p
                .next_possible
                .as_deref()
                .map(|t| format!("from {t}"))
                .unwrap_or_else(|| "not by waiting alone".into());
            println!("  {} from {from} {when}", style.yellow("not promotable:"));
            for why in &p.why {
                println!("    {why}");
            }
        }
    }
    for u in &v.unavailable {
        println!("  {} {u}", style.yellow("not read:"));
    }
}

/// How many names a placement line lists before it counts the rest.
const NAMES_SHOWN: usize = 10;

/// "a, b, c", or "a, ..., j and 990 more".
fn names(all: &[String]) -> String {
    let shown: Vec<&str> = all.iter().take(NAMES_SHOWN).map(String::as_str).collect();
    match all.len().saturating_sub(NAMES_SHOWN) {
        0 => shown.join(", "),
        rest => format!("{} and {rest} more", shown.join(", ")),
    }
}
