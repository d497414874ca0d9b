//! Looking ahead at a batch: starting to load what its requests will touch before the first one runs.
//!
//! In a pool far larger than the CPU's caches, each request costs a cache miss or two: a lease reads a
//! random key record (drawn by slot, see `Pool::draw_by_slot`; or a random free-list entry, then the
//! record it names) and writes the free-list entry it takes; a REL, PING or INFO reads a bucket of the
//! id index, then the record (unless the key was leased recently, see `recent.rs`). Taken one request
//! at a time, every miss is a full wait on memory. A connection that has a pipeline of requests in hand
//! tells the pool what is coming ([`Pool::prepare`]), and the pool starts all their loads at once, so
//! the waits overlap instead of adding up. It changes no state a client can see, and a request that
//! turns out different from its hint (an earlier one in the batch changed the pool) is still executed
//! exactly: a hint that misses only costs its loads.
//!
//! A lease cannot be foreseen without choosing its key, so the random draw is made early: each hint
//! draws a random 64-bit number, which the next lease turns into a slot, or a position of the free
//! list, as the pool is then ([`DrawsAhead::position`]). The number was drawn without regard to
//! anything, so the key chosen is exactly as uniform as a draw made at the time. A slot drawn is the
//! one prefetched unless keys were added to the end of the records meanwhile, or the lease ends up
//! drawing from the free list after all (the share of free slots crossed three in four); a position of
//! the free list is, if the list has not changed meanwhile (typical: only a few entries were added or
//! taken), the one prefetched or a close neighbour.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, RngExt};

use super::key_id::KeyId;
use super::record::{Place, Slot};
use super::{draws_by_slot, Pool};

/// Pools smaller than this are not prepared for: their records (64 bytes a key) fit in a core's L2 cache
/// (1-2 MB on current x86), so there is nothing to overlap and the look-ahead would be pure cost.
pub(super) const PREPARE_FROM_KEYS: usize = 1 << 15;

/// The most leases one [`Pool::prepare`] looks ahead for, and so the most draws a pool keeps ahead.
const LOOKAHEAD_LEASES: usize = 32;

/// What one request of a batch will ask of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upcoming {
    /// A lease of a random free key (`GET`, `LEASE`): one key fewer will be free.
    Lease,
    /// A release of this key that frees it (`REL` without a delay): one key more will be free.
    Release(KeyId),
    /// Any other command on this key (`TOUCH`, `DEL`, `PING`, `INFO`, `REL` with a delay).
    Key(KeyId),
}

/// What a lease's draw made ahead will pick, as far as the look-ahead can tell.
#[derive(Clone, Copy)]
enum Pick {
    /// The record in this slot (a draw by slot, see `Pool::draw_by_slot`).
    Slot(Slot),
    /// This position of the free list.
    Position(u32),
    /// Nothing foreseeable: the draw will be made again.
    Nothing,
}

/// Random numbers drawn for leases to come, oldest first; leases use them in order. Draws a batch left
/// unused (it broke off early, its leases went to another pool or were refused) are dropped by the next
/// look-ahead, so that each batch's leases use the draws made for them.
#[derive(Default)]
pub struct DrawsAhead {
    draws: VecDeque<u64>,
}

impl DrawsAhead {
    /// How many draws are waiting for their leases.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.draws.len()
    }

    /// A uniformly random position below `len`, which must not be zero: from the oldest draw made ahead
    /// when there is one, else drawn now.
    pub fn position(&mut self, len: usize, chooser: &mut SmallRng) -> usize {
        self.draws.pop_front().and_then(|draw| scale(draw, len)).unwrap_or_else(|| chooser.random_range(0..len))
    }
}

/// Maps a uniform 64-bit `draw` to a uniform position below `len`, or `None` in the rare case (about
/// `len` in 2^64) that it falls in the uneven remainder and must be drawn again. This is Lemire's
/// multiply-and-shift with rejection, which leaves no bias at all.
fn scale(draw: u64, len: usize) -> Option<usize> {
    let len = len as u64;
    let product = u128::from(draw) * u128::from(len);
    let low = product as u64;
    if low < len && low < len.wrapping_neg() % len {
        return None;
    }
    Some((product >> 64) as usize)
}

impl Pool {
    /// Starts loading what the requests in `upcoming` will touch, in three passes: first the index
    /// buckets, the free-list entries and the records drawn by slot; then the key records the first two
    /// point to, by which time the first loads have mostly arrived; then the free-list entries that the
    /// records drawn by slot name. Draws the random numbers of the leases to come (see the module
    /// documentation). Changes nothing else.
    ///
    /// A lease's draw picks a slot, or a position of the free list, as the pool will be when the lease
    /// runs, so the free list's length is predicted from the requests before it: each lease takes a key,
    /// each release puts one back.
    ///
    /// Does nothing in a pool small enough to sit in the CPU's caches (see [`PREPARE_FROM_KEYS`]).
    pub fn prepare(&mut self, upcoming: &[Upcoming]) {
        if self.keys.len() >= PREPARE_FROM_KEYS {
            self.look_ahead(upcoming);
        }
    }

