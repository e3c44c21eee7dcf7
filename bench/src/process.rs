//! `shopctl sync` as a person runs it, a new process each time, beside the same change made by
//! hand on a warm clone (`bench/baseline-warm.sh`): both timed as whole processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopset::manifests::TierInput;
use shopset::render::{Entry, Tree};
use shopset_e2e::gitserver::git;

/// Builds a release binary of the workspace (once per run; cargo answers at once after the first).
pub fn release_binary(package: &str) -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", package])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release -p {package} failed"));
    }
    Ok(target.join("release").join(package))
}

/// An object as a manifest: JSON (which YAML reads) without `status` and without nulls.
fn manifest(mut value: serde_json::Value) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    strip(&mut value);
    serde_json::to_string(&value).expect("manifest")
}

/// Writes the manifests of `input` as a person keeps them: the tier and its Configuration in one
/// file, the ShopSets in another (as `examples/`).
pub fn write_manifests(dir: &Path, input: &TierInput) {
    std::fs::create_dir_all(dir).expect("manifests dir");
    let json = |v: Result<serde_json::Value, serde_json::Error>| manifest(v.expect("manifest as JSON"));
    let mut tier = json(serde_json::to_value(&input.tier));
    for cfg in &input.configurations {
        tier.push_str("\n---\n");
        tier.push_str(&json(serde_json::to_value(cfg)));
    }
    std::fs::write(dir.join("tier.yaml"), tier + "\n").expect("write tier.yaml");
    let shopsets: Vec<String> = input.shopsets.iter().map(|s| json(serde_json::to_value(&**s))).collect();
    std::fs::write(dir.join("shopsets.yaml"), shopsets.join("\n---\n") + "\n").expect("write shopsets.yaml");
}

/// `shopctl sync -f DIR` with its own cache directory, as a whole process.
pub struct Shopctl {
    pub binary: PathBuf,
    pub manifests: PathBuf,
    pub cache: PathBuf,
}

impl Shopctl {
    pub fn sync(&self) -> Duration {
        let t = Instant::now();
        let out = Command::new(&self.binary)
            .arg("sync")
            .arg("-f")
            .arg(&self.manifests)
            .arg("--cache-dir")
            .arg(&self.cache)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run shopctl");
        let took = t.elapsed();
        assert!(out.status.success(), "shopctl sync failed: {}", String::from_utf8_lossy(&out.stderr));
        took
    }
}

/// A person's warm clone of a system repository: made once, then `bench/baseline-warm.sh` per change.
pub struct WarmClone {
    url: String,
    clone: PathBuf,
    files: PathBuf,
}

impl WarmClone {
    /// Clones `url` (its tier-0 branch must exist) into `dir`; not timed, as a person clones once.
    pub fn new(url: &str, dir: &Path) -> Self {
        let clone = dir.join("clone");
        let files = dir.join("files");
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(&files).expect("warm dir");
        git(dir, &["clone", "-q", "--branch", "tier-0", url, "clone"]);
        Self { url: url.into(), clone, files }
    }

    /// The change from `old` to `new` (files written and gitlinks moved; nothing here removes a
    /// file), by hand, timed as the whole script.
    pub fn change(&self, old: &Tree, new: &Tree) -> Duration {
        let mut args = Vec::new();
        for (path, entry) in &new.entries {
            if old.entries.get(path) == Some(entry) {
                continue;
            }
            match entry {
                Entry::File(bytes) => {
                    let p = self.files.join(&**path);
                    std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("dir");
                    std::fs::write(p, bytes).expect("write");
                    args.push(path.to_string());
                }
                Entry::Gitlink(oid) => args.push(format!("{path}={oid}")),
            }
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline-warm.sh");
        let t = Instant::now();
        let out = Command::new("bash")
            .arg(script)
            .arg(&self.url)
            .arg(&self.clone)
            .arg(&self.files)
            .args(&args)
            .output()
            .expect("run baseline-warm.sh");
        let took = t.elapsed();
        assert!(out.status.success(), "baseline-warm.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        took
    }
}
