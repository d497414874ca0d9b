//! Handoffs, the figure the `contend` workload exists for: how long a key one connection gives back
//! stays free before some connection holds it again.
//!
//! A handoff runs from the instant a connection sends `REL <id> <token>` to the instant any connection
//! reads `LEASED <id> ...` for the same id. The two ends are seen by different connections, so they
//! meet in one book that every connection shares: key id -> when its REL went out. A LEASED whose id is
//! in the book is a handoff, and takes the entry out; a LEASED whose id is not (the first lease of a
//! seeded key) is not one.
//!
//! The book is a `std::sync::Mutex` around a `HashMap` and the handoff histogram. A lock is plenty here:
//! the map holds at most `--keys` entries and `contend` needs few keys (fewer than connections); each
//! handoff takes the lock twice (at its REL and at its LEASED) for an insert or a remove and one
//! histogram record, never across an `.await`; and every handoff also costs the daemon at least two
//! requests under its own pool lock (the REL, the LEASE), so the bench's lock is never the busier of the
//! two. Recording into one
//! shared histogram under that same lock spares every connection a histogram of its own.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::driver::{new_histogram, Schedule};
use crate::target::Id;

/// The shared book of released keys, and the handoff latencies measured so far.
pub struct Handoffs {
    book: Mutex<Book>,
}

struct Book {
    released_at: HashMap<Id, Instant>,
    latency: Histogram<u64>,
}

impl Default for Handoffs {
    fn default() -> Handoffs {
        Handoffs { book: Mutex::new(Book { released_at: HashMap::new(), latency: new_histogram() }) }
    }
}

impl Handoffs {
    /// Notes that the REL of `id` goes out at `at`. Call it *before* writing the REL: once written, the
    /// daemon may hand the key to a connection on another thread that reads its LEASED before this one
    /// gets to run again.
    pub fn released(&self, id: Id, at: Instant) {
        self.lock().released_at.insert(id, at);
    }

    /// Notes that the REL of `id` sent at `at` freed nothing (`STALE`, `NOT_FOUND`): its instant is
    /// forgotten, unless a later REL of the same key has replaced it meanwhile.
    ///
    /// A stale REL can still spoil one figure: if the lease it names timed out and the key was leased
    /// again, that LEASED may be read after this REL was noted and be counted from it. Runs that report
    /// `stale` above zero should shorten `--hold` rather than trust their handoff tail.
    pub fn release_refused(&self, id: Id, at: Instant) {
        let mut book = self.lock();
        if book.released_at.get(&id) == Some(&at) {
            book.released_at.remove(&id);
        }
    }

    /// Notes that `id` was leased, the LEASED read at `now`: a handoff if the key's REL is in the book.
    /// It is recorded when the REL went out after the warm-up and the LEASED came before the end, as
    /// requests count only when sent after the warm-up and answered before the end.
    pub fn leased(&self, id: Id, now: Instant, schedule: Schedule) {
        let mut book = self.lock();
        let Some(released) = book.released_at.remove(&id) else {
            return;
        };
        if released >= schedule.measure_from && now <= schedule.end {
            let micros = u64::try_from(now.duration_since(released).as_micros()).unwrap_or(u64::MAX).max(1);
            book.latency.saturating_record(micros);
        }
    }

    /// The handoff latencies recorded so far, in microseconds; one entry per handoff.
    pub fn latency(&self) -> Histogram<u64> {
        self.lock().latency.clone()
    }

    /// A connection task that panicked mid-update left nothing half-done worth refusing over.
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const X: Id = *b"xxxxxxxxxxxxxxxxxxxxxxxx";
    const Y: Id = *b"yyyyyyyyyyyyyyyyyyyyyyyy";

    /// A schedule already measuring, ending an hour from now.
    fn measuring() -> Schedule {
        let start = Instant::now();
        Schedule { start, measure_from: start, end: start + Duration::from_secs(3600) }
    }

    #[test]
    fn a_release_then_a_lease_of_the_same_key_is_one_handoff() {
        let handoffs = Handoffs::default();
        let schedule = measuring();
        let released = Instant::now();
        handoffs.released(X, released);
        handoffs.leased(X, released + Duration::from_micros(250), schedule);
        let latency = handoffs.latency();
        assert_eq!(latency.len(), 1);
        assert!(latency.equivalent(latency.max(), 250), "recorded {}us", latency.max());
        // The entry is spent: the key's next lease without a release between is no handoff.
        handoffs.leased(X, released + Duration::from_millis(1), schedule);
        assert_eq!(handoffs.latency().len(), 1);
    }

    #[test]
    fn a_lease_with_no_recorded_release_is_no_handoff() {
        let handoffs = Handoffs::default();
        handoffs.released(Y, Instant::now());
        handoffs.leased(X, Instant::now(), measuring());
        assert_eq!(handoffs.latency().len(), 0);
    }

    #[test]
    fn a_refused_release_is_forgotten_unless_a_later_one_replaced_it() {
        let handoffs = Handoffs::default();
        let schedule = measuring();
        let first = Instant::now();
        handoffs.released(X, first);
        handoffs.release_refused(X, first);
        handoffs.leased(X, first + Duration::from_micros(10), schedule);
        assert_eq!(handoffs.latency().len(), 0, "a STALE REL freed nothing to hand off");

        let later = first + Duration::from_micros(20);
        handoffs.released(X, first);
        handoffs.released(X, later);
        handoffs.release_refused(X, first);
        handoffs.leased(X, later + Duration::from_micros(30), schedule);
        assert_eq!(handoffs.latency().len(), 1, "the later REL still counts");
    }

    #[test]
    fn only_handoffs_released_after_the_warm_up_and_leased_before_the_end_count() {
        let handoffs = Handoffs::default();
        let start = Instant::now();
        let schedule =
            Schedule { start, measure_from: start + Duration::from_secs(1), end: start + Duration::from_secs(2) };
        handoffs.released(X, start + Duration::from_millis(999));
        handoffs.leased(X, start + Duration::from_millis(1001), schedule);
        handoffs.released(X, start + Duration::from_millis(1999));
        handoffs.leased(X, start + Duration::from_millis(2001), schedule);
        handoffs.released(Y, start + Duration::from_millis(1500));
        handoffs.leased(Y, start + Duration::from_millis(1501), schedule);
        assert_eq!(handoffs.latency().len(), 1);
    }
}
