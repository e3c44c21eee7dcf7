//! `shopctl man`: the man pages of shopctl, from the same clap definitions as `--help`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap_mangen::Man;

/// Prints the page of `shopctl` itself (its commands listed as shopctl-<command>(1)).
pub fn print(cmd: clap::Command) -> Result<()> {
    let mut out = std::io::stdout().lock();
    page(built(cmd)).render(&mut out).context("cannot write the man page to stdout")
}

/// Writes shopctl.1 and one page per command (shopctl-sync.1, ...) into `dir`; returns their paths.
pub fn write_all(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    write_tree(built(cmd), dir, &mut written)?;
    Ok(written)
}

/// The command tree as the pages describe it: `help` is no command with a page of its own, and
/// building names each subcommand shopctl-<command>, the name of its page.
fn built(cmd: clap::Command) -> clap::Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    cmd
}

fn write_tree(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let subcommands: Vec<clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let man = page(cmd);
    let path = dir.join(man.get_filename());
    let mut file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    man.render(&mut file).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in subcommands {
        write_tree(sub, dir, written)?;
    }
    Ok(())
}

/// The page of one built command, titled in capitals as man pages are (SHOPCTL, SHOPCTL-SYNC).
fn page(cmd: clap::Command) -> Man {
    let title = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_uppercase();
    Man::new(cmd)
        .title(title)
        // An empty date is written as no argument at all, which moves the source and manual into
        // the date's place in `.TH`: `\&` is roff's empty string.
        .date("\\&")
        .source(concat!("shopctl ", env!("CARGO_PKG_VERSION")))
        .manual("shopctl manual")
}
