//! Argo CD Applications: the rendered `applications/*.yaml` applied to the cluster with server-side
//! apply, and the ones of ShopSets that are gone removed. `kubectl apply --server-side
//! --field-manager=shopset-controller -f applications/` does the same by hand.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, stream};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;
use shopset_core::api::{ShopSet, Tier};
use shopset_core::revision::short;
use shopset_core::tree::{Entry, Tree};

/// Field manager of everything the controller applies.
pub const FIELD_MANAGER: &str = "shopset-controller";
/// Label on every generated Application.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "shopset-controller");
pub const TIER_LABEL: &str = "shopset.dev/tier";
pub const SHOPSET_LABEL: &str = "shopset.dev/shopset";

/// `argoproj.io/v1alpha1` Application.
pub fn application_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"), "applications")
}

/// Why the Applications could not be applied or pruned.
#[derive(Debug, thiserror::Error)]
pub enum ArgoError {
    #[error("rendered {path} is not an Application manifest: {detail}; fix: correct the application.yaml template")]
    Manifest { path: String, detail: String },
    #[error("Argo CD namespace {namespace:?} does not exist; fix: install Argo CD there or set spec.argocd.namespace")]
    NoNamespace { namespace: String },
    #[error(
        "the cluster has no Application resource (CRD applications.argoproj.io); fix: install Argo CD, or its CRDs"
    )]
    NoCrd,
    #[error("cannot {action} Application {namespace}/{name}: {message}")]
    Api { action: &'static str, namespace: String, name: String, message: String },
    #[error("cannot list Applications in {namespace}: {message}")]
    List { namespace: String, message: String },
}

impl ArgoError {
    /// An API error of `action` on an Application, in the words a person acts on.
    fn of(action: &'static str, namespace: &str, name: &str, e: kube::Error) -> Self {
        if let kube::Error::Api(status) = &e
            && status.code == 404
        {
            let kind = status.details.as_ref().map(|d| d.kind.as_str());
            if kind == Some("namespaces") {
                return ArgoError::NoNamespace { namespace: namespace.into() };
            }
            if kind.is_none_or(str::is_empty) && action != "delete" {
                return ArgoError::NoCrd;
            }
        }
        let mut message = crate::error::api_message(&e);
        if matches!(&e, kube::Error::Api(s) if s.code == 403) {
            message.push_str("; fix: grant the controller's ServiceAccount access to Applications (deploy/rbac.yaml)");
        }
        ArgoError::Api { action, namespace: namespace.into(), name: name.into(), message }
    }
}

/// The Applications of a rendered tree, parsed.
pub fn applications(tree: &Tree) -> Result<Vec<DynamicObject>, ArgoError> {
    let mut apps = Vec::new();
    for (path, entry) in &tree.entries {
        let (true, Entry::File(bytes)) = (path.starts_with("applications/") && path.ends_with(".yaml"), entry) else {
            continue;
        };
        let obj: DynamicObject = serde_yaml::from_slice(bytes)
            .map_err(|e| ArgoError::Manifest { path: path.to_string(), detail: e.to_string() })?;
        if obj.metadata.name.is_none() || obj.metadata.namespace.is_none() {
            return Err(ArgoError::Manifest {
                path: path.to_string(),
                detail: "metadata.name and metadata.namespace are required".into(),
            });
        }
        apps.push(obj);
    }
    Ok(apps)
}

/// What [`apply`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: Vec<String>,
    /// Not applied: already in the cluster as rendered (`namespace/name`).
    pub in_place: Vec<String>,
    pub deleted: Vec<String>,
}

/// Which Applications belong to one tier: the tier label, and a source at the tier's branch of
/// its system repository (two Tiers of one name in different namespaces never own each other's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner<'a> {
    pub tier: &'a str,
    pub repo_url: &'a str,
    pub branch: &'a str,
    /// Argo CD's namespace, where the Applications are.
    pub namespace: &'a str,
}

