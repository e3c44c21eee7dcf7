//! Argo CD reads the system repository and its submodules (the app repository as `base`, the
//! configuration repository under `config/`) with the Tier's credentials, through the credential
//! template (`argocd.argoproj.io/secret-type: repo-creds`) the controller writes, and through
//! nothing else. All three repositories are on an HTTP git server behind basic auth; the Tier names
//! its credentials Secret with `spec.credentials.secretRef`; `shopset-controller` (a process)
//! pushes, writes the template into Argo CD's namespace and applies the Applications; Argo CD
//! v3.5's repo-server clones with submodules over HTTP, asking `argocd-git-ask-pass` for the
//! credentials. Then, with the controller stopped and the template deleted, a hard refresh makes
//! Argo CD report an authentication failure; the controller started again puts the template back
//! and Argo CD deploys again.
//!
//! Nothing here writes a status: every Synced, Healthy and condition is Argo CD's.
//!
//! Build the workspace first: the test runs the `shopset-controller` and `shopctl` binaries of
//! `cargo build`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use shopset_e2e::argocd::{ApplicationStatus, ArgoCd, ArgoCdOptions};
use shopset_e2e::controlplane::{ControlPlane, Options};
use shopset_e2e::gitserver::{HttpGitServer, branch_head, seed_dir};
use shopset_e2e::tools::{path_env, repo_root, workspace_bin};
use support::{Controller, Run, WorkDir, replace_once, wait_until};

const NS: &str = "creds";
const TIER: &str = "tier-0";
const SHOPSETS: [&str; 2] = ["canary-eu", "canary-us"];
const USER: &str = "shopset";
const PASSWORD: &str = "tok-argocd-creds-5d2e9b";
const INTERVAL: &str = "20s";
/// The first deployment clones, builds and applies from nothing, and Argo CD fills its cluster
/// cache first: generous, the machine may be slow and busy.
const FIRST_DEPLOY: Duration = Duration::from_secs(600);
const NEXT: Duration = Duration::from_secs(300);

