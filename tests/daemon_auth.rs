//! The real binary with authentication (issue 4). Protected mode: listening on a non-loopback address with
//! auth off is refused at start, with a message naming `--auth-tokens`, `--jwt-secret-file` and
//! `--insecure-open`; any one of those lets the daemon start there. Credential files that cannot be used
//! stop the daemon at start without quoting a token. SIGHUP re-reads the tokens file: new tokens work and
//! removed ones are refused, while a broken or missing file is logged (naming the file, never a token) and
//! the tokens already loaded stay in force; a daemon with JWTs only says it has nothing to reload.
//!
//! Daemons bound to 0.0.0.0 are reached through 127.0.0.1 only. Every wait polls with a deadline. The
//! daemons log at debug level, where every request and every AUTH outcome is logged, so that the check
//! that no token reaches the log covers the most the daemon can print.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{unix_secs, Client, TempDir};
use keypool::auth::mint_hs256;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_keypool");

/// How long a daemon may take to start listening, to exit once told to, or to act on a SIGHUP.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(5);

const NOAUTH: &str = "ERROR NOAUTH authentication required";
const INVALID: &str = "CLIENT_ERROR invalid token";

/// What the daemon logs when a SIGHUP finds a tokens file it cannot use.
const RELOAD_REFUSED: &str = "SIGHUP: the tokens file is not valid; keeping the tokens loaded before";

/// A command line for the binary, shielded from the caller's `KEYPOOL_*` and `RUST_LOG` settings, logging
/// at debug level without colours.
fn keypool(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYPOOL_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs the binary to completion, failing the test if it is still running after [`PROCESS_TIMEOUT`]:
/// `(status, stderr)`.
async fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = keypool(args).spawn().expect("spawn keypool");
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keypool {args:?} was still running after {PROCESS_TIMEOUT:?}: it should have refused to start");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (status, stderr)
}

/// A free port, found by binding port 0 of 127.0.0.1 and letting go of it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local address").port()
}

/// A running daemon and what it has logged so far (a thread copies its stderr as it comes), killed if
/// the test ends without stopping it.
struct Daemon {
    child: Child,
    /// Where to reach it: always 127.0.0.1, whatever address it listens on.
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    copier: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the binary listening on a free port of `host` (such as `127.0.0.1` or `0.0.0.0`) with
    /// `args`, and waits until it answers a bare PING on 127.0.0.1 (which needs no AUTH).
    async fn start(host: &str, args: &[&str]) -> Daemon {
        for _attempt in 0..3 {
            let port = free_port();
            let listen = format!("{host}:{port}");
            let mut full_args = vec!["--listen", listen.as_str()];
            full_args.extend_from_slice(args);
            let mut child = keypool(&full_args).spawn().expect("spawn keypool");
            let log = Arc::new(Mutex::new(String::new()));
            let pipe = child.stderr.take().expect("stderr is piped");
            let copier = std::thread::spawn({
                let log = Arc::clone(&log);
                move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        let mut log = log.lock().expect("the log lock");
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            });
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
            let mut daemon = Daemon { child, addr, log, copier: Some(copier) };
            let deadline = Instant::now() + PROCESS_TIMEOUT;
            loop {
                if daemon.child.try_wait().expect("poll the child").is_some() {
                    // Most likely someone else took the port between our probe and the daemon's bind.
                    break;
                }
                if let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await
                {
                    drop(stream);
                    let mut c = Client::connect(addr).await;
                    assert_eq!(c.cmd("PING").await, "PONG", "the daemon answers");
                    return daemon;
                }
                assert!(Instant::now() < deadline, "the daemon did not start listening on {listen}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!("keypool exited at start, retrying on another port; stderr:\n{}", daemon.log());
        }
        panic!("keypool would not start on any of three free ports");
    }

    /// Everything the daemon has logged so far.
    fn log(&self) -> String {
        self.log.lock().expect("the log lock").clone()
    }

    /// Sends `signal` (such as `HUP` or `TERM`) with `kill`.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(&pid).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Fails the test if the daemon has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll the child") {
            panic!("the daemon exited with {status}; its log:\n{}", self.log());
        }
    }

