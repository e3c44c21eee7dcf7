//! The fleet: N ShopSets over 10 tiers and 3 destinations (each ShopSet names one, round-robin;
//! each destination in a failure domain of its own). Per size: a full render + commit + push of
//! every tier, one ShopSet changed in one tier, and an app bump of one tier, in process (as the
//! controller syncs). The cost of one change should follow what changed, not N.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shopset::api::NamedDestination;
use shopset::gitops::GitCache;
use shopset::manifests::TierInput;
use shopset::render::Renderer;
use shopset_e2e::gitserver::{commit_files, git};

use crate::{Row, median, ms, repos, shopset, sync, sync_split, tier_input};

pub const TIERS: usize = 10;

/// The three destinations of every fleet tier: one cluster per zone of two clouds.
pub fn destinations() -> Vec<NamedDestination> {
    [
        ("aws-eu-west-1a", "aws", "eu-west-1", "eu-west-1a"),
        ("aws-eu-west-1b", "aws", "eu-west-1", "eu-west-1b"),
        ("gcp-europe-west4-a", "gcp", "europe-west4", "europe-west4-a"),
    ]
    .into_iter()
    .map(|(name, cloud, region, zone)| NamedDestination {
        name: name.into(),
        server: Some(format!("https://{name}.clusters.example")),
        cluster: None,
        failure_domain: BTreeMap::from([
            ("cloud".to_string(), cloud.to_string()),
            ("region".to_string(), region.to_string()),
            ("zone".to_string(), zone.to_string()),
        ]),
    })
    .collect()
}

/// Tier `tier` of the fleet with `n` ShopSets, each on a destination round-robin.
pub fn fleet_tier(tier: &str, n: usize, app: &str, config: &str, system: &str) -> TierInput {
    let mut input = tier_input(tier, n, app, config, system);
    let destinations = destinations();
    for (i, ss) in input.shopsets.iter_mut().map(std::sync::Arc::make_mut).enumerate() {
        ss.spec.destination = Some(destinations[i % destinations.len()].name.clone());
    }
    input.tier.spec.argocd.destinations = destinations;
    input
}

/// One fleet of the benchmark: its repositories, cache and renderer, its tiers' inputs, and a
/// person's warm clone of its first tier; the samples of its changes so far.
struct Fleet {
    total: usize,
    per_tier: usize,
    r: crate::Repos,
    renderer: Renderer,
    cache: GitCache,
    names: Vec<String>,
    inputs: Vec<TierInput>,
    hand: std::path::PathBuf,
    hand_file: String,
    hand_branch: String,
    samples: Changes,
}

/// The samples of a fleet's changes.
#[derive(Default)]
struct Changes {
    one: Vec<Duration>,
    one_push: Vec<Duration>,
    one_rest: Vec<Duration>,
    hand_push: Vec<Duration>,
    one_cpu: Vec<Duration>,
    bump: Vec<Duration>,
    bump_cpu: Vec<Duration>,
}

impl Fleet {
    /// A fleet of `total` ShopSets (`total / 10` per tier), every tier rendered, committed and
    /// pushed once (the full-render row).
    fn start(total: usize, rows: &mut Vec<Row>, scratch: &Path) -> Fleet {
        let per_tier = total / TIERS;
        let r = repos();
        let system = r.daemon.create_repo(&format!("fleet-system-{total}"));
        let renderer = Renderer::embedded().expect("templates");
        let cache = GitCache::new(scratch.join(format!("cache-fleet-{total}")));
        let names: Vec<String> = (0..TIERS).map(|t| format!("fleet-{t}")).collect();
        // Each tier's branches start where tier-0 is, as a promotion would leave them.
        for name in &names {
            git(&r.daemon.path("app"), &["branch", name, "tier-0"]);
            git(&r.daemon.path("config"), &["branch", name, "tier-0"]);
        }
        let inputs: Vec<TierInput> =
            names.iter().map(|t| fleet_tier(t, per_tier, &r.app, &r.config, &system)).collect();

        let started = Instant::now();
        let full: Vec<Duration> = inputs.iter().map(|input| sync(&cache, input, &renderer)).collect();
        let all = started.elapsed();
        rows.push(Row {
            scenario: format!(
                "fleet {total} ShopSets ({TIERS} tiers x {per_tier}, 3 destinations): full render + commit + push per tier"
            ),
            samples: full,
            baseline: None,
            note: format!("all {TIERS} tiers: {}", ms(all)),
        });

        // A person's warm clone of one tier, for the same kind of push by plain git (its own
        // branch, so that it never races the syncs): one file of one ShopSet changed, committed, pushed.
        let hand = scratch.join(format!("fleet-hand-{total}"));
        let _ = std::fs::remove_dir_all(&hand);
        git(scratch, &["clone", "-q", "--branch", &names[0], &system, &hand.to_string_lossy()]);
        let hand_file = format!("shopsets/{}-cell-{:04}/kustomization.yaml", names[0], per_tier / 2);
        let hand_branch = format!("HEAD:refs/heads/{}-by-hand", names[0]);
        git(&hand, &["push", "-q", "origin", &hand_branch]);
        Fleet {
            total,
            per_tier,
            r,
            renderer,
            cache,
            names,
            inputs,
            hand,
            hand_file,
            hand_branch,
            samples: Changes::default(),
        }
    }

