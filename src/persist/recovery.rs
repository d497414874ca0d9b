//! Start-up: load the newest snapshot, replay the logs after it, apply the clock.
//!
//! Damage is judged by where it is. A bad record at the very end of the newest log, with nothing but
//! zeros after it, is what a crash in the middle of a write leaves: it is reported and cut off, and the
//! change it held was never acknowledged under `--fsync always` (its reply waited for the sync). A bad
//! record anywhere else means the disk or someone else changed the file: the daemon refuses to start and
//! names the file and offset, unless `--recover-truncate` says to keep the good prefix and drop the rest.

use std::fs::{self, OpenOptions};
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::PersistError;
use super::files::DataDir;
use super::format::{self, Frame, Record};
use crate::pool::Pools;

/// What recovery found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Keys in service after recovery.
    pub keys: usize,
    /// Keys deleted because their keep-alive deadline passed while the daemon was down.
    pub expired: usize,
    /// Leases and delays that ended while the daemon was down.
    pub leases_ended: usize,
    /// Keys read from the snapshot.
    pub snapshot_keys: u64,
    /// Changes replayed from the logs, and the bytes they took.
    pub log_records: u64,
    pub log_bytes: u64,
    /// Bytes of a torn last record cut off the newest log.
    pub torn_bytes: u64,
    /// Bytes dropped after damage, with `--recover-truncate`.
    pub dropped_bytes: u64,
    /// The log to append to from now on, and its length.
    pub generation: u64,
    pub log_len: u64,
    /// The snapshot's generation and size, if there is one.
    pub snapshot: Option<(u64, u64)>,
    pub took: Duration,
}

/// Rebuilds `pools` from the directory. The pools must be new and have no change log yet.
pub fn recover(dir: &DataDir, pools: &mut Pools, recover_truncate: bool) -> Result<Recovered, PersistError> {
    let started = Instant::now();
    let listing = dir.list()?;
    let mut recovered = Recovered::default();
    let mut highest_token = 0;

    let snapshot = listing.snapshots.last().copied();
    if let Some(generation) = snapshot {
        let path = dir.snapshot_path(generation);
        let file = fs::File::open(&path).map_err(PersistError::file(&path))?;
        let size = file.metadata().map_err(PersistError::file(&path))?.len();
        recovered.snapshot = Some((generation, size));
        let mut reader =
            SnapshotReader { file: BufReader::with_capacity(1 << 20, file), offset: 0, payload: Vec::new() };
        let loaded = load_snapshot(&mut reader, pools, &mut recovered, &mut highest_token);
        pools.index_snapshot_keys();
        match loaded {
            Ok(()) => {}
            Err(Unreadable::Io(source)) => return Err(PersistError::File { path, source }),
            Err(Unreadable::Damaged(offset, reason)) if recover_truncate => {
                tracing::warn!(path = %path.display(), offset, reason, "snapshot damaged; keeping the keys before the damage");
                recovered.dropped_bytes += size.saturating_sub(offset);
            }
            Err(Unreadable::Damaged(offset, reason)) => return Err(PersistError::Damaged { path, offset, reason }),
        }
    }

    let logs: Vec<u64> = listing.logs.iter().copied().filter(|&g| snapshot.is_none_or(|s| g >= s)).collect();
    for (i, &generation) in logs.iter().enumerate() {
        let path = dir.log_path(generation);
        let data = fs::read(&path).map_err(PersistError::file(&path))?;
        let newest = i + 1 == logs.len();
        let (end, problem) = replay_log(&data, generation, pools, &mut recovered, &mut highest_token);
        recovered.log_bytes += end as u64;
        let Some((kind, reason)) = problem else {
            continue;
        };
        let cut = data.len() as u64 - end as u64;
        match kind {
            Frame::Torn if newest => {
                tracing::warn!(path = %path.display(), offset = end, bytes = cut, "torn last record (a crash mid-write); cutting it off");
                truncate(&path, end as u64)?;
                recovered.torn_bytes += cut;
            }
            _ if recover_truncate => {
                tracing::warn!(path = %path.display(), offset = end, bytes = cut, reason, "--recover-truncate: dropping the log from the damage on");
                truncate(&path, end as u64)?;
                recovered.dropped_bytes += cut;
                for &later in &logs[i + 1..] {
                    let later = dir.log_path(later);
                    recovered.dropped_bytes += fs::metadata(&later).map_or(0, |meta| meta.len());
                    fs::remove_file(&later).map_err(PersistError::file(&later))?;
                }
                break;
            }
            _ => return Err(PersistError::Damaged { path, offset: end as u64, reason }),
        }
    }

    let restored = pools.finish_restore(highest_token);
    recovered.keys = restored.keys;
    recovered.expired = restored.expired;
    recovered.leases_ended = restored.leases_ended;
    recovered.generation = match (dir.list()?.logs.last().copied(), snapshot) {
        (Some(log), Some(snapshot)) => log.max(snapshot),
        (Some(generation), None) | (None, Some(generation)) => generation,
        (None, None) => 1,
    };
    recovered.log_len = fs::metadata(dir.log_path(recovered.generation)).map_or(0, |meta| meta.len());
    if let Some(generation) = snapshot {
        dir.remove_older_than(generation);
    }
    recovered.took = started.elapsed();
    Ok(recovered)
}

