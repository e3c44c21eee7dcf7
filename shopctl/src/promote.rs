//! `shopctl promote` and `shopctl rollback`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::ValueEnum;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use shopset::api::{FORCED_PROMOTION, Tier};
use shopset::approvals::MergeOutcome;
use shopset::github::{GitHub, GitHubAccess};
use shopset::policy::Timestamp;
use shopset::promote::pull_requests::{self, Together};
use shopset::promote::{
    Completed, MarkerError, Move, Only, Plan, RollbackTarget, abort, check_order, check_source, finish, in_progress,
    marker_to_abort, plan, start, targets,
};

use crate::{Cli, Output, Style, auth, cache, indent, load, print_structured, renderer};

/// A safety check said no.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum OnlyArg {
    App,
    Config,
}

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// The tier promoted from (its branches are the source).
    from: String,
    /// The tier promoted to (its branches move).
    to: String,
    /// Manifest files or directories holding the Tiers, Configurations and ShopSets.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Show what would move (commits, files) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Move only the app repository, or only the configuration repositories.
    #[arg(long, value_enum)]
    only: Option<OnlyArg>,
    /// A note on why; goes into the pull request (git keeps no message on a fast-forward).
    #[arg(long, short = 'm')]
    message: Option<String>,
    /// Open GitHub pull requests FROM -> TO instead of pushing.
    #[arg(long)]
    pr: bool,
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    github_url: String,
    /// File holding the GitHub token (default: the GITHUB_TOKEN environment variable).
    #[arg(long)]
    github_token_file: Option<PathBuf>,
    /// Move a diverged TO branch anyway (the push still carries a lease).
    #[arg(long)]
    force: bool,
    /// Promote even when FROM's Applications are not all Synced and Healthy at its pinned commit.
    #[arg(long)]
    skip_checks: bool,
    /// Promote even when TO's promotion policy (soak, windows, hold) refuses it now. Recorded: in
    /// the pull request, or as the annotation shopset.dev/forced-promotion on Tier TO.
    #[arg(long)]
    override_policy: bool,
    /// Undo an interrupted promotion into TO: move back the branches it moved, delete its marker.
    #[arg(long, conflicts_with_all = ["pr", "only", "force"])]
    abort: bool,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Exit status: 0 when merged (the merge commit is printed), 3 when a pull request still \
