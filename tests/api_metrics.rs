//! `GET /metrics`: Prometheus text from the live daemon, on the socket and on TCP behind the
//! token; the counters move with what the mounts and the API do.

mod common;

use std::collections::HashMap;
use std::fs;

use common::api::*;
use common::http::{Auth, Via};
use serde_json::json;

/// Every sample of the exposition: `name{labels}` -> value.
fn scrape(d: &Daemon, via: Via) -> HashMap<String, f64> {
    let r = d.request(via, &Auth::Good, "GET", "/metrics", b"");
    assert_eq!(r.status, 200, "{}", r.describe());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.contains("openmetrics-text") || ct.contains("text/plain"),
        "{ct}"
    );
    let text = String::from_utf8(r.body).expect("utf8");
    assert!(
        text.ends_with("# EOF\n"),
        "not an OpenMetrics exposition: {text}"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            (
                k.to_string(),
                v.parse::<f64>().unwrap_or_else(|_| panic!("bad value {l}")),
            )
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn metrics_move_with_the_work() {
    let d = Daemon::start();
    let before = scrape(&d, Via::Unix);
    assert_eq!(get(&before, "snapfs_mounts"), 0.0);
    d.create_container("m", None);
    let mnt = d.mount("m", "mnt");
    fs::write(mnt.join("f"), vec![7u8; 100_000]).expect("write");
    let f = fs::File::open(mnt.join("f")).expect("open");
    d.snapshot("m", json!({}));
    let mid = scrape(&d, Via::Tcp);
    assert_eq!(get(&mid, "snapfs_mounts"), 1.0);
    assert!(get(&mid, "snapfs_open_files") >= 1.0, "{mid:?}");
    // The daemon's own cost: memory, threads, the shared FUSE workers (at least two).
    assert!(
        get(&mid, "snapfs_process_resident_memory_bytes") > 1e6,
        "{mid:?}"
    );
    assert!(get(&mid, "snapfs_process_threads") >= 3.0, "{mid:?}");
    assert!(get(&mid, "snapfs_fuse_workers") >= 2.0, "{mid:?}");
    let st = d.ok("GET", "/api/v1/status", None);
    let p = &st["daemon"];
    assert_eq!(p["pid"].as_u64(), Some(u64::from(d.pid())), "{st}");
    // `snapfs serve` became the supervisor, the daemon is its child (unless this run asks
    // for daemons without one, as scripts/test.sh's io_uring pass does).
    let supervised = std::env::var("SNAPFS_SUPERVISOR").map_or(true, |v| v.trim() != "0");
    let sup = supervised.then(|| u64::from(d.serve_pid()));
    assert_eq!(p["supervisor_pid"].as_u64(), sup, "{st}");
    assert_eq!(p["mounts_kept"].as_bool(), Some(supervised), "{st}");
    assert!(p["rss_bytes"].as_u64().unwrap_or(0) > 1_000_000, "{st}");
    assert!(p["threads"].as_u64().unwrap_or(0) >= 3, "{st}");
    assert!(p["fuse_workers"].as_u64().unwrap_or(0) >= 2, "{st}");
    assert!(
        p["started_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{st}"
    );
    drop(f);
    assert!(
        get(&mid, "snapfs_written_bytes_total") >= 100_000.0,
        "{mid:?}"
    );
    assert!(
        get(
            &mid,
            "snapfs_fuse_request_duration_seconds_count{op=\"write\"}"
        ) >= 1.0,
        "{mid:?}"
    );
    assert!(
        get(
            &mid,
            "snapfs_fuse_request_duration_seconds_count{op=\"lookup\"}"
        ) >= 1.0,
        "{mid:?}"
    );
    assert!(
        get(
            &mid,
            "snapfs_snapshot_operation_duration_seconds_count{op=\"snapshot\"}"
        ) >= 1.0,
        "{mid:?}"
    );
    assert!(get(&mid, "snapfs_store_disk_bytes") > 0.0, "{mid:?}");
    assert!(
        get(&mid, "snapfs_metadata_cache_hits_total") > 0.0,
        "{mid:?}"
    );
    // Reading moves the read counter; an error moves the errno counter.
    let _ = fs::read(mnt.join("f")).expect("read");
    fs::create_dir(mnt.join("d")).expect("mkdir");
    fs::write(mnt.join("d/x"), b"x").expect("write");
    assert!(
        fs::remove_dir(mnt.join("d")).is_err(),
        "rmdir of a full directory"
    );
    let after = scrape(&d, Via::Unix);
    assert!(
        get(&after, "snapfs_read_bytes_total") >= get(&mid, "snapfs_read_bytes_total"),
        "{after:?}"
    );
    assert!(
        get(&after, "snapfs_fuse_errors_total{errno=\"ENOTEMPTY\"}") >= 1.0,
        "{after:?}"
    );
    // TCP needs the token, as the API does.
    let r = d.request(Via::Tcp, &Auth::None, "GET", "/metrics", b"");
    assert_eq!(r.status, 401);
    d.unmount("m", &mnt);
}
