//! Applying one request: check it against the daemon's limits, find the connection's pool, call it,
//! write the reply. Runs with the lock held by the batch.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::session::{LeaseReply, Session, Waiting, MAX_AUTH_FAILURES};
use super::state::Locked;
use super::{expiry, Shared};
use crate::pool::{Added, KeyId, LeaseOutcome, LeaseTerms, Pool, PoolRef, PoolStats, Release, Upcoming};
use crate::protocol::duration;
use crate::protocol::reply::{self, words};
use crate::protocol::request::Command;
use crate::protocol::{LeaseArgs, Request};

/// The version reported by `VERSION` and `STATS`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The most pools one POOLS reply lists.
const POOLS_PAGE: usize = 1000;

/// What became of a request.
pub enum Executed {
    /// Its reply is in the output.
    Answered,
    /// It waits for a key; the session holds its ticket, and its reply comes when the wait ends.
    Waits,
    /// Its reply is in the output, and then the connection must be closed (too many failed AUTHs).
    Close,
    /// COMPACT: its reply comes when the compaction ends.
    Compact,
}

/// Applies `request` (anything but QUIT, which the connection handles) and appends its reply to `out`,
/// unless it must wait for a key. The caller counts its outcome for `/metrics` (read from the reply with
/// [`super::telemetry::Outcome::of_reply`]; a wait's, when it ends).
pub fn execute(
    request: Request<'_>,
    locked: &mut Locked,
    shared: &Arc<Shared>,
    session: &mut Session<'_>,
    out: &mut BytesMut,
) -> Executed {
    tracing::debug!(?request, pool = session.pool_name(), "request");
    let config = &shared.config;
    if unauthenticated(shared, session) && !matches!(request, Request::Auth { .. } | Request::Health | Request::Version)
    {
        // Refused, not served: it counts under no command.
        reply::error(out, "NOAUTH authentication required");
        return Executed::Answered;
    }
    locked.count(request.command());
    if request.changes_state() && shared.persist.as_ref().is_some_and(|persist| persist.journal().failed()) {
        // The change could not be logged: refused before it touches memory, so memory and disk agree.
        reply::server_error(out, "persistence failure");
        return Executed::Answered;
    }
    match request {
        Request::Gen { count } => {
            let Some(pool) = pool_to_fill(locked, shared, session, out) else {
                return Executed::Answered;
            };
            match in_pool(locked, pool).generate(count, |id| reply::key(out, id, None)) {
                Ok(()) => reply::end(out),
                Err(error) => reply::server_error(out, &error.to_string()),
            }
            locked.pools.drop_if_idle(pool);
        }
        Request::Add { secret, keepalive } => {
            if secret.0.len() > config.max_secret {
                reply::client_error(out, &format!("secret is longer than the maximum, {} bytes", config.max_secret));
                return Executed::Answered;
            }
            let Some(pool) = pool_to_fill(locked, shared, session, out) else {
                return Executed::Answered;
            };
            match in_pool(locked, pool).add(secret.0, keepalive) {
                Ok(Added::New(id)) => reply::key(out, &id, None),
                Ok(Added::Exists(id)) => reply::exists(out, &id),
                Err(error) => reply::server_error(out, &error.to_string()),
            }
            locked.pools.drop_if_idle(pool);
        }
        Request::Get(args) => return lease(args, LeaseReply::Key, locked, shared, session, out),
        Request::Lease(args) => return lease(args, LeaseReply::Leased, locked, shared, session, out),
        Request::Rel { id, token, delay } => {
            if let Err(message) = delay.map_or(Ok(()), |_| within("delay", delay, Duration::ZERO, config.max_block)) {
                reply::client_error(out, &message);
            } else {
                let released = on_key(locked, session, |pool| pool.release_with(&id, token, delay.unwrap_or_default()));
                reply::word(out, release_word(released.unwrap_or(Release::NotFound), words::RELEASED));
            }
        }
        Request::Touch { id, token, block } => {
            if let Err(message) = within("block", block, Duration::from_millis(1), config.max_block) {
                reply::client_error(out, &message);
            } else {
                let touched = on_key(locked, session, |pool| pool.touch(&id, token, block));
                reply::word(out, release_word(touched.unwrap_or(Release::NotFound), words::TOUCHED));
            }
        }
        Request::Del(id) => {
            let deleted = on_key(locked, session, |pool| pool.delete(&id)).unwrap_or(false);
            reply::word(out, if deleted { words::DELETED } else { words::NOT_FOUND });
        }
        Request::Ping(id) => {
            let alive = on_key(locked, session, |pool| pool.keep_alive(&id)).unwrap_or(false);
            reply::word(out, if alive { words::ALIVE } else { words::NOT_FOUND });
        }
        Request::Health => reply::word(out, words::PONG),
        Request::Info(id) => match on_key(locked, session, |pool| pool.info(&id)).flatten() {
            Some(info) => reply::info(out, &info),
            None => reply::word(out, words::NOT_FOUND),
        },
        Request::Autorel => {
            session.autorel = true;
            reply::word(out, words::OK);
        }
        Request::Use { pool } => {
            if forbidden(session, pool) {
                reply::client_error(out, "forbidden");
            } else {
                session.use_pool(pool);
                reply::using(out, pool);
            }
        }
        Request::Pools { cursor } => {
            let grant = session.grant.as_ref();
            let next = locked.pools.page(cursor, POOLS_PAGE, |name, keys| {
                // A token for one pool sees that pool only, not the names of the others.
                if grant.is_none_or(|grant| grant.allows(name)) {
                    reply::pool(out, name, keys as u64);
                }
            });
            reply::end_with_cursor(out, next);
        }
        Request::Stats { pool: None } => stats(locked, shared, out),
        Request::Stats { pool: Some(name) } => {
            if forbidden(session, name) {
                reply::client_error(out, "forbidden");
            } else {
                let figures = locked.pools.find(name).and_then(|pool| locked.pools.get(pool)).map(|pool| pool.stats());
                pool_stats(name, &figures.unwrap_or_default(), out);
            }
        }
        Request::Auth { .. } if !config.auth.is_enabled() => reply::client_error(out, "authentication is not enabled"),
        Request::Auth { token } => match config.auth.authenticate(token.0) {
            Ok(grant) => {
                tracing::debug!(?grant, "authenticated");
                session.use_pool(grant.home_pool());
                session.grant = Some(grant);
                session.auth_failures = 0;
                reply::word(out, words::OK);
            }
            Err(rejection) => {
                tracing::debug!(?rejection, "AUTH refused");
                session.auth_failures += 1;
                reply::client_error(out, "invalid token");
                if session.auth_failures >= MAX_AUTH_FAILURES {
                    return Executed::Close;
                }
            }
        },
        Request::Version => reply::version(out, VERSION),
        Request::Compact if shared.persist.is_none() => reply::client_error(out, "persistence is not enabled"),
        // Rewriting the whole data directory is the operator's call: a token for one pool may not.
        Request::Compact if session.grant.as_ref().is_some_and(|grant| !grant.allows_every_pool()) => {
            reply::client_error(out, "forbidden")
        }
        Request::Compact => return Executed::Compact,
        Request::Quit => {}
    }
    Executed::Answered
}

