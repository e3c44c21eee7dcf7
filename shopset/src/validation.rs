//! Offline checks of Tiers, Configurations and ShopSets.
//!
//! These mirror the CRD schema (patterns, lengths, CEL rules) and add what a schema cannot see
//! (references between objects, duplicates, namespace collisions), so `shopctl` refuses bad input
//! before anything is written, with the same words the API server uses where they overlap.

use std::collections::BTreeMap;
use std::fmt;

use kube::ResourceExt;

use crate::api::{Configuration, ShopSet, Tier};

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
        write!(
            f,
            "{}: {}: {} (got {:?}); fix: {}",
            self.resource, self.field, self.problem, self.value, self.fix
        )
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
}

/// Why `value` is not a DNS-1123 label, if it is not.
pub fn dns_label_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".into());
    }
    if value.len() > 63 {
        return Some(format!("is {} characters long, at most 63 are allowed", value.len()));
    }
    if value.contains('/') || value.contains("..") {
        return Some("must not contain '/' or '..'".into());
    }
    if value.chars().any(|c| c.is_ascii_uppercase()) {
        return Some("must be lower case".into());
    }
    let ok_chars = value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = !value.starts_with('-') && !value.ends_with('-');
    if !ok_chars || !ok_ends {
        return Some("must consist of lower case letters, digits and '-', and start and end with a letter or digit".into());
    }
    None
}

/// Why `value` is not a usable repository URL, if it is not.
pub fn url_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".into());
    }
    if value.len() > 2048 {
        return Some("is longer than 2048 characters".into());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\') {
        return Some("must not contain spaces, quotes, backslashes or control characters".into());
    }
    if let Some((scheme, rest)) = value.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
            return Some(format!("has the unsupported scheme {scheme:?} (https, http, ssh, git or file)"));
        }
        if scheme == "file" {
            return (!rest.starts_with('/')).then(|| "a file URL must be absolute: file:///path".into());
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Some("has no host".into());
        }
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') || scheme != "ssh" {
                return Some("must not embed credentials".into());
            }
        }
        return None;
    }
    // scp-like syntax: user@host:path
    match value.split_once(':') {
        Some((userhost, path)) if !path.is_empty() && !userhost.is_empty() && !userhost.contains('/') => {
            match userhost.split_once('@') {
                Some((user, host)) if !user.is_empty() && !host.is_empty() && !user.contains(':') => None,
                _ => Some("has no scheme: write https://host/path, or user@host:path for SSH".into()),
            }
        }
        _ => Some("has no scheme: write https://host/path, or user@host:path for SSH".into()),
    }
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
    if value.is_empty() {
        return Some("must not be empty (use `.` for the repository root)".into());
    }
    if value.starts_with('/') {
        return Some("must be relative to the repository root".into());
    }
    if value.split('/').any(|part| part == "..") {
        return Some("must not contain '..'".into());
    }
    // As the CRD's pattern: `.` alone, or starting with a letter, digit or '_'.
    if value != "." && !value.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Some("must be `.` or start with a letter, digit or '_' (write `base`, not `./base`)".into());
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')) {
        return Some("may contain only letters, digits, '.', '_', '-' and '/'".into());
    }
    None
}

/// Why `value` is not a valid git branch name, if it is not.
pub fn branch_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".into());
    }
    if value.len() > 244 {
        return Some("is longer than 244 characters".into());
    }
    // git2 checks the ref name; `git check-ref-format --branch` also refuses a leading '-' and HEAD.
    if !git2::Reference::is_valid_name(&format!("refs/heads/{value}")) || value.starts_with('-') || value == "HEAD" {
        return Some("is not a valid git branch name (see `git check-ref-format --branch`)".into());
    }
    None
}

/// Why `value` is not a duration like `30s`, `1m` or `1h30m`, if it is not.
pub fn duration_problem(value: &str) -> Option<String> {
    match parse_duration(value) {
        Some(d) if d < std::time::Duration::from_secs(1) => Some("must be at least 1s (a faster poll only loads the git server; use the webhook for speed)".into()),
        Some(_) => None,
        None => Some("is not a duration like `30s`, `1m` or `1h30m`".into()),
    }
}

