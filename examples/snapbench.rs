//! Snapshot lifecycle latency: snapshot create, restore and copy on an empty container and on
//! one holding about 1 GiB in 20,000 files (with fresh, unsynced writes just before each
//! operation), measured in-process on a real RocksDB store. Prints medians in milliseconds and
//! the filled/empty ratio as a Markdown table.
//!
//! Usage: snapbench STORE_DIR [--files N] [--file-size BYTES] [--rounds N]

use std::sync::Arc;
use std::time::Instant;

use snapfs::fs::{Fs, ROOT_INO};
use snapfs::kv::rocks::{RocksKv, RocksOptions};
use snapfs::kv::Kv;
use snapfs::store::Store;

mod common;

use common::{arg, ms, ME};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A few small writes that are still unsynced when the operation starts.
fn fresh_writes(fs: &Fs, round: u64) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("fresh-{round}");
    let (ino, _, fh) = fs.create(ROOT_INO, name.as_bytes(), 0o644, libc::O_RDWR, ME)?;
    fs.write(ino, Some(fh), 0, &[round as u8; 8192], false)?;
    fs.release(fh)?;
    Ok(())
}

struct Figures {
    snapshot: f64,
    restore: f64,
    copy: f64,
}

fn measure(
    store: &Store,
    fs: &Fs,
    container: &[u8],
    rounds: u64,
) -> Result<Figures, Box<dyn std::error::Error>> {
    let (mut snap, mut rest, mut copy) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        fresh_writes(fs, r)?;
        let t = Instant::now();
        let info = store.snapshot(container, None, None)?;
        snap.push(ms(t));
        fresh_writes(fs, r + 1000)?;
        let t = Instant::now();
        store.restore(container, &info.name)?;
        rest.push(ms(t));
        let target = format!("{}-copy-{r}", String::from_utf8_lossy(container));
        let t = Instant::now();
        store.copy_container(container, Some(&info.name), &target, None)?;
        copy.push(ms(t));
    }
    Ok(Figures {
        snapshot: median(snap),
        restore: median(rest),
        copy: median(copy),
    })
}

fn fill(fs: &Fs, files: u64, size: u64) -> Result<(), Box<dyn std::error::Error>> {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let dirs = 100.min(files.max(1));
    let mut dir_inos = Vec::new();
    for d in 0..dirs {
        dir_inos.push(fs.mkdir(ROOT_INO, format!("d{d}").as_bytes(), 0o755, ME)?.0);
    }
    for f in 0..files {
        let dir = dir_inos[(f % dirs) as usize];
        let (ino, _, fh) = fs.create(dir, format!("f{f}").as_bytes(), 0o644, libc::O_RDWR, ME)?;
        let mut off = 0;
        while off < size {
            let n = (size - off).min(1 << 20);
            fs.write(
                ino,
                Some(fh),
                off,
                &data[off as usize..(off + n) as usize],
                false,
            )?;
            off += n;
        }
        fs.release(fh)?;
    }
    fs.fsync()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: snapbench STORE_DIR [--files N] [--file-size B] [--rounds N]")?;
    let files = arg(&args, "--files", 20_000);
    let size = arg(&args, "--file-size", 53_687);
    let rounds = arg(&args, "--rounds", 15);
    let kv: Arc<dyn Kv> = Arc::new(RocksKv::open(
        std::path::Path::new(dir),
        &RocksOptions::default(),
    )?);
    let store = Arc::new(Store::init(kv, snapfs::store::DEFAULT_BLOCK_SIZE as u64)?);

    let default = store
        .container_by_name("default")?
        .ok_or("no default container")?;
    let empty = Fs::new(store.clone(), default.id.as_bytes())?;
    let e = measure(&store, &empty, default.id.as_bytes(), rounds)?;

    let rec = store.create_container("filled", None)?;
    let filled = Fs::new(store.clone(), rec.id.as_bytes())?;
    let t = Instant::now();
    fill(&filled, files, size)?;
    eprintln!(
        "filled {} files x {} bytes ({:.0} MiB) in {:.1} s",
        files,
        size,
        (files * size) as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let f = measure(&store, &filled, rec.id.as_bytes(), rounds)?;

    println!("| operation (median of {rounds}) | empty ms | filled ms | filled/empty |");
    println!("|---|---:|---:|---:|");
    for (name, a, b) in [
        ("snapshot create", e.snapshot, f.snapshot),
        ("restore", e.restore, f.restore),
        ("copy (new container)", e.copy, f.copy),
    ] {
        println!("| {name} | {a:.3} | {b:.3} | {:.2} |", b / a);
    }
    Ok(())
}
