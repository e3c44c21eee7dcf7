//! `kubectl apply -k deploy/` on a real control plane, and the real controller process running
//! with nothing but the installed ServiceAccount's RBAC.
//!
//! - The kustomization builds with no deprecation warning (current kustomize v5 fields only).
//! - A server dry run, then a server-side apply, are accepted; the objects exist, the CRDs are
//!   established, and the Deployment's pod passes the namespace's enforced "restricted" Pod
//!   Security Standard.
//! - An RBAC matrix (`kubectl auth can-i --as=<the ServiceAccount>`) pins every verb the
//!   controller needs to `yes` and a set of nearby, broader ones to `no`.
//! - The Deployment's pod template: security context, probes, args, env, volumes.
//! - `shopset-controller` (built by `cargo build -p shopset-controller`) runs with a token of the
//!   ServiceAccount against Tiers on a git server behind basic auth: it takes the Lease, reads the
//!   credentials Secret where a namespace owner bound `deploy/tenant/`, pushes, applies and prunes
//!   Argo CD Applications and their credential template where Argo CD's admin bound
//!   `deploy/argocd/`, writes status and Events — and is refused the Secret of a namespace
//!   without the tenant binding.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{HttpGitServer, branch_head, seed_dir};
use shopset_e2e::tools::{kubectl, kustomize, path_env, repo_root};
use support::{
    Controller, Run, WorkDir, applications, example_manifest, path_str, phase, ready_condition, replace_once, run_ok,
    show, text, wait_for,
};

/// Progress lines on stderr say where the time goes.
const TEST: &str = "deploy";

const SA: &str = "system:serviceaccount:shopset-system:shopset-controller";
/// A namespace whose owner bound `deploy/tenant/credentials-rolebinding.yaml`.
const TENANT: &str = "shops";
/// A namespace without that binding.
const UNBOUND: &str = "shops-unbound";

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

// ---------------------------------------------------------------------------------------------
// Offline

#[test]
fn kustomization_builds_with_current_fields_only() {
    for (tool, mut cmd) in
        [("kustomize build", Command::new(kustomize())), ("kubectl kustomize", Command::new(kubectl()))]
    {
        if tool == "kustomize build" {
            cmd.arg("build");
        } else {
            cmd.arg("kustomize");
        }
        let out = cmd.arg(deploy_dir()).env("PATH", path_env()).output().expect("run kustomize");
        assert!(out.status.success(), "{tool} deploy/ failed {}", show(&out));
        // Deprecated fields (commonLabels, patchesStrategicMerge, bases, vars...) warn on stderr.
        assert!(out.stderr.is_empty(), "{tool} deploy/ warned:\n{}", text(&out.stderr));
        let yaml = text(&out.stdout);
        let kinds: Vec<(String, String)> = yaml
            .split("\n---\n")
            .map(|doc| {
                let kind = doc.lines().find_map(|l| l.strip_prefix("kind: ")).unwrap_or_default().to_string();
                // metadata.name is the first two-space-indented `name:` after `metadata:`.
                let meta = doc.split("\nmetadata:\n").nth(1).unwrap_or_default();
                let name = meta
                    .lines()
                    .take_while(|l| l.starts_with("  "))
                    .find_map(|l| l.strip_prefix("  name: "))
                    .unwrap_or_default()
                    .to_string();
                (kind, name)
            })
            .collect();
        let mut sorted = kinds.clone();
        sorted.sort();
        let expected = [
            ("ClusterRole", "shopset-controller"),
            ("ClusterRole", "shopset-controller-argocd-repo-creds"),
            ("ClusterRole", "shopset-controller-credentials"),
            ("ClusterRoleBinding", "shopset-controller"),
            ("CustomResourceDefinition", "configurations.shopset.dev"),
            ("CustomResourceDefinition", "shopsets.shopset.dev"),
            ("CustomResourceDefinition", "tiers.shopset.dev"),
            ("Deployment", "shopset-controller"),
            ("Namespace", "shopset-system"),
            ("Role", "shopset-controller-leader-election"),
            ("RoleBinding", "shopset-controller-leader-election"),
            ("Service", "shopset-controller"),
            ("ServiceAccount", "shopset-controller"),
        ]
        .map(|(k, n)| (k.to_string(), n.to_string()));
        // Notably: no Secret, and no binding of the credentials or repo-creds ClusterRoles.
        assert_eq!(sorted, expected, "{tool} deploy/ objects");
    }
}

