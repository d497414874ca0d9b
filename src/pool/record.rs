//! The per-key record kept in the pool's slab, and the small types that describe a key's state.
//!
//! This struct is paid for once per key, so it is kept lean: the id inline, the keep-alive list links as
//! two `u32` slot numbers, and the state as a tag plus one `u32` that means "position in the free list" or
//! "index of the lease" depending on the tag. What only a leased key needs (its deadline and its timer)
//! lives in the pool's separate lease table, which is as large as the number of leased keys, not the pool.

use super::clock::Millis;
use super::key_id::KeyId;

/// A slot number in the pool's slab. `u32` because the pool never holds more than `u32::MAX - 1` keys,
/// and because records store several of them.
pub type Slot = u32;

/// The "no slot" marker for list links.
pub const NIL: Slot = Slot::MAX;

/// Where a key is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// Free, at this position of the free list.
    Free { position: u32 },
    /// Leased, under this entry of the lease table.
    Blocked { lease: u32 },
}

/// Links of the intrusive keep-alive list (see `keepalive.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Links {
    pub prev: Slot,
    pub next: Slot,
}

impl Links {
    pub const UNLINKED: Links = Links { prev: NIL, next: NIL };
}

/// One key.
#[derive(Debug)]
pub struct KeyRecord {
    pub id: KeyId,
    pub links: Links,
    pub place: Place,
    /// Times this key was handed out by GET.
    pub leases: u32,
    pub created: Millis,
    /// When the key is deleted unless it is pinged first.
    pub alive_until: Millis,
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
