//! A tier's fleet of clusters: which of its destinations each ShopSet deploys to.
//!
//! One function ([`destination_of`]) answers it for the render, the offline checks, `doctor`,
//! `status` and `shopctl shopset move`, so they cannot disagree on where a ShopSet runs.

use std::collections::BTreeMap;
use std::fmt;

use kube::ResourceExt;

use crate::api::{NamedDestination, ShopSet, Tier};
use crate::rules;
use crate::validation::Invalid;

/// Where Argo CD sends an Application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target<'a> {
    /// A cluster by its API server URL (Argo CD's `destination.server`).
    Server(&'a str),
    /// A cluster by the name of its Argo CD cluster Secret (Argo CD's `destination.name`).
    Cluster(&'a str),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Server(server) => write!(f, "server {server}"),
            Target::Cluster(name) => write!(f, "cluster {name}"),
        }
    }
}

/// The destination one ShopSet deploys to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed<'a> {
    /// Name of the Tier's destination; `None` for the Tier's single `spec.argocd.destination`.
    pub name: Option<&'a str>,
    pub target: Target<'a>,
    /// The destination's failure domain (`None`: the Tier's single destination, which has none).
    pub failure_domain: Option<&'a BTreeMap<String, String>>,
}

impl Placed<'_> {
    /// The failure domain as people read it: `cloud=aws,region=eu-west-1`, or `-` for none.
    pub fn failure_domain_text(&self) -> String {
        failure_domain_text(self.failure_domain)
    }
}

/// `cloud=aws,region=eu-west-1`, or `-` for no labels.
pub fn failure_domain_text(domain: Option<&BTreeMap<String, String>>) -> String {
    match domain {
        Some(d) if !d.is_empty() => d.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        _ => "-".to_string(),
    }
}

/// Where `destination` sends its Applications.
pub fn target(destination: &NamedDestination) -> Target<'_> {
    match (&destination.server, &destination.cluster) {
        (Some(server), _) => Target::Server(server),
        (None, Some(cluster)) => Target::Cluster(cluster),
        // Refused by the CRD and the offline checks; a server-less entry that got through anyway
        // (an old API server without CEL) goes where the Tier's single destination would.
        (None, None) => Target::Server("https://kubernetes.default.svc"),
    }
}

/// Why a ShopSet's destination cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ShopSet/{shopset}: spec.destination: {problem} (got {value:?}); fix: {fix}")]
pub struct DestinationError {
    pub shopset: String,
    /// What `spec.destination` says (empty when absent).
    pub value: String,
    pub problem: String,
    pub fix: String,
}

impl From<DestinationError> for Invalid {
    fn from(e: DestinationError) -> Self {
        Invalid {
            resource: format!("ShopSet/{}", e.shopset),
            field: "spec.destination".into(),
            value: e.value,
            problem: e.problem,
            fix: e.fix,
        }
    }
}

/// The names of the Tier's destinations, as a fix lists them.
pub fn destination_names(tier: &Tier) -> String {
    tier.spec.argocd.destinations.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The destination of the Tier named `name`, if it lists one.
pub fn find<'a>(tier: &'a Tier, name: &str) -> Option<&'a NamedDestination> {
    tier.spec.argocd.destinations.iter().find(|d| d.name == name)
}

/// Where `ss` deploys: the Tier's destination it names; the only one when it names none and the
/// Tier lists one; the Tier's `spec.argocd.destination` when the Tier lists none.
///
/// # Errors
/// When the ShopSet names a destination the Tier does not list, or none of several: a ShopSet is
/// never placed on a cluster by a guess.
pub fn destination_of<'a>(tier: &'a Tier, ss: &'a ShopSet) -> Result<Placed<'a>, DestinationError> {
    let list = &tier.spec.argocd.destinations;
    let fail = |problem: String, fix: String| DestinationError {
        shopset: ss.name_any(),
        value: ss.spec.destination.clone().unwrap_or_default(),
        problem,
        fix,
    };
    let placed = |d: &'a NamedDestination| Placed {
        name: Some(d.name.as_str()),
        target: target(d),
        failure_domain: Some(&d.failure_domain),
    };
    match (ss.spec.destination.as_deref(), list.as_slice()) {
        (None, []) => Ok(Placed {
            name: None,
            target: Target::Server(&tier.spec.argocd.destination.server),
            failure_domain: None,
        }),
        (None, [only]) => Ok(placed(only)),
        (None, _) => Err(fail(
            format!("{} (Tier {} lists several)", rules::DESTINATION_MISSING, tier.name_any()),
            format!("set spec.destination to one of {}", destination_names(tier)),
        )),
        (Some(_), []) => Err(fail(
            rules::DESTINATION_WITHOUT_LIST.to_string(),
            format!(
                "add that destination to Tier {}'s spec.argocd.destinations, or remove spec.destination",
                tier.name_any()
            ),
        )),
        (Some(name), _) => match find(tier, name) {
            Some(d) => Ok(placed(d)),
            None => Err(fail(
                format!("{} ({})", rules::DESTINATION_UNKNOWN, tier.name_any()),
                format!("set spec.destination to one of {}", destination_names(tier)),
            )),
        },
    }
}

