//! The container image of `deploy/image/build`, built here and run the way a kubelet runs the
//! Deployment of `deploy/`, without a container runtime:
//!
//! - The recipe builds the image with buildah from scratch (nothing pulled) as an OCI image layout,
//!   named as the Deployment's `image`, with the test build of the controller (`cargo build`'s
//!   debug binary, fault points included) instead of a release build.
//! - Its config says user 65532:65532 and entrypoint `/usr/local/bin/shopset-controller`; its one
//!   layer, unpacked, holds exactly the binary, the shared libraries `ldd` lists for it, the CA
//!   bundle, passwd/group/nsswitch.conf, `/tmp` and the cache directory; everything is root's but
//!   the cache directory, which is 65532's.
//! - The entrypoint runs from the unpacked root filesystem with `chroot` as UID/GID 65532, no
//!   supplementary groups and no capabilities, in a mount namespace of its own where the root is
//!   read-only and only the cache directory is writable (as `readOnlyRootFilesystem` and the cache
//!   emptyDir). It gets the Deployment's args (its own loopback port for `--listen`), the env of
//!   the image and the Deployment, and the ServiceAccount's token where a pod has it: in-cluster
//!   configuration, with the RBAC of `deploy/` only.
//! - It passes the Deployment's liveness and readiness probes, reconciles a Tier on a git daemon
//!   (Ready, system branch pushed, Applications applied), and exits cleanly on SIGTERM.

mod support;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::gitserver::{GitDaemon, branch_head};
use shopset_e2e::tools::{path_env, repo_root, workspace_bin};
use support::{Setup, TIER, TierOptions, WorkDir, free_port, http, path_str, phase, show, text, wait_for};

/// Progress lines on stderr say where the time goes.
const TEST: &str = "image";
/// The image's user, and the Deployment's runAsUser/runAsGroup.
const NONROOT: u32 = 65532;
const ENTRYPOINT: &str = "/usr/local/bin/shopset-controller";
const CACHE: &str = "/var/cache/shopset";
/// Where a pod finds its ServiceAccount's token, CA and namespace.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[test]
fn the_image_runs_as_the_deployment_says_and_reconciles_a_tier() {
    phase(TEST, "start");
    // Without a container runtime, running the image is a kubelet's privileged work: a mount
    // namespace, chroot, files owned by 65532.
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    assert!(
        status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Uid:", "0", "0", "0", "0"]),
        "this test runs the image as a kubelet would (unshare --mount, chroot, chown to {NONROOT}) and needs \
         root: run `make test` as root"
    );
    let work = WorkDir::new("image");
    // The image builds while the control plane starts.
    let dir = work.path().to_path_buf();
    let build = std::thread::spawn(move || build_image(&dir));
    let cp = ControlPlane::start();
    phase(TEST, "control plane up");
    cp.kubectl_ok(["apply", "--server-side", "-k", path_str(&repo_root().join("deploy"))]);
    cp.kubectl_ok(["wait", "--for=condition=Established", "--timeout=60s", "crd/tiers.shopset.dev"]);
    let deployment = Deployment::read(&cp);
    let image = build.join().expect("image build thread");
    phase(TEST, "image built");

    assert_eq!(image.name, deployment.image, "the recipe's image name is the Deployment's image");
    assert_eq!(image.user, format!("{NONROOT}:{NONROOT}"), "image config User");
    assert_eq!(image.entrypoint, [ENTRYPOINT], "image config Entrypoint");
    let rootfs = work.path().join("rootfs");
    image.unpack(&rootfs);
    check_layout(&rootfs);
    phase(TEST, "image unpacked and its layout checked");

    let daemon = GitDaemon::start();
    let setup = Setup::on_daemon(&cp, &daemon, "shops-image", &TierOptions::default());
    setup.apply(&cp);

    let pod = Pod::start(&cp, &image, &deployment, &rootfs, work.path());
    phase(TEST, "controller started from the image");
    pod.check_identity_and_mounts(&rootfs);
    for probe in [&deployment.liveness, &deployment.readiness] {
        wait_for(
            &format!("probe {probe} to answer 200"),
            Duration::from_secs(60),
            || {
                pod.assert_running();
                (http(&pod.url(probe), &[], None).0 == 200).then_some(())
            },
            || pod.log(),
        );
    }

    wait_for(
        &format!("Tier {}/{TIER} Ready with its system branch pushed", setup.ns),
        Duration::from_secs(120),
        || {
            pod.assert_running();
            let (status, _, _) = setup.ready(&cp);
            let (_, system_commit) = setup.status_commits(&cp);
            let head = branch_head(&setup.system_url, TIER)?;
            (status == "True" && system_commit == head).then_some(())
        },
        || format!("tier status:\n{}\ncontroller log:\n{}", setup.jsonpath(&cp, "tier", TIER, "{.status}"), pod.log()),
    );
    assert_eq!(setup.applications(&cp), support::SHOPSETS, "Applications of {TIER}");
    // The fetched repositories went to the one writable directory, as the image's user.
    let cached: Vec<_> = fs::read_dir(&pod.cache).expect("read the cache directory").flatten().collect();
    assert!(!cached.is_empty(), "nothing cached in {}", pod.cache.display());
    for entry in cached {
        let owner = entry.metadata().expect("cache entry metadata").uid();
        assert_eq!(owner, NONROOT, "{} owned by {owner}", entry.path().display());
    }
    phase(TEST, "tier reconciled");

    pod.stop();
    phase(TEST, "stopped on SIGTERM");
}

