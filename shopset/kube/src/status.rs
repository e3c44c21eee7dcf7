//! The one place that writes a Tier's status, its ShopSets' status and its Events.
//!
//! Conditions follow Flux's kustomize-controller: `Ready` says whether the last reconcile
//! succeeded; `Reconciling` is True while a new generation is being worked on, or while a transient
//! failure is retried; `Stalled` is True when only a change of the input can help (an invalid spec,
//! a template that does not render). `Rendered` and `Pushed` say which step failed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;
use shopset_core::api::{API_VERSION, ShopSet, ShopSetStatus, Tier};
use shopset_core::manifests::TierInput;
use shopset_core::revision::short;
use shopset_git::sync::{SyncError, SyncReport};

use crate::argocd::{self, Applied};
use crate::error::Error;

/// What a reconcile is reporting.
pub enum Outcome<'a> {
    /// A new generation is being worked on.
    Started,
    /// Synced and applied.
    Synced { input: &'a TierInput, report: &'a SyncReport, applied: &'a Applied },
    /// Failed; the error policy retries unless the error is terminal.
    Failed(&'a Error),
}

/// The conditions of a Tier after `outcome`, given its current ones.
pub fn conditions(old: &[Condition], generation: Option<i64>, outcome: &Outcome<'_>) -> Vec<Condition> {
    let c = |type_: &str, ok: bool, reason: &str, message: &str| condition(old, type_, ok, reason, message, generation);
    match outcome {
        Outcome::Started => {
            // Only Reconciling changes; the others keep saying what the last reconcile found.
            let mut out: Vec<Condition> = old.iter().filter(|c| c.type_ != "Reconciling").cloned().collect();
            let message = format!("reconciling generation {}", generation.unwrap_or_default());
            out.push(c("Reconciling", true, "Progressing", &message));
            out
        }
        Outcome::Synced { input, report, applied } => {
            let head = report.head.as_deref().unwrap_or_default();
            let pushed = match &report.commit {
                Some(commit) => format!("pushed {} to {}", short(commit), report.branch),
                None => format!("{} already at {}", report.branch, short(head)),
            };
            let ready =
                format!("system branch {} at {}; {} Applications", report.branch, short(head), applied.applied.len());
            vec![
                c("Ready", true, "Synced", &ready),
                c("Rendered", true, "Rendered", &format!("{} ShopSets rendered", input.shopsets.len())),
                c("Pushed", true, if report.commit.is_some() { "Pushed" } else { "UpToDate" }, &pushed),
            ]
        }
        Outcome::Failed(err) => {
            let (reason, message) = (err.reason(), err.to_string());
            let mut out = vec![c("Ready", false, reason, &message)];
            match err {
                Error::Invalid(_) | Error::Sync(SyncError::Render(_)) => {
                    out.push(c("Rendered", false, reason, &message))
                }
                Error::Sync(_) => out.push(c("Pushed", false, reason, &message)),
                _ => {}
            }
            if err.is_terminal() {
                out.push(c("Stalled", true, reason, &message));
            } else {
                out.push(c("Reconciling", true, "ProgressingWithRetry", &message));
            }
            out
        }
    }
}

/// A condition of `type_`; its transition time moves only when its status does.
fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.chars().take(32 * 1024).collect(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Writes what `outcome` says: the Tier's status (server-side apply), the ShopSets' status when it
/// changed, and Events.
pub async fn write(
    client: &kube::Client,
    recorder: &Recorder,
    tier: &Tier,
    outcome: &Outcome<'_>,
) -> Result<(), Error> {
    let old = tier.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = tier.metadata.generation;
    // Server-side apply removes what this field manager applied before and leaves out now: the
    // whole status is written every time, carried over where this outcome does not change it.
    let mut status = tier.status.clone().unwrap_or_default();
    status.conditions = conditions(&old, generation, outcome);
    match outcome {
        Outcome::Started => {}
        Outcome::Failed(_) => status.observed_generation = generation,
        Outcome::Synced { report, .. } => {
            status.observed_generation = generation;
            status.branch = Some(report.branch.clone());
            status.app_commit = Some(report.pins.app.clone());
            status.app_commit_short = Some(short(&report.pins.app).to_string());
            status.configuration_commits = report.pins.configurations.clone();
            status.system_commit = report.head.clone();
            status.last_sync_time = Some(Time(Timestamp::now()));
        }
    }
    let api: Api<Tier> = Api::namespaced(client.clone(), &tier.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": API_VERSION, "kind": "Tier", "status": status });
    api.patch_status(&tier.name_any(), &PatchParams::apply(argocd::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    match outcome {
        Outcome::Started => {}
        Outcome::Failed(err) => {
            let note = err.to_string();
            publish(recorder, tier, EventType::Warning, err.reason(), "Sync", note).await;
        }
        Outcome::Synced { input, report, applied } => {
            write_shopsets(client, tier, input, report).await?;
            for note in events(report, applied) {
                publish(recorder, tier, note.0, note.1, note.2, note.3).await;
            }
        }
    }
    Ok(())
}

/// A ShopSet's status describes its own generation, not the branch head (the Tier's status has
/// that): it is written only when it changes, so a bump costs no write per ShopSet.
async fn write_shopsets(
    client: &kube::Client,
    tier: &Tier,
    input: &TierInput,
    report: &SyncReport,
) -> Result<(), Error> {
    for ss in &input.shopsets {
        let name = ss.name_any();
        let old = ss.status.clone().unwrap_or_default();
        let rendered = format!("rendered at shopsets/{name} on branch {}", report.branch);
        let status = ShopSetStatus {
            conditions: vec![condition(&old.conditions, "Ready", true, "Rendered", &rendered, ss.metadata.generation)],
            observed_generation: ss.metadata.generation,
            shop_count: Some(ss.spec.shops.len() as i64),
            rendered_path: Some(format!("shopsets/{name}")),
            application: Some(format!("{}/{name}", tier.spec.argocd.namespace)),
            ..old.clone()
        };
        if status == old {
            continue;
        }
        let api: Api<ShopSet> = Api::namespaced(client.clone(), &ss.namespace().unwrap_or_default());
        let patch = json!({ "apiVersion": API_VERSION, "kind": "ShopSet", "status": status });
        api.patch_status(&name, &PatchParams::apply(argocd::FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    Ok(())
}

/// The Events of a successful reconcile: (type, reason, action, note).
pub fn events(report: &SyncReport, applied: &Applied) -> Vec<(EventType, &'static str, &'static str, String)> {
    let mut out = Vec::new();
    for b in report.branches.iter().filter(|b| b.created_from.is_some()) {
        let from = b.created_from.clone().unwrap_or_default();
        let note = format!("created branch {} in the {} repository from {from}", b.branch, b.repository);
        out.push((EventType::Normal, "BranchCreated", "Sync", note));
    }
    if let Some(message) = &report.message {
        let note: String = message.lines().filter(|l| !l.is_empty()).take(6).collect::<Vec<_>>().join("; ");
        out.push((EventType::Normal, "Pushed", "Push", note));
        // Someone changed generated files on the system branch: say which were put back.
        if let Some(files) = message.lines().find_map(|l| l.strip_prefix("files rewritten: ")) {
            let note = format!(
                "restored files changed outside ShopSet on branch {}: {files} (commit {}; the hand-made commit stays in history)",
                report.branch,
                short(report.commit.as_deref().unwrap_or_default())
            );
            out.push((EventType::Warning, "GeneratedFilesRestored", "Restore", note));
        }
    }
    if !applied.deleted.is_empty() {
        let note = format!("deleted Applications of removed ShopSets: {}", applied.deleted.join(", "));
        out.push((EventType::Normal, "ApplicationsDeleted", "Prune", note));
    }
    out
}

/// Publishes an Event on the Tier; a failure to publish is logged, never a reconcile error.
async fn publish(recorder: &Recorder, tier: &Tier, type_: EventType, reason: &str, action: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &tier.object_ref(&())).await {
        tracing::warn!(tier = %tier.name_any(), reason, error = %e, "cannot publish an Event");
    }
}
