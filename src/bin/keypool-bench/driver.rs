//! One benchmark connection: keeps its requests flowing and times every reply.
//!
//! Closed loop (the default): the connection keeps `pipeline` requests in flight; each reply frees a
//! place for the next request, and all new requests of a turn go out in one write. A request's latency
//! runs from when it was written to when its reply was read.
//!
//! Open loop (`--rate`): the connection sends at a fixed pace whatever the server does, and a request's
//! latency runs from when it was *meant* to be sent. A server that stalls therefore shows the stall in
//! every request that queued behind it, instead of hiding it by slowing the sender (coordinated
//! omission).
//!
//! Only requests sent after the warm-up and answered before the end count ([`count_reply`], which
//! the `contend` connections of `contend.rs` use too).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::handoff::Handoffs;
use crate::target::{Op, Reply, Target};
use crate::workload::OpSource;

/// Latencies are recorded in microseconds, up to a minute, to three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds are valid")
}

/// When each phase of the run starts and ends.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

/// How a connection sends.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Keep this many requests in flight.
    Closed { pipeline: usize },
    /// Send one request every `interval`.
    Open { interval: Duration },
}

/// What connections share while they run: the live progress figures, the first odd reply, and the
/// handoff book (used by `contend` only, in `contend.rs`; the others never touch it).
#[derive(Default)]
pub struct Live {
    pub ops: AtomicU64,
    pub interval: Mutex<Option<Histogram<u64>>>,
    pub first_unexpected: Mutex<Option<String>>,
    pub handoffs: Handoffs,
}

impl Live {
    pub fn note_unexpected(&self, example: &str) {
        let mut first = self.first_unexpected.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| example.to_string());
    }
}

/// What one connection measured.
pub struct Tally {
    pub latency: Histogram<u64>,
    pub ops: u64,
    pub not_found: u64,
    pub errors: u64,
    pub unexpected: u64,
    /// `STALE` replies to `REL <id> <token>`: the lease had already timed out.
    pub stale: u64,
    pub failure: Option<String>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally { latency: new_histogram(), ops: 0, not_found: 0, errors: 0, unexpected: 0, stale: 0, failure: None }
    }
}

/// The most sends one turn of an open-loop connection queues to catch up with its schedule.
const MAX_CATCH_UP: usize = 4096;

/// How often a connection hands its recent latencies to the progress line.
pub const SHARE_EVERY: Duration = Duration::from_millis(200);

/// Runs one connection to `addr` through `schedule`. Never fails: a broken connection ends early and
/// says why in `Tally::failure`.
pub async fn run(
    target: Target,
    addr: String,
    mut source: OpSource,
    pace: Pace,
    schedule: Schedule,
    live: Arc<Live>,
) -> Tally {
    let mut tally = Tally::new();
    if let Err(error) = drive(target, &addr, &mut source, pace, schedule, &live, &mut tally).await {
        tally.failure = Some(format!("{error:#}"));
    }
    tally
}

/// The requests in flight, oldest first, with the instant each counts its latency from.
type InFlight = VecDeque<(Op, Instant)>;

