//! `shopctl sync` against real git servers on loopback: the example app and configuration are
//! seeded on `main`, the example manifests point at them, and every check reads the server's
//! repositories with the git CLI (never through ShopSet's own git engine).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{Fixture, example_manifest, line_starting, short, tier_section};
use serde::Deserialize as _;
use shopset_e2e::gitserver::{branch_head, clone_recursive, commit_files, log, ls_remote, remove_files};
use shopset_e2e::tools::{kubectl, kustomize};

/// `git ls-tree -r <rev>` of the system repository: path -> (mode, sha).
fn ls_tree(f: &Fixture, rev: &str) -> BTreeMap<String, (String, String)> {
    f.system_git(&["ls-tree", "-r", rev])
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').expect("ls-tree line has a tab");
            let mut meta = meta.split(' ');
            let (mode, _kind, sha) = (meta.next().unwrap(), meta.next().unwrap(), meta.next().unwrap());
            (path.to_string(), (mode.to_string(), sha.to_string()))
        })
        .collect()
}

/// Full message of the head commit of a system branch.
fn head_message(f: &Fixture, branch: &str) -> String {
    f.system_git(&["log", "-1", "--format=%B", branch])
}

/// ls-remote of the three repositories.
fn remote_refs(f: &Fixture) -> BTreeMap<String, BTreeMap<String, String>> {
    ["app", "config", "system"].into_iter().map(|r| (r.to_string(), ls_remote(&f.read_url(r)))).collect()
}

fn manifests_arg(f: &Fixture) -> String {
    f.manifests().to_str().expect("UTF-8 path").to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. First sync, no-op sync, dry run, JSON

#[test]
fn first_sync_creates_tier_branches_from_main_and_pins_them_as_gitlinks() {
    let f = Fixture::daemon();
    let app_main = branch_head(&f.app, "main").expect("app main");
    let config_main = branch_head(&f.config, "main").expect("config main");

    let run = f.sync_ok(&["--tier", "tier-0"]);
    let out = tier_section(&run.stdout, "tier-0");

    // The human-owned tier branches are created at the default branch's head, and say so.
    assert!(
        line_starting(out, "app ")
            .ends_with(&format!("created branch from main (default branch) at {}", short(&app_main))),
        "{run}"
    );
    assert!(
        line_starting(out, "config/shop-config ")
            .ends_with(&format!("created branch from main (default branch) at {}", short(&config_main))),
        "{run}"
    );
    assert_eq!(branch_head(&f.app, "tier-0").as_deref(), Some(app_main.as_str()));
    assert_eq!(branch_head(&f.config, "tier-0").as_deref(), Some(config_main.as_str()));

    // The system branch exists, holds one commit, and the report names it.
    let system_head = branch_head(&f.system, "tier-0").expect("system tier-0 created");
    assert_eq!(log(&f.system, "tier-0").len(), 1);
    assert!(line_starting(out, "committed ").starts_with(&format!("committed {} ", short(&system_head))), "{run}");

    // Gitlinks (mode 160000) pin the app and the configuration at their tier heads.
    let tree = ls_tree(&f, "tier-0");
    assert_eq!(tree.get("base"), Some(&("160000".to_string(), app_main.clone())), "{tree:#?}");
    assert_eq!(tree.get("config/shop-config"), Some(&("160000".to_string(), config_main.clone())), "{tree:#?}");
    assert_eq!(tree.values().filter(|(mode, _)| mode == "160000").count(), 2, "{tree:#?}");
    for path in [
        "shopsets/canary-eu/kustomization.yaml",
        "applications/canary-eu.yaml",
        "applications/canary-us.yaml",
        "README.md",
    ] {
        assert!(tree.contains_key(path), "{path} missing: {tree:#?}");
    }

    // .gitmodules names both submodules, with their URLs and tier branch.
    let modules = f.system_git(&["config", "--blob", "tier-0:.gitmodules", "--list"]);
    for expected in [
        "submodule.base.path=base".to_string(),
        format!("submodule.base.url={}", f.app),
        "submodule.base.branch=tier-0".to_string(),
        "submodule.config/shop-config.path=config/shop-config".to_string(),
        format!("submodule.config/shop-config.url={}", f.config),
        "submodule.config/shop-config.branch=tier-0".to_string(),
    ] {
        assert!(modules.lines().any(|l| l == expected), "{expected:?} not in .gitmodules:\n{modules}");
    }
}

#[test]
fn second_sync_without_changes_makes_no_commit() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    let before = remote_refs(&f);
    let head = branch_head(&f.system, "tier-0").expect("system tier-0");

    let run = f.sync_ok(&["--tier", "tier-0"]);

    assert!(run.stdout.contains(&format!("no change: system branch already at {}", short(&head))), "{run}");
    assert!(!run.stdout.contains("committed"), "{run}");
    assert_eq!(remote_refs(&f), before, "a sync without changes moved a branch");
    assert_eq!(log(&f.system, "tier-0").len(), 1);
}