    /// Change `i`: one ShopSet changed in a tier (a different tier each time, the ShopSet in its
    /// middle), the same kind of push by hand, then an app bump of that tier.
    fn change(&mut self, i: usize) {
        let (per_tier, s) = (self.per_tier, &mut self.samples);
        let t = (i * 3) % TIERS;
        let mut changed = shopset(&self.names[t], per_tier / 2, i + 1);
        changed.spec.destination = Some(destinations()[(per_tier / 2) % 3].name.clone());
        self.inputs[t].shopsets[per_tier / 2] = changed.into();
        let cpu = process_cpu();
        let (took, push) = sync_split(&self.cache, &self.inputs[t], &self.renderer);
        s.one_cpu.push(process_cpu() - cpu);
        s.one.push(took);
        s.one_push.push(push);
        s.one_rest.push(took.saturating_sub(push));

        let path = self.hand.join(&self.hand_file);
        let mut text = std::fs::read_to_string(&path).expect("the by-hand clone's file");
        text.push_str(&format!("# change {i}\n"));
        std::fs::write(&path, text).expect("write the by-hand change");
        let commit = ["-c", "user.name=someone", "-c", "user.email=someone@example.com", "commit", "-qam", "by hand"];
        git(&self.hand, &commit);
        let started = Instant::now();
        git(&self.hand, &["push", "-q", "origin", &self.hand_branch]);
        s.hand_push.push(started.elapsed());

        let app = &self.r.app;
        commit_files(app, &self.names[t], &[("base/CHANGES.md", &format!("change {i}\n"))], &format!("change {i}"));
        let cpu = process_cpu();
        s.bump.push(sync(&self.cache, &self.inputs[t], &self.renderer));
        s.bump_cpu.push(process_cpu() - cpu);
    }

    /// The rows of this fleet's changes, and the medians of one change.
    fn finish(self, rows: &mut Vec<Row>) -> OneChange {
        let (total, per_tier, s) = (self.total, self.per_tier, self.samples);
        let iterations = s.one.len();
        let one = OneChange {
            total,
            wall: median(&s.one),
            push: median(&s.one_push),
            rest: median(&s.one_rest),
            hand_push: median(&s.hand_push),
            cpu: median(&s.one_cpu),
        };
        let mut row = |what: &str, samples: Vec<Duration>, baseline: Option<Vec<Duration>>, note: String| {
            rows.push(Row { scenario: format!("fleet {total} ShopSets: {what}"), samples, baseline, note })
        };
        row("one ShopSet changed", s.one, None, format!("{iterations} runs, one tier of {per_tier} each"));
        // The wall clock of one change, split: the push (mostly the git server's receive-pack),
        // beside a plain `git push` of one changed file by a person, and everything else the sync does.
        row(
            "one ShopSet changed, its push",
            s.one_push,
            Some(s.hand_push),
            format!("{iterations} runs; by hand: `git push` of one changed file from a warm clone"),
        );
        row(
            "one ShopSet changed, all but its push",
            s.one_rest,
            None,
            format!("{iterations} runs: resolve, render, hash, write"),
        );
        row("app submodule bump of one tier", s.bump, None, format!("{iterations} runs, {per_tier} ShopSets each"));
        // What the syncing process itself spends (every thread; not the git server's processes):
        // on a machine shared with other work, steadier than the wall clock, which waits for the CPU too.
        row(
            "one ShopSet changed, CPU time of the syncing process",
            s.one_cpu,
            None,
            format!("{iterations} runs, one tier of {per_tier} each"),
        );
        row(
            "app submodule bump of one tier, CPU time of the syncing process",
            s.bump_cpu,
            None,
            format!("{iterations} runs, {per_tier} ShopSets each"),
        );
        one
    }
}

