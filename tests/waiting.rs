//! Waiting for a key over the wire (issue 7): `GET <wait>` and `LEASE <wait>` are answered when a key
//! comes free, oldest waiter first, each key to one waiter only; a waiter that hangs up consumes nothing
//! and leaves the queue; a wait that runs out answers `NOT_FOUND` and is counted; a waiting request holds
//! back the replies to the requests pipelined behind it (and those requests themselves), while other
//! connections are served as usual.
//!
//! Waiters are queued in a known order by making one request at a time and polling STATS `waiters` on
//! another connection until it counts that one, so no test depends on how fast the server reads.
//!
//! The tests of behaviour drive the daemon through the typed client, `keypool::client::Client`, each
//! waiter with a client of its own whose waiting request runs in a task. Three tests keep the raw line
//! client because their subject is one connection's stream: requests pipelined behind a wait (held
//! back, or dropped with a waiter that hangs up), and the exact `KEY <id>` line a served `GET` answers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::typed::{self, stat, state, wait_for_stat};
use common::{close_and_stop, config, leased_of, start, within, Client as RawClient};
use keypool::client::{Client, KeyId, KeyState, Lease, Released, Reply};
use tokio::task::JoinHandle;

/// How late a timed event may be observed, past its deadline.
const SLACK: Duration = Duration::from_millis(200);

/// How much earlier than its deadline an event may be observed: engine time is whole milliseconds.
const ROUNDING: Duration = Duration::from_millis(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Which waiting request a [`Waiter`] makes.
#[derive(Clone, Copy)]
enum Wait {
    /// `LEASE <wait> [<block>]`: answered with a token.
    Lease(Duration, Option<Duration>),
    /// `GET <wait>`: answered without one.
    Get(Duration),
}

/// A client of its own whose waiting request runs in a task, so that the test can free a key meanwhile.
struct Waiter {
    client: Client,
    reply: JoinHandle<keypool::client::Result<Option<Lease>>>,
}

impl Waiter {
    /// The waiting request's answer: the lease, or `None` when its wait ran out.
    async fn answer(&mut self) -> Option<Lease> {
        let joined = within("the waiter's answer", &mut self.reply).await;
        joined.expect("the waiter's task").expect("the waiting request")
    }

    /// Hangs up while the request waits: the task is cancelled, which drops (closes) the connection it
    /// waits on, as a worker that gives up does. The client has no other connection open.
    async fn hang_up(self) {
        self.reply.abort();
        assert!(within("the cancelled task", self.reply).await.is_err_and(|error| error.is_cancelled()));
        drop(self.client);
    }
}

/// Connects a new typed client to `addr`, has it make `wait` in a task, and returns it once `observer`
/// sees the server count `queued` waiters.
async fn queue(observer: &Client, addr: SocketAddr, wait: Wait, queued: u64) -> Waiter {
    let client = typed::connect(addr).await;
    let waiting = client.clone();
    let reply = tokio::spawn(async move {
        match wait {
            Wait::Lease(wait, block) => waiting.lease(Some(wait), block).await,
            Wait::Get(wait) => waiting.get(Some(wait), None).await,
        }
    });
    wait_for_stat(observer, "waiters", queued).await;
    Waiter { client, reply }
}

/// [`queue`] for the raw tests: connects a new raw client, sends `request` (which must wait), and
/// returns it once `observer` sees the server count `queued` waiters.
async fn raw_queue(observer: &mut RawClient, request: &str, queued: u64) -> RawClient {
    let addr = observer.writer.peer_addr().expect("the observer is connected");
    let mut waiter = RawClient::connect(addr).await;
    waiter.send_line(request).await;
    observer.wait_for_stat("waiters", queued).await;
    waiter
}

/// `GEN count` on `c`: the new ids, as many as asked for.
async fn gen(c: &Client, count: u32) -> Vec<KeyId> {
    let ids = c.gen(count).await.expect("GEN");
    assert_eq!(ids.len(), count as usize, "GEN {count} returned {} keys", ids.len());
    ids
}

/// A figure of a `STATS` reply that must be there.
fn figure(stats: &keypool::client::Stats, name: &str) -> u64 {
    stats.number(name).unwrap_or_else(|| panic!("STATS has no numeric {name}: {stats:?}"))
}

/// Asserts that `lease` is a plain GET's (`KEY <id>`: no token, and no secret for a generated key).
fn assert_plain_get(lease: &Lease) {
    assert_eq!((lease.token, &lease.secret), (None, &None), "a served GET answers `KEY <id>`: {lease:?}");
}

/// Asserts that `lease` is a LEASE's (`LEASED <id> <token>`, no secret for a generated key); its token.
fn token(lease: &Lease) -> u64 {
    assert_eq!(lease.secret, None, "a generated key has no secret: {lease:?}");
    lease.token.unwrap_or_else(|| panic!("a served LEASE answers with a token: {lease:?}"))
}

#[tokio::test]
async fn three_waiters_are_served_first_come_first_served() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let mut waiters = Vec::new();
    for n in 1..=3 {
        waiters.push(queue(&c, server.addr(), Wait::Lease(ms(5_000), None), n).await);
    }

    // New keys come free in the order GEN lists them, so the oldest waiter gets the first.
    let ids = gen(&c, 3).await;
    let mut first_round = Vec::new();
    for (n, waiter) in waiters.iter_mut().enumerate() {
        let lease = waiter.answer().await.expect("a key");
        assert_eq!(lease.id, ids[n], "waiter {n} got the wrong key (GEN made {ids:?})");
        first_round.push(lease);
    }
    let tokens: Vec<u64> = first_round.iter().map(token).collect();
    assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "served out of order: {tokens:?}");

    // Again with releases, one at a time, in an order unlike the queue's.
    let mut later = Vec::new();
    for n in 1..=3 {
        later.push(queue(&c, server.addr(), Wait::Get(ms(5_000)), n).await);
    }
    for (releaser, served) in [(2, 0), (0, 1), (1, 2)] {
        let lease = &first_round[releaser];
        assert_eq!(waiters[releaser].client.release(lease, None).await.expect("REL"), Released::Yes);
        let got = later[served].answer().await.expect("a key");
        assert_plain_get(&got);
        assert_eq!(got.id, lease.id, "waiter {served} of the second round");
    }

    let stats = c.stats().await.expect("STATS");
    assert_eq!((figure(&stats, "waiters"), figure(&stats, "waits_served")), (0, 6));
    assert_eq!((figure(&stats, "keys_free"), figure(&stats, "keys_blocked")), (0, 3));
    let clients = waiters.into_iter().chain(later).map(|waiter| waiter.client);
    typed::close_and_stop(server, clients.chain([c])).await;
}

