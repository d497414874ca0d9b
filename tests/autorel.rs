//! Release on close over the wire (issue 7): after `AUTOREL`, the keys a connection leased and still
//! holds when it closes (a hang-up, QUIT, a protocol error) are released at once, as if by REL, and go to
//! waiters like any freed key; keys it released, that timed out, that another connection leased since,
//! or that it leased before AUTOREL are left alone; `released_by_close` counts the releases. A
//! connection without AUTOREL keeps v1's behaviour: its keys stay blocked until their window ends.
//!
//! The tests of behaviour drive the daemon through the typed client, `keypool::client::Client` (built
//! with `autorel(true)`, or told `autorel()`), and hang up by dropping it, as a worker that exits does.
//! A typed client whose requests are made one at a time holds a single connection, so "the client" and
//! "the connection" are the same thing there; tests that rely on it check `curr_connections`. Four tests
//! keep the raw line client because their subject is one connection's stream, which the typed client
//! does not expose: `AUTOREL`'s exact `OK` and its case-insensitive spelling, `QUIT` (alone, pipelined
//! after leases, and with the socket held open after it) and a close for a line too long.

mod common;

use std::time::{Duration, Instant};

use common::typed::{self, stat, state, token_of, wait_for_stat};
use common::{close_and_stop, config, leased_of, start, within, Client as RawClient};
use keypool::client::{Client, KeyId, KeyState, Lease, Released, Stats};

/// How long after a close its releases may be observed. A release on close is done under the lock the
/// moment the server notices the close, so this is generous; it rules out "at the next timer tick" or
/// "after a grace period".
const SLACK: Duration = Duration::from_millis(200);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls STATS until `released_by_close` is `want`; fails the test if that takes longer than `limit`
/// from `since`.
async fn wait_for_released_by_close(c: &Client, want: u64, since: Instant, limit: Duration) {
    loop {
        let got = stat(c, "released_by_close").await;
        if got == want {
            return;
        }
        let elapsed = since.elapsed();
        assert!(elapsed <= limit, "released_by_close is {got}, not {want}, {elapsed:?} after the close");
        tokio::time::sleep(ms(2)).await;
    }
}

/// [`wait_for_released_by_close`] for the raw tests.
async fn raw_wait_for_released_by_close(c: &mut RawClient, want: u64, since: Instant, limit: Duration) {
    loop {
        let got = c.stat("released_by_close").await;
        if got == want {
            return;
        }
        let elapsed = since.elapsed();
        assert!(elapsed <= limit, "released_by_close is {got}, not {want}, {elapsed:?} after the close");
        tokio::time::sleep(ms(2)).await;
    }
}

/// `GEN count` on `c`: the new ids, as many as asked for.
async fn gen(c: &Client, count: u32) -> Vec<KeyId> {
    let ids = c.gen(count).await.expect("GEN");
    assert_eq!(ids.len(), count as usize, "GEN {count} returned {} keys", ids.len());
    ids
}

/// `LEASE [wait [block]]` on `c`, which must find a key: the lease, with its token.
async fn lease(c: &Client, wait: Option<Duration>, block: Option<Duration>) -> Lease {
    let lease = c.lease(wait, block).await.expect("LEASE").expect("a free key");
    assert!(lease.token.is_some(), "LEASE answers with a token: {lease:?}");
    lease
}

/// Has `c` make `LEASE 5s` in a task of its own (on its only connection), and returns once `observer`
/// sees the server count it as waiting.
async fn queue(observer: &Client, c: &Client) -> tokio::task::JoinHandle<keypool::client::Result<Option<Lease>>> {
    let waiting = c.clone();
    let reply = tokio::spawn(async move { waiting.lease(Some(ms(5_000)), None).await });
    wait_for_stat(observer, "waiters", 1).await;
    reply
}

/// A figure of a `STATS` reply that must be there.
fn figure(stats: &Stats, name: &str) -> u64 {
    stats.number(name).unwrap_or_else(|| panic!("STATS has no numeric {name}: {stats:?}"))
}

#[tokio::test]
async fn autorel_answers_ok_and_can_be_repeated() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    assert_eq!(c.cmd("AUTOREL").await, "OK");
    assert_eq!(c.cmd("autorel").await, "OK", "idempotent, and case-insensitive as every command");
    let id = c.gen(1).await.remove(0);
    c.lease("").await.expect("a free key");
    drop(c);

    let mut other = RawClient::connect(server.addr()).await;
    raw_wait_for_released_by_close(&mut other, 1, Instant::now(), common::IO_TIMEOUT).await;
    assert_eq!(other.state(&id).await.as_deref(), Some("free"));
    assert_eq!(other.stat("cmd_autorel").await, 2);
    close_and_stop(server, [other]).await;
}

