//! The custom resources of group `shopset.dev`, version `v1alpha1`.
//!
//! The CRDs under `deploy/crds/` are generated from these types (`shopctl crds`); a test keeps them
//! equal. The CEL rules of the schema come from [`crate::rules`], which [`crate::validation`] checks
//! offline, so the API server and `shopctl` refuse the same input with the same words.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
/// The trait of `name_any()` and `namespace()` on every kind, for layers that know no Kubernetes client.
pub use kube::ResourceExt;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a Tier recording the last promotion into it forced past its promotion policy
/// (`shopctl promote --override-policy`): who, when, and what the policy said.
pub const FORCED_PROMOTION: &str = "shopset.dev/forced-promotion";

/// API group of every ShopSet kind.
pub const GROUP: &str = "shopset.dev";
/// API version of every ShopSet kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "shopset.dev/v1alpha1";

/// A tier of the rollout: one branch in the app, configuration and system repositories, and the
/// Argo CD settings of the Applications it generates.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shopset.dev",
    version = "v1alpha1",
    kind = "Tier",
    namespaced,
    status = "TierStatus",
    shortname = "tr",
    category = "shop",
    doc = "A rollout tier: one branch in the app, configuration and system repositories.",
    printcolumn = r#"{"name":"Branch","type":"string","jsonPath":".status.branch"}"#,
    printcolumn = r#"{"name":"From","type":"string","jsonPath":".spec.promotion.from"}"#,
    printcolumn = r#"{"name":"App","type":"string","description":"App repository commit pinned on the system branch","jsonPath":".status.appCommitShort"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    /// Branch of this tier in the app, configuration and system repositories. Default: the Tier's
    /// name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub branch: Option<String>,
    /// The human-owned application repository and the path of its Kustomize base.
    pub app: AppSource,
    /// The system repository that only the controller (or `shopctl sync`) writes.
    pub system: SystemRepository,
    /// Where this tier is promoted from. Absent for the lowest tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// Settings of the Argo CD Applications generated for this tier's ShopSets.
    #[serde(default)]
    pub argocd: ArgoCdSettings,
    /// Git credentials for every repository of this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// How often the app and configuration branch heads are polled, e.g. `30s`, `1m`, `1h`.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 64))]
    pub interval: String,
    /// What happens to the Argo CD Applications when the Tier is deleted. Branches are never
    /// deleted: history is data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_interval() -> String {
    "1m".to_string()
}

/// An application repository and the path of its Kustomize base.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppSource {
    /// Repository URL (`https://`, `http://`, `ssh://`, `git://` or `user@host:path`), without
    /// credentials. `file://` only for `shopctl`, or a controller started with `--allow-local-urls`.
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Path of the Kustomize base inside the repository. Default: the repository root.
    #[serde(default = "default_path")]
    #[schemars(length(max = 1024))]
    pub path: String,
}

fn default_path() -> String {
    ".".to_string()
}

/// The system repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemRepository {
    /// Repository URL, without credentials. Argo CD reads the same URL.
    #[schemars(length(max = 2048))]
    pub url: String,
}

/// Where a tier is promoted from, and the policy of promotions into it ([`crate::policy`]), which
/// the controller, `shopctl promote` and a person by hand (docs/runbook.md) apply alike.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// Name of the Tier this one is promoted from (in the same namespace).
    #[schemars(length(max = 253))]
    pub from: String,
    /// How long the `from` Tier must have been Synced and Healthy at the promoted commit, without a
    /// break, e.g. `30m`: measured from its `Deployed` condition's lastTransitionTime. Absent: no soak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub soak: Option<String>,
    /// Allow and deny windows, as Argo CD's sync windows: no promotion into this tier starts inside
    /// a deny window, nor outside every allow window when there is one. Deny wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::rules::MAX_WINDOWS))]
    pub windows: Vec<PromotionWindow>,
    /// The controller promotes `from` into this tier by itself when the gate, the soak and the
    /// windows allow it and no hold is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
    /// Automatic promotions open a pull request per repository instead of pushing (the controller
    /// needs a GitHub token: --github-token-file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull_request: bool,
    /// Approving reviews each promotion pull request needs before the controller merges them
    /// together (automatic promotion) or `shopctl merge-promotion` does. Absent: the controller
    /// leaves merging to a person, and `shopctl merge-promotion` asks for 1. 0: merged at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<i32>,
    /// Automatic promotion into this tier is held: set by `shopctl hold` and by `shopctl rollback`,
    /// cleared by `shopctl release` (or by editing this field in git or with kubectl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

