//! Leases over the wire (issue 7): `LEASE` and its fencing tokens, `REL <id> <token>` and `STALE`, the
//! stale-holder scenario that tokens exist for, `TOUCH` with and without a token and within
//! `--max-block`, `REL` with a delay (the key is leased to no one until it passes), the limits and
//! malformed arguments of every new form answered with `CLIENT_ERROR` on a connection that goes on, the
//! new STATS figures, and v1's `GET` and `REL <id>` working as before beside all of it.
//!
//! Timed cases use windows of a few hundred milliseconds and poll for the state they wait for, as
//! `tests/expiry.rs` does: an event must not be seen before its deadline (less [`ROUNDING`]) nor later
//! than [`SLACK`] after it.
//!
//! The tests of behaviour drive the daemon through the typed client, `keypool::client::Client`. Six
//! keep the raw line client, because what they assert is on the wire or beyond what the typed client
//! can express: the exact `LEASED <id> <token>` line and which INFO fields a free or delayed key leaves
//! out (the typed `Info` ignores fields it does not expect, so it could not see one too many),
//! `CLIENT_ERROR` texts for limits and malformed arguments, limits spelled in `m`, `h` and `s` (the
//! typed client always sends milliseconds), and v1's `KEY <id>` and token-less `REL` forms.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::typed::{self, stat, state, token_of};
use common::{
    close_and_stop, config, config_with_windows, key_of, leased_of, num, start, unix_ms, Client as RawClient,
    UNKNOWN_ID,
};
use keypool::client::{Added, Client, Info, KeyId, KeyState, Lease, Released, Stats, Touched};

/// How late a timed event may be observed, past its deadline.
const SLACK: Duration = Duration::from_millis(200);

/// How much earlier than its deadline an event may be observed: engine time is whole milliseconds.
const ROUNDING: Duration = Duration::from_millis(2);

/// How far a Unix-millisecond time in INFO may stray from the client's own reading of the clock.
const SKEW_MS: u64 = 50;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `GEN count` on `c`: the new ids, as many as asked for.
async fn gen(c: &Client, count: u32) -> Vec<KeyId> {
    let ids = c.gen(count).await.expect("GEN");
    assert_eq!(ids.len(), count as usize, "GEN {count} returned {} keys", ids.len());
    ids
}

/// `LEASE [wait [block]]` on `c`: the lease, or `None` on `NOT_FOUND`.
async fn lease(c: &Client, wait: Option<Duration>, block: Option<Duration>) -> Option<Lease> {
    c.lease(wait, block).await.expect("LEASE")
}

/// The fencing token of a lease made with `LEASE`.
fn token(lease: &Lease) -> u64 {
    lease.token.unwrap_or_else(|| panic!("LEASE answers with a token: {lease:?}"))
}

/// The INFO of a key that must exist.
async fn info(c: &Client, id: &KeyId) -> Info {
    c.info(id).await.expect("INFO").unwrap_or_else(|| panic!("{id} does not exist"))
}

/// The block deadline (Unix ms) and token of a key `info` describes as blocked.
fn blocked(info: &Info) -> (u64, u64) {
    match info.state {
        KeyState::Blocked { until_ms, token } => (until_ms, token),
        _ => panic!("not blocked: {info:?}"),
    }
}

/// A figure of a `STATS` reply that must be there.
fn figure(stats: &Stats, name: &str) -> u64 {
    stats.number(name).unwrap_or_else(|| panic!("STATS has no numeric {name}: {stats:?}"))
}

/// Polls `INFO id` until the key's state is `want`, failing once `since + limit` has passed. Returns the
/// time from `since` to the reply that showed it.
async fn wait_for_state(c: &Client, id: &KeyId, want: KeyState, since: Instant, limit: Duration) -> Duration {
    loop {
        let info = info(c, id).await;
        let elapsed = since.elapsed();
        if info.state == want {
            return elapsed;
        }
        assert!(elapsed <= limit, "{id} not {want:?} after {elapsed:?} (limit {limit:?}): {info:?}");
        tokio::time::sleep(ms(5)).await;
    }
}

