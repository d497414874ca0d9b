//! Kill -9 under load: the real binary, with `--data-dir` and `--fsync always`, is driven by several
//! clients doing GEN/GET/LEASE/REL/DEL/PING, killed with SIGKILL at a random moment, restarted on the
//! same directory, and checked against everything the clients were told before the kill. Many cycles
//! run over one directory, so later cycles recover logs and snapshots that earlier ones left.
//!
//! The promise under test (protocol.md, "Durability"): with `--fsync always`, a reply is sent only once
//! its change is on disk. So after a restart every acknowledged GEN is there unless an acknowledged DEL
//! removed it, no acknowledged DEL is back, every acknowledged lease not released since is still blocked
//! until the deadline it was given (with its token), and new fencing tokens are larger than every token
//! handed out before.
//!
//! Each client works in a pool of its own, so what it was told is the whole truth about that pool:
//! every reply is predicted exactly from the model, and after a restart every known key is checked with
//! INFO. The requests in flight when the daemon died are the only uncertainty, and it is bounded: each
//! may or may not have taken effect (a GEN of unknown ids, a lease of some free key, a release, a
//! deletion, a keep-alive), and the check allows exactly those alternatives, then adopts what it sees.
//!
//! Times are checked as windows: a deadline the server set while a request was in flight lies between
//! the moment the request was sent and the moment its reply was read, plus the window it asked for.
//!
//! The run is seeded: the seed is printed and `KEYPOOL_CRASH_SEED` replays it (the kill moments are
//! seeded too, though what is in flight at them depends on scheduling). `KEYPOOL_CRASH_CYCLES` raises
//! the number of cycles for a soak (see scripts/crash-soak.sh).

mod daemon_process;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use daemon_process::Daemon;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The daemon's `--block-timeout` and `--keepalive-timeout`: long enough that nothing expires during a
/// run, so every deadline seen after a restart is the one the model predicts.
const BLOCK_MS: u64 = 10 * 60 * 1000;
const KEEPALIVE_MS: u64 = 60 * 60 * 1000;

/// Clients writing at once, each in a pool of its own.
const WORKERS: usize = 4;

/// Kill/restart cycles in the default run; `KEYPOOL_CRASH_CYCLES` overrides it.
const DEFAULT_CYCLES: usize = 12;

/// The default run stops starting new cycles after this long (the machine may be slow and shared).
const DEFAULT_BUDGET: Duration = Duration::from_secs(20);

/// Keys a client aims to keep in its pool: with [`WORKERS`] pools, a couple of thousand keys to check.
const TARGET_KEYS: usize = 400;

/// Slack allowed on either side of a time window: the server reads its clock in whole milliseconds,
/// and derives Unix time from a monotonic clock started at a slightly different instant.
const CLOCK_SLACK_MS: u64 = 25;

/// The longest any single wait for the daemon may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The pool the fencing-token check leases from.
const FENCE_POOL: &str = "fence";

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_millis() as u64
}

/// A span of Unix milliseconds some server-side time is known to lie in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    earliest: u64,
    latest: u64,
}

impl Window {
    fn exactly(at: u64) -> Window {
        Window { earliest: at, latest: at }
    }

    fn later_by(self, ms: u64) -> Window {
        Window { earliest: self.earliest + ms, latest: self.latest + ms }
    }

    fn holds(self, at: u64) -> bool {
        at + CLOCK_SLACK_MS >= self.earliest && at <= self.latest + CLOCK_SLACK_MS
    }

    fn span(self, other: Window) -> Window {
        Window { earliest: self.earliest.min(other.earliest), latest: self.latest.max(other.latest) }
    }
}

/// Where a key is, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    Free,
    /// Leased until a time in `until`; `token` is known for a LEASE, or once INFO has shown it.
    Blocked {
        until: Window,
        token: Option<u64>,
    },
}

/// What a client knows of one of its keys. `None` windows are not known yet (a key whose GEN reply was
/// lost in a kill, met again through GET): the next check after a restart learns them.
#[derive(Clone, Debug)]
struct KnownKey {
    created: Option<Window>,
    alive_until: Option<Window>,
    place: Place,
    leases: Option<u64>,
}

/// One request, as composed by a client.
#[derive(Clone, Debug)]
enum Op {
    Gen(u32),
    Get,
    /// `LEASE 0ms <block_min>m`.
    Lease {
        block_min: u64,
    },
    Rel {
        id: String,
        token: Option<u64>,
    },
    Del(String),
    Ping(String),
}

