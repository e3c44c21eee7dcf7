//! Argo CD Applications: the rendered `applications/*.yaml` applied to the cluster with server-side
//! apply, and the ones of ShopSets that are gone removed. `kubectl apply --server-side
//! --field-manager=shopset-controller -f applications/` does the same by hand.

use std::collections::BTreeSet;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

use crate::render::{Entry, Tree};

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

#[derive(Debug, thiserror::Error)]
pub enum ArgoError {
    #[error("rendered {path} is not an Application manifest: {detail}")]
    Manifest { path: String, detail: String },
    #[error("cannot {action} Application {namespace}/{name}: {error}")]
    Api { action: &'static str, namespace: String, name: String, error: kube::Error },
    #[error("cannot list Applications in {namespace}: {error}")]
    List { namespace: String, error: kube::Error },
}

/// The Applications of a rendered tree, parsed.
pub fn applications(tree: &Tree) -> Result<Vec<DynamicObject>, ArgoError> {
    let mut apps = Vec::new();
    for (path, entry) in &tree.entries {
        let (true, Entry::File(bytes)) = (path.starts_with("applications/") && path.ends_with(".yaml"), entry) else {
            continue;
        };
        let obj: DynamicObject = serde_yaml::from_slice(bytes)
            .map_err(|e| ArgoError::Manifest { path: path.clone(), detail: e.to_string() })?;
        if obj.metadata.name.is_none() || obj.metadata.namespace.is_none() {
            return Err(ArgoError::Manifest {
                path: path.clone(),
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
    fn owns(&self, app: &DynamicObject) -> bool {
        let text = |path: &str| app.data.pointer(path).and_then(|v| v.as_str());
        text("/spec/source/repoURL") == Some(self.repo_url) && text("/spec/source/targetRevision") == Some(self.branch)
    }
}

/// Applies `apps` and deletes the Applications of the tier that are not among them.
/// Fails closed: when listing fails, nothing is deleted.
pub async fn apply(client: &kube::Client, owner: &Owner<'_>, apps: &[DynamicObject]) -> Result<Applied, ArgoError> {
    let ar = application_resource();
    let mut out = Applied::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut keep = BTreeSet::new();
    for app in apps {
        let (ns, name) =
            (app.metadata.namespace.clone().unwrap_or_default(), app.metadata.name.clone().unwrap_or_default());
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        api.patch(&name, &params, &Patch::Apply(app)).await.map_err(|error| ArgoError::Api {
            action: "apply",
            namespace: ns.clone(),
            name: name.clone(),
            error,
        })?;
        keep.insert((ns.clone(), name.clone()));
        out.applied.push(format!("{ns}/{name}"));
    }
    out.deleted = prune(client, owner, &keep).await?;
    Ok(out)
}

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
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| ArgoError::List { namespace: namespace.into(), error })?;
    let mut deleted = Vec::new();
    for item in existing.items.iter().filter(|a| owner.owns(a)) {
        let name = item.metadata.name.clone().unwrap_or_default();
        if keep.contains(&(namespace.to_string(), name.clone())) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(format!("{namespace}/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => return Err(ArgoError::Api { action: "delete", namespace: namespace.into(), name, error }),
        }
    }
    Ok(deleted)
}

/// Deletes every Application of the tier (deletionPolicy: Delete).
pub async fn delete_all(client: &kube::Client, owner: &Owner<'_>) -> Result<Vec<String>, ArgoError> {
    prune(client, owner, &BTreeSet::new()).await
}