    /// [`Pool::prepare`] whatever the pool's size.
    pub(super) fn look_ahead(&mut self, upcoming: &[Upcoming]) {
        // Unused draws would be taken first by the leases below, whose prefetches would then all miss.
        // Dropping them is safe: each draw is independent of everything, so the rest stay uniform.
        self.ahead.draws.clear();
        // Per lease: what its draw will pick, and the free list's length then.
        let mut leases = [(Pick::Nothing, 0usize); LOOKAHEAD_LEASES];
        let mut foreseen = 0;
        let mut free_len = self.free.len();
        let slots = self.keys.slots_end();
        // Which of the first 64 requests name a key leased recently (see `recent.rs`): their records
        // are loaded at once and their index buckets not at all, and the second pass skips them.
        let mut hinted = 0u64;
        for (at, request) in upcoming.iter().enumerate() {
            match request {
                Upcoming::Lease if free_len > 0 && self.ahead.draws.len() < LOOKAHEAD_LEASES => {
                    let draw = self.chooser.next_u64();
                    self.ahead.draws.push_back(draw);
                    let pick = if draws_by_slot(free_len, slots) {
                        // The draw names the record itself: start loading it now.
                        scale(draw, slots).map_or(Pick::Nothing, |slot| Pick::Slot(slot as Slot))
                    } else {
                        scale(draw, free_len).map_or(Pick::Nothing, |position| Pick::Position(position as u32))
                    };
                    match pick {
                        Pick::Slot(slot) => self.keys.prefetch(slot),
                        Pick::Position(position) => self.free.prefetch(position),
                        Pick::Nothing => {}
                    }
                    leases[foreseen] = (pick, free_len);
                    foreseen += 1;
                    free_len -= 1;
                }
                Upcoming::Lease => free_len = free_len.saturating_sub(1),
                Upcoming::Release(id) | Upcoming::Key(id) => {
                    match self.recent.hint(id) {
                        Some(slot) => {
                            self.keys.prefetch(slot);
                            if at < 64 {
                                hinted |= 1 << at;
                            }
                        }
                        None => self.index.prefetch(id),
                    }
                    if let Upcoming::Release(_) = request {
                        free_len += 1;
                    }
                }
            }
        }
        // The records: of the keys named, of the keys the leases will draw from the free list, and of
        // the keys at the end of the free list then, which each lease moves into the hole it leaves. By
        // slot alone: reading a record here (as `slab` must, to check that a slot is occupied) would wait
        // for the very load being started, one record after another.
        for (at, request) in upcoming.iter().enumerate() {
            if let Upcoming::Release(id) | Upcoming::Key(id) = request {
                if at >= 64 || hinted >> at & 1 == 0 {
                    self.prefetch_record(self.index.likely_slot(id));
                }
            }
        }
        for &(pick, free_len) in &leases[..foreseen] {
            if let Pick::Position(position) = pick {
                self.prefetch_record(self.free.get(position));
            }
            self.prefetch_record(self.free.get(free_len as u32 - 1));
        }
        // The free-list entries that draws by slot will take, as their records name them (those loads
        // had the passes above to arrive in): taking an entry writes it, and a write to memory that is
        // not in the cache holds up every write after it.
        for &(pick, _) in &leases[..foreseen] {
            if let Pick::Slot(slot) = pick {
                if let Some(Place::Free { position }) = self.keys.get(slot).map(|record| record.place) {
                    self.free.prefetch(position);
                }
            }
        }
    }

    fn prefetch_record(&self, slot: Option<Slot>) {
        if let Some(slot) = slot {
            self.keys.prefetch(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_draws_cover_every_position_evenly() {
        // Every 64-bit value at an even stride: each position below 10 must get a tenth of them.
        let mut counts = [0u32; 10];
        let stride = u64::MAX / 100_000;
        for step in 0..100_000u64 {
            if let Some(at) = scale(step * stride, 10) {
                counts[at] += 1;
            }
        }
        for count in counts {
            assert!((9_990..=10_010).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn scale_rejects_only_the_uneven_remainder() {
        // 2^64 mod 3 == 1: exactly one 64-bit value of each position's share is left over.
        assert_eq!(scale(0, 3), None);
        assert_eq!(scale(1, 3), Some(0));
        assert_eq!(scale(u64::MAX, 3), Some(2));
        // A power of two divides 2^64: nothing is ever rejected.
        assert_eq!(scale(0, 8), Some(0));
        assert_eq!(scale(u64::MAX, 8), Some(7));
    }
}