/// Parses a Go-style duration (`1h30m`, `45s`, `1.5m`, `500ms`).
pub fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = value;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        // As the CRD's pattern: digits, optionally `.` and more digits (not `.5` or `1.`).
        let (whole, fraction) = rest[..num_len].split_once('.').unwrap_or((&rest[..num_len], "0"));
        if whole.is_empty() || fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, seconds) = if rest.starts_with("ms") {
            ("ms", 0.001)
        } else if rest.starts_with('s') {
            ("s", 1.0)
        } else if rest.starts_with('m') {
            ("m", 60.0)
        } else if rest.starts_with('h') {
            ("h", 3600.0)
        } else {
            return None;
        };
        rest = &rest[unit.len()..];
        total += number * seconds;
    }
    // try_: a huge value (`99999999999999999999h`) is not a duration rather than a panic.
    std::time::Duration::try_from_secs_f64(total).ok()
}

fn resource<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}", K::kind(&()), obj.meta().name.clone().unwrap_or_default())
}

/// Checks one Tier on its own.
pub fn check_tier(tier: &Tier, out: &mut Vec<Invalid>) {
    let mut c = Checker { resource: resource(tier), out };
    c.name("metadata.name", &tier.name_any());
    let spec = &tier.spec;
    if let Some(branch) = &spec.branch {
        if let Some(problem) = branch_problem(branch) {
            c.fail("spec.branch", branch, problem, "choose a valid branch name such as `tier-0`, or leave it out to use the Tier's name");
        }
    }
    c.url("spec.app.url", &spec.app.url);
    c.path("spec.app.path", &spec.app.path);
    c.url("spec.system.url", &spec.system.url);
    if let Some(promotion) = &spec.promotion {
        c.name("spec.promotion.from", &promotion.from);
        if promotion.from == tier.name_any() {
            c.fail("spec.promotion.from", &promotion.from, "a tier cannot be promoted from itself", "name the tier below this one, or remove spec.promotion for the lowest tier");
        }
    }
    c.name("spec.argocd.namespace", &spec.argocd.namespace);
    if let Some(ns) = &spec.argocd.destination.namespace {
        c.name("spec.argocd.destination.namespace", ns);
    }
    if spec.argocd.project.is_empty() {
        c.fail("spec.argocd.project", "", "must not be empty", "name an Argo CD AppProject, e.g. `default`");
    }
    if let Some(problem) = duration_problem(&spec.interval) {
        c.fail("spec.interval", &spec.interval, problem, "write a duration such as `30s`, `1m` or `1h`");
    }
    if spec.app.url == spec.system.url {
        c.fail("spec.system.url", &spec.system.url, "is the app repository", "use a separate repository that only ShopSet writes");
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
        let valid = !shop.is_empty()
            && shop.len() <= 63
            && shop.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
            && shop.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && shop.ends_with(|ch: char| ch.is_ascii_alphanumeric());
        if !valid {
            c.fail(&field, shop, "is not a shop ID", "use letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 63 characters");
        }
        if let Some(first) = seen.insert(shop.as_str(), i) {
            c.fail(&field, shop, format!("Duplicate value: also spec.shops[{first}]"), "list each shop ID once");
        }
    }
    if let Some(replicas) = ss.spec.replicas {
        if !(0..=1000).contains(&replicas) {
            c.fail("spec.replicas", &replicas.to_string(), "must be between 0 and 1000", "set a replica count in that range, or leave it out");
        }
    }
    for (i, image) in ss.spec.images.iter().enumerate() {
        let field = format!("spec.images[{i}]");
        let bad = |s: &str| s.is_empty() || s.chars().any(|ch| ch.is_whitespace() || ch.is_control());
        if bad(&image.name) {
            c.fail(&format!("{field}.name"), &image.name, "is not an image name", "write the image name as the base has it, e.g. `ghcr.io/acme/shop`");
        }
        if image.new_name.is_none() && image.new_tag.is_none() && image.digest.is_none() {
            c.fail(&field, &image.name, "changes nothing", "set newName, newTag or digest");
        }
        for (key, value) in [("newName", &image.new_name), ("newTag", &image.new_tag), ("digest", &image.digest)] {
            if let Some(value) = value.as_deref().filter(|v| bad(v)) {
                c.fail(&format!("{field}.{key}"), value, "must not be empty or contain spaces", "write a plain image reference value");
            }
        }
    }
}