impl Owner<'_> {
    /// Whether `app` is one of this tier's Applications.
    pub fn owns(&self, app: &DynamicObject) -> bool {
        let text = |path: &str| app.data.pointer(path).and_then(|v| v.as_str());
        app.metadata.namespace.as_deref() == Some(self.namespace)
            && app.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
            && app.labels().get(TIER_LABEL).map(String::as_str) == Some(self.tier)
            && text("/spec/source/repoURL") == Some(self.repo_url)
            && text("/spec/source/targetRevision") == Some(self.branch)
    }
}

/// How many Application requests (apply, refresh) are in flight at once. One after the other, a
/// tier of 100 ShopSets waited 100 round trips before Argo CD heard of the last one.
pub const CONCURRENT_REQUESTS: usize = 16;

/// Applies `apps`, except those `in_place` says the cluster holds as rendered already, and
/// deletes the Applications of the tier that are not among them.
/// Fails closed: when listing fails, nothing is deleted; when an apply fails, nothing is deleted.
pub async fn apply(
    client: &kube::Client,
    owner: &Owner<'_>,
    apps: &[DynamicObject],
    in_place: impl Fn(&DynamicObject) -> bool,
) -> Result<Applied, ArgoError> {
    let mut out = Applied::default();
    let mut keep = BTreeSet::new();
    let (left, to_apply): (Vec<&DynamicObject>, Vec<&DynamicObject>) = apps.iter().partition(|a| in_place(a));
    for app in left {
        let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
        out.in_place.push(format!("{ns}/{name}"));
        keep.insert((ns, name));
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = each_application(client, to_apply, |api, ns, name, app| {
        let params = params.clone();
        async move {
            api.patch(&name, &params, &Patch::Apply(&app)).await.map_err(|e| ArgoError::of("apply", &ns, &name, e))?;
            Ok((ns, name))
        }
    })
    .await;
    for result in applied {
        let (ns, name) = result?;
        out.applied.push(format!("{ns}/{name}"));
        keep.insert((ns, name));
    }
    tracing::debug!(applied = out.applied.len(), in_place = out.in_place.len(), "Applications applied");
    out.deleted = prune(client, owner, &keep).await?;
    Ok(out)
}

/// Annotation that makes Argo CD compare an Application with git now, not at its next poll.
pub const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";

/// Asks Argo CD to refresh `apps` (after a push: the branch moved, the Application's spec did not,
/// so Argo CD would otherwise notice only at its next poll, 3 minutes by default). A merge patch of
/// one annotation, an update of its own that Argo CD removes once refreshed: it takes no field from
/// the server-side apply of the rest. An Application gone meanwhile is skipped. Up to
/// [`CONCURRENT_REQUESTS`] at once: Argo CD starts on the first while the last is asked.
pub async fn refresh(client: &kube::Client, apps: &[DynamicObject]) -> Result<Vec<String>, ArgoError> {
    let patch = serde_json::json!({ "metadata": { "annotations": { REFRESH_ANNOTATION: "normal" } } });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    let results = each_application(client, apps, |api, ns, name, _| {
        let (params, patch) = (params.clone(), patch.clone());
        async move {
            match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => Ok(Some(format!("{ns}/{name}"))),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(ArgoError::of("refresh", &ns, &name, e)),
            }
        }
    })
    .await;
    let mut out = Vec::new();
    for result in results {
        out.extend(result?);
    }
    Ok(out)
}

/// Runs `request` (the Application's Api, namespace, name and object) for each of `apps`, up to
/// [`CONCURRENT_REQUESTS`] at once; the results in the order of `apps`. The futures own what they
/// use: a closure lending them references would not be Send for every lifetime the controller's
/// runtime asks for.
async fn each_application<'a, T, F, Fut>(
    client: &kube::Client,
    apps: impl IntoIterator<Item = &'a DynamicObject>,
    request: F,
) -> Vec<Result<T, ArgoError>>
where
    F: Fn(Api<DynamicObject>, String, String, DynamicObject) -> Fut,
    Fut: std::future::Future<Output = Result<T, ArgoError>>,
{
    let ar = application_resource();
    let requests: Vec<_> = apps
        .into_iter()
        .map(|app| {
            let (ns, name) =
                (app.metadata.namespace.clone().unwrap_or_default(), app.metadata.name.clone().unwrap_or_default());
            request(Api::namespaced_with(client.clone(), &ns, &ar), ns, name, app.clone())
        })
        .collect();
    stream::iter(requests).buffered(CONCURRENT_REQUESTS).collect().await
}

