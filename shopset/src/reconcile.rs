//! The controller's reconcile loop: a Tier is the unit of work. Each reconcile runs the same
//! [`crate::sync::sync_tier`] as `shopctl sync`, applies the Applications, and writes status with
//! server-side apply. Small functions, an error policy with capped backoff, Events.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::{Predicate, PredicateConfig, predicates};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::{Configuration, DeletionPolicy, ShopSet, ShopSetStatus, Tier};
use crate::argocd;
use crate::gitops::{Auth, GitCache};
use crate::manifests::{Inventory, TierInput};
use crate::metrics::{Metrics, TierLabels};
use crate::render::Renderer;
use crate::sync::{Checkpoint, SyncError, SyncOptions, SyncReport, sync_tier};

/// Finalizer that lets a Tier's deletion policy run before the Tier is gone.
pub const FINALIZER: &str = "shopset.dev/cleanup";

/// Why a reconcile failed; each maps to a condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("Secret {name} named by spec.credentials.secretRef: {detail}")]
    Credentials { name: String, detail: String },
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Argo(#[from] argocd::ArgoError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "InvalidSpec",
            Error::Credentials { .. } => "CredentialsMissing",
            Error::Sync(e) => e.reason(),
            Error::Argo(_) => "ApplicationsFailed",
            Error::Kube(_) | Error::Finalizer(_) => "KubernetesUnavailable",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: kube::Client,
    pub cache: Arc<GitCache>,
    pub renderer: Arc<Renderer>,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    last: Mutex<HashMap<ObjectRef<Tier>, Checkpoint>>,
    failures: Mutex<HashMap<ObjectRef<Tier>, u32>>,
    /// The watch caches a reconcile reads its inventory from; set by [`run`].
    stores: std::sync::OnceLock<Stores>,
}

/// What the controller's watches hold: reading the inventory from them instead of listing every
/// ShopSet per reconcile keeps a reconcile's memory and the API server's load independent of how
/// many ShopSets the namespace has.
#[derive(Clone)]
struct Stores {
    tiers: Store<Tier>,
    shopsets: Store<ShopSet>,
    configurations: Store<Configuration>,
    /// True once the ShopSet and Configuration caches hold a complete list (the controller itself
    /// runs no reconcile before the Tier cache does). One task waits on the stores and every
    /// reconcile on this: a store's `wait_until_ready` wakes only its latest waiter, so two
    /// reconciles waiting on it at once could leave one asleep for good.
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Context {
    pub fn new(client: kube::Client, cache: GitCache, renderer: Renderer, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            cache: Arc::new(cache),
            renderer: Arc::new(renderer),
            metrics,
            reporter: Reporter { controller: argocd::FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() },
            last: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            stores: std::sync::OnceLock::new(),
        }
    }
}

