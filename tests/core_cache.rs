//! The metadata cache answers for every key under an id a commit allocated (a new
//! directory's entries, a new file's extended attributes) without reading the kv, and those
//! answers stay exact through creates, unlinks, renames, attribute changes and snapshots:
//! every answer is compared with what the store says once reopened from its backend (an
//! empty cache).

#[path = "core/harness.rs"]
mod harness;

use harness::*;
use snapfs::fs::{Fs, ROOT_INO};

const NAMES: [&str; 6] = ["x0", "x1", "a", "b", "c", "e"];

/// What the view answers for every name of `NAMES` in `dir` and for two attributes of each
/// file found there.
fn answers(fs: &Fs, dir: Ino) -> Vec<String> {
    let mut out = Vec::new();
    for name in NAMES {
        match fs.lookup(dir, name.as_bytes()) {
            Ok((ino, inode)) => {
                out.push(format!("{name}: ino {} size {}", ino.get(), inode.size));
                for attr in ["security.capability", "user.k", "user.big"] {
                    let v = fs.getxattr(ino, attr.as_bytes()).map_err(|e| e.errno());
                    out.push(format!("{name} {attr}: {v:?}"));
                }
            }
            Err(e) => out.push(format!("{name}: errno {}", e.errno())),
        }
    }
    out
}

fn make_file(fs: &Fs, dir: Ino, name: &str) -> Ino {
    let (ino, _, fh) = fs
        .create(dir, name.as_bytes(), 0o644, libc::O_RDWR, ME)
        .expect("create");
    fs.write(ino, Some(fh), 0, name.as_bytes(), false)
        .expect("write");
    fs.release(fh).expect("release");
    ino
}

#[test]
fn keys_under_new_ids_are_answered_from_the_cache_and_stay_exact() {
    for backend in [mem_backend(), rocks_backend()] {
        let t = make(backend);
        let misses = || t.store().cache_stats().1;
        let (d, _) = t.mkdir(ROOT_INO, b"d", 0o755, ME).expect("mkdir");
        let before = misses();
        assert_eq!(errno(t.lookup(d, b"x0")), libc::ENOENT);
        make_file(&t, d, "a");
        let b = make_file(&t, d, "b");
        assert_eq!(errno(t.getxattr(b, b"security.capability")), libc::ENODATA);
        t.setxattr(b, b"user.k", b"v1", 0).expect("setxattr");
        assert_eq!(t.getxattr(b, b"user.k").expect("getxattr"), b"v1");
        t.unlink(d, b"a").expect("unlink");
        assert_eq!(errno(t.lookup(d, b"a")), libc::ENOENT);
        t.rename(d, b"b", d, b"c", 0).expect("rename");
        assert_eq!(errno(t.lookup(d, b"b")), libc::ENOENT);
        assert_eq!(t.lookup(d, b"c").expect("lookup c").0, b);
        t.removexattr(b, b"user.k").expect("removexattr");
        assert_eq!(errno(t.getxattr(b, b"user.k")), libc::ENODATA);
        make_file(&t, d, "a");
        assert_eq!(
            misses(),
            before,
            "keys under ids allocated by this view's commits were read from the kv"
        );
        // Too large for the cache: the cache stops answering for the file's keys.
        t.setxattr(b, b"user.big", &[7u8; 10_000], 0)
            .expect("setxattr big");
        assert_eq!(t.getxattr(b, b"user.big").expect("big").len(), 10_000);
        let seen = answers(&t, d);

        // After a snapshot the head is a new view: it reads through the kv again, and both
        // it and the snapshot answer as before.
        let snap = t
            .store()
            .snapshot(t.container(), None, None)
            .expect("snapshot");
        assert_eq!(answers(&t, d), seen, "the head after a snapshot");
        let frozen = Fs::frozen(
            t.store().clone(),
            t.container(),
            t.store().snapshot_chain(&snap),
        );
        assert_eq!(answers(&frozen, d), seen, "the snapshot");
        drop(frozen);
        make_file(&t, d, "e");
        t.unlink(d, b"c").expect("unlink c");
        let head = answers(&t, d);

        let t = reopen(t);
        assert_eq!(answers(&t, d), head, "the head, read with an empty cache");
    }
}