#[test]
fn dry_run_on_fresh_repositories_writes_nothing_but_shows_the_diff() {
    let f = Fixture::daemon();
    let app_main = branch_head(&f.app, "main").expect("app main");
    let before = remote_refs(&f);

    let run = f.sync_ok(&["--tier", "tier-0", "--dry-run"]);

    assert_eq!(remote_refs(&f), before, "a dry run changed a repository:\n{run}");
    let out = tier_section(&run.stdout, "tier-0");
    assert!(line_starting(out, "app ").contains("would create branch from main (default branch)"), "{run}");
    assert!(
        line_starting(out, "config/shop-config ").contains("would create branch from main (default branch)"),
        "{run}"
    );
    assert!(line_starting(out, "system ").contains("would create branch from"), "{run}");
    assert!(out.contains("would commit:"), "{run}");
    assert!(out.contains("tier-0: first render"), "{run}");
    // The diff of the whole new tree: gitlinks and generated files.
    assert!(out.contains("diff --git a/base b/base"), "{run}");
    assert!(out.contains(&format!("+Subproject commit {app_main}")), "{run}");
    assert!(
        out.contains("diff --git a/shopsets/canary-eu/kustomization.yaml b/shopsets/canary-eu/kustomization.yaml"),
        "{run}"
    );
    assert!(out.contains("+  - \"SHOP_IDS=shop-0001,shop-0002\""), "{run}");
    assert!(!out.contains("committed"), "{run}");
}

#[test]
fn json_output_parses_and_names_the_commit() {
    let f = Fixture::daemon();
    let app_main = branch_head(&f.app, "main").expect("app main");

    let run = f.shopctl(&["-o", "json", "sync", "-f", &manifests_arg(&f), "--tier", "tier-0"]).success();

    let reports: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let report = &reports.as_array().expect("a list of reports")[0];
    let head = branch_head(&f.system, "tier-0").expect("system tier-0");
    assert_eq!(report["tier"], "tier-0");
    assert_eq!(report["dryRun"], false);
    assert_eq!(report["commit"], head.as_str(), "{report:#}");
    assert_eq!(report["head"], head.as_str(), "{report:#}");
    assert_eq!(report["pins"]["app"], app_main.as_str(), "{report:#}");
    let app = report["branches"].as_array().unwrap().iter().find(|b| b["repository"] == "app").expect("app branch");
    assert_eq!(app["createdFrom"], "main (default branch)", "{report:#}");
    assert!(report["message"].as_str().unwrap().starts_with("tier-0: first render"), "{report:#}");
}

