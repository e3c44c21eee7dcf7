//! Offline checks of Tiers, Configurations and ShopSets.
//!
//! The checks of single fields are the CRD's CEL rules, taken from [`crate::rules`], so `shopctl`
//! refuses what the API server refuses, with the same words. [`crate::manifests::Inventory::check`]
//! adds what a schema cannot see (references between objects, duplicates, namespace collisions).

use std::collections::BTreeMap;
use std::fmt;

use kube::ResourceExt;

use crate::api::{Configuration, NamedDestination, ShopSet, Tier};
use crate::rules::{self, Check};

/// One problem found in one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `Tier/tier-0`, `ShopSet/eu-1`, ...
    pub resource: String,
    /// JSON path of the field, e.g. `spec.app.url`.
    pub field: String,
    /// The offending value (never a secret: secrets are not part of these kinds).
    pub value: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {} (got {:?}); fix: {}", self.resource, self.field, self.problem, self.value, self.fix)
    }
}

/// Every problem found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<Invalid>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

struct Checker<'a> {
    resource: String,
    out: &'a mut Vec<Invalid>,
}

impl Checker<'_> {
    fn fail(&mut self, field: &str, value: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.out.push(Invalid {
            resource: self.resource.clone(),
            field: field.to_string(),
            value: value.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn name(&mut self, field: &str, value: &str) {
        if let Some(problem) = dns_label_problem(value) {
            self.fail(
                field,
                value,
                problem,
                "use a DNS-1123 label: lower case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
            );
        }
    }

    fn url(&mut self, field: &str, value: &str) {
        if let Some(problem) = url_problem(value) {
            self.fail(
                field,
                &redact_url(value),
                problem,
                "write the repository URL as https://host/path, ssh://user@host/path, git://host/path, file:///path or user@host:path, with credentials in the Secret named by spec.credentials",
            );
        }
    }

    fn path(&mut self, field: &str, value: &str) {
        if let Some(problem) = path_problem(value) {
            self.fail(field, value, problem, "use a relative path inside the repository, like `deploy/base` or `.`");
        }
    }

    /// The first of `checks` that `value` fails, if any.
    fn checks(&mut self, field: &str, value: &str, checks: &[Check], fix: &str) {
        if let Some(problem) = rules::problem(checks, value) {
            self.fail(field, value, problem, fix);
        }
    }
}

/// Why `value` is not a DNS-1123 label, if it is not.
pub fn dns_label_problem(value: &str) -> Option<String> {
    rules::problem(rules::DNS_LABEL, value).map(String::from)
}

/// Why `value` is not a usable repository URL, if it is not.
pub fn url_problem(value: &str) -> Option<String> {
    rules::problem(rules::URL, value).map(String::from)
}

/// `value` with the password of embedded credentials (`https://user:password@host/...`) replaced
/// by `<redacted>`, so a refused URL can be shown without leaking it.
pub fn redact_url(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), value),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or_default();
            format!("{scheme}{user}:<redacted>{}", &rest[userinfo.len()..])
        }
        _ => value.to_string(),
    }
}

/// Why `value` is not a relative path inside a repository, if it is not.
pub fn path_problem(value: &str) -> Option<String> {
    rules::problem(rules::REPO_PATH, value).map(String::from)
}

/// Why `value` is not a valid git branch name, if it is not.
/// The rules are stricter than git's own (`git check-ref-format --branch`): a test in the git
/// layer holds them against libgit2's check.
pub fn branch_problem(value: &str) -> Option<String> {
    rules::problem(rules::BRANCH, value).map(String::from)
}

/// Why `value` is not a duration like `30s`, `1m` or `1h30m` of at least 1s, if it is not.
pub fn duration_problem(value: &str) -> Option<String> {
    let problem = rules::problem(rules::INTERVAL, value);
    // Shaped like a duration but too large for one (CEL's duration() fails on it, too).
    let problem = problem.or_else(|| parse_duration(value).is_none().then_some(rules::INTERVAL[0].message));
    problem.map(String::from)
}

pub use crate::duration::parse_duration;