async fn drive(
    target: Target,
    addr: &str,
    source: &mut OpSource,
    pace: Pace,
    schedule: Schedule,
    live: &Live,
    tally: &mut Tally,
) -> Result<()> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut in_flight: InFlight = VecDeque::new();
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut recent = new_histogram();
    let mut shared_at = Instant::now();
    let mut next_send = schedule.start;
    // Timers made once and reset, not made per request: registering a fresh timer for every read
    // would cost the generator more than the request costs the server.
    let finish = tokio::time::sleep_until(schedule.end);
    let pace_timer = tokio::time::sleep_until(next_send);
    tokio::pin!(finish, pace_timer);

    loop {
        let now = Instant::now();
        if now >= schedule.end {
            return Ok(());
        }
        match pace {
            Pace::Closed { pipeline } => {
                while in_flight.len() < pipeline {
                    let op = source.next_op();
                    target.encode(op, &mut output);
                    in_flight.push_back((op, now));
                }
            }
            Pace::Open { interval } => {
                // A server (or generator) that stalled leaves a backlog of sends due: catch up, but in
                // bounded steps, so one turn never queues without limit.
                let mut queued = 0;
                while next_send <= now && next_send < schedule.end && queued < MAX_CATCH_UP {
                    queued += 1;
                    let op = source.next_op();
                    target.encode(op, &mut output);
                    in_flight.push_back((op, next_send));
                    next_send += interval;
                }
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }

        let read = match pace {
            Pace::Closed { .. } => tokio::select! {
                biased;
                read = stream.read_buf(&mut input) => read?,
                () = &mut finish => return Ok(()),
            },
            Pace::Open { .. } => {
                if pace_timer.deadline() != next_send {
                    pace_timer.as_mut().reset(next_send);
                }
                tokio::select! {
                    biased;
                    read = stream.read_buf(&mut input) => read?,
                    () = &mut pace_timer => continue,
                    () = &mut finish => return Ok(()),
                }
            }
        };
        if read == 0 {
            anyhow::bail!("the server closed the connection");
        }
        let now = Instant::now();
        take_replies(target, &mut input, &mut in_flight, source, schedule, now, tally, &mut recent, live);

        if now.duration_since(shared_at) >= SHARE_EVERY {
            share(live, &mut recent);
            shared_at = now;
        }
    }
}

/// Parses every complete reply at the front of `input` and accounts for it.
#[allow(clippy::too_many_arguments)]
fn take_replies(
    target: Target,
    input: &mut BytesMut,
    in_flight: &mut InFlight,
    source: &mut OpSource,
    schedule: Schedule,
    now: Instant,
    tally: &mut Tally,
    recent: &mut Histogram<u64>,
    live: &Live,
) {
    let mut counted = 0;
    while let Some(&(op, since)) = in_flight.front() {
        let Some((reply, used)) = target.parse(op, input) else {
            break;
        };
        input.advance(used);
        in_flight.pop_front();
        source.on_reply(op, &reply);
        counted += u64::from(count_reply(tally, recent, live, since, now, schedule, &reply));
    }
    live.ops.fetch_add(counted, Ordering::Relaxed);
}

/// Accounts for `reply`, read at `now` to a request sent (or meant to be sent) at `since`, if it falls
/// in the measured window; returns whether it did.
pub fn count_reply(
    tally: &mut Tally,
    recent: &mut Histogram<u64>,
    live: &Live,
    since: Instant,
    now: Instant,
    schedule: Schedule,
    reply: &Reply,
) -> bool {
    if since < schedule.measure_from || now > schedule.end {
        return false;
    }
    let micros = u64::try_from(now.duration_since(since).as_micros()).unwrap_or(u64::MAX).max(1);
    tally.latency.saturating_record(micros);
    recent.saturating_record(micros);
    tally.ops += 1;
    match reply {
        Reply::Done(_) | Reply::Leased { .. } => {}
        Reply::NotFound => tally.not_found += 1,
        Reply::Stale => tally.stale += 1,
        Reply::Error(text) => {
            tally.errors += 1;
            live.note_unexpected(text);
        }
        Reply::Unexpected(text) => {
            tally.unexpected += 1;
            live.note_unexpected(text);
        }
    }
    true
}

/// Hands the latencies recorded since the last call to the progress line.
pub fn share(live: &Live, recent: &mut Histogram<u64>) {
    if recent.is_empty() {
        return;
    }
    let mut interval = live.interval.lock().unwrap_or_else(|e| e.into_inner());
    match interval.as_mut() {
        Some(histogram) => {
            let _ = histogram.add(&*recent);
        }
        None => *interval = Some(recent.clone()),
    }
    recent.reset();
}
