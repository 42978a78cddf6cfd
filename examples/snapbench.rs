//! Snapshot lifecycle latency: snapshot create, restore and copy on an empty container and on
//! one holding about 1 GiB in 20,000 files (with fresh, unsynced writes just before each
//! operation), measured in-process on a real RocksDB store. Prints medians in milliseconds and
//! the filled/empty ratio as a Markdown table.
//!
//! Then the history operations: a diff after 10 files changed, in the empty container and in
//! the filled one (the cost must follow what changed, not the container's size), and the
//! history of one path across 300 snapshots.
//!
//! Then restores of one path (`Fs::restore_paths`) of a 1 GiB file from a snapshot, after one
//! block of it changed and after it was deleted: milliseconds and the bytes the store grew by
//! (the data is shared with the snapshot, so a restore writes at most the changed blocks).
//!
//! Usage: snapbench STORE_DIR [--files N] [--file-size BYTES] [--rounds N] [--big-file BYTES]

#[allow(unused_imports)]
use snapfs::ids::{ContainerId, DataId, Epoch, Ino};
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
    container: &ContainerId,
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
        let target = format!("{}-copy-{r}", container);
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
    let empty = Fs::new(store.clone(), &default.id)?;
    let e = measure(&store, &empty, &default.id, rounds)?;

    let rec = store.create_container("filled", None)?;
    let filled = Fs::new(store.clone(), &rec.id)?;
    let t = Instant::now();
    fill(&filled, files, size)?;
    eprintln!(
        "filled {} files x {} bytes ({:.0} MiB) in {:.1} s",
        files,
        size,
        (files * size) as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let f = measure(&store, &filled, &rec.id, rounds)?;

    println!("| operation (median of {rounds}) | empty ms | filled ms | filled/empty |");
    println!("|---|---:|---:|---:|");
    for (name, a, b) in [
        ("snapshot create", e.snapshot, f.snapshot),
        ("restore", e.restore, f.restore),
        ("copy (new container)", e.copy, f.copy),
    ] {
        println!("| {name} | {a:.3} | {b:.3} | {:.2} |", b / a);
    }
    let d_small = diff_after_ten_changes(&store, &empty, rounds)?;
    let d_filled = diff_after_ten_changes(&store, &filled, rounds)?;
    let hist = history_across(&store, 300, rounds)?;
    println!();
    println!("| history (median of {rounds}) | empty ms | filled ms | filled/empty |");
    println!("|---|---:|---:|---:|");
    println!(
        "| diff snapshot -> live tree, 10 files changed | {d_small:.3} | {d_filled:.3} | {:.2} |",
        d_filled / d_small
    );
    println!("| history of one path across 300 snapshots | {hist:.3} | | |");
    let big = arg(&args, "--big-file", 1 << 30);
    path_restores(&store, big, rounds)?;
    quota_cost(&store)?;
    Ok(())
}

/// Median time of a diff from a snapshot to the live tree after 10 files changed.
fn diff_after_ten_changes(
    store: &Arc<Store>,
    fs: &Fs,
    rounds: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let cid = fs.container().clone();
    let mut inos = Vec::new();
    for i in 0..10 {
        let name = format!("diffed-{i}");
        let (ino, _, fh) = fs.create(ROOT_INO, name.as_bytes(), 0o644, libc::O_RDWR, ME)?;
        fs.release(fh)?;
        inos.push(ino);
    }
    let mut times = Vec::new();
    for r in 0..rounds {
        let snap = store.snapshot(&cid, None, None)?;
        for &ino in &inos {
            fs.write(ino, None, 0, &[r as u8; 4096], false)?;
        }
        let from = store.snapshot_chain(&snap);
        let to = store.head(&cid)?;
        let reader = Fs::frozen(store.clone(), &cid, from.clone());
        let t = Instant::now();
        let changes = reader.diff(&from, &to)?;
        times.push(ms(t));
        if changes.len() < 10 {
            return Err(format!("diff found {} changes, not 10+", changes.len()).into());
        }
    }
    Ok(median(times))
}

/// Median time of the history of one path over `n` snapshots (each after a change of it),
/// as the service computes it: every tree against the next older one.
fn history_across(
    store: &Arc<Store>,
    n: u64,
    rounds: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let rec = store.create_container("history", None)?;
    let cid = &rec.id;
    let fs = Fs::new(store.clone(), cid)?;
    let etc = fs.mkdir(ROOT_INO, b"etc", 0o755, ME)?.0;
    let (ino, _, fh) = fs.create(etc, b"app.conf", 0o644, libc::O_RDWR, ME)?;
    fs.release(fh)?;
    for i in 0..n {
        fs.write(ino, None, 0, format!("version {i}\n").as_bytes(), false)?;
        store.snapshot(cid, None, None)?;
    }
    let mut snaps = store.snapshots(cid)?;
    snaps.sort_by_key(|s| std::cmp::Reverse((s.record.created_at.secs, s.record.created_at.nsecs)));
    let mut trees = vec![store.head(cid)?];
    trees.extend(snaps.iter().map(|s| store.snapshot_chain(s)));
    let reader = Fs::frozen(store.clone(), cid, trees[0].clone());
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut found = 0;
        for i in 0..trees.len() {
            let older = trees.get(i + 1).map(|c| &**c);
            if reader
                .compare_path(older, &trees[i], b"/etc/app.conf")?
                .is_some()
            {
                found += 1;
            }
        }
        times.push(ms(t));
        if found < n as usize {
            return Err(format!("history found {found} versions, not {n}").into());
        }
    }
    Ok(median(times))
}

