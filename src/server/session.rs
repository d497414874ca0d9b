//! What the server remembers about one connection between its requests, and what it owes the pools when
//! the connection ends.
//!
//! A connection has a current pool (`default` until it sends USE). One that sent AUTOREL holds a holder
//! list in each pool it leased from, and one that is waiting for a key holds a wait ticket. Both must be
//! given back however the connection ends: QUIT, the client vanishing, a protocol error, shutdown, or an
//! I/O error that unwinds the task. So the cleanup lives in `Drop`, where no return path can skip it.

use crate::auth::Grant;
use crate::pool::{HolderId, PoolRef, Pools, WaitTicket, DEFAULT_POOL};

use super::Shared;

/// Failed AUTHs after which the connection is closed: enough for a typo, too few to guess tokens.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// How the reply to a lease request is spelled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaseReply {
    /// `KEY <id>[ <secret>]`, as v1's GET.
    Key,
    /// `LEASED <id> <token>[ <secret>]`.
    Leased,
}

/// A request waiting for a key: its pool, its ticket and how to answer it.
#[derive(Debug)]
pub struct Waiting {
    pub pool: PoolRef,
    pub ticket: WaitTicket,
    pub reply: LeaseReply,
}

/// One connection's state.
pub struct Session<'a> {
    shared: &'a Shared,
    /// The current pool's name, and its reference while the pool exists (a cache: most requests then
    /// skip the lookup by name).
    pool_name: String,
    pool: Option<PoolRef>,
    /// What the connection's AUTH allows; `None` before a successful AUTH.
    pub grant: Option<Grant>,
    /// Failed AUTHs so far; the connection is closed at [`MAX_AUTH_FAILURES`].
    pub auth_failures: u32,
    /// Set by AUTOREL.
    pub autorel: bool,
    /// With AUTOREL: the holder list of each pool this connection leased from. A connection uses few
    /// pools, so a short vector beats a map.
    holders: Vec<(PoolRef, HolderId)>,
    /// The request this connection waits on, if any. Replies go out in request order, so there is at
    /// most one.
    pub waiting: Option<Waiting>,
}

impl<'a> Session<'a> {
    pub fn new(shared: &'a Shared) -> Session<'a> {
        Session {
            shared,
            pool_name: DEFAULT_POOL.to_string(),
            pool: None,
            grant: None,
            auth_failures: 0,
            autorel: false,
            holders: Vec::new(),
            waiting: None,
        }
    }

    /// The state this session's connection serves.
    pub fn shared(&self) -> &'a Shared {
        self.shared
    }

    /// The current pool's name.
    pub fn pool_name(&self) -> &str {
        &self.pool_name
    }

    /// Makes `name` the current pool.
    pub fn use_pool(&mut self, name: &str) {
        if self.pool_name != name {
            self.pool_name = name.to_string();
            self.pool = None;
        }
    }

    /// The current pool, if it exists.
    pub fn current_pool(&mut self, pools: &Pools) -> Option<PoolRef> {
        self.pool = pools.resolve(self.pool, &self.pool_name);
        self.pool
    }

    /// The current pool, created if it does not exist yet. `Ok(true)` in the flag means it is new.
    pub fn current_pool_or_create(&mut self, pools: &mut Pools) -> Result<(PoolRef, bool), crate::pool::PoolsError> {
        if let Some(pool) = self.current_pool(pools) {
            return Ok((pool, false));
        }
        let (pool, created) = pools.get_or_create(&self.pool_name)?;
        self.pool = Some(pool);
        Ok((pool, created))
    }

    /// With AUTOREL on, this connection's holder in `pool`, opened on first use; else `None`.
    pub fn holder_in(&mut self, pools: &mut Pools, pool: PoolRef) -> Option<HolderId> {
        if !self.autorel {
            return None;
        }
        if let Some((_, holder)) = self.holders.iter().find(|(of, _)| *of == pool) {
            return Some(*holder);
        }
        let holder = pools.get(pool)?.open_holder();
        // Holders of pools that were dropped since are dead weight; forget them while we are here.
        self.holders.retain(|(of, _)| pools.get(*of).is_some());
        self.holders.push((pool, holder));
        Some(holder)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.holders.is_empty() && self.waiting.is_none() {
            return;
        }
        // A poisoned lock means the daemon is already failing; panicking again here, possibly while
        // unwinding, would abort it outright.
        let Some(mut locked) = self.shared.lock_unless_poisoned() else {
            return;
        };
        let pools = &mut locked.pools;
        // The wait goes first: a key granted to it but never collected must go back before the holder
        // closes, or it would stay blocked for a whole window.
        if let Some(waiting) = self.waiting.take() {
            if let Some(pool) = pools.get(waiting.pool) {
                pool.cancel_wait(waiting.ticket);
            }
            pools.drop_if_idle(waiting.pool);
        }
        for (pool, holder) in self.holders.drain(..) {
            if let Some(pool) = pools.get(pool) {
                let released = pool.close_holder(holder);
                tracing::debug!(released, "connection closed; released its leases");
            }
        }
    }
}