#[test]
fn progress_shows_on_a_terminal_and_never_in_a_pipe_or_json() {
    let f = Fixture::daemon();

    // On a terminal: each tier as it is synced, with how many are left; the report on stdout.
    let run = f.shopctl_in_terminal(&["sync", "-f", &manifests_arg(&f)], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.terminal.contains("syncing tier-0 (2 left)"), "{run}");
    assert!(run.terminal.contains("syncing tier-1 (1 left)"), "{run}");
    assert!(!run.stdout.contains("syncing"), "progress went to stdout:\n{run}");
    for tier in ["tier-0", "tier-1"] {
        assert!(run.stdout.contains(&format!("Tier {tier} (branch {tier})")), "{run}");
    }

    // Piped: nothing but the report.
    let piped = f.sync_ok(&[]);
    assert_eq!(piped.stderr, "", "{piped}");
    assert!(piped.stdout.contains("Tier tier-1 (branch tier-1)"), "{piped}");

    // JSON or YAML on a terminal: no progress either.
    for format in ["json", "yaml"] {
        let run = f.shopctl_in_terminal(&["-o", format, "sync", "-f", &manifests_arg(&f)], &[]);
        assert_eq!(run.code, Some(0), "{run}");
        assert_eq!(run.terminal, "", "{run}");
        assert!(run.stdout.contains("tier-1"), "{run}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Promotion: tier-1 from tier-0

#[test]
fn tier_1_branches_are_created_from_tier_0_heads() {
    let f = Fixture::daemon();

    let run = f.sync_ok(&[]);

    let out = tier_section(&run.stdout, "tier-1");
    for repo in ["app ", "config/shop-config ", "system "] {
        assert!(line_starting(out, repo).contains("created branch from tier-0 (promotion.from)"), "{repo}:\n{run}");
    }
    assert_eq!(branch_head(&f.app, "tier-1"), branch_head(&f.app, "tier-0"));
    assert_eq!(branch_head(&f.config, "tier-1"), branch_head(&f.config, "tier-0"));
    // The system branch of tier-1 grows from tier-0's, with tier-1's own overlays.
    let system0 = branch_head(&f.system, "tier-0").expect("system tier-0");
    assert_eq!(f.system_git(&["rev-parse", "tier-1^"]), system0);
    let tree = ls_tree(&f, "tier-1");
    assert_eq!(tree["base"], ls_tree(&f, "tier-0")["base"]);
    assert!(
        tree.contains_key("shopsets/eu-west/kustomization.yaml") && tree.contains_key("shopsets/us-east/replicas.yaml"),
        "{tree:#?}"
    );
    assert!(!tree.keys().any(|p| p.starts_with("shopsets/canary-")), "tier-0's ShopSets leaked into tier-1: {tree:#?}");
}

#[test]
fn app_commit_on_tier_0_bumps_only_tier_0_with_a_readable_message() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);
    let tier1_before: Vec<Option<String>> =
        [&f.app, &f.config, &f.system].iter().map(|u| branch_head(u, "tier-1")).collect();
    let tier1_heads =
        || -> Vec<Option<String>> { [&f.app, &f.config, &f.system].iter().map(|u| branch_head(u, "tier-1")).collect() };

    // One commit.
    let old = branch_head(&f.app, "tier-0").expect("app tier-0");
    let new = commit_files(&f.app, "tier-0", &[("base/NOTES.md", "first\n")], "app: one change");
    let system_before = branch_head(&f.system, "tier-0").expect("system tier-0");
    let run = f.sync_ok(&[]);

    let system_after = branch_head(&f.system, "tier-0").expect("system tier-0");
    assert_ne!(system_after, system_before, "tier-0 did not move:\n{run}");
    assert_eq!(f.system_git(&["rev-parse", "tier-0^"]), system_before, "the bump is one commit on top");
    assert_eq!(ls_tree(&f, "tier-0")["base"].1, new);
    let line = format!("app: {} -> {} (1 commit)", short(&old), short(&new));
    assert_eq!(log(&f.system, "tier-0")[0].1, format!("tier-0: {line}"));
    assert!(head_message(&f, "tier-0").lines().any(|l| l == line), "{}", head_message(&f, "tier-0"));
    assert_eq!(tier1_heads(), tier1_before, "tier-1 moved without a promotion");
    assert!(tier_section(&run.stdout, "tier-1").contains("no change"), "{run}");

    // Two commits.
    let old = new;
    commit_files(&f.app, "tier-0", &[("base/NOTES.md", "second\n")], "app: two");
    let new = commit_files(&f.app, "tier-0", &[("base/NOTES.md", "third\n")], "app: three");
    f.sync_ok(&[]);
    let line = format!("app: {} -> {} (2 commits)", short(&old), short(&new));
    assert_eq!(log(&f.system, "tier-0")[0].1, format!("tier-0: {line}"));
    assert!(head_message(&f, "tier-0").lines().any(|l| l == line), "{}", head_message(&f, "tier-0"));
    assert_eq!(tier1_heads(), tier1_before, "tier-1 moved without a promotion");
}

// ---------------------------------------------------------------------------------------------
// 3. ShopSets removed, added, changed

/// The example ShopSets, minus those named in `drop`, plus `extra` documents.
fn shopsets_yaml(drop: &[&str], extra: &str) -> String {
    let text = example_manifest("shopsets.yaml");
    let mut docs: Vec<&str> = text
        .split("\n---\n")
        .filter(|doc| !drop.iter().any(|name| doc.contains(&format!("  name: {name}\n"))))
        .collect();
    if !extra.is_empty() {
        docs.push(extra);
    }
    docs.join("\n---\n")
}

#[test]
fn removed_shopset_loses_its_overlay_and_application() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    assert!(ls_tree(&f, "tier-0").contains_key("shopsets/canary-us/kustomization.yaml"));

    f.write_manifest("shopsets.yaml", &shopsets_yaml(&["canary-us"], ""));
    let run = f.sync_ok(&["--tier", "tier-0"]);

    let tree = ls_tree(&f, "tier-0");
    assert!(!tree.keys().any(|p| p.starts_with("shopsets/canary-us/")), "{tree:#?}");
    assert!(!tree.contains_key("applications/canary-us.yaml"), "{tree:#?}");
    assert!(
        tree.contains_key("shopsets/canary-eu/kustomization.yaml") && tree.contains_key("applications/canary-eu.yaml"),
        "{tree:#?}"
    );
    let message = head_message(&f, "tier-0");
    assert!(message.lines().any(|l| l == "shopsets removed: canary-us"), "{message}");
    assert!(message.lines().any(|l| l == "removed: shopsets/canary-us/, applications/canary-us.yaml"), "{message}");
    assert!(message.lines().next().unwrap().contains("shopsets removed: canary-us"), "{message}");
    assert!(!message.contains("shopsets changed") && !message.contains("shopsets added"), "{message}");
    assert!(run.stdout.contains("shopsets removed: canary-us"), "{run}");
}

