//! Values are data, never structure.
//!
//! Tiers, Configurations and ShopSets are built in Rust directly, bypassing validation (as a future
//! bug might), with hostile strings in every string field that reaches a template: YAML
//! metacharacters, quotes, backslashes, line breaks followed by `key: value` or `---`, Unicode line
//! separators, tabs, NUL and other control characters. Every rendered `.yaml` file must parse as
//! exactly one document equal to the expected one: the same keys at every level, nothing more, and
//! each value back byte for byte. `.gitmodules` must read back the same way through `git config`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shopset::api::{
    AppSource, ArgoCdSettings, AutomatedSync, Configuration, ConfigurationSpec, DeletionPolicy, Destination,
    ImageOverride, ShopSet, ShopSetSpec, SyncPolicy, SystemRepository, Tier, TierSpec,
};
use shopset::manifests::Inventory;
use shopset::render::{EMBEDDED_TEMPLATES, Entry, Pins, RenderError, RenderInput, Renderer, Tree};

const APP_PIN: &str = "0123456789abcdef0123456789abcdef01234567";
const CONFIG_PIN: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// Strings that would change the structure of a YAML file (or a git config file) if printed raw.
const PAYLOADS: &[&str] = &[
    "plain",
    "",
    " ",
    "key: value",
    "a: b: c",
    ": ",
    "# comment",
    "x # comment",
    "- item",
    "-",
    "{a: b}",
    "[a, b]",
    "}{][",
    "&anchor value",
    "*alias",
    "<<: *alias",
    "!!python/object/apply:os.system ['rm -rf /']",
    "!secret",
    "|",
    "|-\n  block",
    ">",
    "? complex key",
    "%YAML 1.2",
    "@at `backtick`",
    "'single quoted'",
    "\"double quoted\"",
    "'",
    "\"",
    "\\",
    "back\\slash\\n\\\"",
    "x\nkind: Secret",
    "\nkind: Secret\n",
    "x\n---\nkind: Secret\nmetadata:\n  name: stolen",
    "---",
    "...",
    "x\n...\n",
    "x\r\nkey: value",
    "x\rkey: value",
    "x\u{2028}kind: Secret",
    "x\u{2029}kind: Secret",
    "x\u{85}kind: Secret",
    "\u{feff}bom",
    "tab\there\t",
    "\tkey: value",
    "nul\0byte",
    "\u{1}\u{8}\u{b}\u{c}\u{1b}[31mred\u{7f}\u{9b}",
    "\u{fffe}\u{ffff}",
    "null",
    "~",
    "true",
    "no",
    "0x1F",
    "1e3",
    "012",
    ".inf",
    "2001-12-14",
    "{{ shopset }} {% if true %}jinja{% endif %}",
    "🦀 ünïcödé 日本語",
    " leading and trailing ",
    "semi;colon",
    "[submodule \"evil\"]\n\turl = https://evil.example/x.git",
    "x\"]\n[core]\n\thooksPath = /tmp",
];

/// What one render is made of: every string the templates can print.
#[derive(Clone, Debug)]
struct Values {
    tier: String,
    branch: String,
    app_url: String,
    app_path: String,
    system_url: String,
    argocd_namespace: String,
    project: String,
    server: String,
    destination_namespace: String,
    sync_options: Vec<String>,
    config: String,
    config_url: String,
    config_path: String,
    /// The first ShopSet sets its own namespace, images and replicas.
    first: String,
    first_namespace: String,
    first_shops: Vec<String>,
    image: ImageOverride,
    replicas: i32,
    /// The second takes the Tier's destination namespace and sets nothing else.
    second: String,
    second_shops: Vec<String>,
}

/// A name that can still be a directory: the renderer refuses the others (tested below).
fn dir_name(value: &str) -> String {
    let cleaned = value.replace(['/', '\0'], "_");
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." { format!("{cleaned}_") } else { cleaned }
}

/// A value `.gitmodules` can hold: git config has no escape for NUL or CR (refusal tested below).
fn git_value(value: &str) -> String {
    value.replace(['\0', '\r'], "_")
}

