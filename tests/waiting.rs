//! Waiting for a key over the wire (issue 7): `GET <wait>` and `LEASE <wait>` are answered when a key
//! comes free, oldest waiter first, each key to one waiter only; a waiter that hangs up consumes nothing
//! and leaves the queue; a wait that runs out answers `NOT_FOUND` and is counted; a waiting request holds
//! back the replies to the requests pipelined behind it (and those requests themselves), while other
//! connections are served as usual.
//!
//! Waiters are queued in a known order by sending one request at a time and polling STATS `waiters` on
//! another connection until it counts that one, so no test depends on how fast the server reads.

mod common;

use std::time::{Duration, Instant};

use common::{close_and_stop, config, key_of, leased_of, num, start, Client};

/// How late a timed event may be observed, past its deadline.
const SLACK: Duration = Duration::from_millis(200);

/// How much earlier than its deadline an event may be observed: engine time is whole milliseconds.
const ROUNDING: Duration = Duration::from_millis(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Connects a new client, sends `request` (which must wait), and returns it once `observer` sees the
/// server count `queued` waiters.
async fn queue(observer: &mut Client, request: &str, queued: u64) -> Client {
    let addr = observer.writer.peer_addr().expect("the observer is connected");
    let mut waiter = Client::connect(addr).await;
    waiter.send_line(request).await;
    observer.wait_for_stat("waiters", queued).await;
    waiter
}

#[tokio::test]
async fn three_waiters_are_served_first_come_first_served() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiters = Vec::new();
    for n in 1..=3 {
        waiters.push(queue(&mut c, "LEASE 5s", n).await);
    }

    // New keys come free in the order GEN lists them, so the oldest waiter gets the first.
    let ids = c.gen(3).await;
    let mut first_round = Vec::new();
    for (n, waiter) in waiters.iter_mut().enumerate() {
        let lease = leased_of(&waiter.line().await);
        assert_eq!(lease.id, ids[n], "waiter {n} got the wrong key (GEN made {ids:?})");
        first_round.push(lease);
    }
    let tokens: Vec<u64> = first_round.iter().map(|lease| lease.token).collect();
    assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "served out of order: {tokens:?}");

    // Again with releases, one at a time, in an order unlike the queue's.
    let mut later = Vec::new();
    for n in 1..=3 {
        later.push(queue(&mut c, "GET 5s", n).await);
    }
    for (releaser, served) in [(2, 0), (0, 1), (1, 2)] {
        let lease = &first_round[releaser];
        let rel = format!("REL {} {}", lease.id, lease.token);
        assert_eq!(waiters[releaser].cmd(&rel).await, "RELEASED");
        assert_eq!(key_of(&later[served].line().await), lease.id, "waiter {served} of the second round");
    }

    let stats = c.stats().await;
    assert_eq!((num(&stats, "waiters"), num(&stats, "waits_served")), (0, 6));
    assert_eq!((num(&stats, "keys_free"), num(&stats, "keys_blocked")), (0, 3));
    close_and_stop(server, waiters.into_iter().chain(later).chain([c])).await;
}

#[tokio::test]
async fn a_freed_key_goes_to_one_waiter_only() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiters = Vec::new();
    for n in 1..=3 {
        waiters.push(queue(&mut c, "LEASE 400ms", n).await);
    }
    let id = c.gen(1).await.remove(0);

    let mut winners = 0;
    for waiter in &mut waiters {
        let reply = waiter.line().await;
        if reply == "NOT_FOUND" {
            continue;
        }
        assert_eq!(leased_of(&reply).id, id);
        winners += 1;
    }
    assert_eq!(winners, 1, "one key, one waiter served");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "waits_served"), num(&stats, "waits_timed_out")), (1, 2));
    close_and_stop(server, waiters.into_iter().chain([c])).await;
}

#[tokio::test]
async fn a_waiter_that_hangs_up_is_dropped_and_consumes_nothing() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let held = c.lease("").await.expect("the only key");

    let first = queue(&mut c, "LEASE 5s", 1).await;
    let mut second = queue(&mut c, "LEASE 5s", 2).await;
    drop(first);
    c.wait_for_stat("waiters", 1).await;
    assert_eq!(c.cmd(&format!("REL {id} {}", held.token)).await, "RELEASED");
    let lease = leased_of(&second.line().await);
    assert_eq!(lease.id, id, "the key skips the waiter that left and goes to the next");

    // The only waiter leaves: a key freed afterwards stays free.
    let third = queue(&mut c, "GET 5s", 1).await;
    drop(third);
    c.wait_for_stat("waiters", 0).await;
    assert_eq!(second.cmd(&format!("REL {id} {}", lease.token)).await, "RELEASED");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "free");
    assert_eq!(num(&info, "leases"), 2, "only the holder and the second waiter leased it");

    let stats = c.stats().await;
    assert_eq!((num(&stats, "waits_served"), num(&stats, "waits_timed_out")), (1, 0));
    assert_eq!(num(&stats, "keys_free"), 1);
    close_and_stop(server, [c, second]).await;
}

