//! Intrusive doubly-linked lists over a slab: O(1) append, unlink and move-to-back, no allocation.
//!
//! The engine keeps three kinds of ordered sets, all of them lists threaded through slab entries that
//! carry their own [`Links`]:
//!
//! - the keep-alive list: every key that uses the pool's keep-alive window, ordered by deadline. All of
//!   them share one window, so ordering by deadline is the same as ordering by last GEN or PING: a new or
//!   pinged key simply goes to the tail, and one timer for the head replaces a timer per key (memcached's
//!   LRU is the same idea);
//! - the waiters of a pool, oldest first, so a freed key goes to the oldest in O(1);
//! - the leases each release-on-close connection holds, so closing it releases exactly those.
//!
//! A list stores only its ends and length; the links live inside the entries, which is why every
//! operation takes the slab. An entry that sits on two kinds of list at once (a lease is on its holder's
//! list and on the pool's block list) carries one set of links per kind, told apart by a tag type.

use std::marker::PhantomData;

use slab::Slab;

/// The "no entry" marker for links.
pub const NIL: u32 = u32::MAX;

/// Links of an entry that may be on a list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Links {
    pub prev: u32,
    pub next: u32,
}

impl Links {
    pub const UNLINKED: Links = Links { prev: NIL, next: NIL };
}

/// Storage the entries of a list live in, by number: a `Slab`, or the pool's own `Records`.
pub trait Entries<T> {
    #[cfg(test)]
    fn entry(&self, at: u32) -> &T;
    fn entry_mut(&mut self, at: u32) -> &mut T;
}

impl<T> Entries<T> for Slab<T> {
    #[cfg(test)]
    fn entry(&self, at: u32) -> &T {
        &self[at as usize]
    }

    fn entry_mut(&mut self, at: u32) -> &mut T {
        &mut self[at as usize]
    }
}

/// An entry that carries links for one kind of list, named by `Tag`.
pub trait Linked<Tag = ()> {
    fn links(&mut self) -> &mut Links;
}

/// Head, tail and length of a list; the links themselves are in the entries.
#[derive(Debug)]
pub struct List<Tag = ()> {
    head: u32,
    tail: u32,
    len: usize,
    tag: PhantomData<fn() -> Tag>,
}

impl<Tag> Default for List<Tag> {
    fn default() -> Self {
        List { head: NIL, tail: NIL, len: 0, tag: PhantomData }
    }
}

impl<Tag> List<Tag> {
    /// The oldest entry, if any.
    pub fn head(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// How many entries are on the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `at`, which must not be on any list of this kind.
    pub fn push_back<T: Linked<Tag>>(&mut self, entries: &mut impl Entries<T>, at: u32) {
        debug_assert_eq!(*entries.entry_mut(at).links(), Links::UNLINKED);
        *entries.entry_mut(at).links() = Links { prev: self.tail, next: NIL };
        match self.tail {
            NIL => self.head = at,
            tail => entries.entry_mut(tail).links().next = at,
        }
        self.tail = at;
        self.len += 1;
    }

    /// Takes `at`, which must be on this list, off it.
    pub fn unlink<T: Linked<Tag>>(&mut self, entries: &mut impl Entries<T>, at: u32) {
        let Links { prev, next } = *entries.entry_mut(at).links();
        match prev {
            NIL => self.head = next,
            prev => entries.entry_mut(prev).links().next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => entries.entry_mut(next).links().prev = prev,
        }
        *entries.entry_mut(at).links() = Links::UNLINKED;
        self.len -= 1;
    }

    /// Takes the oldest entry off the list and returns it.
    pub fn pop_front<T: Linked<Tag>>(&mut self, entries: &mut impl Entries<T>) -> Option<u32> {
        let head = self.head()?;
        self.unlink(entries, head);
        Some(head)
    }

    /// The entries from head to tail, checking every back link, the tail and the length on the way;
    /// `links` reads an entry's links of this list. O(len): for tests.
    #[cfg(test)]
    pub fn walk<T>(&self, entries: &impl Entries<T>, links: impl Fn(&T) -> Links) -> Vec<u32> {
        let mut walked = Vec::new();
        let mut previous = NIL;
        let mut cursor = self.head;
        while cursor != NIL {
            let Links { prev, next } = links(entries.entry(cursor));
            assert_eq!(prev, previous, "the back link of {cursor}");
            walked.push(cursor);
            previous = cursor;
            cursor = next;
        }
        assert_eq!(previous, self.tail, "the tail is the last entry");
        assert_eq!(walked.len(), self.len, "the length is counted right");
        walked
    }

    /// Moves `at`, which must be on this list, to the tail.
    pub fn move_to_back<T: Linked<Tag>>(&mut self, entries: &mut impl Entries<T>, at: u32) {
        if self.tail != at {
            self.unlink(entries, at);
            self.push_back(entries, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry(Links);

    impl Linked for Entry {
        fn links(&mut self) -> &mut Links {
            &mut self.0
        }
    }

    fn drain(list: &mut List, entries: &mut Slab<Entry>) -> Vec<u32> {
        std::iter::from_fn(|| list.pop_front(entries)).collect()
    }

    #[test]
    fn keeps_order_through_unlink_and_move() {
        let mut entries = Slab::new();
        let mut list = List::default();
        for _ in 0..4 {
            let at = entries.insert(Entry(Links::UNLINKED)) as u32;
            list.push_back(&mut entries, at);
        }
        list.unlink(&mut entries, 1);
        list.move_to_back(&mut entries, 0);
        assert_eq!(list.len(), 2 + 1);
        assert_eq!(drain(&mut list, &mut entries), [2, 3, 0]);
        assert!(list.is_empty());
        assert_eq!(list.head(), None);
    }
}
