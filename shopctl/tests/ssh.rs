//! `shopctl sync` over SSH against a real `sshd` on loopback: key authentication, and host key
//! verification (a known_hosts from the credentials, or else `~/.ssh/known_hosts`). The example
//! app and configuration are seeded over SSH with the git CLI, which checks the host key
//! strictly; every check reads the repositories with the git CLI, never through ShopSet's engine.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{MANIFEST_FILES, Run, example_manifest, line_starting, short, tier_section};
use shopset_e2e::gitserver::{SshGitServer, generate_ssh_key};
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

/// An sshd with `app` and `config` seeded from `examples/` on `main` and an empty `system`, the
/// example manifests naming their `ssh://` URLs, and a work dir of the test's own (cache,
/// HOME, key and known_hosts files).
struct SshFixture {
    server: SshGitServer,
    app: String,
    config: String,
    system: String,
    work: TempDir,
}

impl SshFixture {
    fn new() -> SshFixture {
        let server = SshGitServer::start();
        let (app, config, system) =
            (server.create_repo("app"), server.create_repo("config"), server.create_repo("system"));
        let examples = repo_root().join("examples");
        server.seed_dir("app", "main", &examples.join("app"), "Shop application base");
        server.seed_dir("config", "main", &examples.join("config"), "Shared shop configuration");
        let work = TempDir::with_prefix("shopctl-ssh-test-").expect("create test work dir");
        let f = SshFixture { server, app, config, system, work };
        std::fs::create_dir(f.manifests()).expect("create manifests dir");
        std::fs::create_dir(f.home()).expect("create HOME");
        for name in MANIFEST_FILES {
            let text = shopset::quickstart::with_urls(&example_manifest(name), |local| match local {
                "app.git" => f.app.clone(),
                "config.git" => f.config.clone(),
                _ => f.system.clone(),
            });
            assert!(!text.contains("https://git.example.com"), "{name} still names an example repository:\n{text}");
            std::fs::write(f.manifests().join(name), text).expect("write manifest");
        }
        f
    }

    fn manifests(&self) -> PathBuf {
        self.work.path().join("manifests")
    }

    /// HOME of shopctl: empty, so libgit2 finds no `~/.ssh/known_hosts` unless a test writes one.
    fn home(&self) -> PathBuf {
        self.work.path().join("home")
    }

    /// Writes `text` to a file in the work dir and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.work.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_str().expect("UTF-8 path").to_string()
    }

    /// A Secret manifest with `identity` and, if given, `known_hosts` (stringData), as a Tier's
    /// credentials Secret would hold them; returns its path.
    fn secret(&self, name: &str, identity: &str, known_hosts: Option<&str>) -> String {
        let block = |text: &str| text.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let mut yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: shop-git\n  namespace: shopset\ntype: Opaque\nstringData:\n  identity: |\n{}",
            block(identity)
        );
        if let Some(kh) = known_hosts {
            yaml.push_str(&format!("  known_hosts: |\n{}", block(kh)));
        }
        self.file(name, &yaml)
    }

    /// `shopctl --cache-dir <cache> --color never <args>` with only `env` of the SHOPSET_*
    /// variables, HOME at [`home`](Self::home), and no ssh agent.
    fn shopctl(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = common::shopctl_command(&self.work.path().join("cache"), &self.home());
        cmd.args(args).envs(env.iter().copied());
        Run::of(cmd, args)
    }

    /// `shopctl sync -f <manifests> --tier tier-0 <extra>`.
    fn sync(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let manifests = self.manifests();
        let mut args = vec!["sync", "-f", manifests.to_str().expect("UTF-8 path"), "--tier", "tier-0"];
        args.extend_from_slice(extra);
        self.shopctl(&args, env)
    }

    /// Every ref of the three repositories, read over SSH by the git CLI.
    fn refs(&self) -> BTreeMap<&'static str, BTreeMap<String, String>> {
        ["app", "config", "system"].into_iter().map(|r| (r, self.server.ls_remote(r))).collect()
    }

    /// A first sync of tier-0 did what it does over any transport: tier branches created at
    /// `main`, one system commit pinning them.
    fn assert_synced(&self, run: &Run) {
        let app_main = self.server.branch_head("app", "main").expect("app main");
        let config_main = self.server.branch_head("config", "main").expect("config main");
        assert_eq!(self.server.branch_head("app", "tier-0").as_deref(), Some(app_main.as_str()), "{run}");
        assert_eq!(self.server.branch_head("config", "tier-0").as_deref(), Some(config_main.as_str()), "{run}");
        let system = self.server.branch_head("system", "tier-0").expect("system tier-0 pushed over SSH");
        let out = tier_section(&run.stdout, "tier-0");
        assert!(line_starting(out, "committed ").starts_with(&format!("committed {} ", short(&system))), "{run}");
        let base = self.server.git(&self.server.path("system"), &["rev-parse", "tier-0:base"]);
        assert_eq!(base, app_main, "the system commit pins app at its tier head");
    }

    /// Fails if any output of `run` holds key material: a private key (ours or `others`), or
    /// the server's public host key.
    fn assert_no_key_material(&self, run: &Run, others: &[&str]) {
        let host_key = self.server.known_hosts_line().split_whitespace().nth(2).expect("key field").to_string();
        let output = format!("{}\n{}", run.stdout, run.stderr);
        assert!(!output.contains("PRIVATE KEY"), "key material in output:\n{run}");
        assert!(!output.contains(&host_key), "the host key was printed:\n{run}");
        for key in std::iter::once(self.server.client_key().as_str()).chain(others.iter().copied()) {
            // Every line of the key's base64 body (the armour lines are checked above).
            for line in key.lines().filter(|l| !l.starts_with("-----") && l.len() > 16) {
                assert!(!output.contains(line), "private key material in output:\n{run}");
            }
        }
    }
}

