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
//! A write or sync that fails (disk full, I/O error) marks the journal failed and is retried every
//! [`RETRY_INTERVAL`]. While it is failed, the server refuses changes, and connections waiting for
//! durability are told so; the first retry that gets everything onto disk clears it. A failed sync is not
//! simply retried: Linux may drop the dirty pages it could not write and report that only once, so a
//! second `fdatasync` can succeed over a hole (PostgreSQL's "fsyncgate"). Under `always` and `everysec`
//! the writer therefore keeps every chunk until a sync covers it, and after any failure cuts the file
//! back to what the last good sync covered and writes those chunks again. Under `no` nothing is promised
//! about the disk and nothing is kept.
//!
//! Compaction starts a new log file with [`Journal::rotate`]: everything appended before goes to the old
//! file, which is synced before the new one is created; everything after goes to the new one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
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

/// What the writer needs of a log file: a trait so that tests can make a file fail the way a disk does.
pub trait LogFile: Send + 'static {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize>;
    fn sync_data(&mut self) -> std::io::Result<()>;
    /// Cuts the file back to `len` bytes; writing goes on from there.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
    fn len(&self) -> std::io::Result<u64>;
}

/// Where the writer's next log files come from.
pub trait LogDir: Send + Sync + 'static {
    type File: LogFile;
    /// Creates log `generation` with its header, synced, as [`DataDir::create_log`] does.
    fn create_log(&self, generation: u64) -> std::io::Result<Self::File>;
    /// The directory, for error messages.
    fn describe(&self) -> String;
}

