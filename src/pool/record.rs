//! The per-key record kept in the pool's `Records`, and the small types that describe a key's state.
//!
//! This struct is paid for once per key, so it is kept lean (64 bytes, a cache line's worth, though in
//! the pool's array most records straddle two lines: see `prefetch.rs`): the id inline, the keep-alive
//! list links as two `u32` slot numbers, the state as a tag plus one `u32` that means "position in the
//! free list" or "index in the lease table" depending on the tag, and a `u32` naming the key's secret,
//! if it has one. What only a leased or delayed key needs (its deadline, timer, token) lives in the
//! pool's lease table, and what only a key with a secret needs lives in the secret table: both are as
//! large as the keys that use them, not the pool.

use super::clock::Millis;
use super::key_id::KeyId;
use super::list::{Linked, Links, NIL};

/// A slot number in the pool's `Records`. `u32` because the pool never holds more than
/// [`super::MAX_POOL_KEYS`] keys (fewer than `u32::MAX`), and because records store several of them.
pub type Slot = u32;

/// Where a key is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// Free, at this position of the free list.
    Free { position: u32 },
    /// Leased, under this entry of the lease table.
    Blocked { lease: u32 },
    /// Released with a delay that has not passed yet; the entry of the lease table holds its deadline.
    Delayed { lease: u32 },
}

/// One key.
#[derive(Debug)]
pub struct KeyRecord {
    pub id: KeyId,
    /// On the keep-alive list, unless the key has a keep-alive window of its own (see `secrets.rs`).
    pub links: Links,
    pub place: Place,
    /// Times this key was leased.
    pub leases: u32,
    /// The key's entry in the secret table, or [`NO_SECRET`].
    pub secret: u32,
    /// When the key was created, in Unix milliseconds: it is only ever reported, and it must mean the
    /// same after a restart.
    pub created_ms: u64,
    /// When the key is deleted unless it is pinged first.
    pub alive_until: Millis,
}

impl KeyRecord {
    /// A bare record of `id`, on no list and with no secret: for tests of what holds records.
    #[cfg(test)]
    pub fn bare(id: KeyId) -> KeyRecord {
        KeyRecord {
            id,
            links: Links::UNLINKED,
            place: Place::Free { position: 0 },
            leases: 0,
            secret: NO_SECRET,
            created_ms: 0,
            alive_until: Millis(0),
        }
    }
}

/// The `secret` of a key that has none.
pub const NO_SECRET: u32 = NIL;

impl Linked for KeyRecord {
    fn links(&mut self) -> &mut Links {
        &mut self.links
    }
}

/// A key's state, as reported to clients.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyState {
    Free,
    Blocked,
    /// Released with a delay: leased to no one until the delay has passed.
    Delayed,
}

impl KeyState {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Free => "free",
            KeyState::Blocked => "blocked",
            KeyState::Delayed => "delayed",
        }
    }
}

/// What INFO reports about one key. Times are Unix epoch milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyInfo {
    pub id: KeyId,
    pub state: KeyState,
    pub created_ms: u64,
    /// `None` for a key that never expires by keep-alive.
    pub alive_until_ms: Option<u64>,
    /// Present exactly while the key is blocked.
    pub blocked_until_ms: Option<u64>,
    /// The current lease's fencing token; present exactly while the key is blocked.
    pub token: Option<u64>,
    /// When a delayed key becomes free; present exactly while the key is delayed.
    pub free_at_ms: Option<u64>,
    pub leases: u32,
}
