//! Timers, with short configured windows (a few hundred milliseconds): a leased key is released when its
//! block window passes, a key not kept alive is deleted when its keep-alive window passes (blocked or
//! not), PING restarts the keep-alive and GET/REL do not, PING does not extend a block, cancelled leases
//! (REL, DEL) never fire later, mass expiries finish promptly, and the `released_by_timeout` and
//! `expired_keepalive` counters follow.
//!
//! Each expiry must happen no earlier than its window (less a millisecond of rounding) and no later than
//! the window plus [`SLACK`], which is generous for a loaded two-core CI machine yet far tighter than any
//! "checked on the next request" or "swept once a second" design would meet.
//!
//! Every test here is about behaviour, so all of them drive the daemon through the typed client,
//! `keypool::client::Client`.

mod common;

use std::time::{Duration, Instant};

use common::typed::{self, stat};
use common::{config_with_windows, start, unix_ms};
use keypool::client::{Client, Info, KeyId, KeyState, Released, Reply};

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
    c: &Client,
    id: &KeyId,
    since: Instant,
    limit: Duration,
    what: &str,
    done: impl Fn(&Option<Info>) -> bool,
) -> Duration {
    loop {
        let info = common::within("INFO", c.info(id)).await.expect("INFO");
        let elapsed = since.elapsed();
        if done(&info) {
            return elapsed;
        }
        assert!(elapsed <= limit, "{what}: not after {elapsed:?} (limit {limit:?}); INFO {id}: {info:?}");
        tokio::time::sleep(ms(5)).await;
    }
}

/// Waits for `id` to be deleted; returns the time from `since` until it was seen gone.
async fn wait_gone(c: &Client, id: &KeyId, since: Instant, window: Duration) -> Duration {
    poll_info(c, id, since, window + SLACK, "key deleted", Option::is_none).await
}

/// Waits for `id` to be free; returns the time from `since` until it was seen free.
async fn wait_free(c: &Client, id: &KeyId, since: Instant, window: Duration) -> Duration {
    let is_free = |info: &Option<Info>| match info {
        Some(info) => info.state == KeyState::Free,
        None => panic!("the key was deleted while waiting for its release"),
    };
    poll_info(c, id, since, window + SLACK, "key released", is_free).await
}

fn assert_not_early(elapsed: Duration, window: Duration, what: &str) {
    assert!(elapsed + ROUNDING >= window, "{what} after {elapsed:?}, before its {window:?} window passed");
}

/// `GEN count` on `c`: the new ids, as many as asked for.
async fn gen(c: &Client, count: u32) -> Vec<KeyId> {
    let ids = c.gen(count).await.expect("GEN");
    assert_eq!(ids.len(), count as usize, "GEN {count} returned {} keys", ids.len());
    ids
}

/// `GET` on `c`: the id of the key leased (with no token, as a plain GET answers), or `None` on
/// `NOT_FOUND`.
async fn get(c: &Client) -> Option<KeyId> {
    let lease = c.get(None, None).await.expect("GET")?;
    assert_eq!(lease.token, None, "a plain GET reports no token");
    Some(lease.id)
}

/// The INFO of a key that must exist.
async fn info(c: &Client, id: &KeyId) -> Info {
    c.info(id).await.expect("INFO").unwrap_or_else(|| panic!("{id} does not exist"))
}

/// When a key that must exist is deleted unless pinged first (Unix ms).
async fn alive_until(c: &Client, id: &KeyId) -> u64 {
    let info = info(c, id).await;
    info.alive_until_ms.unwrap_or_else(|| panic!("a generated key has a keep-alive window: {info:?}"))
}

/// A figure of a `STATS` reply that must be there.
fn num(stats: &keypool::client::Stats, name: &str) -> u64 {
    stats.number(name).unwrap_or_else(|| panic!("STATS has no numeric {name}: {stats:?}"))
}

