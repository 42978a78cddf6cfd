//! `snapfs send` and `snapfs receive`: a snapshot stream to standard output, and from
//! standard input, through the store's daemon.

use std::io::IsTerminal;

use super::*;
use crate::contract::{ReceiveQuery, Received, SendQuery};

pub(super) fn send(
    store: PathBuf,
    container: &str,
    snapshot: String,
    from: Option<String>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if out.is_terminal() {
        bail!("standard output is a terminal: redirect the stream to a file or a pipe (snapfs send ... > FILE)");
    }
    let d = Daemon::connect(Some(store))?;
    let path = format!(
        "/api/v1{}/send{}",
        container_path(container),
        query(&SendQuery { snapshot, from })?
    );
    let reply = crate::client::download(&d.socket(), &path, &mut out)?;
    if !reply.ok() {
        bail!("{}", reply.message());
    }
    Ok(())
}

pub(super) fn receive(store: PathBuf, container: &str, rollback: bool, json: bool) -> Result<()> {
    let input = std::io::stdin();
    if input.is_terminal() {
        bail!("standard input is a terminal: give the stream on it (snapfs receive ... < FILE)");
    }
    let d = Daemon::connect(Some(store))?;
    let path = format!(
        "/api/v1{}/receive{}",
        container_path(container),
        query(&ReceiveQuery { rollback })?
    );
    let reply = crate::client::upload(&d.socket(), &path, Box::new(input))?;
    let data: Received = reply.data()?;
    emit(json, &data, |r| {
        let mut s = format!(
            "received snapshot {} into container {} ({} records, {} bytes)\n",
            r.snapshot.name, r.container.name, r.records, r.bytes
        );
        for gone in &r.rolled_back {
            s.push_str(&format!("rolled back: deleted snapshot {gone}\n"));
        }
        s
    })
}
