//! Named pools over the wire (issue 4): `USE` and its errors, every command acting on the connection's
//! current pool only (a key of another pool answers `NOT_FOUND`, a lease never hands one out, a waiter
//! is served only by its own pool), `POOLS` and its paging, pools made by GEN, ADD or a waiting lease and
//! dropped once they hold no key and no waiter, `STATS` summed over the pools and `STATS <pool>` for one,
//! `--max-pools`, `--max-keys` per pool, fencing tokens that grow across pools, and AUTOREL in every pool
//! a connection used.
//!
//! A pool's existence is observed through `POOLS` and STATS `pools`. Timed cases use windows of a few
//! hundred milliseconds at most and poll for what they wait for, with a deadline.
//!
//! Three tests drive the daemon through the typed client, `keypool::client::Client` (its pool set by
//! `use_pool` or the builder): a secret in two pools, `--max-keys` per pool, and tokens across pools.
//! The others keep the raw line client, for what the typed client cannot express: `STATS <pool>`'s
//! figures checked by name *and order* (the typed `Stats` is a map), `USE`'s exact `USING` line and its
//! `CLIENT_ERROR` texts, pipelined `USE`/`GEN` bursts and requests held back behind a wait on one
//! connection, and pools a connection moved through while it held `AUTOREL` leases.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{
    close_and_stop, config, config_with_windows, key_of, leased_of, num, start, Client, IO_TIMEOUT, UNKNOWN_ID,
};
use common::{typed, within};
use keypool::client::{Added, Client as TypedClient, Error, KeyId, PoolInfo, Released};
use tokio::io::AsyncWriteExt;

/// The figures of `STATS <pool>`, in the order the server must list them.
const POOL_STAT_NAMES: [&str; 15] = [
    "pool",
    "keys",
    "keys_free",
    "keys_blocked",
    "keys_delayed",
    "waiters",
    "keys_generated",
    "keys_added",
    "get_hits",
    "get_misses",
    "waits_served",
    "waits_timed_out",
    "released_by_timeout",
    "released_by_close",
    "expired_keepalive",
];

/// `ADD secret` on `c`, which must make a new key (`KEY <id>`): its id.
async fn add_new(c: &TypedClient, secret: &str) -> KeyId {
    match c.add(secret, None).await.expect("ADD") {
        Added::New(id) => id,
        Added::Existing(id) => panic!("ADD {secret} answered EXISTS {id}, not a new key"),
    }
}

/// The message of a malformed pool name.
const MALFORMED_NAME: &str = "CLIENT_ERROR malformed pool name: 1 to 64 letters, digits, '_', '.' or '-'";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `STATS pool` as a map of its numeric figures, after checking the names and their order and that the
/// `pool` line names `pool`.
async fn pool_figures(c: &mut Client, pool: &str) -> HashMap<String, u64> {
    let pairs = c.pool_stats(pool).await;
    let names: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, POOL_STAT_NAMES, "STATS {pool} lists its figures in order");
    assert_eq!(pairs[0].1, pool, "STAT pool names the pool asked about");
    pairs[1..]
        .iter()
        .map(|(name, value)| {
            let value = value.parse().unwrap_or_else(|_| panic!("STAT {name} {value:?} of {pool} is not a number"));
            (name.clone(), value)
        })
        .collect()
}

/// Fails the test unless every figure of `STATS pool` is zero.
async fn assert_all_zero(c: &mut Client, pool: &str, why: &str) {
    let figures = pool_figures(c, pool).await;
    let nonzero: BTreeMap<&String, &u64> = figures.iter().filter(|(_, value)| **value != 0).collect();
    assert!(nonzero.is_empty(), "STATS {pool} must be all zero ({why}): {nonzero:?}");
}

/// Polls `POOLS` until `pool` is no longer listed; fails the test if it still is after `limit`. Returns
/// how long after `since` that was seen.
async fn wait_for_pool_gone(c: &mut Client, pool: &str, since: Instant, limit: Duration) -> Duration {
    loop {
        let pools = c.all_pools().await;
        let elapsed = since.elapsed();
        if !pools.contains_key(pool) {
            return elapsed;
        }
        assert!(elapsed <= limit, "pool {pool} still listed {elapsed:?} later: {pools:?}");
        tokio::time::sleep(ms(5)).await;
    }
}

/// Creates each pool of `pools` with its number of keys by one pipelined burst of `USE <pool>` and
/// `GEN <count>`, read while it is written so that neither side's buffers fill up. Returns the ids made,
/// pool by pool. Leaves the connection in the last pool.
async fn create_pools(c: &mut Client, pools: &[(String, usize)]) -> Vec<Vec<String>> {
    let burst: String = pools.iter().map(|(pool, count)| format!("USE {pool}\r\nGEN {count}\r\n")).collect();
    let Client { lines, writer } = c;
    let write = async {
        common::within("a burst to be written", writer.write_all(burst.as_bytes())).await.expect("write a burst");
    };
    let read = async {
        let mut made = Vec::new();
        for (pool, count) in pools {
            assert_eq!(lines.line().await, format!("USING {pool}"));
            let ids = lines.key_block().await;
            assert_eq!(ids.len(), *count, "GEN {count} in {pool}");
            made.push(ids);
        }
        made
    };
    tokio::join!(write, read).1
}

