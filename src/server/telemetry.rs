//! What the daemon measures beyond STATS, for the Prometheus endpoint: every request's outcome by
//! command, request latency by command and front end (TCP or HTTP), and the HTTP gateway's connections.
//!
//! Everything here is a plain atomic array indexed by enums, written with relaxed increments and read only
//! when `/metrics` is scraped: never a map lookup or a lock. A TCP connection tallies its batch's requests
//! in a [`Batch`] of its own and adds them up here once per batch: it reads the clock once (at its first
//! request and after its replies are written) and records every request of the batch with that one
//! latency, and it adds each outcome's count in one increment. An atomic increment is a locked
//! instruction, which waits for every store before it to reach the cache: in a pool far larger than the
//! caches, one per request made each request wait for the previous one's cache miss (see BENCHMARKS.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::protocol::request::Command;

/// Which front end served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    Tcp,
    Http,
}

impl Frontend {
    pub const ALL: [Frontend; 2] = [Frontend::Tcp, Frontend::Http];

    /// The `frontend` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Frontend::Tcp => "tcp",
            Frontend::Http => "http",
        }
    }
}

/// How a request ended, read from the first word of its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served as asked: a key, `RELEASED`, `STAT` lines, `PONG`...
    Ok,
    NotFound,
    NotBlocked,
    Stale,
    /// ADD of a secret the pool already holds.
    Exists,
    ClientError,
    ServerError,
    /// Refused before authentication.
    NoAuth,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::NotBlocked,
        Outcome::Stale,
        Outcome::Exists,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::NoAuth,
    ];

    /// The `outcome` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::NotBlocked => "not_blocked",
            Outcome::Stale => "stale",
            Outcome::Exists => "exists",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::NoAuth => "noauth",
        }
    }

    /// The outcome a reply (as written by `protocol::reply`) reports. Only its first bytes are read.
    pub fn of_reply(reply: &[u8]) -> Outcome {
        // Every word below starts with one of these letters; most replies (KEY, RELEASED, PONG...) do not,
        // and are told by their first byte alone. Why it matters: the reply was written a moment ago,
        // and a read wider than the stores that wrote it waits until every store before it has reached
        // the cache, which in a large pool includes a record's write still missing it.
        if !matches!(reply.first(), Some(b'C' | b'S' | b'E' | b'N')) {
            return Outcome::Ok;
        }
        const WORDS: [(&[u8], Outcome); 7] = [
            (b"CLIENT_ERROR", Outcome::ClientError),
            (b"SERVER_ERROR", Outcome::ServerError),
            (b"ERROR", Outcome::NoAuth),
            (b"NOT_FOUND", Outcome::NotFound),
            (b"NOT_BLOCKED", Outcome::NotBlocked),
            (b"STALE", Outcome::Stale),
            (b"EXISTS", Outcome::Exists),
        ];
        WORDS.iter().find(|(word, _)| reply.starts_with(word)).map_or(Outcome::Ok, |&(_, outcome)| outcome)
    }
}

/// Upper bounds of the latency histogram's buckets, in seconds: from 10 µs (a request answered in a
/// batch) to 5 minutes (the longest `--max-wait` default), roughly 1-2.5-5 per decade.
pub const LATENCY_BOUNDS: [f64; 22] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The same bounds in nanoseconds, for comparing without floating point on the hot path.
const LATENCY_BOUNDS_NANOS: [u64; LATENCY_BOUNDS.len()] = {
    let mut nanos = [0; LATENCY_BOUNDS.len()];
    let mut i = 0;
    while i < nanos.len() {
        nanos[i] = (LATENCY_BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

const COMMANDS: usize = Command::ALL.len();

/// One histogram: a count per bucket (the last one past every bound), and the sum of what was recorded.
struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_nanos: AtomicU64::new(0) }
    }
}

/// A histogram as it was read: `(upper bound, count)` per bucket, not cumulative (the last bound is
/// `+Inf`), the total count and the sum in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// The daemon's measurements; one in [`super::Shared`].
pub struct Telemetry {
    outcomes: [[AtomicU64; Outcome::ALL.len()]; COMMANDS],
    latency: [[Histogram; COMMANDS]; Frontend::ALL.len()],
    http_opened: AtomicU64,
    http_open: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            outcomes: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| Histogram::new())),
            http_opened: AtomicU64::new(0),
            http_open: AtomicU64::new(0),
        }
    }
}

impl Telemetry {
    /// Counts one request of `command` that ended as `outcome`.
    pub fn count_outcome(&self, command: Command, outcome: Outcome) {
        self.count_outcomes(command, outcome, 1);
    }