impl Op {
    fn line(&self) -> String {
        match self {
            Op::Gen(n) => format!("GEN {n}\r\n"),
            Op::Get => "GET\r\n".to_string(),
            Op::Lease { block_min } => format!("LEASE 0ms {block_min}m\r\n"),
            Op::Rel { id, token: Some(token) } => format!("REL {id} {token}\r\n"),
            Op::Rel { id, token: None } => format!("REL {id}\r\n"),
            Op::Del(id) => format!("DEL {id}\r\n"),
            Op::Ping(id) => format!("PING {id}\r\n"),
        }
    }

    /// The block window a lease made by this request lasts.
    fn block_ms(&self) -> u64 {
        match self {
            Op::Lease { block_min } => block_min * 60_000,
            _ => BLOCK_MS,
        }
    }
}

/// A request whose reply was not (wholly) read when the daemon died: it may or may not have happened.
#[derive(Clone, Debug)]
struct InFlight {
    op: Op,
    /// When it was sent, and when the daemon was killed.
    window: Window,
}

/// One client's pool: what it knows, and what it was in the middle of.
#[derive(Debug, Default)]
struct PoolModel {
    name: String,
    keys: HashMap<String, KnownKey>,
    /// Keys in the pool whose ids the client never learned (their GEN reply was lost in a kill).
    unknown: u64,
    /// Ids whose deletion was acknowledged (or seen after a restart): they must stay gone.
    deleted: Vec<String>,
    in_flight: Vec<InFlight>,
}

/// What the run counts, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: u64,
    in_flight_at_kill: u64,
    settled_by_check: u64,
    torn_tails: u64,
    compactions_acknowledged: u64,
    killed_mid_compaction: u64,
}

/// A line client that treats a closed connection as an answer ("the daemon is gone"), not a failure.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Conn {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connecting timed out")
            .expect("connect to the daemon");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        let (reader, writer) = stream.into_split();
        Conn { reader: BufReader::new(reader), writer }
    }

    /// Sends `bytes`; `false` if the daemon is gone.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        matches!(tokio::time::timeout(IO_TIMEOUT, self.writer.write_all(bytes)).await, Ok(Ok(())))
    }

    /// The next reply line without its CRLF; `None` if the daemon is gone. A line cut short by the
    /// kill is not a reply. Fails the test if the daemon, alive, says nothing for [`IO_TIMEOUT`].
    async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(IO_TIMEOUT, self.reader.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply within {IO_TIMEOUT:?}"));
        match read {
            Ok(_) if buf.ends_with(b"\r\n") => {
                buf.truncate(buf.len() - 2);
                Some(String::from_utf8(buf).expect("replies are ASCII"))
            }
            _ => None,
        }
    }

    /// For the checker, whose daemon must stay up: the next line, or a failed test.
    async fn must_line(&mut self) -> String {
        self.line().await.expect("the daemon closed the checker's connection")
    }

    async fn must_send(&mut self, text: &str) {
        assert!(self.send(text.as_bytes()).await, "the daemon closed the checker's connection");
    }
}

/// What INFO shows of a key.
#[derive(Debug)]
struct Info {
    created: u64,
    alive_until: u64,
    blocked: Option<(u64, u64)>,
    leases: u64,
}

fn parse_info(id: &str, lines: &[String]) -> Info {
    let mut fields = HashMap::new();
    for line in lines {
        let mut parts = line.splitn(3, ' ');
        let (Some("STAT"), Some(name), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("INFO {id}: unexpected line {line:?}");
        };
        fields.insert(name.to_string(), value.to_string());
    }
    let number = |name: &str| -> u64 {
        let value = fields.get(name).unwrap_or_else(|| panic!("INFO {id} has no {name}: {lines:?}"));
        value.parse().unwrap_or_else(|_| panic!("INFO {id}: {name} {value:?} is not a number"))
    };
    let blocked = match fields.get("state").map(String::as_str) {
        Some("free") => None,
        Some("blocked") => Some((number("blocked_until_ms"), number("token"))),
        other => panic!("INFO {id}: state {other:?}, expected free or blocked (this test makes no delays)"),
    };
    Info { created: number("created_ms"), alive_until: number("alive_until_ms"), blocked, leases: number("leases") }
}

