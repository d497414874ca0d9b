//! The keypool daemon: flags (or `KEYPOOL_*` environment variables) in, a running server out.
//!
//! Everything of substance lives in the library; this file only reads the configuration, sets up
//! logging and the runtime, binds the listener, and turns SIGINT/SIGTERM into a clean shutdown.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keypool::auth::{Authenticator, JwtVerifier};
use keypool::persist::{self, Fsync};
use keypool::pool::{PoolConfig, MAX_POOL_KEYS};
use keypool::protocol::duration;
use keypool::server::{self, Config};
use tracing_subscriber::EnvFilter;

/// A daemon that owns a pool of random API keys and leases them out over a memcached-style line
/// protocol. Try it with `nc 127.0.0.1 7171`, then type `GEN 3`, `GET`, `STATS`.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Address to listen on (host:port).
    #[arg(long, env = "KEYPOOL_LISTEN", default_value = "127.0.0.1:7171")]
    listen: String,

    /// How long GET blocks a key before it is released by itself (e.g. 250ms, 60s, 5m, 1h).
    #[arg(long, env = "KEYPOOL_BLOCK_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    block_timeout: Duration,

    /// How long a key lives without GEN or PING before it is deleted for good (e.g. 30s, 5m, 1h).
    #[arg(long, env = "KEYPOOL_KEEPALIVE_TIMEOUT", default_value = "5m", value_parser = positive_duration)]
    keepalive_timeout: Duration,

    /// The most keys the pool may hold; a GEN that would pass it is refused with `SERVER_ERROR pool full`.
    #[arg(long, env = "KEYPOOL_MAX_KEYS", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=MAX_POOL_KEYS as u64))]
    max_keys: u64,

    /// The most pools at once; a GEN or ADD that would create one more gets `SERVER_ERROR too many pools`.
    /// Each pool may hold up to --max-keys keys.
    #[arg(long, env = "KEYPOOL_MAX_POOLS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_pools: u64,

    /// The most clients served at once; more are told `SERVER_ERROR too many connections` and closed.
    #[arg(long, env = "KEYPOOL_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,

    /// The longest request line accepted, in bytes; a longer one gets `CLIENT_ERROR line too long` and the
    /// connection is closed.
    #[arg(long, env = "KEYPOOL_MAX_LINE", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    max_line: u64,

    /// The longest a `GET <wait>` or `LEASE <wait>` may wait for a free key; a longer wait is refused
    /// with `CLIENT_ERROR`.
    #[arg(long, env = "KEYPOOL_MAX_WAIT", default_value = "5m", value_parser = positive_duration)]
    max_wait: Duration,

    /// The longest block window a lease may ask for (`LEASE <wait> <block>`, `TOUCH`), and the longest
    /// delay of a `REL <id> <delay>`.
    #[arg(long, env = "KEYPOOL_MAX_BLOCK", default_value = "1h", value_parser = positive_duration)]
    max_block: Duration,

    /// The longest secret `ADD` accepts, in bytes. It must fit in --max-line with the command around it
    /// (32 bytes more). Default: 1024, or less if --max-line leaves less room.
    #[arg(long, env = "KEYPOOL_MAX_SECRET", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_secret: Option<u64>,

    /// A file of access tokens, one `<token> <pool>` (or `<token> *` for every pool) a line, `#` for
    /// comments. Turns authentication on: clients must send `AUTH <token>` first. Re-read on SIGHUP.
    #[arg(long, env = "KEYPOOL_AUTH_TOKENS", value_name = "FILE")]
    auth_tokens: Option<PathBuf>,

    /// A file holding the HS256 secret of JSON Web Tokens clients may send to AUTH (`exp` required; `sub`
    /// is the pool granted, `*` for all). Turns authentication on.
    #[arg(long, env = "KEYPOOL_JWT_SECRET_FILE", value_name = "FILE")]
    jwt_secret_file: Option<PathBuf>,

    /// The `aud` claim JWTs must carry (then they must carry it); without it, JWTs must carry none.
    #[arg(long, env = "KEYPOOL_JWT_AUDIENCE", requires = "jwt_secret_file")]
    jwt_audience: Option<String>,

    /// Listen on a non-loopback address without authentication. Without this, the daemon refuses to: any
    /// machine that can reach the port could take every key.
    #[arg(long, env = "KEYPOOL_INSECURE_OPEN")]
    insecure_open: bool,
    /// Close a connection that has sent nothing for this long and is owed no reply (e.g. 30s, 5m); one
    /// waiting for a key, or still being sent its replies, is not idle. 0s: never.
    #[arg(long, env = "KEYPOOL_IDLE_TIMEOUT", default_value = "0s", value_parser = duration_or_zero)]
    idle_timeout: Duration,

    /// Keep the keys on disk in this directory (created if missing): a snapshot and a log of every
    /// change, replayed at start-up. Without it, everything is in memory and gone at exit.
    #[arg(long, env = "KEYPOOL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// When the log is synced to disk: `always` before every reply to a change (nothing acknowledged is
    /// lost; connections share syncs), `everysec` once a second (a power cut loses up to a second), `no`
    /// when the OS likes. Needs --data-dir.
    #[arg(long, env = "KEYPOOL_FSYNC", default_value = "everysec", value_parser = ["always", "everysec", "no"], requires = "data_dir")]
    fsync: String,

    /// Compact the log (write a new snapshot, start a new log) once it is larger than this and twice the
    /// live data (e.g. 64MiB, 1GiB, 500000). Needs --data-dir.
    #[arg(long, env = "KEYPOOL_COMPACT_MIN", default_value = "64MiB", value_parser = byte_size, requires = "data_dir")]
    compact_min: u64,

    /// Start even if a file in --data-dir is damaged before its end: keep what comes before the damage
    /// and drop the rest (the log says how much). Without it, the daemon refuses to start and names the
    /// file and offset.
    #[arg(long, env = "KEYPOOL_RECOVER_TRUNCATE", requires = "data_dir")]
    recover_truncate: bool,

    /// Worker threads; 1 runs everything on one thread (tokio's current-thread runtime, the fastest
    /// choice on one core). Default: one per CPU core the process may run on.
    #[arg(long, env = "KEYPOOL_THREADS", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,

    /// Also serve the HTTP gateway (REST routes, /health, /metrics, /openapi.json) on this address
    /// (host:port), such as 127.0.0.1:7180, on the same pools. Off by default.
    #[arg(long, env = "KEYPOOL_HTTP", value_name = "ADDR")]
    http: Option<String>,
}

