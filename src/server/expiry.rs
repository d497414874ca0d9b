//! The background task that applies the pool's timers: block windows ending, keep-alives running out.
//!
//! It sleeps inside the pool's `DelayQueue` until the earliest deadline, takes the lock, applies a
//! bounded slice of what is due, and lets go of the lock before the next slice, so a mass expiry
//! never stalls clients for long. It never looks at keys whose deadline has not come.

use std::future::poll_fn;
use std::sync::Arc;

use super::Shared;

/// Runs until aborted.
pub async fn run(shared: Arc<Shared>) {
    loop {
        let applied = poll_fn(|cx| shared.lock().pool.poll_expired(cx)).await;
        tracing::trace!(applied, "applied due timers");
        // Give connections a turn at the lock between slices of a large expiry.
        tokio::task::yield_now().await;
    }
}
