//! The free list: every free key's slot, in a vector, for uniform random choice in O(1).
//!
//! GET draws a random position (or a random slot, and then takes that key's position) and swap-removes
//! it: the last element moves into the hole. For that to be O(1) each free key must know its own
//! position (so REL and DEL can find it without a search), which is why the operations here report
//! which slot moved: the caller stores its new position in that slot's record. The list itself holds
//! slots only and knows nothing of records.

use super::huge_pages;
use super::prefetch::prefetch;

/// Slots of the free keys, in no particular order.
#[derive(Default, Debug)]
pub struct FreeList {
    slots: Vec<u32>,
}

/// What a removal did to the list: the slot that was removed, and the slot (if any) that was moved into
/// its place and whose recorded position must now be `position`.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    pub slot: u32,
    pub moved: Option<u32>,
}

impl FreeList {
    /// Makes room for `additional` more free keys.
    pub fn reserve(&mut self, additional: usize) {
        huge_pages::reserve(&mut self.slots, additional);
    }

    /// Appends `slot`; returns the position it now holds.
    pub fn push(&mut self, slot: u32) -> u32 {
        let position = self.position_of_next();
        huge_pages::reserve(&mut self.slots, 1);
        self.slots.push(slot);
        position
    }

    /// Removes the slot at `position` by moving the last slot into it. O(1).
    ///
    /// # Panics
    /// If `position` is out of range: positions come from the records, so that would be a broken
    /// invariant, not bad input.
    pub fn remove_at(&mut self, position: u32) -> Removed {
        let position = position as usize;
        let slot = self.slots.swap_remove(position);
        let moved = self.slots.get(position).copied();
        Removed { slot, moved }
    }

    /// The slot at `position`, if there is one.
    pub fn get(&self, position: u32) -> Option<u32> {
        self.slots.get(position as usize).copied()
    }

    /// Starts loading the entry at `position` into the cache (see `prefetch.rs`); past the end, nothing.
    pub fn prefetch(&self, position: u32) {
        if let Some(entry) = self.slots.get(position as usize) {
            prefetch(entry);
        }
    }

    /// How many keys are free.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key is free.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn position_of_next(&self) -> u32 {
        // The pool never holds more than u32::MAX keys (its limit is checked before any insert).
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_the_last_moves_nothing() {
        let mut list = FreeList::default();
        list.push(10);
        list.push(11);
        assert_eq!(list.remove_at(1), Removed { slot: 11, moved: None });
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn removing_from_the_middle_moves_the_last_into_the_hole() {
        let mut list = FreeList::default();
        for slot in [10, 11, 12] {
            list.push(slot);
        }
        assert_eq!(list.remove_at(0), Removed { slot: 10, moved: Some(12) });
        assert_eq!(list.get(0), Some(12));
        assert_eq!(list.get(1), Some(11));
        assert_eq!(list.get(2), None);
    }
}
