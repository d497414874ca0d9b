//! Slow clients slow nobody else: a few clients that each send their requests a byte at a time (a byte
//! every few milliseconds, "a byte a second" sped up) hold no lock while their lines are incomplete, so a
//! fast client pipelining GET and REL beside them keeps its throughput; and the slow clients' requests
//! are answered correctly once their last byte arrives.
//!
//! Throughput is measured with and without the slow clients sending, in alternating short phases of the
//! same test, so that a machine busy with other work slows both sides of the comparison alike. The test
//! has its own binary, so no other test of this crate runs beside it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, key_of, start, stop, within, Client};
use tokio::time::Instant;

const SLOW_CLIENTS: usize = 4;
/// The pause between two bytes of a slow client.
const BYTE_EVERY: Duration = Duration::from_millis(3);
const PHASE: Duration = Duration::from_millis(100);
/// Phases alternate: without the slow clients sending, then with them, and so on.
const PHASES: usize = 24;
/// Requests the fast client keeps in flight.
const DEPTH: usize = 16;

/// One round of the fast client: `DEPTH` GETs in one write, then a REL of each key in another.
async fn get_and_release(c: &mut Client) {
    c.send("GET\r\n".repeat(DEPTH)).await;
    let mut rels = String::new();
    for _ in 0..DEPTH {
        rels.push_str(&format!("REL {}\r\n", key_of(&c.line().await)));
    }
    c.send(rels).await;
    for _ in 0..DEPTH {
        assert_eq!(c.line().await, "RELEASED");
    }
}

/// A slow client: sends `request` over and over, a byte every [`BYTE_EVERY`], while `sending` is set;
/// once `done` is set it finishes the request it is in the middle of and stops. Returns the client and
/// how many requests it sent.
async fn dribble(mut c: Client, request: String, sending: Arc<AtomicBool>, done: Arc<AtomicBool>) -> (Client, usize) {
    let mut sent = 0;
    let mut at = 0;
    loop {
        if at == 0 && done.load(Ordering::Relaxed) {
            return (c, sent);
        }
        if sending.load(Ordering::Relaxed) || (at > 0 && done.load(Ordering::Relaxed)) {
            c.send(&request.as_bytes()[at..=at]).await;
            at += 1;
            if at == request.len() {
                at = 0;
                sent += 1;
            }
        }
        tokio::time::sleep(BYTE_EVERY).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_sending_a_byte_at_a_time_do_not_slow_a_fast_pipelining_client() {
    let server = start(config()).await;
    let mut fast = Client::connect(server.addr()).await;
    fast.gen(2 * DEPTH).await;
    let sending = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        let mut c = Client::connect(server.addr()).await;
        // Each slow client pings a key of its own (leased or not, a key answers PING with ALIVE).
        let id = c.gen(1).await.remove(0);
        let request = format!("PING {id}\r\n");
        slow.push(tokio::spawn(dribble(c, request, Arc::clone(&sending), Arc::clone(&done))));
    }
    get_and_release(&mut fast).await; // warm up
    let mut rounds = [0u32; PHASES];
    for (phase, rounds) in rounds.iter_mut().enumerate() {
        sending.store(phase % 2 == 1, Ordering::Relaxed);
        let end = Instant::now() + PHASE;
        while Instant::now() < end {
            get_and_release(&mut fast).await;
            *rounds += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    let without: u32 = rounds.iter().step_by(2).sum();
    let with: u32 = rounds.iter().skip(1).step_by(2).sum();
    eprintln!(
        "fast rounds per phase (without, with, ...): {rounds:?}; with/without = {:.2}",
        with as f64 / without as f64
    );
    assert!(without > 0);
    assert!(with * 10 >= without * 8, "with slow clients the fast one did {with} rounds, without {without}");

    // Every slow request was answered, and correctly.
    for task in slow {
        let (mut c, sent) = within("a slow client to finish", task).await.expect("a slow client task");
        assert!(sent >= 3, "a slow client sent only {sent} requests");
        for n in 0..sent {
            assert_eq!(c.line().await, "ALIVE", "slow request {n}");
        }
        assert_eq!(c.cmd("PING").await, "PONG");
    }
    stop(server).await;
}