/// A promotion window: from each start that `schedule` names, for `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionWindow {
    /// `allow` or `deny`.
    pub kind: WindowKind,
    /// When the window opens: a 5-field cron expression (minute hour day-of-month month
    /// day-of-week), e.g. `0 18 * * FRI`, read in `timeZone`.
    #[schemars(length(max = 256))]
    pub schedule: String,
    /// How long it stays open from each start, e.g. `63h`.
    #[schemars(length(max = 64))]
    pub duration: String,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin`. Default: UTC.
    #[serde(default = "default_time_zone")]
    #[schemars(length(max = 64))]
    pub time_zone: String,
    /// A name for messages (`window 'weekend'`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// What a promotion window does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WindowKind {
    /// Promotions may start inside it (and, when a tier has any, only inside one).
    Allow,
    /// No promotion starts inside it.
    Deny,
}

/// A hold on promotions into a tier: human intent, kept in the Tier's spec so that git and
/// `kubectl get tier -o yaml` both show it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// Why, as `shopctl status` shows it.
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// When the hold was set (RFC 3339, UTC). `shopctl doctor` reports a hold older than a day.
    pub since: Time,
    /// Who set it (a person, or `shopctl rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub by: Option<String>,
}

/// Settings of the generated Argo CD Applications.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgoCdSettings {
    /// Namespace of Argo CD, where the Applications are created.
    #[serde(default = "default_argocd_namespace")]
    #[schemars(length(max = 253))]
    pub namespace: String,
    /// Argo CD project of the Applications.
    #[serde(default = "default_project")]
    #[schemars(length(max = 253))]
    pub project: String,
    /// Where the Applications deploy to when `destinations` is empty, and the default namespace
    /// of every destination.
    #[serde(default)]
    pub destination: Destination,
    /// The clusters this tier's ShopSets may deploy to, each in a failure domain. Empty: every
    /// ShopSet deploys to `destination`. A ShopSet names one in `spec.destination`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]), length(max = crate::rules::MAX_DESTINATIONS))]
    pub destinations: Vec<NamedDestination>,
    /// Sync policy copied into every Application. Absent: manual sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<SyncPolicy>,
}

impl Default for ArgoCdSettings {
    fn default() -> Self {
        Self {
            namespace: default_argocd_namespace(),
            project: default_project(),
            destination: Destination::default(),
            destinations: Vec::new(),
            sync_policy: None,
        }
    }
}

fn default_argocd_namespace() -> String {
    "argocd".to_string()
}

fn default_project() -> String {
    "default".to_string()
}

/// An Application destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// API server URL of the target cluster.
    #[serde(default = "default_server")]
    #[schemars(length(min = 1, max = 2048))]
    pub server: String,
    /// Default namespace for ShopSets of this tier that set no `spec.namespace`. Absent: each
    /// ShopSet deploys into a namespace named after itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub namespace: Option<String>,
}

impl Default for Destination {
    fn default() -> Self {
        Self { server: default_server(), namespace: None }
    }
}

fn default_server() -> String {
    "https://kubernetes.default.svc".to_string()
}

/// One cluster of a tier's fleet: an Argo CD destination with a name and a failure domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedDestination {
    /// Name that ShopSets use in `spec.destination`.
    #[schemars(length(max = 63))]
    pub name: String,
    /// API server URL of the cluster, as Argo CD's `destination.server`. Set this or `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub server: Option<String>,
    /// Name of the cluster as Argo CD knows it (its cluster Secret's `name`), as Argo CD's
    /// `destination.name`. Set this or `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub cluster: Option<String>,
    /// Where the cluster runs, as free-form labels such as `cloud`, `region`, `zone`. ShopSets of
    /// a tier are spread over the distinct failure domains.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = crate::rules::MAX_FAILURE_DOMAIN_LABELS,
        "additionalProperties" = { "type": "string", "maxLength": 63 }
    ))]
    pub failure_domain: BTreeMap<String, String>,
}

/// The part of Argo CD's sync policy that a Tier sets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Sync automatically when the system branch moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<AutomatedSync>,
    /// Argo CD sync options, e.g. `ServerSideApply=true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
}

/// Argo CD's automated sync settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutomatedSync {
    /// Delete resources that are no longer in git.
    #[serde(default)]
    pub prune: bool,
    /// Revert changes made in the cluster outside git.
    #[serde(default)]
    pub self_heal: bool,
}