/// GET and LEASE: lease a key now, or answer that none is free, or wait for one.
fn lease(
    args: LeaseArgs,
    form: LeaseReply,
    locked: &mut Locked,
    shared: &Arc<Shared>,
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
    let wait = args.wait.unwrap_or_default();
    // A request that will wait needs a pool to wait in, so it brings the pool into being.
    let pool =
        if wait.is_zero() { session.current_pool(&locked.pools) } else { pool_to_fill(locked, shared, session, out) };
    let Some(pool) = pool else {
        if wait.is_zero() {
            locked.pools.count_miss_without_pool();
            reply::word(out, words::NOT_FOUND);
        }
        return Executed::Answered;
    };
    let terms = LeaseTerms { block: args.block, holder: session.holder_in(&mut locked.pools, pool) };
    match in_pool(locked, pool).lease(terms, wait) {
        LeaseOutcome::Leased(leased) => lease_reply(out, form, leased.id, leased.token, leased.secret),
        LeaseOutcome::NotFound => {
            reply::word(out, words::NOT_FOUND);
            // The draw may have deleted the pool's last keys (past their keep-alive) on its way.
            locked.pools.drop_if_idle(pool);
        }
        LeaseOutcome::Waiting(ticket) => {
            session.waiting = Some(Waiting { pool, ticket, reply: form });
            return Executed::Waits;
        }
    }
    Executed::Answered
}

