//! What `snapfs history PATH` names: a path inside a snapfs mount (the mount gives the store,
//! the container and the path from the container's root; under `.snapshots/NAME/` the same
//! path), or else a path from the root of `--container` (default: the one `snapfs mount`
//! mounts) in `--store`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fs::SNAPDIR_NAME;
use crate::mount::{snapfs_mounts, SnapfsMount, DEFAULT_CONTAINER};

/// The store, container and container path a history command asks about.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HistoryTarget {
    /// None: `--store` or `$SNAPFS_STORE`.
    pub store: Option<PathBuf>,
    pub container: String,
    /// From the container's root.
    pub path: Vec<u8>,
}

/// Resolves `path` as [`HistoryTarget`] says. `store` is the store given (`--store` or
/// `$SNAPFS_STORE`), `container` the `--container` given; both must agree with the mount
/// when `path` is inside one.
pub(super) fn history_target(
    store: Option<&Path>,
    container: Option<&str>,
    path: &OsStr,
) -> Result<HistoryTarget> {
    let Some((mount, inner)) = in_mount(Path::new(path), &snapfs_mounts()?)? else {
        return Ok(HistoryTarget {
            store: store.map(Path::to_path_buf),
            container: container.unwrap_or(DEFAULT_CONTAINER).to_string(),
            path: path.as_bytes().to_vec(),
        });
    };
    let shown = Path::new(path).display();
    if let Some(s) = store {
        if !same_file(s, &mount.store) {
            bail!(
                "{shown} is in a mount of store {}, not of {}",
                mount.store.display(),
                s.display()
            );
        }
    }
    if let Some(c) = container {
        if c != mount.container {
            bail!(
                "{shown} is in a mount of container {}, not {c}: drop --container, or give \
                 a path from the container's root",
                mount.container
            );
        }
    }
    Ok(HistoryTarget {
        store: Some(mount.store),
        container: mount.container,
        path: inner,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The mount holding `path` (absolute, or relative to the current directory) and the path
/// from its container's root, or None when `path` is in no snapfs mount. The last component
/// is never resolved (the history of a symlink is the symlink's); it need not exist (a path
/// deleted since a snapshot).
fn in_mount(path: &Path, mounts: &[SnapfsMount]) -> Result<Option<(SnapfsMount, Vec<u8>)>> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let abs = std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))?;
    let resolved = resolve_parent(&abs);
    // The innermost mount holding it (the last one mounted, if two share a place).
    let Some(mount) = mounts
        .iter()
        .filter(|m| resolved.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.components().count())
    else {
        return Ok(None);
    };
    let Ok(rest) = resolved.strip_prefix(&mount.mountpoint) else {
        return Ok(None);
    };
    let mut parts: Vec<&OsStr> = rest.iter().collect();
    if parts.first() == Some(&OsStr::from_bytes(SNAPDIR_NAME)) {
        if parts.len() < 2 {
            bail!(
                "{} is the snapshot directory: name a path inside a snapshot \
                 (.snapshots/NAME/...)",
                path.display()
            );
        }
        // A snapshot's tree: the same path's history.
        parts.drain(..2);
    }
    let mut out = Vec::new();
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p.as_bytes());
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(Some((mount.clone(), out)))
}

/// `abs` with its directories resolved (symlinks, `.`, `..`) as far as they exist, the rest
/// taken as written, and its last component as it is.
fn resolve_parent(abs: &Path) -> PathBuf {
    let (dir, last) = match abs.components().next_back() {
        Some(Component::Normal(name)) => (abs.parent().unwrap_or(abs), Some(name)),
        _ => (abs, None),
    };
    let mut base = dir.to_path_buf();
    let mut tail = Vec::new();
    let mut resolved = loop {
        if let Ok(c) = std::fs::canonicalize(&base) {
            break c;
        }
        match (base.file_name().map(OsStr::to_os_string), base.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                base = parent.to_path_buf();
            }
            _ => break base,
        }
    };
    for name in tail.iter().rev() {
        resolved.push(name);
    }
    let mut out = PathBuf::new();
    for c in resolved.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    if let Some(name) = last {
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(at: &str, container: &str) -> SnapfsMount {
        SnapfsMount {
            mountpoint: PathBuf::from(at),
            store: PathBuf::from("/srv/store"),
            container: container.to_string(),
        }
    }

    #[test]
    fn paths_in_mounts_become_container_paths() {
        // Paths that do not exist resolve as written: the lookup is lexical for them.
        let mounts = [
            mount("/nonexistent-snapfs/a", "web"),
            mount("/nonexistent-snapfs/a/b", "db"),
        ];
        let at = |p: &str| {
            in_mount(Path::new(p), &mounts)
                .expect("resolve")
                .map(|(m, p)| (m.container, String::from_utf8(p).expect("utf8")))
        };
        assert_eq!(
            at("/nonexistent-snapfs/a/etc/passwd"),
            Some(("web".into(), "/etc/passwd".into()))
        );
        assert_eq!(
            at("/nonexistent-snapfs/a/b/x"),
            Some(("db".into(), "/x".into()))
        );
        assert_eq!(
            at("/nonexistent-snapfs/a"),
            Some(("web".into(), "/".into()))
        );
        assert_eq!(
            at("/nonexistent-snapfs/a/.snapshots/snap-1/etc/x"),
            Some(("web".into(), "/etc/x".into()))
        );
        assert_eq!(
            at("/nonexistent-snapfs/a/x/../etc/y"),
            Some(("web".into(), "/etc/y".into()))
        );
        assert_eq!(at("/nonexistent-snapfs/ab/x"), None);
        assert_eq!(at("/etc/passwd"), None);
        assert!(in_mount(Path::new("/nonexistent-snapfs/a/.snapshots"), &mounts).is_err());
    }
}