/// Deletes each key of `keys` (a pool and an id) by one pipelined burst of `USE <pool>` and `DEL <id>`.
async fn delete_keys(c: &mut Client, keys: &[(String, String)]) {
    let burst: String = keys.iter().map(|(pool, id)| format!("USE {pool}\r\nDEL {id}\r\n")).collect();
    let Client { lines, writer } = c;
    let write = async {
        common::within("a burst to be written", writer.write_all(burst.as_bytes())).await.expect("write a burst");
    };
    let read = async {
        for (pool, id) in keys {
            assert_eq!(lines.line().await, format!("USING {pool}"));
            assert_eq!(lines.line().await, "DELETED", "DEL {id} in {pool}");
        }
    };
    tokio::join!(write, read);
}

/// Connects a new client, makes `pool` its pool, sends `request` (which must wait), and returns it once
/// `observer` sees the server count `queued` waiters in all.
async fn queue_in(observer: &mut Client, pool: &str, request: &str, queued: u64) -> Client {
    let addr = observer.writer.peer_addr().expect("the observer is connected");
    let mut waiter = Client::connect(addr).await;
    waiter.use_pool(pool).await;
    waiter.send_line(request).await;
    observer.wait_for_stat("waiters", queued).await;
    waiter
}

#[tokio::test]
async fn use_answers_using_and_the_connection_keeps_its_pool_through_errors() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.use_pool("team-a.prod_1").await;
    let id = c.gen(1).await.remove(0);

    assert_eq!(c.cmd("USE").await, "CLIENT_ERROR USE needs a pool name");
    assert_eq!(c.cmd("USE a/b").await, MALFORMED_NAME);
    assert_eq!(c.cmd("USE *").await, MALFORMED_NAME);
    assert_eq!(c.cmd(&format!("USE {}", "p".repeat(65))).await, MALFORMED_NAME, "65 bytes is one too many");
    c.send(b"USE caf\xc3\xa9\r\n").await;
    assert!(c.line().await.starts_with("CLIENT_ERROR malformed pool name"), "non-ASCII bytes are no name");
    assert!(c.cmd("USE a b").await.starts_with("CLIENT_ERROR"), "one name only");
    assert_eq!(c.state(&id).await.as_deref(), Some("free"), "no failed USE moved the connection");

    // Every allowed character, at the longest length; a lowercase command; a one-character name.
    let longest = format!("AZaz09_.-{}", "x".repeat(55));
    assert_eq!(longest.len(), 64);
    c.use_pool(&longest).await;
    assert_eq!(c.cmd("use .").await, "USING .");
    assert_eq!(c.state(&id).await, None, "pool `.` has no such key");
    c.use_pool("team-a.prod_1").await;
    c.use_pool("team-a.prod_1").await;
    assert_eq!(c.state(&id).await.as_deref(), Some("free"), "back in the key's pool");

    // A new connection starts in `default`, whatever other connections chose.
    let mut fresh = Client::connect(server.addr()).await;
    let default_id = fresh.gen(1).await.remove(0);
    assert_eq!(c.state(&default_id).await, None, "c is not in `default`");
    c.use_pool("default").await;
    assert_eq!(c.state(&default_id).await.as_deref(), Some("free"));
    let pools = c.all_pools().await;
    assert_eq!(pools, BTreeMap::from([("default".to_string(), 1), ("team-a.prod_1".to_string(), 1)]));
    assert_eq!(c.stat("cmd_use").await, 6, "a refused USE is not counted, as any malformed request");
    close_and_stop(server, [c, fresh]).await;
}