/// Runs the controller until `shutdown` resolves. `triggers` carries webhook-driven reconciles.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    triggers: impl futures::Stream<Item = ObjectRef<Tier>> + Send + 'static,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (tiers, shopsets, configurations): (Api<Tier>, Api<ShopSet>, Api<Configuration>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    // Status writes (ours) change neither generation nor finalizers: they trigger no reconcile.
    let changed = predicates::generation.combine(predicates::finalizers);
    let (reader, writer) = reflector::store();
    let tier_events = watcher::watcher(tiers, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(changed, PredicateConfig::default());
    // Not filtered: a deleted ShopSet must trigger its Tier. Our own status writes do too, and
    // end in the cheap "nothing moved" path.
    let (shopset_store, shopset_writer) = reflector::store();
    let shopset_events = watcher::watcher(shopsets, watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(shopset_writer)
        .touched_objects();
    let (configuration_store, configuration_writer) = reflector::store();
    let configuration_events = watcher::watcher(configurations, watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(configuration_writer)
        .touched_objects();
    let controller = Controller::for_stream(tier_events, reader);
    let store = controller.store();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    {
        let (shopsets, configurations) = (shopset_store.clone(), configuration_store.clone());
        tokio::spawn(async move {
            match (shopsets.wait_until_ready().await, configurations.wait_until_ready().await) {
                (Ok(()), Ok(())) => {
                    let _ = ready_tx.send(true);
                }
                (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "a watch cache never filled"),
            }
        });
    }
    let stores = Stores { tiers: store.clone(), shopsets: shopset_store, configurations: configuration_store, ready };
    if ctx.stores.set(stores).is_err() {
        tracing::warn!("the controller's watch caches were set before: this Context already ran a controller");
    }
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .watches_stream(shopset_events, |ss: ShopSet| {
            Some(ObjectRef::new(&ss.spec.tier).within(&ss.namespace().unwrap_or_default()))
        })
        .watches_stream(configuration_events, move |cfg: Configuration| {
            // Any Tier of the namespace may use it; an unaffected Tier's reconcile is a cheap no-op.
            let ns = cfg.namespace().unwrap_or_default();
            store
                .state()
                .into_iter()
                .filter(|t| t.namespace().as_deref() == Some(ns.as_str()))
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(tier = %obj.name, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(err, obj)) => {
                    tracing::warn!(tier = %obj.name, reason = err.reason(), error = %err, "reconcile failed")
                }
                Err(err) => tracing::warn!(error = %err, "controller"),
            }
        })
        .await;
}

/// Reconciles one Tier (through the finalizer, so deletion runs its policy).
pub async fn reconcile(tier: Arc<Tier>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = tier.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Tier> = Api::namespaced(ctx.client.clone(), &ns);
    let started = Instant::now();
    let labels = TierLabels { namespace: ns.clone(), tier: tier.name_any() };
    let result = finalizer(&api, FINALIZER, tier, |event| async {
        match event {
            finalizer::Event::Apply(tier) => apply(tier, ctx.clone()).await,
            finalizer::Event::Cleanup(tier) => cleanup(tier, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics.reconciled(&labels, started.elapsed());
    result
}

/// Backoff on failure: 5 s doubling to 5 minutes.
pub fn error_policy(tier: Arc<Tier>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(&tier.name_any(), err.reason());
    let key = ObjectRef::from_obj(&*tier);
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    Action::requeue(retry_delay(*n))
}

/// The wait after the `failures`-th failure in a row: 5 s, doubling, never more than 5 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.saturating_sub(1).min(6))).min(Duration::from_secs(300))
}

fn interval(tier: &Tier) -> Duration {
    crate::validation::parse_duration(&tier.spec.interval).unwrap_or(Duration::from_secs(60))
}

/// Drops what a reconcile never reads from a cached object: managed fields and annotations
/// (kubectl's last-applied copy alone doubles an object's size).
fn slim<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().clear();
}

/// The inventory of the Tier's namespace, and this tier's problems if any. Read from the watch
/// caches once they hold a complete list: a partial list would render ShopSets away.
async fn load(tier: &Tier, ctx: &Context) -> Result<(Inventory, Vec<String>), Error> {
    let ns = tier.namespace().unwrap_or_else(|| "default".into());
    let stores =
        ctx.stores.get().ok_or_else(|| Error::Finalizer("the controller's watch caches are not running".into()))?;
    stores
        .ready
        .clone()
        .wait_for(|ready| *ready)
        .await
        .map_err(|_| Error::Finalizer("the controller's watch caches stopped before they filled".into()))?;
    let mut inventory = Inventory::default();
    let in_ns = |m: &kube::api::ObjectMeta| m.namespace.as_deref() == Some(ns.as_str());
    let key = |m: &kube::api::ObjectMeta| (ns.clone(), m.name.clone().unwrap_or_default());
    for t in stores.tiers.state_filter(|t| in_ns(&t.metadata)) {
        inventory.tiers.insert(key(&t.metadata), (*t).clone());
    }
    for s in stores.shopsets.state_filter(|s| in_ns(&s.metadata)) {
        inventory.shopsets.insert(key(&s.metadata), (*s).clone());
    }
    for c in stores.configurations.state_filter(|c| in_ns(&c.metadata)) {
        inventory.configurations.insert(key(&c.metadata), (*c).clone());
    }
    let name = tier.name_any();
    let mine: BTreeSet<String> = std::iter::once(format!("Tier/{name}"))
        .chain(inventory.shopsets.values().filter(|s| s.spec.tier == name).map(|s| format!("ShopSet/{}", s.name_any())))
        .chain(
            inventory
                .shopsets
                .values()
                .filter(|s| s.spec.tier == name)
                .map(|s| format!("Configuration/{}", s.spec.configuration)),
        )
        .collect();
    let problems = match inventory.check() {
        Ok(()) => Vec::new(),
        Err(p) => p.0.into_iter().filter(|i| mine.contains(&i.resource)).map(|i| i.to_string()).collect(),
    };
    Ok((inventory, problems))
}

async fn credentials(tier: &Tier, client: &kube::Client) -> Result<Auth, Error> {
    let Some(creds) = &tier.spec.credentials else { return Ok(Auth::default()) };
    let ns = tier.namespace().unwrap_or_else(|| "default".into());
    let name = creds.secret_ref.name.clone();
    let secret = match Api::<Secret>::namespaced(client.clone(), &ns).get_opt(&name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(Error::Credentials { name, detail: format!("not found in namespace {ns}") }),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(Error::Credentials {
                name,
                detail: format!(
                    "the controller may not read Secrets in namespace {ns}; fix: kubectl apply -n {ns} -f deploy/tenant/credentials-rolebinding.yaml"
                ),
            });
        }
        Err(e) => return Err(e.into()),
    };
    Auth::from_secret(&secret).map_err(|detail| Error::Credentials { name, detail })
}

async fn apply(tier: Arc<Tier>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*tier);
    let result = sync_and_apply(&tier, &ctx).await;
    match &result {
        Ok(_) => {
            ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        }
        Err(err) => {
            // Status and an Event say why; the error policy requeues with backoff.
            let _ = write_failure(&tier, &ctx, err).await;
        }
    }
    result.map(|_| Action::requeue(interval(&tier)))
}

async fn sync_and_apply(tier: &Tier, ctx: &Context) -> Result<(), Error> {
    let key = ObjectRef::from_obj(tier);
    let (inventory, problems) = load(tier, ctx).await?;
    if !problems.is_empty() {
        return Err(Error::Invalid(problems.join("; ")));
    }
    let input = inventory.tier_input(&tier.name_any()).map_err(|p| Error::Invalid(p.to_string()))?;
    let auth = credentials(tier, &ctx.client).await?;

    // Poll fast path: one ls-remote per repository, and nothing else when nothing moved.
    let last = ctx.last.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    if let Some(last) = last {
        let (cache, auth2, input2) = (ctx.cache.clone(), auth.clone(), input.clone());
        let unchanged = tokio::task::spawn_blocking(move || last.unchanged(&cache, &auth2, &input2))
            .await
            .map_err(|e| Error::Finalizer(format!("sync task: {e}")))??;
        if unchanged {
            tracing::debug!(tier = %tier.name_any(), "nothing moved");
            return Ok(());
        }
    }

    let (cache, renderer, input2) = (ctx.cache.clone(), ctx.renderer.clone(), input.clone());
    let opts = SyncOptions { before_push: fault_hook(), ..SyncOptions::default() };
    let report = tokio::task::spawn_blocking(move || sync_tier(&cache, &auth, &input2, &renderer, &opts))
        .await
        .map_err(|e| Error::Finalizer(format!("sync task: {e}")))??;
    let labels = TierLabels { namespace: tier.namespace().unwrap_or_default(), tier: tier.name_any() };
    if report.commit.is_some() {
        ctx.metrics.pushes.get_or_create(&labels).inc();
    }

    // The fault points are those of a sync that pushed a change; a no-op sync passes them.
    let pushed = report.commit.is_some();
    if pushed {
        fault("after-push");
    }
    let apps = argocd::applications(&report.tree)?;
    let (name, branch) = (tier.name_any(), tier.branch());
    let owner = argocd::Owner {
        tier: &name,
        repo_url: &tier.spec.system.url,
        branch: &branch,
        namespace: &tier.spec.argocd.namespace,
    };
    let applied = argocd::apply(&ctx.client, &owner, &apps).await?;
    if pushed {
        fault("before-status");
    }
    write_success(tier, ctx, &input, &report, &applied).await?;
    ctx.metrics.synced(&labels);
    ctx.last.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Checkpoint::after(&input, &report));
    Ok(())
}

