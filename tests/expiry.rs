//! Timers, with short configured windows (a few hundred milliseconds): a leased key is released when its
//! block window passes, a key not kept alive is deleted when its keep-alive window passes (blocked or
//! not), PING restarts the keep-alive and GET/REL do not, PING does not extend a block, cancelled leases
//! (REL, DEL) never fire later, mass expiries finish promptly, and the `released_by_timeout` and
//! `expired_keepalive` counters follow.
//!
//! Each expiry must happen no earlier than its window (less a millisecond of rounding) and no later than
//! the window plus [`SLACK`], which is generous for a loaded two-core CI machine yet far tighter than any
//! "checked on the next request" or "swept once a second" design would meet.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{config_with_windows, num, start, stop, unix_ms, Client};

/// How late an expiry may be observed, past its deadline.
const SLACK: Duration = Duration::from_millis(200);

/// How much earlier than its window an expiry may be observed: engine time is kept in whole
/// milliseconds, rounded down.
const ROUNDING: Duration = Duration::from_millis(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `INFO id` every few milliseconds until `done` accepts the answer (`None` is NOT_FOUND), and
/// returns the time from `since` to the reply that was accepted. Fails the test with `what` once
/// `since + limit` has passed without that.
async fn poll_info(
    c: &mut Client,
    id: &str,
    since: Instant,
    limit: Duration,
    what: &str,
    done: impl Fn(&Option<HashMap<String, String>>) -> bool,
) -> Duration {
    loop {
        let info = c.info(id).await;
        let elapsed = since.elapsed();
        if done(&info) {
            return elapsed;
        }
        assert!(elapsed <= limit, "{what}: not after {elapsed:?} (limit {limit:?}); INFO {id}: {info:?}");
        tokio::time::sleep(ms(5)).await;
    }
}

/// Waits for `id` to be deleted; returns the time from `since` until it was seen gone.
async fn wait_gone(c: &mut Client, id: &str, since: Instant, window: Duration) -> Duration {
    poll_info(c, id, since, window + SLACK, "key deleted", Option::is_none).await
}

/// Waits for `id` to be free; returns the time from `since` until it was seen free.
async fn wait_free(c: &mut Client, id: &str, since: Instant, window: Duration) -> Duration {
    let is_free = |info: &Option<HashMap<String, String>>| match info {
        Some(info) => info["state"] == "free",
        None => panic!("the key was deleted while waiting for its release"),
    };
    poll_info(c, id, since, window + SLACK, "key released", is_free).await
}

fn assert_not_early(elapsed: Duration, window: Duration, what: &str) {
    assert!(elapsed + ROUNDING >= window, "{what} after {elapsed:?}, before its {window:?} window passed");
}

#[tokio::test]
async fn a_lease_is_released_when_its_block_window_passes() {
    let block = ms(250);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);

    let since = Instant::now();
    let before = unix_ms();
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    let info = c.info(&id).await.expect("the key exists");
    let blocked_until = num(&info, "blocked_until_ms");
    assert!(blocked_until >= before + 250 - 50 && blocked_until <= unix_ms() + 250 + 50, "{info:?}");
    assert_eq!(c.cmd("GET").await, "NOT_FOUND", "the only key is blocked");

    let elapsed = wait_free(&mut c, &id, since, block).await;
    assert_not_early(elapsed, block, "released");

    let stats = c.stats().await;
    assert_eq!(num(&stats, "released_by_timeout"), 1);
    assert_eq!((num(&stats, "keys_free"), num(&stats, "keys_blocked")), (1, 0));
    assert_eq!(c.cmd(&format!("REL {id}")).await, "NOT_BLOCKED", "the timeout already released it");
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()), "a released key can be leased again");
    assert_eq!(num(&c.info(&id).await.expect("the key exists"), "leases"), 2);
    stop(server).await;
}

#[tokio::test]
async fn a_released_then_re_leased_key_keeps_its_new_block_window() {
    let block = ms(300);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);

    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    tokio::time::sleep(ms(150)).await;
    assert_eq!(c.cmd(&format!("REL {id}")).await, "RELEASED");
    // The first lease's timer must be gone: the second lease lasts its own full window.
    let since = Instant::now();
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    let elapsed = wait_free(&mut c, &id, since, block).await;
    assert_not_early(elapsed, block, "the second lease ended");
    assert_eq!(c.stat("released_by_timeout").await, 1, "one lease timed out, the other was released");
    stop(server).await;
}

