//! Bad input gets a clear error, and nothing is written.
//!
//! `shopctl sync` runs against real repositories on a `git daemon` (the example app and
//! configuration on `main`, an empty system repository), with the example manifests pointing at
//! them and one thing broken per case. Every case checks the exit status (2: invalid input, 1: git
//! failure), that stderr names the resource, the field, the offending value and a `fix:`, and that
//! no repository changed. Cases refused before git is asked also run `shopctl render --offline`,
//! which must say the same words and write nothing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use shopset_e2e::gitserver::{GitDaemon, ls_remote, seed_dir};
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

const SHOPCTL: &str = env!("CARGO_BIN_EXE_shopctl");

/// The example URLs and the repository each stands for.
const EXAMPLE_URLS: &[(&str, &str)] = &[
    ("https://git.example.com/acme/shop-app.git", "app"),
    ("https://git.example.com/acme/shop-config.git", "config"),
    ("https://git.example.com/acme/shop-system.git", "system"),
];

struct Repos {
    daemon: GitDaemon,
    app: String,
    config: String,
    system: String,
    /// A repository without any commit.
    empty: String,
}

impl Repos {
    fn start() -> Repos {
        let daemon = GitDaemon::start();
        let examples = repo_root().join("examples");
        let app = daemon.create_repo("app");
        seed_dir(&app, "main", &examples.join("app"), "app: the example base");
        let config = daemon.create_repo("config");
        seed_dir(&config, "main", &examples.join("config"), "config: the example component");
        let system = daemon.create_repo("system");
        let empty = daemon.create_repo("empty");
        Repos { daemon, app, config, system, empty }
    }

    fn url(&self, repo: &str) -> &str {
        match repo {
            "app" => &self.app,
            "config" => &self.config,
            "system" => &self.system,
            other => panic!("no repository {other}"),
        }
    }

    /// Every branch of every repository.
    fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        [&self.app, &self.config, &self.system, &self.empty]
            .into_iter()
            .map(|url| (url.clone(), ls_remote(url)))
            .collect()
    }

    /// The example manifests (`m/<file>`), pointing at these repositories.
    fn manifests(&self) -> Files {
        let dir = repo_root().join("examples");
        let mut files = BTreeMap::new();
        for name in ["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"] {
            let mut text =
                std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("read examples/{name}: {e}"));
            for (example, repo) in EXAMPLE_URLS {
                text = text.replace(example, self.url(repo));
            }
            files.insert(format!("m/{name}"), text);
        }
        Files(files)
    }
}

/// The files of one case, relative to its work dir: manifests under `m/`, templates under `tpl/`.
struct Files(BTreeMap<String, String>);

impl Files {
    /// Replaces the only occurrence of `from` in `file`; a case that edits nothing is a broken case.
    fn edit(&mut self, file: &str, from: &str, to: &str) {
        let text = self.0.get_mut(file).unwrap_or_else(|| panic!("no file {file}"));
        assert_eq!(text.matches(from).count(), 1, "{from:?} must occur exactly once in {file}:\n{text}");
        *text = text.replacen(from, to, 1);
    }

    fn add(&mut self, file: &str, text: &str) {
        self.0.insert(file.to_string(), text.to_string());
    }

    fn write_to(&self, dir: &Path) {
        for (name, text) in &self.0 {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dir");
            std::fs::write(&path, text).expect("write file");
        }
    }
}

/// How a case changes the valid input.
type Edit = Box<dyn Fn(&mut Files, &Repos)>;
/// What a case's stderr must say, given the repositories' URLs.
type Expect = Box<dyn Fn(&Repos) -> Vec<String>>;

struct Case {
    name: &'static str,
    edit: Edit,
    /// Extra arguments of `shopctl sync`.
    args: &'static [&'static str],
    exit: i32,
    /// Everything stderr must say: resource, field, offending value, what is wrong.
    expect: Expect,
    /// Refused before any repository is asked: `render --offline` must say the same.
    offline: bool,
    /// Words stderr must not contain (secrets).
    never: &'static [&'static str],
}

