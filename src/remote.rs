//! Stores on object storage, as the store directory sees them: the store's configuration
//! (`STORE/store.json`), the object-store URL, and the options its database is opened with
//! (`kv::slate` opens it). A store without `store.json` is an embedded RocksDB store.
//!
//! - `s3://BUCKET/PREFIX`: S3 or any S3-compatible server; endpoint, region and credentials
//!   come from the standard `AWS_*` environment variables of the process that opens it.
//! - `file:///DIR`: object storage emulated by files in a local directory (tests, demos).
//!
//! The store's database is the SlateDB database at PREFIX (`snapfs` when the URL has none).

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kv::slate::{self, brief, Location, OpenError, SlateOptions, VersionRule};
use crate::kv::{Kv, KvError};

/// The file that makes a store directory an object-store store.
pub fn config_path(store: &Path) -> PathBuf {
    store.join("store.json")
}

/// The local cache of object-store data.
pub fn cache_dir(store: &Path) -> PathBuf {
    store.join("cache")
}

/// The configuration of a store on object storage (`STORE/store.json`). Every field but the
/// URL has a default, so the file may be edited by hand; the daemon reads it when it starts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Where the data lives: `s3://BUCKET/PREFIX` or `file:///DIR`.
    pub object_store: String,
    /// How often unsynced writes are pushed to object storage, in milliseconds.
    #[serde(default = "default_push_interval_ms")]
    pub push_interval_ms: u64,
    /// Writes not yet in object storage, in bytes, beyond which new writes wait.
    #[serde(default = "default_backlog_bytes")]
    pub backlog_bytes: u64,
    /// The local disk cache of object-store data, in bytes.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// How long an fsync waits for object storage before it fails with EIO, in milliseconds
    /// (0: wait for ever).
    #[serde(default = "default_fsync_timeout_ms")]
    pub fsync_timeout_ms: u64,
}

pub const DEFAULT_PUSH_INTERVAL_MS: u64 = 100;
pub const DEFAULT_BACKLOG_BYTES: u64 = 256 << 20;
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 30;
pub const DEFAULT_FSYNC_TIMEOUT_MS: u64 = 60_000;

fn default_push_interval_ms() -> u64 {
    DEFAULT_PUSH_INTERVAL_MS
}
fn default_backlog_bytes() -> u64 {
    DEFAULT_BACKLOG_BYTES
}
fn default_cache_bytes() -> u64 {
    DEFAULT_CACHE_BYTES
}
fn default_fsync_timeout_ms() -> u64 {
    DEFAULT_FSYNC_TIMEOUT_MS
}

impl RemoteConfig {
    pub fn new(url: &str) -> Result<RemoteConfig> {
        ObjectUrl::parse(url)?;
        Ok(RemoteConfig {
            object_store: url.to_string(),
            push_interval_ms: DEFAULT_PUSH_INTERVAL_MS,
            backlog_bytes: DEFAULT_BACKLOG_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            fsync_timeout_ms: DEFAULT_FSYNC_TIMEOUT_MS,
        })
    }

    /// Checks the values a hand edit may have broken.
    pub fn validate(&self) -> Result<()> {
        ObjectUrl::parse(&self.object_store)?;
        if self.push_interval_ms == 0 || self.push_interval_ms > 60_000 {
            bail!(
                "push_interval_ms must be 1..=60000, not {}",
                self.push_interval_ms
            );
        }
        if self.backlog_bytes < (1 << 20) {
            bail!("backlog_bytes must be at least 1 MiB");
        }
        if self.cache_bytes < (64 << 20) {
            bail!("cache_bytes must be at least 64 MiB");
        }
        Ok(())
    }

    pub fn push_interval(&self) -> Duration {
        Duration::from_millis(self.push_interval_ms)
    }

    /// None: an fsync waits for ever.
    pub fn fsync_timeout(&self) -> Option<Duration> {
        (self.fsync_timeout_ms > 0).then(|| Duration::from_millis(self.fsync_timeout_ms))
    }

    pub fn read(store: &Path) -> Result<Option<RemoteConfig>> {
        let p = config_path(store);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        let cfg: RemoteConfig =
            serde_json::from_str(&text).with_context(|| format!("bad {}", p.display()))?;
        cfg.validate()
            .with_context(|| format!("bad {}", p.display()))?;
        Ok(Some(cfg))
    }

    pub fn write(&self, store: &Path) -> Result<()> {
        let p = config_path(store);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    }
}

/// A parsed object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectUrl {
    S3 { bucket: String, prefix: String },
    File { dir: PathBuf, prefix: String },
}

impl ObjectUrl {
    pub fn parse(url: &str) -> Result<ObjectUrl> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty()
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
            {
                bail!("bad bucket name in {url:?} (lower-case letters, digits, '-' and '.')");
            }
            Ok(ObjectUrl::S3 {
                bucket: bucket.to_string(),
                prefix: clean_prefix(prefix, url)?,
            })
        } else if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                bail!("a file:// URL needs an absolute path: {url:?}");
            }
            Ok(ObjectUrl::File {
                dir: PathBuf::from(rest),
                prefix: "snapfs".to_string(),
            })
        } else {
            bail!("unsupported object store {url:?}: use s3://BUCKET/PREFIX or file:///DIR")
        }
    }

    /// The database's path in its object store.
    pub fn prefix(&self) -> &str {
        match self {
            ObjectUrl::S3 { prefix, .. } | ObjectUrl::File { prefix, .. } => prefix,
        }
    }
}

