//! The object-store client a [`Location`] names, and opening the database in it.

use std::sync::Arc;

use slatedb::object_store::{self, ObjectStore};

use super::{Location, OpenError, SlateKv, SlateOptions};
use crate::kv::{Kv, KvError};

/// An S3 client for `bucket`, configured from `AWS_*` variables (name, value) as
/// `AmazonS3Builder::from_env` reads them. Request bodies go unsigned: SigV4 would hash
/// every body with SHA-256 (half the daemon's CPU while it pushes data);
/// `AWS_UNSIGNED_PAYLOAD=false` restores that.
pub fn s3_client(
    bucket: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<object_store::aws::AmazonS3, OpenError> {
    let mut b = object_store::aws::AmazonS3Builder::new().with_unsigned_payload(true);
    for (k, v) in vars {
        if k.starts_with("AWS_") {
            if let Ok(key) = k.to_ascii_lowercase().parse() {
                b = b.with_config(key, v);
            }
        }
    }
    b.with_bucket_name(bucket).build().map_err(|e| {
        OpenError::Setup(format!(
            "cannot configure the S3 client (AWS_* environment): {e}"
        ))
    })
}

/// The object store at `at`, configured from the `AWS_*` environment for S3.
fn object_store(at: &Location) -> Result<Arc<dyn ObjectStore>, OpenError> {
    match at {
        Location::S3 { bucket } => Ok(Arc::new(s3_client(bucket, std::env::vars())?)),
        Location::Dir(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Setup(format!("cannot create {}: {e}", dir.display())))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| OpenError::Setup(format!("cannot use {}: {e}", dir.display())))?;
            Ok(Arc::new(fs))
        }
    }
}

/// Whether the object store at `at` already holds data under `prefix`.
pub fn exists(at: &Location, prefix: &str) -> Result<bool, OpenError> {
    let os = object_store(at)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OpenError::Setup(format!("cannot start the async runtime: {e}")))?;
    let prefix = object_store::path::Path::from(prefix);
    let found = rt
        .block_on(os.list_with_delimiter(Some(&prefix)))
        .map_err(|e| OpenError::Kv(KvError::Io(e.to_string())))?;
    Ok(!found.objects.is_empty() || !found.common_prefixes.is_empty())
}

/// Opens the database at `prefix` in the object store at `at`: as its writer (fencing any
/// other writer), or, with `opts.read_only`, as a reader.
pub fn open(at: &Location, prefix: &str, opts: &SlateOptions) -> Result<Arc<dyn Kv>, OpenError> {
    let os = object_store(at)?;
    let kv = SlateKv::open_with(os, prefix, opts).map_err(OpenError::Kv)?;
    match &opts.segment_cache {
        Some(cache) => {
            let kv = super::segmented(kv, cache, opts.cache_bytes, super::segment_options())
                .map_err(OpenError::Kv)?;
            Ok(Arc::new(kv))
        }
        None => Ok(Arc::new(kv)),
    }
}
