//! The engine: one pool of keys, its free list, its leases, its waiters and its timers. No I/O, no
//! sockets, no locks.
//!
//! Every operation is O(1) (expected, for the hash lookups) in the number of keys:
//!
//! - key records live in [`Records`], a slab of the engine's own, and are named inside the engine by
//!   their slot number;
//! - an [`IdIndex`] maps ids to slots without storing ids twice, one `u64` bucket per id;
//! - a [`FreeList`] holds the free slots, and each free record knows its position there, so GET draws a
//!   uniformly random position and swap-removes it, and REL/DEL remove a given key without a search
//!   (while most slots hold free keys, GET first draws a slot, see [`Pool::draw_by_slot`]);
//! - a small table of recent leases finds most keys a REL names without the index (see `recent.rs`);
//! - a lease table holds what only leased (or delayed) keys need: deadline, how it is timed, fencing
//!   token, and the link on a release-on-close connection's list;
//! - a keep-alive [`List`] orders keys by keep-alive deadline, with a single timer for its head; leases
//!   made on the pool's block window sit on a block list ordered the same way, with a single head timer;
//! - the secret table holds what only imported keys need (see `secrets.rs`);
//! - waiters queue on a list, oldest first, and a freed key goes to the oldest in O(1);
//! - one `tokio_util::time::DelayQueue` holds every timer: the two head timers, one per lease with a
//!   window of its own (`LEASE <wait> <block>`, `TOUCH` with a duration), per delayed release, per waiter
//!   and per key with its own keep-alive window (and, rarely, one that hands free keys to waiters, see
//!   [`Timer::ServeWaiters`]).
//!
//! Every lease gets a fencing token from a counter that only grows, so a token names one lease for the
//! pool's whole life: a holder whose lease ended (it timed out, say, and the key was leased again) is
//! told `STALE` instead of releasing someone else's lease.
//!
//! Timers are cancelled when what they guard goes away (REL cancels the lease's timer, DEL cancels it
//! too), so a timer that fires always applies. The two head timers are the exception by design: they
//! are not moved when their head is pinged, released or deleted, only re-armed when they fire, so PING,
//! DEL and the common GET and REL never touch the timer wheel. Their invariant: while a list is not
//! empty, its timer is armed no later than its head's deadline. An early firing just re-arms it, which is
//! O(1) and happens at most once per change of head.
//!
//! Timers are never set more than a day ahead (see [`TIMER_HORIZON`]); a longer window is re-armed when
//! its timer fires, which keeps every deadline within the timer wheel's reach.
//!
//! Deadlines are exact even when the expiry task runs late (a slice of a mass expiry, a busy machine):
//! a command that finds its key past a deadline applies that deadline first, so it never pings a key
//! that should be gone, GET never hands one out, and a waiter whose wait has run out is not served.
//!
//! A caller with several requests in hand can tell the pool what is coming ([`Pool::prepare`]); the pool
//! then starts loading the memory those requests will touch, so that in a pool far larger than the CPU's
//! caches their cache misses overlap instead of adding up (see `lookahead.rs`). It changes nothing else.
//! The largest arrays (records, free list, index) ask the kernel for 2 MB pages, for the same reason:
//! a random access then seldom misses the TLB too (see `huge_pages.rs`).
//!
//! The owner (the server) keeps the pool behind a mutex and drives [`Pool::poll_expired`] from a
//! background task; methods that set timers must be called inside a tokio runtime.

mod changes;
mod clock;
mod free_list;
mod huge_pages;
mod index;
mod key_id;
mod lease;
mod list;
mod lookahead;
mod prefetch;
mod recent;
mod record;
mod records;
mod registry;
mod restore;
mod secrets;
mod waiters;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::RngExt;
use slab::Slab;
use tokio_util::time::delay_queue::{self, DelayQueue};

pub use changes::{Change, ChangeLog, KeepaliveMode, KeyImage, PlaceImage, NEVER_MS};
pub use clock::{Clock, Millis};
pub use key_id::{KeyId, KeyIdGenerator, KEY_ID_LEN};
pub use lease::{HolderId, LeaseTerms, Leased};
pub use lookahead::Upcoming;
pub use record::{KeyInfo, KeyState};
pub use registry::{valid_pool_name, PoolRef, Pools, PoolsError, DEFAULT_POOL, MAX_POOL_NAME};
pub use restore::Restored;
pub use waiters::{Grant, WaitTicket};

use free_list::FreeList;
use index::IdIndex;
use lease::{ByDeadline, Holder, Lease, Timing};
use list::{Links, List, NIL};
use lookahead::{DrawsAhead, PREPARE_FROM_KEYS};
use recent::RecentLeases;
use record::{KeyRecord, Place, Slot, NO_SECRET};
use records::Records;
use secrets::{OwnKeepalive, SecretEntry, Secrets};
use waiters::{WaitState, Waiter};

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

/// How many keys past their keep-alive deadline one GET may draw from the free list (and delete) before it
/// gives up and answers that no key is free. Only a mass expiry still being applied makes a draw meet such
/// a key; the cap keeps a single GET's work, and its hold on the lock, bounded even then. (A draw by slot
/// that meets one, before these, only passes it over: see [`Pool::draw_by_slot`].)
const MAX_DEAD_DRAWS: usize = 16;

/// The keep-alive deadline of a key that never expires by keep-alive.
const NEVER: Millis = Millis(u64::MAX);

/// The largest pool the engine can index: the id index has at most 2^32 buckets and fills them to three
/// quarters (see `index.rs`). Slots, being `u32`, would allow a little more.
pub const MAX_POOL_KEYS: usize = 3 << 30;

/// How a pool behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// How long a lease blocks a key, unless the lease asks for another window.
    pub block_timeout: Duration,
    /// How long a key lives without a GEN or PING before it is deleted, unless it has its own window.
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

/// What a lease request came to.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseOutcome<'a> {
    /// A free key, leased now.
    Leased(Leased<'a>),
    /// No key was free, and the request would not wait.
    NotFound,
    /// No key was free; the request waits. Collect it with [`Pool::poll_wait`] or drop it with
    /// [`Pool::cancel_wait`].
    Waiting(WaitTicket),
}

/// The outcome of a release (and of a TOUCH, which has the same four answers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Release {
    /// The key was blocked (under the given token, if one was given); done.
    Released,
    /// The key exists and is not blocked (no token was given).
    NotBlocked,
    /// A token was given, and it is not the key's current lease: that lease is over.
    Stale,
    /// No such key.
    NotFound,
}

/// The outcome of an ADD.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Added {
    /// A new key carries the secret.
    New(KeyId),
    /// The pool already had a key with this secret; nothing was created.
    Exists(KeyId),
}

/// Counts and running totals, for STATS.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct PoolStats {
    pub keys: usize,
    pub keys_free: usize,
    pub keys_blocked: usize,
    pub keys_delayed: usize,
    pub waiters: usize,
    pub keys_generated: u64,
    pub keys_added: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub waits_served: u64,
    pub waits_timed_out: u64,
    pub released_by_timeout: u64,
    pub released_by_close: u64,
    pub expired_keepalive: u64,
}