/// Composes the next batch for a pool: 1 to 4 requests, pipelined, each naming a different key, so that
/// every reply is predictable (a GET may take a key a later DEL or PING of the batch names; DELETED and
/// ALIVE are the answers either way).
fn compose(rng: &mut StdRng, pool: &PoolModel) -> Vec<Op> {
    let batch = rng.random_range(1..=4usize);
    let mut named = HashSet::new();
    let mut ops = Vec::new();
    let size = pool.keys.len();
    for _ in 0..batch {
        let blocked: Vec<(&String, Option<u64>)> = pool
            .keys
            .iter()
            .filter(|(id, _)| !named.contains(*id))
            .filter_map(|(id, key)| match key.place {
                Place::Blocked { token, .. } => Some((id, token)),
                Place::Free => None,
            })
            .collect();
        let any: Vec<&String> = pool.keys.keys().filter(|id| !named.contains(*id)).collect();
        // Grow a small pool, shrink a large one, and keep about half the keys leased.
        let gen_weight = if size < TARGET_KEYS / 2 {
            6
        } else if size > TARGET_KEYS * 3 / 2 {
            0
        } else {
            2
        };
        let del_weight = if size > TARGET_KEYS { 4 } else { 1 };
        let choice = rng.random_range(0..(gen_weight + 4 + 3 + del_weight + 2));
        let op = if choice < gen_weight {
            Op::Gen(rng.random_range(1..=8))
        } else if choice < gen_weight + 4 {
            if rng.random_bool(0.5) {
                Op::Get
            } else {
                Op::Lease { block_min: rng.random_range(1..=30) }
            }
        } else if choice < gen_weight + 7 && !blocked.is_empty() {
            let (id, token) = blocked[rng.random_range(0..blocked.len())];
            // With its token when known, half the time: a token restored from disk must still match.
            let token = token.filter(|_| rng.random_bool(0.5));
            Op::Rel { id: id.clone(), token }
        } else if choice < gen_weight + 7 + del_weight && !any.is_empty() {
            Op::Del(any[rng.random_range(0..any.len())].clone())
        } else if !any.is_empty() {
            Op::Ping(any[rng.random_range(0..any.len())].clone())
        } else {
            Op::Gen(rng.random_range(1..=8))
        };
        match &op {
            Op::Rel { id, .. } | Op::Del(id) | Op::Ping(id) => {
                named.insert(id.clone());
            }
            _ => {}
        }
        ops.push(op);
    }
    ops
}

