//! The typed results of the client's calls: what each reply means, with nothing left to parse.
//!
//! Outcomes that are a normal part of a key's life (`NOT_FOUND`, `NOT_BLOCKED`, `STALE`, `EXISTS`) are
//! values here, not errors, so that a caller `match`es on them: a worker that gets `Released::Stale`
//! learns its lease was lost, which is information, not a failure of the call.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::pool::KeyId;

/// A fencing token: names exactly one lease of a key (see `LEASE` in protocol.md).
pub type Token = u64;

/// A leased key, from `GET` (no token) or `LEASE` (with its fencing token).
///
/// Its `Display` is the secret when the key has one (a key added with `ADD`), else the id: the string a
/// worker hands to the API it calls.
///
/// ```
/// use keypool::client::{KeyId, Lease};
///
/// let id = KeyId::parse(b"8JqXbX3v1bJ0oYyqPZ2hXa7M").expect("a well-formed id");
/// let lease = Lease { id, token: Some(7), secret: Some("sk-live-51Hx9".into()) };
/// assert_eq!(lease.to_string(), "sk-live-51Hx9");
/// assert_eq!(Lease { secret: None, ..lease }.to_string(), "8JqXbX3v1bJ0oYyqPZ2hXa7M");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The key's id.
    pub id: KeyId,
    /// The lease's fencing token; `None` for a plain `GET`, which does not report it.
    pub token: Option<Token>,
    /// The key's secret, for a key added with one.
    pub secret: Option<String>,
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.secret {
            Some(secret) => f.write_str(secret),
            None => f.write_str(self.id.as_str()),
        }
    }
}

/// Which key (and, with a token, which lease of it) a `REL` or `TOUCH` acts on.
///
/// Built from a [`Lease`] (its token is sent, so the call acts only on that lease), a [`KeyId`] (no
/// token: acts on whatever lease the key is under), or an id and a token.
///
/// ```
/// use keypool::client::{KeyId, KeyRef};
///
/// let id = KeyId::parse(b"8JqXbX3v1bJ0oYyqPZ2hXa7M").expect("a well-formed id");
/// assert_eq!(KeyRef::from(id).token, None);
/// assert_eq!(KeyRef::from((id, 42)).token, Some(42));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef {
    /// The key.
    pub id: KeyId,
    /// The lease the call must act on, if any.
    pub token: Option<Token>,
}

impl From<KeyId> for KeyRef {
    fn from(id: KeyId) -> KeyRef {
        KeyRef { id, token: None }
    }
}

impl From<&KeyId> for KeyRef {
    fn from(id: &KeyId) -> KeyRef {
        KeyRef { id: *id, token: None }
    }
}

impl From<(KeyId, Token)> for KeyRef {
    fn from((id, token): (KeyId, Token)) -> KeyRef {
        KeyRef { id, token: Some(token) }
    }
}

impl From<&Lease> for KeyRef {
    fn from(lease: &Lease) -> KeyRef {
        KeyRef { id: lease.id, token: lease.token }
    }
}

/// What a `REL` did.
///
/// `NOT_FOUND` is a variant rather than an error or `None`: a key that expired or was deleted while
/// leased is one more way a lease ends, and a worker usually treats it like `Stale` (stop using the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// `RELEASED`: the key is free (or delayed) again.
    Yes,
    /// `NOT_BLOCKED`: no token was given, and the key was not leased.
    NotBlocked,
    /// `STALE`: the token names a lease that is over (timed out, released, or the key was leased again).
    /// Nothing changed.
    Stale,
    /// `NOT_FOUND`: no such key (deleted, or its keep-alive window passed).
    NotFound,
}

/// What a `TOUCH` did; the variants mean what [`Released`]'s do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched {
    /// `TOUCHED`: the block window starts again.
    Yes,
    /// `NOT_BLOCKED`: no token was given, and the key was not leased.
    NotBlocked,
    /// `STALE`: the token names a lease that is over; nothing changed.
    Stale,
    /// `NOT_FOUND`: no such key.
    NotFound,
}

/// What an `ADD` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// `KEY <id>`: a new key with that secret.
    New(KeyId),
    /// `EXISTS <id>`: the pool already held the secret, under this key; nothing was created.
    Existing(KeyId),
}

impl Added {
    /// The key's id, new or existing.
    pub fn id(self) -> KeyId {
        match self {
            Added::New(id) | Added::Existing(id) => id,
        }
    }
}

/// A key's state, as `INFO` reports it, with the fields that exist only in that state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Free to lease.
    Free,
    /// Leased.
    Blocked {
        /// When the block ends by itself, in Unix epoch milliseconds.
        until_ms: u64,
        /// The current lease's fencing token.
        token: Token,
    },
    /// Released with a delay that has not passed.
    Delayed {
        /// When the delay ends, in Unix epoch milliseconds.
        free_at_ms: u64,
    },
}

/// One key, as `INFO` describes it. Times are Unix epoch milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The key's id.
    pub id: KeyId,
    /// Free, blocked or delayed.
    pub state: KeyState,
    /// When `GEN` or `ADD` created the key.
    pub created_ms: u64,
    /// When the key is deleted unless pinged first; `None` for a key that never expires that way.
    pub alive_until_ms: Option<u64>,
    /// How many times the key has been leased.
    pub leases: u64,
}

/// `STATS` (or `STATS <pool>`): the daemon's figures by name, as sent.
///
/// Kept as a map because the daemon may add figures: [`Stats::number`] reads the numeric ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    figures: BTreeMap<String, String>,
}

impl Stats {
    /// Wraps `figures` (name to value); for tests and callers that build one.
    pub fn from_map(figures: BTreeMap<String, String>) -> Stats {
        Stats { figures }
    }

    /// The value of `name` as sent, or `None` when the daemon does not report it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.figures.get(name).map(String::as_str)
    }

    /// The value of `name` as a whole number, or `None` when it is missing or not a number.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    /// Every figure, by name.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.figures
    }

    /// Every figure, by name, taken out of the wrapper.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.figures
    }
}

/// One pool in a `POOLS` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    /// The pool's name.
    pub name: String,
    /// How many keys it holds.
    pub keys: u64,
}

/// One page of `POOLS`: its pools and the cursor of the next page (`0`: the listing is complete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolsPage {
    /// The pools on this page.
    pub pools: Vec<PoolInfo>,
    /// The cursor to ask for next; `0` when there is nothing more.
    pub next: u64,
}

/// The answer to one request of a [`Pipeline`](super::Pipeline), typed by the command that asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `GEN`: the new ids.
    Keys(Vec<KeyId>),
    /// `ADD`.
    Added(Added),
    /// `GET` or `LEASE`: the lease, or `None` when no key was free in time.
    Lease(Option<Lease>),
    /// `REL`.
    Released(Released),
    /// `TOUCH`.
    Touched(Touched),
    /// `DEL`: whether a key was deleted.
    Deleted(bool),
    /// `PING <id>`: whether the key exists (its keep-alive window restarted).
    Alive(bool),
    /// `PING`: `PONG`.
    Pong,
    /// `INFO`: the key, or `None` when there is no such key.
    Info(Option<Info>),
    /// `STATS`.
    Stats(Stats),
    /// `POOLS`.
    Pools(PoolsPage),
    /// `VERSION`: the daemon's version.
    Version(String),
}
