//! The validation rules that the API server (CEL rules in the generated CRDs) and `shopctl` (offline,
//! through [`crate::validation`]) both apply, each written once: its test, its message and, where a
//! regex says it, the regex itself. The CEL text is generated from the same [`Test`] that the offline
//! check evaluates, so the two cannot disagree on the words and can only disagree on meaning where a
//! [`Test::Custom`] spells a test twice, side by side.
//!
//! Messages name no field: the API server prints the field path before them, and so does `shopctl`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::{Value, json};

/// One test of a string value.
#[derive(Debug, Clone, Copy)]
pub enum Test {
    /// At least one character.
    NonEmpty,
    /// At most this many characters (CEL's `size` counts characters, not bytes).
    MaxChars(usize),
    /// The regex (RE2 syntax, which Rust's `regex` reads the same way here) matches somewhere.
    Matches(&'static str),
    /// The regex matches nowhere.
    NotMatches(&'static str),
    /// What a regex cannot say: the CEL expression (over the subject it is given) and the same test
    /// in Rust, next to each other.
    Custom { cel: fn(&str) -> String, valid: fn(&str) -> bool },
}

/// A test and what both the API server and `shopctl` say when it fails.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub test: Test,
    pub message: &'static str,
}

const fn check(test: Test, message: &'static str) -> Check {
    Check { test, message }
}

impl Check {
    /// The CEL expression, true when `subject` (e.g. `self`, `self.metadata.name`) passes.
    pub fn cel(&self, subject: &str) -> String {
        match self.test {
            Test::NonEmpty => format!("size({subject}) > 0"),
            Test::MaxChars(n) => format!("size({subject}) <= {n}"),
            Test::Matches(re) => format!("{subject}.matches({})", cel_string(re)),
            Test::NotMatches(re) => format!("!{subject}.matches({})", cel_string(re)),
            Test::Custom { cel, .. } => cel(subject),
        }
    }

    /// Whether `value` passes, offline.
    pub fn passes(&self, value: &str) -> bool {
        match self.test {
            Test::NonEmpty => !value.is_empty(),
            Test::MaxChars(n) => value.chars().count() <= n,
            Test::Matches(re) => matches(re, value),
            Test::NotMatches(re) => !matches(re, value),
            Test::Custom { valid, .. } => valid(value),
        }
    }

    /// The rule as it goes into `x-kubernetes-validations`.
    pub fn rule(&self, subject: &str, field_path: Option<&str>) -> Value {
        let mut rule = json!({ "rule": self.cel(subject), "message": self.message });
        if let Some(path) = field_path {
            rule["fieldPath"] = json!(path);
        }
        rule
    }
}

/// The message of the first check `value` fails, if any.
pub fn problem(checks: &[Check], value: &str) -> Option<&'static str> {
    checks.iter().find(|c| !c.passes(value)).map(|c| c.message)
}

/// A CEL string literal of `s`.
pub fn cel_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Whether the regex `re` matches `value` somewhere, as CEL's `matches` does.
pub fn matches(re: &'static str, value: &str) -> bool {
    static CACHE: LazyLock<Mutex<HashMap<&'static str, Regex>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    // The regexes are constants of this module, compiled by its tests: a bad one is a bug here.
    let regex = cache.entry(re).or_insert_with(|| Regex::new(re).expect("the rule regexes compile"));
    regex.is_match(value)
}

// ---------------------------------------------------------------------------------------------
// Names

/// A DNS-1123 label: what a ShopSet name becomes (directory, Application and namespace names).
pub const DNS_LABEL_REGEX: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Names of Tiers, Configurations, ShopSets and namespaces, and references to them.
pub const DNS_LABEL: &[Check] = &[
    check(Test::NonEmpty, "must not be empty"),
    check(Test::NotMatches(r"/|\.\."), "must not contain '/' or '..'"),
    check(Test::NotMatches("[A-Z]"), "must be lower case"),
    check(Test::MaxChars(63), "must be at most 63 characters long"),
    check(
        Test::Matches(DNS_LABEL_REGEX),
        "must consist of lower case letters, digits and '-', and start and end with a letter or digit (a DNS-1123 label)",
    ),
];

