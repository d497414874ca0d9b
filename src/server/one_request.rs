//! One request served on its own, outside a connection's batch: the path the HTTP gateway takes to the
//! engine, and the end of a wait, which both front ends share.
//!
//! [`run_one`] is the whole life of one request in one place: lock, [`execute`], unlock, count its
//! outcome (or, if it waits for a key, sleep without the lock until the pool answers, and count that).
//! Whatever must happen between the engine's answer and the reply leaving (waiting for a change to be
//! durable, say) goes into this one function, and every route of the gateway gets it.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;

use super::execute::{execute, lease_reply, Executed};
use super::session::{LeaseReply, Session, Waiting};
use super::telemetry::Outcome;
use super::Shared;
use crate::protocol::reply::{self, words};
use crate::protocol::{Command, Request};

/// Serves `request` (anything but QUIT and AUTH, which only a connection has a use for) for `session`,
/// exactly as a TCP connection would, and returns its reply in wire form.
///
/// A request that waits for a key waits here, without the lock. Cancel-safe: if the returned future is
/// dropped mid-wait (the HTTP client went away), the wait stays in `session`, whose `Drop` withdraws it.
pub async fn run_one(shared: &Arc<Shared>, session: &mut Session<'_>, request: Request<'_>) -> BytesMut {
    debug_assert!(!matches!(request, Request::Quit | Request::Auth { .. }), "not a request of one");
    let mut out = BytesMut::new();
    let command = request.command();
    let executed = {
        let mut locked = shared.lock();
        execute(request, &mut locked, shared, session, &mut out)
    };
    match executed {
        Executed::Waits => std::future::poll_fn(|cx| poll_waiting(shared, session, &mut out, cx)).await,
        _ => shared.telemetry.count_outcome(command, Outcome::of_reply(&out)),
    }
    out
}

/// Polls the session's waiting request; once the pool has answered it, writes its reply to `out`, counts
/// its outcome, and clears the wait (the ticket is spent: the session must not withdraw it). Ready at
/// once if the session waits for nothing.
pub fn poll_waiting(shared: &Shared, session: &mut Session<'_>, out: &mut BytesMut, cx: &mut Context<'_>) -> Poll<()> {
    let Some(waiting) = session.waiting.as_ref() else {
        return Poll::Ready(());
    };
    let outcome = {
        let mut locked = shared.lock();
        match locked.pools.get(waiting.pool) {
            Some(pool) => {
                let outcome = pool.poll_wait(&waiting.ticket, cx);
                if outcome.is_ready() {
                    // Collecting the outcome may leave the pool empty (a wait that ran out in a pool it
                    // created, say).
                    locked.pools.drop_if_idle(waiting.pool);
                }
                outcome
            }
            // Cannot happen (a pool with a waiter is never dropped); answering NOT_FOUND is the safe side.
            None => Poll::Ready(None),
        }
    };
    let Poll::Ready(granted) = outcome else {
        return Poll::Pending;
    };
    let command = waiting.command();
    match granted {
        Some(grant) => {
            lease_reply(out, waiting.reply, &grant.id, grant.token, grant.secret.as_deref());
            shared.telemetry.count_outcome(command, Outcome::Ok);
        }
        None => {
            reply::word(out, words::NOT_FOUND);
            shared.telemetry.count_outcome(command, Outcome::NotFound);
        }
    }
    session.waiting = None;
    Poll::Ready(())
}

impl Waiting {
    /// The command that waits: GET or LEASE, told apart by how it is answered.
    pub fn command(&self) -> Command {
        match self.reply {
            LeaseReply::Key => Command::Get,
            LeaseReply::Leased => Command::Lease,
        }
    }
}