fn resource<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}", K::kind(&()), obj.meta().name.clone().unwrap_or_default())
}

/// Checks one Tier on its own.
pub fn check_tier(tier: &Tier, out: &mut Vec<Invalid>) {
    let mut c = Checker { resource: resource(tier), out };
    c.name("metadata.name", &tier.name_any());
    let spec = &tier.spec;
    if let Some(branch) = &spec.branch
        && let Some(problem) = branch_problem(branch)
    {
        c.fail(
            "spec.branch",
            branch,
            problem,
            "choose a valid branch name such as `tier-0`, or leave it out to use the Tier's name",
        );
    }
    c.url("spec.app.url", &spec.app.url);
    c.path("spec.app.path", &spec.app.path);
    c.url("spec.system.url", &spec.system.url);
    if let Some(promotion) = &spec.promotion {
        c.name("spec.promotion.from", &promotion.from);
        if promotion.from == tier.name_any() {
            c.fail(
                "spec.promotion.from",
                &promotion.from,
                rules::PROMOTION_FROM_SELF,
                "name the tier below this one, or remove spec.promotion for the lowest tier",
            );
        }
        check_promotion_policy(&mut c, promotion);
    }
    c.name("spec.argocd.namespace", &spec.argocd.namespace);
    if let Some(ns) = &spec.argocd.destination.namespace {
        c.name("spec.argocd.destination.namespace", ns);
    }
    c.checks(
        "spec.argocd.project",
        &spec.argocd.project,
        rules::DNS_SUBDOMAIN,
        "name an Argo CD AppProject, e.g. `default`",
    );
    if let Some(credentials) = &spec.credentials {
        c.checks(
            "spec.credentials.secretRef.name",
            &credentials.secret_ref.name,
            rules::SECRET_NAME,
            "name a Secret in the Tier's namespace",
        );
    }
    check_destinations(&mut c, &spec.argocd.destinations);
    if let Some(problem) = duration_problem(&spec.interval) {
        c.fail("spec.interval", &spec.interval, problem, "write a duration such as `30s`, `1m` or `1h`");
    }
    if spec.app.url == spec.system.url {
        c.fail(
            "spec.system.url",
            &spec.system.url,
            rules::SYSTEM_IS_APP,
            "use a separate repository that only ShopSet writes",
        );
    }
}

/// The Tier's `spec.argocd.destinations`: each a named cluster with one target and label-like
/// failure domain, each name once.
fn check_destinations(c: &mut Checker<'_>, destinations: &[NamedDestination]) {
    let mut seen = BTreeMap::new();
    for (i, d) in destinations.iter().enumerate() {
        let field = format!("spec.argocd.destinations[{i}]");
        c.name(&format!("{field}.name"), &d.name);
        if let Some(first) = seen.insert(d.name.as_str(), i) {
            c.fail(
                &field,
                &d.name,
                format!("{}: spec.argocd.destinations[{first}] has this name too", rules::DESTINATION_DUPLICATE),
                "give every destination of a tier its own name",
            );
        }
        if d.server.is_some() == d.cluster.is_some() {
            let value = d.server.clone().or_else(|| d.cluster.clone()).unwrap_or_default();
            c.fail(
                &field,
                &value,
                rules::DESTINATION_TARGET,
                "write exactly one of `server: https://host:6443` and `cluster: NAME` (the name of its Argo CD cluster Secret)",
            );
        }
        if let Some(server) = &d.server {
            c.checks(
                &format!("{field}.server"),
                server,
                rules::SERVER_URL,
                "write the cluster's API server URL as Argo CD knows it, e.g. https://10.0.0.1:6443",
            );
        }
        if let Some(cluster) = &d.cluster {
            c.checks(
                &format!("{field}.cluster"),
                cluster,
                rules::CLUSTER_NAME,
                "write the `name` of the cluster's Argo CD cluster Secret",
            );
        }
        let domain = format!("{field}.failureDomain");
        if d.failure_domain.len() > rules::MAX_FAILURE_DOMAIN_LABELS {
            c.fail(
                &domain,
                &d.failure_domain.len().to_string(),
                format!("Too many: must have at most {} properties", rules::MAX_FAILURE_DOMAIN_LABELS),
                "keep the labels that say where the cluster runs, e.g. cloud, region, zone",
            );
        }
        let fix = "use label keys like `zone` and values like `eu-west-1a`: letters, digits, '-', '_' and '.'";
        for (key, value) in &d.failure_domain {
            c.checks(&domain, key, rules::FAILURE_DOMAIN_KEY, fix);
            c.checks(&domain, value, rules::FAILURE_DOMAIN_VALUE, fix);
        }
    }
}

