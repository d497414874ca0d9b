//! `--idle-timeout`: a connection that has sent nothing for that long while the server owed it no reply
//! is closed (its AUTOREL keys go back); one that keeps sending, even a byte at a time, is not; one that
//! waits for a key longer than the timeout is not idle while it waits, nor is one whose replies the
//! server is still trying to send; with the timeout off (the default) a silent connection stays open. The
//! binary's flag and environment variable are checked at the end.
//!
//! The timeout is short (200 ms) and every wait is bounded, so these run in well under a second each.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{config, key_of, leased_of, num, start, stop, Client};
use keypool::server::Config;
use tokio::time::Instant;

const IDLE: Duration = Duration::from_millis(200);

/// How late past the timeout the close may be seen: a busy two-core machine runs all the tests at once.
const SLACK: Duration = Duration::from_millis(1000);

fn config_with_idle_timeout(timeout: Duration) -> Config {
    Config { idle_timeout: Some(timeout), ..config() }
}

/// Checks that `c` is closed by the server between `IDLE` and `IDLE + SLACK` after `since`, which must be
/// a moment before the client's last byte was sent (so that it is before the server's idle clock started).
async fn expect_closed_for_idleness(c: &mut Client, since: Instant) {
    let left = IDLE.saturating_sub(since.elapsed());
    // Nothing, not even the close, before the timeout; a few milliseconds off for the clock's grain.
    c.expect_silence(left.saturating_sub(Duration::from_millis(5))).await;
    c.expect_closed().await;
    let after = since.elapsed();
    assert!(after >= IDLE - Duration::from_millis(5), "closed after only {after:?}");
    assert!(after < IDLE + SLACK, "closed only after {after:?}");
}

/// Polls STATS on `observer` until exactly `n` connections are open.
async fn wait_for_connections(observer: &mut Client, n: u64) {
    observer.wait_for_stat("curr_connections", n).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_timeout_and_not_before() {
    let server = start(config_with_idle_timeout(IDLE)).await;
    let mut c = Client::connect(server.addr()).await;
    let since = Instant::now();
    assert_eq!(c.cmd("PING").await, "PONG");
    expect_closed_for_idleness(&mut c, since).await;

    // A client that connects and never sends a byte is closed too.
    let since = Instant::now();
    let mut mute = Client::connect(server.addr()).await;
    expect_closed_for_idleness(&mut mute, since).await;
    stop(server).await;
}

#[tokio::test]
async fn a_connection_closed_for_idleness_gives_back_its_autorel_keys() {
    let server = start(config_with_idle_timeout(IDLE)).await;
    let mut c = Client::connect(server.addr()).await;
    let since = Instant::now();
    assert_eq!(c.cmd("AUTOREL").await, "OK");
    c.send_line("GEN 1").await;
    let id = key_of(&c.line().await);
    assert_eq!(c.line().await, "END");
    let leased = leased_of(&c.cmd("LEASE").await);
    assert_eq!(leased.id, id);
    expect_closed_for_idleness(&mut c, since).await;

    let mut observer = Client::connect(server.addr()).await;
    wait_for_connections(&mut observer, 1).await;
    let stats = observer.stats().await;
    assert_eq!(num(&stats, "released_by_close"), 1);
    assert_eq!(num(&stats, "keys_free"), 1);
    stop(server).await;
}

#[tokio::test]
async fn a_partial_line_does_not_keep_a_connection_open() {
    let server = start(config_with_idle_timeout(IDLE)).await;
    let mut c = Client::connect(server.addr()).await;
    let since = Instant::now();
    c.send("PIN").await; // no line ending: no request, no reply owed
    expect_closed_for_idleness(&mut c, since).await;
    stop(server).await;
}

#[tokio::test]
async fn a_connection_that_keeps_sending_is_never_idle() {
    let server = start(config_with_idle_timeout(IDLE)).await;
    let mut c = Client::connect(server.addr()).await;
    let mut dribbler = Client::connect(server.addr()).await;
    // Over three timeouts: one request every quarter timeout on one connection, and on the other two
    // requests a byte at a time at the same pace (bytes received count, not only whole requests).
    let request = b"PING\r\n";
    for byte in request.iter().chain(request) {
        tokio::time::sleep(IDLE / 4).await;
        assert_eq!(c.cmd("PING").await, "PONG");
        dribbler.send([*byte]).await;
    }
    assert_eq!(dribbler.line().await, "PONG");
    assert_eq!(dribbler.line().await, "PONG");
    assert_eq!(c.cmd("PING").await, "PONG");
    stop(server).await;
}

#[tokio::test]
async fn a_wait_for_a_key_longer_than_the_timeout_is_not_idle() {
    let server = start(config_with_idle_timeout(IDLE)).await;
    let mut waiter = Client::connect(server.addr()).await;

    // A wait that runs out after three timeouts is answered, and the connection stays open.
    let asked = Instant::now();
    assert_eq!(waiter.cmd("LEASE 600ms").await, "NOT_FOUND");
    assert!(asked.elapsed() >= Duration::from_millis(595), "answered after only {:?}", asked.elapsed());

    // A wait that a key comes to after more than two timeouts gets it.
    waiter.send_line("LEASE 2s").await;
    Client::connect(server.addr()).await.wait_for_stat("waiters", 1).await;
    tokio::time::sleep(IDLE * 2).await;
    let since = Instant::now();
    let id = Client::connect(server.addr()).await.gen(1).await.remove(0);
    assert_eq!(leased_of(&waiter.line().await).id, id);

    // Once answered, the waiter is owed nothing: it is idle from then on.
    expect_closed_for_idleness(&mut waiter, since).await;
    stop(server).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_its_replies_is_not_idle() {
    let server = start(config_with_idle_timeout(IDLE)).await;
    let mut c = Client::connect_with_small_receive_buffer(server.addr()).await;
    // About 5 MB of replies, more than the socket buffers hold (Linux grows a send buffer to 4 MB at most
    // by default, and under 2 MB was enough to fill them here): the server is still writing them while
    // the client leaves them unread for three timeouts.
    const BLOCKS: usize = 20;
    c.send("GEN 10000\n".repeat(BLOCKS)).await;
    tokio::time::sleep(IDLE * 3).await;
    // Had the server been waiting for a request all this while, it would have closed the connection, and
    // the PING would go unanswered.
    c.send_line("PING").await;
    for n in 0..BLOCKS {
        assert_eq!(c.lines.key_block().await.len(), 10_000, "block {n}");
    }
    assert_eq!(c.line().await, "PONG", "the connection is still open");
    // Replies are all sent now: the connection is idle from here on.
    c.expect_closed().await;
    stop(server).await;
}

#[tokio::test]
async fn without_an_idle_timeout_a_silent_connection_stays_open() {
    assert_eq!(Config::default().idle_timeout, None, "off by default");
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.expect_silence(IDLE * 2).await;
    assert_eq!(c.cmd("PING").await, "PONG");
    stop(server).await;
}

// ---- the binary's flag ----

/// The daemon, killed when dropped.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    /// The idle timeout it reports in its "keypool listening" log line (`200ms`, `off`).
    idle_timeout: String,
}

impl Daemon {
    /// Starts the binary on a port of its choosing with `args` and `env` (and no other `KEYPOOL_*`
    /// variable), and reads the address from its log: probing a port picked beforehand could reach
    /// another test's server if the daemon lost that port to it.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keypool"));
        command.args(["--listen", "127.0.0.1:0"]).args(args).env("RUST_LOG", "info");
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYPOOL_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("spawn keypool");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (lines, logged) = std::sync::mpsc::channel();
        // Reads the log to its end, so that the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = logged.recv_timeout(left).expect("keypool logged no \"keypool listening\" line within 5s");
            let line = without_colours(&line);
            if !line.contains("keypool listening") {
                continue;
            }
            let field = |name: &str| {
                let prefix = format!("{name}=");
                let value = line.split_whitespace().find_map(|word| word.strip_prefix(prefix.as_str()));
                value.unwrap_or_else(|| panic!("no {name} in {line:?}")).to_string()
            };
            let addr = field("addr").parse().expect("a socket address");
            return Daemon { child, addr, idle_timeout: field("idle_timeout") };
        }
    }
}

