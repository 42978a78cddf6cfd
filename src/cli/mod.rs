//! The `snapfs` command line: argument parsing (clap), the `snapshots` and `containers`
//! commands (thin clients of the store daemon's REST API over its Unix socket), their table
//! and JSON output, and the `mount.fuse.snapfs` helper that `mount -t fuse.snapfs` and
//! `/etc/fstab` run.
//!
//! Error contract: every failure is one line `snapfs: error: MESSAGE` on stderr and a
//! non-zero exit (2 for usage errors, 32 for a failed mount through the helper, 1 otherwise).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod commands;
mod daemon;
mod fsck;
mod helper;
mod size;
mod table;
mod target;
mod transfer;
mod unit;

use commands::{containers, query, snapshots};
use daemon::*;
use helper::*;
use size::{parse_quota, parse_size, Quota};
use table::*;

use anyhow::{anyhow, bail, Context, Result};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::NO_BODY;
use crate::contract::ContainerList;
use crate::mount::{ensure_daemon, url_segment, DEFAULT_CONTAINER};

/// The file name under which `mount(8)` runs the helper (`/sbin/mount.fuse.snapfs`).
pub const MOUNT_HELPER_NAME: &str = "mount.fuse.snapfs";
/// The environment variable `--store` defaults from.
pub const STORE_ENV: &str = "SNAPFS_STORE";

/// Exit code of a usage error (clap's convention).
const EXIT_USAGE: u8 = 2;
/// Exit code `mount(8)` expects from a helper whose mount failed.
const EXIT_MOUNT_FAILURE: u8 = 32;

/// Shells `snapfs completions` writes for.
#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Clone, Copy, ValueEnum)]
enum Snapdir {
    /// `.snapshots` is reachable by path but not listed in the root directory.
    Hidden,
    /// `.snapshots` is listed in the root directory.
    Visible,
}

impl Snapdir {
    fn as_str(self) -> &'static str {
        match self {
            Snapdir::Hidden => "hidden",
            Snapdir::Visible => "visible",
        }
    }
}

