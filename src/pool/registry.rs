//! Named pools: a team's pools side by side in one daemon, each with its own keys, timers, limits and
//! counters, created by first use and dropped once nothing is left in them.
//!
//! Pools are kept in a slab and named inside the daemon by a [`PoolRef`]: the slab index plus a serial
//! number, so that a reference kept across requests (a connection's current pool, a waiting request's
//! pool) notices when its pool was dropped, even if a new pool took the same index. Finding a pool by
//! reference is an index and a compare; by name, one hash lookup (names are client-chosen, so std's
//! keyed SipHash).
//!
//! Every pool has a timer wheel of its own, driven by its own expiry task, which the owner starts when
//! [`Pools::get_or_create`] reports a new pool; the task ends when [`Pools::poll_expired`] answers that
//! the pool is gone. Pools share one [`TokenCounter`], so fencing tokens grow daemon-wide.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::{ChangeLog, KeyIdGenerator, Pool, PoolConfig, PoolStats, Restored, TokenCounter};

/// The pool a connection starts in.
pub const DEFAULT_POOL: &str = "default";

/// The longest pool name.
pub const MAX_POOL_NAME: usize = 64;

/// Whether `name` is a valid pool name: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn valid_pool_name(name: &[u8]) -> bool {
    (1..=MAX_POOL_NAME).contains(&name.len())
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A pool, named by slab index and serial number; stale once the pool is dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PoolRef {
    index: u32,
    serial: u64,
}

/// Why a pool could not be created.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolsError {
    /// The daemon holds `--max-pools` pools already.
    #[error("too many pools")]
    TooMany,
}

struct Entry {
    name: Box<str>,
    serial: u64,
    pool: Pool,
    /// The pool's expiry task, woken when the pool is dropped so that it can end.
    expiry: Option<Waker>,
}

/// Every pool of the daemon.
pub struct Pools {
    config: PoolConfig,
    max_pools: usize,
    entries: Slab<Entry>,
    by_name: HashMap<Box<str>, u32>,
    next_serial: u64,
    tokens: TokenCounter,
    /// The running totals of pools that were dropped, so that daemon-wide counters never go down.
    retired: PoolStats,
    /// Where every pool reports its changes, if the daemon keeps them on disk.
    log: Option<Arc<dyn ChangeLog>>,
}

impl Pools {
    /// No pools yet; each pool made later gets `config`. At most `max_pools` pools at once.
    pub fn new(config: PoolConfig, max_pools: usize) -> Pools {
        Pools {
            config,
            max_pools,
            entries: Slab::new(),
            by_name: HashMap::new(),
            next_serial: 0,
            tokens: TokenCounter::default(),
            retired: PoolStats::default(),
            log: None,
        }
    }

    /// Makes every pool report its changes to `log`, those that exist and those made later.
    pub fn set_change_log(&mut self, log: Arc<dyn ChangeLog>) {
        for (_, entry) in &mut self.entries {
            entry.pool.set_change_log(Arc::clone(&log), &entry.name);
        }
        self.log = Some(log);
    }

    /// The pool named `name` for [`Pool::restore`], created if need be, whatever `max_pools` says: what
    /// was stored is restored. Call before serving, then [`Self::finish_restore`].
    pub fn restore_pool(&mut self, name: &str) -> &mut Pool {
        let index = match self.by_name.get(name) {
            Some(&index) => index,
            None => self.insert(name),
        };
        &mut self.entries[index as usize].pool
    }

    /// Indexes the keys loaded from a snapshot, in every pool (see [`Pool::index_snapshot_keys`]): call
    /// once the snapshot is loaded, before anything looks keys up.
    pub fn index_snapshot_keys(&mut self) {
        for (_, entry) in &mut self.entries {
            entry.pool.index_snapshot_keys();
        }
    }

    /// Puts every restored pool in service (see [`Pool::finish_restore`]), drops those left empty, and
    /// makes every token handed out from now on larger than `highest_token`. Returns the totals.
    pub fn finish_restore(&mut self, highest_token: u64) -> Restored {
        self.tokens.raise_above(highest_token);
        let mut totals = Restored::default();
        let mut empty = Vec::new();
        for (index, entry) in &mut self.entries {
            let restored = entry.pool.finish_restore();
            totals.keys += restored.keys;
            totals.expired += restored.expired;
            totals.leases_ended += restored.leases_ended;
            if entry.pool.is_idle() {
                empty.push(PoolRef { index: index as u32, serial: entry.serial });
            }
        }
        for pool in empty {
            self.drop_if_idle(pool);
        }
        totals
    }

    /// Every pool, by reference and name: what an owner starting the pools' expiry tasks, or walking
    /// them for a snapshot, needs. O(pools).
    pub fn list(&self) -> Vec<(PoolRef, Box<str>)> {
        self.entries
            .iter()
            .map(|(index, entry)| (PoolRef { index: index as u32, serial: entry.serial }, entry.name.clone()))
            .collect()
    }

    /// The token the next lease will get: every token handed out so far is smaller.
    pub fn next_token(&self) -> u64 {
        self.tokens.next()
    }

