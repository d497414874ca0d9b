//! What can go wrong with the data directory, in words an operator can act on.

use std::io;
use std::path::PathBuf;

/// Why durability could not start, or a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The directory cannot be created, listed, or written to (read-only, permissions, disk full).
    #[error("data directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    /// Another daemon holds the directory's lock.
    #[error("data directory {} is in use by another keypool (its LOCK file is held)", .0.display())]
    Locked(PathBuf),
    /// A file could not be read, written or synced.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    /// A file holds damage that is not a torn last record.
    #[error(
        "{} is damaged at byte offset {offset} ({reason}); start with --recover-truncate to keep what comes \
         before it and drop the rest",
        path.display()
    )]
    Damaged { path: PathBuf, offset: u64, reason: String },
}

impl PersistError {
    pub(super) fn file(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> PersistError {
        let path = path.into();
        move |source| PersistError::File { path, source }
    }
}
