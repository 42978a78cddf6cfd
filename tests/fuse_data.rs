//! File data layout through a real kernel mount: fallocate, SEEK_DATA/SEEK_HOLE,
//! copy_file_range, sparse files and files larger than 4 GiB.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use common::{expect_errno, Mount};
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};
use rustix::fs::copy_file_range;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

fn rw(p: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn read_at(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)
        .unwrap_or_else(|e| panic!("pread {len} at {off}: {e}"));
    buf
}

fn assert_zero(buf: &[u8], what: &str) {
    if let Some(i) = buf.iter().position(|&b| b != 0) {
        panic!("{what}: non-zero byte {:#x} at +{i}", buf[i]);
    }
}

#[test]
fn fallocate_default_mode_extends_size_with_zeros() {
    let m = Mount::new();
    let p = m.join("f");
    let f = rw(&p);
    let len = 3 * 65536 + 123;
    fallocate(f.as_raw_fd(), FallocateFlags::empty(), 0, len as i64).expect("fallocate");
    assert_eq!(
        f.metadata().expect("fstat").len(),
        len,
        "size after fallocate"
    );
    assert_zero(&read_at(&f, 0, len as usize), "fallocated range");
    // Inside existing data: data unchanged, size unchanged.
    f.write_all_at(b"keep me", 1000).expect("write");
    fallocate(f.as_raw_fd(), FallocateFlags::empty(), 0, 4096).expect("fallocate inside");
    assert_eq!(read_at(&f, 1000, 7), b"keep me");
    assert_eq!(f.metadata().expect("fstat").len(), len);
    // Past the end, at an offset: size grows to offset + len.
    fallocate(f.as_raw_fd(), FallocateFlags::empty(), 1_000_000, 10).expect("fallocate past end");
    assert_eq!(f.metadata().expect("fstat").len(), 1_000_010);
    assert_zero(&read_at(&f, len, (1_000_010 - len) as usize), "gap");
}

#[test]
fn fallocate_keep_size_leaves_size_unchanged() {
    let m = Mount::new();
    let f = rw(&m.join("f"));
    f.write_all_at(b"abc", 0).expect("write");
    fallocate(
        f.as_raw_fd(),
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        MIB as i64,
    )
    .expect("fallocate KEEP_SIZE");
    assert_eq!(f.metadata().expect("fstat").len(), 3);
    assert_eq!(fs::read(m.join("f")).expect("read"), b"abc");
}