#[tokio::test]
async fn a_connection_that_hangs_up_releases_what_it_holds_to_the_next_waiter() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let ids = gen(&c, 3).await;
    let holder = typed::connect_autorel(server.addr()).await;
    let leased = lease(&holder, None, None).await;
    // A v1 GET's lease is released on close too.
    let got = holder.get(None, None).await.expect("GET").expect("a free key");
    lease(&holder, Some(Duration::ZERO), Some(ms(30_000))).await;

    let waiter = typed::connect(server.addr()).await;
    let waiting = queue(&c, &waiter).await;
    // The observer, the holder and the waiter: the holder hangs up its only connection.
    assert_eq!(stat(&c, "curr_connections").await, 3);
    let since = Instant::now();
    drop(holder);
    let served = within("the waiter to be served", waiting).await.expect("the waiting task").expect("LEASE 5s");
    let elapsed = since.elapsed();
    let lease = served.expect("a released key");
    assert!(ids.contains(&lease.id));
    assert!(elapsed <= SLACK, "the waiter got a released key {elapsed:?} after the hang-up");

    wait_for_released_by_close(&c, 3, since, SLACK).await;
    let stats = c.stats().await.expect("STATS");
    assert_eq!((figure(&stats, "keys_free"), figure(&stats, "keys_blocked")), (2, 1), "the waiter holds one");
    assert!(ids.contains(&leased.id) && ids.contains(&got.id));
    for id in &ids {
        if *id == lease.id {
            assert_eq!(Some(token_of(&c, id).await), lease.token, "{id} is the waiter's");
        } else {
            assert_eq!(state(&c, id).await, Some(KeyState::Free), "{id} was released");
        }
    }
    typed::close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn without_autorel_a_closed_connection_keeps_its_keys_blocked() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let holder = typed::connect(server.addr()).await;
    lease(&holder, None, None).await;
    drop(holder);
    wait_for_stat(&c, "curr_connections", 1).await;
    let blocked = matches!(state(&c, &id).await, Some(KeyState::Blocked { .. }));
    assert!(blocked, "v1: a lease outlives its connection");
    assert_eq!(stat(&c, "released_by_close").await, 0);
    typed::close_and_stop(server, [c]).await;
}

