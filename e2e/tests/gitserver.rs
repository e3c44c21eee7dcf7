//! The git servers work as real git servers: the git CLI pushes, fetches and lists refs through
//! them, HTTP refuses anyone without the password, and submodules clone recursively.

mod support;

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopset_e2e::gitserver::{
    GitDaemon, HttpGitServer, branch_head, clone_recursive, commit_files, git, log, ls_remote, seed_dir, try_git,
};
use support::{base64, path_str};
use tempfile::TempDir;

#[test]
fn git_daemon_push_fetch_ls_remote() {
    let daemon = GitDaemon::start();
    let url = daemon.create_repo("app");
    assert_eq!(url, format!("git://127.0.0.1:{}/app.git", daemon.port()));
    assert!(ls_remote(&url).is_empty(), "a new repository has no refs");
    assert_eq!(branch_head(&url, "main"), None);

    let first = commit_files(&url, "main", &[("deploy/app.yaml", "replicas: 1\n")], "first");
    assert_eq!(branch_head(&url, "main").as_deref(), Some(first.as_str()));
    let refs = ls_remote(&url);
    assert_eq!(refs.get("refs/heads/main"), Some(&first));
    assert_eq!(refs.get("HEAD"), Some(&first));

    // A new branch starts from the default branch.
    let second = commit_files(&url, "staging", &[("deploy/app.yaml", "replicas: 2\n")], "scale");
    assert_eq!(log(&url, "staging"), vec![(second.clone(), "scale".to_owned()), (first.clone(), "first".to_owned())]);
    assert_eq!(log(&url, "main"), vec![(first.clone(), "first".to_owned())]);

    // The push landed in the bare repository on disk.
    let on_disk = git(&daemon.path("app"), &["rev-parse", "refs/heads/staging"]);
    assert_eq!(on_disk, second);

    // Fetch: a plain clone sees the content of each branch.
    let tmp = TempDir::new().expect("temp dir");
    let clone = tmp.path().join("clone");
    git(tmp.path(), &["clone", "--quiet", "--branch", "staging", &url, path_str(&clone)]);
    assert_eq!(read(&clone.join("deploy/app.yaml")), "replicas: 2\n");
    let third = commit_files(&url, "staging", &[("deploy/app.yaml", "replicas: 3\n")], "more");
    git(&clone, &["pull", "--quiet", "--ff-only"]);
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), third);
    assert_eq!(read(&clone.join("deploy/app.yaml")), "replicas: 3\n");
}

#[test]
fn seed_dir_commits_a_tree() {
    let daemon = GitDaemon::start();
    let url = daemon.create_repo("team/seeded");
    let src = TempDir::new().expect("temp dir");
    fs::create_dir_all(src.path().join("base/nested")).expect("create seed dirs");
    fs::write(src.path().join("README.md"), "# app\n").expect("write seed file");
    fs::write(src.path().join("base/nested/kustomization.yaml"), "resources: []\n").expect("write seed file");

    let sha = seed_dir(&url, "main", src.path(), "seed from examples");
    assert_eq!(log(&url, "main"), vec![(sha, "seed from examples".to_owned())]);

    let tmp = TempDir::new().expect("temp dir");
    let clone = tmp.path().join("clone");
    clone_recursive(&url, "main", &clone);
    assert_eq!(read(&clone.join("README.md")), "# app\n");
    assert_eq!(read(&clone.join("base/nested/kustomization.yaml")), "resources: []\n");
}

