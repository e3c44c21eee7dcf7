//! `sync_tier` against a real `git daemon`, with a second writer pushing to the system branch by
//! hand (through the `before_push` seam) while a sync is under way. Every check reads the server's
//! repository with the git CLI, never through ShopSet's own git engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use shopset::gitops::{Auth, GitCache};
use shopset::manifests::{Inventory, TierInput};
use shopset::render::{Entry, Pins, RenderInput, Renderer, Tree};
use shopset::sync::{Checkpoint, PushHook, SyncError, SyncOptions, SyncReport, sync_tier};
use shopset_e2e::gitserver::{GitDaemon, branch_head, commit_files, git, seed_dir, try_git};
use shopset_e2e::tools::repo_root;
use tempfile::TempDir;

/// The example app and configuration seeded on `main` of a `git daemon`, an empty system
/// repository, and the example manifests pointing at them.
struct Fixture {
    daemon: GitDaemon,
    app: String,
    system: String,
    work: TempDir,
    input: TierInput,
}

impl Fixture {
    fn start() -> Fixture {
        let daemon = GitDaemon::start();
        let (app, config, system) =
            (daemon.create_repo("app"), daemon.create_repo("config"), daemon.create_repo("system"));
        let examples = repo_root().join("examples");
        seed_dir(&app, "main", &examples.join("app"), "Shop application base");
        seed_dir(&config, "main", &examples.join("config"), "Shared shop configuration");

        let work = TempDir::with_prefix("shopset-sync-test-").expect("create work dir");
        let manifests = work.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        for name in ["configuration.yaml", "shopsets.yaml", "tier-0.yaml", "tier-1.yaml"] {
            let text = std::fs::read_to_string(examples.join(name)).unwrap();
            let text = shopset::quickstart::with_urls(&text, |local| match local {
                "app.git" => app.clone(),
                "config.git" => config.clone(),
                _ => system.clone(),
            });
            std::fs::write(manifests.join(name), text).unwrap();
        }
        let inventory = Inventory::load(&[manifests]).expect("example manifests load");
        inventory.check().expect("example manifests are valid");
        let input = inventory.tier_input("tier-0").expect("tier-0");
        Fixture { daemon, app, system, work, input }
    }

    #[allow(clippy::result_large_err)] // the library's error type, as the library returns it
    fn sync(&self, opts: &SyncOptions) -> Result<SyncReport, SyncError> {
        let cache = GitCache::new(self.work.path().join("cache"));
        sync_tier(&cache, &Auth::default(), &self.input, &Renderer::embedded().unwrap(), opts)
    }

    fn render(&self, pins: &Pins) -> Tree {
        let input = &self.input;
        Renderer::embedded()
            .unwrap()
            .render(RenderInput {
                tier: &input.tier,
                configurations: &input.configurations,
                shopsets: &input.shopsets,
                pins,
            })
            .expect("render")
    }

    fn system_path(&self) -> PathBuf {
        self.daemon.path("system")
    }

    fn system_head(&self) -> String {
        branch_head(&self.system, "tier-0").expect("system branch tier-0")
    }

    fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        try_git(&self.system_path(), &["merge-base", "--is-ancestor", ancestor, of]).is_ok()
    }

    fn message(&self, rev: &str) -> String {
        git(&self.system_path(), &["log", "-1", "--format=%B", rev])
    }

    /// The tree of `rev` in the system repository, read with the git CLI.
    fn tree(&self, rev: &str) -> Tree {
        let repo = self.system_path();
        let mut entries = BTreeMap::new();
        for line in git(&repo, &["ls-tree", "-r", rev]).lines() {
            let (meta, path) = line.split_once('\t').unwrap();
            let meta: Vec<&str> = meta.split(' ').collect();
            let entry = match meta[0] {
                "160000" => Entry::Gitlink(meta[2].to_string()),
                "100644" => Entry::file(blob(&repo, meta[2])),
                other => panic!("unexpected mode {other} for {path}"),
            };
            entries.insert(path.to_string().into(), entry);
        }
        Tree::from_entries(entries)
    }
}