    /// Waits until the daemon has logged `text` `times` times in all; fails the test after
    /// [`PROCESS_TIMEOUT`].
    async fn wait_for_log(&mut self, text: &str, times: usize) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let log = self.log();
            if log.matches(text).count() >= times {
                return;
            }
            self.assert_running();
            assert!(Instant::now() < deadline, "the daemon did not log {text:?} {times} times; its log:\n{log}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls `AUTH token`, each time on a new connection (so failures never add up to three), until the
    /// answer is `want`: for a reload, which the daemon does some time after the signal. Fails the test
    /// after [`PROCESS_TIMEOUT`].
    async fn wait_for_auth(&mut self, token: &str, want: &str) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let mut c = Client::connect(self.addr).await;
            let got = c.cmd(&format!("AUTH {token}")).await;
            if got == want {
                return;
            }
            self.assert_running();
            assert!(Instant::now() < deadline, "AUTH still answers {got:?}, not {want:?}; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the daemon with SIGTERM, checks it exits with status 0, and returns all it logged.
    async fn stop(mut self) -> String {
        self.signal("TERM");
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                break status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit within {PROCESS_TIMEOUT:?} of SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The pipe is closed now, so the copier has the whole log once it ends.
        if let Some(copier) = self.copier.take() {
            copier.join().expect("the log copier");
        }
        let log = self.log();
        assert!(status.success(), "after SIGTERM the daemon exited with {status}; its log:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A new connection to `addr` that has sent `AUTH token` and been answered `OK`.
async fn authed(addr: SocketAddr, token: &str) -> Client {
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&format!("AUTH {token}")).await, "OK", "AUTH with a valid token");
    c
}

/// Fails the test unless `AUTH token` on a new connection is refused.
async fn assert_refused(addr: SocketAddr, token: &str, why: &str) {
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&format!("AUTH {token}")).await, INVALID, "{why}");
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("the temp dir has a UTF-8 path")
}

#[tokio::test]
async fn a_non_loopback_listen_without_auth_is_refused_at_start() {
    // Port 0: a daemon that wrongly went ahead would listen on some free port, and be killed on timeout.
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (status, stderr) = run_to_exit(&["--listen", listen]).await;
        assert!(!status.success(), "--listen {listen} with auth off exited with {status}");
        for word in ["--auth-tokens", "--jwt-secret-file", "--insecure-open"] {
            assert!(stderr.contains(word), "--listen {listen}: the message does not mention {word}:\n{stderr}");
        }
        assert!(!stderr.contains("keypool listening"), "--listen {listen}: it started listening:\n{stderr}");
    }
    // The environment is refused the same way.
    let mut command = keypool(&[]);
    command.env("KEYPOOL_LISTEN", "0.0.0.0:0");
    let mut child = command.spawn().expect("spawn keypool");
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("KEYPOOL_LISTEN=0.0.0.0:0 with auth off was not refused");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(!status.success(), "KEYPOOL_LISTEN=0.0.0.0:0 with auth off exited with {status}");

    // --jwt-audience alone turns nothing on: it needs the secret file.
    let (status, stderr) = run_to_exit(&["--jwt-audience", "keypool"]).await;
    assert!(!status.success(), "--jwt-audience alone exited with {status}");
    assert!(stderr.contains("--jwt-secret-file"), "the message does not mention --jwt-secret-file:\n{stderr}");
}

#[tokio::test]
async fn insecure_open_lets_a_daemon_listen_off_loopback_without_auth() {
    let daemon = Daemon::start("0.0.0.0", &["--insecure-open"]).await;
    let mut c = Client::connect(daemon.addr).await;
    assert_eq!(c.gen(2).await.len(), 2, "no AUTH needed");
    assert_eq!(c.cmd("AUTH anything").await, "CLIENT_ERROR authentication is not enabled");
    drop(c);
    daemon.stop().await;
}

#[tokio::test]
async fn a_tokens_file_lets_a_daemon_listen_off_loopback() {
    let files = TempDir::new("daemon-auth");
    let tokens = files.write("tokens", "# ops\ntok-open-Qe51 team-a\n");
    let daemon = Daemon::start("0.0.0.0", &["--auth-tokens", path_arg(&tokens)]).await;
    let mut c = Client::connect(daemon.addr).await;
    assert_eq!(c.cmd("GEN").await, NOAUTH);
    assert_eq!(c.cmd("AUTH tok-open-Qe51").await, "OK");
    c.gen(1).await;
    assert_eq!(c.cmd("USE default").await, "CLIENT_ERROR forbidden");
    drop(c);
    let log = daemon.stop().await;
    assert!(!log.contains("tok-open-Qe51"), "the token is in the log:\n{log}");
}

#[tokio::test]
async fn a_jwt_secret_lets_a_daemon_listen_off_loopback_and_sighup_leaves_it_be() {
    let files = TempDir::new("daemon-auth");
    let secret = b"daemon-test jwt secret, long enough";
    // The trailing newline that `echo` would add is not part of the secret.
    let secret_file = files.write("jwt-secret", [&secret[..], b"\n"].concat());
    let args = ["--jwt-secret-file", path_arg(&secret_file), "--jwt-audience", "keypool-test"];
    let mut daemon = Daemon::start("0.0.0.0", &args).await;
    let good = mint_hs256(secret, "team-j", unix_secs() + 3600, Some("keypool-test"));
    let mut c = authed(daemon.addr, &good).await;
    c.gen(1).await;
    assert_refused(daemon.addr, &mint_hs256(secret, "team-j", unix_secs() + 3600, None), "no aud").await;
    assert_refused(daemon.addr, &mint_hs256(b"other", "*", unix_secs() + 3600, Some("keypool-test")), "forged").await;

    // With no tokens file there is nothing to reload; the daemon says so and goes on.
    daemon.signal("HUP");
    daemon.wait_for_log("SIGHUP: no --auth-tokens file to reload", 1).await;
    authed(daemon.addr, &good).await;
    drop(c);
    let log = daemon.stop().await;
    let signature = good.rsplit('.').next().expect("a signature");
    assert!(!log.contains(signature), "a JWT is in the log:\n{log}");
    assert!(!log.contains("daemon-test jwt secret"), "the secret is in the log:\n{log}");
}

