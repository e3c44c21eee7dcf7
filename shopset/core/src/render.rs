//! Rendering: (Tier, Configurations, ShopSets, pinned commits) -> the system branch's file tree.
//!
//! A pure function: no clock, no environment, no I/O once the templates are loaded. Same input,
//! byte-identical output, which is what makes the by-hand path and the controller agree.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use kube::ResourceExt;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, context};
use serde::Serialize;

use crate::api::{Configuration, ShopSet, ShopSetSpec, SyncPolicy, Tier};
use crate::fleet::{DestinationError, Target};
pub use crate::tree::{Entry, Tree};

mod memo;
pub use memo::{MemoRejected, memo_path};

/// Templates compiled into the binaries; a directory given with `--templates` overrides them file by file.
pub const EMBEDDED_TEMPLATES: &[(&str, &str)] = &[
    ("kustomization.yaml", include_str!("../../../templates/kustomization.yaml")),
    ("namespace.yaml", include_str!("../../../templates/namespace.yaml")),
    ("replicas.yaml", include_str!("../../../templates/replicas.yaml")),
    ("application.yaml", include_str!("../../../templates/application.yaml")),
    ("README.md", include_str!("../../../templates/README.md")),
];

/// The paths of the system branch ShopSet generates, and so owns: a file or gitlink, or (ending in
/// `/`) a directory and everything under it. Every one is at the root of the branch. A sync writes
/// these paths as the renderer produces them (a file under them the renderer does not produce goes)
/// and keeps every other path byte for byte: people keep repository metadata on a system branch
/// (`.github/CODEOWNERS`, notes after an incident), and a sync must not delete it.
pub const OWNED_PATHS: &[&str] = &[".gitmodules", "base", "config/", "shopsets/", "applications/", "README.md"];

/// The README lists this many ShopSets by name and counts the rest: a tier of 1,000 is read from its
/// `shopsets/` directory, not from a page of 1,000 lines, and a bump (which writes the README again
/// for its pins) then costs what it changed, not the size of the tier.
pub const README_SHOPSETS: usize = 100;

/// Whether `path` (repository-relative, with `/`) is one ShopSet owns ([`OWNED_PATHS`]); a
/// directory's own name (`shopsets`) counts as owned.
pub fn is_owned(path: &str) -> bool {
    OWNED_PATHS.iter().any(|owned| match owned.strip_suffix('/') {
        Some(dir) => path == dir || path.starts_with(owned),
        None => path == *owned,
    })
}

/// The commits a render pins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Pins {
    /// Head of the app repository's tier branch.
    pub app: String,
    /// Head of each configuration repository's tier branch, by Configuration name.
    pub configurations: BTreeMap<String, String>,
}

/// Everything a render reads.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub tier: &'a Tier,
    pub configurations: &'a [Configuration],
    /// Each ShopSet handed over as the same `Arc` as in the tier's last render is taken as
    /// unchanged without comparing it: the cost of a render follows what changed, not the tier's size.
    pub shopsets: &'a [Arc<ShopSet>],
    pub pins: &'a Pins,
}

/// Why a render failed.
// The causes are part of each message and deliberately not `source()`: `{:#}` would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// `origin` says where an overriding template came from; `what` which object was rendered.
    #[error("template {name}{origin}{what}: {error}; fix: {fix}")]
    Template { name: String, origin: String, what: String, error: minijinja::Error, fix: String },
    #[error("template {name}{origin} produced invalid YAML for {what}: {error}; fix: correct the template")]
    Yaml { name: String, origin: String, what: String, error: serde_yaml::Error },
    #[error("cannot read template {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "{resource}: metadata.name: {value:?} cannot name a directory of the system branch; fix: use a DNS-1123 label"
    )]
    BadName { resource: String, value: String },
    #[error(
        "{what}: {value:?} cannot be written to .gitmodules (git config cannot hold a NUL, carriage return, or a line break in a section name); fix: correct the value"
    )]
    BadGitmodules { what: String, value: String },
    #[error(
        "ShopSet/{shopset}: spec.configuration: {configuration:?} has no pinned commit; fix: sync the Configuration's branch first"
    )]
    MissingPin { shopset: String, configuration: String },
    #[error(
        "ShopSet/{shopset}: spec.configuration: Configuration {configuration:?} is not part of the input; fix: pass the Configuration too"
    )]
    MissingConfiguration { shopset: String, configuration: String },
    /// A ShopSet names no destination of its Tier (or none of several).
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("pinned commit {value:?} of {what} is not a full hex object id")]
    BadPin { what: String, value: String },
}

