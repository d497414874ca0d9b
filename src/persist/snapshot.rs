//! Writing a snapshot: a header, the keys in chunks, an end record, then sync and rename into place.
//!
//! The keys come in chunks that the caller reads out of the pools a bounded slice at a time, each under
//! its own short hold of the daemon's lock (see `server::compaction`); this file only does the disk side,
//! outside the lock. A snapshot is written under a temporary name and renamed only once it is complete
//! and synced, so a snapshot under its real name is always whole; the end record, which counts the keys,
//! lets recovery check that anyway.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::error::PersistError;
use super::files::DataDir;
use super::format;

/// How many bytes of key images a snapshot record holds, about: one image more than this at most (a
/// secret is at most 1 MiB), well under the format's `MAX_PAYLOAD`.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A snapshot being written.
pub struct SnapshotWriter {
    dir: Arc<DataDir>,
    generation: u64,
    path: PathBuf,
    file: BufWriter<File>,
    keys: u64,
    bytes: u64,
    frame: Vec<u8>,
}

/// A snapshot written and in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub keys: u64,
    pub bytes: u64,
}

impl SnapshotWriter {
    /// Starts snapshot `generation`; `next_token` is the fencing token counter when the log rotated.
    pub fn create(dir: Arc<DataDir>, generation: u64, next_token: u64) -> Result<SnapshotWriter, PersistError> {
        let path = dir.unfinished_snapshot_path(generation);
        let file = File::create(&path).map_err(PersistError::file(&path))?;
        let mut writer = SnapshotWriter {
            dir,
            generation,
            path,
            file: BufWriter::with_capacity(1 << 20, file),
            keys: 0,
            bytes: 0,
            frame: Vec::new(),
        };
        let written_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        format::put_snapshot_header(&mut writer.frame, generation, written_at_ms, next_token);
        writer.flush_frame()?;
        Ok(writer)
    }

    /// Starts the keys of `pool`, about `keys` of them.
    pub fn write_pool(&mut self, pool: &str, keys: u64) -> Result<(), PersistError> {
        format::put_snapshot_pool(&mut self.frame, pool, keys);
        self.flush_frame()
    }

    /// Writes `count` keys of `pool`, whose images (from `format::put_image`) are `images`.
    pub fn write_keys(&mut self, pool: &str, count: u32, images: &[u8]) -> Result<(), PersistError> {
        format::put_snapshot_keys(&mut self.frame, pool, count, images);
        self.keys += u64::from(count);
        self.flush_frame()
    }

    /// Ends the snapshot, syncs it, and renames it into place (syncing the directory too).
    pub fn finish(mut self) -> Result<Written, PersistError> {
        format::put_snapshot_end(&mut self.frame, self.keys);
        self.flush_frame()?;
        self.file.flush().map_err(PersistError::file(&self.path))?;
        self.file.get_ref().sync_all().map_err(PersistError::file(&self.path))?;
        let path = self.dir.snapshot_path(self.generation);
        fs::rename(&self.path, &path).map_err(PersistError::file(&path))?;
        self.dir.sync().map_err(PersistError::file(self.dir.path()))?;
        Ok(Written { keys: self.keys, bytes: self.bytes })
    }

    fn flush_frame(&mut self) -> Result<(), PersistError> {
        self.file.write_all(&self.frame).map_err(PersistError::file(&self.path))?;
        self.bytes += self.frame.len() as u64;
        self.frame.clear();
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // An abandoned snapshot (a write failed) is removed; a finished one was renamed away already.
        let _ = fs::remove_file(&self.path);
    }
}
