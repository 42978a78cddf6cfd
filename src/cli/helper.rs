//! `mount.fuse.snapfs` (also `snapfs mount-helper`): what mount(8) runs for
//! `mount -t fuse.snapfs STORE:CONTAINER MOUNTPOINT [-o options]` and fstab lines.

use super::*;

// ---------------------------------------------------------------------------------------
// mount.fuse.snapfs

/// What the helper was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct HelperRequest {
    pub store: PathBuf,
    pub container: String,
    pub mountpoint: PathBuf,
    pub snapdir_visible: bool,
    pub admin_uid: Option<u32>,
    /// `-f` (fake): parse, check and do nothing.
    pub fake: bool,
}

/// Options `mount(8)` and fstab use that mean nothing to snapfs (or that it always does).
const IGNORED_OPTIONS: &[&str] = &[
    "rw",
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "allow_other",
    "default_permissions",
    "nosymfollow",
    "symfollow",
];

/// Option prefixes (`key=` or families like `x-systemd.`) ignored whatever their value.
const IGNORED_PREFIXES: &[&str] = &[
    "x-",
    "comment=",
    "user=",
    "helper=",
    "fsname=",
    "subtype=",
    "context=",
    "fscontext=",
    "defcontext=",
    "rootcontext=",
];

pub(super) fn usage_helper() -> String {
    format!("usage: {MOUNT_HELPER_NAME} STORE:CONTAINER MOUNTPOINT [-o OPTIONS]")
}

/// Parses `SOURCE MOUNTPOINT [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]` as `mount(8)` passes
/// them to `/sbin/mount.fuse.snapfs`.
pub fn parse_helper_args(args: &[OsString]) -> Result<HelperRequest> {
    let mut positional: Vec<&OsStr> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_os_str();
        i += 1;
        let Some(s) = a.to_str() else {
            positional.push(a);
            continue;
        };
        match s {
            "-o" | "-t" | "-N" => {
                let value = args
                    .get(i)
                    .and_then(|v| v.to_str())
                    .ok_or_else(|| anyhow!("{s} needs a value; {}", usage_helper()))?;
                i += 1;
                match s {
                    "-o" => options.push(value.to_string()),
                    "-t" => check_type(value)?,
                    _ => bail!("mount namespaces (-N) are not supported"),
                }
            }
            "-h" | "--help" => bail!("{}", usage_helper()),
            "--" => positional.extend(args[i..].iter().map(OsString::as_os_str)),
            _ if s.starts_with("-o") && s.len() > 2 => options.push(s[2..].to_string()),
            _ if s.starts_with("-t") && s.len() > 2 => check_type(&s[2..])?,
            _ if s.starts_with('-') && s.len() > 1 => {
                for flag in s[1..].chars() {
                    match flag {
                        'f' => fake = true,
                        // sloppy, no mtab, verbose, read-write
                        's' | 'n' | 'v' | 'w' => {}
                        'r' => bail!("snapfs mounts are read-write only; drop -r"),
                        other => bail!("unknown flag -{other}; {}", usage_helper()),
                    }
                }
            }
            _ => positional.push(a),
        }
        if s == "--" {
            break;
        }
    }
    let [source, mountpoint] = positional[..] else {
        bail!(
            "expected a source and a mountpoint, got {} arguments; {}",
            positional.len(),
            usage_helper()
        );
    };
    let source = source
        .to_str()
        .ok_or_else(|| anyhow!("the source {source:?} is not UTF-8"))?;
    let (store, container) = source
        .rsplit_once(':')
        .filter(|(s, c)| !s.is_empty() && !c.is_empty())
        .ok_or_else(|| anyhow!("source {source:?} is not STORE:CONTAINER"))?;
    let mut req = HelperRequest {
        store: PathBuf::from(store),
        container: container.to_string(),
        mountpoint: PathBuf::from(mountpoint),
        snapdir_visible: false,
        admin_uid: None,
        fake,
    };
    for opt in options.iter().flat_map(|o| o.split(',')) {
        let opt = opt.trim();
        if opt.is_empty()
            || IGNORED_OPTIONS.contains(&opt)
            || IGNORED_PREFIXES.iter().any(|p| opt.starts_with(p))
        {
            continue;
        }
        match opt.split_once('=') {
            Some(("snapdir", "visible")) => req.snapdir_visible = true,
            Some(("snapdir", "hidden")) => req.snapdir_visible = false,
            Some(("snapdir", other)) => {
                bail!("snapdir must be hidden or visible, not {other:?}")
            }
            Some(("admin_uid", uid)) => {
                req.admin_uid = Some(
                    uid.parse()
                        .map_err(|_| anyhow!("admin_uid must be a uid (a number), not {uid:?}"))?,
                );
            }
            _ if opt == "ro" => bail!("snapfs mounts are read-write only; drop the ro option"),
            _ => bail!("unknown mount option {opt:?}"),
        }
    }
    Ok(req)
}

