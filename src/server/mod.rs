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
//! - [`one_request`] serves a single request outside a batch (the HTTP gateway's way in), and ends waits;
//! - [`telemetry`] measures outcomes and latencies for the Prometheus endpoint.

mod connection;
mod execute;
mod expiry;
mod listener;
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
        }
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting, lets every connection finish the
/// batch it is working on, and returns.
///
/// Must be called inside a tokio runtime (any flavour).
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    let shared = Arc::new(Shared::new(config));
    listener::serve(listener, shared, shutdown).await;
}

/// [`run`] on state made beforehand, which another front end (the HTTP gateway) may serve as well.
pub async fn run_shared(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    listener::serve(listener, shared, shutdown).await;
}

/// A server running in the background of the current runtime, for tests, benches and embedding.
pub struct Handle {
    addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Binds `addr` (use port 0 for any free port) and starts serving on it.
    pub async fn start(addr: SocketAddr, config: Config) -> std::io::Result<Handle> {
        Handle::start_shared(addr, Arc::new(Shared::new(config))).await
    }

    /// [`Handle::start`] on state made beforehand, which another front end may serve as well.
    pub async fn start_shared(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Handle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move { run_shared(listener, shared, stopped.cancelled_owned()).await });
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
