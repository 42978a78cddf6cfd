//! `snapfs` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Snapdir {
    /// `.snapshots` is reachable by path but not listed in the root directory.
    Hidden,
    /// `.snapshots` is listed in the root directory.
    Visible,
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
    Init {
        store: PathBuf,
        /// Block size in bytes: a power of two from 4096 to 1048576.
        #[arg(long, default_value_t = snapfs::store::DEFAULT_BLOCK_SIZE as u64)]
        block_size: u64,
    },
    /// Mount a container of a store (created on first mount).
    Mount {
        store: PathBuf,
        mountpoint: PathBuf,
        #[arg(long, default_value = "default")]
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
        /// Exit once no container is mounted any more.
        #[arg(long, hide = true)]
        exit_when_idle: bool,
        #[arg(long, hide = true)]
        notify_ready: bool,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Init { store, block_size } => snapfs::mount::init(&store, block_size),
        Cmd::Mount {
            store,
            mountpoint,
            container,
            snapdir,
            admin_uid,
            foreground,
        } => snapfs::mount::mount(snapfs::mount::MountArgs {
            store,
            mountpoint,
            container,
            foreground,
            volume: snapfs::fs::VolumeOptions {
                snapdir_visible: matches!(snapdir, Snapdir::Visible),
                admin_uid,
            },
        }),
        Cmd::Umount { mountpoint } => snapfs::mount::umount(&mountpoint),
        Cmd::Serve {
            store,
            listen,
            token_file,
            exit_when_idle,
            notify_ready,
        } => {
            let token = match token_file {
                Some(f) => Some(read_token(&f)?),
                None => None,
            };
            let store = std::path::absolute(&store)?;
            snapfs::daemon::serve(
                &store,
                snapfs::daemon::DaemonOptions {
                    listen,
                    token,
                    exit_when_idle,
                    initial: None,
                    notify_ready,
                },
            )
        }
    }
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let token = token.trim().to_string();
    if token.len() < 16 {
        anyhow::bail!("token in {} is shorter than 16 characters", path.display());
    }
    Ok(token)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("snapfs: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
