//! The HTTP gateway: a second front end on the same engine, for the REST clients of the services keypool
//! replaces, and for operators' probes and Prometheus.
//!
//! Every route that touches keys builds a [`crate::protocol::Request`] and runs it through
//! [`crate::server::run_one`], the same `execute` a TCP connection runs, under the same lock, with a
//! [`crate::server::Session`] made for the request (its pool from the path, its grant from the
//! `Authorization` header). So limits, authentication, counters and pool creation cannot differ between
//! the two front ends: a key made over TCP can be leased over HTTP and released over TCP.
//!
//! The pieces, in the order a request meets them:
//!
//! - [`listener`] accepts connections (up to `--max-connections`), serves each with hyper's HTTP/1.1
//!   (keep-alive), and shuts down cleanly;
//! - [`router`] is the table of routes, which requests are matched against and the OpenAPI document is
//!   built from;
//! - [`handlers`] turns a route, its parameters and its body into a request, checks the bearer token, and
//!   runs it;
//! - [`json`] maps the engine's reply to a status code and a JSON body (or HEAD's headers);
//! - [`metrics`] encodes STATS and the telemetry in Prometheus' text format;
//! - [`openapi`] is the OpenAPI 3 document of the routes.

mod handlers;
mod json;
mod listener;
mod metrics;
pub mod openapi;
pub mod router;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

/// The most bytes of a request body; a longer one is answered 413.
pub const MAX_BODY: usize = 64 * 1024;

/// What every route of the gateway shares.
pub struct Gateway {
    shared: Arc<Shared>,
    /// The metrics registry: its collector reads the engine at each scrape.
    registry: prometheus_client::registry::Registry,
    /// Cancelled at shutdown: requests waiting for a key are answered 503 at once.
    stop: CancellationToken,
}

impl Gateway {
    fn new(shared: Arc<Shared>) -> Gateway {
        let registry = metrics::registry(Arc::clone(&shared));
        Gateway { shared, registry, stop: CancellationToken::new() }
    }
}

/// Serves HTTP on `listener` from the same state as the TCP front end, until `shutdown` completes; then
/// stops accepting, answers waiting requests, and lets each connection finish the request in hand.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    listener::serve(listener, Arc::new(Gateway::new(shared)), shutdown).await;
}

/// A gateway running in the background of the current runtime, for tests and embedding.
pub struct Handle {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Binds `addr` (port 0 for any free port) and serves `shared` on it.
    pub async fn start(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Handle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move { serve(listener, shared, stopped.cancelled_owned()).await });
        Ok(Handle { addr, stop, task })
    }

    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts the gateway down as SIGTERM would, and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