/// Renders trees from templates.
pub struct Renderer {
    env: Environment<'static>,
    /// Templates read from an override directory: name -> file.
    overrides: BTreeMap<String, String>,
    /// The files of each ShopSet in the last render of each tier, keyed by everything its
    /// templates read: the tier's part (once per tier) and the ShopSet's own. Same input, same
    /// templates: same bytes, so an unchanged ShopSet is not rendered again. Holding only the last
    /// render per tier bounds the memory to one tree per tier.
    memo: std::sync::Mutex<HashMap<String, TierMemo>>,
    /// What renders: this build's source and the templates loaded. A memo kept on disk is served
    /// only to a renderer of the same identity ([`memo`]).
    identity: String,
}

/// One tier's memo: the key of what every ShopSet's templates read from the tier, and either the
/// last render of this process or files restored from a memo file.
#[derive(Default)]
struct TierMemo {
    tier_key: String,
    /// Files restored from a memo file ([`memo`]), by key, for ShopSets this process has not
    /// rendered yet.
    restored: HashMap<String, ShopSetFiles>,
    /// The last render, which the next one edits where its input changed: an unchanged ShopSet
    /// then costs a comparison, not a re-insertion of each of its files.
    last: Option<LastRender>,
    /// Whether it differs from what was last restored or saved (so not saved again for nothing).
    changed: bool,
}

/// One ShopSet as it was last rendered.
struct ShopSetMemo {
    /// Everything its templates read besides the tier's part (its spec), from which [`shopset_key`]
    /// writes the key a memo file keeps: an equal spec and Configuration path mean an equal key,
    /// found without writing (or keeping) the key. Kept as handed over: the same `Arc` next time is
    /// the same ShopSet, known without comparing specs.
    shopset: Arc<ShopSet>,
    config_path: String,
    files: ShopSetFiles,
    /// Its row of the README: namespace and number of shops.
    namespace: String,
    shops: usize,
    /// Found in the render under way (false between renders).
    seen: bool,
}

/// The last render of a tier: each ShopSet by name, the tree (which holds exactly their files
/// and the entries written for the tier), and the key of the README's inputs other than its rows.
struct LastRender {
    /// Its number ([`Edits::render`]).
    id: u64,
    shopsets: HashMap<String, ShopSetMemo>,
    /// The ShopSets as handed over, in their (sorted) order; empty when they came unsorted.
    inputs: Vec<Arc<ShopSet>>,
    /// The Configurations they use, and the path of each, as rendered.
    used: Vec<(String, String)>,
    /// Shared with the caller: edited in place by the next render once nobody else holds it.
    tree: Arc<Tree>,
    readme_key: String,
}

/// A render, and what it changed since the render it was edited from.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Shared with the renderer, which edits it in place for the tier's next render once nobody
    /// else holds it.
    pub tree: Arc<Tree>,
    pub edits: Edits,
}

/// The paths a render wrote or removed, from the tree of an earlier render: a layer that derived
/// something from that tree (the git layer's hashes) updates only these paths instead of comparing
/// every path of the tier. Render numbers are unique within a process, so a layer whose memo is of
/// another render than `from` (or of another process) cannot mistake these edits for its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// This render's number.
    pub render: u64,
    /// The render whose tree this one was edited from; None for a render afresh, which has no
    /// edits to tell.
    pub from: Option<u64>,
    /// Every path written or removed (sorted, each once). A path written may hold the same bytes
    /// as before; a path not listed holds the same entry as in render `from`.
    pub paths: Vec<Arc<str>>,
}

/// Numbers renders across every renderer of the process (see [`Edits`]).
static RENDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A tree being edited, with the paths written or removed on the way.
struct Editing<'t> {
    tree: &'t mut Tree,
    paths: Vec<Arc<str>>,
}

impl Editing<'_> {
    fn insert(&mut self, path: Arc<str>, entry: Entry) {
        self.paths.push(path.clone());
        self.tree.entries.insert(path, entry);
    }

    fn remove(&mut self, path: &Arc<str>) {
        if self.tree.entries.remove(path).is_some() {
            self.paths.push(path.clone());
        }
    }

    fn into_paths(mut self) -> Vec<Arc<str>> {
        self.paths.sort();
        self.paths.dedup();
        self.paths
    }
}