#[test]
fn added_and_changed_shopsets_are_named_in_the_commit() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);

    let apac = "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: canary-apac\nspec:\n  tier: tier-0\n  configuration: shop-config\n  shops: [shop-2001]\n";
    f.write_manifest("shopsets.yaml", &shopsets_yaml(&[], apac));
    f.sync_ok(&["--tier", "tier-0"]);
    let tree = ls_tree(&f, "tier-0");
    assert!(
        tree.contains_key("shopsets/canary-apac/kustomization.yaml")
            && tree.contains_key("applications/canary-apac.yaml"),
        "{tree:#?}"
    );
    let message = head_message(&f, "tier-0");
    assert!(message.lines().next().unwrap().contains("shopsets added: canary-apac"), "{message}");
    assert!(!message.contains("shopsets changed") && !message.contains("shopsets removed"), "{message}");

    let changed =
        shopsets_yaml(&[], apac).replace("shops: [shop-0001, shop-0002]", "shops: [shop-0001, shop-0002, shop-0003]");
    f.write_manifest("shopsets.yaml", &changed);
    f.sync_ok(&["--tier", "tier-0"]);
    let message = head_message(&f, "tier-0");
    assert!(message.lines().next().unwrap().contains("shopsets changed: canary-eu"), "{message}");
    assert!(message.lines().any(|l| l == "shopsets changed: canary-eu"), "only canary-eu changed:\n{message}");
    let kustomization = f.system_git(&["show", "tier-0:shopsets/canary-eu/kustomization.yaml"]);
    assert!(kustomization.contains("\"SHOP_IDS=shop-0001,shop-0002,shop-0003\""), "{kustomization}");
}

// ---------------------------------------------------------------------------------------------
// 4. Paths people keep on the system branch

/// Files a person keeps on a system branch, outside ShopSet's paths.
const KEPT: &[(&str, &str)] = &[
    ("NOTES.md", "# Incident 2026-11-02\n\ncanary-eu scaled by hand, see the ticket.\n"),
    (".github/CODEOWNERS", "* @acme/platform\nshopsets/ @acme/shops\n"),
];

/// Asserts the system branch holds the files of [`KEPT`], byte for byte.
fn assert_kept(f: &Fixture, step: &str) {
    for (path, content) in KEPT {
        let out = Command::new("git")
            .current_dir(f.repo_path("system"))
            .args(["cat-file", "blob", &format!("tier-0:{path}")])
            .output()
            .expect("run git");
        assert!(out.status.success(), "{step}: {path} is gone: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), *content, "{step}: {path} changed");
    }
}

#[test]
fn files_a_person_adds_outside_shopsets_paths_are_kept_by_every_sync() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    let theirs = commit_files(&f.read_url("system"), "tier-0", KEPT, "notes and owners, by hand");

    // Nothing of ShopSet's changed: no commit, and the person's files stay.
    let run = f.sync_ok(&["--tier", "tier-0"]);
    assert!(run.stdout.contains("no change: system branch already at"), "{run}");
    assert_eq!(branch_head(&f.system, "tier-0").as_deref(), Some(theirs.as_str()), "{run}");
    assert_kept(&f, "no-op sync");

    // A new app commit: the sync commits, keeping them, and its message does not name them.
    let checkout = example_manifest("app/base/checkout.yaml").replace("checkout:1.0.0", "checkout:1.2.0");
    commit_files(&f.read_url("app"), "tier-0", &[("base/checkout.yaml", &checkout)], "Bump checkout");
    let run = f.sync_ok(&["--tier", "tier-0"]);
    assert!(run.stdout.contains("committed"), "{run}");
    assert_kept(&f, "sync of a new app commit");
    let message = head_message(&f, "tier-0");
    assert!(!message.contains("NOTES.md") && !message.contains("CODEOWNERS"), "{message}");
    assert!(
        !message.contains("restored") && !message.contains("rewritten"),
        "nobody edited ShopSet's files:\n{message}"
    );

    // A dry run has nothing to say about them either.
    let run = f.sync_ok(&["--tier", "tier-0", "--dry-run"]);
    assert!(run.stdout.contains("no change: the system branch is up to date"), "{run}");
}

