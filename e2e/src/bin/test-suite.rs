//! Runs every test of the workspace, several test binaries at a time.
//!
//! `cargo test` runs one test binary after another. Ours mostly wait: on a control plane starting,
//! on Argo CD syncing, on git servers. Running a few binaries side by side keeps the machine busy
//! while each keeps its own shared control plane (a runner that starts one process per test would
//! start one per test instead).
//!
//! Usage: `test-suite [--jobs N] [CARGO ARGS...]`, e.g.
//! `test-suite --locked --features shopset-controller/fault-injection`. The cargo arguments go to
//! `cargo test --workspace --no-run`; every test binary it builds then runs as cargo would run it
//! (working directory and `CARGO_MANIFEST_DIR` of its package), then the doc tests. Binaries whose
//! last run took longest start first (`test-durations.tsv` in the target directory). Each binary's
//! output is printed whole when it ends; the exit status is 1 when any test failed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One test binary, as cargo reported it.
struct Binary {
    /// `package/kind/name`, the key of the durations file.
    key: String,
    executable: PathBuf,
    package: String,
    manifest_dir: PathBuf,
}

struct Outcome {
    key: String,
    passed: bool,
    took: Duration,
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut jobs: usize = std::env::var("SHOPSET_TEST_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(3);
    if let Some(i) = args.iter().position(|a| a == "--jobs") {
        let Some(n) = args.get(i + 1).and_then(|n| n.parse().ok()) else {
            eprintln!("error: --jobs takes a number, e.g. --jobs 3");
            return ExitCode::from(2);
        };
        jobs = n;
        args.drain(i..i + 2);
    }
    let jobs = jobs.max(1);
    let started = Instant::now();

    let binaries = match build(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let durations_file = target_dir().join("test-durations.tsv");
    let last = read_durations(&durations_file);
    let mut queue = binaries;
    // Longest first, unknown ones before all: the slowest binary bounds the whole run.
    queue.sort_by_key(|b| std::cmp::Reverse(last.get(&b.key).copied().unwrap_or(u64::MAX)));
    eprintln!("running {} test binaries, {jobs} at a time", queue.len());

    let queue = Arc::new(Mutex::new(queue.into_iter()));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let print = Arc::new(Mutex::new(()));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (queue, outcomes, print) = (queue.clone(), outcomes.clone(), print.clone());
            std::thread::spawn(move || {
                loop {
                    // A poisoned lock means a worker panicked on output; the run is void anyway.
                    let next = queue.lock().expect("queue lock").next();
                    let Some(binary) = next else { break };
                    let outcome = run(&binary, &print);
                    outcomes.lock().expect("outcomes lock").push(outcome);
                }
            })
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            eprintln!("error: a test runner thread panicked");
            return ExitCode::FAILURE;
        }
    }
    let mut outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));

    // Doc tests last: cargo compiles them only in this mode.
    let doc_started = Instant::now();
    let mut doc = Command::new(cargo());
    doc.args(["test", "--workspace", "--doc"]).args(&args);
    let doc_passed = doc.status().map(|s| s.success()).unwrap_or(false);
    outcomes.push(Outcome { key: "doc tests".into(), passed: doc_passed, took: doc_started.elapsed() });

    write_durations(&durations_file, &outcomes);
    outcomes.sort_by_key(|o| std::cmp::Reverse(o.took));
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    eprintln!("\ntest binaries by time:");
    for o in &outcomes {
        eprintln!("  {:>7.1} s  {}  {}", o.took.as_secs_f64(), if o.passed { "ok    " } else { "FAILED" }, o.key);
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    if failed.is_empty() {
        eprintln!("every test passed");
        ExitCode::SUCCESS
    } else {
        eprintln!("{} test binaries failed:", failed.len());
        for o in failed {
            eprintln!("  {}", o.key);
        }
        ExitCode::FAILURE
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `CARGO_TARGET_DIR`, else `target` (relative to the working directory, as cargo reads it).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| "target".into())
}

/// Builds every test binary and returns them, as cargo's JSON messages name them.
fn build(args: &[String]) -> Result<Vec<Binary>, String> {
    let mut child = Command::new(cargo())
        .args(["test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("cargo's stdout is not piped")?;
    let mut binaries = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(manifest)) = (msg["executable"].as_str(), msg["manifest_path"].as_str()) else {
            continue;
        };
        let package = package_name(msg["package_id"].as_str().unwrap_or_default());
        let kind = msg["target"]["kind"][0].as_str().unwrap_or("test");
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        binaries.push(Binary {
            key: format!("{package}/{kind}/{name}"),
            executable: exe.into(),
            package,
            manifest_dir: Path::new(manifest).parent().map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    let status = child.wait().map_err(|e| format!("waiting for cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo test --no-run failed ({status})"));
    }
    Ok(binaries)
}

/// The package name of a cargo package id: `path+file:///w/e2e#shopset-e2e@0.1.0` (or the old
/// `shopset-e2e 0.1.0 (path+file:///w/e2e)`).
fn package_name(id: &str) -> String {
    match id.split_once('#') {
        Some((url, rest)) => {
            let name = rest.split('@').next().unwrap_or(rest);
            // `…/e2e#0.1.0` when the folder is named as the package.
            if name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                url.rsplit('/').next().unwrap_or(url).to_string()
            } else {
                name.to_string()
            }
        }
        None => id.split(' ').next().unwrap_or(id).to_string(),
    }
}

/// Runs one binary as `cargo test` would, its output into a file printed whole at the end.
fn run(binary: &Binary, print: &Mutex<()>) -> Outcome {
    let started = Instant::now();
    let result = (|| -> std::io::Result<(bool, String)> {
        let mut log = tempfile::tempfile()?;
        let status = Command::new(&binary.executable)
            .current_dir(&binary.manifest_dir)
            .env("CARGO_MANIFEST_DIR", &binary.manifest_dir)
            .env("CARGO_PKG_NAME", &binary.package)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()?;
        let mut text = String::new();
        log.rewind()?;
        log.read_to_string(&mut text)?;
        Ok((status.success(), text))
    })();
    let took = started.elapsed();
    let (passed, text) =
        result.unwrap_or_else(|e| (false, format!("cannot run {}: {e}\n", binary.executable.display())));
    let _lock = print.lock().expect("print lock");
    println!("     Running {} ({})", binary.key, binary.executable.display());
    print!("{text}");
    println!("     {} {} in {:.1} s\n", if passed { "passed" } else { "FAILED" }, binary.key, took.as_secs_f64());
    Outcome { key: binary.key.clone(), passed, took }
}

fn read_durations(path: &Path) -> HashMap<String, u64> {
    let Ok(file) = File::open(path) else { return HashMap::new() };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let (ms, key) = l.split_once('\t')?;
            Some((key.to_string(), ms.parse().ok()?))
        })
        .collect()
}

fn write_durations(path: &Path, outcomes: &[Outcome]) {
    let text: String = outcomes.iter().map(|o| format!("{}\t{}\n", o.took.as_millis(), o.key)).collect();
    // Only the order of the next run depends on it: a failure to write is worth a line, no more.
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("note: could not write {}: {e}", path.display());
    }
}
