//! The render memo kept across processes (`shopctl sync` in the cache directory): a memo-served
//! render is byte for byte a fresh one, a changed input renders again, and a memo that is damaged,
//! of another tier or of other templates is refused.

use std::collections::BTreeMap;

use shopset::manifests::{Inventory, TierInput};
use shopset::render::{Entry, MemoRejected, Pins, RenderInput, Rendered, Renderer, Tree};

const APP: &str = "1111111111111111111111111111111111111111";
const CONFIG: &str = "2222222222222222222222222222222222222222";

fn input() -> TierInput {
    let dir = shopset_e2e::tools::repo_root().join("examples");
    let inv = Inventory::load(&[dir]).expect("examples load");
    inv.check().expect("examples are valid");
    inv.tier_input("tier-0").unwrap()
}

fn render(r: &Renderer, i: &TierInput) -> Tree {
    let pins =
        Pins { app: APP.into(), configurations: BTreeMap::from([("shop-config".to_string(), CONFIG.to_string())]) };
    r.render(RenderInput { tier: &i.tier, configurations: &i.configurations, shopsets: &i.shopsets, pins: &pins })
        .unwrap()
}

/// The memo a first process leaves behind after rendering `i`.
fn memo_of(i: &TierInput) -> Vec<u8> {
    let first = Renderer::embedded().unwrap();
    render(&first, i);
    first.saved_memo("tier-0").expect("a first render leaves a memo")
}

#[test]
fn a_memo_served_render_is_a_fresh_render_and_renders_nothing_again() {
    let base = input();
    let memo = memo_of(&base);
    let second = Renderer::embedded().unwrap();
    assert_eq!(second.restore_memo("tier-0", &memo), Ok(base.shopsets.len()));
    assert_eq!(render(&second, &base), render(&Renderer::embedded().unwrap(), &base));
    // Every ShopSet came from the memo: nothing new to keep.
    assert!(second.saved_memo("tier-0").is_none(), "an unchanged input rendered a ShopSet again");
}

/// Proof that a restored memo is what serves the files (so the test above is not vacuous): a memo
/// with one file's bytes replaced and its checksum made to hold again is served as it is.
#[test]
fn a_restored_memo_is_what_serves_the_files() {
    let base = input();
    let fresh = render(&Renderer::embedded().unwrap(), &base);
    let (path, bytes) = fresh
        .entries
        .iter()
        .find_map(|(p, e)| match e {
            Entry::File(b) if p.starts_with("shopsets/") && p.ends_with("/kustomization.yaml") => Some((p, b)),
            _ => None,
        })
        .unwrap();
    let mut memo = memo_of(&base);
    let at = memo.windows(bytes.len()).position(|w| w == &bytes[..]).expect("the file is in the memo");
    let forged = vec![b'#'; bytes.len()];
    memo[at..at + bytes.len()].copy_from_slice(&forged);
    // The header is the magic line, then the checksum of everything after it.
    let header = memo.iter().position(|b| *b == b'\n').unwrap() + 1;
    let sum = shopset::fingerprint::checksum64(&memo[header + 8..]);
    memo[header..header + 8].copy_from_slice(&sum.to_le_bytes());
    let second = Renderer::embedded().unwrap();
    second.restore_memo("tier-0", &memo).unwrap();
    assert_eq!(render(&second, &base).entries[path], Entry::File(forged.into()));
}

#[test]
fn a_memo_is_not_used_for_a_changed_input() {
    type Change = fn(&mut TierInput);
    let changes: Vec<(&str, Change)> = vec![
        ("tier branch", |i| i.tier.spec.branch = Some("tier-0-next".into())),
        ("app path", |i| i.tier.spec.app.path = "base/v2".into()),
        ("system url", |i| i.tier.spec.system.url = "https://git.example/other/system.git".into()),
        ("argocd project", |i| i.tier.spec.argocd.project = "shops".into()),
        ("destination server", |i| i.tier.spec.argocd.destination.server = "https://cluster-2.example".into()),
        ("sync policy", |i| i.tier.spec.argocd.sync_policy = None),
        ("configuration path", |i| i.configurations[0].spec.path = "component/v2".into()),
        ("shops", |i| std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.shops.push("shop-new".into())),
        ("replicas", |i| std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.replicas = Some(7)),
        ("shopset namespace", |i| {
            std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.namespace = Some("elsewhere".into())
        }),
        ("a ShopSet removed", |i| {
            i.shopsets.pop();
        }),
    ];
    let base = input();
    let memo = memo_of(&base);
    let before = render(&Renderer::embedded().unwrap(), &base);
    for (what, change) in changes {
        let mut changed = base.clone();
        change(&mut changed);
        let second = Renderer::embedded().unwrap();
        second.restore_memo("tier-0", &memo).unwrap();
        let after = render(&second, &changed);
        assert_ne!(before, after, "{what}: the change should show in the render");
        assert_eq!(after, render(&Renderer::embedded().unwrap(), &changed), "{what}: a stale memo was served");
        assert!(second.saved_memo("tier-0").is_some(), "{what}: the new render is not kept for the next run");
    }
}