impl Values {
    /// `payload` in every field; with `tag`, each field also gets its own suffix, so a value that
    /// lands in the wrong field shows.
    fn new(payload: &str, tag: bool) -> Values {
        let v = |field: &str| if tag { format!("{payload}<{field}>") } else { payload.to_string() };
        Values {
            tier: v("tier"),
            branch: git_value(&v("branch")),
            app_url: git_value(&v("app.url")),
            app_path: v("app.path"),
            system_url: v("system.url"),
            argocd_namespace: v("argocd.namespace"),
            project: v("project"),
            server: v("server"),
            destination_namespace: v("destination.namespace"),
            sync_options: vec![v("syncOptions[0]"), v("syncOptions[1]")],
            config: git_value(&dir_name(&v("config")).replace('\n', "_")),
            config_url: git_value(&v("config.url")),
            config_path: v("config.path"),
            first: dir_name(&v("first")),
            first_namespace: v("first.namespace"),
            first_shops: vec![v("shops[0]"), v("shops[1]")],
            image: ImageOverride {
                name: v("image.name"),
                new_name: Some(v("image.newName")),
                new_tag: Some(v("image.newTag")),
                digest: Some(v("image.digest")),
            },
            replicas: -7,
            second: dir_name(&format!("{}~2", v("second"))),
            second_shops: vec![v("second.shops[0]")],
        }
    }

    fn tier(&self) -> Tier {
        Tier::new(
            &self.tier,
            TierSpec {
                branch: Some(self.branch.clone()),
                app: AppSource { url: self.app_url.clone(), path: self.app_path.clone() },
                system: SystemRepository { url: self.system_url.clone() },
                promotion: None,
                argocd: ArgoCdSettings {
                    namespace: self.argocd_namespace.clone(),
                    project: self.project.clone(),
                    destination: Destination {
                        server: self.server.clone(),
                        namespace: Some(self.destination_namespace.clone()),
                    },
                    destinations: Vec::new(),
                    sync_policy: Some(SyncPolicy {
                        automated: Some(AutomatedSync { prune: true, self_heal: false }),
                        sync_options: self.sync_options.clone(),
                    }),
                },
                credentials: None,
                interval: "1m".into(),
                deletion_policy: DeletionPolicy::Retain,
            },
        )
    }

    fn configuration(&self) -> Configuration {
        Configuration::new(
            &self.config,
            ConfigurationSpec { url: self.config_url.clone(), path: self.config_path.clone() },
        )
    }

    fn shopsets(&self) -> Vec<ShopSet> {
        vec![
            ShopSet::new(
                &self.first,
                ShopSetSpec {
                    tier: self.tier.clone(),
                    configuration: self.config.clone(),
                    shops: self.first_shops.clone(),
                    replicas: Some(self.replicas),
                    images: vec![self.image.clone()],
                    namespace: Some(self.first_namespace.clone()),
                    maintenance: None,
                    destination: None,
                    capacity: None,
                },
            ),
            ShopSet::new(
                &self.second,
                ShopSetSpec {
                    tier: self.tier.clone(),
                    configuration: self.config.clone(),
                    shops: self.second_shops.clone(),
                    replicas: None,
                    images: vec![],
                    namespace: None,
                    maintenance: None,
                    destination: None,
                    capacity: None,
                },
            ),
        ]
    }

    fn render(&self) -> Result<Tree, RenderError> {
        let pins = Pins {
            app: APP_PIN.into(),
            configurations: BTreeMap::from([(self.config.clone(), CONFIG_PIN.to_string())]),
        };
        let shopsets: Vec<_> = self.shopsets().into_iter().map(std::sync::Arc::new).collect();
        let (tier, configurations) = (self.tier(), [self.configuration()]);
        Renderer::embedded().expect("embedded templates").render(RenderInput {
            tier: &tier,
            configurations: &configurations,
            shopsets: &shopsets,
            pins: &pins,
        })
    }

