//! The one place that writes a Tier's status, its ShopSets' status and its Events.
//!
//! Conditions follow Flux's kustomize-controller: `Ready` says whether the last reconcile
//! succeeded; `Reconciling` is True while a new generation is being worked on, or while a transient
//! failure is retried; `Stalled` is True when only a change of the input can help (an invalid spec,
//! a template that does not render). `Rendered` and `Pushed` say which step failed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;
use shopset_core::api::{API_VERSION, ShopSet, ShopSetStatus, Tier};
use shopset_core::manifests::TierInput;
use shopset_core::revision::short;
use shopset_git::sync::{SyncError, SyncReport};

use crate::argocd::{self, AppState, Applied};
use crate::auto_promotion::{self, Promotable};
use crate::error::Error;

/// Where a reconcile's Events go. A failure repeated with the same reason joins one Event's series,
/// as Kubernetes aggregates repeated events (a retrying Tier does not flood its namespace); each
/// push, restore or prune is an Event of its own, since its note says what happened that time (a
/// series keeps only its first note).
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
    failures: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self { failures: Recorder::new(client.clone(), reporter.clone()), client, reporter }
    }

    /// Publishes an Event on the Tier; a failure to publish is logged, never a reconcile error.
    async fn publish(&self, tier: &Tier, aggregate: bool, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        let fresh;
        let recorder = if aggregate {
            &self.failures
        } else {
            fresh = Recorder::new(self.client.clone(), self.reporter.clone());
            &fresh
        };
        if let Err(e) = recorder.publish(&event, &tier.object_ref(&())).await {
            tracing::warn!(tier = %tier.name_any(), reason, error = %crate::error::api_message(&e), "cannot publish an Event");
        }
    }
}

/// What a reconcile is reporting.
pub enum Outcome<'a> {
    /// A new generation is being worked on.
    Started,
    /// Synced and applied; `apps` is what Argo CD reports of the tier's Applications, `promotable`
    /// what automatic promotion found (None: the tier has none).
    Synced {
        input: &'a TierInput,
        report: &'a SyncReport,
        applied: &'a Applied,
        apps: &'a [AppState],
        promotable: Option<&'a Promotable>,
    },
    /// Nothing moved in git: only what Argo CD reports (and automatic promotion finds) may have
    /// changed. Written only when it did.
    Observed { input: &'a TierInput, head: Option<&'a str>, apps: &'a [AppState], promotable: Option<&'a Promotable> },
    /// Failed; the error policy retries unless the error is terminal.
    Failed(&'a Error),
}

/// The `Deployed` condition: how many of the tier's Applications run their ShopSet at the system
/// branch's head, judged by [`argocd::problems`] (the promotion gate's verdict). True when all do.
pub fn deployed(apps: &[AppState], branch: &str, head: Option<&str>) -> (bool, &'static str, String) {
    let Some(head) = head else {
        return (false, "NoSystemCommit", format!("branch {branch} has no commit yet"));
    };
    let mut first = None;
    let mut ok = 0;
    for app in apps {
        match argocd::problems(app, branch, Some(head)).first() {
            None => ok += 1,
            Some(problem) if first.is_none() => first = Some(format!("{}: {problem}", app.application)),
            Some(_) => {}
        }
    }
    let mut message = format!("{ok}/{} at {}", apps.len(), short(head));
    match first {
        None => (true, "Deployed", message),
        Some(why) => {
            message.push_str(&format!("; {why}"));
            (false, "Deploying", message)
        }
    }
}

