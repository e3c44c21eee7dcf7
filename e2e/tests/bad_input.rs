//! Issue #6, "Bad input": one table of invalid edits of the example manifests, each sent to a real
//! API server (with the generated CRDs) and to `shopctl render --offline` and `shopctl sync` on a
//! directory holding the same manifests.
//!
//! - [`Expect::Refused`]: the API server refuses it, and `shopctl` exits 2; both name the field and
//!   say the same words (taken from `shopset::rules`, where the CRD's CEL messages come from too).
//! - [`Expect::RefusedOnUpdate`]: a change of a stored object that the API server refuses (CEL
//!   transition rules). API server only: `shopctl` reads manifests, never a stored object, so it
//!   cannot see a change.
//! - [`Expect::CrossObject`]: references between objects, which the API server cannot see without
//!   an admission webhook (ShopSet has none, by design): it accepts them, and `shopctl` refuses.
//! - [`Expect::ControllerOnly`]: local repositories (`file://`). The API server and `shopctl`
//!   accept them (`shopctl` runs on its user's own files); the controller refuses them, unless
//!   started with `--allow-local-urls`, with the words of [`shopset::tenancy`], checked here on the
//!   same manifests (`e2e/tests/tenants.rs` shows a running controller refusing one).
//!
//! Build the workspace first: the test runs the `shopctl` binary of `cargo build`.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use shopset::rules::{self, Check};
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::tools::{repo_root, workspace_bin};
use support::text;
use tempfile::TempDir;

const NS: &str = "bad-input";
const FILES: &[&str] = &["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"];

/// Rows of the table per [`Expect`]ation.
const REFUSED: usize = 79;
const REFUSED_ON_UPDATE: usize = 2;
const CROSS_OBJECT: usize = 7;
const CONTROLLER_ONLY: usize = 3;
const _: () = assert!(REFUSED + REFUSED_ON_UPDATE >= 30, "the issue asks for at least 30 cases the API server refuses");

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Refused,
    RefusedOnUpdate,
    CrossObject,
    ControllerOnly,
}

struct Case {
    name: String,
    expect: Expect,
    /// File of `examples/` to edit, and the one edit: `from` must occur there exactly once.
    file: &'static str,
    from: &'static str,
    to: String,
    /// For [`Expect::RefusedOnUpdate`]: what replaces `from` in the stored object (else unedited).
    before: Option<&'static str>,
    /// Kind of the object at fault.
    kind: &'static str,
    /// The field path both name, and the words both say after it, on the same line.
    field: &'static str,
    words: &'static str,
    /// Must not appear in any output (secrets).
    never: Option<&'static str>,
}

fn case(
    name: &str,
    file: &'static str,
    from: &'static str,
    to: impl Into<String>,
    kind: &'static str,
    field: &'static str,
    words: &'static str,
) -> Case {
    Case {
        name: name.into(),
        expect: Expect::Refused,
        file,
        from,
        to: to.into(),
        before: None,
        kind,
        field,
        words,
        never: None,
    }
}

/// The message of the check of `checks` whose message contains `hint` (so a reworded rule fails here
/// loudly rather than passing against a stale literal).
fn msg(checks: &[Check], hint: &str) -> &'static str {
    let found: Vec<&'static str> = checks.iter().map(|c| c.message).filter(|m| m.contains(hint)).collect();
    assert_eq!(found.len(), 1, "exactly one rule message contains {hint:?}: {found:?}");
    found[0]
}