/// The exact bytes of a blob (the `git` helper trims output).
fn blob(repo: &Path, sha: &str) -> Vec<u8> {
    let out = Command::new("git").current_dir(repo).args(["cat-file", "blob", sha]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

use shopset::revision::short;

/// A hook that runs `push` (a person pushing to the system branch by hand) before the attempts
/// for which `when` holds, and records the commits they pushed.
fn second_writer(
    when: impl Fn(u32) -> bool + Send + Sync + 'static,
    push: impl Fn(u32) -> String + Send + Sync + 'static,
) -> (PushHook, Arc<Mutex<Vec<String>>>) {
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let record = pushed.clone();
    let hook: PushHook = Arc::new(move |attempt| {
        if when(attempt) {
            let sha = push(attempt);
            record.lock().unwrap().push(sha);
        }
    });
    (hook, pushed)
}

#[test]
fn commit_added_by_hand_during_a_sync_is_kept_and_the_sync_retries_on_top() {
    let f = Fixture::start();
    f.sync(&SyncOptions::default()).expect("first sync");
    let old_app = branch_head(&f.app, "tier-0").unwrap();
    let new_app = commit_files(&f.app, "tier-0", &[("base/NOTES.md", "change\n")], "app change");

    let system = f.system.clone();
    let (hook, pushed) = second_writer(
        |attempt| attempt == 1,
        move |_| commit_files(&system, "tier-0", &[("NOTES.md", "on call this week: ana\n")], "notes, by hand"),
    );
    let report =
        f.sync(&SyncOptions { before_push: Some(hook), ..SyncOptions::default() }).expect("sync succeeds on attempt 2");

    let theirs = pushed.lock().unwrap()[0].clone();
    let head = f.system_head();
    assert_eq!(report.attempts, 2);
    assert_eq!(report.commit.as_deref(), Some(head.as_str()));
    assert!(f.is_ancestor(&theirs, &head), "the person's commit {theirs} was dropped from tier-0 ({head})");
    assert_eq!(
        git(&f.system_path(), &["rev-parse", &format!("{head}^")]),
        theirs,
        "rebuilt directly on the person's commit"
    );
    // The branch is the render plus the person's file, kept byte for byte; the message says what
    // moved and does not name the person's file.
    let mut expected = f.render(&report.pins);
    expected.entries.insert("NOTES.md".into(), Entry::file("on call this week: ana\n"));
    assert_eq!(f.tree(&head), expected);
    let message = f.message(&head);
    assert!(
        message.lines().any(|l| l == format!("app: {} -> {} (1 commit)", short(&old_app), short(&new_app))),
        "{message}"
    );
    assert!(!message.contains("NOTES.md"), "{message}");
}

#[test]
fn generated_file_edited_by_hand_during_a_sync_is_restored_and_named() {
    let f = Fixture::start();
    f.sync(&SyncOptions::default()).expect("first sync");
    commit_files(&f.app, "tier-0", &[("base/NOTES.md", "change\n")], "app change");

    let (system, repo) = (f.system.clone(), f.system_path());
    let (hook, pushed) = second_writer(
        |attempt| attempt == 1,
        move |_| {
            let readme = git(&repo, &["show", "tier-0:README.md"]);
            commit_files(
                &system,
                "tier-0",
                &[("README.md", &format!("{readme}\n\nHand-edited: do not trust the table above.\n"))],
                "README, by hand",
            )
        },
    );
    let report =
        f.sync(&SyncOptions { before_push: Some(hook), ..SyncOptions::default() }).expect("sync succeeds on attempt 2");

    let theirs = pushed.lock().unwrap()[0].clone();
    let head = f.system_head();
    assert_eq!(report.attempts, 2);
    assert!(f.is_ancestor(&theirs, &head), "the person's commit {theirs} was dropped from tier-0 ({head})");
    assert!(git(&f.system_path(), &["show", &format!("{theirs}:README.md")]).contains("Hand-edited"));
    let expected = f.render(&report.pins);
    assert_eq!(f.tree(&head), expected);
    assert_eq!(Entry::file(blob(&f.system_path(), &format!("{head}:README.md"))), expected.entries["README.md"]);
    let message = f.message(&head);
    // The new app commit changes README.md too: the hand edit is replaced by new content.
    assert!(message.lines().any(|l| l == "files rewritten: README.md"), "{message}");
}

#[test]
fn generated_file_edited_by_hand_between_syncs_is_restored_and_named() {
    let f = Fixture::start();
    let first = f.sync(&SyncOptions::default()).expect("first sync");
    let readme = git(&f.system_path(), &["show", "tier-0:README.md"]);
    let theirs =
        commit_files(&f.system, "tier-0", &[("README.md", &format!("{readme}\nHand-edited.\n"))], "README, by hand");

    let report = f.sync(&SyncOptions::default()).expect("sync");

    let head = f.system_head();
    assert_eq!(report.commit.as_deref(), Some(head.as_str()), "a hand edit of a generated file must be undone");
    assert_eq!(git(&f.system_path(), &["rev-parse", &format!("{head}^")]), theirs);
    assert_eq!(f.tree(&head), f.render(&first.pins));
    let message = f.message(&head);
    // Nothing README.md is made of changed: written back as it was.
    assert!(message.lines().any(|l| l == "restored: README.md"), "{message}");
    assert!(!message.contains("files rewritten"), "{message}");
}

#[test]
fn ordinary_render_change_does_not_claim_files_were_rewritten() {
    let f = Fixture::start();
    f.sync(&SyncOptions::default()).expect("first sync");
    // A new app commit changes the README's table of pinned commits, as every bump does.
    commit_files(&f.app, "tier-0", &[("base/NOTES.md", "change\n")], "app change");

    let report = f.sync(&SyncOptions::default()).expect("sync");

    let message = report.message.expect("a commit");
    assert!(!message.contains("files rewritten"), "nobody edited anything by hand:\n{message}");
    assert!(
        !message.contains("restored") && !message.contains("dropped"),
        "nobody edited anything by hand:\n{message}"
    );
}

#[test]
fn writer_pushing_before_every_attempt_makes_the_sync_give_up_without_forcing() {
    let f = Fixture::start();
    f.sync(&SyncOptions::default()).expect("first sync");
    commit_files(&f.app, "tier-0", &[("base/NOTES.md", "change\n")], "app change");

    let system = f.system.clone();
    let (hook, pushed) = second_writer(
        |_| true,
        move |attempt| {
            commit_files(&system, "tier-0", &[("NOTES.md", &format!("attempt {attempt}\n"))], "notes, by hand")
        },
    );
    let err = f
        .sync(&SyncOptions { before_push: Some(hook), max_attempts: 3, ..SyncOptions::default() })
        .expect_err("must give up");

    match &err {
        SyncError::Contention { tier, branch, url, attempts } => {
            assert_eq!(
                (tier.as_str(), branch.as_str(), url.as_str(), *attempts),
                ("tier-0", "tier-0", f.system.as_str(), 3)
            );
        }
        other => panic!("expected Contention, got {other:?}"),
    }
    assert_eq!(err.reason(), "PushConflict");
    let text = err.to_string();
    assert!(text.contains("tier-0") && text.contains(&f.system) && text.contains("3 attempts"), "{text}");
    // Nothing forced: the other writer's commits are all there, theirs is the head.
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(pushed.len(), 3, "one push by the other writer per attempt");
    let head = f.system_head();
    assert_eq!(&head, pushed.last().unwrap());
    for sha in &pushed {
        assert!(f.is_ancestor(sha, &head), "{sha} was lost");
    }
    assert_eq!(git(&f.system_path(), &["show", "tier-0:NOTES.md"]), "attempt 3");
}

/// `n` copies of the fixture's first ShopSet, named `cell-000`...
fn cells(f: &Fixture, n: usize, shops_of: impl Fn(usize) -> Vec<String>) -> Vec<std::sync::Arc<shopset::api::ShopSet>> {
    (0..n)
        .map(|i| {
            let mut ss = shopset::api::ShopSet::clone(&f.input.shopsets[0]);
            ss.metadata.name = Some(format!("cell-{i:03}"));
            ss.spec.shops = shops_of(i);
            ss.into()
        })
        .collect()
}

#[test]
fn a_first_render_of_many_shopsets_is_stored_as_one_pack_and_pushed_intact() {
    let mut f = Fixture::start();
    f.input.shopsets = cells(&f, 60, |i| vec![format!("shop-{i:04}")]);
    let report = f.sync(&SyncOptions::default()).expect("sync");

    // What the server holds is exactly the render, read back with the git CLI.
    let head = f.system_head();
    assert_eq!(report.head.as_deref(), Some(head.as_str()));
    assert_eq!(f.tree(&head), f.render(&report.pins));
    // Hundreds of new objects went into one pack of the cache, not one file each.
    let (packs, loose) = cache_objects(&f);
    assert_eq!(packs.len(), 1, "the system repository's cache holds the render as one pack: {packs:?}");
    // 60 ShopSets: a directory, two files and an Application each, and the rest.
    assert!(packs[0] > 4 * 60, "{packs:?}");
    assert_eq!(loose, 0, "{loose} loose objects: the commit and its tree should be in the pack");
}

/// The number of objects in each pack file of the cache of the system repository (from the last
/// entry of each index's fan-out table), and its loose objects.
fn cache_objects(f: &Fixture) -> (Vec<u32>, usize) {
    let cache = f.work.path().join("cache");
    let repo = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("system-"))
        .expect("system cache");
    let objects = repo.join("objects");
    let mut packs: Vec<u32> = std::fs::read_dir(objects.join("pack"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "idx"))
        .map(|e| {
            let idx = std::fs::read(e.path()).unwrap();
            // Version 2: magic, version, then 256 cumulative counts.
            u32::from_be_bytes(idx[8 + 255 * 4..8 + 256 * 4].try_into().unwrap())
        })
        .collect();
    packs.sort();
    let loose = std::fs::read_dir(&objects)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().len() == 2)
        .map(|e| std::fs::read_dir(e.path()).unwrap().count())
        .sum();
    (packs, loose)
}

