//! The branch-name rules of `shopset-core` (no git there) are stricter than git's own: every name
//! they accept, libgit2 accepts as a branch too.

use shopset_core::validation::branch_problem;

#[test]
fn every_branch_name_the_rules_accept_is_one_git_accepts() {
    let names = [
        "tier-0",
        "tier/0",
        "a",
        "A_b.c+d-e",
        "release/2026.12",
        "x.lock",
        "a/x.lock",
        "a..b",
        "a//b",
        "a/.b",
        ".a",
        "a.",
        "a/",
        "/a",
        "@",
        "HEAD",
        "a@{b",
        "a b",
        "a~b",
        "a^b",
        "a:b",
        "a?b",
        "a*b",
        "a[b",
        "a\\b",
        "-a",
        "a\u{7f}",
        "ü",
        "a.lock/b",
        "refs/heads/x",
        "a/-b",
        "_a",
        "a+",
        "a-",
    ];
    for name in names {
        let ours = branch_problem(name).is_none();
        let git = git2::Reference::is_valid_name(&format!("refs/heads/{name}"));
        assert!(!ours || git, "{name:?}: accepted by ShopSet's rules but not by git");
    }
    assert!(branch_problem("tier-0").is_none());
    assert!(branch_problem("a..b").is_some());
}