/// Checks one Configuration on its own.
pub fn check_configuration(cfg: &Configuration, out: &mut Vec<Invalid>) {
    let mut c = Checker { resource: resource(cfg), out };
    c.name("metadata.name", &cfg.name_any());
    c.url("spec.url", &cfg.spec.url);
    c.path("spec.path", &cfg.spec.path);
}

/// Checks one ShopSet on its own.
pub fn check_shopset(ss: &ShopSet, out: &mut Vec<Invalid>) {
    let mut c = Checker { resource: resource(ss), out };
    c.name("metadata.name", &ss.name_any());
    c.name("spec.tier", &ss.spec.tier);
    c.name("spec.configuration", &ss.spec.configuration);
    if let Some(ns) = &ss.spec.namespace {
        c.name("spec.namespace", ns);
    }
    let mut seen = BTreeMap::new();
    for (i, shop) in ss.spec.shops.iter().enumerate() {
        let field = format!("spec.shops[{i}]");
        c.checks(
            &field,
            shop,
            rules::SHOP_ID,
            "use letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 63 characters",
        );
        if let Some(first) = seen.insert(shop.as_str(), i) {
            c.fail(&field, shop, rules::SHOP_DUPLICATE, format!("remove it here or at spec.shops[{first}]"));
        }
    }
    if ss.spec.shops.len() > rules::MAX_SHOPS {
        let count = ss.spec.shops.len().to_string();
        c.fail(
            "spec.shops",
            &count,
            format!("Too many: must have at most {} items", rules::MAX_SHOPS),
            "split the shops over several ShopSets",
        );
    }
    if let Some(replicas) = ss.spec.replicas
        && !(0..=1000).contains(&replicas)
    {
        c.fail(
            "spec.replicas",
            &replicas.to_string(),
            rules::REPLICAS_RANGE,
            "set a replica count in that range, or leave it out",
        );
    }
    if let Some(capacity) = ss.spec.capacity {
        if !(1..=rules::MAX_SHOPS).contains(&(capacity as usize)) {
            c.fail(
                "spec.capacity",
                &capacity.to_string(),
                rules::CAPACITY_RANGE,
                "set how many shops the cell can serve, or leave it out",
            );
        } else if ss.spec.shops.len() > capacity as usize {
            c.fail(
                "spec.shops",
                &format!("{} shops, capacity {capacity}", ss.spec.shops.len()),
                rules::SHOPS_OVER_CAPACITY,
                format!(
                    "raise spec.capacity to at least {}, or move shops to another ShopSet with `shopctl shop move SHOP --to SHOPSET`",
                    ss.spec.shops.len()
                ),
            );
        }
    }
    for (i, image) in ss.spec.images.iter().enumerate() {
        let field = format!("spec.images[{i}]");
        c.checks(
            &format!("{field}.name"),
            &image.name,
            rules::IMAGE_NAME,
            "write the image name as the base has it, e.g. `ghcr.io/acme/shop`",
        );
        if image.new_name.is_none() && image.new_tag.is_none() && image.digest.is_none() {
            c.fail(
                &field,
                &image.name,
                rules::IMAGE_CHANGES_NOTHING,
                "set newName, newTag or digest, or remove the entry",
            );
        }
        for (key, value, checks, fix) in [
            ("newName", &image.new_name, rules::IMAGE_NAME, "write an image name such as `ghcr.io/acme/shop`"),
            ("newTag", &image.new_tag, rules::IMAGE_TAG, "write a tag such as `1.2.0`"),
            ("digest", &image.digest, rules::IMAGE_DIGEST, "write a digest such as `sha256:` and 64 hex digits"),
        ] {
            if let Some(value) = value {
                c.checks(&format!("{field}.{key}"), value, checks, fix);
            }
        }
    }
    if let Some(maintenance) = &ss.spec.maintenance {
        c.checks(
            "spec.maintenance.reason",
            &maintenance.reason,
            rules::MAINTENANCE_REASON,
            "say why in at most 1024 characters: `shopctl maintenance on SHOPSET --reason TEXT`",
        );
        let mut seen = BTreeMap::new();
        for (i, shop) in maintenance.shops.iter().enumerate() {
            let field = format!("spec.maintenance.shops[{i}]");
            c.checks(&field, shop, rules::SHOP_ID, "name a shop ID of spec.shops");
            if let Some(first) = seen.insert(shop.as_str(), i) {
                c.fail(
                    &field,
                    shop,
                    rules::SHOP_DUPLICATE,
                    format!("remove it here or at spec.maintenance.shops[{first}]"),
                );
            }
            if !ss.spec.shops.contains(shop) {
                c.fail(
                    "spec.maintenance.shops",
                    shop,
                    rules::MAINTENANCE_SHOP_NOT_SERVED,
                    format!("add {shop} to spec.shops, or take it out of maintenance"),
                );
            }
        }
    }
    if ss.spec.images.len() > rules::MAX_IMAGES {
        let count = ss.spec.images.len().to_string();
        c.fail(
            "spec.images",
            &count,
            format!("Too many: must have at most {} items", rules::MAX_IMAGES),
            "override fewer images",
        );
    }
}