#[test]
fn argo_cd_clones_the_system_repository_and_its_submodules_only_with_the_template_the_controller_writes() {
    let started = Instant::now();
    // No periodic refresh: Argo CD reads git again only when asked (the controller's refresh
    // after a push, or this test's hard refresh).
    let argocd_options = ArgoCdOptions { app_resync: Duration::ZERO, ..ArgoCdOptions::default() };
    let cp = ControlPlane::start_with(Options::default().argocd(argocd_options));
    let argocd = cp.argocd();
    eprintln!("control plane with Argo CD up in {:.1?}", started.elapsed());

    let http = HttpGitServer::start(USER, PASSWORD);
    let (app_url, config_url, system_url) =
        (http.create_repo("shop-app"), http.create_repo("shop-config"), http.create_repo("shop-system"));
    let examples = repo_root().join("examples");
    seed_dir(&http.authed_url("shop-app"), "main", &examples.join("app"), "Shop application base");
    seed_dir(&http.authed_url("shop-config"), "main", &examples.join("config"), "Shared shop configuration");
    let system_head = || branch_head(&http.authed_url("shop-system"), TIER);

    cp.kubectl_ok(["create", "namespace", NS]);
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: git-credentials\n  namespace: {NS}\nstringData:\n  username: {USER}\n  password: {PASSWORD}\n"
    );
    cp.kubectl_with_stdin_ok(["apply", "-f", "-"], &secret);
    let manifests = replace_once(
        &shopset_e2e::argocd::tier0_manifests(&app_url, &config_url, &system_url, argocd.namespace(), INTERVAL),
        "the tier-0 manifests",
        &format!("\n  interval: {INTERVAL}\n"),
        &format!("\n  interval: {INTERVAL}\n  credentials:\n    secretRef:\n      name: git-credentials\n"),
    );
    // Before anything runs: Argo CD's namespace holds no repository credential of any kind.
    assert_eq!(credential_secrets(&cp, argocd.namespace()), Vec::<String>::new());

    let work = WorkDir::new("argocd-creds");
    let mut ctl = Controller::new(&cp, work.path(), NS, "controller");
    ctl.start(&Run::new("argocd-creds"));
    cp.kubectl_with_stdin_ok(["apply", "-n", NS, "-f", "-"], &manifests);

    // 1. The controller pushes, writes the template and applies; Argo CD clones over HTTP with
    // the template's credentials, submodules and all, and deploys the head.
    // The first reconcile may push before the watch caches hold every ShopSet, and the next one
    // again: what counts is the branch's head at the time Argo CD is asked.
    let head = argocd.wait("Applications Synced and Healthy at the head of tier-0", FIRST_DEPLOY, || {
        ctl.assert_running();
        let head = system_head().ok_or("no system branch tier-0 yet")?;
        let statuses: Vec<String> = SHOPSETS
            .iter()
            .map(|name| match argocd.application(name) {
                Some(s) if s.synced_healthy_at(&head) => Ok(()),
                Some(s) => Err(format!("{name}: {s}")),
                None => Err(format!("{name}: no such Application")),
            })
            .filter_map(Result::err)
            .collect();
        if statuses.is_empty() { Ok(head) } else { Err(format!("head {head}\n{}", statuses.join("\n"))) }
    });
    argocd.wait_synced_healthy(&SHOPSETS, &head, NEXT);
    eprintln!("Applications Synced and Healthy at {head} after {:.1?}", started.elapsed());
    // What the app repository's base (the submodule `base`) holds, deployed: kustomize found the
    // submodules checked out (it fails on a missing base or component).
    let image =
        support::jsonpath(&cp, "canary-eu", "deployment", "storefront", "{.spec.template.spec.containers[0].image}");
    assert_eq!(image, "ghcr.io/acme/storefront:1.0.0", "the storefront of examples/app/base, deployed by Argo CD");

    // The only credential Secret in Argo CD's namespace: the Tier's one template, its URL the
    // prefix of all three repositories (one host).
    let templates = credential_secrets(&cp, argocd.namespace());
    assert_eq!(templates.len(), 1, "one credential Secret, the Tier's template: {templates:?}");
    let template = templates[0].clone();
    assert!(template.starts_with("shopset-creds-tier-0-") && template.ends_with(" repo-creds"), "{template}");
    let name = template.split(' ').next().unwrap_or_default().to_string();
    let live = template_secret(&cp, argocd.namespace(), &name);
    let data = |key: &str| String::from_utf8(live.data.as_ref().unwrap()[key].0.clone()).unwrap();
    let prefix = format!("http://127.0.0.1:{}/git/", http.port());
    assert_eq!((data("type"), data("url"), data("username")), ("git".to_string(), prefix.clone(), USER.to_string()));
    assert!(data("password") == PASSWORD, "the template holds the Tier's password");
    for url in [&app_url, &config_url, &system_url] {
        assert!(url.starts_with(&prefix), "{url} is covered by {prefix}");
    }

    // `shopctl argocd-creds` prints the very Secret the controller applied.
    let printed = shopctl_argocd_creds(&work, &manifests, &secret);
    let printed: Secret = serde_yaml::from_str(&printed).expect("shopctl argocd-creds prints one Secret");
    assert_eq!(printed.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(printed.metadata.namespace, live.metadata.namespace);
    assert_eq!(printed.metadata.labels, live.metadata.labels);
    assert_eq!((printed.type_.as_ref(), printed.data.as_ref()), (live.type_.as_ref(), live.data.as_ref()));

    // 2. Without the template, Argo CD cannot read the repository: stop the controller (it would
    // put the template back), delete it, and make Argo CD read git again.
    ctl.stop();
    cp.kubectl_ok(["delete", "secret", &name, "-n", argocd.namespace()]);
    let refused =
        refresh_until(&cp, &argocd, "Argo CD to fail to read the system repository without credentials", |status| {
            let error = status.messages.iter().find(|m| m.starts_with("ComparisonError:")).cloned();
            error.filter(|message| authentication_failure(message))
        });
    eprintln!("without the template, Argo CD says: {refused}");
    assert!(!refused.contains(PASSWORD), "{refused}");

    // 3. The controller, started again, writes the template again; Argo CD reads git again.
    ctl.start(&Run::new("argocd-creds-again"));
    let back = wait_until("the controller to write the template again", NEXT, &ctl, || {
        let templates = credential_secrets(&cp, argocd.namespace());
        (templates == [template.clone()]).then_some(templates)
    });
    assert_eq!(back, [template], "the same template, under the same name");
    refresh_until(&cp, &argocd, "Argo CD to read the system repository again", |status| {
        let errors = status.messages.iter().any(|m| m.starts_with("ComparisonError:"));
        (status.synced_healthy_at(&head) && !errors).then_some(())
    });
    argocd.wait_synced_healthy(&SHOPSETS, &head, NEXT);
    assert_eq!(system_head().as_deref(), Some(head.as_str()), "nothing was pushed meanwhile");
}

