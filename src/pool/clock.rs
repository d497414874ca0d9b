//! Engine time: milliseconds since the pool was created, on tokio's clock.
//!
//! Deadlines are kept as [`Millis`] (a `u64` count of milliseconds from the pool's epoch) rather than as
//! `Instant`s: they are half the size of an `Instant` on most platforms, they order and subtract without
//! surprises, and they convert to Unix wall-clock time for `INFO` and, later, for the disk.
//!
//! The clock reads `tokio::time::Instant`, so a test that pauses tokio's clock controls the engine's time
//! too, and timers and deadlines never disagree about what "now" is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A point in engine time: whole milliseconds since the pool's epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// This point moved `window` later, saturating rather than wrapping.
    pub fn after(self, window: Duration) -> Millis {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(window_ms))
    }
}

/// Maps between tokio instants, engine [`Millis`] and Unix epoch milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
    epoch_unix_ms: u64,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Clock {
        let epoch_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        Clock { epoch: Instant::now(), epoch_unix_ms }
    }

    /// The current engine time, rounded down to the millisecond.
    pub fn now(&self) -> Millis {
        self.millis_at(Instant::now())
    }

    /// The tokio instant at which engine time reaches `at`: what a timer for `at` is set to.
    pub fn instant(&self, at: Millis) -> Instant {
        self.epoch + Duration::from_millis(at.0)
    }

    /// The engine time of `instant`, rounded down to the millisecond.
    pub fn millis_at(&self, instant: Instant) -> Millis {
        let elapsed = instant.saturating_duration_since(self.epoch);
        Millis(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// `at` as milliseconds since the Unix epoch, for reporting.
    ///
    /// Wall-clock time is read once, at the epoch, and engine time is added to it: reported times stay
    /// consistent with each other even if the system clock is stepped while the daemon runs.
    pub fn unix_ms(&self, at: Millis) -> u64 {
        self.epoch_unix_ms.saturating_add(at.0)
    }

    /// The engine time of a Unix epoch millisecond, for deadlines read back from disk. One before the
    /// epoch is the epoch: it has passed either way.
    pub fn from_unix_ms(&self, unix_ms: u64) -> Millis {
        Millis(unix_ms.saturating_sub(self.epoch_unix_ms))
    }
}
