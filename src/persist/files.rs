//! The data directory: which files it holds, what they are called, and the few operations on them that
//! must be done in a particular order to survive a crash.
//!
//! ```text
//! LOCK                         held (flock) by the daemon using the directory
//! snapshot-00000000000000000003  the state when log 3 began, give or take changes log 3 also holds
//! log-00000000000000000003       every change since, appended
//! snapshot-…3.tmp                a snapshot being written; never read, removed at start-up
//! ```
//!
//! Generations number the pairs. Recovery loads the newest snapshot, then replays every log of that
//! generation or later, in order (a crash during a compaction can leave the next log begun and its
//! snapshot unfinished; then the older snapshot and both logs are used). A snapshot appears only by
//! rename once it is complete and on disk, and the directory is synced after every file created,
//! renamed or removed, so a crash never leaves a half-made snapshot under a real name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::PersistError;
use super::format;

const LOG_PREFIX: &str = "log-";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const TMP_SUFFIX: &str = ".tmp";
const LOCK: &str = "LOCK";

/// An open data directory, locked against a second daemon for as long as this lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Held for its lock.
    lock: File,
}

/// The generations of the snapshots and logs a directory holds, each list in increasing order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub snapshots: Vec<u64>,
    pub logs: Vec<u64>,
}

impl DataDir {
    /// Opens `path`, creating it if it does not exist, and locks it.
    pub fn open(path: &Path) -> Result<DataDir, PersistError> {
        let failed = |source| PersistError::Dir { path: path.to_owned(), source };
        fs::create_dir_all(path).map_err(failed)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(path.join(LOCK)).map_err(failed)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(PersistError::Locked(path.to_owned())),
            Err(fs::TryLockError::Error(source)) => return Err(failed(source)),
        }
        Ok(DataDir { path: path.to_owned(), lock })
    }

    /// Lets another daemon have the directory: this one has stopped writing to it.
    pub fn unlock(&self) {
        let _ = self.lock.unlock();
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshots and logs in the directory. Removes unfinished snapshots on the way: they are what a
    /// crash during a compaction leaves, and nothing reads them.
    pub fn list(&self) -> Result<Listing, PersistError> {
        let failed = |source| PersistError::Dir { path: self.path.clone(), source };
        let mut listing = Listing::default();
        for entry in fs::read_dir(&self.path).map_err(failed)? {
            let name = entry.map_err(failed)?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                let _ = fs::remove_file(self.path.join(name));
            } else if let Some(generation) = generation_of(name, LOG_PREFIX) {
                listing.logs.push(generation);
            } else if let Some(generation) = generation_of(name, SNAPSHOT_PREFIX) {
                listing.snapshots.push(generation);
            }
        }
        listing.logs.sort_unstable();
        listing.snapshots.sort_unstable();
        Ok(listing)
    }

    pub fn log_path(&self, generation: u64) -> PathBuf {
        self.path.join(format!("{LOG_PREFIX}{generation:020}"))
    }

    pub fn snapshot_path(&self, generation: u64) -> PathBuf {
        self.path.join(format!("{SNAPSHOT_PREFIX}{generation:020}"))
    }

    /// Where a snapshot is written before it is complete.
    pub fn unfinished_snapshot_path(&self, generation: u64) -> PathBuf {
        self.path.join(format!("{SNAPSHOT_PREFIX}{generation:020}{TMP_SUFFIX}"))
    }

    /// Creates log `generation` with its header, on disk (file and directory entry) before it returns.
    pub fn create_log(&self, generation: u64) -> io::Result<File> {
        let path = self.log_path(generation);
        let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        let mut header = Vec::new();
        format::put_log_header(&mut header, generation);
        file.write_all(&header)?;
        file.sync_data()?;
        self.sync()?;
        Ok(file)
    }

    /// Opens an existing log to append to it.
    pub fn append_to_log(&self, generation: u64) -> io::Result<File> {
        OpenOptions::new().append(true).open(self.log_path(generation))
    }

    /// Makes the directory's entries (files created, renamed or removed) durable.
    pub fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    /// Removes the snapshots and logs older than generation `keep`, once a snapshot of `keep` is in
    /// place. A file that cannot be removed is reported and left: recovery skips old generations.
    pub fn remove_older_than(&self, keep: u64) {
        let Ok(listing) = self.list() else { return };
        let old_logs = listing.logs.into_iter().filter(|&g| g < keep).map(|g| self.log_path(g));
        let old_snapshots = listing.snapshots.into_iter().filter(|&g| g < keep).map(|g| self.snapshot_path(g));
        for path in old_logs.chain(old_snapshots) {
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove an old data file");
            }
        }
        if let Err(error) = self.sync() {
            tracing::warn!(%error, "cannot sync the data directory");
        }
    }
}

/// The generation in a file name of the form `<prefix><digits>`.
fn generation_of(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
