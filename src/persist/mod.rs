//! Durability: a snapshot and an append-only log of every change, in `--data-dir`.
//!
//! The pieces, in the order a change meets them:
//!
//! - the engine reports each change as a [`Change`](crate::pool::Change) that states the new value of
//!   what changed (see `pool/changes.rs`);
//! - [`journal`] frames it ([`format`]) into a buffer under the daemon's lock, and a writer thread moves
//!   the buffer to the log file and syncs it as `--fsync` says, one sync for every connection waiting;
//! - [`snapshot`] writes the whole state, chunk by chunk, when the log has grown (the walk itself is
//!   the server's, in `server::compaction`, because it takes the daemon's lock);
//! - [`recovery`] loads the newest snapshot and replays the logs after it at start-up, then applies the
//!   clock: keep-alive deadlines that passed while the daemon was down delete their keys, block
//!   deadlines that passed free theirs;
//! - [`files`] names the files and does the renames and directory syncs in crash-safe order.
//!
//! What follows from a deadline alone is never logged (recovery re-applies deadlines), so a pool whose
//! leases mostly time out writes little more than its GETs.

mod error;
mod files;
pub mod format;
mod journal;
mod recovery;
mod snapshot;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pool::Pools;

pub use error::PersistError;
pub use files::DataDir;
pub use journal::{Journal, NotDurable};
pub use recovery::Recovered;
pub use snapshot::{SnapshotWriter, Written, CHUNK_BYTES};

/// When the log is synced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before every reply to a change: nothing acknowledged is ever lost. Connections share syncs.
    Always,
    /// Once a second: a power cut loses at most about the last second; a crash of the daemon alone, at
    /// most the last few milliseconds.
    Everysec,
    /// Never: the operating system writes the log when it likes.
    No,
}

impl FromStr for Fsync {
    type Err = String;

    fn from_str(text: &str) -> Result<Fsync, String> {
        match text {
            "always" => Ok(Fsync::Always),
            "everysec" => Ok(Fsync::Everysec),
            "no" => Ok(Fsync::No),
            _ => Err(format!("{text:?}: expected always, everysec or no")),
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
            Fsync::No => "no",
        })
    }
}

/// How the daemon keeps its state on disk.
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// The log is compacted once it is larger than this and than twice the live data.
    pub compact_min: u64,
    /// Start from the good prefix of damaged files instead of refusing to start.
    pub recover_truncate: bool,
}

impl Options {
    /// Durability in `dir` with the defaults: `everysec`, compaction from 64 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> Options {
        Options { dir: dir.into(), fsync: Fsync::Everysec, compact_min: 64 << 20, recover_truncate: false }
    }
}

/// The figures STATS reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub log_bytes: u64,
    pub snapshot_bytes: u64,
    pub snapshot_keys: u64,
    pub records_written: u64,
    pub fsyncs: u64,
    pub write_failures: u64,
    pub failed: bool,
    pub compactions: u64,
    /// Unix seconds of the last compaction's end, 0 for none yet.
    pub last_compaction_time: u64,
    pub last_compaction_ms: u64,
    pub recovery_ms: u64,
}

/// The durability of one daemon: its directory, its journal and writer, and the figures.
pub struct Persistence {
    options: Options,
    dir: Arc<DataDir>,
    journal: Arc<Journal>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recovered: Recovered,
    snapshot_bytes: AtomicU64,
    snapshot_keys: AtomicU64,
    compactions: AtomicU64,
    last_compaction_time: AtomicU64,
    last_compaction_ms: AtomicU64,
}