    /// Counts `requests` requests of `command` that ended as `outcome`.
    fn count_outcomes(&self, command: Command, outcome: Outcome, requests: u64) {
        self.outcomes[command as usize][outcome as usize].fetch_add(requests, Ordering::Relaxed);
    }

    /// How many requests of `command` ended as `outcome`.
    pub fn outcomes_of(&self, command: Command, outcome: Outcome) -> u64 {
        self.outcomes[command as usize][outcome as usize].load(Ordering::Relaxed)
    }

    /// Records `requests` requests of `command`, served by `frontend`, that each took `elapsed`.
    pub fn record_latency(&self, frontend: Frontend, command: Command, requests: u64, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        let histogram = &self.latency[frontend as usize][command as usize];
        histogram.buckets[bucket].fetch_add(requests, Ordering::Relaxed);
        histogram.sum_nanos.fetch_add(nanos.saturating_mul(requests), Ordering::Relaxed);
    }

    /// The latency histogram of `command` on `frontend`, as it is now.
    pub fn latency_of(&self, frontend: Frontend, command: Command) -> HistogramSnapshot {
        let histogram = &self.latency[frontend as usize][command as usize];
        let bounds = LATENCY_BOUNDS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> =
            bounds.zip(&histogram.buckets).map(|(bound, count)| (bound, count.load(Ordering::Relaxed))).collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum_seconds = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot { buckets, count, sum_seconds }
    }

