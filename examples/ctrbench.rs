//! containerd snapshotter micro-benchmark, used by `scripts/bench_containerd.sh` for every
//! snapshotter alike (snapfs through its proxy plugin, containerd's own overlayfs and native):
//! it talks to containerd's snapshots service (the same API `ctr snapshots` uses, without a
//! process per call), so what is timed is the snapshotter.
//!
//! Phases, each printed as one JSON line:
//! - `prepare`: N active snapshots on PARENT, each Prepare followed by mounting what it
//!   answered (bind or overlay) under MNT/i: per-snapshot milliseconds, p50, p99;
//! - `usage`: with `--usage-mib M`, M MiB written (and fsync'd) into the first snapshot,
//!   then 20 Usage calls on it: p50 and max milliseconds, and the size it reports;
//! - then everything is unmounted and removed (not timed).
//!
//! With `--du PATH`, the prepare line also carries `du_added`: how many bytes `du -sbx PATH`
//! grew by over the N Prepares (the snapshotter's own directory).
//!
//! Usage: `ctrbench SOCKET NAMESPACE SNAPSHOTTER PARENT N MNT [--usage-mib M] [--du PATH]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use snapfs::containerd::proto::{self, snapshots_client::SnapshotsClient};
use tonic::transport::Channel;

struct Args {
    socket: PathBuf,
    namespace: String,
    snapshotter: String,
    parent: String,
    n: usize,
    mnt: PathBuf,
    usage_mib: Option<u64>,
    du: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: ctrbench SOCKET NAMESPACE SNAPSHOTTER PARENT N MNT [--usage-mib M] \
                 [--du PATH]"
        .to_string();
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        return Err(usage);
    }
    let mut usage_mib = None;
    let mut du = None;
    let mut rest = a[6..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| usage.clone())?;
        match flag.as_str() {
            "--usage-mib" => usage_mib = Some(value.parse().map_err(|_| usage.clone())?),
            "--du" => du = Some(PathBuf::from(value)),
            _ => return Err(usage),
        }
    }
    Ok(Args {
        socket: PathBuf::from(&a[0]),
        namespace: a[1].clone(),
        snapshotter: a[2].clone(),
        parent: a[3].clone(),
        n: a[4].parse().map_err(|_| usage.clone())?,
        mnt: PathBuf::from(&a[5]),
        usage_mib,
        du,
    })
}

/// `du -sbx PATH` in bytes (after a sync, so what was written is on disk).
fn du(path: &Path) -> Result<u64, String> {
    nix::unistd::sync();
    let out = std::process::Command::new("du")
        .arg("-sbx")
        .arg(path)
        .output()
        .map_err(|e| format!("du: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            format!(
                "du {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A request carrying containerd's namespace header.
fn req<T>(ns: &str, msg: T) -> Result<tonic::Request<T>, String> {
    let mut r = tonic::Request::new(msg);
    let v = ns.parse().map_err(|e| format!("namespace {ns:?}: {e}"))?;
    r.metadata_mut().insert("containerd-namespace", v);
    Ok(r)
}

/// Performs the mounts containerd would (bind with `rbind`/`ro`, or overlay) at `target`.
fn do_mount(m: &[proto::Mount], target: &Path) -> Result<(), String> {
    let [m] = m else {
        return Err(format!("expected one mount, got {m:?}"));
    };
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    let data = data.join(",");
    let fstype = (m.r#type != "bind").then_some(m.r#type.as_str());
    mount(
        Some(m.source.as_str()),
        target,
        fstype,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| format!("mount {m:?} at {}: {e}", target.display()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(a: Args) -> Result<(), String> {
    let path = a.socket.clone();
    let channel: Channel = tonic::transport::Endpoint::from_static("http://containerd.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| format!("connect {}: {e}", a.socket.display()))?;
    let mut c = SnapshotsClient::new(channel);
    let ns = a.namespace.as_str();
    let key = |i: usize| format!("ctrbench-{}-{i}", std::process::id());
    let mut times = Vec::new();
    let mut mounted = Vec::new();
    let mut result = Ok(());
    let du_before = match &a.du {
        Some(p) => Some(du(p)?),
        None => None,
    };
    for i in 0..a.n {
        let target = a.mnt.join(i.to_string());
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let prepared = c
            .prepare(req(
                ns,
                proto::PrepareSnapshotRequest {
                    snapshotter: a.snapshotter.clone(),
                    key: key(i),
                    parent: a.parent.clone(),
                    // A garbage-collection root: containerd's collector removes snapshots
                    // that no lease, container or root holds (with their mounts).
                    labels: [("containerd.io/gc.root".to_string(), "ctrbench".to_string())]
                        .into_iter()
                        .collect(),
                },
            )?)
            .await;
        let mounts = match prepared {
            Ok(r) => r.into_inner().mounts,
            Err(e) => {
                result = Err(format!("prepare {}: {e}", key(i)));
                break;
            }
        };
        if let Err(e) = do_mount(&mounts, &target) {
            result = Err(e);
            mounted.push((i, false));
            break;
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        mounted.push((i, true));
    }
    if result.is_ok() {
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let added = match (&a.du, du_before) {
            (Some(p), Some(b)) => du(p)? as i64 - b as i64,
            _ => 0,
        };
        println!(
            "{{\"bench\":\"ctrbench\",\"phase\":\"prepare\",\"snapshotter\":\"{}\",\"n\":{},\"ms\":{:?},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"du_added\":{added}}}",
            a.snapshotter,
            times.len(),
            times.iter().map(|t| (t * 100.0).round() / 100.0).collect::<Vec<_>>(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99)
        );
    }
    if let (Ok(()), Some(mib), true) = (&result, a.usage_mib, a.n > 0) {
        result = usage(&mut c, ns, &a, &key(0), mib).await;
    }
    for (i, is_mounted) in mounted {
        let target = a.mnt.join(i.to_string());
        if is_mounted {
            if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
                eprintln!("umount {}: {e}", target.display());
            }
        }
        let removed = c
            .remove(req(
                ns,
                proto::RemoveSnapshotRequest {
                    snapshotter: a.snapshotter.clone(),
                    key: key(i),
                },
            )?)
            .await;
        if let Err(e) = removed {
            eprintln!("remove {}: {e}", key(i));
        }
    }
    result
}

/// Writes `mib` MiB into the first snapshot, then times 20 Usage calls on it.
async fn usage(
    c: &mut SnapshotsClient<Channel>,
    ns: &str,
    a: &Args,
    key: &str,
    mib: u64,
) -> Result<(), String> {
    use std::io::Write;
    let file = a.mnt.join("0").join("ctrbench.data");
    let mut f = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 13) as u8).collect();
    for _ in 0..mib {
        f.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())?;
    drop(f);
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t0 = Instant::now();
        let u = c
            .usage(req(
                ns,
                proto::UsageRequest {
                    snapshotter: a.snapshotter.clone(),
                    key: key.to_string(),
                },
            )?)
            .await
            .map_err(|e| format!("usage: {e}"))?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        size = u.into_inner().size;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"ctrbench\",\"phase\":\"usage\",\"snapshotter\":\"{}\",\"written_mib\":{mib},\"size\":{size},\"p50_ms\":{:.3},\"max_ms\":{:.3}}}",
        a.snapshotter,
        percentile(&times, 0.5),
        times.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ctrbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctrbench: {e}");
            ExitCode::FAILURE
        }
    }
}
