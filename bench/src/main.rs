//! The benchmark harness: `cargo run --release -p shopset-bench` (see README, "Benchmarks").
//!
//! Every scenario runs over a real git daemon on loopback; the cluster scenarios start a real
//! control plane and the controller as a process. Results are printed as a table and written,
//! raw, to `bench/results/latest.txt`; `--argocd` runs only the scenarios with a real Argo CD
//! ([`argocd`], `bench/results/argocd.txt`); `--storm` only the storm of webhook deliveries, pushes
//! and edits ([`storm`], `bench/results/storm.txt`). This is a benchmark, not a test: nothing here asserts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shopset::api::{Configuration, ConfigurationSpec, ShopSet, ShopSetSpec, Tier};
use shopset::gitops::{Auth, GitCache};
use shopset::manifests::TierInput;
use shopset::render::{Entry, RenderInput, Renderer};
use shopset::sync::{Checkpoint, SyncOptions, sync_tier};
use shopset_e2e::gitserver::{GitDaemon, commit_files, git, seed_dir};

mod argocd;
mod cluster;
mod fleet;
mod process;
mod storm;

/// One measured scenario.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub samples: Vec<Duration>,
    pub baseline: Option<Vec<Duration>>,
    pub note: String,
}

pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl Row {
    fn render(&self) -> String {
        let (min, max) = (
            self.samples.iter().min().copied().unwrap_or_default(),
            self.samples.iter().max().copied().unwrap_or_default(),
        );
        let ratio = self
            .baseline
            .as_ref()
            .map(|b| format!("{:.1}x faster", median(b).as_secs_f64() / median(&self.samples).as_secs_f64().max(1e-9)))
            .unwrap_or_else(|| "-".into());
        let base = self.baseline.as_ref().map(|b| ms(median(b))).unwrap_or_else(|| "-".into());
        format!(
            "| {} | {} | {} – {} | {} | {} | {} |",
            self.scenario,
            ms(median(&self.samples)),
            ms(min),
            ms(max),
            base,
            ratio,
            self.note
        )
    }
}