#[test]
fn http_authenticated_push_and_fetch() {
    let server = HttpGitServer::start("alice", "s3cret p@ss");
    let url = server.create_repo("app");
    assert_eq!(url, format!("http://127.0.0.1:{}/git/app.git", server.port()));
    let authed = server.authed_url("app");

    let first = commit_files(&authed, "main", &[("a.txt", "one\n")], "first");
    // Bigger than git's 1 MiB http.postBuffer, so the push body is sent chunked.
    let big: String = (0..300_000u32).map(|i| format!("{:x}", i.wrapping_mul(2654435761))).collect();
    assert!(big.len() > 1 << 20);
    let second = commit_files(&authed, "main", &[("big.txt", &big)], "big");
    assert_ne!(first, second);

    assert_eq!(branch_head(&authed, "main").as_deref(), Some(second.as_str()));
    assert_eq!(ls_remote(&authed).get("refs/heads/main"), Some(&second));
    assert_eq!(git(&server.path("app"), &["rev-parse", "refs/heads/main"]), second);

    let tmp = TempDir::new().expect("temp dir");
    let clone = tmp.path().join("clone");
    git(tmp.path(), &["clone", "--quiet", &authed, path_str(&clone)]);
    assert_eq!(read(&clone.join("a.txt")), "one\n");
    assert_eq!(read(&clone.join("big.txt")), big);
}

#[test]
fn http_refuses_anonymous_and_wrong_password() {
    let server = HttpGitServer::start("alice", "s3cret");
    let url = server.create_repo("app");
    let sha = commit_files(&server.authed_url("app"), "main", &[("a.txt", "one\n")], "first");

    let port = server.port();
    for service in ["git-upload-pack", "git-receive-pack"] {
        let path = format!("/git/app.git/info/refs?service={service}");
        assert_eq!(http_status(port, &path, None), 401, "anonymous {service}");
        assert_eq!(http_status(port, &path, Some(("alice", "wrong"))), 401, "wrong password");
        assert_eq!(http_status(port, &path, Some(("bob", "s3cret"))), 401, "unknown user");
        assert_eq!(http_status(port, &path, Some(("alice", "s3cret"))), 200, "right password");
    }

    let wrong = url.replace("http://", "http://alice:wrong@");
    let tmp = TempDir::new().expect("temp dir");
    for remote in [&url, &wrong] {
        let err = try_git(tmp.path(), &["ls-remote", remote]).expect_err("fetch must be refused");
        assert!(err.contains("Authentication failed") || err.contains("could not read Username"), "{err}");
    }

    // Pushing from a clone made with the right password, to the URL without or with a wrong one.
    let clone = tmp.path().join("clone");
    git(tmp.path(), &["clone", "--quiet", &server.authed_url("app"), path_str(&clone)]);
    fs::write(clone.join("b.txt"), "two\n").expect("write file");
    git(&clone, &["add", "b.txt"]);
    git(&clone, &["commit", "--quiet", "-m", "second"]);
    for remote in [&url, &wrong] {
        let err = try_git(&clone, &["push", remote, "HEAD:refs/heads/main"]).expect_err("push must be refused");
        assert!(err.contains("Authentication failed") || err.contains("could not read Username"), "{err}");
    }
    assert_eq!(git(&server.path("app"), &["rev-parse", "refs/heads/main"]), sha);
}

#[test]
fn submodules_on_the_same_daemon_clone_recursively() {
    let daemon = GitDaemon::start();
    let lib_url = daemon.create_repo("lib");
    let lib_sha = commit_files(&lib_url, "main", &[("lib.txt", "library\n")], "lib");
    let lib_file_url = format!("file://{}", daemon.path("lib").display());
    let app_url = daemon.create_repo("app");

    // Add the submodules by hand, as a person would.
    let tmp = TempDir::new().expect("temp dir");
    let work = tmp.path().join("work");
    git(tmp.path(), &["clone", "--quiet", &app_url, path_str(&work)]);
    git(&work, &["checkout", "--quiet", "-b", "release"]);
    fs::write(work.join("app.txt"), "app\n").expect("write file");
    git(&work, &["submodule", "--quiet", "add", &lib_url, "vendor/lib"]);
    let file_sub = ["-c", "protocol.file.allow=always", "submodule", "--quiet", "add"];
    git(&work, &[&file_sub[..], &[&lib_file_url, "vendor/lib-file"]].concat());
    git(&work, &["add", "--all"]);
    git(&work, &["commit", "--quiet", "-m", "app with submodules"]);
    git(&work, &["push", "--quiet", "origin", "release"]);

    let dest = tmp.path().join("checkout");
    clone_recursive(&app_url, "release", &dest);
    assert_eq!(read(&dest.join("app.txt")), "app\n");
    for sub in ["vendor/lib", "vendor/lib-file"] {
        assert_eq!(read(&dest.join(sub).join("lib.txt")), "library\n", "{sub}");
        assert_eq!(git(&dest.join(sub), &["rev-parse", "HEAD"]), lib_sha, "{sub}");
    }
}