/// Medians of one change in a fleet.
struct OneChange {
    total: usize,
    wall: Duration,
    push: Duration,
    rest: Duration,
    hand_push: Duration,
    cpu: Duration,
}

/// How much more one change may cost at the largest fleet than at the smallest, when the largest
/// holds 100 times the ShopSets. Work done per ShopSet would show as up to 100x; the margin is
/// this machine's noise and what git itself does more in a larger tree (the git server's
/// connectivity check, the two tree objects that list the tier).
const FLAT: f64 = 1.5;

/// The fleet rows for each total of `sizes` (`total / 10` ShopSets per tier). Every fleet is set
/// up first; then the changes take turns between the sizes, so that a drift of the machine over
/// the run (the file system, the page cache, other work) falls on every size alike, and a note
/// compares one change at the smallest and the largest.
pub fn run(sizes: &[usize], iterations: usize, rows: &mut Vec<Row>, notes: &mut Vec<String>, scratch: &Path) {
    let mut fleets: Vec<Fleet> = sizes
        .iter()
        .map(|&total| {
            eprintln!("bench: fleet, {total} ShopSets over {TIERS} tiers");
            Fleet::start(total, rows, scratch)
        })
        .collect();
    eprintln!("bench: fleet, {iterations} changes per size, the sizes taking turns");
    for i in 0..iterations {
        for fleet in &mut fleets {
            fleet.change(i);
        }
    }
    let ones: Vec<OneChange> = fleets.into_iter().map(|fleet| fleet.finish(rows)).collect();
    let (Some(small), Some(large)) = (ones.iter().min_by_key(|o| o.total), ones.iter().max_by_key(|o| o.total)) else {
        return;
    };
    if small.total == large.total {
        return;
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    let growth = ratio(small.wall, large.wall);
    let (n, flat) = (large.total / small.total, FLAT);
    let verdict = if n < 100 {
        "(the target is stated for 100x)".to_string()
    } else if growth <= flat {
        format!("(target at most {flat}x: met)")
    } else {
        format!("(target at most {flat}x: NOT met)")
    };
    let step = |what: &str, a: Duration, b: Duration| format!("{what} {} -> {} ({:.2}x)", ms(a), ms(b), ratio(a, b));
    notes.push(format!(
        "one ShopSet changed, {} -> {} ShopSets ({n}x, sizes taking turns): {:.2}x {verdict}; {}, {}, {}, {}; by hand, {}",
        small.total,
        large.total,
        growth,
        step("wall clock", small.wall, large.wall),
        step("its push", small.push, large.push),
        step("all but the push", small.rest, large.rest),
        step("CPU", small.cpu, large.cpu),
        step("a plain `git push` of one changed file", small.hand_push, large.hand_push),
    ));
}

/// CPU time of this process so far, over all its threads.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Placing `shops` shops one by one with the placement policy of `shopctl shop add` (the library's
/// [`shopset::placement::Planner`], one for the whole run as a script adding many shops would keep):
/// into the fleet's start tier, 3 ShopSets of capacity 500 on the 3 destinations at first, grown by
/// the naming convention as they fill. One sample per tenth of the shops, so a cost that grows with
/// the ShopSets placed so far shows as rising samples.
pub fn placement(shops: usize, rows: &mut Vec<Row>) {
    const CAPACITY: u32 = 500;
    let start =
        fleet_tier("fleet-0", 3, "https://git.example/app", "https://git.example/config", "https://git.example/system");
    let mut seeds: Vec<_> = start.shopsets.into_iter().map(std::sync::Arc::unwrap_or_clone).collect();
    for ss in &mut seeds {
        ss.spec.capacity = Some(CAPACITY);
        ss.spec.shops.clear();
    }
    let tiers = [start.tier];
    let mut planner = shopset::placement::Planner::new(&tiers, &seeds);
    let batch = (shops / 10).max(1);
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut batch_started = Instant::now();
    for i in 0..shops {
        let placed = planner.place(&format!("shop-{i:06}"), None, true).expect("a placement");
        std::hint::black_box(placed);
        if (i + 1) % batch == 0 {
            samples.push(batch_started.elapsed());
            batch_started = Instant::now();
        }
    }
    let all = started.elapsed();
    let shopsets = shops.div_ceil(CAPACITY as usize).max(3);
    rows.push(Row {
        scenario: format!("placement: {shops} shops with the policy of `shop add` (per {batch} shops)"),
        samples,
        baseline: None,
        note: format!(
            "all: {}, {:.1} µs a shop; grows 3 ShopSets to {shopsets}",
            ms(all),
            all.as_secs_f64() * 1e6 / shops as f64
        ),
    });
}