/// Where git credentials come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// A Secret in the Tier's namespace with `username` and `password` (a token goes in
    /// `password`) for HTTPS, or `identity` (an SSH private key) and optionally `known_hosts`.
    pub secret_ref: SecretRef,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(max = 253))]
    pub name: String,
}

/// What deleting a Tier does to its Applications.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the Applications in place.
    #[default]
    Retain,
    /// Delete the Applications this Tier generated.
    Delete,
}

/// Observed state of a Tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Standard conditions: `Ready`, `Reconciling` and `Stalled` (as Flux uses them), `Rendered`,
    /// `Pushed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The branch in use (spec.branch or the Tier's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// App repository commit pinned on the system branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_commit: Option<String>,
    /// Its short form, as `git log --oneline` and Argo CD show it (`kubectl get tiers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_commit_short: Option<String>,
    /// Configuration repository commits pinned on the system branch, by Configuration name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configuration_commits: BTreeMap<String, String>,
    /// Head of the system branch after the last successful sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_commit: Option<String>,
    /// When the last sync succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// A configuration repository: it has the same tier branches as the app repository and holds a
/// Kustomize Component that ShopSet overlays include.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shopset.dev",
    version = "v1alpha1",
    kind = "Configuration",
    namespaced,
    status = "ConfigurationStatus",
    shortname = "shopconfig",
    category = "shop",
    doc = "A configuration repository whose Kustomize Component ShopSet overlays include.",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationSpec {
    /// Repository URL, without credentials (the Tier's credentials are used).
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Path of the Kustomize Component inside the repository. Default: the repository root.
    #[serde(default = "default_path")]
    #[schemars(length(max = 1024))]
    pub path: String,
}

/// Observed state of a Configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One cell of the application: a copy of the app base for a set of shops, in one tier.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "shopset.dev",
    version = "v1alpha1",
    kind = "ShopSet",
    namespaced,
    status = "ShopSetStatus",
    shortname = "ss",
    category = "shop",
    doc = "One cell: the app base deployed for a set of shops in one tier.",
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
    printcolumn = r#"{"name":"Configuration","type":"string","jsonPath":".spec.configuration"}"#,
    printcolumn = r#"{"name":"Shops","type":"integer","jsonPath":".status.shopCount"}"#,
    printcolumn = r#"{"name":"Application","type":"string","jsonPath":".status.application"}"#,
    printcolumn = r#"{"name":"Sync","type":"string","description":"Argo CD sync status of the Application","jsonPath":".status.syncStatus"}"#,
    printcolumn = r#"{"name":"Health","type":"string","description":"Argo CD health status of the Application","jsonPath":".status.healthStatus"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Maintenance","type":"string","description":"Why the ShopSet, or some of its shops, is in maintenance","jsonPath":".spec.maintenance.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ShopSetSpec {
    /// Name of the Tier this ShopSet belongs to (same namespace).
    #[schemars(length(max = 253))]
    pub tier: String,
    /// Name of the Configuration whose Component the overlay includes (same namespace).
    #[schemars(length(max = 253))]
    pub configuration: String,
    /// Shop IDs served by this cell; written into the generated ConfigMap `shopset`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = crate::rules::MAX_SHOPS), inner(length(max = 63)))]
    pub shops: Vec<String>,
    /// Replicas of every Deployment of the base. Absent: as the base says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Image overrides, as Kustomize's `images` field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::rules::MAX_IMAGES))]
    pub images: Vec<ImageOverride>,
    /// Namespace the cell deploys into. Default: the Tier's destination namespace, else the
    /// ShopSet's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub namespace: Option<String>,
    /// Maintenance of the whole ShopSet or of some of its shops (`shopctl maintenance on|off`).
    /// Absent: none. The generated ConfigMap `shopset` lists the shops in maintenance
    /// (`MAINTENANCE_SHOP_IDS`); for the whole ShopSet, its Application has no automated sync
    /// until maintenance ends, and the promotion gate passes the ShopSet over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// Name of the Tier's destination (`spec.argocd.destinations`) the cell deploys to. Absent:
    /// the Tier's `spec.argocd.destination`. Moving a cell is `shopctl shopset move`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub destination: Option<String>,
    /// How many shops the cell can serve; placement (`shopctl shop add`) fills it no further.
    /// Absent: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// Maintenance of a ShopSet, kept in its spec so that who turned it on, when and why is in git.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Maintenance {
    /// Why, as `shopctl status` and `doctor` show it. Not given to the workloads.
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// When maintenance was turned on (RFC 3339, UTC); `shopctl maintenance on` writes it.
    /// `shopctl doctor` warns when it is older than `--maintenance-max-age`.
    pub since: Time,
    /// Shop IDs in maintenance, each one of `spec.shops`. Empty: the whole ShopSet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = crate::rules::MAX_SHOPS), inner(length(max = 63)))]
    pub shops: Vec<String>,
}