impl PoolStats {
    /// Adds `other`'s figures to these, for totals over several pools.
    pub fn add(&mut self, other: &PoolStats) {
        let PoolStats {
            keys,
            keys_free,
            keys_blocked,
            keys_delayed,
            waiters,
            keys_generated,
            keys_added,
            get_hits,
            get_misses,
            waits_served,
            waits_timed_out,
            released_by_timeout,
            released_by_close,
            expired_keepalive,
        } = *other;
        self.keys += keys;
        self.keys_free += keys_free;
        self.keys_blocked += keys_blocked;
        self.keys_delayed += keys_delayed;
        self.waiters += waiters;
        self.keys_generated += keys_generated;
        self.keys_added += keys_added;
        self.get_hits += get_hits;
        self.get_misses += get_misses;
        self.waits_served += waits_served;
        self.waits_timed_out += waits_timed_out;
        self.released_by_timeout += released_by_timeout;
        self.released_by_close += released_by_close;
        self.expired_keepalive += expired_keepalive;
    }
}

/// What a timer in the wheel stands for.
#[derive(Debug)]
enum Timer {
    /// This lease's block window has passed, or, if its key is delayed, its delay. Only leases with a
    /// window of their own, and delays, have a timer of their own.
    LeaseEnds { lease: u32 },
    /// The block list's head may have ended.
    BlockHead,
    /// The keep-alive list's head may have expired.
    KeepaliveHead,
    /// The key in this slot, which has a keep-alive window of its own, may have expired.
    KeyExpires { slot: Slot },
    /// This waiter's wait has run out.
    WaitEnds { waiter: u32 },
    /// Nothing to apply: keeps the timer wheel within reach of new deadlines (see [`TIMER_HORIZON`]).
    Heartbeat,
    /// Requests wait while live keys may be free: a lease's draw gave up on dead keys (see
    /// [`MAX_DEAD_DRAWS`]) and queued its request. Due at once; the expiry task hands out the free keys.
    ServeWaiters,
}

/// Whether a lease first draws among all the slots (see [`Pool::draw_by_slot`]): when at least three in
/// four hold free keys. Below that, a draw by slot would miss too often to pay for itself: each miss
/// costs a wasted load before the draw from the free list.
fn draws_by_slot(free: usize, slots: usize) -> bool {
    // `free > 0` also keeps a draw by slot from ever being asked for a position below zero slots.
    free > 0 && free >= slots - slots / 4
}

/// One pool of keys. See the module documentation for its shape and invariants.
pub struct Pool {
    config: PoolConfig,
    clock: Clock,
    keys: Records,
    index: IdIndex,
    /// Where recently leased keys are, to find them again without the index (see `recent.rs`).
    recent: RecentLeases,
    /// From how many keys leases are noted in `recent`: [`PREPARE_FROM_KEYS`], below which the index
    /// is in the caches anyway; lowered by tests, so that small pools take that path too.
    recent_from_keys: usize,
    free: FreeList,
    leases: Slab<Lease>,
    /// How many entries of `leases` are delays rather than leases.
    delayed: usize,
    keepalive: List,
    keepalive_timer: Option<delay_queue::Key>,
    /// Leases with the pool's block window, by deadline; see `lease.rs`.
    block_list: List<ByDeadline>,
    /// The block list's head timer: while the list is not empty, armed no later than the head's deadline.
    block_timer: Option<delay_queue::Key>,
    /// Whether a [`Timer::ServeWaiters`] is armed; one is enough.
    serve_waiters_armed: bool,
    secrets: Secrets,
    waiters: Slab<Waiter>,
    wait_queue: List,
    holders: Slab<Holder>,
    /// The serial number of the next holder opened.
    next_holder_serial: u64,
    timers: DelayQueue<Timer>,
    ids: KeyIdGenerator,
    chooser: SmallRng,
    /// Random draws made ahead for leases to come (see `lookahead.rs`).
    ahead: DrawsAhead,
    tokens: TokenCounter,
    stats: PoolStats,
    /// Where changes are reported, with the pool's name; `None` when the daemon keeps nothing on disk.
    log: Option<(Arc<dyn ChangeLog>, Box<str>)>,
    /// Keys loaded from a snapshot and not indexed yet (see `restore.rs`); empty in service.
    unindexed: Vec<Slot>,
}

/// Where fencing tokens come from. Pools of one daemon share one counter, so that a token is larger
/// than every token the daemon handed out before it, whichever pool it came from.
///
/// Only the crate makes one, and only [`Pools`] shares one between pools: every pool sharing a counter
/// must be used under one lock (see [`TokenCounter::take`]), which `Pools`, kept behind the daemon's
/// mutex, guarantees. A library user sharing one across threads could get a token twice.
#[derive(Clone, Debug)]
pub(crate) struct TokenCounter(Arc<AtomicU64>);

impl Default for TokenCounter {
    fn default() -> Self {
        TokenCounter(Arc::new(AtomicU64::new(1)))
    }
}

impl TokenCounter {
    /// The next token.
    ///
    /// Every caller holds the daemon's lock (the pools sharing a counter are all behind it), so a plain
    /// load and store are enough: the lock orders them. Not `fetch_add`: an atomic read-modify-write is a
    /// locked instruction, which waits until every store before it has reached the cache, and in a pool
    /// far larger than the caches the stores just before it (the free-list entry taken, the record the
    /// last request released) seldom have. (Wrapping, as `fetch_add` would: 2^64 leases never happen.)
    fn take(&self) -> u64 {
        let token = self.0.load(Ordering::Relaxed);
        self.0.store(token.wrapping_add(1), Ordering::Relaxed);
        token
    }

    /// The token the next lease will get.
    fn next(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Makes every token from now on larger than `token` (restored from disk).
    fn raise_above(&self, token: u64) {
        self.0.fetch_max(token.saturating_add(1), Ordering::Relaxed);
    }
}

impl Pool {
    /// An empty pool whose clock starts now, with ids from the operating system's entropy.
    ///
    /// Like every method that sets timers, this must run inside a tokio runtime.
    pub fn new(config: PoolConfig) -> Pool {
        Pool::with_id_generator(config, KeyIdGenerator::from_os_entropy())
    }

    /// An empty pool drawing ids from `ids` (tests use a seeded generator).
    pub fn with_id_generator(config: PoolConfig, ids: KeyIdGenerator) -> Pool {
        Pool::with_parts(config, ids, TokenCounter::default())
    }

    /// An empty pool drawing ids from `ids` and fencing tokens from `tokens`, which every pool sharing
    /// it must only be used under the same lock as this one.
    pub(crate) fn with_parts(mut config: PoolConfig, ids: KeyIdGenerator, tokens: TokenCounter) -> Pool {
        config.max_keys = config.max_keys.min(MAX_POOL_KEYS);
        let clock = Clock::start();
        let mut timers = DelayQueue::new();
        timers.insert_at(Timer::Heartbeat, clock.instant(Millis(0).after(TIMER_HORIZON)));
        Pool {
            config,
            clock,
            keys: Records::default(),
            index: IdIndex::default(),
            free: FreeList::default(),
            leases: Slab::new(),
            delayed: 0,
            keepalive: List::default(),
            keepalive_timer: None,
            block_list: List::default(),
            block_timer: None,
            serve_waiters_armed: false,
            secrets: Secrets::default(),
            waiters: Slab::new(),
            wait_queue: List::default(),
            holders: Slab::new(),
            next_holder_serial: 0,
            timers,
            ids,
            chooser: rand::make_rng(),
            ahead: DrawsAhead::default(),
            recent: RecentLeases::default(),
            recent_from_keys: PREPARE_FROM_KEYS,
            tokens,
            stats: PoolStats::default(),
            log: None,
            unindexed: Vec::new(),
        }
    }