/// The Applications the `Deployed` condition judges: as for the promotion gate, not those of
/// ShopSets wholly in maintenance (their automated sync is off on purpose).
pub fn judged(input: &TierInput, apps: &[AppState]) -> Vec<AppState> {
    apps.iter()
        .filter(|a| !input.shopsets.iter().any(|s| s.name_any() == a.shopset && s.wholly_in_maintenance()))
        .cloned()
        .collect()
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
        Outcome::Synced { input, report, applied, apps, promotable } => {
            let head = report.head.as_deref().unwrap_or_default();
            let pushed = match &report.commit {
                Some(commit) => format!("pushed {} to {}", short(commit), report.branch),
                None => format!("{} already at {}", report.branch, short(head)),
            };
            let ready = format!(
                "system branch {} at {}; {} Applications",
                report.branch,
                short(head),
                applied.applied.len() + applied.in_place.len()
            );
            let (ok, reason, message) = deployed(&judged(input, apps), &report.branch, report.head.as_deref());
            let mut out = vec![
                c("Ready", true, "Synced", &ready),
                c("Rendered", true, "Rendered", &format!("{} ShopSets rendered", input.shopsets.len())),
                c("Pushed", true, if report.commit.is_some() { "Pushed" } else { "UpToDate" }, &pushed),
                c("Deployed", ok, reason, &message),
            ];
            out.extend(promotable.map(|p| c(auto_promotion::CONDITION, p.ok, p.reason, &p.message)));
            out
        }
        Outcome::Observed { input, head, apps, promotable } => {
            let (ok, reason, message) = deployed(&judged(input, apps), &input.tier.branch(), *head);
            let mut out: Vec<Condition> =
                old.iter().filter(|c| c.type_ != "Deployed" && c.type_ != auto_promotion::CONDITION).cloned().collect();
            out.push(c("Deployed", ok, reason, &message));
            out.extend(promotable.map(|p| c(auto_promotion::CONDITION, p.ok, p.reason, &p.message)));
            out
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
            // What Argo CD runs, and whether it may be promoted into, do not change because this
            // reconcile failed.
            out.extend(old.iter().filter(|c| c.type_ == "Deployed" || c.type_ == auto_promotion::CONDITION).cloned());
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
pub async fn write(client: &kube::Client, events: &Events, tier: &Tier, outcome: &Outcome<'_>) -> Result<(), Error> {
    let old = tier.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = tier.metadata.generation;
    // Server-side apply removes what this field manager applied before and leaves out now: the
    // whole status is written every time, carried over where this outcome does not change it.
    let mut status = tier.status.clone().unwrap_or_default();
    status.conditions = conditions(&old, generation, outcome);
    // Argo CD's reports come often and mostly change nothing: write only what changed.
    let unchanged = matches!(outcome, Outcome::Observed { .. }) && status.conditions == old;
    match outcome {
        Outcome::Started | Outcome::Observed { .. } => {}
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
    if !unchanged {
        let api: Api<Tier> = Api::namespaced(client.clone(), &tier.namespace().unwrap_or_default());
        let patch = json!({ "apiVersion": API_VERSION, "kind": "Tier", "status": status });
        api.patch_status(&tier.name_any(), &PatchParams::apply(argocd::FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    match outcome {
        Outcome::Started => {}
        Outcome::Observed { input, apps, promotable, .. } => {
            write_shopsets(client, tier, input, apps).await?;
            promotion_events(events, tier, *promotable).await;
        }
        Outcome::Failed(err) => {
            let note = err.to_string();
            events.publish(tier, true, EventType::Warning, err.reason(), "Sync", note).await;
        }
        Outcome::Synced { input, applied, apps, report, promotable } => {
            write_shopsets(client, tier, input, apps).await?;
            promotion_events(events, tier, *promotable).await;
            for (type_, reason, action, note) in success_events(report, applied) {
                events.publish(tier, false, type_, reason, action, note).await;
            }
        }
    }
    Ok(())
}

/// An automatic promotion done is an Event of its own; one that failed joins the failures' series.
async fn promotion_events(events: &Events, tier: &Tier, promotable: Option<&Promotable>) {
    match promotable {
        Some(Promotable { announce: Some(reason), message, .. }) => {
            events.publish(tier, false, EventType::Normal, reason, "Promote", message.clone()).await
        }
        Some(p) if p.reason == "PromotionFailed" => {
            events.publish(tier, true, EventType::Warning, p.reason, "Promote", p.message.clone()).await
        }
        _ => {}
    }
}

/// A ShopSet's status describes its own generation and what Argo CD reports of its Application,
/// not the branch head (the Tier's status has that): it is written only when it changes, so a bump
/// costs a write per ShopSet only when its Application follows.
async fn write_shopsets(client: &kube::Client, tier: &Tier, input: &TierInput, apps: &[AppState]) -> Result<(), Error> {
    for ss in &input.shopsets {
        let name = ss.name_any();
        let old = ss.status.clone().unwrap_or_default();
        let rendered = format!("rendered at shopsets/{name} on branch {}", tier.branch());
        let app = apps.iter().find(|a| a.shopset == name && a.exists);
        let status = ShopSetStatus {
            sync_status: app.and_then(|a| a.sync.clone()),
            health_status: app.and_then(|a| a.health.clone()),
            revision: app.and_then(|a| a.revision.clone()),
            conditions: vec![condition(&old.conditions, "Ready", true, "Rendered", &rendered, ss.metadata.generation)],
            observed_generation: ss.metadata.generation,
            shop_count: Some(ss.spec.shops.len() as i64),
            rendered_path: Some(format!("shopsets/{name}")),
            application: Some(format!("{}/{name}", tier.spec.argocd.namespace)),
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
pub fn success_events(report: &SyncReport, applied: &Applied) -> Vec<(EventType, &'static str, &'static str, String)> {
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
        let files: Vec<&str> = message
            .lines()
            .filter_map(|l| ["restored: ", "files rewritten: ", "dropped: "].iter().find_map(|p| l.strip_prefix(p)))
            .collect();
        if !files.is_empty() {
            let files = files.join(", ");
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

/// Says that Applications changed in the cluster (`drifted`: deleted or edited) were put back.
pub async fn restored(events: &Events, tier: &Tier, drifted: &[String], applied: &Applied) {
    let note = format!(
        "put back Applications deleted or changed outside ShopSet: {} (in {})",
        drifted.join(", "),
        tier.spec.argocd.namespace
    );
    tracing::info!(tier = %tier.name_any(), ?drifted, applied = applied.applied.len(), "Applications put back");
    events.publish(tier, false, EventType::Warning, "ApplicationsRestored", "Restore", note).await;
}

#[cfg(test)]
mod tests {
    //! The status writer against a mocked API server: what it sends for each outcome.

    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::Value;

    use super::*;

    fn tier(conditions: &[(&str, &str)], generation: i64, observed: i64) -> Tier {
        let mut tier: Tier = serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": "Tier",
            "metadata": {"name": "tier-0", "namespace": "shop", "generation": generation, "uid": "u-1"},
            "spec": {"app": {"url": "https://git.example.com/app.git"}, "system": {"url": "https://git.example.com/system.git"}},
        }))
        .unwrap();
        let old = conditions.iter().map(|(t, s)| condition(&[], t, *s == "True", "Before", "before", Some(observed)));
        tier.status = Some(shopset_core::api::TierStatus {
            conditions: old.collect(),
            observed_generation: Some(observed),
            app_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            ..Default::default()
        });
        tier
    }

    /// Runs `write` against a mock API server; returns the status patch's body and the Event's.
    async fn written(tier: &Tier, outcome: &Outcome<'_>, expect_event: bool) -> (Value, Option<Value>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let events = Events::new(client.clone(), Reporter { controller: "test".into(), instance: None });
        let answer = serde_json::to_vec(tier).unwrap();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a status patch");
            assert_eq!(request.method(), Method::PATCH);
            assert_eq!(request.uri().path(), "/apis/shopset.dev/v1alpha1/namespaces/shop/tiers/tier-0/status");
            assert!(request.uri().query().unwrap_or_default().contains("fieldManager=shopset-controller"));
            let patch: Value = serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
            send.send_response(Response::builder().body(Body::from(answer)).unwrap());
            let mut event = None;
            if expect_event {
                let (request, send) = handle.next_request().await.expect("an Event");
                assert_eq!(request.uri().path(), "/apis/events.k8s.io/v1/namespaces/shop/events");
                let body = request.into_body().collect_bytes().await.unwrap();
                send.send_response(Response::builder().body(Body::from(body.to_vec())).unwrap());
                event = Some(serde_json::from_slice(&body).unwrap());
            }
            (patch, event)
        });
        write(&client, &events, tier, outcome).await.expect("status written");
        server.await.unwrap()
    }

    fn find<'a>(patch: &'a Value, type_: &str) -> Option<&'a Value> {
        patch["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_)
    }

    #[tokio::test]
    async fn an_invalid_spec_stalls_and_says_why_without_a_debug_dump() {
        let tier = tier(&[("Ready", "True")], 2, 1);
        let err = Error::Invalid("ShopSet/eu: spec.shops[0]: \"A B\" is not a shop ID; fix: use letters".into());
        let (patch, event) = written(&tier, &Outcome::Failed(&err), true).await;
        let ready = find(&patch, "Ready").unwrap();
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
        assert_eq!(find(&patch, "Stalled").unwrap()["status"], "True");
        assert!(find(&patch, "Reconciling").is_none(), "a stalled Tier is not reconciling: {patch}");
        assert_eq!(patch["status"]["observedGeneration"], 2);
        // What the last success found stays: the APP column does not blank on a failure.
        assert_eq!(patch["status"]["appCommit"], "0123456789abcdef0123456789abcdef01234567");
        let event = event.unwrap();
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("InvalidSpec")));
        assert!(event["note"].as_str().unwrap().contains("spec.shops[0]"), "{event}");
    }

    #[tokio::test]
    async fn a_transient_failure_keeps_reconciling_with_retry() {
        let tier = tier(&[("Ready", "True")], 1, 1);
        let err = Error::Kube("the server is currently unable to handle the request".into());
        let (patch, _) = written(&tier, &Outcome::Failed(&err), true).await;
        assert_eq!(find(&patch, "Ready").unwrap()["reason"], "KubernetesUnavailable");
        let reconciling = find(&patch, "Reconciling").unwrap();
        assert_eq!(
            (reconciling["status"].as_str(), reconciling["reason"].as_str()),
            (Some("True"), Some("ProgressingWithRetry"))
        );
        assert!(find(&patch, "Stalled").is_none(), "{patch}");
    }

    #[tokio::test]
    async fn a_new_generation_is_reconciling_and_keeps_the_last_verdict() {
        let tier = tier(&[("Ready", "True"), ("Pushed", "True")], 3, 2);
        let (patch, event) = written(&tier, &Outcome::Started, false).await;
        assert!(event.is_none());
        let reconciling = find(&patch, "Reconciling").unwrap();
        assert_eq!(
            (reconciling["status"].as_str(), reconciling["reason"].as_str()),
            (Some("True"), Some("Progressing"))
        );
        assert_eq!(
            find(&patch, "Ready").unwrap()["reason"],
            "Before",
            "Ready still says what the last reconcile found"
        );
        assert_eq!(patch["status"]["observedGeneration"], 2, "generation 3 is not observed yet");
    }

    #[test]
    fn a_success_clears_reconciling_and_stalled() {
        let old = tier(&[("Ready", "False"), ("Stalled", "True"), ("Reconciling", "True")], 2, 1);
        let input: TierInput = TierInput { tier: old.clone(), from: None, configurations: vec![], shopsets: vec![] };
        let report = SyncReport {
            tier: "tier-0".into(),
            branch: "tier-0".into(),
            dry_run: false,
            branches: vec![],
            pins: Default::default(),
            previous: None,
            head: Some("89abcdef89abcdef89abcdef89abcdef89abcdef".into()),
            commit: None,
            message: None,
            attempts: 0,
            shopsets: Default::default(),
            diff: None,
            tree: Default::default(),
            stages: Vec::new(),
        };
        let outcome = Outcome::Synced {
            input: &input,
            report: &report,
            applied: &Applied::default(),
            apps: &[],
            promotable: None,
        };
        let after = conditions(&old.status.unwrap().conditions, Some(2), &outcome);
        let types: Vec<&str> = after.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Rendered", "Pushed", "Deployed"]);
        assert_eq!(after[0].message, "system branch tier-0 at 89abcde; 0 Applications");
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let old = tier(&[("Ready", "False")], 1, 1);
        let old = &old.status.unwrap().conditions;
        let transition = old[0].last_transition_time.clone();
        let failed = conditions(old, Some(2), &Outcome::Failed(&Error::Invalid("x".into())));
        assert_eq!(failed[0].last_transition_time, transition, "still False: same transition time");
    }

    fn app(name: &str, sync: &str, health: &str, revision: &str) -> AppState {
        AppState {
            shopset: name.into(),
            application: name.into(),
            exists: true,
            sync: Some(sync.into()),
            health: Some(health.into()),
            revision: Some(revision.into()),
            target_revision: Some("tier-0".into()),
            conditions: Vec::new(),
        }
    }

    #[test]
    fn deployed_counts_the_applications_synced_and_healthy_at_the_head() {
        let head = "1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d";
        let old = "0000000000000000000000000000000000000000";
        let all = [app("eu", "Synced", "Healthy", head), app("us", "Synced", "Healthy", head)];
        assert_eq!(deployed(&all, "tier-0", Some(head)), (true, "Deployed", "2/2 at 1a2b3c4".into()));
        // Synced and Healthy at the previous commit is not deployed: the bump is not out yet.
        let behind = [app("eu", "Synced", "Healthy", head), app("us", "Synced", "Healthy", old)];
        assert_eq!(
            deployed(&behind, "tier-0", Some(head)),
            (false, "Deploying", "1/2 at 1a2b3c4; us: it runs revision 0000000 instead of 1a2b3c4".into())
        );
        let missing = [AppState { shopset: "eu".into(), application: "eu".into(), ..AppState::default() }];
        assert_eq!(
            deployed(&missing, "tier-0", Some(head)),
            (false, "Deploying", "0/1 at 1a2b3c4; eu: it does not exist".into())
        );
        assert!(!deployed(&all, "tier-0", None).0, "no system commit, nothing deployed");
    }

    #[test]
    fn deployed_passes_over_shopsets_wholly_in_maintenance() {
        let head = "1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d";
        let shopset = |name: &str, shops: Option<Vec<String>>| {
            let mut ss: ShopSet = serde_json::from_value(json!({
                "apiVersion": API_VERSION, "kind": "ShopSet", "metadata": {"name": name},
                "spec": {"tier": "tier-0", "configuration": "c", "shops": ["a", "b"]},
            }))
            .unwrap();
            ss.spec.maintenance = shops.map(|shops| shopset_core::api::Maintenance {
                reason: "r".into(),
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
                shops,
            });
            ss
        };
        let input = |eu| TierInput {
            tier: tier(&[], 1, 1),
            from: None,
            configurations: Vec::new(),
            shopsets: vec![std::sync::Arc::new(shopset("eu", eu)), std::sync::Arc::new(shopset("us", None))],
        };
        let apps = [app("eu", "OutOfSync", "Healthy", head), app("us", "Synced", "Healthy", head)];
        let whole = input(Some(Vec::new()));
        assert_eq!(deployed(&judged(&whole, &apps), "tier-0", Some(head)), (true, "Deployed", "1/1 at 1a2b3c4".into()));
        let part = input(Some(vec!["a".into()]));
        assert!(!deployed(&judged(&part, &apps), "tier-0", Some(head)).0, "single shops: still judged");
        assert!(!deployed(&judged(&input(None), &apps), "tier-0", Some(head)).0);
    }

    #[test]
    fn an_observation_changes_only_deployed_and_a_failure_keeps_it() {
        let head = "1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d";
        let old = tier(&[("Ready", "True"), ("Pushed", "True")], 1, 1);
        let input = TierInput { tier: old.clone(), from: None, configurations: vec![], shopsets: vec![] };
        let apps = [app("eu", "Synced", "Healthy", head)];
        let old = old.status.unwrap().conditions;
        let observed = conditions(
            &old,
            Some(1),
            &Outcome::Observed { input: &input, head: Some(head), apps: &apps, promotable: None },
        );
        let types: Vec<&str> = observed.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Pushed", "Deployed"]);
        assert_eq!(observed[..2], old[..], "Ready and Pushed as they were");
        let again = conditions(
            &observed,
            Some(1),
            &Outcome::Observed { input: &input, head: Some(head), apps: &apps, promotable: None },
        );
        assert_eq!(again, observed, "the same report: nothing to write");
        let failed = conditions(&observed, Some(1), &Outcome::Failed(&Error::Kube("down".into())));
        assert_eq!(failed.iter().find(|c| c.type_ == "Deployed"), observed.last(), "{failed:?}");
    }

    #[test]
    fn automatic_promotion_says_what_it_found_in_promotable_and_a_failure_keeps_it() {
        let head = "1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d1a2b3c4d";
        let old = tier(&[("Ready", "True"), ("Promotable", "False")], 1, 1);
        let input = TierInput { tier: old.clone(), from: None, configurations: vec![], shopsets: vec![] };
        let old = old.status.unwrap().conditions;
        let waiting = Promotable {
            ok: false,
            reason: "Waiting",
            message: "app 1a2b3c4 waits: tier-0 has been Healthy for 5m of 30m".into(),
            look_again: None,
            announce: None,
            why: None,
        };
        let observed = Outcome::Observed { input: &input, head: Some(head), apps: &[], promotable: Some(&waiting) };
        let now = conditions(&old, Some(1), &observed);
        let promotable: Vec<&Condition> = now.iter().filter(|c| c.type_ == "Promotable").collect();
        assert_eq!(promotable.len(), 1, "one Promotable condition: {now:?}");
        assert_eq!((promotable[0].reason.as_str(), promotable[0].status.as_str()), ("Waiting", "False"));
        assert!(promotable[0].message.contains("5m of 30m"));
        let failed = conditions(&now, Some(1), &Outcome::Failed(&Error::Kube("down".into())));
        assert_eq!(failed.iter().find(|c| c.type_ == "Promotable"), Some(promotable[0]), "kept through a failure");
        // A tier whose automatic promotion is turned off loses the condition at its next observation.
        let off = Outcome::Observed { input: &input, head: Some(head), apps: &[], promotable: None };
        assert!(conditions(&now, Some(1), &off).iter().all(|c| c.type_ != "Promotable"));
    }
}