#[derive(Parser)]
#[command(
    name = "snapfs",
    version,
    about = "Copy-on-write filesystem with O(1) snapshots"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new, empty store (with a container named `default`).
    ///
    /// With --object-store, the store's data lives in object storage (s3://BUCKET/PREFIX,
    /// configured from the AWS_* environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP) and STORE is its local directory
    /// (configuration in STORE/store.json, cache, socket, log). With --attach, STORE becomes
    /// another host's directory of an existing store there; the first daemon that opens it as
    /// a writer takes the store over from the host that wrote it until then.
    Init {
        store: PathBuf,
        /// Block size in bytes: a power of two from 4096 to 1048576.
        #[arg(long, default_value_t = crate::store::DEFAULT_BLOCK_SIZE as u64)]
        block_size: u64,
        /// Keep the data in object storage: s3://BUCKET/PREFIX (or file:///DIR).
        #[arg(long, value_name = "URL")]
        object_store: Option<String>,
        /// Attach to the existing store at --object-store instead of creating one.
        #[arg(long, requires = "object_store")]
        attach: bool,
        /// How often writes not yet synced are pushed to object storage, in milliseconds.
        #[arg(long, value_name = "MS", requires = "object_store",
              default_value_t = crate::remote::DEFAULT_PUSH_INTERVAL_MS)]
        push_interval_ms: u64,
        /// Bytes written but not yet in object storage beyond which writes wait.
        #[arg(long, value_name = "SIZE", requires = "object_store", value_parser = parse_size,
              default_value = "256M")]
        backlog: u64,
        /// The size of the local cache of object-store data.
        #[arg(long, value_name = "SIZE", requires = "object_store", value_parser = parse_size,
              default_value = "4G")]
        cache_size: u64,
        /// How long an fsync waits for object storage before it fails with EIO, in
        /// milliseconds (0: for ever).
        #[arg(long, value_name = "MS", requires = "object_store",
              default_value_t = crate::remote::DEFAULT_FSYNC_TIMEOUT_MS)]
        fsync_timeout_ms: u64,
    },
    /// Mount a container of a store (created on first mount).
    Mount {
        store: PathBuf,
        mountpoint: PathBuf,
        #[arg(long, default_value = DEFAULT_CONTAINER)]
        container: String,
        /// Whether the root directory lists `.snapshots`.
        #[arg(long, value_enum, default_value = "hidden")]
        snapdir: Snapdir,
        /// A uid besides root allowed to create, rename and delete snapshots.
        #[arg(long)]
        admin_uid: Option<u32>,
        /// Stay in the foreground instead of running as a background daemon.
        #[arg(long)]
        foreground: bool,
        /// Mount read-only. For a store on object storage whose daemon is not running here,
        /// the daemon opens the store as a reader: it browses the containers and snapshots
        /// while another host writes, and never fences that host.
        #[arg(long)]
        read_only: bool,
    },
    /// Unmount a snapfs mount (flushing everything).
    Umount { mountpoint: PathBuf },
    /// Run the store's daemon: REST API on STORE/snapfs.sock (and TCP with --listen),
    /// mounts, snapshot expiry and space reclaim.
    Serve {
        store: PathBuf,
        /// Also serve the API on this TCP address (every request needs the bearer token).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// File holding the bearer token for TCP requests.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve TCP over TLS with this certificate (chain), PEM.
        #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"])]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert, PEM.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Open a store on object storage as a reader: containers mount read-only, nothing
        /// is written, and the host that writes the store is not fenced.
        #[arg(long)]
        read_only: bool,
        /// Also serve containerd's snapshots API (a proxy snapshotter) on this Unix socket:
        /// containerd's `[proxy_plugins.snapfs]` with `type = "snapshot"` and this address.
        #[arg(long, value_name = "PATH")]
        containerd_socket: Option<PathBuf>,
        /// Where the snapshotter mounts active snapshots and views (one directory each);
        /// default /run/snapfs/containerd-HASH (HASH from the store's path).
        #[arg(long, value_name = "DIR", requires = "containerd_socket")]
        containerd_mounts: Option<PathBuf>,
        /// Exit once no container is mounted any more.
        #[arg(long, hide = true)]
        exit_when_idle: bool,
        #[arg(long, hide = true)]
        notify_ready: bool,
    },
    /// Replace the store's daemon with the snapfs binary on disk (an upgrade), keeping every
    /// mount: the containers on them see a pause, not an error. Needs a daemon whose
    /// mounts' descriptors are kept outside it (its supervisor, or the systemd unit's fd
    /// store); mounts over io_uring cannot be kept.
    Restart { store: PathBuf },
    /// Check every invariant of a store that is not in use, and that it is owner-only; exit 1
    /// when something is wrong.
    ///
    /// With --repair, fixes what is safe to fix, then checks again: the store's modes
    /// (owner-only: directories 0700, no group or other bits), the change index (added or
    /// dropped entries), epochs nothing references (retired), and in each container's head:
    /// link counts, a directory's parent, a file's allocated-bytes count, bytes past a file's
    /// size, entries to missing inodes, an entry's type, a second name of a directory.
    /// Snapshots and blocks with a bad checksum are reported, never changed.
    Fsck {
        store: PathBuf,
        /// Repair what can be repaired safely (see above), then check again.
        #[arg(long)]
        repair: bool,
    },
    /// Create, list, restore, delete and alias a container's snapshots.
    Snapshots {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: SnapshotsCmd,
    },
    /// The history of one path: the current tree and every snapshot, newest first, where
    /// it differs from the next older one (added, deleted or modified).
    ///
    /// PATH is either a path inside a snapfs mount (absolute or relative to the current
    /// directory, e.g. /mnt/web/etc/passwd, or under a mount's .snapshots/NAME/): the mount
    /// gives the store and the container; or a path from the container's root
    /// (e.g. /etc/nginx/nginx.conf) in --container of --store.
    History {
        #[command(flatten)]
        common: Common,
        /// The container (id or name) [default: the mount's container, else `default`].
        #[arg(long, value_name = "CONTAINER")]
        container: Option<String>,
        /// A path inside a snapfs mount, or from the container's root.
        path: OsString,
    },
    /// The daemon's state: mounts, reclaim, and for a store on object storage whether it
    /// is this store's writer (or was taken over by another host), its backlog and cache.
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// Where the space goes: the store's disk, data and garbage, and per container its live
    /// data, snapshots, quotas and room left; with --container, each snapshot's size and
    /// what deleting it would give back.
    Df {
        #[command(flatten)]
        common: Common,
        /// Only this container (id or name), with its snapshots.
        #[arg(long, value_name = "CONTAINER")]
        container: Option<String>,
    },
    /// Write a snapshot of a container to standard output as a stream (to a file, or
    /// through ssh to `snapfs receive` on another host): everything in it, or with --from
    /// only what changed since an older snapshot the receiver holds.
    Send(transfer::SendArgs),
    /// Read a snapshot stream from standard input into a container: a full stream creates
    /// it; an incremental one goes on top of its latest snapshot, which must be the
    /// stream's base. The snapshot appears whole or not at all.
    Receive(transfer::ReceiveArgs),
    /// Send another snapfs daemon every snapshot of a container it lacks, incrementally,
    /// oldest first (a second run with nothing new sends nothing).
    Sync(transfer::SyncArgs),
    /// Create, list, show, copy, delete, start (mount) and stop (unmount) containers.
    Containers {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: ContainersCmd,
    },
    /// Write a systemd unit that runs the store's daemon (Type=notify; stop unmounts every
    /// container), and print how to enable it and the /etc/fstab lines that mount
    /// containers after it.
    InstallUnit {
        /// The store (absolute path, already initialized).
        store: PathBuf,
        /// Where the unit goes.
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        dir: PathBuf,
        /// The snapfs binary the unit runs [default: this one].
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
    },
    /// Print the OpenAPI 3 description of the REST API (as `GET /api/v1/openapi.json`
    /// serves it; `docs/openapi.json` in the sources).
    Openapi,
    /// Print a shell completion script (e.g. `snapfs completions bash >
    /// /etc/bash_completion.d/snapfs`).
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Print the manual page (roff: `snapfs man | man -l -`), or with --dir write one page
    /// per command there (snapfs.1, snapfs-mount.1, snapfs-snapshots-diff.1, ...).
    Man {
        /// Write every page into this directory (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// What `mount -t fuse.snapfs STORE:CONTAINER MOUNTPOINT [-o OPTIONS]` runs (also
    /// installed as /sbin/mount.fuse.snapfs).
    #[command(hide = true, disable_help_flag = true)]
    MountHelper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// Options every API command takes (anywhere after `snapshots` / `containers`).
#[derive(Args)]
struct Common {
    /// The store [default: $SNAPFS_STORE].
    #[arg(long, value_name = "STORE", global = true)]
    store: Option<PathBuf>,
    /// Print the API's `data` as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// A container, by id or unique name.
#[derive(Args)]
struct SnapTarget {
    /// The container (id or name), as `snapfs mount` takes it.
    #[arg(long, value_name = "CONTAINER", default_value = DEFAULT_CONTAINER)]
    container: String,
}

#[derive(Subcommand)]
enum SnapshotsCmd {
    /// Take a snapshot (O(1)); prints the new snapshot.
    Create {
        #[command(flatten)]
        target: SnapTarget,
        /// A friendly name (1-100 characters, no `/`, not `snap-...`).
        #[arg(long)]
        alias: Option<String>,
        /// Delete the snapshot automatically after this many days (default: never).
        #[arg(long, value_name = "DAYS")]
        expiry: Option<u64>,
    },
    /// List the container's snapshots, newest first (times in UTC).
    List {
        #[command(flatten)]
        target: SnapTarget,
    },
    /// Roll the container back to a snapshot (also while it is mounted); with --path, only
    /// those paths (files or whole directories), leaving everything else as it is.
    Restore {
        #[command(flatten)]
        target: SnapTarget,
        /// The snapshot's name or unique alias.
        #[arg(long)]
        name: String,
        /// Restore only this path (from the container's root; repeat for more). A path the
        /// snapshot does not have is deleted.
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<OsString>,
    },
    /// Delete a snapshot.
    Delete {
        #[command(flatten)]
        target: SnapTarget,
        /// The snapshot's name or unique alias.
        #[arg(long)]
        name: String,
    },
    /// What changed since a snapshot: to another snapshot, or to the current tree.
    /// Prints `A`dded, `D`eleted, `M`odified and `R`enamed paths (`R OLD -> NEW`); a
    /// renamed directory is one line. Bytes that are not printable UTF-8 print as `\xNN`.
    Diff {
        #[command(flatten)]
        target: SnapTarget,
        /// The older snapshot (name or unique alias).
        #[arg(long, value_name = "SNAPSHOT")]
        from: String,
        /// The newer snapshot (default: the container's current tree).
        #[arg(long, value_name = "SNAPSHOT")]
        to: Option<String>,
    },
    /// Set (or with --clear remove) a snapshot's alias.
    Alias {
        #[command(flatten)]
        target: SnapTarget,
        /// The snapshot's name or unique alias.
        #[arg(long)]
        name: String,
        /// The new alias.
        #[arg(long, required_unless_present = "clear", conflicts_with = "clear")]
        alias: Option<String>,
        /// Remove the alias.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Subcommand)]
enum ContainersCmd {
    /// Create an empty container.
    Create {
        /// The new container's name (unique among live containers).
        name: String,
        /// The project id to file it under.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// Most file data the live tree may hold (e.g. 10G, 512M, 1048576).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        quota: Option<u64>,
        /// Most bytes the live tree and its snapshots may hold together.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        quota_including_snapshots: Option<u64>,
    },
    /// Change a container's quotas (`none` removes one).
    Set {
        /// The container (id or name).
        container: String,
        /// Most file data the live tree may hold (e.g. 10G), or `none`.
        #[arg(long, value_name = "SIZE|none", value_parser = parse_quota)]
        quota: Option<Quota>,
        /// Most bytes the live tree and its snapshots may hold together, or `none`.
        #[arg(long, value_name = "SIZE|none", value_parser = parse_quota)]
        quota_including_snapshots: Option<Quota>,
    },
    /// List every container (deleted ones too).
    List,
    /// Show one container.
    Show {
        /// The container (id or name).
        container: String,
    },
    /// Copy a container's current tree, or one of its snapshots, into a new container (O(1)).
    Copy {
        /// The source container (id or name).
        container: String,
        /// The new container's name.
        #[arg(long)]
        name: String,
        /// The new container's project id.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// Copy this snapshot (name or unique alias) instead of the current tree.
        #[arg(long, value_name = "SNAPSHOT")]
        snapshot: Option<String>,
    },
    /// Delete a container; its snapshots stay. A running container is refused unless
    /// --force.
    Delete {
        /// The container (id or name).
        container: String,
        /// Stop (unmount) a running container first, as `stop` does: processes using the
        /// mount lose it.
        #[arg(long)]
        force: bool,
    },
    /// Mount a container.
    Start {
        /// The container (id or name).
        container: String,
        /// Where to mount it (an existing directory).
        #[arg(long, value_name = "DIR")]
        mountpoint: PathBuf,
        /// Whether the root directory lists `.snapshots`.
        #[arg(long, value_enum, default_value = "hidden")]
        snapdir: Snapdir,
        /// A uid besides root allowed to create, rename and delete snapshots.
        #[arg(long)]
        admin_uid: Option<u32>,
    },
    /// Unmount a container (everything flushed on return).
    Stop {
        /// The container (id or name).
        container: String,
    },
}

/// The whole program: `snapfs ARGS...`, or the mount helper when run as `mount.fuse.snapfs`.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as_helper = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == MOUNT_HELPER_NAME);
    if invoked_as_helper {
        return mount_helper_main(&args[1..]);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &args),
    };
    if let Cmd::MountHelper { args } = &cli.cmd {
        return mount_helper_main(args);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, 1),
    }
}

/// Prints `snapfs: error: MESSAGE` (one line) and returns `code`.
fn fail(e: &anyhow::Error, code: u8) -> ExitCode {
    // Not `eprintln!`: it panics when stderr is gone (a daemon whose starter closed the pipe).
    let _ = writeln!(
        std::io::stderr(),
        "snapfs: error: {}",
        one_line(&format!("{e:#}"))
    );
    ExitCode::from(code)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A clap error as one line (help and version print as usual).
fn usage_error(e: clap::Error, args: &[OsString]) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let (path, subs) = subcommand_path(args);
            let msg = if subs.is_empty() {
                format!("missing arguments (see '{path} --help')")
            } else {
                format!(
                    "'{path}' needs a subcommand: {} (see '{path} --help')",
                    subs.join(", ")
                )
            };
            eprintln!("snapfs: error: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() || line.starts_with("tip:") {
            continue;
        }
        parts.push(
            line.strip_prefix("error:")
                .unwrap_or(line)
                .trim()
                .to_string(),
        );
    }
    let (path, _) = subcommand_path(args);
    eprintln!(
        "snapfs: error: {} (see '{path} --help')",
        one_line(&parts.join(" "))
    );
    ExitCode::from(EXIT_USAGE)
}