fn cases() -> Vec<Case> {
    let long: &'static str = Box::leak("a".repeat(64).into_boxed_str());
    let lower = msg(rules::DNS_LABEL, "must be lower case");
    let slash = msg(rules::DNS_LABEL, "'/'");
    let too_long = msg(rules::DNS_LABEL, "63");
    let label = msg(rules::DNS_LABEL, "DNS-1123 label");
    let empty = msg(rules::URL, "empty");
    let no_scheme = rules::URL_NO_SCHEME;
    let scheme = msg(rules::URL, "unsupported scheme");
    let relative = msg(rules::REPO_PATH, "relative");
    let dotdot = msg(rules::REPO_PATH, "'..'");
    let start = msg(rules::REPO_PATH, "start with");
    let not_duration = msg(rules::INTERVAL, "not a duration");
    let subdomain_lower = msg(rules::DNS_SUBDOMAIN, "must be lower case");
    let subdomain = msg(rules::DNS_SUBDOMAIN, "DNS-1123 subdomain");
    let shop_id = rules::SHOP_ID[0].message;
    let image_name = rules::IMAGE_NAME[0].message;
    let image_tag = rules::IMAGE_TAG[0].message;
    let image_digest = rules::IMAGE_DIGEST[0].message;
    const T0: &str = "tier-0.yaml";
    const T1: &str = "tier-1.yaml";
    const CFG: &str = "configuration.yaml";
    const SS: &str = "shopsets.yaml";
    const APP_URL: &str = "url: https://git.example.com/acme/shop-app.git";
    const SYSTEM_URL: &str = "url: https://git.example.com/acme/shop-system.git";
    const CFG_URL: &str = "url: https://git.example.com/acme/shop-config.git";
    // Destinations go in before the Tier's syncPolicy.
    const SYNC_POLICY: &str = "    syncPolicy:\n";
    let dests = |items: &str| format!("    destinations:\n    {items}\n    syncPolicy:\n");

    let mut cases = vec![
        // metadata.name, of every kind
        case("Tier name in upper case", T0, "name: tier-0", "name: Tier-0", "Tier", "metadata.name", lower),
        case(
            "Tier name over 63 characters",
            T0,
            "name: tier-0",
            format!("name: {long}"),
            "Tier",
            "metadata.name",
            too_long,
        ),
        case(
            "Configuration name with '/'",
            CFG,
            "name: shop-config",
            "name: shop/config",
            "Configuration",
            "metadata.name",
            slash,
        ),
        case(
            "Configuration name with '..'",
            CFG,
            "name: shop-config",
            "name: shop..config",
            "Configuration",
            "metadata.name",
            slash,
        ),
        case("ShopSet name with '/'", SS, "name: eu-west", "name: eu/west", "ShopSet", "metadata.name", slash),
        case("ShopSet name with '..'", SS, "name: eu-west", "name: eu..west", "ShopSet", "metadata.name", slash),
        case("ShopSet name in upper case", SS, "name: eu-west", "name: EU-West", "ShopSet", "metadata.name", lower),
        case(
            "ShopSet name over 63 characters",
            SS,
            "name: eu-west",
            format!("name: {long}"),
            "ShopSet",
            "metadata.name",
            too_long,
        ),
        case(
            "ShopSet name starting with '-'",
            SS,
            "name: eu-west",
            "name: -eu-west",
            "ShopSet",
            "metadata.name",
            label,
        ),
        // repository URLs
        case(
            "app URL without a scheme",
            T0,
            APP_URL,
            "url: git.example.com/acme/shop-app.git",
            "Tier",
            "spec.app.url",
            no_scheme,
        ),
        case("app URL empty", T0, APP_URL, "url: \"\"", "Tier", "spec.app.url", empty),
        case(
            "app URL with an unsupported scheme",
            T1,
            APP_URL,
            "url: ftp://git.example.com/acme/shop-app.git",
            "Tier",
            "spec.app.url",
            scheme,
        ),
        Case {
            never: Some("s3cr3t-pw"),
            ..case(
                "system URL with a user and password",
                T0,
                SYSTEM_URL,
                "url: https://bot:s3cr3t-pw@git.example.com/acme/shop-system.git",
                "Tier",
                "spec.system.url",
                rules::URL_CREDENTIALS,
            )
        },
        case(
            "system URL without a scheme",
            T1,
            SYSTEM_URL,
            "url: git.example.com:acme/shop-system.git",
            "Tier",
            "spec.system.url",
            no_scheme,
        ),
        case("system URL is the app URL", T1, SYSTEM_URL, APP_URL, "Tier", "spec.system.url", rules::SYSTEM_IS_APP),
        case(
            "Configuration URL without a scheme",
            CFG,
            CFG_URL,
            "url: git.example.com/acme/shop-config.git",
            "Configuration",
            "spec.url",
            no_scheme,
        ),
        case(
            "Configuration URL with a token",
            CFG,
            CFG_URL,
            "url: https://ghp_token@git.example.com/acme/shop-config.git",
            "Configuration",
            "spec.url",
            rules::URL_CREDENTIALS,
        ),
        case("Configuration URL empty", CFG, CFG_URL, "url: ''", "Configuration", "spec.url", empty),
        // paths inside repositories
        case("app path absolute", T0, "path: base", "path: /base", "Tier", "spec.app.path", relative),
        case("app path with '..'", T0, "path: base", "path: ../base", "Tier", "spec.app.path", dotdot),
        case(
            "Configuration path with '..'",
            CFG,
            "path: component",
            "path: component/../..",
            "Configuration",
            "spec.path",
            dotdot,
        ),
        case(
            "Configuration path starting with './'",
            CFG,
            "path: component",
            "path: ./component",
            "Configuration",
            "spec.path",
            start,
        ),
        case(
            "Configuration path absolute",
            CFG,
            "path: component",
            "path: /component",
            "Configuration",
            "spec.path",
            relative,
        ),
    ];
    // branch names that are not valid refs
    for branch in ["a..b", "-x", "x.lock", "a//b", "a b", "a@{b", "x/", "a/.b", "HEAD"] {
        cases.push(case(
            &format!("branch {branch:?}"),
            T0,
            "spec:\n  app:",
            format!("spec:\n  branch: {branch:?}\n  app:"),
            "Tier",
            "spec.branch",
            rules::BRANCH_INVALID,
        ));
    }
    cases.extend([
        // intervals
        case(
            "interval below 1s",
            T0,
            "interval: 1m",
            "interval: 500ms",
            "Tier",
            "spec.interval",
            rules::INTERVAL_TOO_SHORT,
        ),
        case("interval not a duration", T0, "interval: 1m", "interval: 1d", "Tier", "spec.interval", not_duration),
        // promotion policy
        case(
            "soak not a duration",
            T1,
            "from: tier-0",
            "from: tier-0\n    soak: 1d",
            "Tier",
            "spec.promotion.soak",
            not_duration,
        ),
        case(
            "window schedule not a cron expression",
            T1,
            "from: tier-0",
            "from: tier-0\n    windows:\n    - kind: deny\n      schedule: \"0 18 * * FRIDAY\"\n      duration: 63h",
            "Tier",
            "spec.promotion.windows[0].schedule",
            rules::CRON_INVALID,
        ),
        case(
            "window schedule with six fields",
            T1,
            "from: tier-0",
            "from: tier-0\n    windows:\n    - kind: allow\n      schedule: \"0 0 9 * * MON\"\n      duration: 8h",
            "Tier",
            "spec.promotion.windows[0].schedule",
            rules::CRON_INVALID,
        ),
        case(
            "window hour out of range",
            T1,
            "from: tier-0",
            "from: tier-0\n    windows:\n    - kind: allow\n      schedule: \"0 24 * * *\"\n      duration: 8h",
            "Tier",
            "spec.promotion.windows[0].schedule",
            rules::CRON_INVALID,
        ),
        case(
            "window time zone an offset",
            T1,
            "from: tier-0",
            "from: tier-0\n    windows:\n    - kind: deny\n      schedule: \"0 18 * * FRI\"\n      duration: 63h\n      timeZone: \"UTC+02:00\"",
            "Tier",
            "spec.promotion.windows[0].timeZone",
            rules::TIME_ZONE_INVALID,
        ),
        case(
            "window duration not a duration",
            T1,
            "from: tier-0",
            "from: tier-0\n    windows:\n    - kind: deny\n      schedule: \"0 18 * * FRI\"\n      duration: 2d",
            "Tier",
            "spec.promotion.windows[0].duration",
            not_duration,
        ),
        case(
            "window of no time",
            T1,
            "from: tier-0",
            "from: tier-0\n    windows:\n    - kind: deny\n      schedule: \"0 18 * * FRI\"\n      duration: 0s",
            "Tier",
            "spec.promotion.windows[0].duration",
            rules::WINDOW_TOO_SHORT,
        ),
        case(
            "negative approvals",
            T1,
            "from: tier-0",
            "from: tier-0\n    approvals: -1",
            "Tier",
            "spec.promotion.approvals",
            rules::APPROVALS_RANGE,
        ),
        case(
            "hold without a reason",
            T1,
            "from: tier-0",
            "from: tier-0\n    hold:\n      reason: \"\"\n      since: \"2026-12-03T05:00:00Z\"",
            "Tier",
            "spec.promotion.hold.reason",
            rules::HOLD_REASON[0].message,
        ),
        // promotion and Argo CD settings
        case(
            "promoted from itself",
            T1,
            "from: tier-0",
            "from: tier-1",
            "Tier",
            "spec.promotion.from",
            rules::PROMOTION_FROM_SELF,
        ),
        case(
            "promoted from an upper-case name",
            T1,
            "from: tier-0",
            "from: Tier-0",
            "Tier",
            "spec.promotion.from",
            lower,
        ),
        case(
            "Argo CD namespace with '_'",
            T0,
            "namespace: argocd",
            "namespace: argo_cd",
            "Tier",
            "spec.argocd.namespace",
            label,
        ),
        case(
            "Argo CD project in upper case",
            T0,
            "project: default",
            "project: Default",
            "Tier",
            "spec.argocd.project",
            subdomain_lower,
        ),
        case(
            "destination namespace with '.'",
            T0,
            "server: https://kubernetes.default.svc\n",
            "server: https://kubernetes.default.svc\n      namespace: shops.eu\n",
            "Tier",
            "spec.argocd.destination.namespace",
            label,
        ),
        case(
            "credentials Secret name with '_'",
            T0,
            "interval: 1m",
            "interval: 1m\n  credentials:\n    secretRef:\n      name: git_creds",
            "Tier",
            "spec.credentials.secretRef.name",
            subdomain,
        ),
        case(
            "credentials Secret of another namespace",
            T0,
            "interval: 1m",
            "interval: 1m\n  credentials:\n    secretRef:\n      name: other-ns/git-credentials",
            "Tier",
            "spec.credentials.secretRef.name",
            rules::SECRET_OTHER_NAMESPACE,
        ),
        // ShopSets
        case(
            "duplicate shop IDs",
            SS,
            "[shop-0001, shop-0002]",
            "[shop-0001, shop-0001]",
            "ShopSet",
            "spec.shops",
            rules::SHOP_DUPLICATE,
        ),
        case("empty shop ID", SS, "[shop-1001]", "[shop-1001, '']", "ShopSet", "spec.shops[1]", shop_id),
        case("shop ID with a space", SS, "[shop-1001]", "['shop 1001']", "ShopSet", "spec.shops[0]", shop_id),
        case(
            "shop ID starting with '-'",
            SS,
            "[shop-0001, shop-0002]",
            "[shop-0001, -shop-0002]",
            "ShopSet",
            "spec.shops[1]",
            shop_id,
        ),
        case(
            "maintenance of a shop the ShopSet does not serve",
            SS,
            "[shop-1001]\n",
            "[shop-1001]\n  maintenance:\n    reason: disk full\n    since: \"2026-12-01T08:00:00Z\"\n    shops: [shop-0001]\n",
            "ShopSet",
            "spec.maintenance.shops",
            rules::MAINTENANCE_SHOP_NOT_SERVED,
        ),
        case(
            "maintenance without a reason",
            SS,
            "[shop-1001]\n",
            "[shop-1001]\n  maintenance:\n    reason: ''\n    since: \"2026-12-01T08:00:00Z\"\n",
            "ShopSet",
            "spec.maintenance.reason",
            msg(rules::MAINTENANCE_REASON, "empty"),
        ),
        // a Tier's destinations
        case(
            "destination name in upper case",
            T1,
            SYNC_POLICY,
            dests("- name: DC-A\n      server: https://10.0.0.1:6443"),
            "Tier",
            "spec.argocd.destinations[0].name",
            lower,
        ),
        case(
            "destination with both server and cluster",
            T1,
            SYNC_POLICY,
            dests("- name: dc-a\n      server: https://10.0.0.1:6443\n      cluster: prod-a"),
            "Tier",
            "spec.argocd.destinations[0]",
            rules::DESTINATION_TARGET,
        ),
        case(
            "destination with neither server nor cluster",
            T1,
            SYNC_POLICY,
            dests("- name: dc-a\n      failureDomain: {zone: eu-west-1a}"),
            "Tier",
            "spec.argocd.destinations[0]",
            rules::DESTINATION_TARGET,
        ),
        case(
            "two destinations of one name",
            T1,
            SYNC_POLICY,
            dests("- name: dc-a\n      server: https://10.0.0.1:6443\n    - name: dc-a\n      cluster: prod-a"),
            "Tier",
            "spec.argocd.destinations[1]",
            rules::DESTINATION_DUPLICATE,
        ),
        case(
            "destination server without a scheme",
            T1,
            SYNC_POLICY,
            dests("- name: dc-a\n      server: 10.0.0.1:6443"),
            "Tier",
            "spec.argocd.destinations[0].server",
            msg(rules::SERVER_URL, "API server URL"),
        ),
        case(
            "failure domain key with a space",
            T1,
            SYNC_POLICY,
            dests("- name: dc-a\n      server: https://10.0.0.1:6443\n      failureDomain: {'the zone': a}"),
            "Tier",
            "spec.argocd.destinations[0].failureDomain",
            msg(rules::FAILURE_DOMAIN_KEY, "label key"),
        ),
        case(
            "failure domain value empty",
            T1,
            SYNC_POLICY,
            dests("- name: dc-a\n      server: https://10.0.0.1:6443\n      failureDomain: {zone: ''}"),
            "Tier",
            "spec.argocd.destinations[0].failureDomain",
            rules::FAILURE_DOMAIN_VALUE[0].message,
        ),
        case(
            "capacity zero",
            SS,
            "  replicas: 3\n",
            "  replicas: 3\n  capacity: 0\n",
            "ShopSet",
            "spec.capacity",
            rules::CAPACITY_RANGE,
        ),
        case(
            "more shops than the capacity",
            SS,
            "  replicas: 3\n",
            "  replicas: 3\n  capacity: 2\n",
            "ShopSet",
            "spec.shops",
            rules::SHOPS_OVER_CAPACITY,
        ),
        case("replicas negative", SS, "replicas: 3", "replicas: -1", "ShopSet", "spec.replicas", rules::REPLICAS_RANGE),
        case(
            "replicas over 1000",
            SS,
            "replicas: 3",
            "replicas: 1001",
            "ShopSet",
            "spec.replicas",
            rules::REPLICAS_RANGE,
        ),
        case(
            "tier reference in upper case",
            SS,
            "name: eu-west\nspec:\n  tier: tier-1",
            "name: eu-west\nspec:\n  tier: Tier-1",
            "ShopSet",
            "spec.tier",
            lower,
        ),
        case(
            "configuration reference with '_'",
            SS,
            "name: eu-west\nspec:\n  tier: tier-1\n  configuration: shop-config",
            "name: eu-west\nspec:\n  tier: tier-1\n  configuration: shop_config",
            "ShopSet",
            "spec.configuration",
            label,
        ),
        case(
            "namespace with '/'",
            SS,
            "namespace: shops-us-east",
            "namespace: shops/us-east",
            "ShopSet",
            "spec.namespace",
            slash,
        ),
        case(
            "image name in upper case",
            SS,
            "- name: ghcr.io/acme/checkout",
            "- name: ghcr.io/Acme/checkout",
            "ShopSet",
            "spec.images[0].name",
            image_name,
        ),
        case(
            "image newName with a space",
            SS,
            "newTag: 1.1.0-rc.1",
            "newName: 'ghcr.io/acme/check out'",
            "ShopSet",
            "spec.images[0].newName",
            image_name,
        ),
        case(
            "image tag starting with '-'",
            SS,
            "newTag: 1.1.0-rc.1",
            "newTag: -rc.1",
            "ShopSet",
            "spec.images[0].newTag",
            image_tag,
        ),
        case(
            "image tag with a colon",
            SS,
            "newTag: 1.1.0-rc.1",
            "newTag: '1.1:0'",
            "ShopSet",
            "spec.images[0].newTag",
            image_tag,
        ),
        case(
            "image digest that is no digest",
            SS,
            "newTag: 1.1.0-rc.1",
            "digest: sha256:xyz",
            "ShopSet",
            "spec.images[0].digest",
            image_digest,
        ),
        case(
            "image override changing nothing",
            SS,
            "\n    newTag: 1.1.0-rc.1",
            "",
            "ShopSet",
            "spec.images[0]",
            rules::IMAGE_CHANGES_NOTHING,
        ),
    ]);

    // A misspelt field, at every level of every kind: strict field validation (kubectl's
    // default) refuses it, and so does shopctl, in the same words. The "field" column is the words'
    // start here: the path is inside the quotes both print.
    cases.extend([
        case(
            "misspelt ShopSet field",
            SS,
            "\n  shops: [shop-0100",
            "\n  shopz: [shop-0100",
            "ShopSet",
            "unknown field",
            "\"spec.shopz\"",
        ),
        case(
            "misspelt nested Tier field",
            T0,
            "\n    path: base",
            "\n    pth: base",
            "Tier",
            "unknown field",
            "\"spec.app.pth\"",
        ),
        case(
            "misspelt Configuration field",
            CFG,
            "\n  path: component",
            "\n  paht: component",
            "Configuration",
            "unknown field",
            "\"spec.paht\"",
        ),
    ]);

    // Changes of stored objects: API server only.
    cases.extend([
        Case {
            expect: Expect::RefusedOnUpdate,
            ..case(
                "ShopSet moved to another Tier in one step",
                SS,
                "name: canary-eu\nspec:\n  tier: tier-0",
                "name: canary-eu\nspec:\n  tier: tier-1",
                "ShopSet",
                "spec.tier",
                rules::TIER_IMMUTABLE,
            )
        },
        Case {
            expect: Expect::RefusedOnUpdate,
            before: Some("spec:\n  branch: release-a\n  app:"),
            ..case(
                "Tier branch changed",
                T0,
                "spec:\n  app:",
                "spec:\n  branch: release-b\n  app:",
                "Tier",
                "spec.branch",
                rules::BRANCH_IMMUTABLE,
            )
        },
    ]);

    // References between objects: the API server accepts, shopctl refuses.
    cases.extend(
        [
            case(
                "ShopSet names a missing Tier",
                SS,
                "name: eu-west\nspec:\n  tier: tier-1",
                "name: eu-west\nspec:\n  tier: tier-7",
                "ShopSet",
                "spec.tier",
                "names a Tier that does not exist",
            ),
            case(
                "ShopSet names a missing Configuration",
                SS,
                "name: eu-west\nspec:\n  tier: tier-1\n  configuration: shop-config",
                "name: eu-west\nspec:\n  tier: tier-1\n  configuration: shop-konfig",
                "ShopSet",
                "spec.configuration",
                "names a Configuration that does not exist",
            ),
            case(
                "Tier promoted from a missing Tier",
                T1,
                "from: tier-0",
                "from: tier-9",
                "Tier",
                "spec.promotion.from",
                "names a Tier that does not exist",
            ),
            case(
                "one shop in two ShopSets of a tier",
                SS,
                "[shop-1001]",
                "[shop-0002]",
                "ShopSet",
                "spec.shops[0]",
                "is served by ShopSet canary-eu of the same tier too",
            ),
            case(
                "two ShopSets of a tier in one namespace",
                SS,
                "namespace: shops-us-east",
                "namespace: eu-west",
                "ShopSet",
                "spec.namespace",
                "ShopSet eu-west of the same tier deploys into this namespace too",
            ),
            case(
                "ShopSet names a destination of a Tier that lists none",
                SS,
                "name: eu-west\nspec:\n  tier: tier-1",
                "name: eu-west\nspec:\n  tier: tier-1\n  destination: dc-z",
                "ShopSet",
                "spec.destination",
                rules::DESTINATION_WITHOUT_LIST,
            ),
            case(
                "ShopSets name no destination of a Tier that lists several",
                T1,
                SYNC_POLICY,
                dests("- name: dc-a\n      server: https://10.0.0.1:6443\n    - name: dc-b\n      cluster: prod-b"),
                "ShopSet",
                "spec.destination",
                rules::DESTINATION_MISSING,
            ),
        ]
        .map(|c| Case { expect: Expect::CrossObject, ..c }),
    );
    // What the controller alone refuses: the words after the field are those of its message.
    let local = "is a local repository";
    cases.extend(
        [
            case("app URL file://", T0, APP_URL, "url: file:///var/cache/shopset/app", "Tier", "spec.app.url", local),
            case(
                "system URL file://",
                T0,
                SYSTEM_URL,
                "url: file:///var/cache/shopset/system",
                "Tier",
                "spec.system.url",
                local,
            ),
            case(
                "Configuration URL file://",
                CFG,
                CFG_URL,
                "url: file:///var/cache/shopset/config",
                "Configuration",
                "Configuration/shop-config spec.url",
                local,
            ),
        ]
        .map(|c| Case { expect: Expect::ControllerOnly, ..c }),
    );
    cases
}

