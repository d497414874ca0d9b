//! Durability, in process over real sockets: what a restart keeps (keys, leases with their deadlines and
//! tokens, delays, secrets, pools), the clock running on while the daemon is down, a torn last record cut
//! at every byte offset, damage refused or truncated, empty and missing directories, compaction under load
//! losing nothing and shrinking the log, `COMPACT`'s errors, group commit, and the STATS figures.
//!
//! A restart here is `Handle::stop` then `Handle::start` on the same directory; the kill -9 cases, the
//! read-only directory and the full disk need the real binary and live in `crash.rs` and
//! `daemon_persist.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config, start, stop, Client, TempDir};
use keypool::persist::{Fsync, Options};
use keypool::server::{Config, Handle, Shared};

/// A test configuration keeping its state in `dir`, syncing before every reply.
fn durable(dir: &Path) -> Config {
    Config { persistence: Some(Options { fsync: Fsync::Always, ..Options::new(dir) }), ..config() }
}

/// The only log file in `dir`.
fn log_file(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the data directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("log-")))
        .collect();
    assert_eq!(logs.len(), 1, "one log in {logs:?}");
    logs.remove(0)
}

#[tokio::test]
async fn keys_leases_delays_secrets_and_pools_survive_a_restart() {
    let dir = TempDir::new("persist-restart");
    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(6).await;
    let leased = c.lease("").await.expect("a free key");
    let long = c.lease("0s 30m").await.expect("a free key");
    let delayed = c.lease("").await.expect("a free key");
    assert_eq!(c.cmd(&format!("REL {} {} 20m", delayed.id, delayed.token)).await, "RELEASED");
    let deleted = c.get().await.expect("a free key");
    assert_eq!(c.cmd(&format!("DEL {deleted}")).await, "DELETED");
    let secret = c.add("sk-live-abc 0s").await;
    let own_window = c.add("sk-live-def 45m").await;
    c.use_pool("team-b").await;
    let other_pool = c.gen(2).await;
    c.use_pool("default").await;
    let mut before = BTreeMap::new();
    for id in ids.iter().filter(|id| **id != deleted) {
        before.insert(id.clone(), c.info(id).await.expect("a live key"));
    }
    for id in [&secret, &own_window] {
        before.insert(id.clone(), c.info(id).await.expect("a live key"));
    }
    let pools = c.all_pools().await;
    drop(c);
    stop(server).await;

    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    for (id, fields) in &before {
        assert_eq!(c.info(id).await.as_ref(), Some(fields), "{id} after the restart");
    }
    assert_eq!(before[&leased.id]["state"], "blocked");
    assert_eq!(before[&long.id]["token"], long.token.to_string());
    assert_eq!(before[&delayed.id]["state"], "delayed");
    assert_eq!(c.cmd(&format!("INFO {deleted}")).await, "NOT_FOUND", "a deleted key stays deleted");
    assert_eq!(c.all_pools().await, pools);
    assert_eq!(c.cmd("ADD sk-live-abc").await, format!("EXISTS {secret}"));
    assert_eq!(
        c.cmd(&format!("REL {} {}", leased.id, leased.token)).await,
        "RELEASED",
        "the token still names the lease"
    );
    let next = c.lease("").await.expect("a free key");
    assert!(next.token > long.token, "tokens go on growing: {} after {}", next.token, long.token);
    c.use_pool("team-b").await;
    for id in &other_pool {
        assert!(c.info(id).await.is_some(), "{id} of pool team-b");
    }
    drop(c);
    stop(server).await;
}

