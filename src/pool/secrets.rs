//! The secret table: the third-party keys a team imports with ADD, and what only such keys need.
//!
//! Most pools hold server-minted keys without secrets, so a secret is not stored in the key record (which
//! every key pays for) but here, named by a `u32` in the record. The table also indexes secrets by their
//! bytes, so that importing the same list twice creates nothing new.
//!
//! Secrets are chosen by clients, unlike ids, so the index hashes them with std's keyed SipHash: a client
//! that could predict the hash could fill one bucket and make every ADD a linear probe.
//!
//! A key added with a keep-alive window of its own cannot sit on the pool's keep-alive list (which is
//! sorted only because all its keys share one window), so it gets a timer of its own, kept here; a key
//! that never expires by keep-alive needs none.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use hashbrown::HashTable;
use slab::Slab;
use tokio_util::time::delay_queue;

use super::record::Slot;

/// Which keep-alive window a key with a secret follows.
#[derive(Debug)]
pub enum OwnKeepalive {
    /// The pool's: the key is on the keep-alive list like any other.
    Pool,
    /// None: the key is never deleted for want of a PING.
    Never,
    /// Its own window, with its own timer (`None` only while the timer is being re-armed).
    Window { window: Duration, timer: Option<delay_queue::Key> },
}

/// One secret and the key that carries it.
#[derive(Debug)]
pub struct SecretEntry {
    pub bytes: Box<[u8]>,
    pub slot: Slot,
    pub keepalive: OwnKeepalive,
}

/// Secrets by entry number, indexed by their bytes.
#[derive(Default)]
pub struct Secrets {
    entries: Slab<SecretEntry>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Secrets {
    /// The entry holding `bytes`, if any. O(1) expected.
    pub fn find(&self, bytes: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(bytes);
        self.index.find(hash, |&entry| *self.entries[entry as usize].bytes == *bytes).copied()
    }

    /// Stores a secret that is not in the table yet; returns its entry number.
    pub fn insert(&mut self, entry: SecretEntry) -> u32 {
        let hash = self.hasher.hash_one(&*entry.bytes);
        let at = self.entries.insert(entry) as u32;
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, at, |&other| hasher.hash_one(&*entries[other as usize].bytes));
        at
    }

    /// Removes entry `at` and returns it.
    pub fn remove(&mut self, at: u32) -> SecretEntry {
        let hash = self.hasher.hash_one(&*self.entries[at as usize].bytes);
        if let Ok(found) = self.index.find_entry(hash, |&entry| entry == at) {
            found.remove();
        }
        self.entries.remove(at as usize)
    }

    pub fn get(&self, at: u32) -> &SecretEntry {
        &self.entries[at as usize]
    }

    pub fn get_mut(&mut self, at: u32) -> &mut SecretEntry {
        &mut self.entries[at as usize]
    }

    /// How many keys carry a secret.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