#[test]
fn a_new_tier_branch_is_the_render_alone_not_the_files_kept_on_its_source() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    let theirs = commit_files(&f.read_url("system"), "tier-0", KEPT, "notes and owners, by hand");

    // tier-1's system branch starts on tier-0's (its promotion source), as the runbook's first
    // render starts from nothing: the person's files of tier-0 are not carried over.
    f.sync_ok(&["--tier", "tier-1"]);
    assert_eq!(f.system_git(&["rev-parse", "tier-1^"]), theirs, "parented on tier-0's head");
    let tree = ls_tree(&f, "tier-1");
    assert!(tree.keys().all(|p| shopset::render::is_owned(p)), "{tree:#?}");
    assert_kept(&f, "tier-0 after tier-1's first sync");
}

#[test]
fn generated_files_edited_or_deleted_by_hand_are_restored_and_named() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    let rendered = ls_tree(&f, "tier-0");
    let system = f.read_url("system");
    commit_files(&system, "tier-0", KEPT, "notes and owners, by hand");
    let kustomization = f.system_git(&["show", "tier-0:shopsets/canary-eu/kustomization.yaml"]);
    commit_files(
        &system,
        "tier-0",
        &[
            ("shopsets/canary-eu/kustomization.yaml", &format!("{kustomization}\n# scaled up by hand\n")),
            ("shopsets/canary-eu/extra.yaml", "kind: ConfigMap\n"),
        ],
        "canary-eu: hand edit",
    );
    remove_files(&system, "tier-0", &["applications/canary-us.yaml"], "canary-us: deleted by hand");

    let run = f.sync_ok(&["--tier", "tier-0"]);
    assert!(run.stdout.contains("committed"), "{run}");

    // ShopSet's paths are the render again (the extra file under shopsets/ goes); the rest stays.
    let tree = ls_tree(&f, "tier-0");
    let (ours, theirs): (BTreeMap<_, _>, BTreeMap<_, _>) =
        tree.into_iter().partition(|(p, _)| shopset::render::is_owned(p));
    assert_eq!(ours, rendered, "ShopSet's paths differ from the render");
    assert_eq!(theirs.keys().map(String::as_str).collect::<Vec<_>>(), [".github/CODEOWNERS", "NOTES.md"]);
    assert_kept(&f, "restoring sync");
    let message = head_message(&f, "tier-0");
    assert!(
        message.lines().any(|l| l == "restored: applications/canary-us.yaml, shopsets/canary-eu/kustomization.yaml"),
        "{message}"
    );
    assert!(message.lines().any(|l| l == "dropped: shopsets/canary-eu/extra.yaml"), "{message}");
    assert!(!message.contains("removed") && !message.contains("shopsets changed"), "{message}");

    // The ShopSet removed from the manifests: its files go, and only they are "removed".
    f.write_manifest("shopsets.yaml", &shopsets_yaml(&["canary-us"], ""));
    f.sync_ok(&["--tier", "tier-0"]);
    let tree = ls_tree(&f, "tier-0");
    assert!(!tree.keys().any(|p| p.contains("canary-us")), "{tree:#?}");
    assert_kept(&f, "sync of a removed ShopSet");
    let message = head_message(&f, "tier-0");
    assert!(message.lines().any(|l| l == "removed: shopsets/canary-us/, applications/canary-us.yaml"), "{message}");
    assert!(!message.contains("restored"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// 5. A push the server refuses

#[test]
fn push_rejected_by_the_server_is_reported_with_its_reason() {
    let f = Fixture::daemon();
    f.sync_ok(&["--tier", "tier-0"]);
    commit_files(&f.app, "tier-0", &[("base/NOTES.md", "change\n")], "app change");
    let hook = f.repo_path("system").join("hooks").join("pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'frozen-for-audit: system branches are locked until Monday'\nexit 1\n")
        .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = remote_refs(&f);

    let run = f.shopctl(&["sync", "-f", &manifests_arg(&f), "--tier", "tier-0"]).failure(1);

    let error = line_starting(&run.stderr, "error:");
    assert!(error.contains("branch tier-0"), "{run}");
    assert!(error.contains("rejected"), "{run}");
    assert!(error.contains(&f.system), "{run}");
    assert!(
        run.stderr.contains("frozen-for-audit: system branches are locked until Monday"),
        "the server's reason is missing:\n{run}"
    );
    assert_eq!(remote_refs(&f), before, "something moved after a rejected push");
}

// ---------------------------------------------------------------------------------------------
// 6. Credentials over smart HTTP

const USER: &str = "shop-bot";
const PASSWORD: &str = "pw-right-7f3a91c2e8";
const WRONG: &str = "pw-wrong-b2d4e6f8a0";

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn write_secret(f: &Fixture, body: &str) -> String {
    let path = f.work.path().join("git-credentials.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: git-credentials\ntype: Opaque\n{body}"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// A sync over HTTP that must succeed and write the system branch.
fn assert_http_sync_succeeds(f: &Fixture, args: &[&str], env: &[(&str, &str)]) {
    let mut all = vec!["sync", "-f"];
    let manifests = manifests_arg(f);
    all.push(&manifests);
    all.extend_from_slice(&["--tier", "tier-0"]);
    all.extend_from_slice(args);
    let run = f.shopctl_env(&all, env).success();
    assert!(f.app.starts_with("http://127.0.0.1:") && !f.app.contains('@'));
    let head = branch_head(&f.read_url("system"), "tier-0").unwrap_or_else(|| panic!("no system branch:\n{run}"));
    assert!(run.stdout.contains(&format!("committed {}", short(&head))), "{run}");
    assert!(branch_head(&f.read_url("app"), "tier-0").is_some());
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD), "password printed:\n{run}");
}

#[test]
fn http_credentials_from_secret_string_data() {
    let f = Fixture::http(USER, PASSWORD);
    let secret = write_secret(&f, &format!("stringData:\n  username: {USER}\n  password: {PASSWORD}\n"));
    assert_http_sync_succeeds(&f, &["--credentials", &secret], &[]);
}

#[test]
fn http_credentials_from_secret_base64_data() {
    let f = Fixture::http(USER, PASSWORD);
    let secret = write_secret(
        &f,
        &format!("data:\n  username: {}\n  password: {}\n", base64(USER.as_bytes()), base64(PASSWORD.as_bytes())),
    );
    assert_http_sync_succeeds(&f, &["--credentials", &secret], &[]);
}

#[test]
fn http_credentials_from_username_and_password_environment() {
    let f = Fixture::http(USER, PASSWORD);
    assert_http_sync_succeeds(&f, &[], &[("SHOPSET_GIT_USERNAME", USER), ("SHOPSET_GIT_PASSWORD", PASSWORD)]);
}

/// A change on the branch's head goes over HTTP as a pack of what the sync wrote, with the
/// credentials of the first request: the server takes it whole and serves the changed overlay.
#[test]
fn http_a_change_is_pushed_with_the_pack_the_sync_wrote() {
    let f = Fixture::http(USER, PASSWORD);
    let env = [("SHOPSET_GIT_USERNAME", USER), ("SHOPSET_GIT_PASSWORD", PASSWORD)];
    assert_http_sync_succeeds(&f, &[], &env);
    let old_head = branch_head(&f.read_url("system"), "tier-0").expect("system tier-0");
    let text = example_manifest("shopsets.yaml").replacen("shops: [shop-1001]", "shops: [shop-1001, shop-1099]", 1);
    f.write_manifest("shopsets.yaml", &text);
    let manifests = manifests_arg(&f);
    let run = f.shopctl_env(&["sync", "-f", &manifests, "--tier", "tier-0"], &env).success();
    assert_eq!(f.system_git(&["rev-parse", "tier-0^"]), old_head, "one commit on the head it found:\n{run}");
    f.system_git(&["fsck", "--strict", "--no-dangling"]);
    let overlay = f.system_git(&["grep", "-l", "shop-1099", "tier-0", "--", "shopsets/"]);
    assert!(!overlay.is_empty(), "the changed overlay is on the server:\n{run}");
}

#[test]
fn http_credentials_from_token_environment() {
    let f = Fixture::http(USER, PASSWORD);
    assert_http_sync_succeeds(&f, &[], &[("SHOPSET_GIT_USERNAME", USER), ("SHOPSET_GIT_TOKEN", PASSWORD)]);
}

#[test]
fn http_wrong_password_fails_without_printing_it_and_writes_nothing() {
    let f = Fixture::http(USER, PASSWORD);
    let before = remote_refs(&f);
    let manifests = manifests_arg(&f);
    let secret = write_secret(&f, &format!("stringData:\n  username: {USER}\n  password: {WRONG}\n"));

    // Debug logging on: not even logs may carry the secret.
    let runs = [
        f.shopctl_env(
            &["-vv", "sync", "-f", &manifests],
            &[("SHOPSET_GIT_USERNAME", USER), ("SHOPSET_GIT_PASSWORD", WRONG)],
        ),
        f.shopctl(&["-vv", "sync", "-f", &manifests, "--credentials", &secret]),
    ];
    for run in runs {
        let run = run.failure(1);
        let error = line_starting(&run.stderr, "error:");
        assert!(error.contains(&format!("authentication to {} failed", f.app)), "{run}");
        for secret in [WRONG, PASSWORD] {
            assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "a password was printed:\n{run}");
        }
    }
    assert_eq!(remote_refs(&f), before, "a failed sync wrote to a repository");
}

/// HTTPS: `shopctl` reads its CA file only when it first connects over HTTP(S), so that a run
/// that never does skips OpenSSL's parse of the whole bundle; it must still trust the CAs of the
/// file `SSL_CERT_FILE` names, and no other.
#[test]
fn https_trusts_the_ca_file_named_and_no_other() {
    let f = Fixture::https(USER, PASSWORD);
    let manifests = manifests_arg(&f);
    assert!(f.app.starts_with("https://127.0.0.1:"), "{}", f.app);
    let ca = f.ca_file().expect("a CA file").to_str().expect("UTF-8 path").to_string();
    // No CA directory to fall back on, and a CA file without the server's CA.
    let (no_dir, other) = (f.work.path().join("no-ca-dir"), f.work.path().join("other-ca.pem"));
    std::fs::create_dir(&no_dir).unwrap();
    std::fs::write(&other, "").unwrap();
    let (no_dir, other) = (no_dir.to_str().expect("UTF-8 path"), other.to_str().expect("UTF-8 path"));
    let run = |file: &str| {
        let env = [
            ("SHOPSET_GIT_USERNAME", USER),
            ("SHOPSET_GIT_PASSWORD", PASSWORD),
            ("SSL_CERT_FILE", file),
            ("SSL_CERT_DIR", no_dir),
        ];
        f.shopctl_env(&["-vv", "sync", "-f", &manifests, "--tier", "tier-0"], &env)
    };

    let refused = run(other).failure(1);
    assert!(line_starting(&refused.stderr, "error:").contains("certificate"), "{refused}");
    assert_eq!(branch_head(&f.read_url("system"), "tier-0"), None, "a refused sync wrote:\n{refused}");

    let synced = run(&ca).success();
    let head = branch_head(&f.read_url("system"), "tier-0").unwrap_or_else(|| panic!("no system branch:\n{synced}"));
    assert!(synced.stdout.contains(&format!("committed {}", short(&head))), "{synced}");
    assert!(synced.stderr.contains("CA file read for HTTP(S) remotes"), "{synced}");
}

/// The other side: a run that speaks only git:// reads no CA file at all (`-vv` logs when it
/// does, as the HTTPS test above checks).
#[test]
fn a_run_without_http_reads_no_ca_file() {
    let f = Fixture::daemon();
    let run = f.shopctl(&["-vv", "sync", "-f", &manifests_arg(&f), "--tier", "tier-0"]).success();
    assert!(run.stderr.contains("sync timings"), "debug logging is on:\n{run}");
    assert!(!run.stderr.contains("CA file"), "{run}");
}

#[test]
fn http_without_credentials_fails_clearly_and_writes_nothing() {
    let f = Fixture::http(USER, PASSWORD);
    let before = remote_refs(&f);

    let run = f.shopctl(&["sync", "-f", &manifests_arg(&f)]).failure(1);

    let error = line_starting(&run.stderr, "error:");
    assert!(error.contains(&format!("authentication to {} failed", f.app)), "{run}");
    assert!(error.contains("no credentials"), "{run}");
    assert!(!run.stderr.contains(PASSWORD), "{run}");
    assert_eq!(remote_refs(&f), before, "a failed sync wrote to a repository");
}

// ---------------------------------------------------------------------------------------------
// 7. The overlays build with real kustomize

struct Expect {
    tier: &'static str,
    name: &'static str,
    namespace: &'static str,
    shops: &'static [&'static str],
    replicas: Option<i64>,
    checkout_image: &'static str,
}

