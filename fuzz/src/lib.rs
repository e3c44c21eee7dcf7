//! What the fuzz targets feed the library and what they demand of it.
//!
//! Shared by the targets (`fuzz/fuzz_targets/`) and by the stable replay test
//! (`shopset/tests/fuzz_corpus.rs`, which includes this file with `#[path]` and runs the real
//! `kustomize build` on what it renders). So this file uses only `shopset`, `serde_json` and
//! `serde_yaml`, no `crate::` paths and no fuzzing crate.
//!
//! A finding is returned as `Err(description)`; the targets panic with it, so libFuzzer saves the
//! input under `fuzz/artifacts/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use shopset::api::{
    AppSource, ArgoCdSettings, AutomatedSync, Configuration, ConfigurationSpec, DeletionPolicy, Destination,
    ImageOverride, Promotion, ShopSet, ShopSetSpec, SyncPolicy, SystemRepository, Tier, TierSpec,
};
use shopset::manifests::Inventory;
use shopset::render::{Entry, Pins, RenderInput, Renderer, Tree};

/// Strings that change the structure of YAML (or git config) if printed raw, plus template syntax.
const PAYLOADS: &[&str] = &[
    "key: value",
    "a: b: c",
    ": ",
    "# comment",
    " #",
    "- item",
    "{a: b}",
    "[a, b]",
    "&anchor",
    "*alias",
    "<<: *alias",
    "!!binary aGk=",
    "!tag",
    "|",
    ">-",
    "? key",
    "%YAML 1.2",
    "'",
    "\"",
    "\\",
    "\\u0000",
    "\n",
    "\nkind: Secret\n",
    "\n---\nkind: Secret\nmetadata:\n  name: stolen\n",
    "---",
    "...",
    "\r\nkey: value",
    "\rkey: value",
    "\u{2028}kind: Secret",
    "\u{2029}",
    "\u{85}kind: Secret",
    "\u{feff}",
    "\u{fffe}\u{ffff}",
    "\t",
    "\0",
    "\u{1b}[31m\u{7f}\u{9b}",
    "null",
    "~",
    "true",
    "no",
    "0x1F",
    "1e3",
    "012",
    ".inf",
    "2001-12-14",
    "{{ shopset }}",
    "{% if true %}x{% endif %}",
    "{# comment #}",
    "{%- raw %}",
    "🦀 ünïcödé 日本語",
    " ",
    ";",
    "[submodule \"evil\"]\n\turl = x",
    "\"]\n[core]\n\thooksPath = /tmp",
    "..",
    "/",
    "@{",
    ".lock",
    "$(VAR)",
    "${VAR}",
    "=",
    ",",
    "@sha256:",
];

/// Characters a URL, image or free-text value may be built from: printable ASCII (including every
/// YAML indicator) and non-ASCII characters that are neither whitespace nor controls, so that
/// values still pass validation while carrying hostile characters.
const VISIBLE: &[char] = &[
    'a', 'z', 'A', 'Z', '0', '9', '!', '#', '$', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', ':', ';', '<',
    '=', '>', '?', '@', '[', ']', '^', '_', '`', '{', '|', '}', '~', 'é', '日', '🦀', '\u{200b}', '\u{feff}',
    '\u{fffe}', '\u{ffff}', '\u{e000}',
];
/// Whitespace and controls: only values validation does not restrict can hold them.
const INVISIBLE: &[char] =
    &[' ', '\t', '\n', '\r', '\0', '\u{b}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{2029}'];

/// What a string field must look like to pass validation; generated values follow it.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// DNS-1123 label.
    Name,
    /// Repository URL.
    Url,
    /// Relative path inside a repository.
    Path,
    /// Git branch name.
    Branch,
    /// Shop ID.
    Shop,
    /// Image name, tag or digest: no whitespace or controls.
    Image,
    /// Not restricted by validation (Argo CD project, server, sync options, interval).
    Free,
}