/// `a/b/` → `a/b`; empty → `snapfs`; no `.`/`..` segments.
fn clean_prefix(prefix: &str, url: &str) -> Result<String> {
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        bail!("bad prefix in {url:?}");
    }
    if parts.is_empty() {
        return Ok("snapfs".to_string());
    }
    Ok(parts.join("/"))
}

impl ObjectUrl {
    /// Where the objects are, as the SlateDB backend takes it.
    fn location(&self) -> Location {
        match self {
            ObjectUrl::S3 { bucket, .. } => Location::S3 {
                bucket: bucket.clone(),
            },
            ObjectUrl::File { dir, .. } => Location::Dir(dir.clone()),
        }
    }
}

/// The key schema's version rule as SlateDB's filters record it (`keys::version_base_len`;
/// the name changes whenever the rule does).
pub const VERSION_RULE: VersionRule = VersionRule {
    name: "snapfs-version-base-1",
    base_len: crate::keys::version_base_len,
};

fn options(store: &Path, cfg: &RemoteConfig, read_only: bool) -> SlateOptions {
    SlateOptions {
        push_interval: cfg.push_interval(),
        backlog_bytes: cfg.backlog_bytes,
        cache_dir: Some(cache_dir(store)),
        cache_bytes: cfg.cache_bytes,
        fsync_timeout: cfg.fsync_timeout(),
        read_only,
        lock_file: Some(store.join("lock")),
        location: cfg.object_store.clone(),
        version_rule: Some(VERSION_RULE),
        segment_cache: Some(store.join("segcache")),
    }
}

/// Whether the object store already holds data under the URL's prefix.
pub fn exists(cfg: &RemoteConfig) -> Result<bool> {
    let url = ObjectUrl::parse(&cfg.object_store)?;
    slate::exists(&url.location(), url.prefix()).map_err(|e| match e {
        OpenError::Setup(msg) => anyhow!(msg),
        OpenError::Kv(KvError::Io(msg)) => {
            anyhow!("cannot reach {}: {}", cfg.object_store, brief(&msg))
        }
        OpenError::Kv(e) => anyhow!("cannot reach {}: {}", cfg.object_store, brief(&e)),
    })
}

/// Opens the store's database: as its writer (fencing any other writer), or read-only.
pub fn open_kv(store: &Path, cfg: &RemoteConfig, read_only: bool) -> Result<Arc<dyn Kv>> {
    let url = ObjectUrl::parse(&cfg.object_store)?;
    let opts = options(store, cfg, read_only);
    slate::open(&url.location(), url.prefix(), &opts).map_err(|e| match e {
        OpenError::Setup(msg) => anyhow!(msg),
        OpenError::Kv(KvError::Busy) => {
            anyhow!("store {} is in use by another process", store.display())
        }
        OpenError::Kv(e) => anyhow!("cannot open store {}: {}", cfg.object_store, brief(&e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            ObjectUrl::parse("s3://b-1/x/y/").unwrap(),
            ObjectUrl::S3 {
                bucket: "b-1".into(),
                prefix: "x/y".into()
            }
        );
        assert_eq!(ObjectUrl::parse("s3://b").unwrap().prefix(), "snapfs");
        assert!(ObjectUrl::parse("s3://").is_err());
        assert!(ObjectUrl::parse("s3://B/x").is_err());
        assert!(ObjectUrl::parse("s3://b/../x").is_err());
        assert!(ObjectUrl::parse("file://rel").is_err());
        assert!(ObjectUrl::parse("gs://b/x").is_err());
        assert_eq!(
            ObjectUrl::parse("file:///tmp/o").unwrap(),
            ObjectUrl::File {
                dir: "/tmp/o".into(),
                prefix: "snapfs".into()
            }
        );
    }

    #[test]
    fn config_round_trips_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        assert!(RemoteConfig::read(d.path()).unwrap().is_none());
        let c = RemoteConfig::new("s3://b/p").unwrap();
        c.write(d.path()).unwrap();
        assert_eq!(RemoteConfig::read(d.path()).unwrap(), Some(c));
        std::fs::write(config_path(d.path()), r#"{"object_store":"s3://b/p"}"#).unwrap();
        let c = RemoteConfig::read(d.path()).unwrap().unwrap();
        assert_eq!(c.push_interval_ms, DEFAULT_PUSH_INTERVAL_MS);
        std::fs::write(
            config_path(d.path()),
            r#"{"object_store":"s3://b/p","push_interval_ms":0}"#,
        )
        .unwrap();
        assert!(RemoteConfig::read(d.path()).is_err());
        std::fs::write(
            config_path(d.path()),
            r#"{"object_store":"s3://b/p","x":1}"#,
        )
        .unwrap();
        assert!(RemoteConfig::read(d.path()).is_err());
    }
}
