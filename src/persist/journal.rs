//! The log's front half and back half: pools append records to a buffer under the daemon's lock, and one
//! writer thread moves them to the log file and syncs it, as the fsync policy says.
//!
//! Appending costs an encode and an uncontended mutex (the daemon's lock already orders every caller);
//! the disk is never touched on a client's path. Positions are byte counts of everything ever appended,
//! across log files, so "my records are durable" is one comparison: a connection notes the position after
//! its batch and, under `--fsync always`, waits until the writer has synced past it before it sends the
//! replies. Many connections wait on one sync: whatever the writer finds in the buffer when it wakes is
//! written and covered by a single `fdatasync` (group commit), and what arrives meanwhile goes in the next.
//!
//! Under `everysec` and `no`, the writer hands the buffer to the kernel every [`WRITE_INTERVAL`] and
//! nobody waits; `everysec` syncs once a second.
//!
//! A write or sync that fails (disk full, I/O error) keeps the unwritten bytes, marks the journal failed
//! and retries every [`RETRY_INTERVAL`]. While it is failed, the server refuses changes, and connections
//! waiting for durability are told so; the first retry that gets everything onto disk clears it.
//!
//! Compaction starts a new log file with [`Journal::rotate`]: everything appended before goes to the old
//! file, which is synced before the new one is created; everything after goes to the new one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::files::DataDir;
use super::{format, Fsync};
use crate::pool::{Change, ChangeLog};

/// How often the writer hands buffered records to the kernel when nobody asks it to.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(2);

/// How often a failed write or sync is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// How long `everysec` lets written data go unsynced.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How far the log is on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every byte appended before this position is written (and, under `always`, synced).
    pub position: u64,
    /// The last write or sync failed, and the writer is retrying.
    pub failed: bool,
}

/// The waiting side of a durability wait ended without the records reaching the disk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("persistence failure")]
pub struct NotDurable;

/// Counters for STATS.
#[derive(Debug, Default)]
pub struct JournalCounters {
    pub records: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Bytes in the current log file.
    pub log_bytes: AtomicU64,
    /// Writes or syncs that failed.
    pub failures: AtomicU64,
}

/// What the pools have appended and the writer has not taken yet.
#[derive(Default)]
struct Pending {
    /// Records for the current log file.
    buffer: Vec<u8>,
    /// Buffers that end a log file (one per rotation the writer has not reached yet), oldest first.
    sealed: Vec<Vec<u8>>,
    /// The generation records appended now will be in.
    generation: u64,
    appended: u64,
    sync_wanted: bool,
    stop: bool,
}

/// The shared half of the log: what pools append to, and what connections wait on.
pub struct Journal {
    fsync: Fsync,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// `Pending::appended`, readable without the mutex.
    appended: AtomicU64,
    durable: watch::Sender<Durable>,
    failed: AtomicBool,
    pub counters: JournalCounters,
}

impl Journal {
    /// A journal whose records go to log `generation` (already open as `file`, `file_len` bytes long),
    /// with its writer thread started.
    pub fn start(
        fsync: Fsync,
        dir: Arc<DataDir>,
        generation: u64,
        file: File,
        file_len: u64,
    ) -> std::io::Result<(Arc<Journal>, JoinHandle<()>)> {
        let journal = Arc::new(Journal {
            fsync,
            pending: Mutex::new(Pending { generation, ..Pending::default() }),
            wake: Condvar::new(),
            appended: AtomicU64::new(0),
            durable: watch::Sender::new(Durable::default()),
            failed: AtomicBool::new(false),
            counters: JournalCounters::default(),
        });
        journal.counters.log_bytes.store(file_len, Ordering::Relaxed);
        let writer = Writer {
            journal: Arc::clone(&journal),
            dir,
            generation,
            file: Some(file),
            queue: VecDeque::new(),
            written: 0,
            unsynced: false,
            last_sync: Instant::now(),
            spare: Vec::new(),
        };
        let watched = Arc::clone(&journal);
        let thread = std::thread::Builder::new().name("keypool-log".into()).spawn(move || {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run())).is_err() {
                // Nothing will write the log again: refuse changes, and fail the waits rather than hang them.
                watched.failed.store(true, Ordering::Relaxed);
                watched.durable.send_modify(|durable| durable.failed = true);
            }
        })?;
        Ok((journal, thread))
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Bytes appended so far: the position a batch's records end at, read under the daemon's lock.
    pub fn position(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Whether the last write or sync failed: changes are refused until a retry succeeds.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until every record before `position` is on disk (`always`) or written (the others).
    /// Fails if the writer fails first.
    pub async fn wait_durable(&self, position: u64) -> Result<(), NotDurable> {
        let mut durable = self.durable.subscribe();
        if durable.borrow().position >= position {
            return Ok(());
        }
        {
            let mut pending = self.lock();
            pending.sync_wanted = true;
        }
        self.wake.notify_one();
        let reached = match durable.wait_for(|durable| durable.position >= position || durable.failed).await {
            Ok(durable) => durable.position >= position,
            Err(_) => false,
        };
        if reached {
            Ok(())
        } else {
            Err(NotDurable)
        }
    }

    /// Ends the current log file: what was appended so far goes to it, what is appended from now on goes
    /// to the next generation, which this returns. Call with the daemon's lock held, so that no change
    /// falls between the rotation and whatever the caller does next under that lock.
    pub fn rotate(&self) -> u64 {
        let mut pending = self.lock();
        let sealed = std::mem::take(&mut pending.buffer);
        pending.sealed.push(sealed);
        pending.generation += 1;
        let generation = pending.generation;
        drop(pending);
        self.wake.notify_one();
        generation
    }

    /// Writes and syncs everything appended, then stops the writer (join its thread afterwards).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The writer never panics while holding this; if it did, recovering the buffer is still right.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ChangeLog for Journal {
    fn record(&self, pool: &str, change: &Change<'_>) {
        let mut pending = self.lock();
        let before = pending.buffer.len();
        format::put_change(&mut pending.buffer, pool, change);
        pending.appended += (pending.buffer.len() - before) as u64;
        self.appended.store(pending.appended, Ordering::Release);
        drop(pending);
        self.counters.records.fetch_add(1, Ordering::Relaxed);
    }
}

