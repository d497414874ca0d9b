//! Requests waiting for a free key (`GET <wait>`, `LEASE <wait>`), and what they get in the end.
//!
//! Waiters of a pool queue in arrival order on an intrusive list. A key that comes free goes straight to
//! the oldest waiter: the pool leases it to the waiter on the spot, under the pool's lock, so it can never
//! be handed to two, and parks the result here until the waiter's connection collects it. The waiter's
//! task sleeps on its [`Waker`] meanwhile and costs nothing.

use std::task::Waker;

use tokio_util::time::delay_queue;

use super::clock::Millis;
use super::key_id::KeyId;
use super::lease::LeaseTerms;
use super::list::{Linked, Links};

/// A waiting request's claim on its outcome. Not `Clone`: exactly one owner collects or cancels it.
#[derive(Debug, PartialEq, Eq)]
pub struct WaitTicket(pub(super) u32);

/// A lease made for a waiter. It owns its copy of the secret: by the time the waiter's connection
/// collects it, the key may already be gone again (deleted, say), and the reply must still be whole.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Grant {
    pub id: KeyId,
    pub token: u64,
    pub secret: Option<Box<[u8]>>,
}

/// Where a waiter is.
#[derive(Debug)]
pub(super) enum WaitState {
    /// On the queue.
    Waiting,
    /// Served: the lease is made, the connection has yet to collect it.
    Granted(Grant),
    /// Its wait ran out.
    TimedOut,
}

/// One waiting request.
#[derive(Debug)]
pub(super) struct Waiter {
    pub links: Links,
    pub terms: LeaseTerms,
    /// When the wait runs out.
    pub until: Millis,
    pub state: WaitState,
    pub waker: Option<Waker>,
    /// Armed while the waiter waits; `None` once it was served, or its timer fired.
    pub timer: Option<delay_queue::Key>,
}

impl Linked for Waiter {
    fn links(&mut self) -> &mut Links {
        &mut self.links
    }
}