/// What enforcing quotas costs on the write path, in-process (no FUSE noise): 256 MiB of
/// 1 MiB sequential writes and 20,000 random 4 KiB writes into a 256 MiB file, in a
/// container without quotas, with `quota_bytes`, and with both limits. Best of 3 each, after
/// a warm-up round.
fn quota_cost(store: &Arc<Store>) -> Result<(), Box<dyn std::error::Error>> {
    use snapfs::store::Quota;
    let size: u64 = 256 << 20;
    let cases = [
        ("no quota", Quota::default()),
        (
            "quota_bytes",
            Quota {
                bytes: Some(1 << 40),
                including_snapshots: None,
            },
        ),
        (
            "both quotas",
            Quota {
                bytes: Some(1 << 40),
                including_snapshots: Some(1 << 40),
            },
        ),
    ];
    println!();
    println!(
        "| write path (in-process, best of 3) | seq 1 MiB writes MiB/s | random 4 KiB writes/s |"
    );
    println!("|---|---:|---:|");
    let chunk: Vec<u8> = (0..1u64 << 20).map(|i| (i * 13 % 251) as u8).collect();
    // Rounds interleave the cases, each round starting with another one, so the store's
    // growth and a case's place in the round weigh on each alike.
    // Round 0 only warms the store up (a fresh store writes faster than one with data).
    let mut best = [(0f64, 0f64); 3];
    for round in 0..4 {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let q = &cases[i].1;
            let rec = store.create_container(&format!("quota-{i}-{round}"), None)?;
            let cid = &rec.id;
            store.set_quota(cid, *q)?;
            let fs = Fs::new(store.clone(), cid)?;
            let (ino, _, fh) = fs.create(ROOT_INO, b"f", 0o644, libc::O_RDWR, ME)?;
            let t = Instant::now();
            let mut off = 0;
            while off < size {
                fs.write(ino, Some(fh), off, &chunk, false)?;
                off += chunk.len() as u64;
            }
            let seq = size as f64 / 1048576.0 / t.elapsed().as_secs_f64();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let t = Instant::now();
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % (size / 4096)) * 4096;
                fs.write(ino, Some(fh), at, &chunk[..4096], false)?;
            }
            let rnd = 20_000.0 / t.elapsed().as_secs_f64();
            fs.release(fh)?;
            fs.unlink(ROOT_INO, b"f")?;
            if round > 0 {
                best[i] = (best[i].0.max(seq), best[i].1.max(rnd));
            }
        }
    }
    for (i, (label, _)) in cases.iter().enumerate() {
        println!("| {label} | {:.0} | {:.0} |", best[i].0, best[i].1);
    }
    Ok(())
}

/// Restores of one big file's path from a snapshot: after one block changed, and after the
/// file was deleted.
fn path_restores(
    store: &Arc<Store>,
    size: u64,
    rounds: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let rec = store.create_container("bigfile", None)?;
    let cid = &rec.id;
    let fs = Fs::new(store.clone(), cid)?;
    let (ino, _, fh) = fs.create(ROOT_INO, b"big", 0o644, libc::O_RDWR, ME)?;
    let chunk: Vec<u8> = (0..1u64 << 20).map(|i| (i * 7 % 253) as u8).collect();
    let mut off = 0;
    while off < size {
        let n = (size - off).min(chunk.len() as u64);
        fs.write(ino, Some(fh), off, &chunk[..n as usize], false)?;
        off += n;
    }
    fs.release(fh)?;
    fs.fsync()?;
    let snap = store.snapshot(cid, None, None)?;
    let path = [b"/big".to_vec()];
    let (mut changed, mut deleted) = (Vec::new(), Vec::new());
    let (mut grew_changed, mut grew_deleted) = (0u64, 0u64);
    for r in 0..rounds {
        fs.write(
            ino,
            None,
            (r * 1_000_003) % size.max(1),
            b"one changed block",
            false,
        )?;
        let before = store.live_bytes()?;
        let t = Instant::now();
        fs.restore_paths(&snap, &path)?;
        changed.push(ms(t));
        grew_changed = grew_changed.max(store.live_bytes()?.saturating_sub(before));
        fs.unlink(ROOT_INO, b"big")?;
        let before = store.live_bytes()?;
        let t = Instant::now();
        fs.restore_paths(&snap, &path)?;
        deleted.push(ms(t));
        grew_deleted = grew_deleted.max(store.live_bytes()?.saturating_sub(before));
    }
    println!();
    println!(
        "| path restore of a {:.0} MiB file (median of {rounds}) | ms | store grew by (most) |",
        size as f64 / 1048576.0
    );
    println!("|---|---:|---:|");
    println!(
        "| one block changed since the snapshot | {:.3} | {grew_changed} B |",
        median(changed)
    );
    println!(
        "| deleted since the snapshot | {:.3} | {grew_deleted} B |",
        median(deleted)
    );
    Ok(())
}