    /// Every file of the tree and what it must read back as.
    fn expected(&self) -> BTreeMap<String, Value> {
        let mut files = BTreeMap::new();
        let first = (&self.first, &self.first_namespace, &self.first_shops, true);
        let second = (&self.second, &self.destination_namespace, &self.second_shops, false);
        for (name, namespace, shops, full) in [first, second] {
            let dir = format!("shopsets/{name}");
            let mut kustomization = json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": namespace,
                "resources": [repo_path("../../base", &self.app_path), "namespace.yaml"],
                "components": [repo_path(&format!("../../config/{}", self.config), &self.config_path)],
                "labels": [{"pairs": {"shopset.dev/shopset": name, "shopset.dev/tier": self.tier}, "includeTemplates": true}],
                "configMapGenerator": [{"name": "shopset", "literals": [
                    format!("SHOPSET_NAME={name}"),
                    format!("SHOPSET_TIER={}", self.tier),
                    format!("SHOP_COUNT={}", shops.len()),
                    format!("SHOP_IDS={}", shops.join(",")),
                ]}],
            });
            if full {
                kustomization["images"] = json!([{
                    "name": self.image.name,
                    "newName": self.image.new_name,
                    "newTag": self.image.new_tag,
                    "digest": self.image.digest,
                }]);
                kustomization["patches"] = json!([{"path": "replicas.yaml", "target": {"kind": "Deployment"}}]);
                files.insert(
                    format!("{dir}/replicas.yaml"),
                    json!([{"op": "add", "path": "/spec/replicas", "value": self.replicas}]),
                );
            }
            files.insert(format!("{dir}/kustomization.yaml"), kustomization);
            files.insert(
                format!("{dir}/namespace.yaml"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            );
            files.insert(
                format!("applications/{name}.yaml"),
                json!({
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": {
                        "name": name,
                        "namespace": self.argocd_namespace,
                        "labels": {
                            "app.kubernetes.io/managed-by": "shopset-controller",
                            "shopset.dev/shopset": name,
                            "shopset.dev/tier": self.tier,
                        },
                    },
                    "spec": {
                        "project": self.project,
                        "source": {"repoURL": self.system_url, "targetRevision": self.branch, "path": dir},
                        "destination": {"server": self.server, "namespace": namespace},
                        "syncPolicy": {"automated": {"prune": true, "selfHeal": false}, "syncOptions": self.sync_options},
                    },
                }),
            );
        }
        files
    }

    /// `.gitmodules` as `git config --list` reads it: (subsection, key) -> value.
    fn expected_gitmodules(&self) -> BTreeMap<(String, String), String> {
        let config_path = format!("config/{}", self.config);
        let mut out = BTreeMap::new();
        for (path, url) in [("base".to_string(), &self.app_url), (config_path, &self.config_url)] {
            out.insert((path.clone(), "path".into()), path.clone());
            out.insert((path.clone(), "url".into()), url.clone());
            out.insert((path.clone(), "branch".into()), self.branch.clone());
        }
        out
    }
}

/// As the renderer joins a repository path to its submodule directory.
fn repo_path(prefix: &str, path: &str) -> String {
    let path = path.trim_end_matches('/');
    if path == "." || path.is_empty() { prefix.to_string() } else { format!("{prefix}/{path}") }
}

/// Parses `text` as a YAML stream: exactly one document, as JSON (so keys must be strings and no
/// YAML tag can hide).
fn one_document(path: &str, text: &str) -> Result<Value, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("{path}: not YAML: {e}"))?;
        docs.push(value);
    }
    match docs.as_slice() {
        [one] => serde_json::to_value(one).map_err(|e| format!("{path}: not plain data: {e}")),
        _ => Err(format!("{path}: {} documents, expected 1", docs.len())),
    }
}

/// `git config --file <.gitmodules> --list --null`, as (subsection, key) -> value.
fn git_config_list(gitmodules: &[u8]) -> Result<BTreeMap<(String, String), String>, String> {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join("gitmodules");
    std::fs::write(&file, gitmodules).expect("write .gitmodules");
    let out = shopset_e2e::gitserver::try_git(
        dir.path(),
        &["config", "--file", file.to_str().expect("UTF-8 path"), "--list", "--null"],
    )?;
    let mut entries = BTreeMap::new();
    for entry in out.split('\0').filter(|e| !e.is_empty()) {
        let (key, value) = entry.split_once('\n').unwrap_or((entry, ""));
        let (subsection, name) = key
            .strip_prefix("submodule.")
            .and_then(|rest| rest.rsplit_once('.'))
            .ok_or_else(|| format!("{key:?} is not submodule.<name>.<key>"))?;
        if entries.insert((subsection.to_string(), name.to_string()), value.to_string()).is_some() {
            return Err(format!("{key:?} is set twice"));
        }
    }
    Ok(entries)
}