/// Fault injection for the crash tests: `SHOPSET_FAULT=<point>` makes the process abort (as a
/// SIGKILL would stop it) at that point of a sync that pushes a change: `before-push` (commit written, not pushed),
/// `after-push` (pushed, Applications not applied), `before-status` (applied, status not written).
fn fault(point: &str) {
    if std::env::var("SHOPSET_FAULT").is_ok_and(|f| f == point) {
        tracing::error!(point, "SHOPSET_FAULT: aborting");
        std::process::abort();
    }
}

fn fault_hook() -> Option<crate::sync::PushHook> {
    std::env::var("SHOPSET_FAULT")
        .is_ok_and(|f| f == "before-push")
        .then(|| Arc::new(|_| fault("before-push")) as crate::sync::PushHook)
}

async fn cleanup(tier: Arc<Tier>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Branches are never deleted: history is data.
    if tier.spec.deletion_policy == DeletionPolicy::Delete {
        let (name, branch) = (tier.name_any(), tier.branch());
        let owner = argocd::Owner {
            tier: &name,
            repo_url: &tier.spec.system.url,
            branch: &branch,
            namespace: &tier.spec.argocd.namespace,
        };
        let deleted = argocd::delete_all(&ctx.client, &owner).await?;
        tracing::info!(tier = %tier.name_any(), ?deleted, "deleted Applications (deletionPolicy: Delete)");
    }
    ctx.last.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from_obj(&*tier));
    Ok(Action::await_change())
}

fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status does.
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

async fn patch_tier_status(tier: &Tier, ctx: &Context, status: serde_json::Value) -> Result<(), Error> {
    let api: Api<Tier> = Api::namespaced(ctx.client.clone(), &tier.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": crate::api::API_VERSION, "kind": "Tier", "status": status });
    api.patch_status(&tier.name_any(), &PatchParams::apply(argocd::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

async fn write_success(
    tier: &Tier,
    ctx: &Context,
    input: &TierInput,
    report: &SyncReport,
    applied: &argocd::Applied,
) -> Result<(), Error> {
    let old = tier.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = tier.metadata.generation;
    let head = report.head.clone().unwrap_or_default();
    let pushed_msg = match &report.commit {
        Some(c) => format!("pushed {} to {}", &c[..7.min(c.len())], report.branch),
        None => format!("{} already at {}", report.branch, &head[..7.min(head.len())]),
    };
    let conditions = vec![
        condition(
            &old,
            "Ready",
            true,
            "Synced",
            &format!(
                "system branch {} at {}; {} Applications",
                report.branch,
                &head[..7.min(head.len())],
                applied.applied.len()
            ),
            generation,
        ),
        condition(
            &old,
            "Rendered",
            true,
            "Rendered",
            &format!("{} ShopSets rendered", input.shopsets.len()),
            generation,
        ),
        condition(
            &old,
            "Pushed",
            true,
            if report.commit.is_some() { "Pushed" } else { "UpToDate" },
            &pushed_msg,
            generation,
        ),
    ];
    patch_tier_status(
        tier,
        ctx,
        json!({
            "conditions": conditions,
            "observedGeneration": generation,
            "branch": report.branch,
            "appCommit": report.pins.app,
            "configurationCommits": report.pins.configurations,
            "systemCommit": report.head,
            "lastSyncTime": Time(Timestamp::now()),
        }),
    )
    .await?;
    // A ShopSet's status describes its own generation, not the branch head (the Tier's status has
    // that): it is written only when it changes, so a bump costs no write per ShopSet.
    for ss in &input.shopsets {
        let name = ss.name_any();
        let old = ss.status.clone().unwrap_or_default();
        let status = ShopSetStatus {
            conditions: vec![condition(
                &old.conditions,
                "Ready",
                true,
                "Rendered",
                &format!("rendered at shopsets/{name} on branch {}", report.branch),
                ss.metadata.generation,
            )],
            observed_generation: ss.metadata.generation,
            shop_count: Some(ss.spec.shops.len() as i64),
            rendered_path: Some(format!("shopsets/{name}")),
            application: Some(format!("{}/{name}", tier.spec.argocd.namespace)),
            ..old.clone()
        };
        if status == old {
            continue;
        }
        let api: Api<ShopSet> = Api::namespaced(ctx.client.clone(), &ss.namespace().unwrap_or_default());
        let patch = json!({ "apiVersion": crate::api::API_VERSION, "kind": "ShopSet", "status": status });
        api.patch_status(&name, &PatchParams::apply(argocd::FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = tier.object_ref(&());
    for b in report.branches.iter().filter(|b| b.created_from.is_some()) {
        let note = format!(
            "created branch {} in the {} repository from {}",
            b.branch,
            b.repository,
            b.created_from.clone().unwrap_or_default()
        );
        let _ = recorder
            .publish(
                &Event {
                    type_: EventType::Normal,
                    reason: "BranchCreated".into(),
                    note: Some(note),
                    action: "Sync".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
    }
    if let Some(message) = &report.message {
        let note: String = message.lines().filter(|l| !l.is_empty()).take(6).collect::<Vec<_>>().join("; ");
        let _ = recorder
            .publish(
                &Event {
                    type_: EventType::Normal,
                    reason: "Pushed".into(),
                    note: Some(note.chars().take(1000).collect()),
                    action: "Push".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
        // Someone changed generated files on the system branch: say which were put back.
        if let Some(files) = message.lines().find_map(|l| l.strip_prefix("files rewritten: ")) {
            let commit = report.commit.as_deref().unwrap_or_default();
            let note = format!(
                "restored files changed outside ShopSet on branch {}: {files} (commit {}; the hand-made commit stays in history)",
                report.branch,
                &commit[..7.min(commit.len())]
            );
            let _ = recorder
                .publish(
                    &Event {
                        type_: EventType::Warning,
                        reason: "GeneratedFilesRestored".into(),
                        note: Some(note.chars().take(1000).collect()),
                        action: "Restore".into(),
                        secondary: None,
                    },
                    &reference,
                )
                .await;
        }
    }
    if !applied.deleted.is_empty() {
        let note = format!("deleted Applications of removed ShopSets: {}", applied.deleted.join(", "));
        let _ = recorder
            .publish(
                &Event {
                    type_: EventType::Normal,
                    reason: "ApplicationsDeleted".into(),
                    note: Some(note),
                    action: "Prune".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
    }
    Ok(())
}

async fn write_failure(tier: &Tier, ctx: &Context, err: &Error) -> Result<(), Error> {
    let old = tier.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = tier.metadata.generation;
    let reason = err.reason();
    let message = err.to_string();
    let mut conditions = vec![condition(&old, "Ready", false, reason, &message, generation)];
    match err {
        Error::Invalid(_) => conditions.push(condition(&old, "Rendered", false, reason, &message, generation)),
        Error::Sync(SyncError::Render(_)) => {
            conditions.push(condition(&old, "Rendered", false, reason, &message, generation))
        }
        Error::Sync(_) => conditions.push(condition(&old, "Pushed", false, reason, &message, generation)),
        _ => {}
    }
    patch_tier_status(tier, ctx, json!({ "conditions": conditions, "observedGeneration": generation })).await?;
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let _ = recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(message.chars().take(1000).collect()),
                action: "Sync".into(),
                secondary: None,
            },
            &tier.object_ref(&()),
        )
        .await;
    Ok(())
}

/// The Tiers of `tiers` that a push to `branch` of one of `urls` concerns: their app repository,
/// or a Configuration of their namespace.
pub fn tiers_for_push(
    push: &crate::webhook::Push,
    tiers: &[Arc<Tier>],
    configurations: &[Configuration],
) -> Vec<ObjectRef<Tier>> {
    tiers
        .iter()
        .filter(|t| {
            let branch = t.branch();
            crate::webhook::matches(push, &t.spec.app.url, &branch)
                || configurations
                    .iter()
                    .filter(|c| c.namespace() == t.namespace())
                    .any(|c| crate::webhook::matches(push, &c.spec.url, &branch))
        })
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_five_seconds_and_stop_growing_at_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(300));
    }
}