/// Applications listed per request when pruning.
const PRUNE_PAGE: u32 = 250;

/// Deletes the tier's Applications that are not in `keep`.
pub async fn prune(
    client: &kube::Client,
    owner: &Owner<'_>,
    keep: &BTreeSet<(String, String)>,
) -> Result<Vec<String>, ArgoError> {
    let ar = application_resource();
    let namespace = owner.namespace;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let selector = format!("{}={},{}={}", MANAGED_BY.0, MANAGED_BY.1, TIER_LABEL, owner.tier);
    // In pages, keeping only the names to delete: a tier's whole list of Applications, with what
    // Argo CD records of each (every resource, the sync history), was a peak of the controller's
    // memory at every sync of a large tier.
    let mut stale = Vec::new();
    let mut params = ListParams::default().labels(&selector).limit(PRUNE_PAGE);
    loop {
        let page = api.list(&params).await.map_err(|e| match ArgoError::of("list", namespace, "", e) {
            ArgoError::Api { message, .. } => ArgoError::List { namespace: namespace.into(), message },
            other => other,
        })?;
        stale.extend(
            page.items
                .iter()
                .filter(|a| owner.owns(a))
                .filter_map(|a| a.metadata.name.clone())
                .filter(|name| !keep.contains(&(namespace.to_string(), name.clone()))),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let mut deleted = Vec::new();
    for name in stale {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(format!("{namespace}/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(ArgoError::of("delete", namespace, &name, e)),
        }
    }
    Ok(deleted)
}

/// Deletes every Application of the tier (deletionPolicy: Delete).
pub async fn delete_all(client: &kube::Client, owner: &Owner<'_>) -> Result<Vec<String>, ArgoError> {
    prune(client, owner, &BTreeSet::new()).await
}

/// An Argo CD Application as the gate, `status` and `doctor` read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppState {
    pub shopset: String,
    pub application: String,
    pub exists: bool,
    pub sync: Option<String>,
    pub health: Option<String>,
    /// The system commit Argo CD last compared or synced.
    pub revision: Option<String>,
    pub target_revision: Option<String>,
    /// Argo CD's conditions (type and message), e.g. `ComparisonError` when a manifest cannot be built.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<(String, String)>,
}

/// The Applications of a tier's ShopSets, read from the cluster.
pub async fn application_states(
    client: &kube::Client,
    tier: &Tier,
    shopsets: &[Arc<ShopSet>],
) -> Result<Vec<AppState>, kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &tier.spec.argocd.namespace, &application_resource());
    let mut out = Vec::new();
    for ss in shopsets {
        let name = ss.name_any();
        out.push(match api.get_opt(&name).await? {
            None => AppState { shopset: name.clone(), application: name, ..AppState::default() },
            Some(app) => app_state(name, &app),
        });
    }
    Ok(out)
}

/// An Application object as [`AppState`].
pub fn app_state(shopset: String, app: &DynamicObject) -> AppState {
    let text = |path: &str| app.data.pointer(path).and_then(|v| v.as_str()).map(str::to_string);
    let conditions = app
        .data
        .pointer("/status/conditions")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("type")?.as_str()?.to_string(), c.get("message")?.as_str()?.to_string())))
        .collect();
    AppState {
        shopset,
        application: app.metadata.name.clone().unwrap_or_default(),
        exists: true,
        sync: text("/status/sync/status"),
        health: text("/status/health/status"),
        revision: text("/status/sync/revision"),
        target_revision: text("/spec/source/targetRevision"),
        conditions,
    }
}