/// Manifests of one tier with `n` ShopSets (5 shops, replicas and an image override each).
pub fn tier_input(tier_name: &str, n: usize, app: &str, config: &str, system: &str) -> TierInput {
    let tier: Tier = serde_json::from_value(serde_json::json!({
        "apiVersion": "shopset.dev/v1alpha1", "kind": "Tier",
        "metadata": {"name": tier_name, "namespace": "default"},
        "spec": {"app": {"url": app, "path": "base"}, "system": {"url": system},
                 "argocd": {"syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}}
    }))
    .expect("tier manifest");
    let cfg = Configuration::new("shop-config", ConfigurationSpec { url: config.into(), path: "component".into() });
    let shopsets = (0..n).map(|i| shopset(tier_name, i, 0).into()).collect();
    TierInput { tier, from: None, configurations: vec![cfg], shopsets }
}

/// ShopSet `i` of a tier; `generation` changes its shops.
pub fn shopset(tier: &str, i: usize, generation: usize) -> ShopSet {
    let mut ss = ShopSet::new(
        &format!("{tier}-cell-{i:04}"),
        ShopSetSpec {
            tier: tier.into(),
            configuration: "shop-config".into(),
            shops: (0..5).map(|s| format!("shop-{i:04}-{s}-g{generation}")).collect(),
            replicas: Some(2),
            images: vec![
                serde_json::from_value(serde_json::json!({"name": "ghcr.io/acme/checkout", "newTag": "1.1.0"}))
                    .expect("image"),
            ],
            namespace: None,
            maintenance: None,
            destination: None,
            capacity: None,
        },
    );
    ss.metadata.namespace = Some("default".into());
    ss
}

struct Repos {
    daemon: GitDaemon,
    app: String,
    config: String,
}

fn repos() -> Repos {
    let daemon = GitDaemon::start();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let app = daemon.create_repo("app");
    seed_dir(&app, "tier-0", &examples.join("app"), "app base");
    let config = daemon.create_repo("config");
    seed_dir(&config, "tier-0", &examples.join("config"), "config component");
    Repos { daemon, app, config }
}

fn sync(cache: &GitCache, input: &TierInput, renderer: &Renderer) -> Duration {
    sync_split(cache, input, renderer).0
}

/// One sync of `input`: its wall clock, and that of its push.
fn sync_split(cache: &GitCache, input: &TierInput, renderer: &Renderer) -> (Duration, Duration) {
    let t = Instant::now();
    let report = sync_tier(cache, &Auth::default(), input, renderer, &SyncOptions::default()).expect("sync");
    let took = t.elapsed();
    let push = report.stages.iter().filter(|(name, _)| *name == "push").map(|(_, d)| *d).sum();
    (took, push)
}

/// What a sync of `input` would write (a dry run: nothing is written).
fn planned(cache: &GitCache, input: &TierInput, renderer: &Renderer) -> shopset::sync::SyncReport {
    sync_tier(cache, &Auth::default(), input, renderer, &SyncOptions { dry_run: true, ..SyncOptions::default() })
        .expect("dry run")
}

/// The by-hand baseline: the shell script a team would write, doing the same change.
fn baseline(script: &Path, url: &str, files: &Path, links: &[(String, String)], create: bool) -> Duration {
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(url).arg(files).arg(if create { "create" } else { "update" });
    for (path, oid) in links {
        cmd.arg(format!("{path}={oid}"));
    }
    let t = Instant::now();
    let out = cmd.output().expect("run baseline");
    let took = t.elapsed();
    assert!(out.status.success(), "baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    took
}

/// Writes the rendered tree's files (the baseline gets the rendering for free) and returns its gitlinks.
fn materialize(
    input: &TierInput,
    renderer: &Renderer,
    pins: &shopset::render::Pins,
    dir: &Path,
) -> Vec<(String, String)> {
    let tree = renderer
        .render(RenderInput {
            tier: &input.tier,
            configurations: &input.configurations,
            shopsets: &input.shopsets,
            pins,
        })
        .expect("render");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    for (path, entry) in &tree.entries {
        if let Entry::File(bytes) = entry {
            let p = dir.join(&**path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(p, bytes).expect("write");
        }
    }
    tree.gitlinks().map(|(p, o)| (p.to_string(), o.to_string())).collect()
}

fn full(n: usize, iterations: usize, rows: &mut Vec<Row>, scratch: &Path, by_hand: bool) {
    let r = repos();
    let renderer = Renderer::embedded().expect("templates");
    let cache = GitCache::new(scratch.join(format!("cache-full-{n}")));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.sh");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..iterations {
        let system = r.daemon.create_repo(&format!("system-{n}-{i}"));
        let input = tier_input("tier-0", n, &r.app, &r.config, &system);
        ours.push(sync(&cache, &input, &renderer));
        if !by_hand {
            continue;
        }
        // The same first commit by hand, into a fresh repository.
        let hand_repo = r.daemon.create_repo(&format!("hand-{n}-{i}"));
        let report = sync_tier(
            &cache,
            &Auth::default(),
            &input,
            &renderer,
            &SyncOptions { dry_run: true, ..SyncOptions::default() },
        )
        .expect("pins");
        let links = materialize(&input, &renderer, &report.pins, &scratch.join("files"));
        theirs.push(baseline(&script, &hand_repo, &scratch.join("files"), &links, true));
    }
    rows.push(Row {
        scenario: format!("full render + commit + push, {n} ShopSets"),
        samples: ours,
        baseline: by_hand.then_some(theirs),
        note: format!("{iterations} runs"),
    });
}

fn incremental(n: usize, iterations: usize, rows: &mut Vec<Row>, scratch: &Path, by_hand: bool) {
    let r = repos();
    let renderer = Renderer::embedded().expect("templates");
    let cache = GitCache::new(scratch.join(format!("cache-inc-{n}")));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.sh");
    let system = r.daemon.create_repo(&format!("inc-system-{n}"));
    let hand = r.daemon.create_repo(&format!("inc-hand-{n}"));
    let mut input = tier_input("tier-0", n, &r.app, &r.config, &system);
    sync(&cache, &input, &renderer);
    let report = sync_tier(
        &cache,
        &Auth::default(),
        &input,
        &renderer,
        &SyncOptions { dry_run: true, ..SyncOptions::default() },
    )
    .expect("pins");
    let links = materialize(&input, &renderer, &report.pins, &scratch.join("files"));
    baseline(&script, &hand, &scratch.join("files"), &links, true);

    // `shopctl sync` as a person runs it, a new process each time (its cache warm from a first run),
    // into a system repository of its own; beside it the same change by hand on a warm clone of a
    // repository holding the same tree. A renderer of its own for planning what changes, so the
    // in-process renderer keeps its memo of `input` (one memo per tier name).
    let plan_renderer = Renderer::embedded().expect("templates");
    let proc_system = r.daemon.create_repo(&format!("proc-system-{n}"));
    let warm_repo = r.daemon.create_repo(&format!("warm-hand-{n}"));
    let mut proc_input = tier_input("tier-0", n, &r.app, &r.config, &proc_system);
    let shopctl = process::Shopctl {
        binary: process::release_binary("shopctl").expect("shopctl release build"),
        manifests: scratch.join(format!("manifests-{n}")),
        cache: scratch.join(format!("shopctl-cache-{n}")),
    };
    process::write_manifests(&shopctl.manifests, &proc_input);
    shopctl.sync();
    let report = planned(&cache, &proc_input, &plan_renderer);
    let links = materialize(&proc_input, &plan_renderer, &report.pins, &scratch.join("files"));
    baseline(&script, &warm_repo, &scratch.join("files"), &links, true);
    let warm = process::WarmClone::new(&warm_repo, &scratch.join(format!("warm-{n}")));
    let mut proc_tree = report.tree;
    let (mut one_proc, mut one_warm, mut bump_proc, mut bump_warm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());

    let (mut one, mut one_hand, mut bump, mut bump_hand, mut idle) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cold, mut poll) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        input.shopsets[n / 2] = shopset("tier-0", n / 2, i + 1).into();
        one.push(sync(&cache, &input, &renderer));
        if by_hand {
            let report = sync_tier(
                &cache,
                &Auth::default(),
                &input,
                &renderer,
                &SyncOptions { dry_run: true, ..SyncOptions::default() },
            )
            .expect("pins");
            let links = materialize(&input, &renderer, &report.pins, &scratch.join("files"));
            one_hand.push(baseline(&script, &hand, &scratch.join("files"), &links, false));
        }

        proc_input.shopsets[n / 2] = shopset("tier-0", n / 2, 2000 + i).into();
        process::write_manifests(&shopctl.manifests, &proc_input);
        let tree = planned(&cache, &proc_input, &plan_renderer).tree;
        one_proc.push(shopctl.sync());
        one_warm.push(warm.change(&proc_tree, &tree));
        proc_tree = tree;

        commit_files(&r.app, "tier-0", &[("base/CHANGES.md", &format!("change {i}\n"))], &format!("change {i}"));
        bump.push(sync(&cache, &input, &renderer));
        let tree = planned(&cache, &proc_input, &plan_renderer).tree;
        bump_proc.push(shopctl.sync());
        bump_warm.push(warm.change(&proc_tree, &tree));
        proc_tree = tree;
        if by_hand {
            let report = sync_tier(
                &cache,
                &Auth::default(),
                &input,
                &renderer,
                &SyncOptions { dry_run: true, ..SyncOptions::default() },
            )
            .expect("pins");
            let links = materialize(&input, &renderer, &report.pins, &scratch.join("files"));
            bump_hand.push(baseline(&script, &hand, &scratch.join("files"), &links, false));
        }

        let t = Instant::now();
        let report = sync_tier(&cache, &Auth::default(), &input, &renderer, &SyncOptions::default()).expect("sync");
        idle.push(t.elapsed());
        assert!(report.commit.is_none(), "nothing changed, yet a commit was written");
        // What the controller's poll does for an idle tier: one ls-remote per repository.
        let checkpoint = Checkpoint::after(&input, &report);
        let t = Instant::now();
        let unchanged = checkpoint.unchanged(&cache, &Auth::default(), &input).expect("ls-remote");
        poll.push(t.elapsed());
        assert!(unchanged);

        // `shopctl sync` in a new process starts with an empty render memo.
        input.shopsets[n / 2] = shopset("tier-0", n / 2, 1000 + i).into();
        cold.push(sync(&cache, &input, &Renderer::embedded().expect("templates")));
    }
    rows.push(Row {
        scenario: format!("one ShopSet changed among {n}"),
        samples: one,
        baseline: by_hand.then_some(one_hand),
        note: format!("{iterations} runs"),
    });
    rows.push(Row {
        scenario: format!("app submodule bump, {n} ShopSets"),
        samples: bump,
        baseline: by_hand.then_some(bump_hand),
        note: format!("{iterations} runs"),
    });
    // Both ended on the same tree, or the comparison is void.
    let tree_of = |repo: &str| git(&r.daemon.path(repo), &["rev-parse", "tier-0^{tree}"]);
    assert_eq!(
        tree_of(&format!("proc-system-{n}")),
        tree_of(&format!("warm-hand-{n}")),
        "shopctl and the warm clone wrote different trees"
    );
    rows.push(Row {
        scenario: format!("one ShopSet changed among {n}: `shopctl sync` as a process"),
        samples: one_proc,
        baseline: Some(one_warm),
        note: format!("{iterations} runs; by hand: warm clone"),
    });
    rows.push(Row {
        scenario: format!("app submodule bump, {n} ShopSets: `shopctl sync` as a process"),
        samples: bump_proc,
        baseline: Some(bump_warm),
        note: format!("{iterations} runs; by hand: warm clone"),
    });
    rows.push(Row {
        scenario: format!("one ShopSet changed among {n}, new renderer in-process (no memo)"),
        samples: cold,
        baseline: None,
        note: "renders every ShopSet".into(),
    });
    rows.push(Row {
        scenario: format!("nothing changed, {n} ShopSets: poll"),
        samples: poll,
        baseline: None,
        note: "one ls-remote per repository".into(),
    });
    rows.push(Row {
        scenario: format!("nothing changed, {n} ShopSets: full sync"),
        samples: idle,
        baseline: None,
        note: "render + compare, no commit".into(),
    });
    drop(r);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `RUST_LOG=shopset=debug` shows where each sync's time goes.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    if args.iter().any(|a| a == "--argocd") {
        // `--argocd-sizes 10`, `--argocd-bumps 5`, `--argocd-poll-bumps 3`: a shorter run.
        let plan = argocd::Plan {
            sizes: value("--argocd-sizes")
                .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_else(|| vec![10, 100]),
            bumps: value("--argocd-bumps").and_then(|v| v.parse().ok()).unwrap_or(5),
            poll_bumps: value("--argocd-poll-bumps").and_then(|v| v.parse().ok()).unwrap_or(3),
        };
        let scratch = tempfile::tempdir().expect("scratch dir");
        let (mut rows, mut notes) = (Vec::new(), Vec::new());
        eprintln!("bench: Argo CD (control plane + Argo CD + kwok + controller)");
        if let Err(e) = argocd::run(&plan, scratch.path(), &mut rows, &mut notes) {
            notes.push(format!("Argo CD scenario stopped: {e}"));
        }
        write_results(&rows, &notes, "argocd.txt");
        return;
    }
    if args.iter().any(|a| a == "--storm") {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let mut notes = Vec::new();
        eprintln!("bench: storm (control plane + controller)");
        if let Err(e) = storm::run(scratch.path(), &mut notes) {
            notes.push(format!("storm stopped: {e}"));
        }
        write_results(&[], &notes, "storm.txt");
        return;
    }
    if args.iter().any(|a| a == "--memory") {
        // The controller's peak RSS with 4 tiers x 250 ShopSets alone (the complete run's last row).
        let scratch = tempfile::tempdir().expect("scratch dir");
        let (mut rows, mut notes) = (Vec::new(), Vec::new());
        eprintln!("bench: controller memory, 4 tiers x 250 ShopSets");
        if let Err(e) = cluster::memory_alone(scratch.path(), &mut rows, &mut notes) {
            notes.push(format!("memory scenario failed: {e}"));
        }
        write_results(&rows, &notes, "memory.txt");
        return;
    }
    if args.iter().any(|a| a == "--fleet") {
        // The fleet alone: `--fleet-sizes` (default 10,000), `--placement-shops` (default 100,000)
        // and the controller's peak RSS with the largest fleet (`--fleet-rss 0` skips it).
        let scratch = tempfile::tempdir().expect("scratch dir");
        let (mut rows, mut notes) = (Vec::new(), Vec::new());
        let sizes: Vec<usize> = value("--fleet-sizes")
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).filter(|n| *n > 0).collect())
            .unwrap_or_else(|| vec![10_000]);
        // `--fleet-changes N`: changes measured per size (5; more for a profile of one change).
        let changes = value("--fleet-changes").and_then(|v| v.parse().ok()).unwrap_or(5);
        fleet::run(&sizes, changes, &mut rows, &mut notes, scratch.path());
        let shops = value("--placement-shops").and_then(|v| v.parse().ok()).unwrap_or(100_000);
        if shops > 0 {
            eprintln!("bench: placement, {shops} shops");
            fleet::placement(shops, &mut rows);
        }
        let rss = value("--fleet-rss")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| sizes.iter().copied().max().unwrap_or(0));
        if rss > 0 {
            eprintln!("bench: controller memory with a fleet of {rss} ShopSets");
            if let Err(e) = cluster::fleet_memory(rss, scratch.path(), &mut rows, &mut notes) {
                notes.push(format!("fleet memory scenario failed: {e}"));
            }
        }
        write_results(&rows, &notes, "fleet.txt");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let skip_cluster = args.iter().any(|a| a == "--no-cluster");
    // `--no-baseline` skips the by-hand script (minutes at 1,000 ShopSets) when profiling.
    let by_hand = !args.iter().any(|a| a == "--no-baseline");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut rows = Vec::new();
    // `--sizes 1000,100` measures only those sizes (for profiling one case).
    let chosen: Option<Vec<usize>> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect());
    let chosen_sizes = chosen.is_some();
    let sizes: Vec<usize> = chosen.unwrap_or_else(|| if quick { vec![10, 100] } else { vec![10, 100, 1000] });
    for &n in &sizes {
        let iterations = if n >= 1000 { 5 } else { 9 };
        eprintln!("bench: full, {n} ShopSets");
        full(n, iterations, &mut rows, scratch.path(), by_hand);
        eprintln!("bench: incremental, {n} ShopSets");
        incremental(n, iterations, &mut rows, scratch.path(), by_hand);
    }
    // `--fleet-sizes 100,1000`: the fleet of 10 tiers and 3 destinations at these totals (0: none).
    let fleet_sizes: Vec<usize> = value("--fleet-sizes")
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).filter(|n| *n > 0).collect())
        .unwrap_or_else(|| if quick || chosen_sizes { vec![100] } else { vec![100, 1000, 10_000] });
    let mut notes = Vec::new();
    fleet::run(&fleet_sizes, 5, &mut rows, &mut notes, scratch.path());
    // `--placement-shops N`: shops placed by the policy of `shop add` (0: none).
    let placement_shops: usize = value("--placement-shops")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick || chosen_sizes { 10_000 } else { 100_000 });
    if placement_shops > 0 {
        eprintln!("bench: placement, {placement_shops} shops");
        fleet::placement(placement_shops, &mut rows);
    }
    if !skip_cluster {
        eprintln!("bench: latency and controller memory (control plane + controller)");
        // Rows measured before a failure are kept.
        if let Err(e) = cluster::run(quick, scratch.path(), &mut rows, &mut notes) {
            notes.push(format!("cluster scenarios failed: {e}"));
        }
        // `--fleet-rss 0` skips the controller's memory with the largest fleet.
        let fleet_rss = value("--fleet-rss")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fleet_sizes.iter().copied().max().unwrap_or(0));
        if fleet_rss > 0 {
            eprintln!("bench: controller memory with a fleet of {fleet_rss} ShopSets");
            if let Err(e) = cluster::fleet_memory(fleet_rss, scratch.path(), &mut rows, &mut notes) {
                notes.push(format!("fleet memory scenario failed: {e}"));
            }
        }
    }
    // Only a complete run replaces the figures the README quotes.
    let file = if chosen_sizes || !by_hand || skip_cluster || quick || value("--fleet-sizes").is_some() {
        "partial.txt"
    } else {
        "latest.txt"
    };
    write_results(&rows, &notes, file);
}

