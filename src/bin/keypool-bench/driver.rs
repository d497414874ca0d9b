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
//! Only requests sent after the warm-up and answered before the end count.
//!
//! `contend` adds two things. Its connections may hold each leased key for `--hold` before giving it
//! back, sending nothing meanwhile (simulated work). And every REL and LEASED it sends and reads goes
//! into the shared [`Handoffs`] book, which times each key from its release to its next lease.

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
    /// Keep this many requests in flight, and hold each leased key this long before giving it back.
    Closed { pipeline: usize, hold: Duration },
    /// Send one request every `interval`.
    Open { interval: Duration },
}

/// What connections share while they run: the live progress figures, the first odd reply, and the
/// handoff book (used by `contend` only; the others never touch it).
#[derive(Default)]
pub struct Live {
    pub ops: AtomicU64,
    pub interval: Mutex<Option<Histogram<u64>>>,
    pub first_unexpected: Mutex<Option<String>>,
    pub handoffs: Handoffs,
}

impl Live {
    fn note_unexpected(&self, example: &str) {
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
    fn new() -> Tally {
        Tally { latency: new_histogram(), ops: 0, not_found: 0, errors: 0, unexpected: 0, stale: 0, failure: None }
    }
}

/// The most sends one turn of an open-loop connection queues to catch up with its schedule.
const MAX_CATCH_UP: usize = 4096;

/// How often a connection hands its recent latencies to the progress line.
const SHARE_EVERY: Duration = Duration::from_millis(200);

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
    let mut hold_until: Option<Instant> = None;
    // Timers made once and reset, not made per request: registering a fresh timer for every read
    // would cost the generator more than the request costs the server. The closed loop uses
    // `pace_timer` to end a `--hold`.
    let finish = tokio::time::sleep_until(schedule.end);
    let pace_timer = tokio::time::sleep_until(next_send);
    tokio::pin!(finish, pace_timer);

    loop {
        let now = Instant::now();
        if now >= schedule.end {
            return Ok(());
        }
        match pace {
            Pace::Closed { pipeline, .. } => {
                if let Some(until) = hold_until.filter(|&until| until > now) {
                    // Holding a key: nothing is in flight (contend runs one request at a time), so
                    // only the clock can move this connection on.
                    pace_timer.as_mut().reset(until);
                    tokio::select! {
                        biased;
                        () = &mut pace_timer => continue,
                        () = &mut finish => return Ok(()),
                    }
                }
                hold_until = None;
                while in_flight.len() < pipeline {
                    let op = source.next_op();
                    note_sending(live, op, now);
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
                    note_sending(live, op, next_send);
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
        if let Pace::Closed { hold, .. } = pace {
            // The lease just read starts the hold; the give-back goes out when it ends.
            if !hold.is_zero() && hold_until.is_none() && source.holds_a_key() {
                hold_until = Some(now + hold);
            }
        }

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
        note_handoff(live, op, since, &reply, now, schedule);
        if since < schedule.measure_from || now > schedule.end {
            continue;
        }
        let micros = u64::try_from(now.duration_since(since).as_micros()).unwrap_or(u64::MAX).max(1);
        tally.latency.saturating_record(micros);
        recent.saturating_record(micros);
        tally.ops += 1;
        counted += 1;
        match reply {
            Reply::Done(_) | Reply::Leased { .. } => {}
            Reply::NotFound => tally.not_found += 1,
            Reply::Stale => tally.stale += 1,
            Reply::Error(text) => {
                tally.errors += 1;
                live.note_unexpected(&text);
            }
            Reply::Unexpected(text) => {
                tally.unexpected += 1;
                live.note_unexpected(&text);
            }
        }
    }
    live.ops.fetch_add(counted, Ordering::Relaxed);
}

/// Puts a REL that is about to be written into the handoff book, at the instant its latency counts from
/// (the same instant goes into `in_flight`, which is how a refused REL finds its own entry again).
fn note_sending(live: &Live, op: Op, since: Instant) {
    if let Op::Release(id, _) = op {
        live.handoffs.released(id, since);
    }
}

/// Tells the handoff book what a reply means for it: a key leased, or a REL (sent at `since`) that freed
/// nothing. Done for every reply, counted or not, so that the book never keeps a stale entry.
fn note_handoff(live: &Live, op: Op, since: Instant, reply: &Reply, now: Instant, schedule: Schedule) {
    match (op, reply) {
        (Op::LeaseWaiting(_), &Reply::Leased { id, .. }) => live.handoffs.leased(id, now, schedule),
        (Op::Release(id, _), Reply::Stale | Reply::NotFound) => live.handoffs.release_refused(id, since),
        _ => {}
    }
}

fn share(live: &Live, recent: &mut Histogram<u64>) {
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