#[tokio::test]
async fn deleting_a_blocked_key_cancels_its_lease_timer() {
    let block = ms(300);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let mut c = Client::connect(server.addr()).await;
    c.gen(2).await;

    let first = c.get().await.expect("a free key");
    assert_eq!(c.cmd(&format!("DEL {first}")).await, "DELETED");
    tokio::time::sleep(ms(150)).await;
    // This lease likely reuses the deleted one's slot: the deleted lease's timer must not end it early.
    let since = Instant::now();
    let second = c.get().await.expect("the other key");
    assert_ne!(second, first);
    let elapsed = wait_free(&mut c, &second, since, block).await;
    assert_not_early(elapsed, block, "the second key's lease ended");
    let stats = c.stats().await;
    assert_eq!(num(&stats, "released_by_timeout"), 1, "only the live lease timed out");
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_free")), (1, 1));
    stop(server).await;
}

#[tokio::test]
async fn ping_does_not_extend_a_block() {
    let block = ms(400);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);

    let since = Instant::now();
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    let blocked_until = num(&c.info(&id).await.expect("the key exists"), "blocked_until_ms");
    tokio::time::sleep(ms(250)).await;
    assert_eq!(c.cmd(&format!("PING {id}")).await, "ALIVE");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(num(&info, "blocked_until_ms"), blocked_until, "PING moved the block deadline");

    // Had PING extended the block, it would end 650ms after the GET; it must end by 400ms + SLACK.
    let elapsed = wait_free(&mut c, &id, since, block).await;
    assert_not_early(elapsed, block, "released");
    stop(server).await;
}

#[tokio::test]
async fn a_key_not_kept_alive_is_deleted_when_its_window_passes() {
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;

    let since = Instant::now();
    let ids = c.gen(3).await;
    for id in &ids {
        let elapsed = wait_gone(&mut c, id, since, keepalive).await;
        assert_not_early(elapsed, keepalive, "deleted");
    }
    for id in &ids {
        assert_eq!(c.cmd(&format!("PING {id}")).await, "NOT_FOUND", "deleted for good");
        assert_eq!(c.cmd(&format!("DEL {id}")).await, "NOT_FOUND");
    }
    assert_eq!(c.cmd("GET").await, "NOT_FOUND");
    let stats = c.stats().await;
    assert_eq!(num(&stats, "expired_keepalive"), 3);
    assert_eq!(num(&stats, "keys"), 0);
    stop(server).await;
}

#[tokio::test]
async fn a_blocked_key_not_kept_alive_is_deleted_too() {
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;

    let since = Instant::now();
    let id = c.gen(1).await.remove(0);
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    let elapsed = wait_gone(&mut c, &id, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted");

    assert_eq!(c.cmd(&format!("REL {id}")).await, "NOT_FOUND", "the holder cannot release a deleted key");
    assert_eq!(c.cmd("GET").await, "NOT_FOUND", "a deleted key never comes back");
    let stats = c.stats().await;
    assert_eq!(num(&stats, "expired_keepalive"), 1);
    assert_eq!(num(&stats, "released_by_timeout"), 0);
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_blocked")), (0, 0));
    stop(server).await;
}

#[tokio::test]
async fn ping_restarts_the_keep_alive_window_of_that_key_only() {
    let keepalive = ms(400);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;

    let since = Instant::now();
    let ids = c.gen(2).await;
    let (pinged, left) = (&ids[0], &ids[1]);
    let alive_until = num(&c.info(pinged).await.expect("the key exists"), "alive_until_ms");
    tokio::time::sleep(ms(200)).await;
    let pinged_at = Instant::now();
    assert_eq!(c.cmd(&format!("PING {pinged}")).await, "ALIVE");
    let new_alive_until = num(&c.info(pinged).await.expect("the key exists"), "alive_until_ms");
    assert!(new_alive_until >= alive_until + 190, "PING moved alive_until_ms from {alive_until} to {new_alive_until}");

    // The other key keeps its original deadline...
    let elapsed = wait_gone(&mut c, left, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "the key not pinged was deleted");
    // ...and the pinged one lives a full window from its PING.
    let elapsed = wait_gone(&mut c, pinged, pinged_at, keepalive).await;
    assert_not_early(elapsed, keepalive, "the pinged key was deleted");
    assert_eq!(c.stat("expired_keepalive").await, 2);
    stop(server).await;
}

#[tokio::test]
async fn regular_pings_keep_a_key_alive_indefinitely() {
    let keepalive = ms(200);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);

    // Three windows' worth of pings, well inside the window each time.
    let mut last_ping = Instant::now();
    for _ in 0..12 {
        tokio::time::sleep(ms(50)).await;
        last_ping = Instant::now();
        assert_eq!(c.cmd(&format!("PING {id}")).await, "ALIVE", "the key died although pinged");
    }
    let elapsed = wait_gone(&mut c, &id, last_ping, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted after the last ping");
    stop(server).await;
}

#[tokio::test]
async fn get_and_rel_do_not_restart_the_keep_alive_window() {
    let keepalive = ms(400);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;

    let since = Instant::now();
    let id = c.gen(1).await.remove(0);
    let alive_until = num(&c.info(&id).await.expect("the key exists"), "alive_until_ms");
    tokio::time::sleep(ms(250)).await;
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    assert_eq!(num(&c.info(&id).await.expect("the key exists"), "alive_until_ms"), alive_until, "GET");
    assert_eq!(c.cmd(&format!("REL {id}")).await, "RELEASED");
    assert_eq!(num(&c.info(&id).await.expect("the key exists"), "alive_until_ms"), alive_until, "REL");

    // Had GET or REL restarted it, the key would live until 650ms after the GEN.
    let elapsed = wait_gone(&mut c, &id, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted");
    stop(server).await;
}

#[tokio::test]
async fn a_key_generated_after_the_head_was_deleted_gets_its_own_full_window() {
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;

    let first = c.gen(1).await.remove(0);
    assert_eq!(c.cmd(&format!("DEL {first}")).await, "DELETED");
    tokio::time::sleep(ms(120)).await;
    let since = Instant::now();
    let second = c.gen(1).await.remove(0);
    let elapsed = wait_gone(&mut c, &second, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "the second key was deleted");
    let stats = c.stats().await;
    assert_eq!(num(&stats, "expired_keepalive"), 1, "the deleted key is not counted as expired");
    stop(server).await;
}

#[tokio::test]
async fn timers_still_fire_after_the_pool_was_emptied_by_them() {
    let (block, keepalive) = (ms(150), ms(250));
    let server = start(config_with_windows(block, keepalive)).await;
    let mut c = Client::connect(server.addr()).await;

    // Let the only key expire, so that no timer at all is left...
    let since = Instant::now();
    let first = c.gen(1).await.remove(0);
    wait_gone(&mut c, &first, since, keepalive).await;
    assert_eq!(c.stat("keys").await, 0);

    // ...then the next key's lease and keep-alive must be timed all the same.
    let since = Instant::now();
    let second = c.gen(1).await.remove(0);
    assert_eq!(c.get().await.as_deref(), Some(second.as_str()));
    let elapsed = wait_free(&mut c, &second, since, block).await;
    assert_not_early(elapsed, block, "released");
    let elapsed = wait_gone(&mut c, &second, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "released_by_timeout"), num(&stats, "expired_keepalive")), (1, 2));
    stop(server).await;
}