waits for approvals (nothing of it is merged), 1 when GitHub refuses the merge (e.g. its head moved after the \
approvals). TO's pull requests (app and configurations) are merged together: none until each has its \
approvals.")]
pub struct MergePromotionArgs {
    /// The tier promoted to: the base of the pull requests `shopctl promote --pr` opened.
    to: String,
    /// Manifest files or directories holding the Tiers and Configurations.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Approving reviews each pull request needs (each reviewer's latest review counts; the author's
    /// never). Default: TO's spec.promotion.approvals, else 1.
    #[arg(long)]
    approvals: Option<u32>,
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    github_url: String,
    /// File holding the GitHub token (default: the GITHUB_TOKEN environment variable).
    #[arg(long)]
    github_token_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Which branches move: the app's by default; --configuration NAME (repeatable) for a \
configuration's; --app with --configuration for both, pinned together in one system commit (marked like a \
promotion: if it is interrupted, running the same command again finishes it, --abort undoes it).")]
pub struct RollbackArgs {
    /// The tier whose branches move back.
    tier: String,
    /// Manifest files or directories holding the Tier.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// A commit of the branch's history to return to (one repository only).
    #[arg(long, conflicts_with = "steps", required_unless_present_any = ["steps", "abort"])]
    to: Option<String>,
    /// Go back N commits (first parents), in each repository rolled back.
    #[arg(long)]
    steps: Option<usize>,
    /// Roll back the app branch (the default when no --configuration is given).
    #[arg(long)]
    app: bool,
    /// Roll back this Configuration's branch of the tier (repeatable).
    #[arg(long = "configuration", value_name = "NAME")]
    configurations: Vec<String>,
    /// Add a commit that restores the older tree instead of moving the branch back.
    #[arg(long)]
    revert: bool,
    /// Show what would move and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Undo an interrupted rollback of several repositories: move them forward again, delete its marker.
    #[arg(long, conflicts_with_all = ["to", "steps", "revert"])]
    abort: bool,
}

fn tier<'a>(inv: &'a shopset::manifests::Inventory, name: &str) -> Result<&'a Tier> {
    Ok(inv.find_tier(name)?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// What the cluster says about a promotion FROM -> TO.
#[derive(Default)]
struct Observed {
    /// The promotion gate's verdict.
    verdict: shopset::gate::Verdict,
    /// Since when FROM's `Deployed` condition is True at its system head ([`shopset::policy::ready_since`]).
    ready_since: Option<Timestamp>,
    /// A hold on TO set in the cluster (`kubectl edit tier`), which the manifests may not show yet.
    cluster_hold: Option<shopset::api::Hold>,
}

/// The promotion gate ([`shopset::gate`]): FROM's Applications Synced and Healthy at the system
/// commit pinning FROM's head; and what the promotion policy reads from the cluster.
fn gate(cli: &Cli, inv: &shopset::manifests::Inventory, from: &str, to: &str) -> Result<Observed> {
    let input = inv.tier_input(from)?;
    let git = shopset::state::read(&cache(cli)?, &auth(cli)?, &input)?;
    let ns = input.tier.namespace().unwrap_or_else(|| "default".into());
    runtime()?.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow!("cannot reach the cluster to check tier {from}'s Applications ({e}); fix: set KUBECONFIG, or pass --skip-checks")
        })?;
        let verdict = shopset::gate::check(&client, &input, &git).await.map_err(|e| {
            anyhow!(
                "cannot read tier {from}'s Applications ({}); fix: check KUBECONFIG and RBAC, or pass --skip-checks",
                shopset::error::api_message(&e)
            )
        })?;
        let tiers: Api<Tier> = Api::namespaced(client, &ns);
        let read = |name: &str, e: kube::Error| {
            anyhow!(
                "cannot read Tier {ns}/{name} ({}); fix: check KUBECONFIG and RBAC, or pass --skip-checks",
                shopset::error::api_message(&e)
            )
        };
        let from_tier = tiers.get_opt(from).await.map_err(|e| read(from, e))?;
        let to_tier = tiers.get_opt(to).await.map_err(|e| read(to, e))?;
        let ready_since = match (&from_tier, &git.system_head) {
            (Some(t), Some(head)) => shopset::policy::ready_since(t, head),
            _ => None,
        };
        let cluster_hold = to_tier.and_then(|t| t.spec.promotion.and_then(|p| p.hold));
        Ok(Observed { verdict, ready_since, cluster_hold })
    })
}

/// What let a promotion through TO's policy: a line for the marker and the system commit (`Why:`)
/// or the pull request.
struct Passed {
    line: String,
    /// `--override-policy` overrode a refusal: `line` is the audit line.
    forced: bool,
}

