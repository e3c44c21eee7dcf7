//! Real git servers on loopback, and helpers that drive the `git` CLI the way a person would.
//!
//! - [`GitDaemon`]: `git daemon` serving bare repositories over `git://`, push enabled.
//! - [`HttpGitServer`]: `git http-backend` as a CGI behind lighttpd, every request behind HTTP
//!   basic auth.
//! - [`SshGitServer`]: `sshd` serving bare repositories over `ssh://` to one generated key,
//!   with a generated host key.
//! - [`git`], [`commit_files`], [`seed_dir`], [`ls_remote`], [`branch_head`],
//!   [`clone_recursive`], [`log`]: set up and inspect repositories from tests.
//!
//! Each server owns a temp dir and a free port on 127.0.0.1, so tests in parallel never share
//! anything. Servers run in their own process group and are stopped (and reaped) on drop, or
//! by a watchdog when the test process dies. Set `SHOPSET_E2E_KEEP=1` to keep their temp dirs
//! (repositories and logs) after the test; the paths are printed.
//!
//! These are test support: failures panic with the command's output.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Author and committer name of every commit made by these helpers.
pub const GIT_USER_NAME: &str = "ShopSet Test";
/// Author and committer email of every commit made by these helpers.
pub const GIT_USER_EMAIL: &str = "test@shopset.invalid";

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server gets to finish in-flight requests (and reap their processes) on drop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts to start a server when another process grabs the chosen port first.
const PORT_ATTEMPTS: usize = 10;
/// Both git daemon and lighttpd report a lost port race with strerror(EADDRINUSE).
const ADDR_IN_USE: &str = "Address already in use";

/// `git daemon` on 127.0.0.1 serving the bare repositories under its own temp dir, with
/// `--export-all` and push (`receive-pack`) enabled, no authentication.
pub struct GitDaemon {
    // Declared before `dir`: fields drop in order, so the server stops before its files go.
    process: ServerProcess,
    port: u16,
    repos: PathBuf,
    dir: ServerDir,
}

impl GitDaemon {
    /// Starts the daemon and returns once it accepts connections.
    pub fn start() -> GitDaemon {
        let dir = ServerDir::new("shopset-git-daemon-");
        let repos = dir.path().join("repos");
        fs::create_dir(&repos).expect("create git daemon repository root");
        let log = dir.path().join("daemon.log");

        // Run git-daemon itself: `git daemon` would keep a `git` parent process in between.
        let program = git_exec_path().join("git-daemon");
        let (process, port) = start_on_free_port("git daemon", &log, "Ready to rumble", |port| {
            let mut cmd = Command::new(&program);
            // --verbose makes it log "Ready to rumble" once bound, our readiness signal.
            cmd.args(["--verbose", "--log-destination=stderr", "--informative-errors"])
                .args(["--reuseaddr", "--export-all", "--enable=receive-pack"])
                .arg(format!("--base-path={}", repos.display()))
                .args(["--listen=127.0.0.1", &format!("--port={port}")])
                .arg(&repos);
            isolate_git_env(&mut cmd);
            cmd
        });
        GitDaemon { process, port, repos, dir }
    }

    /// `git://127.0.0.1:<port>/<repo>.git`
    pub fn url(&self, repo: &str) -> String {
        check_repo_name(repo);
        format!("git://127.0.0.1:{}/{repo}.git", self.port)
    }

    /// Creates an empty bare repository (initial branch `main`) and returns its URL.
    pub fn create_repo(&self, repo: &str) -> String {
        init_bare(&self.path(repo));
        self.url(repo)
    }