impl LogFile for File {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        Write::write(self, bytes)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        // A file opened to append writes at its end anyway; one opened to write needs its cursor moved.
        self.seek(SeekFrom::Start(len)).map(drop)
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl LogDir for DataDir {
    type File = File;

    fn create_log(&self, generation: u64) -> std::io::Result<File> {
        DataDir::create_log(self, generation)
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

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
    pub fn start<D: LogDir>(
        fsync: Fsync,
        dir: Arc<D>,
        generation: u64,
        file: D::File,
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
            written_chunks: 0,
            written: 0,
            synced: 0,
            file_len,
            synced_len: file_len,
            must_rewind: false,
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
struct Writer<D: LogDir> {
    journal: Arc<Journal>,
    dir: Arc<D>,
    /// The generation of `file`.
    generation: u64,
    /// `None` after a rotation whose next file could not be created yet.
    file: Option<D::File>,
    /// Chunks to write, and (under `always` and `everysec`) chunks written but not yet covered by a sync,
    /// which are the first `written_chunks`, all of them in the current file.
    queue: VecDeque<Chunk>,
    written_chunks: usize,
    /// Position up to which everything is written.
    written: u64,
    /// Position up to which everything is synced.
    synced: u64,
    /// The current file's length, and its length when its last sync succeeded.
    file_len: u64,
    synced_len: u64,
    /// A write or sync failed: cut the file back to `synced_len` before writing again.
    must_rewind: bool,
    last_sync: Instant,
    /// An empty buffer to swap in for the pending one, so that appending rarely allocates.
    spare: Vec<u8>,
}

impl<D: LogDir> Writer<D> {
    fn run(mut self) {
        loop {
            let stopping = self.take_pending();
            let outcome =
                self.rewind_if_needed().and_then(|()| self.write_queue()).and_then(|()| self.sync_if_due(stopping));
            match outcome {
                Ok(()) => {
                    if self.journal.failed.swap(false, Ordering::Relaxed) {
                        tracing::warn!("the data directory is writable again; accepting changes");
                    }
                    self.publish(false);
                    if stopping {
                        return;
                    }
                }
                Err(error) => {
                    self.journal.counters.failures.fetch_add(1, Ordering::Relaxed);
                    if !self.journal.failed.swap(true, Ordering::Relaxed) {
                        tracing::error!(%error, dir = %self.dir.describe(), "cannot write the log; refusing changes until it can");
                    }
                    self.must_rewind = self.keeps_chunks();
                    self.publish(true);
                    if stopping {
                        tracing::error!("stopping with changes that could not be written to the log");
                        return;
                    }
                    std::thread::sleep(RETRY_INTERVAL);
                }
            }
        }
    }

    /// Whether written chunks are kept until a sync covers them: under `no`, no sync is promised.
    fn keeps_chunks(&self) -> bool {
        self.journal.fsync != Fsync::No
    }

    /// Tells waiting connections how far the log is, if that changed: waking them for nothing would cost
    /// every one of them a turn. Under `always` that is how far it is synced, so a write that succeeded
    /// under a sync that failed acknowledges nothing. The position never goes back, even when a rewind
    /// takes written bytes back to write them again.
    fn publish(&self, failed: bool) {
        let position = if self.journal.fsync == Fsync::Always { self.synced } else { self.written };
        self.journal.durable.send_if_modified(|current| {
            let durable = Durable { position: position.max(current.position), failed };
            std::mem::replace(current, durable) != durable
        });
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

    /// After a failure: cuts the current file back to what its last good sync covered, and queues what
    /// was written since to be written again.
    fn rewind_if_needed(&mut self) -> std::io::Result<()> {
        if !self.must_rewind {
            return Ok(());
        }
        if let Some(file) = &mut self.file {
            // Cut even when the counts say nothing is past the sync: the file is the authority.
            file.truncate(self.synced_len)?;
            if self.file_len != self.synced_len {
                let rewound = self.file_len - self.synced_len;
                // The chunks written since the sync, and the one that was being written when it failed.
                let mut redone = 0;
                for chunk in self.queue.iter_mut().take(self.written_chunks + 1) {
                    redone += chunk.done as u64;
                    chunk.done = 0;
                }
                debug_assert_eq!(redone, rewound, "the unsynced chunks are what the file holds past its sync");
                self.written -= rewound;
                self.file_len = self.synced_len;
                self.journal.counters.log_bytes.store(self.synced_len, Ordering::Relaxed);
                tracing::warn!(bytes = rewound, "rewriting the log's unsynced tail after a failure");
            }
        }
        self.written_chunks = 0;
        self.must_rewind = false;
        Ok(())
    }

    /// Writes the queue out, in order, switching files where a chunk ends one.
    fn write_queue(&mut self) -> std::io::Result<()> {
        while self.written_chunks < self.queue.len() {
            if self.file.is_none() {
                self.open_next_file()?;
            }
            let (Some(file), Some(chunk)) = (self.file.as_mut(), self.queue.get_mut(self.written_chunks)) else {
                break;
            };
            while chunk.done < chunk.bytes.len() {
                let n = file.write(&chunk.bytes[chunk.done..])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                chunk.done += n;
                self.written += n as u64;
                self.file_len += n as u64;
                self.journal.counters.log_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            if chunk.ends_file {
                // Counted as written only once its sync succeeds: a retry must sync it again and then
                // rotate, under every policy (a rewind covers it as the chunk being written).
                file.sync_data()?;
                self.written_chunks += 1;
                self.journal.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.covered_by_sync();
                self.generation += 1;
                self.file = None;
                self.open_next_file()?;
            } else {
                self.written_chunks += 1;
            }
        }
        if !self.keeps_chunks() {
            self.forget_written();
        }
        Ok(())
    }

    fn open_next_file(&mut self) -> std::io::Result<()> {
        let file = self.dir.create_log(self.generation)?;
        let len = file.len()?;
        self.file = Some(file);
        self.file_len = len;
        self.synced_len = len;
        self.journal.counters.log_bytes.store(len, Ordering::Relaxed);
        Ok(())
    }

    /// A sync just covered everything written: the written chunks are done with.
    fn covered_by_sync(&mut self) {
        self.synced = self.written;
        self.synced_len = self.file_len;
        self.last_sync = Instant::now();
        self.forget_written();
    }

    fn forget_written(&mut self) {
        for chunk in self.queue.drain(..self.written_chunks) {
            if !chunk.ends_file && chunk.bytes.capacity() <= 1 << 20 && self.spare.capacity() == 0 {
                let mut bytes = chunk.bytes;
                bytes.clear();
                self.spare = bytes;
            }
        }
        self.written_chunks = 0;
    }

    /// Syncs the log file if the policy says it is time.
    fn sync_if_due(&mut self, stopping: bool) -> std::io::Result<()> {
        let due = match self.journal.fsync {
            Fsync::Always => true,
            Fsync::Everysec => self.last_sync.elapsed() >= SYNC_INTERVAL,
            Fsync::No => false,
        };
        if self.written != self.synced && (due || stopping) {
            // Bytes are only ever written to an open file, so there is one; if not, saying so beats
            // calling unsynced bytes synced.
            let Some(file) = &mut self.file else {
                return Err(std::io::Error::other("written log records without an open log file"));
            };
            file.sync_data()?;
            self.journal.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.covered_by_sync();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::persist::format::{self, Frame, Record};
    use crate::pool::KeyId;

    /// A log file in memory that fails its next `fail_syncs` syncs the way Linux does after an I/O error:
    /// the bytes written since the last good sync are lost (the file keeps its length, holding zeros), and
    /// only that one sync says so.
    #[derive(Default)]
    struct Disk {
        bytes: Vec<u8>,
        synced: usize,
        fail_syncs: u32,
        syncs: u32,
    }

    /// Log 1, open when the journal starts, and the logs the writer creates after it.
    #[derive(Default)]
    struct FakeDir {
        disk: Arc<Mutex<Disk>>,
        created: Mutex<Vec<(u64, Arc<Mutex<Disk>>)>>,
    }

    struct FakeFile {
        disk: Arc<Mutex<Disk>>,
    }

    impl FakeFile {
        fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
            self.disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    impl LogFile for FakeFile {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.disk().bytes.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn sync_data(&mut self) -> std::io::Result<()> {
            let mut disk = self.disk();
            disk.syncs += 1;
            if disk.fail_syncs > 0 {
                disk.fail_syncs -= 1;
                let synced = disk.synced;
                disk.bytes[synced..].fill(0);
                return Err(std::io::Error::other("injected: the disk lost the unsynced pages"));
            }
            disk.synced = disk.bytes.len();
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            let mut disk = self.disk();
            let len = usize::try_from(len).map_err(std::io::Error::other)?;
            disk.bytes.truncate(len);
            disk.synced = disk.synced.min(len);
            Ok(())
        }

        fn len(&self) -> std::io::Result<u64> {
            Ok(self.disk().bytes.len() as u64)
        }
    }

    impl LogDir for FakeDir {
        type File = FakeFile;

        fn create_log(&self, generation: u64) -> std::io::Result<FakeFile> {
            let mut header = Vec::new();
            format::put_log_header(&mut header, generation);
            let disk = Arc::new(Mutex::new(Disk { synced: header.len(), bytes: header, ..Disk::default() }));
            self.created.lock().expect("the directory").push((generation, Arc::clone(&disk)));
            Ok(FakeFile { disk })
        }

        fn describe(&self) -> String {
            "memory".into()
        }
    }

    /// A journal writing to an empty in-memory log 1, and its directory.
    fn on_fake_disk(fsync: Fsync) -> (Arc<Journal>, JoinHandle<()>, Arc<FakeDir>) {
        let dir = Arc::new(FakeDir::default());
        let file = FakeFile { disk: Arc::clone(&dir.disk) };
        let (journal, writer) = Journal::start(fsync, Arc::clone(&dir), 1, file, 0).expect("a journal");
        (journal, writer, dir)
    }

    /// Waits until the writer has failed at least once and then recovered by itself.
    async fn failed_then_recovered(journal: &Journal) {
        let started = Instant::now();
        while journal.counters.failures.load(Ordering::Relaxed) == 0 || journal.failed() {
            assert!(started.elapsed() < Duration::from_secs(10), "the writer never failed, or never recovered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn id(n: u32) -> KeyId {
        KeyId::parse(format!("{n:024}").as_bytes()).expect("24 digits make an id")
    }

    /// The ids of the DEL records in `bytes`, which must be a log that reads cleanly to its end.
    fn deleted_ids(bytes: &[u8]) -> Vec<KeyId> {
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            match format::next_frame(bytes, offset) {
                Frame::Record(payload, next) => {
                    if let Ok(Record::Change { change: Change::Deleted { id }, .. }) = format::decode(payload) {
                        ids.push(id);
                    }
                    offset = next;
                }
                Frame::End => return ids,
                other => panic!("the log does not read cleanly: {other:?} at offset {offset}"),
            }
        }
    }

    #[tokio::test]
    async fn a_failed_sync_acknowledges_nothing_and_its_lost_bytes_are_written_again() {
        let (journal, writer, dir) = on_fake_disk(Fsync::Always);
        let disk = Arc::clone(&dir.disk);

        journal.record("default", &Change::Deleted { id: id(1) });
        assert_eq!(journal.wait_durable(journal.position()).await, Ok(()));

        // The next sync fails and loses what it was to cover: its waiter is told, not acknowledged.
        disk.lock().expect("the disk").fail_syncs = 1;
        journal.record("default", &Change::Deleted { id: id(2) });
        assert_eq!(journal.wait_durable(journal.position()).await, Err(NotDurable));
        assert!(journal.failed(), "changes are accepted over a failed sync");

        // The writer retries by itself: the lost record is written again, and what follows is durable.
        failed_then_recovered(&journal).await;
        journal.record("default", &Change::Deleted { id: id(3) });
        assert_eq!(journal.wait_durable(journal.position()).await, Ok(()));
        journal.stop();
        writer.join().expect("the writer ends cleanly");

        // A second sync over the hole would have "succeeded" with zeros mid-log; the file is whole instead.
        let disk = disk.lock().expect("the disk");
        assert_eq!(deleted_ids(&disk.bytes), vec![id(1), id(2), id(3)]);
        assert_eq!(disk.synced, disk.bytes.len(), "the log ends unsynced");
        assert!(disk.syncs >= 3, "{} syncs for three groups and a failure", disk.syncs);
    }

    #[tokio::test]
    async fn everysec_rewrites_up_to_a_second_of_written_records_after_a_failed_sync() {
        let (journal, writer, dir) = on_fake_disk(Fsync::Everysec);
        let disk = Arc::clone(&dir.disk);

        // Written (nobody waits under everysec), then lost by the once-a-second sync.
        disk.lock().expect("the disk").fail_syncs = 1;
        for n in 0..50 {
            journal.record("default", &Change::Deleted { id: id(n) });
        }
        failed_then_recovered(&journal).await;
        journal.stop();
        writer.join().expect("the writer ends cleanly");
        let disk = disk.lock().expect("the disk");
        assert_eq!(deleted_ids(&disk.bytes), (0..50).map(id).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failed_sync_at_a_rotation_is_retried_before_the_next_log_is_written() {
        for fsync in [Fsync::No, Fsync::Everysec, Fsync::Always] {
            let (journal, writer, dir) = on_fake_disk(fsync);
            dir.disk.lock().expect("the disk").fail_syncs = 1;
            journal.record("default", &Change::Deleted { id: id(1) });
            assert_eq!(journal.rotate(), 2);
            journal.record("default", &Change::Deleted { id: id(2) });
            failed_then_recovered(&journal).await;
            journal.stop();
            writer.join().expect("the writer ends cleanly");

            // The record made after the rotation is in log 2, and only there.
            let created = dir.created.lock().expect("the directory");
            assert_eq!(created.iter().map(|(generation, _)| *generation).collect::<Vec<_>>(), [2], "{fsync:?}");
            assert_eq!(deleted_ids(&created[0].1.lock().expect("log 2").bytes), [id(2)], "{fsync:?}");
            let old = dir.disk.lock().expect("log 1");
            let second = id(2);
            assert!(!old.bytes.windows(second.as_bytes().len()).any(|w| w == second.as_bytes()), "{fsync:?}");
            // Under `no` nothing was kept to write again; the others rewrote what the failed sync lost.
            if fsync != Fsync::No {
                assert_eq!(deleted_ids(&old.bytes), [id(1)], "{fsync:?}");
            }
        }
    }
}