/// TO's promotion policy now: `Ok(None)` when TO has none, what let the promotion through when it
/// allows it or `--override-policy` overrode a refusal; a [`Refused`] error otherwise (a preview
/// prints the refusal instead).
fn policy(cli: &Cli, style: &Style, args: &PromoteArgs, to: &Tier, observed: &Observed) -> Result<Option<Passed>> {
    let Some(mut policy) = shopset::policy::Policy::of(to)? else { return Ok(None) };
    if policy.hold.is_none() {
        policy.hold = observed.cluster_hold.clone();
    }
    let now = Timestamp::now();
    let ready = if args.skip_checks {
        // FROM's health was not read: --skip-checks takes responsibility for the soak, too.
        policy.soak = shopset::policy::SignedDuration::ZERO;
        Some(now)
    } else {
        observed.ready_since
    };
    let say = |line: &str| {
        // On stderr under -o json/yaml, so the plan on stdout stays parseable.
        if cli.output == Output::Text { println!("{line}") } else { eprintln!("{line}") }
    };
    match shopset::policy::evaluate(&policy, ready, now) {
        shopset::policy::Decision::Allowed { why } => {
            let line = format!("policy of {}: allowed ({why})", args.to);
            say(&line);
            Ok(Some(Passed { line: format!("{line}; promoted by {} with shopctl", crate::hold::who()), forced: false }))
        }
        shopset::policy::Decision::Refused { reasons, next_possible } => {
            let list = reasons.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n");
            let when = match next_possible {
                Some(t) => format!("possible from {t}"),
                None => "not possible by waiting alone".to_string(),
            };
            let msg = format!(
                "the promotion of {} into {} is refused by {}'s promotion policy ({when}):\n{list}\nfix: wait, release a hold (`shopctl release {} -f ...`), or pass --override-policy to promote anyway (recorded)",
                args.from, args.to, args.to, args.to
            );
            if args.dry_run {
                say(&style.yellow(&msg));
                Ok(None)
            } else if args.override_policy {
                let audit = format!(
                    "forced past {}'s promotion policy by {} at {}: {}",
                    args.to,
                    crate::hold::who(),
                    Timestamp::from_second(now.as_second()).unwrap_or(now),
                    reasons.join("; ")
                );
                say(&style.yellow(&audit));
                Ok(Some(Passed { line: audit, forced: true }))
            } else {
                Err(Refused(msg).into())
            }
        }
    }
}

/// Records a promotion forced past the policy on Tier `to` in the cluster.
fn annotate(inv: &shopset::manifests::Inventory, to: &str, audit: &str) -> Result<()> {
    let ns = inv.find_tier(to)?.namespace().unwrap_or_else(|| "default".into());
    runtime()?.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow!("cannot reach the cluster to record the forced promotion on Tier {to} ({e}); record it by hand: kubectl annotate tier {to} {FORCED_PROMOTION}='{audit}'")
        })?;
        let patch = serde_json::json!({ "metadata": { "annotations": { FORCED_PROMOTION: audit } } });
        Api::<Tier>::namespaced(client, &ns).patch(to, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| {
            anyhow!(
                "cannot record the forced promotion on Tier {ns}/{to} ({}); record it by hand: kubectl annotate tier {to} {FORCED_PROMOTION}='{audit}'",
                shopset::error::api_message(&e)
            )
        })?;
        Ok(())
    })
}

