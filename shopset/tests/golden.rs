//! Golden tests: the examples render to the committed trees under tests/golden/, byte for byte.
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p shopset --test golden`, then review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shopset::manifests::Inventory;
use shopset::render::{Entry, Pins, RenderInput, Renderer, Tree};

const APP: &str = "1111111111111111111111111111111111111111";
const CONFIG: &str = "2222222222222222222222222222222222222222";

fn examples() -> Inventory {
    let dir = shopset_e2e::tools::repo_root().join("examples");
    let inv = Inventory::load(&[dir]).expect("examples load");
    inv.check().expect("examples are valid");
    inv
}

fn render(inv: &Inventory, tier: &str) -> Tree {
    let input = inv.tier_input(tier).unwrap();
    let pins =
        Pins { app: APP.into(), configurations: BTreeMap::from([("shop-config".to_string(), CONFIG.to_string())]) };
    Renderer::embedded()
        .unwrap()
        .render(RenderInput {
            tier: &input.tier,
            configurations: &input.configurations,
            shopsets: &input.shopsets,
            pins: &pins,
        })
        .unwrap()
}

fn golden_dir(tier: &str) -> PathBuf {
    shopset_e2e::tools::repo_root().join("shopset/tests/golden").join(tier)
}

fn files_under(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            files_under(&entry.path(), &format!("{name}/"), out);
        } else {
            out.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
}

/// The tree as golden files: regular files as themselves, gitlinks as `<path>.gitlink` holding the commit.
fn as_files(tree: &Tree) -> BTreeMap<String, Vec<u8>> {
    tree.entries
        .iter()
        .map(|(path, entry)| match entry {
            Entry::File(bytes) => (path.to_string(), bytes.to_vec()),
            Entry::Gitlink(oid) => (format!("{path}.gitlink"), format!("{oid}\n").into_bytes()),
        })
        .collect()
}

fn check(tier: &str) {
    check_tree(tier, &render(&examples(), tier));
}

/// `tree` against the golden files under tests/golden/`name`.
fn check_tree(tier: &str, tree: &Tree) {
    let rendered = as_files(tree);
    let dir = golden_dir(tier);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        for (path, bytes) in &rendered {
            let target = dir.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, bytes).unwrap();
        }
    }
    let mut golden = BTreeMap::new();
    files_under(&dir, "", &mut golden);
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>(),
        "the set of rendered files changed"
    );
    for (path, bytes) in &rendered {
        assert!(
            golden[path] == *bytes,
            "{tier}/{path} differs from the golden file:\n--- golden\n{}\n--- rendered\n{}",
            String::from_utf8_lossy(&golden[path]),
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn tier_0_matches_golden_tree() {
    check("tier-0");
}

#[test]
fn tier_1_matches_golden_tree() {
    check("tier-1");
}

/// Tier-0 with canary-eu wholly in maintenance and one shop of canary-us.
fn maintenance_input() -> shopset::manifests::TierInput {
    let mut input = examples().tier_input("tier-0").unwrap();
    for ss in input.shopsets.iter_mut().map(std::sync::Arc::make_mut) {
        let shops = match ss.metadata.name.as_deref() {
            Some("canary-eu") => vec![],
            _ => vec!["shop-1001".to_string()],
        };
        ss.spec.maintenance = Some(shopset::api::Maintenance {
            reason: "database migration".into(),
            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-01T08:00:00Z".parse().unwrap()),
            shops,
        });
    }
    input
}

fn file(tree: &Tree, path: &str) -> String {
    match &tree.entries[path] {
        Entry::File(b) => String::from_utf8(b.to_vec()).unwrap(),
        Entry::Gitlink(_) => panic!("{path} is a file"),
    }
}

/// Maintenance shows in the ConfigMap of each ShopSet (the shops in it) and, for a ShopSet wholly
/// in maintenance, in an Application without automated sync; `since` and `reason` do not reach the
/// system branch, so the tree depends on what is in maintenance only.
#[test]
fn maintenance_matches_golden_tree() {
    let input = maintenance_input();
    let pins =
        Pins { app: APP.into(), configurations: BTreeMap::from([("shop-config".to_string(), CONFIG.to_string())]) };
    let tree = Renderer::embedded()
        .unwrap()
        .render(RenderInput {
            tier: &input.tier,
            configurations: &input.configurations,
            shopsets: &input.shopsets,
            pins: &pins,
        })
        .unwrap();
    check_tree("tier-0-maintenance", &tree);
    assert!(
        file(&tree, "shopsets/canary-eu/kustomization.yaml")
            .contains("- \"MAINTENANCE_SHOP_IDS=shop-0001,shop-0002\"\n")
    );
    assert!(file(&tree, "shopsets/canary-us/kustomization.yaml").contains("- \"MAINTENANCE_SHOP_IDS=shop-1001\"\n"));
    assert!(!file(&tree, "applications/canary-eu.yaml").contains("automated"));
    assert!(
        file(&tree, "applications/canary-us.yaml").contains("automated:\n      prune: true\n      selfHeal: true\n")
    );
    // Out of maintenance, both are as without the feature (the golden tier-0).
    let plain = render(&examples(), "tier-0");
    assert!(!file(&plain, "shopsets/canary-eu/kustomization.yaml").contains("MAINTENANCE"));
    assert!(file(&plain, "applications/canary-eu.yaml").contains("automated:"));
    // The same maintenance begun at another time, for another reason, renders the same bytes.
    let mut later = input.clone();
    for ss in later.shopsets.iter_mut().map(std::sync::Arc::make_mut) {
        let m = ss.spec.maintenance.as_mut().unwrap();
        m.reason = "another reason".into();
        m.since = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-02T09:30:00Z".parse().unwrap());
    }
    let again = Renderer::embedded()
        .unwrap()
        .render(RenderInput {
            tier: &later.tier,
            configurations: &later.configurations,
            shopsets: &later.shopsets,
            pins: &pins,
        })
        .unwrap();
    assert_eq!(tree, again);
}

/// Tier-1 over three clusters, in three zones: two named by API server URL, one by its Argo CD
/// cluster name; each ShopSet on its own.
fn fleet_input() -> shopset::manifests::TierInput {
    use shopset::api::NamedDestination;
    let mut input = examples().tier_input("tier-1").unwrap();
    let dest = |name: &str, server: Option<&str>, cluster: Option<&str>, zone: &str| NamedDestination {
        name: name.into(),
        server: server.map(String::from),
        cluster: cluster.map(String::from),
        failure_domain: BTreeMap::from([
            ("cloud".to_string(), "aws".to_string()),
            ("zone".to_string(), zone.to_string()),
        ]),
    };
    input.tier.spec.argocd.destinations = vec![
        dest("dc-a", Some("https://kubernetes.default.svc"), None, "eu-west-1a"),
        dest("dc-b", Some("https://10.20.0.1:6443"), None, "eu-west-1b"),
        dest("dc-c", None, Some("prod-us-east"), "us-east-1a"),
    ];
    let mut third = shopset::api::ShopSet::clone(&input.shopsets[0]);
    third.metadata.name = Some("ap-south".into());
    third.spec.shops = vec!["shop-2000".into()];
    third.spec.destination = Some("dc-a".into());
    std::sync::Arc::make_mut(&mut input.shopsets[0]).spec.destination = Some("dc-b".into());
    std::sync::Arc::make_mut(&mut input.shopsets[1]).spec.destination = Some("dc-c".into());
    input.shopsets.push(third.into());
    input
}

fn render_input(input: &shopset::manifests::TierInput) -> Result<Tree, shopset::render::RenderError> {
    let pins =
        Pins { app: APP.into(), configurations: BTreeMap::from([("shop-config".to_string(), CONFIG.to_string())]) };
    Renderer::embedded().unwrap().render(RenderInput {
        tier: &input.tier,
        configurations: &input.configurations,
        shopsets: &input.shopsets,
        pins: &pins,
    })
}

/// Each Application points at its ShopSet's destination (`server`, or `name` for a cluster Argo CD
/// knows by name) and says which one in a label; the overlays are the same as on one cluster.
#[test]
fn a_tier_over_three_destinations_matches_golden_tree() {
    let input = fleet_input();
    let tree = render_input(&input).unwrap();
    check_tree("tier-1-fleet", &tree);
    let app = |n: &str| serde_yaml_from(file(&tree, &format!("applications/{n}.yaml")).as_bytes());
    assert_eq!(
        app("eu-west")["spec"]["destination"],
        serde_json::json!({"server": "https://10.20.0.1:6443", "namespace": "eu-west"})
    );
    assert_eq!(
        app("us-east")["spec"]["destination"],
        serde_json::json!({"name": "prod-us-east", "namespace": "shops-us-east"})
    );
    assert_eq!(app("ap-south")["metadata"]["labels"]["shopset.dev/destination"], "dc-a");
    // Without destinations, the files are those of the plain golden tier-1.
    let plain = render(&examples(), "tier-1");
    for (path, entry) in &plain.entries {
        if path.starts_with("shopsets/") {
            assert_eq!(Some(entry), tree.entries.get(path), "{path} depends on the destination");
        }
    }
    assert!(!file(&plain, "applications/eu-west.yaml").contains("shopset.dev/destination"));
}

/// A ShopSet naming a destination its Tier does not list stops the render with the names it could be.
#[test]
fn an_unknown_destination_stops_the_render_and_names_the_choices() {
    let mut input = fleet_input();
    std::sync::Arc::make_mut(&mut input.shopsets[0]).spec.destination = Some("dc-z".into());
    let err = render_input(&input).unwrap_err().to_string();
    assert!(err.starts_with("ShopSet/eu-west: spec.destination: names no destination of its Tier"), "{err}");
    assert!(
        err.contains("(got \"dc-z\")") && err.ends_with("fix: set spec.destination to one of dc-a, dc-b, dc-c"),
        "{err}"
    );
    std::sync::Arc::make_mut(&mut input.shopsets[0]).spec.destination = None;
    let err = render_input(&input).unwrap_err().to_string();
    assert!(err.contains("spec.destination: names no destination (Tier tier-1 lists several)"), "{err}");
}

#[test]
fn rendering_is_deterministic() {
    let inv = examples();
    for tier in ["tier-0", "tier-1"] {
        let a = render(&inv, tier);
        let b = render(&examples(), tier);
        assert_eq!(a, b, "two renders of {tier} differ");
    }
}

#[test]
fn gitlinks_pin_the_given_commits() {
    let tree = render(&examples(), "tier-1");
    let links: BTreeMap<&str, &str> = tree.gitlinks().collect();
    assert_eq!(links, BTreeMap::from([("base", APP), ("config/shop-config", CONFIG)]));
    let gitmodules = match &tree.entries[".gitmodules"] {
        Entry::File(b) => String::from_utf8(b.to_vec()).unwrap(),
        Entry::Gitlink(_) => panic!(".gitmodules is a file"),
    };
    assert!(gitmodules.contains(
        "[submodule \"base\"]\n\tpath = base\n\turl = https://git.example.com/acme/shop-app.git\n\tbranch = tier-1\n"
    ));
}

#[test]
fn every_rendered_path_is_one_shopset_owns_and_nothing_else_is() {
    use shopset::render::{OWNED_PATHS, is_owned};
    for tier in ["tier-0", "tier-1"] {
        let tree = render(&examples(), tier);
        for path in tree.entries.keys() {
            assert!(is_owned(path), "{tier}: the renderer writes {path}, outside OWNED_PATHS {OWNED_PATHS:?}");
        }
        // Each owned path is produced (a ShopSet's files and a Configuration's gitlink included).
        for owned in OWNED_PATHS {
            assert!(tree.entries.keys().any(|p| &**p == *owned || p.starts_with(owned)), "{tier}: nothing at {owned}");
        }
    }
    for path in ["NOTES.md", ".github/CODEOWNERS", "shopsets.md", "config.d/x", "applicationsx.yaml", "basement"] {
        assert!(!is_owned(path), "{path} is a person's");
    }
    for path in ["shopsets", "config", "applications/x.yaml", "shopsets/x/extra.yaml"] {
        assert!(is_owned(path), "{path} is ShopSet's");
    }
}

#[test]
fn overlays_use_only_current_kustomize_fields() {
    let tree = render(&examples(), "tier-1");
    for (path, entry) in &tree.entries {
        if !path.ends_with("kustomization.yaml") {
            continue;
        }
        let Entry::File(bytes) = entry else { continue };
        let doc: serde_json::Value = serde_yaml_from(bytes);
        let allowed = [
            "apiVersion",
            "kind",
            "namespace",
            "resources",
            "components",
            "labels",
            "configMapGenerator",
            "images",
            "patches",
        ];
        for key in doc.as_object().unwrap().keys() {
            assert!(allowed.contains(&key.as_str()), "{path} uses {key}, not a current kustomize v5 field we allow");
        }
    }
}

fn serde_yaml_from(bytes: &[u8]) -> serde_json::Value {
    serde_yaml::from_slice(bytes).expect("rendered YAML parses")
}

/// A renderer reused across renders (the controller's, with its memo of unchanged ShopSets) gives
/// the bytes of a fresh one after any input the templates read changes, tier-wide or per ShopSet.
#[test]
fn a_reused_renderer_follows_every_input_change() {
    let inv = examples();
    let base = inv.tier_input("tier-0").unwrap();
    let pins =
        Pins { app: APP.into(), configurations: BTreeMap::from([("shop-config".to_string(), CONFIG.to_string())]) };
    type Change = fn(&mut shopset::manifests::TierInput);
    let changes: Vec<(&str, Change)> = vec![
        ("tier branch", |i| i.tier.spec.branch = Some("tier-0-next".into())),
        ("app path", |i| i.tier.spec.app.path = "base/v2".into()),
        ("system url", |i| i.tier.spec.system.url = "https://git.example/other/system.git".into()),
        ("argocd namespace", |i| i.tier.spec.argocd.namespace = "gitops".into()),
        ("argocd project", |i| i.tier.spec.argocd.project = "shops".into()),
        ("destination server", |i| i.tier.spec.argocd.destination.server = "https://cluster-2.example".into()),
        ("destination namespace", |i| i.tier.spec.argocd.destination.namespace = Some("cells".into())),
        ("sync policy", |i| i.tier.spec.argocd.sync_policy = None),
        ("destinations", |i| {
            i.tier.spec.argocd.destinations = vec![shopset::api::NamedDestination {
                name: "dc-a".into(),
                server: None,
                cluster: Some("dc-a".into()),
                failure_domain: BTreeMap::new(),
            }]
        }),
        ("configuration path", |i| i.configurations[0].spec.path = "component/v2".into()),
        ("shops", |i| std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.shops.push("shop-new".into())),
        ("replicas", |i| std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.replicas = Some(7)),
        ("shopset namespace", |i| {
            std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.namespace = Some("elsewhere".into())
        }),
        ("maintenance", |i| {
            std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.maintenance = Some(shopset::api::Maintenance {
                reason: "r".into(),
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time::from(
                    "2026-12-01T08:00:00Z".parse::<k8s_openapi::jiff::Timestamp>().unwrap(),
                ),
                shops: Vec::new(),
            })
        }),
    ];
    for (what, change) in changes {
        let reused = Renderer::embedded().unwrap();
        let render = |r: &Renderer, i: &shopset::manifests::TierInput| {
            r.render(RenderInput {
                tier: &i.tier,
                configurations: &i.configurations,
                shopsets: &i.shopsets,
                pins: &pins,
            })
            .unwrap()
        };
        let before = render(&reused, &base);
        let mut changed = base.clone();
        change(&mut changed);
        let after = render(&reused, &changed);
        assert_ne!(before, after, "{what}: the change should show in the render");
        assert_eq!(
            after,
            render(&Renderer::embedded().unwrap(), &changed),
            "{what}: the reused renderer kept stale files"
        );
    }
}

/// One renderer through a run of renders, each edited from the last: most change a few ShopSets
/// handed over as new `Arc`s among the same ones (the shortcut that visits only those), the others
/// rename, add, remove, reorder, switch or edit a Configuration (the full path). After each, the
/// render is byte for byte a fresh renderer's.
#[test]
fn a_run_of_renders_on_one_renderer_stays_a_fresh_render() {
    use shopset::manifests::TierInput;
    use std::sync::Arc;
    let pins = Pins {
        app: APP.into(),
        configurations: BTreeMap::from([
            ("shop-config".to_string(), CONFIG.to_string()),
            ("other-config".to_string(), "3333333333333333333333333333333333333333".to_string()),
        ]),
    };
    let mut input = examples().tier_input("tier-0").unwrap();
    let mut other = input.configurations[0].clone();
    other.metadata.name = Some("other-config".into());
    other.spec.path = "other".into();
    input.configurations.push(other);
    // Twelve ShopSets, so that a few of them are few.
    let template = shopset::api::ShopSet::clone(&input.shopsets[0]);
    input.shopsets = (0..12)
        .map(|n| {
            let mut ss = template.clone();
            ss.metadata.name = Some(format!("cell-{n:02}"));
            ss.spec.shops = vec![format!("shop-{n:02}")];
            Arc::new(ss)
        })
        .collect();
    type Step = fn(&mut TierInput);
    let steps: Vec<(&str, Step)> = vec![
        ("one changed", |i| Arc::make_mut(&mut i.shopsets[3]).spec.replicas = Some(3)),
        ("another changed", |i| Arc::make_mut(&mut i.shopsets[7]).spec.shops.push("shop-extra".into())),
        ("the first back", |i| Arc::make_mut(&mut i.shopsets[3]).spec.replicas = None),
        ("an equal copy", |i| i.shopsets[5] = Arc::new(shopset::api::ShopSet::clone(&i.shopsets[5]))),
        ("nothing", |_| {}),
        ("one removed", |i| {
            i.shopsets.remove(4);
        }),
        ("one changed after a removal", |i| Arc::make_mut(&mut i.shopsets[4]).spec.replicas = Some(5)),
        ("one added", |i| {
            let mut ss = shopset::api::ShopSet::clone(&i.shopsets[0]);
            ss.metadata.name = Some("cell-04".into());
            ss.spec.shops = vec!["shop-04-again".into()];
            i.shopsets.insert(4, Arc::new(ss));
        }),
        ("one renamed", |i| Arc::make_mut(&mut i.shopsets[11]).metadata.name = Some("cell-99".into())),
        ("one renamed out of order", |i| Arc::make_mut(&mut i.shopsets[0]).metadata.name = Some("cell-50".into())),
        ("one changed in an unsorted input", |i| Arc::make_mut(&mut i.shopsets[2]).spec.replicas = Some(2)),
        ("sorted again", |i| i.shopsets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name))),
        ("one switched Configuration", |i| {
            Arc::make_mut(&mut i.shopsets[6]).spec.configuration = "other-config".into()
        }),
        ("one changed beside it", |i| Arc::make_mut(&mut i.shopsets[8]).spec.replicas = Some(8)),
        ("the used Configuration's path", |i| i.configurations[1].spec.path = "other/v2".into()),
        ("one changed after that", |i| Arc::make_mut(&mut i.shopsets[6]).spec.replicas = Some(6)),
        ("the switched one back", |i| Arc::make_mut(&mut i.shopsets[6]).spec.configuration = "shop-config".into()),
        ("one changed last", |i| Arc::make_mut(&mut i.shopsets[1]).spec.shops.clear()),
    ];
    let render = |r: &Renderer, i: &TierInput| {
        r.render(RenderInput { tier: &i.tier, configurations: &i.configurations, shopsets: &i.shopsets, pins: &pins })
            .unwrap()
    };
    let reused = Renderer::embedded().unwrap();
    let mut before = render(&reused, &input);
    for (what, step) in steps {
        step(&mut input);
        let after = render(&reused, &input);
        // Compared without printing: a tree of twelve ShopSets prints as pages of bytes.
        assert!(after == render(&Renderer::embedded().unwrap(), &input), "{what}: the reused renderer went stale");
        if matches!(what, "an equal copy" | "nothing" | "sorted again") {
            assert!(after == before, "{what}: nothing changed, yet the render did");
        } else {
            assert!(after != before, "{what}: the change should show");
        }
        before = after;
    }
}
