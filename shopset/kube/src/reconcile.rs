//! The controller's reconcile loop, after kube-rs's controller-rs: a Tier is the unit of work; a
//! reconcile runs the same [`shopset_git::sync::sync_tier`] as `shopctl sync`, applies the
//! Applications, and hands the outcome to [`crate::status`], the one place that writes status and
//! Events. Errors requeue with capped backoff and jitter; terminal ones stall until the input changes.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::{Predicate, PredicateConfig, predicates};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use shopset_core::api::{Configuration, DeletionPolicy, ShopSet, Tier};
use shopset_core::manifests::Inventory;
use shopset_core::render::Renderer;
use shopset_git::gitops::GitCache;
use shopset_git::sync::{Checkpoint, SyncOptions, sync_tier};

pub use crate::error::Error;
use crate::health::Health;
use crate::metrics::{Metrics, TierLabels};
use crate::status::{self, Events, Outcome};
use crate::{argocd, auto_promotion, credentials, repo_creds, tenancy};

/// Finalizer that lets a Tier's deletion policy run before the Tier is gone.
pub const FINALIZER: &str = "shopset.dev/cleanup";

/// Shared by every reconcile.
pub struct Context {
    pub client: kube::Client,
    pub cache: Arc<GitCache>,
    pub renderer: Arc<Renderer>,
    pub metrics: Arc<Metrics>,
    /// Where every reconcile's Events go (its Recorder lives here, as in controller-rs).
    pub events: Events,
    /// How the controller deals with Argo CD ([`Context::with_argocd`]).
    pub argocd: ArgoCdSettings,
    /// Whether Tiers may name local repositories (`--allow-local-urls`: tests and local demos).
    pub allow_local_urls: bool,
    /// Where automatic promotions by pull request talk to GitHub (`--github-url`,
    /// `--github-token-file`); None: such a tier waits, saying so.
    pub github: Option<shopset_git::github::GitHubAccess>,
    /// Watch caches synced and reconciles running, for the probes.
    pub health: Arc<Health>,
    last: Mutex<HashMap<ObjectRef<Tier>, Last>>,
    failures: Mutex<HashMap<ObjectRef<Tier>, u32>>,
    /// The names of the Argo CD credential templates last written for each tier (none: not since
    /// this process started, so the cluster may hold stale ones to prune).
    repo_creds: Mutex<HashMap<ObjectRef<Tier>, BTreeSet<String>>>,
    /// The watch caches a reconcile reads its inventory from; set by [`run`].
    stores: std::sync::OnceLock<Stores>,
}

/// What the last successful sync of a tier left: enough to tell, without a render, that nothing
/// moved in git and whether the cluster still has the Applications it applied.
#[derive(Clone)]
struct Last {
    checkpoint: Checkpoint,
    /// The Applications as rendered and applied.
    apps: Vec<DynamicObject>,
    /// The system branch's head after the sync.
    head: Option<String>,
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
    /// The Applications the controller manages, in every namespace.
    applications: Store<DynamicObject>,
    /// True once `applications` holds a complete list; never without Argo CD's CRD.
    applications_ready: tokio::sync::watch::Receiver<bool>,
}

impl Context {
    pub fn new(client: kube::Client, cache: GitCache, renderer: Renderer, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter { controller: argocd::FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            events: Events::new(client.clone(), reporter),
            client,
            cache: Arc::new(cache),
            renderer: Arc::new(renderer),
            metrics,
            argocd: ArgoCdSettings::default(),
            allow_local_urls: false,
            github: None,
            health: Arc::default(),
            last: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            repo_creds: Mutex::new(HashMap::new()),
            stores: std::sync::OnceLock::new(),
        }
    }

    /// This context, accepting local repositories (`file://` URLs, paths) or not (the default).
    pub fn with_local_urls(mut self, allow: bool) -> Self {
        self.allow_local_urls = allow;
        self
    }

    /// This context, opening and merging automatic promotions' pull requests through `github`.
    pub fn with_github(mut self, github: Option<shopset_git::github::GitHubAccess>) -> Self {
        self.github = github;
        self
    }

    /// This context, telling `health` what its watches and reconciles do.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// The Tiers a push concerns, read from the controller's watch caches: a delivery costs no
    /// request to the API server, so a storm of them does not become a storm of lists. None until
    /// the caches hold complete lists (a standby replica, or at start): then ask the API server.
    /// A store is empty until its first list is complete (the reflector swaps it in whole).
    pub fn tiers_for_push(&self, push: &crate::webhook::Push) -> Option<Vec<ObjectRef<Tier>>> {
        let stores = self.stores.get()?;
        if !*stores.ready.borrow() || stores.tiers.is_empty() {
            return None;
        }
        let configurations: Vec<Configuration> = stores.configurations.state().iter().map(|c| (**c).clone()).collect();
        Some(tiers_for_push(push, &stores.tiers.state(), &configurations))
    }

    /// This context, dealing with Argo CD as `settings` say.
    pub fn with_argocd(mut self, settings: ArgoCdSettings) -> Self {
        self.argocd = settings;
        self
    }
}

/// How the controller deals with Argo CD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgoCdSettings {
    /// After a push, set `argocd.argoproj.io/refresh: normal` on the tier's Applications so Argo
    /// CD reads the branch at once (default). Off for those whose Argo CD gets the system
    /// repository's webhook itself: then Argo CD sees a push at that webhook or its own poll.
    pub refresh: bool,
}

impl Default for ArgoCdSettings {
    fn default() -> Self {
        ArgoCdSettings { refresh: true }
    }
}