// ---------------------------------------------------------------------------------------------
// On a control plane

#[test]
fn install_rbac_and_the_controller_as_its_service_account() {
    phase(TEST, "start");
    // The controller builds while the control plane starts.
    let build = std::thread::spawn(build_controller);
    let cp = ControlPlane::start();
    phase(TEST, "control plane up");
    install(&cp);
    phase(TEST, "installed");
    pod_template(&cp);

    cp.kubectl_ok(["create", "namespace", "argocd"]);
    cp.kubectl_ok(["create", "namespace", TENANT]);
    cp.kubectl_ok(["create", "namespace", UNBOUND]);
    // Before a namespace owner opts in, the controller may not read that namespace's Secrets.
    assert_eq!(
        can_i(&cp, &["get", "secrets", "-n", TENANT]),
        Ok(false),
        "get secrets in {TENANT} before the tenant binding"
    );
    cp.kubectl_ok(["apply", "-n", TENANT, "-f", path_str(&deploy_dir().join("tenant/credentials-rolebinding.yaml"))]);
    // Before Argo CD's admin opts in, the controller may not touch Argo CD's Secrets.
    assert_eq!(
        can_i(&cp, &["create", "secrets", "-n", "argocd"]),
        Ok(false),
        "create secrets in argocd before the repo-creds binding"
    );
    cp.kubectl_ok(["apply", "-n", "argocd", "-f", path_str(&deploy_dir().join("argocd/repo-creds-rolebinding.yaml"))]);
    rbac_matrix(&cp);
    phase(TEST, "RBAC matrix checked");

    let bin = build.join().expect("cargo build thread");
    phase(TEST, "controller built");
    controller_as_service_account(&cp, &bin);
}

