//! An fsx-style data checker (issue 5, item 7): seeded random operations on a file in a
//! real snapfs mount — pwrite (also far past EOF, leaving holes), pread, ftruncate up and
//! down, fallocate (extend, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE), copy_file_range from a second
//! file, writes through a shared mmap flushed with msync(MS_SYNC), fsync, close/reopen and
//! remount — with the whole file (size and every byte) compared against an in-memory model
//! after every step. A second test takes a snapshot half-way and checks that the snapshot's
//! copy stays frozen while the head keeps changing.
//!
//! Reproduce a run with `SNAPFS_FSX_SEED=<seed>` (decimal or 0x-hex; every test prints the
//! seed it uses) and change its length with `SNAPFS_FSX_OPS=<n>` (ops of the head test; the
//! snapshot test runs n/5 ops before and n/5 after its snapshot).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::Mount;
use nix::fcntl::{fallocate, FallocateFlags};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustix::fs::copy_file_range;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// No operation makes the file larger than this.
const MAX_SIZE: u64 = 4 * MIB;
/// How many logged operations a failure report shows.
const SHOW_OPS: usize = 40;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")))
}

/// `SNAPFS_FSX_SEED` or the test's fixed default (so CI runs are reproducible).
fn seed_or(default: u64) -> u64 {
    env_u64("SNAPFS_FSX_SEED").unwrap_or(default)
}

/// `SNAPFS_FSX_OPS` or the default count.
fn ops_or(default: u64) -> u64 {
    env_u64("SNAPFS_FSX_OPS").unwrap_or(default)
}

fn open_rw(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
}

/// Writes `data` at `off` of `f` through a `MAP_SHARED` mapping and flushes it with
/// `msync(MS_SYNC)`, so the bytes reach the filesystem as a page writeback, not a `write`.
/// The range must lie inside the file (a mapping cannot extend a file; touching a page
/// past EOF raises SIGBUS) and `data` must not be empty.
///
/// This is the only unsafe code of the test: neither nix (without its `mman` feature) nor
/// rustix (without `mm`) offers a safe mmap to this crate, so it calls libc directly.
#[allow(unsafe_code)]
fn mmap_write(f: &File, off: u64, data: &[u8]) -> io::Result<()> {
    assert!(!data.is_empty(), "mmap_write of nothing");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096);
    let start = off / page * page;
    let delta = (off - start) as usize;
    let map_len = delta + data.len();
    let map_off = libc::off_t::try_from(start).expect("mapping offset fits off_t");
    // SAFETY: a fresh shared mapping of `map_len` bytes of an fd opened read-write; the
    // kernel picks the address, so no existing Rust object is aliased.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            map_off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `p` maps `map_len` bytes and `delta + data.len() == map_len`; the caller
    // guarantees the range is inside the file, so every touched page is backed. `data` is a
    // Rust slice, which cannot overlap the new mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>().add(delta), data.len());
    }
    // SAFETY: `p`/`map_len` are exactly the mapping created above, unmapped only below.
    let synced = unsafe { libc::msync(p, map_len, libc::MS_SYNC) };
    let sync_err = io::Error::last_os_error();
    // SAFETY: as above; nothing refers to the mapping after this point.
    let unmapped = unsafe { libc::munmap(p, map_len) };
    let unmap_err = io::Error::last_os_error();
    if synced != 0 {
        return Err(sync_err);
    }
    if unmapped != 0 {
        return Err(unmap_err);
    }
    Ok(())
}