fn case(
    name: &'static str,
    exit: i32,
    offline: bool,
    edit: impl Fn(&mut Files, &Repos) + 'static,
    expect: impl Fn(&Repos) -> Vec<String> + 'static,
) -> Case {
    Case { name, edit: Box::new(edit), args: &[], exit, expect: Box::new(expect), offline, never: &[] }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A port on loopback that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The embedded `kustomization.yaml` template with one change.
fn kustomization_template(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("templates/kustomization.yaml")).expect("read template");
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once in templates/kustomization.yaml");
    text.replacen(from, to, 1)
}

fn cases() -> Vec<Case> {
    let long_name: &'static str = Box::leak("a".repeat(64).into_boxed_str());
    let port = closed_port();
    let mut cases = vec![
        case(
            "missing app URL",
            2,
            true,
            |f, r| f.edit("m/tier-0.yaml", &format!("    url: {}\n", r.app), ""),
            |_| strings(&["m/tier-0.yaml", "Tier/tier-0", "spec.app.url", "Required value"]),
        ),
        case(
            "URL without a scheme",
            2,
            true,
            |f, r| f.edit("m/tier-0.yaml", &format!("url: {}\n", r.app), "url: 127.0.0.1/app.git\n"),
            |_| strings(&["Tier/tier-0", "spec.app.url", "\"127.0.0.1/app.git\"", "has no scheme"]),
        ),
        Case {
            never: &["s3cr3t-pw"],
            ..case(
                "URL with embedded credentials",
                2,
                true,
                |f, r| {
                    f.edit("m/tier-0.yaml", &format!("url: {}\n", r.system), "url: https://user:s3cr3t-pw@host/x.git\n")
                },
                |_| {
                    strings(&[
                        "Tier/tier-0",
                        "spec.system.url",
                        "\"https://user:<redacted>@host/x.git\"",
                        "must not embed credentials",
                        "spec.credentials",
                    ])
                },
            )
        },
        case(
            "repository unreachable (nothing listens)",
            1,
            false,
            move |f, r| {
                f.edit("m/tier-0.yaml", &format!("url: {}\n", r.app), &format!("url: git://127.0.0.1:{port}/app.git\n"))
            },
            move |_| {
                vec![
                    "Tier/tier-0".into(),
                    "spec.app.url".into(),
                    format!("git://127.0.0.1:{port}/app.git"),
                    "unreachable".into(),
                ]
            },
        ),
        case(
            "repository missing on the server",
            1,
            false,
            |f, r| {
                f.edit(
                    "m/configuration.yaml",
                    &format!("url: {}\n", r.config),
                    &format!("url: {}\n", r.daemon.url("nope")),
                )
            },
            |r| vec!["Tier/tier-0".into(), "Configuration/shop-config spec.url".into(), r.daemon.url("nope")],
        ),
        case(
            "empty app repository, no promotion.from",
            2,
            false,
            |f, r| f.edit("m/tier-0.yaml", &format!("url: {}\n", r.app), &format!("url: {}\n", r.empty)),
            |r| vec!["Tier/tier-0".into(), "spec.app.url".into(), r.empty.clone(), "no branch \"tier-0\"".into()],
        ),
        Case {
            args: &["--tier", "tier-1"],
            ..case(
                "promotion.from branch missing in the app repository",
                2,
                false,
                |_, _| {},
                |r| vec!["Tier/tier-1".into(), "spec.promotion.from".into(), "\"tier-0\"".into(), r.app.clone()],
            )
        },
        case(
            "ShopSet names a missing Tier",
            2,
            true,
            |f, _| {
                f.edit(
                    "m/shopsets.yaml",
                    "name: eu-west\nspec:\n  tier: tier-1",
                    "name: eu-west\nspec:\n  tier: tier-7",
                )
            },
            |_| strings(&["ShopSet/eu-west", "spec.tier", "\"tier-7\"", "does not exist"]),
        ),
        case(
            "ShopSet names a missing Configuration",
            2,
            true,
            |f, _| {
                f.edit(
                    "m/shopsets.yaml",
                    "name: canary-eu\nspec:\n  tier: tier-0\n  configuration: shop-config",
                    "name: canary-eu\nspec:\n  tier: tier-0\n  configuration: shop-konfig",
                )
            },
            |_| strings(&["ShopSet/canary-eu", "spec.configuration", "\"shop-konfig\"", "does not exist"]),
        ),
        case(
            "two ShopSets of one name",
            2,
            true,
            |f, _| f.edit("m/shopsets.yaml", "name: canary-us", "name: canary-eu"),
            |_| strings(&["ShopSet/canary-eu", "metadata.name", "\"canary-eu\"", "defined twice"]),
        ),
        case(
            "duplicate shop IDs",
            2,
            true,
            |f, _| f.edit("m/shopsets.yaml", "[shop-0001, shop-0002]", "[shop-0001, shop-0001]"),
            |_| strings(&["ShopSet/canary-eu", "spec.shops[1]", "\"shop-0001\"", shopset::rules::SHOP_DUPLICATE]),
        ),
        case(
            "maintenance of a shop the ShopSet does not serve",
            2,
            true,
            |f, _| {
                f.edit(
                    "m/shopsets.yaml",
                    "[shop-1001]\n",
                    "[shop-1001]\n  maintenance:\n    reason: disk full\n    since: \"2026-12-01T08:00:00Z\"\n    shops: [shop-0001]\n",
                )
            },
            |_| {
                strings(&[
                    "ShopSet/canary-us",
                    "spec.maintenance.shops",
                    "\"shop-0001\"",
                    shopset::rules::MAINTENANCE_SHOP_NOT_SERVED,
                ])
            },
        ),
        case(
            "maintenance without a reason",
            2,
            true,
            |f, _| {
                f.edit(
                    "m/shopsets.yaml",
                    "[shop-1001]\n",
                    "[shop-1001]\n  maintenance:\n    reason: ''\n    since: \"2026-12-01T08:00:00Z\"\n",
                )
            },
            |_| {
                strings(&[
                    "ShopSet/canary-us",
                    "spec.maintenance.reason",
                    "\"\"",
                    shopset::rules::MAINTENANCE_REASON[0].message,
                ])
            },
        ),
        case(
            "invalid branch name",
            2,
            true,
            |f, _| f.edit("m/tier-0.yaml", "spec:\n  app:", "spec:\n  branch: \"bad..branch\"\n  app:"),
            |_| strings(&["Tier/tier-0", "spec.branch", "\"bad..branch\"", "not a valid git branch name"]),
        ),
        case(
            "app path without a kustomization",
            2,
            false,
            |f, _| f.edit("m/tier-0.yaml", "path: base", "path: no/such/dir"),
            |_| strings(&["Tier/tier-0", "spec.app.path", "\"no/such/dir\"", "kustomization.yaml"]),
        ),
        case(
            "unknown apiVersion",
            2,
            true,
            |f, _| f.edit("m/tier-0.yaml", "apiVersion: shopset.dev/v1alpha1", "apiVersion: shopset.dev/v1beta1"),
            |_| {
                strings(&[
                    "m/tier-0.yaml",
                    "Tier/tier-0",
                    "apiVersion",
                    "\"shopset.dev/v1beta1\"",
                    "use apiVersion shopset.dev/v1alpha1",
                ])
            },
        ),
        case(
            "wrong type",
            2,
            true,
            |f, _| f.edit("m/shopsets.yaml", "replicas: 3", "replicas: three"),
            |_| strings(&["m/shopsets.yaml", "ShopSet/eu-west", "spec.replicas", "\"three\"", "integer"]),
        ),
        case(
            "invalid YAML",
            2,
            true,
            |f, _| f.edit("m/shopsets.yaml", "shops: [shop-1001]", "shops: [shop-1001"),
            |_| strings(&["m/shopsets.yaml", "not valid YAML", "line "]),
        ),
        Case {
            args: &["--templates", "tpl"],
            ..case(
                "template with an undefined variable",
                2,
                true,
                |f, _| {
                    f.add(
                        "tpl/kustomization.yaml",
                        &kustomization_template("namespace: {{ namespace }}", "namespace: {{ namespcae }}"),
                    )
                },
                |_| {
                    strings(&[
                        "template kustomization.yaml",
                        "tpl/kustomization.yaml",
                        "ShopSet/canary-eu",
                        "`namespcae` is undefined",
                        "variables are: ",
                        "namespace",
                    ])
                },
            )
        },
        Case {
            args: &["--templates", "tpl"],
            ..case(
                "template whose output is not YAML",
                2,
                true,
                |f, _| {
                    f.add(
                        "tpl/kustomization.yaml",
                        &kustomization_template("kind: Kustomization\n", "kind: Kustomization\n  - broken: [\n"),
                    )
                },
                |_| {
                    strings(&[
                        "template kustomization.yaml",
                        "tpl/kustomization.yaml",
                        "invalid YAML",
                        "ShopSet/canary-eu",
                        "line ",
                    ])
                },
            )
        },
        Case {
            args: &["--templates", "tpl"],
            ..case(
                "template with a syntax error",
                2,
                true,
                |f, _| f.add("tpl/kustomization.yaml", &kustomization_template("{{ namespace }}", "{{ namespace }")),
                |_| {
                    strings(&[
                        "template kustomization.yaml",
                        "tpl/kustomization.yaml",
                        "syntax error",
                        "kustomization.yaml:",
                    ])
                },
            )
        },
    ];
    cases.push(case(
        "credentials Secret of another namespace",
        2,
        true,
        |f, _| {
            f.edit(
                "m/tier-0.yaml",
                "interval: 1m",
                "interval: 1m\n  credentials:\n    secretRef:\n      name: other-ns/git-credentials",
            )
        },
        |_| {
            strings(&[
                "Tier/tier-0",
                "spec.credentials.secretRef.name",
                "\"other-ns/git-credentials\"",
                shopset::rules::SECRET_OTHER_NAMESPACE,
            ])
        },
    ));
    for (name, problem) in [
        ("EU-West", "must be lower case"),
        ("a/b", "must not contain '/' or '..'"),
        ("..", "must not contain '/' or '..'"),
        (long_name, "must be at most 63 characters long"),
    ] {
        cases.push(case(
            "invalid ShopSet name",
            2,
            true,
            move |f, _| f.edit("m/shopsets.yaml", "name: eu-west", &format!("name: {name:?}")),
            move |_| vec![format!("ShopSet/{name}"), "metadata.name".into(), format!("{name:?}"), problem.into()],
        ));
    }
    cases
}