/// Room an ADD line needs besides its secret: `ADD `, a blank, and a keep-alive such as `10000000h`.
/// The smallest --max-line (64) leaves room for a 32-byte secret.
const ADD_OVERHEAD: usize = 32;

/// --max-secret when it is not given and --max-line leaves room for it.
const DEFAULT_MAX_SECRET: usize = 1024;

fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration::parse(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_string()),
        Ok(d) => Ok(d),
        Err(error) => Err(error.to_string()),
    }
}

fn duration_or_zero(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|error| error.to_string())
}

/// A size in bytes: a number, optionally followed by KiB, MiB or GiB (or K, M, G, also powers of 1024).
fn byte_size(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(format!("{text:?}: expected a size such as 500000, 64MiB or 1GiB")),
    };
    let number: u64 = digits.parse().map_err(|_| format!("{text:?}: expected a size such as 500000, 64MiB or 1GiB"))?;
    number.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

fn main() -> Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed, or past a file-size limit) must not panic the
        // thread that wrote it: that could be the log writer.
        .log_internal_errors(false)
        .init();

    let max_line = flags.max_line as usize;
    let jwt = flags
        .jwt_secret_file
        .as_deref()
        .map(|path| JwtVerifier::from_secret_file(path, flags.jwt_audience.clone()))
        .transpose()
        .context("--jwt-secret-file")?;
    let auth = Authenticator::new(flags.auth_tokens.clone(), jwt).context("--auth-tokens")?;
    let addr = resolve("--listen", &flags.listen)?;
    let http_addr = flags.http.as_deref().map(|http| resolve("--http", http)).transpose()?;
    for addr in std::iter::once(addr).chain(http_addr) {
        if !addr.ip().is_loopback() && !auth.is_enabled() && !flags.insecure_open {
            bail!(
                "refusing to listen on {addr} without authentication: any machine that reaches it could take \
                 every key. Turn authentication on with --auth-tokens FILE and/or --jwt-secret-file FILE, listen \
                 on a loopback address (127.0.0.1, ::1), or, if the network itself is trusted, pass --insecure-open"
            );
        }
    }
    let auth = Arc::new(auth);
    let config = Config {
        pool: PoolConfig {
            block_timeout: flags.block_timeout,
            keepalive_timeout: flags.keepalive_timeout,
            max_keys: flags.max_keys as usize,
        },
        max_connections: flags.max_connections as usize,
        max_line,
        max_pools: flags.max_pools as usize,
        auth: Arc::clone(&auth),
        max_wait: flags.max_wait,
        max_block: flags.max_block,
        max_secret: flags.max_secret.map_or(DEFAULT_MAX_SECRET.min(max_line - ADD_OVERHEAD), |n| n as usize),
        idle_timeout: Some(flags.idle_timeout).filter(|timeout| !timeout.is_zero()),
        persistence: flags.data_dir.as_ref().map(|dir| persist::Options {
            dir: dir.clone(),
            fsync: flags.fsync.parse().unwrap_or(Fsync::Everysec),
            compact_min: flags.compact_min,
            recover_truncate: flags.recover_truncate,
        }),
    };
    if config.max_secret + ADD_OVERHEAD > max_line {
        bail!(
            "--max-secret {} does not fit in --max-line {}: a line must hold ADD, the secret and a keep-alive \
             ({ADD_OVERHEAD} bytes more); raise --max-line or lower --max-secret",
            config.max_secret,
            config.max_line
        );
    }
    // available_parallelism honours CPU affinity, so a daemon pinned with taskset to one core gets the
    // current-thread runtime, which spares the work-stealing scheduler's overhead on every request.
    let threads =
        flags.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |n| n as usize);
    let runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
    .context("cannot start the tokio runtime")?;

    runtime.block_on(async {
        // Watch for SIGHUP before the port opens: from then on someone may send it, and its default
        // action would end the daemon.
        let reloads = reload_on_sighup(Arc::clone(&auth));
        // Recovered before the port opens: a client that connects is served from the recovered state.
        let data_dir = config.persistence.as_ref().map(|options| options.dir.display().to_string());
        let shared = Arc::new(
            server::Shared::new(config.clone())
                .with_context(|| format!("cannot start from --data-dir {}", data_dir.as_deref().unwrap_or("?")))?,
        );
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr().context("cannot read the listening address")?;
        let http_listener = match http_addr {
            Some(http_addr) => Some(
                tokio::net::TcpListener::bind(http_addr)
                    .await
                    .with_context(|| format!("cannot listen on {http_addr} (--http)"))?,
            ),
            None => None,
        };
        tracing::info!(
            %addr,
            block_timeout = %duration::format(config.pool.block_timeout),
            keepalive_timeout = %duration::format(config.pool.keepalive_timeout),
            max_keys = config.pool.max_keys,
            max_pools = config.max_pools,
            max_connections = config.max_connections,
            max_line = config.max_line,
            max_wait = %duration::format(config.max_wait),
            max_block = %duration::format(config.max_block),
            max_secret = config.max_secret,
            idle_timeout = %config.idle_timeout.map_or_else(|| "off".to_string(), duration::format),
            threads,
            auth = auth.is_enabled(),
            data_dir = data_dir.as_deref().unwrap_or("off (in memory only)"),
            fsync = %config.persistence.as_ref().map_or_else(|| "-".to_string(), |options| options.fsync.to_string()),
            version = env!("CARGO_PKG_VERSION"),
            "keypool listening"
        );
        tokio::spawn(reloads);
        // One state for both front ends, one shutdown for both, and the log synced once both are done.
        server::start_background(&shared);
        let stop = tokio_util::sync::CancellationToken::new();
        let http = http_listener.map(|http_listener| {
            tokio::spawn(keypool::http::serve(http_listener, Arc::clone(&shared), stop.clone().cancelled_owned()))
        });
        let stopping = stop.clone();
        server::run_shared(listener, Arc::clone(&shared), async move {
            shutdown_signal().await;
            stopping.cancel();
        })
        .await;
        stop.cancel();
        if let Some(http) = http {
            let _ = http.await;
        }
        server::finish(&shared).await;
        tracing::info!("keypool stopped");
        Ok(())
    })
}