impl ArgoCdSettings {
    /// Whether a sync that found the system branch `moved` (pushed by it, or by someone else since
    /// it last looked) asks Argo CD to refresh: only then did the branch move under unchanged
    /// Applications, and only when refreshing is on.
    pub fn refresh_after(&self, moved: bool) -> bool {
        self.refresh && moved
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
    let (tiers, shopsets, configurations) = (
        api(&ctx.client, namespace.as_deref()),
        api(&ctx.client, namespace.as_deref()),
        api(&ctx.client, namespace.as_deref()),
    );
    // Status writes (ours) change neither generation nor finalizers: they trigger no reconcile.
    let changed = predicates::generation.combine(predicates::finalizers);
    for kind in ["Tier", "ShopSet", "Configuration"] {
        ctx.health.watching(kind);
    }
    let (reader, writer) = reflector::store();
    let tier_events = watcher::watcher(tiers, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(synced(&ctx.health, "Tier"))
        .applied_objects()
        .predicate_filter(changed, PredicateConfig::default());
    // Not filtered: a deleted ShopSet must trigger its Tier. Our own status writes do too, and
    // end in the cheap "nothing moved" path.
    let (shopset_store, shopset_writer) = reflector::store();
    let shopset_events = watcher::watcher(shopsets, watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(shopset_writer)
        .inspect(synced(&ctx.health, "ShopSet"))
        .touched_objects();
    let (configuration_store, configuration_writer) = reflector::store();
    let configuration_events = watcher::watcher(configurations, watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(configuration_writer)
        .inspect(synced(&ctx.health, "Configuration"))
        .touched_objects();
    // The Applications the controller manages: their deletion or an edit puts them back, and what
    // Argo CD reports of them goes to the ShopSets' and Tier's status. Argo CD writes their status
    // at every refresh; only a change of what ShopSet reads triggers the Tier.
    let ar = argocd::application_resource();
    let app_writer = Writer::new(ar.clone());
    let app_store = app_writer.as_reader();
    let managed = format!("{}={}", argocd::MANAGED_BY.0, argocd::MANAGED_BY.1);
    let mut seen = HashMap::new();
    let app_events = watcher::watcher(
        Api::<DynamicObject>::all_with(ctx.client.clone(), &ar),
        watcher::Config::default().labels(&managed),
    )
    .default_backoff()
    .modify(slim_application)
    .reflect(app_writer)
    .filter_map(move |event| {
        let out = match event {
            // Without Argo CD (no Application CRD) this fails at every backoff: not worth a warning.
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch Applications");
                None
            }
            Ok(watcher::Event::Apply(app) | watcher::Event::InitApply(app)) => {
                let key = (app.metadata.namespace.clone(), app.metadata.name.clone());
                let print = fingerprint(&app);
                (seen.insert(key, print) != Some(print)).then_some(Ok(app))
            }
            Ok(watcher::Event::Delete(app)) => {
                seen.remove(&(app.metadata.namespace.clone(), app.metadata.name.clone()));
                Some(Ok(app))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        };
        futures::future::ready(out)
    });
    let controller = Controller::for_stream(tier_events, reader);
    let store = controller.store();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let (applications_ready_tx, applications_ready) = tokio::sync::watch::channel(false);
    {
        let applications = app_store.clone();
        tokio::spawn(async move {
            if applications.wait_until_ready().await.is_ok() {
                let _ = applications_ready_tx.send(true);
            }
        });
    }
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
    let stores = Stores {
        tiers: store.clone(),
        shopsets: shopset_store,
        configurations: configuration_store,
        ready,
        applications: app_store,
        applications_ready,
    };
    let tiers_of_apps = store.clone();
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
        .watches_stream_with(
            app_events,
            move |app: DynamicObject| {
                let tiers = tiers_of_apps.state();
                let owners: Vec<&Arc<Tier>> = tiers.iter().filter(|t| owned_by(t, &app)).collect();
                // A tier promoted automatically from the owner looks again too: what Argo CD
                // reports of its source is what its gate reads.
                let promoted_from_owner = tiers.iter().filter(|t| {
                    t.spec.promotion.as_ref().is_some_and(|p| {
                        p.auto && owners.iter().any(|o| o.name_any() == p.from && o.namespace() == t.namespace())
                    })
                });
                owners.iter().copied().chain(promoted_from_owner).map(|t| ObjectRef::from_obj(&**t)).collect::<Vec<_>>()
            },
            ar,
        )
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

/// Marks the watch cache of `kind` synced at its first complete list (the reflector has stored
/// it when the event passes here), and keeps the watch's errors until then. Not
/// `Store::wait_until_ready`: a store wakes only its latest waiter, and the reconciles' readiness
/// task waits on these stores.
fn synced<K>(
    health: &Arc<Health>,
    kind: &'static str,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
    let health = health.clone();
    move |event| match event {
        Ok(watcher::Event::InitDone) => health.synced(kind),
        Err(e) => health.watch_failed(kind, watch_error(e)),
        Ok(_) => {}
    }
}

/// A watch's error in the API server's words (`cannot list: Internal error occurred: ...`).
fn watch_error(e: &watcher::Error) -> String {
    use crate::error::api_message;
    match e {
        watcher::Error::InitialListFailed(e) => format!("cannot list: {}", api_message(e)),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            format!("cannot watch: {}", api_message(e))
        }
        watcher::Error::WatchError(status) => format!("the watch failed: {}", status.message),
        other => other.to_string(),
    }
}

/// The Api of a kind in one namespace, or in all of them.
pub fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Reconciles one Tier (through the finalizer, so deletion runs its policy).
#[tracing::instrument(skip_all, fields(tier = %tier.name_any(), namespace = tier.namespace().as_deref().unwrap_or_default()))]
pub async fn reconcile(tier: Arc<Tier>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = tier.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Tier> = Api::namespaced(ctx.client.clone(), &ns);
    let started = Instant::now();
    let _running = ctx.health.reconcile_started();
    let labels = TierLabels { namespace: ns.clone(), tier: tier.name_any() };
    // For the liveness test only: a reconcile that makes no progress until the test lets it.
    while shopset_git::fault::holds("hold-reconcile") {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Observed, not assumed: the runtime promises one reconcile per object at a time.
    let _in_flight = ctx.metrics.running(&labels);
    let result = finalizer(&api, FINALIZER, tier, |event| async {
        match event {
            finalizer::Event::Apply(tier) => apply(tier, ctx.clone()).await,
            finalizer::Event::Cleanup(tier) => cleanup(tier, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
            Error::Kube(format!("cannot update finalizer {FINALIZER}: {}", crate::error::api_message(&e)))
        }
        other => Error::Internal(format!("finalizer {FINALIZER}: {other}")),
    });
    ctx.metrics.reconciled(&labels, started.elapsed());
    result
}

/// On failure: a terminal error waits for a change of the input (the watches reconcile on it); any
/// other backs off from 5 s, doubling to 5 minutes, with jitter so failing tiers do not retry in step.
pub fn error_policy(tier: Arc<Tier>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(&tier.name_any(), err.reason());
    if err.is_terminal() {
        return Action::await_change();
    }
    let key = ObjectRef::from_obj(&*tier);
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    Action::requeue(jitter(retry_delay(*n)))
}

/// `delay` plus up to a tenth more, at random: tiers started together spread out.
pub fn jitter(delay: Duration) -> Duration {
    // std's RandomState is seeded at random per instance: enough randomness for spreading retries.
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let tenth = delay.as_millis() as u64 / 10;
    delay + Duration::from_millis(if tenth == 0 { 0 } else { random % tenth })
}

/// The wait after the `failures`-th failure in a row: 5 s, doubling, never more than 5 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.saturating_sub(1).min(6))).min(Duration::from_secs(300))
}

fn interval(tier: &Tier) -> Duration {
    shopset_core::duration::parse_duration(&tier.spec.interval).unwrap_or(Duration::from_secs(60))
}

/// Drops what a reconcile never reads from a cached object: managed fields and annotations
/// (kubectl's last-applied copy alone doubles an object's size).
fn slim<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().clear();
}

/// Whether a reconcile of `tier` reads `shopset`: those of the tier and of the tier it is promoted
/// from (the promotion gate's). Every rule between ShopSets holds within one tier, and a copy of
/// every ShopSet of a large namespace for each reconcile under way was the largest part of the
/// controller's peak memory.
fn reads(tier: &Tier, shopset: &ShopSet) -> bool {
    let of = shopset.spec.tier.as_str();
    tier.metadata.name.as_deref() == Some(of) || tier.spec.promotion.as_ref().is_some_and(|p| p.from == of)
}

/// An Application as the watch cache keeps it: what [`fingerprint`], the drift check and
/// [`argocd::app_state`] read. Argo CD's record of every resource it manages, its sync history and
/// last operation, and the API server's managedFields are most of an Application's bytes, and a
/// cache of a large fleet held them all.
fn slim_application(app: &mut DynamicObject) {
    app.managed_fields_mut().clear();
    if let Some(serde_json::Value::Object(status)) = app.data.get_mut("status") {
        status.retain(|k, _| matches!(k.as_str(), "sync" | "health" | "conditions"));
    }
}

/// The inventory of the Tier's namespace (of its ShopSets, those of this tier and of the tier it is
/// promoted from), and this tier's problems if any. Read from the watch
/// caches once they hold a complete list: a partial list would render ShopSets away. While a watch
/// that fills them fails (a refused or failed list), the reconcile fails saying so, and is retried
/// with backoff, instead of waiting unseen for as long as the API server fails.
async fn load(tier: &Tier, ctx: &Context) -> Result<(Inventory, Vec<String>), Error> {
    let ns = tier.namespace().unwrap_or_else(|| "default".into());
    let stores =
        ctx.stores.get().ok_or_else(|| Error::Internal("the controller's watch caches are not running".into()))?;
    let mut ready = stores.ready.clone();
    while !*ready.borrow_and_update() {
        let errors = ctx.health.unfilled_errors(&["ShopSet", "Configuration"]);
        if !errors.is_empty() {
            return Err(Error::Kube(format!(
                "the watch caches of namespace {ns} are not filled: {}; nothing is rendered, committed or \
                 pruned until they are; fix: see the API server's log for a server error, or grant the \
                 controller's ServiceAccount get, list and watch on shopsets.shopset.dev and \
                 configurations.shopset.dev (deploy/rbac.yaml)",
                errors.join("; ")
            )));
        }
        // The watches record their errors as they come: look again now and then.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(500), ready.changed()).await {
            return Err(Error::Kube("the watch caches stopped before they filled".into()));
        }
    }
    let mut inventory = Inventory::default();
    let in_ns = |m: &kube::api::ObjectMeta| m.namespace.as_deref() == Some(ns.as_str());
    let key = |m: &kube::api::ObjectMeta| (ns.clone(), m.name.clone().unwrap_or_default());
    for t in stores.tiers.state_filter(|t| in_ns(&t.metadata)) {
        inventory.tiers.insert(key(&t.metadata), (*t).clone());
    }
    for s in stores.shopsets.state_filter(|s| in_ns(&s.metadata) && reads(tier, s)) {
        inventory.shopsets.insert(key(&s.metadata), s);
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

async fn apply(tier: Arc<Tier>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*tier);
    let observed = tier.status.as_ref().and_then(|s| s.observed_generation);
    if observed != tier.metadata.generation {
        status::write(&ctx.client, &ctx.events, &tier, &Outcome::Started).await?;
    }
    match sync_and_apply(&tier, &ctx).await {
        Ok(look_again) => {
            ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            let next = interval(&tier);
            Ok(Action::requeue(look_again.map_or_else(|| jitter(next), |soon| soon.min(next))))
        }
        Err(err) => {
            // The next success is a full sync: its status replaces this failure's. Through the
            // "nothing moved" path, an input put back as it was at the last sync (a Configuration
            // reverted, a Secret re-created) would leave Ready=False for good.
            ctx.last.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            // Status and an Event say why; the error policy decides when to try again.
            if let Err(e) = status::write(&ctx.client, &ctx.events, &tier, &Outcome::Failed(&err)).await {
                tracing::warn!(error = %e, "cannot write the failure to the Tier's status");
            }
            Err(err)
        }
    }
}

/// Syncs and applies the tier, promoting into it first when its policy lets the controller do so
/// by itself. Returns when to look again if sooner than the tier's interval (a soak that ends).
async fn sync_and_apply(tier: &Tier, ctx: &Context) -> Result<Option<Duration>, Error> {
    let key = ObjectRef::from_obj(tier);
    let (inventory, problems) = load(tier, ctx).await?;
    if !problems.is_empty() {
        return Err(Error::Invalid(problems.join("; ")));
    }
    let input = inventory.tier_input(&tier.name_any()).map_err(|p| Error::Invalid(p.to_string()))?;
    // Before any git: a tenant's Tier must not make the controller read its own files.
    if !ctx.allow_local_urls {
        tenancy::local_urls(&input)?;
    }
    let auth = credentials::of_tier(tier, &ctx.client).await?;
    // Before the sync: a promotion moves the tier's branches and pins them in one system commit,
    // which this sync then sees (and asks Argo CD to deploy).
    let promotable = auto_promotion::step(ctx, tier, &inventory, &auth).await;
    if let Some(p) = &promotable {
        tracing::debug!(ok = p.ok, reason = p.reason, message = %p.message, "automatic promotion");
    }
    let look_again = promotable.as_ref().and_then(|p| p.look_again);
    let promotable = promotable.as_ref();

    let (name, branch) = (tier.name_any(), tier.branch());
    let owner = argocd::Owner {
        tier: &name,
        repo_url: &tier.spec.system.url,
        branch: &branch,
        namespace: &tier.spec.argocd.namespace,
    };

    // Poll fast path: one ls-remote per repository, and nothing else when nothing moved but to
    // put back Applications changed in the cluster and say what Argo CD reports.
    let last = ctx.last.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    // The head this process last saw; another writer (`shopctl promote`, a person) may have moved it.
    let seen_head = last.as_ref().and_then(|l| l.head.clone());
    if let Some(last) = last {
        let (cache, auth2, input2) = (ctx.cache.clone(), auth.clone(), input.clone());
        let checkpoint = last.checkpoint.clone();
        let unchanged = blocking(move || checkpoint.unchanged(&cache, &auth2, &input2)).await??;
        if unchanged {
            tracing::debug!("nothing moved");
            // Every reconcile: one deleted or edited in the cluster is put back within a poll.
            write_repo_creds(ctx, tier, &input, &auth).await?;
            let stores = ctx.stores.get();
            let suspects = match stores.filter(|s| *s.applications_ready.borrow()) {
                Some(stores) => drift(&last.apps, |ns, name| {
                    stores.applications.get(&ObjectRef::new_with(name, argocd::application_resource()).within(ns))
                }),
                // No complete list of the cluster's Applications: ask for each.
                None => last.apps.iter().map(|a| a.name_any()).collect(),
            };
            // The cache may lag behind an apply of a moment ago: only what the API server confirms.
            let drifted =
                if suspects.is_empty() { suspects } else { confirm_drift(ctx, &last.apps, &suspects).await? };
            if !drifted.is_empty() {
                let applied = argocd::apply(&ctx.client, &owner, &last.apps, |_| false).await?;
                status::restored(&ctx.events, tier, &drifted, &applied).await;
            }
            if ctx.argocd.refresh
                && let (Some(stores), Some(head)) = (stores.filter(|s| *s.applications_ready.borrow()), &last.head)
            {
                let behind = not_refreshed(&last.apps, head, |ns, name| {
                    stores.applications.get(&ObjectRef::new_with(name, argocd::application_resource()).within(ns))
                });
                if !behind.is_empty() {
                    let refreshed = argocd::refresh(&ctx.client, &behind).await?;
                    tracing::debug!(?refreshed, "asked Argo CD to refresh again: still at an older commit");
                }
            }
            // The status is written whole: from a cached Tier older than the last sync's write it
            // would put back what that write replaced. The watch catches up; the next trigger writes.
            let seen = tier.status.as_ref().and_then(|s| s.system_commit.as_deref()) == last.head.as_deref();
            if seen {
                let apps = app_states(ctx, tier, &input);
                let outcome = Outcome::Observed { input: &input, head: last.head.as_deref(), apps: &apps, promotable };
                status::write(&ctx.client, &ctx.events, tier, &outcome).await?;
            }
            return Ok(look_again);
        }
    }

    // A render prunes the Applications of ShopSets it does not see: only from caches the API
    // server still lets us fill (a watch cut off keeps serving its last list, silently).
    lists_allowed(&ctx.client, &tier.namespace().unwrap_or_else(|| "default".into())).await?;
    let labels = TierLabels { namespace: tier.namespace().unwrap_or_default(), tier: tier.name_any() };
    ctx.metrics.syncs.get_or_create(&labels).inc();
    let (cache, renderer, input2, auth2) = (ctx.cache.clone(), ctx.renderer.clone(), input.clone(), auth.clone());
    // After promotion pull requests were merged, the pin commit says which policy let them through.
    let options = SyncOptions { why: promotable.and_then(|p| p.why.clone()), ..SyncOptions::default() };
    let report = blocking(move || sync_tier(&cache, &auth2, &input2, &renderer, &options)).await??;
    // The fault points are those of a sync that pushed a change; a no-op sync passes them.
    let pushed = report.commit.is_some();
    if pushed {
        ctx.metrics.pushes.get_or_create(&labels).inc();
        shopset_git::fault::point("after-push");
    }
    let apps = argocd::applications(&report.tree)?;
    // Before the Applications: Argo CD needs them to clone the system branch and its submodules.
    write_repo_creds(ctx, tier, &input, &auth).await?;
    // An Application rendered as the last sync applied it, and still so in the cluster, is left
    // alone: a bump moves the branch under unchanged Applications, and a server-side apply of each
    // of a tier's 100 Applications at every push was work for the API server that changed nothing.
    let named = |app: &DynamicObject| (app.namespace().unwrap_or_default(), app.name_any());
    let unchanged: BTreeSet<(String, String)> = match ctx.stores.get().filter(|s| *s.applications_ready.borrow()) {
        // Without a synced watch of the Applications, the cluster's side is unknown: apply all.
        None => BTreeSet::new(),
        Some(stores) => {
            let last = ctx.last.lock().unwrap_or_else(|p| p.into_inner());
            let previous: HashMap<(String, String), &DynamicObject> =
                last.get(&key).map(|l| l.apps.iter().map(|a| (named(a), a)).collect()).unwrap_or_default();
            apps.iter()
                .filter(|app| {
                    in_place(app, previous.get(&named(app)).copied(), |ns, name| {
                        stores.applications.get(&ObjectRef::new_with(name, argocd::application_resource()).within(ns))
                    })
                })
                .map(named)
                .collect()
        }
    };
    let applied = argocd::apply(&ctx.client, &owner, &apps, |app| unchanged.contains(&named(app))).await?;
    // Moved by this push, or by another writer since this process last looked (a promotion pins
    // with its own system commit; after a restart or a failure the last head is unknown).
    let moved = pushed || seen_head != report.head;
    if ctx.argocd.refresh_after(moved) {
        // The branch moved under unchanged Applications: Argo CD would see it only at its poll.
        let refreshed = argocd::refresh(&ctx.client, &apps).await?;
        tracing::debug!(?refreshed, "asked Argo CD to refresh");
    }
    if pushed {
        shopset_git::fault::point("before-status");
    }
    let states = app_states(ctx, tier, &input);
    let outcome = Outcome::Synced { input: &input, report: &report, applied: &applied, apps: &states, promotable };
    status::write(&ctx.client, &ctx.events, tier, &outcome).await?;
    ctx.metrics.synced(&labels);
    let last = Last { checkpoint: Checkpoint::after(&input, &report), apps, head: report.head.clone() };
    ctx.last.lock().unwrap_or_else(|p| p.into_inner()).insert(key, last);
    Ok(look_again)
}

/// Whether the API server still answers a list of the ShopSets and Configurations of `ns` (one
/// item each, names only): the watch caches a render reads are only as good as that. A refusal
/// (RBAC removed at run time) or a server error fails the reconcile before anything is written.
async fn lists_allowed(client: &kube::Client, ns: &str) -> Result<(), Error> {
    let one = kube::api::ListParams::default().limit(1);
    let shopsets: Api<ShopSet> = Api::namespaced(client.clone(), ns);
    let configurations: Api<Configuration> = Api::namespaced(client.clone(), ns);
    let failed = |kind: &str, plural: &str, e: kube::Error| {
        Error::Kube(format!(
            "cannot list {kind}s in namespace {ns}: {}; nothing is rendered, committed or pruned until it \
             can; fix: grant the controller's ServiceAccount get, list and watch on {plural}.shopset.dev \
             (deploy/rbac.yaml), or see the API server's log for a server error",
            crate::error::api_message(&e)
        ))
    };
    shopsets.list_metadata(&one).await.map_err(|e| failed("ShopSet", "shopsets", e))?;
    configurations.list_metadata(&one).await.map_err(|e| failed("Configuration", "configurations", e))?;
    Ok(())
}

/// Applies Argo CD's credential templates for the tier's repositories (every time: one deleted or
/// edited is back within a poll) and prunes its stale ones (all of them when the Tier names no
/// credentials). The list for pruning is skipped while the templates are the ones this process
/// last wrote: stale ones come only from an earlier set, so a Tier without credentials costs one
/// list per process, not one per poll. Names only reach the log.
async fn write_repo_creds(
    ctx: &Context,
    tier: &Tier,
    input: &shopset_core::manifests::TierInput,
    auth: &shopset_git::gitops::Auth,
) -> Result<(), Error> {
    let key = ObjectRef::from_obj(tier);
    let secrets = repo_creds::secrets(tier, &input.configurations, auth);
    let names: BTreeSet<String> = secrets.iter().map(|s| s.name_any()).collect();
    let last = ctx.repo_creds.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    if secrets.is_empty() && last.as_ref().is_some_and(BTreeSet::is_empty) {
        return Ok(());
    }
    let prune = last.as_ref() != Some(&names);
    let written = repo_creds::apply(&ctx.client, tier, auth, &secrets, prune).await?;
    ctx.repo_creds.lock().unwrap_or_else(|p| p.into_inner()).insert(key, names);
    if !written.deleted.is_empty() {
        tracing::info!(deleted = ?written.deleted, "deleted stale Argo CD credential templates");
    }
    tracing::debug!(applied = ?written.applied, "applied Argo CD credential templates");
    Ok(())
}

/// What Argo CD reports of the Applications of the tier's ShopSets, from the watch cache.
fn app_states(ctx: &Context, tier: &Tier, input: &shopset_core::manifests::TierInput) -> Vec<argocd::AppState> {
    let ar = argocd::application_resource();
    let ns = &tier.spec.argocd.namespace;
    let applications = ctx.stores.get().map(|s| &s.applications);
    input
        .shopsets
        .iter()
        .map(|ss| {
            let name = ss.name_any();
            match applications.and_then(|a| a.get(&ObjectRef::new_with(&name, ar.clone()).within(ns))) {
                Some(app) if owned_by(tier, &app) => argocd::app_state(name, &app),
                _ => argocd::AppState { shopset: name.clone(), application: name, ..argocd::AppState::default() },
            }
        })
        .collect()
}

/// The Applications of `applied` that Argo CD still reports at a commit other than `head`, with no
/// refresh pending. A refresh asked for while Argo CD was busy with the previous one is lost: Argo
/// CD removes the annotation it read when it writes its status, ours with it, and compares no
/// more. Asked again at each look until Argo CD reports `head`.
fn not_refreshed(
    applied: &[DynamicObject],
    head: &str,
    cached: impl Fn(&str, &str) -> Option<Arc<DynamicObject>>,
) -> Vec<DynamicObject> {
    applied
        .iter()
        .filter(|app| {
            let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
            cached(&ns, &name).is_some_and(|live| {
                let pending = live.annotations().contains_key(argocd::REFRESH_ANNOTATION);
                let revision = live.data.pointer("/status/sync/revision").and_then(|v| v.as_str());
                !pending && revision.is_some_and(|r| r != head)
            })
        })
        .cloned()
        .collect()
}

/// Whether `app` is one of `tier`'s Applications.
fn owned_by(tier: &Tier, app: &DynamicObject) -> bool {
    let (name, branch) = (tier.name_any(), tier.branch());
    let owner = argocd::Owner {
        tier: &name,
        repo_url: &tier.spec.system.url,
        branch: &branch,
        namespace: &tier.spec.argocd.namespace,
    };
    owner.owns(app)
}

/// Whether the rendered `app` needs no apply: rendered exactly as the last sync applied it
/// (`previous`), and held so by the cluster (`live`, by namespace and name; see [`drift`]). The
/// first test catches a field the rendering dropped (automated sync, in maintenance), which
/// [`drift`] cannot see: it looks for what is rendered only.
fn in_place(
    app: &DynamicObject,
    previous: Option<&DynamicObject>,
    live: impl Fn(&str, &str) -> Option<Arc<DynamicObject>>,
) -> bool {
    let as_before = previous.is_some_and(|p| {
        p.labels() == app.labels() && p.annotations() == app.annotations() && p.data == app.data && p.types == app.types
    });
    as_before && drift(std::slice::from_ref(app), live).is_empty()
}

/// The names of the `rendered` Applications that the cluster (`live`, by namespace and name) lacks,
/// is deleting, or holds with another value of a label, an annotation or the spec ShopSet rendered.
/// What others add (Argo CD's status, its refresh annotation, defaults) is no drift.
fn drift(rendered: &[DynamicObject], live: impl Fn(&str, &str) -> Option<Arc<DynamicObject>>) -> Vec<String> {
    let mut out = Vec::new();
    for app in rendered {
        let (ns, name) = (app.metadata.namespace.as_deref().unwrap_or_default(), app.name_any());
        let same = live(ns, &name).is_some_and(|live| {
            live.metadata.deletion_timestamp.is_none()
                && app.labels().iter().all(|(k, v)| live.labels().get(k) == Some(v))
                && app.annotations().iter().all(|(k, v)| live.annotations().get(k) == Some(v))
                && contains(&live.data, &app.data)
        });
        if !same {
            out.push(name);
        }
    }
    out
}

/// The Applications of `suspects` that the API server, read directly, confirms as drifted.
async fn confirm_drift(ctx: &Context, rendered: &[DynamicObject], suspects: &[String]) -> Result<Vec<String>, Error> {
    let ar = argocd::application_resource();
    let suspects: Vec<DynamicObject> = rendered.iter().filter(|a| suspects.contains(&a.name_any())).cloned().collect();
    let mut live = HashMap::new();
    for app in &suspects {
        let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        if let Some(obj) = api.get_opt(&name).await? {
            live.insert((ns, name), Arc::new(obj));
        }
    }
    Ok(drift(&suspects, |ns, name| live.get(&(ns.to_string(), name.to_string())).cloned()))
}

/// Whether `live` holds everything of `rendered`: every key of an object, every item of a list in
/// its place; a list of another length differs.
fn contains(live: &serde_json::Value, rendered: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, rendered) {
        (Value::Object(l), Value::Object(r)) => r.iter().all(|(k, v)| l.get(k).is_some_and(|lv| contains(lv, v))),
        (Value::Array(l), Value::Array(r)) => l.len() == r.len() && l.iter().zip(r).all(|(lv, rv)| contains(lv, rv)),
        _ => live == rendered,
    }
}

/// What the controller reads of an Application: its spec, labels and annotations, what Argo CD
/// reports (sync, health, revision, conditions), and whether it is being deleted. A change of
/// anything else (Argo CD's timestamps, its resource list) triggers no reconcile.
fn fingerprint(app: &DynamicObject) -> u64 {
    let value = serde_json::json!({
        "labels": app.labels(),
        "annotations": app.annotations(),
        "deleting": app.metadata.deletion_timestamp.is_some(),
        "spec": app.data.get("spec"),
        "sync": app.data.pointer("/status/sync"),
        "health": app.data.pointer("/status/health/status"),
        "conditions": app.data.pointer("/status/conditions"),
    });
    shopset_core::fingerprint::fnv1a(value.to_string().as_bytes())
}

/// Runs git work on the blocking pool; a panic there is a bug, reported as one.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("a sync task failed: {e}")))
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
    // Whatever the policy: nothing keeps these copies of the credentials up to date any more.
    let deleted = repo_creds::delete_all(&ctx.client, &tier).await?;
    if !deleted.is_empty() {
        tracing::info!(tier = %tier.name_any(), ?deleted, "deleted Argo CD credential templates");
    }
    ctx.last.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from_obj(&*tier));
    ctx.repo_creds.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from_obj(&*tier));
    Ok(Action::await_change())
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

