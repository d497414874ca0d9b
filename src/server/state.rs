//! What every connection shares: the pools behind one mutex, and the counters STATS reports.
//!
//! The mutex is `std::sync::Mutex`, not tokio's: it is never held across an `.await`, and each hold is
//! short (one batch of requests, or one slice of expiries), so a blocking lock is both correct and
//! cheaper than an async one. Connection counters are atomics because they change outside the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use super::compaction::Compactor;
use super::telemetry::Telemetry;
use super::Config;
use crate::persist::{PersistError, Persistence};
use crate::pool::Pools;
use crate::protocol::request::Command;

/// The pools and the command counters, guarded together: a batch takes this lock once.
pub struct Locked {
    pub pools: Pools,
    commands: [u64; Command::ALL.len()],
}

impl Locked {
    /// Counts one request of `command`.
    pub fn count(&mut self, command: Command) {
        self.commands[command as usize] += 1;
    }

    /// How many requests of `command` were served.
    pub fn count_of(&self, command: Command) -> u64 {
        self.commands[command as usize]
    }
}

/// State shared by the listener, every connection and the expiry task.
pub struct Shared {
    locked: Mutex<Locked>,
    pub config: Config,
    /// The data directory's log and snapshots, with `--data-dir`.
    pub persist: Option<Persistence>,
    pub compactor: Compactor,
    /// Cancelled once the server has stopped serving: background tasks (expiry, compaction checks) end.
    pub stopped: tokio_util::sync::CancellationToken,
    pub started: Instant,
    /// Outcomes and latencies for `/metrics`; atomics, written outside the lock too.
    pub telemetry: Telemetry,
    curr_connections: AtomicU64,
    total_connections: AtomicU64,
    rejected_connections: AtomicU64,
}

impl Shared {
    /// State for a daemon configured by `config`: no pools, or with `--data-dir`, those recovered from it.
    pub fn new(config: Config) -> Result<Shared, PersistError> {
        let mut pools = Pools::new(config.pool.clone(), config.max_pools);
        let persist = match &config.persistence {
            Some(options) => Some(Persistence::open(options.clone(), &mut pools)?),
            None => None,
        };
        Ok(Shared {
            locked: Mutex::new(Locked { pools, commands: [0; Command::ALL.len()] }),
            config,
            persist,
            compactor: Compactor::default(),
            stopped: tokio_util::sync::CancellationToken::new(),
            started: Instant::now(),
            telemetry: Telemetry::default(),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
        })
    }

    /// Locks the pools. Never call this from code that awaits before dropping the guard.
    pub fn lock(&self) -> MutexGuard<'_, Locked> {
        // Poisoning means an earlier holder panicked mid-operation: the pool's invariants may be broken,
        // and serving from it could hand one key to two clients. Refusing to go on is the honest choice.
        self.locked.lock().expect("pool lock poisoned by an earlier panic")
    }

    /// Locks the pool, or `None` if an earlier holder panicked: for cleanup that must not panic.
    pub fn lock_unless_poisoned(&self) -> Option<MutexGuard<'_, Locked>> {
        self.locked.lock().ok()
    }

    pub fn connection_opened(&self) {
        self.curr_connections.fetch_add(1, Ordering::Relaxed);
        self.total_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.curr_connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connection_rejected(&self) {
        self.rejected_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// `(current, total, rejected)` connection counts.
    pub fn connection_counts(&self) -> (u64, u64, u64) {
        (
            self.curr_connections.load(Ordering::Relaxed),
            self.total_connections.load(Ordering::Relaxed),
            self.rejected_connections.load(Ordering::Relaxed),
        )
    }
}