/// What the controller says of the case's manifests (before any git), if it refuses them.
fn controller_refusal(dir: &Path) -> Option<String> {
    // As `kubectl create -n NS` places them.
    let inventory = shopset::manifests::Inventory::load(&[dir.to_path_buf()])
        .expect("the manifests load")
        .in_namespace(NS)
        .expect("the manifests name no other namespace");
    let input = inventory.tier_input("tier-0").expect("tier-0's input");
    shopset::tenancy::local_urls(&input).err().map(|e| e.to_string())
}

/// Whether a line of `text` names `field` and says `words` after it.
fn says(text: &str, field: &str, words: &str) -> bool {
    text.lines().any(|line| line.find(field).is_some_and(|at| line[at + field.len()..].contains(words)))
}

/// The example manifests, with `case`'s edit if given.
fn write_manifests(dir: &Path, case: Option<&Case>) {
    std::fs::create_dir_all(dir).expect("create manifests dir");
    for file in FILES {
        let mut yaml = std::fs::read_to_string(repo_root().join("examples").join(file)).expect("read example");
        if let Some(c) = case.filter(|c| c.file == *file) {
            assert_eq!(
                yaml.matches(c.from).count(),
                1,
                "case {:?}: {:?} must occur once in examples/{file}",
                c.name,
                c.from
            );
            yaml = yaml.replacen(c.from, &c.to, 1);
        }
        std::fs::write(dir.join(file), yaml).expect("write manifest");
    }
}

