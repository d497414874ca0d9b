//! Compaction: a new snapshot, written while commands keep flowing, and a fresh log behind it.
//!
//! Under the daemon's lock, once: the journal starts a new log generation, and the list of pools and the
//! token counter are read. Then each pool is walked by slot in chunks of [`CHUNK_KEYS`], each chunk under
//! its own short hold of the lock, and written to the snapshot outside it. Clients change keys between
//! chunks, so the snapshot is not the state of any one moment; it does not need to be: every change made
//! after the rotation is in the new log, and replaying it over the snapshot gives the state it ends in,
//! because each change states new values rather than differences (see `pool/changes.rs`). A pool made
//! after the rotation is in the new log entirely. The snapshot is renamed into place when complete, and
//! only then are the old log and snapshot removed.
//!
//! Compactions run one at a time, on a thread of their own (the disk writes would stall the runtime).
//! A request while one runs waits for it. One starts by itself when the log passes `--compact-min` and
//! twice the estimated size of a snapshot, checked every [`CHECK_INTERVAL`]; once at start-up if recovery
//! replayed more than `--compact-min` of log; or by `COMPACT`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Shared;
use crate::persist::{format, PersistError, Persistence, CHUNK_BYTES};

/// Keys read out per hold of the lock: about 24 KiB of images, a few tens of microseconds.
const CHUNK_KEYS: usize = 512;

/// How long the walk rests after each chunk, as a multiple of the time the chunk took. On a machine whose
/// cores are all busy serving, a walk that never rests takes half a core from the connections for as
/// long as it runs, and their tail latency shows it; resting twice as long as it works caps it at a third.
const REST_PER_WORK: u32 = 2;

/// How often the log's size is checked against the live data.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a compaction came to, for whoever asked for it.
pub type Outcome = Result<(), String>;

/// Runs compactions one at a time and tells whoever asked how each ended.
#[derive(Default)]
pub struct Compactor {
    /// `Some` while one runs: those waiting for it.
    running: Mutex<Option<Vec<oneshot::Sender<Outcome>>>>,
}

impl Compactor {
    /// Starts a compaction, or joins the one running. The receiver gets its outcome.
    pub fn request(&self, shared: &Arc<Shared>) -> oneshot::Receiver<Outcome> {
        let (tell, outcome) = oneshot::channel();
        let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(waiting) = running.as_mut() {
            waiting.push(tell);
            return outcome;
        }
        if shared.persist.is_none() {
            let _ = tell.send(Err("persistence is not enabled".into()));
            return outcome;
        }
        *running = Some(vec![tell]);
        drop(running);
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new().name("keypool-compact".into()).spawn(move || {
            let result = shared.persist.as_ref().map_or(Ok(()), |persist| compact(&shared, persist));
            let outcome = result.map_err(|error| {
                tracing::error!(%error, "compaction failed; the log goes on growing until one succeeds");
                error.to_string()
            });
            shared.compactor.finish(&outcome);
        });
        if let Err(error) = spawned {
            self.finish(&Err(format!("cannot start the compaction thread: {error}")));
        }
        outcome
    }

    fn finish(&self, outcome: &Outcome) {
        let waiting = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        for tell in waiting.into_iter().flatten() {
            let _ = tell.send(outcome.clone());
        }
    }

    fn is_running(&self) -> bool {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_some()
    }
}

/// Starts compactions by themselves when the log has grown, until the server stops.
pub async fn watch(shared: Arc<Shared>) {
    let Some(persist) = shared.persist.as_ref() else { return };
    if persist.long_replay() {
        tracing::info!("start-up replayed more than --compact-min of log; compacting so the next start need not");
        drop(shared.compactor.request(&shared));
    }
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shared.stopped.cancelled() => return,
        }
        if shared.compactor.is_running() {
            continue;
        }
        let keys = shared.lock().pools.totals().keys;
        if persist.compaction_due(keys) {
            tracing::info!("the log has grown past --compact-min and twice the live data; compacting");
            drop(shared.compactor.request(&shared));
        }
    }
}

/// One compaction, start to end.
fn compact(shared: &Shared, persist: &Persistence) -> Result<(), PersistError> {
    let started = Instant::now();
    let (generation, pools, next_token) = {
        let locked = shared.lock();
        (persist.journal().rotate(), locked.pools.list(), locked.pools.next_token())
    };
    let mut snapshot = persist.start_snapshot(generation, next_token)?;
    // Each chunk's images, cut into records of about CHUNK_BYTES: keys with large secrets make a chunk
    // of keys large, and a record must stay well under the format's limit.
    let mut records: Vec<(u32, Vec<u8>)> = Vec::new();
    for (pool, name) in pools {
        let mut from = Some(0);
        while let Some(start) = from {
            let chunk_started = Instant::now();
            records.clear();
            let mut pool_keys = None;
            {
                let locked = shared.lock();
                let Some(pool) = locked.pools.pool(pool) else { break };
                if start == 0 {
                    pool_keys = Some(pool.stats().keys as u64);
                }
                from = pool.export(start, CHUNK_KEYS, |image| {
                    if records.last().is_none_or(|(_, images)| images.len() >= CHUNK_BYTES) {
                        records.push((0, Vec::with_capacity(CHUNK_BYTES + 1024)));
                    }
                    if let Some((count, images)) = records.last_mut() {
                        format::put_image(images, image);
                        *count += 1;
                    }
                });
            }
            if let Some(keys) = pool_keys {
                snapshot.write_pool(&name, keys)?;
            }
            for (count, images) in &records {
                snapshot.write_keys(&name, *count, images)?;
            }
            std::thread::sleep(chunk_started.elapsed() * REST_PER_WORK);
        }
    }
    let written = snapshot.finish()?;
    let took = started.elapsed();
    persist.compaction_done(generation, written, took);
    tracing::info!(
        generation,
        keys = written.keys,
        snapshot_bytes = written.bytes,
        took_ms = took.as_millis() as u64,
        "compaction done"
    );
    Ok(())
}