/// The rendered files of one ShopSet: (path, bytes). Reusing them shares the bytes, so a layer
/// that derives something from a file (the git layer's blob ids) can tell it is the same file.
type ShopSetFiles = Arc<Vec<(Arc<str>, Arc<[u8]>)>>;

/// The key of everything a ShopSet's templates read besides the tier's part. Written as JSON, a
/// key is the input itself (no hash that two inputs could share); one that cannot be written (none
/// today) is empty and never matches.
fn shopset_key(name: &str, namespace: &str, spec: &ShopSetSpec, config_path: &str) -> String {
    serde_json::to_string(&(name, namespace, spec, config_path)).unwrap_or_default()
}

impl Renderer {
    /// The templates compiled into the binary.
    pub fn embedded() -> Result<Self, RenderError> {
        Self::with_overrides(None)
    }

    /// Embedded templates, each replaced by a file of the same name in `dir` where there is one.
    pub fn with_overrides(dir: Option<&Path>) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Every value printed into YAML is written as a JSON scalar (a quoted YAML string), so no
        // input can add keys, items or documents.
        env.set_auto_escape_callback(|name| if name.ends_with(".yaml") { AutoEscape::Json } else { AutoEscape::None });
        env.set_formatter(yaml_safe_formatter);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|error| RenderError::Template {
                name: "<syntax>".into(),
                origin: String::new(),
                what: String::new(),
                error,
                fix: "report this bug".into(),
            })?;
        env.set_syntax(syntax);
        let mut overrides = BTreeMap::new();
        let mut identity = format!("{}/{}", env!("CARGO_PKG_VERSION"), env!("SHOPSET_RENDER_SOURCE"));
        for (name, embedded) in EMBEDDED_TEMPLATES {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => {
                    overrides.insert(name.to_string(), path.display().to_string());
                    std::fs::read_to_string(&path)
                        .map_err(|error| RenderError::Read { path: path.display().to_string(), error })?
                }
                None => (*embedded).to_string(),
            };
            identity.push_str(&format!("/{name}:{:016x}", crate::fingerprint::fnv1a(source.as_bytes())));
            env.add_template_owned(*name, source).map_err(|error| RenderError::Template {
                name: (*name).into(),
                origin: origin(&overrides, name),
                what: String::new(),
                error,
                fix: "correct the template's syntax (Jinja2, as minijinja reads it)".into(),
            })?;
        }
        Ok(Self { env, overrides, memo: Default::default(), identity })
    }

    fn yaml(&self, name: &str, what: &str, ctx: minijinja::Value) -> Result<Vec<u8>, RenderError> {
        let text = self.text(name, what, ctx)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            <serde_yaml::Value as serde::Deserialize>::deserialize(doc).map_err(|error| RenderError::Yaml {
                name: name.into(),
                origin: origin(&self.overrides, name),
                what: what.into(),
                error,
            })?;
        }
        Ok(text.into_bytes())
    }

    fn text(&self, name: &str, what: &str, ctx: minijinja::Value) -> Result<String, RenderError> {
        let fail = |error: minijinja::Error| {
            let variables: Vec<String> =
                ctx.try_iter().map(|keys| keys.map(|k| k.to_string()).collect()).unwrap_or_default();
            RenderError::Template {
                name: name.into(),
                origin: origin(&self.overrides, name),
                what: if what.is_empty() { String::new() } else { format!(" (rendering {what})") },
                error,
                fix: format!("correct the template; its variables are: {}", variables.join(", ")),
            }
        };
        let template = self.env.get_template(name).map_err(&fail)?;
        template.render(&ctx).map_err(&fail)
    }

    /// Renders the system branch of one tier.
    pub fn render(&self, input: RenderInput<'_>) -> Result<Tree, RenderError> {
        self.render_shared(input).map(Arc::unwrap_or_clone)
    }

    /// [`Renderer::render`], the tree shared with the renderer's memo instead of copied out of it:
    /// a caller that lets go of it before the tier's next render spares that render a copy of the
    /// whole tree.
    pub fn render_shared(&self, input: RenderInput<'_>) -> Result<Arc<Tree>, RenderError> {
        self.render_edits(input).map(|r| r.tree)
    }

    /// [`Renderer::render_shared`], with the paths it wrote or removed since the tier's last
    /// render ([`Edits`]).
    pub fn render_edits(&self, input: RenderInput<'_>) -> Result<Rendered, RenderError> {
        let RenderInput { tier, configurations, shopsets, pins } = input;
        let branch = tier.branch();
        let tier_name = tier.name_any();
        check_oid("the app repository", &pins.app)?;
        let argocd = &tier.spec.argocd;
        // What the ShopSet templates read from the tier. Written as JSON, a key is the input itself
        // (no hash that two inputs could share); one that cannot be written (none today) never hits.
        let tier_key =
            serde_json::to_string(&(&tier_name, &branch, &tier.spec.app.path, &tier.spec.system.url, argocd))
                .unwrap_or_default();
        // Taken out while rendering: a render that fails leaves no memo, and the next starts afresh.
        let previous = self.memo.lock().unwrap_or_else(|p| p.into_inner()).remove(&tier_name).unwrap_or_default();
        let mut changed = previous.changed;
        let (restored, last) = if previous.tier_key == tier_key && !tier_key.is_empty() {
            (previous.restored, previous.last)
        } else {
            (HashMap::new(), None)
        };
        // Edited in place: a ShopSet found unchanged is marked seen, one that changed is replaced,
        // and those left unseen are gone.
        let (mut memo, mut shared, last_readme, from, mut inputs, last_used) = match last {
            Some(last) => {
                (last.shopsets, last.tree, Some(last.readme_key), Some(last.id), last.inputs, Some(last.used))
            }
            None => (HashMap::new(), Arc::default(), None, None, Vec::new(), None),
        };
        // The ShopSets handed over as the same `Arc`s as last time but a few, each under the same
        // name and Configuration as the one it replaces, and the Configurations' paths as they
        // were: only those few are visited (a pass over pointers, where a visit reads a ShopSet).
        let few = last_used.as_ref().and_then(|used| {
            let paths_same = used.iter().all(|(name, path)| {
                configurations.iter().any(|c| c.metadata.name.as_deref() == Some(name) && c.spec.path == *path)
            });
            (paths_same && inputs.len() == shopsets.len()).then_some(())?;
            let mut few = Vec::new();
            for (i, (new, old)) in shopsets.iter().zip(&inputs).enumerate() {
                if !Arc::ptr_eq(new, old) {
                    if name_of(new) != name_of(old) || new.spec.configuration != old.spec.configuration {
                        return None;
                    }
                    few.push(i);
                }
            }
            Some(few)
        });
        let id = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Copied only if someone still holds the last one.
        let mut tree = Editing { tree: Arc::make_mut(&mut shared), paths: Vec::new() };

        let mut gitmodules = String::new();
        tree.insert("base".into(), Entry::Gitlink(pins.app.clone()));
        gitmodules.push_str(&submodule_section("base", &tier.spec.app.url, &branch)?);

        let given = shopsets;
        let mut shopsets: Vec<&Arc<ShopSet>> = given.iter().collect();
        // Inputs come sorted by name (TierInput says so); a check is one pass, a sort more. The
        // few changed of a sorted input kept their names, so it is still sorted.
        let sorted = few.is_some() || shopsets.is_sorted_by(|a, b| name_of(a) <= name_of(b));
        if !sorted {
            shopsets.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        }
        let cfg_by_name: BTreeMap<String, &Configuration> = configurations.iter().map(|c| (c.name_any(), c)).collect();
        let used: std::collections::BTreeSet<&str> = match (&few, &last_used) {
            (Some(_), Some(used)) => used.iter().map(|(name, _)| name.as_str()).collect(),
            _ => shopsets.iter().map(|s| s.spec.configuration.as_str()).collect(),
        };
        // The gitlinks of the Configurations in the last tree, all written again below.
        let stale: Vec<Arc<str>> = tree
            .tree
            .entries
            .range::<str, _>((Bound::Included("config/"), Bound::Excluded("config0")))
            .map(|(path, _)| path.clone())
            .collect();
        for path in &stale {
            tree.remove(path);
        }
        let mut readme_cfgs = Vec::new();
        let mut cfg_pins = Vec::new();
        for name in &used {
            let cfg = cfg_by_name.get(*name).ok_or_else(|| RenderError::MissingConfiguration {
                shopset: shopsets
                    .iter()
                    .find(|s| s.spec.configuration == *name)
                    .map(|s| s.name_any())
                    .unwrap_or_default(),
                configuration: (*name).to_string(),
            })?;
            let commit = pins.configurations.get(*name).ok_or_else(|| RenderError::MissingPin {
                shopset: shopsets
                    .iter()
                    .find(|s| s.spec.configuration == *name)
                    .map(|s| s.name_any())
                    .unwrap_or_default(),
                configuration: (*name).to_string(),
            })?;
            check_oid(&format!("Configuration {name}"), commit)?;
            check_dir_name("Configuration", name)?;
            let path = format!("config/{name}");
            gitmodules.push_str(&submodule_section(&path, &cfg.spec.url, &branch)?);
            tree.insert(path.into(), Entry::Gitlink(commit.clone()));
            readme_cfgs.push(context! { name => *name, url => cfg.spec.url.as_str(), commit => commit.as_str() });
            cfg_pins.push((*name, cfg.spec.url.as_str(), commit.as_str()));
        }
        tree.insert(".gitmodules".into(), Entry::file(gitmodules));

        // A memo of another number of ShopSets is a new one to keep, even if every file came from it.
        changed |= memo.len() + restored.len() != shopsets.len();
        // Whether a README row (name, namespace, shops) may differ from the last render's.
        let mut rows_changed = memo.len() != shopsets.len();
        let visit: Box<dyn Iterator<Item = usize>> = match &few {
            Some(few) => Box::new(few.iter().copied()),
            None => Box::new(0..shopsets.len()),
        };
        for i in visit {
            let ss = shopsets[i];
            let name = name_of(ss);
            let cfg = cfg_by_name[ss.spec.configuration.as_str()];
            // A memo is only ever kept under a name that was checked.
            if let Some(old) = memo.get_mut(name)
                && !old.seen
                && (Arc::ptr_eq(&old.shopset, ss) || old.shopset.spec == ss.spec)
                && old.config_path == cfg.spec.path
            {
                // Kept as handed over this time, so that the next render finds it by pointer.
                old.shopset = Arc::clone(ss);
                old.seen = true;
                continue;
            }
            check_dir_name("ShopSet", name)?;
            let old = memo.remove(name);
            if let Some(old) = &old {
                for (path, _) in old.files.iter() {
                    tree.remove(path);
                }
            }
            let namespace = ss.destination_namespace(tier);
            let placed = crate::fleet::destination_of(tier, ss)?;
            // Everything else the templates below read, as a memo file keys it: written only to
            // look up files restored from one.
            let key = if restored.is_empty() {
                String::new()
            } else {
                shopset_key(name, &namespace, &ss.spec, &cfg.spec.path)
            };
            let files = match restored.get(&key).filter(|_| !key.is_empty()) {
                Some(files) => files.clone(),
                None => {
                    changed = true;
                    self.render_shopset(tier, ss, cfg, name, &namespace, placed)?
                }
            };
            for (path, bytes) in files.iter() {
                tree.insert(path.clone(), Entry::File(bytes.clone()));
            }
            let shops = ss.spec.shops.len();
            rows_changed |= old.is_none_or(|o| o.namespace != namespace || o.shops != shops);
            let config_path = cfg.spec.path.clone();
            let entry = ShopSetMemo { shopset: Arc::clone(ss), config_path, files, namespace, shops, seen: true };
            memo.insert(name.to_string(), entry);
        }
        // ShopSets of the last render that are gone; the others wait to be seen by the next. With
        // only a few visited, none is gone: those few wait again.
        match &few {
            Some(few) => {
                for &i in few {
                    if let Some(m) = memo.get_mut(name_of(shopsets[i])) {
                        m.seen = false;
                    }
                }
            }
            None => memo.retain(|_, m| {
                if !m.seen {
                    changed = true;
                    for (path, _) in m.files.iter() {
                        tree.remove(path);
                    }
                }
                std::mem::take(&mut m.seen)
            }),
        }

        // The README lists every ShopSet: written again only when a row or the rest of its input changed.
        let readme_key = serde_json::to_string(&(&tier.spec.app.url, &pins.app, &cfg_pins)).unwrap_or_default();
        if rows_changed || last_readme.as_deref() != Some(readme_key.as_str()) || readme_key.is_empty() {
            let rows: Vec<minijinja::Value> = shopsets
                .iter()
                .take(README_SHOPSETS)
                .map(|ss| {
                    let (name, namespace) = (ss.name_any(), ss.destination_namespace(tier));
                    context! { name => name, namespace => namespace, shops => ss.spec.shops.len() }
                })
                .collect();
            let readme = self.text(
                "README.md",
                "",
                context! {
                    tier => tier_name.as_str(),
                    branch => branch.as_str(),
                    app_url => tier.spec.app.url.as_str(),
                    app_commit => pins.app.as_str(),
                    system_url => tier.spec.system.url.as_str(),
                    configurations => readme_cfgs,
                    shopsets => rows,
                    more => shopsets.len().saturating_sub(README_SHOPSETS),
                },
            )?;
            tree.insert("README.md".into(), Entry::file(readme));
        }
        let paths = tree.into_paths();
        match &few {
            Some(few) => {
                for &i in few {
                    inputs[i] = Arc::clone(&given[i]);
                }
            }
            None if sorted => inputs = given.to_vec(),
            None => inputs.clear(),
        }
        let used = used.iter().map(|name| (name.to_string(), cfg_by_name[*name].spec.path.clone())).collect();
        let last = Some(LastRender { id, shopsets: memo, inputs, used, tree: shared.clone(), readme_key });
        self.memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tier_name, TierMemo { tier_key, restored: HashMap::new(), last, changed });
        let paths = if from.is_some() { paths } else { Vec::new() };
        Ok(Rendered { tree: shared, edits: Edits { render: id, from, paths } })
    }

    /// The files of one ShopSet, rendered from its templates.
    fn render_shopset(
        &self,
        tier: &Tier,
        ss: &ShopSet,
        cfg: &Configuration,
        name: &str,
        namespace: &str,
        placed: crate::fleet::Placed<'_>,
    ) -> Result<ShopSetFiles, RenderError> {
        let tier_name = tier.name_any();
        let branch = tier.branch();
        let argocd = &tier.spec.argocd;
        let (server, cluster) = match placed.target {
            Target::Server(server) => (Some(server), None),
            Target::Cluster(cluster) => (None, Some(cluster)),
        };
        let dir = format!("shopsets/{name}");
        let mut literals = vec![
            format!("SHOPSET_NAME={name}"),
            format!("SHOPSET_TIER={tier_name}"),
            format!("SHOP_COUNT={}", ss.spec.shops.len()),
            format!("SHOP_IDS={}", ss.spec.shops.join(",")),
        ];
        // Only while in maintenance: a ShopSet that never is keeps its ConfigMap (and so its
        // workloads) untouched by this feature.
        if ss.spec.maintenance.is_some() {
            literals.push(format!("MAINTENANCE_SHOP_IDS={}", ss.shops_in_maintenance().join(",")));
        }
        let sync_policy = effective_sync_policy(argocd.sync_policy.as_ref(), ss);
        let ctx = context! {
            shopset => name,
            tier => tier_name.as_str(),
            namespace => namespace,
            base => repo_path("../../base", &tier.spec.app.path),
            component => repo_path(&format!("../../config/{}", ss.spec.configuration), &cfg.spec.path),
            literals => literals,
            images => minijinja::value::Serde(&ss.spec.images),
            replicas => ss.spec.replicas,
        };
        let app_ctx = context! {
            name => name,
            shopset => name,
            tier => tier_name.as_str(),
            argocd_namespace => argocd.namespace.as_str(),
            project => argocd.project.as_str(),
            repo_url => tier.spec.system.url.as_str(),
            branch => branch.as_str(),
            path => dir.as_str(),
            destination => placed.name,
            server => server,
            cluster => cluster,
            namespace => namespace,
            sync_policy => minijinja::value::Serde(&sync_policy),
        };
        let what = format!("ShopSet/{name}");
        let mut files = vec![
            (format!("{dir}/kustomization.yaml"), self.yaml("kustomization.yaml", &what, ctx.clone())?),
            (format!("{dir}/namespace.yaml"), self.yaml("namespace.yaml", &what, ctx.clone())?),
        ];
        if ss.spec.replicas.is_some() {
            files.push((format!("{dir}/replicas.yaml"), self.yaml("replicas.yaml", &what, ctx)?));
        }
        files.push((format!("applications/{name}.yaml"), self.yaml("application.yaml", &what, app_ctx)?));
        Ok(Arc::new(files.into_iter().map(|(path, bytes)| (Arc::from(path), Arc::from(bytes))).collect()))
    }
}

