//! Commit messages of the system branch, written for people: what moved, which ShopSets changed,
//! and which files were put back.

use git2::Oid;
use shopset_core::fleet::application_destination;
use shopset_core::revision::short;
use shopset_core::tree::Entry;

use crate::gitops::{Change, Remote};
use crate::sync::ShopSetChanges;
use crate::sync::compare::Compare;

/// Who commits to the system repository.
pub const AUTHOR_NAME: &str = "ShopSet";
pub const AUTHOR_EMAIL: &str = "shopset@shopset.dev";

/// A pinned repository as a message names it: its label, its head, and where to count commits.
pub(crate) struct Pinned<'a> {
    pub label: &'a str,
    pub head: Oid,
    pub remote: &'a Remote,
}

/// "app: abc1234 -> def5678 (3 commits)" for one pinned repository.
fn pin_change(old: Option<String>, pinned: &Pinned<'_>) -> Option<String> {
    let (label, new, remote) = (pinned.label, pinned.head.to_string(), pinned.remote);
    match old {
        Some(old) if old == new => None,
        Some(old) => {
            let count = match (Oid::from_str(&old), Oid::from_str(&new)) {
                (Ok(o), Ok(n)) => remote.count_commits(o, n),
                _ => None,
            };
            let count = match count {
                Some(1) => " (1 commit)".to_string(),
                Some(n) if remote.count_commits(Oid::from_str(&new).ok()?, Oid::from_str(&old).ok()?) == Some(0) => {
                    format!(" ({n} commits)")
                }
                Some(n) => format!(" ({n} commits, moved back or rewritten)"),
                None => " (old commit no longer in the repository)".to_string(),
            };
            Some(format!("{label}: {} -> {}{count}", short(&old), short(&new)))
        }
        None => Some(format!("{label}: pinned at {}", short(&new))),
    }
}

/// How many names a line of a message lists before it counts the rest: a render of 10,000
/// ShopSets must not write 10,000 names on one line (`git log` and review tools show it whole).
const NAMES_SHOWN: usize = 10;

/// "a, b, c", or "a, ..., j and 990 more" past [`NAMES_SHOWN`].
fn names<S: AsRef<str>>(all: &[S]) -> String {
    let shown: Vec<&str> = all.iter().take(NAMES_SHOWN).map(AsRef::as_ref).collect();
    match all.len().saturating_sub(NAMES_SHOWN) {
        0 => shown.join(", "),
        rest => format!("{} and {rest} more", shown.join(", ")),
    }
}

