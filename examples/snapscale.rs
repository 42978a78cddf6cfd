//! Snapshots at scale, in-process on a real RocksDB store: a container with a large file and
//! many small files takes N snapshots with a few small changes between each (the daily
//! snapshot pattern), then the oldest N - 10 are deleted one by one, oldest first, each
//! followed by reclaim. Prints Markdown tables: create latency per hundred snapshots (median,
//! p99, max), list / restore / copy / delete latency at 1 and at N snapshots, and the
//! deletion and reclaim totals (time, versions dropped, moved and scanned).
//!
//! Usage: snapscale STORE_DIR [--snapshots N] [--big-mib M] [--files F]

#[allow(unused_imports)]
use snapfs::ids::{ContainerId, DataId, Epoch, Ino};
use std::sync::Arc;
use std::time::Instant;

use snapfs::fs::{Fs, ROOT_INO};
use snapfs::kv::rocks::{RocksKv, RocksOptions};
use snapfs::kv::Kv;
use snapfs::store::{ReclaimStats, Store};

mod common;

use common::{arg, ms, ME};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// (median, p99, max) of `v`.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

fn create_file(fs: &Fs, dir: Ino, name: &str, data: &[u8]) -> Res<Ino> {
    let (ino, _, fh) = fs.create(dir, name.as_bytes(), 0o644, libc::O_RDWR, ME)?;
    let mut off = 0;
    while off < data.len() {
        let n = (data.len() - off).min(1 << 20);
        fs.write(ino, Some(fh), off as u64, &data[off..off + n], false)?;
        off += n;
    }
    fs.release(fh)?;
    Ok(ino)
}

/// One "day": a small file rewritten, a log line appended, a 4 KiB block of the big file.
fn small_changes(fs: &Fs, smalls: &[Ino], log: Ino, big: (Ino, u64), day: u64) -> Res<()> {
    let ino = smalls[(day as usize * 7919) % smalls.len()];
    fs.write(
        ino,
        None,
        0,
        format!("changed on day {day}").as_bytes(),
        false,
    )?;
    let size = fs.getattr(log)?.size;
    fs.write(log, None, size, format!("day {day}\n").as_bytes(), false)?;
    let (ino, len) = big;
    let off = (day * 409_613) % (len - 4096);
    fs.write(ino, None, off, &[day as u8; 4096], false)?;
    Ok(())
}