#[tokio::test]
async fn a_freed_key_goes_to_one_waiter_only() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let mut waiters = Vec::new();
    for n in 1..=3 {
        waiters.push(queue(&c, server.addr(), Wait::Lease(ms(400), None), n).await);
    }
    let id = gen(&c, 1).await.remove(0);

    let mut winners = 0;
    for waiter in &mut waiters {
        let Some(lease) = waiter.answer().await else {
            continue;
        };
        token(&lease);
        assert_eq!(lease.id, id);
        winners += 1;
    }
    assert_eq!(winners, 1, "one key, one waiter served");
    let stats = c.stats().await.expect("STATS");
    assert_eq!((figure(&stats, "waits_served"), figure(&stats, "waits_timed_out")), (1, 2));
    typed::close_and_stop(server, waiters.into_iter().map(|waiter| waiter.client).chain([c])).await;
}

#[tokio::test]
async fn a_waiter_that_hangs_up_is_dropped_and_consumes_nothing() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let held = c.lease(None, None).await.expect("LEASE").expect("the only key");

    let first = queue(&c, server.addr(), Wait::Lease(ms(5_000), None), 1).await;
    let mut second = queue(&c, server.addr(), Wait::Lease(ms(5_000), None), 2).await;
    first.hang_up().await;
    wait_for_stat(&c, "waiters", 1).await;
    assert_eq!(c.release(&held, None).await.expect("REL"), Released::Yes);
    let lease = second.answer().await.expect("a key");
    token(&lease);
    assert_eq!(lease.id, id, "the key skips the waiter that left and goes to the next");

    // The only waiter leaves: a key freed afterwards stays free.
    let third = queue(&c, server.addr(), Wait::Get(ms(5_000)), 1).await;
    third.hang_up().await;
    wait_for_stat(&c, "waiters", 0).await;
    assert_eq!(second.client.release(&lease, None).await.expect("REL"), Released::Yes);
    let info = c.info(&id).await.expect("INFO").expect("the key exists");
    assert_eq!(info.state, KeyState::Free);
    assert_eq!(info.leases, 2, "only the holder and the second waiter leased it");

    let stats = c.stats().await.expect("STATS");
    assert_eq!((figure(&stats, "waits_served"), figure(&stats, "waits_timed_out")), (1, 0));
    assert_eq!(figure(&stats, "keys_free"), 1);
    typed::close_and_stop(server, [c, second.client]).await;
}

