//! The accept loop: admits connections up to `--max-connections`, and shuts down cleanly.
//!
//! A client past the limit is told `SERVER_ERROR too many connections` and closed at once. The reply is
//! sent with a non-blocking `try_write` straight from the accept loop: a new socket's send buffer is
//! empty, so it fits, and a flood of connections costs no task or wait per rejected client.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{connection, Shared};

const TOO_MANY_CONNECTIONS: &[u8] = b"SERVER_ERROR too many connections\r\n";

/// Tells a client past the limit why it is turned away (`reply`, which must fit in a new socket's send
/// buffer), without waiting for anything. Both front ends refuse this way.
///
/// Whatever the client has already sent is read and dropped first: closing a socket with unread input
/// makes the kernel reset the connection, which can destroy the reply before the client reads it. Input
/// that arrives after this point can still cause that; waiting for it would cost a task and a descriptor
/// per refused client, which is what a flood must not get.
pub(crate) fn refuse(socket: &TcpStream, reply: &[u8]) {
    let _ = socket.try_write(reply);
    let mut sink = [0u8; 1024];
    for _ in 0..4 {
        match socket.try_read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// The next connection, or `None` once `shutdown` completes. An accept that fails (out of file descriptors,
/// a connection reset before it was taken) is not the listener's fault: it is logged and, after a short
/// pause so that a descriptor shortage does not spin, the next one is tried. Both front ends accept this way.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return None,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Accepts connections until `shutdown` completes, then waits for the open ones to finish their batch.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);

    while let Some((socket, peer)) = next_connection(&listener, shutdown.as_mut()).await {
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.connection_rejected();
            tracing::debug!(%peer, "refused: too many connections");
            refuse(&socket, TOO_MANY_CONNECTIONS);
            continue;
        };
        let _ = socket.set_nodelay(true);
        shared.connection_opened();
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        connections.spawn(async move {
            tracing::debug!(%peer, "connection opened");
            if let Err(error) = connection::serve(socket, &shared, stop).await {
                tracing::debug!(%peer, %error, "connection ended by an I/O error");
            }
            shared.connection_closed();
            drop(permit);
            tracing::debug!(%peer, "connection closed");
        });
    }

    // Close the listening socket first, so that clients arriving now are refused by the kernel rather
    // than left waiting in the backlog of a listener nobody will accept from.
    drop(listener);
    tracing::info!(open = connections.len(), "shutting down: no new connections; finishing open batches");
    stop.cancel();
    connections.close();
    connections.wait().await;
}