/// Why an Application does not (yet) run its ShopSet at the system branch's head. An Application
/// with none is deployed; the promotion gate, `status` and `doctor` all judge by [`problems`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Problem {
    /// No Application of that name.
    Missing,
    /// Someone pointed it at another revision than the tier branch.
    Retargeted { target: String },
    /// Argo CD reports an error condition (e.g. `ComparisonError`: a manifest it cannot build).
    ArgoError { condition: String, message: String },
    /// Its sync status is not `Synced`.
    NotSynced { status: String },
    /// A rollout is under way (health `Progressing`).
    Progressing,
    /// Its health is neither `Healthy` nor `Progressing` (`Degraded`, `Missing`, `Unknown`, ...).
    Unhealthy { health: String },
    /// It runs another system commit than the branch head.
    StaleRevision { running: String, head: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => write!(f, "it does not exist"),
            Problem::Retargeted { target } => write!(f, "it points at revision {target}, not the tier branch"),
            Problem::ArgoError { condition, message } => write!(f, "Argo CD reports {condition}: {message}"),
            Problem::NotSynced { status } => write!(f, "sync is {status}"),
            Problem::Progressing => write!(f, "health is Progressing (a rollout is under way)"),
            Problem::Unhealthy { health } => write!(f, "health is {health}"),
            Problem::StaleRevision { running, head } => {
                write!(f, "it runs revision {} instead of {}", short(running), short(head))
            }
        }
    }
}

/// Argo CD's condition types that mean the Application cannot be deployed as it is.
const ERROR_CONDITIONS: &[&str] = &["ComparisonError", "InvalidSpecError", "SyncError", "UnknownError"];

/// Judges an Application against its tier: deployed when Synced and Healthy at `head` (the system
/// branch's head) from the tier branch `branch`, with no error condition; else every reason why not.
pub fn problems(app: &AppState, branch: &str, head: Option<&str>) -> Vec<Problem> {
    if !app.exists {
        return vec![Problem::Missing];
    }
    let mut out = Vec::new();
    if let Some(target) = app.target_revision.as_deref().filter(|t| *t != branch) {
        out.push(Problem::Retargeted { target: target.into() });
    }
    for (condition, message) in app.conditions.iter().filter(|(t, _)| ERROR_CONDITIONS.contains(&t.as_str())) {
        out.push(Problem::ArgoError { condition: condition.clone(), message: message.clone() });
    }
    let sync = app.sync.as_deref().unwrap_or("Unknown");
    if sync != "Synced" {
        out.push(Problem::NotSynced { status: sync.into() });
    }
    match app.health.as_deref().unwrap_or("Unknown") {
        "Healthy" => {}
        "Progressing" => out.push(Problem::Progressing),
        health => out.push(Problem::Unhealthy { health: health.into() }),
    }
    if let Some(head) = head
        && app.revision.as_deref() != Some(head)
    {
        out.push(Problem::StaleRevision {
            running: app.revision.clone().unwrap_or_else(|| "none".into()),
            head: head.into(),
        });
    }
    out
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    fn app(sync: &str, health: &str, revision: &str) -> AppState {
        AppState {
            shopset: "s".into(),
            application: "s".into(),
            exists: true,
            sync: Some(sync.into()),
            health: Some(health.into()),
            revision: Some(revision.into()),
            target_revision: Some("tier-0".into()),
            conditions: Vec::new(),
        }
    }

    #[test]
    fn deployed_only_when_synced_and_healthy_at_the_head() {
        assert_eq!(problems(&app("Synced", "Healthy", "abc"), "tier-0", Some("abc")), vec![]);
        assert_eq!(problems(&app("Synced", "Progressing", "abc"), "tier-0", Some("abc")), vec![Problem::Progressing]);
        assert_eq!(
            problems(&app("OutOfSync", "Degraded", "old"), "tier-0", Some("abc")),
            vec![
                Problem::NotSynced { status: "OutOfSync".into() },
                Problem::Unhealthy { health: "Degraded".into() },
                Problem::StaleRevision { running: "old".into(), head: "abc".into() },
            ]
        );
        let mut edited = app("Synced", "Healthy", "abc");
        edited.target_revision = Some("main".into());
        edited.conditions.push(("ComparisonError".into(), "kustomize build failed".into()));
        edited.conditions.push(("OrphanedResourceWarning".into(), "a warning only".into()));
        assert_eq!(
            problems(&edited, "tier-0", Some("abc")),
            vec![
                Problem::Retargeted { target: "main".into() },
                Problem::ArgoError { condition: "ComparisonError".into(), message: "kustomize build failed".into() },
            ]
        );
        assert_eq!(problems(&AppState::default(), "tier-0", Some("abc")), vec![Problem::Missing]);
    }
}

