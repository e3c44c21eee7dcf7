//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC on) and
//! kube-controller-manager, started by `e2e/up` in a temporary directory and stopped
//! by `e2e/down` when the [`ControlPlane`] is dropped.
//!
//! ```no_run
//! let cp = shopset_e2e::controlplane::ControlPlane::start();
//! let namespaces = cp.kubectl_ok(["get", "namespaces", "-o", "name"]);
//! assert!(namespaces.contains("namespace/default"));
//! ```
//!
//! Set `SHOPSET_E2E_KEEP=1` to keep the directory (logs, certificates, kubeconfig)
//! after the test; its path is printed.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::tools::{kubectl, path_env, repo_root};

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    dir: Option<TempDir>,
    path: PathBuf,
    kubeconfig: PathBuf,
    server: String,
}

impl ControlPlane {
    /// Starts a fresh control plane (about 10-20 s) with the CRDs of `deploy/crds/`
    /// and Argo CD's installed and Established.
    ///
    /// # Panics
    /// If `e2e/up` fails; its output (with the tails of the server logs) is in the message.
    pub fn start() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("shopset-e2e-cluster-")
            .tempdir()
            .expect("create a temporary directory for the control plane");
        let path = dir.path().to_path_buf();
        let up = repo_root().join("e2e").join("up");
        let output = Command::new(&up)
            .arg(&path)
            .env("PATH", path_env())
            // If this test process dies without dropping us, a watchdog stops the servers.
            .env("SHOPSET_E2E_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", up.display()));
        let mut cp = ControlPlane {
            kubeconfig: path.join("kubeconfig"),
            server: String::new(),
            dir: Some(dir),
            path,
        };
        if !output.status.success() {
            panic!(
                "e2e/up {} failed ({}):\n{}",
                cp.path.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let env = std::fs::read_to_string(cp.path.join("cluster.env"))
            .expect("e2e/up writes cluster.env");
        cp.server = env
            .lines()
            .find_map(|l| l.strip_prefix("KUBE_APISERVER_URL="))
            .expect("cluster.env names KUBE_APISERVER_URL")
            .to_string();
        cp
    }

    /// The directory holding this control plane's kubeconfig, certificates, logs and data.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// An admin (system:masters) kubeconfig for this control plane.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The contents of a component's log: `etcd`, `kube-apiserver` or `kube-controller-manager`.
    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.path.join(format!("{component}.log"))).unwrap_or_default()
    }

    /// A `kubectl` command aimed at this control plane (admin credentials), to add
    /// arguments to. `KUBECONFIG` and `PATH` (tools first) are set for it.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(kubectl());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", path_env())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl ARGS` and returns its output, whatever its exit status.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_command()
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs `kubectl ARGS` with `input` on its standard input (e.g. `apply -f -`).
    pub fn kubectl_with_stdin<I, S>(&self, args: I, input: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_owned();
        // Write from another thread so a large input cannot deadlock against full pipes.
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output().expect("wait for kubectl");
        writer
            .join()
            .expect("stdin writer thread")
            .expect("write kubectl's stdin");
        output
    }

    /// Runs `kubectl ARGS`, asserts that it succeeded, and returns its standard output.
    ///
    /// # Panics
    /// If kubectl fails; the message has the command and its standard error.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let output = self.kubectl(&args);
        success(&args, output)
    }

    /// [`kubectl_with_stdin`](Self::kubectl_with_stdin) that asserts success and
    /// returns standard output.
    pub fn kubectl_with_stdin_ok<I, S>(&self, args: I, input: &str) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let output = self.kubectl_with_stdin(&args, input);
        success(&args, output)
    }
}

fn success(args: &[std::ffi::OsString], output: Output) -> String {
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        output.status.success(),
        "kubectl {shown} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let down = repo_root().join("e2e").join("down");
        match Command::new(&down)
            .arg(&self.path)
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "e2e/down {} failed ({}): {}",
                self.path.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("run {}: {e}", down.display()),
        }
        let keep = std::env::var_os("SHOPSET_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        if keep && let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!(
                "SHOPSET_E2E_KEEP: control plane files kept in {}",
                kept.display()
            );
        }
    }
}
