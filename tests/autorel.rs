//! Release on close over the wire (issue 7): after `AUTOREL`, the keys a connection leased and still
//! holds when it closes (a hang-up, QUIT, a protocol error) are released at once, as if by REL, and go to
//! waiters like any freed key; keys it released, that timed out, that another connection leased since,
//! or that it leased before AUTOREL are left alone; `released_by_close` counts the releases. A
//! connection without AUTOREL keeps v1's behaviour: its keys stay blocked until their window ends.

mod common;

use std::time::{Duration, Instant};

use common::{close_and_stop, config, leased_of, num, start, Client};

/// How long after a close its releases may be observed. A release on close is done under the lock the
/// moment the server notices the close, so this is generous; it rules out "at the next timer tick" or
/// "after a grace period".
const SLACK: Duration = Duration::from_millis(200);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls STATS until `released_by_close` is `want`; fails the test if that takes longer than `limit`
/// from `since`.
async fn wait_for_released_by_close(c: &mut Client, want: u64, since: Instant, limit: Duration) {
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

#[tokio::test]
async fn autorel_answers_ok_and_can_be_repeated() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("AUTOREL").await, "OK");
    assert_eq!(c.cmd("autorel").await, "OK", "idempotent, and case-insensitive as every command");
    let id = c.gen(1).await.remove(0);
    c.lease("").await.expect("a free key");
    drop(c);

    let mut other = Client::connect(server.addr()).await;
    wait_for_released_by_close(&mut other, 1, Instant::now(), common::IO_TIMEOUT).await;
    assert_eq!(other.state(&id).await.as_deref(), Some("free"));
    assert_eq!(other.stat("cmd_autorel").await, 2);
    close_and_stop(server, [other]).await;
}

#[tokio::test]
async fn a_connection_that_hangs_up_releases_what_it_holds_to_the_next_waiter() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(3).await;
    let mut holder = Client::connect(server.addr()).await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    let leased = holder.lease("").await.expect("a free key");
    let got = holder.get().await.expect("a free key"); // a v1 GET's lease is released on close too
    holder.lease("0ms 30s").await.expect("a free key");

    let mut waiter = Client::connect(server.addr()).await;
    waiter.send_line("LEASE 5s").await;
    c.wait_for_stat("waiters", 1).await;
    let since = Instant::now();
    drop(holder);
    let reply = waiter.line().await;
    let elapsed = since.elapsed();
    let lease = leased_of(&reply);
    assert!(ids.contains(&lease.id));
    assert!(elapsed <= SLACK, "the waiter got a released key {elapsed:?} after the hang-up");

    wait_for_released_by_close(&mut c, 3, since, SLACK).await;
    let stats = c.stats().await;
    assert_eq!((num(&stats, "keys_free"), num(&stats, "keys_blocked")), (2, 1), "the waiter holds one");
    assert!(ids.contains(&leased.id) && ids.contains(&got));
    for id in &ids {
        let info = c.info(id).await.expect("the key exists");
        if *id == lease.id {
            assert_eq!(num(&info, "token"), lease.token, "{id} is the waiter's");
        } else {
            assert_eq!(info["state"], "free", "{id} was released");
        }
    }
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn without_autorel_a_closed_connection_keeps_its_keys_blocked() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let mut holder = Client::connect(server.addr()).await;
    holder.lease("").await.expect("a free key");
    drop(holder);
    c.wait_for_stat("curr_connections", 1).await;
    assert_eq!(c.state(&id).await.as_deref(), Some("blocked"), "v1: a lease outlives its connection");
    assert_eq!(c.stat("released_by_close").await, 0);
    close_and_stop(server, [c]).await;
}