/// Asserts that `at`, the Unix-millisecond field `field` of `info`, lies `window` after a moment between
/// `before` and `after` (client readings of the clock taken around the request that set it).
fn assert_window(info: &Info, field: &str, at: u64, before: u64, after: u64, window: u64) {
    assert!(
        before + window - SKEW_MS <= at && at <= after + window + SKEW_MS,
        "{field} {at} is not {window}ms after [{before}, {after}]: {info:?}"
    );
}

/// [`wait_for_state`] for the raw tests, with the state as INFO spells it.
async fn raw_wait_for_state(c: &mut RawClient, id: &str, want: &str, since: Instant, limit: Duration) -> Duration {
    loop {
        let info = c.info(id).await.unwrap_or_else(|| panic!("{id} was deleted while waiting for {want}"));
        let elapsed = since.elapsed();
        if info["state"] == want {
            return elapsed;
        }
        assert!(elapsed <= limit, "{id} not {want} after {elapsed:?} (limit {limit:?}): {info:?}");
        tokio::time::sleep(ms(5)).await;
    }
}

/// [`assert_window`] for the raw tests, on INFO's fields as sent.
fn raw_assert_window(info: &HashMap<String, String>, field: &str, before: u64, after: u64, window: u64) {
    let at = num(info, field);
    assert!(
        before + window - SKEW_MS <= at && at <= after + window + SKEW_MS,
        "{field} {at} is not {window}ms after [{before}, {after}]: {info:?}"
    );
}

#[tokio::test]
async fn lease_answers_leased_with_a_token_and_info_shows_it() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    assert_eq!(c.cmd("LEASE").await, "NOT_FOUND", "an empty pool has nothing to lease");
    let id = c.gen(1).await.remove(0);

    let reply = c.cmd("LEASE").await;
    let lease = leased_of(&reply);
    assert_eq!(lease.id, id);
    assert_eq!(lease.secret, None, "a generated key has no secret: {reply:?}");
    assert_eq!(reply.split(' ').count(), 3, "`LEASED <id> <token>` and nothing more: {reply:?}");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "blocked");
    assert_eq!(num(&info, "token"), lease.token, "INFO shows the current lease's token");
    assert_eq!(num(&info, "leases"), 1);
    assert_eq!(c.cmd("LEASE").await, "NOT_FOUND", "the only key is blocked");

    assert_eq!(c.cmd(&format!("REL {id} {}", lease.token)).await, "RELEASED");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "free");
    assert!(!info.contains_key("token"), "no token while free: {info:?}");
    assert_eq!(c.cmd(&format!("REL {id} {}", lease.token)).await, "STALE", "that lease is over");
    assert_eq!(c.cmd(&format!("REL {UNKNOWN_ID} {}", lease.token)).await, "NOT_FOUND");

    let stats = c.stats().await;
    assert_eq!(num(&stats, "cmd_lease"), 3);
    assert_eq!((num(&stats, "get_hits"), num(&stats, "get_misses")), (1, 2), "LEASE counts as GET does");
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn tokens_only_grow_across_keys_leases_and_forms() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let ids = gen(&c, 3).await;

    let mut tokens = Vec::new();
    for round in 0..4 {
        for _ in 0..3 {
            tokens.push(token(&lease(&c, None, None).await.expect("a free key")));
        }
        // A v1 GET takes a token too: INFO shows it.
        for id in &ids {
            assert_eq!(c.release(id, None).await.expect("REL"), Released::Yes, "round {round}");
        }
        let got = c.get(None, None).await.expect("GET").expect("a free key");
        assert_eq!(got.token, None, "a GET does not report its token");
        tokens.push(token_of(&c, &got.id).await);
        assert_eq!(c.release(got.id, None).await.expect("REL"), Released::Yes);
    }
    assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "tokens must strictly increase: {tokens:?}");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_holder_whose_lease_timed_out_is_told_stale_and_cannot_free_the_new_holders_key() {
    let block = ms(100);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let a = typed::connect(server.addr()).await;
    let b = typed::connect(server.addr()).await;
    let id = gen(&a, 1).await.remove(0);

    let lease_a = lease(&a, None, None).await.expect("a free key");
    // B waits for the key; A's block window runs out and B gets it, for a window that outlasts the test.
    let lease_b = lease(&b, Some(ms(2_000)), Some(ms(60_000))).await.expect("the key, once A's lease timed out");
    assert_eq!(lease_b.id, id);
    assert!(token(&lease_b) > token(&lease_a), "{lease_b:?} is newer than {lease_a:?}");

    assert_eq!(a.release(&lease_a, None).await.expect("REL"), Released::Stale);
    assert_eq!(a.release(&lease_a, Some(ms(1_000))).await.expect("REL"), Released::Stale);
    assert_eq!(a.touch(&lease_a, None).await.expect("TOUCH"), Touched::Stale);
    let described = info(&a, &id).await;
    let (_, current) = blocked(&described);
    assert_eq!(current, token(&lease_b), "B still holds the key, under B's lease");
    assert_eq!(described.leases, 2);

    assert_eq!(b.release(&lease_b, None).await.expect("REL"), Released::Yes);
    assert_eq!(a.release(&lease_a, None).await.expect("REL"), Released::Stale, "a free key is no lease of A's");
    assert_eq!(stat(&a, "released_by_timeout").await, 1);
    typed::close_and_stop(server, [a, b]).await;
}

