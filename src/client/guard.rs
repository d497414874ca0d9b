//! [`LeaseGuard`]: the safe way to hold a key, made the easy way.
//!
//! A worker that leases a key must keep the lease alive while it works and give it back when done,
//! whatever happens. The guard does both: a background task TOUCHes the lease, with its token, every
//! third of the block window (so two heartbeats can be lost before the lease lapses), and the key goes
//! back with its token on [`LeaseGuard::release`] or, if the guard is dropped (an early return, a `?`,
//! a panic), from a spawned task. The token makes both safe: a lease that was lost meanwhile answers
//! `STALE` and frees nothing that now belongs to another worker.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::error::Result;
use super::types::{KeyRef, Lease, Released, Touched};
use super::Client;

/// A lease kept alive in the background and given back when done. Made by [`Client::leased`].
///
/// It dereferences to its [`Lease`] (`guard.id`, `guard.secret`), and displays as it does.
///
/// ```
/// use std::time::Duration;
/// use keypool::client::{Client, Released};
/// # use keypool::server::{Config, Handle};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
/// let client = Client::connect(server.addr()).await?;
/// client.add("sk-live-51Hx9", None).await?;
/// let key = client.leased_for(Duration::from_secs(1), Duration::from_millis(300)).await?.expect("a free key");
/// tokio::time::sleep(Duration::from_millis(500)).await; // longer than the block window: the heartbeat keeps it
/// assert!(!key.is_lost());
/// assert_eq!(key.secret.as_deref(), Some("sk-live-51Hx9"));
/// assert_eq!(key.release_after(Duration::from_secs(60)).await?, Released::Yes); // rest it a minute
/// # server.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct LeaseGuard {
    lease: Lease,
    client: Client,
    heartbeat: JoinHandle<()>,
    lost: Arc<AtomicBool>,
    /// Set once the key has been given back, so that dropping the guard does not give it back again.
    released: bool,
}

impl LeaseGuard {
    /// Starts the heartbeat for `lease`, whose block window is `window`; each TOUCH asks for `block`
    /// (`None`: the daemon's default, which is `window`).
    pub(super) fn start(client: Client, lease: Lease, window: Duration, block: Option<Duration>) -> LeaseGuard {
        let lost = Arc::new(AtomicBool::new(false));
        let every = (window / 3).max(Duration::from_millis(1));
        let heartbeat = tokio::spawn(heartbeat(client.clone(), KeyRef::from(&lease), block, every, Arc::clone(&lost)));
        LeaseGuard { lease, client, heartbeat, lost, released: false }
    }

    /// The lease held.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the heartbeat found the lease over (`STALE` or `NOT_FOUND`): the key may now be someone
    /// else's, so stop using it.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Stops the heartbeat and gives the key back under its token.
    pub async fn release(self) -> Result<Released> {
        self.give_back(None).await
    }

    /// Stops the heartbeat and gives the key back under its token, resting it for `delay` first (for a
    /// key that hit its rate limit).
    pub async fn release_after(self, delay: Duration) -> Result<Released> {
        self.give_back(Some(delay)).await
    }

    async fn give_back(mut self, delay: Option<Duration>) -> Result<Released> {
        self.heartbeat.abort();
        let released = self.client.release(&self.lease, delay).await;
        // Only now: if this future is dropped before the REL is answered, `Drop` sends it again, and a
        // second REL under the same token can only answer STALE.
        self.released = true;
        released
    }
}

impl Deref for LeaseGuard {
    type Target = Lease;

    fn deref(&self) -> &Lease {
        &self.lease
    }
}

/// The secret when the key has one, else the id, as for [`Lease`].
impl std::fmt::Display for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lease.fmt(f)
    }
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard").field("lease", &self.lease).field("lost", &self.is_lost()).finish()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        let client = self.client.clone();
        let key = KeyRef::from(&self.lease);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = client.release(key, None).await {
                        tracing::warn!(%error, "could not give back a dropped lease; it comes back when its block window passes");
                    }
                });
            }
            Err(_) => tracing::warn!("a lease dropped outside a tokio runtime comes back when its block window passes"),
        }
    }
}

/// TOUCHes the lease every `every` until it is found lost or the task is aborted. A failed TOUCH (the
/// daemon unreachable for a moment) is tried again at the next beat, on a fresh connection.
async fn heartbeat(client: Client, key: KeyRef, block: Option<Duration>, every: Duration, lost: Arc<AtomicBool>) {
    let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beats.tick().await;
        match client.touch(key, block).await {
            Ok(Touched::Yes) => {}
            Ok(outcome) => {
                lost.store(true, Ordering::Relaxed);
                tracing::warn!(?outcome, "a leased key's lease is over; the worker should stop using it");
                return;
            }
            Err(error) => tracing::warn!(%error, "a heartbeat TOUCH failed; trying again at the next beat"),
        }
    }
}
