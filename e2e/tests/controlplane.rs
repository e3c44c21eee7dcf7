//! The test control plane is a real one: right version, Argo CD's CRDs installed,
//! the controller manager finishing namespace deletion, RBAC enforced.

use std::time::{Duration, Instant};

use shopset_e2e::controlplane::ControlPlane;

#[test]
fn control_plane_is_real() {
    let cp = ControlPlane::start();
    assert!(cp.server().starts_with("https://127.0.0.1:"), "{}", cp.server());

    // Both sides are the v1.34 built by e2e/install-tools (not a system kubectl).
    let version = cp.kubectl_ok(["version"]);
    assert!(version.contains("Client Version: v1.34."), "{version}");
    assert!(version.contains("Server Version: v1.34."), "{version}");

    // Argo CD's CRDs are served.
    let established = cp.kubectl_ok([
        "get",
        "crd",
        "applications.argoproj.io",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ]);
    assert_eq!(established.trim(), "True");
    let projects = cp.kubectl_ok(["get", "appprojects.argoproj.io", "--all-namespaces"]);
    assert!(projects.trim().is_empty(), "no AppProjects yet: {projects}");

    // Namespace deletion needs kube-controller-manager's namespace controller: it
    // empties the namespace and removes the `kubernetes` finalizer.
    cp.kubectl_ok(["create", "namespace", "e2e-doomed"]);
    cp.kubectl_ok(["create", "configmap", "cargo", "--namespace=e2e-doomed", "--from-literal=a=b"]);
    cp.kubectl_ok(["delete", "namespace", "e2e-doomed", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cp.kubectl(["get", "namespace", "e2e-doomed", "--ignore-not-found", "-o", "name"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if out.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "namespace e2e-doomed still there after 60 s; controller manager log:\n{}",
            cp.log("kube-controller-manager")
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // RBAC is on: a service account with no bindings may not read secrets,
    // while the admin (system:masters) may.
    let out = cp.kubectl(["auth", "can-i", "--as=system:serviceaccount:default:nobody", "list", "secrets"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    assert_eq!(cp.kubectl_ok(["auth", "can-i", "list", "secrets"]).trim(), "yes");
}

#[test]
fn control_planes_run_side_by_side() {
    // Tests start clusters in parallel: each gets its own ports and files.
    let a = ControlPlane::start();
    let b = ControlPlane::start();
    assert_ne!(a.server(), b.server());
    a.kubectl_ok(["create", "namespace", "only-in-a"]);
    let in_b = b.kubectl(["get", "namespace", "only-in-a"]);
    assert!(!in_b.status.success(), "namespace leaked across clusters");
    let dir = b.dir().to_path_buf();
    drop(b);
    assert!(!dir.exists(), "the temporary directory is removed after down");
    a.kubectl_ok(["get", "namespace", "only-in-a"]);
}