fn env_key_and_known_hosts<'a>(key: &'a str, known_hosts: &'a str) -> [(&'static str, &'a str); 2] {
    [("SHOPSET_GIT_SSH_KEY_FILE", key), ("SHOPSET_GIT_KNOWN_HOSTS_FILE", known_hosts)]
}

/// A known_hosts line for the fixture's server with the key of another, freshly generated host.
fn impostor_known_hosts(f: &SshFixture) -> String {
    let other = f.work.path().join("impostor_host_key");
    generate_ssh_key(&other);
    let public = std::fs::read_to_string(format!("{}.pub", other.display())).expect("impostor public key");
    let mut fields = public.split_whitespace();
    format!("[127.0.0.1]:{} {} {}\n", f.server.port(), fields.next().unwrap(), fields.next().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Success: key authentication with a verified host key

#[test]
fn sync_over_ssh_with_key_file_and_known_hosts_file() {
    let f = SshFixture::new();
    let key = f.server.client_key_path();
    let known_hosts = f.file("known_hosts", &format!("{}\n", f.server.known_hosts_line()));

    let run = f.sync(&[], &env_key_and_known_hosts(key.to_str().unwrap(), &known_hosts)).success();

    f.assert_synced(&run);
    f.assert_no_key_material(&run, &[]);
    // A second sync over the same cache fetches and finds nothing to do.
    let before = f.refs();
    let again = f.sync(&[], &env_key_and_known_hosts(key.to_str().unwrap(), &known_hosts)).success();
    assert!(again.stdout.contains("no change"), "{again}");
    assert_eq!(f.refs(), before);
    // A change on the branch's head is pushed with a pack of what the sync wrote: the server
    // takes it whole (fsck) and serves the changed overlay.
    let shopsets = f.manifests().join("shopsets.yaml");
    let text = std::fs::read_to_string(&shopsets).expect("read shopsets.yaml");
    std::fs::write(&shopsets, text.replacen("shops: [shop-1001]", "shops: [shop-1001, shop-1099]", 1))
        .expect("write shopsets.yaml");
    let old_head = f.server.branch_head("system", "tier-0").expect("system tier-0");
    let changed = f.sync(&[], &env_key_and_known_hosts(key.to_str().unwrap(), &known_hosts)).success();
    let repo = f.server.path("system");
    let parent = f.server.git(&repo, &["rev-parse", "tier-0^"]);
    assert_eq!(parent, old_head, "one commit on the head it found:\n{changed}");
    f.server.git(&repo, &["fsck", "--strict", "--no-dangling"]);
    let overlay = f.server.git(&repo, &["grep", "-l", "shop-1099", "tier-0", "--", "shopsets/"]);
    assert!(!overlay.is_empty(), "the changed overlay is on the server:\n{changed}");
}

#[test]
fn sync_over_ssh_with_a_credentials_secret_holding_identity_and_known_hosts() {
    let f = SshFixture::new();
    // known_hosts as people paste it: a comment, an unrelated host, then ours.
    let known_hosts = format!(
        "# shop git server\ngithub.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICB11tfJnXBl2dprl8TNECmmQIzPDPEQ7IJ+5EC12/C0\n{}\n",
        f.server.known_hosts_line()
    );
    let secret = f.secret("credentials.yaml", &f.server.client_key(), Some(&known_hosts));

    let run = f.sync(&["--credentials", &secret], &[]).success();

    f.assert_synced(&run);
    f.assert_no_key_material(&run, &[]);
}

#[test]
fn hashed_known_hosts_as_ssh_keygen_writes_them_are_checked() {
    let f = SshFixture::new();
    // `ssh-keygen -H` hashes the host names, as `HashKnownHosts yes` and `ssh-keyscan -H` do.
    let file = PathBuf::from(f.file("known_hosts", &format!("{}\n", f.server.known_hosts_line())));
    let out = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).output().expect("run ssh-keygen -H");
    assert!(out.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&out.stderr));
    let hashed = std::fs::read_to_string(&file).expect("read hashed known_hosts");
    assert!(hashed.starts_with("|1|") && !hashed.contains("127.0.0.1"), "{hashed}");
    let secret = f.secret("credentials.yaml", &f.server.client_key(), Some(&hashed));

    let run = f.sync(&["--credentials", &secret], &[]).success();
    f.assert_synced(&run);

    // A hashed entry of another key for the same host is still a mismatch, and refused.
    let impostor = PathBuf::from(f.file("impostor_known_hosts", &impostor_known_hosts(&f)));
    let out = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&impostor).output().expect("run ssh-keygen -H");
    assert!(out.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&out.stderr));
    let secret = f.secret("impostor.yaml", &f.server.client_key(), Some(&std::fs::read_to_string(&impostor).unwrap()));
    let run = f.sync(&["--credentials", &secret], &[]).failure(1);
    assert!(run.stderr.contains("does not match known_hosts"), "{run}");
}