#[tokio::test]
async fn requests_pipelined_behind_a_wait_die_with_a_waiter_that_hangs_up() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let mut waiter = RawClient::connect(server.addr()).await;
    waiter.send("LEASE 5s\r\nGEN 5\r\n").await;
    c.wait_for_stat("waiters", 1).await;
    drop(waiter);
    c.wait_for_stat("waiters", 0).await;
    c.wait_for_stat("curr_connections", 1).await;
    assert_eq!(c.stat("keys").await, 0, "the GEN behind the wait was never served");
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn waits_that_run_out_answer_not_found_and_are_counted() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let waits = [
        ("LEASE 150ms", Wait::Lease(ms(150), None)),
        ("GET 100ms", Wait::Get(ms(100))),
        ("LEASE 120ms 5s", Wait::Lease(ms(120), Some(ms(5_000)))),
    ];
    for (request, wait) in waits {
        let since = Instant::now();
        let (answer, wait) = match wait {
            Wait::Lease(wait, block) => (c.lease(Some(wait), block).await, wait),
            Wait::Get(wait) => (c.get(Some(wait), None).await, wait),
        };
        assert_eq!(answer.expect(request), None, "{request}: NOT_FOUND");
        let elapsed = since.elapsed();
        assert!(elapsed + ROUNDING >= wait, "{request} answered after {elapsed:?}, before its wait ran out");
        assert!(elapsed <= wait + SLACK, "{request} answered after {elapsed:?}, long after its wait ran out");
    }
    // A zero wait is no wait: answered at once, and not a wait that ran out.
    let zero = [
        ("LEASE 0ms", Wait::Lease(Duration::ZERO, None)),
        ("GET 0ms", Wait::Get(Duration::ZERO)),
        ("LEASE 0ms 5s", Wait::Lease(Duration::ZERO, Some(ms(5_000)))),
    ];
    for (request, wait) in zero {
        let since = Instant::now();
        let answer = match wait {
            Wait::Lease(wait, block) => c.lease(Some(wait), block).await,
            Wait::Get(wait) => c.get(Some(wait), None).await,
        };
        assert_eq!(answer.expect(request), None, "{request}: NOT_FOUND");
        assert!(since.elapsed() < ms(100), "{request} waited {:?}", since.elapsed());
    }
    let stats = c.stats().await.expect("STATS");
    assert_eq!((figure(&stats, "waits_timed_out"), figure(&stats, "waits_served")), (3, 0));
    assert_eq!(figure(&stats, "get_misses"), 6);
    assert_eq!(figure(&stats, "waiters"), 0);

    // A wait that ran out claims nothing that comes free later.
    let id = gen(&c, 1).await.remove(0);
    assert_eq!(state(&c, &id).await, Some(KeyState::Free));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_short_wait_behind_a_long_one_still_runs_out_on_time() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let mut long = queue(&c, server.addr(), Wait::Lease(ms(3_000), None), 1).await;

    let short = typed::connect(server.addr()).await;
    let since = Instant::now();
    assert_eq!(short.lease(Some(ms(100)), None).await.expect("LEASE 100ms"), None, "NOT_FOUND");
    let elapsed = since.elapsed();
    assert!(elapsed + ROUNDING >= ms(100) && elapsed <= ms(100) + SLACK, "answered after {elapsed:?}");

    assert_eq!(stat(&c, "waiters").await, 1, "the long wait is still queued");
    let id = gen(&c, 1).await.remove(0);
    let lease = long.answer().await.expect("the new key");
    token(&lease);
    assert_eq!(lease.id, id);
    typed::close_and_stop(server, [c, long.client, short]).await;
}