/// A second sync in one process reuses the first one's renderer (its memo of files and blob ids)
/// and repository handle (its parsed trees): it must push the bytes a fresh renderer gives, and
/// still see the pack the first render wrote, or it would store every object again.
#[test]
fn a_second_sync_in_one_process_pushes_fresh_bytes_and_writes_only_what_changed() {
    let mut f = Fixture::start();
    f.input.shopsets = cells(&f, 150, |i| vec![format!("shop-{i:04}")]);
    let renderer = Renderer::embedded().unwrap();
    let cache = GitCache::new(f.work.path().join("cache"));
    sync_tier(&cache, &Auth::default(), &f.input, &renderer, &SyncOptions::default()).expect("first sync");
    let (packs, _) = cache_objects(&f);
    assert_eq!(packs.len(), 1, "the first render is one pack: {packs:?}");

    std::sync::Arc::make_mut(&mut f.input.shopsets[7]).spec.shops.push("shop-9999".into());
    let report =
        sync_tier(&cache, &Auth::default(), &f.input, &renderer, &SyncOptions::default()).expect("second sync");
    let (packs_after, loose) = cache_objects(&f);
    // The changed files, their trees, the README and the commit, as one pack of their own.
    assert_eq!(packs_after.len(), 2, "{packs_after:?}");
    assert!(packs_after[0] <= 8, "{} new objects for one changed ShopSet: unchanged ones stored again", packs_after[0]);
    assert_eq!(loose, 0);

    assert_eq!(report.shopsets.changed, vec!["cell-007".to_string()]);
    assert!(report.shopsets.added.is_empty() && report.shopsets.removed.is_empty(), "{:?}", report.shopsets);
    assert_eq!(f.tree(&f.system_head()), f.render(&report.pins), "a fresh renderer renders what the reused one pushed");
    let message = report.message.expect("a commit");
    assert!(message.lines().any(|l| l == "shopsets changed: cell-007"), "{message}");
}

