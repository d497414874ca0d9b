//! Applying one request: call the pool, write the reply. Runs with the pool's lock held by the batch.

use bytes::BytesMut;

use super::state::Locked;
use super::Shared;
use crate::pool::Release;
use crate::protocol::reply::{self, words};
use crate::protocol::request::Command;
use crate::protocol::{LeaseArgs, Request};

/// The version reported by `VERSION` and `STATS`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Applies `request` (anything but QUIT, which the connection handles) and appends its reply to `out`.
pub fn execute(request: Request<'_>, locked: &mut Locked, shared: &Shared, out: &mut BytesMut) {
    tracing::debug!(?request, "request");
    locked.count(request.command());
    let pool = &mut locked.pool;
    match request {
        Request::Gen { count } => match pool.generate(count, |id| reply::key(out, id, None)) {
            Ok(()) => reply::end(out),
            Err(error) => reply::server_error(out, &error.to_string()),
        },
        Request::Get(LeaseArgs { wait: None, block: None }) => match pool.get() {
            Some(id) => reply::key(out, &id, None),
            None => reply::word(out, words::NOT_FOUND),
        },
        Request::Rel { id, token: None, delay: None } => reply::word(
            out,
            match pool.release(&id) {
                Release::Released => words::RELEASED,
                Release::NotBlocked => words::NOT_BLOCKED,
                Release::NotFound | Release::Stale => words::NOT_FOUND,
            },
        ),
        Request::Del(id) => reply::word(out, if pool.delete(&id) { words::DELETED } else { words::NOT_FOUND }),
        Request::Ping(id) => reply::word(out, if pool.keep_alive(&id) { words::ALIVE } else { words::NOT_FOUND }),
        Request::Health => reply::word(out, words::PONG),
        Request::Info(id) => match pool.info(&id) {
            Some(info) => reply::info(out, &info),
            None => reply::word(out, words::NOT_FOUND),
        },
        Request::Stats => stats(locked, shared, out),
        Request::Version => reply::version(out, VERSION),
        Request::Quit => {}
        // Parsed but not served yet: issue 7's engine side replaces this placeholder.
        Request::Get(_)
        | Request::Lease(_)
        | Request::Rel { .. }
        | Request::Touch { .. }
        | Request::Autorel
        | Request::Add { .. } => reply::server_error(out, "not implemented yet"),
    }
}

/// STATS: one `STAT` line per figure, then `END`. O(1): every figure is a counter, never a count taken
/// by walking the pool.
fn stats(locked: &Locked, shared: &Shared, out: &mut BytesMut) {
    let pool = locked.pool.stats();
    let config = locked.pool.config();
    let (curr_connections, total_connections, rejected_connections) = shared.connection_counts();
    let now_ms = locked.pool.clock().unix_ms(locked.pool.clock().now());

    reply::stat(out, "pid", u64::from(std::process::id()));
    reply::stat(out, "uptime", shared.started.elapsed().as_secs());
    reply::stat(out, "time", now_ms / 1000);
    reply::stat_text(out, "version", VERSION);
    reply::stat(out, "keys", pool.keys as u64);
    reply::stat(out, "keys_free", pool.keys_free as u64);
    reply::stat(out, "keys_blocked", pool.keys_blocked as u64);
    reply::stat(out, "max_keys", config.max_keys as u64);
    reply::stat(out, "block_timeout_ms", duration_ms(config.block_timeout));
    reply::stat(out, "keepalive_timeout_ms", duration_ms(config.keepalive_timeout));
    reply::stat(out, "curr_connections", curr_connections);
    reply::stat(out, "total_connections", total_connections);
    reply::stat(out, "rejected_connections", rejected_connections);
    for command in Command::ALL {
        reply::stat(out, command.stat_name(), locked.count_of(command));
    }
    reply::stat(out, "keys_generated", pool.keys_generated);
    reply::stat(out, "get_hits", pool.get_hits);
    reply::stat(out, "get_misses", pool.get_misses);
    reply::stat(out, "released_by_timeout", pool.released_by_timeout);
    reply::stat(out, "expired_keepalive", pool.expired_keepalive);
    reply::end(out);
}

fn duration_ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