/// Prints the table, notes and raw samples, and writes them to `bench/results/<file>`.
fn write_results(rows: &[Row], notes: &[String], file: &str) {
    let machine = machine();
    let mut out = String::new();
    out.push_str(&format!("machine: {machine}\n\n"));
    out.push_str("| scenario | median | min – max | by hand (median) | ratio | note |\n|---|---|---|---|---|---|\n");
    for row in rows {
        out.push_str(&row.render());
        out.push('\n');
    }
    for n in notes {
        out.push_str(&format!("\n{n}"));
    }
    out.push('\n');
    out.push_str("\nraw samples (ms):\n");
    for row in rows {
        let list =
            |v: &[Duration]| v.iter().map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0)).collect::<Vec<_>>().join(" ");
        out.push_str(&format!("{}: {}", row.scenario, list(&row.samples)));
        if let Some(b) = &row.baseline {
            out.push_str(&format!(" | by hand: {}", list(b)));
        }
        out.push('\n');
    }
    print!("{out}");
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&results).expect("results dir");
    std::fs::write(results.join(file), &out).expect("write results");
    eprintln!("bench: written to {}", results.join(file).display());
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
        })
        .unwrap_or(0);
    format!(
        "{cpus} cores ({model}), {mem} GiB, git {}",
        git(Path::new("."), &["--version"]).trim_start_matches("git version ")
    )
}