/// One ShopSet changed costs the same work in a tier of 10 as in a tier of 1,000: the same
/// objects written to the cache, the same objects pushed, the same commit message. Only the two
/// directories that list the tier are larger objects (git writes a directory whole).
#[test]
fn one_change_writes_and_pushes_as_much_among_ten_as_among_a_thousand() {
    // A ShopSet the README of the system branch names at both sizes (it names the first 100, with
    // their shop counts), so that the change rewrites it at both.
    const CHANGED: usize = 5;
    let work = |n: usize| {
        let mut f = Fixture::start();
        f.input.shopsets = cells(&f, n, |i| vec![format!("shop-{i:04}")]);
        let renderer = Renderer::embedded().unwrap();
        let cache = GitCache::new(f.work.path().join("cache"));
        sync_tier(&cache, &Auth::default(), &f.input, &renderer, &SyncOptions::default()).expect("first sync");
        let server = server_objects(&f.system_path());
        std::sync::Arc::make_mut(&mut f.input.shopsets[CHANGED]).spec.shops.push("shop-9999".into());
        let report =
            sync_tier(&cache, &Auth::default(), &f.input, &renderer, &SyncOptions::default()).expect("second sync");
        let (packs, loose) = cache_objects(&f);
        assert_eq!((packs.len(), loose), (2, 0), "one pack of its own for the change: {packs:?}, {loose} loose");
        let after = server_objects(&f.system_path());
        assert_eq!(after.1, server.1, "a new pack on the server: the push sent far more than what changed");
        assert_eq!(report.shopsets.changed, vec![format!("cell-{CHANGED:03}")]);
        (packs[0], after.0 - server.0, report.message.expect("a commit"))
    };
    let (small, large) = (work(10), work(1000));
    assert_eq!(small.0, large.0, "objects written to the cache for one change, among 10 and among 1,000");
    assert_eq!(small.1, large.1, "objects pushed for one change, among 10 and among 1,000");
    assert_eq!(small.2, large.2, "the commit message of one change, among 10 and among 1,000");
}