/// [`ResourceExt::name_any`], borrowed: a render of 1,000 unchanged ShopSets copies no name.
fn name_of(ss: &ShopSet) -> &str {
    let meta = &ss.metadata;
    meta.name.as_deref().or(meta.generate_name.as_deref()).unwrap_or_default()
}

/// The Tier's sync policy as the Application of `ss` gets it: without automated sync while the
/// whole ShopSet is in maintenance, so Argo CD neither syncs nor self-heals over what operators do
/// by hand; no policy at all when nothing else is left.
fn effective_sync_policy(policy: Option<&SyncPolicy>, ss: &ShopSet) -> Option<SyncPolicy> {
    let mut policy = policy.cloned()?;
    if ss.wholly_in_maintenance() {
        policy.automated = None;
        if policy.sync_options.is_empty() {
            return None;
        }
    }
    Some(policy)
}

/// `prefix/path`, without a trailing `/.`.
fn repo_path(prefix: &str, path: &str) -> String {
    let path = path.trim_end_matches('/');
    if path == "." || path.is_empty() { prefix.to_string() } else { format!("{prefix}/{path}") }
}

/// A `.gitmodules` section as `git submodule add -b` writes it, quoted as git quotes config values,
/// so a value can never end early or add keys even if validation upstream let it through.
fn submodule_section(path: &str, url: &str, branch: &str) -> Result<String, RenderError> {
    for (what, value) in [("submodule path", path), ("repository URL", url), ("branch", branch)] {
        // git config has no escape for NUL or CR; a section name cannot hold a line break at all.
        if value.contains(['\0', '\r']) || (what == "submodule path" && value.contains('\n')) {
            return Err(RenderError::BadGitmodules { what: what.into(), value: value.into() });
        }
    }
    let section = path.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!(
        "[submodule \"{section}\"]\n\tpath = {}\n\turl = {}\n\tbranch = {}\n",
        git_config_value(path),
        git_config_value(url),
        git_config_value(branch)
    ))
}