/// The connection's pool, created if need be (GEN, ADD, a waiting lease), with its expiry task started.
/// `None` after writing the error if the daemon holds `--max-pools` pools already.
fn pool_to_fill(
    locked: &mut Locked,
    shared: &Arc<Shared>,
    session: &mut Session<'_>,
    out: &mut BytesMut,
) -> Option<PoolRef> {
    match session.current_pool_or_create(&mut locked.pools) {
        Ok((pool, created)) => {
            if created {
                expiry::start(shared, pool);
            }
            Some(pool)
        }
        Err(error) => {
            reply::server_error(out, &error.to_string());
            None
        }
    }
}

/// The pool `pool` names, which the caller just looked up or created under the same lock.
fn in_pool(locked: &mut Locked, pool: PoolRef) -> &mut Pool {
    locked.pools.get(pool).expect("a pool looked up under the lock held since")
}

/// What `request` will ask of its pool, for looking ahead; `None` for requests not worth a hint.
pub fn upcoming(request: &Request<'_>) -> Option<Upcoming> {
    match *request {
        Request::Get(_) | Request::Lease(_) => Some(Upcoming::Lease),
        Request::Rel { id, delay: None, .. } => Some(Upcoming::Release(id)),
        Request::Rel { id, .. }
        | Request::Touch { id, .. }
        | Request::Del(id)
        | Request::Ping(id)
        | Request::Info(id) => Some(Upcoming::Key(id)),
        _ => None,
    }
}

/// Tells the connection's pool what the next requests of a batch will ask of it (see
/// `pool/lookahead.rs`). Nothing for a connection that may not use the pool yet.
pub fn look_ahead(upcoming: &[Upcoming], locked: &mut Locked, shared: &Shared, session: &mut Session<'_>) {
    if unauthenticated(shared, session) {
        return;
    }
    if let Some(pool) = session.current_pool(&locked.pools) {
        in_pool(locked, pool).prepare(upcoming);
    }
}

/// Runs `act` on the connection's pool, then drops the pool if that left it empty. `None` when the pool
/// does not exist: then no key of it does either.
fn on_key<T>(locked: &mut Locked, session: &mut Session<'_>, act: impl FnOnce(&mut Pool) -> T) -> Option<T> {
    let pool = session.current_pool(&locked.pools)?;
    let outcome = act(in_pool(locked, pool));
    locked.pools.drop_if_idle(pool);
    Some(outcome)
}

/// Whether authentication is on and the connection has not passed it yet.
fn unauthenticated(shared: &Shared, session: &Session<'_>) -> bool {
    shared.config.auth.is_enabled() && session.grant.is_none()
}

/// Whether the connection's grant (if authentication is on) does not allow `pool`.
fn forbidden(session: &Session<'_>, pool: &str) -> bool {
    session.grant.as_ref().is_some_and(|grant| !grant.allows(pool))
}