#[cfg(test)]
mod refresh_tests {
    //! The refresh against a mocked API server: what it sends.

    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    #[tokio::test]
    async fn a_refresh_merge_patches_the_annotation_alone_and_skips_a_gone_application() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let app = |name: &str| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                "metadata": {"name": name, "namespace": "argocd"}, "spec": {"project": "default"},
            }))
            .unwrap()
        };
        let answer = serde_json::to_vec(&app("eu")).unwrap();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a patch of eu");
            assert_eq!(request.method(), Method::PATCH);
            assert_eq!(request.uri().path(), "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/eu");
            assert_eq!(request.headers()["content-type"], "application/merge-patch+json");
            let query = request.uri().query().unwrap_or_default().to_string();
            let body: Value = serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
            send.send_response(Response::builder().body(Body::from(answer)).unwrap());
            let (_, send) = handle.next_request().await.expect("a patch of gone");
            let missing = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "code": 404, "message": "applications.argoproj.io \"gone\" not found",
                                 "details": {"name": "gone", "group": "argoproj.io", "kind": "applications"}});
            send.send_response(
                Response::builder().status(404).body(Body::from(serde_json::to_vec(&missing).unwrap())).unwrap(),
            );
            (query, body)
        });
        let refreshed = refresh(&client, &[app("eu"), app("gone")]).await.expect("refreshed");
        assert_eq!(refreshed, ["argocd/eu"]);
        let (query, body) = server.await.unwrap();
        // Not an apply: the spec and labels stay owned by the server-side apply of `apply`.
        assert_eq!(body, json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}));
        assert!(query.contains("fieldManager=shopset-controller"), "{query}");
        assert!(!query.contains("force"), "{query}");
    }

    #[tokio::test]
    async fn a_prune_lists_in_pages_and_deletes_only_the_tiers_applications_not_kept() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let owner =
            Owner { tier: "tier-0", repo_url: "https://example.com/system.git", branch: "tier-0", namespace: "argocd" };
        let app = |name: &str, branch: &str| {
            json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                "metadata": {"name": name, "namespace": "argocd",
                             "labels": {MANAGED_BY.0: MANAGED_BY.1, TIER_LABEL: "tier-0"}},
                "spec": {"source": {"repoURL": "https://example.com/system.git", "targetRevision": branch}},
            })
        };
        let list = |items: Vec<Value>, next: &str| {
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationList",
                   "metadata": {"continue": next}, "items": items})
        };
        let server = tokio::spawn(async move {
            let mut queries = Vec::new();
            let pages = [
                list(vec![app("kept", "tier-0"), app("gone-1", "tier-0")], "page-2"),
                list(vec![app("elsewhere", "main"), app("gone-2", "tier-0")], ""),
            ];
            for page in pages {
                let (request, send) = handle.next_request().await.expect("a list");
                assert_eq!(request.method(), Method::GET);
                queries.push(request.uri().query().unwrap_or_default().to_string());
                send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&page).unwrap())).unwrap());
            }
            let mut deleted = Vec::new();
            for _ in 0..2 {
                let (request, send) = handle.next_request().await.expect("a delete");
                assert_eq!(request.method(), Method::DELETE);
                deleted.push(request.uri().path().rsplit('/').next().unwrap().to_string());
                send.send_response(
                    Response::builder().body(Body::from(serde_json::to_vec(&app("x", "tier-0")).unwrap())).unwrap(),
                );
            }
            (queries, deleted)
        });
        let keep = BTreeSet::from([("argocd".to_string(), "kept".to_string())]);
        let deleted = prune(&client, &owner, &keep).await.expect("pruned");
        assert_eq!(deleted, ["argocd/gone-1", "argocd/gone-2"]);
        let (queries, deleted) = server.await.unwrap();
        assert_eq!(deleted, ["gone-1", "gone-2"]);
        assert!(queries[0].contains(&format!("limit={PRUNE_PAGE}")), "{queries:?}");
        assert!(queries[1].contains("continue=page-2"), "{queries:?}");
    }
}
