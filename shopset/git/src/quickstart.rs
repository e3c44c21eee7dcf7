//! The embedded default: local repositories seeded from `examples/`, so the whole flow runs on a
//! fresh machine without a cluster or a git server.

use std::path::{Path, PathBuf};

use git2::{Repository, Signature};

/// The example app repository (path, content).
pub const APP_FILES: &[(&str, &str)] = &[
    ("base/kustomization.yaml", include_str!("../../../examples/app/base/kustomization.yaml")),
    ("base/storefront.yaml", include_str!("../../../examples/app/base/storefront.yaml")),
    ("base/checkout.yaml", include_str!("../../../examples/app/base/checkout.yaml")),
];

/// The example configuration repository.
pub const CONFIG_FILES: &[(&str, &str)] =
    &[("component/kustomization.yaml", include_str!("../../../examples/config/component/kustomization.yaml"))];

/// The example manifests (file name, content).
pub const MANIFESTS: &[(&str, &str)] = &[
    ("configuration.yaml", include_str!("../../../examples/configuration.yaml")),
    ("tier-0.yaml", include_str!("../../../examples/tier-0.yaml")),
    ("tier-1.yaml", include_str!("../../../examples/tier-1.yaml")),
    ("shopsets.yaml", include_str!("../../../examples/shopsets.yaml")),
];

/// The URLs the example manifests use, replaced by local ones.
pub const EXAMPLE_URLS: &[(&str, &str)] = &[
    ("https://git.example.com/acme/shop-app.git", "app.git"),
    ("https://git.example.com/acme/shop-config.git", "config.git"),
    ("https://git.example.com/acme/shop-system.git", "system.git"),
];

/// What [`create`] made.
#[derive(Debug, Clone)]
pub struct Quickstart {
    pub repos: PathBuf,
    pub manifests: PathBuf,
    pub app_url: String,
    pub config_url: String,
    pub system_url: String,
}

/// Why the quickstart could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    #[error("{path} already holds a quickstart or other files; fix: choose an empty directory or remove it")]
    NotEmpty { path: PathBuf },
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> QuickstartError + '_ {
    move |e| QuickstartError::Io { path: path.to_path_buf(), detail: e.to_string() }
}

fn git(path: &Path) -> impl Fn(git2::Error) -> QuickstartError + '_ {
    move |e| QuickstartError::Io { path: path.to_path_buf(), detail: e.message().to_string() }
}

/// Rewrites the example URLs to `file://` URLs of repositories under `repos`.
pub fn localize(text: &str, repos: &Path) -> String {
    with_urls(text, |name| format!("file://{}", repos.join(name).display()))
}

/// Rewrites the example URLs: `url` maps each local name (`app.git`, `config.git`, `system.git`)
/// to the URL to use instead.
pub fn with_urls(text: &str, url: impl Fn(&str) -> String) -> String {
    EXAMPLE_URLS.iter().fold(text.to_string(), |acc, (from, name)| acc.replace(from, &url(name)))
}

/// Creates `dir/repos/{app,config,system}.git` (app and config seeded on `main`, system empty)
/// and `dir/manifests/` pointing at them.
pub fn create(dir: &Path) -> Result<Quickstart, QuickstartError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(QuickstartError::NotEmpty { path: dir.to_path_buf() });
    }
    let dir = {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        dir.canonicalize().map_err(io(dir))?
    };
    let repos = dir.join("repos");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(io(&manifests))?;
    seed(&repos.join("app.git"), APP_FILES, "Shop application base")?;
    seed(&repos.join("config.git"), CONFIG_FILES, "Shared shop configuration")?;
    let system = repos.join("system.git");
    Repository::init_bare(&system).map_err(git(&system))?;
    for (name, text) in MANIFESTS {
        let path = manifests.join(name);
        std::fs::write(&path, localize(text, &repos)).map_err(io(&path))?;
    }
    let url = |name: &str| format!("file://{}", repos.join(name).display());
    Ok(Quickstart {
        app_url: url("app.git"),
        config_url: url("config.git"),
        system_url: url("system.git"),
        repos,
        manifests,
    })
}

/// A bare repository whose `main` holds `files` in one commit.
fn seed(path: &Path, files: &[(&str, &str)], message: &str) -> Result<(), QuickstartError> {
    let repo = Repository::init_bare(path).map_err(git(path))?;
    let mut index = git2::Index::new().map_err(git(path))?;
    for (name, content) in files {
        let oid = repo.blob(content.as_bytes()).map_err(git(path))?;
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: content.len() as u32,
            id: oid,
            flags: name.len().min(0xfff) as u16,
            flags_extended: 0,
            path: name.as_bytes().to_vec(),
        };
        index.add(&entry).map_err(git(path))?;
    }
    let tree = index.write_tree_to(&repo).map_err(git(path))?;
    let tree = repo.find_tree(tree).map_err(git(path))?;
    let who = Signature::now("ShopSet quickstart", "quickstart@shopset.dev").map_err(git(path))?;
    repo.commit(Some("refs/heads/main"), &who, &who, message, &tree, &[]).map_err(git(path))?;
    repo.set_head("refs/heads/main").map_err(git(path))?;
    Ok(())
}