impl Maintenance {
    /// Whether the whole ShopSet is in maintenance (not only some of its shops).
    pub fn whole(&self) -> bool {
        self.shops.is_empty()
    }
}

/// An image override (Kustomize `images` entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageOverride {
    /// Image name as written in the base.
    #[schemars(length(max = 512))]
    pub name: String,
    /// Replacement image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub new_name: Option<String>,
    /// Replacement tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub new_tag: Option<String>,
    /// Replacement digest (`sha256:...`); wins over the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub digest: Option<String>,
}

/// Observed state of a ShopSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShopSetStatus {
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of shops served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop_count: Option<i64>,
    /// Path of the overlay on the system branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_path: Option<String>,
    /// Name of the Argo CD Application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// Argo CD sync status of the Application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<String>,
    /// Argo CD health status of the Application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    /// System repository revision the Application runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl Tier {
    /// The branch of this tier: `spec.branch`, else the Tier's name.
    pub fn branch(&self) -> String {
        self.spec.branch.clone().unwrap_or_else(|| self.name_any())
    }
}

impl ShopSet {
    /// Namespace the cell deploys into.
    pub fn destination_namespace(&self, tier: &Tier) -> String {
        self.spec
            .namespace
            .clone()
            .or_else(|| tier.spec.argocd.destination.namespace.clone())
            .unwrap_or_else(|| self.name_any())
    }

    /// The shops in maintenance: every shop when the whole ShopSet is, else the ones listed.
    pub fn shops_in_maintenance(&self) -> Vec<String> {
        match &self.spec.maintenance {
            None => Vec::new(),
            Some(m) if m.whole() => self.spec.shops.clone(),
            Some(m) => m.shops.clone(),
        }
    }

    /// Whether the whole ShopSet is in maintenance.
    pub fn wholly_in_maintenance(&self) -> bool {
        self.spec.maintenance.as_ref().is_some_and(Maintenance::whole)
    }

    /// The failure domain of the cell: that of the Tier destination its `spec.destination` names.
    /// None when it names none, names one the Tier does not list, or that one has no labels.
    pub fn failure_domain<'t>(&self, tier: &'t Tier) -> Option<&'t BTreeMap<String, String>> {
        let name = self.spec.destination.as_deref()?;
        let destination = tier.spec.argocd.destinations.iter().find(|d| d.name == name)?;
        (!destination.failure_domain.is_empty()).then_some(&destination.failure_domain)
    }
}

type Crd = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The CRDs of every kind, in a stable order, with the CEL rules of [`crate::rules`].
pub fn crds() -> Vec<Crd> {
    [Configuration::crd(), ShopSet::crd(), Tier::crd()].into_iter().map(with_rules).collect()
}

/// `crd` with the rules of [`crate::rules`] in its schema. The table and the types are both
/// compiled in and covered by tests, so a mismatch between them is a bug: it panics.
fn with_rules(crd: Crd) -> Crd {
    let kind = crd.spec.names.kind.clone();
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    let schema = value
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema")
        .expect("kube generates a schema for every version");
    crate::rules::add_rules(&kind, schema)
        .unwrap_or_else(|e| panic!("crate::rules::FIELDS does not fit the types: {e}"));
    serde_json::from_value(value).expect("rules are valid schema extensions")
}

/// The CRDs as one multi-document YAML stream (what `shopctl crds` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (_, yaml) in crd_files()? {
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

/// The files under `deploy/crds/`: one per CRD, named after it, plus a kustomization.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    let mut files = Vec::new();
    let mut names = Vec::new();
    for crd in crds() {
        let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
        files.push((name.clone(), serde_yaml::to_string(&crd)?));
        names.push(name);
    }
    let mut kustomization = String::from(
        "# Generated by `shopctl crds --write deploy/crds`; a test keeps it equal to the Rust types.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for name in names {
        kustomization.push_str(&format!("- {name}\n"));
    }
    files.push(("kustomization.yaml".to_string(), kustomization));
    Ok(files)
}
