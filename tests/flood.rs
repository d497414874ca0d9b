//! A connection flood: 5,000 connection attempts in a burst against `--max-connections 100`. The daemon
//! keeps answering a client that was already connected, every attempt ends one way or another (admitted
//! and served, or told `SERVER_ERROR too many connections`, or at worst closed or reset), the server's
//! counters agree with what the clients saw, nothing panics, and afterwards only the first client is left.
//!
//! File descriptors: at most [`IN_FLIGHT`] attempts are open at once, each costing one descriptor on the
//! client's side and one on the server's (both in this process), so the test stays well under the usual
//! soft limit of 1024. It also keeps the burst within the listener's backlog, so that no connection
//! attempt waits for the kernel's one-second SYN retry.
//!
//! This test has its own binary: it installs a panic hook to count panics anywhere in the process.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, start, stop, Client};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

const ATTEMPTS: usize = 5_000;
const MAX_CONNECTIONS: usize = 100;
const IN_FLIGHT: usize = 250;
const TOO_MANY: &str = "SERVER_ERROR too many connections\r\n";

/// How one connection attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    /// Admitted: its PING was answered.
    Served,
    /// Refused with `SERVER_ERROR too many connections`.
    Refused,
    /// Closed by the server with nothing said.
    Closed,
    /// Reset by the server (a refusal whose PING arrived after the socket was closed).
    Reset,
    /// The connection could not be made at all.
    ConnectFailed,
}

/// One attempt: connect, send PING, read the first line. An admitted client stays a moment, as a real
/// one would, so that the burst keeps the server at its limit.
async fn attempt(addr: SocketAddr) -> Outcome {
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await else {
        return Outcome::ConnectFailed;
    };
    let (reader, mut writer) = stream.into_split();
    if writer.write_all(b"PING\r\n").await.is_err() {
        return Outcome::Reset;
    }
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    match read.expect("an attempt got no answer and no close within 5s") {
        Ok(0) => Outcome::Closed,
        Ok(_) if line == "PONG\r\n" => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Outcome::Served
        }
        Ok(_) if line == TOO_MANY => Outcome::Refused,
        Ok(_) => panic!("unexpected first line {line:?}"),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => Outcome::Reset,
        Err(error) => panic!("unexpected error {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_connections_leaves_the_daemon_answering_and_the_excess_refused() {
    let panics = Arc::new(AtomicUsize::new(0));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new({
        let panics = Arc::clone(&panics);
        move |info| {
            panics.fetch_add(1, Ordering::Relaxed);
            default_hook(info);
        }
    }));

    let server = start(keypool::server::Config { max_connections: MAX_CONNECTIONS, ..config() }).await;
    let addr = server.addr();
    let mut observer = Client::connect(addr).await;
    let id = observer.gen(1).await.remove(0);
    let before = observer.stats().await;
    assert_eq!(before["curr_connections"], "1");

    // The first client keeps working throughout: a PING of its key every few milliseconds.
    let bursting = Arc::new(AtomicBool::new(true));
    let watch = tokio::spawn({
        let bursting = Arc::clone(&bursting);
        async move {
            let (mut pings, mut slowest) = (0u32, Duration::ZERO);
            while bursting.load(Ordering::Relaxed) {
                let asked = Instant::now();
                assert_eq!(observer.cmd(&format!("PING {id}")).await, "ALIVE");
                slowest = slowest.max(asked.elapsed());
                pings += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (observer, pings, slowest)
        }
    });

    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut attempts = Vec::with_capacity(ATTEMPTS);
    for _ in 0..ATTEMPTS {
        let permit = Arc::clone(&in_flight).acquire_owned().await.expect("the semaphore is open");
        attempts.push(tokio::spawn(async move {
            let outcome = attempt(addr).await;
            drop(permit);
            outcome
        }));
    }
    let mut counts = std::collections::HashMap::new();
    for attempt in attempts {
        *counts.entry(attempt.await.expect("an attempt task")).or_insert(0usize) += 1;
    }
    let burst = started.elapsed();
    bursting.store(false, Ordering::Relaxed);
    let (mut observer, pings, slowest) = watch.await.expect("the observer task");
    let count = |outcome| counts.get(&outcome).copied().unwrap_or(0);
    eprintln!("{ATTEMPTS} attempts in {burst:?}: {counts:?}; the observer's {pings} PINGs took at most {slowest:?}");

    assert_eq!(count(Outcome::ConnectFailed), 0, "connections failed outright: {counts:?}");
    assert!(count(Outcome::Served) >= MAX_CONNECTIONS - 1, "too few admitted: {counts:?}");
    let excess = count(Outcome::Refused) + count(Outcome::Closed) + count(Outcome::Reset);
    assert!(excess > ATTEMPTS / 2, "the burst hardly passed the limit: {counts:?}");
    assert!(count(Outcome::Refused) * 4 >= excess * 3, "most of the excess must be told why: {counts:?}");
    assert!(pings >= 10, "the observer got only {pings} PINGs answered during the burst");
    assert!(slowest < Duration::from_secs(1), "a PING took {slowest:?} during the burst");
    assert!(burst < Duration::from_secs(8), "the burst took {burst:?}");

    // Every refusal the clients saw, however it looked to them, is one the server counted, and every
    // admission one it accepted; and all the admitted connections are gone again.
    let after = observer.stats().await;
    let delta = |name: &str| after[name].parse::<usize>().unwrap() - before[name].parse::<usize>().unwrap();
    assert_eq!(delta("rejected_connections"), excess);
    assert_eq!(delta("total_connections"), count(Outcome::Served));
    observer.wait_for_stat("curr_connections", 1).await;
    assert_eq!(observer.cmd("PING").await, "PONG");
    assert_eq!(panics.load(Ordering::Relaxed), 0, "something panicked during the flood");
    stop(server).await;
}
