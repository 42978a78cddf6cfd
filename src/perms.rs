//! The store is owner-only: it holds every container's data in the clear (the RocksDB log,
//! tables and blob files), whatever the modes of the files inside the containers. Its
//! directory and every directory under it are 0700, and no file in it has a group or other
//! permission bit.
//!
//! RocksDB has no option for the mode of the files it creates, so every process that
//! creates or opens a store sets its umask to [`PRIVATE_UMASK`] first; a store left with
//! looser modes (made before this rule, or changed by hand) is tightened when the daemon
//! opens it, and reported by `snapfs fsck`.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

/// The umask of every process that creates files in a store: no group or other bits.
pub const PRIVATE_UMASK: u32 = 0o077;

/// Sets this process's umask to [`PRIVATE_UMASK`] (process-wide: it applies to every file
/// the process creates from now on, including those RocksDB creates).
pub fn set_private_umask() {
    nix::sys::stat::umask(Mode::from_bits_truncate(PRIVATE_UMASK));
}

/// A path under the store that others may read, write or traverse, with its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loose {
    pub path: PathBuf,
    pub mode: u32,
    pub is_dir: bool,
}

impl Loose {
    /// The owner-only mode it gets: no group or other bits; directories stay traversable by
    /// the owner.
    fn tightened(&self) -> u32 {
        let mode = self.mode & !PRIVATE_UMASK;
        if self.is_dir {
            mode | 0o700
        } else {
            mode
        }
    }
}

/// Every path under `store` (the store directory included) with a group or other permission
/// bit. Symbolic links are not followed (their own mode means nothing) and nothing on another
/// file system is looked at. Files that vanish during the walk (RocksDB deletes obsolete
/// ones) are skipped.
pub fn find_loose(store: &Path) -> io::Result<Vec<Loose>> {
    let root = std::fs::symlink_metadata(store)?;
    let dev = root.dev();
    let mut out = Vec::new();
    let mut stack = vec![(store.to_path_buf(), root)];
    while let Some((path, md)) = stack.pop() {
        if md.mode() & PRIVATE_UMASK != 0 {
            out.push(Loose {
                path: path.clone(),
                mode: md.mode() & 0o7777,
                is_dir: md.is_dir(),
            });
        }
        if !md.is_dir() {
            continue;
        }
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let md = match entry.metadata() {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if md.file_type().is_symlink() || md.dev() != dev {
                continue;
            }
            stack.push((entry.path(), md));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Makes the store owner-only: directories 0700, group and other bits dropped from
/// everything else. Returns what was changed (with the modes it had).
pub fn tighten(store: &Path) -> io::Result<Vec<Loose>> {
    let loose = find_loose(store)?;
    let mut changed = Vec::with_capacity(loose.len());
    for l in loose {
        match std::fs::set_permissions(&l.path, std::fs::Permissions::from_mode(l.tightened())) {
            Ok(()) => changed.push(l),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot chmod {}: {e}", l.path.display()),
                ))
            }
        }
    }
    Ok(changed)
}

/// One line about loose paths: how many, and the first few with their modes.
pub fn describe(loose: &[Loose]) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<String> = loose
        .iter()
        .take(SHOWN)
        .map(|l| format!("{} {:04o}", l.path.display(), l.mode))
        .collect();
    let more = if loose.len() > SHOWN { ", ..." } else { "" };
    format!(
        "{} files or directories are open to group or others ({}{more})",
        loose.len(),
        shown.join(", ")
    )
}

/// What the daemon does on opening a store: tightens it, and says so once in its log.
pub fn tighten_on_open(store: &Path) -> io::Result<()> {
    let changed = tighten(store)?;
    if !changed.is_empty() {
        log::warn!(
            "store {} was readable by others: {} files and directories tightened to owner-only",
            store.display(),
            changed.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    }

    #[test]
    fn tighten_drops_group_and_other_bits_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("db")).expect("mkdir");
        std::fs::write(store.join("db/000001.log"), b"x").expect("write");
        std::fs::write(store.join("snapfs.pid"), b"1").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", store.join("link")).expect("symlink");
        chmod(&store, 0o755);
        chmod(&store.join("db"), 0o775);
        chmod(&store.join("db/000001.log"), 0o644);
        chmod(&store.join("snapfs.pid"), 0o600);
        let before = mode(Path::new("/etc/hostname"));

        let loose = find_loose(&store).expect("walk");
        let paths: Vec<&Path> = loose.iter().map(|l| l.path.as_path()).collect();
        assert_eq!(
            paths,
            [
                store.as_path(),
                &store.join("db"),
                &store.join("db/000001.log")
            ]
        );
        assert_eq!(loose[2].mode, 0o644);
        assert!(describe(&loose).starts_with("3 files or directories are open"));

        assert_eq!(tighten(&store).expect("tighten").len(), 3);
        assert_eq!(mode(&store), 0o700);
        assert_eq!(mode(&store.join("db")), 0o700);
        assert_eq!(mode(&store.join("db/000001.log")), 0o600);
        assert_eq!(mode(&store.join("snapfs.pid")), 0o600);
        assert_eq!(mode(Path::new("/etc/hostname")), before, "symlink followed");
        assert!(find_loose(&store).expect("walk").is_empty());
        assert!(tighten(&store).expect("tighten").is_empty());
    }

    #[test]
    fn directories_stay_traversable_by_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("store");
        std::fs::create_dir(&d).expect("mkdir");
        chmod(&d, 0o055);
        tighten(&d).expect("tighten");
        assert_eq!(mode(&d), 0o700);
    }
}