#[tokio::test]
async fn deadlines_run_on_while_the_daemon_is_down() {
    let dir = TempDir::new("persist-clock");
    let windows = |dir: &Path| {
        let mut config = durable(dir);
        config.pool.block_timeout = Duration::from_millis(300);
        config.pool.keepalive_timeout = Duration::from_millis(1500);
        config
    };
    let server = start(windows(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(2).await;
    let short = c.get().await.expect("a free key");
    let long = c.lease("0s 10m").await.expect("a free key");
    let long_until = c.info(&long.id).await.expect("a live key")["blocked_until_ms"].clone();
    drop(c);
    stop(server).await;

    tokio::time::sleep(Duration::from_millis(400)).await;
    let server = start(windows(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.state(&short).await.as_deref(), Some("free"), "its block window passed while the daemon was down");
    let still = c.info(&long.id).await.expect("a live key");
    assert_eq!(
        (still["state"].as_str(), &still["blocked_until_ms"]),
        ("blocked", &long_until),
        "the rest of its window"
    );
    drop(c);
    stop(server).await;

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let server = start(windows(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    for id in &ids {
        assert_eq!(c.cmd(&format!("INFO {id}")).await, "NOT_FOUND", "{id}'s keep-alive window passed while down");
    }
    assert_eq!(c.stat("keys").await, 0);
    drop(c);
    stop(server).await;
}

#[tokio::test]
async fn a_restart_releases_the_leases_of_autorel_connections() {
    let dir = TempDir::new("persist-autorel");
    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    c.gen(2).await;
    assert_eq!(c.cmd("AUTOREL").await, "OK");
    let held = c.get().await.expect("a free key");
    let mut other = Client::connect(server.addr()).await;
    let kept = other.get().await.expect("a free key");
    // Stopped with both connections open: the AUTOREL connection's key goes back at its close anyway, so
    // the test leaks the connection past the stop to see what the log alone says.
    std::mem::forget(c);
    stop(server).await;
    drop(other);

    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.state(&held).await.as_deref(), Some("free"), "its connection ended with the daemon");
    assert_eq!(c.state(&kept).await.as_deref(), Some("blocked"), "a plain lease outlives its connection");
    drop(c);
    stop(server).await;
}

/// Copies the regular files of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("list the data directory") {
        let path = entry.expect("an entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("a file name"))).expect("copy a data file");
    }
}

/// Keys in the daemon state made from `config`, or the error that refused it.
async fn keys_after_recovery(config: Config) -> Result<usize, String> {
    let shared = Shared::new(config).map_err(|error| error.to_string())?;
    let keys = shared.lock().pools.totals().keys;
    Ok(keys)
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_at_every_byte_offset() {
    let dir = TempDir::new("persist-torn");
    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(3).await;
    drop(c);
    stop(server).await;
    let log = log_file(dir.path());
    let whole = std::fs::metadata(&log).expect("the log").len();
    // One more record: the one to tear.
    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd(&format!("DEL {}", ids[0])).await, "DELETED");
    drop(c);
    stop(server).await;
    let with_last = std::fs::read(&log).expect("read the log");
    assert!(with_last.len() as u64 > whole, "the DEL was logged");

    for cut in whole..with_last.len() as u64 {
        let copy = TempDir::new("persist-torn-copy");
        copy_dir(dir.path(), copy.path());
        let torn = copy.path().join(log.file_name().expect("a file name"));
        std::fs::write(&torn, &with_last[..cut as usize]).expect("write the torn log");
        let keys = keys_after_recovery(durable(copy.path())).await;
        assert_eq!(keys, Ok(3), "cut at byte {cut}: the torn DEL is dropped, the three keys stay");
        assert_eq!(std::fs::metadata(&torn).expect("the log").len(), whole, "cut at {cut}: torn bytes removed");
    }
    assert_eq!(keys_after_recovery(durable(dir.path())).await, Ok(2), "the whole record applies");
}

#[tokio::test]
async fn damage_before_the_end_refuses_to_start_unless_recover_truncate() {
    let dir = TempDir::new("persist-damage");
    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    let first = c.gen(1).await;
    let size_after_first = std::fs::metadata(log_file(dir.path())).expect("the log").len();
    for _ in 0..4 {
        c.gen(1).await;
    }
    drop(c);
    stop(server).await;
    let log = log_file(dir.path());
    let mut bytes = std::fs::read(&log).expect("read the log");
    // A byte inside the second key's record, with three records after it.
    let flipped_at = size_after_first as usize + 20;
    bytes[flipped_at] ^= 0x20;
    std::fs::write(&log, &bytes).expect("write the damaged log");

    let refused = keys_after_recovery(durable(dir.path())).await.expect_err("damage refuses the start");
    assert!(refused.contains(&log.display().to_string()), "names the file: {refused}");
    assert!(refused.contains(&format!("offset {size_after_first}")), "names the record's offset: {refused}");
    assert!(refused.contains("--recover-truncate"), "says how to go on: {refused}");
    assert_eq!(std::fs::read(&log).expect("the log"), bytes, "a refused start changes nothing");

    let mut config = durable(dir.path());
    if let Some(options) = config.persistence.as_mut() {
        options.recover_truncate = true;
    }
    let server = start(config).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.stat("keys").await, 1, "only the record before the damage");
    assert!(c.info(&first[0]).await.is_some());
    assert_eq!(std::fs::metadata(&log).expect("the log").len(), size_after_first, "dropped from the damage on");
    drop(c);
    stop(server).await;
}

#[tokio::test]
async fn empty_and_missing_directories_start_empty() {
    let parent = TempDir::new("persist-fresh");
    let missing = parent.path().join("not/yet/here");
    for dir in [parent.path().to_path_buf(), missing] {
        let server = start(durable(&dir)).await;
        let mut c = Client::connect(server.addr()).await;
        assert_eq!(c.stat("keys").await, 0);
        c.gen(1).await;
        drop(c);
        stop(server).await;
        assert!(dir.join("LOCK").exists() && log_file(&dir).exists(), "{} holds the lock and a log", dir.display());
    }
}

#[tokio::test]
async fn a_second_daemon_on_the_same_directory_is_refused() {
    let dir = TempDir::new("persist-lock");
    let server = start(durable(dir.path())).await;
    let refused = Handle::start("127.0.0.1:0".parse().expect("an address"), durable(dir.path()))
        .await
        .err()
        .expect("the directory is locked");
    assert!(refused.to_string().contains("in use by another keypool"), "{refused}");
    stop(server).await;
}

/// What several clients were told, to check against the state after a restart.
#[derive(Default)]
struct Acknowledged {
    created: Vec<String>,
    deleted: Vec<String>,
    /// Leased and not released since.
    leased: Vec<String>,
}

/// Creates, deletes, leases and releases keys in a pool of its own, so that its outcomes are its own.
async fn churn(addr: std::net::SocketAddr, pool: String, rounds: usize) -> Acknowledged {
    let mut c = Client::connect(addr).await;
    c.use_pool(&pool).await;
    let mut seen = Acknowledged::default();
    for round in 0..rounds {
        let ids = c.gen(3).await;
        seen.created.extend(ids.iter().cloned());
        assert_eq!(c.cmd(&format!("DEL {}", ids[0])).await, "DELETED");
        seen.deleted.push(ids[0].clone());
        if let Some(leased) = c.get().await {
            if round % 2 == 0 {
                assert_eq!(c.cmd(&format!("REL {leased}")).await, "RELEASED");
            } else {
                seen.leased.push(leased);
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_under_load_loses_nothing_and_shrinks_the_log() {
    let dir = TempDir::new("persist-compact");
    let mut config = durable(dir.path());
    if let Some(options) = config.persistence.as_mut() {
        options.compact_min = u64::MAX;
    }
    let server = start(config.clone()).await;
    let addr = server.addr();
    let mut admin = Client::connect(addr).await;
    let clients: Vec<_> = (0..4).map(|n| tokio::spawn(churn(addr, format!("churn-{n}"), 150))).collect();
    let mut compactions = 0;
    while !clients.iter().all(|client| client.is_finished()) {
        assert_eq!(admin.cmd("COMPACT").await, "OK");
        compactions += 1;
    }
    let mut seen = Vec::new();
    for client in clients {
        seen.push(client.await.expect("a client task"));
    }
    assert!(compactions >= 2, "compactions ran while clients wrote ({compactions})");
    // Deleted keys leave log behind them and nothing in a snapshot: a compaction drops it.
    for id in admin.gen(300).await {
        assert_eq!(admin.cmd(&format!("DEL {id}")).await, "DELETED");
    }
    let before = admin.stat("log_bytes").await;
    assert_eq!(admin.cmd("COMPACT").await, "OK");
    let after = admin.stat("log_bytes").await;
    assert!(before > 300 * 60 && after < 100, "the log shrank from {before} to {after} bytes");
    let stats = admin.stats().await;
    assert_eq!(stats["compactions"].parse::<u64>().ok(), Some(compactions + 1));
    assert_eq!(stats["snapshot_keys"], stats["keys"], "no load since the last compaction");
    assert!(stats["snapshot_bytes"].parse::<u64>().unwrap_or(0) > 0);
    drop(admin);
    stop(server).await;

    let server = start(config).await;
    let mut c = Client::connect(server.addr()).await;
    for (n, seen) in seen.iter().enumerate() {
        c.use_pool(&format!("churn-{n}")).await;
        for id in &seen.deleted {
            assert_eq!(c.cmd(&format!("INFO {id}")).await, "NOT_FOUND", "deleted {id} is not back");
        }
        for id in seen.created.iter().filter(|id| !seen.deleted.contains(id)) {
            assert!(c.info(id).await.is_some(), "created {id} is there");
        }
        for id in &seen.leased {
            assert_eq!(c.state(id).await.as_deref(), Some("blocked"), "leased {id} is still blocked");
        }
    }
    drop(c);
    stop(server).await;
}

#[tokio::test]
async fn compact_is_refused_without_a_data_dir_and_to_a_one_pool_token() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("COMPACT").await, "CLIENT_ERROR persistence is not enabled");
    assert_eq!(c.cmd("COMPACT now").await, "CLIENT_ERROR too many arguments for COMPACT");
    drop(c);
    stop(server).await;

    let dir = TempDir::new("persist-compact-auth");
    let tokens = dir.write("tokens", "pool-token team-a\nroot-token *\n");
    let mut config = durable(&dir.path().join("data"));
    config.auth = std::sync::Arc::new(keypool::auth::Authenticator::new(Some(tokens), None).expect("tokens"));
    let server = start(config).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("COMPACT").await, "ERROR NOAUTH authentication required");
    assert_eq!(c.cmd("AUTH pool-token").await, "OK");
    assert_eq!(c.cmd("COMPACT").await, "CLIENT_ERROR forbidden");
    assert_eq!(c.cmd("AUTH root-token").await, "OK");
    assert_eq!(c.cmd("COMPACT").await, "OK");
    drop(c);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fsync_always_connections_share_syncs() {
    let dir = TempDir::new("persist-group");
    let server = start(durable(dir.path())).await;
    let addr = server.addr();
    let writers: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                for _ in 0..40 {
                    c.gen(1).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let mut c = Client::connect(addr).await;
    let stats = c.stats().await;
    let number = |name: &str| stats[name].parse::<u64>().unwrap_or_else(|_| panic!("STAT {name}"));
    assert_eq!(stats["persistence"], "always");
    assert_eq!(number("records_written"), 640);
    assert!(number("fsyncs") > 0, "replies waited for syncs");
    assert!(number("fsyncs") < 640, "16 connections shared syncs: {} for 640 records", number("fsyncs"));
    assert_eq!(number("persistence_failed"), 0);
    assert!(number("log_bytes") > 640 * 40, "every record is in the log");
    drop(c);
    stop(server).await;
}

#[tokio::test]
async fn a_snapshot_of_keys_with_large_secrets_is_cut_into_small_records() {
    let dir = TempDir::new("persist-secrets");
    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    let mut ids = Vec::new();
    for n in 0..2100 {
        ids.push(c.add(&format!("{n:0>1000}")).await);
    }
    assert_eq!(c.cmd("COMPACT").await, "OK");
    drop(c);
    stop(server).await;

    let snapshot = std::fs::read_dir(dir.path())
        .expect("list the data directory")
        .map(|entry| entry.expect("an entry").path())
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("snapshot-")))
        .expect("a snapshot");
    let bytes = std::fs::read(&snapshot).expect("read the snapshot");
    let (mut offset, mut records) = (0, 0);
    while let keypool::persist::format::Frame::Record(payload, next) =
        keypool::persist::format::next_frame(&bytes, offset)
    {
        assert!(payload.len() <= keypool::persist::CHUNK_BYTES + 2048, "a record of {} bytes", payload.len());
        (offset, records) = (next, records + 1);
    }
    assert_eq!(offset, bytes.len(), "the snapshot is whole records");
    assert!(records > 8, "2 MiB of secrets in {records} records");

    let server = start(durable(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.stat("keys").await, 2100);
    assert_eq!(c.cmd(&format!("ADD {:0>1000}", 7)).await, format!("EXISTS {}", ids[7]), "secrets are restored");
    drop(c);
    stop(server).await;
}

#[tokio::test]
async fn a_start_that_replayed_a_long_log_compacts_once_it_is_up() {
    let dir = TempDir::new("persist-long-replay");
    let small = |dir: &Path| {
        let mut config = durable(dir);
        if let Some(options) = config.persistence.as_mut() {
            // New keys alone never make the log twice the live data; only the replay rule can compact here.
            options.compact_min = 4096;
        }
        config
    };
    let server = start(small(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    c.gen(200).await;
    assert_eq!(c.stat("compactions").await, 0, "the log is past --compact-min but not twice the live data");
    drop(c);
    stop(server).await;

    let server = start(small(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    c.wait_for_stat("compactions", 1).await;
    assert_eq!(c.stat("snapshot_keys").await, 200);
    drop(c);
    stop(server).await;

    // The next start loads the snapshot and replays almost nothing: no compaction this time.
    let server = start(small(dir.path())).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.stat("keys").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.stat("compactions").await, 0, "a short replay does not compact");
    drop(c);
    stop(server).await;
}
