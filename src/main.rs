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
        #[arg(long, hide = true)]
        notify_ready: bool,
    },
    /// Unmount a snapfs mount and wait for its daemon to finish.
    Umount { mountpoint: PathBuf },
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
            notify_ready,
        } => snapfs::mount::mount(snapfs::mount::MountArgs {
            store,
            mountpoint,
            container,
            foreground,
            volume: snapfs::fs::VolumeOptions {
                snapdir_visible: matches!(snapdir, Snapdir::Visible),
                admin_uid,
            },
            notify_ready,
        }),
        Cmd::Umount { mountpoint } => snapfs::mount::umount(&mountpoint),
    }
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
