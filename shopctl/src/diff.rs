//! `shopctl diff FROM TO`: what `shopctl promote FROM TO` would bring, before it moves anything.
//!
//! 1. The commits each repository would gain ([`shopset::promote::plan`], read only).
//! 2. The manifests: every ShopSet overlay of TO built with `kustomize build`, once as TO runs now
//!    (the commits its system branch pins) and once as it would after the promotion (TO's pins
//!    replaced by FROM's heads), and the unified diff of the two outputs.
//!
//! Each side is materialised in a temporary directory the way `git clone --recurse-submodules`
//! lays the system branch out: the rendered files, with the app repository checked out at its
//! pinned commit in `base/` and each configuration repository in `config/<name>/` (read from the
//! cache with `git read-tree` and `git checkout-index`; the cache itself is not changed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow};
use kube::ResourceExt;
use serde::Serialize;

use shopset::gitops::{Auth, GitCache, diff_trees};
use shopset::manifests::TierInput;
use shopset::promote::{Move, Only, RepoMove, plan};
use shopset::render::{Entry, Pins, RenderInput, Tree};
use shopset::revision::{short, short_or};

use crate::apply::{Kustomize, temp_dir};
use crate::progress::Progress;
use crate::{Cli, Output, Style, auth, cache, load, print_structured, renderer};

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The tier promoted from (its heads are what TO would get).
    from: String,
    /// The tier promoted to (its overlays are built before and after).
    to: String,
    /// Manifest files or directories holding the Tiers, Configurations and ShopSets.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

/// The manifest difference of one ShopSet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShopSetDiff {
    pub shopset: String,
    pub namespace: String,
    pub changed: bool,
    /// Unified diff of `kustomize build shopsets/<name>`, now -> after the promotion.
    pub diff: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    pub from: String,
    pub to: String,
    /// Commits per repository, as `shopctl promote --dry-run` lists them.
    pub repositories: Vec<RepoMove>,
    /// What TO's system branch pins now (None: it has no system branch yet).
    pub now: Option<Pins>,
    /// TO's pins after the promotion.
    pub after: Pins,
    pub shopsets: Vec<ShopSetDiff>,
}