#[test]
fn fallocate_punch_hole_keep_size_reads_zeros() {
    for block in [Some(4096u64), None] {
        let m = match block {
            Some(b) => Mount::with_block_size(b),
            None => Mount::new(),
        };
        let p = m.join("f");
        let data = common::random_bytes(5, (3 * MIB) as usize);
        fs::write(&p, &data).expect("write");
        let f = rw(&p);
        let (start, end) = (100_000u64, 2_100_000u64);
        fallocate(
            f.as_raw_fd(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            start as i64,
            (end - start) as i64,
        )
        .expect("punch hole");
        assert_eq!(f.metadata().expect("fstat").len(), 3 * MIB, "size kept");
        drop(f);
        let got = fs::read(&p).expect("read");
        assert!(
            got[..start as usize] == data[..start as usize],
            "before hole (block {block:?})"
        );
        assert_zero(
            &got[start as usize..end as usize],
            &format!("punched range (block {block:?})"),
        );
        assert!(
            got[end as usize..] == data[end as usize..],
            "after hole (block {block:?})"
        );
    }
}

#[test]
fn fallocate_unsupported_mode_fails_eopnotsupp() {
    let m = Mount::new();
    let p = m.join("f");
    fs::write(&p, vec![1u8; (2 * MIB) as usize]).expect("write");
    let f = rw(&p);
    for (name, mode) in [
        ("COLLAPSE_RANGE", FallocateFlags::FALLOC_FL_COLLAPSE_RANGE),
        ("INSERT_RANGE", FallocateFlags::FALLOC_FL_INSERT_RANGE),
        ("UNSHARE_RANGE", FallocateFlags::FALLOC_FL_UNSHARE_RANGE),
    ] {
        expect_errno(
            fallocate(f.as_raw_fd(), mode, 0, MIB as i64),
            Errno::EOPNOTSUPP,
            name,
        );
    }
    assert_eq!(f.metadata().expect("fstat").len(), 2 * MIB);
    // ZERO_RANGE is optional; if accepted, it must zero the range.
    match fallocate(
        f.as_raw_fd(),
        FallocateFlags::FALLOC_FL_ZERO_RANGE,
        1000,
        5000,
    ) {
        Ok(()) => {
            let got = read_at(&f, 0, 7000);
            assert!(got[..1000].iter().all(|&b| b == 1));
            assert_zero(&got[1000..6000], "ZERO_RANGE range");
            assert!(got[6000..].iter().all(|&b| b == 1));
        }
        Err(e) => assert_eq!(
            e,
            Errno::EOPNOTSUPP,
            "ZERO_RANGE refused with the wrong errno"
        ),
    }
    // The default mode still works afterwards (no ENOSYS poisoning the connection).
    fallocate(f.as_raw_fd(), FallocateFlags::empty(), 0, 3 * MIB as i64)
        .expect("default mode after refusals");
    assert_eq!(f.metadata().expect("fstat").len(), 3 * MIB);
}

/// Data at [0, 4 KiB) and [8 MiB, 8 MiB + 4 KiB), size 16 MiB: holes for any block size.
fn check_sparse_layout(f: &File, when: &str) {
    let fd = f.as_raw_fd();
    let at = |off: u64, w: Whence| lseek(fd, off as i64, w).map(|o| o as u64);
    assert_eq!(at(0, Whence::SeekData), Ok(0), "{when}: SEEK_DATA 0");
    let h = at(0, Whence::SeekHole).expect("SEEK_HOLE 0");
    assert!((4 * KIB..=MIB).contains(&h), "{when}: first hole at {h}");
    assert_eq!(
        at(h, Whence::SeekData),
        Ok(8 * MIB),
        "{when}: SEEK_DATA from first hole"
    );
    assert_eq!(
        at(4 * MIB, Whence::SeekData),
        Ok(8 * MIB),
        "{when}: SEEK_DATA 4 MiB"
    );
    let h2 = at(8 * MIB, Whence::SeekHole).expect("SEEK_HOLE 8 MiB");
    assert!(
        (8 * MIB + 4 * KIB..=9 * MIB).contains(&h2),
        "{when}: second hole at {h2}"
    );
    expect_errno(
        at(12 * MIB, Whence::SeekData),
        Errno::ENXIO,
        &format!("{when}: SEEK_DATA in trailing hole"),
    );
    assert_eq!(
        at(12 * MIB, Whence::SeekHole),
        Ok(12 * MIB),
        "{when}: SEEK_HOLE in trailing hole"
    );
    expect_errno(
        at(16 * MIB, Whence::SeekData),
        Errno::ENXIO,
        &format!("{when}: SEEK_DATA at EOF"),
    );
    expect_errno(
        at(16 * MIB, Whence::SeekHole),
        Errno::ENXIO,
        &format!("{when}: SEEK_HOLE at EOF"),
    );
}

fn write_sparse_layout(f: &File) {
    f.write_all_at(&[0xA5; 4096], 0).expect("write head");
    f.write_all_at(&[0x5A; 4096], 8 * MIB)
        .expect("write middle");
    f.set_len(16 * MIB).expect("set_len");
}

#[test]
fn lseek_data_hole_finds_sparse_layout_after_close() {
    let mut m = Mount::new();
    let p = m.join("sparse");
    write_sparse_layout(&rw(&p));
    check_sparse_layout(&File::open(&p).expect("open"), "reopened");
    m.remount();
    check_sparse_layout(&File::open(&p).expect("open"), "after remount");
}

#[test]
fn lseek_data_hole_sees_unflushed_writes() {
    // What `cp` relies on: data just written through an open descriptor is data.
    let m = Mount::new();
    let f = rw(&m.join("sparse"));
    write_sparse_layout(&f);
    check_sparse_layout(&f, "same descriptor, not flushed");
    check_sparse_layout(
        &File::open(m.join("sparse")).expect("open"),
        "second descriptor",
    );
}

#[test]
fn copy_file_range_copies_exact_bytes() {
    let mut m = Mount::new();
    let data = common::random_bytes(11, (3 * MIB) as usize + 777);
    fs::write(m.join("src"), &data).expect("write");
    let src = File::open(m.join("src")).expect("open src");
    let dst = rw(&m.join("dst"));
    dst.write_all_at(b"prefix", 0).expect("write dst");
    let (mut off_in, mut off_out) = (1000u64, 100u64);
    let mut left = 2 * MIB as usize + 5;
    while left > 0 {
        let n = copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), left)
            .expect("copy_file_range");
        assert!(n > 0, "copy_file_range returned 0 with {left} bytes left");
        left -= n;
    }
    drop(dst);
    let got = fs::read(m.join("dst")).expect("read dst");
    assert_eq!(got.len(), 100 + 2 * MIB as usize + 5);
    assert_eq!(&got[..6], b"prefix");
    assert_zero(&got[6..100], "gap before copied range");
    assert!(
        got[100..] == data[1000..1000 + 2 * MIB as usize + 5],
        "copied bytes differ"
    );
    // At the source's end nothing is copied.
    let dst = rw(&m.join("dst"));
    let mut off_in = data.len() as u64;
    let mut off_out = 0u64;
    assert_eq!(
        copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), 100)
            .expect("copy at EOF"),
        0
    );
    drop((src, dst));
    m.remount();
    assert!(
        fs::read(m.join("dst")).expect("read")[100..] == data[1000..1000 + 2 * MIB as usize + 5]
    );
}

