//! The pool's key records, in a slab of their own: records by slot number, with vacated slots reused.
//!
//! It is the `slab` crate's design (a vector of entries, vacant ones chained through the slot numbers
//! they hold), kept here for two things a pool of millions of keys needs and `slab` does not offer:
//!
//! - [`Records::prefetch`] starts loading a record knowing only its slot. `Slab::get` has to read the
//!   entry to tell whether it is occupied, which in a pool far larger than the caches is a full wait on
//!   memory: the very wait the look-ahead (`lookahead.rs`) is there to overlap.
//! - The vector is grown here, so that its memory can be asked for in 2 MB pages (`huge_pages.rs`).

use std::ops::{Index, IndexMut};

use super::huge_pages;
use super::list::{Entries, NIL};
use super::prefetch::prefetch;
use super::record::{KeyRecord, Slot};

enum Entry {
    Occupied(KeyRecord),
    /// A free slot, chained to the next free slot (or [`NIL`]).
    Vacant {
        next: Slot,
    },
}

/// Key records by slot. Indexing a vacant slot panics: slots come from the index, the free list or a
/// list, so that would be a broken invariant.
pub struct Records {
    entries: Vec<Entry>,
    /// The most recently vacated slot, or [`NIL`].
    vacant: Slot,
    len: usize,
}

impl Default for Records {
    fn default() -> Self {
        Records { entries: Vec::new(), vacant: NIL, len: 0 }
    }
}

impl Records {
    /// How many records there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest slot ever used: every record's slot is below it.
    pub fn slots_end(&self) -> usize {
        self.entries.len()
    }

    /// The record at `slot`, if that slot holds one: for slots that come from a random draw or a hint
    /// (see `recent.rs`) rather than from the pool's own structures.
    pub fn get(&self, slot: Slot) -> Option<&KeyRecord> {
        match self.entries.get(slot as usize) {
            Some(Entry::Occupied(record)) => Some(record),
            _ => None,
        }
    }

    /// Stores `record` and returns its slot: the most recently vacated one, else a new one.
    ///
    /// The caller keeps the number of records below [`super::MAX_POOL_KEYS`], so slots fit in a `u32`
    /// and never reach [`NIL`].
    pub fn insert(&mut self, record: KeyRecord) -> Slot {
        self.len += 1;
        if self.vacant != NIL {
            let slot = self.vacant;
            let entry = &mut self.entries[slot as usize];
            let Entry::Vacant { next } = *entry else {
                unreachable!("the vacant chain names slot {slot}, which is occupied")
            };
            self.vacant = next;
            *entry = Entry::Occupied(record);
            return slot;
        }
        huge_pages::reserve(&mut self.entries, 1);
        let slot = self.entries.len() as Slot;
        self.entries.push(Entry::Occupied(record));
        slot
    }

    /// Takes the record out of `slot`, which becomes free for reuse.
    ///
    /// # Panics
    /// If `slot` holds no record.
    pub fn remove(&mut self, slot: Slot) -> KeyRecord {
        let entry = std::mem::replace(&mut self.entries[slot as usize], Entry::Vacant { next: self.vacant });
        let Entry::Occupied(record) = entry else { panic!("slot {slot} holds no record") };
        self.vacant = slot;
        self.len -= 1;
        record
    }

    /// Makes room for `additional` more records without growing on the way.
    pub fn reserve(&mut self, additional: usize) {
        huge_pages::reserve(&mut self.entries, additional);
    }

    /// Starts loading the record at `slot` into the cache, without reading it (see `prefetch.rs`). A
    /// slot past the end is ignored.
    pub fn prefetch(&self, slot: Slot) {
        if let Some(entry) = self.entries.get(slot as usize) {
            prefetch(entry);
        }
    }

    /// Every record with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &KeyRecord)> {
        self.entries.iter().enumerate().filter_map(|(slot, entry)| match entry {
            Entry::Occupied(record) => Some((slot as Slot, record)),
            Entry::Vacant { .. } => None,
        })
    }

    /// Every record with its slot, in slot order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &mut KeyRecord)> {
        self.entries.iter_mut().enumerate().filter_map(|(slot, entry)| match entry {
            Entry::Occupied(record) => Some((slot as Slot, record)),
            Entry::Vacant { .. } => None,
        })
    }
}

impl Index<Slot> for Records {
    type Output = KeyRecord;

    fn index(&self, slot: Slot) -> &KeyRecord {
        match &self.entries[slot as usize] {
            Entry::Occupied(record) => record,
            Entry::Vacant { .. } => panic!("slot {slot} holds no record"),
        }
    }
}

impl IndexMut<Slot> for Records {
    fn index_mut(&mut self, slot: Slot) -> &mut KeyRecord {
        match &mut self.entries[slot as usize] {
            Entry::Occupied(record) => record,
            Entry::Vacant { .. } => panic!("slot {slot} holds no record"),
        }
    }
}

impl Entries<KeyRecord> for Records {
    #[cfg(test)]
    fn entry(&self, at: u32) -> &KeyRecord {
        &self[at]
    }

    fn entry_mut(&mut self, at: u32) -> &mut KeyRecord {
        &mut self[at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::key_id::{KeyId, KeyIdGenerator};

    fn record(ids: &mut KeyIdGenerator) -> KeyRecord {
        KeyRecord::bare(ids.next_id())
    }

    #[test]
    fn an_entry_is_64_bytes() {
        // The tag of `Entry` must fit in the record's spare bits, or every key would cost 8 bytes more.
        // (64 bytes, but not aligned to a cache line: see "records aligned to a cache line" in
        // BENCHMARKS.md for why not.)
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    #[test]
    fn vacated_slots_are_reused_most_recent_first() {
        let mut ids = KeyIdGenerator::from_seed(5);
        let mut records = Records::default();
        let slots: Vec<Slot> = (0..4).map(|_| records.insert(record(&mut ids))).collect();
        assert_eq!(slots, [0, 1, 2, 3]);
        let second = records[1].id;
        assert_eq!(records.remove(1).id, second);
        records.remove(3);
        assert_eq!((records.len(), records.slots_end()), (2, 4));
        assert!(records.get(1).is_none() && records.get(3).is_none() && records.get(2).is_some());
        assert_eq!(records.insert(record(&mut ids)), 3);
        assert_eq!(records.insert(record(&mut ids)), 1);
        assert_eq!(records.insert(record(&mut ids)), 4);
        assert_eq!(records.iter().map(|(slot, _)| slot).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn records_keep_their_contents_across_growth() {
        let mut ids = KeyIdGenerator::from_seed(5);
        let mut records = Records::default();
        let written: Vec<(Slot, KeyId)> = (0..100_000)
            .map(|_| {
                let record = record(&mut ids);
                let id = record.id;
                (records.insert(record), id)
            })
            .collect();
        for (slot, id) in written {
            assert_eq!(records[slot].id, id);
        }
    }

    #[test]
    #[should_panic(expected = "holds no record")]
    fn indexing_a_vacant_slot_panics() {
        let mut ids = KeyIdGenerator::from_seed(5);
        let mut records = Records::default();
        let slot = records.insert(record(&mut ids));
        records.remove(slot);
        let _ = &records[slot];
    }
}