/// Renders `values` and checks every file; returns what is wrong.
fn check(values: &Values) -> Vec<String> {
    let tree = match values.render() {
        Ok(tree) => tree,
        Err(e) => return vec![format!("render failed: {e}")],
    };
    let mut wrong = Vec::new();
    let expected = values.expected();
    for (path, entry) in &tree.entries {
        let Entry::File(bytes) = entry else { continue };
        if !path.ends_with(".yaml") {
            continue;
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                wrong.push(format!("{path}: not UTF-8"));
                continue;
            }
        };
        match (one_document(path, text), expected.get(&**path)) {
            (Err(e), _) => wrong.push(format!("{e}\n{text}")),
            (Ok(_), None) => wrong.push(format!("{path}: not expected at all")),
            (Ok(got), Some(want)) if &got != want => {
                wrong.push(format!("{path}: read back as\n{got:#}\nexpected\n{want:#}\nfrom\n{text}"))
            }
            (Ok(_), Some(_)) => {}
        }
    }
    for path in expected.keys().filter(|p| !tree.entries.contains_key(p.as_str())) {
        wrong.push(format!("{path}: missing"));
    }
    match tree.entries.get(".gitmodules") {
        Some(Entry::File(bytes)) => match git_config_list(bytes) {
            Ok(got) if got == values.expected_gitmodules() => {}
            got => wrong.push(format!(
                ".gitmodules reads back as {got:#?}\nexpected {:#?}\nfrom\n{}",
                values.expected_gitmodules(),
                String::from_utf8_lossy(bytes)
            )),
        },
        _ => wrong.push(".gitmodules: missing".into()),
    }
    let gitlinks: BTreeMap<&str, &str> = tree.gitlinks().collect();
    let config_path = format!("config/{}", values.config);
    if gitlinks != BTreeMap::from([("base", APP_PIN), (config_path.as_str(), CONFIG_PIN)]) {
        wrong.push(format!("gitlinks: {gitlinks:?}"));
    }
    wrong
}

