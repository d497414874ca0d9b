//! Shared helpers for the integration tests: starting an in-process server on a free port, the
//! [`typed`] helpers around `keypool::client::Client` (the library's own client, which tests of
//! behaviour drive the daemon through), and a tiny raw line client over a tokio `TcpStream` that checks
//! every reply line is ended by CRLF.
//!
//! Which tests use the raw [`Client`], and why. Tests of behaviour drive the daemon through the typed
//! client (concurrency.rs, expiry.rs and handoff.rs wholly; most of waiting.rs, leases.rs, autorel.rs
//! and secrets.rs; three tests of pools.rs). The raw client stays where the typed one would hide what a
//! test asserts, each file saying which of its tests and why:
//!
//! - exact reply lines and framing: CRLF endings, v1's `KEY <id>` forms, `LEASED`, `USING`, `OK`, INFO's
//!   and `STATS <pool>`'s fields by name and order, and fields that must be absent (the typed `Info` and
//!   `Stats` ignore what they do not expect, and `Stats` is unordered);
//! - `CLIENT_ERROR` texts and malformed input (the typed client refuses much of it before sending);
//! - pipelining on one connection: requests held back behind a wait, or dropped with it, bursts;
//! - a connection's own state that the typed client's pool of connections would hide: `QUIT` with the
//!   socket held open, a close for a line too long, pools a connection moved through under `AUTOREL`;
//! - durations spelled in `s`, `m` or `h` (the typed client always sends milliseconds).
//!
//! The other test files (commands.rs, bad_input.rs, pipelining.rs, auth.rs, http*.rs, persistence and
//! daemon tests, ...) were not part of this conversion and still use the raw client throughout.
//!
//! Every wait in here is bounded by [`IO_TIMEOUT`] (or an explicit deadline), so a server that stops
//! answering makes a test fail instead of hang.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keypool::pool::PoolConfig;
use keypool::server::{Config, Handle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The longest any single wait for the server may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The version the server must report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs `future`, failing the test with `what` if it takes longer than [`IO_TIMEOUT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(IO_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {IO_TIMEOUT:?} waiting for {what}"),
    }
}

/// A server configuration with long windows (nothing expires during a test) and room for many keys.
pub fn config() -> Config {
    Config {
        pool: PoolConfig {
            block_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(300),
            max_keys: 10_000_000,
        },
        max_connections: 1000,
        ..Config::default()
    }
}

/// [`config`] with the given block and keep-alive windows.
pub fn config_with_windows(block: Duration, keepalive: Duration) -> Config {
    let mut config = config();
    config.pool.block_timeout = block;
    config.pool.keepalive_timeout = keepalive;
    config
}

/// Starts a server on a free port of 127.0.0.1 in the current runtime.
pub async fn start(config: Config) -> Handle {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    within("the server to start", Handle::start(addr, config)).await.expect("the server binds 127.0.0.1:0")
}

/// Stops a server, failing the test if that takes longer than [`IO_TIMEOUT`].
pub async fn stop(handle: Handle) {
    within("the server to stop", handle.stop()).await;
}

/// Hangs up `clients`, then stops the server. A client still connected when the server stops is given
/// half a second to close its end (the server drains it so its last replies are not lost to a reset), so
/// closing them first keeps a test from paying that for each.
pub async fn close_and_stop(handle: Handle, clients: impl IntoIterator<Item = Client>) {
    drop(clients.into_iter().collect::<Vec<_>>());
    stop(handle).await;
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_millis() as u64
}

/// Seconds since the Unix epoch, by the system clock: the unit of a JWT's `exp`.
pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs()
}

/// A directory of its own under the system temp directory, removed with everything in it on drop: for
/// the tokens files and JWT secret files a server reads from disk. (The crate has no `tempfile`
/// dependency, and a unique path is all these tests need.)
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty directory whose name has `label`, this process's id and a counter in it.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("keypool-{label}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        // Left over from a killed run of a process with the same id: start from nothing.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|error| panic!("create {}: {error}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file `name` in the directory and returns its path. The contents replace the old ones
    /// whole (written aside, then renamed over, as an editor or a config tool would), so a reader that
    /// races the write sees the old file or the new one, never half of it.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        let staging = self.path.join(format!(".{name}.staging"));
        std::fs::write(&staging, contents).unwrap_or_else(|error| panic!("write {}: {error}", staging.display()));
        std::fs::rename(&staging, &path).unwrap_or_else(|error| panic!("rename to {}: {error}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Panics unless `id` is a well-formed key id: 24 ASCII letters and digits.
pub fn assert_id(id: &str) {
    assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_alphanumeric()), "malformed key id {id:?}");
}

/// The key id in a `KEY <id>` line; panics on anything else.
pub fn key_of(line: &str) -> String {
    let id = line.strip_prefix("KEY ").unwrap_or_else(|| panic!("expected `KEY <id>`, got {line:?}"));
    assert_id(id);
    id.to_string()
}

/// The same id with the case of every letter swapped: a different, well-formed id.
pub fn swap_case(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() }).collect()
}

/// A well-formed id that no server will ever generate by chance (the odds are 62^-24).
pub const UNKNOWN_ID: &str = "000000000000000000000000";

/// The reading half of a connection: reply lines, one at a time.
pub struct Lines {
    reader: BufReader<OwnedReadHalf>,
}

impl Lines {
    /// The next reply line, without its CRLF, or `None` at a clean end of stream. Fails the test if the
    /// line does not end with CRLF, holds another CR or LF, or is not ASCII.
    pub async fn try_line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        let read = within("a reply line", self.reader.read_until(b'\n', &mut buf)).await?;
        if read == 0 {
            return Ok(None);
        }
        assert!(buf.ends_with(b"\r\n"), "reply line not ended by CRLF: {:?}", String::from_utf8_lossy(&buf));
        buf.truncate(buf.len() - 2);
        assert!(!buf.contains(&b'\r'), "stray CR inside a reply line: {:?}", String::from_utf8_lossy(&buf));
        assert!(buf.is_ascii(), "reply line is not ASCII: {:?}", String::from_utf8_lossy(&buf));
        Ok(Some(String::from_utf8(buf).expect("ASCII is UTF-8")))
    }

    /// The next reply line; fails the test on end of stream or an I/O error.
    pub async fn line(&mut self) -> String {
        match self.try_line().await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the server closed the connection where a reply line was expected"),
            Err(error) => panic!("reading a reply line: {error}"),
        }
    }

    /// The lines of a block up to (not including) its `END`. Fails the test if the first line is not a
    /// `KEY` or `STAT` line (an error or `NOT_FOUND` instead of a block).
    pub async fn block(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line == "END" {
                return lines;
            }
            assert!(
                line.starts_with("KEY ") || line.starts_with("STAT "),
                "expected KEY or STAT lines ending with END, got {line:?} after {} lines",
                lines.len()
            );
            lines.push(line);
        }
    }

    /// The ids of a `KEY` block, checked to be well formed.
    pub async fn key_block(&mut self) -> Vec<String> {
        self.block().await.iter().map(|line| key_of(line)).collect()
    }

    /// A `POOLS` page: its `POOL <name> <keys>` lines as pairs, and the cursor of its `END <cursor>`.
    /// Fails the test on any other line.
    pub async fn pools_page(&mut self) -> (Vec<(String, u64)>, u64) {
        let mut pools = Vec::new();
        loop {
            let line = self.line().await;
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["END", cursor] => {
                    let cursor = cursor.parse().unwrap_or_else(|_| panic!("malformed cursor in {line:?}"));
                    return (pools, cursor);
                }
                ["POOL", name, keys] => {
                    let keys = keys.parse().unwrap_or_else(|_| panic!("malformed key count in {line:?}"));
                    pools.push((name.to_string(), keys));
                }
                _ => panic!("expected POOL lines ending with `END <cursor>`, got {line:?} after {} pools", pools.len()),
            }
        }
    }

    /// Waits for the server to close the connection with nothing more sent: a clean end of stream, or a
    /// reset (which also closes it). Fails the test if a line arrives or nothing happens in time.
    pub async fn expect_closed(&mut self) {
        match self.try_line().await {
            Ok(None) => {}
            Err(error) if matches!(error.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {}
            Err(error) => panic!("expected the connection to close, got the error {error}"),
            Ok(Some(line)) => panic!("expected the connection to close, got the line {line:?}"),
        }
    }

    /// Fails the test if anything at all arrives (or the connection closes) within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        let mut buf = Vec::new();
        if let Ok(read) = tokio::time::timeout(quiet, self.reader.read_until(b'\n', &mut buf)).await {
            panic!("expected no reply, got {read:?} with {:?}", String::from_utf8_lossy(&buf));
        }
    }
}

/// A connection to the server: a writing half and a [`Lines`] reader, usable at the same time.
pub struct Client {
    pub lines: Lines,
    pub writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = within("a connection", TcpStream::connect(addr)).await.expect("connect to the server");
        Client::from_stream(stream)
    }

    /// Connects to `addr` with a kernel receive buffer of only a few kilobytes, so that large replies
    /// back up into the server's send buffer until the client reads them.
    pub async fn connect_with_small_receive_buffer(addr: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
        Client::from_stream(within("a connection", socket.connect(addr)).await.expect("connect to the server"))
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        let (reader, writer) = stream.into_split();
        Client { lines: Lines { reader: BufReader::new(reader) }, writer }
    }

    /// Sends raw bytes, exactly as given.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        within("a write", self.writer.write_all(bytes.as_ref())).await.expect("write to the server");
    }

    /// Sends `request` followed by CRLF.
    pub async fn send_line(&mut self, request: &str) {
        self.send(format!("{request}\r\n")).await;
    }

    /// Closes the writing half (sends FIN); the server still may answer.
    pub async fn shutdown_write(&mut self) {
        within("a shutdown", self.writer.shutdown()).await.expect("shut down the write half");
    }

    /// See [`Lines::line`].
    pub async fn line(&mut self) -> String {
        self.lines.line().await
    }

    /// See [`Lines::block`].
    pub async fn block(&mut self) -> Vec<String> {
        self.lines.block().await
    }

    /// See [`Lines::expect_closed`].
    pub async fn expect_closed(&mut self) {
        self.lines.expect_closed().await;
    }

    /// See [`Lines::expect_silence`].
    pub async fn expect_silence(&mut self, quiet: Duration) {
        self.lines.expect_silence(quiet).await;
    }

    /// Sends one request line and returns the single reply line.
    pub async fn cmd(&mut self, request: &str) -> String {
        self.send_line(request).await;
        self.line().await
    }

    /// `GEN count`: the new ids, checked to be well formed and as many as asked for.
    pub async fn gen(&mut self, count: usize) -> Vec<String> {
        self.send_line(&format!("GEN {count}")).await;
        let ids = self.lines.key_block().await;
        assert_eq!(ids.len(), count, "GEN {count} returned {} keys", ids.len());
        ids
    }

    /// `GET`: the leased id, or `None` on `NOT_FOUND`.
    pub async fn get(&mut self) -> Option<String> {
        let reply = self.cmd("GET").await;
        if reply == "NOT_FOUND" {
            None
        } else {
            Some(key_of(&reply))
        }
    }

    /// `INFO id` as a map from field to value, or `None` on `NOT_FOUND`. Checks the field order.
    pub async fn info(&mut self, id: &str) -> Option<HashMap<String, String>> {
        self.send_line(&format!("INFO {id}")).await;
        let first = self.line().await;
        if first == "NOT_FOUND" {
            return None;
        }
        let mut lines = vec![first];
        loop {
            let line = self.line().await;
            if line == "END" {
                break;
            }
            lines.push(line);
        }
        let pairs = stat_pairs(&lines);
        let names: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
        let state = pairs.iter().find(|(name, _)| name == "state").map(|(_, value)| value.as_str());
        // A key that never expires by keep-alive (ADD <secret> 0s) has no alive_until_ms.
        let mut expected = vec!["id", "state", "created_ms"];
        if names.contains(&"alive_until_ms") {
            expected.push("alive_until_ms");
        }
        match state {
            Some("blocked") => expected.extend(["blocked_until_ms", "token"]),
            Some("delayed") => expected.push("free_at_ms"),
            _ => {}
        }
        expected.push("leases");
        assert_eq!(names, expected, "INFO fields of {id}");
        Some(pairs.into_iter().collect())
    }

    /// The state of `id` (`free`, `blocked`) or `None` if the key does not exist.
    pub async fn state(&mut self, id: &str) -> Option<String> {
        self.info(id).await.map(|info| info["state"].clone())
    }

    /// `STATS` as a map from name to value.
    pub async fn stats(&mut self) -> HashMap<String, String> {
        self.send_line("STATS").await;
        stat_pairs(&self.block().await).into_iter().collect()
    }

    /// One numeric figure of `STATS`.
    pub async fn stat(&mut self, name: &str) -> u64 {
        let stats = self.stats().await;
        let value = stats.get(name).unwrap_or_else(|| panic!("STATS has no {name}"));
        value.parse().unwrap_or_else(|_| panic!("STAT {name} {value:?} is not a number"))
    }

    /// Polls `STATS` every few milliseconds until the figure `name` is `want`; fails the test if it is
    /// not within [`IO_TIMEOUT`]. For state another connection changes (a wait queued, a close noticed).
    pub async fn wait_for_stat(&mut self, name: &str, want: u64) {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            let got = self.stat(name).await;
            if got == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "STAT {name} is still {got}, not {want}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `LEASE` followed by `args` (`""`, `"2s"`, `"0ms 500ms"`): the lease, or `None` on `NOT_FOUND`.
    pub async fn lease(&mut self, args: &str) -> Option<Leased> {
        let reply = self.cmd(format!("LEASE {args}").trim_end()).await;
        if reply == "NOT_FOUND" {
            None
        } else {
            Some(leased_of(&reply))
        }
    }

    /// `ADD` followed by `args` (a secret, then maybe a keep-alive), expecting a new key: its id.
    pub async fn add(&mut self, args: &str) -> String {
        key_of(&self.cmd(&format!("ADD {args}")).await)
    }

    /// `USE pool`, failing the test unless the server answers `USING pool`.
    pub async fn use_pool(&mut self, pool: &str) {
        assert_eq!(self.cmd(&format!("USE {pool}")).await, format!("USING {pool}"), "USE {pool}");
    }

    /// `POOLS cursor`: the page's pools with their key counts, in the order listed, and the next cursor.
    pub async fn pools_page(&mut self, cursor: u64) -> (Vec<(String, u64)>, u64) {
        self.send_line(&format!("POOLS {cursor}")).await;
        self.lines.pools_page().await
    }

    /// Every pool with its key count, walking `POOLS` from cursor 0 until the server answers `END 0`.
    /// Fails the test if a page lists more than 1000 pools or a pool is listed twice.
    pub async fn all_pools(&mut self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        let mut cursor = 0;
        loop {
            let (page, next) = self.pools_page(cursor).await;
            assert!(page.len() <= 1000, "POOLS {cursor} listed {} pools, more than a page", page.len());
            for (name, keys) in page {
                assert!(all.insert(name.clone(), keys).is_none(), "pool {name} listed twice");
            }
            if next == 0 {
                return all;
            }
            assert!(next > cursor, "POOLS {cursor} answered the cursor {next}, which does not move on");
            cursor = next;
        }
    }

    /// `STATS pool` as ordered pairs, its `STAT pool <name>` line included.
    pub async fn pool_stats(&mut self, pool: &str) -> Vec<(String, String)> {
        self.send_line(&format!("STATS {pool}")).await;
        stat_pairs(&self.block().await)
    }

    /// The raw lines `INFO id` answers, up to (not including) `END`; `["NOT_FOUND"]` for no such key.
    pub async fn info_lines(&mut self, id: &str) -> Vec<String> {
        self.send_line(&format!("INFO {id}")).await;
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line == "END" || line == "NOT_FOUND" {
                if line == "NOT_FOUND" {
                    lines.push(line);
                }
                return lines;
            }
            lines.push(line);
        }
    }
}

/// A `LEASED <id> <token>[ <secret>]` reply, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leased {
    pub id: String,
    pub token: u64,
    pub secret: Option<String>,
}

/// The parts of a `LEASED <id> <token>[ <secret>]` line; panics on anything else.
pub fn leased_of(line: &str) -> Leased {
    let words: Vec<&str> = line.split(' ').collect();
    let (["LEASED", id, token] | ["LEASED", id, token, _]) = words[..] else {
        panic!("expected `LEASED <id> <token>[ <secret>]`, got {line:?}");
    };
    assert_id(id);
    assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()), "malformed token in {line:?}");
    let token = token.parse().unwrap_or_else(|_| panic!("token in {line:?} does not fit a u64"));
    Leased { id: id.to_string(), token, secret: words.get(3).map(|secret| secret.to_string()) }
}

/// The id and secret of a `KEY <id> <secret>` line (a lease of a key with a secret); panics on anything
/// else, a plain `KEY <id>` included.
pub fn key_and_secret_of(line: &str) -> (String, String) {
    let words: Vec<&str> = line.split(' ').collect();
    let ["KEY", id, secret] = words[..] else {
        panic!("expected `KEY <id> <secret>`, got {line:?}");
    };
    assert_id(id);
    (id.to_string(), secret.to_string())
}

/// `STAT <name> <value>` lines as ordered pairs; fails the test on any other shape.
pub fn stat_pairs(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (Some("STAT"), Some(name), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                panic!("expected `STAT <name> <value>`, got {line:?}");
            };
            assert!(!value.is_empty() && !value.contains(' '), "STAT {name} has a malformed value {value:?}");
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// Parses a numeric field of an INFO or STATS map.
pub fn num(map: &HashMap<String, String>, name: &str) -> u64 {
    let value = map.get(name).unwrap_or_else(|| panic!("no field {name} in {map:?}"));
    value.parse().unwrap_or_else(|_| panic!("field {name} {value:?} is not a number"))
}

/// Helpers for tests that drive the daemon through the library's typed client,
/// `keypool::client::Client`. Every wait is bounded, as in the raw helpers.
pub mod typed {
    use std::net::SocketAddr;
    use std::time::Duration;

    use keypool::client::{Client, KeyId, KeyState};
    use keypool::server::Handle;

    use super::{stop, within, IO_TIMEOUT};

    /// A typed client of the server at `addr`, with the default options (no token, no pool, no
    /// AUTOREL). It opens its first connection here.
    pub async fn connect(addr: SocketAddr) -> Client {
        within("the typed client to connect", Client::connect(addr)).await.expect("the typed client connects")
    }

    /// A typed client of `addr` that sends `AUTOREL` on every connection.
    pub async fn connect_autorel(addr: SocketAddr) -> Client {
        let connecting = Client::builder(addr).autorel(true).connect();
        within("the typed client to connect", connecting).await.expect("the typed client connects")
    }

    /// Hangs up `clients` (every connection of each), then stops the server (which otherwise gives open
    /// connections half a second to close).
    pub async fn close_and_stop(handle: Handle, clients: impl IntoIterator<Item = Client>) {
        drop(clients.into_iter().collect::<Vec<_>>());
        stop(handle).await;
    }

    /// One numeric figure of `STATS`; fails the test when the daemon does not report it as a number.
    pub async fn stat(c: &Client, name: &str) -> u64 {
        let stats = within("STATS", c.stats()).await.expect("STATS");
        stats.number(name).unwrap_or_else(|| panic!("STATS has no numeric {name}: {:?}", stats.get(name)))
    }

    /// Polls `STATS` every few milliseconds until the figure `name` is `want`; fails the test if it is
    /// not within [`IO_TIMEOUT`].
    pub async fn wait_for_stat(c: &Client, name: &str, want: u64) {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            let got = stat(c, name).await;
            if got == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "STAT {name} is still {got}, not {want}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The state of `id` as `INFO` reports it, or `None` when there is no such key.
    pub async fn state(c: &Client, id: &KeyId) -> Option<KeyState> {
        within("INFO", c.info(id)).await.expect("INFO").map(|info| info.state)
    }

    /// The token of the lease `id` is under; fails the test unless the key exists and is blocked.
    pub async fn token_of(c: &Client, id: &KeyId) -> u64 {
        match state(c, id).await {
            Some(KeyState::Blocked { token, .. }) => token,
            other => panic!("{id} is not blocked: {other:?}"),
        }
    }

    /// When the lease `id` is under ends by itself (Unix ms); fails the test unless it is blocked.
    pub async fn blocked_until(c: &Client, id: &KeyId) -> u64 {
        match state(c, id).await {
            Some(KeyState::Blocked { until_ms, .. }) => until_ms,
            other => panic!("{id} is not blocked: {other:?}"),
        }
    }

    /// A well-formed id no server will ever hand out by chance (see [`super::UNKNOWN_ID`]).
    pub fn unknown_id() -> KeyId {
        KeyId::parse(super::UNKNOWN_ID.as_bytes()).expect("a well-formed id")
    }
}