/// The fuzzer's bytes, read front to back. Past the end every read is 0 and 0 always means "the
/// example's value", so an empty input decodes to the examples and short inputs stay close to them.
pub struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn bool(&mut self) -> bool {
        self.byte() % 2 == 1
    }

    /// `Some` with odd bytes (0, the example, is `None` unless `typical` says otherwise).
    fn option<T>(&mut self, typical: bool, make: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.bool() != typical { Some(make(self)) } else { None }
    }

    /// A list length in `0..=max`, `typical` for the byte 0.
    fn count(&mut self, typical: usize, max: usize) -> usize {
        (typical + usize::from(self.byte())) % (max + 1)
    }

    fn char_from(&mut self, set: &[char]) -> char {
        set[self.below(set.len())]
    }

    fn payload(&mut self) -> &'static str {
        PAYLOADS[self.below(PAYLOADS.len())]
    }

    /// A value shaped like `kind`, from the field's alphabet.
    fn generated(&mut self, kind: Kind) -> String {
        const LOWER: &[char] = &['a', 'b', 'k', 'z', '0', '1', '9', '-'];
        const PATH: &[char] = &['a', 'Z', '0', '_', '.', '-', '/'];
        const BRANCH: &[char] = &['a', 'Z', '0', '_', '.', '-', '/', '+', '@', '{'];
        const SHOP: &[char] = &['a', 'Z', '0', '_', '.', '-'];
        let len = 1 + self.below(40);
        let mut out = match kind {
            Kind::Url => ["https://git.example.com/", "http://h/", "ssh://git@h/", "git://h/", "file:///", "git@h:"]
                [self.below(6)]
            .to_string(),
            Kind::Path | Kind::Shop => "a".into(),
            _ => String::new(),
        };
        let free: Vec<char> = VISIBLE.iter().chain(INVISIBLE).copied().collect();
        for _ in 0..len {
            let c = match kind {
                Kind::Name => self.char_from(LOWER),
                Kind::Path => self.char_from(PATH),
                Kind::Branch => self.char_from(BRANCH),
                Kind::Shop => self.char_from(SHOP),
                Kind::Url | Kind::Image => self.char_from(VISIBLE),
                Kind::Free => self.char_from(&free),
            };
            out.push(c);
        }
        if matches!(kind, Kind::Name | Kind::Shop) {
            // Both must end with a letter or digit.
            out.push('0');
        }
        out
    }

    /// A string for a field whose example value is `typical`.
    fn string(&mut self, kind: Kind, typical: &str) -> String {
        match self.below(8) {
            0 | 1 => typical.to_string(),
            2 => self.generated(kind),
            3 => format!("{typical}{}", self.payload()),
            4 => self.payload().to_string(),
            5 => {
                let (generated, payload) = (self.generated(kind), self.payload());
                format!("{generated}{payload}{typical}")
            }
            6 => {
                let len = self.below(64);
                let raw: Vec<u8> = (0..len).map(|_| self.byte()).collect();
                String::from_utf8_lossy(&raw).into_owned()
            }
            _ => {
                // Long values: past every length limit (63, 244, 2048) and into multi-kilobyte lines.
                let unit = if self.bool() { self.generated(kind) } else { self.payload().to_string() };
                let times = [2, 64, 300, 3000][self.below(4)];
                let long = unit.repeat(times);
                long.chars().take(20_000).collect()
            }
        }
    }

    fn hex_pin(&mut self) -> String {
        match self.below(8) {
            0..=4 => "1".repeat(40),
            5 => "ab".repeat(32),
            6 => "A".repeat(40), // upper case: refused
            _ => self.string(Kind::Free, "0"),
        }
    }
}

/// One render's input, decoded from bytes.
#[derive(Debug, Clone)]
pub struct Case {
    pub tier: Tier,
    pub configurations: Vec<Configuration>,
    pub shopsets: Vec<Arc<ShopSet>>,
    pub pins: Pins,
}

impl Case {
    pub fn input(&self) -> RenderInput<'_> {
        RenderInput {
            tier: &self.tier,
            configurations: &self.configurations,
            shopsets: &self.shopsets,
            pins: &self.pins,
        }
    }
}