/// The subcommands named on the command line (`snapfs snapshots`) and the names of the
/// deepest one's own subcommands.
fn subcommand_path(args: &[OsString]) -> (String, Vec<String>) {
    let mut cmd = Cli::command();
    let mut path = vec!["snapfs".to_string()];
    for a in args.iter().skip(1) {
        let Some(a) = a.to_str() else { break };
        if a.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(a) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                let sub = sub.clone();
                cmd = sub;
            }
            None => break,
        }
    }
    let subs = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    (path.join(" "), subs)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Init {
            store,
            block_size,
            object_store,
            attach,
            push_interval_ms,
            backlog,
            cache_size,
            fsync_timeout_ms,
        } => {
            use crate::storedir::InitTarget;
            let target = match object_store {
                None => InitTarget::Local,
                Some(url) => {
                    let mut cfg = crate::remote::RemoteConfig::new(&url)?;
                    cfg.push_interval_ms = push_interval_ms;
                    cfg.backlog_bytes = backlog;
                    cfg.cache_bytes = cache_size;
                    cfg.fsync_timeout_ms = fsync_timeout_ms;
                    cfg.validate()?;
                    if attach {
                        InitTarget::Attach(cfg)
                    } else {
                        InitTarget::Create(cfg)
                    }
                }
            };
            crate::storedir::init(&store, block_size, target)
        }
        Cmd::Send(a) => transfer::send(a),
        Cmd::Receive(a) => transfer::receive(a),
        Cmd::Sync(a) => transfer::sync(a),
        Cmd::Mount {
            store,
            mountpoint,
            container,
            snapdir,
            admin_uid,
            foreground,
            read_only,
        } => crate::mount::mount(crate::mount::MountArgs {
            store,
            mountpoint,
            container,
            foreground,
            volume: crate::fs::VolumeOptions {
                snapdir_visible: matches!(snapdir, Snapdir::Visible),
                admin_uid,
                read_only,
            },
        }),
        Cmd::Umount { mountpoint } => crate::mount::umount(&mountpoint),
        Cmd::Restart { store } => crate::mount::restart(&store),
        Cmd::Serve {
            store,
            listen,
            token_file,
            tls_cert,
            tls_key,
            read_only,
            exit_when_idle,
            notify_ready,
            containerd_socket,
            containerd_mounts,
        } => {
            let token = match token_file {
                Some(f) => Some(read_token(&f)?),
                None => None,
            };
            let store = std::path::absolute(&store)?;
            let containerd = match containerd_socket {
                Some(socket) => Some(crate::daemon::ContainerdOptions {
                    socket: std::path::absolute(&socket)?,
                    mount_root: match containerd_mounts {
                        Some(d) => std::path::absolute(&d)?,
                        None => crate::daemon::ContainerdOptions::default_mount_root(&store),
                    },
                }),
                None => None,
            };
            if containerd.is_some() && exit_when_idle {
                anyhow::bail!("--containerd-socket: the daemon must not exit when idle");
            }
            if crate::supervisor::wanted() {
                // The daemon runs as our child, with the same arguments (`ready` is ours
                // to print).
                let args: Vec<std::ffi::OsString> = std::env::args_os()
                    .skip_while(|a| a != "serve")
                    .skip(1)
                    .filter(|a| a != "--notify-ready")
                    .collect();
                let code = crate::supervisor::run(&store, args, notify_ready)?;
                if code != 0 {
                    std::process::exit(code);
                }
                return Ok(());
            }
            let served = crate::daemon::serve(
                &store,
                crate::daemon::DaemonOptions {
                    listen,
                    token,
                    tls: tls_cert.zip(tls_key),
                    exit_when_idle,
                    initial: None,
                    notify_ready,
                    read_only,
                    containerd,
                },
            );
            if let Err(e) = &served {
                // Also in the log (once logging is set up): stderr may be gone by now.
                log::error!("the daemon stops: {e:#}");
            }
            served
        }
        Cmd::Fsck { store, repair } => fsck::fsck(&store, repair),
        Cmd::Snapshots { common, cmd } => snapshots(common, cmd),
        Cmd::Containers { common, cmd } => containers(common, cmd),
        Cmd::History {
            common,
            container,
            path,
        } => commands::history(common, container.as_deref(), &path),
        Cmd::Df { common, container } => commands::df(common, container.as_deref()),
        Cmd::Status { common } => commands::status(common),
        // Handled in `main` (it has its own exit codes).
        Cmd::MountHelper { .. } => Ok(()),
        Cmd::Openapi => {
            let text = crate::api::doc::openapi()
                .to_pretty_json()
                .map_err(|e| anyhow!("encoding the OpenAPI description: {e}"))?;
            println!("{text}");
            Ok(())
        }
        Cmd::Completions { shell } => {
            let mut cmd = Cli::command();
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            // Into memory first: the generator panics on a failed write.
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "snapfs", &mut out);
            print_bytes(&out)
        }
        Cmd::InstallUnit { store, dir, bin } => {
            if !store.is_absolute() {
                bail!("the store must be an absolute path: {}", store.display());
            }
            if !crate::storedir::is_store(&store) {
                bail!(
                    "{} is not a snapfs store (run snapfs init first)",
                    store.display()
                );
            }
            let bin = match bin {
                Some(b) => b,
                None => std::env::current_exe()
                    .context("cannot tell where this snapfs binary is; pass --bin")?,
            };
            let done = unit::install(&bin, &store, &dir)?;
            println!("wrote {}", done.path.display());
            println!(
                "enable it: systemctl daemon-reload && systemctl enable --now {}",
                done.name
            );
            println!("/etc/fstab lines that mount a container once it runs:");
            println!(
                "{}",
                unit::fstab_lines(&store, &done.name, &[DEFAULT_CONTAINER.to_string()])
            );
            Ok(())
        }
        Cmd::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write manual pages into {}", dir.display()))
        }
        Cmd::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("cannot render the manual page")?;
            print_bytes(&out)
        }
    }
}

/// `snapfs fsck`: prints the report; any problem (left after `--repair`) makes the command
/// fail (exit 1). Besides the kv's invariants, the store must be owner-only (`perms`).
fn read_token(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let token = token.trim().to_string();
    if token.len() < 16 {
        bail!("token in {} is shorter than 16 characters", path.display());
    }
    Ok(token)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> Result<()> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!(e).context("cannot write to standard output"))
        }
        _ => Ok(()),
    }
}
