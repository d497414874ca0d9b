//! The server: a TCP listener, one task per connection, one background task for the pool's timers.
//!
//! The pieces, in the order a request meets them:
//!
//! - [`listener`] accepts connections, enforces `--max-connections`, and on shutdown stops accepting
//!   and waits for the connections to finish their current batch;
//! - [`connection`] reads a client's bytes, cuts them into lines, and answers a whole batch of pipelined
//!   requests under one lock and with one write;
//! - [`execute`] applies one request to the pool and writes its reply;
//! - [`session`] is what one connection remembers between requests (its AUTOREL holder, its wait), and
//!   gives back to the pool when it ends;
//! - [`state`] is what every connection shares: the pool behind its mutex, and the counters for STATS;
//! - [`expiry`] drives the pool's timers;
//! - [`compaction`] writes a new snapshot and starts a fresh log when the log has grown (with
//!   `--data-dir`);
//! - [`one_request`] serves a single request outside a batch (the HTTP gateway's way in), and ends waits;
//! - [`telemetry`] measures outcomes and latencies for the Prometheus endpoint.

mod compaction;
mod connection;
mod execute;
mod expiry;
pub(crate) mod listener;
mod one_request;
mod session;
mod state;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::persist::{self, PersistError};
use crate::pool::PoolConfig;

pub use execute::VERSION;
pub use one_request::run_one;
pub use session::Session;
pub use state::Shared;

/// Everything the server needs to know; the daemon fills it from its flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// The pool's windows and size limit.
    pub pool: PoolConfig,
    /// The most connections served at once; more are told `SERVER_ERROR too many connections`.
    pub max_connections: usize,
    /// The longest request line accepted, in bytes, line ending excluded.
    pub max_line: usize,
    /// The longest a request may wait for a free key.
    pub max_wait: Duration,
    /// The longest block window a lease or TOUCH may ask for, and the longest delay of a REL.
    pub max_block: Duration,
    /// The longest secret ADD accepts, in bytes.
    pub max_secret: usize,
    /// The most pools at once.
    pub max_pools: usize,
    /// Who may connect: off (the default) lets every client in.
    pub auth: Arc<Authenticator>,
    /// How long a connection may stay silent, with no reply owed to it, before it is closed; `None` never
    /// closes one for that.
    pub idle_timeout: Option<Duration>,
    /// Where and how the state is kept on disk; `None` keeps it in memory only.
    pub persistence: Option<persist::Options>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pool: PoolConfig::default(),
            max_connections: 10_000,
            max_line: 4096,
            max_wait: Duration::from_secs(300),
            max_block: Duration::from_secs(3600),
            max_secret: 1024,
            max_pools: 10_000,
            auth: Arc::new(Authenticator::disabled()),
            idle_timeout: None,
            persistence: None,
        }
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting, lets every connection finish the
/// batch it is working on, and returns. With a data directory, first recovers from it (failing if it
/// cannot), and last writes and syncs every change.
///
/// Must be called inside a tokio runtime (any flavour).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PersistError> {
    let shared = Arc::new(Shared::new(config)?);
    serve(listener, shared, shutdown).await;
    Ok(())
}

/// [`run`], on state already made (and recovered), with the TCP front end alone.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    start_background(&shared);
    run_shared(listener, Arc::clone(&shared), shutdown).await;
    finish(&shared).await;
}

/// Starts what runs beside the front ends: the expiry task of every pool there is (recovered ones,
/// at start-up), and with a data directory the compaction check.
pub fn start_background(shared: &Arc<Shared>) {
    let pools = shared.lock().pools.list();
    for (pool, _) in pools {
        expiry::start(shared, pool);
    }
    if shared.persist.is_some() {
        tokio::spawn(compaction::watch(Arc::clone(shared)));
    }
}

/// The TCP front end on state made beforehand, which another front end (the HTTP gateway) may serve as
/// well: accepts until `shutdown`, then lets every connection finish its batch. Call
/// [`start_background`] before and [`finish`] once every front end has returned.
pub async fn run_shared(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    listener::serve(listener, shared, shutdown).await;
}

/// Ends the background tasks and, with a data directory, writes and syncs every change and releases
/// the directory. Call after every front end has stopped serving.
pub async fn finish(shared: &Arc<Shared>) {
    // The expiry tasks hold the state too; ending them lets it go (and with it the data directory's lock).
    shared.stopped.cancel();
    if shared.persist.is_some() {
        // The writer's last write and sync block; do not hold up the runtime's other work with them.
        let last = Arc::clone(shared);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(persist) = &last.persist {
                persist.stop();
            }
        })
        .await;
    }
}

/// A server running in the background of the current runtime, for tests, benches and embedding.
pub struct Handle {
    addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Binds `addr` (use port 0 for any free port) and starts serving on it. With a data directory,
    /// recovers from it first; a recovery that fails is an error of kind `Other` carrying its message.
    pub async fn start(addr: SocketAddr, config: Config) -> std::io::Result<Handle> {
        Handle::start_shared(addr, Arc::new(Shared::new(config).map_err(std::io::Error::other)?)).await
    }

    /// [`Handle::start`] on state made beforehand, which another front end may serve as well.
    pub async fn start_shared(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Handle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move { serve(listener, shared, stopped.cancelled_owned()).await });
        Ok(Handle { addr, stop, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts the server down as SIGTERM would, and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