#[tokio::test]
async fn a_key_of_another_pool_is_not_found_by_any_command() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.use_pool("a").await;
    let a_ids = c.gen(2).await;
    let held = c.lease("").await.expect("a free key in a");
    let free = a_ids.iter().find(|id| **id != held.id).expect("two keys").clone();

    // From a pool that does not exist, then from one that does and has keys of its own.
    for pool in ["nowhere", "b"] {
        c.use_pool(pool).await;
        if pool == "b" {
            let b_id = c.gen(1).await.remove(0);
            assert_eq!(c.lease("").await.expect("b's own key").id, b_id);
        }
        assert_eq!(c.cmd("GET").await, "NOT_FOUND", "a's free key is not leased from {pool}");
        assert_eq!(c.cmd("LEASE").await, "NOT_FOUND", "a's free key is not leased from {pool}");
        for id in [&held.id, &free] {
            let token = held.token;
            for request in [
                format!("INFO {id}"),
                format!("PING {id}"),
                format!("REL {id}"),
                format!("REL {id} {token}"),
                format!("REL {id} {token} 1s"),
                format!("REL {id} 1s"),
                format!("TOUCH {id}"),
                format!("TOUCH {id} {token}"),
                format!("TOUCH {id} {token} 5s"),
                format!("DEL {id}"),
            ] {
                assert_eq!(c.cmd(&request).await, "NOT_FOUND", "{request} from pool {pool}");
            }
        }
    }

    // Nothing in a changed.
    c.use_pool("a").await;
    let info = c.info(&held.id).await.expect("the held key is still in a");
    assert_eq!(info["state"], "blocked");
    assert_eq!(num(&info, "token"), held.token, "still under the same lease");
    assert_eq!(num(&info, "leases"), 1);
    let info = c.info(&free).await.expect("the free key is still in a");
    assert_eq!((info["state"].as_str(), num(&info, "leases")), ("free", 0));
    assert_eq!(c.get().await.as_deref(), Some(free.as_str()), "a's free key is leased from a");
    assert_eq!(c.cmd(&format!("REL {} {}", held.id, held.token)).await, "RELEASED");
    let figures = pool_figures(&mut c, "a").await;
    assert_eq!((figures["keys"], figures["get_hits"], figures["get_misses"]), (2, 2, 0), "b's misses are b's");
    let figures = pool_figures(&mut c, "b").await;
    assert_eq!((figures["keys"], figures["get_hits"], figures["get_misses"]), (1, 1, 2));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn the_same_secret_may_live_in_two_pools() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    c.use_pool("a").await.expect("USE a");
    let in_a = add_new(&c, "sk-live-shared").await;
    let exists = c.add("sk-live-shared", None).await.expect("ADD");
    assert_eq!(exists, Added::Existing(in_a), "a second ADD in the same pool");

    c.use_pool("b").await.expect("USE b");
    let in_b = add_new(&c, "sk-live-shared").await;
    assert_ne!(in_a, in_b, "a different key in another pool");
    assert_eq!(c.add("sk-live-shared", None).await.expect("ADD"), Added::Existing(in_b), "EXISTS names b's own key");
    let lease = c.lease(None, None).await.expect("LEASE").expect("b's key");
    assert!(lease.token.is_some(), "LEASE answers with a token: {lease:?}");
    assert_eq!((lease.id, lease.secret.as_deref()), (in_b, Some("sk-live-shared")));

    // Deleting b's copy leaves a's, and b may import the secret again.
    assert!(c.delete(&in_b).await.expect("DEL"), "DELETED");
    let again = add_new(&c, "sk-live-shared").await;
    assert_ne!(again, in_b);
    c.use_pool("a").await.expect("USE a");
    assert_eq!(c.add("sk-live-shared", None).await.expect("ADD"), Added::Existing(in_a));
    let stats = c.stats().await.expect("STATS");
    assert_eq!((stats.number("keys"), stats.number("keys_added")), (Some(2), Some(3)));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_waiter_is_served_by_its_own_pool_only() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    // The USE and GEN pipelined behind the wait are held back with it, so they must not move it.
    let mut waiter = queue_in(&mut c, "a", "LEASE 5s\r\nUSE later\r\nGEN", 1).await;
    assert_eq!(pool_figures(&mut c, "a").await["waiters"], 1);

    // Keys come free in b, by GEN and by REL: the waiter in a gets none of them.
    c.use_pool("b").await;
    let b_ids = c.gen(2).await;
    let lease = c.lease("").await.expect("a free key in b");
    assert_eq!(c.cmd(&format!("REL {} {}", lease.id, lease.token)).await, "RELEASED");
    let got = c.get().await.expect("a free key in b");
    assert!(b_ids.contains(&got));
    assert_eq!(c.cmd(&format!("REL {got}")).await, "RELEASED");
    waiter.expect_silence(ms(100)).await;
    let figures = pool_figures(&mut c, "b").await;
    assert_eq!((figures["keys_free"], figures["waiters"], figures["waits_served"]), (2, 0, 0));

    assert!(!c.all_pools().await.contains_key("later"), "the USE and GEN behind the wait are not done yet");
    c.use_pool("a").await;
    let a_id = c.gen(1).await.remove(0);
    assert_eq!(leased_of(&waiter.line().await).id, a_id, "served by the first key of its own pool");
    assert_eq!(waiter.line().await, "USING later");
    let later = waiter.lines.key_block().await;
    let figures = pool_figures(&mut c, "a").await;
    assert_eq!((figures["waiters"], figures["waits_served"], figures["keys_blocked"]), (0, 1, 1));
    assert_eq!(c.all_pools().await.get("later"), Some(&1), "then the GEN behind it went into `later`");
    c.use_pool("later").await;
    assert_eq!(c.state(&later[0]).await.as_deref(), Some("free"));
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn two_connections_in_different_pools_run_side_by_side() {
    let server = start(config()).await;
    let mut observer = Client::connect(server.addr()).await;

    async fn churn(mut c: Client, pool: &str) -> Client {
        c.use_pool(pool).await;
        let ids = c.gen(3).await;
        for round in 0..200 {
            let lease = c.lease("").await.unwrap_or_else(|| panic!("{pool} has a free key in round {round}"));
            assert!(ids.contains(&lease.id), "{pool} leased {} which is not one of its keys", lease.id);
            let got = c.get().await.unwrap_or_else(|| panic!("{pool} has a second free key in round {round}"));
            assert!(ids.contains(&got), "{pool} got {got} which is not one of its keys");
            assert_eq!(c.cmd(&format!("REL {} {}", lease.id, lease.token)).await, "RELEASED", "{pool}");
            assert_eq!(c.cmd(&format!("REL {got}")).await, "RELEASED", "{pool}");
        }
        c
    }

    let (a, b) = tokio::join!(
        churn(Client::connect(server.addr()).await, "left"),
        churn(Client::connect(server.addr()).await, "right")
    );
    for pool in ["left", "right"] {
        let figures = pool_figures(&mut observer, pool).await;
        assert_eq!((figures["keys"], figures["keys_free"], figures["get_hits"]), (3, 3, 400), "{pool}");
    }
    assert_eq!(observer.stat("get_hits").await, 800);
    close_and_stop(server, [observer, a, b]).await;
}