    /// The bare repository on disk.
    pub fn path(&self, repo: &str) -> PathBuf {
        check_repo_name(repo);
        self.repos.join(format!("{repo}.git"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the daemon (also its process group id).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The temp dir holding the repositories and the daemon's log (`daemon.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Takes the server down as a crash would: SIGKILL to the daemon's process group (in-flight
    /// fetches and pushes included). The repositories stay; [`restart`](Self::restart) serves
    /// them again on the same port. Stopping a stopped daemon does nothing.
    pub fn stop(&mut self) {
        if let Ok(None) = self.process.child.try_wait() {
            let group = format!("-{}", self.process.child.id());
            let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
            let _ = self.process.child.kill();
            let _ = self.process.child.wait();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while port_accepts(self.port) {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts connections after the git daemon was killed",
                self.port
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Whether the daemon process is running (not [`stop`](Self::stop)ped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }

    /// Starts the daemon again (stopping it first if it runs) on the same port, serving the same
    /// repositories, and returns once it accepts connections. Its log is appended to `daemon.log`.
    ///
    /// # Panics
    /// If the port cannot be bound again (something else took it meanwhile) after a few tries.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.path().join("daemon.log");
        let program = git_exec_path().join("git-daemon");
        for _ in 0..PORT_ATTEMPTS {
            let offset = fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
            let out = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
            let err = out.try_clone().expect("clone log file handle");
            let mut cmd = Command::new(&program);
            cmd.args(["--verbose", "--log-destination=stderr", "--informative-errors"])
                .args(["--reuseaddr", "--export-all", "--enable=receive-pack"])
                .arg(format!("--base-path={}", self.repos.display()))
                .args(["--listen=127.0.0.1", &format!("--port={}", self.port)])
                .arg(&self.repos);
            isolate_git_env(&mut cmd);
            cmd.stdin(Stdio::null()).stdout(out).stderr(err);
            // The old process (already dead) and its watchdog are reaped by this assignment.
            self.process = ServerProcess::spawn("git daemon", cmd);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                let new = text.get(offset..).unwrap_or_default();
                if new.contains("Ready to rumble") && port_accepts(self.port) {
                    return;
                }
                if let Some(status) = self.process.child.try_wait().expect("poll git daemon") {
                    if new.contains(ADDR_IN_USE) {
                        break; // something holds the port for now: try again
                    }
                    panic!("git daemon exited ({status}) on restart:\n{new}");
                }
                assert!(
                    Instant::now() < deadline,
                    "git daemon not listening on port {} after {START_TIMEOUT:?}:\n{new}",
                    self.port
                );
                sleep(Duration::from_millis(20));
            }
            sleep(Duration::from_millis(500));
        }
        panic!("git daemon: port {} stayed taken ({PORT_ATTEMPTS} attempts)", self.port);
    }
}

/// Git smart HTTP: `git http-backend` as a CGI behind lighttpd on 127.0.0.1, serving the bare
/// repositories under its own temp dir at `/git/<repo>.git`. Every request, fetch or push, needs
/// HTTP basic auth as the one configured user; anything else gets 401.
pub struct HttpGitServer {
    // Declared before `dir`: fields drop in order, so the server stops before its files go.
    process: ServerProcess,
    port: u16,
    user: String,
    password: String,
    repos: PathBuf,
    /// Over HTTPS: the file of the CA that signed the server's certificate.
    ca: Option<PathBuf>,
    dir: ServerDir,
}

impl HttpGitServer {
    /// Starts lighttpd and returns once it accepts connections.
    pub fn start(user: &str, password: &str) -> HttpGitServer {
        Self::start_with(user, password, false)
    }

    /// The same over HTTPS, with a certificate for `127.0.0.1` signed by a CA of its own made
    /// with the `openssl` command ([`ca_file`](Self::ca_file)), which nothing else trusts.
    pub fn start_https(user: &str, password: &str) -> HttpGitServer {
        Self::start_with(user, password, true)
    }

    fn start_with(user: &str, password: &str, https: bool) -> HttpGitServer {
        // The plain user file is `user:password` lines.
        assert!(
            !user.is_empty() && !user.contains([':', '\n', '\r']),
            "HTTP user {user:?} must be non-empty without ':' or newlines"
        );
        assert!(!password.contains(['\n', '\r']), "HTTP password must not contain newlines");

        let dir = ServerDir::new("shopset-git-http-");
        let repos = dir.path().join("repos");
        let docroot = dir.path().join("www");
        let uploads = dir.path().join("uploads");
        for d in [&repos, &docroot, &uploads] {
            fs::create_dir(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        let users = dir.path().join("users");
        fs::write(&users, format!("{user}:{password}\n")).expect("write lighttpd user file");
        let backend = git_exec_path().join("git-http-backend");
        assert!(backend.is_file(), "git-http-backend not found at {}", backend.display());
        let lighttpd = find_lighttpd();
        let conf = dir.path().join("lighttpd.conf");
        let log = dir.path().join("lighttpd.log");
        let tls = https.then(|| certificate_for_localhost(dir.path()));

        let (process, port) = start_on_free_port("lighttpd", &log, "server started", |port| {
            let config = lighttpd_config(LighttpdConfig {
                port,
                docroot: &docroot,
                uploads: &uploads,
                users: &users,
                backend: &backend,
                repos: &repos,
                tls: tls.as_ref().map(|t| (t.certificate.as_path(), t.key.as_path())),
            });
            fs::write(&conf, config).expect("write lighttpd config");
            let mut cmd = Command::new(&lighttpd);
            cmd.arg("-D").arg("-f").arg(&conf);
            cmd
        });
        let ca = tls.map(|t| t.ca);
        HttpGitServer { process, port, user: user.to_owned(), password: password.to_owned(), repos, ca, dir }
    }

    /// `http://127.0.0.1:<port>/git/<repo>.git` (`https://` over HTTPS), without credentials.
    pub fn url(&self, repo: &str) -> String {
        check_repo_name(repo);
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/git/{repo}.git", self.port)
    }

    /// Over HTTPS, the CA file that makes the server's certificate trusted (`SSL_CERT_FILE`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// [`url`](Self::url) with the user and password embedded, for test setup with the git
    /// helpers only; the code under test should get credentials the way users give them. Over
    /// HTTPS, where the git helpers would not trust the server, the repository's path on disk.
    pub fn authed_url(&self, repo: &str) -> String {
        check_repo_name(repo);
        if self.ca.is_some() {
            return self.path(repo).to_string_lossy().into_owned();
        }
        format!(
            "http://{}:{}@127.0.0.1:{}/git/{repo}.git",
            percent_encode(&self.user),
            percent_encode(&self.password),
            self.port
        )
    }

    /// Creates an empty bare repository (initial branch `main`) and returns its URL (without
    /// credentials).
    pub fn create_repo(&self, repo: &str) -> String {
        // Push needs no `http.receivepack`: every request is authenticated, so http-backend
        // sees REMOTE_USER and enables receive-pack.
        init_bare(&self.path(repo));
        self.url(repo)
    }

    /// The bare repository on disk.
    pub fn path(&self, repo: &str) -> PathBuf {
        check_repo_name(repo);
        self.repos.join(format!("{repo}.git"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Process id of lighttpd (also its process group id).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The temp dir holding the repositories, `lighttpd.conf` and `lighttpd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

struct LighttpdConfig<'a> {
    port: u16,
    docroot: &'a Path,
    uploads: &'a Path,
    users: &'a Path,
    backend: &'a Path,
    repos: &'a Path,
    /// HTTPS with this certificate and key.
    tls: Option<(&'a Path, &'a Path)>,
}

/// A server certificate and its key, and the CA that signed it.
struct Certificate {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

/// A CA of its own and a certificate for `127.0.0.1` (its IP address as subject alternative
/// name, as TLS clients check), made in `dir` with the `openssl` command.
fn certificate_for_localhost(dir: &Path) -> Certificate {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl (e2e/install-tools installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", "/CN=ShopSet test CA", "-keyout", "ca.key", "-out", "ca.pem"][..],
            &ec,
        ]
        .concat(),
    );
    openssl(&[&["req", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"][..], &ec].concat());
    fs::write(dir.join("server.ext"), "subjectAltName = IP:127.0.0.1\n").expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    Certificate { ca: dir.join("ca.pem"), certificate: dir.join("server.pem"), key: dir.join("server.key") }
}

/// The setup `git help http-backend` documents for lighttpd, with auth on every request.
fn lighttpd_config(c: LighttpdConfig<'_>) -> String {
    let s = |p: &Path| lighttpd_string(&p.to_string_lossy());
    format!(
        r#"server.modules = ( "mod_alias", "mod_setenv", "mod_auth", "mod_authn_file", "mod_cgi"{tls_module} )
server.bind = "127.0.0.1"{tls}
server.port = {port}
server.document-root = {docroot}
server.upload-dirs = ( {uploads} )
# No server.errorlog: errors go to stderr, which is our log file.

auth.backend = "plain"
auth.backend.plain.userfile = {users}
auth.require = ( "/" => ( "method" => "basic", "realm" => "git", "require" => "valid-user" ) )

alias.url = ( "/git" => {backend} )
$HTTP["url"] =~ "^/git/" {{
    cgi.assign = ( "" => "" )
    setenv.add-environment = (
        "GIT_PROJECT_ROOT" => {repos},
        "GIT_HTTP_EXPORT_ALL" => "1",
        "GIT_CONFIG_NOSYSTEM" => "1",
        "GIT_CONFIG_GLOBAL" => "/dev/null",
    )
}}
"#,
        port = c.port,
        docroot = s(c.docroot),
        uploads = s(c.uploads),
        users = s(c.users),
        backend = s(c.backend),
        repos = s(c.repos),
        tls_module = if c.tls.is_some() { ", \"mod_openssl\"" } else { "" },
        tls = c
            .tls
            .map(|(cert, key)| format!(
                "\nssl.engine = \"enable\"\nssl.pemfile = {}\nssl.privkey = {}",
                s(cert),
                s(key)
            ))
            .unwrap_or_default(),
    )
}

/// A quoted lighttpd config string.
fn lighttpd_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// lighttpd from `<repo>/.tools/bin` if linked there, else the system's: it lives in sbin,
/// which is not on every user's PATH.
fn find_lighttpd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(crate::tools::tools_bin())
        .chain(std::env::split_paths(&path))
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("lighttpd"))
        .find(|p| p.is_file())
        .expect("lighttpd not found on PATH or in /usr/sbin (run e2e/install-tools)")
}

fn git_exec_path() -> PathBuf {
    let dir = TempDir::new().expect("create temp dir");
    PathBuf::from(git(dir.path(), &["--exec-path"]))
}

/// Repository names become paths and URLs: keep them plain.
fn check_repo_name(repo: &str) {
    let ok = !repo.is_empty()
        && !repo.ends_with(".git")
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    assert!(ok, "bad repository name {repo:?} (want e.g. \"app\" or \"team/app\", no .git)");
}

fn init_bare(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    git(path, &["init", "--quiet", "--bare", "--initial-branch=main"]);
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// A server process leading its own process group, so that stopping it also stops whatever it
/// spawned, plus a watchdog that kills that group once its stdin closes: on drop, and also when
/// this test process dies without dropping (killed, Ctrl-C), since the kernel then closes the
/// pipe. The server's group is not the terminal's foreground group, so Ctrl-C never reaches it.
struct ServerProcess {
    child: Child,
    watchdog: Child,
}

impl ServerProcess {
    fn spawn(name: &str, mut command: Command) -> ServerProcess {
        let child = command.process_group(0).spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pgid = child.id();
        let watchdog = Command::new("sh")
            .args(["-c", "read -r _line; kill -s KILL -- \"-$0\"", &pgid.to_string()])
            // In the server's group: out of Ctrl-C's reach, and stopped with it.
            .process_group(i32::try_from(pgid).expect("pid fits in i32"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let watchdog = match watchdog {
            Ok(watchdog) => watchdog,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                panic!("spawn watchdog for {name}: {e}");
            }
        };
        ServerProcess { child, watchdog }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        if let Ok(None) = self.child.try_wait() {
            // Let in-flight requests finish so the server reaps its own children: orphans
            // would be left to init, which may be slow to reap them.
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while !children(pid).is_empty() && Instant::now() < deadline {
                sleep(Duration::from_millis(20));
            }
        }
        // Closing its stdin makes the watchdog kill the whole group, itself included.
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
        // In case the watchdog was gone already. The pid is still ours: not reaped yet.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Direct children of `pid` (Linux); none if unknown.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A server's temp dir. With `SHOPSET_E2E_KEEP=1` (as for the control plane) it is kept after
/// the test, for its repositories and logs, and its path is printed.
struct ServerDir(Option<TempDir>);

impl ServerDir {
    fn new(prefix: &str) -> ServerDir {
        let dir = TempDir::with_prefix(prefix).unwrap_or_else(|e| panic!("create temp dir {prefix}*: {e}"));
        ServerDir(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("server dir is only taken on drop").path()
    }
}

impl Drop for ServerDir {
    fn drop(&mut self) {
        let keep = std::env::var_os("SHOPSET_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        if keep && let Some(dir) = self.0.take() {
            eprintln!("SHOPSET_E2E_KEEP: git server files kept in {}", dir.keep().display());
        }
    }
}

/// Picks a free port, starts the server from `command(port)` with stdout and stderr in `log`,
/// and waits until the log shows `ready` and the port accepts connections. Picking a free port
/// and binding it are not atomic, so a lost race (the server exits with EADDRINUSE) retries on
/// another port.
fn start_on_free_port(
    name: &str,
    log: &Path,
    ready: &str,
    mut command: impl FnMut(u16) -> Command,
) -> (ServerProcess, u16) {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let mut cmd = command(port);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut process = ServerProcess::spawn(name, cmd);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = fs::read_to_string(log).unwrap_or_default();
            // The probe connection shows up in git daemon's log as a dropped client.
            if text.contains(ready) && port_accepts(port) {
                return (process, port);
            }
            let exited = process.child.try_wait().expect("poll server process");
            if let Some(status) = exited {
                let text = fs::read_to_string(log).unwrap_or_default();
                if text.contains(ADDR_IN_USE) {
                    break; // lost the port race: try another port
                }
                panic!("{name} exited ({status}) before listening on port {port}:\n{text}");
            }
            if Instant::now() > deadline {
                panic!("{name} not listening on port {port} after {START_TIMEOUT:?}:\n{text}");
            }
            sleep(Duration::from_millis(20));
        }
    }
    panic!("{name}: every port tried was taken ({PORT_ATTEMPTS} attempts)");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address of 127.0.0.1:0").port()
}

fn port_accepts(port: u16) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// The git CLI, as a person uses it

/// Runs `git <args>` in `dir` with a fixed identity and no prompts, user or system config;
/// panics with stderr on failure; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    try_git(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`git`], but a failure is returned as an error message (command, status, stderr)
/// instead of a panic: for tests that expect git to be refused.
pub fn try_git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = git_command(dir, args).output();
    let Output { status, stdout, stderr } =
        output.unwrap_or_else(|e| panic!("run git {} in {}: {e}", args.join(" "), dir.display()));
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
    } else {
        Err(format!(
            "git {} in {} failed ({status}):\n{}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&stderr)
        ))
    }
}

fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", &format!("user.name={GIT_USER_NAME}")])
        .args(["-c", &format!("user.email={GIT_USER_EMAIL}")])
        .args(["-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false"])
        // An empty helper value clears the list: nothing may ask for or store credentials.
        .args(["-c", "credential.helper="])
        .args(args)
        .stdin(Stdio::null());
    isolate_git_env(&mut cmd);
    cmd
}

/// Keeps the caller's git config and environment out of a git process.
fn isolate_git_env(cmd: &mut Command) {
    cmd.env("GIT_TERMINAL_PROMPT", "0").env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null");
    for var in [
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
    ] {
        cmd.env_remove(var);
    }
}

/// Clones `url`, writes `files` (path relative to the repository root, content) on `branch`,
/// commits and pushes; returns the new commit's sha.
///
/// A missing branch starts from the remote's default branch, or as the first commit of an
/// empty repository. The commit is made even when the files are unchanged, so every call
/// yields a new sha.
pub fn commit_files(url: &str, branch: &str, files: &[(&str, &str)], message: &str) -> String {
    commit_to_branch(url, branch, message, &git, |work| write_files(work, files))
}

/// Clones `url`, deletes `paths` (files, repository-relative) on `branch`, commits and pushes;
/// returns the new commit's sha.
pub fn remove_files(url: &str, branch: &str, paths: &[&str], message: &str) -> String {
    commit_to_branch(url, branch, message, &git, |work| {
        for path in paths {
            let dest = work.join(path);
            fs::remove_file(&dest).unwrap_or_else(|e| panic!("remove {}: {e}", dest.display()));
        }
    })
}

/// Writes `files` (repository-relative paths) into a work tree.
fn write_files(work: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let rel = Path::new(path);
        assert!(
            rel.is_relative() && !path.split('/').any(|p| p == ".." || p == ".git"),
            "file path {path:?} must be relative to the repository root"
        );
        let dest = work.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        fs::write(&dest, content).unwrap_or_else(|e| panic!("write {}: {e}", dest.display()));
    }
}

/// Copies the tree under `dir` (without any `.git`) over `branch`, commits and pushes; returns
/// the new commit's sha. Files already on the branch and not in `dir` stay.
pub fn seed_dir(url: &str, branch: &str, dir: &Path, message: &str) -> String {
    assert!(dir.is_dir(), "seed directory {} does not exist", dir.display());
    commit_to_branch(url, branch, message, &git, |work| copy_tree(dir, work))
}

/// Clones `url`, checks out (or starts) `branch`, lets `write` change the work tree, commits and
/// pushes; `remote_git` runs the commands that talk to the server (clone, push).
fn commit_to_branch(
    url: &str,
    branch: &str,
    message: &str,
    remote_git: &dyn Fn(&Path, &[&str]) -> String,
    write: impl FnOnce(&Path),
) -> String {
    let tmp = TempDir::with_prefix("shopset-git-work-").expect("create work tree temp dir");
    let work = tmp.path().join("work");
    let work_str = work.to_str().expect("temp dir path is UTF-8");
    remote_git(tmp.path(), &["clone", "--quiet", url, work_str]);

    let remote_branch = format!("refs/remotes/origin/{branch}");
    if try_git(&work, &["rev-parse", "--verify", "--quiet", &remote_branch]).is_ok() {
        git(&work, &["checkout", "--quiet", "-B", branch, &remote_branch]);
    } else if try_git(&work, &["rev-parse", "--verify", "--quiet", "HEAD"]).is_ok() {
        git(&work, &["checkout", "--quiet", "-b", branch]);
    } else {
        // Empty repository: the first commit goes straight onto `branch`.
        git(&work, &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")]);
    }

    write(&work);
    git(&work, &["add", "--all"]);
    git(&work, &["commit", "--quiet", "--allow-empty", "-m", message]);
    remote_git(&work, &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")]);
    git(&work, &["rev-parse", "HEAD"])
}

fn copy_tree(from: &Path, to: &Path) {
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        if entry.file_name() == ".git" {
            continue;
        }
        let src = entry.path();
        let dest = to.join(entry.file_name());
        if src.is_dir() {
            fs::create_dir_all(&dest).unwrap_or_else(|e| panic!("create {}: {e}", dest.display()));
            copy_tree(&src, &dest);
        } else {
            fs::copy(&src, &dest).unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dest.display()));
        }
    }
}

/// `git ls-remote <url>`: ref name (including `HEAD`) -> sha.
pub fn ls_remote(url: &str) -> BTreeMap<String, String> {
    let tmp = TempDir::new().expect("create temp dir");
    parse_ls_remote(&git(tmp.path(), &["ls-remote", url]))
}

/// The sha `refs/heads/<branch>` points to on the remote, if the branch exists.
pub fn branch_head(url: &str, branch: &str) -> Option<String> {
    let tmp = TempDir::new().expect("create temp dir");
    let refname = format!("refs/heads/{branch}");
    let out = git(tmp.path(), &["ls-remote", url, &refname]);
    parse_ls_remote(&out).remove(&refname)
}

fn parse_ls_remote(out: &str) -> BTreeMap<String, String> {
    out.lines().filter_map(|line| line.split_once('\t')).map(|(sha, name)| (name.to_owned(), sha.to_owned())).collect()
}

/// `git clone --recurse-submodules --branch <branch> <url> <dest>`. Submodules may use
/// `file://` URLs (allowed explicitly; git refuses them by default).
pub fn clone_recursive(url: &str, branch: &str, dest: &Path) {
    let dest = std::path::absolute(dest).unwrap_or_else(|e| panic!("absolute path of {}: {e}", dest.display()));
    let parent = dest.parent().expect("clone destination has a parent directory");
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    let dest = dest.to_str().expect("clone destination is UTF-8");
    git(
        parent,
        &[
            // Passed to the submodule clones through the environment by git itself.
            "-c",
            "protocol.file.allow=always",
            "clone",
            "--quiet",
            "--recurse-submodules",
            "--branch",
            branch,
            url,
            dest,
        ],
    );
}

/// Commits on `branch`, newest first: (sha, subject).
pub fn log(url: &str, branch: &str) -> Vec<(String, String)> {
    let tmp = TempDir::new().expect("create temp dir");
    let bare = tmp.path().join("repo.git");
    let bare_str = bare.to_str().expect("temp dir path is UTF-8");
    let clone = ["clone", "--quiet", "--bare", "--single-branch", "--branch", branch, url, bare_str];
    git(tmp.path(), &clone);
    git(&bare, &["log", "--format=%H%x09%s", branch])
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(sha, subject)| (sha.to_owned(), subject.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Git over SSH

/// `sshd` on 127.0.0.1 serving the bare repositories under its own temp dir over SSH, as the
/// current user, to one generated client key only (no passwords). Plain sshd runs the
/// `git-upload-pack`/`git-receive-pack` commands git asks for; URLs name the repositories by
/// their absolute path: `ssh://<user>@127.0.0.1:<port>/<temp dir>/repos/<repo>.git`.
///
/// The host key and the client key are generated per server (`ssh-keygen -t ed25519`), so the
/// tests can check host key verification and key authentication both ways. The git helpers
/// of this type ([`git`](Self::git), [`seed_dir`](Self::seed_dir), ...) connect as the client
/// with strict host key checking against [`known_hosts_line`](Self::known_hosts_line).
pub struct SshGitServer {
    // Declared before `dir`: fields drop in order, so the server stops before its files go.
    process: ServerProcess,
    port: u16,
    user: String,
    repos: PathBuf,
    /// `ssh-ed25519 AAAA...` (no comment).
    host_public_key: String,
    dir: ServerDir,
}

/// Where Debian's openssh-server puts sshd (it must be started by absolute path: it re-executes
/// itself for every connection).
const SSHD: &str = "/usr/sbin/sshd";

impl SshGitServer {
    /// Generates the keys and config, starts sshd and returns once it accepts connections.
    pub fn start() -> SshGitServer {
        assert!(Path::new(SSHD).is_file(), "{SSHD} not found (run e2e/install-tools: it installs openssh-server)");
        let dir = ServerDir::new("shopset-git-ssh-");
        let repos = dir.path().join("repos");
        fs::create_dir(&repos).expect("create ssh repository root");
        let user = current_user();

        let host_key = dir.path().join("ssh_host_ed25519_key");
        ssh_keygen(&host_key, "shopset-test-host");
        let client_key = dir.path().join("client_ed25519_key");
        ssh_keygen(&client_key, "shopset-test-client");
        let host_public_key = public_key_of(&host_key);
        let authorized_keys = dir.path().join("authorized_keys");
        // `restrict`: no forwarding, no pty, no agent; commands (git's) still run.
        fs::write(&authorized_keys, format!("restrict {}\n", public_key_of(&client_key)))
            .expect("write authorized_keys");

        // sshd started as root needs its privilege separation directory, which only the
        // service scripts create (and the packages were installed without starting one).
        if !Path::new("/run/sshd").is_dir() {
            let _ = fs::create_dir_all("/run/sshd");
        }

        let conf = dir.path().join("sshd_config");
        let log = dir.path().join("sshd.log");
        let pid_file = dir.path().join("sshd.pid");
        let (process, port) = start_on_free_port("sshd", &log, "Server listening on", |port| {
            let config = sshd_config(SshdConfig {
                port,
                host_key: &host_key,
                authorized_keys: &authorized_keys,
                pid_file: &pid_file,
                user: &user,
            });
            fs::write(&conf, config).expect("write sshd_config");
            let mut cmd = Command::new(SSHD);
            // -D: stay in the foreground; -e: log to stderr (our log file).
            cmd.arg("-D").arg("-e").arg("-f").arg(&conf);
            cmd
        });
        let server = SshGitServer { process, port, user, repos, host_public_key, dir };
        fs::write(server.known_hosts_path(), format!("{}\n", server.known_hosts_line())).expect("write known_hosts");
        server
    }

    /// `ssh://<user>@127.0.0.1:<port>/<absolute path of the repository>`
    pub fn url(&self, repo: &str) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, self.path(repo).display())
    }

    /// Creates an empty bare repository (initial branch `main`) and returns its URL.
    pub fn create_repo(&self, repo: &str) -> String {
        init_bare(&self.path(repo));
        self.url(repo)
    }

    /// The bare repository on disk.
    pub fn path(&self, repo: &str) -> PathBuf {
        check_repo_name(repo);
        self.repos.join(format!("{repo}.git"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user the URLs log in as (the one running the tests, and sshd).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key file of the one client sshd lets in.
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519_key")
    }

    /// The client's private key (OpenSSH format text), as a Secret's `identity` holds it.
    pub fn client_key(&self) -> String {
        let path = self.client_key_path();
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// `[127.0.0.1]:<port> ssh-ed25519 AAAA...`: the server's host key as a known_hosts line.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_public_key)
    }

    /// A known_hosts file holding [`known_hosts_line`](Self::known_hosts_line) only.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// `GIT_SSH_COMMAND` for the git CLI to connect as the client: this key only, no ssh or
    /// agent configuration of the caller's, strict host key checking against
    /// [`known_hosts_path`](Self::known_hosts_path), never a prompt.
    pub fn git_ssh_command(&self) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=yes -o BatchMode=yes",
            shell_quote(&self.client_key_path().to_string_lossy()),
            shell_quote(&self.known_hosts_path().to_string_lossy()),
        )
    }

    /// Like the module's [`git`], connecting over SSH as the client.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.try_git(dir, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like the module's [`try_git`], connecting over SSH as the client.
    pub fn try_git(&self, dir: &Path, args: &[&str]) -> Result<String, String> {
        let mut cmd = git_command(dir, args);
        cmd.env("GIT_SSH_COMMAND", self.git_ssh_command()).env_remove("GIT_SSH").env_remove("SSH_AUTH_SOCK");
        let Output { status, stdout, stderr } =
            cmd.output().unwrap_or_else(|e| panic!("run git {} in {}: {e}", args.join(" "), dir.display()));
        if status.success() {
            Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
        } else {
            Err(format!(
                "git {} in {} failed ({status}):\n{}",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&stderr)
            ))
        }
    }

    /// Like the module's [`seed_dir`], over SSH: copies the tree under `dir` (without any
    /// `.git`) over `branch` of `repo`, commits and pushes; returns the new commit's sha.
    pub fn seed_dir(&self, repo: &str, branch: &str, dir: &Path, message: &str) -> String {
        assert!(dir.is_dir(), "seed directory {} does not exist", dir.display());
        commit_to_branch(&self.url(repo), branch, message, &|d: &Path, a: &[&str]| self.git(d, a), |work| {
            copy_tree(dir, work)
        })
    }

    /// Like the module's [`commit_files`], over SSH.
    pub fn commit_files(&self, repo: &str, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        commit_to_branch(&self.url(repo), branch, message, &|d: &Path, a: &[&str]| self.git(d, a), |work| {
            write_files(work, files)
        })
    }

    /// `git ls-remote` of `repo` over SSH: ref name (including `HEAD`) -> sha.
    pub fn ls_remote(&self, repo: &str) -> BTreeMap<String, String> {
        let tmp = TempDir::new().expect("create temp dir");
        parse_ls_remote(&self.git(tmp.path(), &["ls-remote", &self.url(repo)]))
    }

    /// The sha `refs/heads/<branch>` of `repo` points to (over SSH), if the branch exists.
    pub fn branch_head(&self, repo: &str, branch: &str) -> Option<String> {
        self.ls_remote(repo).remove(&format!("refs/heads/{branch}"))
    }

    /// Process id of sshd (also its process group id).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The temp dir holding the repositories, keys, `sshd_config` and `sshd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log so far (connections, accepted and refused keys).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

/// Generates another ed25519 key pair (no passphrase) at `path` and `path.pub`: a key sshd does
/// not know, for tests that expect to be refused. Returns the private key text.
pub fn generate_ssh_key(path: &Path) -> String {
    ssh_keygen(path, "shopset-test-other");
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

struct SshdConfig<'a> {
    port: u16,
    host_key: &'a Path,
    authorized_keys: &'a Path,
    pid_file: &'a Path,
    user: &'a str,
}

fn sshd_config(c: SshdConfig<'_>) -> String {
    let q = |p: &Path| sshd_config_string(&p.to_string_lossy());
    format!(
        r#"# Generated by shopset-e2e: one user, one client key, loopback only.
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
StrictModes no
UsePAM no
PermitUserEnvironment no
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
LogLevel VERBOSE
# The git commands sshd runs see no system or user git configuration.
SetEnv GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
"#,
        port = c.port,
        host_key = q(c.host_key),
        pid_file = q(c.pid_file),
        authorized_keys = q(c.authorized_keys),
        user = c.user,
    )
}

/// A quoted sshd_config argument.
fn sshd_config_string(value: &str) -> String {
    assert!(!value.contains(['"', '\n', '\r']), "path {value:?} cannot be written to sshd_config");
    format!("\"{value}\"")
}

/// A single-quoted `sh` word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn ssh_keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ssh-keygen (install openssh-client): {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed ({}):\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<type> <base64>` of the public key next to the private key `path` (its comment dropped).
fn public_key_of(path: &Path) -> String {
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    let text = fs::read_to_string(&pub_path).unwrap_or_else(|e| panic!("read {}: {e}", pub_path.display()));
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(kind), Some(key)) => format!("{kind} {key}"),
        _ => panic!("{} is not a public key file", pub_path.display()),
    }
}

/// The name of the user running this process (sshd logs in as it).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").stdin(Stdio::null()).output().expect("run id -un");
    assert!(out.status.success(), "id -un failed ({})", out.status);
    let user = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "user name {user:?} cannot be used in an ssh URL"
    );
    user
}
