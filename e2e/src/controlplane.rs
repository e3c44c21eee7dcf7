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
//! A plane started with [`ControlPlane::start_with`] and [`Options::argocd`] also runs a real Argo CD
//! and what it needs to report Healthy (kube-scheduler, kwok with one fake Node, Redis): see
//! [`crate::argocd`].
//!
//! Set `SHOPSET_E2E_KEEP=1` to keep the directory (logs, certificates, kubeconfig)
//! after the test; its path is printed.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::argocd::{ArgoCd, ArgoCdEndpoints, ArgoCdOptions};
use crate::tools::{kubectl, path_env, repo_root};

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    dir: Option<TempDir>,
    path: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    argocd: Option<ArgoCdEndpoints>,
}

/// What a control plane runs besides etcd, kube-apiserver and kube-controller-manager.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also Argo CD (argocd-repo-server, argocd-application-controller), Redis, kube-scheduler
    /// and kwok with one fake Node (`e2e/up --argocd`). Start-up takes longer.
    pub argocd: Option<ArgoCdOptions>,
}

impl Options {
    /// With Argo CD, run as `options` say.
    pub fn argocd(mut self, options: ArgoCdOptions) -> Options {
        self.argocd = Some(options);
        self
    }
}

impl ControlPlane {
    /// Starts a fresh control plane (about 10-20 s) with the CRDs of `deploy/crds/`
    /// and Argo CD's installed and Established.
    ///
    /// # Panics
    /// If `e2e/up` fails; its output (with the tails of the server logs) is in the message.
    pub fn start() -> ControlPlane {
        ControlPlane::start_with(Options::default())
    }

    /// [`start`](Self::start) with more servers, as `options` say.
    ///
    /// # Panics
    /// If `e2e/up` fails; its output (with the tails of the server logs) is in the message.
    pub fn start_with(options: Options) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("shopset-e2e-cluster-")
            .tempdir()
            .expect("create a temporary directory for the control plane");
        let path = dir.path().to_path_buf();
        let up = repo_root().join("e2e").join("up");
        let mut command = Command::new(&up);
        if let Some(argocd) = &options.argocd {
            command.arg("--argocd").args(argocd.up_args());
        }
        let output = command
            .arg("--")
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
            argocd: None,
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
        let env = std::fs::read_to_string(cp.path.join("cluster.env")).expect("e2e/up writes cluster.env");
        let value = |key: &str| -> Option<String> {
            env.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_string)
        };
        cp.server = value("KUBE_APISERVER_URL").expect("cluster.env names KUBE_APISERVER_URL");
        if options.argocd.is_some() {
            let value = |key: &str| value(key).unwrap_or_else(|| panic!("e2e/up --argocd writes {key} in cluster.env"));
            cp.argocd = Some(ArgoCdEndpoints {
                namespace: value("ARGOCD_NAMESPACE"),
                repo_server: value("ARGOCD_REPO_SERVER"),
                controller_metrics_url: value("ARGOCD_CONTROLLER_METRICS_URL"),
                repo_server_metrics_url: value("ARGOCD_REPO_SERVER_METRICS_URL"),
                redis: value("REDIS_ADDRESS"),
                node: value("NODE"),
            });
        }
        cp
    }

    /// The Argo CD of this control plane.
    ///
    /// # Panics
    /// If it was started without one ([`Options::argocd`]).
    pub fn argocd(&self) -> ArgoCd<'_> {
        let endpoints =
            self.argocd.as_ref().expect("this control plane runs no Argo CD: start it with Options::argocd");
        ArgoCd::new(self, endpoints)
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

    /// The contents of a component's log: `etcd`, `kube-apiserver` or `kube-controller-manager`;
    /// with Argo CD also `kube-scheduler`, `kwok`, `redis`, `argocd-repo-server` and
    /// `argocd-application-controller`.
    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.path.join(format!("{component}.log"))).unwrap_or_default()
    }

    /// The process id of a server this plane started (as [`log`](Self::log) names them), from
    /// the `NAME.pid` file `e2e/up` writes; `None` if there is no such server.
    pub fn pid(&self, component: &str) -> Option<u32> {
        std::fs::read_to_string(self.path.join(format!("{component}.pid"))).ok()?.trim().parse().ok()
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
        self.kubectl_command().args(args).output().expect("run kubectl")
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
        writer.join().expect("stdin writer thread").expect("write kubectl's stdin");
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
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
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
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let output = self.kubectl_with_stdin(&args, input);
        success(&args, output)
    }

    /// Restarts kube-apiserver as an upgrade or a crash-loop would: SIGTERM to its process group
    /// (SIGKILL after 10 s: its graceful shutdown can wait much longer on open connections), then
    /// the same command line again (same port, certificates and etcd, so nothing stored is lost),
    /// and returns once `/readyz` answers. Clients get connection
    /// errors meanwhile. The server is started the way `e2e/up` starts it (its own session, log
    /// appended to `kube-apiserver.log`, pid in `kube-apiserver.pid`), so `e2e/down` and the
    /// watchdog still stop it.
    ///
    /// # Panics
    /// If the API server is not running, or is not ready again within 120 s.
    pub fn restart_apiserver(&self) {
        let pid_file = self.path.join("kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", pid_file.display()))
            .trim()
            .to_string();
        let dir = self.path.to_string_lossy().into_owned();
        // The process is ours while its command line names our directory (not a recycled pid,
        // not a zombie: a zombie's command line is empty).
        let cmdline = |pid: &str| -> Vec<String> {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        let ours = |pid: &str| cmdline(pid).iter().any(|a| a.contains(&dir));
        let argv = cmdline(&pid);
        assert!(ours(&pid), "kube-apiserver (pid {pid}) is not running for {dir}");

        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ours(&pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if ours(&pid) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
            while ours(&pid) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }

        // As e2e/up does: `setsid` in the background of a shell that exits at once, so the
        // server leads its own group and is nobody's child here.
        let log = self.path.join("kube-apiserver.log");
        let output = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; shift; setsid "$@" >>"$log" 2>&1 </dev/null & echo $!"#)
            .arg("sh")
            .arg(&log)
            .args(&argv)
            .env("PATH", path_env())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("start kube-apiserver again");
        let new_pid = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(
            output.status.success() && !new_pid.is_empty(),
            "starting kube-apiserver again failed ({})",
            output.status
        );
        std::fs::write(&pid_file, format!("{new_pid}\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", pid_file.display()));

        let curl = crate::tools::tool("curl");
        let ca = self.path.join("pki").join("ca.crt");
        let readyz = format!("{}/readyz", self.server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let ready = Command::new(&curl)
                .args(["-fsS", "--max-time", "5", "--cacert"])
                .arg(&ca)
                .arg(&readyz)
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if ready && ours(&new_pid) {
                return;
            }
            if !ours(&new_pid) || std::time::Instant::now() > deadline {
                let text = self.log("kube-apiserver");
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                panic!(
                    "kube-apiserver did not come back after a restart:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

fn success(args: &[std::ffi::OsString], output: Output) -> String {
    let shown = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
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
        match Command::new(&down).arg(&self.path).stdin(Stdio::null()).output() {
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
            eprintln!("SHOPSET_E2E_KEEP: control plane files kept in {}", kept.display());
        }
    }
}