/// Reads the reply to `op`, checks it against the model and applies it. `false` if the daemon died
/// before the whole reply arrived (then the model is untouched). `sent` is when the batch was sent.
async fn read_reply(conn: &mut Conn, pool: &mut PoolModel, op: &Op, sent: u64, max_token: &mut u64, seed: u64) -> bool {
    let name = pool.name.clone();
    let fail = |what: String| -> ! { panic!("seed {seed}, pool {name}, {op:?}: {what}") };
    match op {
        Op::Gen(n) => {
            let mut ids = Vec::new();
            loop {
                let Some(line) = conn.line().await else { return false };
                if line == "END" {
                    break;
                }
                match line.strip_prefix("KEY ") {
                    Some(id) => ids.push(id.to_string()),
                    None => fail(format!("unexpected line {line:?}")),
                }
            }
            if ids.len() != *n as usize {
                fail(format!("{} keys for GEN {n}", ids.len()));
            }
            let window = Window { earliest: sent, latest: unix_ms() };
            for id in ids {
                let key = KnownKey {
                    created: Some(window),
                    alive_until: Some(window.later_by(KEEPALIVE_MS)),
                    place: Place::Free,
                    leases: Some(0),
                };
                if pool.keys.insert(id.clone(), key).is_some() {
                    fail(format!("GEN handed out {id}, which the pool already holds"));
                }
            }
        }
        Op::Get | Op::Lease { .. } => {
            let Some(line) = conn.line().await else { return false };
            let window = Window { earliest: sent, latest: unix_ms() };
            let words: Vec<&str> = line.split(' ').collect();
            let (id, token) = match (op, &words[..]) {
                (_, ["NOT_FOUND"]) => {
                    if pool.keys.values().any(|key| key.place == Place::Free) {
                        fail("NOT_FOUND while the pool has free keys".into());
                    }
                    return true;
                }
                (Op::Get, ["KEY", id]) => (id.to_string(), None),
                (Op::Lease { .. }, ["LEASED", id, token]) => {
                    let token: u64 = token.parse().unwrap_or_else(|_| fail(format!("malformed token in {line:?}")));
                    if token <= *max_token {
                        fail(format!("token {token} is not above {max_token}, handed out before"));
                    }
                    *max_token = token;
                    (id.to_string(), Some(token))
                }
                _ => fail(format!("unexpected reply {line:?}")),
            };
            let until = window.later_by(op.block_ms());
            match pool.keys.get_mut(&id) {
                Some(key) => {
                    if key.place != Place::Free {
                        fail(format!("leased {id}, which the client holds already"));
                    }
                    key.place = Place::Blocked { until, token };
                    key.leases = key.leases.map(|n| n + 1);
                }
                None if pool.unknown > 0 => {
                    // One of the keys a GEN lost in a kill made: now known.
                    pool.unknown -= 1;
                    let key = KnownKey {
                        created: None,
                        alive_until: None,
                        place: Place::Blocked { until, token },
                        leases: None,
                    };
                    pool.keys.insert(id, key);
                }
                None => fail(format!("leased {id}, which this pool never held")),
            }
        }
        Op::Rel { id, .. } => {
            let Some(line) = conn.line().await else { return false };
            if line != "RELEASED" {
                fail(format!("expected RELEASED, got {line:?}"));
            }
            pool.keys.get_mut(id).expect("REL names a known key").place = Place::Free;
        }
        Op::Del(id) => {
            let Some(line) = conn.line().await else { return false };
            if line != "DELETED" {
                fail(format!("expected DELETED, got {line:?}"));
            }
            pool.keys.remove(id);
            pool.deleted.push(id.clone());
        }
        Op::Ping(id) => {
            let Some(line) = conn.line().await else { return false };
            let window = Window { earliest: sent, latest: unix_ms() };
            if line != "ALIVE" {
                fail(format!("expected ALIVE, got {line:?}"));
            }
            pool.keys.get_mut(id).expect("PING names a known key").alive_until = Some(window.later_by(KEEPALIVE_MS));
        }
    }
    true
}

/// One client: batches of requests into its pool until the daemon dies. Returns its pool, with the
/// requests in flight at the kill, the highest token it was given, and how many replies it read.
async fn drive(addr: SocketAddr, mut pool: PoolModel, seed: u64, mut rng: StdRng) -> (PoolModel, u64, u64) {
    let mut max_token = 0;
    let mut acknowledged = 0;
    let mut conn = Conn::connect(addr).await;
    if conn.send(format!("USE {}\r\n", pool.name).as_bytes()).await {
        match conn.line().await {
            Some(line) => assert_eq!(line, format!("USING {}", pool.name), "seed {seed}: USE"),
            None => return (pool, max_token, acknowledged),
        }
    } else {
        return (pool, max_token, acknowledged);
    }
    loop {
        let ops = compose(&mut rng, &pool);
        let sent = unix_ms();
        let bytes: String = ops.iter().map(Op::line).collect();
        let delivered = conn.send(bytes.as_bytes()).await;
        for (i, op) in ops.iter().enumerate() {
            if !delivered || !read_reply(&mut conn, &mut pool, op, sent, &mut max_token, seed).await {
                // The daemon is gone: this request and the rest of the batch may or may not have happened.
                let killed = unix_ms();
                pool.in_flight = ops[i..]
                    .iter()
                    .map(|op| InFlight { op: op.clone(), window: Window { earliest: sent, latest: killed } })
                    .collect();
                return (pool, max_token, acknowledged);
            }
            acknowledged += 1;
        }
    }
}

/// The alternatives the requests in flight at the kill leave open for a pool.
#[derive(Default)]
struct Maybe {
    deleted: HashSet<String>,
    released: HashSet<String>,
    pinged: HashMap<String, Window>,
    /// How many leases may have been made, and when their deadlines may lie.
    leases: u64,
    lease_until: Option<Window>,
    generated: u64,
}

