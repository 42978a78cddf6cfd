//! `snapfs install-unit STORE`: a systemd service for the store's daemon (`Type=notify`:
//! the daemon says READY=1 once its socket answers; stop = SIGTERM, which unmounts every
//! container; the mounts' descriptors in the unit's fd store, so a crashed daemon's
//! successor takes them over; reload = `snapfs restart`), and the `/etc/fstab` lines that
//! mount containers after it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The unit's name for a store: `snapfs-` and the store's directory name, reduced to what
/// unit names allow (letters, digits, `-`, `_`, `.`; anything else becomes `_`).
pub fn unit_name(store: &Path) -> String {
    let base = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".to_string());
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("snapfs-{clean}.service")
}

/// One word of `ExecStart=`: double-quoted, with `\`, `"` and systemd's `%` escaped.
fn exec_word(s: &str) -> Result<String> {
    if s.chars().any(|c| c.is_control()) {
        bail!("{s:?}: control characters cannot go into a unit file");
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// The unit file for `store` served by the binary `bin`.
pub fn render(bin: &Path, store: &Path) -> Result<String> {
    let (bin_s, store_s) = match (bin.to_str(), store.to_str()) {
        (Some(b), Some(s)) => (b, s),
        _ => bail!("the binary's and the store's paths must be UTF-8 to go into a unit file"),
    };
    Ok(format!(
        "[Unit]
Description=snapfs daemon of store {store_s}
Documentation=man:snapfs-serve(1)
After=local-fs.target
RequiresMountsFor={mounts_for}

[Service]
Type=notify
NotifyAccess=main
# A store on object storage reads its AWS_* settings (VAR=value lines) from this file.
EnvironmentFile=-{env_file}
ExecStart={bin} serve {store}
# The daemon keeps each mount's /dev/fuse descriptor and state file in systemd's fd store:
# a daemon that crashes is started again and takes its mounts over, the containers on
# them see a pause. (FDSTORE tells systemd versions before 254 that the store is there.)
FileDescriptorStoreMax=65536
Environment=FDSTORE=65536
# Upgrade keeping the mounts: the daemon hands them over and exits; systemd starts the
# binary on disk with the descriptors. `systemctl restart` does the same (the daemon sees
# the restart job when SIGTERM comes); the descriptors stay while the restart is queued.
ExecReload={bin} restart {store}
FileDescriptorStorePreserve=restart
# SIGTERM of `systemctl stop` unmounts every container (a busy mount is detached) and
# stops within seconds.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=90
Restart=always
RestartSec=100ms
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
",
        bin = exec_word(bin_s)?,
        store = exec_word(store_s)?,
        mounts_for = store_s.replace('%', "%%").replace(' ', "\\x20"),
        env_file = format!("{store_s}/aws.env")
            .replace('%', "%%")
            .replace(' ', "\\x20"),
    ))
}

/// Where the unit goes and what was written.
pub struct Installed {
    pub path: PathBuf,
    pub name: String,
}

/// Writes the unit for `store` into `dir` (replacing an older one of the same name).
pub fn install(bin: &Path, store: &Path, dir: &Path) -> Result<Installed> {
    let text = render(bin, store)?;
    let name = unit_name(store);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(&name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Installed { path, name })
}

/// fstab lines that mount `containers` of `store` under `/mnt/NAME`, after the unit.
pub fn fstab_lines(store: &Path, unit: &str, containers: &[String]) -> String {
    let esc = |s: &str| {
        s.replace('\\', "\\134")
            .replace(' ', "\\040")
            .replace('\t', "\\011")
    };
    let store = esc(&store.to_string_lossy());
    containers
        .iter()
        .map(|c| {
            format!(
                "{store}:{c}  /mnt/{c}  fuse.snapfs  defaults,nofail,x-systemd.requires={unit}  0  0",
                c = esc(c)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_words_are_escaped() {
        assert_eq!(
            unit_name(Path::new("/srv/snap fs%")),
            "snapfs-snap_fs_.service"
        );
        assert_eq!(exec_word("/a b/%h\"x").expect("word"), "\"/a b/%%h\\\"x\"");
        assert!(exec_word("a\nb").is_err());
    }
}