pub fn diff(cli: &Cli, style: &Style, args: &DiffArgs) -> Result<()> {
    let inv = load(cli, &args.files)?;
    let (from, to) = (inv.find_tier(&args.from)?, inv.find_tier(&args.to)?);
    let to_input = inv.tier_input(&args.to)?;
    let cfgs = inv.configurations_of(&[&args.from, &args.to])?;
    let (cache, auth, renderer) = (cache(cli)?, auth(cli)?, renderer(cli)?);
    let plan = plan(&cache, &auth, from, to, &cfgs, Only::All)?;
    let state = shopset::state::read(&cache, &auth, &to_input)?;

    let repo = |label: &str| plan.repositories.iter().find(|m| m.repository == label);
    let after_of = |label: &str| {
        repo(label).map(|m| m.from_head.clone()).ok_or_else(|| anyhow!("{label}: not part of the promotion plan"))
    };
    let after = Pins {
        app: after_of("app")?,
        configurations: to_input
            .configurations
            .iter()
            .map(|c| Ok((c.name_any(), after_of(&format!("config/{}", c.name_any()))?)))
            .collect::<Result<_>>()?,
    };
    // Now: what TO's system branch pins; a repository it does not pin yet counts as its branch head.
    let now_of = |path: &str, label: &str| -> Option<String> {
        state
            .pinned
            .get(path)
            .cloned()
            .or_else(|| repo(label).map(|m| m.to_head.clone().unwrap_or_else(|| m.from_head.clone())))
    };
    let now = state.system_head.as_ref().map(|_| Pins {
        app: now_of("base", "app").unwrap_or_else(|| after.app.clone()),
        configurations: to_input
            .configurations
            .iter()
            .map(|c| {
                let n = c.name_any();
                let pin = now_of(&format!("config/{n}"), &format!("config/{n}"))
                    .unwrap_or_else(|| after.configurations[&n].clone());
                (n, pin)
            })
            .collect(),
    });

    let render = |pins: &Pins| {
        renderer.render(RenderInput {
            tier: &to_input.tier,
            configurations: &to_input.configurations,
            shopsets: &to_input.shopsets,
            pins,
        })
    };
    let tmp = temp_dir("shopctl-diff-")?;
    let kustomize = Kustomize::find()?;
    let after_dir = tmp.path().join("after");
    materialize(&cache, &auth, &to_input, &render(&after)?, &after_dir, tmp.path())?;
    let now_dir = match &now {
        Some(p) if *p == after => None, // nothing moves: both sides are the same tree
        Some(p) => {
            let dir = tmp.path().join("now");
            materialize(&cache, &auth, &to_input, &render(p)?, &dir, tmp.path())?;
            Some(dir)
        }
        None => None,
    };

    let label = |p: &Pins| {
        let mut parts = vec![format!("app {}", short(&p.app))];
        parts.extend(p.configurations.iter().map(|(n, c)| format!("config/{n} {}", short(c))));
        parts.join(", ")
    };
    let mut shopsets = Vec::new();
    let progress = Progress::new(cli.output, to_input.shopsets.len());
    for ss in &to_input.shopsets {
        let name = ss.name_any();
        progress.start(&format!("building ShopSet {name}"));
        let rel = format!("shopsets/{name}");
        let build = |dir: &Path| {
            kustomize.build(&dir.join(&rel)).map_err(|e| {
                anyhow!("ShopSet {name}: `{}` failed in the materialised system tree: {e}", kustomize.display(&rel))
            })
        };
        let new = build(&after_dir)?;
        let old = match (&now, &now_dir) {
            (Some(_), Some(dir)) => Some(build(dir)?),
            (Some(_), None) => Some(new.clone()),
            (None, _) => None,
        };
        let one = |text: Option<&String>| {
            let mut t = Tree::default();
            if let Some(text) = text {
                t.entries.insert(rel.as_str().into(), Entry::file(text.clone()));
            }
            t
        };
        let raw = diff_trees(&one(old.as_ref()), &one(Some(&new)));
        let now_label = now
            .as_ref()
            .map(|p| format!("{} now: {}", args.to, label(p)))
            .unwrap_or_else(|| format!("{} has no system branch yet", args.to));
        let text: String = raw
            .lines()
            .filter(|l| !l.starts_with("diff --git") && *l != "new file")
            .map(|l| {
                if l.starts_with("--- ") {
                    format!(
                        "--- {}\t({now_label})\n",
                        if old.is_some() { format!("a/{rel}") } else { "/dev/null".into() }
                    )
                } else if l.starts_with("+++ ") {
                    format!("+++ b/{rel}\t(after promote {} -> {}: {})\n", args.from, args.to, label(&after))
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        shopsets.push(ShopSetDiff {
            shopset: name,
            namespace: ss.destination_namespace(&to_input.tier),
            changed: !text.is_empty(),
            diff: text,
        });
        progress.done();
    }
    drop(progress);

    let report = DiffReport {
        from: args.from.clone(),
        to: args.to.clone(),
        repositories: plan.repositories,
        now,
        after,
        shopsets,
    };
    if cli.output == Output::Text {
        print_text(&report, &state, style);
    }
    print_structured(cli.output, &report)
}

fn print_text(r: &DiffReport, state: &shopset::state::GitState, style: &Style) {
    println!("{} {} -> {}: what the promotion would change", style.bold("Promote"), r.from, r.to);
    for mv in &r.repositories {
        let n = mv.commits.len();
        let what = match &mv.kind {
            Move::UpToDate => "up to date".to_string(),
            Move::Create => format!(
                "create {} at {} ({n} commit{})",
                mv.to_branch,
                short(&mv.from_head),
                if n == 1 { "" } else { "s" }
            ),
            Move::FastForward => format!(
                "fast-forward {} {} -> {} ({n} commit{})",
                mv.to_branch,
                short_or(mv.to_head.as_deref(), "-"),
                short(&mv.from_head),
                if n == 1 { "" } else { "s" }
            ),
            Move::Diverged { only_on_target } => style.yellow(&format!(
                "DIVERGED: {} has {} commit(s) {} lacks: `shopctl promote` refuses it without --force",
                mv.to_branch,
                only_on_target.len(),
                mv.from_branch
            )),
        };
        println!("  {:<20} {what}", mv.repository);
        if mv.kind != Move::UpToDate && !matches!(mv.kind, Move::Create) {
            for c in mv.commits.iter().take(50) {
                println!("      {c}");
            }
            if mv.commits.len() > 50 {
                println!("      ... and {} more", mv.commits.len() - 50);
            }
            if !mv.files.is_empty() {
                println!("      files: {}", mv.files.join(", "));
            }
        }
    }
    if let (Some(pinned), Some(head)) = (state.pinned.get("base"), &state.app_head)
        && pinned != head
    {
        println!(
            "  {} the system branch {} pins app {}, but its app branch is at {} (the controller has not caught up): the diff starts from what is pinned",
            style.yellow("note:"),
            state.branch,
            short(pinned),
            short(head)
        );
    }
    for ss in &r.shopsets {
        if ss.changed {
            println!("{} {} (namespace {}): changed", style.bold("ShopSet"), ss.shopset, ss.namespace);
            for line in ss.diff.lines() {
                println!("{}", style.diff_line(line));
            }
        } else {
            println!("{} {} (namespace {}): no change", style.bold("ShopSet"), ss.shopset, ss.namespace);
        }
    }
}

/// Writes the rendered tree to `dir` and checks out each gitlink's repository at its commit.
fn materialize(cache: &GitCache, auth: &Auth, input: &TierInput, tree: &Tree, dir: &Path, tmp: &Path) -> Result<()> {
    tree.write_to(dir).with_context(|| format!("cannot write {}", dir.display()))?;
    for (path, commit) in tree.gitlinks() {
        let url = if path == "base" {
            input.tier.spec.app.url.clone()
        } else {
            let name = path.trim_start_matches("config/");
            input
                .configurations
                .iter()
                .find(|c| c.name_any() == name)
                .map(|c| c.spec.url.clone())
                .ok_or_else(|| anyhow!("{path}: no Configuration {name}"))?
        };
        let remote = cache.open(&url, auth)?;
        if !remote.has_commit(commit) {
            // A commit no longer on the fetched branches: fetch every branch once before giving up.
            let heads = remote.heads()?;
            let names: Vec<&str> = heads.branches.keys().map(String::as_str).collect();
            remote.fetch(&names)?;
            if !remote.has_commit(commit) {
                return Err(anyhow!(
                    "{path}: commit {commit} is not on any branch of {url} (force-pushed away?); fix: `shopctl doctor` says how to pin a reachable commit"
                ));
            }
        }
        checkout(remote.git_dir(), commit, &dir.join(path), &tmp.join("index"))?;
    }
    Ok(())
}

/// `git read-tree` + `git checkout-index --all` of `commit` from a bare repository into `dest`,
/// with a throwaway index: the repository is only read.
fn checkout(git_dir: &Path, commit: &str, dest: &Path, index: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let _ = std::fs::remove_file(index);
    for args in [vec!["read-tree", commit], vec!["checkout-index", "--all"]] {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(git_dir)
            .arg("--work-tree")
            .arg(dest)
            .args(&args)
            .env("GIT_INDEX_FILE", index)
            .stdin(Stdio::null())
            .output()
            .context("cannot run git; fix: install git and put it on PATH")?;
        if !out.status.success() {
            return Err(anyhow!(
                "`git {}` of {} failed: {}",
                args.join(" "),
                git_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}
