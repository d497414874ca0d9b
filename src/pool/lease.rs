//! The lease table's entries, and the terms a lease is made on.
//!
//! An entry exists for every key that is not free: a leased key's entry carries its block deadline,
//! its timer, its fencing token and, for a connection that asked to release on close, its place on that
//! connection's list. A key released with a delay keeps its entry (the same deadline and timer now mean
//! "free at"), but its lease is over: it has no holder and its token no longer matches anything.

use std::time::Duration;

use tokio_util::time::delay_queue;

use super::clock::Millis;
use super::key_id::KeyId;
use super::list::{Linked, Links};
use super::record::Slot;

/// A connection's list of the leases it holds, for release on close (see [`super::Pool::open_holder`]).
///
/// The slab index of the list plus the serial number it was opened with: a holder id outliving its
/// holder (a wait granted after its connection closed, say) must not file leases under whichever
/// connection's list reuses the index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HolderId {
    pub(super) index: u32,
    pub(super) serial: u64,
}

/// One holder's list of leases.
#[derive(Debug, Default)]
pub(super) struct Holder {
    pub serial: u64,
    pub leases: super::list::List,
}

/// How a key is to be leased.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct LeaseTerms {
    /// The block window; the pool's block timeout when `None`.
    pub block: Option<Duration>,
    /// Whose list the lease goes on, so that closing the holder releases it.
    pub holder: Option<HolderId>,
}

/// A key just leased, as a lease reply reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Leased<'a> {
    pub id: KeyId,
    pub token: u64,
    /// The key's secret, if it carries one.
    pub secret: Option<&'a [u8]>,
}

/// One entry of the lease table.
#[derive(Debug)]
pub(super) struct Lease {
    pub slot: Slot,
    /// When the block window ends (or, for a delayed key, when it becomes free).
    pub until: Millis,
    pub timer: delay_queue::Key,
    /// Unique and increasing over the pool's life; see [`super::Pool::lease`].
    pub token: u64,
    /// The holder whose list this lease is on, or `list::NIL`.
    pub holder: u32,
    pub links: Links,
}

impl Linked for Lease {
    fn links(&mut self) -> &mut Links {
        &mut self.links
    }
}