#[test]
fn without_known_hosts_in_the_credentials_libgit2_checks_home_ssh_known_hosts() {
    let f = SshFixture::new();
    let key = f.server.client_key_path();
    let key_env = [("SHOPSET_GIT_SSH_KEY_FILE", key.to_str().unwrap())];
    let before = f.refs();

    // Nothing known about the host: refused, never accepted blindly.
    let run = f.sync(&[], &key_env).failure(1);
    assert!(run.stderr.contains(&format!("SSH host key check of {} failed", f.app)), "{run}");
    assert!(run.stderr.contains("~/.ssh/known_hosts"), "{run}");
    assert!(run.stderr.contains("known_hosts"), "{run}");
    f.assert_no_key_material(&run, &[]);
    assert_eq!(f.refs(), before, "a refused sync wrote to a repository");

    // Listed in ~/.ssh/known_hosts: libgit2's own check accepts it.
    std::fs::create_dir(f.home().join(".ssh")).expect("create ~/.ssh");
    std::fs::write(f.home().join(".ssh/known_hosts"), format!("{}\n", f.server.known_hosts_line()))
        .expect("write ~/.ssh/known_hosts");
    let run = f.sync(&[], &key_env).success();
    f.assert_synced(&run);
}

// ---------------------------------------------------------------------------------------------
// Refusals: wrong key, wrong host key