impl Persistence {
    /// Opens the data directory, rebuilds `pools` (new, empty ones) from it, and from then on logs every
    /// change the pools make. Must be called before anything else uses the pools.
    pub fn open(options: Options, pools: &mut Pools) -> Result<Persistence, PersistError> {
        let dir = Arc::new(DataDir::open(&options.dir)?);
        let recovered = recovery::recover(&dir, pools, options.recover_truncate)?;
        let generation = recovered.generation;
        let log = dir.log_path(generation);
        let file = if recovered.log_len == 0 { dir.create_log(generation) } else { dir.append_to_log(generation) }
            .map_err(PersistError::file(&log))?;
        let log_len = file.metadata().map_err(PersistError::file(&log))?.len();
        let (journal, writer) = Journal::start(options.fsync, Arc::clone(&dir), generation, file, log_len)
            .map_err(PersistError::file(&log))?;
        pools.set_change_log(Arc::clone(&journal) as Arc<dyn crate::pool::ChangeLog>);
        tracing::info!(
            dir = %options.dir.display(),
            fsync = %options.fsync,
            keys = recovered.keys,
            expired_while_down = recovered.expired,
            leases_ended_while_down = recovered.leases_ended,
            snapshot_keys = recovered.snapshot_keys,
            log_records = recovered.log_records,
            torn_bytes = recovered.torn_bytes,
            dropped_bytes = recovered.dropped_bytes,
            took_ms = recovered.took.as_millis() as u64,
            "recovered from the data directory"
        );
        let (snapshot_bytes, snapshot_keys) =
            recovered.snapshot.map_or((0, 0), |(_, bytes)| (bytes, recovered.snapshot_keys));
        Ok(Persistence {
            options,
            dir,
            journal,
            writer: Mutex::new(Some(writer)),
            recovered,
            snapshot_bytes: AtomicU64::new(snapshot_bytes),
            snapshot_keys: AtomicU64::new(snapshot_keys),
            compactions: AtomicU64::new(0),
            last_compaction_time: AtomicU64::new(0),
            last_compaction_ms: AtomicU64::new(0),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// What start-up recovery found.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Starts snapshot `generation` (what [`Journal::rotate`] returned).
    pub fn start_snapshot(&self, generation: u64, next_token: u64) -> Result<SnapshotWriter, PersistError> {
        SnapshotWriter::create(Arc::clone(&self.dir), generation, next_token)
    }

    /// Records a compaction that put `written` in place, and removes the files it made obsolete.
    pub fn compaction_done(&self, generation: u64, written: Written, took: Duration) {
        self.dir.remove_older_than(generation);
        self.snapshot_bytes.store(written.bytes, Ordering::Relaxed);
        self.snapshot_keys.store(written.keys, Ordering::Relaxed);
        self.compactions.fetch_add(1, Ordering::Relaxed);
        let now_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        self.last_compaction_time.store(now_s, Ordering::Relaxed);
        self.last_compaction_ms.store(took.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether start-up replayed more than `--compact-min` of log: then a compaction soon after start
    /// spares the next start the same replay (a log of new keys alone never reaches twice the live data,
    /// and replaying it costs about four times as long as loading a snapshot of the same keys).
    pub fn long_replay(&self) -> bool {
        self.recovered.log_bytes > self.options.compact_min
    }

    /// Whether the log is due for compaction, for a pool state of `keys` keys: past `--compact-min` and
    /// twice what a snapshot of those keys would take (estimated from the last one).
    pub fn compaction_due(&self, keys: usize) -> bool {
        let log_bytes = self.journal.counters.log_bytes.load(Ordering::Relaxed);
        let snapshot_keys = self.snapshot_keys.load(Ordering::Relaxed);
        // Before the first snapshot, a generous guess: an image without a secret is about 60 bytes.
        let per_key = self.snapshot_bytes.load(Ordering::Relaxed).checked_div(snapshot_keys).unwrap_or(64);
        log_bytes > self.options.compact_min && log_bytes > 2 * per_key.max(1) * keys as u64
    }

    pub fn figures(&self) -> Figures {
        let counters = &self.journal.counters;
        Figures {
            log_bytes: counters.log_bytes.load(Ordering::Relaxed),
            snapshot_bytes: self.snapshot_bytes.load(Ordering::Relaxed),
            snapshot_keys: self.snapshot_keys.load(Ordering::Relaxed),
            records_written: counters.records.load(Ordering::Relaxed),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            write_failures: counters.failures.load(Ordering::Relaxed),
            failed: self.journal.failed(),
            compactions: self.compactions.load(Ordering::Relaxed),
            last_compaction_time: self.last_compaction_time.load(Ordering::Relaxed),
            last_compaction_ms: self.last_compaction_ms.load(Ordering::Relaxed),
            recovery_ms: self.recovered.took.as_millis() as u64,
        }
    }

    /// Writes and syncs everything logged, and stops the writer thread. Call once serving has stopped.
    pub fn stop(&self) {
        self.journal.stop();
        let writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
            self.dir.unlock();
        }
    }
}

impl Drop for Persistence {
    /// A daemon dropped without [`Persistence::stop`] (a test, a failed start) still gets its log written
    /// and its writer thread ended.
    fn drop(&mut self) {
        self.stop();
    }
}
