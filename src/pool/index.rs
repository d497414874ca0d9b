//! The id index: from a key id to its slot, storing each id only once.
//!
//! A `HashMap<KeyId, Slot>` would hold every 24-byte id a second time. This table holds only slot numbers
//! and hashes and compares through the slab, which already has the id: about 5 bytes a key instead of 30.
//!
//! Ids come from a CSPRNG inside the daemon and a client can only look them up, never choose what goes
//! into the table, so flooding one bucket is not possible and the fast, unkeyed-strength foldhash is
//! enough; SipHash would buy nothing here.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use slab::Slab;

use super::key_id::KeyId;
use super::record::{KeyRecord, Slot};

/// Maps ids to slots of a `Slab<KeyRecord>`; every operation takes that slab to read ids from.
#[derive(Default)]
pub struct IdIndex {
    table: HashTable<Slot>,
    hasher: RandomState,
}

impl IdIndex {
    fn hash(&self, id: &KeyId) -> u64 {
        self.hasher.hash_one(id.as_bytes())
    }

    /// The slot holding `id`, if any. O(1) expected.
    pub fn find(&self, keys: &Slab<KeyRecord>, id: &KeyId) -> Option<Slot> {
        self.table.find(self.hash(id), |&slot| keys[slot as usize].id == *id).copied()
    }

    /// Records that `slot` holds `keys[slot].id`, which must not be in the index yet.
    pub fn insert(&mut self, keys: &Slab<KeyRecord>, slot: Slot) {
        let hash = self.hash(&keys[slot as usize].id);
        let hasher = &self.hasher;
        self.table.insert_unique(hash, slot, |&other| hasher.hash_one(keys[other as usize].id.as_bytes()));
    }

    /// Makes room for `additional` more ids without rehashing: a rehash reads every indexed id out of the
    /// slab again, which is what dominates loading millions of keys one by one.
    pub fn reserve(&mut self, keys: &Slab<KeyRecord>, additional: usize) {
        let hasher = &self.hasher;
        self.table.reserve(additional, |&other| hasher.hash_one(keys[other as usize].id.as_bytes()));
    }

    /// Indexes many slots at once, in the order of the buckets they land in, so that filling a large
    /// table walks its memory once instead of jumping to a random bucket per key (a cache miss each):
    /// what loading a snapshot of millions of keys spends most of its time on otherwise.
    pub fn insert_many(&mut self, keys: &Slab<KeyRecord>, slots: &[Slot]) {
        self.reserve(keys, slots.len());
        // hashbrown's table has (capacity / 7 * 8) buckets, a power of two, and a key's first bucket is
        // its hash's low bits: sorting by those is sorting by bucket.
        let buckets = (self.table.capacity() / 7 * 8).max(1).next_power_of_two() as u64;
        let mut hashed: Vec<(u64, Slot)> =
            slots.iter().map(|&slot| (self.hash(&keys[slot as usize].id), slot)).collect();
        hashed.sort_unstable_by_key(|&(hash, _)| hash & (buckets - 1));
        let hasher = &self.hasher;
        for (hash, slot) in hashed {
            self.table.insert_unique(hash, slot, |&other| hasher.hash_one(keys[other as usize].id.as_bytes()));
        }
    }

    /// Forgets `id`. Returns the slot it was at.
    pub fn remove(&mut self, keys: &Slab<KeyRecord>, id: &KeyId) -> Option<Slot> {
        let entry = self.table.find_entry(self.hash(id), |&slot| keys[slot as usize].id == *id).ok()?;
        Some(entry.remove().0)
    }

    /// How many ids are indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }
}
