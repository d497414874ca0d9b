//! One `contend` connection, on keypool's own client: `LEASE <wait>`, hold the key for `--hold`, then
//! `REL <id> <token>`, one request at a time, timing each and feeding the shared [`Handoffs`] book.
//!
//! `contend` waits for keys, one request in flight per connection, so it gains nothing from the raw
//! driver's pipelining and reply parsing in place: it is written the way a user's worker would be,
//! with the client, and measures what such a worker sees. Each REL goes into the book *before* it is
//! sent (once sent, another connection may read the next LEASED of that key before this one runs
//! again); each LEASED comes out of it as a handoff.
//!
//! [`Handoffs`]: crate::handoff::Handoffs

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use keypool::client::{Client, Released};
use tokio::time::Instant;

use crate::driver::{count_reply, new_histogram, share, Live, Schedule, Tally, SHARE_EVERY};
use crate::target::Reply;

/// Runs one contending connection to `addr` through `schedule`. Never fails: a broken connection
/// ends early and says why in `Tally::failure`.
pub async fn run(addr: String, wait: Duration, hold: Duration, schedule: Schedule, live: Arc<Live>) -> Tally {
    let mut tally = Tally::new();
    let mut connection = Connection { live: &live, schedule, recent: new_histogram(), shared_at: Instant::now() };
    let finish = tokio::time::sleep_until(schedule.end);
    tokio::pin!(finish);
    tokio::select! {
        biased;
        driven = connection.drive(&addr, wait, hold, &mut tally) => {
            if let Err(error) = driven {
                tally.failure = Some(format!("{error:#}"));
            }
        }
        // The end cuts short whatever is in flight, a waiting LEASE included: it is not counted.
        () = &mut finish => {}
    }
    tally
}

struct Connection<'a> {
    live: &'a Live,
    schedule: Schedule,
    recent: Histogram<u64>,
    shared_at: Instant,
}

impl Connection<'_> {
    async fn drive(&mut self, addr: &str, wait: Duration, hold: Duration, tally: &mut Tally) -> Result<()> {
        // No request timeout: a LEASE may rightly wait `wait`, and the run's end bounds everything.
        let client = Client::builder(addr)
            .request_timeout(None)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        loop {
            let sent = Instant::now();
            let lease = client.lease(Some(wait), None).await?;
            let now = Instant::now();
            let Some(lease) = lease else {
                self.count(tally, sent, now, &Reply::NotFound);
                continue;
            };
            let id = *lease.id.as_bytes();
            let token = lease.token.context("LEASE answered without a token")?;
            self.live.handoffs.leased(id, now, self.schedule);
            self.count(tally, sent, now, &Reply::Leased { id, token });

            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            let sent = Instant::now();
            self.live.handoffs.released(id, sent);
            let reply = match client.release(&lease, None).await? {
                Released::Yes => Reply::Done(None),
                Released::Stale => Reply::Stale,
                Released::NotFound | Released::NotBlocked => Reply::NotFound,
            };
            if reply != Reply::Done(None) {
                self.live.handoffs.release_refused(id, sent);
            }
            self.count(tally, sent, Instant::now(), &reply);
        }
    }

    fn count(&mut self, tally: &mut Tally, since: Instant, now: Instant, reply: &Reply) {
        if count_reply(tally, &mut self.recent, self.live, since, now, self.schedule, reply) {
            self.live.ops.fetch_add(1, Ordering::Relaxed);
        }
        if now.duration_since(self.shared_at) >= SHARE_EVERY {
            share(self.live, &mut self.recent);
            self.shared_at = now;
        }
    }
}