#[tokio::test]
async fn pools_lists_every_pool_once_across_pages() {
    const POOLS: usize = 2_500;
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.pools_page(0).await, (Vec::new(), 0), "no pool exists before the first GEN");
    assert_eq!(c.cmd("POOLS").await, "END 0", "the cursor is optional");

    let made: Vec<(String, usize)> = (0..POOLS).map(|i| (format!("p{i}"), 1 + i % 3)).collect();
    create_pools(&mut c, &made).await;

    let mut pages = 0;
    let mut cursor = 0;
    let mut seen = BTreeMap::new();
    loop {
        let (page, next) = c.pools_page(cursor).await;
        assert!(page.len() <= 1000, "page {pages} lists {} pools", page.len());
        for (name, keys) in page {
            assert!(seen.insert(name.clone(), keys).is_none(), "{name} listed twice");
        }
        pages += 1;
        if next == 0 {
            break;
        }
        assert!(next > cursor, "the cursor went from {cursor} to {next}");
        cursor = next;
    }
    assert!(pages >= 3, "2,500 pools need at least three pages of 1,000, got {pages}");
    let want: BTreeMap<String, u64> = (0..POOLS).map(|i| (format!("p{i}"), 1 + (i % 3) as u64)).collect();
    assert_eq!(seen, want, "every pool exactly once, with its key count");
    assert_eq!(c.all_pools().await, want, "a second walk lists the same");

    assert_eq!(
        c.pools_page(1_000_000_000_000).await,
        (Vec::new(), 0),
        "a cursor past the end: an empty, complete page"
    );
    assert_eq!(c.cmd("POOLS x").await, "CLIENT_ERROR malformed cursor");
    assert_eq!(c.cmd("POOLS -1").await, "CLIENT_ERROR malformed cursor");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "pools"), num(&stats, "keys")), (POOLS as u64, want.values().sum()));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_pool_that_exists_throughout_a_listing_is_listed_once_while_others_come_and_go() {
    const POOLS: usize = 3_000;
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut churn = Client::connect(server.addr()).await;
    let made: Vec<(String, usize)> = (0..POOLS).map(|i| (format!("p{i}"), 1)).collect();
    let ids = create_pools(&mut c, &made).await;
    let key = |i: usize| (format!("p{i}"), ids[i][0].clone());

    // One pool of every three goes: the listing must step over the gaps they leave.
    let gone: Vec<(String, String)> = (0..POOLS).filter(|i| i % 3 == 2).map(key).collect();
    delete_keys(&mut c, &gone).await;
    let left: BTreeMap<String, u64> = (0..POOLS).filter(|i| i % 3 != 2).map(|i| (format!("p{i}"), 1)).collect();
    assert_eq!(c.all_pools().await, left, "only the pools left, each once");

    // Walk again while, between pages, new pools come (into the gaps, maybe) and half of those left go.
    let stable: Vec<String> = (0..POOLS).filter(|i| i % 3 == 1).map(|i| format!("p{i}")).collect();
    let mut leaving: Vec<(String, String)> = (0..POOLS).filter(|i| i % 3 == 0).map(key).collect();
    let mut newcomers = Vec::new();
    let mut seen = BTreeMap::new();
    let mut cursor = 0;
    for round in 0.. {
        let (page, next) = c.pools_page(cursor).await;
        assert!(page.len() <= 1000, "page {round} lists {} pools", page.len());
        for (name, keys) in page {
            assert!(seen.insert(name.clone(), keys).is_none(), "{name} listed twice in one walk");
        }
        if next == 0 {
            break;
        }
        assert!(next > cursor, "the cursor went from {cursor} to {next}");
        cursor = next;
        let fresh: Vec<(String, usize)> = (0..300).map(|j| (format!("q{round}-{j}"), 2)).collect();
        create_pools(&mut churn, &fresh).await;
        newcomers.extend(fresh.into_iter().map(|(name, _)| name));
        // From the end: pools the walk has not reached yet.
        let going: Vec<(String, String)> = leaving.split_off(leaving.len().saturating_sub(300));
        delete_keys(&mut churn, &going).await;
    }
    for name in &stable {
        assert_eq!(seen.get(name), Some(&1), "{name} existed throughout the walk");
    }
    let allowed = |name: &String| name.starts_with('q') || left.contains_key(name);
    let strays: Vec<&String> = seen.keys().filter(|name| !allowed(name)).collect();
    assert!(strays.is_empty(), "pools listed that were dropped before the walk: {strays:?}");
    for name in &newcomers {
        if let Some(keys) = seen.get(name) {
            assert_eq!(*keys, 2, "a new pool, if listed, with its keys");
        }
    }
    close_and_stop(server, [c, churn]).await;
}

