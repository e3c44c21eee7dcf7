//! Tables for `shopset::validation` (names, URLs, paths, branches, durations) and the cross-checks
//! of `Inventory` (references, duplicates, namespace collisions).

use std::path::Path;
use std::time::Duration;

use shopset::manifests::{Inventory, LoadError};
use shopset::validation::{
    Invalid, branch_problem, check_configuration, check_shopset, check_tier, dns_label_problem, duration_problem,
    parse_duration, path_problem, redact_url, url_problem,
};

#[test]
fn names_are_dns_labels() {
    let max = "a".repeat(63);
    for ok in ["a", "0", "tier-0", "eu-west-1", "a-b-c", "0a", max.as_str()] {
        assert_eq!(dns_label_problem(ok), None, "{ok:?}");
    }
    let long = "a".repeat(64);
    for (bad, why) in [
        ("", "must not be empty"),
        ("EU-West", "lower case"),
        ("a/b", "'/'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        (long.as_str(), "at most 63 characters"),
        ("-a", "start and end"),
        ("a-", "start and end"),
        ("a_b", "lower case letters, digits and '-'"),
        ("a.b", "lower case letters, digits and '-'"),
        ("a b", "lower case letters, digits and '-'"),
        ("ü", "lower case letters, digits and '-'"),
        ("a\n", "lower case letters, digits and '-'"),
    ] {
        let problem = dns_label_problem(bad).unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(problem.contains(why), "{bad:?}: {problem:?} should say {why:?}");
    }
}

#[test]
fn urls() {
    for ok in [
        "https://github.com/acme/shop.git",
        "http://127.0.0.1:8080/git/app.git",
        "git://127.0.0.1:9418/app.git",
        "ssh://git@github.com/acme/shop.git",
        "ssh://github.com:22/acme/shop.git",
        "git@github.com:acme/shop.git",
        "deploy-bot@git.example.com:org/repo",
        "file:///abs/path/repo.git",
        "https://host/x.git?ref=1",
    ] {
        assert_eq!(url_problem(ok), None, "{ok:?}");
    }
    for (bad, why) in [
        ("", "must not be empty"),
        ("https://user:pw@host/x.git", "credentials"),
        ("https://token@host/x.git", "credentials"),
        ("ssh://git:pw@host/x", "credentials"),
        ("ftp://host/x.git", "unsupported scheme"),
        ("HTTPS://host/x", "unsupported scheme"),
        ("host/path", "no scheme"),
        ("127.0.0.1/app.git", "no scheme"),
        ("github.com:acme/shop.git", "no scheme"),
        ("git@host:", "no scheme"),
        ("@host:path", "no scheme"),
        ("user:pw@host:path", "no scheme"),
        ("https://", "no host"),
        ("https:///x.git", "no host"),
        ("file://relative/path", "absolute"),
        ("https://host/a b", "spaces"),
        ("https://host/x\n", "control"),
        ("https://host/\"x\"", "quotes"),
        ("https://host/x\\y", "backslashes"),
        ("https://host/x\0", "control"),
    ] {
        let problem = url_problem(bad).unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(problem.contains(why), "{bad:?}: {problem:?} should say {why:?}");
    }
    let long = format!("https://host/{}", "x".repeat(2040));
    assert!(url_problem(&long).is_some_and(|p| p.contains("2048")));
}

#[test]
fn refused_urls_are_shown_without_their_password() {
    for (url, shown) in [
        ("https://user:s3cr3t@host/x.git", "https://user:<redacted>@host/x.git"),
        ("ssh://git:s3cr3t@host:22/x", "ssh://git:<redacted>@host:22/x"),
        ("user:s3cr3t@host:path", "user:<redacted>@host:path"),
        ("https://user@host/x.git", "https://user@host/x.git"),
        ("https://host/a@b:c", "https://host/a@b:c"),
        ("git@github.com:acme/shop.git", "git@github.com:acme/shop.git"),
    ] {
        assert_eq!(redact_url(url), shown, "{url:?}");
    }
    let mut tier = tier("tier-0");
    tier.spec.app.url = "https://bot:s3cr3t@git.example.com/app.git".into();
    let problems = problems_of_tier(&tier);
    let message = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(message.contains("spec.app.url") && message.contains("<redacted>"), "{message}");
    assert!(!message.contains("s3cr3t"), "the password is shown: {message}");
}

#[test]
fn paths() {
    for ok in [".", "base", "deploy/base", "a/b/c", "_x", "a.b", "base/", "a-b_c.d/e"] {
        assert_eq!(path_problem(ok), None, "{ok:?}");
    }
    for (bad, why) in [
        ("", "must not be empty"),
        ("..", "'..'"),
        ("../base", "'..'"),
        ("a/../b", "'..'"),
        ("a/..", "'..'"),
        ("/abs", "relative"),
        ("/", "relative"),
        ("./base", "start with"),
        ("-x", "start with"),
        (".hidden", "start with"),
        ("a b", "only letters"),
        ("a\\b", "only letters"),
        ("a\nb", "only letters"),
        ("ü", "start with"),
    ] {
        let problem = path_problem(bad).unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(problem.contains(why), "{bad:?}: {problem:?} should say {why:?}");
    }
}

const BRANCHES: &[&str] = &[
    "tier-0",
    "main",
    "feature/x",
    "a/b/c",
    "v1.0",
    "a@b",
    "x-",
    "_",
    "bad..branch",
    "-x",
    "x.lock",
    "a/x.lock/b",
    "x~1",
    "x^",
    "x:y",
    "x?",
    "x*",
    "x[",
    "x\\y",
    "/x",
    "x/",
    "x//y",
    "x.",
    ".x",
    "a/.x",
    "@",
    "a@{b",
    "HEAD",
    "a b",
    "a\tb",
    "a\u{7f}",
    "ü",
];

/// Branch names git allows and the CRD's rule does not.
const STRICTER_THAN_GIT: &[&str] = &["a@b", "@", "ü"];

#[test]
fn branches_follow_git() {
    assert!(branch_problem("").is_some());
    assert!(branch_problem(&"a".repeat(245)).is_some_and(|p| p.contains("244")));
    assert_eq!(branch_problem(&"a".repeat(244)), None);
    // The oracle: git itself.
    let dir = tempfile::TempDir::new().expect("temp dir");
    for branch in BRANCHES {
        let git_says = shopset_e2e::gitserver::try_git(dir.path(), &["check-ref-format", "--branch", branch]).is_ok();
        let we_say = branch_problem(branch).is_none();
        // The CRD's rule (and so ours) allows only ASCII letters, digits and `._/+-`: stricter than git.
        let stricter = STRICTER_THAN_GIT.contains(branch);
        assert_eq!(
            we_say,
            git_says && !stricter,
            "branch {branch:?}: git check-ref-format --branch says valid={git_says}"
        );
        assert!(!stricter || git_says, "{branch:?} is not one git allows");
    }
}

#[test]
fn durations() {
    for (ok, seconds) in [
        ("30s", 30.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1500ms", 1.5),
        ("1.5m", 90.0),
        ("2h0m0s", 7200.0),
    ] {
        assert_eq!(duration_problem(ok), None, "{ok:?}");
        assert_eq!(parse_duration(ok), Some(Duration::from_secs_f64(seconds)), "{ok:?}");
    }
    for (bad, why) in [
        ("1d", "not a duration"),
        ("0s", "at least 1s"),
        ("0h0m", "at least 1s"),
        ("500ms", "at least 1s"),
        ("", "not a duration"),
        ("s", "not a duration"),
        ("30", "not a duration"),
        ("-1s", "not a duration"),
        ("1 m", "not a duration"),
        ("1M", "not a duration"),
        (".5s", "not a duration"),
        ("1.s", "not a duration"),
        ("1..5s", "not a duration"),
        ("1e3s", "not a duration"),
        ("1h 30m", "not a duration"),
        ("99999999999999999999999h", "not a duration"),
    ] {
        let problem = duration_problem(bad).unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(problem.contains(why), "{bad:?}: {problem:?} should say {why:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Objects

fn tier(name: &str) -> shopset::api::Tier {
    serde_yaml::from_str(&format!(
        "apiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata: {{name: {name}}}\nspec:\n  app: {{url: \
            https://git.example.com/app.git, path: base}}\n  system: {{url: https://git.example.com/system.git}}\n"
    ))
    .expect("a Tier")
}

fn problems_of_tier(tier: &shopset::api::Tier) -> Vec<Invalid> {
    let mut out = Vec::new();
    check_tier(tier, &mut out);
    out
}

/// (field, value) of each problem.
fn fields(problems: &[Invalid]) -> Vec<(String, String)> {
    problems.iter().map(|p| (p.field.clone(), p.value.clone())).collect()
}

#[test]
fn a_tier_on_its_own() {
    assert_eq!(problems_of_tier(&tier("tier-0")), vec![]);

    let mut t = tier("tier-0");
    t.spec.branch = Some("bad..branch".into());
    t.spec.app.path = "../x".into();
    t.spec.interval = "1d".into();
    t.spec.argocd.project = String::new();
    t.spec.argocd.namespace = "Argo".into();
    t.spec.argocd.destination.namespace = Some("a_b".into());
    t.spec.promotion = Some(shopset::api::Promotion { from: "tier-0".into(), ..Default::default() });
    t.spec.system.url = t.spec.app.url.clone();
    let problems = problems_of_tier(&t);
    assert_eq!(
        fields(&problems),
        vec![
            ("spec.branch".into(), "bad..branch".into()),
            ("spec.app.path".into(), "../x".into()),
            ("spec.promotion.from".into(), "tier-0".into()),
            ("spec.argocd.namespace".into(), "Argo".into()),
            ("spec.argocd.destination.namespace".into(), "a_b".into()),
            ("spec.argocd.project".into(), "".into()),
            ("spec.interval".into(), "1d".into()),
            ("spec.system.url".into(), "https://git.example.com/app.git".into()),
        ],
        "{problems:#?}"
    );
    for p in &problems {
        assert_eq!(p.resource, "Tier/tier-0");
        assert!(!p.problem.is_empty() && !p.fix.is_empty(), "{p:?}");
        let shown = p.to_string();
        assert!(
            shown.starts_with(&format!("Tier/tier-0: {}: ", p.field))
                && shown.contains(&format!("(got {:?}); fix: ", p.value)),
            "{shown}"
        );
    }
}

#[test]
fn a_shopset_on_its_own() {
    let ss: shopset::api::ShopSet = serde_yaml::from_str(
        "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata: {name: eu-west}\nspec:\n  tier: Tier-1\n  \
            configuration: shop_config\n  namespace: a/b\n  shops: [shop-1, shop-1, -bad, 'a b', '']\n  replicas: \
            1001\n  images:\n  - {name: ghcr.io/acme/shop}\n  - {name: 'a b', newTag: ' '}\n",
    )
    .expect("a ShopSet");
    let mut out = Vec::new();
    check_shopset(&ss, &mut out);
    assert_eq!(
        fields(&out),
        vec![
            ("spec.tier".into(), "Tier-1".into()),
            ("spec.configuration".into(), "shop_config".into()),
            ("spec.namespace".into(), "a/b".into()),
            ("spec.shops[1]".into(), "shop-1".into()),
            ("spec.shops[2]".into(), "-bad".into()),
            ("spec.shops[3]".into(), "a b".into()),
            ("spec.shops[4]".into(), "".into()),
            ("spec.replicas".into(), "1001".into()),
            ("spec.images[0]".into(), "ghcr.io/acme/shop".into()),
            ("spec.images[1].name".into(), "a b".into()),
            ("spec.images[1].newTag".into(), " ".into()),
        ],
        "{out:#?}"
    );
    assert_eq!(out[3].problem, shopset::rules::SHOP_DUPLICATE, "{:?}", out[3]);
    assert!(out.iter().all(|p| p.resource == "ShopSet/eu-west"));
}

#[test]
fn a_configuration_on_its_own() {
    let cfg: shopset::api::Configuration = serde_yaml::from_str(
        "apiVersion: shopset.dev/v1alpha1\nkind: Configuration\nmetadata: {name: Shop.Config}\nspec: {url: 'ftp://x/y', path: /abs}\n",
    )
    .expect("a Configuration");
    let mut out = Vec::new();
    check_configuration(&cfg, &mut out);
    assert_eq!(
        fields(&out),
        vec![
            ("metadata.name".into(), "Shop.Config".into()),
            ("spec.url".into(), "ftp://x/y".into()),
            ("spec.path".into(), "/abs".into())
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Inventory

const TIERS: &str = "
apiVersion: shopset.dev/v1alpha1
kind: Tier
metadata: {name: tier-0}
spec:
  app: {url: https://git.example.com/app.git, path: base}
  system: {url: https://git.example.com/system.git}
---
apiVersion: shopset.dev/v1alpha1
kind: Tier
metadata: {name: tier-1}
spec:
  app: {url: https://git.example.com/app.git, path: base}
  system: {url: https://git.example.com/system.git}
  promotion: {from: tier-0}
---
apiVersion: shopset.dev/v1alpha1
kind: Configuration
metadata: {name: shop-config}
spec: {url: https://git.example.com/config.git, path: component}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: passed-over}
";

fn shopset(name: &str, rest: &str) -> String {
    format!(
        "---\napiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata: {{name: {name}}}\nspec: {{tier: tier-0, configuration: shop-config{rest}}}\n"
    )
}

fn inventory(yaml: &str) -> Inventory {
    let mut inv = Inventory::default();
    let mut problems = Vec::new();
    inv.add_yaml(Path::new("input.yaml"), yaml, &mut problems).expect("loads");
    assert_eq!(problems, vec![], "problems while loading");
    inv
}

/// The problems `check` finds, as (resource, field, value).
fn check(yaml: &str) -> Vec<(String, String, String)> {
    match inventory(yaml).check() {
        Ok(()) => vec![],
        Err(problems) => problems.0.iter().map(|p| (p.resource.clone(), p.field.clone(), p.value.clone())).collect(),
    }
}

fn triple(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[test]
fn a_valid_inventory() {
    let yaml = format!("{TIERS}{}{}", shopset("b", ""), shopset("a", ", shops: [s1]"));
    assert_eq!(check(&yaml), vec![]);
    let inv = inventory(&yaml);
    assert_eq!(inv.tier_names(), vec!["tier-0", "tier-1"]);
    assert_eq!(inv.configurations.len(), 1);
    let input = inv.tier_input("tier-0").expect("tier-0");
    assert_eq!(input.shopsets.iter().map(|s| s.metadata.name.clone().unwrap()).collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(input.configurations.len(), 1);
    assert!(input.from.is_none());
    let input = inv.tier_input("tier-1").expect("tier-1");
    assert_eq!(input.from.and_then(|t| t.metadata.name), Some("tier-0".into()));
    assert!(input.shopsets.is_empty() && input.configurations.is_empty());
    let unknown = inv.tier_input("tier-9").expect_err("no tier-9");
    assert!(unknown.to_string().contains("tier-0, tier-1"), "{unknown}");
}

#[test]
fn references_must_exist() {
    let yaml = format!(
        "{}{}{}",
        TIERS.replace("promotion: {from: tier-0}", "promotion: {from: tier-00}"),
        shopset("a", "").replace("tier: tier-0", "tier: tier-9"),
        shopset("b", "").replace("configuration: shop-config", "configuration: other"),
    );
    assert_eq!(
        check(&yaml),
        vec![
            triple("Tier/tier-1", "spec.promotion.from", "tier-00"),
            triple("ShopSet/a", "spec.tier", "tier-9"),
            triple("ShopSet/b", "spec.configuration", "other"),
        ]
    );
}

#[test]
fn duplicates_are_refused() {
    let mut inv = Inventory::default();
    let mut problems = Vec::new();
    let yaml = format!("{TIERS}{}{}", shopset("a", ""), shopset("a", ", shops: [x]"));
    inv.add_yaml(Path::new("one.yaml"), &yaml, &mut problems).expect("loads");
    inv.add_yaml(Path::new("two.yaml"), TIERS, &mut problems).expect("loads");
    let found: Vec<_> = problems.iter().map(|p| (p.resource.as_str(), p.field.as_str(), p.value.as_str())).collect();
    assert_eq!(
        found,
        vec![
            ("ShopSet/a", "metadata.name", "a"),
            ("Tier/tier-0", "metadata.name", "tier-0"),
            ("Tier/tier-1", "metadata.name", "tier-1"),
            ("Configuration/shop-config", "metadata.name", "shop-config"),
        ]
    );
    assert!(problems[0].problem.contains("one.yaml document 5"), "{}", problems[0]);
    assert!(problems[1].problem.contains("two.yaml document 0"), "{}", problems[1]);

    // The same name in another namespace is another object.
    let other = TIERS.replace("metadata: {name: tier-0}", "metadata: {name: tier-0, namespace: team-b}");
    let mut inv = inventory(TIERS);
    let mut problems = Vec::new();
    inv.add_yaml(Path::new("b.yaml"), &other, &mut problems).expect("loads");
    assert!(problems.iter().all(|p| p.resource != "Tier/tier-0"), "{problems:?}");
    let ambiguous = inv.find_tier("tier-0").expect_err("two namespaces");
    assert!(ambiguous.to_string().contains("several namespaces"), "{ambiguous}");
}

#[test]
fn two_shopsets_of_a_tier_may_not_share_a_namespace() {
    // Explicitly.
    let yaml = format!("{TIERS}{}{}", shopset("a", ", namespace: shops"), shopset("b", ", namespace: shops"));
    assert_eq!(check(&yaml), vec![triple("ShopSet/b", "spec.namespace", "shops")]);
    // One's default (its own name) is the other's explicit namespace.
    let yaml = format!("{TIERS}{}{}", shopset("a", ""), shopset("b", ", namespace: a"));
    assert_eq!(check(&yaml), vec![triple("ShopSet/b", "spec.namespace", "a")]);
    // Both take the Tier's destination namespace.
    let tiers = TIERS.replacen(
        "  system: {url: https://git.example.com/system.git}\n",
        "  system: {url: https://git.example.com/system.git}\n  argocd: {destination: {namespace: shared}}\n",
        1,
    );
    let yaml = format!("{tiers}{}{}", shopset("a", ""), shopset("b", ""));
    assert_eq!(check(&yaml), vec![triple("ShopSet/b", "spec.namespace", "shared")]);
    // Different tiers may.
    let yaml = format!(
        "{TIERS}{}{}",
        shopset("a", ", namespace: shops"),
        shopset("b", ", namespace: shops").replace("tier: tier-0", "tier: tier-1")
    );
    assert_eq!(check(&yaml), vec![]);
    // So may one ShopSet's namespace and another's name, once that one sets its own.
    let yaml = format!("{TIERS}{}{}", shopset("a", ", namespace: x"), shopset("b", ", namespace: a"));
    assert_eq!(check(&yaml), vec![]);
}

#[test]
fn unknown_kinds_of_the_group_are_refused_and_other_groups_passed_over() {
    let mut inv = Inventory::default();
    let mut problems = Vec::new();
    let yaml = "apiVersion: shopset.dev/v1alpha1\nkind: Shop\nmetadata: {name: x}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: y}\n---\n# only a comment\n";
    inv.add_yaml(Path::new("k.yaml"), yaml, &mut problems).expect("loads");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (problems[0].resource.as_str(), problems[0].field.as_str(), problems[0].value.as_str()),
        ("Shop/x", "kind", "Shop")
    );
    assert!(inv.tiers.is_empty() && inv.shopsets.is_empty() && inv.configurations.is_empty());
}

#[test]
fn schema_errors_name_the_field() {
    for (yaml, expect) in [
        (
            "apiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata: {name: t}\nspec:\n  app: {path: base}\n  system: {url: https://h/s.git}\n",
            ["Tier/t", "spec.app.url", "Required value"],
        ),
        (
            "apiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata: {name: t}\nspec:\n  app: {url: https://h/a.git}\n",
            ["Tier/t", "spec.system", "Required value"],
        ),
        (
            "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata: {name: s}\nspec: {tier: t, configuration: c, shops: shop-1}\n",
            ["ShopSet/s", "spec.shops", "must be of type array"],
        ),
        (
            "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata: {name: s}\nspec: {tier: t, configuration: c, shops: [a, {b: c}]}\n",
            ["ShopSet/s", "spec.shops[1]", "must be of type string"],
        ),
        (
            "apiVersion: shopset.dev/v1alpha1\nkind: Tier\nmetadata: {name: t}\nspec:\n  app: {url: https://h/a.git}\n  system: {url: https://h/s.git}\n  deletionPolicy: Destroy\n",
            ["Tier/t", "spec.deletionPolicy", "\"Destroy\""],
        ),
        (
            "apiVersion: shopset.dev/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec: {url: 42}\n",
            ["Configuration/c", "spec.url", "must be of type string"],
        ),
    ] {
        let mut inv = Inventory::default();
        let err = inv.add_yaml(Path::new("s.yaml"), yaml, &mut Vec::new()).expect_err("a schema error");
        let message = err.to_string();
        for word in expect.iter().chain(&["s.yaml", "fix: "]) {
            assert!(message.contains(word), "{message:?} should say {word:?}");
        }
    }
}

#[test]
fn parse_reads_a_stream_as_load_reads_a_file() {
    let parsed = Inventory::parse(Path::new("input.yaml"), TIERS).expect("parses");
    assert_eq!(parsed.tier_names(), inventory(TIERS).tier_names());
    assert!(!parsed.tier_names().is_empty());
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join("input.yaml");
    let twice = format!("{TIERS}{}{}", shopset("a", ""), shopset("a", ""));
    std::fs::write(&file, &twice).expect("write");
    let (parsed, loaded) = (Inventory::parse(&file, &twice), Inventory::load(&[file]));
    match (parsed, loaded) {
        (Err(parsed @ LoadError::Invalid(_)), Err(loaded)) => assert_eq!(parsed.to_string(), loaded.to_string()),
        other => panic!("a duplicate must be refused alike: {other:?}"),
    }
}

#[test]
fn a_namespace_given_places_the_objects_that_name_none_and_refuses_the_others() {
    let yaml = format!("{TIERS}{}", shopset("a", ""));
    let placed = inventory(&yaml).in_namespace("shops").expect("placed");
    assert!(placed.tiers.keys().chain(placed.shopsets.keys()).all(|(ns, _)| ns == "shops"), "{placed:?}");
    assert!(placed.tiers.values().all(|t| t.metadata.namespace.as_deref() == Some("shops")));
    placed.check().expect("the ShopSet finds its Tier in the namespace given");
    assert_eq!(placed.tier_input("tier-0").expect("tier-0").shopsets.len(), 1);

    let elsewhere = yaml.replacen("metadata: {name: a}", "metadata: {name: a, namespace: other}", 1);
    let refused = inventory(&elsewhere).in_namespace("shops").expect_err("kubectl refuses it too");
    let text = refused.to_string();
    assert!(
        text.contains("ShopSet/a")
            && text.contains("metadata.namespace")
            && text.contains("other")
            && text.contains("--namespace (shops)"),
        "{text}"
    );
}

#[test]
fn a_misspelt_field_is_refused_at_any_depth_and_in_list_items() {
    let deep = TIERS.replacen(
        "  system: {url: https://git.example.com/system.git}\n",
        "  system: {url: https://git.example.com/system.git}\n  argocd: {syncPolicy: {automated: {prunee: true}}}\n",
        1,
    );
    let item = format!("{TIERS}{}", shopset("a", ", images: [{name: ghcr.io/acme/checkout, newTg: '2'}]"));
    for (yaml, field) in [(deep, "spec.argocd.syncPolicy.automated.prunee"), (item, "spec.images[0].newTg")] {
        let err = Inventory::parse(Path::new("input.yaml"), &yaml).expect_err("an unknown field is refused");
        let text = err.to_string();
        assert!(text.contains(&format!("{field}: unknown field \"{field}\"; fix: remove it")), "{text}");
    }
}
