//! Shared setup for the `shopctl` integration tests: the example app and configuration seeded
//! into repositories on a real git server, the example manifests pointing at them, and a way to
//! run the `shopctl` binary the way a person does.
//!
//! Every test gets its own server, repositories, manifests and cache, so tests run in parallel.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::{Command, Stdio};

use shopset_e2e::gitserver::{GitDaemon, HttpGitServer, git, seed_dir};
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

/// The example manifest files, in the order `shopctl` reads a directory.
pub const MANIFEST_FILES: &[&str] = &["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"];

/// Where the repositories of a fixture are served.
pub enum Server {
    Daemon(GitDaemon),
    Http(HttpGitServer),
}

/// The three example repositories on a server, the manifests that name them, and a work dir
/// (cache, clones, credentials files) of the test's own.
pub struct Fixture {
    pub server: Server,
    pub app: String,
    pub config: String,
    pub system: String,
    pub work: TempDir,
}

impl Fixture {
    /// A `git daemon` with `app` and `config` seeded from `examples/` on `main`, and an empty
    /// `system` repository.
    pub fn daemon() -> Fixture {
        let daemon = GitDaemon::start();
        let (app, config, system) =
            (daemon.create_repo("app"), daemon.create_repo("config"), daemon.create_repo("system"));
        seed_examples(&app, &config);
        Fixture::new(Server::Daemon(daemon), app, config, system)
    }

    /// The same over smart HTTP behind basic auth; URLs in the manifests carry no credentials.
    pub fn http(user: &str, password: &str) -> Fixture {
        let http = HttpGitServer::start(user, password);
        let (app, config, system) = (http.create_repo("app"), http.create_repo("config"), http.create_repo("system"));
        seed_examples(&http.authed_url("app"), &http.authed_url("config"));
        Fixture::new(Server::Http(http), app, config, system)
    }

    /// The same over HTTPS, the server's certificate signed by a CA of its own
    /// ([`ca_file`](Self::ca_file)); the git helpers read and seed the repositories on disk.
    pub fn https(user: &str, password: &str) -> Fixture {
        let https = HttpGitServer::start_https(user, password);
        let (app, config, system) =
            (https.create_repo("app"), https.create_repo("config"), https.create_repo("system"));
        seed_examples(&https.authed_url("app"), &https.authed_url("config"));
        Fixture::new(Server::Http(https), app, config, system)
    }

    /// Over HTTPS, the CA file that makes the server trusted.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        match &self.server {
            Server::Http(h) => h.ca_file(),
            Server::Daemon(_) => None,
        }
    }

    fn new(server: Server, app: String, config: String, system: String) -> Fixture {
        let work = TempDir::with_prefix("shopctl-test-").expect("create test work dir");
        let fixture = Fixture { server, app, config, system, work };
        std::fs::create_dir(fixture.manifests()).expect("create manifests dir");
        for name in MANIFEST_FILES {
            fixture.write_manifest(name, &example_manifest(name));
        }
        fixture
    }

    /// The manifests directory (`shopctl -f <this>`).
    pub fn manifests(&self) -> PathBuf {
        self.work.path().join("manifests")
    }

    pub fn cache(&self) -> PathBuf {
        self.work.path().join("cache")
    }

    /// Writes one manifest file, with the example URLs replaced by this fixture's.
    pub fn write_manifest(&self, name: &str, text: &str) {
        let text = shopset::quickstart::with_urls(text, |local| match local {
            "app.git" => self.app.clone(),
            "config.git" => self.config.clone(),
            _ => self.system.clone(),
        });
        std::fs::write(self.manifests().join(name), text).expect("write manifest");
    }

    /// The bare repository `name` on disk.
    pub fn repo_path(&self, name: &str) -> PathBuf {
        match &self.server {
            Server::Daemon(d) => d.path(name),
            Server::Http(h) => h.path(name),
        }
    }

    /// A URL the git helpers can read `name` with (credentials embedded over HTTP).
    pub fn read_url(&self, name: &str) -> String {
        match &self.server {
            Server::Daemon(d) => d.url(name),
            Server::Http(h) => h.authed_url(name),
        }
    }

    /// `git <args>` inside the bare system repository on the server.
    pub fn system_git(&self, args: &[&str]) -> String {
        git(&self.repo_path("system"), args)
    }

    /// `shopctl --cache-dir <cache> --color never <args>`.
    pub fn shopctl(&self, args: &[&str]) -> Run {
        self.shopctl_env(args, &[])
    }

    /// Like [`shopctl`](Self::shopctl), with extra environment variables.
    pub fn shopctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = shopctl_command(&self.cache(), self.work.path());
        cmd.args(args).envs(env.iter().copied());
        Run::of(cmd, args)
    }

    /// Like [`shopctl_env`](Self::shopctl_env), under a pseudo-terminal: see [`run_in_terminal`].
    pub fn shopctl_in_terminal(&self, args: &[&str], env: &[(&str, &str)]) -> TerminalRun {
        let mut cmd = shopctl_command(&self.cache(), self.work.path());
        cmd.args(args).envs(env.iter().copied());
        run_in_terminal(&cmd, &self.work.path().join("terminal-stdout"))
    }

    /// `shopctl sync -f <manifests> <extra>`, which must succeed.
    pub fn sync_ok(&self, extra: &[&str]) -> Run {
        let manifests = self.manifests();
        let mut args = vec!["sync", "-f", manifests.to_str().expect("UTF-8 path")];
        args.extend_from_slice(extra);
        self.shopctl(&args).success()
    }
}