#[tokio::test]
async fn a_waiting_request_holds_back_the_replies_behind_it_in_order() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let mut waiter = RawClient::connect(server.addr()).await;

    waiter.send("PING\r\nLEASE 2s\r\nPING\r\nVERSION\r\n").await;
    assert_eq!(waiter.line().await, "PONG", "the reply before the wait is not held back");
    c.wait_for_stat("waiters", 1).await;
    waiter.expect_silence(ms(50)).await;
    let id = c.gen(1).await.remove(0);
    assert_eq!(leased_of(&waiter.line().await).id, id);
    assert_eq!(waiter.line().await, "PONG", "the PONG comes after the LEASED");
    assert!(waiter.line().await.starts_with("VERSION "));

    // Behind a wait that runs out, the same.
    waiter.send("LEASE 100ms\r\nPING\r\n").await;
    assert_eq!(waiter.line().await, "NOT_FOUND");
    assert_eq!(waiter.line().await, "PONG");
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn a_request_behind_a_wait_is_not_served_before_the_wait_ends() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    // Were the GEN served early, its key would go to the LEASE in front of it.
    let since = Instant::now();
    c.send("LEASE 200ms\r\nGEN 1\r\n").await;
    assert_eq!(c.line().await, "NOT_FOUND");
    assert!(since.elapsed() + ROUNDING >= ms(200), "the wait ended after {:?}", since.elapsed());
    let id = c.lines.key_block().await.remove(0);
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn other_connections_are_served_while_one_waits() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let held = gen(&c, 1).await.remove(0);
    let got = c.get(None, None).await.expect("GET").expect("the only key");
    assert_eq!(got.id, held);
    let mut waiter = queue(&c, server.addr(), Wait::Lease(ms(3_000), None), 1).await;

    let other = typed::connect(server.addr()).await;
    let since = Instant::now();
    // A hundred PINGs in one write, answered while the other connection waits.
    let mut pipeline = other.pipeline();
    for _ in 0..100 {
        pipeline.health();
    }
    let replies = pipeline.run().await.expect("the PINGs");
    assert_eq!(replies.len(), 100);
    for reply in replies {
        assert_eq!(reply.expect("PING"), Reply::Pong);
    }
    assert_eq!(other.get(None, None).await.expect("GET"), None, "NOT_FOUND");
    assert!(matches!(state(&other, &held).await, Some(KeyState::Blocked { .. })));
    let ids = gen(&other, 2).await; // these go to the waiter (one) and the free list (the other)
    let elapsed = since.elapsed();
    assert!(elapsed < ms(1_000), "another connection took {elapsed:?} while one waited");

    let lease = waiter.answer().await.expect("a new key");
    token(&lease);
    assert_eq!(lease.id, ids[0]);
    assert_eq!(state(&other, &ids[1]).await, Some(KeyState::Free));
    typed::close_and_stop(server, [c, waiter.client, other]).await;
}

#[tokio::test]
async fn get_with_a_wait_answers_as_v1_get_does() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let mut waiter = raw_queue(&mut c, "GET 2s 5s", 1).await;
    let id = c.gen(1).await.remove(0);
    let reply = waiter.line().await;
    assert_eq!(reply, format!("KEY {id}"), "a served GET answers `KEY <id>`, no token");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "blocked");
    let blocked_for = common::num(&info, "blocked_until_ms").saturating_sub(common::unix_ms());
    assert!((4_000..=5_000).contains(&blocked_for), "the waiter's own 5s block applies: {info:?}");
    assert_eq!(c.stat("cmd_get").await, 1);
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn a_waiter_gets_a_delayed_key_when_its_delay_ends() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let held = c.lease(None, None).await.expect("LEASE").expect("the only key");
    let delay = ms(250);
    let since = Instant::now();
    assert_eq!(c.release(&held, Some(delay)).await.expect("REL"), Released::Yes);
    let mut waiter = queue(&c, server.addr(), Wait::Lease(ms(2_000), None), 1).await;
    assert!(matches!(state(&c, &id).await, Some(KeyState::Delayed { .. })), "queued while the key is delayed");

    let lease = waiter.answer().await.expect("the key, once its delay ended");
    let elapsed = since.elapsed();
    assert_eq!(lease.id, id);
    assert!(token(&lease) > token(&held));
    assert!(elapsed + ROUNDING >= delay, "served {elapsed:?} after the REL, before its {delay:?} delay");
    assert!(elapsed <= delay + SLACK, "served {elapsed:?} after the REL, long after its delay");
    assert_eq!(stat(&c, "waits_served").await, 1);
    typed::close_and_stop(server, [c, waiter.client]).await;
}
