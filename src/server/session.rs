//! What the server remembers about one connection between its requests, and what it owes the pool when
//! the connection ends.
//!
//! A connection that sent AUTOREL holds a holder list in the pool, and one that is waiting for a key holds
//! a wait ticket. Both must be given back however the connection ends: QUIT, the client vanishing, a
//! protocol error, shutdown, or an I/O error that unwinds the task. So the cleanup lives in `Drop`,
//! where no return path can skip it.

use crate::pool::{HolderId, WaitTicket};

use super::Shared;

/// How the reply to a lease request is spelled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaseReply {
    /// `KEY <id>[ <secret>]`, as v1's GET.
    Key,
    /// `LEASED <id> <token>[ <secret>]`.
    Leased,
}

/// A request waiting for a key: its ticket and how to answer it.
#[derive(Debug)]
pub struct Waiting {
    pub ticket: WaitTicket,
    pub reply: LeaseReply,
}

/// One connection's state.
pub struct Session<'a> {
    shared: &'a Shared,
    /// Set by AUTOREL: the list of leases to release when the connection closes.
    pub holder: Option<HolderId>,
    /// The request this connection waits on, if any. Replies go out in request order, so there is at
    /// most one.
    pub waiting: Option<Waiting>,
}

impl<'a> Session<'a> {
    pub fn new(shared: &'a Shared) -> Session<'a> {
        Session { shared, holder: None, waiting: None }
    }

    /// The state this session's connection serves.
    pub fn shared(&self) -> &'a Shared {
        self.shared
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.holder.is_none() && self.waiting.is_none() {
            return;
        }
        // A poisoned lock means the daemon is already failing; panicking again here, possibly while
        // unwinding, would abort it outright.
        let Some(mut locked) = self.shared.lock_unless_poisoned() else {
            return;
        };
        // The wait goes first: a key granted to it but never collected must go back before the holder
        // closes, or it would stay blocked for a whole window.
        if let Some(waiting) = self.waiting.take() {
            locked.pool.cancel_wait(waiting.ticket);
        }
        if let Some(holder) = self.holder.take() {
            let released = locked.pool.close_holder(holder);
            tracing::debug!(released, "connection closed; released its leases");
        }
    }
}
