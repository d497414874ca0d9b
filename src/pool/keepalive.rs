//! The keep-alive list: every key, ordered by keep-alive deadline, as an intrusive doubly-linked list.
//!
//! All keys of a pool share one keep-alive window, so ordering them by deadline is the same as ordering
//! them by their last GEN or PING: a new or pinged key simply goes to the tail. The head is always the
//! next key to expire, and one timer for the head replaces a timer per key (memcached's LRU is the same
//! idea). The links live inside the key records (`Links`, 8 bytes a key), so moving a key is O(1) and
//! costs no allocation.

use slab::Slab;

use super::record::{KeyRecord, Links, Slot, NIL};

/// Head and tail of the list; the links themselves are in the records.
#[derive(Debug)]
pub struct KeepaliveList {
    head: Slot,
    tail: Slot,
}

impl Default for KeepaliveList {
    fn default() -> Self {
        KeepaliveList { head: NIL, tail: NIL }
    }
}

impl KeepaliveList {
    /// The key that expires first, if any.
    pub fn head(&self) -> Option<Slot> {
        (self.head != NIL).then_some(self.head)
    }

    /// Appends `slot`, which must not be in the list.
    pub fn push_back(&mut self, keys: &mut Slab<KeyRecord>, slot: Slot) {
        debug_assert_eq!(keys[slot as usize].links, Links::UNLINKED);
        keys[slot as usize].links = Links { prev: self.tail, next: NIL };
        match self.tail {
            NIL => self.head = slot,
            tail => keys[tail as usize].links.next = slot,
        }
        self.tail = slot;
    }

    /// Takes `slot` out of the list.
    pub fn unlink(&mut self, keys: &mut Slab<KeyRecord>, slot: Slot) {
        let Links { prev, next } = keys[slot as usize].links;
        match prev {
            NIL => self.head = next,
            prev => keys[prev as usize].links.next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => keys[next as usize].links.prev = prev,
        }
        keys[slot as usize].links = Links::UNLINKED;
    }

    /// Moves `slot` to the tail: it was just pinged, so it now expires last.
    pub fn move_to_back(&mut self, keys: &mut Slab<KeyRecord>, slot: Slot) {
        if self.tail != slot {
            self.unlink(keys, slot);
            self.push_back(keys, slot);
        }
    }
}