#[test]
fn a_checkpoint_says_unchanged_until_an_input_or_a_branch_moves() {
    let mut f = Fixture::start();
    let cache = GitCache::new(f.work.path().join("cache"));
    let renderer = Renderer::embedded().unwrap();
    let sync = |input: &TierInput| {
        sync_tier(&cache, &Auth::default(), input, &renderer, &SyncOptions::default()).expect("sync")
    };
    let report = sync(&f.input);
    let checkpoint = Checkpoint::after(&f.input, &report);
    assert!(checkpoint.unchanged(&cache, &Auth::default(), &f.input).expect("ls-remote"));

    commit_files(&f.app, "tier-0", &[("base/NOTES.md", "change\n")], "app change");
    assert!(!checkpoint.unchanged(&cache, &Auth::default(), &f.input).expect("ls-remote"), "the app branch moved");
    let report = sync(&f.input);
    let checkpoint = Checkpoint::after(&f.input, &report);
    assert!(checkpoint.unchanged(&cache, &Auth::default(), &f.input).expect("ls-remote"));

    let replicas = f.input.shopsets[0].spec.replicas;
    std::sync::Arc::make_mut(&mut f.input.shopsets[0]).spec.replicas = Some(7);
    assert!(!checkpoint.unchanged(&cache, &Auth::default(), &f.input).expect("ls-remote"), "a ShopSet changed");
    std::sync::Arc::make_mut(&mut f.input.shopsets[0]).spec.replicas = replicas;
    assert!(checkpoint.unchanged(&cache, &Auth::default(), &f.input).expect("ls-remote"));
    commit_files(&f.system, "tier-0", &[("NOTES.md", "by hand\n")], "notes, by hand");
    assert!(!checkpoint.unchanged(&cache, &Auth::default(), &f.input).expect("ls-remote"), "the system branch moved");
}