#[tokio::test]
async fn a_mass_block_timeout_releases_every_lease_promptly() {
    const KEYS: usize = 2000;
    let block = ms(250);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let mut c = Client::connect(server.addr()).await;
    c.gen(KEYS).await;

    let since = Instant::now();
    c.send("GET\r\n".repeat(KEYS)).await;
    for _ in 0..KEYS {
        common::key_of(&c.line().await);
    }
    // Every lease was made between `since` and now: none may end before `since + block`, and all must
    // have ended by `leased + block + SLACK`.
    let leased = Instant::now();
    assert_eq!(c.stat("keys_blocked").await, KEYS as u64);
    loop {
        let stats = c.stats().await;
        let elapsed = since.elapsed();
        if num(&stats, "keys_free") == KEYS as u64 {
            assert_not_early(elapsed, block, "every lease ended");
            assert_eq!(num(&stats, "released_by_timeout"), KEYS as u64);
            break;
        }
        if elapsed + ROUNDING < block {
            assert_eq!(num(&stats, "keys_blocked"), KEYS as u64, "leases ended after {elapsed:?}");
        }
        let late = leased.elapsed();
        assert!(
            late <= block + SLACK,
            "{late:?} after the last GET, only {} leases have ended",
            num(&stats, "keys_free")
        );
        tokio::time::sleep(ms(5)).await;
    }
    stop(server).await;
}

#[tokio::test]
async fn a_mass_keep_alive_expiry_deletes_every_key_promptly() {
    const KEYS: u64 = 20_000;
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;

    let since = Instant::now();
    c.send("GEN 10000\r\n".repeat(2)).await;
    for _ in 0..2 {
        assert_eq!(c.lines.key_block().await.len(), 10_000);
    }
    // Every key was made between `since` and now: none may go before `since + keepalive`, and all must
    // be gone by `generated + keepalive + SLACK`.
    let generated = Instant::now();
    loop {
        let stats = c.stats().await;
        let elapsed = since.elapsed();
        if num(&stats, "keys") == 0 {
            assert_not_early(elapsed, keepalive, "every key was deleted");
            assert_eq!(num(&stats, "expired_keepalive"), KEYS);
            break;
        }
        // No key may go before its window has passed either.
        if elapsed + ROUNDING < keepalive {
            assert_eq!(num(&stats, "keys"), KEYS, "keys deleted after {elapsed:?}");
        }
        let late = generated.elapsed();
        assert!(late <= keepalive + SLACK, "{late:?} after the last GEN, {} keys are left", num(&stats, "keys"));
        tokio::time::sleep(ms(5)).await;
    }
    assert_eq!(c.cmd("PING").await, "PONG", "the server still answers");
    stop(server).await;
}