impl Maybe {
    fn of(in_flight: &[InFlight]) -> Maybe {
        let mut maybe = Maybe::default();
        for InFlight { op, window } in in_flight {
            match op {
                Op::Gen(n) => maybe.generated += u64::from(*n),
                Op::Get | Op::Lease { .. } => {
                    maybe.leases += 1;
                    let until = window.later_by(op.block_ms());
                    maybe.lease_until = Some(maybe.lease_until.map_or(until, |known| known.span(until)));
                }
                Op::Rel { id, .. } => {
                    maybe.released.insert(id.clone());
                }
                Op::Del(id) => {
                    maybe.deleted.insert(id.clone());
                }
                Op::Ping(id) => {
                    maybe.pinged.insert(id.clone(), window.later_by(KEEPALIVE_MS));
                }
            }
        }
        maybe
    }
}

/// INFO for many ids at once, pipelined: each id with its lines, or `None` for NOT_FOUND.
async fn info_all(conn: &mut Conn, ids: &[String]) -> Vec<Option<Vec<String>>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(256) {
        let requests: String = chunk.iter().map(|id| format!("INFO {id}\r\n")).collect();
        conn.must_send(&requests).await;
        for _ in chunk {
            let mut lines = Vec::new();
            loop {
                let line = conn.must_line().await;
                if line == "NOT_FOUND" {
                    out.push(None);
                    break;
                }
                if line == "END" {
                    out.push(Some(lines));
                    break;
                }
                lines.push(line);
            }
        }
    }
    out
}

/// One figure of `STATS <pool>`.
async fn pool_keys(conn: &mut Conn, pool: &str) -> u64 {
    conn.must_send(&format!("STATS {pool}\r\n")).await;
    let mut keys = None;
    loop {
        let line = conn.must_line().await;
        if line == "END" {
            return keys.unwrap_or_else(|| panic!("STATS {pool} has no keys figure"));
        }
        if let Some(value) = line.strip_prefix("STAT keys ") {
            keys = Some(value.parse().expect("a key count"));
        }
    }
}

/// After a restart: checks one pool against its model and the requests in flight at the kill, then
/// makes the model exact again from what INFO shows. Returns the highest token INFO showed.
async fn check_pool(conn: &mut Conn, pool: &mut PoolModel, cycle: usize, seed: u64, tally: &mut Tally) -> u64 {
    let name = pool.name.clone();
    let fail = |what: String| -> ! { panic!("seed {seed}, after kill {cycle}, pool {name}: {what}") };
    let maybe = Maybe::of(&pool.in_flight);
    tally.in_flight_at_kill += pool.in_flight.len() as u64;
    tally.settled_by_check += pool.in_flight.len() as u64;
    conn.must_send(&format!("USE {name}\r\n")).await;
    assert_eq!(conn.must_line().await, format!("USING {name}"));

    // No acknowledged deletion is undone.
    for (id, found) in pool.deleted.clone().iter().zip(info_all(conn, &pool.deleted).await) {
        if found.is_some() {
            fail(format!("{id} is back, though its DEL was acknowledged"));
        }
    }

    let ids: Vec<String> = pool.keys.keys().cloned().collect();
    let infos = info_all(conn, &ids).await;
    let mut leased_after_kill = 0;
    let mut highest_token = 0;
    let mut found = 0;
    for (id, lines) in ids.iter().zip(infos) {
        let Some(lines) = lines else {
            if !maybe.deleted.contains(id) {
                fail(format!("{id} is gone, though its GEN was acknowledged and no DEL of it was sent"));
            }
            pool.keys.remove(id);
            pool.deleted.push(id.clone());
            continue;
        };
        found += 1;
        let info = parse_info(id, &lines);
        let key = pool.keys.get_mut(id).expect("a known id");
        if let Some(created) = key.created {
            if !created.holds(info.created) {
                fail(format!("{id}: created_ms {} outside {created:?}", info.created));
            }
        }
        if let Some(alive) = key.alive_until {
            let pinged = maybe.pinged.get(id).is_some_and(|window| window.holds(info.alive_until));
            if !alive.holds(info.alive_until) && !pinged {
                fail(format!("{id}: alive_until_ms {} outside {alive:?}", info.alive_until));
            }
        }
        // Whether a lease in flight at the kill took the key: only one of a key the client did not hold
        // (or one whose release was in flight too), with the deadline such a lease implies.
        let leased_in_flight = |until_ms: u64| maybe.lease_until.is_some_and(|window| window.holds(until_ms));
        let newly_leased = match (&key.place, info.blocked) {
            (Place::Blocked { until, token }, Some((until_ms, token_now)))
                if until.holds(until_ms) && token.is_none_or(|token| token == token_now) =>
            {
                false
            }
            (Place::Blocked { .. }, Some((until_ms, _))) if maybe.released.contains(id) && leased_in_flight(until_ms) => {
                true
            }
            (Place::Blocked { until, token }, Some((until_ms, token_now))) => fail(format!(
                "{id}: blocked until {until_ms} with token {token_now}, but its lease was until {until:?} with token {token:?}"
            )),
            (Place::Blocked { .. }, None) if maybe.released.contains(id) => false,
            (Place::Blocked { until, .. }, None) => {
                fail(format!("{id} is free, but its acknowledged lease (until {until:?}) was never released"))
            }
            (Place::Free, None) => false,
            (Place::Free, Some((until_ms, _))) if leased_in_flight(until_ms) => true,
            (Place::Free, Some((until_ms, _))) => fail(format!(
                "{id} is blocked until {until_ms}, but the client holds no lease of it (in flight: {:?})",
                pool.in_flight
            )),
        };
        leased_after_kill += u64::from(newly_leased);
        if let Some(leases) = key.leases {
            let expected = leases + u64::from(newly_leased);
            if info.leases != expected {
                fail(format!("{id}: {} leases, expected {expected}", info.leases));
            }
        }
        // From here on the model is what the daemon shows: exact.
        key.created = Some(Window::exactly(info.created));
        key.alive_until = Some(Window::exactly(info.alive_until));
        key.leases = Some(info.leases);
        key.place = match info.blocked {
            None => Place::Free,
            Some((until_ms, token)) => {
                highest_token = highest_token.max(token);
                Place::Blocked { until: Window::exactly(until_ms), token: Some(token) }
            }
        };
    }
    if leased_after_kill > maybe.leases {
        fail(format!("{leased_after_kill} keys came back leased, but only {} leases were in flight", maybe.leases));
    }

    // Keys the client does not know of are only those of GENs whose replies were lost.
    let keys = pool_keys(conn, &pool.name).await;
    let unknown =
        keys.checked_sub(found).unwrap_or_else(|| fail(format!("STATS counts {keys} keys, INFO found {found}")));
    if unknown < pool.unknown || unknown > pool.unknown + maybe.generated {
        fail(format!(
            "{unknown} keys of unknown id, expected {} to {} (GENs in flight: {} keys)",
            pool.unknown,
            pool.unknown + maybe.generated,
            maybe.generated
        ));
    }
    pool.unknown = unknown;
    pool.in_flight.clear();
    // Old deletions were checked on many restarts already; a long soak keeps the recent ones.
    let excess = pool.deleted.len().saturating_sub(5000);
    pool.deleted.drain(..excess);
    highest_token
}

