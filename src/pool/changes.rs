//! What the engine tells a change log, so that the disk can follow the pool without the engine knowing
//! there is a disk.
//!
//! Every change a client makes (a key created, leased, touched, released, delayed, pinged, deleted) is
//! reported as one [`Change`], in the order the pool applied them, while the daemon's lock is held. Each
//! change states the new value of what it changed, never a difference ("leased, leases = 4, until T",
//! not "one more lease"): replaying a change twice, or onto a snapshot that already contains it, gives
//! the same state. That is what lets a snapshot be taken while clients keep changing the pool (see
//! `persist`).
//!
//! What follows from a deadline is not reported: a lease that ends by its block window, a delay that
//! runs out, a key deleted because its keep-alive window passed. Recovery applies the deadlines itself,
//! so reporting them would only make the log longer. A key leased to a waiter when a lease times out is
//! reported, since who got it follows from no deadline.
//!
//! Times are Unix epoch milliseconds, the only clock that means anything after a restart.

use super::key_id::KeyId;

/// The deadline of a key that never expires by keep-alive, in Unix milliseconds.
pub const NEVER_MS: u64 = u64::MAX;

/// Which keep-alive window a key with a secret follows, as stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeepaliveMode {
    /// The pool's.
    Pool,
    /// None: never deleted for want of a PING.
    Never,
    /// Its own, this many milliseconds.
    Window(u64),
}

/// Where a key is in its life, as stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlaceImage {
    Free,
    /// Leased until `until_ms` under `token`; `autorel` if its connection asked for release on close.
    Blocked {
        until_ms: u64,
        token: u64,
        autorel: bool,
    },
    /// Released with a delay that ends at `until_ms`.
    Delayed {
        until_ms: u64,
    },
}

/// Everything stored about one key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyImage<'a> {
    pub id: KeyId,
    pub created_ms: u64,
    /// [`NEVER_MS`] for a key that never expires by keep-alive.
    pub alive_until_ms: u64,
    pub leases: u32,
    pub secret: Option<(&'a [u8], KeepaliveMode)>,
    pub place: PlaceImage,
}

/// One change to one key of a pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Change<'a> {
    /// A key was created (GEN, ADD) with this state; in a snapshot, a key as it stands.
    Key(KeyImage<'a>),
    /// A key was leased, touched, released or delayed: its new place and lease count.
    Placed { id: KeyId, leases: u32, place: PlaceImage },
    /// A key was pinged: its new keep-alive deadline.
    KeptAlive { id: KeyId, alive_until_ms: u64 },
    /// A key was deleted by DEL.
    Deleted { id: KeyId },
}

/// Where a pool reports its changes. Called with the daemon's lock held, so it must be quick: append to
/// a buffer, and leave the disk to another thread.
pub trait ChangeLog: Send + Sync {
    /// Records `change`, made in the pool named `pool`.
    fn record(&self, pool: &str, change: &Change<'_>);
}