    fn app(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn an_application_still_at_an_older_commit_with_no_refresh_pending_is_refreshed_again() {
        let rendered = |name: &str| {
            app(serde_json::json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                "metadata": {"name": name, "namespace": "argocd"}}))
        };
        let live = |name: &str, revision: Option<&str>, pending: bool| {
            let mut a = rendered(name);
            if pending {
                a.metadata.annotations = Some([(argocd::REFRESH_ANNOTATION.to_string(), "normal".to_string())].into());
            }
            if let Some(r) = revision {
                a.data["status"] = serde_json::json!({"sync": {"revision": r}});
            }
            Arc::new(a)
        };
        let applied: Vec<_> = ["at-head", "behind", "pending", "never-compared", "gone"].map(rendered).into();
        let cluster = [
            live("at-head", Some("new"), false),
            live("behind", Some("old"), false),
            live("pending", Some("old"), true),
            live("never-compared", None, false),
        ];
        let behind = not_refreshed(&applied, "new", |_, name| cluster.iter().find(|a| a.name_any() == name).cloned());
        assert_eq!(behind.iter().map(|a| a.name_any()).collect::<Vec<_>>(), ["behind"]);
    }

    #[test]
    fn an_application_is_applied_again_unless_rendered_as_before_and_so_in_the_cluster() {
        let rendered = app(serde_json::json!({"metadata": {"name": "a", "namespace": "argocd"},
            "spec": {"source": {"path": "shopsets/a"}, "syncPolicy": {"automated": {"prune": true}}}}));
        let mut live = rendered.clone();
        live.data["status"] = serde_json::json!({"sync": {"status": "Synced"}});
        let cluster = |live: DynamicObject| move |_: &str, _: &str| Some(Arc::new(live.clone()));
        assert!(in_place(&rendered, Some(&rendered), cluster(live.clone())), "unchanged, Argo CD's status aside");
        assert!(!in_place(&rendered, None, cluster(live.clone())), "not applied by this process yet");
        assert!(!in_place(&rendered, Some(&rendered), |_: &str, _: &str| None), "deleted in the cluster");
        let mut edited = live.clone();
        edited.data["spec"]["source"]["path"] = "elsewhere".into();
        assert!(!in_place(&rendered, Some(&rendered), cluster(edited)), "edited in the cluster");
        // Maintenance drops automated sync from the rendering; the cluster still has it, and holds
        // everything the new rendering has: only the comparison with the last rendering sees it.
        let mut maintenance = rendered.clone();
        maintenance.data["spec"]["syncPolicy"] = serde_json::json!({});
        assert!(!in_place(&maintenance, Some(&rendered), cluster(live)), "a field the rendering dropped");
    }

    #[test]
    fn drift_is_a_missing_deleted_or_edited_application_not_what_argo_cd_adds() {
        let rendered = app(serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "eu", "namespace": "argocd", "labels": {"shopset.dev/tier": "tier-0"},
                         "annotations": {"shopset.dev/note": "rendered"}},
            "spec": {"source": {"targetRevision": "tier-0"}, "syncPolicy": {"syncOptions": ["CreateNamespace=true"]}},
        }));
        let mut live = serde_json::to_value(&rendered).unwrap();
        live["metadata"]["annotations"]["argocd.argoproj.io/refresh"] = "normal".into();
        live["metadata"]["labels"]["extra"] = "x".into();
        live["status"] = serde_json::json!({"sync": {"status": "Synced"}});
        let check = |live: Option<serde_json::Value>| {
            drift(std::slice::from_ref(&rendered), |ns, name| {
                assert_eq!((ns, name), ("argocd", "eu"));
                live.clone().map(|l| Arc::new(app(l)))
            })
        };
        assert!(check(Some(live.clone())).is_empty(), "what Argo CD or others add is no drift");
        assert_eq!(check(None), ["eu"], "deleted");
        let mut edited = live.clone();
        edited["spec"]["source"]["targetRevision"] = "main".into();
        assert_eq!(check(Some(edited)), ["eu"], "retargeted");
        let mut edited = live.clone();
        edited["spec"]["syncPolicy"]["syncOptions"] = serde_json::json!([]);
        assert_eq!(check(Some(edited)), ["eu"], "an option removed");
        let mut edited = live.clone();
        edited["metadata"]["labels"]["shopset.dev/tier"] = "tier-1".into();
        assert_eq!(check(Some(edited)), ["eu"], "relabelled");
        let mut deleting = live;
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        assert_eq!(check(Some(deleting)), ["eu"], "being deleted");
    }

    #[test]
    fn only_what_shopset_reads_of_an_application_triggers_a_reconcile() {
        let base = serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "eu", "namespace": "argocd"},
            "spec": {"source": {"targetRevision": "tier-0"}},
            "status": {"sync": {"status": "OutOfSync", "revision": "a"}, "health": {"status": "Healthy"}, "reconciledAt": "t1"},
        });
        let mut later = base.clone();
        later["status"]["reconciledAt"] = "t2".into();
        assert_eq!(fingerprint(&app(base.clone())), fingerprint(&app(later)), "a timestamp only");
        for (path, value) in
            [("/status/sync/status", "Synced"), ("/status/sync/revision", "b"), ("/status/health/status", "Degraded")]
        {
            let mut changed = base.clone();
            *changed.pointer_mut(path).unwrap() = value.into();
            assert_ne!(fingerprint(&app(base.clone())), fingerprint(&app(changed)), "{path}");
        }
    }

    #[test]
    fn a_reconcile_reads_the_shopsets_of_its_tier_and_of_the_tier_it_is_promoted_from() {
        let tier = |name: &str, from: Option<&str>| -> Tier {
            let promotion = from.map(|f| serde_json::json!({"from": f})).unwrap_or(serde_json::Value::Null);
            serde_json::from_value(serde_json::json!({
                "apiVersion": "shopset.dev/v1alpha1", "kind": "Tier", "metadata": {"name": name, "namespace": "shops"},
                "spec": {"app": {"url": "https://example.com/app.git", "path": "base"},
                         "system": {"url": "https://example.com/system.git"}, "promotion": promotion},
            }))
            .unwrap()
        };
        let shopset = |of: &str| -> ShopSet {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "shopset.dev/v1alpha1", "kind": "ShopSet", "metadata": {"name": "eu", "namespace": "shops"},
                "spec": {"tier": of, "configuration": "default", "shops": []},
            }))
            .unwrap()
        };
        let (t0, t1) = (tier("tier-0", None), tier("tier-1", Some("tier-0")));
        assert!(reads(&t0, &shopset("tier-0")));
        assert!(!reads(&t0, &shopset("tier-1")), "not the tiers promoted from it");
        assert!(reads(&t1, &shopset("tier-1")));
        assert!(reads(&t1, &shopset("tier-0")), "the gate's");
        assert!(!reads(&t1, &shopset("tier-2")));
    }

    #[test]
    fn the_application_cache_keeps_what_shopset_reads_and_drops_the_rest() {
        let full = serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {
                "name": "eu", "namespace": "argocd",
                "labels": {"shopset.dev/tier": "tier-0"},
                "annotations": {"argocd.argoproj.io/refresh": "normal"},
                "ownerReferences": [{"apiVersion": "shopset.dev/v1alpha1", "kind": "Tier", "name": "tier-0", "uid": "u"}],
                "managedFields": [{"manager": "argocd-application-controller", "operation": "Update",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"source": {"targetRevision": "tier-0", "path": "shopsets/eu"}, "syncPolicy": {"automated": {}}},
            "status": {
                "sync": {"status": "OutOfSync", "revision": "a", "comparedTo": {"source": {"path": "shopsets/eu"}}},
                "health": {"status": "Progressing", "message": "rollout"},
                "conditions": [{"type": "ComparisonError", "message": "kustomize failed"}],
                "resources": [{"kind": "Deployment", "name": "storefront", "status": "OutOfSync"}],
                "history": [{"revision": "a", "id": 1}],
                "operationState": {"phase": "Running"},
                "reconciledAt": "t1",
                "summary": {"images": ["storefront:1"]},
            },
        });
        let (original, mut slim) = (app(full.clone()), app(full));
        slim_application(&mut slim);
        assert_eq!(fingerprint(&slim), fingerprint(&original), "what triggers a reconcile");
        let state = |a: &DynamicObject| serde_json::to_value(argocd::app_state("eu".into(), a)).unwrap();
        assert_eq!(state(&slim), state(&original), "what status, the gate and doctor report");
        assert_eq!(slim.metadata.owner_references, original.metadata.owner_references);
        let rendered = app(serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "eu", "namespace": "argocd", "labels": {"shopset.dev/tier": "tier-0"}},
            "spec": {"source": {"targetRevision": "tier-0", "path": "shopsets/eu"}, "syncPolicy": {"automated": {}}},
        }));
        let slim = Arc::new(slim);
        assert!(drift(std::slice::from_ref(&rendered), |_, _| Some(slim.clone())).is_empty(), "no drift seen");
        assert!(slim.metadata.managed_fields.as_ref().is_none_or(|m| m.is_empty()));
        let kept: Vec<&String> = slim.data["status"].as_object().unwrap().keys().collect();
        assert_eq!(kept, ["conditions", "health", "sync"]);
    }

    #[test]
    fn argo_cd_is_asked_to_refresh_after_the_branch_moved_only_and_never_when_refresh_is_off() {
        let on = ArgoCdSettings::default();
        assert!(on.refresh, "refreshing is the default");
        assert!(on.refresh_after(true), "a push (ours or another writer's) moved the branch");
        assert!(!on.refresh_after(false), "nothing moved, nothing to refresh");
        let off = ArgoCdSettings { refresh: false };
        assert!(!off.refresh_after(true), "off: Argo CD's own webhook or poll sees the push");
        assert!(!off.refresh_after(false));
    }

    #[test]
    fn retries_double_from_five_seconds_and_stop_growing_at_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(300));
    }
}