#[tokio::test]
async fn a_pool_is_dropped_when_its_last_key_is_deleted() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.use_pool("keep").await;
    c.gen(1).await;
    c.use_pool("a").await;
    let ids = c.gen(2).await;
    let held = c.lease("").await.expect("a free key");
    assert_eq!(c.stat("pools").await, 2);
    assert_eq!(c.all_pools().await.get("a"), Some(&2));

    assert_eq!(c.cmd(&format!("DEL {}", ids[0])).await, "DELETED");
    assert_eq!(c.all_pools().await.get("a"), Some(&1), "one key left");
    assert_eq!(c.cmd(&format!("DEL {}", ids[1])).await, "DELETED", "a blocked key is deleted too");
    assert!(!c.all_pools().await.contains_key("a"), "a is gone with its last key");
    assert_eq!(c.stat("pools").await, 1);
    assert_all_zero(&mut c, "a", "a pool that was dropped").await;
    assert_eq!(c.cmd(&format!("REL {} {}", held.id, held.token)).await, "NOT_FOUND");

    // The connection stays in `a`, which comes back with the next GEN, fresh.
    let id = c.gen(1).await.remove(0);
    assert_eq!(c.all_pools().await, BTreeMap::from([("a".to_string(), 1), ("keep".to_string(), 1)]));
    let figures = pool_figures(&mut c, "a").await;
    assert_eq!((figures["keys"], figures["keys_generated"], figures["get_hits"]), (1, 1, 0), "a new pool");
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_pool_whose_last_key_expires_by_keepalive_is_dropped() {
    let keepalive = ms(150);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let mut c = Client::connect(server.addr()).await;
    c.use_pool("forever").await;
    c.add("sk-never-expires 0s").await;
    c.use_pool("short").await;
    let since = Instant::now();
    c.gen(2).await;
    assert_eq!(c.all_pools().await.get("short"), Some(&2));

    let elapsed = wait_for_pool_gone(&mut c, "short", since, IO_TIMEOUT).await;
    assert!(elapsed >= keepalive - ms(2), "dropped {elapsed:?} after GEN, before the keep-alive window ended");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "pools"), num(&stats, "keys")), (1, 1), "only `forever` is left");
    assert_eq!(num(&stats, "expired_keepalive"), 2, "the dropped pool's expiries still count");
    assert_eq!(num(&stats, "keys_generated"), 2);
    assert_all_zero(&mut c, "short", "a pool that was dropped").await;
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_pool_made_by_a_wait_lives_until_the_wait_ends() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;

    // A wait in a pool that does not exist brings it into being, empty, until the wait runs out.
    let mut waiter = queue_in(&mut c, "w", "LEASE 200ms", 1).await;
    assert_eq!(c.all_pools().await.get("w"), Some(&0), "a pool with a waiter and no key is listed");
    assert_eq!(c.stat("pools").await, 1);
    assert_eq!(waiter.line().await, "NOT_FOUND", "the wait ran out");
    // The pool is dropped as the outcome is collected, before the reply is written.
    assert!(!c.all_pools().await.contains_key("w"), "w is gone once its only waiter is answered");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "pools"), num(&stats, "waits_timed_out"), num(&stats, "get_misses")), (0, 1, 1));

    // A pool whose last key is deleted while a request waits in it stays until the waiter hangs up.
    c.use_pool("a").await;
    let id = c.gen(1).await.remove(0);
    c.lease("").await.expect("the only key");
    let waiter = queue_in(&mut c, "a", "GET 5s", 1).await;
    assert_eq!(c.cmd(&format!("DEL {id}")).await, "DELETED");
    assert_eq!(c.all_pools().await.get("a"), Some(&0), "not dropped while a request waits in it");
    assert_eq!(pool_figures(&mut c, "a").await["waiters"], 1);
    drop(waiter);
    c.wait_for_stat("waiters", 0).await;
    wait_for_pool_gone(&mut c, "a", Instant::now(), IO_TIMEOUT).await;
    assert_eq!(c.stat("pools").await, 0);

    // A wait served by a GEN leaves its pool holding the key.
    let mut waiter = queue_in(&mut c, "s", "LEASE 5s", 1).await;
    c.use_pool("s").await;
    let id = c.gen(1).await.remove(0);
    assert_eq!(leased_of(&waiter.line().await).id, id);
    assert_eq!(c.all_pools().await, BTreeMap::from([("s".to_string(), 1)]));
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn global_stats_sum_the_pools_and_never_go_down_when_one_is_dropped() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.use_pool("a").await;
    let a_ids = c.gen(3).await;
    c.lease("").await.expect("a free key"); // a: 2 free, 1 blocked
    c.use_pool("b").await;
    c.gen(1).await;
    c.add("sk-one").await;
    c.add("sk-two").await;
    let got = c.cmd("GET").await.split(' ').nth(1).expect("`KEY <id>[ <secret>]`").to_string();
    c.lease("").await.expect("a free key");
    assert_eq!(c.cmd(&format!("REL {got} 30s")).await, "RELEASED");
    c.lease("").await.expect("the last free key");
    assert_eq!(c.cmd("GET").await, "NOT_FOUND"); // b: 2 blocked, 1 delayed, 1 miss
    let waiter = queue_in(&mut c, "c", "LEASE 5s", 1).await; // c: a waiter, no key

    let stats = c.stats().await;
    let (a, b, w) = (pool_figures(&mut c, "a").await, pool_figures(&mut c, "b").await, pool_figures(&mut c, "c").await);
    for name in &POOL_STAT_NAMES[1..] {
        assert_eq!(num(&stats, name), a[*name] + b[*name] + w[*name], "STATS {name} is the sum over the pools");
    }
    let want = [
        ("pools", 3),
        ("keys", 6),
        ("keys_free", 2),
        ("keys_blocked", 3),
        ("keys_delayed", 1),
        ("waiters", 1),
        ("keys_generated", 4),
        ("keys_added", 2),
        ("get_hits", 4),
        ("get_misses", 1),
    ];
    for (name, value) in want {
        assert_eq!(num(&stats, name), value, "STATS {name}");
    }

    // Pool a goes with its keys, c with its waiter: the counters they ran up stay in the totals.
    c.use_pool("a").await;
    for id in &a_ids {
        assert_eq!(c.cmd(&format!("DEL {id}")).await, "DELETED");
    }
    drop(waiter);
    c.wait_for_stat("pools", 1).await;
    let stats = c.stats().await;
    let want = [
        ("pools", 1),
        ("keys", 3),
        ("keys_free", 0),
        ("keys_blocked", 2),
        ("keys_delayed", 1),
        ("waiters", 0),
        ("keys_generated", 4),
        ("keys_added", 2),
        ("get_hits", 4),
        ("get_misses", 1),
    ];
    for (name, value) in want {
        assert_eq!(num(&stats, name), value, "STATS {name} once a and c are dropped");
    }
    assert_eq!(c.all_pools().await, BTreeMap::from([("b".to_string(), 3)]));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn stats_of_a_pool_counts_only_what_happened_in_it() {
    let block = ms(100);
    let server = start(config_with_windows(block, ms(60_000))).await;
    let mut c = Client::connect(server.addr()).await;
    assert_all_zero(&mut c, "a", "a pool that does not exist yet").await;
    assert_eq!(c.cmd("STATS a/b").await, MALFORMED_NAME);
    assert_eq!(c.cmd("STATS a b").await, "CLIENT_ERROR too many arguments for STATS");

    c.use_pool("b").await;
    c.gen(1).await;
    c.use_pool("a").await;
    let ids = c.gen(2).await;
    // A key with a short keep-alive of its own expires, alone.
    c.add("sk-short 50ms").await;
    let deadline = Instant::now() + IO_TIMEOUT;
    while pool_figures(&mut c, "a").await["expired_keepalive"] == 0 {
        assert!(Instant::now() < deadline, "the 50ms key never expired");
        tokio::time::sleep(ms(5)).await;
    }
    // A lease that runs out its block window.
    c.lease("").await.expect("a free key");
    let deadline = Instant::now() + IO_TIMEOUT;
    while pool_figures(&mut c, "a").await["released_by_timeout"] == 0 {
        assert!(Instant::now() < deadline, "the lease never timed out");
        tokio::time::sleep(ms(5)).await;
    }
    // A lease released when its AUTOREL connection closes.
    let mut holder = Client::connect(server.addr()).await;
    holder.use_pool("a").await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    holder.lease("0ms 60s").await.expect("a free key");
    drop(holder);
    let deadline = Instant::now() + IO_TIMEOUT;
    while pool_figures(&mut c, "a").await["released_by_close"] == 0 {
        assert!(Instant::now() < deadline, "the close never released the lease");
        tokio::time::sleep(ms(5)).await;
    }
    // Both keys held: a miss, a wait that runs out, a wait that is served, a delayed key.
    let first = c.lease("0ms 60s").await.expect("a free key");
    let second = c.lease("0ms 60s").await.expect("a free key");
    assert_eq!(c.cmd("GET").await, "NOT_FOUND");
    assert_eq!(c.cmd("LEASE 20ms").await, "NOT_FOUND");
    let mut waiter = queue_in(&mut c, "a", "LEASE 5s 60s", 1).await;
    assert_eq!(c.cmd(&format!("REL {} {}", first.id, first.token)).await, "RELEASED");
    let served = leased_of(&waiter.line().await);
    assert_eq!(served.id, first.id);
    assert_eq!(c.cmd(&format!("REL {} {} 30s", second.id, second.token)).await, "RELEASED");

    let a = pool_figures(&mut c, "a").await;
    let want = [
        ("keys", 2),
        ("keys_free", 0),
        ("keys_blocked", 1),
        ("keys_delayed", 1),
        ("waiters", 0),
        ("keys_generated", 2),
        ("keys_added", 1),
        ("get_hits", 5),
        ("get_misses", 2),
        ("waits_served", 1),
        ("waits_timed_out", 1),
        ("released_by_timeout", 1),
        ("released_by_close", 1),
        ("expired_keepalive", 1),
    ];
    let want: HashMap<String, u64> = want.into_iter().map(|(name, value)| (name.to_string(), value)).collect();
    assert_eq!(a, want, "STATS a after all that");
    let b = pool_figures(&mut c, "b").await;
    let b_nonzero: BTreeMap<&str, u64> =
        b.iter().filter(|(_, value)| **value != 0).map(|(name, value)| (name.as_str(), *value)).collect();
    assert_eq!(b_nonzero, BTreeMap::from([("keys", 1), ("keys_free", 1), ("keys_generated", 1)]), "b saw none of it");
    assert!(ids.contains(&served.id));
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn creating_a_pool_past_max_pools_is_refused_and_the_connection_goes_on() {
    let mut config = config();
    config.max_pools = 3;
    let server = start(config).await;
    let mut c = Client::connect(server.addr()).await;
    for pool in ["a", "b", "c"] {
        c.use_pool(pool).await;
        c.gen(1).await;
    }
    let stats = c.stats().await;
    assert_eq!((num(&stats, "pools"), num(&stats, "max_pools")), (3, 3));

    c.use_pool("d").await; // USE alone creates nothing, so it is not refused.
    for request in ["GEN", "GEN 5", "ADD sk-new", "LEASE 1s", "GET 1s"] {
        assert_eq!(c.cmd(request).await, "SERVER_ERROR too many pools", "{request} in a fourth pool");
    }
    assert_eq!(c.cmd("GET").await, "NOT_FOUND", "a plain GET creates no pool");
    assert_eq!(c.cmd("LEASE").await, "NOT_FOUND");
    assert_eq!(c.cmd(&format!("INFO {UNKNOWN_ID}")).await, "NOT_FOUND");
    assert_all_zero(&mut c, "d", "d was never created").await;
    assert_eq!(c.cmd("PING").await, "PONG", "the connection goes on");
    assert_eq!(c.stat("pools").await, 3);

    // Existing pools take more keys; once one is dropped, d may be created.
    c.use_pool("a").await;
    let ids = c.gen(2).await;
    c.use_pool("c").await;
    let c_id = c.get().await.expect("c's key");
    assert_eq!(c.cmd(&format!("DEL {c_id}")).await, "DELETED");
    c.use_pool("d").await;
    c.add("sk-new").await;
    assert_eq!(c.all_pools().await, BTreeMap::from([("a".into(), 3), ("b".into(), 1), ("d".into(), 1)]));
    c.use_pool("e").await;
    assert_eq!(c.cmd("GEN").await, "SERVER_ERROR too many pools", "full again");
    c.use_pool("a").await;
    assert_eq!(c.state(&ids[0]).await.as_deref(), Some("free"));
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn every_pool_holds_max_keys_of_its_own() {
    let mut config = config();
    config.pool.max_keys = 3;
    let server = start(config).await;
    let c = typed::connect(server.addr()).await;
    let pool_full =
        |refused: Result<(), Error>| matches!(refused, Err(Error::Server(message)) if message == "pool full");
    c.use_pool("a").await.expect("USE a");
    assert_eq!(c.gen(3).await.expect("GEN").len(), 3);
    assert!(pool_full(c.gen(1).await.map(drop)), "GEN 1: SERVER_ERROR pool full");
    assert!(pool_full(c.add("sk-one", None).await.map(drop)), "ADD: SERVER_ERROR pool full");

    c.use_pool("b").await.expect("USE b");
    assert_eq!(c.gen(2).await.expect("GEN").len(), 2);
    add_new(&c, "sk-one").await;
    assert!(pool_full(c.gen(1).await.map(drop)), "b is full at 3 too");

    // A GEN too large for a new pool creates no key, and leaves no empty pool behind.
    c.use_pool("c").await.expect("USE c");
    assert!(pool_full(c.gen(4).await.map(drop)), "GEN 4: SERVER_ERROR pool full");
    let stats = c.stats().await.expect("STATS");
    assert_eq!((stats.number("pools"), stats.number("keys"), stats.number("max_keys")), (Some(2), Some(6), Some(3)));
    let mut pools = within("the listing", c.pools()).await.expect("POOLS");
    pools.sort_by(|x, y| x.name.cmp(&y.name));
    let want = [("a", 3), ("b", 3)].map(|(name, keys)| PoolInfo { name: name.into(), keys });
    assert_eq!(pools, want, "each pool listed once, with its keys");
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn tokens_grow_daemon_wide_across_pools() {
    let server = start(config()).await;
    let a = TypedClient::builder(server.addr()).pool("a").connect().await.expect("a client in a");
    let b = TypedClient::builder(server.addr()).pool("b").connect().await.expect("a client in b");
    let a_id = a.gen(1).await.expect("GEN").remove(0);
    let b_id = b.gen(1).await.expect("GEN").remove(0);

    let mut tokens = Vec::new();
    for _ in 0..5 {
        for (c, id) in [(&a, &a_id), (&b, &b_id)] {
            let lease = c.lease(None, None).await.expect("LEASE").expect("the pool's key");
            assert_eq!(&lease.id, id);
            tokens.push(lease.token.expect("LEASE answers with a token"));
            assert_eq!(c.release(&lease, None).await.expect("REL"), Released::Yes);
        }
        // A v1 GET takes a token too: INFO shows it.
        let got = b.get(None, None).await.expect("GET").expect("b's key");
        tokens.push(typed::token_of(&b, &got.id).await);
        assert_eq!(b.release(got.id, None).await.expect("REL"), Released::Yes);
    }
    assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "tokens must grow across pools: {tokens:?}");

    // A token of one pool is no lease in another, even for a key of the same number of leases.
    let lease = a.lease(None, None).await.expect("LEASE").expect("a's key");
    assert_eq!(b.release(&lease, None).await.expect("REL"), Released::NotFound);

    // Dropping a pool and making it again does not start its tokens over.
    assert!(a.delete(&a_id).await.expect("DEL"), "DELETED");
    assert_eq!(typed::stat(&a, "pools").await, 1, "a is dropped");
    a.gen(1).await.expect("GEN");
    let renewed = a.lease(None, None).await.expect("LEASE").expect("the new key of the new a");
    assert!(renewed.token > lease.token, "{:?} after {:?}: tokens went back", renewed.token, lease.token);
    typed::close_and_stop(server, [a, b]).await;
}

#[tokio::test]
async fn autorel_releases_a_closing_connections_leases_in_every_pool() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.use_pool("a").await;
    c.gen(2).await;
    c.use_pool("b").await;
    let b_ids = c.gen(1).await;

    let mut holder = Client::connect(server.addr()).await;
    assert_eq!(holder.cmd("AUTOREL").await, "OK");
    holder.use_pool("a").await;
    let in_a = holder.lease("0ms 60s").await.expect("a free key in a");
    let got = key_of(&holder.cmd("GET 0ms 60s").await);
    holder.use_pool("b").await;
    let in_b = holder.lease("0ms 60s").await.expect("b's key");
    assert_eq!(in_b.id, b_ids[0]);
    // A pool dropped and made again under the same name: its new key is released on close as well.
    holder.use_pool("gone").await;
    let old = holder.gen(1).await.remove(0);
    holder.lease("0ms 60s").await.expect("gone's key");
    assert_eq!(holder.cmd(&format!("DEL {old}")).await, "DELETED");
    let again = holder.gen(1).await.remove(0);
    holder.lease("0ms 60s").await.expect("the new key");

    // A lease the holder waited for, in a pool its wait created.
    holder.use_pool("late").await;
    holder.send_line("LEASE 5s 60s").await;
    c.wait_for_stat("waiters", 1).await;
    c.use_pool("late").await;
    let late = c.gen(1).await.remove(0);
    assert_eq!(leased_of(&holder.line().await).id, late);

    let mut waiter = queue_in(&mut c, "b", "LEASE 5s", 1).await;
    drop(holder);
    let lease = leased_of(&waiter.line().await);
    assert_eq!(lease.id, b_ids[0], "b's key, released on close, goes to b's waiter");
    c.wait_for_stat("released_by_close", 5).await;

    let a = pool_figures(&mut c, "a").await;
    assert_eq!((a["keys_free"], a["keys_blocked"], a["released_by_close"]), (2, 0, 2), "both of a's leases");
    let b = pool_figures(&mut c, "b").await;
    assert_eq!((b["keys_blocked"], b["released_by_close"], b["waits_served"]), (1, 1, 1), "the waiter holds it");
    let gone = pool_figures(&mut c, "gone").await;
    assert_eq!((gone["keys_free"], gone["released_by_close"]), (1, 1), "the new pool's lease");
    c.use_pool("a").await;
    for id in [&in_a.id, &got] {
        assert_eq!(c.state(id).await.as_deref(), Some("free"), "{id}");
    }
    c.use_pool("gone").await;
    assert_eq!(c.state(&again).await.as_deref(), Some("free"));
    c.use_pool("late").await;
    assert_eq!(c.state(&late).await.as_deref(), Some("free"));
    close_and_stop(server, [c, waiter]).await;
}

#[tokio::test]
async fn a_plain_get_in_a_pool_that_does_not_exist_misses_and_is_counted() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.use_pool("a").await;
    c.gen(1).await;
    c.use_pool("nowhere").await;
    assert_eq!(c.cmd("GET").await, "NOT_FOUND");
    assert_eq!(c.cmd("LEASE").await, "NOT_FOUND");
    assert_eq!(c.cmd("GET 0ms").await, "NOT_FOUND", "a zero wait is no wait");
    assert_eq!(c.cmd("LEASE 0s 5s").await, "NOT_FOUND");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "get_misses"), num(&stats, "get_hits"), num(&stats, "pools")), (4, 0, 1));
    assert!(!c.all_pools().await.contains_key("nowhere"), "a miss creates no pool");
    assert_eq!(pool_figures(&mut c, "a").await["get_misses"], 0, "another pool's misses are not a's");
    close_and_stop(server, [c]).await;
}