/// Bytes on their way to a log file.
struct Chunk {
    bytes: Vec<u8>,
    /// How many of them are written.
    done: usize,
    /// The log file ends with this chunk: sync it and start the next generation.
    ends_file: bool,
}

/// The writer thread's state.
struct Writer {
    journal: Arc<Journal>,
    dir: Arc<DataDir>,
    /// The generation of `file`.
    generation: u64,
    /// `None` after a rotation whose next file could not be created yet.
    file: Option<File>,
    queue: VecDeque<Chunk>,
    /// Position up to which everything is written.
    written: u64,
    unsynced: bool,
    last_sync: Instant,
    /// An empty buffer to swap in for the pending one, so that appending rarely allocates.
    spare: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let stopping = self.take_pending();
            let outcome = self.write_queue().and_then(|()| self.sync_if_due(stopping));
            match outcome {
                Ok(()) => {
                    if self.journal.failed.swap(false, Ordering::Relaxed) {
                        tracing::warn!("the data directory is writable again; accepting changes");
                    }
                    // Under `always`, written means synced here: `sync_if_due` synced whatever was written.
                    self.publish(Durable { position: self.written, failed: false });
                    if stopping {
                        return;
                    }
                }
                Err(error) => {
                    self.journal.counters.failures.fetch_add(1, Ordering::Relaxed);
                    if !self.journal.failed.swap(true, Ordering::Relaxed) {
                        tracing::error!(%error, dir = %self.dir.path().display(), "cannot write the log; refusing changes until it can");
                    }
                    self.publish(Durable { position: self.written, failed: true });
                    if stopping {
                        tracing::error!("stopping with changes that could not be written to the log");
                        return;
                    }
                    std::thread::sleep(RETRY_INTERVAL);
                }
            }
        }
    }

    /// Tells waiting connections how far the log is, if that changed: waking them for nothing would cost
    /// every one of them a turn.
    fn publish(&self, durable: Durable) {
        self.journal.durable.send_if_modified(|current| std::mem::replace(current, durable) != durable);
    }

    /// Waits for something to do, then moves the pending records into the queue. Returns whether the
    /// journal is stopping.
    fn take_pending(&mut self) -> bool {
        let journal = Arc::clone(&self.journal);
        let mut pending = journal.lock();
        if !journal.failed() {
            let idle = |pending: &Pending| {
                !pending.stop
                    && pending.sealed.is_empty()
                    && (pending.buffer.is_empty() || (journal.fsync == Fsync::Always && !pending.sync_wanted))
            };
            if idle(&pending) {
                // `always` sleeps until a connection asks for a sync; stray records (a key freed by a closing
                // connection) are picked up at the next interval anyway. The others write every interval.
                pending = match journal.wake.wait_timeout(pending, WRITE_INTERVAL) {
                    Ok((pending, _)) => pending,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }
        for sealed in pending.sealed.drain(..) {
            self.queue.push_back(Chunk { bytes: sealed, done: 0, ends_file: true });
        }
        if !pending.buffer.is_empty() {
            let buffer = std::mem::replace(&mut pending.buffer, std::mem::take(&mut self.spare));
            self.queue.push_back(Chunk { bytes: buffer, done: 0, ends_file: false });
        }
        pending.sync_wanted = false;
        pending.stop
    }

    /// Writes the queue out, in order, switching files where a chunk ends one.
    fn write_queue(&mut self) -> std::io::Result<()> {
        while let Some(chunk) = self.queue.front_mut() {
            let file = match &mut self.file {
                Some(file) => file,
                None => self.file.insert(self.dir.create_log(self.generation)?),
            };
            while chunk.done < chunk.bytes.len() {
                let n = file.write(&chunk.bytes[chunk.done..])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                chunk.done += n;
                self.written += n as u64;
                self.unsynced = true;
                self.journal.counters.log_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            if chunk.ends_file {
                file.sync_data()?;
                self.journal.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.unsynced = false;
                self.generation += 1;
                self.file = None;
                let file = self.dir.create_log(self.generation)?;
                self.journal.counters.log_bytes.store(file.metadata()?.len(), Ordering::Relaxed);
                self.file = Some(file);
            }
            if let Some(mut chunk) = self.queue.pop_front() {
                if !chunk.ends_file && chunk.bytes.capacity() <= 1 << 20 {
                    chunk.bytes.clear();
                    self.spare = chunk.bytes;
                }
            }
        }
        Ok(())
    }

    /// Syncs the log file if the policy says it is time.
    fn sync_if_due(&mut self, stopping: bool) -> std::io::Result<()> {
        let due = match self.journal.fsync {
            Fsync::Always => true,
            Fsync::Everysec => self.last_sync.elapsed() >= SYNC_INTERVAL,
            Fsync::No => false,
        };
        if self.unsynced && (due || stopping) {
            if let Some(file) = &self.file {
                file.sync_data()?;
                self.journal.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }
}