/// Where a rendered Application deploys, as a commit message names it: the name of its Tier's
/// destination (its `shopset.dev/destination` label), else its `server`, else its cluster `name`.
/// `None` when the bytes are not an Application with a destination.
pub fn application_destination(yaml: &[u8]) -> Option<String> {
    let app: serde_json::Value = serde_yaml::from_slice(yaml).ok()?;
    let text = |p: &str| app.pointer(p).and_then(serde_json::Value::as_str).map(String::from);
    text("/metadata/labels/shopset.dev~1destination")
        .or_else(|| text("/spec/destination/server"))
        .or_else(|| text("/spec/destination/name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ShopSetSpec;

    fn tier(destinations: &[(&str, Option<&str>, Option<&str>)]) -> Tier {
        let mut tier: Tier = serde_json::from_value(serde_json::json!({
            "apiVersion": "shopset.dev/v1alpha1", "kind": "Tier", "metadata": {"name": "tier-0"},
            "spec": {"app": {"url": "https://git.example.com/app.git"}, "system": {"url": "https://git.example.com/system.git"}},
        }))
        .unwrap();
        tier.spec.argocd.destinations = destinations
            .iter()
            .map(|(name, server, cluster)| NamedDestination {
                name: name.to_string(),
                server: server.map(String::from),
                cluster: cluster.map(String::from),
                failure_domain: BTreeMap::from([("zone".to_string(), format!("zone-{name}"))]),
            })
            .collect();
        tier
    }

    fn shopset(destination: Option<&str>) -> ShopSet {
        let spec: ShopSetSpec = serde_json::from_value(serde_json::json!({
            "tier": "tier-0", "configuration": "cfg", "shops": ["a"], "destination": destination,
        }))
        .unwrap();
        ShopSet::new("eu-1", spec)
    }

    #[test]
    fn an_application_names_its_destination_by_label_else_by_server_or_cluster() {
        let app = |labels: &str, dest: &str| {
            format!(
                "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: a\n  labels: {{{labels}}}\nspec:\n  destination: {{{dest}}}\n"
            )
        };
        let named = app("\"shopset.dev/destination\": dc-b", "name: prod-b");
        assert_eq!(application_destination(named.as_bytes()).as_deref(), Some("dc-b"));
        let plain = app("", "server: \"https://kubernetes.default.svc\"");
        assert_eq!(application_destination(plain.as_bytes()).as_deref(), Some("https://kubernetes.default.svc"));
        assert_eq!(application_destination(app("", "name: prod-b").as_bytes()).as_deref(), Some("prod-b"));
        assert_eq!(application_destination(b"not: [an application"), None);
    }

    #[test]
    fn a_tier_without_destinations_deploys_where_it_always_did() {
        let t = tier(&[]);
        let none = shopset(None);
        let placed = destination_of(&t, &none).unwrap();
        assert_eq!(
            placed,
            Placed { name: None, target: Target::Server("https://kubernetes.default.svc"), failure_domain: None }
        );
        let err = destination_of(&t, &shopset(Some("dc-a"))).unwrap_err();
        assert_eq!(err.problem, rules::DESTINATION_WITHOUT_LIST);
    }

    #[test]
    fn a_named_destination_is_found_by_server_or_cluster_name() {
        let t = tier(&[("dc-a", Some("https://a.example.com:6443"), None), ("dc-b", None, Some("prod-b"))]);
        let (a, b) = (shopset(Some("dc-a")), shopset(Some("dc-b")));
        assert_eq!(destination_of(&t, &a).unwrap().target, Target::Server("https://a.example.com:6443"));
        let b = destination_of(&t, &b).unwrap();
        assert_eq!((b.name, b.target), (Some("dc-b"), Target::Cluster("prod-b")));
        assert_eq!(b.failure_domain_text(), "zone=zone-dc-b");
    }

    #[test]
    fn an_unknown_or_missing_name_lists_the_names_it_could_be() {
        let t = tier(&[("dc-a", Some("https://a"), None), ("dc-b", None, Some("b")), ("dc-c", None, Some("c"))]);
        let err = destination_of(&t, &shopset(Some("dc-z"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ShopSet/eu-1: spec.destination: names no destination of its Tier (tier-0) (got \"dc-z\"); fix: set spec.destination to one of dc-a, dc-b, dc-c"
        );
        let err = destination_of(&t, &shopset(None)).unwrap_err();
        assert!(err.problem.starts_with(rules::DESTINATION_MISSING), "{err}");
        assert!(err.fix.ends_with("one of dc-a, dc-b, dc-c"), "{err}");
        // One destination needs no name.
        let one = tier(&[("dc-a", Some("https://a"), None)]);
        let none = shopset(None);
        assert_eq!(destination_of(&one, &none).unwrap().name, Some("dc-a"));
    }
}