/// A git config value as `git config` writes it: quoted when it has a leading or trailing space,
/// `;` or `#`; `"`, `\\`, newline and tab escaped.
fn git_config_value(value: &str) -> String {
    let quote = value.starts_with(' ') || value.ends_with(' ') || value.contains([';', '#']);
    let mut out = String::with_capacity(value.len() + 2);
    if quote {
        out.push('"');
    }
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    if quote {
        out.push('"');
    }
    out
}

/// A ShopSet or Configuration (`kind`) name becomes one directory name on the system branch.
fn check_dir_name(kind: &str, name: &str) -> Result<(), RenderError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(RenderError::BadName { resource: format!("{kind}/{name}"), value: name.into() });
    }
    Ok(())
}

fn origin(overrides: &BTreeMap<String, String>, name: &str) -> String {
    overrides.get(name).map(|path| format!(" (from {path})")).unwrap_or_default()
}

/// The default formatter, except that in YAML templates (JSON auto-escaping) characters that YAML
/// reads as line breaks (U+0085, U+2028, U+2029) or refuses (DEL, C1 controls, U+FEFF, U+FFFE,
/// U+FFFF) are escaped too: JSON leaves them raw, and a raw line break ends a comment or folds a
/// quoted string, which would let a value add keys.
fn yaml_safe_formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if !matches!(state.auto_escape(), AutoEscape::Json) || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    let json = serde_json::to_string(value).map_err(|e| {
        minijinja::Error::new(ErrorKind::BadSerialization, format!("cannot write the value as JSON: {e}"))
    })?;
    let mut escaped = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') {
            escaped.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    out.write_str(&escaped).map_err(minijinja::Error::from)
}

fn check_oid(what: &str, value: &str) -> Result<(), RenderError> {
    let ok = (value.len() == 40 || value.len() == 64)
        && value.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    if ok { Ok(()) } else { Err(RenderError::BadPin { what: what.into(), value: value.into() }) }
}
