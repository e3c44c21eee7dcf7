//! A real Argo CD deploys what ShopSet writes. `shopctl sync` writes the system branch of tier-0
//! (the app repository as the `base` submodule, the configuration repository as
//! `config/shop-config`, one Kustomize overlay and one Application per ShopSet) on a git daemon on
//! loopback; the Applications it rendered are applied as they are, and Argo CD v3.5 (repo-server
//! and application controller, as processes) clones the system branch with its submodules, builds
//! the overlays with kustomize and applies them; kube-scheduler and kwok make the Pods Ready. An
//! app change then goes the same way: merge, `shopctl sync`, refresh annotation.
//!
//! Nothing here writes a status: every Synced, Healthy and Available is Argo CD's, the
//! Deployment controller's or kwok's.
//!
//! Build the workspace first: the test runs the `shopctl` binary of `cargo build`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopset_e2e::argocd::{ArgoCd, ArgoCdOptions};
use shopset_e2e::controlplane::{ControlPlane, Options};
use shopset_e2e::gitserver::{GitDaemon, branch_head, commit_files, git, seed_dir};
use shopset_e2e::tools::{path_env, repo_root, workspace_bin};
use tempfile::TempDir;

const TIER: &str = "tier-0";
/// The ShopSets of tier-0; each deploys to the namespace of its name.
const SHOPSETS: [&str; 2] = ["canary-eu", "canary-us"];
/// The Deployments of the example app's base.
const DEPLOYMENTS: [&str; 2] = ["storefront", "checkout"];

/// The first sync clones, builds and applies from nothing, and Argo CD fills its cluster cache
/// first: generous, the machine may be slow and busy.
const FIRST_SYNC: Duration = Duration::from_secs(600);
const NEXT_SYNC: Duration = Duration::from_secs(300);
const ROLLOUT: Duration = Duration::from_secs(180);

#[test]
fn argo_cd_deploys_the_system_branch_shopctl_writes_and_follows_an_app_change() {
    let started = Instant::now();
    // No periodic refresh: once the first sync is done, only the refresh annotation makes Argo CD
    // read the system branch again, so the last step fails if that annotation stops working.
    let argocd_options = ArgoCdOptions { app_resync: Duration::ZERO, ..ArgoCdOptions::default() };
    let cp = ControlPlane::start_with(Options::default().argocd(argocd_options));
    let argocd = cp.argocd();
    eprintln!("control plane with Argo CD up in {:.1?}", started.elapsed());

    // The example app (two Deployments, two ClusterIP Services) and configuration (a Component).
    let daemon = GitDaemon::start();
    let app_url = daemon.create_repo("shop-app");
    let config_url = daemon.create_repo("shop-config");
    let system_url = daemon.create_repo("shop-system");
    let examples = repo_root().join("examples");
    seed_dir(&app_url, "main", &examples.join("app"), "Shop application base");
    seed_dir(&config_url, "main", &examples.join("config"), "Shared shop configuration");
    let system_repo = daemon.path("shop-system");

    let work = TempDir::with_prefix("shopset-e2e-argocd-").expect("create work dir");
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).expect("create manifests dir");
    std::fs::write(
        manifests.join("tier-0.yaml"),
        shopset_e2e::argocd::tier0_manifests(&app_url, &config_url, &system_url, argocd.namespace(), "1m"),
    )
    .expect("write manifests");

    // 1. ShopSet writes the system branch; its Applications are applied as rendered.
    shopctl_sync(work.path(), &manifests);
    let head = branch_head(&system_url, TIER).expect("shopctl sync created the system branch");
    let app_head = branch_head(&app_url, TIER).expect("shopctl sync created the app's tier branch");
    assert_eq!(gitlink(&system_repo, "base"), app_head, "base pins the app's tier-0 head");
    assert_eq!(
        gitlink(&system_repo, "config/shop-config"),
        branch_head(&config_url, TIER).expect("config tier-0"),
        "config/shop-config pins the configuration's tier-0 head"
    );
    let applied = apply_rendered_applications(&cp, &system_repo);
    assert_eq!(applied, SHOPSETS.map(|s| format!("applications/{s}.yaml")), "rendered Applications");

    argocd.wait_synced_healthy(&SHOPSETS, &head, FIRST_SYNC);
    eprintln!("Applications Synced and Healthy at {head} after {:.1?}", started.elapsed());
    for shopset in SHOPSETS {
        for deployment in DEPLOYMENTS {
            wait_rolled_out(&cp, &argocd, shopset, deployment, None);
        }
    }

    // 2. A change merged into the app's tier branch goes out the same way.
    let storefront = std::fs::read_to_string(examples.join("app/base/storefront.yaml")).expect("read storefront.yaml");
    let (old_image, new_image) = ("ghcr.io/acme/storefront:1.0.0", "ghcr.io/acme/storefront:1.1.0");
    assert_eq!(storefront.matches(old_image).count(), 1, "examples/app/base/storefront.yaml names {old_image} once");
    let app_change = commit_files(
        &app_url,
        TIER,
        &[("base/storefront.yaml", &storefront.replace(old_image, new_image))],
        "storefront 1.1.0",
    );
    shopctl_sync(work.path(), &manifests);
    let new_head = branch_head(&system_url, TIER).expect("system tier-0");
    assert_ne!(new_head, head, "shopctl sync committed the app change to the system branch");
    assert_eq!(gitlink(&system_repo, "base"), app_change, "base pins the app change");
    // The Applications did not change (same branch, same paths): applying them again is a no-op,
    // as the controller would do; the annotation is what tells Argo CD to look now.
    assert_eq!(apply_rendered_applications(&cp, &system_repo), applied);
    let refreshed = Instant::now();
    for shopset in SHOPSETS {
        argocd.refresh(shopset);
    }
    argocd.wait_synced_healthy(&SHOPSETS, &new_head, NEXT_SYNC);
    eprintln!("Applications Synced and Healthy at {new_head} {:.1?} after the refresh", refreshed.elapsed());
    for shopset in SHOPSETS {
        wait_rolled_out(&cp, &argocd, shopset, "storefront", Some(new_image));
        wait_rolled_out(&cp, &argocd, shopset, "checkout", None);
    }
}