/// A message a person can read: what moved, which ShopSets changed, and which of ShopSet's files
/// a person had changed. `ours` is the root tree of ShopSet's own last commit on the branch: only
/// files that differ from it were changed by someone else; the rest changed with the render
/// (README.md). Of those, "restored" are written back as they were (nothing they are made from
/// changed), "files rewritten" are written with the render's new content, "dropped" are under
/// ShopSet's paths but not generated. "removed" names only the files of ShopSets that are gone.
/// Paths outside ShopSet's are kept by every sync and never appear.
pub(crate) fn commit_message(
    tier: &str,
    new_branch: bool,
    cmp: &Compare<'_>,
    ours: Option<Oid>,
    changes: &ShopSetChanges,
    app: &Pinned<'_>,
    configs: &[Pinned<'_>],
) -> String {
    let mut lines = Vec::new();
    // The app is pinned at `base`; a configuration at `config/<name>`, which is its label.
    let gitlinks = std::iter::once(("base", app)).chain(configs.iter().map(|c| (c.label, c)));
    for (path, pinned) in gitlinks {
        if let Some(line) = cmp.old_gitlink(path).and_then(|old| pin_change(old, pinned)) {
            lines.push(line);
        }
    }
    for c in cmp.delta.iter().filter(|c| c.path.starts_with("config/") && c.new.is_none()) {
        lines.push(format!("{}: no longer used", c.path));
    }
    let list = |v: &[String]| names(v);
    // A path of the branch that differs from what ShopSet last wrote there was changed by a person.
    let by_hand = |c: &Change| ours.is_some_and(|_| cmp.stored(ours, &c.path) != c.old);
    // A ShopSet is gone when ShopSet had written its files; a directory a person added under
    // `shopsets/` is not one (its files are "dropped", below).
    let removed: Vec<String> = changes
        .removed
        .iter()
        .filter(|n| ours.is_none() || cmp.stored_ids(ours, n).iter().any(Option::is_some))
        .cloned()
        .collect();
    if !changes.added.is_empty() {
        lines.push(format!("shopsets added: {}", list(&changes.added)));
    }
    if !removed.is_empty() {
        lines.push(format!("shopsets removed: {}", list(&removed)));
    }
    // A ShopSet whose files differ only because someone edited them is restored, not changed.
    let changed: Vec<String> = changes
        .changed
        .iter()
        .filter(|n| ours.is_none() || cmp.stored_ids(ours, n) != cmp.rendered_ids(n))
        .cloned()
        .collect();
    // A ShopSet moved to another cluster (`shopctl shopset move`) is said so: from where, to where.
    let mut moved: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for name in &changed {
        let path = format!("applications/{name}.yaml");
        let Some(change) = cmp.delta.iter().find(|c| c.path == path) else { continue };
        let old = change.old.and_then(|(_, id)| cmp.system.blob(id).ok());
        let new = match cmp.new.entries.get(path.as_str()) {
            Some(Entry::File(bytes)) => Some(bytes),
            _ => None,
        };
        if let (Some(from), Some(to)) =
            (old.and_then(|b| application_destination(&b)), new.and_then(|b| application_destination(b)))
            && from != to
        {
            moved.entry((from, to)).or_default().push(name.clone());
        }
    }
    for ((from, to), shopsets) in &moved {
        lines.push(format!("shopsets moved from {from} to {to}: {}", names(shopsets)));
    }
    if !changed.is_empty() {
        lines.push(format!("shopsets changed: {}", list(&changed)));
    }
    // The files of the ShopSets that are gone, as directories: "removed" says nothing else.
    let gone: Vec<String> = removed
        .iter()
        .flat_map(|n| {
            let (dir, app) = (format!("shopsets/{n}/"), format!("applications/{n}.yaml"));
            let had = |p: &str| cmp.delta.iter().any(|c| c.new.is_none() && c.path.starts_with(p));
            [had(&dir).then_some(dir), had(&app).then_some(app)]
        })
        .flatten()
        .collect();
    if !gone.is_empty() {
        lines.push(format!("removed: {}", names(&gone)));
    }
    let of_gone = |p: &str| gone.iter().any(|g| p.starts_with(g.as_str()));
    // The other paths that differ; the branch keeps every path outside ShopSet's, so these are all
    // ShopSet's. Gitlinks are named above; a file whose change came with the render is not listed.
    let (mut restored, mut rewritten, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    for c in cmp.delta.iter().filter(|c| c.path != "base" && !c.path.starts_with("config/") && !of_gone(&c.path)) {
        let path = c.path.as_str();
        match ours {
            // No commit of ShopSet's on the branch: its generated files cannot be told from a person's.
            None if !(path.starts_with("shopsets/") || path.starts_with("applications/")) => rewritten.push(path),
            None => {}
            // Edited or deleted by hand, and written back as ShopSet last wrote it.
            Some(_) if by_hand(c) && c.new.is_some() && cmp.stored(ours, path) == c.new => restored.push(path),
            // Edited by hand, and the render changed it too.
            Some(_) if by_hand(c) && c.new.is_some() => rewritten.push(path),
            // Not generated (any more), under ShopSet's paths: a person's file there, or one edited by hand.
            Some(_) if by_hand(c) => dropped.push(path),
            Some(_) => {}
        }
    }
    let old_empty = cmp.old_is_empty();
    for (label, paths) in [("restored", restored), ("files rewritten", rewritten), ("dropped", dropped)] {
        if !paths.is_empty() && !old_empty {
            lines.push(format!("{label}: {}", names(&paths)));
        }
    }
    let subject = if old_empty || new_branch {
        let apps = cmp.new.entries.keys().filter(|p| p.starts_with("applications/")).count();
        format!("{tier}: first render (app {}, {apps} shopsets)", short(&app.head.to_string()))
    } else {
        let mut parts: Vec<String> = lines.iter().take(2).cloned().collect();
        if lines.len() > 2 {
            parts.push(format!("and {} more", lines.len() - 2));
        }
        format!("{tier}: {}", if parts.is_empty() { "render".to_string() } else { parts.join("; ") })
    };
    let mut message = subject;
    if !lines.is_empty() {
        message.push_str("\n\n");
        message.push_str(&lines.join("\n"));
    }
    message.push_str(&format!("\n\nGenerated-by: shopset (reproduce with `shopctl sync --tier {tier}`)\n"));
    message
}

/// `message` with the trailer `Why: <why>` (what let a promotion through) before `Generated-by:`.
pub(crate) fn with_why(message: String, why: &str) -> String {
    let why = format!("Why: {}\n", why.replace('\n', " "));
    match message.rfind("Generated-by: ") {
        Some(at) => format!("{}{why}{}", &message[..at], &message[at..]),
        None => format!("{message}\n{why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{names, with_why};

    #[test]
    fn why_is_a_trailer_beside_generated_by() {
        let message = "tier-1: base: a -> b\n\nbase: a -> b\n\nGenerated-by: shopset\n".to_string();
        assert_eq!(
            with_why(message, "policy of tier-1: allowed\n(soak met)"),
            "tier-1: base: a -> b\n\nbase: a -> b\n\nWhy: policy of tier-1: allowed (soak met)\nGenerated-by: shopset\n"
        );
    }

    #[test]
    fn a_long_list_of_names_is_cut_and_counted() {
        assert_eq!(names(&["a", "b"]), "a, b");
        let many: Vec<String> = (0..10_000).map(|i| format!("cell-{i:05}")).collect();
        let line = names(&many);
        assert!(line.starts_with("cell-00000, cell-00001, "), "{line}");
        assert!(line.ends_with("cell-00009 and 9990 more"), "{line}");
        assert!(line.len() < 200, "{line}");
        assert_eq!(names(&many[..10]).matches(", ").count(), 9);
    }
}
