//! Snapshots at scale through a real mount: the daily-expiry pattern (many snapshots with
//! small changes, oldest-first deletion of most of them), a prompt daemon exit right after
//! the mass deletion (background reclaim stops between batches and resumes at the next
//! start), the views that remain, and a clean fsck. Also: ioctls answer ENOTTY quietly.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{random_bytes, snapfs, Mount};

const BASE_FILES: usize = 1000;
const SNAPSHOTS: usize = 200;
const KEEP: usize = 10;

fn small(i: usize) -> String {
    format!("d{}/f{i:04}", i % 10)
}

#[test]
fn daily_expiry_pattern_deletes_oldest_first_and_daemon_exits_promptly() {
    let mut m = Mount::new();
    let big = random_bytes(1, 8 << 20);
    fs::write(m.join("big"), &big).expect("big file");
    for d in 0..10 {
        fs::create_dir(m.join(format!("d{d}"))).expect("mkdir");
    }
    for i in 0..BASE_FILES {
        fs::write(m.join(small(i)), format!("file {i}")).expect("small file");
    }
    // Each "day": a snapshot, then a few small changes (one small file, a log line, one
    // 4 KiB block of the big file).
    let mut expected = Vec::new();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.join("log"))
        .expect("log");
    let big_file = OpenOptions::new()
        .write(true)
        .open(m.join("big"))
        .expect("open big");
    for day in 0..SNAPSHOTS {
        let alias = format!("day{day:04}");
        fs::create_dir(m.join(".snapshots").join(&alias)).expect("mkdir .snapshots/X");
        expected.push((alias, fs::read(m.join(small(day))).expect("read small")));
        fs::write(m.join(small(day)), format!("changed on day {day}")).expect("change");
        writeln!(log, "day {day}").expect("log line");
        big_file
            .write_all_at(&[day as u8; 4096], (day as u64 * 40_961) % (8 << 20))
            .expect("big write");
    }
    drop(big_file);
    drop(log);
    let head_big = fs::read(m.join("big")).expect("read big");
    // Delete all but the newest KEEP, oldest first.
    for (alias, _) in &expected[..SNAPSHOTS - KEEP] {
        let target = fs::read_link(m.join(".snapshots").join(alias)).expect("alias link");
        fs::remove_dir(m.join(".snapshots").join(&target)).expect("rmdir snapshot");
    }
    // Unmount at once: the daemon stops reclaiming between batches and exits; `umount`
    // does not complain about a daemon that is only finishing background work.
    let out = m.umount_output();
    out.assert_success();
    assert!(
        !out.describe().contains("still running"),
        "the daemon did not exit promptly: {}",
        out.describe()
    );
    // The store is free: fsck runs (reclaim may be half done: that is a valid state).
    snapfs([std::ffi::OsStr::new("fsck"), m.store().path().as_os_str()]).assert_success();
    m.mount();
    // Reclaim resumes; what is left is intact.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let listed: Vec<String> = fs::read_dir(m.join(".snapshots"))
        .expect("ls .snapshots")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap-"))
        .collect();
    assert_eq!(listed.len(), KEEP, "{listed:?}");
    let snapdir = fs::metadata(m.join(".snapshots")).expect("stat .snapshots");
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&snapdir),
        2 + KEEP as u64,
        "nlink of .snapshots"
    );
    for (day, (alias, content)) in expected.iter().enumerate().skip(SNAPSHOTS - KEEP) {
        let root = m.join(".snapshots").join(alias);
        assert_eq!(
            &fs::read(root.join(small(day))).expect("read in snapshot"),
            content,
            "day {day}"
        );
        let lines = fs::read_to_string(root.join("log")).expect("log in snapshot");
        assert_eq!(
            lines.lines().count(),
            day,
            "log lines in snapshot of day {day}"
        );
    }
    assert_eq!(fs::read(m.join("big")).expect("read big"), head_big);
    for i in 0..BASE_FILES {
        let want = if i < SNAPSHOTS {
            format!("changed on day {i}")
        } else {
            format!("file {i}")
        };
        assert_eq!(fs::read_to_string(m.join(small(i))).expect("read"), want);
    }
    m.umount();
    let report = snapfs([std::ffi::OsStr::new("fsck"), m.store().path().as_os_str()]);
    report.assert_success();
}

#[test]
fn ioctl_answers_enotty_without_logging() {
    let m = Mount::new();
    fs::write(m.join("f"), b"x").expect("write");
    let f = File::open(m.join("f")).expect("open");
    for _ in 0..50 {
        // What `isatty`, bash and git ask of every file they open: TIOCGWINSZ / TCGETS.
        assert_eq!(
            rustix::termios::tcgetwinsize(&f).map(|_| ()),
            Err(rustix::io::Errno::NOTTY)
        );
        assert_eq!(
            rustix::termios::tcgetattr(&f).map(|_| ()),
            Err(rustix::io::Errno::NOTTY)
        );
    }
    let log = fs::read_to_string(m.store().path().join("snapfs.log")).unwrap_or_default();
    assert!(
        !log.contains("ioctl"),
        "ioctl calls were logged: {}",
        log.lines()
            .filter(|l| l.contains("ioctl"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Listings carry attributes (READDIRPLUS): those of `.snapshots` must not be cached, since
/// aliases and snapshots also change through the API behind the kernel's back.
#[test]
fn snapdir_listing_with_attributes_never_caches_api_changes() {
    let m = Mount::new();
    fs::create_dir(m.join(".snapshots/first")).expect("mkdir .snapshots/first");
    let name = fs::read_link(m.join(".snapshots/first")).expect("alias link");
    // `ls -l`: a listing with attributes of every entry.
    let listed: Vec<String> = fs::read_dir(m.join(".snapshots"))
        .expect("ls .snapshots")
        .map(|e| {
            let e = e.expect("entry");
            e.metadata().expect("stat entry");
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    assert!(listed.contains(&"first".to_string()), "{listed:?}");
    let store = m.store().path().as_os_str().to_owned();
    let name = name.to_string_lossy().into_owned();
    snapfs([
        "snapshots".as_ref(),
        "alias".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
        "--container".as_ref(),
        "default".as_ref(),
        "--name".as_ref(),
        std::ffi::OsStr::new(&name),
        "--alias".as_ref(),
        "second".as_ref(),
    ])
    .assert_success();
    assert_eq!(
        fs::read_link(m.join(".snapshots/second"))
            .expect("new alias")
            .to_string_lossy(),
        name
    );
    assert!(
        fs::symlink_metadata(m.join(".snapshots/first")).is_err(),
        "the old alias is still seen"
    );
}