// ---------------------------------------------------------------------------------------------
// The image

/// The image of `deploy/image/build`, as an OCI image layout.
struct Image {
    layout: PathBuf,
    /// `org.opencontainers.image.ref.name` of the layout's one manifest.
    name: String,
    user: String,
    entrypoint: Vec<String>,
    env: Vec<String>,
    /// Layer blobs, base first.
    layers: Vec<PathBuf>,
}

fn build_image(dir: &Path) -> Image {
    let layout = dir.join("oci");
    let storage = dir.join("buildah-storage");
    let started = Instant::now();
    let out = Command::new(repo_root().join("deploy/image/build"))
        .arg("--binary")
        .arg(workspace_bin("shopset-controller"))
        .arg("--oci")
        .arg(&layout)
        .arg("--storage")
        .arg(&storage)
        .env("PATH", path_env())
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/image/build");
    assert!(out.status.success(), "deploy/image/build {}", show(&out));
    eprintln!("deploy/image/build took {:.1?}", started.elapsed());
    // Only the layout is needed from here on: the storage holds two more copies of the layer.
    fs::remove_dir_all(&storage).expect("remove buildah's scratch storage");
    Image::read(&layout)
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()))
}

impl Image {
    fn read(layout: &Path) -> Image {
        let blob = |digest: &serde_json::Value| {
            let digest = digest.as_str().expect("a digest is a string");
            let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("digest {digest} is not sha256"));
            layout.join("blobs/sha256").join(hex)
        };
        let index = read_json(&layout.join("index.json"));
        let manifests = index["manifests"].as_array().expect("index.json lists manifests");
        assert_eq!(manifests.len(), 1, "one image in the layout: {index}");
        let name = manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_else(|| panic!("the manifest has no ref.name annotation: {index}"))
            .to_string();
        let manifest = read_json(&blob(&manifests[0]["digest"]));
        let config = read_json(&blob(&manifest["config"]["digest"]));
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().into_iter().flatten().map(|s| s.as_str().expect("a string").to_string()).collect()
        };
        let layers = manifest["layers"]
            .as_array()
            .expect("the manifest lists layers")
            .iter()
            .map(|layer| {
                let media_type = layer["mediaType"].as_str().unwrap_or_default();
                assert!(
                    ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"]
                        .contains(&media_type),
                    "layer media type {media_type}"
                );
                blob(&layer["digest"])
            })
            .collect();
        Image {
            layout: layout.to_path_buf(),
            name,
            user: config["config"]["User"].as_str().unwrap_or_default().to_string(),
            entrypoint: strings(&config["config"]["Entrypoint"]),
            env: strings(&config["config"]["Env"]),
            layers,
        }
    }

    /// Extracts the layers into `rootfs`, with their owners and modes (we are root).
    fn unpack(&self, rootfs: &Path) {
        fs::create_dir(rootfs).expect("create rootfs dir");
        for layer in &self.layers {
            let out = Command::new("tar")
                .arg("-C")
                .arg(rootfs)
                .args(["--same-owner", "--same-permissions", "--numeric-owner", "-xf"])
                .arg(layer)
                .output()
                .expect("run tar");
            assert!(out.status.success(), "untar {} of {} {}", layer.display(), self.layout.display(), show(&out));
        }
    }
}

