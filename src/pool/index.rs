//! The id index: from a key id to its slot, storing each id only once.
//!
//! A `HashMap<KeyId, Slot>` would hold every 24-byte id a second time. This table holds, per bucket, one
//! `u64`: the slot number and the top 32 bits of the id's hash (its *tag*). It compares ids through the
//! records, which already have them, and only when the tags agree.
//!
//! It is a linear-probing table of its own rather than hashbrown's, for what a pool of millions of keys
//! costs: there, every lookup is a cache miss, and hashbrown spends two (its control bytes and its slot
//! array are apart) where one bucket here holds all a probe needs. A probe starts at the bucket named by
//! the hash's top bits and walks on through neighbouring buckets, mostly within that first cache line,
//! so [`IdIndex::prefetch`] can start loading it before the lookup runs (see `lookahead.rs`).
//!
//! - **Load.** The table grows (doubling) so that it is never more than three quarters full, so probes
//!   stay short.
//! - **Deletion** shifts the entries after the hole back instead of leaving tombstones, so a table that
//!   sees many deletes never slows down or needs a rebuild; an entry's home bucket is read off its tag,
//!   without hashing its id again.
//! - **Tags.** A tag holds the bits the home bucket came from plus more: with 2^24 buckets (10 million
//!   keys), an id that is not there still matches a neighbour's tag only about once in 256 buckets probed,
//!   and then costs one comparison of ids.
//!
//! Ids come from a CSPRNG inside the daemon and a client can only look them up, never choose what goes
//! into the table, so flooding one bucket is not possible and the fast, unkeyed-strength foldhash is
//! enough; SipHash would buy nothing here.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::huge_pages;
use super::key_id::KeyId;
use super::prefetch::prefetch;
use super::record::Slot;
use super::records::Records;

/// A bucket with no entry. Never a real entry: its slot part would be `u32::MAX`, which no key has.
const EMPTY: u64 = u64::MAX;

/// The fewest buckets a table that holds anything has.
const MIN_BUCKETS: usize = 16;

/// The most buckets: a home bucket is chosen by tag bits, of which there are 32. (A `u64`, so that the
/// crate still compiles where `usize` is 32 bits wide.)
const MAX_BUCKETS: u64 = 1 << 32;

/// Maps ids to slots of the pool's [`Records`]; every operation takes them to read ids from.
#[derive(Default)]
pub struct IdIndex {
    /// `EMPTY` or `tag << 32 | slot`; the length is zero or a power of two.
    buckets: Vec<u64>,
    len: usize,
    hasher: RandomState,
}

impl IdIndex {
    /// The slot holding `id`, if any. O(1) expected.
    pub fn find(&self, keys: &Records, id: &KeyId) -> Option<Slot> {
        self.position(keys, id).map(|at| slot_of(self.buckets[at]))
    }

    /// Records that `slot` holds `keys[slot].id`, which must not be in the index yet.
    pub fn insert(&mut self, keys: &Records, slot: Slot) {
        self.reserve(1);
        let entry = entry(self.tag(&keys[slot].id), slot);
        self.place(entry);
        self.len += 1;
    }

    /// Makes room for `additional` more ids without growing the table on the way.
    ///
    /// # Panics
    /// Past [`super::MAX_POOL_KEYS`] ids, which the table cannot hold: the pool refuses keys before that.
    pub fn reserve(&mut self, additional: usize) {
        let wanted = self.len.saturating_add(additional);
        if wanted > max_load(self.buckets.len()) {
            let buckets = buckets_for(wanted);
            // A full table would make every probe for a missing id endless: refuse loudly instead.
            assert!(wanted <= max_load(buckets), "the id index holds at most {} ids", super::MAX_POOL_KEYS);
            self.grow_to(buckets);
        }
    }