#[test]
fn a_damaged_or_foreign_memo_is_refused_and_the_render_is_fresh() {
    let base = input();
    let memo = memo_of(&base);
    let fresh = render(&Renderer::embedded().unwrap(), &base);
    let flip = |at: usize| {
        let mut m = memo.clone();
        m[at] ^= 0x01;
        m
    };
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ namespace }}\n  labels: {other: \"yes\"}\n",
    )
    .unwrap();
    let other_templates = || Renderer::with_overrides(Some(templates.path())).unwrap();
    let cases: Vec<(&str, Vec<u8>, Renderer, &str, MemoRejected)> = vec![
        ("empty", Vec::new(), Renderer::embedded().unwrap(), "tier-0", MemoRejected::NotAMemo),
        ("text", b"apiVersion: v1\n".to_vec(), Renderer::embedded().unwrap(), "tier-0", MemoRejected::NotAMemo),
        ("truncated", memo[..memo.len() - 3].to_vec(), Renderer::embedded().unwrap(), "tier-0", MemoRejected::Damaged),
        (
            "a byte of a file flipped",
            flip(memo.len() - 10),
            Renderer::embedded().unwrap(),
            "tier-0",
            MemoRejected::Damaged,
        ),
        ("a byte of the checksum flipped", flip(24), Renderer::embedded().unwrap(), "tier-0", MemoRejected::Damaged),
        (
            "older format",
            [b"shopset render memo v0\n".as_slice(), &memo[23..]].concat(),
            Renderer::embedded().unwrap(),
            "tier-0",
            MemoRejected::NotAMemo,
        ),
        (
            "another tier's",
            memo.clone(),
            Renderer::embedded().unwrap(),
            "tier-1",
            MemoRejected::OtherTier { wanted: "tier-1".into(), found: "tier-0".into() },
        ),
        ("other templates", memo.clone(), other_templates(), "tier-0", MemoRejected::OtherRenderer),
    ];
    for (what, bytes, renderer, tier, why) in cases {
        assert_eq!(renderer.restore_memo(tier, &bytes), Err(why), "{what}");
        assert_eq!(
            render(&renderer, &base),
            render(&if what == "other templates" { other_templates() } else { Renderer::embedded().unwrap() }, &base),
            "{what}: the render is not a fresh one"
        );
    }
    // The other templates do change the render, so serving that memo would have been wrong.
    assert_ne!(render(&other_templates(), &base), fresh);
}

#[test]
fn memo_files_round_trip_and_are_written_only_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let base = input();
    let first = Renderer::embedded().unwrap();
    assert_eq!(first.load_memo_file(dir.path(), "default", "tier-0"), 0, "no file yet");
    render(&first, &base);
    assert!(first.save_memo_file(dir.path(), "default", "tier-0").unwrap());
    assert!(!first.save_memo_file(dir.path(), "default", "tier-0").unwrap(), "saved again though unchanged");
    let second = Renderer::embedded().unwrap();
    assert_eq!(second.load_memo_file(dir.path(), "default", "tier-0"), base.shopsets.len());
    assert_eq!(render(&second, &base), render(&Renderer::embedded().unwrap(), &base));
    // Another namespace's tier of the same name has a file of its own.
    assert_eq!(Renderer::embedded().unwrap().load_memo_file(dir.path(), "other", "tier-0"), 0);
    // A file damaged on disk is ignored, and the next save replaces it.
    let path = shopset::render::memo_path(dir.path(), "default", "tier-0");
    std::fs::write(&path, b"garbage").unwrap();
    let third = Renderer::embedded().unwrap();
    assert_eq!(third.load_memo_file(dir.path(), "default", "tier-0"), 0);
    assert_eq!(render(&third, &base), render(&Renderer::embedded().unwrap(), &base));
    assert!(third.save_memo_file(dir.path(), "default", "tier-0").unwrap());
    assert_eq!(Renderer::embedded().unwrap().load_memo_file(dir.path(), "default", "tier-0"), base.shopsets.len());
}