    /// Reports every change from now on to `log`, as changes of the pool named `name`.
    pub fn set_change_log(&mut self, log: Arc<dyn ChangeLog>, name: &str) {
        self.log = Some((log, name.into()));
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Creates `count` new keys, calling `each` with every new id in order. All or nothing: if the keys
    /// would not fit under `max_keys`, nothing is created. New keys go to waiters first. O(count).
    pub fn generate(&mut self, count: u32, mut each: impl FnMut(&KeyId)) -> Result<(), PoolError> {
        let count = count as usize;
        if self.keys.len().saturating_add(count) > self.config.max_keys {
            return Err(PoolError::Full);
        }
        let now = self.clock.now();
        let alive_until = now.after(self.config.keepalive_timeout);
        for _ in 0..count {
            let id = self.fresh_id();
            let slot = self.insert_key(id, now, alive_until);
            self.keepalive.push_back(&mut self.keys, slot);
            self.log_created(slot);
            self.make_free(slot, now);
            each(&id);
        }
        self.stats.keys_generated += count as u64;
        self.arm_keepalive_timer_if_idle(now);
        Ok(())
    }

    /// Creates a key that carries `secret`, unless the pool already has one that does (then nothing is
    /// created). `keepalive` gives the key a keep-alive window of its own; zero means it never expires by
    /// keep-alive. O(1) expected, plus the secret's length.
    pub fn add(&mut self, secret: &[u8], keepalive: Option<Duration>) -> Result<Added, PoolError> {
        let now = self.clock.now();
        if let Some(entry) = self.secrets.find(secret) {
            let slot = self.secrets.get(entry).slot;
            if self.keys[slot].alive_until > now {
                return Ok(Added::Exists(self.keys[slot].id));
            }
            self.expire_key(slot);
        }
        if self.keys.len() >= self.config.max_keys {
            return Err(PoolError::Full);
        }
        let id = self.fresh_id();
        // Zero first: it means "never", even in a pool whose own window is zero.
        let (alive_until, mode) = match keepalive {
            Some(Duration::ZERO) => (NEVER, OwnKeepalive::Never),
            None => (now.after(self.config.keepalive_timeout), OwnKeepalive::Pool),
            Some(window) if window == self.config.keepalive_timeout => (now.after(window), OwnKeepalive::Pool),
            Some(window) => (now.after(window), OwnKeepalive::Window { window, timer: None }),
        };
        let slot = self.insert_key(id, now, alive_until);
        let entry = self.secrets.insert(SecretEntry { bytes: secret.into(), slot, keepalive: mode });
        self.keys[slot].secret = entry;
        match self.secrets.get(entry).keepalive {
            OwnKeepalive::Pool => {
                self.keepalive.push_back(&mut self.keys, slot);
                self.arm_keepalive_timer_if_idle(now);
            }
            OwnKeepalive::Never => {}
            OwnKeepalive::Window { .. } => {
                let armed = self.arm(Timer::KeyExpires { slot }, alive_until, now);
                if let OwnKeepalive::Window { timer, .. } = &mut self.secrets.get_mut(entry).keepalive {
                    *timer = Some(armed);
                }
            }
        }
        self.stats.keys_added += 1;
        self.log_created(slot);
        self.make_free(slot, now);
        Ok(Added::New(id))
    }

    /// Leases a uniformly random free key for the pool's block window, as v1's GET: the id, or `None`
    /// when no key is free.
    pub fn get(&mut self) -> Option<KeyId> {
        match self.lease(LeaseTerms::default(), Duration::ZERO) {
            LeaseOutcome::Leased(leased) => Some(*leased.id),
            _ => None,
        }
    }

    /// Leases a uniformly random free key on `terms`. When none is free, waits up to `wait` (zero: not
    /// at all) for one, in line behind earlier waiters.
    ///
    /// Every lease gets a token larger than any before it, so a token names exactly one lease.
    ///
    /// Never hands out a key past its keep-alive deadline. While a mass expiry is still being applied,
    /// a drawn key may be one: a draw by slot passes it over; one from the free list deletes it (with,
    /// the first time, a bounded slice of the backlog) and draws another, at most [`MAX_DEAD_DRAWS`]
    /// times before the pool counts as empty.
    pub fn lease(&mut self, terms: LeaseTerms, wait: Duration) -> LeaseOutcome<'_> {
        let now = self.clock.now();
        match self.draw_free_key(now) {
            Some(slot) => {
                let token = self.start_lease(slot, terms, now);
                self.stats.get_hits += 1;
                LeaseOutcome::Leased(self.leased(slot, token))
            }
            None if wait.is_zero() => {
                self.stats.get_misses += 1;
                LeaseOutcome::NotFound
            }
            None => {
                let ticket = self.enqueue_waiter(terms, now.after(wait), now);
                // A free list that is not empty means the draw gave up on dead keys during a mass expiry:
                // live keys may be free, and nothing else would hand them to the request now waiting.
                if !self.free.is_empty() {
                    self.arm_serve_waiters(now);
                }
                LeaseOutcome::Waiting(ticket)
            }
        }
    }