/// Why a snapshot could not be read to its end.
enum Unreadable {
    Io(std::io::Error),
    /// At this offset, for this reason.
    Damaged(u64, String),
}

/// A snapshot's records, read one at a time: each is parsed while it is still in the cache, and the file
/// (hundreds of megabytes for millions of keys) is never in memory whole. Snapshot records are small (see
/// `snapshot::CHUNK_BYTES`).
struct SnapshotReader {
    file: BufReader<fs::File>,
    offset: u64,
    payload: Vec<u8>,
}

impl SnapshotReader {
    /// The next record's payload and its offset, or `None` at the end of the file.
    fn next(&mut self) -> Result<Option<(u64, &[u8])>, Unreadable> {
        let at = self.offset;
        let cut_short = || Unreadable::Damaged(at, "the snapshot ends in the middle of a record".into());
        let mut header = [0u8; format::FRAME_HEADER];
        let mut got = 0;
        while got < header.len() {
            match self.file.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(cut_short()),
                Ok(n) => got += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(Unreadable::Io(error)),
            }
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if length == 0 || length > format::MAX_PAYLOAD {
            return Err(Unreadable::Damaged(at, "bad record length".into()));
        }
        self.payload.resize(length, 0);
        self.file.read_exact(&mut self.payload).map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => cut_short(),
            _ => Unreadable::Io(error),
        })?;
        if crc32fast::hash(&self.payload) != crc {
            return Err(Unreadable::Damaged(at, "bad checksum".into()));
        }
        self.offset += (format::FRAME_HEADER + length) as u64;
        Ok(Some((at, &self.payload)))
    }
}

/// Loads a snapshot's keys into `pools`. On damage, the offset and why; the keys before it are loaded.
fn load_snapshot(
    reader: &mut SnapshotReader,
    pools: &mut Pools,
    recovered: &mut Recovered,
    highest_token: &mut u64,
) -> Result<(), Unreadable> {
    let mut seen_header = false;
    loop {
        let Some((offset, payload)) = reader.next()? else {
            return Err(Unreadable::Damaged(reader.offset, "the snapshot ends before its end record".into()));
        };
        let damaged = |reason: &str| Unreadable::Damaged(offset, reason.to_string());
        match format::decode(payload).map_err(|error| damaged(&error.to_string()))? {
            Record::SnapshotHeader { next_token, .. } if !seen_header => {
                seen_header = true;
                *highest_token = (*highest_token).max(next_token.saturating_sub(1));
            }
            _ if !seen_header => return Err(damaged("not a keypool snapshot")),
            Record::SnapshotPool { pool, keys } => {
                // Room for them all at once: growing the id index key by key would rehash it again and again.
                let keys = usize::try_from(keys).unwrap_or(usize::MAX).min(crate::pool::MAX_POOL_KEYS);
                pools.restore_pool(pool).reserve(keys);
            }
            Record::SnapshotKeys { pool, images } => {
                let pool = pools.restore_pool(pool);
                for image in images {
                    let image = image.map_err(|error| damaged(&error.to_string()))?;
                    if let Some(token) = pool.restore_snapshot_key(&image) {
                        *highest_token = (*highest_token).max(token);
                    }
                    recovered.snapshot_keys += 1;
                }
            }
            Record::SnapshotEnd { keys } if keys == recovered.snapshot_keys => return Ok(()),
            Record::SnapshotEnd { .. } => return Err(damaged("the end record's key count does not match")),
            _ => return Err(damaged("a record that does not belong in a snapshot")),
        }
    }
}

/// Replays one log into `pools`. Returns how far it got, and what stopped it before the end, if anything.
fn replay_log(
    data: &[u8],
    generation: u64,
    pools: &mut Pools,
    recovered: &mut Recovered,
    highest_token: &mut u64,
) -> (usize, Option<(Frame<'static>, String)>) {
    let mut offset = 0;
    loop {
        let (payload, next) = match format::next_frame(data, offset) {
            Frame::Record(payload, next) => (payload, next),
            // Zeros after the last record are space a crash left allocated: cut off like a torn record.
            Frame::End if offset < data.len() => {
                return (offset, Some((Frame::Torn, "zeros after the last record".into())))
            }
            Frame::End => return (offset, None),
            Frame::Torn => return (offset, Some((Frame::Torn, "torn record".into()))),
            Frame::Damaged => return (offset, Some((Frame::Damaged, "bad checksum".into()))),
        };
        match format::decode(payload) {
            Ok(Record::LogHeader { generation: found }) if offset == 0 && found == generation => {}
            Ok(_) if offset == 0 => return (0, Some((Frame::Damaged, "the log's header is missing".into()))),
            Ok(Record::Change { pool, change }) => {
                if let Some(token) = pools.restore_pool(pool).restore(&change) {
                    *highest_token = (*highest_token).max(token);
                }
                recovered.log_records += 1;
            }
            Ok(_) => return (offset, Some((Frame::Damaged, "a record that does not belong in a log".into()))),
            Err(error) => return (offset, Some((Frame::Damaged, error.to_string()))),
        }
        offset = next;
    }
}

/// Cuts `path` to `len` bytes, durably.
fn truncate(path: &Path, len: u64) -> Result<(), PersistError> {
    let file = OpenOptions::new().write(true).open(path).map_err(PersistError::file(path))?;
    file.set_len(len).map_err(PersistError::file(path))?;
    file.sync_all().map_err(PersistError::file(path))
}