pub fn promote(cli: &Cli, style: &Style, args: &PromoteArgs) -> Result<()> {
    let inv = load(cli, &args.files)?;
    let (from, to) = (tier(&inv, &args.from)?, tier(&inv, &args.to)?);
    check_order(from, to)?;
    let only = match args.only {
        None => Only::All,
        Some(OnlyArg::App) => Only::App,
        Some(OnlyArg::Config) => Only::Config,
    };
    let cfgs = inv.configurations_of(&[&args.from, &args.to])?;
    let (cache, auth) = (cache(cli)?, auth(cli)?);
    if !args.pr {
        // A promotion into TO that was interrupted: this run finishes it (or, with --abort, undoes it).
        let marked = if args.abort {
            Some(marker_to_abort(&cache, &auth, to).map_err(lift)?)
        } else {
            in_progress(&cache, &auth, to)?
        };
        if let Some(marker) = marked {
            check_source(&marker, Some(&args.from)).map_err(lift)?;
            let input = inv.tier_input(&args.to)?;
            let targets = targets(to, &cfgs);
            if cli.output == Output::Text {
                let verb = if args.abort { "Undoing" } else { "Finishing" };
                print_marker(style, verb, &marker);
            }
            if args.dry_run {
                return print_structured(cli.output, &marker);
            }
            let renderer = renderer(cli)?;
            let done = if args.abort {
                abort(&cache, &auth, &marker, &input, &renderer, &targets)
            } else {
                finish(&cache, &auth, &marker, &input, &renderer, &targets)
            }
            .map_err(lift)?;
            if cli.output == Output::Text {
                print_completed(style, &done, &args.to, if args.abort { "moved back" } else { "moved" });
            }
            return print_structured(cli.output, &done);
        }
    }
    let plan = plan(&cache, &auth, from, to, &cfgs, only)?;

    let observed = match (args.skip_checks, args.dry_run) {
        (true, _) => Observed::default(),
        (false, false) => gate(cli, &inv, &args.from, &args.to)?,
        // A preview still says what the gate would find, but a gate it cannot read does not stop it.
        (false, true) => gate(cli, &inv, &args.from, &args.to).unwrap_or_else(|e| Observed {
            verdict: shopset::gate::Verdict { refusals: vec![format!("not checked: {e:#}")], maintenance: Vec::new() },
            ..Observed::default()
        }),
    };
    let verdict = &observed.verdict;
    let problems = &verdict.refusals;
    for line in &verdict.maintenance {
        // On stderr under -o json/yaml, so the plan on stdout stays parseable.
        if cli.output == Output::Text {
            println!("{}", style.yellow(line));
        } else {
            eprintln!("{line}");
        }
    }
    if cli.output == Output::Text {
        print_plan(&plan, style, args.dry_run || args.pr);
        if args.skip_checks {
            println!(
                "{}",
                style.yellow(&format!(
                    "checks skipped (--skip-checks): tier {}'s Applications were not verified",
                    args.from
                ))
            );
        }
    }
    if !problems.is_empty() {
        let list = problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n");
        let msg = format!(
            "tier {} is not verified, so it is not promoted:\n{list}\nfix: wait for Argo CD to sync and the Applications to be Healthy (`shopctl status {}`), or pass --skip-checks",
            args.from, args.from
        );
        if args.dry_run {
            // On stderr under -o json/yaml, so the plan on stdout stays parseable.
            if cli.output == Output::Text {
                println!("{}", style.yellow(&msg));
            } else {
                eprintln!("{msg}");
            }
        } else {
            return Err(Refused(msg).into());
        }
    }
    let passed = policy(cli, style, args, to, &observed)?;
    if args.dry_run {
        return print_structured(cli.output, &plan);
    }
    let audit = passed.as_ref().filter(|p| p.forced).map(|p| p.line.as_str());
    if args.pr {
        return open_prs(cli, style, args, &inv, &plan, passed.as_ref().map(|p| p.line.as_str()), audit);
    }
    let input = inv.tier_input(&args.to)?;
    let why = passed.as_ref().map(|p| p.line.as_str());
    let done =
        start(&cache, &auth, &plan, args.force, &input, &renderer(cli)?, &targets(to, &cfgs), why).map_err(lift)?;
    let moved: Vec<_> = match &done {
        Some(done) => plan
            .repositories
            .iter()
            .filter(|mv| done.moved.iter().any(|m| m.repository == mv.repository))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    if let (Some(audit), Some(_)) = (audit, &done) {
        annotate(&inv, &args.to, audit)?;
    }
    if cli.output == Output::Text {
        match &done {
            Some(done) => print_completed(style, done, &args.to, "moved"),
            None => println!("nothing to promote: {} is already at {}", args.to, args.from),
        }
        if let Some(m) = &args.message {
            println!(
                "note: {m:?} is not stored in git (a fast-forward has no commit of its own); use --pr to keep it in the pull request"
            );
        }
    }
    print_structured(cli.output, &moved)
}

/// The library's promotion errors as the ones `main` sorts into exit statuses.
fn lift(e: MarkerError) -> anyhow::Error {
    match e {
        MarkerError::Promote(e) => e.into(),
        MarkerError::Sync(e) => e.into(),
        other => other.into(),
    }
}

fn print_marker(style: &Style, verb: &str, marker: &shopset::promote::marker::Marker) {
    println!(
        "{} {} marked by {} ({})",
        style.bold(verb),
        marker.what(),
        marker.refname,
        shopset::revision::short(&marker.id)
    );
    for m in &marker.repositories {
        println!(
            "  {:<20} {} -> {}",
            m.repository,
            shopset::revision::short_or(m.previous.as_deref(), "-"),
            shopset::revision::short(&m.target)
        );
    }
}

fn print_completed(style: &Style, done: &Completed, to: &str, verb: &str) {
    for m in &done.moved {
        println!("{} {} {} -> {}", style.green(verb), m.repository, to, shopset::revision::short(&m.target));
    }
    match (&done.system_commit, &done.system_head) {
        (Some(c), _) => println!(
            "pinned: system branch {to} at {} (app and configurations together, one commit)",
            shopset::revision::short(c)
        ),
        (None, Some(h)) => println!("pinned: system branch {to} already pins them at {}", shopset::revision::short(h)),
        (None, None) => {}
    }
    println!("{} {} removed: {} is complete", style.green("marker"), done.marker.refname, done.marker.what());
}

fn print_plan(plan: &Plan, style: &Style, preview: bool) {
    println!("{} {} -> {}", style.bold("Promote"), plan.from, plan.to);
    for mv in &plan.repositories {
        let what = match &mv.kind {
            Move::UpToDate => "up to date".to_string(),
            Move::Create => format!("create {} at {}", mv.to_branch, shopset::revision::short(&mv.from_head)),
            Move::FastForward => format!(
                "fast-forward {} {} -> {} ({} commit{})",
                mv.to_branch,
                shopset::revision::short_or(mv.to_head.as_deref(), "-"),
                shopset::revision::short(&mv.from_head),
                mv.commits.len(),
                if mv.commits.len() == 1 { "" } else { "s" }
            ),
            Move::Diverged { only_on_target } => style.yellow(&format!(
                "DIVERGED: {} has {} commit(s) {} lacks",
                mv.to_branch,
                only_on_target.len(),
                mv.from_branch
            )),
        };
        println!("  {:<20} {what}", mv.repository);
        if preview {
            for c in mv.commits.iter().take(20) {
                println!("      {c}");
            }
            if !mv.files.is_empty() {
                println!("      files: {}", mv.files.join(", "));
            }
        }
    }
}

/// The GitHub client of `--github-url` with the token of `--github-token-file` or GITHUB_TOKEN.
fn github(url: &str, token_file: Option<&PathBuf>, what: &str) -> Result<GitHub> {
    let access = GitHubAccess { base_url: url.to_string(), token_file: token_file.cloned() };
    Ok(access.client(what, "set GITHUB_TOKEN or pass --github-token-file")?)
}

fn open_prs(
    cli: &Cli,
    style: &Style,
    args: &PromoteArgs,
    inv: &shopset::manifests::Inventory,
    plan: &Plan,
    why: Option<&str>,
    audit: Option<&str>,
) -> Result<()> {
    let gh = github(&args.github_url, args.github_token_file.as_ref(), "--pr")?;
    let shopsets: Vec<String> = inv.tier_input(&args.to)?.shopsets.iter().map(|s| s.name_any()).collect();
    let prs = runtime()?.block_on(pull_requests::open(
        &gh,
        plan,
        &shopsets,
        args.message.as_deref(),
        why,
        audit,
        pull_requests::By::Shopctl,
    ))?;
    if cli.output == Output::Text {
        for pr in &prs {
            let state = if pr.already_existed { "already open" } else { "opened" };
            println!("{} pull request {} #{}: {}", style.green(state), pr.repository, pr.number, pr.url);
        }
    }
    print_structured(cli.output, &prs)
}

/// `shopctl merge-promotion TO`: merges the open promotion pull requests into TO that have their
/// approvals ([`GitHub::merge_when_approved`], the function auto-promotion uses too).
pub fn merge_promotion(cli: &Cli, style: &Style, args: &MergePromotionArgs) -> Result<()> {
    let inv = load(cli, &args.files)?;
    let to = tier(&inv, &args.to)?;
    let from_name = to.spec.promotion.as_ref().map(|p| p.from.clone()).ok_or_else(|| {
        anyhow!(
            "tier {} has no spec.promotion.from, so nothing is promoted into it and it has no promotion pull requests; fix: name the tier promoted to",
            args.to
        )
    })?;
    let from = tier(&inv, &from_name)?;
    let gh = github(&args.github_url, args.github_token_file.as_ref(), "merge-promotion")?;
    let cfgs = inv.configurations_of(&[&from_name, &args.to])?;
    // The plan names each repository's URL and branches (FROM's is the head, TO's the base).
    let plan = plan(&cache(cli)?, &auth(cli)?, from, to, &cfgs, Only::All)?;
    let required = args.approvals.or_else(|| pull_requests::required_approvals(to)).unwrap_or(1);
    let rt = runtime()?;
    let found = rt.block_on(pull_requests::find(&gh, &plan))?;
    if found.is_empty() {
        let repos: Vec<&str> = plan.repositories.iter().map(|m| m.repository.as_str()).collect();
        return Err(anyhow!(
            "no open promotion pull request {from_name} -> {} in {}; fix: open them with `shopctl promote {from_name} {} --pr`",
            args.to,
            repos.join(", "),
            args.to
        ));
    }
    let (outcomes, error) = match rt.block_on(pull_requests::merge_together(&gh, &found, required))? {
        Together::Merged(outcomes) => (outcomes, None),
        Together::Stopped { merged, error } => (merged, Some(error)),
        Together::Waiting { approved, waiting } => {
            if cli.output == Output::Text {
                for a in &approved {
                    println!(
                        "{} promotion pull request {}#{} is approved ({}), merged with the others",
                        style.yellow("waiting:"),
                        a.pr.repository,
                        a.pr.number,
                        a.approved_by.join(", ")
                    );
                }
            }
            let outcomes: Vec<MergeOutcome> = waiting.iter().cloned().map(MergeOutcome::Waiting).collect();
            print_structured(cli.output, &outcomes)?;
            return Err(Refused(waiting.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")).into());
        }
    };
    for outcome in &outcomes {
        if cli.output == Output::Text
            && let MergeOutcome::Merged { repository, number, sha, approved_by } = outcome
        {
            println!(
                "{} promotion pull request {repository}#{number} into {} at {sha} (approved by {})",
                style.green("merged"),
                args.to,
                if approved_by.is_empty() { "nobody: none required".to_string() } else { approved_by.join(", ") }
            );
        }
    }
    if let Some(error) = error {
        return Err(error.into());
    }
    print_structured(cli.output, &outcomes)?;
    if cli.output == Output::Text {
        println!("tier {} moves once synced (shopset-controller, or `shopctl sync --tier {}`)", args.to, args.to);
    }
    Ok(())
}

pub fn rollback(cli: &Cli, style: &Style, args: &RollbackArgs) -> Result<()> {
    let inv = load(cli, &args.files)?;
    let t = tier(&inv, &args.tier)?;
    let input = inv.tier_input(&args.tier)?;
    let (cache, auth) = (cache(cli)?, auth(cli)?);
    let all = targets(t, &input.configurations);
    let mut chosen = Vec::new();
    if args.app || args.configurations.is_empty() {
        chosen.push(all[0].clone());
    }
    for name in &args.configurations {
        let label = format!("config/{name}");
        let found = all.iter().find(|r| r.repository == label).ok_or_else(|| {
            let known: Vec<&str> = all.iter().filter_map(|r| r.repository.strip_prefix("config/")).collect();
            shopset::promote::PromoteError::BadRevision {
                repository: label.clone(),
                url: t.spec.system.url.clone(),
                what: format!("--configuration {name}"),
                detail: format!("tier {} uses no Configuration {name:?} (it uses: {})", args.tier, known.join(", ")),
            }
        })?;
        chosen.push(found.clone());
    }

    // A rollback of several repositories that was interrupted: this run finishes it (or undoes it).
    let marked = if args.abort {
        Some(marker_to_abort(&cache, &auth, t).map_err(lift)?)
    } else {
        in_progress(&cache, &auth, t)?
    };
    if let Some(marker) = marked {
        check_source(&marker, None).map_err(lift)?;
        if cli.output == Output::Text {
            print_marker(style, if args.abort { "Undoing" } else { "Finishing" }, &marker);
        }
        if args.dry_run {
            return print_structured(cli.output, &marker);
        }
        let renderer = renderer(cli)?;
        let done = if args.abort {
            abort(&cache, &auth, &marker, &input, &renderer, &all)
        } else {
            finish(&cache, &auth, &marker, &input, &renderer, &all)
        }
        .map_err(lift)?;
        if cli.output == Output::Text {
            print_completed(style, &done, &args.tier, if args.abort { "moved" } else { "moved back" });
        }
        return print_structured(cli.output, &done);
    }

    let target = match (&args.to, args.steps) {
        (Some(_), _) if chosen.len() > 1 => {
            return Err(anyhow!(
                "--to names a commit of one repository, and {} are rolled back; fix: use --steps N, or roll them back one at a time",
                chosen.len()
            ));
        }
        (Some(c), _) => RollbackTarget::Commit(c.clone()),
        (None, Some(n)) => RollbackTarget::Steps(n),
        (None, None) => return Err(anyhow!("name a target: --to <commit> or --steps N")),
    };
    if !args.dry_run {
        crate::hold::hold_before_rollback(cli, &args.tier, &args.files)?;
    }
    let (done, completed) = if chosen.len() == 1 {
        let one =
            shopset::promote::rollback_repository(&cache, &auth, t, &chosen[0], &target, args.revert, args.dry_run)?;
        (vec![one], None)
    } else {
        let renderer = renderer(cli)?;
        shopset::promote::rollback_together(
            &cache,
            &auth,
            &input,
            &renderer,
            &chosen,
            &target,
            args.revert,
            args.dry_run,
        )
        .map_err(lift)?
    };
    if cli.output == Output::Text {
        let verb = match (args.dry_run, args.revert) {
            (true, _) => "would move",
            (false, true) => "reverted",
            (false, false) => "moved back",
        };
        for d in &done {
            println!(
                "{} {} {} {} -> {}",
                style.bold(verb),
                d.repository,
                d.branch,
                shopset::revision::short(&d.previous),
                shopset::revision::short(&d.head)
            );
            if !d.undone.is_empty() {
                println!(
                    "  undone:\n{}",
                    indent(&d.undone.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n"))
                );
            }
        }
        match (&completed, args.dry_run) {
            (Some(c), _) => match &c.system_commit {
                Some(commit) => println!(
                    "pinned: system branch {} at {} (all of them together, one commit)",
                    args.tier,
                    shopset::revision::short(commit)
                ),
                None => println!("pinned: the system branch {} already pins them", args.tier),
            },
            (None, false) => println!(
                "next: the controller pins {} on the system branch {} (by hand: shopctl sync -f ... --tier {})",
                done.iter().map(|d| shopset::revision::short(&d.head)).collect::<Vec<_>>().join(", "),
                args.tier,
                args.tier
            ),
            (None, true) => {}
        }
    }
    if !args.dry_run {
        // So that the next (automatic) promotion does not undo the rollback: a person releases it.
        let what: Vec<String> = done
            .iter()
            .map(|d| {
                format!(
                    "{} {} -> {}",
                    d.repository,
                    shopset::revision::short(&d.previous),
                    shopset::revision::short(&d.head)
                )
            })
            .collect();
        let reason = format!("rolled back {}", what.join(", "));
        match crate::hold::hold_after_rollback(cli, &args.tier, &args.files, &reason) {
            Ok(Some(report)) if cli.output == Output::Text => {
                crate::hold::print_text(&report, style);
                println!("  release it when the tier may be promoted into again: shopctl release {} -f ...", args.tier);
            }
            Ok(_) => {}
            // The rollback happened; a hold that could not be written is said, not an error of it.
            Err(e) => eprintln!(
                "warning: tier {} is rolled back but not on hold ({e:#}); fix: shopctl hold {} --reason {reason:?} -f ...",
                args.tier, args.tier
            ),
        }
    }
    if done.len() == 1 {
        return print_structured(cli.output, &done[0]);
    }
    print_structured(cli.output, &done)
}