/// Every file of the root filesystem, its owner and its mode.
fn check_layout(rootfs: &Path) {
    let binary = workspace_bin("shopset-controller");
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    assert!(ldd.status.success(), "ldd {} {}", binary.display(), show(&ldd));
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`
    let libraries: BTreeSet<String> = text(&ldd.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, "=>", path, _] => path,
                [path, _] => path,
                _ => return None,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    assert!(
        libraries.iter().any(|l| l.contains("ld-linux")),
        "no dynamic loader in ldd's output:\n{}",
        text(&ldd.stdout)
    );

    let mut expected_files: BTreeSet<String> =
        ["/etc/group", "/etc/nsswitch.conf", "/etc/passwd", "/etc/ssl/certs/ca-certificates.crt", ENTRYPOINT]
            .into_iter()
            .map(str::to_string)
            .collect();
    expected_files.extend(libraries);
    let mut files = BTreeSet::new();
    let mut stack = vec![rootfs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read rootfs dir").flatten() {
            let path = entry.path();
            let name = format!("/{}", path.strip_prefix(rootfs).expect("under rootfs").display());
            let meta = fs::symlink_metadata(&path).expect("rootfs entry metadata");
            let mode = meta.permissions().mode() & 0o7777;
            match name.as_str() {
                CACHE => {
                    assert_eq!((meta.uid(), meta.gid(), mode), (NONROOT, NONROOT, 0o700), "{name}: uid, gid, mode");
                    assert_eq!(fs::read_dir(&path).expect("read cache dir").count(), 0, "{name} is empty");
                    continue;
                }
                "/tmp" => assert_eq!(mode, 0o1777, "{name} mode"),
                _ => assert_eq!(mode & 0o022, 0, "{name} is writable by others than its owner: {mode:o}"),
            }
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{name} is root's");
            if meta.is_dir() {
                stack.push(path);
            } else {
                assert!(meta.is_file(), "{name} is a regular file (no links, devices...)");
                files.insert(name);
            }
        }
    }
    assert_eq!(files, expected_files, "the files of the image: the binary, what ldd lists, CA bundle, passwd");
    let same = Command::new("cmp").arg("-s").arg(&binary).arg(rootfs.join(&ENTRYPOINT[1..])).status();
    assert!(same.expect("run cmp").success(), "the image's controller is not {}", binary.display());
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).expect("read the image's /etc/passwd");
    assert!(
        passwd.lines().any(|l| l.split(':').nth(2) == Some(&NONROOT.to_string())),
        "no user {NONROOT} in the image's /etc/passwd:\n{passwd}"
    );
}

// ---------------------------------------------------------------------------------------------
// The Deployment

/// What the Deployment of `deploy/` says, read back from the API server.
struct Deployment {
    image: String,
    args: Vec<String>,
    /// `name=value` of its literal env (fieldRefs come from the pod: see [`Pod::start`]).
    env: Vec<(String, String)>,
    liveness: String,
    readiness: String,
}

impl Deployment {
    fn read(cp: &ControlPlane) -> Deployment {
        const C: &str = ".spec.template.spec.containers[0]";
        let get = |path: &str| {
            cp.kubectl_ok([
                "get",
                "deployment",
                "shopset-controller",
                "-n",
                "shopset-system",
                "-o",
                &format!("jsonpath={path}"),
            ])
        };
        let field = |path: &str| get(&format!("{{{C}{path}}}"));
        let user = field(".securityContext.runAsUser");
        assert_eq!(user, NONROOT.to_string(), "the Deployment's runAsUser");
        let mounts = field(r#".volumeMounts[?(@.name=="cache")].mountPath"#);
        assert_eq!(mounts, CACHE, "the Deployment's cache volume");
        let env = get(&format!(r#"{{range {C}.env[*]}}{{.name}}={{.value}}{{"\n"}}{{end}}"#));
        Deployment {
            image: field(".image"),
            args: get(&format!(r#"{{range {C}.args[*]}}{{@}}{{"\n"}}{{end}}"#)).lines().map(str::to_string).collect(),
            env: env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            liveness: field(".livenessProbe.httpGet.path"),
            readiness: field(".readinessProbe.httpGet.path"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The controller as a pod would run it

/// The image's entrypoint running from the unpacked root filesystem.
struct Pod {
    /// Behind a lock so that probes of [`wait_for`] and the failure's context (the log) can both
    /// borrow the pod.
    child: Mutex<Option<Child>>,
    port: u16,
    /// The host directory behind the image's cache directory.
    cache: PathBuf,
    log: PathBuf,
}

/// Run by `unshare --mount` as root: in the new mount namespace, the root filesystem becomes
/// read-only, the cache and the ServiceAccount directory are bound over their mount points, then
/// `chroot` becomes 65532 (no supplementary groups) and execs the entrypoint, keeping the pid.
const MOUNT_AND_RUN: &str = r#"set -eu
rootfs=$1 cache=$2 account=$3 user=$4; shift 4
mount --bind "$rootfs" "$rootfs"
mount --bind "$cache" "$rootfs/var/cache/shopset"
mount --bind "$account" "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$rootfs"
exec chroot --userspec="$user" --groups= "$rootfs" "$@"
"#;

impl Pod {
    fn start(cp: &ControlPlane, image: &Image, deployment: &Deployment, rootfs: &Path, dir: &Path) -> Pod {
        let cache = dir.join("cache");
        fs::create_dir(&cache).expect("create the cache dir");
        std::os::unix::fs::chown(&cache, Some(NONROOT), Some(NONROOT)).expect("chown the cache dir");
        // What the kubelet projects into a pod of the ServiceAccount.
        let account = dir.join("serviceaccount");
        fs::create_dir(&account).expect("create the ServiceAccount dir");
        let token = cp.kubectl_ok(["create", "token", "shopset-controller", "-n", "shopset-system", "--duration=1h"]);
        let ca = fs::read(cp.dir().join("pki/ca.crt")).expect("read the control plane's CA");
        for (file, content) in [("token", token.trim().as_bytes()), ("ca.crt", &ca), ("namespace", b"shopset-system")] {
            fs::write(account.join(file), content).expect("write the ServiceAccount files");
        }
        // Mount points, as a container runtime makes them; the image has the cache's.
        fs::create_dir_all(rootfs.join(&SERVICE_ACCOUNT[1..])).expect("create the ServiceAccount mount point");

        let port = free_port();
        let args: Vec<String> = deployment
            .args
            .iter()
            .map(|a| if a.starts_with("--listen=") { format!("--listen=127.0.0.1:{port}") } else { a.clone() })
            .collect();
        assert!(args.contains(&format!("--cache-dir={CACHE}")), "the Deployment's args: {args:?}");
        let api = cp.server().strip_prefix("https://").expect("the API server's URL is https");
        let (host, api_port) = api.rsplit_once(':').expect("the API server's URL has a port");
        let log = dir.join("controller.log");
        let file = File::create(&log).expect("create the controller log");
        // unshare, sh, mount and chroot are found on the image's PATH, a standard one.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", MOUNT_AND_RUN, "sh"])
            .arg(rootfs)
            .arg(&cache)
            .arg(&account)
            .arg(format!("{NONROOT}:{NONROOT}"))
            .args(&image.entrypoint)
            .args(&args)
            // The image's env, the Deployment's, and what the kubelet adds: nothing of ours.
            .env_clear()
            .envs(image.env.iter().filter_map(|kv| kv.split_once('=')))
            .envs(deployment.env.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k, v)))
            .env("POD_NAME", "shopset-controller-image")
            .env("POD_NAMESPACE", "shopset-system")
            .env("HOSTNAME", "shopset-controller-image")
            .env("HOME", "/nonexistent")
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", api_port)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file);
        let child = cmd.spawn().expect("spawn unshare");
        Pod { child: Mutex::new(Some(child)), port, cache, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pid(&self) -> u32 {
        self.child().as_ref().expect("running").id()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&self) {
        let status = self.child().as_mut().expect("started").try_wait().expect("poll the controller");
        if let Some(status) = status {
            panic!("the controller exited ({status}):\n{}", self.log());
        }
    }

    /// The process (the entrypoint itself: unshare, sh and chroot exec) runs as 65532 with no
    /// groups or capabilities, chrooted to the root filesystem, where only the cache is writable.
    fn check_identity_and_mounts(&self, rootfs: &Path) {
        let pid = self.pid();
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let exe = wait_for(
            "the controller to exec the entrypoint",
            Duration::from_secs(30),
            || {
                self.assert_running();
                let exe = fs::read_link(proc.join("exe")).ok()?;
                exe.ends_with(&ENTRYPOINT[1..]).then_some(exe)
            },
            || self.log(),
        );
        assert_eq!(exe, rootfs.join(&ENTRYPOINT[1..]), "the process runs the image's entrypoint");
        assert_eq!(fs::read_link(proc.join("root")).expect("read its root"), rootfs, "the process's root");
        let status = fs::read_to_string(proc.join("status")).expect("read its status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let id = format!("{NONROOT} {NONROOT} {NONROOT} {NONROOT}");
        assert_eq!(field("Uid"), id, "real, effective, saved, fs UID");
        assert_eq!(field("Gid"), id, "real, effective, saved, fs GID");
        assert_eq!(field("Groups"), "", "supplementary groups");
        for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(field(caps), "0000000000000000", "{caps}");
        }
        // What it sees mounted (only what is under its root): mount point and rw/ro.
        let mountinfo = fs::read_to_string(proc.join("mountinfo")).expect("read its mountinfo");
        let mounts: BTreeSet<(String, String)> = mountinfo
            .lines()
            .map(|l| {
                let fields: Vec<&str> = l.split(' ').collect();
                let rw = fields[5].split(',').next().unwrap_or_default();
                (fields[4].to_string(), rw.to_string())
            })
            .collect();
        let expected: BTreeSet<(String, String)> =
            [("/", "ro"), (CACHE, "rw"), (SERVICE_ACCOUNT, "ro")].map(|(p, o)| (p.to_string(), o.to_string())).into();
        assert_eq!(mounts, expected, "its mounts:\n{mountinfo}");
    }

    /// SIGTERM (the kubelet's stop), and a clean exit.
    fn stop(&self) {
        let mut child = self.child().take().expect("running");
        // Our own child, by its pid.
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let log = &self.log;
        let status = wait_for(
            "the controller to exit on SIGTERM",
            Duration::from_secs(30),
            || child.try_wait().expect("poll the controller"),
            || fs::read_to_string(log).unwrap_or_default(),
        );
        assert!(status.success(), "the controller exited with {status} on SIGTERM:\n{}", self.log());
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
