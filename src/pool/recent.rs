//! Where recently leased keys are: a small table from id to slot that answers most REL lookups
//! without the id index.
//!
//! A key is most often released (or touched, or pinged) soon after it was leased, by the worker that
//! leased it. In a pool far larger than the CPU's caches, finding it through the [`super::index::IdIndex`]
//! costs a cache miss on the index's bucket, while the key's record is still in the cache from the lease.
//! This table, small enough to stay in the cache itself, remembers the slot of each key leased, in an
//! entry chosen by its id's hash (a newer lease simply overwrites an older one there).
//!
//! A hint is only ever a guess: the caller checks that the record at the slot holds the very id before
//! acting on it, and looks the id up in the index otherwise. So the table needs no upkeep when a key
//! goes away or its slot is reused, and ids that clash in it (by chance, or chosen by a client to) only
//! cost the index lookup that would have been made anyway.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::key_id::KeyId;
use super::list::NIL;
use super::record::Slot;

/// Entries in the table: 2^14 of 8 bytes is 128 KB, which stays in a core's L2 cache. When 50 connections
/// each keep 32 requests in flight, about 800 other leases are made between a key's lease and its
/// release, and 19 hints in 20 survive them.
const ENTRIES_LOG2: u32 = 14;

/// Slots of recently leased keys, by their ids' hashes.
#[derive(Default)]
pub struct RecentLeases {
    /// Per entry: the slot (or [`NIL`]) and 32 bits of the id's hash, to tell most other ids apart
    /// without reading a record. Empty until the first lease is noted: a pool too small to need the
    /// table (most named pools) never pays for it.
    entries: Vec<(Slot, u32)>,
    hasher: RandomState,
}

impl RecentLeases {
    /// Remembers that `id` was just leased from `slot`.
    pub fn note(&mut self, id: &KeyId, slot: Slot) {
        if self.entries.is_empty() {
            self.entries = vec![(NIL, 0); 1 << ENTRIES_LOG2];
        }
        let (at, tag) = self.place(id);
        self.entries[at] = (slot, tag);
    }

    /// The slot `id` was leased from, if it was leased recently: a guess, to be checked against the
    /// record there.
    pub fn hint(&self, id: &KeyId) -> Option<Slot> {
        let (at, tag) = self.place(id);
        let &(slot, noted_tag) = self.entries.get(at)?;
        (slot != NIL && noted_tag == tag).then_some(slot)
    }

    /// The entry for `id` and the tag that tells it from other ids in that entry: the top bits of its
    /// hash and the low 32.
    fn place(&self, id: &KeyId) -> (usize, u32) {
        let hash = self.hasher.hash_one(id);
        ((hash >> (64 - ENTRIES_LOG2)) as usize, hash as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> KeyId {
        KeyId::parse(text.as_bytes()).expect("a valid id")
    }

    #[test]
    fn a_noted_lease_is_hinted_until_overwritten() {
        let mut recent = RecentLeases::default();
        let first = id("AAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(recent.hint(&first), None);
        recent.note(&first, 7);
        assert_eq!(recent.hint(&first), Some(7));
        recent.note(&first, 9);
        assert_eq!(recent.hint(&first), Some(9));
    }

    #[test]
    fn ids_that_share_an_entry_are_told_apart_by_their_tags() {
        let mut recent = RecentLeases::default();
        // Ids until two land in the same entry: by the birthday bound, a few hundred.
        let mut seen = std::collections::HashMap::new();
        let (first, second) = (0..100_000)
            .map(|n| id(&format!("{n:08}AAAAAAAAAAAAAAAA")))
            .find_map(|next| seen.insert(recent.place(&next).0, next).map(|earlier| (earlier, next)))
            .expect("two ids sharing an entry among 100,000");
        recent.note(&first, 1);
        assert_eq!(recent.hint(&second), None, "a different tag is no hint");
        recent.note(&second, 2);
        assert_eq!(recent.hint(&first), None, "the newer lease took the entry");
        assert_eq!(recent.hint(&second), Some(2));
    }
}
