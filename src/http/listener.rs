//! The gateway's accept loop: one hyper HTTP/1.1 connection (keep-alive) per client, up to
//! `--max-connections` at once, and a clean shutdown.
//!
//! This is a loop of our own rather than a framework's `serve` so that the gateway keeps the TCP front end's
//! habits: a connection limit with an immediate answer past it, connections counted for `/metrics`, and
//! shutdown that stops accepting, then lets each connection finish the request in hand (waiting requests
//! are answered at once, see [`super::Gateway::stop`]). A client that hangs up mid-request makes hyper
//! drop the request's future, and with it the request's session, whose `Drop` withdraws its wait.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::{handlers, Gateway};
use crate::server::listener::{next_connection, refuse};

/// How long a connection may take to finish its request once shutdown has begun.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 33\r\nconnection: close\r\n\r\n{\"error\":\"too many connections\"}\n";

/// Accepts connections until `shutdown` completes, then waits for the open ones to finish.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    let shared = Arc::clone(&gateway.shared);
    let idle_timeout = shared.config.idle_timeout;
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP gateway listening");
    }

    while let Some((socket, peer)) = next_connection(&listener, shutdown.as_mut()).await {
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(%peer, "HTTP refused: too many connections");
            refuse(&socket, TOO_MANY_CONNECTIONS);
            continue;
        };
        let _ = socket.set_nodelay(true);
        shared.telemetry.http_connection_opened();
        let serving = Arc::clone(&gateway);
        let service = hyper::service::service_fn(move |request| {
            let gateway = Arc::clone(&serving);
            async move { Ok::<_, Infallible>(handlers::handle(gateway, request).await) }
        });
        let shared = Arc::clone(&shared);
        let stop = gateway.stop.clone();
        connections.spawn(async move {
            tracing::debug!(%peer, "HTTP connection opened");
            // With a timer, hyper limits how long a request's headers may take, counted from the moment
            // the connection is idle: so it is also the idle limit of a keep-alive connection.
            // `--idle-timeout` sets it, as it sets TCP's; hyper's own 30 s stands otherwise.
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Answers are a few dozen bytes: copied after the head, they go out in one plain buffer
            // rather than as a second piece of a vectored write.
            builder.timer(TokioTimer::new()).writev(false);
            if let Some(idle) = idle_timeout {
                builder.header_read_timeout(idle);
            }
            let connection = builder.serve_connection(TokioIo::new(socket), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "HTTP connection ended by an error");
            }
            shared.telemetry.http_connection_closed();
            drop(permit);
            tracing::debug!(%peer, "HTTP connection closed");
        });
    }

    drop(listener);
    tracing::info!(open = connections.len(), "HTTP gateway shutting down: no new connections");
    gateway.stop.cancel();
    connections.close();
    connections.wait().await;
}