fn shopctl(work: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("shopctl"))
        .current_dir(work)
        .args(["--cache-dir", "cache", "--color", "never"])
        .args(args)
        .env("HOME", work)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("SHOPSET_CACHE_DIR")
        .env_remove("SHOPSET_CREDENTIALS")
        .env_remove("SHOPSET_TEMPLATES")
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run shopctl")
}

/// `kubectl create --dry-run=server` of every manifest in `dir`: validation without storing.
fn server_dry_run(cp: &ControlPlane, dir: &Path) -> Output {
    let mut args: Vec<std::ffi::OsString> =
        ["create", "--dry-run=server", "-n", NS, "-o", "name", "-f"].map(Into::into).into();
    args.push(dir.into());
    cp.kubectl(args)
}

/// The table's rows per expectation, so that a row added or lost is a change made on purpose.
#[test]
fn the_table_has_the_cases_it_had_of_each_kind() {
    let cases = cases();
    let count = |e: Expect| cases.iter().filter(|c| c.expect == e).count();
    let counts =
        [Expect::Refused, Expect::RefusedOnUpdate, Expect::CrossObject, Expect::ControllerOnly].map(|e| (e, count(e)));
    assert_eq!(
        counts,
        [
            (Expect::Refused, REFUSED),
            (Expect::RefusedOnUpdate, REFUSED_ON_UPDATE),
            (Expect::CrossObject, CROSS_OBJECT),
            (Expect::ControllerOnly, CONTROLLER_ONLY)
        ],
        "rows per expectation: update the counts with the table"
    );
}