#[cfg(test)]
mod policy_tests {
    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    fn context() -> Arc<Context> {
        let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let dir = std::env::temp_dir().join("shopset-policy-test");
        Arc::new(Context::new(client, GitCache::new(dir), Renderer::embedded().unwrap(), Arc::default()))
    }

    fn tier() -> Arc<Tier> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "shopset.dev/v1alpha1", "kind": "Tier",
                "metadata": {"name": "tier-0", "namespace": "shop"},
                "spec": {"app": {"url": "https://g/app.git"}, "system": {"url": "https://g/system.git"}},
            }))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn terminal_errors_wait_for_a_change_and_others_back_off_with_jitter() {
        let ctx = context();
        let invalid = Error::Invalid("ShopSet/eu: spec.shops: ...".into());
        assert_eq!(error_policy(tier(), &invalid, ctx.clone()), Action::await_change());
        let down = Error::Kube("connection refused".into());
        for n in 1..=3u64 {
            let action = format!("{:?}", error_policy(tier(), &down, ctx.clone()));
            let base = 5 * (1 << (n - 1));
            // Action hides its delay; its Debug form shows it.
            let secs: f64 = action
                .split("requeue_after: Some(")
                .nth(1)
                .and_then(|r| r.split('s').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a requeue: {action}"));
            assert!(secs >= base as f64 && secs <= base as f64 * 1.1, "attempt {n}: {secs}s for a {base}s backoff");
        }
    }

    #[tokio::test]
    async fn a_tier_without_credentials_lists_templates_to_prune_once_per_process() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let dir = std::env::temp_dir().join("shopset-policy-test");
        let ctx = Arc::new(Context::new(client, GitCache::new(dir), Renderer::embedded().unwrap(), Arc::default()));
        let tier = tier();
        let input = shopset_core::manifests::TierInput {
            tier: (*tier).clone(),
            from: None,
            configurations: Vec::new(),
            shopsets: Vec::new(),
        };
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a list of the tier's templates");
            assert_eq!(request.method(), http::Method::GET);
            assert!(request.uri().path().ends_with("/secrets"), "{}", request.uri());
            let query = request.uri().query().unwrap_or_default().to_string();
            assert!(query.contains("repo-creds") && query.contains("tier-0") && query.contains("shop"), "{query}");
            let empty = serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                                           "metadata": {}, "items": []});
            send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&empty).unwrap())).unwrap());
            // Kept open: a request from here on would wait for an answer that never comes.
            handle
        });
        let auth = shopset_git::gitops::Auth::default();
        write_repo_creds(&ctx, &tier, &input, &auth).await.expect("the first time: listed, nothing to prune");
        let _handle = server.await.unwrap();
        let again = tokio::time::timeout(Duration::from_secs(30), write_repo_creds(&ctx, &tier, &input, &auth));
        again.await.expect("no request the second time").expect("nothing to do");
    }

    /// The API server refusing (403, RBAC removed) or failing (500) a list of ShopSets fails
    /// the reconcile with a message naming the list, the namespace, the server's words and the fix.
    #[tokio::test]
    async fn a_refused_or_failed_shopset_list_fails_the_reconcile_and_says_why() {
        for (code, reason, said) in [
            (403, "Forbidden", r#"shopsets.shopset.dev is forbidden: User "sa" cannot list resource "shopsets""#),
            (500, "InternalError", "Internal error occurred: etcdserver: leader changed"),
        ] {
            let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(service, "default");
            let server = tokio::spawn(async move {
                let (request, send) = handle.next_request().await.expect("a list of ShopSets");
                assert_eq!(request.method(), http::Method::GET);
                assert_eq!(request.uri().path(), "/apis/shopset.dev/v1alpha1/namespaces/shop/shopsets");
                let status = serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                                                "message": said, "reason": reason, "code": code});
                let body = Body::from(serde_json::to_vec(&status).unwrap());
                send.send_response(Response::builder().status(code).body(body).unwrap());
            });
            let err = lists_allowed(&client, "shop").await.expect_err("a refused list fails");
            server.await.unwrap();
            let text = err.to_string();
            assert_eq!(err.reason(), "KubernetesUnavailable");
            assert!(!err.is_terminal(), "retried with backoff: RBAC or the server may come back");
            assert!(
                text.contains("cannot list ShopSets in namespace shop: ")
                    && text.contains(said)
                    && text.contains("fix: grant the controller's ServiceAccount get, list and watch on shopsets"),
                "{text}"
            );
        }
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(60));
            assert!(d >= Duration::from_secs(60) && d <= Duration::from_secs(66), "{d:?}");
        }
    }
}