#[tokio::test]
async fn requests_pipelined_behind_a_wait_die_with_a_waiter_that_hangs_up() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = Client::connect(server.addr()).await;
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
    let mut c = Client::connect(server.addr()).await;
    for (request, wait) in [("LEASE 150ms", ms(150)), ("GET 100ms", ms(100)), ("LEASE 120ms 5s", ms(120))] {
        let since = Instant::now();
        assert_eq!(c.cmd(request).await, "NOT_FOUND", "{request}");
        let elapsed = since.elapsed();
        assert!(elapsed + ROUNDING >= wait, "{request} answered after {elapsed:?}, before its wait ran out");
        assert!(elapsed <= wait + SLACK, "{request} answered after {elapsed:?}, long after its wait ran out");
    }
    // A zero wait is no wait: answered at once, and not a wait that ran out.
    for request in ["LEASE 0ms", "GET 0s", "LEASE 0ms 5s"] {
        let since = Instant::now();
        assert_eq!(c.cmd(request).await, "NOT_FOUND", "{request}");
        assert!(since.elapsed() < ms(100), "{request} waited {:?}", since.elapsed());
    }
    let stats = c.stats().await;
    assert_eq!((num(&stats, "waits_timed_out"), num(&stats, "waits_served")), (3, 0));
    assert_eq!(num(&stats, "get_misses"), 6);
    assert_eq!(num(&stats, "waiters"), 0);

    // A wait that ran out claims nothing that comes free later.
    let id = c.gen(1).await.remove(0);
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_short_wait_behind_a_long_one_still_runs_out_on_time() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut long = queue(&mut c, "LEASE 3s", 1).await;

    let mut short = Client::connect(server.addr()).await;
    let since = Instant::now();
    assert_eq!(short.cmd("LEASE 100ms").await, "NOT_FOUND");
    let elapsed = since.elapsed();
    assert!(elapsed + ROUNDING >= ms(100) && elapsed <= ms(100) + SLACK, "answered after {elapsed:?}");

    assert_eq!(c.stat("waiters").await, 1, "the long wait is still queued");
    let id = c.gen(1).await.remove(0);
    assert_eq!(leased_of(&long.line().await).id, id);
    close_and_stop(server, [c, long, short]).await;
}

#[tokio::test]
async fn a_waiting_request_holds_back_the_replies_behind_it_in_order() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = Client::connect(server.addr()).await;

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
    let mut c = Client::connect(server.addr()).await;
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
    let mut c = Client::connect(server.addr()).await;
    let held = c.gen(1).await.remove(0);
    assert_eq!(c.get().await.as_deref(), Some(held.as_str()));
    let mut waiter = queue(&mut c, "LEASE 3s", 1).await;

    let mut other = Client::connect(server.addr()).await;
    let since = Instant::now();
    let mut pipeline = String::new();
    for _ in 0..100 {
        pipeline.push_str("PING\r\n");
    }
    other.send(&pipeline).await;
    for _ in 0..100 {
        assert_eq!(other.line().await, "PONG");
    }
    assert_eq!(other.cmd("GET").await, "NOT_FOUND");
    assert_eq!(other.state(&held).await.as_deref(), Some("blocked"));
    let ids = other.gen(2).await; // these go to the waiter (one) and the free list (the other)
    let elapsed = since.elapsed();
    assert!(elapsed < ms(1_000), "another connection took {elapsed:?} while one waited");

    let lease = leased_of(&waiter.line().await);
    assert_eq!(lease.id, ids[0]);
    assert_eq!(other.state(&ids[1]).await.as_deref(), Some("free"));
    close_and_stop(server, [c, waiter, other]).await;
}

#[tokio::test]
async fn get_with_a_wait_answers_as_v1_get_does() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = queue(&mut c, "GET 2s 5s", 1).await;
    let id = c.gen(1).await.remove(0);
    let reply = waiter.line().await;
    assert_eq!(reply, format!("KEY {id}"), "a served GET answers `KEY <id>`, no token");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "blocked");
    let blocked_for = num(&info, "blocked_until_ms").saturating_sub(common::unix_ms());
    assert!((4_000..=5_000).contains(&blocked_for), "the waiter's own 5s block applies: {info:?}");
    assert_eq!(c.stat("cmd_get").await, 1);
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn a_waiter_gets_a_delayed_key_when_its_delay_ends() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let held = c.lease("").await.expect("the only key");
    let delay = ms(250);
    let since = Instant::now();
    assert_eq!(c.cmd(&format!("REL {id} {} 250ms", held.token)).await, "RELEASED");
    let mut waiter = queue(&mut c, "LEASE 2s", 1).await;
    assert_eq!(c.state(&id).await.as_deref(), Some("delayed"), "queued while the key is delayed");

    let lease = leased_of(&waiter.line().await);
    let elapsed = since.elapsed();
    assert_eq!(lease.id, id);
    assert!(lease.token > held.token);
    assert!(elapsed + ROUNDING >= delay, "served {elapsed:?} after the REL, before its {delay:?} delay");
    assert!(elapsed <= delay + SLACK, "served {elapsed:?} after the REL, long after its delay");
    assert_eq!(c.stat("waits_served").await, 1);
    close_and_stop(server, [c, waiter]).await;
}