    /// An HTTP connection was accepted.
    pub fn http_connection_opened(&self) {
        self.http_opened.fetch_add(1, Ordering::Relaxed);
        self.http_open.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP connection ended.
    pub fn http_connection_closed(&self) {
        self.http_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// `(open now, opened since start)` HTTP connections.
    pub fn http_connections(&self) -> (u64, u64) {
        (self.http_open.load(Ordering::Relaxed), self.http_opened.load(Ordering::Relaxed))
    }
}

/// The requests of one TCP batch, timed together: the clock is read at the first request and once more
/// when the batch's replies are written. Their outcomes are tallied here too, and added to the
/// [`Telemetry`] with the latencies.
#[derive(Default)]
pub struct Batch {
    started: Option<Instant>,
    requests: [u32; COMMANDS],
    outcomes: [[u32; Outcome::ALL.len()]; COMMANDS],
}

impl Batch {
    /// Starts the batch's clock, unless it runs already: call it before the batch's first request.
    pub fn start(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    /// Notes a request of `command` answered in this batch (started by [`Batch::start`]).
    pub fn count(&mut self, command: Command) {
        debug_assert!(self.started.is_some(), "a batch is started before its requests are counted");
        self.requests[command as usize] += 1;
    }

    /// Notes a request of `command` answered in this batch, as [`Batch::count`] does, and its outcome.
    pub fn count_with_outcome(&mut self, command: Command, outcome: Outcome) {
        self.count(command);
        self.outcomes[command as usize][outcome as usize] += 1;
    }

    /// When the batch's first request was taken up, if it had one.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Adds the outcomes tallied so far to `telemetry`: called before the batch's replies are written, so
    /// that a client that has read a reply finds it counted. [`Batch::finish`] adds any left.
    pub fn add_outcomes(&mut self, telemetry: &Telemetry) {
        let commands = Command::ALL.iter().zip(&self.requests).zip(&mut self.outcomes);
        // A command with no request in the batch has no outcome to add either.
        for ((command, _), outcomes) in commands.filter(|((_, requests), _)| **requests > 0) {
            for (outcome, count) in Outcome::ALL.iter().zip(outcomes.iter_mut()) {
                if *count > 0 {
                    telemetry.count_outcomes(*command, *outcome, u64::from(*count));
                    *count = 0;
                }
            }
        }
    }

    /// Records the batch's requests as answered now (and adds their outcomes), and starts afresh.
    pub fn finish(&mut self, telemetry: &Telemetry) {
        let Some(started) = self.started.take() else {
            return;
        };
        let elapsed = started.elapsed();
        self.add_outcomes(telemetry);
        for (command, requests) in Command::ALL.iter().zip(&mut self.requests) {
            if *requests > 0 {
                telemetry.record_latency(Frontend::Tcp, *command, u64::from(*requests), elapsed);
                *requests = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_the_reply_word() {
        assert_eq!(Outcome::of_reply(b"KEY abc\r\n"), Outcome::Ok);
        assert_eq!(Outcome::of_reply(b"END 0\r\n"), Outcome::Ok);
        assert_eq!(Outcome::of_reply(b"RELEASED\r\n"), Outcome::Ok);
        assert_eq!(Outcome::of_reply(b"PONG\r\n"), Outcome::Ok);
        assert_eq!(Outcome::of_reply(b"STAT pid 1\r\nEND\r\n"), Outcome::Ok, "S, but not an error word");
        assert_eq!(Outcome::of_reply(b""), Outcome::Ok, "no reply at all");
        assert_eq!(Outcome::of_reply(b"NOT_FOUND\r\n"), Outcome::NotFound);
        assert_eq!(Outcome::of_reply(b"NOT_BLOCKED\r\n"), Outcome::NotBlocked);
        assert_eq!(Outcome::of_reply(b"STALE\r\n"), Outcome::Stale);
        assert_eq!(Outcome::of_reply(b"EXISTS abc\r\n"), Outcome::Exists);
        assert_eq!(Outcome::of_reply(b"CLIENT_ERROR x\r\n"), Outcome::ClientError);
        assert_eq!(Outcome::of_reply(b"SERVER_ERROR pool full\r\n"), Outcome::ServerError);
        assert_eq!(Outcome::of_reply(b"ERROR NOAUTH authentication required\r\n"), Outcome::NoAuth);
    }

    #[test]
    fn latency_lands_in_the_first_bucket_at_or_above_it() {
        let telemetry = Telemetry::default();
        telemetry.record_latency(Frontend::Http, Command::Get, 1, Duration::from_micros(10));
        telemetry.record_latency(Frontend::Http, Command::Get, 2, Duration::from_millis(3));
        telemetry.record_latency(Frontend::Http, Command::Get, 1, Duration::from_secs(1000));
        let snapshot = telemetry.latency_of(Frontend::Http, Command::Get);
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets[0], (0.000_01, 1), "10 µs is at most the first bound");
        assert_eq!(snapshot.buckets.iter().find(|(bound, _)| *bound == 0.005).map(|b| b.1), Some(2));
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(snapshot.buckets.iter().map(|b| b.1).sum::<u64>(), 4);
        assert!((snapshot.sum_seconds - 1_000.006_01).abs() < 1e-6, "{}", snapshot.sum_seconds);
        assert_eq!(telemetry.latency_of(Frontend::Tcp, Command::Get).count, 0, "front ends are apart");
    }

    #[test]
    fn a_batch_adds_up_its_requests_and_outcomes_once() {
        let telemetry = Telemetry::default();
        let mut batch = Batch::default();
        batch.finish(&telemetry);
        assert!(batch.started().is_none(), "an empty batch reads no clock");
        batch.start();
        batch.count_with_outcome(Command::Get, Outcome::Ok);
        batch.count_with_outcome(Command::Get, Outcome::NotFound);
        batch.count_with_outcome(Command::Get, Outcome::Ok);
        batch.count_with_outcome(Command::Rel, Outcome::Stale);
        batch.count(Command::Quit);
        assert_eq!(telemetry.outcomes_of(Command::Get, Outcome::Ok), 0, "nothing is added request by request");
        batch.add_outcomes(&telemetry);
        assert_eq!(telemetry.outcomes_of(Command::Get, Outcome::Ok), 2, "outcomes are added before the replies go");
        assert_eq!(telemetry.latency_of(Frontend::Tcp, Command::Get).count, 0, "latency only once they went");
        batch.finish(&telemetry);
        assert_eq!(telemetry.latency_of(Frontend::Tcp, Command::Get).count, 3);
        assert_eq!(telemetry.latency_of(Frontend::Tcp, Command::Rel).count, 1);
        assert_eq!(telemetry.latency_of(Frontend::Tcp, Command::Quit).count, 1);
        assert_eq!(telemetry.outcomes_of(Command::Get, Outcome::Ok), 2);
        assert_eq!(telemetry.outcomes_of(Command::Get, Outcome::NotFound), 1);
        assert_eq!(telemetry.outcomes_of(Command::Rel, Outcome::Stale), 1);
        assert_eq!(telemetry.outcomes_of(Command::Rel, Outcome::Ok), 0);
        batch.start();
        batch.count_with_outcome(Command::Get, Outcome::Ok);
        batch.finish(&telemetry);
        assert_eq!(telemetry.latency_of(Frontend::Tcp, Command::Get).count, 4, "finishing cleared the batch");
        assert_eq!(telemetry.outcomes_of(Command::Get, Outcome::Ok), 3, "finishing cleared the batch");
        assert_eq!(telemetry.outcomes_of(Command::Get, Outcome::NotFound), 1, "finishing cleared the batch");
    }
}