    /// The outcome of a wait: `Ready(Some(grant))` once a key was leased to it, `Ready(None)` once its
    /// wait ran out, else `Pending` (and the task in `cx` is woken when that changes).
    ///
    /// After `Ready`, the ticket is spent: drop it, and do not cancel it.
    pub fn poll_wait(&mut self, ticket: &WaitTicket, cx: &mut Context<'_>) -> Poll<Option<Grant>> {
        let waiter = &mut self.waiters[ticket.0 as usize];
        if let WaitState::Waiting = waiter.state {
            if !waiter.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                waiter.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        match self.waiters.remove(ticket.0 as usize).state {
            WaitState::Granted(grant) => {
                self.stats.waits_served += 1;
                self.stats.get_hits += 1;
                Poll::Ready(Some(grant))
            }
            _ => Poll::Ready(None),
        }
    }

    /// Withdraws a wait whose requester went away. If a key was already leased to it, that lease is
    /// undone (the key goes to the next waiter, or back to the free list): the wait consumes nothing.
    pub fn cancel_wait(&mut self, ticket: WaitTicket) {
        let at = ticket.0;
        if let WaitState::Waiting = self.waiters[at as usize].state {
            self.wait_queue.unlink(&mut self.waiters, at);
        }
        let waiter = self.waiters.remove(at as usize);
        if let Some(timer) = waiter.timer {
            self.timers.remove(&timer);
        }
        if let WaitState::Granted(grant) = waiter.state {
            let now = self.clock.now();
            let Some(slot) = self.find_live(&grant.id, now) else {
                return;
            };
            if let Place::Blocked { lease } = self.keys[slot].place {
                if self.leases[lease as usize].token == grant.token {
                    let record = &mut self.keys[slot];
                    record.leases = record.leases.saturating_sub(1);
                    self.log_placed(slot, PlaceImage::Free);
                    self.end_hold(lease, now);
                }
            }
        }
    }

    /// Releases a blocked key so it can be leased again, as v1's REL.
    pub fn release(&mut self, id: &KeyId) -> Release {
        self.release_with(id, None, Duration::ZERO)
    }

    /// Releases a blocked key: if `token` is given, only when that is its current lease. With a non-zero
    /// `delay` the key is leased to no one until the delay has passed, then it comes free.
    pub fn release_with(&mut self, id: &KeyId, token: Option<u64>, delay: Duration) -> Release {
        let now = self.clock.now();
        let Some(slot) = self.find_live(id, now) else {
            return Release::NotFound;
        };
        let lease = match self.current_lease(slot, token) {
            Ok(lease) => lease,
            Err(answer) => return answer,
        };
        if delay.is_zero() {
            // Reported before the key goes to a waiter, whose lease is reported after it.
            self.log_placed(slot, PlaceImage::Free);
            self.end_hold(lease, now);
        } else {
            self.unlink_from_holder(lease);
            self.untime(lease);
            let until = now.after(delay);
            let timer = self.arm(Timer::LeaseEnds { lease }, until, now);
            let entry = &mut self.leases[lease as usize];
            entry.until = until;
            entry.timing = Timing::Timer(timer);
            self.keys[slot].place = Place::Delayed { lease };
            self.delayed += 1;
            self.log_placed(slot, PlaceImage::Delayed { until_ms: self.clock.unix_ms(until) });
        }
        Release::Released
    }

    /// Restarts a blocked key's block window, for `block` or the pool's block timeout; if `token` is
    /// given, only when that is its current lease. Does not touch the keep-alive window. Answers as a
    /// release does (`Released` meaning "touched").
    pub fn touch(&mut self, id: &KeyId, token: Option<u64>, block: Option<Duration>) -> Release {
        let now = self.clock.now();
        let Some(slot) = self.find_live(id, now) else {
            return Release::NotFound;
        };
        let lease = match self.current_lease(slot, token) {
            Ok(lease) => lease,
            Err(answer) => return answer,
        };
        self.untime(lease);
        self.time_lease(lease, block, now);
        self.log_placed(slot, self.place_image(slot));
        Release::Released
    }

    /// Deletes a key, in whatever state, for good. `false` when there is no such key.
    pub fn delete(&mut self, id: &KeyId) -> bool {
        match self.find_live(id, self.clock.now()) {
            Some(slot) => {
                if let Some((log, pool)) = &self.log {
                    log.record(pool, &Change::Deleted { id: self.keys[slot].id });
                }
                self.remove_key(slot);
                true
            }
            None => false,
        }
    }

    /// Restarts a key's keep-alive window. Does not touch its block. `false` when there is no such key.
    pub fn keep_alive(&mut self, id: &KeyId) -> bool {
        let now = self.clock.now();
        let Some(slot) = self.find_live(id, now) else {
            return false;
        };
        let secret = self.keys[slot].secret;
        let own = (secret != NO_SECRET).then(|| &mut self.secrets.get_mut(secret).keepalive);
        match own {
            None | Some(OwnKeepalive::Pool) => {
                self.keys[slot].alive_until = now.after(self.config.keepalive_timeout);
                // Every key on the list shares one window and time only moves forward, so the pinged
                // key now has the latest deadline of all: the tail is its place, and the list stays
                // sorted.
                self.keepalive.move_to_back(&mut self.keys, slot);
            }
            Some(OwnKeepalive::Never) => {}
            Some(OwnKeepalive::Window { window, timer }) => {
                let until = now.after(*window);
                self.keys[slot].alive_until = until;
                if let Some(timer) = timer {
                    self.timers.reset_at(timer, self.clock.instant(until.min(now.after(TIMER_HORIZON))));
                }
            }
        }
        if let Some((log, pool)) = &self.log {
            let record = &self.keys[slot];
            if record.alive_until != NEVER {
                let alive_until_ms = self.clock.unix_ms(record.alive_until);
                log.record(pool, &Change::KeptAlive { id: record.id, alive_until_ms });
            }
        }
        true
    }

    /// What there is to know about one key, or `None` if there is no such key. Like every command that
    /// names a key, it first applies a deadline of the key's that has passed (and counts it).
    pub fn info(&mut self, id: &KeyId) -> Option<KeyInfo> {
        let slot = self.find_live(id, self.clock.now())?;
        let record = &self.keys[slot];
        let unix_ms = |at| self.clock.unix_ms(at);
        let mut info = KeyInfo {
            id: record.id,
            state: KeyState::Free,
            created_ms: record.created_ms,
            alive_until_ms: (record.alive_until != NEVER).then(|| unix_ms(record.alive_until)),
            blocked_until_ms: None,
            token: None,
            free_at_ms: None,
            leases: record.leases,
        };
        match record.place {
            Place::Free { .. } => {}
            Place::Blocked { lease } => {
                let lease = &self.leases[lease as usize];
                info.state = KeyState::Blocked;
                info.blocked_until_ms = Some(unix_ms(lease.until));
                info.token = Some(lease.token);
            }
            Place::Delayed { lease } => {
                info.state = KeyState::Delayed;
                info.free_at_ms = Some(unix_ms(self.leases[lease as usize].until));
            }
        }
        Some(info)
    }

    /// Starts a list of leases to release together: a connection that asked to release its keys when it
    /// closes passes this holder in its [`LeaseTerms`].
    pub fn open_holder(&mut self) -> HolderId {
        let serial = self.next_holder_serial;
        self.next_holder_serial += 1;
        let index = self.holders.insert(Holder { serial, leases: List::default() }) as u32;
        HolderId { index, serial }
    }

    /// Releases every lease still on `holder`'s list, as REL would, and forgets the holder. Returns how
    /// many it released. O(leases on the list). Cancel the holder's waits first: a wait served after its
    /// holder closed holds its key until the block window ends (it is on no holder's list). Closing a
    /// holder twice does nothing the second time.
    pub fn close_holder(&mut self, holder: HolderId) -> usize {
        let now = self.clock.now();
        if self.holders.get(holder.index as usize).is_none_or(|open| open.serial != holder.serial) {
            return 0;
        }
        let mut list = self.holders.remove(holder.index as usize).leases;
        let mut released = 0;
        while let Some(lease) = list.pop_front(&mut self.leases) {
            self.leases[lease as usize].holder = NIL;
            let slot = self.leases[lease as usize].slot;
            // A lease whose window has passed, unapplied yet, timed out; it is not the close's doing.
            if self.leases[lease as usize].until <= now || self.keys[slot].alive_until <= now {
                continue;
            }
            self.log_placed(slot, PlaceImage::Free);
            self.end_hold(lease, now);
            released += 1;
        }
        self.stats.released_by_close += released as u64;
        released
    }

    /// Whether the pool holds nothing anyone could still ask about: no key, and no request waiting or
    /// with an outcome to collect. Its counters are all that is left, and its owner may drop it.
    pub fn is_idle(&self) -> bool {
        self.keys.is_empty() && self.waiters.is_empty()
    }

    /// Counts and totals. O(1).
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            keys: self.keys.len(),
            keys_free: self.free.len(),
            keys_blocked: self.leases.len() - self.delayed,
            keys_delayed: self.delayed,
            waiters: self.wait_queue.len(),
            ..self.stats
        }
    }

