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

use crate::{Row, ms, repos, shopset, sync, sync_split, tier_input};

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

/// The fleet rows for `total` ShopSets (`total / 10` per tier).
pub fn run(total: usize, iterations: usize, rows: &mut Vec<Row>, scratch: &Path) {
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
    let mut inputs: Vec<TierInput> =
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

    // A person's warm clone of one tier, for the same kind of push by plain git (its own branch,
    // so that it never races the syncs): one file of one ShopSet changed, committed, pushed.
    let hand = scratch.join(format!("fleet-hand-{total}"));
    let _ = std::fs::remove_dir_all(&hand);
    git(scratch, &["clone", "-q", "--branch", &names[0], &system, &hand.to_string_lossy()]);
    let hand_file = format!("shopsets/{}-cell-{:04}/kustomization.yaml", names[0], per_tier / 2);
    let hand_branch = format!("HEAD:refs/heads/{}-by-hand", names[0]);
    git(&hand, &["push", "-q", "origin", &hand_branch]);

    let (mut one, mut bump) = (Vec::new(), Vec::new());
    let (mut one_cpu, mut bump_cpu) = (Vec::new(), Vec::new());
    let (mut one_push, mut one_rest, mut hand_push) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        // A different tier each time, and the ShopSet in its middle.
        let t = (i * 3) % TIERS;
        let mut changed = shopset(&names[t], per_tier / 2, i + 1);
        changed.spec.destination = Some(destinations()[(per_tier / 2) % 3].name.clone());
        inputs[t].shopsets[per_tier / 2] = changed.into();
        let cpu = process_cpu();
        let (took, push) = sync_split(&cache, &inputs[t], &renderer);
        one_cpu.push(process_cpu() - cpu);
        one.push(took);
        one_push.push(push);
        one_rest.push(took.saturating_sub(push));
        let path = hand.join(&hand_file);
        let mut text = std::fs::read_to_string(&path).expect("the by-hand clone's file");
        text.push_str(&format!("# change {i}\n"));
        std::fs::write(&path, text).expect("write the by-hand change");
        git(&hand, &["-c", "user.name=someone", "-c", "user.email=someone@example.com", "commit", "-qam", "by hand"]);
        let started = Instant::now();
        git(&hand, &["push", "-q", "origin", &hand_branch]);
        hand_push.push(started.elapsed());
        commit_files(&r.app, &names[t], &[("base/CHANGES.md", &format!("change {i}\n"))], &format!("change {i}"));
        let cpu = process_cpu();
        bump.push(sync(&cache, &inputs[t], &renderer));
        bump_cpu.push(process_cpu() - cpu);
    }
    rows.push(Row {
        scenario: format!("fleet {total} ShopSets: one ShopSet changed"),
        samples: one,
        baseline: None,
        note: format!("{iterations} runs, one tier of {per_tier} each"),
    });
    // The wall clock of one change, split: the push (mostly the git server's receive-pack), beside a
    // plain `git push` of one changed file by a person, and everything else the sync does.
    rows.push(Row {
        scenario: format!("fleet {total} ShopSets: one ShopSet changed, its push"),
        samples: one_push,
        baseline: Some(hand_push),
        note: format!("{iterations} runs; by hand: `git push` of one changed file from a warm clone"),
    });
    rows.push(Row {
        scenario: format!("fleet {total} ShopSets: one ShopSet changed, all but its push"),
        samples: one_rest,
        baseline: None,
        note: format!("{iterations} runs: resolve, render, hash, write"),
    });
    rows.push(Row {
        scenario: format!("fleet {total} ShopSets: app submodule bump of one tier"),
        samples: bump,
        baseline: None,
        note: format!("{iterations} runs, {per_tier} ShopSets each"),
    });
    // What the syncing process itself spends (every thread; not the git server's processes): on a
    // machine shared with other work, steadier than the wall clock, which waits for the CPU too.
    rows.push(Row {
        scenario: format!("fleet {total} ShopSets: one ShopSet changed, CPU time of the syncing process"),
        samples: one_cpu,
        baseline: None,
        note: format!("{iterations} runs, one tier of {per_tier} each"),
    });
    rows.push(Row {
        scenario: format!("fleet {total} ShopSets: app submodule bump of one tier, CPU time of the syncing process"),
        samples: bump_cpu,
        baseline: None,
        note: format!("{iterations} runs, {per_tier} ShopSets each"),
    });
    drop(r);
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