/// The daemon's arguments for a run over `dir`.
fn daemon_args(dir: &Path) -> Vec<String> {
    [
        "--data-dir",
        dir.to_str().expect("a UTF-8 temp path"),
        "--fsync",
        "always",
        "--block-timeout",
        "10m",
        "--keepalive-timeout",
        "1h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn start_daemon(dir: &Path) -> Daemon {
    let args = daemon_args(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args).await
}

/// The names of the snapshots, logs and unfinished snapshots in `dir`.
fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the data directory")
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "LOCK")
        .collect();
    names.sort();
    names
}

/// Whether the files a kill left are those of a finished compaction (one log, and one snapshot of its
/// generation), rather than a snapshot being written, renamed, or the old files being removed.
fn compaction_finished(files: &[String]) -> bool {
    let logs = files.iter().filter(|name| name.starts_with("log-")).count();
    let snapshots = files.iter().filter(|name| name.starts_with("snapshot-")).count();
    logs == 1 && snapshots == 1 && newest_generation(files, "log-") == newest_generation(files, "snapshot-")
}

/// The highest generation among `files` named `<prefix><generation>`; 0 for none.
fn newest_generation(files: &[String], prefix: &str) -> u64 {
    files.iter().filter_map(|name| name.strip_prefix(prefix)?.parse::<u64>().ok()).max().unwrap_or(0)
}