/// Decodes any bytes into a Tier, 1-2 Configurations, 0-4 ShopSets and pins.
pub fn decode(data: &[u8]) -> Case {
    let mut b = Bytes(data);
    let b = &mut b;
    let tier_name = b.string(Kind::Name, "tier-0");
    // Fields are read in source order: Rust evaluates struct expressions top to bottom.
    let tier = Tier::new(
        &tier_name,
        TierSpec {
            branch: b.option(false, |b| b.string(Kind::Branch, "tier-0")),
            app: AppSource {
                url: b.string(Kind::Url, "https://git.example.com/acme/shop-app.git"),
                path: b.string(Kind::Path, "base"),
            },
            system: SystemRepository { url: b.string(Kind::Url, "https://git.example.com/acme/shop-system.git") },
            promotion: b
                .option(false, |b| Promotion { from: b.string(Kind::Name, "tier-minus-1"), ..Default::default() }),
            argocd: ArgoCdSettings {
                namespace: b.string(Kind::Name, "argocd"),
                project: b.string(Kind::Free, "default"),
                destination: Destination {
                    server: b.string(Kind::Free, "https://kubernetes.default.svc"),
                    namespace: b.option(false, |b| b.string(Kind::Name, "shops")),
                },
                destinations: Vec::new(),
                sync_policy: b.option(true, |b| SyncPolicy {
                    automated: b.option(true, |b| AutomatedSync { prune: !b.bool(), self_heal: !b.bool() }),
                    sync_options: (0..b.count(1, 3)).map(|_| b.string(Kind::Free, "ServerSideApply=true")).collect(),
                }),
            },
            credentials: None,
            interval: b.string(Kind::Free, "1m"),
            deletion_policy: if b.bool() { DeletionPolicy::Delete } else { DeletionPolicy::Retain },
        },
    );
    let configurations: Vec<Configuration> = (0..1 + b.below(2))
        .map(|i| {
            let name = b.string(Kind::Name, ["shop-config", "other-config"][i]);
            let url = b.string(Kind::Url, "https://git.example.com/acme/shop-config.git");
            Configuration::new(&name, ConfigurationSpec { url, path: b.string(Kind::Path, "component") })
        })
        .collect();
    let shopsets = (0..b.count(1, 4))
        .map(|i| {
            let name = b.string(Kind::Name, ["canary-eu", "canary-us", "eu-west", "us-east"][i]);
            // References mostly resolve (byte 0 or 1), so that validation passes often.
            let tier = if b.below(4) < 2 { tier_name.clone() } else { b.string(Kind::Name, "tier-1") };
            let configuration = match b.below(4) {
                0 | 1 => configurations[0].metadata.name.clone().unwrap_or_default(),
                2 => configurations[configurations.len() - 1].metadata.name.clone().unwrap_or_default(),
                _ => b.string(Kind::Name, "missing-config"),
            };
            let shops = (0..b.count(2, 5)).map(|j| b.string(Kind::Shop, &format!("shop-{i}00{j}"))).collect();
            let replicas = b.option(false, |b| match b.below(8) {
                0..=4 => i32::from(b.byte()) * 4,
                5 => -1,
                6 => 1001,
                _ => [i32::MIN, i32::MAX][b.below(2)],
            });
            let images = (0..b.count(0, 3))
                .map(|_| ImageOverride {
                    name: b.string(Kind::Image, "ghcr.io/acme/checkout"),
                    new_name: b.option(false, |b| b.string(Kind::Image, "registry.example.com/acme/checkout")),
                    new_tag: b.option(true, |b| b.string(Kind::Image, "1.1.0-rc.1")),
                    digest: b.option(false, |b| {
                        b.string(Kind::Image, "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
                    }),
                })
                .collect();
            let namespace = b.option(false, |b| b.string(Kind::Name, "shops-us-east"));
            ShopSet::new(
                &name,
                ShopSetSpec {
                    tier,
                    configuration,
                    shops,
                    replicas,
                    images,
                    namespace,
                    maintenance: None,
                    destination: None,
                    capacity: None,
                },
            )
        })
        .map(Arc::new)
        .collect();
    let app = b.hex_pin();
    let mut pin_of = BTreeMap::new();
    for c in &configurations {
        // Byte 0: pinned; otherwise sometimes missing (the render must say so, not panic).
        if b.below(8) != 7 {
            pin_of.insert(c.metadata.name.clone().unwrap_or_default(), b.hex_pin());
        }
    }
    Case { tier, configurations, shopsets, pins: Pins { app, configurations: pin_of } }
}

/// A tree that passed validation, rendered as `shopctl render --offline` renders it.
pub struct Validated {
    pub tier: Tier,
    pub configurations: Vec<Configuration>,
    pub tree: Tree,
}

/// Renders `case` twice: straight (bypassing validation, as a future bug might), which must never
/// panic and, when it renders, must keep every value a value; and through validation as `shopctl`
/// does, which must render whenever validation accepts.
pub fn check_case(renderer: &Renderer, case: &Case) -> Result<Option<Validated>, String> {
    if let Ok(tree) = renderer.render(case.input()) {
        check_tree(case.input(), &tree).map_err(|e| format!("unvalidated render: {e}"))?;
    }
    let mut inventory = Inventory::default();
    let key = |name: &Option<String>| ("default".to_string(), name.clone().unwrap_or_default());
    inventory.tiers.insert(key(&case.tier.metadata.name), case.tier.clone());
    for c in &case.configurations {
        inventory.configurations.insert(key(&c.metadata.name), c.clone());
    }
    for s in &case.shopsets {
        inventory.shopsets.insert(key(&s.metadata.name), s.clone());
    }
    validated_renders(renderer, &inventory).map(|mut trees| trees.pop())
}

/// Parses `data` as a user's YAML file the way `shopctl render -f FILE --offline` does, then renders
/// every tier. Refusals are fine (their messages are formatted, to catch a panic there); once the
/// input is accepted every tier must render.
pub fn check_manifests(renderer: &Renderer, data: &[u8]) -> Result<Vec<Validated>, String> {
    // `shopctl` reads files with `read_to_string`, which refuses non-UTF-8 before any parsing.
    let Ok(text) = std::str::from_utf8(data) else { return Ok(Vec::new()) };
    match Inventory::parse(Path::new("fuzz.yaml"), text) {
        Ok(inventory) => validated_renders(renderer, &inventory),
        Err(error) => {
            let message = error.to_string();
            if message.is_empty() { Err("a load error with an empty message".into()) } else { Ok(Vec::new()) }
        }
    }
}

fn validated_renders(renderer: &Renderer, inventory: &Inventory) -> Result<Vec<Validated>, String> {
    if let Err(problems) = inventory.check() {
        let _ = problems.to_string();
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in inventory.tier_names() {
        // The same name in two namespaces: a clear refusal of the command, not a render.
        let Ok(input) = inventory.tier_input(&name) else { continue };
        let pins = Pins {
            app: "0".repeat(40),
            configurations: input
                .configurations
                .iter()
                .map(|c| (c.metadata.name.clone().unwrap_or_default(), "0".repeat(40)))
                .collect(),
        };
        let render = RenderInput {
            tier: &input.tier,
            configurations: &input.configurations,
            shopsets: &input.shopsets,
            pins: &pins,
        };
        let tree = renderer
            .render(render)
            .map_err(|e| format!("validation accepted Tier {name} but the render failed: {e}"))?;
        check_tree(render, &tree).map_err(|e| format!("validated render of Tier {name}: {e}"))?;
        out.push(Validated { tier: input.tier, configurations: input.configurations, tree });
    }
    Ok(out)
}

/// `prefix/path`, as the renderer joins a repository path to its submodule directory.
fn repo_path(prefix: &str, path: &str) -> String {
    let path = path.trim_end_matches('/');
    if path == "." || path.is_empty() { prefix.to_string() } else { format!("{prefix}/{path}") }
}

/// Every YAML file the render must produce and the data it must read back as, built from the
/// input independently of the templates. Later ShopSets of the same name overwrite earlier ones,
/// as in the renderer.
fn expected_yaml(input: RenderInput<'_>) -> BTreeMap<String, Value> {
    let tier = input.tier;
    let tier_name = tier.metadata.name.clone().unwrap_or_default();
    let cfg_by_name: BTreeMap<String, &Configuration> =
        input.configurations.iter().map(|c| (c.metadata.name.clone().unwrap_or_default(), c)).collect();
    let mut shopsets: Vec<&ShopSet> = input.shopsets.iter().map(|s| &**s).collect();
    shopsets.sort_by_key(|s| s.metadata.name.clone().unwrap_or_default());
    let mut files = BTreeMap::new();
    for ss in shopsets {
        let name = ss.metadata.name.clone().unwrap_or_default();
        let namespace = ss.destination_namespace(tier);
        let dir = format!("shopsets/{name}");
        let cfg_path = cfg_by_name.get(&ss.spec.configuration).map(|c| c.spec.path.as_str()).unwrap_or(".");
        let mut kustomization = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": namespace,
            "resources": [repo_path("../../base", &tier.spec.app.path), "namespace.yaml"],
            "components": [repo_path(&format!("../../config/{}", ss.spec.configuration), cfg_path)],
            "labels": [{"pairs": {"shopset.dev/shopset": name, "shopset.dev/tier": tier_name}, "includeTemplates": true}],
            "configMapGenerator": [{"name": "shopset", "literals": [
                format!("SHOPSET_NAME={name}"),
                format!("SHOPSET_TIER={tier_name}"),
                format!("SHOP_COUNT={}", ss.spec.shops.len()),
                format!("SHOP_IDS={}", ss.spec.shops.join(",")),
            ]}],
        });
        if !ss.spec.images.is_empty() {
            kustomization["images"] = serde_json::to_value(&ss.spec.images).unwrap_or_default();
        }
        if let Some(replicas) = ss.spec.replicas {
            kustomization["patches"] = json!([{"path": "replicas.yaml", "target": {"kind": "Deployment"}}]);
            files.insert(
                format!("{dir}/replicas.yaml"),
                json!([{"op": "add", "path": "/spec/replicas", "value": replicas}]),
            );
        }
        files.insert(format!("{dir}/kustomization.yaml"), kustomization);
        files.insert(
            format!("{dir}/namespace.yaml"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        );
        let argocd = &tier.spec.argocd;
        let mut application = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": name,
                "namespace": argocd.namespace,
                "labels": {"app.kubernetes.io/managed-by": "shopset-controller", "shopset.dev/shopset": name, "shopset.dev/tier": tier_name},
            },
            "spec": {
                "project": argocd.project,
                "source": {"repoURL": tier.spec.system.url, "targetRevision": tier.branch(), "path": dir},
                "destination": {"server": argocd.destination.server, "namespace": namespace},
            },
        });
        if let Some(policy) = &argocd.sync_policy {
            // An empty policy renders as `syncPolicy:` with nothing under it: null.
            let value = serde_json::to_value(policy).unwrap_or_default();
            let empty = value.as_object().is_some_and(|m| m.is_empty());
            application["spec"]["syncPolicy"] = if empty { Value::Null } else { value };
        }
        files.insert(format!("applications/{name}.yaml"), application);
    }
    files
}

