//! The promotion gate: a tier is promoted from only when the system branch pins the heads of its
//! app and configuration branches and every ShopSet's Application runs that system commit, Synced
//! and Healthy ([`crate::argocd::problems`], the same verdict `status` and `doctor` give).
//! A ShopSet wholly in maintenance is passed over (its automated sync is off on purpose, so it may
//! well be OutOfSync) and listed, as is one with some shops in maintenance (still checked).

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use shopset_core::api::ShopSet;
use shopset_core::manifests::TierInput;
use shopset_core::revision::short_or;
use shopset_git::state::GitState;

use crate::argocd::{AppState, application_states, problems};

/// Why the tier of `git` is not ready to be promoted from; empty when it is.
pub fn refusals(git: &GitState, apps: &[AppState]) -> Vec<String> {
    let Some(system_head) = &git.system_head else {
        return vec![format!("the system branch {} does not exist yet: sync the tier first", git.branch)];
    };
    let mut out = Vec::new();
    if let Some(m) = &git.promotion {
        out.push(format!(
            "{} is in progress ({}): finish it (`{}`) or undo it (`{}`)",
            m.what(),
            m.refname,
            m.finish_command("MANIFESTS"),
            m.undo_command("MANIFESTS")
        ));
    }
    if git.pinned.get("base") != git.app_head.as_ref() {
        out.push(format!(
            "the system branch {} pins app {} but the app branch is at {}: the controller has not caught up yet",
            git.branch,
            short_or(git.pinned.get("base").map(String::as_str), "none"),
            short_or(git.app_head.as_deref(), "none")
        ));
    }
    for (name, head) in &git.configuration_heads {
        let pinned = git.pinned.get(&format!("config/{name}"));
        if pinned != head.as_ref() {
            out.push(format!(
                "the system branch {} pins configuration {name} at {} but its branch is at {}: \
                 the controller has not caught up yet",
                git.branch,
                short_or(pinned.map(String::as_str), "none"),
                short_or(head.as_deref(), "none")
            ));
        }
    }
    for app in apps {
        let why = problems(app, &git.branch, Some(system_head));
        if !why.is_empty() {
            let why: Vec<String> = why.iter().map(ToString::to_string).collect();
            out.push(format!("ShopSet {}: Application {}: {}", app.shopset, app.application, why.join(", ")));
        }
    }
    out
}

/// What the gate decided about a tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Why the tier is not ready to be promoted from; empty when it is.
    pub refusals: Vec<String>,
    /// The ShopSets in maintenance, one line each: passed over when wholly in maintenance.
    pub maintenance: Vec<String>,
}

/// [`refusals`], passing over the Applications of ShopSets wholly in maintenance and listing every
/// ShopSet in maintenance.
pub fn verdict(git: &GitState, apps: &[AppState], shopsets: &[Arc<ShopSet>]) -> Verdict {
    let skipped: BTreeSet<String> =
        shopsets.iter().filter(|s| s.wholly_in_maintenance()).map(|s| s.name_any()).collect();
    let judged: Vec<AppState> = apps.iter().filter(|a| !skipped.contains(&a.shopset)).cloned().collect();
    Verdict { refusals: refusals(git, &judged), maintenance: maintenance_lines(shopsets) }
}

/// One line per ShopSet in maintenance: what, since when, why, and what the gate does with it.
pub fn maintenance_lines(shopsets: &[Arc<ShopSet>]) -> Vec<String> {
    let mut out = Vec::new();
    for ss in shopsets {
        let Some(m) = &ss.spec.maintenance else { continue };
        let since = m.since.0.to_string();
        out.push(if m.whole() {
            format!("ShopSet {} in maintenance since {since} ({}): not checked", ss.name_any(), m.reason)
        } else {
            format!(
                "ShopSet {}: shops {} in maintenance since {since} ({}): still checked",
                ss.name_any(),
                m.shops.join(", "),
                m.reason
            )
        });
    }
    out
}

/// Reads the tier's Applications and decides, given its git side.
pub async fn check(client: &kube::Client, input: &TierInput, git: &GitState) -> Result<Verdict, kube::Error> {
    let apps = application_states(client, &input.tier, &input.shopsets).await?;
    tracing::debug!(tier = %input.tier.name_any(), applications = apps.len(), "promotion gate read");
    Ok(verdict(git, &apps, &input.shopsets))
}

#[cfg(test)]
mod tests {
    use shopset_core::api::{Maintenance, ShopSetSpec};

    use super::*;

    fn shopset(name: &str, maintenance: Option<&[&str]>) -> Arc<ShopSet> {
        let mut ss = ShopSet::new(
            name,
            ShopSetSpec {
                tier: "tier-0".into(),
                configuration: "shop-config".into(),
                shops: vec!["shop-a".into(), "shop-b".into()],
                replicas: None,
                images: Vec::new(),
                namespace: None,
                maintenance: None,
                destination: None,
                capacity: None,
            },
        );
        ss.spec.maintenance = maintenance.map(|shops| Maintenance {
            reason: "database migration".into(),
            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-01T08:00:00Z".parse().unwrap()),
            shops: shops.iter().map(|s| s.to_string()).collect(),
        });
        Arc::new(ss)
    }

    fn app(shopset: &str, sync: &str) -> AppState {
        AppState {
            shopset: shopset.into(),
            application: shopset.into(),
            exists: true,
            sync: Some(sync.into()),
            health: Some("Healthy".into()),
            revision: Some("abc".into()),
            target_revision: Some("tier-0".into()),
            conditions: Vec::new(),
        }
    }

    fn git() -> GitState {
        GitState { branch: "tier-0".into(), system_head: Some("abc".into()), ..GitState::default() }
    }

    #[test]
    fn a_shopset_wholly_in_maintenance_is_passed_over_and_listed() {
        // OutOfSync: what a ShopSet looks like while operators work on it by hand.
        let apps = [app("down", "OutOfSync"), app("up", "Synced")];
        let shopsets = [shopset("down", Some(&[])), shopset("up", None)];
        let v = verdict(&git(), &apps, &shopsets);
        assert_eq!(v.refusals, Vec::<String>::new());
        assert_eq!(
            v.maintenance,
            ["ShopSet down in maintenance since 2026-12-01T08:00:00Z (database migration): not checked"]
        );
        // Out of maintenance, the same Application stops the promotion.
        let v = verdict(&git(), &apps, &[shopset("down", None), shopset("up", None)]);
        assert_eq!(v.refusals, ["ShopSet down: Application down: sync is OutOfSync"]);
        assert!(v.maintenance.is_empty());
    }

    #[test]
    fn a_shopset_with_some_shops_in_maintenance_is_still_checked() {
        let apps = [app("part", "OutOfSync")];
        let v = verdict(&git(), &apps, &[shopset("part", Some(&["shop-b"]))]);
        assert_eq!(v.refusals, ["ShopSet part: Application part: sync is OutOfSync"]);
        assert_eq!(
            v.maintenance,
            [
                "ShopSet part: shops shop-b in maintenance since 2026-12-01T08:00:00Z (database migration): still checked"
            ]
        );
    }
}