/// The policy fields of `spec.promotion` ([`crate::policy`]).
fn check_promotion_policy(c: &mut Checker<'_>, promotion: &crate::api::Promotion) {
    let duration_fix = "write a duration such as `30m`, `2h` or `1h30m`";
    if let Some(soak) = &promotion.soak
        && let Some(problem) = duration_problem_of(rules::DURATION, soak)
    {
        c.fail("spec.promotion.soak", soak, problem, duration_fix);
    }
    for (i, w) in promotion.windows.iter().enumerate() {
        let at = |f: &str| format!("spec.promotion.windows[{i}].{f}");
        c.checks(&at("schedule"), &w.schedule, rules::SCHEDULE, "write when the window opens, e.g. `0 18 * * FRI`");
        if let Some(problem) = duration_problem_of(rules::WINDOW_DURATION, &w.duration) {
            c.fail(&at("duration"), &w.duration, problem, duration_fix);
        }
        // The API server checks the shape; the database, only here (and in the controller).
        if crate::policy::time_zone(&w.time_zone).is_none() {
            c.fail(
                &at("timeZone"),
                &w.time_zone,
                rules::TIME_ZONE_INVALID,
                "name a zone of the IANA database, e.g. `Europe/Berlin`, or leave it out for UTC",
            );
        }
    }
    if promotion.windows.len() > rules::MAX_WINDOWS {
        let count = promotion.windows.len().to_string();
        c.fail(
            "spec.promotion.windows",
            &count,
            format!("Too many: must have at most {} items", rules::MAX_WINDOWS),
            "merge windows: a schedule may list several days and hours",
        );
    }
    if let Some(approvals) = promotion.approvals
        && !(0..=100).contains(&approvals)
    {
        c.fail(
            "spec.promotion.approvals",
            &approvals.to_string(),
            rules::APPROVALS_RANGE,
            "set 0 or more, or leave it out",
        );
    }
    if let Some(hold) = &promotion.hold {
        c.checks("spec.promotion.hold.reason", &hold.reason, rules::HOLD_REASON, "say why in at most 1024 characters");
    }
}

/// The first of `checks` a duration fails, or that it is too large to be one.
fn duration_problem_of(checks: &[Check], value: &str) -> Option<&'static str> {
    rules::problem(checks, value).or_else(|| parse_duration(value).is_none().then_some(rules::DURATION[0].message))
}