/// Writes a lease reply in the form the request asked for.
pub fn lease_reply(out: &mut BytesMut, form: LeaseReply, id: &KeyId, token: u64, secret: Option<&[u8]>) {
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

/// STATS: one `STAT` line per figure, then `END`. The pool figures are summed over the pools, O(pools);
/// nothing walks any pool's keys.
fn stats(locked: &Locked, shared: &Shared, out: &mut BytesMut) {
    let pools = &locked.pools;
    let totals = pools.totals();
    let config = pools.config();
    let (curr_connections, total_connections, rejected_connections) = shared.connection_counts();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());

    reply::stat(out, "pid", u64::from(std::process::id()));
    reply::stat(out, "uptime", shared.started.elapsed().as_secs());
    reply::stat(out, "time", now_s);
    reply::stat_text(out, "version", VERSION);
    reply::stat(out, "pools", pools.len() as u64);
    reply::stat(out, "keys", totals.keys as u64);
    reply::stat(out, "keys_free", totals.keys_free as u64);
    reply::stat(out, "keys_blocked", totals.keys_blocked as u64);
    reply::stat(out, "keys_delayed", totals.keys_delayed as u64);
    reply::stat(out, "waiters", totals.waiters as u64);
    reply::stat(out, "max_keys", config.max_keys as u64);
    reply::stat(out, "max_pools", shared.config.max_pools as u64);
    reply::stat(out, "block_timeout_ms", duration_ms(config.block_timeout));
    reply::stat(out, "keepalive_timeout_ms", duration_ms(config.keepalive_timeout));
    reply::stat(out, "max_wait_ms", duration_ms(shared.config.max_wait));
    reply::stat(out, "max_block_ms", duration_ms(shared.config.max_block));
    reply::stat(out, "max_secret_bytes", shared.config.max_secret as u64);
    reply::stat(out, "curr_connections", curr_connections);
    reply::stat(out, "total_connections", total_connections);
    reply::stat(out, "rejected_connections", rejected_connections);
    let (http_open, http_opened) = shared.telemetry.http_connections();
    reply::stat(out, "http_curr_connections", http_open);
    reply::stat(out, "http_total_connections", http_opened);
    persistence_stats(shared, out);
    for command in Command::ALL {
        reply::stat(out, command.stat_name(), locked.count_of(command));
    }
    counters(&totals, out);
    reply::end(out);
}

/// The data directory's figures; zeros (and `persistence off`) without one.
fn persistence_stats(shared: &Shared, out: &mut BytesMut) {
    let figures = shared.persist.as_ref().map(|persist| persist.figures()).unwrap_or_default();
    let fsync = shared.persist.as_ref().map(|persist| persist.options().fsync.to_string());
    reply::stat_text(out, "persistence", fsync.as_deref().unwrap_or("off"));
    reply::stat(out, "persistence_failed", u64::from(figures.failed));
    reply::stat(out, "log_bytes", figures.log_bytes);
    reply::stat(out, "snapshot_bytes", figures.snapshot_bytes);
    reply::stat(out, "snapshot_keys", figures.snapshot_keys);
    reply::stat(out, "records_written", figures.records_written);
    reply::stat(out, "fsyncs", figures.fsyncs);
    reply::stat(out, "write_failures", figures.write_failures);
    reply::stat(out, "compactions", figures.compactions);
    reply::stat(out, "last_compaction_time", figures.last_compaction_time);
    reply::stat(out, "last_compaction_ms", figures.last_compaction_ms);
    reply::stat(out, "recovery_ms", figures.recovery_ms);
}

/// `STATS <pool>`: the figures of one pool (all zero for a pool that does not exist: it is empty).
fn pool_stats(name: &str, figures: &PoolStats, out: &mut BytesMut) {
    reply::stat_text(out, "pool", name);
    reply::stat(out, "keys", figures.keys as u64);
    reply::stat(out, "keys_free", figures.keys_free as u64);
    reply::stat(out, "keys_blocked", figures.keys_blocked as u64);
    reply::stat(out, "keys_delayed", figures.keys_delayed as u64);
    reply::stat(out, "waiters", figures.waiters as u64);
    counters(figures, out);
    reply::end(out);
}

/// The running totals, in the order both forms of STATS list them.
fn counters(figures: &PoolStats, out: &mut BytesMut) {
    reply::stat(out, "keys_generated", figures.keys_generated);
    reply::stat(out, "keys_added", figures.keys_added);
    reply::stat(out, "get_hits", figures.get_hits);
    reply::stat(out, "get_misses", figures.get_misses);
    reply::stat(out, "waits_served", figures.waits_served);
    reply::stat(out, "waits_timed_out", figures.waits_timed_out);
    reply::stat(out, "released_by_timeout", figures.released_by_timeout);
    reply::stat(out, "released_by_close", figures.released_by_close);
    reply::stat(out, "expired_keepalive", figures.expired_keepalive);
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
