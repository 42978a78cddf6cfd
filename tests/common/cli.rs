//! The CLI's side of the fixtures: `snapfs ARGS --store STORE` runners on a [`Store`] and
//! the tables the CLI prints.

use std::ffi::OsStr;
use std::process::Command;

use serde_json::Value;

use super::{run, snapfs, snapfs_bin, Output, Store};

impl Store {
    /// `snapfs ARGS --store STORE`.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut v: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        v.push(OsStr::new("--store"));
        v.push(self.path().as_os_str());
        snapfs(v)
    }

    /// `snapfs ARGS --store STORE --json`, parsed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut v = args.to_vec();
        v.push("--json");
        self.cli(&v).json()
    }

    /// `SNAPFS_STORE=STORE snapfs ARGS` (no --store).
    #[track_caller]
    pub fn cli_env(&self, args: &[&str]) -> Output {
        run(Command::new(snapfs_bin())
            .args(args)
            .env("SNAPFS_STORE", self.path())
            .current_dir("/"))
    }
}

impl super::Mount {
    /// The mount's FUSE transport as the daemon reports it (`dev_fuse` or `io_uring`) and
    /// how many requests its io_uring queues served.
    #[track_caller]
    pub fn fuse_transport(&self) -> (String, u64) {
        let want = std::fs::canonicalize(self.path()).expect("canonical mountpoint");
        let raw = self.store().json(&["containers", "list"]);
        let list: snapfs::contract::ContainerList = serde_json::from_value(raw.clone())
            .unwrap_or_else(|e| panic!("not a container list ({e}): {raw}"));
        let c = list
            .containers
            .iter()
            .find(|c| c.mountpoint.as_deref() == want.to_str())
            .unwrap_or_else(|| panic!("no container mounted at {}: {raw}", want.display()));
        let fuse = c
            .fuse
            .as_ref()
            .unwrap_or_else(|| panic!("no fuse transport in {c:?}"));
        (fuse.transport.clone(), fuse.ring_requests)
    }
}

/// The table printed on stdout: header cells and rows, split on runs of 2+ spaces.
pub fn table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let split = |l: &str| -> Vec<String> {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = text.lines();
    let header = split(lines.next().unwrap_or(""));
    (header, lines.map(split).collect())
}