fn shopctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(SHOPCTL)
        .current_dir(dir)
        .args(args)
        .env_remove("SHOPSET_CACHE_DIR")
        .env_remove("SHOPSET_CREDENTIALS")
        .env_remove("SHOPSET_TEMPLATES")
        .env_remove("RUST_LOG")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run shopctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bad_input_is_refused_clearly_and_writes_nothing() {
    let repos = Repos::start();
    let before = repos.snapshot();
    assert!(before[&repos.system].is_empty(), "the system repository starts empty: {:?}", before[&repos.system]);
    assert!(before[&repos.app].contains_key("refs/heads/main"));

    // Control: the unbroken manifests are fine (a dry run writes nothing).
    {
        let work = TempDir::new().expect("temp dir");
        repos.manifests().write_to(work.path());
        let out = shopctl(
            work.path(),
            &["sync", "-f", "m", "--cache-dir", "cache", "--color", "never", "--dry-run", "--tier", "tier-0"],
        );
        assert!(out.status.success(), "control dry run failed:\n{}", text(&out.stderr));
    }

    let mut failures = Vec::new();
    for case in cases() {
        let work = TempDir::new().expect("temp dir");
        let mut files = repos.manifests();
        (case.edit)(&mut files, &repos);
        files.write_to(work.path());

        let mut args = vec!["sync", "-f", "m", "--cache-dir", "cache", "--color", "never"];
        args.extend(case.args);
        let out = shopctl(work.path(), &args);
        let stderr = text(&out.stderr);
        eprintln!("case {:?}: exit {:?}\n{stderr}", case.name, out.status.code());
        let mut wrong = Vec::new();
        if out.status.code() != Some(case.exit) {
            wrong.push(format!("exit status {:?}, expected {}", out.status.code(), case.exit));
        }
        if !stderr.starts_with("error: ") {
            wrong.push("stderr does not start with `error: `".into());
        }
        let mut expect = (case.expect)(&repos);
        expect.push("fix: ".into());
        for word in &expect {
            if !stderr.contains(word.as_str()) {
                wrong.push(format!("stderr lacks {word:?}"));
            }
        }
        for word in case.never {
            if stderr.contains(word) {
                wrong.push(format!("stderr shows {word:?}"));
            }
        }
        if stderr.contains('\x1b') || stderr.contains("panicked") {
            wrong.push("stderr has colour codes or a panic".into());
        }
        if !out.stdout.is_empty() {
            wrong.push(format!("stdout is not empty: {}", text(&out.stdout)));
        }
        let after = repos.snapshot();
        if after != before {
            wrong.push(format!("repositories changed:\nbefore {before:#?}\nafter {after:#?}"));
        }

        if case.offline {
            let mut args = vec!["render", "--offline", "-f", "m", "--out", "out", "--color", "never"];
            args.extend(case.args);
            let render = shopctl(work.path(), &args);
            if render.status.code() != Some(case.exit) {
                wrong.push(format!("render --offline: exit status {:?}, expected {}", render.status.code(), case.exit));
            }
            if text(&render.stderr) != stderr {
                wrong.push(format!("render --offline says something else:\n{}", text(&render.stderr)));
            }
            let leftovers: Vec<PathBuf> = std::fs::read_dir(work.path())
                .expect("read work dir")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("out")))
                .collect();
            if !leftovers.is_empty() {
                wrong.push(format!("render --offline wrote {leftovers:?}"));
            }
        }

        if !wrong.is_empty() {
            failures.push(format!("case {:?}:\n  {}\n  stderr: {stderr}", case.name, wrong.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));

    // Control: the harness points at working repositories, so the refusals above were the input's fault.
    let work = TempDir::new().expect("temp dir");
    repos.manifests().write_to(work.path());
    let out = shopctl(work.path(), &["sync", "-f", "m", "--cache-dir", "cache", "--color", "never"]);
    assert!(out.status.success(), "sync of the unbroken examples failed:\n{}", text(&out.stderr));
    let system = ls_remote(&repos.system);
    assert!(system.contains_key("refs/heads/tier-0") && system.contains_key("refs/heads/tier-1"), "{system:?}");
}

/// A template that breaks only in a later tier (only tier-1's ShopSets set replicas) must stop the
/// sync before the earlier tier is written, too.
#[test]
fn a_template_error_in_a_later_tier_writes_nothing() {
    let repos = Repos::start();
    let before = repos.snapshot();
    let work = TempDir::new().expect("temp dir");
    let mut files = repos.manifests();
    files.add("tpl/replicas.yaml", "- op: add\n  path: /spec/replicas\n  value: {{ replicaz }}\n");
    files.write_to(work.path());
    let out =
        shopctl(work.path(), &["sync", "-f", "m", "--cache-dir", "cache", "--color", "never", "--templates", "tpl"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for word in ["template replicas.yaml", "tpl/replicas.yaml", "ShopSet/eu-west", "`replicaz` is undefined", "fix: "] {
        assert!(stderr.contains(word), "stderr lacks {word:?}: {stderr}");
    }
    assert_eq!(repos.snapshot(), before, "a repository changed");
}