#[tokio::test]
async fn a_lease_is_released_when_its_block_window_passes() {
    let block = ms(250);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);

    let since = Instant::now();
    let before = unix_ms();
    assert_eq!(get(&c).await, Some(id));
    let described = info(&c, &id).await;
    let KeyState::Blocked { until_ms: blocked_until, .. } = described.state else {
        panic!("not blocked: {described:?}")
    };
    assert!(blocked_until >= before + 250 - 50 && blocked_until <= unix_ms() + 250 + 50, "{described:?}");
    assert_eq!(get(&c).await, None, "the only key is blocked");

    let elapsed = wait_free(&c, &id, since, block).await;
    assert_not_early(elapsed, block, "released");

    let stats = c.stats().await.expect("STATS");
    assert_eq!(num(&stats, "released_by_timeout"), 1);
    assert_eq!((num(&stats, "keys_free"), num(&stats, "keys_blocked")), (1, 0));
    assert_eq!(c.release(id, None).await.expect("REL"), Released::NotBlocked, "the timeout already released it");
    assert_eq!(get(&c).await, Some(id), "a released key can be leased again");
    assert_eq!(info(&c, &id).await.leases, 2);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_released_then_re_leased_key_keeps_its_new_block_window() {
    let block = ms(300);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);

    assert_eq!(get(&c).await, Some(id));
    tokio::time::sleep(ms(150)).await;
    assert_eq!(c.release(id, None).await.expect("REL"), Released::Yes);
    // The first lease's timer must be gone: the second lease lasts its own full window.
    let since = Instant::now();
    assert_eq!(get(&c).await, Some(id));
    let elapsed = wait_free(&c, &id, since, block).await;
    assert_not_early(elapsed, block, "the second lease ended");
    assert_eq!(stat(&c, "released_by_timeout").await, 1, "one lease timed out, the other was released");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn deleting_a_blocked_key_cancels_its_lease_timer() {
    let block = ms(300);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let c = typed::connect(server.addr()).await;
    gen(&c, 2).await;

    let first = get(&c).await.expect("a free key");
    assert!(c.delete(&first).await.expect("DEL"));
    tokio::time::sleep(ms(150)).await;
    // This lease likely reuses the deleted one's slot: the deleted lease's timer must not end it early.
    let since = Instant::now();
    let second = get(&c).await.expect("the other key");
    assert_ne!(second, first);
    let elapsed = wait_free(&c, &second, since, block).await;
    assert_not_early(elapsed, block, "the second key's lease ended");
    let stats = c.stats().await.expect("STATS");
    assert_eq!(num(&stats, "released_by_timeout"), 1, "only the live lease timed out");
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_free")), (1, 1));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn ping_does_not_extend_a_block() {
    let block = ms(400);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);

    let since = Instant::now();
    assert_eq!(get(&c).await, Some(id));
    let blocked_until = typed::blocked_until(&c, &id).await;
    tokio::time::sleep(ms(250)).await;
    assert!(c.ping(&id).await.expect("PING"));
    assert_eq!(typed::blocked_until(&c, &id).await, blocked_until, "PING moved the block deadline");

    // Had PING extended the block, it would end 650ms after the GET; it must end by 400ms + SLACK.
    let elapsed = wait_free(&c, &id, since, block).await;
    assert_not_early(elapsed, block, "released");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_key_not_kept_alive_is_deleted_when_its_window_passes() {
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;

    let since = Instant::now();
    let ids = gen(&c, 3).await;
    for id in &ids {
        let elapsed = wait_gone(&c, id, since, keepalive).await;
        assert_not_early(elapsed, keepalive, "deleted");
    }
    for id in &ids {
        assert!(!c.ping(id).await.expect("PING"), "deleted for good");
        assert!(!c.delete(id).await.expect("DEL"));
    }
    assert_eq!(get(&c).await, None);
    let stats = c.stats().await.expect("STATS");
    assert_eq!(num(&stats, "expired_keepalive"), 3);
    assert_eq!(num(&stats, "keys"), 0);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_blocked_key_not_kept_alive_is_deleted_too() {
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;

    let since = Instant::now();
    let id = gen(&c, 1).await.remove(0);
    assert_eq!(get(&c).await, Some(id));
    let elapsed = wait_gone(&c, &id, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted");

    assert_eq!(c.release(id, None).await.expect("REL"), Released::NotFound, "the holder cannot release a deleted key");
    assert_eq!(get(&c).await, None, "a deleted key never comes back");
    let stats = c.stats().await.expect("STATS");
    assert_eq!(num(&stats, "expired_keepalive"), 1);
    assert_eq!(num(&stats, "released_by_timeout"), 0);
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_blocked")), (0, 0));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn ping_restarts_the_keep_alive_window_of_that_key_only() {
    let keepalive = ms(400);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;

    let since = Instant::now();
    let ids = gen(&c, 2).await;
    let (pinged, left) = (&ids[0], &ids[1]);
    let alive_until = alive_until(&c, pinged).await;
    tokio::time::sleep(ms(200)).await;
    let pinged_at = Instant::now();
    assert!(c.ping(pinged).await.expect("PING"));
    let new_alive_until = self::alive_until(&c, pinged).await;
    assert!(new_alive_until >= alive_until + 190, "PING moved alive_until_ms from {alive_until} to {new_alive_until}");

    // The other key keeps its original deadline...
    let elapsed = wait_gone(&c, left, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "the key not pinged was deleted");
    // ...and the pinged one lives a full window from its PING.
    let elapsed = wait_gone(&c, pinged, pinged_at, keepalive).await;
    assert_not_early(elapsed, keepalive, "the pinged key was deleted");
    assert_eq!(stat(&c, "expired_keepalive").await, 2);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn regular_pings_keep_a_key_alive_indefinitely() {
    let keepalive = ms(200);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;
    let id = gen(&c, 1).await.remove(0);

    // Three windows' worth of pings, well inside the window each time.
    let mut last_ping = Instant::now();
    for _ in 0..12 {
        tokio::time::sleep(ms(50)).await;
        last_ping = Instant::now();
        assert!(c.ping(&id).await.expect("PING"), "the key died although pinged");
    }
    let elapsed = wait_gone(&c, &id, last_ping, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted after the last ping");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn get_and_rel_do_not_restart_the_keep_alive_window() {
    let keepalive = ms(400);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;

    let since = Instant::now();
    let id = gen(&c, 1).await.remove(0);
    let alive_until = alive_until(&c, &id).await;
    tokio::time::sleep(ms(250)).await;
    assert_eq!(get(&c).await, Some(id));
    assert_eq!(self::alive_until(&c, &id).await, alive_until, "GET");
    assert_eq!(c.release(id, None).await.expect("REL"), Released::Yes);
    assert_eq!(self::alive_until(&c, &id).await, alive_until, "REL");

    // Had GET or REL restarted it, the key would live until 650ms after the GEN.
    let elapsed = wait_gone(&c, &id, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_key_generated_after_the_head_was_deleted_gets_its_own_full_window() {
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;

    let first = gen(&c, 1).await.remove(0);
    assert!(c.delete(&first).await.expect("DEL"));
    tokio::time::sleep(ms(120)).await;
    let since = Instant::now();
    let second = gen(&c, 1).await.remove(0);
    let elapsed = wait_gone(&c, &second, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "the second key was deleted");
    let stats = c.stats().await.expect("STATS");
    assert_eq!(num(&stats, "expired_keepalive"), 1, "the deleted key is not counted as expired");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn timers_still_fire_after_the_pool_was_emptied_by_them() {
    let (block, keepalive) = (ms(150), ms(250));
    let server = start(config_with_windows(block, keepalive)).await;
    let c = typed::connect(server.addr()).await;

    // Let the only key expire, so that no timer at all is left...
    let since = Instant::now();
    let first = gen(&c, 1).await.remove(0);
    wait_gone(&c, &first, since, keepalive).await;
    assert_eq!(stat(&c, "keys").await, 0);

    // ...then the next key's lease and keep-alive must be timed all the same.
    let since = Instant::now();
    let second = gen(&c, 1).await.remove(0);
    assert_eq!(get(&c).await, Some(second));
    let elapsed = wait_free(&c, &second, since, block).await;
    assert_not_early(elapsed, block, "released");
    let elapsed = wait_gone(&c, &second, since, keepalive).await;
    assert_not_early(elapsed, keepalive, "deleted");
    let stats = c.stats().await.expect("STATS");
    assert_eq!((num(&stats, "released_by_timeout"), num(&stats, "expired_keepalive")), (1, 2));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_mass_block_timeout_releases_every_lease_promptly() {
    const KEYS: usize = 2000;
    let block = ms(250);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let c = typed::connect(server.addr()).await;
    gen(&c, KEYS as u32).await;

    let since = Instant::now();
    // One write, as a batch of workers would make it.
    let mut pipeline = c.pipeline();
    for _ in 0..KEYS {
        pipeline.get(None, None);
    }
    let replies = pipeline.run().await.expect("the GETs");
    assert_eq!(replies.len(), KEYS);
    for reply in replies {
        assert!(matches!(reply, Ok(Reply::Lease(Some(_)))), "a GET found no free key: {reply:?}");
    }
    // Every lease was made between `since` and now: none may end before `since + block`, and all must
    // have ended by `leased + block + SLACK`.
    let leased = Instant::now();
    assert_eq!(stat(&c, "keys_blocked").await, KEYS as u64);
    loop {
        let stats = c.stats().await.expect("STATS");
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
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_mass_keep_alive_expiry_deletes_every_key_promptly() {
    const KEYS: u64 = 20_000;
    let keepalive = ms(300);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;

    let since = Instant::now();
    let replies = c.pipeline().gen(10_000).gen(10_000).run().await.expect("the GENs");
    assert_eq!(replies.len(), 2);
    for reply in replies {
        assert!(matches!(&reply, Ok(Reply::Keys(ids)) if ids.len() == 10_000), "GEN 10000: {reply:?}");
    }
    // Every key was made between `since` and now: none may go before `since + keepalive`, and all must
    // be gone by `generated + keepalive + SLACK`.
    let generated = Instant::now();
    loop {
        let stats = c.stats().await.expect("STATS");
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
    c.health().await.expect("the server still answers PONG");
    typed::close_and_stop(server, [c]).await;
}
