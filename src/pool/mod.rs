//! The engine: one pool of keys, its free list, its leases and its timers. No I/O, no sockets, no locks.
//!
//! Every operation is O(1) (expected, for the hash lookups) in the number of keys:
//!
//! - keys live in a [`Slab`] and are named inside the engine by their slot number;
//! - an [`IdIndex`] maps ids to slots without storing ids twice;
//! - a [`FreeList`] holds the free slots, and each free record knows its position there, so GET draws a
//!   uniformly random position and swap-removes it, and REL/DEL remove a given key without a search;
//! - a lease table holds what only leased keys need: their block deadline and the handle of its timer;
//! - a [`KeepaliveList`] orders all keys by keep-alive deadline, with a single timer for its head;
//! - one `tokio_util::time::DelayQueue` holds every timer: one per lease, plus the keep-alive head's.
//!
//! Timers are cancelled when what they guard goes away (REL cancels the lease's timer, DEL cancels it
//! too), so a timer that fires always applies. The keep-alive head timer is the exception by design: it
//! is not moved when the head is pinged or deleted, only re-armed when it fires, so PING and DEL never
//! touch the timer wheel. Its invariant: while the list is not empty, it is armed no later than the
//! head's deadline. An early firing just re-arms it, which is O(1) and happens at most once per change
//! of head.
//!
//! Timers are never set more than a day ahead (see [`TIMER_HORIZON`]); a longer window is re-armed when
//! its timer fires, which keeps every deadline within the timer wheel's reach.
//!
//! Deadlines are exact even when the expiry task runs late (a slice of a mass expiry, a busy machine):
//! a command that finds its key past a deadline applies that deadline first, so it never pings a key
//! that should be gone, and GET never hands one out.
//!
//! The owner (the server) keeps the pool behind a mutex and drives [`Pool::poll_expired`] from a
//! background task; methods that set timers must be called inside a tokio runtime.

mod clock;
mod free_list;
mod index;
mod keepalive;
mod key_id;
mod record;

use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::RngExt;
use slab::Slab;
use tokio_util::time::delay_queue::{self, DelayQueue};

pub use clock::{Clock, Millis};
pub use key_id::{KeyId, KeyIdGenerator, KEY_ID_LEN};
pub use record::{KeyInfo, KeyState};

use free_list::FreeList;
use index::IdIndex;
use keepalive::KeepaliveList;
use record::{KeyRecord, Links, Place, Slot};

/// The most keys one GEN may create.
pub const MAX_GEN_COUNT: u32 = 10_000;

/// The most timer events [`Pool::poll_expired`] applies per call, so that a mass expiry (a million keys
/// generated in one burst all expiring in the same millisecond) holds the lock in short slices and lets
/// clients in between.
const EXPIRY_BUDGET: usize = 1024;

/// How far ahead any timer is set. tokio-util's `DelayQueue` can only reach about 2^36 ms (795 days)
/// past the deadline of the last timer it fired, and panics beyond that. So a deadline further out than
/// this is armed at the horizon and re-armed when it fires, and a heartbeat timer, armed from the start,
/// keeps the wheel moving at least this often even in an idle pool. Timers re-armed while firing count
/// their horizon from the deadline that fired, so a clock that jumps far ahead is caught up a horizon at
/// a time rather than overrunning the wheel.
const TIMER_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// How many keys past their keep-alive deadline one GET may draw (and delete) before it gives up and
/// answers that no key is free. Only a mass expiry still being applied makes a draw meet such a key; the
/// cap keeps a single GET's work, and its hold on the lock, bounded even then.
const MAX_DEAD_DRAWS: usize = 16;

/// The largest pool the engine can index: slots are `u32` and `u32::MAX` marks "no slot".
pub const MAX_POOL_KEYS: usize = (Slot::MAX - 1) as usize;

/// How a pool behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// How long a GET blocks a key before it is released by itself.
    pub block_timeout: Duration,
    /// How long a key lives without a GEN or PING before it is deleted.
    pub keepalive_timeout: Duration,
    /// The most keys the pool may hold; at most [`MAX_POOL_KEYS`].
    pub max_keys: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            block_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(300),
            max_keys: 10_000_000,
        }
    }
}

