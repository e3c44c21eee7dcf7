//! `shopctl completion` and `shopctl man`: the scripts and pages come from the same clap
//! definitions as `--help`, so every command is in them. Checked with the shells and the roff
//! formatter that read them.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Every command, as `shopctl --help` lists them.
const COMMANDS: &[&str] = &[
    "render",
    "sync",
    "crds",
    "promote",
    "merge-promotion",
    "rollback",
    "status",
    "diff",
    "apply",
    "doctor",
    "maintenance",
    "shopset",
    "shop",
    "hold",
    "release",
    "argocd-creds",
    "quickstart",
    "completion",
    "man",
];

fn shopctl(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_shopctl")).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "shopctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(shopctl(args).stdout).unwrap()
}

#[test]
fn help_lists_exactly_the_commands_the_scripts_and_pages_are_checked_for() {
    let help = stdout(&["--help"]);
    let listed: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1) // the rest of the `Commands:` line
        .take_while(|l| !l.is_empty())
        // A command's line; its description's wrapped lines are indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert_eq!(listed, COMMANDS, "{help}");
}

#[test]
fn bash_completion_parses_and_completes_commands_and_options() {
    let script = stdout(&["completion", "bash"]);
    assert!(script.contains("_shopctl() {"), "{script}");
    assert!(script.contains("complete -F _shopctl"), "{script}");
    for command in COMMANDS {
        assert!(script.contains(&format!("shopctl,{command})")), "no case for {command}:\n{script}");
    }
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("shopctl.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", String::from_utf8_lossy(&syntax.stderr));

    // What bash offers after TAB, as the function computes it for the words typed.
    let complete = |words: &[&str]| -> Vec<String> {
        let line = format!(
            "source {file}; COMP_WORDS=({words}); COMP_CWORD={cword}; _shopctl shopctl {cur} {prev}; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file = file.display(),
            words = words.join(" "),
            cword = words.len() - 1,
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Command::new("bash").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
    };
    assert_eq!(complete(&["shopctl", "sy"]), ["sync"]);
    assert_eq!(complete(&["shopctl", "com"]), ["completion"]);
    assert!(complete(&["shopctl", "sync", "--dr"]).contains(&"--dry-run".to_string()));
    assert_eq!(complete(&["shopctl", "completion", "fi"]), ["fish"]);
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    let zsh = stdout(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef shopctl"), "{zsh}");
    let fish = stdout(&["completion", "fish"]);
    for command in COMMANDS {
        assert!(zsh.contains(&format!("'{command}:")), "zsh: no {command}:\n{zsh}");
        assert!(
            fish.contains(&format!("complete -c shopctl -n \"__fish_shopctl_needs_command\" -f -a \"{command}\"")),
            "fish: no {command}:\n{fish}"
        );
    }
}

/// `groff -man` of a page: (text, warnings). Lines are long enough that nothing in the checked
/// text is wrapped or hyphenated. groff comes with man-db; the callers check the roff structure
/// of the page too.
fn render(page: &Path) -> (String, String) {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-rLL=400n"])
        .arg(page)
        .env("GROFF_NO_SGR", "1")
        .output()
        .expect("run groff (it comes with man-db: apt-get install groff-base)");
    assert!(out.status.success(), "groff {}: {}", page.display(), String::from_utf8_lossy(&out.stderr));
    // Bold and underline by overstriking: keep the characters only.
    let mut text = String::new();
    for c in String::from_utf8(out.stdout).unwrap().chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    (text, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn man_page_of_shopctl_lists_every_command_and_renders() {
    let page = stdout(&["man"]);
    assert!(page.lines().any(|l| l.starts_with(".TH SHOPCTL 1 ")), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(&format!("\n{section}\n")), "no {section}:\n{page}");
    }
    assert!(page.contains("shopctl \\- Roll one application out tier by tier with GitOps"), "{page}");
    for command in COMMANDS {
        // roff escapes every hyphen.
        let escaped = command.replace('-', "\\-");
        assert!(page.contains(&format!("shopctl\\-{escaped}(1)")), "no shopctl-{command}(1):\n{page}");
    }
    assert!(!page.contains("shopctl\\-help(1)"), "help has no page of its own:\n{page}");

    let dir = TempDir::new().unwrap();
    let file = dir.path().join("shopctl.1");
    std::fs::write(&file, &page).unwrap();
    let (text, warnings) = render(&file);
    assert_eq!(warnings, "", "groff warned about the page");
    // The .TH fields in their places: the manual in the header, the source in the footer.
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("SHOPCTL(1) ") && header.contains(" shopctl manual "), "{header}");
    let footer = text.lines().rfind(|l| !l.is_empty()).unwrap();
    assert!(
        footer.starts_with(concat!("shopctl ", env!("CARGO_PKG_VERSION"), " ")) && footer.ends_with(" SHOPCTL(1)"),
        "{footer}"
    );
    assert!(text.contains("NAME\n       shopctl - Roll one application out tier by tier"), "{text}");
    assert!(text.contains("shopctl-sync(1)"), "{text}");
    assert!(text.contains("--cache-dir"), "{text}");
}

#[test]
fn man_out_writes_a_page_per_command() {
    let dir = TempDir::new().unwrap();
    let out = stdout(&["man", "--out", dir.path().to_str().unwrap()]);
    let mut expected: Vec<String> = COMMANDS.iter().map(|c| format!("shopctl-{c}.1")).collect();
    // Commands with subcommands get a page for each of them too.
    expected.extend(["shopctl-maintenance-on.1".to_string(), "shopctl-maintenance-off.1".to_string()]);
    expected.push("shopctl-shopset-move.1".to_string());
    expected.extend(["add", "remove", "move", "where"].map(|c| format!("shopctl-shop-{c}.1")));
    expected.push("shopctl.1".into());
    expected.sort();
    let mut files: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, expected);
    assert_eq!(out.lines().count(), expected.len(), "one `wrote` line per page:\n{out}");

    for command in COMMANDS {
        let path = dir.path().join(format!("shopctl-{command}.1"));
        assert!(out.contains(&format!("wrote {}\n", path.display())), "{out}");
        let page = std::fs::read_to_string(&path).unwrap();
        let title = format!(".TH SHOPCTL-{} 1 ", command.to_uppercase());
        assert!(page.lines().any(|l| l.starts_with(&title)), "{}: {page}", path.display());
        let (text, warnings) = render(&path);
        assert_eq!(warnings, "", "groff warned about {}", path.display());
        assert!(text.contains(&format!("NAME\n       shopctl-{command} - ")), "{text}");
    }
    let sync = render(&dir.path().join("shopctl-sync.1")).0;
    assert!(sync.contains("--dry-run"), "{sync}");
    assert!(sync.contains("--max-attempts"), "{sync}");
}