    /// Applies the timers that are due: leases whose block window passed become free, and so do delayed
    /// keys whose delay passed; keys whose keep-alive window passed are deleted; waits that ran out end.
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
                Timer::BlockHead => {
                    self.block_timer = None;
                    work += self.expire_block_heads(EXPIRY_BUDGET - work.min(EXPIRY_BUDGET));
                    self.arm_block_timer_if_idle(fired);
                }
                Timer::KeepaliveHead => {
                    self.keepalive_timer = None;
                    work += self.expire_keepalive_heads(EXPIRY_BUDGET - work.min(EXPIRY_BUDGET));
                    self.arm_keepalive_timer_if_idle(fired);
                }
                Timer::KeyExpires { slot } => self.on_key_timer(slot, fired),
                Timer::WaitEnds { waiter } => self.on_wait_timer(waiter, fired),
                Timer::Heartbeat => {
                    self.arm(Timer::Heartbeat, fired.after(TIMER_HORIZON), fired);
                }
                Timer::ServeWaiters => {
                    self.serve_waiters_armed = false;
                    work += self.serve_waiters_from_free_list(EXPIRY_BUDGET - work.min(EXPIRY_BUDGET));
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
    fn find_live(&mut self, id: &KeyId, now: Millis) -> Option<Slot> {
        let slot = match self.recently_leased(id) {
            Some(slot) => slot,
            None => self.index.find(&self.keys, id)?,
        };
        if self.keys[slot].alive_until <= now {
            self.expire_key(slot);
            return None;
        }
        match self.keys[slot].place {
            Place::Free { .. } => {}
            Place::Blocked { lease } if self.leases[lease as usize].until <= now => self.time_out_lease(lease, now),
            Place::Delayed { lease } if self.leases[lease as usize].until <= now => self.end_hold(lease, now),
            Place::Blocked { .. } | Place::Delayed { .. } => {}
        }
        Some(slot)
    }

    /// The slot of `id` if it was leased recently (see `recent.rs`): a hint, checked against the id in
    /// the record it names.
    fn recently_leased(&self, id: &KeyId) -> Option<Slot> {
        let slot = self.recent.hint(id)?;
        self.keys.get(slot).is_some_and(|record| record.id == *id).then_some(slot)
    }

    /// The lease a REL or TOUCH acts on: the key's current lease, if it is blocked and `token` (when
    /// given) names that lease. Otherwise the answer to give.
    fn current_lease(&self, slot: Slot, token: Option<u64>) -> Result<u32, Release> {
        match (self.keys[slot].place, token) {
            (Place::Blocked { lease }, None) => Ok(lease),
            (Place::Blocked { lease }, Some(token)) if self.leases[lease as usize].token == token => Ok(lease),
            (_, Some(_)) => Err(Release::Stale),
            (_, None) => Err(Release::NotBlocked),
        }
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

    /// Stores and indexes a new key record. The caller puts it on a keep-alive list (or not) and then
    /// makes it free, which gives it its place.
    fn insert_key(&mut self, id: KeyId, now: Millis, alive_until: Millis) -> Slot {
        self.insert_record(id, self.clock.unix_ms(now), alive_until)
    }

    /// [`Self::insert_key`], with the creation time as Unix milliseconds.
    fn insert_record(&mut self, id: KeyId, created_ms: u64, alive_until: Millis) -> Slot {
        let slot = self.keys.insert(KeyRecord {
            id,
            links: Links::UNLINKED,
            place: Place::Free { position: NIL },
            leases: 0,
            secret: NO_SECRET,
            created_ms,
            alive_until,
        });
        self.index.insert(&self.keys, slot);
        slot
    }

    /// Draws a uniformly random free key that is still alive and takes it off the free list.
    fn draw_free_key(&mut self, now: Millis) -> Option<Slot> {
        let drew_by_slot = draws_by_slot(self.free.len(), self.keys.slots_end());
        if drew_by_slot {
            if let Some(slot) = self.draw_by_slot(now) {
                return Some(slot);
            }
        }
        let mut dead_draws = 0;
        loop {
            if self.free.is_empty() || dead_draws == MAX_DEAD_DRAWS {
                return None;
            }
            // After a draw by slot, the next draw made ahead belongs to the next lease.
            let position = if drew_by_slot {
                self.chooser.random_range(0..self.free.len())
            } else {
                self.ahead.position(self.free.len(), &mut self.chooser)
            } as u32;
            let slot = self.free.get(position).expect("position drawn below the list's length");
            if self.keys[slot].alive_until > now {
                return Some(self.take_from_free_list(position));
            }
            // Work the expiry task would have done anyway, done now so that no dead key is handed out.
            self.expire_key(slot);
            if dead_draws == 0 {
                self.expire_keepalive_heads(EXPIRY_BUDGET);
            }
            dead_draws += 1;
        }
    }

    /// One draw among all the slots instead of the free list: the key, taken off the free list, if it
    /// lands on a live free key; else `None`, and the caller draws from the free list. Rejection
    /// sampling: a draw that is kept is uniform among the live free keys, and so is the caller's, so
    /// the key leased is uniform whichever way it was chosen.
    ///
    /// Why: a draw by slot names its record directly, while a position of the free list must be read
    /// before its record can be loaded. In a pool far larger than the caches that is one wait on memory
    /// instead of two in a chain, and the look-ahead can start it a whole batch early. Only worth it
    /// while most slots hold free keys (see [`draws_by_slot`]), as in most pools most of the time.
    fn draw_by_slot(&mut self, now: Millis) -> Option<Slot> {
        let slot = self.ahead.position(self.keys.slots_end(), &mut self.chooser) as Slot;
        let record = self.keys.get(slot)?;
        let Place::Free { position } = record.place else {
            return None;
        };
        if record.alive_until <= now {
            return None;
        }
        let taken = self.take_from_free_list(position);
        debug_assert_eq!(taken, slot);
        Some(slot)
    }

    /// Leases the key in `slot`, which the caller took off the free list (or never put there), on
    /// `terms`. Returns the lease's token.
    fn start_lease(&mut self, slot: Slot, terms: LeaseTerms, now: Millis) -> u64 {
        let token = self.tokens.take();
        let lease = self.leases.insert(Lease {
            slot,
            until: now,
            timing: Timing::Untimed,
            token,
            holder: NIL,
            links: Links::UNLINKED,
            block_links: Links::UNLINKED,
        }) as u32;
        self.time_lease(lease, terms.block, now);
        if let Some(HolderId { index, serial }) = terms.holder {
            // A holder that has closed meanwhile takes no more leases.
            if let Some(holder) = self.holders.get_mut(index as usize).filter(|open| open.serial == serial) {
                self.leases[lease as usize].holder = index;
                holder.leases.push_back(&mut self.leases, lease);
            }
        }
        let record = &mut self.keys[slot];
        record.place = Place::Blocked { lease };
        record.leases = record.leases.saturating_add(1);
        if self.keys.len() >= self.recent_from_keys {
            self.recent.note(&self.keys[slot].id, slot);
        }
        if self.log.is_some() {
            self.log_placed(slot, self.place_image(slot));
        }
        token
    }

    /// Reports a key just created; its place is free (it may go to a waiter next, reported after).
    fn log_created(&self, slot: Slot) {
        if let Some((log, pool)) = &self.log {
            log.record(pool, &Change::Key(self.image(slot)));
        }
    }

    /// Reports the key in `slot` now at `place`.
    fn log_placed(&self, slot: Slot, place: PlaceImage) {
        if let Some((log, pool)) = &self.log {
            let record = &self.keys[slot];
            log.record(pool, &Change::Placed { id: record.id, leases: record.leases, place });
        }
    }

    /// Everything stored about the key in `slot`.
    fn image(&self, slot: Slot) -> KeyImage<'_> {
        let record = &self.keys[slot];
        let secret = (record.secret != NO_SECRET).then(|| {
            let entry = self.secrets.get(record.secret);
            let mode = match entry.keepalive {
                OwnKeepalive::Pool => KeepaliveMode::Pool,
                OwnKeepalive::Never => KeepaliveMode::Never,
                OwnKeepalive::Window { window, .. } => {
                    KeepaliveMode::Window(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
                }
            };
            (&*entry.bytes, mode)
        });
        KeyImage {
            id: record.id,
            created_ms: record.created_ms,
            alive_until_ms: if record.alive_until == NEVER { NEVER_MS } else { self.clock.unix_ms(record.alive_until) },
            leases: record.leases,
            secret,
            place: self.place_image(slot),
        }
    }

    /// Where the key in `slot` is, as stored.
    fn place_image(&self, slot: Slot) -> PlaceImage {
        match self.keys[slot].place {
            Place::Free { .. } => PlaceImage::Free,
            Place::Blocked { lease } => {
                let lease = &self.leases[lease as usize];
                PlaceImage::Blocked {
                    until_ms: self.clock.unix_ms(lease.until),
                    token: lease.token,
                    autorel: lease.holder != NIL,
                }
            }
            Place::Delayed { lease } => {
                PlaceImage::Delayed { until_ms: self.clock.unix_ms(self.leases[lease as usize].until) }
            }
        }
    }

    fn leased(&self, slot: Slot, token: u64) -> Leased<'_> {
        Leased { id: &self.keys[slot].id, token, secret: self.secret_of(slot) }
    }

    fn secret_of(&self, slot: Slot) -> Option<&[u8]> {
        let secret = self.keys[slot].secret;
        (secret != NO_SECRET).then(|| &*self.secrets.get(secret).bytes)
    }

    fn enqueue_waiter(&mut self, terms: LeaseTerms, until: Millis, now: Millis) -> WaitTicket {
        let at = self.waiters.vacant_key() as u32;
        let timer = self.arm(Timer::WaitEnds { waiter: at }, until, now);
        self.waiters.insert(Waiter {
            links: Links::UNLINKED,
            terms,
            until,
            state: WaitState::Waiting,
            waker: None,
            timer: Some(timer),
        });
        self.wait_queue.push_back(&mut self.waiters, at);
        WaitTicket(at)
    }

    /// Makes the key in `slot` free: it goes straight to the oldest waiter whose wait has not run out,
    /// or onto the free list if there is none. A key past its keep-alive deadline goes onto the free
    /// list too, where the expiry (or a GET's draw) deletes it: it must not be handed to a waiter.
    fn make_free(&mut self, slot: Slot, now: Millis) {
        if self.keys[slot].alive_until > now {
            while let Some(waiter) = self.wait_queue.pop_front(&mut self.waiters) {
                if self.waiters[waiter as usize].until <= now {
                    self.end_wait(waiter);
                    continue;
                }
                self.grant(waiter, slot, now);
                return;
            }
        }
        let position = self.free.push(slot);
        self.keys[slot].place = Place::Free { position };
    }

    /// Leases the key in `slot` to `waiter`, which the caller took off the queue, and wakes it.
    fn grant(&mut self, waiter: u32, slot: Slot, now: Millis) {
        if let Some(timer) = self.waiters[waiter as usize].timer.take() {
            self.timers.remove(&timer);
        }
        let token = self.start_lease(slot, self.waiters[waiter as usize].terms, now);
        let grant = Grant { id: self.keys[slot].id, token, secret: self.secret_of(slot).map(Box::from) };
        let waiter = &mut self.waiters[waiter as usize];
        waiter.state = WaitState::Granted(grant);
        if let Some(waker) = waiter.waker.take() {
            waker.wake();
        }
    }

    /// Ends a wait that ran out; the caller took it off the queue. Its timer is cancelled unless it is the
    /// one that fired (the caller has then cleared it): a key freed after the wait's deadline but before
    /// the timer fired ends the wait early, and the timer must not fire later for a waiter that is gone,
    /// or whose slot a new waiter has taken.
    fn end_wait(&mut self, waiter: u32) {
        let waiter = &mut self.waiters[waiter as usize];
        if let Some(timer) = waiter.timer.take() {
            self.timers.remove(&timer);
        }
        waiter.state = WaitState::TimedOut;
        self.stats.waits_timed_out += 1;
        self.stats.get_misses += 1;
        if let Some(waker) = waiter.waker.take() {
            waker.wake();
        }
    }

    /// Takes the free key at `position` off the free list, fixing up the key moved into its place.
    /// The caller gives the key its new place.
    fn take_from_free_list(&mut self, position: u32) -> Slot {
        let removed = self.free.remove_at(position);
        if let Some(moved) = removed.moved {
            self.keys[moved].place = Place::Free { position };
        }
        removed.slot
    }

    /// Removes every trace of the key in `slot`: its lease (or delay) and timer, its free-list entry,
    /// its keep-alive list links or timer, its secret, its index entry, and finally the record (last,
    /// because the others read it).
    fn remove_key(&mut self, slot: Slot) {
        match self.keys[slot].place {
            Place::Free { position } => {
                let taken = self.take_from_free_list(position);
                debug_assert_eq!(taken, slot);
            }
            Place::Blocked { lease } | Place::Delayed { lease } => {
                self.untime(lease);
                self.drop_lease_entry(lease);
            }
        }
        let secret = self.keys[slot].secret;
        let on_keepalive_list = if secret == NO_SECRET {
            true
        } else {
            match self.secrets.remove(secret).keepalive {
                OwnKeepalive::Pool => true,
                OwnKeepalive::Never | OwnKeepalive::Window { timer: None, .. } => false,
                OwnKeepalive::Window { timer: Some(timer), .. } => {
                    self.timers.remove(&timer);
                    false
                }
            }
        };
        if on_keepalive_list {
            self.keepalive.unlink(&mut self.keys, slot);
        }
        let id = self.keys[slot].id;
        let indexed = self.index.remove(&self.keys, &id);
        debug_assert_eq!(indexed, Some(slot));
        self.keys.remove(slot);
    }

    /// A lease's timer fired: the wheel has already dropped it. Every other way a lease ends removes its
    /// timer first, so the lease is live; its window has passed unless the timer was capped at the horizon.
    fn on_lease_timer(&mut self, lease: u32, fired: Millis) {
        let until = self.leases[lease as usize].until;
        let now = self.clock.now();
        self.leases[lease as usize].timing = Timing::Untimed;
        if until > now {
            self.leases[lease as usize].timing = Timing::Timer(self.arm(Timer::LeaseEnds { lease }, until, fired));
            return;
        }
        let slot = self.leases[lease as usize].slot;
        match self.keys[slot].place {
            // As in `expire_block_heads`: a key past its keep-alive too is deleted instead.
            _ if self.keys[slot].alive_until <= now => self.expire_key(slot),
            Place::Delayed { .. } => self.end_hold(lease, now),
            _ => self.time_out_lease(lease, now),
        }
    }

    /// A key's own keep-alive timer fired (the wheel has dropped it); the key is live, as for leases.
    fn on_key_timer(&mut self, slot: Slot, fired: Millis) {
        let secret = self.keys[slot].secret;
        let until = self.keys[slot].alive_until;
        let rearm = until > self.clock.now();
        let timer = rearm.then(|| self.arm(Timer::KeyExpires { slot }, until, fired));
        if let OwnKeepalive::Window { timer: slot_timer, .. } = &mut self.secrets.get_mut(secret).keepalive {
            *slot_timer = timer;
        }
        if !rearm {
            self.expire_key(slot);
        }
    }

    /// A waiter's timer fired (the wheel has dropped it): the waiter is still waiting, since serving or
    /// cancelling it removes the timer.
    fn on_wait_timer(&mut self, waiter: u32, fired: Millis) {
        let until = self.waiters[waiter as usize].until;
        if until > self.clock.now() {
            self.waiters[waiter as usize].timer = Some(self.arm(Timer::WaitEnds { waiter }, until, fired));
            return;
        }
        self.waiters[waiter as usize].timer = None;
        self.wait_queue.unlink(&mut self.waiters, waiter);
        self.end_wait(waiter);
    }

    /// Ends a lease whose block window has passed, and counts it.
    fn time_out_lease(&mut self, lease: u32, now: Millis) {
        self.stats.released_by_timeout += 1;
        self.end_hold(lease, now);
    }

    /// Ends a lease or a delay, however it is timed, and frees its key.
    fn end_hold(&mut self, lease: u32, now: Millis) {
        self.untime(lease);
        let Lease { slot, .. } = self.drop_lease_entry(lease);
        self.make_free(slot, now);
    }

    /// Sets a lease to end `window` from now (the pool's block window if `None`): on the block list if
    /// that is the pool's window, else by a timer of its own. The lease must be untimed.
    fn time_lease(&mut self, lease: u32, window: Option<Duration>, now: Millis) {
        debug_assert_eq!(self.leases[lease as usize].timing, Timing::Untimed);
        let window = window.unwrap_or(self.config.block_timeout);
        let until = now.after(window);
        self.leases[lease as usize].until = until;
        if window == self.config.block_timeout {
            // Every lease on the list has the same window and time only moves forward, so the tail is
            // its place and the list stays sorted.
            self.leases[lease as usize].timing = Timing::BlockList;
            self.block_list.push_back(&mut self.leases, lease);
            self.arm_block_timer_if_idle(now);
        } else {
            let timer = self.arm(Timer::LeaseEnds { lease }, until, now);
            self.leases[lease as usize].timing = Timing::Timer(timer);
        }
    }

    /// Takes a lease off whatever times it: the block list, or its own timer.
    fn untime(&mut self, lease: u32) {
        match std::mem::replace(&mut self.leases[lease as usize].timing, Timing::Untimed) {
            Timing::BlockList => self.block_list.unlink(&mut self.leases, lease),
            Timing::Timer(timer) => {
                self.timers.remove(&timer);
            }
            Timing::Untimed => {}
        }
    }

    /// Times out leases from the head of the block list while their deadline has passed, at most
    /// `budget` of them. Returns how many.
    fn expire_block_heads(&mut self, budget: usize) -> usize {
        let now = self.clock.now();
        let mut expired = 0;
        while expired < budget {
            match self.block_list.head() {
                Some(head) if self.leases[head as usize].until <= now => {
                    // A key whose keep-alive has passed too is deleted, counting the block as timed out
                    // only if it ended first: as if every deadline had been applied in its order.
                    let slot = self.leases[head as usize].slot;
                    if self.keys[slot].alive_until <= now {
                        self.expire_key(slot);
                    } else {
                        self.time_out_lease(head, now);
                    }
                    expired += 1;
                }
                _ => break,
            }
        }
        expired
    }

    /// Arms the block list's head timer, as [`Self::arm_keepalive_timer_if_idle`] does for keep-alive.
    fn arm_block_timer_if_idle(&mut self, base: Millis) {
        let head_deadline = self.block_list.head().map(|head| self.leases[head as usize].until);
        self.block_timer = self.arm_head_timer(self.block_timer, head_deadline, Timer::BlockHead, base);
    }

    /// The timer of a deadline-sorted list's head: `armed` if it is armed (then it is armed no later than
    /// the head's deadline, which is all the invariant asks), else a new one for `head_deadline`, or none
    /// when the list is empty.
    fn arm_head_timer(
        &mut self,
        armed: Option<delay_queue::Key>,
        head_deadline: Option<Millis>,
        timer: Timer,
        base: Millis,
    ) -> Option<delay_queue::Key> {
        armed.or_else(|| head_deadline.map(|at| self.arm(timer, at, base)))
    }

    /// Removes an entry of the lease table, taking it off its holder's list and out of the delayed count.
    /// The caller gives the key a new place.
    fn drop_lease_entry(&mut self, lease: u32) -> Lease {
        self.unlink_from_holder(lease);
        let entry = self.leases.remove(lease as usize);
        if let Place::Delayed { .. } = self.keys[entry.slot].place {
            self.delayed -= 1;
        }
        entry
    }

    fn unlink_from_holder(&mut self, lease: u32) {
        let holder = self.leases[lease as usize].holder;
        if holder != NIL {
            self.holders[holder as usize].leases.unlink(&mut self.leases, lease);
            self.leases[lease as usize].holder = NIL;
        }
    }

    /// Deletes a key whose keep-alive window has passed. If it was leased and the lease's window ended
    /// first, the lease counts as ended by timeout too: the counters come out the same whether the
    /// expiry task applied the two deadlines one by one or, running late, both at once.
    fn expire_key(&mut self, slot: Slot) {
        let record = &self.keys[slot];
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
                Some(head) if self.keys[head].alive_until <= now => {
                    self.expire_key(head);
                    expired += 1;
                }
                _ => break,
            }
        }
        expired
    }

    /// Arms a [`Timer::ServeWaiters`], due at once, unless one is armed already.
    fn arm_serve_waiters(&mut self, now: Millis) {
        if !self.serve_waiters_armed {
            self.serve_waiters_armed = true;
            self.arm(Timer::ServeWaiters, now, now);
        }
    }

    /// Hands free keys to waiters, oldest waiter first, until no one waits, no key is free, or `budget`
    /// units of work (a key handed out, or a dead one deleted) are done; re-arms itself if waiters and free
    /// keys are both left. Returns the work done.
    ///
    /// Keys come from the end of the free list rather than from a random draw: which key a waiter gets
    /// was never random (a freed key goes to whoever has waited longest), and the end needs no draw, so
    /// every step is one unit of work.
    fn serve_waiters_from_free_list(&mut self, budget: usize) -> usize {
        let now = self.clock.now();
        let mut work = 0;
        while work < budget && !self.wait_queue.is_empty() {
            let Some(last) = self.free.len().checked_sub(1) else {
                break;
            };
            let slot = self.free.get(last as u32).expect("the free list's last position");
            if self.keys[slot].alive_until <= now {
                self.expire_key(slot);
            } else {
                let taken = self.take_from_free_list(last as u32);
                // To the oldest live waiter, or back onto the free list if every wait has run out.
                self.make_free(taken, now);
            }
            work += 1;
        }
        if !self.wait_queue.is_empty() && !self.free.is_empty() {
            self.arm_serve_waiters(now);
        }
        work
    }

    /// Arms the keep-alive timer for the head's deadline, unless it is already armed or the list is
    /// empty (see [`Self::arm_head_timer`]).
    fn arm_keepalive_timer_if_idle(&mut self, base: Millis) {
        let head_deadline = self.keepalive.head().map(|head| self.keys[head].alive_until);
        self.keepalive_timer = self.arm_head_timer(self.keepalive_timer, head_deadline, Timer::KeepaliveHead, base);
    }
}