    /// The configuration every pool gets.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// How many pools exist.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no pool exists.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pool named `name`, if it exists.
    pub fn find(&self, name: &str) -> Option<PoolRef> {
        let index = *self.by_name.get(name)?;
        Some(PoolRef { index, serial: self.entries[index as usize].serial })
    }

    /// `cached` if it still names the pool, else the pool named `name`: what a connection that remembers
    /// its pool's reference uses, so that most requests skip the hash lookup.
    pub fn resolve(&self, cached: Option<PoolRef>, name: &str) -> Option<PoolRef> {
        match cached {
            Some(pool) if self.entry(pool).is_some() => Some(pool),
            _ => self.find(name),
        }
    }

    /// The pool `pool` names, unless it was dropped.
    pub fn get(&mut self, pool: PoolRef) -> Option<&mut Pool> {
        self.entries
            .get_mut(pool.index as usize)
            .filter(|entry| entry.serial == pool.serial)
            .map(|entry| &mut entry.pool)
    }

    /// The pool `pool` names, unless it was dropped, to read.
    pub fn pool(&self, pool: PoolRef) -> Option<&Pool> {
        self.entry(pool).map(|entry| &entry.pool)
    }

    /// The pool named `name`, created (empty) if there is none. The flag says whether it is new: then its
    /// owner must start its expiry task.
    pub fn get_or_create(&mut self, name: &str) -> Result<(PoolRef, bool), PoolsError> {
        if let Some(pool) = self.find(name) {
            return Ok((pool, false));
        }
        if self.entries.len() >= self.max_pools {
            return Err(PoolsError::TooMany);
        }
        let index = self.insert(name);
        Ok((PoolRef { index, serial: self.entries[index as usize].serial }, true))
    }

    fn insert(&mut self, name: &str) -> u32 {
        let serial = self.next_serial;
        self.next_serial += 1;
        let mut pool = Pool::with_parts(self.config.clone(), KeyIdGenerator::from_os_entropy(), self.tokens.clone());
        if let Some(log) = &self.log {
            pool.set_change_log(Arc::clone(log), name);
        }
        let index = self.entries.insert(Entry { name: name.into(), serial, pool, expiry: None }) as u32;
        self.by_name.insert(name.into(), index);
        tracing::debug!(pool = name, "pool created");
        index
    }

    /// Drops `pool` if it is idle (see [`Pool::is_idle`]); an empty pool costs nothing. Its counters go
    /// into the daemon-wide totals, and its expiry task is woken to end. Returns whether it was dropped.
    pub fn drop_if_idle(&mut self, pool: PoolRef) -> bool {
        let Some(entry) = self.entry(pool) else {
            return false;
        };
        if !entry.pool.is_idle() {
            return false;
        }
        let entry = self.entries.remove(pool.index as usize);
        self.by_name.remove(&entry.name);
        self.retired.add(&entry.pool.stats());
        if let Some(expiry) = entry.expiry {
            expiry.wake();
        }
        tracing::debug!(pool = &*entry.name, "pool dropped");
        true
    }

    /// Drives `pool`'s timers, as [`Pool::poll_expired`]; `Ready(None)` once the pool is gone (dropped
    /// here if the expiry left it idle), which ends its expiry task.
    pub fn poll_expired(&mut self, pool: PoolRef, cx: &mut Context<'_>) -> Poll<Option<usize>> {
        let Some(entry) = self.entries.get_mut(pool.index as usize).filter(|entry| entry.serial == pool.serial) else {
            return Poll::Ready(None);
        };
        if !entry.expiry.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            entry.expiry = Some(cx.waker().clone());
        }
        match entry.pool.poll_expired(cx) {
            Poll::Ready(work) => {
                if self.drop_if_idle(pool) {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(work))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Counts a GET or LEASE answered `NOT_FOUND` because its pool does not exist, so that the daemon's
    /// `get_misses` counts every such answer.
    pub fn count_miss_without_pool(&mut self) {
        self.retired.get_misses += 1;
    }

    /// Figures summed over every pool there is and ever was. O(pools).
    pub fn totals(&self) -> PoolStats {
        let mut totals = self.retired;
        for (_, entry) in &self.entries {
            totals.add(&entry.pool.stats());
        }
        totals
    }

    /// Calls `each` with the name and key count of up to `limit` pools, starting at `cursor` (0 to
    /// begin). Returns the cursor to continue from, or 0 when the listing is complete. A pool that exists
    /// throughout a listing is listed once; one created or dropped meanwhile may or may not be. Looks at
    /// no more than `4 * limit` slots, so a page costs O(limit) however many pools there are.
    pub fn page(&self, cursor: u64, limit: usize, mut each: impl FnMut(&str, usize)) -> u64 {
        let end = self.entries.capacity();
        let mut at = usize::try_from(cursor).unwrap_or(usize::MAX);
        let mut listed = 0;
        let mut looked = 0;
        while at < end && listed < limit && looked < 4 * limit {
            if let Some(entry) = self.entries.get(at) {
                each(&entry.name, entry.pool.stats().keys);
                listed += 1;
            }
            at += 1;
            looked += 1;
        }
        if at >= end {
            0
        } else {
            at as u64
        }
    }

    fn entry(&self, pool: PoolRef) -> Option<&Entry> {
        self.entries.get(pool.index as usize).filter(|entry| entry.serial == pool.serial)
    }
}