/// Why the pool refused a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// Creating the keys asked for would take the pool past its `max_keys`.
    #[error("pool full")]
    Full,
}

/// The outcome of a release.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Release {
    /// The key was blocked and is now free.
    Released,
    /// The key exists and was already free.
    NotBlocked,
    /// No such key.
    NotFound,
}

/// Counts and running totals, for STATS.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct PoolStats {
    pub keys: usize,
    pub keys_free: usize,
    pub keys_blocked: usize,
    pub keys_generated: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub released_by_timeout: u64,
    pub expired_keepalive: u64,
}

/// What only a leased key needs.
#[derive(Debug)]
struct Lease {
    slot: Slot,
    until: Millis,
    timer: delay_queue::Key,
}

/// What a timer in the wheel stands for.
#[derive(Debug)]
enum Timer {
    /// The block window of this lease has passed.
    LeaseEnds { lease: u32 },
    /// The keep-alive list's head may have expired.
    KeepaliveHead,
    /// Nothing to apply: keeps the timer wheel within reach of new deadlines (see [`TIMER_HORIZON`]).
    Heartbeat,
}

/// One pool of keys. See the module documentation for its shape and invariants.
pub struct Pool {
    config: PoolConfig,
    clock: Clock,
    keys: Slab<KeyRecord>,
    index: IdIndex,
    free: FreeList,
    leases: Slab<Lease>,
    keepalive: KeepaliveList,
    keepalive_timer: Option<delay_queue::Key>,
    timers: DelayQueue<Timer>,
    ids: KeyIdGenerator,
    chooser: SmallRng,
    stats: PoolStats,
}

impl Pool {
    /// An empty pool whose clock starts now, with ids from the operating system's entropy.
    ///
    /// Like every method that sets timers, this must run inside a tokio runtime.
    pub fn new(config: PoolConfig) -> Pool {
        Pool::with_id_generator(config, KeyIdGenerator::from_os_entropy())
    }