#[test]
fn servers_stop_on_drop() {
    let daemon = GitDaemon::start();
    let url = daemon.create_repo("app");
    commit_files(&url, "main", &[("a.txt", "one\n")], "first");
    let http = HttpGitServer::start("alice", "s3cret");
    http.create_repo("app");
    commit_files(&http.authed_url("app"), "main", &[("a.txt", "one\n")], "first");

    let stopped =
        [(daemon.pid(), daemon.port(), daemon.dir().to_owned()), (http.pid(), http.port(), http.dir().to_owned())];
    drop(daemon);
    drop(http);

    for (pid, port, dir) in stopped {
        // Reaped, not a zombie, and nothing left in its process group.
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "server {pid} still exists");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !process_group(pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(process_group(pid), Vec::<u32>::new(), "processes left in group {pid}");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open");
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
}

#[test]
fn servers_stop_when_the_test_process_dies() {
    // Run the helper test below in a child test process, then kill that process outright.
    let mut holder = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--ignored", "--exact", "hold_servers_until_killed", "--nocapture"])
        .env("SHOPSET_GITSERVER_HOLD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the holder test process");
    let stdout = BufReader::new(holder.stdout.take().expect("holder stdout"));
    let line = stdout
        .lines()
        .map(|l| l.expect("read holder stdout"))
        .find(|l| l.starts_with("servers "))
        .expect("holder prints its servers");
    holder.kill().expect("kill the holder");
    holder.wait().expect("reap the holder");

    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    for server in fields.chunks(3) {
        let pid: u32 = server[0].parse().expect("pid");
        let port: u16 = server[1].parse().expect("port");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Orphans are reaped by init, maybe later: only live processes count.
        while !live(&process_group(pid)).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(live(&process_group(pid)), Vec::<u32>::new(), "group {pid} survived");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open");
        // A killed process removes no temp dirs.
        fs::remove_dir_all(server[2]).expect("remove the killed holder's server dir");
    }
}

#[test]
#[ignore = "run by servers_stop_when_the_test_process_dies"]
fn hold_servers_until_killed() {
    if std::env::var_os("SHOPSET_GITSERVER_HOLD").is_none() {
        return;
    }
    let daemon = GitDaemon::start();
    let http = HttpGitServer::start("alice", "s3cret");
    println!(
        "servers {} {} {} {} {} {}",
        daemon.pid(),
        daemon.port(),
        daemon.dir().display(),
        http.pid(),
        http.port(),
        http.dir().display(),
    );
    std::io::stdout().flush().expect("flush stdout");
    std::thread::sleep(Duration::from_secs(120));
}

/// The pids that are not zombies.
fn live(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, None | Some("Z"))
        })
        .collect()
}

/// Processes (zombies included) whose process group is `pgid`.
fn process_group(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest.split_whitespace().nth(2) == Some(&pgid.to_string()) {
            members.push(pid);
        }
    }
    members
}

/// Status code of a raw `GET path` to 127.0.0.1:port, with optional basic auth.
fn http_status(port: u16, path: &str, auth: Option<(&str, &str)>) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to HTTP server");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set read timeout");
    let authorization = auth
        .map(|(u, p)| format!("Authorization: Basic {}\r\n", base64(format!("{u}:{p}").as_bytes())))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send HTTP request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read HTTP response");
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).expect("HTTP status line");
    status.parse().unwrap_or_else(|e| panic!("bad status in {response:?}: {e}"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