#[tokio::test]
async fn rel_with_a_token_releases_only_the_current_lease() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let first = lease(&c, None, None).await.expect("a free key");
    assert_eq!(c.release(id, None).await.expect("REL"), Released::Yes, "v1's REL needs no token");
    let second = lease(&c, None, None).await.expect("the key again");

    assert_eq!(c.release(&first, None).await.expect("REL"), Released::Stale, "the key was leased again");
    let unissued = (id, token(&second) + 1);
    assert_eq!(c.release(unissued, None).await.expect("REL"), Released::Stale, "a token not yet handed out");
    assert_eq!(c.release((id, u64::MAX), None).await.expect("REL"), Released::Stale, "the largest token parses");
    assert!(matches!(state(&c, &id).await, Some(KeyState::Blocked { .. })), "no STALE released anything");
    assert_eq!(c.release(&second, Some(Duration::ZERO)).await.expect("REL"), Released::Yes, "a 0ms delay is none");
    assert_eq!(state(&c, &id).await, Some(KeyState::Free));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn touch_restarts_the_block_window_with_or_without_a_token() {
    let server = start(config_with_windows(ms(60_000), ms(120_000))).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let lease = lease(&c, Some(Duration::ZERO), Some(ms(5_000))).await.expect("a free key");
    let alive_until = info(&c, &id).await.alive_until_ms;
    assert!(alive_until.is_some(), "a generated key has a keep-alive window");

    let before = unix_ms();
    assert_eq!(c.touch(&lease, Some(ms(30_000))).await.expect("TOUCH"), Touched::Yes);
    let described = info(&c, &id).await;
    let (until, current) = blocked(&described);
    assert_window(&described, "blocked_until_ms", until, before, unix_ms(), 30_000);
    assert_eq!(current, token(&lease), "TOUCH keeps the lease");

    let before = unix_ms();
    assert_eq!(c.touch(id, None).await.expect("TOUCH"), Touched::Yes, "no token, no duration: the pool's window");
    let described = info(&c, &id).await;
    assert_window(&described, "blocked_until_ms", blocked(&described).0, before, unix_ms(), 60_000);

    let before = unix_ms();
    assert_eq!(c.touch(id, Some(ms(2_000))).await.expect("TOUCH"), Touched::Yes, "a duration without a token");
    let described = info(&c, &id).await;
    assert_window(&described, "blocked_until_ms", blocked(&described).0, before, unix_ms(), 2_000);

    let before = unix_ms();
    assert_eq!(c.touch(&lease, None).await.expect("TOUCH"), Touched::Yes, "a token without a duration");
    let described = info(&c, &id).await;
    assert_window(&described, "blocked_until_ms", blocked(&described).0, before, unix_ms(), 60_000);
    assert_eq!(described.alive_until_ms, alive_until, "TOUCH does not restart the keep-alive window");
    assert_eq!(described.leases, 1, "TOUCH is not a new lease");
    assert_eq!(stat(&c, "cmd_touch").await, 4);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_touched_lease_outlives_its_first_window_and_ends_with_the_new_one() {
    let server = start(config_with_windows(ms(60_000), ms(60_000))).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let lease = lease(&c, Some(Duration::ZERO), Some(ms(150))).await.expect("a free key");

    tokio::time::sleep(ms(50)).await;
    let since = Instant::now();
    assert_eq!(c.touch(&lease, Some(ms(300))).await.expect("TOUCH"), Touched::Yes);
    // The first window's timer (due 100ms from now) must not end the lease.
    let elapsed = wait_for_state(&c, &id, KeyState::Free, since, ms(300) + SLACK).await;
    assert!(elapsed + ROUNDING >= ms(300), "released after {elapsed:?}, before the touched 300ms window");
    assert_eq!(stat(&c, "released_by_timeout").await, 1);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn touch_answers_not_blocked_stale_and_not_found() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);
    let unknown = typed::unknown_id();

    assert_eq!(c.touch(id, None).await.expect("TOUCH"), Touched::NotBlocked, "a free key");
    assert_eq!(c.touch(id, Some(ms(1_000))).await.expect("TOUCH"), Touched::NotBlocked);
    assert_eq!(c.touch((id, 7), None).await.expect("TOUCH"), Touched::Stale, "a token names no lease of a free key");
    assert_eq!(c.touch(unknown, None).await.expect("TOUCH"), Touched::NotFound);
    assert_eq!(c.touch((unknown, 7), Some(ms(1_000))).await.expect("TOUCH"), Touched::NotFound);

    let lease = lease(&c, None, None).await.expect("a free key");
    let next = (id, token(&lease) + 1);
    assert_eq!(c.touch(next, None).await.expect("TOUCH"), Touched::Stale, "not the current lease");
    assert_eq!(c.release(&lease, Some(ms(10_000))).await.expect("REL"), Released::Yes);
    assert_eq!(c.touch(id, None).await.expect("TOUCH"), Touched::NotBlocked, "a delayed key is not blocked");
    assert_eq!(c.touch(&lease, None).await.expect("TOUCH"), Touched::Stale, "its lease is over");
    let delayed = matches!(state(&c, &id).await, Some(KeyState::Delayed { .. }));
    assert!(delayed, "TOUCH did not bring it back");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn blocks_and_delays_past_max_block_are_refused_and_change_nothing() {
    let mut config = config();
    config.max_block = ms(2_000);
    let server = start(config).await;
    let mut c = RawClient::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);

    for request in ["LEASE 0ms 3s", "GET 0ms 2001ms", "GET 1s 1m"] {
        assert_eq!(c.cmd(request).await, "CLIENT_ERROR block is longer than the maximum, 2s", "{request}");
    }
    for request in ["LEASE 0ms 0ms", "GET 0s 0s"] {
        assert_eq!(c.cmd(request).await, "CLIENT_ERROR block must be at least 1ms", "{request}");
    }
    assert_eq!(c.state(&id).await.as_deref(), Some("free"), "a refused lease leases nothing");

    let lease = c.lease("0ms 2s").await.expect("a block of exactly --max-block is allowed");
    let blocked_until = num(&c.info(&id).await.expect("the key exists"), "blocked_until_ms");
    let refused = [
        (format!("TOUCH {id} {} 3s", lease.token), "CLIENT_ERROR block is longer than the maximum, 2s"),
        (format!("TOUCH {id} 1h"), "CLIENT_ERROR block is longer than the maximum, 2s"),
        (format!("TOUCH {id} 0ms"), "CLIENT_ERROR block must be at least 1ms"),
        (format!("REL {id} {} 3s", lease.token), "CLIENT_ERROR delay is longer than the maximum, 2s"),
        (format!("REL {id} 2001ms"), "CLIENT_ERROR delay is longer than the maximum, 2s"),
    ];
    for (request, want) in &refused {
        assert_eq!(&c.cmd(request).await, want, "{request}");
    }
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "blocked", "no refused REL released the key");
    assert_eq!(num(&info, "token"), lease.token);
    assert_eq!(num(&info, "blocked_until_ms"), blocked_until, "no refused TOUCH moved the window");
    assert_eq!(c.cmd(&format!("TOUCH {id} {} 2s", lease.token)).await, "TOUCHED", "exactly --max-block");

    let stats = c.stats().await;
    assert_eq!(num(&stats, "max_block_ms"), 2_000);
    assert_eq!(num(&stats, "waiters"), 0, "no refused request waits");
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_delayed_release_holds_the_key_back_until_its_delay_passes() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let lease = c.lease("").await.expect("a free key");

    let delay = ms(300);
    let since = Instant::now();
    let before = unix_ms();
    assert_eq!(c.cmd(&format!("REL {id} {} 300ms", lease.token)).await, "RELEASED");
    let after = unix_ms();
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "delayed");
    raw_assert_window(&info, "free_at_ms", before, after, 300);
    assert!(!info.contains_key("token") && !info.contains_key("blocked_until_ms"), "{info:?}");
    let stats = c.stats().await;
    let counts = ["keys_free", "keys_blocked", "keys_delayed"].map(|name| num(&stats, name));
    assert_eq!(counts, [0, 0, 1], "free, blocked, delayed");

    assert_eq!(c.cmd("GET").await, "NOT_FOUND", "a delayed key is leased to no one");
    assert_eq!(c.cmd("LEASE").await, "NOT_FOUND");
    assert_eq!(c.cmd(&format!("REL {id}")).await, "NOT_BLOCKED");
    assert_eq!(c.cmd(&format!("REL {id} {}", lease.token)).await, "STALE");
    assert_eq!(c.cmd(&format!("PING {id}")).await, "ALIVE", "keep-alive applies as usual");
    assert!(since.elapsed() < delay, "the checks above took longer than the delay; they prove nothing");

    let elapsed = raw_wait_for_state(&mut c, &id, "free", since, delay + SLACK).await;
    assert!(elapsed + ROUNDING >= delay, "free after {elapsed:?}, before its {delay:?} delay");
    assert_eq!(c.stat("keys_delayed").await, 0);
    let again = c.lease("").await.expect("leasable once the delay has passed");
    assert_eq!(again.id, id);
    assert!(again.token > lease.token);
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_delayed_key_can_be_deleted_or_expire_by_keep_alive() {
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;
    let ids = gen(&c, 2).await;
    let since = Instant::now();
    let mut leases = HashMap::new();
    for _ in 0..2 {
        let lease = lease(&c, None, None).await.expect("a free key");
        leases.insert(lease.id, lease);
    }
    for id in &ids {
        assert_eq!(c.release(&leases[id], Some(ms(10_000))).await.expect("REL"), Released::Yes);
    }
    assert!(c.delete(&ids[0]).await.expect("DEL"), "DELETED");
    assert_eq!(c.info(&ids[0]).await.expect("INFO"), None);

    // The other is delayed past its keep-alive window: it is deleted when that passes.
    loop {
        let info = c.info(&ids[1]).await.expect("INFO");
        let elapsed = since.elapsed();
        if info.is_none() {
            assert!(elapsed + ROUNDING >= keepalive, "deleted after {elapsed:?}");
            break;
        }
        assert!(elapsed <= keepalive + SLACK, "still there after {elapsed:?}: {info:?}");
        tokio::time::sleep(ms(5)).await;
    }
    let stats = c.stats().await.expect("STATS");
    assert_eq!((figure(&stats, "keys"), figure(&stats, "keys_delayed")), (0, 0));
    assert_eq!(figure(&stats, "expired_keepalive"), 1);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn malformed_and_out_of_limit_arguments_are_client_errors_and_the_connection_goes_on() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let lease = c.lease("").await.expect("a free key");
    let token = lease.token;

    let unit = "duration needs a unit (ms, s, m or h), as in 250ms, 60s, 5m";
    let number = "duration must start with a whole number, as in 250ms, 60s, 5m";
    let cases: Vec<(String, String)> = vec![
        ("GET 5".into(), format!("wait {unit}")),
        ("LEASE 250".into(), format!("wait {unit}")),
        ("LEASE 1s 30".into(), format!("block {unit}")),
        ("GET 1.5s".into(), "wait unknown duration unit; use ms, s, m or h".into()),
        ("LEASE 5sec".into(), "wait unknown duration unit; use ms, s, m or h".into()),
        ("LEASE 1s 2s 3s".into(), "too many arguments for LEASE".into()),
        ("LEASE now".into(), "too many arguments for LEASE".into()),
        ("GET 99999999999999999999s".into(), "wait duration is too large".into()),
        (format!("REL {id} {token} 5"), format!("delay {unit}")),
        (format!("REL {id} soon"), format!("delay {number}")),
        (format!("REL {id} 18446744073709551616"), "malformed token".into()),
        (format!("REL {id} 123456789012345678901"), "malformed token".into()),
        (format!("REL {id} 5s {token}"), "too many arguments for REL".into()),
        (format!("REL {id} {token} 5s 5s"), "too many arguments for REL".into()),
        (format!("TOUCH {id} later"), format!("block {number}")),
        (format!("TOUCH {id} {token} 10"), format!("block {unit}")),
        (format!("TOUCH {id} 18446744073709551616"), "malformed token".into()),
        ("TOUCH".into(), "TOUCH needs a key id".into()),
        ("TOUCH short".into(), "malformed key id: ids are 24 letters and digits".into()),
        ("GET 6m".into(), "wait is longer than the maximum, 5m".into()),
        ("LEASE 301s".into(), "wait is longer than the maximum, 5m".into()),
        ("GET 0ms 2h".into(), "block is longer than the maximum, 1h".into()),
        ("LEASE 0ms 0ms".into(), "block must be at least 1ms".into()),
        (format!("TOUCH {id} {token} 61m"), "block is longer than the maximum, 1h".into()),
        (format!("TOUCH {id} 0s"), "block must be at least 1ms".into()),
        (format!("REL {id} {token} 2h"), "delay is longer than the maximum, 1h".into()),
        ("AUTOREL now".into(), "too many arguments for AUTOREL".into()),
    ];
    for (request, want) in &cases {
        assert_eq!(c.cmd(request).await, format!("CLIENT_ERROR {want}"), "{request}");
        assert_eq!(c.cmd("PING").await, "PONG", "the connection goes on after {request:?}");
    }
    // A bare integer after the id is a token, never a duration.
    assert_eq!(c.cmd(&format!("REL {id} 5")).await, "STALE");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "blocked", "no refused request released or touched the lease");
    assert_eq!(num(&info, "token"), token);
    let stats = c.stats().await;
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_blocked"), num(&stats, "waiters")), (1, 1, 0));
    assert_eq!(num(&stats, "cmd_autorel"), 0, "a malformed AUTOREL is not counted, nor applied");
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn the_longest_allowed_wait_and_block_are_accepted() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    c.gen(2).await;
    // A key is free, so neither request waits; each is only checked against the limits.
    let lease = c.lease("5m 1h").await.expect("a free key");
    let got = key_of(&c.cmd("GET 300s 3600s").await);
    assert_ne!(got, lease.id);
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn v1_get_and_rel_work_as_before_beside_leases() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let ids = c.gen(2).await;

    let got = c.cmd("GET").await;
    assert_eq!(got.split(' ').count(), 2, "v1's `KEY <id>`: {got:?}");
    let got = key_of(&got);
    let lease = c.lease("").await.expect("the other key");
    assert!(ids.contains(&got) && ids.contains(&lease.id) && got != lease.id);

    // REL <id> without a token releases whichever lease the key is under, as in v1.
    assert_eq!(c.cmd(&format!("REL {}", lease.id)).await, "RELEASED");
    assert_eq!(c.cmd(&format!("REL {}", lease.id)).await, "NOT_BLOCKED");
    // A GET's lease has a token too, and REL with it works.
    let token = num(&c.info(&got).await.expect("the key exists"), "token");
    assert_eq!(c.cmd(&format!("REL {got} {token}")).await, "RELEASED");
    assert_eq!(c.cmd(&format!("REL {UNKNOWN_ID}")).await, "NOT_FOUND");

    // Bare GET never waits, even with a waiter queued on another connection.
    let mut waiter = RawClient::connect(server.addr()).await;
    let all: Vec<String> = vec![c.get().await.expect("a free key"), c.get().await.expect("a free key")];
    waiter.send_line("LEASE 2s").await;
    c.wait_for_stat("waiters", 1).await;
    let since = Instant::now();
    assert_eq!(c.cmd("GET").await, "NOT_FOUND");
    assert!(since.elapsed() < ms(500), "bare GET waited {:?}", since.elapsed());
    assert_eq!(c.cmd(&format!("REL {}", all[0])).await, "RELEASED");
    assert_eq!(leased_of(&waiter.line().await).id, all[0]);
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn stats_reports_the_new_limits_and_counters() {
    let mut config = config();
    config.max_wait = ms(90_000);
    config.max_block = ms(1_500);
    config.max_secret = 64;
    let server = start(config).await;
    let c = typed::connect(server.addr()).await;
    let stats = c.stats().await.expect("STATS");
    for (name, want) in [("max_wait_ms", 90_000), ("max_block_ms", 1_500), ("max_secret_bytes", 64)] {
        assert_eq!(figure(&stats, name), want, "{name}");
    }
    let zero = [
        "keys_delayed",
        "waiters",
        "cmd_lease",
        "cmd_touch",
        "cmd_add",
        "cmd_autorel",
        "keys_added",
        "waits_served",
        "waits_timed_out",
        "released_by_close",
    ];
    for name in zero {
        assert_eq!(figure(&stats, name), 0, "{name} in a new server");
    }

    let id = gen(&c, 1).await.remove(0);
    let lease = lease(&c, None, None).await.expect("a free key"); // cmd_lease +1
    assert_eq!(c.touch(id, None).await.expect("TOUCH"), Touched::Yes); // cmd_touch +1
    assert_eq!(c.release(&lease, Some(ms(1_000))).await.expect("REL"), Released::Yes);
    let added = c.add("s3cr3t", None).await.expect("ADD"); // cmd_add +1, keys_added +1
    assert!(matches!(added, Added::New(_)), "a new secret: {added:?}");
    c.autorel().await.expect("AUTOREL answers OK"); // cmd_autorel +1
    let stats = c.stats().await.expect("STATS");
    let want = [
        ("cmd_lease", 1),
        ("cmd_touch", 1),
        ("cmd_add", 1),
        ("cmd_autorel", 1),
        ("keys_added", 1),
        ("keys_generated", 1),
        ("keys_delayed", 1),
        ("keys", 2),
    ];
    for (name, value) in want {
        assert_eq!(figure(&stats, name), value, "{name}");
    }
    typed::close_and_stop(server, [c]).await;
}