/// Parses `text` as a YAML stream of exactly one document, as JSON (string keys, no tags).
fn one_document(text: &str) -> Result<Value, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value =
            <serde_yaml::Value as serde::Deserialize>::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
        docs.push(value);
    }
    match docs.as_slice() {
        [one] => serde_json::to_value(one).map_err(|e| format!("not plain data: {e}")),
        _ => Err(format!("{} documents, expected 1", docs.len())),
    }
}

/// The rendered tree has exactly the expected files, every YAML file reads back as exactly the
/// expected data, and the gitlinks pin the given commits.
pub fn check_tree(input: RenderInput<'_>, tree: &Tree) -> Result<(), String> {
    let expected = expected_yaml(input);
    let used: BTreeSet<&str> = input.shopsets.iter().map(|s| s.spec.configuration.as_str()).collect();
    let mut paths: BTreeSet<String> = expected.keys().cloned().collect();
    paths.extend(["base".to_string(), ".gitmodules".to_string(), "README.md".to_string()]);
    paths.extend(used.iter().map(|c| format!("config/{c}")));
    let got: BTreeSet<String> = tree.entries.keys().map(|p| p.to_string()).collect();
    if got != paths {
        return Err(format!("files {got:?}, expected {paths:?}"));
    }
    for (path, want) in &expected {
        let Some(Entry::File(bytes)) = tree.entries.get(path.as_str()) else {
            return Err(format!("{path}: not a file"));
        };
        let text = std::str::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8"))?;
        let value = one_document(text).map_err(|e| format!("{path}: {e}\n{text}"))?;
        if &value != want {
            return Err(format!("{path}: reads back as\n{value:#}\nexpected\n{want:#}\nfrom\n{text}"));
        }
    }
    let gitlinks: BTreeMap<&str, &str> = tree.gitlinks().collect();
    let mut want: BTreeMap<&str, &str> = BTreeMap::from([("base", input.pins.app.as_str())]);
    let config_dirs: Vec<String> = used.iter().map(|c| format!("config/{c}")).collect();
    for (dir, name) in config_dirs.iter().zip(&used) {
        want.insert(dir, input.pins.configurations.get(*name).map(String::as_str).unwrap_or_default());
    }
    if gitlinks != want {
        return Err(format!("gitlinks {gitlinks:?}, expected {want:?}"));
    }
    Ok(())
}