#[tokio::test]
async fn credential_files_that_cannot_be_used_stop_the_daemon_at_start() {
    let files = TempDir::new("daemon-auth");
    let bad_tokens = files.write("tokens", "good-tok-Aa11 team-a\nsecret-tok-Bb22 bad/pool\n");
    let (status, stderr) = run_to_exit(&["--auth-tokens", path_arg(&bad_tokens)]).await;
    assert!(!status.success(), "a tokens file with a bad line: exited with {status}");
    for word in ["--auth-tokens", path_arg(&bad_tokens), "line 2"] {
        assert!(stderr.contains(word), "the message does not mention {word:?}:\n{stderr}");
    }
    for token in ["good-tok-Aa11", "secret-tok-Bb22"] {
        assert!(!stderr.contains(token), "the message quotes the token {token}:\n{stderr}");
    }

    let missing = files.path().join("no-such-file");
    for flag in ["--auth-tokens", "--jwt-secret-file"] {
        let (status, stderr) = run_to_exit(&[flag, path_arg(&missing)]).await;
        assert!(!status.success(), "{flag} of a missing file: exited with {status}");
        assert!(stderr.contains(flag) && stderr.contains(path_arg(&missing)), "{flag}:\n{stderr}");
    }

    let empty_secret = files.write("jwt-secret", "\n");
    let (status, stderr) = run_to_exit(&["--jwt-secret-file", path_arg(&empty_secret)]).await;
    assert!(!status.success(), "an empty JWT secret: exited with {status}");
    assert!(stderr.contains("--jwt-secret-file") && stderr.contains("empty"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_the_tokens_file_and_a_broken_one_keeps_the_tokens_in_force() {
    // Tokens that appear nowhere else, so that finding one in the log can only mean it was printed.
    const OLD: &str = "tok-old-Gx71wM";
    const STAY: &str = "tok-stay-Rk09pL";
    const NEW: &str = "tok-new-Jd44sQ";
    const NEWER: &str = "tok-newer-Zt18cV";
    const LONELY: &str = "tok-lonely-Bn36yF";

    let files = TempDir::new("daemon-auth");
    let tokens = files.write("tokens", format!("{OLD} team-a\n{STAY} *\n"));
    let mut daemon = Daemon::start("127.0.0.1", &["--auth-tokens", path_arg(&tokens)]).await;
    let addr = daemon.addr;
    let mut held = authed(addr, OLD).await;
    held.gen(1).await;
    authed(addr, STAY).await;
    assert_refused(addr, NEW, "not in the file yet").await;

    // A new file: its new token works and the one it dropped is refused; the one in both stays.
    files.write("tokens", format!("{NEW} team-b\n{STAY} *\n"));
    daemon.signal("HUP");
    daemon.wait_for_auth(NEW, "OK").await;
    assert_refused(addr, OLD, "removed by the reload").await;
    authed(addr, STAY).await;
    daemon.wait_for_log("SIGHUP: reloaded the tokens file", 1).await;
    // A connection that authenticated before the reload keeps its grant.
    held.gen(1).await;

    // A broken file: logged, naming the file and the line, and the tokens of the last good file stay.
    files.write("tokens", format!("{NEWER} team-c\n{LONELY}\n"));
    daemon.signal("HUP");
    daemon.wait_for_log(RELOAD_REFUSED, 1).await;
    let log = daemon.log();
    let refusal = log.lines().find(|line| line.contains(RELOAD_REFUSED)).expect("the refusal line");
    assert!(refusal.contains("ERROR"), "the refusal is not logged as an error: {refusal}");
    assert!(refusal.contains(path_arg(&tokens)) && refusal.contains("line 2"), "{refusal}");
    authed(addr, NEW).await;
    authed(addr, STAY).await;
    assert_refused(addr, NEWER, "a token of a file that was refused").await;
    assert_refused(addr, OLD, "still removed").await;

    // No file at all: the same.
    std::fs::remove_file(&tokens).expect("remove the tokens file");
    daemon.signal("HUP");
    daemon.wait_for_log(RELOAD_REFUSED, 2).await;
    authed(addr, NEW).await;

    // A good file again is taken.
    files.write("tokens", format!("{NEWER} team-c\n"));
    daemon.signal("HUP");
    daemon.wait_for_auth(NEWER, "OK").await;
    assert_refused(addr, NEW, "removed by the last reload").await;
    assert_refused(addr, STAY, "removed by the last reload").await;

    drop(held);
    let log = daemon.stop().await;
    // The log is at debug level: every request and every AUTH outcome was logged, and no token with them.
    assert!(log.contains("AUTH refused") && log.contains("authenticated"), "AUTH was not logged:\n{log}");
    for token in [OLD, STAY, NEW, NEWER, LONELY] {
        assert!(!log.contains(token), "the token {token} is in the log:\n{log}");
    }
}
