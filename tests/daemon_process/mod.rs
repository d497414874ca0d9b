//! The real `keypool` binary as a child process, for the tests that must kill it, restart it on the same
//! data directory, starve it of disk, or run it as another user: spawning it with a clean environment
//! on a free port of 127.0.0.1, waiting until it answers, collecting its stderr, and stopping it.
//!
//! stderr is read by a thread of its own from the moment the child starts, so a chatty daemon never
//! blocks on a full pipe, and a test can read what it said so far at any time (a killed daemon's last
//! words included). Every wait here is bounded.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keypool");

/// How long a daemon may take to start listening (a recovery included), or to exit once told to.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// How a daemon is launched: the binary itself, or through a wrapper that ends by exec'ing it (so the
/// child's pid is the daemon's, and `prlimit --pid` and signals reach the daemon itself).
#[derive(Clone, Debug)]
pub enum Launcher {
    /// The binary at this path.
    Direct(OsString),
    /// `program args... <binary> <daemon args...>`.
    Wrapped { program: OsString, args: Vec<OsString>, binary: OsString },
}

impl Launcher {
    /// The binary cargo built, run directly.
    pub fn binary() -> Launcher {
        Launcher::Direct(BIN.into())
    }

    /// `sh -c 'trap "" XFSZ; exec "$0" "$@"' <binary> ...`: the daemon with SIGXFSZ ignored (ignored
    /// signals survive exec), so that a write past RLIMIT_FSIZE fails with EFBIG instead of killing it.
    pub fn ignoring_sigxfsz() -> Launcher {
        Launcher::Wrapped {
            program: "sh".into(),
            args: vec!["-c".into(), "trap '' XFSZ; exec \"$0\" \"$@\"".into()],
            binary: BIN.into(),
        }
    }

    /// `setpriv --reuid=<uid> --regid=<uid> --clear-groups <binary> ...`: the daemon as another user.
    pub fn as_user(uid: u32, binary: &Path) -> Launcher {
        Launcher::Wrapped {
            program: "setpriv".into(),
            args: vec![format!("--reuid={uid}").into(), format!("--regid={uid}").into(), "--clear-groups".into()],
            binary: binary.into(),
        }
    }

    /// A command line running the daemon with `args`, shielded from the caller's `KEYPOOL_*`, `RUST_LOG`
    /// and backtrace settings (a backtrace would bury the one-line error the tests read).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = match self {
            Launcher::Direct(binary) => Command::new(binary),
            Launcher::Wrapped { program, args, binary } => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        command.args(args).env("RUST_LOG", "info").env("NO_COLOR", "1");
        command.env_remove("RUST_BACKTRACE").env_remove("RUST_LIB_BACKTRACE");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYPOOL_") {
                command.env_remove(name);
            }
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        command
    }
}

/// A free port on 127.0.0.1, found by binding port 0 and letting go of it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local address").port()
}

/// A child's stderr, collected by a thread as it arrives.
struct Collected {
    text: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Collected {
    fn start(child: &mut Child) -> Collected {
        let text = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|mut pipe| {
            let text = Arc::clone(&text);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    text.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            })
        });
        Collected { text, reader }
    }

    fn so_far(&self) -> String {
        self.text.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Everything, once the child has exited (its end of the pipe is closed then).
    fn all(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.so_far()
    }
}

/// Runs the daemon to completion, expecting it to exit by itself: `(status, stderr)`.
pub fn run_to_exit(launcher: &Launcher, args: &[&str]) -> (ExitStatus, String) {
    let mut child = launcher.command(args).spawn().expect("spawn keypool");
    let mut stderr = Collected::start(&mut child);
    let Some(status) = wait_exit(&mut child, PROCESS_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("keypool {args:?} did not exit within {PROCESS_TIMEOUT:?}; stderr:\n{}", stderr.all());
    };
    (status, stderr.all())
}

/// Polls `child` until it exits or `limit` passes.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running daemon, killed if the test ends without stopping it.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    stderr: Collected,
}

impl Daemon {
    /// Starts the binary with `args` on a free port and waits until it answers PING.
    pub async fn start(args: &[&str]) -> Daemon {
        Daemon::start_with(&Launcher::binary(), args).await
    }

    /// Starts the daemon through `launcher` with `args` (plus `--listen` on a free port) and waits
    /// until it answers PING. Panics, with its stderr, if it exits instead.
    pub async fn start_with(launcher: &Launcher, args: &[&str]) -> Daemon {
        match Daemon::try_start_with(launcher, args).await {
            Ok(daemon) => daemon,
            Err((status, stderr)) => panic!("keypool {args:?} exited at start with {status}; stderr:\n{stderr}"),
        }
    }

    /// Starts the daemon as [`Daemon::start_with`] does, for a test that expects it may refuse to:
    /// the running daemon, or its exit status and stderr.
    pub async fn try_start_with(launcher: &Launcher, args: &[&str]) -> Result<Daemon, (ExitStatus, String)> {
        for _attempt in 0..3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("an address");
            let listen = addr.to_string();
            let mut full_args = vec!["--listen", listen.as_str()];
            full_args.extend_from_slice(args);
            let mut child = launcher.command(&full_args).spawn().expect("spawn keypool");
            let stderr = Collected::start(&mut child);
            let mut daemon = Daemon { child, addr, stderr };
            let deadline = Instant::now() + PROCESS_TIMEOUT;
            loop {
                if let Some(status) = daemon.child.try_wait().expect("poll the child") {
                    let said = daemon.stderr.all();
                    if said.contains("cannot listen on") {
                        // Someone took the port between our probe and the daemon's bind: try another.
                        break;
                    }
                    return Err((status, said));
                }
                if answers_ping(addr).await {
                    return Ok(daemon);
                }
                assert!(
                    Instant::now() < deadline,
                    "the daemon did not start listening on {addr}; stderr:\n{}",
                    daemon.stderr()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("keypool would not start on any of three free ports");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.so_far()
    }

    /// SIGKILL, and waits until the process is gone (so its lock on the data directory is released).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; checks the daemon exits with status 0 in time. Returns its stderr.
    pub fn stop(mut self) -> String {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
        let status = wait_exit(&mut self.child, PROCESS_TIMEOUT)
            .unwrap_or_else(|| panic!("the daemon did not exit within {PROCESS_TIMEOUT:?} of SIGTERM"));
        let stderr = self.stderr.all();
        assert!(status.success(), "after SIGTERM the daemon exited with {status}; stderr:\n{stderr}");
        stderr
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// Whether something at `addr` answers `PING` with `PONG` within a second.
async fn answers_ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut line = String::new();
        BufReader::new(&mut stream).read_line(&mut line).await.ok()?;
        Some(line == "PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}