/// A directory under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("keypool-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// After a restart: the fencing token of a new lease must be above every token handed out before the
/// kill that anyone saw (LEASE replies, and the tokens INFO shows of restored leases).
async fn check_fencing(conn: &mut Conn, fence_id: &mut Option<String>, max_token: &mut u64, cycle: usize, seed: u64) {
    conn.must_send(&format!("USE {FENCE_POOL}\r\n")).await;
    assert_eq!(conn.must_line().await, format!("USING {FENCE_POOL}"));
    if fence_id.is_none() {
        conn.must_send("GEN 1\r\n").await;
        let line = conn.must_line().await;
        *fence_id = Some(line.strip_prefix("KEY ").unwrap_or_else(|| panic!("GEN 1 answered {line:?}")).to_string());
        assert_eq!(conn.must_line().await, "END");
    }
    let id = fence_id.as_deref().expect("the fence key");
    conn.must_send("LEASE\r\n").await;
    let line = conn.must_line().await;
    let words: Vec<&str> = line.split(' ').collect();
    let ["LEASED", leased, token] = words[..] else {
        panic!("seed {seed}, after kill {cycle}: LEASE answered {line:?}")
    };
    assert_eq!(leased, id, "the fence pool holds one key");
    let token: u64 = token.parse().expect("a token");
    assert!(
        token > *max_token,
        "seed {seed}, after kill {cycle}: the first token after the restart, {token}, is not above {max_token}, handed out before"
    );
    *max_token = token;
    conn.must_send(&format!("REL {id} {token}\r\n")).await;
    assert_eq!(conn.must_line().await, "RELEASED");
    conn.must_send("USE default\r\n").await;
    assert_eq!(conn.must_line().await, "USING default");
}

/// How one cycle's kill is timed.
enum KillAt {
    /// This long after the clients start.
    After(Duration),
    /// During a COMPACT: one connection sends it after the first delay while the clients write, and the
    /// kill comes the second delay after the compaction has begun the next log.
    DuringCompaction(Duration, Duration),
}

/// One cycle: clients write, the daemon is killed. Returns the pools with what was in flight, whether a
/// COMPACT was acknowledged, and the highest token the clients were given.
async fn load_and_kill(
    daemon: &mut Daemon,
    dir: &Path,
    pools: Vec<PoolModel>,
    kill_at: KillAt,
    seed: u64,
    rng: &mut StdRng,
    tally: &mut Tally,
) -> (Vec<PoolModel>, bool, u64) {
    let addr = daemon.addr;
    let workers: Vec<_> = pools
        .into_iter()
        .map(|pool| {
            let worker_rng = StdRng::seed_from_u64(rng.random());
            tokio::spawn(drive(addr, pool, seed, worker_rng))
        })
        .collect();
    let (compact_sent, compact_sent_rx) = oneshot::channel();
    let compactor = match kill_at {
        KillAt::DuringCompaction(before, _) => Some(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await;
            tokio::time::sleep(before).await;
            let delivered = conn.send(b"COMPACT\r\n").await;
            let _ = compact_sent.send(());
            if !delivered {
                return false;
            }
            match conn.line().await {
                Some(line) if line == "OK" => true,
                Some(line) => panic!("seed {seed}: COMPACT answered {line:?}"),
                None => false,
            }
        })),
        KillAt::After(_) => {
            drop(compact_sent);
            None
        }
    };
    match kill_at {
        KillAt::After(delay) => tokio::time::sleep(delay).await,
        KillAt::DuringCompaction(_, after) => {
            let newest_log = newest_generation(&data_files(dir), "log-");
            tokio::time::timeout(IO_TIMEOUT, compact_sent_rx).await.expect("COMPACT sent").expect("COMPACT sent");
            // Aim at the snapshot being written: from the moment the next log appears (the rotation),
            // give or take a few milliseconds.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while newest_generation(&data_files(dir), "log-") == newest_log && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            tokio::time::sleep(after).await;
        }
    }
    daemon.kill9();
    let mut pools = Vec::new();
    let mut max_token = 0;
    for worker in workers {
        let (pool, token, acknowledged) =
            tokio::time::timeout(IO_TIMEOUT, worker).await.expect("a client noticed the kill").expect("a client");
        max_token = max_token.max(token);
        tally.acknowledged += acknowledged;
        pools.push(pool);
    }
    let compacted = match compactor {
        Some(task) => tokio::time::timeout(IO_TIMEOUT, task).await.expect("COMPACT ended").expect("the compactor"),
        None => false,
    };
    (pools, compacted, max_token)
}

