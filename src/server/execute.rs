//! Applying one request: check it against the daemon's limits, call the pool, write the reply. Runs
//! with the pool's lock held by the batch.

use std::time::Duration;

use bytes::BytesMut;

use super::session::{LeaseReply, Session, Waiting};
use super::state::Locked;
use super::Shared;
use crate::pool::{Added, LeaseOutcome, LeaseTerms, Release};
use crate::protocol::duration;
use crate::protocol::reply::{self, words};
use crate::protocol::request::Command;
use crate::protocol::{LeaseArgs, Request};

/// The version reported by `VERSION` and `STATS`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What became of a request.
pub enum Executed {
    /// Its reply is in the output.
    Answered,
    /// It waits for a key; the session holds its ticket, and its reply comes when the wait ends.
    Waits,
}

/// Applies `request` (anything but QUIT, which the connection handles) and appends its reply to `out`,
/// unless it must wait for a key.
pub fn execute(
    request: Request<'_>,
    locked: &mut Locked,
    shared: &Shared,
    session: &mut Session<'_>,
    out: &mut BytesMut,
) -> Executed {
    tracing::debug!(?request, "request");
    locked.count(request.command());
    let config = &shared.config;
    let pool = &mut locked.pool;
    match request {
        Request::Gen { count } => match pool.generate(count, |id| reply::key(out, id, None)) {
            Ok(()) => reply::end(out),
            Err(error) => reply::server_error(out, &error.to_string()),
        },
        Request::Get(args) => return lease(args, LeaseReply::Key, locked, shared, session, out),
        Request::Lease(args) => return lease(args, LeaseReply::Leased, locked, shared, session, out),
        Request::Rel { id, token, delay } => {
            if let Err(message) = delay.map_or(Ok(()), |_| within("delay", delay, Duration::ZERO, config.max_block)) {
                reply::client_error(out, &message);
            } else {
                let released = pool.release_with(&id, token, delay.unwrap_or_default());
                reply::word(out, release_word(released, words::RELEASED));
            }
        }
        Request::Touch { id, token, block } => {
            if let Err(message) = within("block", block, Duration::from_millis(1), config.max_block) {
                reply::client_error(out, &message);
            } else {
                reply::word(out, release_word(pool.touch(&id, token, block), words::TOUCHED));
            }
        }
        Request::Del(id) => reply::word(out, if pool.delete(&id) { words::DELETED } else { words::NOT_FOUND }),
        Request::Ping(id) => reply::word(out, if pool.keep_alive(&id) { words::ALIVE } else { words::NOT_FOUND }),
        Request::Health => reply::word(out, words::PONG),
        Request::Info(id) => match pool.info(&id) {
            Some(info) => reply::info(out, &info),
            None => reply::word(out, words::NOT_FOUND),
        },
        Request::Add { secret, keepalive } => {
            if secret.0.len() > config.max_secret {
                reply::client_error(out, &format!("secret is longer than the maximum, {} bytes", config.max_secret));
            } else {
                match pool.add(secret.0, keepalive) {
                    Ok(Added::New(id)) => reply::key(out, &id, None),
                    Ok(Added::Exists(id)) => reply::exists(out, &id),
                    Err(error) => reply::server_error(out, &error.to_string()),
                }
            }
        }
        Request::Autorel => {
            if session.holder.is_none() {
                session.holder = Some(pool.open_holder());
            }
            reply::word(out, words::OK);
        }
        Request::Stats => stats(locked, shared, out),
        Request::Version => reply::version(out, VERSION),
        Request::Quit => {}
    }
    Executed::Answered
}

/// GET and LEASE: lease a key now, or answer that none is free, or wait for one.
fn lease(
    args: LeaseArgs,
    form: LeaseReply,
    locked: &mut Locked,
    shared: &Shared,
    session: &mut Session<'_>,
    out: &mut BytesMut,
) -> Executed {
    // Plain GET, the hot path, has nothing to check.
    if args.wait.is_some() || args.block.is_some() {
        let config = &shared.config;
        let checked = within("wait", args.wait, Duration::ZERO, config.max_wait)
            .and_then(|()| within("block", args.block, Duration::from_millis(1), config.max_block));
        if let Err(message) = checked {
            reply::client_error(out, &message);
            return Executed::Answered;
        }
    }
    let terms = LeaseTerms { block: args.block, holder: session.holder };
    match locked.pool.lease(terms, args.wait.unwrap_or_default()) {
        LeaseOutcome::Leased(leased) => lease_reply(out, form, &leased.id, leased.token, leased.secret),
        LeaseOutcome::NotFound => reply::word(out, words::NOT_FOUND),
        LeaseOutcome::Waiting(ticket) => {
            session.waiting = Some(Waiting { ticket, reply: form });
            return Executed::Waits;
        }
    }
    Executed::Answered
}

/// Writes a lease reply in the form the request asked for.
pub fn lease_reply(out: &mut BytesMut, form: LeaseReply, id: &crate::pool::KeyId, token: u64, secret: Option<&[u8]>) {
    match form {
        LeaseReply::Key => reply::key(out, id, secret),
        LeaseReply::Leased => reply::leased(out, id, token, secret),
    }
}

/// The reply word for a release-like outcome; `done` is the word for success.
fn release_word(outcome: Release, done: &'static str) -> &'static str {
    match outcome {
        Release::Released => done,
        Release::NotBlocked => words::NOT_BLOCKED,
        Release::Stale => words::STALE,
        Release::NotFound => words::NOT_FOUND,
    }
}

/// Checks an optional duration argument against its bounds, with the message a client should see.
fn within(what: &str, value: Option<Duration>, min: Duration, max: Duration) -> Result<(), String> {
    match value {
        Some(value) if value < min => Err(format!("{what} must be at least {}", duration::format(min))),
        Some(value) if value > max => Err(format!("{what} is longer than the maximum, {}", duration::format(max))),
        _ => Ok(()),
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
    reply::stat(out, "keys_delayed", pool.keys_delayed as u64);
    reply::stat(out, "waiters", pool.waiters as u64);
    reply::stat(out, "max_keys", config.max_keys as u64);
    reply::stat(out, "block_timeout_ms", duration_ms(config.block_timeout));
    reply::stat(out, "keepalive_timeout_ms", duration_ms(config.keepalive_timeout));
    reply::stat(out, "max_wait_ms", duration_ms(shared.config.max_wait));
    reply::stat(out, "max_block_ms", duration_ms(shared.config.max_block));
    reply::stat(out, "max_secret_bytes", shared.config.max_secret as u64);
    reply::stat(out, "curr_connections", curr_connections);
    reply::stat(out, "total_connections", total_connections);
    reply::stat(out, "rejected_connections", rejected_connections);
    for command in Command::ALL {
        reply::stat(out, command.stat_name(), locked.count_of(command));
    }
    reply::stat(out, "keys_generated", pool.keys_generated);
    reply::stat(out, "keys_added", pool.keys_added);
    reply::stat(out, "get_hits", pool.get_hits);
    reply::stat(out, "get_misses", pool.get_misses);
    reply::stat(out, "waits_served", pool.waits_served);
    reply::stat(out, "waits_timed_out", pool.waits_timed_out);
    reply::stat(out, "released_by_timeout", pool.released_by_timeout);
    reply::stat(out, "released_by_close", pool.released_by_close);
    reply::stat(out, "expired_keepalive", pool.expired_keepalive);
    reply::end(out);
}

fn duration_ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