const EXPECTED: &[Expect] = &[
    Expect {
        tier: "tier-0",
        name: "canary-eu",
        namespace: "canary-eu",
        shops: &["shop-0001", "shop-0002"],
        replicas: None,
        checkout_image: "ghcr.io/acme/checkout:1.0.0",
    },
    Expect {
        tier: "tier-0",
        name: "canary-us",
        namespace: "canary-us",
        shops: &["shop-1001"],
        replicas: None,
        checkout_image: "ghcr.io/acme/checkout:1.1.0-rc.1",
    },
    Expect {
        tier: "tier-1",
        name: "eu-west",
        namespace: "eu-west",
        shops: &["shop-0100", "shop-0101", "shop-0102", "shop-0103"],
        replicas: Some(3),
        checkout_image: "ghcr.io/acme/checkout:1.0.0",
    },
    Expect {
        tier: "tier-1",
        name: "us-east",
        namespace: "shops-us-east",
        shops: &["shop-1100", "shop-1101"],
        replicas: Some(2),
        checkout_image: "ghcr.io/acme/checkout:1.0.0",
    },
];

fn build(program: &Path, args: &[&str], dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(program).args(args).arg(dir).output().expect("run kustomize");
    assert!(
        out.status.success(),
        "{} {args:?} {} failed:\n{}",
        program.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("kustomize output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn check_overlay(e: &Expect, docs: &[serde_json::Value], what: &str) {
    let ctx = format!("{what} of ShopSet {}", e.name);
    let named = |kind: &str| docs.iter().filter(move |d| d["kind"] == kind).collect::<Vec<_>>();

    let namespaces = named("Namespace");
    assert_eq!(namespaces.len(), 1, "{ctx}: {namespaces:#?}");
    assert_eq!(namespaces[0]["metadata"]["name"], e.namespace, "{ctx}");
    for doc in docs {
        let id = format!("{ctx}: {} {}", doc["kind"], doc["metadata"]["name"]);
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], e.namespace, "{id}");
        }
        assert_eq!(doc["metadata"]["labels"]["shopset.dev/shopset"], e.name, "{id}");
        assert_eq!(doc["metadata"]["labels"]["shopset.dev/tier"], e.tier, "{id}");
    }

    let config_maps = named("ConfigMap");
    let shopset_cm: Vec<_> = config_maps
        .iter()
        .filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap()
                .strip_prefix("shopset-")
                .is_some_and(|h| h.len() >= 5 && !h.contains('-'))
        })
        .collect();
    assert_eq!(shopset_cm.len(), 1, "{ctx}: one hashed shopset ConfigMap: {config_maps:#?}");
    let shopset_cm = shopset_cm[0];
    let hashed = shopset_cm["metadata"]["name"].as_str().unwrap();
    assert_eq!(shopset_cm["data"]["SHOP_IDS"], e.shops.join(","), "{ctx}");
    assert_eq!(shopset_cm["data"]["SHOPSET_NAME"], e.name, "{ctx}");
    assert_eq!(shopset_cm["data"]["SHOPSET_TIER"], e.tier, "{ctx}");
    let settings: Vec<_> =
        config_maps.iter().filter(|c| c["metadata"]["name"].as_str().unwrap().starts_with("shop-settings-")).collect();
    assert_eq!(settings.len(), 1, "{ctx}: the component's shop-settings ConfigMap: {config_maps:#?}");
    assert_eq!(settings[0]["data"]["CURRENCY"], "EUR", "{ctx}");
    let settings_name = settings[0]["metadata"]["name"].as_str().unwrap();

    let deployments = named("Deployment");
    let names: Vec<&str> = deployments.iter().map(|d| d["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{ctx}: {names:?}");
    for d in &deployments {
        let id = format!("{ctx}: Deployment {}", d["metadata"]["name"]);
        let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["shopset.dev/shopset"], e.name, "{id}: pod template");
        assert_eq!(pod_labels["shopset.dev/tier"], e.tier, "{id}: pod template");
        assert_eq!(d["spec"]["replicas"].as_i64(), Some(e.replicas.unwrap_or(1)), "{id}");
        for c in d["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
            let refs: Vec<&str> =
                c["envFrom"].as_array().unwrap().iter().filter_map(|r| r["configMapRef"]["name"].as_str()).collect();
            assert!(refs.contains(&hashed), "{id}: envFrom {refs:?} misses {hashed}");
            assert!(refs.contains(&settings_name), "{id}: envFrom {refs:?} misses {settings_name}");
            let expected_image =
                if c["name"] == "checkout" { e.checkout_image } else { "ghcr.io/acme/storefront:1.0.0" };
            assert_eq!(c["image"], expected_image, "{id}");
        }
    }
}

#[test]
fn overlays_of_both_tiers_build_with_kustomize_and_kubectl() {
    let f = Fixture::daemon();
    f.sync_ok(&[]);

    for tier in ["tier-0", "tier-1"] {
        let checkout = f.work.path().join(format!("clone-{tier}"));
        clone_recursive(&f.system, tier, &checkout);
        for e in EXPECTED.iter().filter(|e| e.tier == tier) {
            let overlay = checkout.join("shopsets").join(e.name);
            let docs = build(&kustomize(), &["build"], &overlay);
            check_overlay(e, &docs, "kustomize build");
            let docs = build(&kubectl(), &["kustomize"], &overlay);
            check_overlay(e, &docs, "kubectl kustomize");
        }
    }
}