/// One renderer kept for a sequence of inputs (as the controller keeps it) edits its last tree
/// where the input changed; after each step its tree is byte for byte a fresh renderer's.
#[test]
fn a_renderer_kept_across_changes_renders_what_a_fresh_one_does() {
    type Change = fn(&mut TierInput, &mut Pins);
    let steps: Vec<(&str, Change)> = vec![
        ("nothing", |_, _| {}),
        ("shops of one", |i, _| std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.shops.push("shop-new".into())),
        ("replicas of another", |i, _| {
            let last = i.shopsets.len() - 1;
            std::sync::Arc::make_mut(&mut i.shopsets[last]).spec.replicas = Some(3);
        }),
        ("replicas removed again", |i, _| {
            let last = i.shopsets.len() - 1;
            std::sync::Arc::make_mut(&mut i.shopsets[last]).spec.replicas = None;
        }),
        ("app pin", |_, p| p.app = "3333333333333333333333333333333333333333".into()),
        ("configuration pin", |_, p| {
            p.configurations.insert("shop-config".into(), "4444444444444444444444444444444444444444".into());
        }),
        ("a ShopSet added", |i, _| {
            let mut added = shopset::api::ShopSet::clone(&i.shopsets[0]);
            added.metadata.name = Some("zz-added".into());
            i.shopsets.push(added.into());
        }),
        ("a second Configuration used by one ShopSet", |i, p| {
            let mut other = i.configurations[0].clone();
            other.metadata.name = Some("other-config".into());
            i.configurations.push(other);
            p.configurations.insert("other-config".into(), "5555555555555555555555555555555555555555".into());
            std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.configuration = "other-config".into();
        }),
        ("back to one Configuration", |i, _| {
            let first = i.configurations[0].spec.path.clone();
            std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.configuration = "shop-config".into();
            i.configurations[0].spec.path = first;
        }),
        ("a ShopSet removed", |i, _| {
            i.shopsets.remove(0);
        }),
        ("a ShopSet's namespace", |i, _| {
            std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.namespace = Some("elsewhere".into())
        }),
        ("the tier's project", |i, _| i.tier.spec.argocd.project = "shops".into()),
        ("a ShopSet renamed", |i, _| {
            std::sync::Arc::make_mut(&mut i.shopsets[0]).metadata.name = Some("renamed".into())
        }),
        ("every ShopSet removed", |i, _| i.shopsets.clear()),
    ];
    let mut i = input();
    let mut pins =
        Pins { app: APP.into(), configurations: BTreeMap::from([("shop-config".to_string(), CONFIG.to_string())]) };
    let kept = Renderer::embedded().unwrap();
    let render_with = |r: &Renderer, i: &TierInput, pins: &Pins| {
        r.render_edits(RenderInput { tier: &i.tier, configurations: &i.configurations, shopsets: &i.shopsets, pins })
            .unwrap()
    };
    let first = render_with(&kept, &i, &pins);
    assert_eq!(first.edits.from, None, "a first render is afresh");
    let (mut last, mut last_id) = ((*first.tree).clone(), first.edits.render);
    drop(first);
    for (what, change) in steps {
        change(&mut i, &mut pins);
        let fresh = render_with(&Renderer::embedded().unwrap(), &i, &pins).tree;
        let Rendered { tree, edits } = render_with(&kept, &i, &pins);
        assert_eq!(*tree, *fresh, "{what}: the kept renderer's tree differs from a fresh render");
        if what != "nothing" {
            assert_ne!(*tree, last, "{what}: the change should show in the render");
        }
        // What every ShopSet's templates read from the Tier changed: a render afresh, nothing to tell.
        if what == "the tier's project" {
            assert_eq!((edits.from, edits.paths.len()), (None, 0), "{what}: not rendered afresh");
            (last, last_id) = ((*tree).clone(), edits.render);
            continue;
        }
        // The edits it reports, applied to the tree it was edited from, give this tree.
        assert_eq!(edits.from, Some(last_id), "{what}: edited from another render");
        assert!(edits.paths.windows(2).all(|w| w[0] < w[1]), "{what}: paths not sorted and unique");
        let mut applied = last.clone();
        for path in &edits.paths {
            match tree.entries.get(path) {
                Some(entry) => applied.entries.insert(path.clone(), entry.clone()),
                None => applied.entries.remove(path),
            };
        }
        let missing: Vec<&str> = (applied.entries.keys().chain(tree.entries.keys()))
            .filter(|p| applied.entries.get(*p) != tree.entries.get(*p))
            .map(|p| &**p)
            .collect();
        assert!(missing.is_empty(), "{what}: paths that changed are missing from the edits: {missing:?}");
        (last, last_id) = ((*tree).clone(), edits.render);
    }
}