/// Median ms of list, restore, copy and (snapshot + delete) at the current snapshot count.
fn lifecycle(store: &Store, c: &ContainerId, round: &mut u64) -> Res<[f64; 4]> {
    let mut out = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..5 {
        let t = Instant::now();
        let list = store.snapshots(c)?;
        out[0].push(ms(t));
        let newest = list.last().ok_or("no snapshot")?.name.clone();
        let t = Instant::now();
        store.restore(c, &newest)?;
        out[1].push(ms(t));
        *round += 1;
        let t = Instant::now();
        store.copy_container(c, Some(&newest), &format!("copy-{round}"), None)?;
        out[2].push(ms(t));
        let s = store.snapshot(c, Some(&format!("tmp-{round}")), None)?;
        let t = Instant::now();
        store.delete_snapshot(c, &s.name)?;
        out[3].push(ms(t));
    }
    Ok(out.map(|v| spread(v).0))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: snapscale STORE_DIR [--snapshots N] [--big-mib M] [--files F]")?;
    let n = arg(&args, "--snapshots", 1000).max(20);
    let big_mib = arg(&args, "--big-mib", 100);
    let files = arg(&args, "--files", 5000).max(1);
    let kv: Arc<dyn Kv> = Arc::new(RocksKv::open(
        std::path::Path::new(dir),
        &RocksOptions::default(),
    )?);
    let store = Arc::new(Store::init(kv, snapfs::store::DEFAULT_BLOCK_SIZE as u64)?);
    let rec = store.container_by_name("default")?.ok_or("no container")?;
    let c = &rec.id;
    let fs = Fs::new(store.clone(), c)?;

    let t = Instant::now();
    let big_len = big_mib << 20;
    let data: Vec<u8> = (0..big_len).map(|i| (i * 31 % 251) as u8).collect();
    let big = create_file(&fs, ROOT_INO, "big", &data)?;
    drop(data);
    let mut smalls = Vec::new();
    for d in 0..50 {
        let dino = fs.mkdir(ROOT_INO, format!("d{d}").as_bytes(), 0o755, ME)?.0;
        for i in 0..files / 50 {
            smalls.push(create_file(
                &fs,
                dino,
                &format!("f{i}"),
                b"small file content",
            )?);
        }
    }
    let log = create_file(&fs, ROOT_INO, "log", b"")?;
    fs.fsync()?;
    eprintln!(
        "filled {big_mib} MiB + {} files in {:.1} s",
        smalls.len(),
        t.elapsed().as_secs_f64()
    );

    let mut round = 0u64;
    store.snapshot(c, None, None)?;
    let at_one = lifecycle(&store, c, &mut round)?;
    let mut creates = Vec::new();
    let mut per_hundred = Vec::new();
    for day in 1..n {
        small_changes(&fs, &smalls, log, (big, big_len), day)?;
        let t = Instant::now();
        store.snapshot(c, None, None)?;
        creates.push(ms(t));
        if creates.len() == 100 || day + 1 == n {
            per_hundred.push((day + 1, spread(std::mem::take(&mut creates))));
        }
    }
    let at_n = lifecycle(&store, c, &mut round)?;
    let usage_full = store.kv().maintenance().map_or(0, |m| m.disk_usage());

    // Oldest first, all but the newest 10, each deletion followed by reclaim.
    let snaps = store.snapshots(c)?;
    let doomed = snaps.len().saturating_sub(10);
    let mut total = ReclaimStats::default();
    let (mut t_delete, mut t_reclaim) = (0.0, 0.0);
    let mut worst = 0.0f64;
    for s in &snaps[..doomed] {
        let t = Instant::now();
        store.delete_snapshot(c, &s.name)?;
        t_delete += ms(t);
        let t = Instant::now();
        let r = store.reclaim()?;
        let took = ms(t);
        worst = worst.max(took);
        t_reclaim += took;
        total.versions_dropped += r.versions_dropped;
        total.versions_moved += r.versions_moved;
        total.versions_scanned += r.versions_scanned;
        total.bytes_dropped += r.bytes_dropped;
        total.epochs_removed += r.epochs_removed;
    }
    let usage_after = store.kv().maintenance().map_or(0, |m| m.disk_usage());
    let live = store.live_bytes()?;

    println!("| snapshots | create median ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|");
    for (upto, (med, p99, max)) in &per_hundred {
        println!("| {upto} | {med:.3} | {p99:.3} | {max:.3} |");
    }
    println!();
    println!("| operation (median of 5) | 1 snapshot ms | {n} snapshots ms | ratio |");
    println!("|---|---:|---:|---:|");
    for (i, name) in ["list", "restore", "copy", "delete"].iter().enumerate() {
        println!(
            "| {name} | {:.3} | {:.3} | {:.2} |",
            at_one[i],
            at_n[i],
            at_n[i] / at_one[i]
        );
    }
    println!();
    println!("| oldest-first deletion of {doomed} of {n} snapshots | value |");
    println!("|---|---:|");
    println!("| deletions (retire), total ms | {t_delete:.1} |");
    println!("| reclaim after each, total ms | {t_reclaim:.1} |");
    println!("| reclaim, slowest single run ms | {worst:.1} |");
    println!("| versions dropped | {} |", total.versions_dropped);
    println!("| versions moved | {} |", total.versions_moved);
    println!(
        "| versions scanned (pruning) | {} |",
        total.versions_scanned
    );
    println!("| bytes dropped | {} |", total.bytes_dropped);
    println!("| epochs removed | {} |", total.epochs_removed);
    println!(
        "| store on disk before / after (MB), live versions (MB) | {:.0} / {:.0}, {:.0} |",
        usage_full as f64 / 1e6,
        usage_after as f64 / 1e6,
        live as f64 / 1e6
    );
    Ok(())
}