pub(super) fn check_type(t: &str) -> Result<()> {
    match t {
        "fuse.snapfs" | "snapfs" => Ok(()),
        other => bail!("{MOUNT_HELPER_NAME} mounts type fuse.snapfs, not {other:?}"),
    }
}

/// `mount.fuse.snapfs ARGS`: mounts like `snapfs mount STORE MNT --container C`; silent on
/// success, one error line and exit 32 on failure (1 for a bad invocation).
pub(super) fn mount_helper_main(args: &[OsString]) -> ExitCode {
    let req = match parse_helper_args(args) {
        Ok(r) => r,
        Err(e) => return fail(&e, 1),
    };
    if req.fake {
        return ExitCode::SUCCESS;
    }
    let result = crate::mount::mount(crate::mount::MountArgs {
        store: req.store,
        mountpoint: req.mountpoint,
        container: req.container,
        foreground: false,
        volume: crate::fs::VolumeOptions {
            snapdir_visible: req.snapdir_visible,
            admin_uid: req.admin_uid,
            read_only: false,
        },
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, EXIT_MOUNT_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_parses_mount_arguments() {
        let r = parse_helper_args(&args(&[
            "/srv/a:b:web",
            "/mnt/x",
            "-o",
            "rw,nofail,_netdev,noauto,x-systemd.automount,snapdir=visible,admin_uid=1000",
            "-n",
            "-t",
            "fuse.snapfs",
        ]))
        .expect("parse");
        assert_eq!(r.store, PathBuf::from("/srv/a:b"));
        assert_eq!(r.container, "web");
        assert_eq!(r.mountpoint, PathBuf::from("/mnt/x"));
        assert!(r.snapdir_visible);
        assert_eq!(r.admin_uid, Some(1000));
        assert!(!r.fake);
        let r = parse_helper_args(&args(&["-ofoo", "s:c", "/m"]));
        assert!(r.is_err());
        let r = parse_helper_args(&args(&["-f", "s:c", "/m", "-odefaults"])).expect("fake");
        assert!(r.fake && !r.snapdir_visible);
    }

    #[test]
    fn helper_refuses_bad_invocations() {
        for bad in [
            &["s:c"][..],
            &["nocolon", "/m"],
            &["s:", "/m"],
            &[":c", "/m"],
            &["s:c", "/m", "-o", "ro"],
            &["s:c", "/m", "-o", "snapdir=maybe"],
            &["s:c", "/m", "-o", "admin_uid=x"],
            &["s:c", "/m", "-t", "ext4"],
            &["s:c", "/m", "-o"],
            &["s:c", "/m", "extra"],
        ] {
            assert!(parse_helper_args(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_and_tables() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536 * 1024), "1.5 MiB");
        assert_eq!(human_size(20 << 30), "20 GiB");
        let t = render_table(
            &[("A", Align::Left), ("N", Align::Right), ("Z", Align::Left)],
            &[
                vec!["xx".into(), "1".into(), "-".into()],
                vec!["y".into(), "100".into(), "end".into()],
            ],
        );
        assert_eq!(t, "A     N  Z\nxx    1  -\ny   100  end");
        assert_eq!(
            time_cell(Some("2025-11-09T14:30:45.000Z")),
            "2025-11-09 14:30:45"
        );
        assert_eq!(time_cell(None), "-");
        assert_eq!(cell(Some("a\nb")), "a\\nb");
    }
}