/// A tree handed out by `render_shared` never changes under its holder; once let go, the next
/// render of the tier edits it where it is instead of copying it.
#[test]
fn a_shared_render_is_edited_in_place_only_when_nobody_holds_it() {
    let mut i = input();
    let pins =
        Pins { app: APP.into(), configurations: BTreeMap::from([("shop-config".to_string(), CONFIG.to_string())]) };
    let kept = Renderer::embedded().unwrap();
    let render_shared = |r: &Renderer, i: &TierInput| {
        r.render_shared(RenderInput {
            tier: &i.tier,
            configurations: &i.configurations,
            shopsets: &i.shopsets,
            pins: &pins,
        })
        .unwrap()
    };
    let held = render_shared(&kept, &i);
    let as_rendered = (*held).clone();
    std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.shops.push("shop-new".into());
    let next = render_shared(&kept, &i);
    assert_eq!(*held, as_rendered, "a render changed a tree its caller still holds");
    assert_ne!(*next, *held);
    drop(held);
    let at = std::sync::Arc::as_ptr(&next);
    drop(next);
    std::sync::Arc::make_mut(&mut i.shopsets[0]).spec.shops.pop();
    let edited = render_shared(&kept, &i);
    assert_eq!(std::sync::Arc::as_ptr(&edited), at, "the tree was copied though nobody held it");
    assert_eq!(*edited, render(&Renderer::embedded().unwrap(), &i));
}

/// A tier of many ShopSets: its README names the first ones and counts the rest, and a renderer kept
/// across changes writes the README a fresh one does (a row past the limit or the count changing).
#[test]
fn a_readme_names_the_first_shopsets_and_counts_the_rest() {
    use shopset::render::README_SHOPSETS;
    let mut i = input();
    let template = shopset::api::ShopSet::clone(&i.shopsets[0]);
    i.shopsets = (0..README_SHOPSETS + 50)
        .map(|n| {
            let mut ss = template.clone();
            ss.metadata.name = Some(format!("cell-{n:04}"));
            ss.into()
        })
        .collect();
    let readme = |t: &Tree| match t.entries.get("README.md") {
        Some(Entry::File(b)) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("README.md: {other:?}"),
    };
    let kept = Renderer::embedded().unwrap();
    let text = readme(&render(&kept, &i));
    let named: Vec<&str> = text.lines().filter(|l| l.starts_with("- `cell-")).collect();
    assert_eq!(named.len(), README_SHOPSETS, "{text}");
    assert!(named[0].starts_with("- `cell-0000`") && named[99].starts_with("- `cell-0099`"), "{named:?}");
    assert!(text.contains("\n- and 50 more: each has its overlay `shopsets/<name>/`\n"), "{text}");
    // A ShopSet past the limit changes its shop count, then one more is added: rendered as afresh.
    let last = i.shopsets.len() - 1;
    std::sync::Arc::make_mut(&mut i.shopsets[last]).spec.shops.push("shop-extra".into());
    assert_eq!(readme(&render(&kept, &i)), text, "a row past the limit is not in the README");
    let mut added = template.clone();
    added.metadata.name = Some("zz-added".into());
    i.shopsets.push(added.into());
    let counted = readme(&render(&kept, &i));
    assert!(counted.contains("\n- and 51 more:"), "{counted}");
    assert_eq!(counted, readme(&render(&Renderer::embedded().unwrap(), &i)));
    // Few ShopSets: no count line.
    let few = readme(&render(&Renderer::embedded().unwrap(), &input()));
    assert!(!few.contains("more: each has"), "{few}");
}