/// Names of other Kubernetes objects: the Argo CD project, the credentials Secret.
pub const DNS_SUBDOMAIN: &[Check] = &[
    check(Test::NonEmpty, "must not be empty"),
    check(Test::NotMatches("[A-Z]"), "must be lower case"),
    check(Test::MaxChars(253), "must be at most 253 characters long"),
    check(
        Test::Matches(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        "must consist of lower case letters, digits, '-' and '.', with a letter or digit at both ends and around each '.' (a DNS-1123 subdomain)",
    ),
];

/// Message of a credentials Secret named with a namespace (`other-ns/secret`).
pub const SECRET_OTHER_NAMESPACE: &str = "names a namespace: a Tier may use only a Secret of its own namespace; copy the Secret into the Tier's namespace and write its name alone";

/// The credentials Secret: a name in the Tier's namespace, never `namespace/name`.
pub const SECRET_NAME: &[Check] = &[
    check(Test::NonEmpty, "must not be empty"),
    check(Test::NotMatches("/"), SECRET_OTHER_NAMESPACE),
    DNS_SUBDOMAIN[1],
    DNS_SUBDOMAIN[2],
    DNS_SUBDOMAIN[3],
];

// ---------------------------------------------------------------------------------------------
// Repositories

/// Message of a URL with a user and password (or token) in it.
pub const URL_CREDENTIALS: &str =
    "must not embed credentials: put them in the Secret named by the Tier's spec.credentials";

/// Message of a URL that has neither a scheme nor the scp-like `user@host:path` shape.
pub const URL_NO_SCHEME: &str = "has no scheme: write https://host/path, or user@host:path for SSH";

/// Repository URLs: a scheme we can fetch from, or scp-like `user@host:path`.
pub const URL: &[Check] = &[
    check(Test::NonEmpty, "must not be empty"),
    check(Test::MaxChars(2048), "must be at most 2048 characters long"),
    check(
        Test::NotMatches(r#"[[:space:][:cntrl:]"\\]"#),
        "must not contain spaces, quotes, backslashes or control characters",
    ),
    check(Test::Matches(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/:@]+@[^/:]+:."), URL_NO_SCHEME),
    check(
        Test::Custom {
            cel: |s| format!("!{s}.contains('://') || {s}.matches('^(https?|ssh|git|file)://')"),
            valid: |v| !v.contains("://") || matches("^(https?|ssh|git|file)://", v),
        },
        "has an unsupported scheme: use https, http, ssh, git or file",
    ),
    check(
        Test::Custom {
            cel: |s| format!("!{s}.startsWith('file://') || {s}.startsWith('file:///')"),
            valid: |v| !v.starts_with("file://") || v.starts_with("file:///"),
        },
        "is a relative file URL: write file:///absolute/path",
    ),
    check(Test::NotMatches("^(https?|ssh|git)://(/|$)"), "has no host"),
    // Any user in http(s)/git URLs is a credential; ssh:// may name a user, not a password.
    check(Test::NotMatches("^(https?|git|file)://[^/]*@|^ssh://[^/]*:[^/]*@"), URL_CREDENTIALS),
];

/// A relative path inside a repository.
pub const REPO_PATH: &[Check] = &[
    check(Test::NonEmpty, "must not be empty (use `.` for the repository root)"),
    check(Test::MaxChars(1024), "must be at most 1024 characters long"),
    check(Test::NotMatches("^/"), "must be relative to the repository root"),
    check(Test::NotMatches(r"(^|/)\.\.(/|$)"), "must not contain '..'"),
    check(
        Test::Matches(r"^(\.$|[A-Za-z0-9_])"),
        "must be `.` or start with a letter, digit or '_' (write `base`, not `./base`)",
    ),
    check(Test::Matches("^[A-Za-z0-9._/-]*$"), "may contain only letters, digits, '.', '_', '-' and '/'"),
];

/// Message of an invalid branch name, whichever part of the name is wrong.
pub const BRANCH_INVALID: &str = "is not a valid git branch name (see `git check-ref-format --branch`)";

/// Git branch names. Stricter than git in one way: only ASCII letters, digits and `._/+-`.
pub const BRANCH: &[Check] = &[
    check(Test::NonEmpty, "must not be empty"),
    check(Test::MaxChars(244), "must be at most 244 characters long"),
    check(Test::Matches(r"^[A-Za-z0-9_]([A-Za-z0-9._/+-]*[A-Za-z0-9_+-])?$"), BRANCH_INVALID),
    check(Test::NotMatches(r"\.\.|//|/\.|@\{|\.lock(/|$)|^HEAD$"), BRANCH_INVALID),
];

/// Message of a Tier whose spec.branch changes.
pub const BRANCH_IMMUTABLE: &str = "is immutable: create a new Tier for another branch";

// ---------------------------------------------------------------------------------------------
// Durations

/// A Go-style duration, as Flux writes intervals.
pub const DURATION_REGEX: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Message of an interval below one second.
pub const INTERVAL_TOO_SHORT: &str =
    "must be at least 1s (a faster poll only loads the git server; use the webhook for speed)";

/// Poll intervals.
pub const INTERVAL: &[Check] = &[
    check(Test::Matches(DURATION_REGEX), "is not a duration like `30s`, `1m` or `1h30m`"),
    check(
        Test::Custom {
            cel: |s| format!("!{s}.matches({}) || duration({s}) >= duration('1s')", cel_string(DURATION_REGEX)),
            valid: |v| crate::duration::parse_duration(v).is_none_or(|d| d >= std::time::Duration::from_secs(1)),
        },
        INTERVAL_TOO_SHORT,
    ),
];

/// Durations of the promotion policy (`spec.promotion.soak`).
pub const DURATION: &[Check] = &[INTERVAL[0]];

/// Message of a window that lasts no time.
pub const WINDOW_TOO_SHORT: &str = "must be longer than 0s: a window that lasts no time never opens";

/// How long a promotion window lasts from each start.
pub const WINDOW_DURATION: &[Check] = &[
    INTERVAL[0],
    check(
        Test::Custom {
            cel: |s| format!("!{s}.matches({}) || duration({s}) > duration('0s')", cel_string(DURATION_REGEX)),
            valid: |v| crate::duration::parse_duration(v).is_none_or(|d| !d.is_zero()),
        },
        WINDOW_TOO_SHORT,
    ),
];

// ---------------------------------------------------------------------------------------------
// Promotion windows

/// The most windows of one Tier (bounds the cost of their rules).
pub const MAX_WINDOWS: usize = 20;

/// A 5-field cron expression: minute, hour, day of month, month, day of week; each a list of `*`,
/// values or ranges, each with an optional `/step`. Months and weekdays may be named (`JAN`, `MON`).
/// Everything this matches, [`crate::policy::Schedule::parse`] reads.
pub const CRON_REGEX: &str = concat!(
    r"^(\*|[0-5]?[0-9](-[0-5]?[0-9])?)(/[1-9][0-9]?)?(,(\*|[0-5]?[0-9](-[0-5]?[0-9])?)(/[1-9][0-9]?)?)*",
    r" +(\*|([01]?[0-9]|2[0-3])(-([01]?[0-9]|2[0-3]))?)(/[1-9][0-9]?)?(,(\*|([01]?[0-9]|2[0-3])(-([01]?[0-9]|2[0-3]))?)(/[1-9][0-9]?)?)*",
    r" +(\*|(0?[1-9]|[12][0-9]|3[01])(-(0?[1-9]|[12][0-9]|3[01]))?)(/[1-9][0-9]?)?(,(\*|(0?[1-9]|[12][0-9]|3[01])(-(0?[1-9]|[12][0-9]|3[01]))?)(/[1-9][0-9]?)?)*",
    r" +(\*|(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))(-(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)))?)(/[1-9][0-9]?)?(,(\*|(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))(-(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)))?)(/[1-9][0-9]?)?)*",
    r" +(\*|([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))(-([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)))?)(/[1-9][0-9]?)?(,(\*|([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))(-([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)))?)(/[1-9][0-9]?)?)*$",
);

/// Message of a schedule that is not a 5-field cron expression.
pub const CRON_INVALID: &str =
    "is not a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. `0 18 * * FRI`)";

/// Window schedules.
pub const SCHEDULE: &[Check] = &[check(Test::Matches(CRON_REGEX), CRON_INVALID)];

/// The shape of an IANA time zone name.
pub const TIME_ZONE_REGEX: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";

/// Message of a time zone that is not an IANA name. The API server checks the shape; `shopctl`
/// and the controller also look the name up in the time zone database (a zone the database lacks
/// is refused with the same words).
pub const TIME_ZONE_INVALID: &str = "is not an IANA time zone name like `Europe/Berlin` or `UTC`";

/// Window time zones.
pub const TIME_ZONE: &[Check] = &[check(Test::Matches(TIME_ZONE_REGEX), TIME_ZONE_INVALID)];

/// CEL rule over `spec.promotion.approvals`.
pub const APPROVALS_RULE: &str = "self >= 0 && self <= 100";
/// Message of an approval count out of range.
pub const APPROVALS_RANGE: &str = "must be between 0 and 100";

/// The reason of a hold.
pub const HOLD_REASON: &[Check] = &[
    check(Test::NonEmpty, "must not be empty: say why, e.g. `rolled back 1a2b3c4, see INC-42`"),
    check(Test::MaxChars(1024), "must be at most 1024 characters long"),
];

// ---------------------------------------------------------------------------------------------
// Tiers and ShopSets

/// Message of a Tier promoted from itself.
pub const PROMOTION_FROM_SELF: &str = "names the Tier itself: a tier cannot be promoted from itself";
/// Message of a Tier whose system repository is its app repository.
pub const SYSTEM_IS_APP: &str =
    "is the app repository: the system repository must be a separate one that only ShopSet writes";
/// Message of a ShopSet whose spec.tier changes.
pub const TIER_IMMUTABLE: &str = "is immutable: a ShopSet does not move to another Tier in one step; create a ShopSet of the same shops in the new Tier, then delete this one";

/// Shop IDs.
pub const SHOP_ID: &[Check] = &[check(
    Test::Matches("^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"),
    "is not a shop ID: letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 63 characters",
)];

/// The most shops one ShopSet lists: the uniqueness rule costs the square of it in CEL, and the API
/// server refuses CRDs whose rules could cost more than its budget.
pub const MAX_SHOPS: usize = 500;
/// CEL rule over `spec.shops`: no ID twice.
pub const SHOPS_UNIQUE_RULE: &str = "self.all(s, self.exists_one(t, t == s))";
/// Message of a ShopSet listing a shop twice.
pub const SHOP_DUPLICATE: &str = "repeats a shop ID: list each shop once";

/// CEL rule over `spec.replicas`.
pub const REPLICAS_RULE: &str = "self >= 0 && self <= 1000";
/// Message of a replica count out of range.
pub const REPLICAS_RANGE: &str = "must be between 0 and 1000";

/// The most image overrides of one ShopSet (bounds the cost of their rules).
pub const MAX_IMAGES: usize = 100;

/// CEL rule over `spec.capacity` (its upper bound is [`MAX_SHOPS`]; a test keeps them equal).
pub const CAPACITY_RULE: &str = "self >= 1 && self <= 500";
/// Message of a capacity out of range.
pub const CAPACITY_RANGE: &str =
    "must be between 1 and 500 (the most shops a ShopSet lists); leave it out for no limit of its own";
/// CEL rule over the ShopSet: it lists no more shops than its capacity.
pub const SHOPS_WITHIN_CAPACITY_RULE: &str =
    "!has(self.spec.capacity) || !has(self.spec.shops) || size(self.spec.shops) <= self.spec.capacity";
/// Message of a ShopSet that lists more shops than its capacity.
pub const SHOPS_OVER_CAPACITY: &str = "serves more shops than spec.capacity: raise spec.capacity, or move shops to another ShopSet with `shopctl shop move`";

/// At most this many destinations on a Tier.
pub const MAX_DESTINATIONS: usize = 64;
/// CEL rule over one `spec.images[]` entry.
pub const IMAGE_CHANGES_SOMETHING_RULE: &str = "has(self.newName) || has(self.newTag) || has(self.digest)";
/// Message of an image override that sets nothing.
pub const IMAGE_CHANGES_NOTHING: &str = "changes nothing: set newName, newTag or digest";

/// Image names (`name`, `newName`): an optional registry host, then lower-case path components.
pub const IMAGE_NAME: &[Check] = &[check(
    Test::Matches(
        r"^([A-Za-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$",
    ),
    "is not an image name like `ghcr.io/acme/shop` (lower case path, optional registry host)",
)];

/// Image tags.
pub const IMAGE_TAG: &[Check] = &[check(
    Test::Matches("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"),
    "is not an image tag: letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 128 characters",
)];

/// Image digests.
pub const IMAGE_DIGEST: &[Check] = &[check(
    Test::Matches("^[a-z0-9]+([+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$"),
    "is not an image digest like `sha256:` followed by 64 hex digits",
)];

/// The reason of a maintenance: something people can read in `shopctl status`.
pub const MAINTENANCE_REASON: &[Check] = &[
    check(Test::NonEmpty, "must not be empty: say why, e.g. `database migration, see OPS-123`"),
    check(Test::MaxChars(1024), "must be at most 1024 characters long"),
];

/// CEL rule over the ShopSet: every shop in maintenance is one it serves.
pub const MAINTENANCE_SHOPS_SERVED_RULE: &str = "!has(self.spec.maintenance) || !has(self.spec.maintenance.shops) || self.spec.maintenance.shops.all(s, has(self.spec.shops) && s in self.spec.shops)";
/// Message of a maintenance naming a shop the ShopSet does not serve.
pub const MAINTENANCE_SHOP_NOT_SERVED: &str =
    "names a shop this ShopSet does not serve: list only shops of spec.shops, or none for the whole ShopSet";

// ---------------------------------------------------------------------------------------------
// Destinations and failure domains

/// An Argo CD destination's API server URL.
pub const SERVER_URL: &[Check] = &[
    check(Test::NonEmpty, "must not be empty"),
    check(
        Test::Matches(r"^https?://[^/[:space:][:cntrl:]]+(/[^[:space:][:cntrl:]]*)?$"),
        "is not an API server URL like https://10.0.0.1:6443 (http or https, a host, no spaces)",
    ),
];

/// An Argo CD cluster name (its cluster Secret's `name`).
pub const CLUSTER_NAME: &[Check] = &[
    check(Test::NonEmpty, "must not be empty"),
    check(Test::NotMatches("[[:cntrl:]]"), "must not contain control characters"),
];

/// CEL rule over one `spec.argocd.destinations[]` entry.
pub const DESTINATION_TARGET_RULE: &str = "has(self.server) != has(self.cluster)";
/// Message of a destination with both or neither of `server` and `cluster`.
pub const DESTINATION_TARGET: &str =
    "must set exactly one of server (the API server URL) and cluster (the Argo CD cluster name)";

/// What the API server says of a second destination of the same name (the list's map key).
pub const DESTINATION_DUPLICATE: &str = "Duplicate value";

/// The most labels of one failure domain (bounds the cost of their rules).
pub const MAX_FAILURE_DOMAIN_LABELS: usize = 16;

/// Keys of a failure domain: Kubernetes label keys (`zone`, `topology.kubernetes.io/zone`).
pub const FAILURE_DOMAIN_KEY: &[Check] = &[
    check(Test::MaxChars(253), "must be at most 253 characters long"),
    check(
        Test::Matches(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
        ),
        "has a key that is not a label key like `zone` or `topology.kubernetes.io/zone`",
    ),
];

/// Values of a failure domain: Kubernetes label values, not empty.
pub const FAILURE_DOMAIN_VALUE: &[Check] = &[check(
    Test::Matches(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"),
    "has a value that is not a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters",
)];

/// Message of a ShopSet naming a destination its Tier does not list.
pub const DESTINATION_UNKNOWN: &str = "names no destination of its Tier";
/// Message of a ShopSet naming no destination of a Tier that lists several.
pub const DESTINATION_MISSING: &str = "names no destination";
/// Message of a ShopSet naming a destination of a Tier that lists none.
pub const DESTINATION_WITHOUT_LIST: &str = "names a destination, but its Tier lists none in spec.argocd.destinations";

// ---------------------------------------------------------------------------------------------
// Where the rules go in the CRDs

/// Rules of one field.
pub enum FieldRules {
    /// String checks, applied to the field's value.
    Checks(&'static [Check]),
    /// A CEL rule over the field and its message.
    Rule(&'static str, &'static str),
    /// String checks, applied to every key of a map.
    Keys(&'static [Check]),
    /// String checks, applied to every value of a map.
    Values(&'static [Check]),
}

/// Every field rule: (kind, path in the schema, rules). `[]` steps into the items of a list.
pub const FIELDS: &[(&str, &str, FieldRules)] = &[
    ("Tier", "spec.branch", FieldRules::Checks(BRANCH)),
    ("Tier", "spec.app.url", FieldRules::Checks(URL)),
    ("Tier", "spec.app.path", FieldRules::Checks(REPO_PATH)),
    ("Tier", "spec.system.url", FieldRules::Checks(URL)),
    ("Tier", "spec.promotion.from", FieldRules::Checks(DNS_LABEL)),
    ("Tier", "spec.argocd.namespace", FieldRules::Checks(DNS_LABEL)),
    ("Tier", "spec.argocd.project", FieldRules::Checks(DNS_SUBDOMAIN)),
    ("Tier", "spec.argocd.destination.namespace", FieldRules::Checks(DNS_LABEL)),
    ("Tier", "spec.credentials.secretRef.name", FieldRules::Checks(SECRET_NAME)),
    ("Tier", "spec.interval", FieldRules::Checks(INTERVAL)),
    ("Tier", "spec.argocd.destinations[]", FieldRules::Rule(DESTINATION_TARGET_RULE, DESTINATION_TARGET)),
    ("Tier", "spec.argocd.destinations[].name", FieldRules::Checks(DNS_LABEL)),
    ("Tier", "spec.argocd.destinations[].server", FieldRules::Checks(SERVER_URL)),
    ("Tier", "spec.argocd.destinations[].cluster", FieldRules::Checks(CLUSTER_NAME)),
    ("Tier", "spec.argocd.destinations[].failureDomain", FieldRules::Keys(FAILURE_DOMAIN_KEY)),
    ("Tier", "spec.argocd.destinations[].failureDomain", FieldRules::Values(FAILURE_DOMAIN_VALUE)),
    ("Tier", "spec.promotion.soak", FieldRules::Checks(DURATION)),
    ("Tier", "spec.promotion.windows[].schedule", FieldRules::Checks(SCHEDULE)),
    ("Tier", "spec.promotion.windows[].duration", FieldRules::Checks(WINDOW_DURATION)),
    ("Tier", "spec.promotion.windows[].timeZone", FieldRules::Checks(TIME_ZONE)),
    ("Tier", "spec.promotion.approvals", FieldRules::Rule(APPROVALS_RULE, APPROVALS_RANGE)),
    ("Tier", "spec.promotion.hold.reason", FieldRules::Checks(HOLD_REASON)),
    ("Configuration", "spec.url", FieldRules::Checks(URL)),
    ("Configuration", "spec.path", FieldRules::Checks(REPO_PATH)),
    ("ShopSet", "spec.tier", FieldRules::Checks(DNS_LABEL)),
    ("ShopSet", "spec.configuration", FieldRules::Checks(DNS_LABEL)),
    ("ShopSet", "spec.namespace", FieldRules::Checks(DNS_LABEL)),
    ("ShopSet", "spec.shops", FieldRules::Rule(SHOPS_UNIQUE_RULE, SHOP_DUPLICATE)),
    ("ShopSet", "spec.shops[]", FieldRules::Checks(SHOP_ID)),
    ("ShopSet", "spec.replicas", FieldRules::Rule(REPLICAS_RULE, REPLICAS_RANGE)),
    ("ShopSet", "spec.capacity", FieldRules::Rule(CAPACITY_RULE, CAPACITY_RANGE)),
    ("ShopSet", "spec.images[]", FieldRules::Rule(IMAGE_CHANGES_SOMETHING_RULE, IMAGE_CHANGES_NOTHING)),
    ("ShopSet", "spec.images[].name", FieldRules::Checks(IMAGE_NAME)),
    ("ShopSet", "spec.images[].newName", FieldRules::Checks(IMAGE_NAME)),
    ("ShopSet", "spec.images[].newTag", FieldRules::Checks(IMAGE_TAG)),
    ("ShopSet", "spec.images[].digest", FieldRules::Checks(IMAGE_DIGEST)),
    ("ShopSet", "spec.maintenance.reason", FieldRules::Checks(MAINTENANCE_REASON)),
    ("ShopSet", "spec.maintenance.shops", FieldRules::Rule(SHOPS_UNIQUE_RULE, SHOP_DUPLICATE)),
    ("ShopSet", "spec.maintenance.shops[]", FieldRules::Checks(SHOP_ID)),
];

/// Rules on the whole object of `kind` (names, immutability, fields compared with each other).
pub fn object_rules(kind: &str) -> Vec<Value> {
    let mut rules: Vec<Value> =
        DNS_LABEL.iter().map(|c| c.rule("self.metadata.name", Some(".metadata.name"))).collect();
    match kind {
        "Tier" => rules.extend([
            json!({
                "rule": "!has(oldSelf.spec.branch) || (has(self.spec.branch) && self.spec.branch == oldSelf.spec.branch)",
                "message": BRANCH_IMMUTABLE,
                "fieldPath": ".spec.branch",
            }),
            json!({
                "rule": "!has(self.spec.promotion) || self.spec.promotion.from != self.metadata.name",
                "message": PROMOTION_FROM_SELF,
                "fieldPath": ".spec.promotion.from",
            }),
            json!({
                "rule": "self.spec.app.url != self.spec.system.url",
                "message": SYSTEM_IS_APP,
                "fieldPath": ".spec.system.url",
            }),
        ]),
        "ShopSet" => rules.extend([
            json!({
                "rule": "self.spec.tier == oldSelf.spec.tier",
                "message": TIER_IMMUTABLE,
                "fieldPath": ".spec.tier",
            }),
            json!({
                "rule": MAINTENANCE_SHOPS_SERVED_RULE,
                "message": MAINTENANCE_SHOP_NOT_SERVED,
                "fieldPath": ".spec.maintenance.shops",
            }),
            json!({
                "rule": SHOPS_WITHIN_CAPACITY_RULE,
                "message": SHOPS_OVER_CAPACITY,
                "fieldPath": ".spec.shops",
            }),
        ]),
        _ => {}
    }
    rules
}

/// Adds the rules of [`FIELDS`] and [`object_rules`] to the OpenAPI schema (as JSON) of `kind`.
///
/// # Errors
/// If a path of [`FIELDS`] names no property of the schema: the table and the types disagree.
pub fn add_rules(kind: &str, schema: &mut Value) -> Result<(), String> {
    // CEL may only read metadata.name when the schema declares it.
    schema["properties"]["metadata"]["type"] = json!("object");
    schema["properties"]["metadata"]["properties"]["name"] = json!({ "type": "string" });
    push_rules(schema, object_rules(kind));
    for (_, path, rules) in FIELDS.iter().filter(|(k, _, _)| *k == kind) {
        let mut node = &mut *schema;
        for step in path.split('.') {
            let (name, items) = match step.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (step, false),
            };
            node = node
                .get_mut("properties")
                .and_then(|p| p.get_mut(name))
                .ok_or_else(|| format!("{kind} has no field {path} (at {name})"))?;
            if items {
                node = node.get_mut("items").ok_or_else(|| format!("{kind} field {name} is not a list"))?;
            }
        }
        let new = match rules {
            FieldRules::Checks(checks) => checks.iter().map(|c| c.rule("self", None)).collect(),
            FieldRules::Rule(rule, message) => vec![json!({ "rule": rule, "message": message })],
            FieldRules::Keys(checks) => checks
                .iter()
                .map(|c| json!({ "rule": format!("self.all(k, {})", c.cel("k")), "message": c.message }))
                .collect(),
            FieldRules::Values(checks) => checks
                .iter()
                .map(|c| json!({ "rule": format!("self.all(k, {})", c.cel("self[k]")), "message": c.message }))
                .collect(),
        };
        push_rules(node, new);
    }
    Ok(())
}

fn push_rules(node: &mut Value, rules: Vec<Value>) {
    let list = node.as_object_mut().map(|o| o.entry("x-kubernetes-validations").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = list {
        list.extend(rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regex_compiles() {
        for checks in [
            DNS_LABEL,
            DNS_SUBDOMAIN,
            SECRET_NAME,
            URL,
            REPO_PATH,
            BRANCH,
            INTERVAL,
            SCHEDULE,
            TIME_ZONE,
            SHOP_ID,
            IMAGE_NAME,
            IMAGE_TAG,
            IMAGE_DIGEST,
            SERVER_URL,
            CLUSTER_NAME,
            FAILURE_DOMAIN_KEY,
            FAILURE_DOMAIN_VALUE,
        ] {
            for c in checks {
                if let Test::Matches(re) | Test::NotMatches(re) = c.test {
                    Regex::new(re).unwrap_or_else(|e| panic!("{re}: {e}"));
                }
            }
        }
    }

    #[test]
    fn the_capacity_rule_bounds_capacity_by_max_shops() {
        assert_eq!(CAPACITY_RULE, format!("self >= 1 && self <= {MAX_SHOPS}"));
        assert!(CAPACITY_RANGE.contains(&format!("between 1 and {MAX_SHOPS} ")));
    }

    #[test]
    fn cel_strings_are_escaped() {
        assert_eq!(cel_string(r"a\.b'c"), r"'a\\.b\'c'");
        assert_eq!(DNS_LABEL[1].cel("self"), r"!self.matches('/|\\.\\.')");
    }
}