#[test]
fn hostile_values_stay_values() {
    let mut failures = Vec::new();
    for payload in PAYLOADS {
        for tag in [false, true] {
            let values = Values::new(payload, tag);
            let wrong = check(&values);
            if !wrong.is_empty() {
                failures.push(format!("payload {payload:?} (tagged: {tag}):\n  {}", wrong.join("\n  ")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} render(s) let a value become structure:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_payload_reaches_every_field() {
    // The table above is only as good as its coverage: a payload must really be in the files.
    let values = Values::new("x\n---\nkind: Secret", true);
    let tree = values.render().expect("render");
    let all: String = tree
        .entries
        .values()
        .filter_map(|e| match e {
            Entry::File(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Entry::Gitlink(_) => None,
        })
        .collect();
    for field in [
        "tier",
        "branch",
        "app.url",
        "app.path",
        "system.url",
        "argocd.namespace",
        "project",
        "server",
        "destination.namespace",
        "syncOptions[0]",
        "syncOptions[1]",
        "config",
        "config.url",
        "config.path",
        "first",
        "first.namespace",
        "shops[0]",
        "shops[1]",
        "image.name",
        "image.newName",
        "image.newTag",
        "image.digest",
        "second",
        "second.shops[0]",
    ] {
        assert!(
            all.contains(&format!("<{field}>")),
            "field {field} is not printed anywhere: the hostile test would not cover it"
        );
    }
}

#[test]
fn values_that_cannot_be_written_are_refused() {
    let base = Values::new("ok", true);
    type Edit = Box<dyn Fn(&mut Values)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("NUL in the app URL", Box::new(|v| v.app_url.push('\0'))),
        ("CR in the configuration URL", Box::new(|v| v.config_url.push_str("\r\n[core]"))),
        ("NUL in the branch", Box::new(|v| v.branch.push('\0'))),
        ("line break in a Configuration name", Box::new(|v| v.config = "c\n[core]".into())),
        ("ShopSet name `..`", Box::new(|v| v.first = "..".into())),
        ("ShopSet name with `/`", Box::new(|v| v.first = "../../etc".into())),
        ("empty ShopSet name", Box::new(|v| v.second = String::new())),
        ("Configuration name `.`", Box::new(|v| v.config = ".".into())),
        ("Configuration name with `/`", Box::new(|v| v.config = "a/b".into())),
    ];
    for (what, edit) in cases {
        let mut values = base.clone();
        edit(&mut values);
        match values.render() {
            Err(e @ (RenderError::BadName { .. } | RenderError::BadGitmodules { .. })) => {
                let message = e.to_string();
                assert!(message.contains("fix: "), "{what}: {message}");
            }
            Err(e) => panic!("{what}: refused for another reason: {e}"),
            Ok(tree) => panic!("{what}: rendered {:?}", tree.entries.keys().collect::<Vec<_>>()),
        }
    }
}

fn examples() -> Inventory {
    let dir = shopset_e2e::tools::repo_root().join("examples");
    let inventory = Inventory::load(&[dir]).expect("examples load");
    inventory.check().expect("examples are valid");
    inventory
}

fn render_examples(renderer: &Renderer) -> BTreeMap<String, Tree> {
    let inventory = examples();
    inventory
        .tier_names()
        .into_iter()
        .map(|name| {
            let input = inventory.tier_input(&name).expect("tier input");
            let pins = Pins {
                app: APP_PIN.into(),
                configurations: input
                    .configurations
                    .iter()
                    .map(|c| (c.metadata.name.clone().unwrap_or_default(), CONFIG_PIN.to_string()))
                    .collect(),
            };
            let tree = renderer
                .render(RenderInput {
                    tier: &input.tier,
                    configurations: &input.configurations,
                    shopsets: &input.shopsets,
                    pins: &pins,
                })
                .expect("examples render");
            (name, tree)
        })
        .collect()
}

#[test]
fn rendering_is_deterministic() {
    let first = render_examples(&Renderer::embedded().expect("templates"));
    let second = render_examples(&Renderer::embedded().expect("templates"));
    assert_eq!(first.len(), 2, "tiers: {:?}", first.keys());
    assert!(first.values().all(|t| t.entries.len() > 5));
    assert_eq!(first, second, "two renders of the same input differ");
    // ... and the same renderer twice.
    let renderer = Renderer::embedded().expect("templates");
    assert_eq!(render_examples(&renderer), render_examples(&renderer));
}

#[test]
fn an_override_replaces_only_its_template() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::write(
        dir.path().join("namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ namespace }}\n  labels:\n    overridden: \"yes\"\n",
    )
    .expect("write override");
    // Not a template name: ignored.
    std::fs::write(dir.path().join("other.yaml"), "{{ this would not even parse").expect("write stray file");

    let embedded = render_examples(&Renderer::embedded().expect("templates"));
    let overridden = render_examples(&Renderer::with_overrides(Some(dir.path())).expect("override templates"));
    let mut replaced = 0;
    for (tier, tree) in &embedded {
        let other = &overridden[tier];
        assert_eq!(
            tree.entries.keys().collect::<Vec<_>>(),
            other.entries.keys().collect::<Vec<_>>(),
            "{tier}: the same files"
        );
        for (path, entry) in &tree.entries {
            let Entry::File(after) = &other.entries[path] else {
                assert_eq!(entry, &other.entries[path], "{tier}/{path}");
                continue;
            };
            if path.ends_with("/namespace.yaml") {
                let namespace = one_document(path, std::str::from_utf8(after).unwrap()).unwrap();
                assert_eq!(namespace["metadata"]["labels"]["overridden"], "yes", "{tier}/{path}");
                assert_ne!(entry, &other.entries[path], "{tier}/{path}");
                replaced += 1;
            } else {
                assert_eq!(entry, &other.entries[path], "{tier}/{path} changed though its template was not overridden");
            }
        }
    }
    assert_eq!(replaced, 4, "every ShopSet's namespace.yaml comes from the override");
    assert!(EMBEDDED_TEMPLATES.iter().any(|(name, _)| *name == "namespace.yaml"));
}
