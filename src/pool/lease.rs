//! The lease table's entries, and the terms a lease is made on.
//!
//! An entry exists for every key that is not free: a leased key's entry carries its block deadline,
//! what times it, its fencing token and, for a connection that asked to release on close, its place on
//! that connection's list. A key released with a delay keeps its entry (the same deadline now means "free
//! at"), but its lease is over: it has no holder and its token no longer matches anything.
//!
//! Most leases use the pool's block window, and those sit on the pool's block list, which is sorted by
//! deadline for the same reason the keep-alive list is (one window, and time only moves forward), with a
//! single timer for its head. Only leases with a window of their own (`LEASE <wait> <block>`, `TOUCH` with
//! a duration) and delays get a timer each. That keeps the timer wheel, whose insert and remove cost more
//! than the rest of a GET and REL together, off the common path.

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
    pub leases: super::list::List<ByHolder>,
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
    /// The id in the key's record: the reply copies it from there, in the cache since the lease read it.
    pub id: &'a KeyId,
    pub token: u64,
    /// The key's secret, if it carries one.
    pub secret: Option<&'a [u8]>,
}

/// What makes a lease (or delay) end on time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Timing {
    /// It is on the pool's block list.
    BlockList,
    /// Its own timer in the wheel.
    Timer(delay_queue::Key),
    /// Nothing: its timer just fired, or it is being re-timed.
    Untimed,
}

/// Tag of the links that put a lease on its holder's list.
#[derive(Debug)]
pub(super) enum ByHolder {}

/// Tag of the links that put a lease on the pool's block list.
#[derive(Debug)]
pub(super) enum ByDeadline {}

/// One entry of the lease table.
#[derive(Debug)]
pub(super) struct Lease {
    pub slot: Slot,
    /// When the block window ends (or, for a delayed key, when it becomes free).
    pub until: Millis,
    pub timing: Timing,
    /// Unique and increasing over the pool's life; see [`super::Pool::lease`].
    pub token: u64,
    /// The holder whose list this lease is on, or `list::NIL`.
    pub holder: u32,
    /// Links on the holder's list.
    pub links: Links,
    /// Links on the pool's block list.
    pub block_links: Links,
}

impl Linked<ByHolder> for Lease {
    fn links(&mut self) -> &mut Links {
        &mut self.links
    }
}

impl Linked<ByDeadline> for Lease {
    fn links(&mut self) -> &mut Links {
        &mut self.block_links
    }
}