/// Runs `cycles` kill/restart cycles over one directory; those at `compaction_cycles` kill during a
/// COMPACT. Stops starting cycles after `budget`, but always runs the first `minimum`.
async fn crash_cycles(label: &str, cycles: usize, compaction_cycles: &[usize], budget: Duration, minimum: usize) {
    let seed = std::env::var("KEYPOOL_CRASH_SEED")
        .ok()
        .map(|text| text.parse().expect("KEYPOOL_CRASH_SEED is a number"))
        .unwrap_or_else(rand::random);
    eprintln!("{label}: seed {seed} (replay with KEYPOOL_CRASH_SEED={seed}), {cycles} cycles");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new(label);
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let mut pools: Vec<PoolModel> =
        (0..WORKERS).map(|i| PoolModel { name: format!("w{i}"), ..PoolModel::default() }).collect();
    let mut max_token = 0;
    let mut fence_id = None;
    let mut daemon = start_daemon(&dir.0).await;
    let mut ran = 0;
    for cycle in 0..cycles {
        if cycle >= minimum && started.elapsed() > budget {
            eprintln!("{label}: stopping after {cycle} cycles, {:?} (the budget)", started.elapsed());
            break;
        }
        let kill_at = if compaction_cycles.contains(&cycle) {
            KillAt::DuringCompaction(
                Duration::from_millis(rng.random_range(20..150)),
                Duration::from_micros(rng.random_range(0..4000)),
            )
        } else {
            KillAt::After(Duration::from_millis(rng.random_range(30..400)))
        };
        let (after_kill, compacted, token) =
            load_and_kill(&mut daemon, &dir.0, pools, kill_at, seed, &mut rng, &mut tally).await;
        pools = after_kill;
        max_token = max_token.max(token);
        tally.compactions_acknowledged += u64::from(compacted);
        if compaction_cycles.contains(&cycle) {
            tally.killed_mid_compaction += u64::from(!compaction_finished(&data_files(&dir.0)));
        }

        daemon = start_daemon(&dir.0).await;
        let said = daemon.stderr();
        tally.torn_tails += u64::from(said.contains("torn last record"));
        let files = data_files(&dir.0);
        assert!(
            !files.iter().any(|name| name.ends_with(".tmp")),
            "an unfinished snapshot survived the restart: {files:?}"
        );
        if compacted {
            assert!(
                files.iter().any(|name| name.starts_with("snapshot-")),
                "seed {seed}, kill {cycle}: COMPACT was acknowledged, but the directory holds no snapshot: {files:?}"
            );
        }
        let mut checker = Conn::connect(daemon.addr).await;
        for pool in &mut pools {
            let token = check_pool(&mut checker, pool, cycle, seed, &mut tally).await;
            max_token = max_token.max(token);
        }
        check_fencing(&mut checker, &mut fence_id, &mut max_token, cycle, seed).await;
        ran += 1;
    }
    let keys: usize = pools.iter().map(|pool| pool.keys.len()).sum();
    daemon.stop();
    eprintln!(
        "{label}: {ran} kills in {:?}; {} replies acknowledged, {} requests in flight at the kills, {} torn tails cut, \
         {} compactions acknowledged before a kill, {} kills left a compaction unfinished; {keys} keys at the end",
        started.elapsed(),
        tally.acknowledged,
        tally.in_flight_at_kill,
        tally.torn_tails,
        tally.compactions_acknowledged,
        tally.killed_mid_compaction
    );
    assert!(tally.acknowledged > 0, "the clients were never answered");
}

fn cycles_from_env(default: usize) -> usize {
    std::env::var("KEYPOOL_CRASH_CYCLES")
        .ok()
        .map_or(default, |text| text.parse().expect("KEYPOOL_CRASH_CYCLES is a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9_under_load() {
    let cycles = cycles_from_env(DEFAULT_CYCLES);
    // A soak gets as long as it needs: about two seconds a cycle at worst.
    let budget = if cycles > DEFAULT_CYCLES { Duration::from_secs(2 * cycles as u64) } else { DEFAULT_BUDGET };
    // Some cycles of the soak kill during a COMPACT too.
    let compactions: Vec<usize> = (0..cycles).filter(|cycle| cycle % 7 == 3).collect();
    crash_cycles("crash", cycles, &compactions, budget, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9_during_compaction() {
    // Three kills during a COMPACT over one directory: the first leaves only logs to compact, the later
    // ones snapshots and logs of several generations.
    crash_cycles("crash-compact", 3, &[0, 1, 2], DEFAULT_BUDGET, 3).await;
}