#[test]
fn a_key_the_server_does_not_know_fails_authentication_naming_the_url() {
    let f = SshFixture::new();
    let wrong = f.work.path().join("wrong_key");
    let wrong_key = generate_ssh_key(&wrong);
    let known_hosts = f.file("known_hosts", &format!("{}\n", f.server.known_hosts_line()));
    let before = f.refs();

    // From a key file, with debug logging on.
    let run = f.sync(&["-vv"], &env_key_and_known_hosts(wrong.to_str().unwrap(), &known_hosts)).failure(1);
    assert!(run.stderr.contains(&format!("authentication to {} failed", f.app)), "{run}");
    assert!(!run.stderr.contains("host key"), "{run}");
    f.assert_no_key_material(&run, &[&wrong_key]);

    // From a Secret.
    let secret = f.secret("credentials.yaml", &wrong_key, Some(&f.server.known_hosts_line()));
    let run = f.sync(&["-vv", "--credentials", &secret], &[]).failure(1);
    assert!(run.stderr.contains(&format!("authentication to {} failed", f.app)), "{run}");
    f.assert_no_key_material(&run, &[&wrong_key]);

    assert_eq!(f.refs(), before, "a refused sync wrote to a repository");
    assert!(
        f.server.log().contains("Connection closed by authenticating user")
            || f.server.log().contains("Failed publickey"),
        "sshd saw no refused key:\n{}",
        f.server.log()
    );
}

#[test]
fn another_host_key_than_known_hosts_lists_fails_before_authenticating() {
    let f = SshFixture::new();
    let key = f.server.client_key_path();
    let impostor = impostor_known_hosts(&f);
    let known_hosts = f.file("known_hosts", &impostor);
    let before = f.refs();
    let accepted_before = f.server.log().matches("Accepted publickey").count();

    let run = f.sync(&["-vv"], &env_key_and_known_hosts(key.to_str().unwrap(), &known_hosts)).failure(1);

    let name = format!("[127.0.0.1]:{}", f.server.port());
    assert!(
        run.stderr.contains(&format!(
            "SSH host key check of {} failed: the host key of {name} does not match known_hosts; fix:",
            f.app
        )),
        "{run}"
    );
    assert!(!run.stderr.contains("authentication to"), "{run}");
    f.assert_no_key_material(&run, &[]);
    assert!(!run.stderr.contains(impostor.split_whitespace().nth(2).unwrap()), "{run}");

    // The same through a Secret.
    let secret = f.secret("credentials.yaml", &f.server.client_key(), Some(&impostor));
    let run = f.sync(&["--credentials", &secret], &[]).failure(1);
    assert!(run.stderr.contains(&format!("the host key of {name} does not match known_hosts")), "{run}");
    f.assert_no_key_material(&run, &[]);

    // The client key was never offered to a server it could not verify (counted before the
    // git CLI below logs in to read the refs).
    assert_eq!(f.server.log().matches("Accepted publickey").count(), accepted_before, "{}", f.server.log());
    assert_eq!(f.refs(), before, "a refused sync wrote to a repository");
}

#[test]
fn known_hosts_without_an_entry_for_the_port_fails_with_a_host_key_error() {
    let f = SshFixture::new();
    let key = f.server.client_key_path();
    // The right key, listed for the host on port 22 only: another port is another host.
    let line = f.server.known_hosts_line();
    let (_, key_fields) = line.split_once(' ').expect("known_hosts line");
    let known_hosts = f.file("known_hosts", &format!("127.0.0.1 {key_fields}\n"));
    let before = f.refs();

    let run = f.sync(&[], &env_key_and_known_hosts(key.to_str().unwrap(), &known_hosts)).failure(1);

    let name = format!("[127.0.0.1]:{}", f.server.port());
    assert!(run.stderr.contains(&format!("known_hosts has no entry for {name}; fix:")), "{run}");
    assert!(run.stderr.contains(&format!("ssh-keyscan -p {} 127.0.0.1", f.server.port())), "{run}");
    f.assert_no_key_material(&run, &[]);
    assert_eq!(f.refs(), before, "a refused sync wrote to a repository");
}

#[test]
fn the_git_cli_helpers_check_the_host_key_too() {
    // Test support sanity: the seeding helpers connect with strict host key checking, so a
    // success above is not the product of a lax client elsewhere.
    let f = SshFixture::new();
    let dir = TempDir::new().expect("temp dir");
    let bad = f.file("bad_known_hosts", &impostor_known_hosts(&f));
    let out = Command::new("git")
        .args(["ls-remote", &f.app])
        .current_dir(dir.path())
        .env(
            "GIT_SSH_COMMAND",
            f.server.git_ssh_command().replace(&f.server.known_hosts_path().to_string_lossy().to_string(), &bad),
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(!out.status.success(), "git accepted an unknown host key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(&f.server.path("app")).is_dir());
}
