//! `snapfs send`, `snapfs receive` and `snapfs sync`: a snapshot stream to standard output,
//! from standard input, and straight to another daemon, through the store's daemon.

use std::io::IsTerminal;

use super::*;
use crate::contract::{
    ReceiveQuery, ReceiveState, Received, SendQuery, Sync, Synced, TargetServer,
};

#[derive(Args)]
pub(super) struct SendArgs {
    store: PathBuf,
    /// The container (id or name).
    #[arg(long, default_value = DEFAULT_CONTAINER)]
    container: String,
    /// The snapshot to send (name or alias).
    #[arg(long, required_unless_present = "resume")]
    snapshot: Option<String>,
    /// Send only what changed since this older snapshot (name or alias).
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "resume")]
    from: Option<String>,
    /// Send the rest of a cut stream: the token the receiver printed (or `snapfs receive
    /// --status` gives).
    #[arg(long, value_name = "TOKEN", conflicts_with = "snapshot")]
    resume: Option<String>,
}

#[derive(Args)]
pub(super) struct ReceiveArgs {
    store: PathBuf,
    /// The container to receive into (a name; created by a full stream).
    #[arg(long)]
    container: String,
    /// If the container has snapshots newer than the stream's base, or was written since,
    /// delete those snapshots and drop those writes.
    #[arg(long)]
    rollback: bool,
    /// Print the receive into the container that was cut (its resume token) instead.
    #[arg(long, conflicts_with_all = ["abort", "rollback"])]
    status: bool,
    /// Drop the receive into the container that was cut instead (what it wrote is freed).
    #[arg(long, conflicts_with = "rollback")]
    abort: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct SyncArgs {
    store: PathBuf,
    /// The container (id or name).
    #[arg(long, default_value = DEFAULT_CONTAINER)]
    container: String,
    /// The other daemon's API: https://HOST:PORT of its --listen address (it serves TLS
    /// with --tls-cert), or http:// to a loopback address.
    #[arg(long, value_name = "URL")]
    to: String,
    /// For https: the certificate (PEM) that signed the other daemon's, or its own
    /// self-signed one [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// File holding the other daemon's bearer token [default: $SNAPFS_TARGET_TOKEN].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The container's name on the other daemon [default: its name here].
    #[arg(long)]
    name: Option<String>,
    /// If the copy there has snapshots this one lacks after the last common one, or was
    /// written since, delete them and drop those writes.
    #[arg(long)]
    rollback: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// A progress bar on standard error (drawn only on a terminal) over a stream's bytes; its
/// length comes from the stream's header once the first bytes are in.
struct StreamBar {
    bar: indicatif::ProgressBar,
    head: Vec<u8>,
    sized: bool,
}

impl StreamBar {
    fn new(verb: &str) -> StreamBar {
        let bar = indicatif::ProgressBar::new(0);
        let template = format!(
            "{verb} {{bar:30}} {{bytes}}/{{total_bytes}} {{percent}}% [{{elapsed}}, {{bytes_per_sec}}] {{msg}}"
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        StreamBar {
            bar,
            head: Vec::new(),
            sized: false,
        }
    }

    fn seen(&mut self, piece: &[u8]) {
        if !self.sized && self.head.len() < 1 << 16 {
            self.head
                .extend_from_slice(&piece[..piece.len().min(1 << 16)]);
            if let Some(h) = crate::stream::peek_header(&self.head) {
                self.bar.set_length(h.total_bytes);
                self.bar.set_message(h.snapshot.name);
                self.sized = true;
            }
        }
        self.bar.inc(piece.len() as u64);
        if self.bar.position() > self.bar.length().unwrap_or(0) {
            self.bar.set_length(self.bar.position());
        }
    }
}

pub(super) fn send(a: SendArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if out.is_terminal() {
        bail!("standard output is a terminal: redirect the stream to a file or a pipe (snapfs send ... > FILE)");
    }
    let d = Daemon::connect(Some(a.store))?;
    let path = format!(
        "/api/v1{}/send{}",
        container_path(&a.container),
        query(&SendQuery {
            snapshot: a.snapshot,
            from: a.from,
            resume: a.resume,
        })?
    );
    let mut bar = StreamBar::new("sending");
    let reply = crate::client::download(&d.socket(), &path, &mut out, &mut |p| bar.seen(p));
    bar.bar.finish_and_clear();
    let reply = reply?;
    if !reply.ok() {
        bail!("{}", reply.message());
    }
    Ok(())
}

fn receive_state_text(r: &ReceiveState) -> String {
    let mut s = format!(
        "receive of snapshot {} cut after {} records ({} bytes), started {}\n",
        r.snapshot, r.records, r.bytes, r.started
    );
    if let Some(t) = &r.token {
        s.push_str(&format!(
            "resume with: snapfs send STORE --container C --resume {t}\n"
        ));
    }
    s
}

pub(super) fn receive(a: ReceiveArgs) -> Result<()> {
    if a.status || a.abort {
        let mut d = Daemon::connect(Some(a.store))?;
        let path = format!("{}/receive", container_path(&a.container));
        let method = if a.abort { "DELETE" } else { "GET" };
        let data: ReceiveState = d.call(method, &path, NO_BODY)?;
        return emit(a.json, &data, |r| {
            if a.abort {
                format!("aborted the receive of snapshot {}\n", r.snapshot)
            } else {
                receive_state_text(r)
            }
        });
    }
    let input = std::io::stdin();
    if input.is_terminal() {
        bail!("standard input is a terminal: give the stream on it (snapfs receive ... < FILE)");
    }
    let d = Daemon::connect(Some(a.store))?;
    let path = format!(
        "/api/v1{}/receive{}",
        container_path(&a.container),
        query(&ReceiveQuery {
            rollback: a.rollback
        })?
    );
    let bar = std::sync::Arc::new(parking_lot::Mutex::new(StreamBar::new("receiving")));
    let feed = bar.clone();
    let reply = crate::client::upload(
        &d.socket(),
        &path,
        Box::new(input),
        Box::new(move |p| feed.lock().seen(p)),
    );
    bar.lock().bar.finish_and_clear();
    let reply = reply?;
    let data: Received = reply.data()?;
    emit(a.json, &data, |r| {
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

/// The other daemon's token: the file's first line, or `$SNAPFS_TARGET_TOKEN`.
fn target_token(file: Option<&Path>) -> Result<String> {
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the token file {}", f.display()))?,
        None => std::env::var("SNAPFS_TARGET_TOKEN").map_err(|_| {
            anyhow!("no token for the target: use --token-file FILE or set SNAPFS_TARGET_TOKEN")
        })?,
    };
    let token = token.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        bail!("the target's token is empty");
    }
    Ok(token)
}

pub(super) fn sync(a: SyncArgs) -> Result<()> {
    let token = target_token(a.token_file.as_deref())?;
    let mut d = Daemon::connect(Some(a.store))?;
    let body = Sync {
        target_server: TargetServer {
            url: a.to,
            token,
            ca_file: a
                .ca_file
                .map(|f| std::path::absolute(&f).map(|p| p.display().to_string()))
                .transpose()?,
        },
        name: a.name,
        rollback: a.rollback,
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::io::stderr()
        .is_terminal()
        .then(|| watch_sends(d.socket(), a.container.clone(), done.clone()));
    let data: Result<Synced> = d.call(
        "POST",
        &format!("{}/sync", container_path(&a.container)),
        Some(&body),
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    let data = data?;
    emit(a.json, &data, |r| {
        if r.sent.is_empty() {
            return format!("{} is current on the target\n", r.container);
        }
        let mut s = String::new();
        for name in &r.sent {
            s.push_str(&format!("sent snapshot {name}\n"));
        }
        s.push_str(&format!(
            "synced {} snapshot(s) to {} ({} records, {} bytes)\n",
            r.sent.len(),
            r.container,
            r.records,
            r.bytes
        ));
        s
    })
}

/// Draws the daemon's sends of `container` (`GET /transfers`) until `done`.
fn watch_sends(
    socket: PathBuf,
    container: String,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let bar = StreamBar::new("syncing").bar;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let list = crate::client::call(&socket, "GET", "/api/v1/transfers", NO_BODY)
                .and_then(|r| r.data::<crate::contract::TransferList>());
            if let Ok(list) = list {
                if let Some(t) = list
                    .transfers
                    .iter()
                    .find(|t| t.direction == "send" && t.container == container)
                {
                    bar.set_length(t.total_bytes);
                    bar.set_position(t.done_bytes);
                    bar.set_message(t.snapshot.clone().unwrap_or_default());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        bar.finish_and_clear();
    })
}
