//! Metadata micro-benchmark, used by `scripts/bench.sh` on the host and on snapfs.
//!
//! In a fresh subdirectory of DIR it creates FILES files of 100 bytes spread
//! over DIRS directories, then stats every file, then unlinks every file, and
//! prints one JSON line per phase:
//!
//! ```text
//! {"bench":"metabench","phase":"create","files":20000,"dirs":100,"seconds":0.812345,"ops_per_sec":24620.1}
//! ```
//!
//! Usage: `metabench DIR [--files N] [--dirs N]` (defaults: 20000 files, 100 dirs).
//! Standard library only, so it measures the file system and not a crate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const PAYLOAD: [u8; 100] = [b'x'; 100];

struct Args {
    dir: PathBuf,
    files: usize,
    dirs: usize,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: metabench DIR [--files N] [--dirs N]";
    let mut dir = None;
    let mut files = 20_000;
    let mut dirs = 100;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--files" | "--dirs" => {
                let value = it
                    .next()
                    .ok_or_else(|| format!("{arg} needs a value\n{usage}"))?;
                let n: usize = value
                    .parse()
                    .map_err(|_| format!("{arg}: not a number: {value}\n{usage}"))?;
                if arg == "--files" {
                    files = n;
                } else {
                    dirs = n;
                }
            }
            "-h" | "--help" => return Err(usage.to_string()),
            _ if dir.is_none() && !arg.starts_with('-') => dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument: {arg}\n{usage}")),
        }
    }
    let dir = dir.ok_or_else(|| usage.to_string())?;
    if files == 0 || dirs == 0 {
        return Err(format!("--files and --dirs must be at least 1\n{usage}"));
    }
    Ok(Args { dir, files, dirs })
}

fn file_path(root: &Path, i: usize, dirs: usize) -> PathBuf {
    root.join(format!("d{:03}", i % dirs))
        .join(format!("f{i:07}"))
}

/// Runs `op` on every file index and returns the elapsed seconds.
fn timed(files: usize, mut op: impl FnMut(usize) -> std::io::Result<()>) -> std::io::Result<f64> {
    let start = Instant::now();
    for i in 0..files {
        op(i)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn report(phase: &str, args: &Args, seconds: f64) {
    let ops = if seconds > 0.0 {
        args.files as f64 / seconds
    } else {
        f64::INFINITY
    };
    println!(
        "{{\"bench\":\"metabench\",\"phase\":\"{phase}\",\"files\":{},\"dirs\":{},\"seconds\":{seconds:.6},\"ops_per_sec\":{ops:.1}}}",
        args.files, args.dirs
    );
}

fn run(args: &Args) -> std::io::Result<()> {
    let root = args.dir.join(format!("metabench-{}", std::process::id()));
    fs::create_dir(&root)?;
    for d in 0..args.dirs {
        fs::create_dir(root.join(format!("d{d:03}")))?;
    }

    let secs = timed(args.files, |i| {
        fs::File::create(file_path(&root, i, args.dirs))?.write_all(&PAYLOAD)
    })?;
    report("create", args, secs);

    let secs = timed(args.files, |i| {
        let meta = fs::symlink_metadata(file_path(&root, i, args.dirs))?;
        if meta.len() != PAYLOAD.len() as u64 {
            return Err(std::io::Error::other(format!(
                "file {i}: size {} instead of {}",
                meta.len(),
                PAYLOAD.len()
            )));
        }
        Ok(())
    })?;
    report("stat", args, secs);

    let secs = timed(args.files, |i| {
        fs::remove_file(file_path(&root, i, args.dirs))
    })?;
    report("unlink", args, secs);

    for d in 0..args.dirs {
        fs::remove_dir(root.join(format!("d{d:03}")))?;
    }
    fs::remove_dir(&root)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("metabench: {}: {err}", args.dir.display());
            ExitCode::FAILURE
        }
    }
}