    /// Indexes many slots at once, in the order of the buckets they land in, so that filling a large
    /// table walks its memory once instead of jumping to a random bucket per key (a cache miss each):
    /// what loading a snapshot of millions of keys spends most of its time on otherwise.
    pub fn insert_many(&mut self, keys: &Records, slots: &[Slot]) {
        self.reserve(slots.len());
        let mut entries: Vec<u64> = slots.iter().map(|&slot| entry(self.tag(&keys[slot].id), slot)).collect();
        // Sorting by tag is sorting by home bucket: homes are the tags' top bits.
        entries.sort_unstable_by_key(|&entry| entry >> 32);
        for entry in entries {
            self.place(entry);
        }
        self.len += slots.len();
    }

    /// Forgets `id`. Returns the slot it was at.
    pub fn remove(&mut self, keys: &Records, id: &KeyId) -> Option<Slot> {
        let mut hole = self.position(keys, id)?;
        let slot = slot_of(self.buckets[hole]);
        // Close the hole: an entry further along the run moves back into it unless the hole lies before
        // its home, where a probe for it would never look.
        let mask = self.buckets.len() - 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let entry = self.buckets[at];
            if entry == EMPTY {
                break;
            }
            let home = self.home(entry);
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                // The hole lies between the entry's home and the entry: moving it back keeps it reachable.
                debug_assert!(hole.wrapping_sub(home) & mask < at.wrapping_sub(home) & mask);
                self.buckets[hole] = entry;
                hole = at;
            }
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        Some(slot)
    }

    /// Starts loading the bucket where a lookup of `id` begins, so that the lookup, soon after, does not
    /// wait for memory. Changes nothing.
    pub fn prefetch(&self, id: &KeyId) {
        if let Some(bucket) = self.buckets.get(self.home(entry(self.tag(id), 0))) {
            prefetch(bucket);
        }
    }

    /// The slot a lookup of `id` will most likely find, judged by tags only: for prefetching the record,
    /// never for acting on it.
    pub fn likely_slot(&self, id: &KeyId) -> Option<Slot> {
        let tag = self.tag(id);
        self.probe(tag).find(|&entry| tag_of(entry) == tag).map(slot_of)
    }

    /// How many ids are indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn tag(&self, id: &KeyId) -> u32 {
        (self.hasher.hash_one(id.as_bytes()) >> 32) as u32
    }

    /// The bucket a probe for `entry`'s tag starts at: the tag's top bits.
    fn home(&self, entry: u64) -> usize {
        // With one bucket or none there is nothing to choose (and a shift by 64 would overflow).
        if self.buckets.len() <= 1 {
            return 0;
        }
        (entry >> (64 - self.buckets.len().trailing_zeros())) as usize
    }

    /// The bucket holding `id`.
    fn position(&self, keys: &Records, id: &KeyId) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let tag = self.tag(id);
        let mask = self.buckets.len() - 1;
        let mut at = self.home(entry(tag, 0));
        loop {
            let entry = self.buckets[at];
            if entry == EMPTY {
                return None;
            }
            if tag_of(entry) == tag && keys[slot_of(entry)].id == *id {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The entries a probe for `tag` passes, in order, up to the first empty bucket.
    fn probe(&self, tag: u32) -> impl Iterator<Item = u64> + '_ {
        let mask = self.buckets.len().wrapping_sub(1);
        let home = self.home(entry(tag, 0));
        (0..self.buckets.len()).map(move |step| self.buckets[(home + step) & mask]).take_while(|&entry| entry != EMPTY)
    }

    /// Puts `entry` in the first empty bucket from its home on. There must be one.
    fn place(&mut self, entry: u64) {
        let mask = self.buckets.len() - 1;
        let mut at = self.home(entry);
        while self.buckets[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.buckets[at] = entry;
    }

    fn grow_to(&mut self, buckets: usize) {
        let mut table = Vec::new();
        // Advised before it is written, so that the kernel can back it with 2 MB pages from the start.
        huge_pages::reserve(&mut table, buckets);
        table.resize(buckets, EMPTY);
        let old = std::mem::replace(&mut self.buckets, table);
        // The old table's entries come out in home order (but for a run wrapping past its end), so the
        // new table is written front to back too.
        for entry in old.into_iter().filter(|&entry| entry != EMPTY) {
            self.place(entry);
        }
        huge_pages::release_freed_memory();
    }
}

fn entry(tag: u32, slot: Slot) -> u64 {
    (u64::from(tag) << 32) | u64::from(slot)
}

fn tag_of(entry: u64) -> u32 {
    (entry >> 32) as u32
}

fn slot_of(entry: u64) -> Slot {
    entry as u32
}

/// How many entries `buckets` buckets may hold: three quarters.
fn max_load(buckets: usize) -> usize {
    buckets / 4 * 3
}

/// The fewest buckets, a power of two, that hold `entries` within the load limit; at most
/// [`MAX_BUCKETS`], which may then be too few.
fn buckets_for(entries: usize) -> usize {
    let mut buckets = MIN_BUCKETS;
    while max_load(buckets) < entries && (buckets as u64) < MAX_BUCKETS {
        buckets *= 2;
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::key_id::KeyIdGenerator;
    use crate::pool::record::KeyRecord;

    fn record(id: KeyId) -> KeyRecord {
        KeyRecord::bare(id)
    }

    /// Indexes `count` fresh ids, one at a time or all at once.
    fn filled(count: usize, at_once: bool) -> (Records, IdIndex) {
        let mut ids = KeyIdGenerator::from_seed(3);
        let mut keys = Records::default();
        let slots: Vec<Slot> = (0..count).map(|_| keys.insert(record(ids.next_id()))).collect();
        let mut index = IdIndex::default();
        if at_once {
            index.insert_many(&keys, &slots);
        } else {
            for &slot in &slots {
                index.insert(&keys, slot);
            }
        }
        (keys, index)
    }

    fn assert_finds_all(keys: &Records, index: &IdIndex) {
        assert_eq!(index.len(), keys.len());
        for (slot, record) in keys.iter() {
            assert_eq!(index.find(keys, &record.id), Some(slot));
            // Judged by tags only: another id with the same tag (rare, but not impossible) may come first.
            let likely = index.likely_slot(&record.id).expect("a slot for an indexed id");
            assert!(likely == slot || index.tag(&keys[likely].id) == index.tag(&record.id));
        }
    }

    #[test]
    fn finds_what_was_inserted_one_by_one_or_at_once() {
        for at_once in [false, true] {
            let (keys, index) = filled(5000, at_once);
            assert_finds_all(&keys, &index);
            let stranger = KeyIdGenerator::from_seed(4).next_id();
            assert_eq!(index.find(&keys, &stranger), None);
        }
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let keys = Records::default();
        let index = IdIndex::default();
        let id = KeyIdGenerator::from_seed(1).next_id();
        assert_eq!(index.find(&keys, &id), None);
        assert_eq!(index.likely_slot(&id), None);
        index.prefetch(&id);
    }

    #[test]
    fn removal_keeps_every_other_id_findable() {
        let (mut keys, mut index) = filled(3000, false);
        // Remove every third key, in slot order, then the rest in reverse: holes in every part of runs.
        let order: Vec<Slot> = (0..3000).step_by(3).chain((0..3000).rev().filter(|slot| slot % 3 != 0)).collect();
        for (done, &slot) in order.iter().enumerate() {
            let id = keys[slot].id;
            assert_eq!(index.remove(&keys, &id), Some(slot));
            assert_eq!(index.remove(&keys, &id), None);
            keys.remove(slot);
            if done % 500 == 0 {
                assert_finds_all(&keys, &index);
            }
        }
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn stays_correct_through_churn_at_its_load_limit() {
        // A small table kept at its fullest, with runs long enough to wrap past its end.
        let mut ids = KeyIdGenerator::from_seed(9);
        let mut keys = Records::default();
        let mut index = IdIndex::default();
        for _ in 0..max_load(64) {
            let slot = keys.insert(record(ids.next_id())) as Slot;
            index.insert(&keys, slot);
        }
        assert_eq!(index.buckets.len(), 64);
        for round in 0..20_000usize {
            let victim = keys.iter().nth(round % keys.len()).map(|(slot, _)| slot).unwrap_or(0);
            let id = keys[victim].id;
            assert_eq!(index.remove(&keys, &id), Some(victim));
            keys.remove(victim);
            let slot = keys.insert(record(ids.next_id())) as Slot;
            index.insert(&keys, slot);
        }
        assert_eq!(index.buckets.len(), 64, "churn at a steady size never grows the table");
        assert_finds_all(&keys, &index);
    }

    /// Every entry is reachable from its home without crossing an empty bucket, and the count is right.
    fn assert_runs_unbroken(index: &IdIndex) {
        let mask = index.buckets.len().wrapping_sub(1);
        let mut entries = 0;
        for (at, &entry) in index.buckets.iter().enumerate() {
            if entry == EMPTY {
                continue;
            }
            entries += 1;
            let mut probe = index.home(entry);
            while probe != at {
                assert_ne!(index.buckets[probe], EMPTY, "a hole between the home of bucket {at} and it");
                probe = (probe + 1) & mask;
            }
        }
        assert_eq!(entries, index.len);
        assert!(index.len <= max_load(index.buckets.len()));
    }

    /// Random inserts, batch inserts, reserves and removals against a `HashMap`, on small tables so that
    /// runs wrap past the end and growth happens at exactly the load limit.
    #[test]
    fn random_operations_agree_with_a_hash_map() {
        use rand::rngs::SmallRng;
        use rand::{RngExt, SeedableRng};
        use std::collections::HashMap;

        for seed in 0..60u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut ids = KeyIdGenerator::from_seed(seed);
            let mut keys: Records = Records::default();
            let mut index = IdIndex::default();
            let mut model: HashMap<KeyId, Slot> = HashMap::new();
            let most = [5usize, 12, 13, 24, 48, 49, 100, 400][seed as usize % 8];
            for _ in 0..1500 {
                match rng.random_range(0..10) {
                    0..=3 if keys.len() < most => {
                        let slot = keys.insert(record(ids.next_id())) as Slot;
                        index.insert(&keys, slot);
                        model.insert(keys[slot].id, slot);
                    }
                    4 if keys.len() < most => {
                        let count = rng.random_range(0..=most - keys.len());
                        let slots: Vec<Slot> = (0..count).map(|_| keys.insert(record(ids.next_id()))).collect();
                        index.insert_many(&keys, &slots);
                        model.extend(slots.iter().map(|&slot| (keys[slot].id, slot)));
                    }
                    5 => index.reserve(rng.random_range(0..64)),
                    _ if !keys.is_empty() => {
                        let victim = keys.iter().nth(rng.random_range(0..keys.len())).map(|(slot, _)| slot);
                        let victim = victim.expect("a key");
                        let id = keys[victim].id;
                        assert_eq!(index.remove(&keys, &id), Some(victim));
                        assert_eq!(index.remove(&keys, &id), None);
                        keys.remove(victim);
                        model.remove(&id);
                    }
                    _ => {}
                }
                assert_runs_unbroken(&index);
            }
            for (id, &slot) in &model {
                assert_eq!(index.find(&keys, id), Some(slot));
            }
        }
    }

    #[test]
    fn a_table_of_one_bucket_or_none_has_every_home_at_zero() {
        let mut index = IdIndex::default();
        assert_eq!(index.home(EMPTY - 1), 0);
        index.buckets = vec![EMPTY; 1];
        assert_eq!(index.home(EMPTY - 1), 0);
        index.buckets = vec![EMPTY; 2];
        assert_eq!(index.home(1u64 << 63), 1);
    }

    #[test]
    fn the_largest_table_holds_exactly_the_largest_pool() {
        assert_eq!(max_load(MAX_BUCKETS as usize), crate::pool::MAX_POOL_KEYS);
        assert_eq!(buckets_for(crate::pool::MAX_POOL_KEYS), MAX_BUCKETS as usize);
    }

    #[test]
    fn grows_in_powers_of_two_within_the_load_limit() {
        assert_eq!(buckets_for(0), MIN_BUCKETS);
        assert_eq!(buckets_for(12), 16);
        assert_eq!(buckets_for(13), 32);
        assert_eq!(buckets_for(10_000_000), 1 << 24);
        let (_, index) = filled(1000, false);
        assert!(index.buckets.len().is_power_of_two());
        assert!(index.len() <= max_load(index.buckets.len()));
    }
}
