//! Reading Tiers, Configurations and ShopSets from YAML files, as `kubectl apply -f` would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{API_VERSION, Configuration, GROUP, ShopSet, Tier};
use crate::validation::{self, Invalid, Problems};

pub mod edit;

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The causes are part of each message and deliberately not `source()`: `{:#}` would print them twice.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error(
        "{path}: document {index}: not valid YAML: {error}; fix: correct the YAML syntax there (indentation, quotes, brackets)"
    )]
    Yaml { path: PathBuf, index: usize, error: serde_yaml::Error },
    #[error("{path}: document {index}: {kind}/{name}: {field}: {problem}; fix: {fix}")]
    Schema { path: PathBuf, index: usize, kind: String, name: String, field: String, problem: String, fix: String },
    #[error(
        "{path}: document {index}: {kind}/{name}: apiVersion: {api_version:?} is not a version ShopSet serves; fix: use apiVersion {API_VERSION}"
    )]
    Version { path: PathBuf, index: usize, kind: String, name: String, api_version: String },
    #[error("{path}: no YAML files found; fix: name files or a directory holding *.yaml or *.yml manifests")]
    Empty { path: PathBuf },
    #[error("invalid input:\n{0}")]
    Invalid(Problems),
}

/// Everything read from the input, keyed by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub tiers: BTreeMap<(String, String), Tier>,
    pub configurations: BTreeMap<(String, String), Configuration>,
    /// Shared, not copied: a ShopSet that reaches the renderer as the same `Arc` as last time
    /// is known unchanged without a comparison (the controller hands over its watch cache's).
    pub shopsets: BTreeMap<(String, String), Arc<ShopSet>>,
}

/// What rendering one tier needs from the inventory.
#[derive(Debug, Clone)]
pub struct TierInput {
    pub tier: Tier,
    /// The Tier named by `spec.promotion.from`.
    pub from: Option<Tier>,
    /// Configurations used by the ShopSets, sorted by name.
    pub configurations: Vec<Configuration>,
    /// ShopSets of the tier, sorted by name. Edited through [`Arc::make_mut`], which copies one
    /// that someone else holds, so an edit is never mistaken for the unchanged ShopSet.
    pub shopsets: Vec<Arc<ShopSet>>,
}

fn key<K: kube::Resource>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_else(|| "default".to_string()), obj.name_any())
}

