//! The promotion gate: a tier is promoted from only when the system branch pins the heads of its
//! app and configuration branches and every ShopSet's Application runs that system commit, Synced
//! and Healthy ([`crate::argocd::problems`], the same verdict `status` and `doctor` give).

use kube::ResourceExt;
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

/// Reads the tier's Applications and decides, given its git side.
pub async fn check(client: &kube::Client, input: &TierInput, git: &GitState) -> Result<Vec<String>, kube::Error> {
    let apps = application_states(client, &input.tier, &input.shopsets).await?;
    tracing::debug!(tier = %input.tier.name_any(), applications = apps.len(), "promotion gate read");
    Ok(refusals(git, &apps))
}