/// `Ok` when `got` is exactly `want`; otherwise a description of the first difference.
fn compare(got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let mut msg = format!(
        "got {} bytes, model has {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
    if first < got.len().min(want.len()) {
        let last = (first..got.len().min(want.len()))
            .rev()
            .find(|&i| got[i] != want[i])
            .unwrap_or(first);
        let differing = (first..=last).filter(|&i| got[i] != want[i]).count();
        msg += &format!(
            " (got {:#04x}, want {:#04x}); last difference at byte {last}; {differing} bytes \
             differ in the common prefix",
            got[first], want[first]
        );
    }
    Err(msg)
}

/// Compares the file at `path` (size by stat, and all bytes read through a fresh open, which
/// drops the kernel's page cache of the file so the bytes come from the daemon) with `want`.
fn check_path(path: &Path, want: &[u8]) -> Result<(), String> {
    let size = fs::metadata(path)
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let got = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if size != want.len() as u64 {
        return Err(format!(
            "{}: stat size {size}, model size {} (read returned {} bytes)",
            path.display(),
            want.len(),
            got.len()
        ));
    }
    compare(&got, want).map_err(|e| format!("{}: {e}", path.display()))
}

/// Counts of each operation, for the summary line.
#[derive(Default, Debug)]
struct Stats {
    write: u64,
    read: u64,
    truncate: u64,
    punch: u64,
    falloc: u64,
    copy: u64,
    mmap: u64,
    fsync: u64,
    reopen: u64,
    src: u64,
    remount: u64,
}

/// The checker: the file under test (`fsx`), a source file for copy_file_range (`fsx.src`),
/// their models, and a log of every operation for the failure report.
struct Fsx {
    label: String,
    seed: u64,
    rng: StdRng,
    path: PathBuf,
    src_path: PathBuf,
    file: Option<File>,
    src: Option<File>,
    model: Vec<u8>,
    src_model: Vec<u8>,
    log: Vec<String>,
    step: u64,
    stats: Stats,
    started: Instant,
}

impl Fsx {
    /// Creates both files (the target empty, the source with random bytes) in `m`.
    fn new(m: &Mount, label: &str, seed: u64) -> Fsx {
        println!(
            "fsx[{label}]: seed {seed:#x} (rerun with SNAPFS_FSX_SEED={seed:#x}), mount {}",
            m.path().display()
        );
        let mut fsx = Fsx {
            label: label.to_string(),
            seed,
            rng: StdRng::seed_from_u64(seed),
            path: m.join("fsx"),
            src_path: m.join("fsx.src"),
            file: None,
            src: None,
            model: Vec::new(),
            src_model: Vec::new(),
            log: Vec::new(),
            step: 0,
            stats: Stats::default(),
            started: Instant::now(),
        };
        fsx.open();
        fsx.rewrite_src();
        fsx.check();
        fsx
    }

    /// Fails the test with the seed, the step, the message and the last operations.
    fn fail(&self, msg: &str) -> ! {
        let from = self.log.len().saturating_sub(SHOW_OPS);
        let mut ops = String::new();
        for (i, op) in self.log.iter().enumerate().skip(from) {
            ops += &format!("  #{i}: {op}\n");
        }
        panic!(
            "fsx[{}] seed {:#x}, after step {}: {msg}\nlast operations (of {}):\n{ops}\
             reproduce: SNAPFS_FSX_SEED={:#x} cargo test --release --test fsx",
            self.label,
            self.seed,
            self.step,
            self.log.len(),
            self.seed
        );
    }

    fn ok<T>(&self, r: io::Result<T>, what: &str) -> T {
        r.unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }

    fn open(&mut self) {
        let f = open_rw(&self.path);
        self.file = Some(self.ok(f, "open fsx"));
        let s = open_rw(&self.src_path);
        self.src = Some(self.ok(s, "open fsx.src"));
    }

    fn close(&mut self) {
        self.file = None;
        self.src = None;
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("fsx is open")
    }

    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    /// The model of `pwrite(data, off)`.
    fn model_write(&mut self, off: u64, data: &[u8]) {
        let (off, end) = (off as usize, off as usize + data.len());
        if end > self.model.len() {
            self.model.resize(end, 0);
        }
        self.model[off..end].copy_from_slice(data);
    }

    fn random_len(&mut self) -> u64 {
        match self.rng.gen_range(0..10) {
            0..=3 => self.rng.gen_range(1..=512),
            4..=7 => self.rng.gen_range(1..=64 * KIB),
            _ => self.rng.gen_range(1..=512 * KIB),
        }
    }

    /// An offset for an operation of `len` bytes: mostly inside the file, often past EOF
    /// (leaving a hole), sometimes anywhere up to `MAX_SIZE`; now and then block aligned.
    fn random_off(&mut self, len: u64) -> u64 {
        let size = self.size();
        let off = match self.rng.gen_range(0..100) {
            0..=64 => self.rng.gen_range(0..=size),
            65..=91 => size + self.rng.gen_range(0..=256 * KIB),
            _ => self.rng.gen_range(0..MAX_SIZE),
        };
        let off = if self.rng.gen_ratio(1, 5) {
            off / (4 * KIB) * (4 * KIB)
        } else {
            off
        };
        off.min(MAX_SIZE - len)
    }

    fn random_bytes(&mut self, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.rng.fill_bytes(&mut v);
        v
    }

    /// Gives the copy_file_range source new random contents of a random length.
    fn rewrite_src(&mut self) {
        let len = self.rng.gen_range(0..=768 * KIB);
        let data = self.random_bytes(len);
        self.log
            .push(format!("rewrite fsx.src with {len} random bytes"));
        let src = self.src.as_ref().expect("fsx.src is open");
        let r = src
            .set_len(0)
            .and_then(|()| src.write_all_at(&data, 0))
            .and_then(|()| src.set_len(len));
        self.ok(r, "rewrite fsx.src");
        self.src_model = data;
        self.stats.src += 1;
    }

    /// Compares the size and every byte of both files with their models.
    fn check(&self) {
        if let Some(f) = &self.file {
            let size = self.ok(f.metadata(), "fstat fsx").len();
            if size != self.size() {
                self.fail(&format!("fstat size {size}, model size {}", self.size()));
            }
        }
        if let Err(e) = check_path(&self.path, &self.model) {
            self.fail(&e);
        }
        if let Err(e) = check_path(&self.src_path, &self.src_model) {
            self.fail(&e);
        }
    }

    /// One random operation, then a full check.
    fn step(&mut self, m: &mut Mount) {
        self.step += 1;
        let op = self.rng.gen_range(0..1000);
        match op {
            0..=269 => self.op_write(),
            270..=389 => self.op_read(),
            390..=479 => self.op_truncate(),
            480..=579 => self.op_punch(),
            580..=619 => self.op_falloc(),
            620..=739 => self.op_copy(),
            740..=849 => self.op_mmap(),
            850..=899 => {
                self.log.push("fsync".into());
                let r = self.file().sync_all();
                self.ok(r, "fsync");
                self.stats.fsync += 1;
            }
            900..=959 => {
                self.log.push("close and reopen".into());
                self.close();
                self.open();
                self.stats.reopen += 1;
            }
            960..=994 => self.rewrite_src(),
            _ => {
                self.log.push("remount".into());
                self.close();
                m.remount();
                self.open();
                self.stats.remount += 1;
            }
        }
        self.check();
    }

    fn op_write(&mut self) {
        let len = self.random_len();
        let off = self.random_off(len);
        let data = self.random_bytes(len);
        self.log.push(format!(
            "pwrite {len} bytes at {off} (size {})",
            self.size()
        ));
        let r = self.file().write_all_at(&data, off);
        self.ok(r, "pwrite");
        self.model_write(off, &data);
        self.stats.write += 1;
    }

    /// pread of a random range (possibly crossing or past EOF): a short read must stop
    /// exactly at the model's size.
    fn op_read(&mut self) {
        let len = self.random_len();
        let off = self.random_off(len);
        self.log
            .push(format!("pread {len} at {off} (size {})", self.size()));
        let mut buf = vec![0u8; len as usize];
        let mut got = 0usize;
        loop {
            let r = self.file().read_at(&mut buf[got..], off + got as u64);
            let n = self.ok(r, "pread");
            got += n;
            if n == 0 || got == buf.len() {
                break;
            }
        }
        let size = self.model.len();
        let (s, e) = (
            (off as usize).min(size),
            (off as usize + len as usize).min(size),
        );
        if let Err(msg) = compare(&buf[..got], &self.model[s..e]) {
            self.fail(&format!("pread {len} at {off}: {msg}"));
        }
        self.stats.read += 1;
    }

    fn op_truncate(&mut self) {
        let size = self.size();
        let new = match self.rng.gen_range(0..10) {
            0 => 0,
            1..=5 => self.rng.gen_range(0..=size),
            _ => self.rng.gen_range(size..=MAX_SIZE.min(size + 2 * MIB)),
        };
        self.log.push(format!("ftruncate {size} -> {new}"));
        let r = self.file().set_len(new);
        self.ok(r, "ftruncate");
        self.model.resize(new as usize, 0);
        self.stats.truncate += 1;
    }

    fn op_punch(&mut self) {
        let len = self.random_len();
        let off = self.random_off(len).min(self.size());
        self.log
            .push(format!("punch hole {len} at {off} (size {})", self.size()));
        let r = fallocate(
            self.file().as_raw_fd(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        );
        self.ok(r.map_err(io::Error::from), "fallocate PUNCH_HOLE|KEEP_SIZE");
        let size = self.model.len();
        let (s, e) = (
            (off as usize).min(size),
            (off + len).min(size as u64) as usize,
        );
        self.model[s..e].fill(0);
        self.stats.punch += 1;
    }

    /// fallocate mode 0 (extends the size with zeros) or KEEP_SIZE (changes nothing).
    fn op_falloc(&mut self) {
        let len = self.random_len();
        let off = self.random_off(len);
        let keep = self.rng.gen_bool(0.3);
        let flags = if keep {
            FallocateFlags::FALLOC_FL_KEEP_SIZE
        } else {
            FallocateFlags::empty()
        };
        self.log.push(format!(
            "fallocate {flags:?} {len} at {off} (size {})",
            self.size()
        ));
        let r = fallocate(self.file().as_raw_fd(), flags, off as i64, len as i64);
        self.ok(r.map_err(io::Error::from), "fallocate");
        if !keep && off + len > self.size() {
            self.model.resize((off + len) as usize, 0);
        }
        self.stats.falloc += 1;
    }

    /// copy_file_range from fsx.src into fsx (repeated while the kernel copies less).
    fn op_copy(&mut self) {
        let src_len = self.src_model.len() as u64;
        let off_in = if self.rng.gen_ratio(1, 20) {
            src_len
        } else {
            self.rng.gen_range(0..=src_len)
        };
        let len = self.random_len();
        let off_out = self.random_off(len);
        let want = len.min(src_len - off_in);
        self.log.push(format!(
            "copy_file_range {len} from fsx.src@{off_in} (src size {src_len}) to {off_out} \
             (size {})",
            self.size()
        ));
        let (src, dst) = (
            self.src.as_ref().expect("src open"),
            self.file.as_ref().expect("file open"),
        );
        let mut done = 0u64;
        while done < want {
            let (mut i, mut o) = (off_in + done, off_out + done);
            let n = match copy_file_range(
                src,
                Some(&mut i),
                dst,
                Some(&mut o),
                (len - done) as usize,
            ) {
                Ok(n) => n as u64,
                Err(e) => self.fail(&format!("copy_file_range after {done} bytes: {e}")),
            };
            if n == 0 {
                self.fail(&format!(
                    "copy_file_range returned 0 after {done} of {want} bytes"
                ));
            }
            done += n;
        }
        if done != want {
            self.fail(&format!(
                "copy_file_range copied {done} bytes, expected {want}"
            ));
        }
        if want == 0 {
            // At the source's end: nothing may be copied (and the file must not grow).
            let (mut i, mut o) = (off_in, off_out);
            match copy_file_range(src, Some(&mut i), dst, Some(&mut o), len as usize) {
                Ok(0) => {}
                other => self.fail(&format!("copy_file_range at source EOF: {other:?}")),
            }
        }
        let data = self.src_model[off_in as usize..(off_in + want) as usize].to_vec();
        if want > 0 {
            self.model_write(off_out, &data);
        }
        self.stats.copy += 1;
    }

    /// A write through a shared mapping inside the current size, flushed with msync.
    fn op_mmap(&mut self) {
        let size = self.size();
        if size == 0 {
            self.log.push("mmap write skipped (empty file)".into());
            return;
        }
        let off = self.rng.gen_range(0..size);
        let len = self.random_len().min(size - off).min(128 * KIB);
        let data = self.random_bytes(len);
        self.log
            .push(format!("mmap write {len} at {off} + msync (size {size})"));
        let r = mmap_write(self.file(), off, &data);
        self.ok(r, "mmap write + msync");
        self.model_write(off, &data);
        self.stats.mmap += 1;
    }

    fn run(&mut self, m: &mut Mount, ops: u64) {
        for _ in 0..ops {
            self.step(m);
        }
    }

    fn summary(&self) {
        println!(
            "fsx[{}]: seed {:#x}: {} steps in {:.1?}, final size {}, {:?}",
            self.label,
            self.seed,
            self.step,
            self.started.elapsed(),
            self.size(),
            self.stats
        );
    }
}

#[test]
fn fsx_random_ops_match_model_on_head() {
    let ops = ops_or(1500);
    let seed = seed_or(0x5eed_f5c0_0001);
    let mut m = Mount::new();
    let mut fsx = Fsx::new(&m, "head, 16 KiB blocks", seed);
    fsx.run(&mut m, ops);
    fsx.close();
    m.remount();
    fsx.check();
    fsx.summary();

    // The same kind of run on small blocks (more block boundaries per operation).
    let seed = seed_or(0x5eed_f5c0_4096);
    let mut m = Mount::with_block_size(4096);
    let mut fsx = Fsx::new(&m, "head, 4 KiB blocks", seed);
    fsx.run(&mut m, ops);
    fsx.close();
    m.remount();
    fsx.check();
    fsx.summary();
}

#[test]
fn fsx_snapshot_stays_frozen_while_head_changes() {
    let phase = (ops_or(1500) / 5).max(1);
    let seed = seed_or(0x5eed_f5c0_0002);
    let mut m = Mount::new();
    let mut fsx = Fsx::new(&m, "snapshot", seed);
    fsx.run(&mut m, phase);

    // Snapshot with both files still open (writes are not cached by the kernel).
    let snap = m.join(".snapshots/s1");
    fsx.log.push("mkdir .snapshots/s1".into());
    let r = fs::create_dir(&snap);
    fsx.ok(r, "mkdir .snapshots/s1");
    let frozen = fsx.model.clone();
    let frozen_src = fsx.src_model.clone();
    let check_snapshot = |fsx: &Fsx, m: &Mount| {
        let snap = m.join(".snapshots/s1");
        for (name, want) in [("fsx", &frozen), ("fsx.src", &frozen_src)] {
            if let Err(e) = check_path(&snap.join(name), want) {
                fsx.fail(&format!("snapshot s1 changed: {e}"));
            }
        }
        // The snapshot is read-only.
        if OpenOptions::new()
            .write(true)
            .open(snap.join("fsx"))
            .is_ok()
        {
            fsx.fail("snapshot file opened for writing");
        }
    };
    check_snapshot(&fsx, &m);

    for i in 0..phase {
        fsx.step(&mut m);
        if (i + 1) % 20 == 0 {
            check_snapshot(&fsx, &m);
        }
    }
    check_snapshot(&fsx, &m);
    fsx.close();
    m.remount();
    fsx.check();
    check_snapshot(&fsx, &m);
    if fsx.model == frozen {
        fsx.fail("the head never diverged from the snapshot: the test proved nothing");
    }
    fsx.summary();
}