/// The keys of a QUIT are released as the server ends the connection, not when the client gets round to
/// closing its end.
#[tokio::test]
async fn quit_releases_at_once_even_while_the_client_keeps_its_socket_open() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let mut holder = Client::connect(server.addr()).await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    holder.lease("").await.expect("a free key");
    let mut waiter = Client::connect(server.addr()).await;
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
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(2).await;
    let mut holder = Client::connect(server.addr()).await;
    holder.send("AUTOREL\r\nLEASE\r\nGET\r\nQUIT\r\n").await;
    assert_eq!(holder.line().await, "OK");
    leased_of(&holder.line().await);
    assert!(holder.line().await.starts_with("KEY "));
    holder.expect_closed().await;
    let since = Instant::now();
    drop(holder);

    wait_for_released_by_close(&mut c, 2, since, SLACK).await;
    for id in &ids {
        assert_eq!(c.state(id).await.as_deref(), Some("free"), "{id}");
    }
    assert_eq!(c.stat("cmd_quit").await, 1);
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_connection_closed_for_a_protocol_error_releases_what_it_holds() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let mut holder = Client::connect(server.addr()).await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    holder.lease("").await.expect("a free key");
    holder.send(vec![b'x'; 5_000]).await;
    assert_eq!(holder.line().await, "CLIENT_ERROR line too long");
    holder.expect_closed().await;
    let since = Instant::now();
    drop(holder);

    wait_for_released_by_close(&mut c, 1, since, SLACK).await;
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn keys_released_timed_out_leased_again_or_held_before_autorel_are_left_alone() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut a = Client::connect(server.addr()).await;
    let mut b = Client::connect(server.addr()).await;

    // Leased before AUTOREL: not on the list.
    let before = c.gen(1).await.remove(0);
    let lease_before = a.lease("").await.expect("a free key");
    assert_eq!(lease_before.id, before);
    assert_eq!(a.cmd("AUTOREL").await, "OK");

    // Released by A, then leased by B.
    let released = c.gen(1).await.remove(0);
    let lease = a.lease("").await.expect("a free key");
    assert_eq!(a.cmd(&format!("REL {released} {}", lease.token)).await, "RELEASED");
    let b_released = b.lease("").await.expect("the key A released");
    assert_eq!(b_released.id, released);

    // Timed out under A, then leased by B (who waits for it).
    let timed_out = c.gen(1).await.remove(0);
    a.lease("0ms 100ms").await.expect("a free key");
    let b_timed_out = b.lease("2s").await.expect("the key whose lease timed out");
    assert_eq!(b_timed_out.id, timed_out);

    // Released by A with a delay: delayed, not held by A.
    let delayed = c.gen(1).await.remove(0);
    let lease = a.lease("").await.expect("a free key");
    assert_eq!(a.cmd(&format!("REL {delayed} {} 30s", lease.token)).await, "RELEASED");

    // Timed out under A and not leased since: free already.
    let expired = c.gen(1).await.remove(0);
    a.lease("0ms 50ms").await.expect("a free key");
    let since = Instant::now();
    loop {
        if c.state(&expired).await.as_deref() == Some("free") {
            break;
        }
        assert!(since.elapsed() < common::IO_TIMEOUT, "the 50ms lease never timed out");
        tokio::time::sleep(ms(5)).await;
    }

    // Still held by A at the close: the only one released.
    let held = c.gen(1).await.remove(0);
    a.lease("").await.expect("a free key");

    let since = Instant::now();
    drop(a);
    wait_for_released_by_close(&mut c, 1, since, SLACK).await;

    let before_info = c.info(&before).await.expect("the key exists");
    assert_eq!(before_info["state"], "blocked", "leased before AUTOREL");
    assert_eq!(num(&before_info, "token"), lease_before.token);
    for (id, token) in [(&released, b_released.token), (&timed_out, b_timed_out.token)] {
        let info = c.info(id).await.expect("the key exists");
        assert_eq!(info["state"], "blocked", "{id} is B's now");
        assert_eq!(num(&info, "token"), token, "{id} is still under B's lease");
    }
    assert_eq!(c.state(&delayed).await.as_deref(), Some("delayed"));
    assert_eq!(c.state(&expired).await.as_deref(), Some("free"));
    assert_eq!(c.state(&held).await.as_deref(), Some("free"), "released on close");
    let stats = c.stats().await;
    assert_eq!(num(&stats, "released_by_close"), 1);
    assert_eq!(num(&stats, "released_by_timeout"), 2);
    assert_eq!(b.cmd(&format!("REL {released} {}", b_released.token)).await, "RELEASED", "B's lease is whole");
    close_and_stop(server, [c, b]).await;
}

#[tokio::test]
async fn a_waiting_connection_with_autorel_that_hangs_up_gives_everything_back() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let mut holder = Client::connect(server.addr()).await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    holder.lease("").await.expect("the only key");
    holder.send_line("LEASE 5s").await;
    c.wait_for_stat("waiters", 1).await;

    let since = Instant::now();
    drop(holder);
    wait_for_released_by_close(&mut c, 1, since, SLACK).await;
    let stats = c.stats().await;
    assert_eq!(num(&stats, "waiters"), 0, "its wait was withdrawn");
    assert_eq!(num(&stats, "waits_served"), 0, "and not served with its own released key");
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_key_a_waiter_was_granted_is_released_when_that_connection_closes() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = Client::connect(server.addr()).await;
    assert_eq!(waiter.cmd("AUTOREL").await, "OK");
    waiter.send_line("LEASE 5s").await;
    c.wait_for_stat("waiters", 1).await;
    let id = c.gen(1).await.remove(0);
    assert_eq!(leased_of(&waiter.line().await).id, id);

    let since = Instant::now();
    drop(waiter);
    wait_for_released_by_close(&mut c, 1, since, SLACK).await;
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}