/// Seeds `examples/app` and `examples/config` onto `main`.
pub fn seed_examples(app_url: &str, config_url: &str) {
    let examples = repo_root().join("examples");
    seed_dir(app_url, "main", &examples.join("app"), "Shop application base");
    seed_dir(config_url, "main", &examples.join("config"), "Shared shop configuration");
}

/// The text of `examples/<name>`.
pub fn example_manifest(name: &str) -> String {
    let path = repo_root().join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A finished `shopctl` run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

impl Run {
    /// Runs a prepared `shopctl` command (`args` already added) and keeps what it printed.
    pub fn of(mut cmd: std::process::Command, args: &[&str]) -> Run {
        let out = cmd.output().expect("run shopctl");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "shopctl {:?} failed:\n{self}", self.args);
        self
    }

    pub fn failure(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "shopctl {:?}: expected exit {code}:\n{self}", self.args);
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// The short form of a commit id, as shopctl prints it.
#[allow(unused_imports)] // each test binary compiles this module; not every one uses it
pub use shopset::revision::short;

/// The line of `text` that starts (after indentation) with `prefix`, trimmed.
pub fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// The part of a text report about one tier (from its `Tier <name>` line to the next).
pub fn tier_section<'a>(stdout: &'a str, tier: &str) -> &'a str {
    let start = stdout.find(&format!("Tier {tier} ")).unwrap_or_else(|| panic!("no Tier {tier} in:\n{stdout}"));
    let rest = &stdout[start..];
    match rest[1..].find("\nTier ") {
        Some(end) => &rest[..end + 1],
        None => rest,
    }
}

/// `shopctl --cache-dir <cache> --color never`, isolated: no SHOPSET_*, GitHub, Kubernetes, ssh
/// agent or logging variables of the caller; HOME and git's configuration at `home`; no stdin.
/// Callers add their own arguments and environment.
pub fn shopctl_command(cache: &std::path::Path, home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shopctl"));
    cmd.arg("--cache-dir").arg(cache).args(["--color", "never"]);
    for var in [
        "SHOPSET_CACHE_DIR",
        "SHOPSET_CREDENTIALS",
        "SHOPSET_TEMPLATES",
        "SHOPSET_GIT_USERNAME",
        "SHOPSET_GIT_PASSWORD",
        "SHOPSET_GIT_TOKEN",
        "SHOPSET_GIT_SSH_KEY_FILE",
        "SHOPSET_GIT_SSH_PASSPHRASE",
        "SHOPSET_GIT_KNOWN_HOSTS_FILE",
        "GITHUB_TOKEN",
        "GITHUB_API_URL",
        "KUBECONFIG",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "SSH_AUTH_SOCK",
        "RUST_LOG",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home).env("XDG_CONFIG_HOME", home).env("GIT_CONFIG_NOSYSTEM", "1").stdin(Stdio::null());
    cmd
}

/// A run under a pseudo-terminal: what the terminal showed (stderr) and what went to stdout.
#[derive(Debug)]
pub struct TerminalRun {
    pub code: Option<i32>,
    /// Everything written to the terminal, escape sequences and carriage returns included.
    pub terminal: String,
    pub stdout: String,
}

impl std::fmt::Display for TerminalRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- terminal\n{:?}", self.code, self.stdout, self.terminal)
    }
}

/// Runs a prepared command with its stderr on a pseudo-terminal, as at a person's shell (util-linux
/// `script`, its environment and working directory kept), and its stdout redirected to
/// `stdout_file`, so what is drawn on the terminal is told apart from the report.
pub fn run_in_terminal(cmd: &Command, stdout_file: &std::path::Path) -> TerminalRun {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().expect("UTF-8 argument").replace('\'', r"'\''"));
    let mut line: Vec<String> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(quote).collect();
    line.push(format!("> {}", quote(stdout_file.as_os_str())));
    let mut script = Command::new("script");
    script.args(["--quiet", "--return", "--command", &line.join(" "), "/dev/null"]).stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => script.env(key, v),
            None => script.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    let out = script.output().expect("run script (util-linux)");
    TerminalRun {
        code: out.status.code(),
        terminal: String::from_utf8_lossy(&out.stdout).into_owned(),
        stdout: std::fs::read_to_string(stdout_file).unwrap_or_default(),
    }
}