/// Server dry run, server-side apply, and what it created.
fn install(cp: &ControlPlane) {
    let deploy = deploy_dir();
    let deploy = path_str(&deploy);
    // A dry run creates nothing, so namespaced objects of a namespace that does not exist yet are
    // refused (NotFound): create the namespace first, as `kubectl apply` itself orders it.
    cp.kubectl_ok(["apply", "--server-side", "-f", &format!("{deploy}/namespace.yaml")]);
    for dry_run in [true, false] {
        let mut args = vec!["apply", "--server-side", "-k", deploy];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = cp.kubectl(&args);
        assert!(out.status.success(), "kubectl {} {}", args.join(" "), show(&out));
        // No PodSecurity "would violate" or any other warning.
        assert!(out.stderr.is_empty(), "kubectl {} warned:\n{}", args.join(" "), text(&out.stderr));
        let applied = text(&out.stdout);
        for object in [
            "namespace/shopset-system",
            "customresourcedefinition.apiextensions.k8s.io/tiers.shopset.dev",
            "serviceaccount/shopset-controller",
            "clusterrole.rbac.authorization.k8s.io/shopset-controller",
            "clusterrole.rbac.authorization.k8s.io/shopset-controller-credentials",
            "clusterrole.rbac.authorization.k8s.io/shopset-controller-argocd-repo-creds",
            "clusterrolebinding.rbac.authorization.k8s.io/shopset-controller",
            "role.rbac.authorization.k8s.io/shopset-controller-leader-election",
            "rolebinding.rbac.authorization.k8s.io/shopset-controller-leader-election",
            "service/shopset-controller",
            "deployment.apps/shopset-controller",
        ] {
            assert!(
                applied.lines().any(|l| l.starts_with(&format!("{object} "))),
                "{object} not applied (dry run: {dry_run}):\n{applied}"
            );
        }
    }

    let objects = cp.kubectl_ok(["get", "deploy,sa,svc,role,rolebinding", "-n", "shopset-system", "-o", "name"]);
    for object in [
        "deployment.apps/shopset-controller",
        "serviceaccount/shopset-controller",
        "service/shopset-controller",
        "role.rbac.authorization.k8s.io/shopset-controller-leader-election",
        "rolebinding.rbac.authorization.k8s.io/shopset-controller-leader-election",
    ] {
        assert!(objects.lines().any(|l| l == object), "{object} missing:\n{objects}");
    }
    cp.kubectl_ok([
        "get",
        "clusterrole/shopset-controller",
        "clusterrole/shopset-controller-credentials",
        "clusterrolebinding/shopset-controller",
    ]);
    cp.kubectl_ok([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/tiers.shopset.dev",
        "crd/shopsets.shopset.dev",
        "crd/configurations.shopset.dev",
    ]);
    let svc = cp.kubectl_ok([
        "get",
        "svc",
        "shopset-controller",
        "-n",
        "shopset-system",
        "-o",
        "jsonpath={.spec.ports[*].name}:{.spec.ports[*].port}:{.spec.ports[*].targetPort}:{.spec.selector}",
    ]);
    assert_eq!(svc, r#"http:8080:http:{"app.kubernetes.io/name":"shopset-controller"}"#);

    // Pod Security "restricted" is enforced in shopset-system: a plain pod is refused...
    let plain = cp.kubectl(["run", "plain", "--image=busybox", "-n", "shopset-system", "--dry-run=server"]);
    assert!(
        !plain.status.success() && text(&plain.stderr).contains("violates PodSecurity"),
        "a plain pod was not refused {}",
        show(&plain)
    );
    // ...and the Deployment's pod is admitted (the ReplicaSet controller creates it; with no
    // nodes it stays Pending).
    wait_for(
        "the controller's pod to be admitted",
        Duration::from_secs(30),
        || {
            let pods = cp.kubectl_ok([
                "get",
                "pods",
                "-n",
                "shopset-system",
                "-l",
                "app.kubernetes.io/name=shopset-controller",
                "-o",
                "name",
            ]);
            (!pods.trim().is_empty()).then_some(())
        },
        || cp.kubectl_ok(["get", "events", "-n", "shopset-system"]),
    );
}

/// The Deployment's pod template, read back from the API server.
fn pod_template(cp: &ControlPlane) {
    const C: &str = ".spec.template.spec.containers[0]";
    let queries: Vec<(&str, String)> = vec![
        ("replicas", "{.spec.replicas}".into()),
        ("strategy", "{.spec.strategy.type}".into()),
        ("serviceAccountName", "{.spec.template.spec.serviceAccountName}".into()),
        ("pod.runAsNonRoot", "{.spec.template.spec.securityContext.runAsNonRoot}".into()),
        ("pod.runAsUser", "{.spec.template.spec.securityContext.runAsUser}".into()),
        ("pod.seccompProfile", "{.spec.template.spec.securityContext.seccompProfile.type}".into()),
        ("containers", "{.spec.template.spec.containers[*].name}".into()),
        ("image", format!("{{{C}.image}}")),
        ("runAsNonRoot", format!("{{{C}.securityContext.runAsNonRoot}}")),
        ("runAsUser", format!("{{{C}.securityContext.runAsUser}}")),
        ("readOnlyRootFilesystem", format!("{{{C}.securityContext.readOnlyRootFilesystem}}")),
        ("allowPrivilegeEscalation", format!("{{{C}.securityContext.allowPrivilegeEscalation}}")),
        ("privileged", format!("{{{C}.securityContext.privileged}}")),
        ("capabilities.drop", format!("{{{C}.securityContext.capabilities.drop}}")),
        ("capabilities.add", format!("{{{C}.securityContext.capabilities.add}}")),
        ("seccompProfile", format!("{{{C}.securityContext.seccompProfile.type}}")),
        ("args", format!("{{range {C}.args[*]}}{{@}}{{\" \"}}{{end}}")),
        ("env", format!("{{range {C}.env[*]}}{{.name}}={{.value}}{{.valueFrom.fieldRef.fieldPath}}{{\" \"}}{{end}}")),
        ("ports", format!("{{range {C}.ports[*]}}{{.name}}:{{.containerPort}}{{\" \"}}{{end}}")),
        ("liveness", format!("{{{C}.livenessProbe.httpGet.path}}:{{{C}.livenessProbe.httpGet.port}}")),
        ("readiness", format!("{{{C}.readinessProbe.httpGet.path}}:{{{C}.readinessProbe.httpGet.port}}")),
        ("requests", format!("{{{C}.resources.requests.cpu}}/{{{C}.resources.requests.memory}}")),
        ("limits", format!("{{{C}.resources.limits.cpu}}/{{{C}.resources.limits.memory}}")),
        ("mounts", format!("{{range {C}.volumeMounts[*]}}{{.mountPath}}={{.name}}{{\" \"}}{{end}}")),
        ("volume.cache", "{.spec.template.spec.volumes[?(@.name==\"cache\")].emptyDir}".into()),
        ("volume.tmp", "{.spec.template.spec.volumes[?(@.name==\"tmp\")].emptyDir}".into()),
        ("volume.webhook", "{.spec.template.spec.volumes[?(@.name==\"webhook-secret\")].secret.secretName}".into()),
        ("volume.github", "{.spec.template.spec.volumes[?(@.name==\"github-token\")].secret.secretName}".into()),
        ("volume.github.optional", "{.spec.template.spec.volumes[?(@.name==\"github-token\")].secret.optional}".into()),
        (
            "volume.webhook.optional",
            "{.spec.template.spec.volumes[?(@.name==\"webhook-secret\")].secret.optional}".into(),
        ),
        (
            "hostNetwork",
            "{.spec.template.spec.hostNetwork}{.spec.template.spec.hostPID}{.spec.template.spec.hostIPC}".into(),
        ),
    ];
    let template: String = queries.iter().map(|(k, q)| format!("{k}={q}{{\"\\n\"}}")).collect();
    let out = cp.kubectl_ok([
        "get",
        "deploy",
        "shopset-controller",
        "-n",
        "shopset-system",
        "-o",
        &format!("jsonpath={template}"),
    ]);
    let got: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let expected: BTreeMap<&str, &str> = [
        ("replicas", "1"),
        ("strategy", "Recreate"),
        ("serviceAccountName", "shopset-controller"),
        ("pod.runAsNonRoot", "true"),
        ("pod.runAsUser", "65532"),
        ("pod.seccompProfile", "RuntimeDefault"),
        ("containers", "controller"),
        ("image", "ghcr.io/shopset/shopset-controller:0.1.0"),
        ("runAsNonRoot", "true"),
        ("runAsUser", "65532"),
        ("readOnlyRootFilesystem", "true"),
        ("allowPrivilegeEscalation", "false"),
        ("privileged", ""),
        ("capabilities.drop", r#"["ALL"]"#),
        ("capabilities.add", ""),
        ("seccompProfile", "RuntimeDefault"),
        // No --namespace: every namespace is watched.
        (
            "args",
            "--cache-dir=/var/cache/shopset --listen=0.0.0.0:8080 --log-format=json \
             --webhook-secret-file=/etc/shopset/webhook/secret --github-token-file=/etc/shopset/github/token ",
        ),
        ("env", "POD_NAME=metadata.name POD_NAMESPACE=metadata.namespace MALLOC_ARENA_MAX=2 "),
        ("ports", "http:8080 "),
        ("liveness", "/healthz:http"),
        ("readiness", "/readyz:http"),
        ("requests", "50m/64Mi"),
        ("limits", "500m/256Mi"),
        (
            "mounts",
            "/var/cache/shopset=cache /tmp=tmp /etc/shopset/webhook=webhook-secret /etc/shopset/github=github-token ",
        ),
        ("volume.cache", "{}"),
        ("volume.tmp", "{}"),
        ("volume.webhook", "shopset-webhook"),
        ("volume.webhook.optional", "true"),
        ("volume.github", "shopset-github"),
        ("volume.github.optional", "true"),
        ("hostNetwork", ""),
    ]
    .into();
    assert_eq!(got, expected, "Deployment pod template (raw jsonpath output:\n{out})");
}

/// `kubectl auth can-i --as=<ServiceAccount> ARGS`: Ok(yes?), or Err with what kubectl said
/// when it is anything but a clean yes or no (an unknown resource warns and answers no).
fn can_i(cp: &ControlPlane, args: &[&str]) -> Result<bool, String> {
    let out = cp.kubectl([&["auth", "can-i", &format!("--as={SA}")], args].concat());
    let answer = text(&out.stdout);
    match (answer.trim(), out.status.code(), out.stderr.is_empty()) {
        ("yes", Some(0), true) => Ok(true),
        ("no", Some(1), true) => Ok(false),
        _ => Err(show(&out)),
    }
}

/// `kubectl auth can-i` rows: the answer wanted, and the arguments (`-A` = every namespace).
/// `shops` has the tenant binding of `deploy/tenant/`, `shops-unbound` has not.
const MATRIX: &[(bool, &str)] = &[
    // The watches of the three kinds, in every namespace.
    (true, "list tiers.shopset.dev -A"),
    (true, "watch tiers.shopset.dev -A"),
    (true, "list shopsets.shopset.dev -A"),
    (true, "watch shopsets.shopset.dev -A"),
    (true, "list configurations.shopset.dev -A"),
    (true, "watch configurations.shopset.dev -A"),
    (true, "list tiers.shopset.dev -n shops"),
    (true, "get tiers.shopset.dev -n shops"),
    // The finalizer (a JSON patch) and status (server-side apply = patch).
    (true, "patch tiers.shopset.dev -n shops"),
    (true, "patch tiers.shopset.dev --subresource=status -n shops"),
    (true, "patch shopsets.shopset.dev --subresource=status -n shops"),
    // Argo CD Applications: server-side apply, prune by label.
    (true, "create applications.argoproj.io -n argocd"),
    (true, "patch applications.argoproj.io -n argocd"),
    (true, "list applications.argoproj.io -n argocd"),
    (true, "delete applications.argoproj.io -n argocd"),
    // Credentials, where the namespace owner bound deploy/tenant/.
    (true, "get secrets -n shops"),
    (true, "get secrets/git-credentials -n shops"),
    // Argo CD credential templates, where Argo CD's admin bound deploy/argocd/.
    (true, "get secrets -n argocd"),
    (true, "list secrets -n argocd"),
    (true, "create secrets -n argocd"),
    (true, "patch secrets -n argocd"),
    (true, "delete secrets -n argocd"),
    // Events (events.k8s.io/v1) on Tiers, in their namespace.
    (true, "create events.events.k8s.io -n shops"),
    (true, "patch events.events.k8s.io -n shops"),
    // Leader election, in its own namespace.
    (true, "get leases.coordination.k8s.io -n shopset-system"),
    (true, "create leases.coordination.k8s.io -n shopset-system"),
    (true, "update leases.coordination.k8s.io -n shopset-system"),
    //
    // Denied. Secrets: never listed or watched, never written, unreadable where nobody opted in.
    (false, "list secrets -A"),
    (false, "get secrets -A"),
    (false, "list secrets -n shops"),
    (false, "watch secrets -n shops"),
    (false, "create secrets -n shops"),
    (false, "update secrets -n shops"),
    (false, "delete secrets -n shops"),
    (false, "get secrets -n shops-unbound"),
    (false, "get secrets -n kube-system"),
    (false, "get secrets -n shopset-system"),
    (false, "watch secrets -n argocd"),
    (false, "update secrets -n argocd"),
    // Workloads and namespaces.
    (false, "create deployments.apps -n shops"),
    (false, "create pods -n shops"),
    (false, "delete namespaces -A"),
    (false, "create namespaces -A"),
    // Leases: only get/create/update, only in shopset-system.
    (false, "update leases.coordination.k8s.io -n kube-system"),
    (false, "get leases.coordination.k8s.io -n kube-system"),
    (false, "create leases.coordination.k8s.io -n shops"),
    (false, "delete leases.coordination.k8s.io -n shopset-system"),
    (false, "list leases.coordination.k8s.io -n shopset-system"),
    // The ShopSet kinds: no create/update/delete; ShopSets only via status; Configurations read-only.
    (false, "delete tiers.shopset.dev -n shops"),
    (false, "create tiers.shopset.dev -n shops"),
    (false, "update tiers.shopset.dev -n shops"),
    (false, "update tiers.shopset.dev --subresource=status -n shops"),
    (false, "patch shopsets.shopset.dev -n shops"),
    (false, "delete shopsets.shopset.dev -n shops"),
    (false, "patch configurations.shopset.dev -n shops"),
    (false, "patch configurations.shopset.dev --subresource=status -n shops"),
    // Argo CD: Applications only (no update: apply is a patch), not AppProjects.
    (false, "update applications.argoproj.io -n argocd"),
    (false, "create appprojects.argoproj.io -n argocd"),
    // Core events are not used (kube-runtime records events.k8s.io/v1).
    (false, "create events -n shops"),
    (false, "delete events.events.k8s.io -n shops"),
    // No way to grow its own rights.
    (false, "create clusterrolebindings.rbac.authorization.k8s.io -A"),
    (false, "create rolebindings.rbac.authorization.k8s.io -n shops"),
    (false, "bind clusterroles.rbac.authorization.k8s.io -A"),
    (false, "escalate clusterroles.rbac.authorization.k8s.io -A"),
    (false, "impersonate serviceaccounts -A"),
    (false, "create serviceaccounts --subresource=token -n kube-system"),
    (false, "* * -A"),
    (false, "* * -n shops"),
];

fn rbac_matrix(cp: &ControlPlane) {
    let rows: Vec<(bool, Vec<&str>)> = MATRIX
        .iter()
        .map(|(want, args)| {
            let args = args.split_whitespace().map(|a| if a == "-A" { "--all-namespaces" } else { a });
            (*want, args.collect())
        })
        .collect();
    // A few kubectl processes at a time.
    let answers: Vec<Result<bool, String>> = std::thread::scope(|s| {
        rows.chunks(8)
            .flat_map(|chunk| {
                let handles: Vec<_> = chunk.iter().map(|(_, args)| s.spawn(|| can_i(cp, args))).collect();
                handles.into_iter().map(|h| h.join().expect("can-i thread")).collect::<Vec<_>>()
            })
            .collect()
    });
    let wrong: Vec<String> = rows
        .iter()
        .zip(&answers)
        .filter(|((expected, _), answer)| *answer != &Ok(*expected))
        .map(|((expected, args), answer)| {
            let want = if *expected { "yes" } else { "no" };
            format!("can-i {}: want {want}, got {answer:?}", args.join(" "))
        })
        .collect();
    assert!(wrong.is_empty(), "RBAC of {SA}:\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The controller process

/// `cargo build -p shopset-controller` into this test's own target directory; the binary's path.
fn build_controller() -> PathBuf {
    // <target>/<profile>/deps/deploy-<hash>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test executable lives in <target>/<profile>/deps");
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let target = profile_dir.parent().expect("<target> directory");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    // With the features `make test` builds it with: the crash tests run this same binary, and a
    // build without the fault points would replace theirs.
    cmd.args(["build", "--quiet", "-p", "shopset-controller", "--features", "fault-injection", "--target-dir"])
        .arg(target)
        .current_dir(repo_root());
    // Cargo gives this test process the variables of *its* package (CARGO_MANIFEST_DIR=<repo>/e2e,
    // CARGO_PKG_NAME...). Some build scripts track them (ring: CARGO_MANIFEST_DIR), so passing them
    // on would make this build and everyone's next plain `cargo build` rebuild half the tree.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        let set_by_cargo_for_this_test = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&&*var)
            || var.starts_with("CARGO_PKG_")
            || var.starts_with("CARGO_BIN_EXE_")
            || var.starts_with("CARGO_CFG_");
        if set_by_cargo_for_this_test {
            cmd.env_remove(&*var);
        }
    }
    if profile != "debug" {
        cmd.args(["--profile", if profile == "release" { "release" } else { profile }]);
    }
    let out = cmd.output().expect("run cargo build");
    assert!(out.status.success(), "cargo build -p shopset-controller {}", show(&out));
    let bin = profile_dir.join("shopset-controller");
    assert!(bin.is_file(), "{} missing after cargo build", bin.display());
    bin
}

/// A copy of the admin kubeconfig (same server and CA) whose user is a token of the ServiceAccount.
fn service_account_kubeconfig(cp: &ControlPlane, dir: &Path) -> PathBuf {
    let token = cp.kubectl_ok(["create", "token", "shopset-controller", "-n", "shopset-system", "--duration=1h"]);
    let path = dir.join("shopset-controller.kubeconfig");
    fs::copy(cp.kubeconfig(), &path).expect("copy kubeconfig");
    let config = |args: &[&str]| run_ok(Command::new(kubectl()).arg("--kubeconfig").arg(&path).args(args));
    config(&["config", "set-credentials", "shopset-controller", &format!("--token={}", token.trim())]);
    config(&["config", "set-context", "--current", "--user=shopset-controller"]);
    config(&["config", "delete-user", "admin"]);
    let me = config(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(me, SA, "the controller's kubeconfig authenticates as the ServiceAccount");
    let kubeconfig = fs::read_to_string(&path).expect("read the controller's kubeconfig");
    assert!(!kubeconfig.contains("client-key-data"), "admin credentials left in {}:\n{kubeconfig}", path.display());
    path
}

/// The example manifests for tier-0 (Configuration, its ShopSets, the Tier with a credentials
/// Secret), with the example URLs pointing at `http`.
fn tier0_manifests(http: &HttpGitServer) -> String {
    let read = |file: &str| example_manifest(file, &http.url("app"), &http.url("config"), &http.url("system"));
    let shopsets: Vec<String> = read("shopsets.yaml")
        .split("\n---\n")
        .filter(|d| d.contains("\n  tier: tier-0\n"))
        .map(str::to_string)
        .collect();
    assert_eq!(shopsets.len(), 2, "examples/shopsets.yaml has two tier-0 ShopSets");
    let tier = read("tier-0.yaml");
    assert!(!tier.contains("credentials:"), "examples/tier-0.yaml already names credentials");
    let credentials = "\nspec:\n  credentials:\n    secretRef:\n      name: git-credentials\n";
    let tier = replace_once(&tier, "examples/tier-0.yaml", "\nspec:\n", credentials);
    // A short poll: pruning below proves the `delete` verb, and must not wait on how fast a
    // ShopSet's removal triggers a reconcile (the generation predicate on ShopSets filters out
    // delete events, so today it is the poll that notices).
    let tier = replace_once(&tier, "examples/tier-0.yaml", "\n  interval: 1m\n", "\n  interval: 5s\n");
    [read("configuration.yaml"), shopsets.join("\n---\n"), tier].join("\n---\n")
}

/// status, reason and message of the Ready condition of tier-0 in `ns`.
fn tier0_ready(cp: &ControlPlane, ns: &str) -> (String, String, String) {
    ready_condition(cp, ns, "tiers.shopset.dev", "tier-0")
}

fn events(cp: &ControlPlane, ns: &str) -> Vec<String> {
    let out = cp.kubectl_ok([
        "get",
        "events.events.k8s.io",
        "-n",
        ns,
        "-o",
        "jsonpath={range .items[*]}{.reportingController} {.regarding.kind}/{.regarding.name} {.reason}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

fn controller_as_service_account(cp: &ControlPlane, bin: &Path) {
    let work = WorkDir::new("deploy");

    let http = HttpGitServer::start("shopset", "tok-3f9a1c");
    for repo in ["app", "config", "system"] {
        http.create_repo(repo);
    }
    let examples = repo_root().join("examples");
    seed_dir(&http.authed_url("app"), "main", &examples.join("app"), "Shop application base");
    seed_dir(&http.authed_url("config"), "main", &examples.join("config"), "Shared shop configuration");

    // The same Tier in two namespaces; only TENANT bound deploy/tenant/.
    let manifests = tier0_manifests(&http);
    for ns in [TENANT, UNBOUND] {
        cp.kubectl_ok([
            "create",
            "secret",
            "generic",
            "git-credentials",
            "-n",
            ns,
            &format!("--from-literal=username={}", http.user()),
            &format!("--from-literal=password={}", http.password()),
        ]);
        cp.kubectl_with_stdin_ok(["apply", "-n", ns, "-f", "-"], &manifests);
    }

    phase(TEST, "git server seeded, manifests applied");
    let kubeconfig = service_account_kubeconfig(cp, work.path());
    // The Deployment's flags, with local paths and port, plus what the pod's env would give
    // (--lease-namespace for POD_NAMESPACE, --identity for POD_NAME) and its default Lease
    // duration. The webhook Secret exists.
    let mut controller = Controller::new(cp, work.path(), TENANT, "controller")
        .watching_every_namespace("shopset-system")
        .with_kubeconfig(&kubeconfig)
        .with_binary(bin);
    controller.start(&Run::new("e2e-controller").json().lease("15s"));

    let context = |controller: &Controller| {
        format!(
            "tier {TENANT}/tier-0 status:\n{}\ncontroller log:\n{}",
            cp.kubectl_ok(["get", "tiers.shopset.dev", "tier-0", "-n", TENANT, "-o", "jsonpath={.status}"]),
            controller.all_logs()
        )
    };

    // Ready: git over HTTP with the Secret's credentials, branches pushed, Applications applied,
    // status written.
    wait_for(
        "tier-0 Ready",
        Duration::from_secs(90),
        || {
            controller.assert_running();
            (tier0_ready(cp, TENANT).0 == "True").then_some(())
        },
        || context(&controller),
    );
    assert!(branch_head(&http.authed_url("system"), "tier-0").is_some(), "system branch tier-0 pushed");
    assert_eq!(applications(cp, "argocd"), ["canary-eu", "canary-us"], "Applications of tier-0");
    // Argo CD's credential template for the Tier's repositories (one host), where Argo CD's admin
    // bound deploy/argocd/.
    let templates = cp.kubectl_ok([
        "get",
        "secrets",
        "-n",
        "argocd",
        "-l",
        &format!(
            "argocd.argoproj.io/secret-type=repo-creds,shopset.dev/tier=tier-0,shopset.dev/tier-namespace={TENANT}"
        ),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ]);
    assert_eq!(templates.lines().count(), 1, "one repo-creds Secret of {TENANT}/tier-0: {templates:?}");
    let finalizers =
        cp.kubectl_ok(["get", "tiers.shopset.dev", "tier-0", "-n", TENANT, "-o", "jsonpath={.metadata.finalizers}"]);
    assert!(finalizers.contains("shopset.dev/cleanup"), "finalizer: {finalizers}");
    let shopset = cp.kubectl_ok([
        "get",
        "shopsets.shopset.dev",
        "canary-eu",
        "-n",
        TENANT,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.status.application}",
    ]);
    assert_eq!(shopset, "True/argocd/canary-eu", "ShopSet status");
    let holder = cp.kubectl_ok([
        "get",
        "lease",
        "shopset-controller",
        "-n",
        "shopset-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "e2e-controller", "Lease holder");
    // Event errors are ignored by the controller: check they were recorded.
    let recorded = wait_for(
        "Events on tier-0",
        Duration::from_secs(20),
        || {
            let ev = events(cp, TENANT);
            ev.iter().any(|e| e == "shopset-controller Tier/tier-0 Pushed").then_some(ev)
        },
        || format!("events: {:?}\n{}", events(cp, TENANT), context(&controller)),
    );
    assert!(recorded.iter().any(|e| e == "shopset-controller Tier/tier-0 BranchCreated"), "{recorded:?}");

    // Where nobody bound deploy/tenant/, the Secret is refused, and the Tier says so.
    let (_, reason, message) = wait_for(
        &format!("{UNBOUND}/tier-0 to fail on its Secret"),
        Duration::from_secs(30),
        || Some(tier0_ready(cp, UNBOUND)).filter(|(status, _, _)| status == "False"),
        || controller.all_logs(),
    );
    assert_eq!(reason, "CredentialsMissing", "{message}");
    assert!(
        message.contains("may not read Secrets")
            && message.contains("git-credentials")
            && message.contains("deploy/tenant/credentials-rolebinding.yaml"),
        "the message should name the Secret and the RoleBinding that grants it: {message}"
    );

    // Pruning: a removed ShopSet's Application is deleted (list by label, then delete).
    cp.kubectl_ok(["delete", "shopsets.shopset.dev", "canary-us", "-n", TENANT]);
    wait_for(
        "the Application of the removed ShopSet to be pruned",
        Duration::from_secs(60),
        || {
            controller.assert_running();
            (applications(cp, "argocd") == ["canary-eu"]).then_some(())
        },
        || format!("applications: {:?}\n{}", applications(cp, "argocd"), context(&controller)),
    );
    wait_for(
        "an ApplicationsDeleted Event",
        Duration::from_secs(20),
        || events(cp, TENANT).iter().any(|e| e == "shopset-controller Tier/tier-0 ApplicationsDeleted").then_some(()),
        || format!("events: {:?}\n{}", events(cp, TENANT), context(&controller)),
    );
    assert_eq!(tier0_ready(cp, TENANT).0, "True", "{}", context(&controller));

    // Nothing but the unbound namespace's Secret was refused.
    let log = controller.all_logs();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("forbidden") && !l.contains(UNBOUND)).collect();
    assert!(refused.is_empty(), "the controller was refused:\n{}\n\nfull log:\n{log}", refused.join("\n"));

    // SIGTERM: it stops cleanly and hands the Lease back.
    controller.stop();
    let holder = cp.kubectl_ok([
        "get",
        "lease",
        "shopset-controller",
        "-n",
        "shopset-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "", "Lease released on shutdown:\n{}", controller.all_logs());
}