#[cfg(test)]
impl Pool {
    /// Walks the whole pool and panics unless every structure agrees with every other. O(n): tests only.
    fn check_invariants(&self) {
        let now = self.clock.now();
        assert_eq!(self.index.len(), self.keys.len(), "every key is indexed once");
        assert_eq!(self.free.len() + self.leases.len(), self.keys.len(), "every key is free, leased or delayed");
        let mut delayed = 0;
        let mut on_list = 0;
        let mut with_secret = 0;
        for (slot, record) in self.keys.iter() {
            assert_eq!(self.index.find(&self.keys, &record.id), Some(slot), "index finds {slot}");
            match record.place {
                Place::Free { position } => {
                    assert_eq!(self.free.get(position), Some(slot));
                    assert!(
                        self.wait_queue.is_empty() || record.alive_until <= now || self.serve_waiters_armed,
                        "no live key is free while requests wait, unless the expiry task is about to serve them"
                    );
                }
                Place::Blocked { lease } => {
                    assert_eq!(self.leases[lease as usize].slot, slot);
                    assert!(self.leases[lease as usize].token < self.tokens.next(), "tokens come from the counter");
                }
                Place::Delayed { lease } => {
                    assert_eq!(self.leases[lease as usize].slot, slot);
                    assert_eq!(self.leases[lease as usize].holder, NIL, "a delayed key has no holder");
                    delayed += 1;
                }
            }
            let own = if record.secret == NO_SECRET {
                None
            } else {
                with_secret += 1;
                let entry = self.secrets.get(record.secret);
                assert_eq!(entry.slot, slot, "the secret names its key");
                assert_eq!(self.secrets.find(&entry.bytes), Some(record.secret), "secrets are indexed");
                Some(&entry.keepalive)
            };
            match own {
                None | Some(OwnKeepalive::Pool) => on_list += 1,
                Some(OwnKeepalive::Never) => assert_eq!(record.alive_until, NEVER),
                Some(OwnKeepalive::Window { timer, .. }) => {
                    let timer = timer.as_ref().expect("a key with its own window has its timer");
                    assert!(self.timers.deadline(timer) <= self.clock.instant(record.alive_until));
                }
            }
        }
        assert_eq!(delayed, self.delayed, "the delayed count is right");
        assert_eq!(with_secret, self.secrets.len(), "every secret belongs to a key");
        let by_deadline = self.keepalive.walk(&self.keys, |record| record.links);
        let alive_until = |slot: &u32| self.keys[*slot].alive_until;
        assert!(by_deadline.windows(2).all(|pair| alive_until(&pair[0]) <= alive_until(&pair[1])), "list sorted");
        assert_eq!(
            by_deadline.len(),
            on_list,
            "every key that follows the pool's window is on the keep-alive list once"
        );
        if let Some(head) = self.keepalive.head() {
            let timer = self.keepalive_timer.as_ref().expect("a non-empty list has its timer armed");
            let head_deadline = self.clock.instant(self.keys[head].alive_until);
            assert!(self.timers.deadline(timer) <= head_deadline, "the timer is armed no later than the head");
        }
        let mut on_block_list = 0;
        for (at, lease) in &self.leases {
            match lease.timing {
                Timing::BlockList => on_block_list += 1,
                Timing::Timer(timer) => {
                    assert!(
                        self.timers.deadline(&timer) <= self.clock.instant(lease.until),
                        "lease {at}'s timer is due"
                    );
                }
                Timing::Untimed => panic!("lease {at} is not timed"),
            }
            if let Place::Delayed { .. } = self.keys[lease.slot].place {
                assert!(matches!(lease.timing, Timing::Timer(_)), "a delay has its own timer");
            }
        }
        let by_deadline = self.block_list.walk(&self.leases, |lease| lease.block_links);
        assert!(by_deadline.iter().all(|&at| self.leases[at as usize].timing == Timing::BlockList));
        let until = |at: &u32| self.leases[*at as usize].until;
        assert!(by_deadline.windows(2).all(|pair| until(&pair[0]) <= until(&pair[1])), "block list sorted");
        assert_eq!(by_deadline.len(), on_block_list, "every lease timed by the block list is on it once");
        if let Some(head) = self.block_list.head() {
            let timer = self.block_timer.as_ref().expect("a non-empty block list has its timer armed");
            let head_deadline = self.clock.instant(self.leases[head as usize].until);
            assert!(self.timers.deadline(timer) <= head_deadline, "the block timer is armed no later than the head");
        }
        for (holder, Holder { leases: list, .. }) in &self.holders {
            for lease in list.walk(&self.leases, |lease| lease.links) {
                let entry = &self.leases[lease as usize];
                assert_eq!(entry.holder, holder as u32, "a lease is on its own holder's list");
                assert_eq!(self.keys[entry.slot].place, Place::Blocked { lease });
            }
        }
        let mut waiting = 0;
        for (_, waiter) in &self.waiters {
            if let WaitState::Waiting = waiter.state {
                waiting += 1;
                assert!(waiter.timer.is_some(), "a waiting request has its timer");
            } else {
                assert!(waiter.timer.is_none(), "a served or timed-out request has no timer");
            }
        }
        assert_eq!(waiting, self.wait_queue.len(), "every waiting request is queued once");
        for waiter in self.wait_queue.walk(&self.waiters, |waiter| waiter.links) {
            assert!(matches!(self.waiters[waiter as usize].state, WaitState::Waiting), "only waiting requests queue");
        }
    }
}

#[cfg(test)]
mod tests;
