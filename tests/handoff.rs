//! How fast a waiting request gets a key that comes free (issue 7 asks for "within 10 ms" of a REL, a
//! block timeout, a GEN and an ADD), measured over real sockets.
//!
//! Each handoff is timed from the moment the freeing command's reply reaches its client (or, for a block
//! timeout, from the earliest moment the block window can end) to the moment the waiter's reply reaches
//! the waiter. A server that hands keys over by polling, on a timer tick, or only when the wait runs out
//! fails these; one that wakes the waiter on the spot passes with room to spare (well under 1 ms here).
//!
//! These tests live in a binary of their own, so little else runs beside them. Even so a test machine can
//! deschedule a thread for a few milliseconds at any time, so each test times [`ROUNDS`] handoffs and
//! allows one of them to miss [`PROMPT`], as long as it stays within [`OUTLIER`]. A server that polls
//! every 20 ms would still miss in about half the rounds and fail.

mod common;

use std::time::{Duration, Instant};

use common::{close_and_stop, config, leased_of, start, Client};
use tokio::task::JoinHandle;

/// The bound for a handoff.
const PROMPT: Duration = Duration::from_millis(10);

/// The bound for the one handoff allowed to miss [`PROMPT`].
const OUTLIER: Duration = Duration::from_millis(100);

/// Handoffs timed per test.
const ROUNDS: usize = 10;

/// How much earlier than its deadline a timer may fire: engine time is whole milliseconds.
const ROUNDING: Duration = Duration::from_millis(2);

/// Reads the waiter's next line in a task of its own and notes when it arrived, so that the test can
/// free a key meanwhile.
fn read_in_background(mut waiter: Client) -> JoinHandle<(String, Instant, Client)> {
    tokio::spawn(async move {
        let line = waiter.line().await;
        (line, Instant::now(), waiter)
    })
}

/// Sends `request` on `waiter` and returns once the server counts it as waiting.
async fn queue(observer: &mut Client, waiter: &mut Client, request: &str) {
    waiter.send_line(request).await;
    observer.wait_for_stat("waiters", 1).await;
}

fn assert_prompt(latencies: &[Duration], what: &str) {
    assert_eq!(latencies.len(), ROUNDS);
    let late: Vec<&Duration> = latencies.iter().filter(|latency| **latency >= PROMPT).collect();
    assert!(
        late.len() <= 1,
        "{} of {ROUNDS} waiters served {PROMPT:?} or more after {what}: {latencies:?}",
        late.len()
    );
    assert!(late.iter().all(|latency| **latency < OUTLIER), "a waiter served very late after {what}: {latencies:?}");
}

#[tokio::test]
async fn a_waiter_is_served_within_10ms_of_a_rel() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let mut latencies = Vec::new();
    for _ in 0..ROUNDS {
        let held = c.lease("").await.expect("the only key");
        queue(&mut c, &mut waiter, "LEASE 5s").await;
        let reading = read_in_background(waiter);
        assert_eq!(c.cmd(&format!("REL {id} {}", held.token)).await, "RELEASED");
        let freed = Instant::now();
        let (line, served, back) = reading.await.expect("the reading task");
        waiter = back;
        latencies.push(served.saturating_duration_since(freed));
        let lease = leased_of(&line);
        assert_eq!(lease.id, id);
        assert_eq!(waiter.cmd(&format!("REL {id} {}", lease.token)).await, "RELEASED");
    }
    assert_prompt(&latencies, "a REL");
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn a_waiter_is_served_within_10ms_of_a_block_timeout() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let block = Duration::from_millis(50);
    let mut latencies = Vec::new();
    for _ in 0..ROUNDS {
        let held = c.lease("").await.expect("the only key");
        queue(&mut c, &mut waiter, "LEASE 5s").await;
        let reading = read_in_background(waiter);
        // The new window starts while the server applies the TOUCH: no earlier than this.
        let touched = Instant::now();
        assert_eq!(c.cmd(&format!("TOUCH {id} {} 50ms", held.token)).await, "TOUCHED");
        let (line, served, back) = reading.await.expect("the reading task");
        waiter = back;
        let window_end = touched + block;
        assert!(served + ROUNDING >= window_end, "served {:?} before the block window ended", window_end - served);
        latencies.push(served.saturating_duration_since(window_end));
        let lease = leased_of(&line);
        assert_eq!(lease.id, id);
        assert_eq!(waiter.cmd(&format!("REL {id} {}", lease.token)).await, "RELEASED");
    }
    assert_prompt(&latencies, "a block timeout");
    assert_eq!(c.stat("released_by_timeout").await, ROUNDS as u64);
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn a_waiter_is_served_within_10ms_of_a_gen() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = Client::connect(server.addr()).await;
    let mut latencies = Vec::new();
    for _ in 0..ROUNDS {
        // Every key made so far is held by the waiter: the pool has none free.
        queue(&mut c, &mut waiter, "LEASE 5s").await;
        let reading = read_in_background(waiter);
        let id = c.gen(1).await.remove(0);
        let freed = Instant::now();
        let (line, served, back) = reading.await.expect("the reading task");
        waiter = back;
        latencies.push(served.saturating_duration_since(freed));
        assert_eq!(leased_of(&line).id, id);
    }
    assert_prompt(&latencies, "a GEN");
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn a_waiter_is_served_within_10ms_of_an_add() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut waiter = Client::connect(server.addr()).await;
    let mut latencies = Vec::new();
    for round in 0..ROUNDS {
        queue(&mut c, &mut waiter, "LEASE 5s").await;
        let reading = read_in_background(waiter);
        let secret = format!("imported-key-{round}");
        let id = c.add(&secret).await;
        let freed = Instant::now();
        let (line, served, back) = reading.await.expect("the reading task");
        waiter = back;
        latencies.push(served.saturating_duration_since(freed));
        let lease = leased_of(&line);
        assert_eq!(lease.id, id);
        assert_eq!(lease.secret, Some(secret), "a waiter's lease carries the secret");
    }
    assert_prompt(&latencies, "an ADD");
    close_and_stop(server, [c, waiter]).await;
}