/// `shopctl sync -f <manifests> --tier tier-0`, which must succeed; with its own cache and HOME,
/// and none of the caller's ShopSet, git or Kubernetes settings.
fn shopctl_sync(work: &Path, manifests: &Path) {
    let out = Command::new(workspace_bin("shopctl"))
        .current_dir(work)
        .args(["--cache-dir", "cache", "--color", "never", "sync", "-f"])
        .arg(manifests)
        .args(["--tier", TIER])
        .env("PATH", path_env())
        .env("HOME", work)
        .env("XDG_CONFIG_HOME", work)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("SHOPSET_CACHE_DIR")
        .env_remove("SHOPSET_CREDENTIALS")
        .env_remove("SHOPSET_TEMPLATES")
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run shopctl");
    assert!(
        out.status.success(),
        "shopctl sync failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The commit a gitlink of the system branch points to.
fn gitlink(system_repo: &Path, path: &str) -> String {
    let line = git(system_repo, &["ls-tree", TIER, path]);
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["160000", "commit", sha, p] if p == path => sha.to_string(),
        _ => panic!("{path} is not a submodule on the system branch: {line:?}"),
    }
}

/// Applies every `applications/*.yaml` of the system branch as its header says (server-side,
/// field manager shopset-controller); returns their paths.
fn apply_rendered_applications(cp: &ControlPlane, system_repo: &Path) -> Vec<String> {
    let listing = git(system_repo, &["ls-tree", "--name-only", TIER, "applications/"]);
    let paths: Vec<String> = listing.lines().filter(|p| p.ends_with(".yaml")).map(str::to_string).collect();
    for path in &paths {
        let yaml = git(system_repo, &["show", &format!("{TIER}:{path}")]);
        cp.kubectl_with_stdin_ok(["apply", "--server-side", "--field-manager=shopset-controller", "-f", "-"], &yaml);
    }
    paths
}

/// Waits until Deployment `name` of ShopSet `shopset` (in the namespace of that name) is rolled
/// out: Available, every replica updated and available, none of an older ReplicaSet left, each
/// Pod Ready on the kwok Node; with `image`, that is the image of its first container. Argo CD's
/// Application `shopset` must have applied it.
fn wait_rolled_out(cp: &ControlPlane, argocd: &ArgoCd<'_>, shopset: &str, name: &str, image: Option<&str>) {
    let namespace = shopset;
    let what =
        format!("Deployment {namespace}/{name} rolled out{}", image.map(|i| format!(" with {i}")).unwrap_or_default());
    argocd.wait(&what, ROLLOUT, || {
        let deployment = kubectl_json(cp, &["get", "deployment", name, "-n", namespace])?;
        let int = |pointer: &str| deployment.pointer(pointer).and_then(|v| v.as_i64()).unwrap_or(-1);
        let text = |pointer: &str| deployment.pointer(pointer).and_then(|v| v.as_str()).unwrap_or_default();
        let tracking = text("/metadata/annotations/argocd.argoproj.io~1tracking-id");
        // Argo CD's resource tracking: <application>:<group>/<kind>:<namespace>/<name>.
        if tracking != format!("{shopset}:apps/Deployment:{namespace}/{name}") {
            return Err(format!("not applied by Argo CD for Application {shopset}: tracking id {tracking:?}"));
        }
        let current = text("/spec/template/spec/containers/0/image");
        if let Some(image) = image
            && current != image
        {
            return Err(format!("image {current}"));
        }
        let available = deployment
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Available" && c["status"] == "True"));
        let replicas = int("/spec/replicas");
        let counts = [
            int("/status/observedGeneration") - int("/metadata/generation"),
            int("/status/replicas") - replicas,
            int("/status/updatedReplicas") - replicas,
            int("/status/availableReplicas") - replicas,
        ];
        if !available || counts != [0; 4] {
            return Err(format!("status {}", deployment["status"]));
        }
        let pods =
            kubectl_json(cp, &["get", "pods", "-n", namespace, "-l", &format!("app.kubernetes.io/name={name}")])?;
        let pods = pods["items"].as_array().cloned().unwrap_or_default();
        let ready_here = |pod: &serde_json::Value| {
            pod.pointer("/spec/nodeName").and_then(|n| n.as_str()) == Some(argocd.node())
                && pod.pointer("/metadata/deletionTimestamp").is_none()
                && pod["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        if pods.len() as i64 != replicas || !pods.iter().all(ready_here) {
            let shown: Vec<String> =
                pods.iter().map(|p| format!("{} {}", p["spec"]["nodeName"], p["status"])).collect();
            return Err(format!("Pods (want {replicas} Ready on {}):\n{}", argocd.node(), shown.join("\n")));
        }
        Ok(())
    });
}

/// `kubectl <args> -o json`, parsed; an error (kubectl's) to wait on.
fn kubectl_json(cp: &ControlPlane, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = cp.kubectl(args.iter().copied().chain(["-o", "json"]));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("kubectl printed no JSON: {e}"))
}