/// `line` without ANSI colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_idle_timeout_flag_and_variable_take_effect() {
    for (args, env) in [(&["--idle-timeout", "200ms"][..], &[][..]), (&[], &[("KEYPOOL_IDLE_TIMEOUT", "200ms")])] {
        let daemon = Daemon::start(args, env);
        assert_eq!(daemon.idle_timeout, "200ms", "{args:?} {env:?}");
        let mut c = Client::connect(daemon.addr).await;
        let since = Instant::now();
        assert_eq!(c.cmd("PING").await, "PONG");
        expect_closed_for_idleness(&mut c, since).await;
    }

    // 0s is off, as is the default.
    for (args, env) in [(&["--idle-timeout", "0s"][..], &[][..]), (&[], &[("KEYPOOL_IDLE_TIMEOUT", "0ms")]), (&[], &[])]
    {
        let daemon = Daemon::start(args, env);
        assert_eq!(daemon.idle_timeout, "off", "{args:?} {env:?}");
        let mut c = Client::connect(daemon.addr).await;
        c.expect_silence(IDLE * 2).await;
        assert_eq!(c.cmd("PING").await, "PONG", "{args:?} {env:?}");
    }
}

#[tokio::test]
async fn an_idle_timeout_that_is_not_a_duration_is_refused_at_start() {
    for value in ["5", "1.5s", "soon"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keypool"))
            .args(["--listen", "127.0.0.1:0", "--idle-timeout", value])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keypool");
        // A daemon that accepted the value would run until killed.
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the child") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("--idle-timeout {value} was accepted: the daemon is running");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr is piped"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "--idle-timeout {value} exited with {status}");
        assert!(stderr.contains("--idle-timeout"), "the message does not name the flag:\n{stderr}");
    }
}
