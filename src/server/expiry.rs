//! The background tasks that apply the pools' timers: block windows ending, keep-alives running out.
//!
//! Each pool has its own task, started when the pool is created. It sleeps inside the pool's
//! `DelayQueue` until the earliest deadline, takes the lock, applies a bounded slice of what is due, and
//! lets go of the lock before the next slice, so a mass expiry never stalls clients for long. It never
//! looks at keys whose deadline has not come. It ends when its pool is dropped, or the server stops.

use std::future::poll_fn;
use std::sync::Arc;

use super::Shared;
use crate::pool::PoolRef;

/// Starts the expiry task of a pool that was just created.
pub fn start(shared: &Arc<Shared>, pool: PoolRef) {
    tokio::spawn(run(Arc::clone(shared), pool));
}

async fn run(shared: Arc<Shared>, pool: PoolRef) {
    loop {
        let applied = tokio::select! {
            applied = poll_fn(|cx| shared.lock().pools.poll_expired(pool, cx)) => applied,
            () = shared.stopped.cancelled() => return,
        };
        let Some(applied) = applied else { return };
        tracing::trace!(applied, "applied due timers");
        // Give connections a turn at the lock between slices of a large expiry.
        tokio::task::yield_now().await;
    }
}