    /// An empty pool drawing ids from `ids` (tests use a seeded generator).
    pub fn with_id_generator(mut config: PoolConfig, ids: KeyIdGenerator) -> Pool {
        config.max_keys = config.max_keys.min(MAX_POOL_KEYS);
        let clock = Clock::start();
        let mut timers = DelayQueue::new();
        timers.insert_at(Timer::Heartbeat, clock.instant(Millis(0).after(TIMER_HORIZON)));
        Pool {
            config,
            clock,
            keys: Slab::new(),
            index: IdIndex::default(),
            free: FreeList::default(),
            leases: Slab::new(),
            keepalive: KeepaliveList::default(),
            keepalive_timer: None,
            timers,
            ids,
            chooser: rand::make_rng(),
            stats: PoolStats::default(),
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Creates `count` new free keys, calling `each` with every new id in order. All or nothing: if the
    /// keys would not fit under `max_keys`, nothing is created. O(count).
    pub fn generate(&mut self, count: u32, mut each: impl FnMut(&KeyId)) -> Result<(), PoolError> {
        let count = count as usize;
        if self.keys.len().saturating_add(count) > self.config.max_keys {
            return Err(PoolError::Full);
        }
        let now = self.clock.now();
        let alive_until = now.after(self.config.keepalive_timeout);
        for _ in 0..count {
            let id = self.fresh_id();
            let slot = self.insert_free_key(id, now, alive_until);
            self.keepalive.push_back(&mut self.keys, slot);
            each(&id);
        }
        self.stats.keys_generated += count as u64;
        self.arm_keepalive_timer_if_idle(now);
        Ok(())
    }

    /// Leases a uniformly random free key for the pool's block window. `None` when no key is free.
    ///
    /// Never hands out a key past its keep-alive deadline. While a mass expiry is still being applied,
    /// a drawn key may be one: it is deleted (with, the first time, a bounded slice of the backlog) and
    /// another is drawn, at most [`MAX_DEAD_DRAWS`] times before the GET counts as a miss.
    pub fn get(&mut self) -> Option<KeyId> {
        let now = self.clock.now();
        let mut dead_draws = 0;
        let slot = loop {
            if self.free.is_empty() || dead_draws == MAX_DEAD_DRAWS {
                self.stats.get_misses += 1;
                return None;
            }
            let position = self.chooser.random_range(0..self.free.len());
            let slot = self.free.get(position as u32).expect("position drawn below the list's length");
            if self.keys[slot as usize].alive_until > now {
                break self.take_from_free_list(position as u32);
            }
            // Work the expiry task would have done anyway, done now so that no dead key is handed out.
            self.expire_key(slot);
            if dead_draws == 0 {
                self.expire_keepalive_heads(EXPIRY_BUDGET);
            }
            dead_draws += 1;
        };
        let until = now.after(self.config.block_timeout);
        let lease = self.leases.vacant_key() as u32;
        let timer = self.arm(Timer::LeaseEnds { lease }, until, now);
        self.leases.insert(Lease { slot, until, timer });
        let record = &mut self.keys[slot as usize];
        record.place = Place::Blocked { lease };
        record.leases = record.leases.saturating_add(1);
        self.stats.get_hits += 1;
        Some(record.id)
    }

    /// Releases a blocked key so it can be leased again.
    pub fn release(&mut self, id: &KeyId) -> Release {
        let Some(slot) = self.find_live(id) else {
            return Release::NotFound;
        };
        match self.keys[slot as usize].place {
            Place::Free { .. } => Release::NotBlocked,
            Place::Blocked { lease } => {
                let lease = self.leases.remove(lease as usize);
                self.timers.remove(&lease.timer);
                self.put_on_free_list(slot);
                Release::Released
            }
        }
    }

    /// Deletes a key, free or blocked, for good. `false` when there is no such key.
    pub fn delete(&mut self, id: &KeyId) -> bool {
        match self.find_live(id) {
            Some(slot) => {
                self.remove_key(slot);
                true
            }
            None => false,
        }
    }

    /// Restarts a key's keep-alive window. Does not touch its block. `false` when there is no such key.
    pub fn keep_alive(&mut self, id: &KeyId) -> bool {
        let Some(slot) = self.find_live(id) else {
            return false;
        };
        self.keys[slot as usize].alive_until = self.clock.now().after(self.config.keepalive_timeout);
        // Every key shares one window and time only moves forward, so the pinged key now has the latest
        // deadline of all: the tail is its place, and the list stays sorted.
        self.keepalive.move_to_back(&mut self.keys, slot);
        true
    }

    /// What there is to know about one key, or `None` if there is no such key. Like every command that
    /// names a key, it first applies a deadline of the key's that has passed (and counts it).
    pub fn info(&mut self, id: &KeyId) -> Option<KeyInfo> {
        let slot = self.find_live(id)?;
        let record = &self.keys[slot as usize];
        let (state, blocked_until_ms) = match record.place {
            Place::Free { .. } => (KeyState::Free, None),
            Place::Blocked { lease } => {
                (KeyState::Blocked, Some(self.clock.unix_ms(self.leases[lease as usize].until)))
            }
        };
        Some(KeyInfo {
            id: record.id,
            state,
            created_ms: self.clock.unix_ms(record.created),
            alive_until_ms: Some(self.clock.unix_ms(record.alive_until)),
            blocked_until_ms,
            token: None,
            free_at_ms: None,
            leases: record.leases,
        })
    }

    /// Counts and totals. O(1).
    pub fn stats(&self) -> PoolStats {
        PoolStats { keys: self.keys.len(), keys_free: self.free.len(), keys_blocked: self.leases.len(), ..self.stats }
    }

    /// Applies the timers that are due: leases whose block window passed become free, keys whose
    /// keep-alive window passed are deleted.
    ///
    /// Returns `Ready(n)` after doing `n > 0` units of work (at most about [`EXPIRY_BUDGET`]; call again
    /// for more), or `Pending` when nothing is due, in which case the task in `cx` is woken when
    /// something may be. A new timer earlier than all others wakes it too (the `DelayQueue` sees to it),
    /// so the owner needs no extra notification.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        let mut work = 0;
        while work < EXPIRY_BUDGET {
            let Poll::Ready(Some(expired)) = self.timers.poll_expired(cx) else {
                break;
            };
            work += 1;
            let fired = self.clock.millis_at(expired.deadline());
            match expired.into_inner() {
                Timer::LeaseEnds { lease } => self.on_lease_timer(lease, fired),
                Timer::KeepaliveHead => {
                    self.keepalive_timer = None;
                    work += self.expire_keepalive_heads(EXPIRY_BUDGET - work.min(EXPIRY_BUDGET));
                    self.arm_keepalive_timer_if_idle(fired);
                }
                Timer::Heartbeat => {
                    self.arm(Timer::Heartbeat, fired.after(TIMER_HORIZON), fired);
                }
            }
        }
        if work > 0 {
            Poll::Ready(work)
        } else {
            Poll::Pending
        }
    }

    /// The slot of `id` if that key is live. A deadline of the key's that has passed but that the expiry
    /// task has not applied yet is applied first, so no command acts on a key that should already be
    /// deleted, or treats a lease as held past its window.
    fn find_live(&mut self, id: &KeyId) -> Option<Slot> {
        let slot = self.index.find(&self.keys, id)?;
        let now = self.clock.now();
        if self.keys[slot as usize].alive_until <= now {
            self.expire_key(slot);
            return None;
        }
        if let Place::Blocked { lease } = self.keys[slot as usize].place {
            if self.leases[lease as usize].until <= now {
                let timer = self.time_out_lease(lease);
                self.timers.remove(&timer);
            }
        }
        Some(slot)
    }

    /// Sets a timer for `at`, or for [`TIMER_HORIZON`] after `base` if `at` is further out (whoever
    /// handles the timer then re-arms it). `base` is now for a command, and the deadline that fired for
    /// a timer re-armed while firing.
    fn arm(&mut self, timer: Timer, at: Millis, base: Millis) -> delay_queue::Key {
        self.timers.insert_at(timer, self.clock.instant(at.min(base.after(TIMER_HORIZON))))
    }

    fn fresh_id(&mut self) -> KeyId {
        // A collision among 142-bit random ids will not happen in practice; checking costs one lookup
        // and makes "never two live keys with one id" a guarantee instead of a probability.
        loop {
            let id = self.ids.next_id();
            if self.index.find(&self.keys, &id).is_none() {
                return id;
            }
        }
    }

    fn insert_free_key(&mut self, id: KeyId, now: Millis, alive_until: Millis) -> Slot {
        let entry = self.keys.vacant_entry();
        let slot = entry.key() as Slot;
        let position = self.free.push(slot);
        entry.insert(KeyRecord {
            id,
            links: Links::UNLINKED,
            place: Place::Free { position },
            leases: 0,
            created: now,
            alive_until,
        });
        self.index.insert(&self.keys, slot);
        slot
    }

    /// Takes the free key at `position` off the free list, fixing up the key moved into its place.
    /// The caller gives the key its new place.
    fn take_from_free_list(&mut self, position: u32) -> Slot {
        let removed = self.free.remove_at(position);
        if let Some(moved) = removed.moved {
            self.keys[moved as usize].place = Place::Free { position };
        }
        removed.slot
    }

    fn put_on_free_list(&mut self, slot: Slot) {
        let position = self.free.push(slot);
        self.keys[slot as usize].place = Place::Free { position };
    }

    /// Removes every trace of the key in `slot`: its lease and lease timer, its free-list entry, its
    /// list links, its index entry, and finally the record (last, because the others read its id).
    fn remove_key(&mut self, slot: Slot) {
        match self.keys[slot as usize].place {
            Place::Free { position } => {
                let taken = self.take_from_free_list(position);
                debug_assert_eq!(taken, slot);
            }
            Place::Blocked { lease } => {
                let lease = self.leases.remove(lease as usize);
                self.timers.remove(&lease.timer);
            }
        }
        self.keepalive.unlink(&mut self.keys, slot);
        let id = self.keys[slot as usize].id;
        let indexed = self.index.remove(&self.keys, &id);
        debug_assert_eq!(indexed, Some(slot));
        self.keys.remove(slot as usize);
    }

    /// A lease's timer fired: the wheel has already dropped it. Every other way a lease ends removes its
    /// timer first, so the lease is live; its window has passed unless the timer was capped at the horizon.
    fn on_lease_timer(&mut self, lease: u32, fired: Millis) {
        let until = self.leases[lease as usize].until;
        if until > self.clock.now() {
            self.leases[lease as usize].timer = self.arm(Timer::LeaseEnds { lease }, until, fired);
            return;
        }
        self.time_out_lease(lease);
    }

    /// Ends a lease whose block window has passed, and counts it. Returns its timer, as [`Self::end_lease`].
    fn time_out_lease(&mut self, lease: u32) -> delay_queue::Key {
        self.stats.released_by_timeout += 1;
        self.end_lease(lease)
    }

    /// Ends a lease and frees its key. Returns the lease's timer, which the caller cancels unless it is
    /// the one that just fired.
    fn end_lease(&mut self, lease: u32) -> delay_queue::Key {
        let Lease { slot, timer, .. } = self.leases.remove(lease as usize);
        debug_assert_eq!(self.keys[slot as usize].place, Place::Blocked { lease });
        self.put_on_free_list(slot);
        timer
    }

    /// Deletes a key whose keep-alive window has passed. If it was leased and the lease's window ended
    /// first, the lease counts as ended by timeout too: the counters come out the same whether the
    /// expiry task applied the two deadlines one by one or, running late, both at once.
    fn expire_key(&mut self, slot: Slot) {
        let record = &self.keys[slot as usize];
        if let Place::Blocked { lease } = record.place {
            if self.leases[lease as usize].until <= record.alive_until {
                self.stats.released_by_timeout += 1;
            }
        }
        self.remove_key(slot);
        self.stats.expired_keepalive += 1;
    }

    /// Deletes keys from the head of the keep-alive list while their deadline has passed, at most
    /// `budget` of them. Returns how many it deleted.
    fn expire_keepalive_heads(&mut self, budget: usize) -> usize {
        let now = self.clock.now();
        let mut expired = 0;
        while expired < budget {
            match self.keepalive.head() {
                Some(head) if self.keys[head as usize].alive_until <= now => {
                    self.expire_key(head);
                    expired += 1;
                }
                _ => break,
            }
        }
        expired
    }

    /// Arms the keep-alive timer for the head's deadline, unless it is already armed (then it is armed
    /// no later than the head's deadline, which is all the invariant asks) or the list is empty.
    fn arm_keepalive_timer_if_idle(&mut self, base: Millis) {
        if self.keepalive_timer.is_some() {
            return;
        }
        if let Some(head) = self.keepalive.head() {
            let at = self.keys[head as usize].alive_until;
            self.keepalive_timer = Some(self.arm(Timer::KeepaliveHead, at, base));
        }
    }
}

#[cfg(test)]
impl Pool {
    /// Walks the whole pool and panics unless every structure agrees with every other. O(n): tests only.
    fn check_invariants(&self) {
        assert_eq!(self.index.len(), self.keys.len(), "every key is indexed once");
        assert_eq!(self.free.len() + self.leases.len(), self.keys.len(), "every key is free or leased");
        for (slot, record) in &self.keys {
            let slot = slot as Slot;
            assert_eq!(self.index.find(&self.keys, &record.id), Some(slot), "index finds {slot}");
            match record.place {
                Place::Free { position } => assert_eq!(self.free.get(position), Some(slot)),
                Place::Blocked { lease } => assert_eq!(self.leases[lease as usize].slot, slot),
            }
        }
        let mut walked = 0;
        let mut previous: Option<Slot> = None;
        let mut cursor = self.keepalive.head();
        while let Some(slot) = cursor {
            let record = &self.keys[slot as usize];
            assert_eq!(record.links.prev, previous.unwrap_or(record::NIL));
            if let Some(previous) = previous {
                assert!(self.keys[previous as usize].alive_until <= record.alive_until, "list sorted");
            }
            walked += 1;
            previous = Some(slot);
            cursor = (record.links.next != record::NIL).then_some(record.links.next);
        }
        assert_eq!(walked, self.keys.len(), "every key is on the keep-alive list once");
        if let Some(head) = self.keepalive.head() {
            let timer = self.keepalive_timer.as_ref().expect("a non-empty list has its timer armed");
            let head_deadline = self.clock.instant(self.keys[head as usize].alive_until);
            assert!(self.timers.deadline(timer) <= head_deadline, "the timer is armed no later than the head");
        }
    }
}

#[cfg(test)]
mod tests;