/// The keys of a QUIT are released as the server ends the connection, not when the client gets round to
/// closing its end.
#[tokio::test]
async fn quit_releases_at_once_even_while_the_client_keeps_its_socket_open() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let mut holder = RawClient::connect(server.addr()).await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    holder.lease("").await.expect("a free key");
    let mut waiter = RawClient::connect(server.addr()).await;
    waiter.send_line("LEASE 5s").await;
    c.wait_for_stat("waiters", 1).await;

    let since = Instant::now();
    holder.send_line("QUIT").await;
    holder.expect_closed().await;
    let reply = waiter.line().await;
    let elapsed = since.elapsed();
    assert_eq!(leased_of(&reply).id, id);
    assert!(elapsed <= SLACK, "the waiter got the key {elapsed:?} after QUIT");
    assert_eq!(c.stat("released_by_close").await, 1);
    drop(holder);
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn quit_releases_what_the_connection_holds() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let ids = c.gen(2).await;
    let mut holder = RawClient::connect(server.addr()).await;
    holder.send("AUTOREL\r\nLEASE\r\nGET\r\nQUIT\r\n").await;
    assert_eq!(holder.line().await, "OK");
    leased_of(&holder.line().await);
    assert!(holder.line().await.starts_with("KEY "));
    holder.expect_closed().await;
    let since = Instant::now();
    drop(holder);

    raw_wait_for_released_by_close(&mut c, 2, since, SLACK).await;
    for id in &ids {
        assert_eq!(c.state(id).await.as_deref(), Some("free"), "{id}");
    }
    assert_eq!(c.stat("cmd_quit").await, 1);
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_connection_closed_for_a_protocol_error_releases_what_it_holds() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let mut holder = RawClient::connect(server.addr()).await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    holder.lease("").await.expect("a free key");
    holder.send(vec![b'x'; 5_000]).await;
    assert_eq!(holder.line().await, "CLIENT_ERROR line too long");
    holder.expect_closed().await;
    let since = Instant::now();
    drop(holder);

    raw_wait_for_released_by_close(&mut c, 1, since, SLACK).await;
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn keys_released_timed_out_leased_again_or_held_before_autorel_are_left_alone() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let a = typed::connect(server.addr()).await;
    let b = typed::connect(server.addr()).await;

    // Leased before AUTOREL: not on the list. (A makes one request at a time, so its one connection
    // leases this key and then sends AUTOREL; `curr_connections` below checks there is no other.)
    let before = gen(&c, 1).await.remove(0);
    let lease_before = lease(&a, None, None).await;
    assert_eq!(lease_before.id, before);
    a.autorel().await.expect("AUTOREL answers OK");

    // Released by A, then leased by B.
    let released = gen(&c, 1).await.remove(0);
    let lease_a = lease(&a, None, None).await;
    assert_eq!(lease_a.id, released);
    assert_eq!(a.release(&lease_a, None).await.expect("REL"), Released::Yes);
    let b_released = lease(&b, None, None).await;
    assert_eq!(b_released.id, released, "the key A released");

    // Timed out under A, then leased by B (who waits for it).
    let timed_out = gen(&c, 1).await.remove(0);
    lease(&a, Some(Duration::ZERO), Some(ms(100))).await;
    let b_timed_out = lease(&b, Some(ms(2_000)), None).await;
    assert_eq!(b_timed_out.id, timed_out, "the key whose lease timed out");

    // Released by A with a delay: delayed, not held by A.
    let delayed = gen(&c, 1).await.remove(0);
    let lease_a = lease(&a, None, None).await;
    assert_eq!(lease_a.id, delayed);
    assert_eq!(a.release(&lease_a, Some(ms(30_000))).await.expect("REL"), Released::Yes);

    // Timed out under A and not leased since: free already.
    let expired = gen(&c, 1).await.remove(0);
    lease(&a, Some(Duration::ZERO), Some(ms(50))).await;
    let since = Instant::now();
    loop {
        if state(&c, &expired).await == Some(KeyState::Free) {
            break;
        }
        assert!(since.elapsed() < common::IO_TIMEOUT, "the 50ms lease never timed out");
        tokio::time::sleep(ms(5)).await;
    }

    // Still held by A at the close: the only one released.
    let held = gen(&c, 1).await.remove(0);
    lease(&a, None, None).await;

    assert_eq!(stat(&c, "curr_connections").await, 3, "one connection each for C, A and B");
    let since = Instant::now();
    drop(a);
    wait_for_released_by_close(&c, 1, since, SLACK).await;

    for (id, token, whose) in [
        (&before, lease_before.token, "leased before AUTOREL"),
        (&released, b_released.token, "B's now"),
        (&timed_out, b_timed_out.token, "B's now"),
    ] {
        let blocked = state(&c, id).await;
        assert!(matches!(blocked, Some(KeyState::Blocked { .. })), "{id} is blocked, {whose}: {blocked:?}");
        assert_eq!(Some(token_of(&c, id).await), token, "{id} is still under that lease ({whose})");
    }
    assert!(matches!(state(&c, &delayed).await, Some(KeyState::Delayed { .. })));
    assert_eq!(state(&c, &expired).await, Some(KeyState::Free));
    assert_eq!(state(&c, &held).await, Some(KeyState::Free), "released on close");
    let stats = c.stats().await.expect("STATS");
    assert_eq!(figure(&stats, "released_by_close"), 1);
    assert_eq!(figure(&stats, "released_by_timeout"), 2);
    assert_eq!(b.release(&b_released, None).await.expect("REL"), Released::Yes, "B's lease is whole");
    typed::close_and_stop(server, [c, b]).await;
}

#[tokio::test]
async fn a_waiting_connection_with_autorel_that_hangs_up_gives_everything_back() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let holder = typed::connect_autorel(server.addr()).await;
    lease(&holder, None, None).await;
    let waiting = queue(&c, &holder).await;
    // The observer and the holder: the wait is on the connection that holds the key.
    assert_eq!(stat(&c, "curr_connections").await, 2);

    // The worker gives up: its waiting task is cancelled (closing that connection) and the client dropped.
    let since = Instant::now();
    waiting.abort();
    assert!(within("the cancelled task", waiting).await.is_err_and(|error| error.is_cancelled()));
    drop(holder);
    wait_for_released_by_close(&c, 1, since, SLACK).await;
    let stats = c.stats().await.expect("STATS");
    assert_eq!(figure(&stats, "waiters"), 0, "its wait was withdrawn");
    assert_eq!(figure(&stats, "waits_served"), 0, "and not served with its own released key");
    assert_eq!(state(&c, &id).await, Some(KeyState::Free));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_key_a_waiter_was_granted_is_released_when_that_connection_closes() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let waiter = typed::connect_autorel(server.addr()).await;
    let waiting = queue(&c, &waiter).await;
    let id = gen(&c, 1).await.remove(0);
    let lease = within("the waiter to be served", waiting).await.expect("the waiting task").expect("LEASE 5s");
    let lease = lease.expect("the new key");
    assert!(lease.token.is_some(), "LEASE answers with a token: {lease:?}");
    assert_eq!(lease.id, id);

    let since = Instant::now();
    drop(waiter);
    wait_for_released_by_close(&c, 1, since, SLACK).await;
    assert_eq!(state(&c, &id).await, Some(KeyState::Free));
    typed::close_and_stop(server, [c]).await;
}
