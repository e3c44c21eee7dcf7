//! The user's manifest files, edited in place by `shopctl maintenance` and `shopctl shop`: which
//! files `-f` names, writing them atomically, showing an edit as a diff, and writing the edited
//! ShopSets to the cluster by server-side apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use shopset::api::ShopSet;
use shopset::manifests::Inventory;
use shopset::render::{Entry, Tree};

/// The field manager of `--apply`.
pub const FIELD_MANAGER: &str = "shopctl";

/// Input that names something the manifests do not hold, or cannot be edited in place (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

pub fn invalid(message: String) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(message))
}

/// The files `-f` names, as [`shopset::manifests::Inventory::load`] reads them.
pub fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// The edit of `file` from `old` to `new` as a unified diff (a new file: `old` empty).
pub fn manifest_diff(file: &Path, old: &str, new: &str) -> String {
    let path = file.display().to_string();
    let tree = |text: &str| {
        if text.is_empty() {
            Tree::from_entries(BTreeMap::new())
        } else {
            Tree::from_entries(BTreeMap::from([(path.as_str().into(), Entry::file(text.as_bytes()))]))
        }
    };
    shopset::gitops::diff_trees(&tree(old), &tree(new))
}

/// Writes `text` to `file` through a sibling temporary file, so a failure leaves the old file.
pub fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    std::fs::write(tmp.path(), text).with_context(|| format!("cannot write {}", tmp.path().display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        // Keep the file's mode (a temporary file is created 0600).
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(file).map_err(|e| anyhow!("cannot replace {}: {}", file.display(), e.error))?;
    Ok(())
}

/// The one file of `files` that defines `what` (`ShopSet/eu-west`), edited by `edit` (which
/// answers None for a file that does not define it): the file, its text, and the edited text.
/// Refuses when no file or several define it.
pub fn edit_one<E: std::fmt::Display>(
    files: &[PathBuf],
    what: &str,
    edit: impl Fn(&str) -> Result<Option<String>, E>,
) -> Result<(PathBuf, String, String)> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        if let Some(new) = edit(&text).map_err(|e| invalid(format!("{}: {e}", file.display())))? {
            found.push((file.clone(), text, new));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(invalid(format!(
            "{what}: not found in the files given; fix: pass the manifest that defines it with -f"
        ))),
        _ => {
            let names: Vec<String> = found.iter().map(|(f, _, _)| f.display().to_string()).collect();
            Err(invalid(format!(
                "{what}: defined in {}; fix: pass only the file that defines it, or -n its namespace",
                names.join(" and ")
            )))
        }
    }
}

/// Writes an edit of `file` from `old` to `new` unless `dry_run`: whether it changes the file,
/// and under `dry_run` the change as a diff.
pub fn save(file: &Path, old: &str, new: &str, dry_run: bool) -> Result<(bool, Option<String>)> {
    let changed = old != new;
    let diff = (dry_run && changed).then(|| manifest_diff(file, old, new));
    if changed && !dry_run {
        write_atomically(file, new)?;
    }
    Ok((changed, diff))
}

/// Writes the ShopSet to the cluster by server-side apply (field manager [`FIELD_MANAGER`]).
pub fn apply(ss: &ShopSet, namespace: Option<&str>) -> Result<()> {
    apply_objects(std::slice::from_ref(ss), namespace)
}

/// [`apply`] for several ShopSets, in order, on one connection.
pub fn apply_all(shopsets: &[ShopSet], namespace: Option<&str>) -> Result<()> {
    apply_objects(shopsets, namespace)
}

/// Writes namespaced objects of a manifest (ShopSets, Tiers) to the cluster by server-side apply
/// (field manager [`FIELD_MANAGER`]), in order, on one connection; without their status.
pub fn apply_objects<K>(objects: &[K], namespace: Option<&str>) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let Some(first) = objects.first() else { return Ok(()) };
        let first = first.name_any();
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow!("{kind}/{first}: cannot reach the cluster to apply it ({e}); fix: set KUBECONFIG, or leave out --apply and let GitOps apply the file")
        })?;
        for obj in objects {
            let name = obj.name_any();
            let ns = obj.namespace().or(namespace.map(str::to_string)).unwrap_or_else(|| "default".into());
            let api: Api<K> = Api::namespaced(client.clone(), &ns);
            let mut value = serde_json::to_value(obj).map_err(|e| anyhow!("{kind}/{name}: {e}"))?;
            if let Some(map) = value.as_object_mut() {
                map.remove("status");
            }
            if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("managedFields");
                meta.remove("resourceVersion");
                meta.insert("namespace".into(), serde_json::Value::String(ns.clone()));
            }
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&value)).await.map_err(|e| {
                anyhow!(
                    "{kind}/{name} in namespace {ns}: the API server refused the apply: {}; fix: correct the manifest, or if another field manager owns the fields shopctl changed, apply the file as that manager does",
                    shopset::error::api_message(&e)
                )
            })?;
        }
        Ok(())
    })
}

/// The ShopSet `name` of the manifests (in `namespace` when given), or an error naming the fix.
pub fn find<'a>(inventory: &'a Inventory, name: &str, namespace: Option<&str>) -> Result<&'a ShopSet> {
    let matching: Vec<&ShopSet> = inventory
        .shopsets
        .iter()
        .filter(|((ns, n), _)| n == name && namespace.is_none_or(|want| want == ns))
        .map(|(_, ss)| &**ss)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(invalid(format!(
            "ShopSet/{name}: not found in the files given; fix: pass the manifest that defines it with -f{}",
            if namespace.is_some() { ", or correct -n" } else { "" }
        ))),
        _ => Err(invalid(format!("ShopSet/{name}: defined in several namespaces; fix: pass -n NAMESPACE"))),
    }
}