#[test]
fn sparse_10gib_file_uses_little_space_and_reads_zeros() {
    let mut m = Mount::new();
    let p = m.join("huge");
    let f = rw(&p);
    f.set_len(10 * GIB).expect("set_len 10 GiB");
    f.write_all_at(b"island", 7 * GIB).expect("write at 7 GiB");
    drop(f);
    let check = || {
        let md = fs::metadata(&p).expect("stat");
        assert_eq!(md.len(), 10 * GIB, "size");
        assert!(
            md.blocks() * 512 < 8 * MIB,
            "st_blocks {} for a 10 GiB sparse file",
            md.blocks()
        );
        let f = File::open(&p).expect("open");
        for off in [0, 5 * GIB, 10 * GIB - 65536] {
            assert_zero(&read_at(&f, off, 65536), &format!("hole at {off}"));
        }
        assert_eq!(read_at(&f, 7 * GIB, 6), b"island");
    };
    check();
    m.remount();
    check();
    m.umount();
    let used = m.store().disk_usage();
    assert!(
        used < 256 * MIB,
        "store uses {used} bytes on disk for a sparse file"
    );
    m.mount();
}

#[test]
fn file_over_4gib_keeps_data_past_32_bit_offsets() {
    let mut m = Mount::new();
    let p = m.join("big");
    let f = rw(&p);
    let a = 4 * GIB + 3;
    let b = 5 * GIB + 11;
    f.write_all_at(b"past-4GiB", a).expect("write past 4 GiB");
    f.write_all_at(b"past-5GiB", b).expect("write past 5 GiB");
    drop(f);
    for round in 0..2 {
        let f = File::open(&p).expect("open");
        assert_eq!(
            f.metadata().expect("fstat").len(),
            b + 9,
            "size, round {round}"
        );
        assert_eq!(read_at(&f, a, 9), b"past-4GiB", "round {round}");
        assert_eq!(read_at(&f, b, 9), b"past-5GiB", "round {round}");
        // The same offsets modulo 2^32 must stay holes.
        assert_zero(&read_at(&f, 0, 64), "offset 0");
        assert_zero(&read_at(&f, GIB + 11 - 8, 32), "offset 5 GiB mod 4 GiB");
        assert_zero(&read_at(&f, 4 * GIB - 16, 19), "just before 4 GiB");
        drop(f);
        m.remount();
    }
    let f = rw(&p);
    f.set_len(4 * GIB + 5)
        .expect("truncate into the first write");
    assert_eq!(read_at(&f, 4 * GIB, 5), [0, 0, 0, b'p', b'a']);
    assert_eq!(
        f.read_at(&mut [0u8; 16], 4 * GIB + 5)
            .expect("read at the new end"),
        0
    );
    assert_eq!(
        f.read_at(&mut [0u8; 16], 5 * GIB + 11)
            .expect("read past the new end"),
        0
    );
}
