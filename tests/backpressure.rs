//! Backpressure: a client that pipelines tens of megabytes of requests without reading a single reply is
//! stopped reading from once its unsent replies fill the socket buffers, so the server holds no more
//! than a bounded amount for it, and other clients are served as usual meanwhile; when the client finally
//! reads, every reply arrives, in order.
//!
//! This test has its own binary so that the process's memory figure is this test's alone.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, start, stop, within, Client, IO_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// One unit of the flood and the replies it must get: a GET of an empty pool and a health check.
const REQUESTS: &[u8] = b"GET\r\nPING\r\n";
const REPLIES: &[u8] = b"NOT_FOUND\r\nPONG\r\n";

/// What the client would send if nothing pushed back: far more than the kernel buffers between it and the
/// server can hold (a few MB on loopback; Linux lets a receive buffer grow to 32 MB at most by default).
/// The writes stall long before (around 2 MB here), and the client then gives up on the rest.
const FLOOD_BYTES: u64 = 50 * 1024 * 1024;

/// The process's resident memory, from /proc (Linux only; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_stopped_reading_from_and_gets_every_reply_in_order_later() {
    let server = start(config()).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
    socket.set_send_buffer_size(4096).expect("set SO_SNDBUF");
    let stream = within("a connection", socket.connect(server.addr())).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let rss_before = resident_bytes();

    // The flood, written in 110 kB pieces by a task that counts what the kernel has taken, until it is
    // told to stop or has sent it all.
    let written = Arc::new(AtomicU64::new(0));
    let stop_flooding = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let (written, stop_flooding) = (Arc::clone(&written), Arc::clone(&stop_flooding));
        async move {
            let piece = REQUESTS.repeat(10_000);
            while written.load(Ordering::Relaxed) + (piece.len() as u64) <= FLOOD_BYTES
                && !stop_flooding.load(Ordering::Relaxed)
            {
                writer.write_all(&piece).await.expect("write the flood");
                written.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            writer
        }
    });

    // (a) The writes stall: the server has stopped reading. Stalled means no progress for 300 ms.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut last = (written.load(Ordering::Relaxed), Instant::now());
    let stalled_at = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = written.load(Ordering::Relaxed);
        assert!(!flood.is_finished(), "all {now} bytes were taken while no reply was read: nothing pushed back");
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(300) {
            break now;
        }
        assert!(Instant::now() < deadline, "the writes never stalled ({now} bytes taken)");
    };
    // What the server holds for the client: only what the socket buffers do not. Allow for allocator and
    // runtime noise, but not for the megabytes that buffering what was sent would take.
    if let (Some(before), Some(after)) = (rss_before, resident_bytes()) {
        let grown = after.saturating_sub(before);
        assert!(grown < 16 * 1024 * 1024, "the process grew by {grown} bytes for one client that does not read");
    }

    // (b) Meanwhile other clients are served promptly, and the flood stays stalled.
    let mut other = Client::connect(server.addr()).await;
    for _ in 0..20 {
        let asked = Instant::now();
        assert_eq!(other.cmd("PING").await, "PONG");
        assert!(asked.elapsed() < Duration::from_millis(500), "a PING took {:?}", asked.elapsed());
    }
    let id = other.gen(1).await.remove(0);
    assert_eq!(other.cmd("GET").await, format!("KEY {id}"));
    assert_eq!(other.cmd(&format!("REL {id}")).await, "RELEASED");
    assert_eq!(other.cmd(&format!("DEL {id}")).await, "DELETED", "the flood's GETs must still find nothing");
    assert_eq!(written.load(Ordering::Relaxed), stalled_at, "the server read more while no reply was read");

    // (c) The client gives up on the rest of the flood (the piece being written still goes out) and reads:
    // every reply arrives, in order, and nothing else.
    stop_flooding.store(true, Ordering::Relaxed);
    let mut received = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let reading = async {
        loop {
            // Once the flood is over, what it sent tells how many replies are due.
            if flood.is_finished()
                && received == written.load(Ordering::Relaxed) / REQUESTS.len() as u64 * REPLIES.len() as u64
            {
                return;
            }
            let Ok(read) = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut buf)).await else {
                continue;
            };
            let n = read.expect("read the replies");
            assert!(n > 0, "the connection closed after {received} reply bytes");
            for (at, &byte) in buf[..n].iter().enumerate() {
                let offset = received + at as u64;
                let want = REPLIES[(offset % REPLIES.len() as u64) as usize];
                assert_eq!(byte, want, "reply byte {offset} is {:?}, not {:?}", byte as char, want as char);
            }
            received += n as u64;
        }
    };
    within("every reply", reading).await;
    let sent = written.load(Ordering::Relaxed);
    assert!(sent > stalled_at, "the flood went on once its replies were read");
    let mut writer = within("the flood to finish", flood).await.expect("the flood task");
    writer.write_all(b"PING\r\n").await.expect("write after the flood");
    let mut pong = [0u8; 6];
    within("the last reply", reader.read_exact(&mut pong)).await.expect("read the last reply");
    assert_eq!(&pong, b"PONG\r\n", "nothing stray after the flood's replies");
    stop(server).await;
}