fn resolve(flag: &str, listen: &str) -> Result<SocketAddr> {
    let mut addrs = listen
        .to_socket_addrs()
        .with_context(|| format!("{flag} {listen:?}: expected host:port, such as 127.0.0.1:7171"))?;
    match addrs.next() {
        Some(addr) => Ok(addr),
        None => bail!("{flag} {listen:?} resolves to no address"),
    }
}

/// Re-reads the `--auth-tokens` file on every SIGHUP. A file that does not parse is reported and the
/// tokens already loaded stay in force, so a typo cannot lock everyone out (or let everyone in). The
/// signal handler is installed when this is called, not when the future first runs.
fn reload_on_sighup(auth: Arc<Authenticator>) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let Ok(mut hangups) = hangups else {
                tracing::warn!("cannot watch for SIGHUP; the tokens file will not be reloaded");
                return;
            };
            while hangups.recv().await.is_some() {
                match auth.reload_tokens() {
                    Ok(Some(tokens)) => tracing::info!(tokens, "SIGHUP: reloaded the tokens file"),
                    Ok(None) => tracing::info!("SIGHUP: no --auth-tokens file to reload"),
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: the tokens file is not valid; keeping the tokens loaded before")
                    }
                }
            }
        }
        #[cfg(not(unix))]
        let _ = auth;
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => tracing::info!("SIGINT received"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch for SIGTERM; only SIGINT will stop the daemon");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!("interrupt received");
    }
}