/// Whether Argo CD's ComparisonError says git refused it for want of credentials.
fn authentication_failure(message: &str) -> bool {
    let lower = message.to_lowercase();
    ["authentication required", "authentication failed", "401", "could not read username", "unauthorized"]
        .iter()
        .any(|m| lower.contains(m))
}

/// `name secret-type` of every Secret in `namespace` that Argo CD reads as repository
/// credentials (labelled `argocd.argoproj.io/secret-type` `repository`, `repo-creds` or their
/// write variants), sorted.
fn credential_secrets(cp: &ControlPlane, namespace: &str) -> Vec<String> {
    let out = cp.kubectl_ok([
        "get",
        "secrets",
        "-n",
        namespace,
        "-l",
        "argocd.argoproj.io/secret-type",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.argocd\.argoproj\.io/secret-type}{"\n"}{end}"#,
    ]);
    let mut lines: Vec<String> = out.lines().map(str::to_string).filter(|l| !l.ends_with(" cluster")).collect();
    lines.sort();
    lines
}

/// The template as the cluster holds it.
fn template_secret(cp: &ControlPlane, namespace: &str, name: &str) -> Secret {
    let json = cp.kubectl_ok(["get", "secret", name, "-n", namespace, "-o", "json"]);
    serde_json::from_str(&json).expect("a Secret")
}

/// Hard-refreshes Application canary-eu (`argocd.argoproj.io/refresh=hard`: Argo CD drops its
/// cached manifests and reads git again) until `probe` of its status says yes, as a person
/// would: again whenever Argo CD has done one (it removes the annotation) without the outcome
/// wanted, since its Secret informer may not yet have seen the template's deletion or return.
fn refresh_until<T>(
    cp: &ControlPlane,
    argocd: &ArgoCd<'_>,
    what: &str,
    mut probe: impl FnMut(&ApplicationStatus) -> Option<T>,
) -> T {
    const APP: &str = "canary-eu";
    argocd.wait(what, NEXT, || {
        let status = argocd.application(APP).ok_or("no Application canary-eu")?;
        if let Some(out) = probe(&status) {
            return Ok(out);
        }
        let pending = cp.kubectl_ok([
            "get",
            "application",
            APP,
            "-n",
            argocd.namespace(),
            "-o",
            r"jsonpath={.metadata.annotations.argocd\.argoproj\.io/refresh}",
        ]);
        if pending.is_empty() {
            cp.kubectl_ok([
                "annotate",
                "application",
                APP,
                "-n",
                argocd.namespace(),
                "--overwrite",
                "argocd.argoproj.io/refresh=hard",
            ]);
        }
        Err(status.to_string())
    })
}

/// `shopctl argocd-creds tier-0 -f <manifests> --namespace creds` with the credentials Secret's
/// manifest in SHOPSET_CREDENTIALS: its standard output.
fn shopctl_argocd_creds(work: &WorkDir, manifests: &str, secret: &str) -> String {
    let (manifest_file, secret_file) = (work.path().join("tier-0.yaml"), work.path().join("git-credentials.yaml"));
    std::fs::write(&manifest_file, manifests).expect("write manifests");
    std::fs::write(&secret_file, secret).expect("write credentials");
    let out = Command::new(workspace_bin("shopctl"))
        .args(["--color", "never", "argocd-creds", TIER, "--namespace", NS, "-f"])
        .arg(&manifest_file)
        .env("SHOPSET_CREDENTIALS", &secret_file)
        .env("PATH", path_env())
        .env("HOME", work.path())
        .env_remove("SHOPSET_GIT_USERNAME")
        .env_remove("SHOPSET_GIT_PASSWORD")
        .env_remove("SHOPSET_GIT_TOKEN")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run shopctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shopctl argocd-creds failed ({}): {stderr}", out.status);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 YAML")
}