#[test]
fn invalid_input_is_refused_by_the_api_server_and_shopctl_with_the_same_words() {
    let cases = cases();
    let started = Instant::now();
    let cp = ControlPlane::start();
    eprintln!("control plane up in {:.1?}", started.elapsed());
    cp.kubectl_ok(["create", "namespace", NS]);
    let count = |e: Expect| cases.iter().filter(|c| c.expect == e).count();
    eprintln!(
        "{} cases: {} refused by both, {} refused on update (API server only), {} cross-object (shopctl only), {} controller only",
        cases.len(),
        count(Expect::Refused),
        count(Expect::RefusedOnUpdate),
        count(Expect::CrossObject),
        count(Expect::ControllerOnly)
    );

    // Control: the unedited examples pass both.
    let work = TempDir::with_prefix("shopset-bad-input-").expect("temp dir");
    let control = work.path().join("control");
    write_manifests(&control, None);
    let out = server_dry_run(&cp, &control);
    assert!(out.status.success(), "the examples are refused:\n{}", text(&out.stderr));
    let out = shopctl(work.path(), &["render", "--offline", "-f", "control", "--out", "control-out"]);
    assert!(out.status.success(), "shopctl render --offline refuses the examples:\n{}", text(&out.stderr));

    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dir_name = format!("case-{i}");
        let dir = work.path().join(&dir_name);
        write_manifests(&dir, Some(case));
        let mut wrong = Vec::new();

        // The API server.
        let api = match case.expect {
            Expect::Refused | Expect::CrossObject | Expect::ControllerOnly => server_dry_run(&cp, &dir),
            Expect::RefusedOnUpdate => {
                // Store the unedited object in a namespace of the case's own, then change it.
                let ns = format!("update-{i}");
                cp.kubectl_ok(["create", "namespace", &ns]);
                let original = work.path().join(format!("original-{i}"));
                let stored = case.before.map(|before| {
                    self::case(&case.name, case.file, case.from, before, case.kind, case.field, case.words)
                });
                write_manifests(&original, stored.as_ref());
                let file = |d: &Path| d.join(case.file).to_string_lossy().into_owned();
                cp.kubectl_ok(["create", "-n", &ns, "-f", &file(&original)]);
                cp.kubectl([
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=bad-input",
                    "-n",
                    &ns,
                    "-f",
                    &file(&dir),
                ])
            }
        };
        let api_err = text(&api.stderr);
        match case.expect {
            Expect::Refused | Expect::RefusedOnUpdate => {
                if api.status.success() {
                    wrong.push("the API server accepted it".to_string());
                } else if !says(&api_err, case.field, case.words) || !about(&api_err, case.kind) {
                    wrong.push(format!(
                        "the API server does not say {:?}: {:?} about the {}",
                        case.field, case.words, case.kind
                    ));
                }
            }
            Expect::CrossObject => {
                if !api.status.success() {
                    wrong.push("the API server refused it (it cannot see other objects)".to_string());
                }
            }
            Expect::ControllerOnly => {
                if !api.status.success() {
                    wrong.push("the API server refused it (local URLs are the controller's to refuse)".to_string());
                }
                let render = shopctl(
                    work.path(),
                    &["render", "--offline", "-f", &dir_name, "--out", &format!("{dir_name}-out")],
                );
                if !render.status.success() {
                    wrong.push(format!("shopctl render --offline refused it:\n{}", text(&render.stderr)));
                }
                match controller_refusal(&dir) {
                    Some(said)
                        if says(&said, case.field, case.words)
                            && said.contains(&format!("Tier {NS}/tier-0: "))
                            && said.contains("fix: ") => {}
                    said => wrong.push(format!(
                        "the controller does not say {:?}: {:?} (with the Tier and a fix): {said:?}",
                        case.field, case.words
                    )),
                }
            }
        }

        // shopctl, offline (render) and before any git (sync): exit 2, the same words.
        if !matches!(case.expect, Expect::RefusedOnUpdate | Expect::ControllerOnly) {
            let render =
                shopctl(work.path(), &["render", "--offline", "-f", &dir_name, "--out", &format!("{dir_name}-out")]);
            let sync = shopctl(work.path(), &["sync", "-f", &dir_name]);
            let offline = text(&render.stderr);
            for (what, out) in [("render --offline", &render), ("sync", &sync)] {
                if out.status.code() != Some(2) {
                    wrong.push(format!("shopctl {what}: exit {:?}, not 2", out.status.code()));
                }
            }
            if text(&sync.stderr) != offline {
                wrong.push(format!("shopctl sync says something else than render:\n{}", text(&sync.stderr)));
            }
            if !says(&offline, case.field, case.words)
                || !offline.contains(&format!("{}/", case.kind))
                || !offline.contains("fix: ")
            {
                wrong.push(format!(
                    "shopctl does not say {:?}: {:?} about the {} (with a fix)",
                    case.field, case.words, case.kind
                ));
            }
            if work.path().join(format!("{dir_name}-out")).exists() {
                wrong.push("shopctl render wrote output".to_string());
            }
            if let Some(secret) = case.never.filter(|s| offline.contains(s) || api_err.contains(s)) {
                wrong.push(format!("{secret:?} is shown"));
            }
            if !wrong.is_empty() {
                wrong.push(format!("shopctl said:\n{offline}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "case {:?} ({:?}):\n  {}\n  the API server said:\n{api_err}",
                case.name,
                case.expect,
                wrong.join("\n  ")
            ));
        }
    }
    eprintln!("{} cases in {:.1?}", cases.len(), started.elapsed());
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// Whether the API server's refusal is about an object of `kind`: "The Tier ... is invalid" (CEL,
/// OpenAPI) or "cannot be handled as a Tier" (strict decoding: an unknown field).
fn about(api_err: &str, kind: &str) -> bool {
    api_err.contains(&format!("The {kind} ")) || api_err.contains(&format!("cannot be handled as a {kind}"))
}
