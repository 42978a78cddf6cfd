//! The filesystem's error type and its single errno table.

use crate::codec::CodecError;
use crate::kv::KvError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("file name too long")]
    NameTooLong,
    /// Attribute not present.
    #[error("no such attribute")]
    NoData,
    /// The caller's buffer is too small.
    #[error("result too large for buffer")]
    Range,
    /// Argument list (xattr value) too long.
    #[error("value too large")]
    TooBig,
    #[error("file too large")]
    FileTooBig,
    #[error("operation not supported")]
    NotSupported,
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not permitted")]
    Perm,
    #[error("permission denied")]
    Access,
    #[error("bad file handle")]
    BadHandle,
    #[error("no data at or after offset")]
    NoDataAfter,
    #[error("no space left on device")]
    NoSpace,
    #[error("stale file handle")]
    Stale,
    /// A write would take the container past one of its quotas.
    #[error("disk quota exceeded")]
    Quota,
    #[error("cross-device link")]
    CrossDevice,
    /// Another host took the store (on object storage) over: nothing is written here any more.
    #[error("this store was taken over by another host (fenced): writes fail here; unmount, then mount again to take it back")]
    TakenOver,
    #[error("I/O error: {0}")]
    Io(String),
    #[error("corrupt value: {0}")]
    Corrupt(String),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// The one mapping from filesystem errors to errno values.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::FileTooBig => libc::EFBIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::ReadOnly => libc::EROFS,
            FsError::Perm => libc::EPERM,
            FsError::Access => libc::EACCES,
            FsError::BadHandle => libc::EBADF,
            FsError::NoDataAfter => libc::ENXIO,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Stale => libc::ESTALE,
            FsError::Quota => libc::EDQUOT,
            FsError::CrossDevice => libc::EXDEV,
            FsError::Io(_) | FsError::Corrupt(_) | FsError::TakenOver => libc::EIO,
        }
    }
}

impl From<KvError> for FsError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NoSpace => FsError::NoSpace,
            KvError::ReadOnly => FsError::ReadOnly,
            KvError::Fenced => FsError::TakenOver,
            other => FsError::Io(other.to_string()),
        }
    }
}

impl From<CodecError> for FsError {
    fn from(e: CodecError) -> Self {
        FsError::Corrupt(e.to_string())
    }
}