impl Inventory {
    /// Reads files and directories (their `*.yaml`/`*.yml` files, sorted, not recursive: as `kubectl -f`).
    pub fn load(paths: &[PathBuf]) -> Result<Self, LoadError> {
        let mut inv = Inventory::default();
        let mut problems = Vec::new();
        for path in paths {
            let files = if path.is_dir() {
                let entries = std::fs::read_dir(path).map_err(|error| LoadError::Read { path: path.clone(), error })?;
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(LoadError::Empty { path: path.clone() });
                }
                files
            } else {
                vec![path.clone()]
            };
            for file in files {
                let text =
                    std::fs::read_to_string(&file).map_err(|error| LoadError::Read { path: file.clone(), error })?;
                inv.add_yaml(&file, &text, &mut problems)?;
            }
        }
        if !problems.is_empty() {
            return Err(LoadError::Invalid(Problems(problems)));
        }
        Ok(inv)
    }

    /// Puts every object whose manifest names no namespace into `namespace`, as `kubectl apply
    /// -n NAMESPACE -f` does; an object that names another namespace is refused, as kubectl
    /// refuses it.
    pub fn in_namespace(self, namespace: &str) -> Result<Self, Problems> {
        let mut problems = Vec::new();
        let mut place = |kind: &str, meta: &mut ObjectMeta| match &meta.namespace {
            Some(ns) if ns != namespace => problems.push(Invalid {
                resource: format!("{kind}/{}", meta.name.as_deref().unwrap_or_default()),
                field: "metadata.namespace".into(),
                value: ns.clone(),
                problem: format!("does not match the namespace given with --namespace ({namespace})"),
                fix: format!("drop --namespace, or drop metadata.namespace from the manifest, or make it {namespace}"),
            }),
            _ => meta.namespace = Some(namespace.to_string()),
        };
        let mut out = Inventory::default();
        for mut obj in self.tiers.into_values() {
            place("Tier", &mut obj.metadata);
            out.tiers.insert(key(&obj), obj);
        }
        for mut obj in self.configurations.into_values() {
            place("Configuration", &mut obj.metadata);
            out.configurations.insert(key(&obj), obj);
        }
        for mut obj in self.shopsets.into_values() {
            place("ShopSet", &mut Arc::make_mut(&mut obj).metadata);
            out.shopsets.insert(key(&*obj), obj);
        }
        if problems.is_empty() { Ok(out) } else { Err(Problems(problems)) }
    }

    /// Reads one YAML stream that is not a file on disk (`path` only names it in messages): what
    /// [`Inventory::load`] does for each file.
    pub fn parse(path: &Path, text: &str) -> Result<Self, LoadError> {
        let mut inv = Inventory::default();
        let mut problems = Vec::new();
        inv.add_yaml(path, text, &mut problems)?;
        if !problems.is_empty() {
            return Err(LoadError::Invalid(Problems(problems)));
        }
        Ok(inv)
    }

    /// Adds every ShopSet kind found in a YAML stream; other kinds are passed over.
    pub fn add_yaml(&mut self, path: &Path, text: &str, problems: &mut Vec<Invalid>) -> Result<(), LoadError> {
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value =
                Value::deserialize(doc).map_err(|error| LoadError::Yaml { path: path.to_path_buf(), index, error })?;
            if value.is_null() {
                continue;
            }
            let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
            let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            if api_version.split('/').next() != Some(GROUP) {
                tracing::debug!(path = %path.display(), index, %kind, "not a shopset.dev object, passed over");
                continue;
            }
            let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            if api_version != API_VERSION {
                return Err(LoadError::Version { path: path.to_path_buf(), index, kind, name, api_version });
            }
            let schema = |error: serde_json::Error| {
                let (field, problem, fix) = schema_violation(&kind, &value).unwrap_or_else(|| {
                    (
                        "spec".into(),
                        error.to_string(),
                        "correct the object so it matches the schema `shopctl crds` prints".into(),
                    )
                });
                LoadError::Schema {
                    path: path.to_path_buf(),
                    index,
                    kind: kind.clone(),
                    name: name.clone(),
                    field,
                    problem,
                    fix,
                }
            };
            if let Some((field, problem, fix)) = unknown_field(&kind, &value) {
                let (path, kind, name) = (path.to_path_buf(), kind.clone(), name.clone());
                return Err(LoadError::Schema { path, index, kind, name, field, problem, fix });
            }
            let duplicate = |problems: &mut Vec<Invalid>| {
                problems.push(Invalid {
                    resource: format!("{kind}/{name}"),
                    field: "metadata.name".into(),
                    value: name.clone(),
                    problem: format!("is defined twice (again in {} document {index})", path.display()),
                    fix: "give every object of a kind a unique name in its namespace".into(),
                })
            };
            match kind.as_str() {
                "Tier" => {
                    let obj: Tier = serde_json::from_value(value.clone()).map_err(schema)?;
                    if self.tiers.insert(key(&obj), obj).is_some() {
                        duplicate(problems);
                    }
                }
                "Configuration" => {
                    let obj: Configuration = serde_json::from_value(value.clone()).map_err(schema)?;
                    if self.configurations.insert(key(&obj), obj).is_some() {
                        duplicate(problems);
                    }
                }
                "ShopSet" => {
                    let obj: ShopSet = serde_json::from_value(value.clone()).map_err(schema)?;
                    if self.shopsets.insert(key(&obj), Arc::new(obj)).is_some() {
                        duplicate(problems);
                    }
                }
                _ => {
                    problems.push(Invalid {
                        resource: format!("{kind}/{name}"),
                        field: "kind".into(),
                        value: kind.clone(),
                        problem: "is not a kind of shopset.dev".into(),
                        fix: "use Tier, Configuration or ShopSet".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks every object and every reference between them.
    pub fn check(&self) -> Result<(), Problems> {
        let mut out = Vec::new();
        for tier in self.tiers.values() {
            validation::check_tier(tier, &mut out);
            if let Some(promotion) = &tier.spec.promotion {
                let ns = key(tier).0;
                if !self.tiers.contains_key(&(ns.clone(), promotion.from.clone())) {
                    out.push(Invalid {
                        resource: format!("Tier/{}", tier.name_any()),
                        field: "spec.promotion.from".into(),
                        value: promotion.from.clone(),
                        problem: format!("names a Tier that does not exist in namespace {ns}"),
                        fix: "create that Tier too (or pass its file), or correct the name".into(),
                    });
                }
            }
        }
        for cfg in self.configurations.values() {
            validation::check_configuration(cfg, &mut out);
        }
        let mut namespaces: BTreeMap<(String, String, String, String), String> = BTreeMap::new();
        // A shop is served by one cell of a tier: two would deploy it twice.
        let mut shops: BTreeMap<(String, String, String), String> = BTreeMap::new();
        for ((ns, name), ss) in &self.shopsets {
            validation::check_shopset(ss, &mut out);
            for (i, shop) in ss.spec.shops.iter().enumerate() {
                let slot = (ns.clone(), ss.spec.tier.clone(), shop.clone());
                match shops.get(&slot) {
                    Some(other) if other != name => out.push(Invalid {
                        resource: format!("ShopSet/{name}"),
                        field: format!("spec.shops[{i}]"),
                        value: shop.clone(),
                        problem: format!("is served by ShopSet {other} of the same tier too"),
                        fix: "list each shop in one ShopSet of a tier".into(),
                    }),
                    _ => {
                        shops.insert(slot, name.clone());
                    }
                }
            }
            let tier = self.tiers.get(&(ns.clone(), ss.spec.tier.clone()));
            if tier.is_none() {
                out.push(Invalid {
                    resource: format!("ShopSet/{name}"),
                    field: "spec.tier".into(),
                    value: ss.spec.tier.clone(),
                    problem: format!("names a Tier that does not exist in namespace {ns}"),
                    fix: "create the Tier first (or pass its file), or correct the name".into(),
                });
            }
            if !self.configurations.contains_key(&(ns.clone(), ss.spec.configuration.clone())) {
                out.push(Invalid {
                    resource: format!("ShopSet/{name}"),
                    field: "spec.configuration".into(),
                    value: ss.spec.configuration.clone(),
                    problem: format!("names a Configuration that does not exist in namespace {ns}"),
                    fix: "create the Configuration first (or pass its file), or correct the name".into(),
                });
            }
            if let Some(tier) = tier {
                // Namespaces collide only on one cluster.
                let cluster = match crate::fleet::destination_of(tier, ss) {
                    Ok(placed) => placed.target.to_string(),
                    Err(e) => {
                        out.push(e.into());
                        String::new()
                    }
                };
                let dest = ss.destination_namespace(tier);
                let slot = (ns.clone(), ss.spec.tier.clone(), cluster, dest.clone());
                if let Some(other) = namespaces.insert(slot, name.clone()) {
                    out.push(Invalid {
                        resource: format!("ShopSet/{name}"),
                        field: "spec.namespace".into(),
                        value: dest,
                        problem: format!("ShopSet {other} of the same tier deploys into this namespace too"),
                        fix: "give each ShopSet of a tier its own namespace".into(),
                    });
                }
            }
        }
        if out.is_empty() { Ok(()) } else { Err(Problems(out)) }
    }

    /// Names of the Tiers, in order.
    pub fn tier_names(&self) -> Vec<String> {
        self.tiers.keys().map(|(_, name)| name.clone()).collect()
    }

    /// Finds a Tier by name (in any namespace; an error if the name is ambiguous or unknown).
    pub fn find_tier(&self, name: &str) -> Result<&Tier, Problems> {
        let found: Vec<&Tier> = self.tiers.iter().filter(|((_, n), _)| n == name).map(|(_, t)| t).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(Problems(vec![Invalid {
                resource: format!("Tier/{name}"),
                field: "metadata.name".into(),
                value: name.into(),
                problem: "no Tier of this name is in the input".into(),
                fix: format!("pass the file that defines it; the input has: {}", self.tier_names().join(", ")),
            }])),
            _ => Err(Problems(vec![Invalid {
                resource: format!("Tier/{name}"),
                field: "metadata.namespace".into(),
                value: name.into(),
                problem: "Tiers of this name exist in several namespaces".into(),
                fix: "pass the files of one namespace only".into(),
            }])),
        }
    }

    /// Tiers in promotion order (each after the tier it is promoted from), or only `only`.
    pub fn tier_order(&self, only: Option<&str>) -> Result<Vec<String>, Problems> {
        if let Some(name) = only {
            self.find_tier(name)?;
            return Ok(vec![name.to_string()]);
        }
        let mut order: Vec<String> = Vec::new();
        let mut rest: Vec<&Tier> = self.tiers.values().collect();
        while !rest.is_empty() {
            let before = rest.len();
            rest.retain(|t| {
                let ready = t.spec.promotion.as_ref().is_none_or(|p| order.contains(&p.from));
                if ready {
                    order.push(t.name_any());
                }
                !ready
            });
            if let (true, Some(t)) = (rest.len() == before, rest.first()) {
                return Err(Problems(vec![Invalid {
                    resource: format!("Tier/{}", t.name_any()),
                    field: "spec.promotion.from".into(),
                    value: t.spec.promotion.as_ref().map(|p| p.from.clone()).unwrap_or_default(),
                    problem: "the tiers' promotion chain has a cycle".into(),
                    fix: "make the lowest tier have no spec.promotion".into(),
                }]));
            }
        }
        Ok(order)
    }

    /// The Configurations the ShopSets of any of `tiers` use, each once, by name.
    pub fn configurations_of(&self, tiers: &[&str]) -> Result<Vec<Configuration>, Problems> {
        let mut out: BTreeMap<String, Configuration> = BTreeMap::new();
        for tier in tiers {
            out.extend(self.tier_input(tier)?.configurations.into_iter().map(|c| (c.name_any(), c)));
        }
        Ok(out.into_values().collect())
    }

    /// Everything one tier's render needs. Call [`Inventory::check`] first.
    pub fn tier_input(&self, name: &str) -> Result<TierInput, Problems> {
        let tier = self.find_tier(name)?.clone();
        let ns = key(&tier).0;
        let from = tier.spec.promotion.as_ref().and_then(|p| self.tiers.get(&(ns.clone(), p.from.clone())).cloned());
        let shopsets: Vec<Arc<ShopSet>> = self
            .shopsets
            .iter()
            .filter(|((n, _), ss)| *n == ns && ss.spec.tier == name)
            .map(|(_, ss)| ss.clone())
            .collect();
        let mut configurations: BTreeMap<String, Configuration> = BTreeMap::new();
        for ss in &shopsets {
            if let Some(cfg) = self.configurations.get(&(ns.clone(), ss.spec.configuration.clone())) {
                configurations.insert(cfg.name_any(), cfg.clone());
            }
        }
        Ok(TierInput { tier, from, configurations: configurations.into_values().collect(), shopsets })
    }
}

/// Where `value` first breaks the structural schema of the CRD of `kind`, in the API server's words:
/// (field path, problem, fix). Asked only after deserializing failed, to name the field.
fn schema_violation(kind: &str, value: &Value) -> Option<(String, String, String)> {
    schema_walk(crd_schema(kind)?, value, "")
}

/// The structural schema of the CRD of `kind`, as JSON. Made once per process: generating the
/// CRDs takes milliseconds, and every document of every manifest file is checked against them
/// (it was 2 s of a `shopctl sync` of 1,000 ShopSets).
fn crd_schema(kind: &str) -> Option<&'static Value> {
    static SCHEMAS: std::sync::LazyLock<BTreeMap<String, Value>> = std::sync::LazyLock::new(|| {
        crate::api::crds()
            .into_iter()
            .filter_map(|crd| {
                let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
                Some((crd.spec.names.kind.clone(), serde_json::to_value(schema).ok()?))
            })
            .collect()
    });
    SCHEMAS.get(kind)
}

/// The first field the CRD's schema does not know, worded as the API server's strict field
/// validation (kubectl's default) refuses it: a misspelt field must not pass as an absent one.
fn unknown_field(kind: &str, value: &Value) -> Option<(String, String, String)> {
    unknown_walk(crd_schema(kind)?, value, "")
}

fn unknown_walk(schema: &Value, value: &Value, path: &str) -> Option<(String, String, String)> {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        Value::Object(map) => {
            // An object without properties (metadata, maps) or one that keeps unknown fields is
            // not checked here, as the API server does not.
            let properties = schema.get("properties")?.as_object()?;
            if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
                return None;
            }
            map.iter().find_map(|(key, v)| match properties.get(key) {
                // metadata is an ObjectMeta, checked by the API server as such, not by the CRD.
                _ if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => None,
                Some(inner) => unknown_walk(inner, v, &join(key)),
                None => {
                    let field = join(key);
                    let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                    let parent = if path.is_empty() { "the object" } else { path };
                    let fix = format!("remove it or correct its name ({parent} has {})", known.join(", "));
                    Some((field.clone(), format!("unknown field \"{field}\""), fix))
                }
            })
        }
        Value::Array(items) => {
            let item = schema.get("items")?;
            items.iter().enumerate().find_map(|(i, v)| unknown_walk(item, v, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

fn schema_walk(schema: &Value, value: &Value, path: &str) -> Option<(String, String, String)> {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    let got = match value {
        Value::Null => return None, // an absent optional field; absent required ones are found by the parent
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if let Some(want) = schema.get("type").and_then(Value::as_str)
        && want != got
        && !(want == "number" && got == "integer")
    {
        return Some((
            path.into(),
            format!("Invalid value: {value}: must be of type {want}, not {got}"),
            format!("give {path} a value of type {want} (see `shopctl crds`)"),
        ));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Some((path.into(), format!("Unsupported value: {value}"), format!("use one of {}", list.join(", "))));
    }
    match value {
        Value::Object(map) => {
            for required in
                schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
            {
                if map.get(required).is_none_or(Value::is_null) {
                    let field = join(required);
                    return Some((field.clone(), "Required value".into(), format!("set {field} (see `shopctl crds`)")));
                }
            }
            let properties = schema.get("properties")?;
            map.iter().find_map(|(key, v)| schema_walk(properties.get(key)?, v, &join(key)))
        }
        Value::Array(items) => {
            let item = schema.get("items")?;
            items.iter().enumerate().find_map(|(i, v)| schema_walk(item, v, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}