/// Loose objects and pack files of a bare repository on the server.
fn server_objects(repo: &Path) -> (usize, usize) {
    let counts = git(repo, &["count-objects", "-v"]);
    let field = |name: &str| {
        counts
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in {counts}"))
    };
    (field("count:"), field("packs:"))
}

/// A push builds its pack against the branch it updates (or, for a new branch, the commit it
/// starts from), not against every branch of the repository: it must still send only what the
/// server lacks, and land intact, with other branches' big trees beside it.
#[test]
fn a_push_sends_only_what_changed_beside_other_branches() {
    use shopset::gitops::RefUpdate;
    let daemon = GitDaemon::start();
    let url = daemon.create_repo("system");
    let work = TempDir::new().unwrap();
    let cache = GitCache::new(work.path().join("cache"));
    let remote = cache.open(&url, &Auth::default()).unwrap();
    let author = git2::Signature::now("test", "test@example.com").unwrap();
    let tree = |n: usize, changed: &str| {
        let mut t = Tree::default();
        for i in 0..n {
            t.entries.insert(format!("shopsets/s{i:03}/k.yaml").into(), Entry::file(format!("{i}\n")));
        }
        t.entries.insert("shopsets/s000/k.yaml".into(), Entry::file(changed));
        t
    };
    let commit = |t: &Tree, parent: Option<git2::Oid>| {
        let id = remote.write_tree(t).unwrap();
        remote.commit(id, parent, "test", &author).unwrap()
    };
    let push = |branch: &str, expected: Option<git2::Oid>, new: git2::Oid| {
        remote.push(&[RefUpdate { branch: branch.into(), expected, new, force: false }]).expect("push");
        assert_eq!(branch_head(&url, branch), Some(new.to_string()), "{branch} landed");
    };
    let big = commit(&tree(200, "big\n"), None);
    push("big", None, big);
    let small = commit(&tree(3, "small\n"), None);
    push("small", None, small);
    let server = daemon.path("system");
    let sent = |before: (usize, usize)| {
        let after = server_objects(&server);
        assert_eq!(after.1, before.1, "a new pack on the server: the push sent far more than what changed");
        after.0 - before.0
    };

    // On the small branch: its changed file, two trees and the commit.
    let before = server_objects(&server);
    let next = commit(&tree(3, "small, changed\n"), Some(small));
    push("small", Some(small), next);
    assert_eq!(sent(before), 5);
    // A new branch started from the big one's head: built against that head, not sent whole.
    let before = server_objects(&server);
    let copy = commit(&tree(200, "copy\n"), Some(big));
    push("copy", None, copy);
    assert_eq!(sent(before), 5);
    // A branch created at a commit the server has: nothing new at all.
    let before = server_objects(&server);
    push("again", None, big);
    assert_eq!(sent(before), 0);
    // A sync's push: a pack of exactly the objects its tree has that its parent's lacks (one
    // file, its two directories, the root) and the commit, whatever the size of the branch.
    let before = server_objects(&server);
    let changed = tree(200, "big, changed\n");
    let hashed = shopset::gitops::HashedTree::new(&changed).unwrap();
    let committed =
        remote.commit_hashed(&hashed, Some(remote.tree_of(big).unwrap()), Some(big), "test", &author).unwrap();
    let next_big = committed.commit;
    let pack = committed.pack.expect("a pack, written on a base");
    let update = RefUpdate { branch: "big".into(), expected: Some(big), new: next_big, force: false };
    remote.push_pack(&update, &pack).expect("push");
    assert_eq!(branch_head(&url, "big"), Some(next_big.to_string()), "big landed");
    assert_eq!(sent(before), 5);
    // Everything is on the server and connected.
    git(&server, &["fsck", "--connectivity-only", "--no-dangling"]);
    assert_eq!(git(&server, &["rev-parse", "copy^"]), big.to_string());
}
