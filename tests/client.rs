//! The Rust client (`keypool::client`, issue 9) against an in-process daemon over real sockets: every
//! method and each of its outcomes, every error it reports, the pipeline's order, the connection pool
//! (a waiting request never holds up another task's), and the lease guard (its heartbeat keeps a lease
//! past its block window; dropping it gives the key back).
//!
//! Time-based behaviour runs on 200 ms block windows; every wait is bounded by `within` or a deadline.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, config_with_windows, start, stop, within, IO_TIMEOUT, VERSION};
use keypool::auth::Authenticator;
use keypool::client::{Added, Client, Error, KeyId, KeyState, PoolInfo, Released, Reply, Touched};
use keypool::server::{Config, Handle};
use tokio::time::Instant;

const SHORT: Duration = Duration::from_millis(200);

/// A well-formed id no daemon will ever hand out by chance.
fn unknown_id() -> KeyId {
    KeyId::parse(b"000000000000000000000000").expect("a well-formed id")
}

/// Hangs the clients up, then stops the server (which otherwise gives open connections half a second
/// to close).
async fn finish(server: Handle, clients: impl IntoIterator<Item = Client>) {
    drop(clients.into_iter().collect::<Vec<_>>());
    stop(server).await;
}

async fn client(server: &Handle) -> Client {
    within("the client to connect", Client::connect(server.addr())).await.expect("the client connects")
}

/// Polls `check` every few milliseconds until it is true; fails the test after [`IO_TIMEOUT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + IO_TIMEOUT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn state(client: &Client, id: &KeyId) -> Option<KeyState> {
    client.info(id).await.expect("INFO").map(|info| info.state)
}

#[tokio::test]
async fn keys_are_minted_leased_released_and_deleted_with_every_outcome_typed() {
    let server = start(config()).await;
    let c = client(&server).await;
    assert_eq!(c.version().await.unwrap(), VERSION);
    c.health().await.unwrap();

    let ids = c.gen(2).await.unwrap();
    assert_eq!(ids.len(), 2);
    let info = c.info(&ids[0]).await.unwrap().expect("a new key exists");
    assert_eq!((info.id, info.state, info.leases), (ids[0], KeyState::Free, 0));
    assert!(info.alive_until_ms.is_some_and(|until| until > info.created_ms));
    assert_eq!(c.info(&unknown_id()).await.unwrap(), None);

    // GET: no token; REL without one frees whatever lease the key is under.
    let got = c.get(None, None).await.unwrap().expect("a free key");
    assert!(ids.contains(&got.id) && got.token.is_none() && got.secret.is_none());
    assert!(matches!(state(&c, &got.id).await, Some(KeyState::Blocked { .. })));
    assert_eq!(c.release(got.id, None).await.unwrap(), Released::Yes);
    assert_eq!(c.release(got.id, None).await.unwrap(), Released::NotBlocked);
    assert_eq!(c.release(unknown_id(), None).await.unwrap(), Released::NotFound);

    // LEASE: a token, which TOUCH and REL honour.
    let lease = c.lease(None, None).await.unwrap().expect("a free key");
    let token = lease.token.expect("LEASE reports its token");
    assert_eq!(
        state(&c, &lease.id).await,
        Some(KeyState::Blocked { until_ms: blocked_until(&c, &lease.id).await, token })
    );
    assert_eq!(c.touch(&lease, Some(Duration::from_secs(90))).await.unwrap(), Touched::Yes);
    assert_eq!(c.touch((lease.id, token + 1000), None).await.unwrap(), Touched::Stale);
    assert_eq!(c.release((lease.id, token + 1000), None).await.unwrap(), Released::Stale);
    assert_eq!(c.release(&lease, Some(Duration::from_secs(60))).await.unwrap(), Released::Yes);
    assert!(matches!(state(&c, &lease.id).await, Some(KeyState::Delayed { .. })), "released with a delay");
    assert_eq!(c.release(&lease, None).await.unwrap(), Released::Stale);
    assert_eq!(c.touch(lease.id, None).await.unwrap(), Touched::NotBlocked);
    assert_eq!(c.touch(unknown_id(), None).await.unwrap(), Touched::NotFound);

    // One key is delayed, the other free: one more lease, then none.
    let last = c.lease(None, None).await.unwrap().expect("the other key");
    assert_ne!(last.id, lease.id);
    assert_eq!(c.get(None, None).await.unwrap(), None);
    assert_eq!(c.lease(Some(Duration::from_millis(20)), None).await.unwrap(), None, "the wait runs out");

    assert!(c.ping(&last.id).await.unwrap());
    assert!(c.delete(&last.id).await.unwrap());
    assert!(!c.delete(&last.id).await.unwrap());
    assert!(!c.ping(&last.id).await.unwrap());
    assert_eq!(c.release(&last, None).await.unwrap(), Released::NotFound);

    let stats = c.stats().await.unwrap();
    assert_eq!(stats.number("keys"), Some(1));
    assert_eq!(stats.number("keys_delayed"), Some(1));
    assert_eq!(stats.number("cmd_lease"), Some(3));
    assert_eq!(stats.get("version"), Some(VERSION));
    finish(server, [c]).await;
}

async fn blocked_until(c: &Client, id: &KeyId) -> u64 {
    match state(c, id).await {
        Some(KeyState::Blocked { until_ms, .. }) => until_ms,
        other => panic!("{id} is not blocked: {other:?}"),
    }
}

#[tokio::test]
async fn added_secrets_come_back_in_leases_and_are_found_again() {
    let server = start(config()).await;
    let c = client(&server).await;
    let Added::New(id) = c.add("sk-live-51Hx9", Some(Duration::ZERO)).await.unwrap() else {
        panic!("the first ADD creates a key");
    };
    assert_eq!(c.add("sk-live-51Hx9", None).await.unwrap(), Added::Existing(id));
    assert_eq!(c.info(&id).await.unwrap().expect("the key").alive_until_ms, None, "keep-alive 0s");
    let got = c.get(None, None).await.unwrap().expect("the key");
    assert_eq!((got.id, got.secret.as_deref(), got.to_string()), (id, Some("sk-live-51Hx9"), "sk-live-51Hx9".into()));
    c.release(&got, None).await.unwrap();
    let leased = c.lease(None, None).await.unwrap().expect("the key");
    assert_eq!(leased.secret.as_deref(), Some("sk-live-51Hx9"));
    finish(server, [c]).await;
}

#[tokio::test]
async fn a_block_window_of_the_lease_s_own_ends_it_and_its_token_goes_stale() {
    let server = start(config()).await;
    let c = client(&server).await;
    c.gen(1).await.unwrap();
    let lease = c.lease(None, Some(SHORT)).await.unwrap().expect("a free key");
    eventually("the block window to pass", || async { state(&c, &lease.id).await == Some(KeyState::Free) }).await;
    assert_eq!(c.release(&lease, None).await.unwrap(), Released::Stale);
    let got = c.get(Some(Duration::ZERO), Some(SHORT)).await.unwrap().expect("the key again");
    eventually("the GET's block window to pass", || async { state(&c, &got.id).await == Some(KeyState::Free) }).await;
    finish(server, [c]).await;
}

#[tokio::test]
async fn pools_are_switched_listed_and_counted() {
    let server = start(config()).await;
    let c = client(&server).await;
    c.gen(1).await.unwrap();
    c.use_pool("batch").await.unwrap();
    let batch = c.gen(2).await.unwrap();
    // Every request after USE acts on the new pool, whichever connection of the client carries it.
    let mut pipeline = c.pipeline();
    pipeline.info(&batch[0]).info(&batch[1]);
    for reply in pipeline.run().await.unwrap() {
        assert!(matches!(reply, Ok(Reply::Info(Some(_)))), "{reply:?}");
    }
    let mut pools = c.pools().await.unwrap();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let pool = |name: &str, keys| PoolInfo { name: name.into(), keys };
    assert_eq!(pools, vec![pool("batch", 2), pool("default", 1)]);
    let page = c.pools_page(0).await.unwrap();
    assert_eq!((page.pools.len(), page.next), (2, 0));
    assert_eq!(c.pool_stats("batch").await.unwrap().number("keys_free"), Some(2));
    assert_eq!(c.pool_stats("nothing-here").await.unwrap().number("keys"), Some(0));
    assert!(matches!(c.use_pool("no/slashes").await, Err(Error::InvalidArgument(_))));

    let in_batch = Client::builder(server.addr()).pool("batch").connect().await.unwrap();
    assert!(in_batch.info(&batch[0]).await.unwrap().is_some(), "the builder's pool");
    finish(server, [c, in_batch]).await;
}

#[tokio::test]
async fn refusals_are_typed_and_leave_the_connection_usable() {
    let mut small = config();
    small.pool.max_keys = 2;
    let server = start(small).await;
    let c = client(&server).await;
    match c.gen(0).await {
        Err(Error::Client(message)) => assert!(message.contains("GEN count"), "{message}"),
        other => panic!("GEN 0: {other:?}"),
    }
    match c.gen(3).await {
        Err(Error::Server(message)) => assert_eq!(message, "pool full"),
        other => panic!("GEN past --max-keys: {other:?}"),
    }
    let id = c.gen(1).await.unwrap()[0];
    match c.release(id, Some(Duration::from_secs(7200))).await {
        Err(Error::Client(message)) => assert!(message.contains("delay is longer than the maximum"), "{message}"),
        other => panic!("a delay past --max-block: {other:?}"),
    }
    assert!(matches!(c.add("two words", None).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(c.add("line\r\nDEL x", None).await, Err(Error::InvalidArgument(_))));
    assert_eq!(c.stats().await.unwrap().number("keys"), Some(1), "nothing smuggled in, nothing broken");
    assert_eq!(c.stats().await.unwrap().number("total_connections"), Some(1), "refusals keep the connection");
    finish(server, [c]).await;
}

#[tokio::test]
async fn authentication_is_sent_for_every_connection_and_refusals_are_told_apart() {
    let files = common::TempDir::new("client-auth");
    let tokens = files.write("tokens", "tok-team-a team-a\n");
    let auth = Arc::new(Authenticator::new(Some(tokens), None).expect("a valid tokens file"));
    let server = start(Config { auth, ..config() }).await;

    let anonymous = client(&server).await;
    anonymous.health().await.expect("PING needs no AUTH");
    assert!(matches!(anonymous.gen(1).await, Err(Error::NoAuth)));
    match Client::builder(server.addr()).token("wrong").connect().await {
        Err(Error::Auth(message)) => assert_eq!(message, "invalid token"),
        other => panic!("a wrong token: {other:?}"),
    }
    let team_a = Client::builder(server.addr()).token("tok-team-a").connect().await.unwrap();
    team_a.gen(2).await.unwrap();
    assert_eq!(team_a.pools().await.unwrap(), vec![PoolInfo { name: "team-a".into(), keys: 2 }]);
    match team_a.use_pool("team-b").await {
        Err(Error::Client(message)) => assert_eq!(message, "forbidden"),
        other => panic!("USE of a pool the token does not grant: {other:?}"),
    }
    assert_eq!(team_a.gen(1).await.unwrap().len(), 1, "still in team-a after the refused USE");
    assert_eq!(team_a.pool_stats("team-a").await.unwrap().number("keys"), Some(3));
    match Client::connect(server.addr()).await.unwrap().lease(None, None).await {
        Err(error) => assert_eq!(error.to_string(), Error::NoAuth.to_string()),
        Ok(lease) => panic!("leased without a token: {lease:?}"),
    }
    finish(server, [anonymous, team_a]).await;
}

#[tokio::test]
async fn a_daemon_that_is_gone_is_an_io_error_on_every_call() {
    let server = start(config()).await;
    let addr = server.addr();
    let c = client(&server).await;
    c.gen(1).await.unwrap();
    stop(server).await;
    let error = within("a request to a stopped daemon", c.gen(1)).await.expect_err("the daemon is gone");
    assert!(matches!(error, Error::Io(_)), "{error:?}");
    assert!(error.is_connection_error());
    let error = within("another request", c.health()).await.expect_err("still gone");
    assert!(matches!(error, Error::Io(_)), "a refused reconnect: {error:?}");
    assert!(matches!(within("a connect", Client::connect(addr)).await, Err(Error::Io(_))));
}

#[tokio::test]
async fn a_connection_the_daemon_closed_fails_one_call_and_the_next_reconnects() {
    let server = start(Config { idle_timeout: Some(Duration::from_millis(50)), ..config() }).await;
    let c = client(&server).await;
    let ids = c.gen(1).await.unwrap();
    let mut closed = false;
    let deadline = Instant::now() + IO_TIMEOUT;
    // The daemon closes the idle connection after 50ms; the request that finds it closed fails.
    while !closed {
        tokio::time::sleep(Duration::from_millis(100)).await;
        closed = matches!(c.ping(&ids[0]).await, Err(Error::Io(_)));
        assert!(Instant::now() < deadline, "the idle connection was never found closed");
    }
    assert!(c.ping(&ids[0]).await.unwrap(), "the next call opens a new connection");
    finish(server, [c]).await;
}

/// A listener that accepts connections and never answers: for timeouts.
async fn silent_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_daemon_that_does_not_answer_times_out() {
    let (addr, task) = silent_listener().await;
    let quick = Duration::from_millis(100);
    let started = Instant::now();
    // With no setup to send, connecting needs no answer; the request then times out.
    let c = Client::builder(addr).request_timeout(Some(quick)).connect().await.unwrap();
    assert!(matches!(c.health().await, Err(Error::Timeout(limit)) if limit == quick));
    // A wait lengthens the limit by itself.
    let wait = Duration::from_millis(150);
    assert!(matches!(c.lease(Some(wait), None).await, Err(Error::Timeout(limit)) if limit == quick + wait));
    // AUTH is part of connecting: the connect timeout applies.
    let refused = Client::builder(addr).token("t").connect_timeout(quick).connect().await;
    assert!(matches!(refused, Err(Error::Timeout(limit)) if limit == quick), "{refused:?}");
    assert!(started.elapsed() < IO_TIMEOUT);
    task.abort();
}

#[tokio::test]
async fn a_pipeline_answers_in_order_and_one_refusal_fails_only_its_request() {
    let server = start(config()).await;
    let c = client(&server).await;
    let ids = c.gen(40).await.unwrap();
    for id in ids.iter().step_by(2) {
        c.delete(id).await.unwrap();
    }
    let mut pipeline = c.pipeline();
    for id in &ids {
        pipeline.ping(id);
    }
    pipeline.gen(0).version().get(None, None).stats().health();
    assert_eq!(pipeline.len(), 45);
    let replies = pipeline.run().await.unwrap();
    assert_eq!(replies.len(), 45);
    for (at, reply) in replies[..40].iter().enumerate() {
        assert_eq!(reply.as_ref().unwrap(), &Reply::Alive(at % 2 == 1), "reply {at} answers PING of ids[{at}]");
    }
    assert!(matches!(replies[40], Err(Error::Client(_))), "GEN 0: {:?}", replies[40]);
    assert_eq!(replies[41].as_ref().unwrap(), &Reply::Version(VERSION.into()));
    assert!(matches!(&replies[42], Ok(Reply::Lease(Some(lease))) if lease.token.is_none()));
    assert!(matches!(&replies[43], Ok(Reply::Stats(stats)) if stats.number("keys") == Some(20)));
    assert_eq!(replies[44].as_ref().unwrap(), &Reply::Pong);

    // Reused: the next batch, and an argument refused while queueing fails the run before sending.
    assert!(pipeline.is_empty());
    pipeline.add("sk-1", None).add("not ok", None).health();
    assert!(matches!(pipeline.run().await, Err(Error::InvalidArgument(_))));
    assert!(pipeline.run().await.unwrap().is_empty(), "nothing was left queued");
    assert_eq!(c.stats().await.unwrap().number("keys_added"), Some(0), "nothing was sent");
    finish(server, [c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lease_never_holds_up_another_task_on_the_same_client() {
    let server = start(config()).await;
    let c = client(&server).await;
    let id = c.gen(1).await.unwrap()[0];
    let held = c.lease(None, None).await.unwrap().expect("the only key");
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.lease(Some(IO_TIMEOUT), None).await })
    };
    eventually("the lease to wait", || async { c.stats().await.unwrap().number("waiters") == Some(1) }).await;
    // Same client, while the other task's request waits on its own connection.
    assert_eq!(c.release(&held, None).await.unwrap(), Released::Yes);
    let handed = within("the waiter to be served", waiter).await.expect("the task").unwrap();
    assert_eq!(handed.expect("the released key").id, id);
    finish(server, [c]).await;
}

#[tokio::test]
async fn the_guard_s_heartbeat_keeps_a_lease_past_its_block_window() {
    let server = start(config_with_windows(SHORT, Duration::from_secs(300))).await;
    let c = client(&server).await;
    c.gen(2).await.unwrap();
    // The control: a lease nobody touches is over once the window passes.
    let unguarded = c.lease(None, None).await.unwrap().expect("a key");
    let guard = c.leased(Duration::from_secs(1)).await.unwrap().expect("the other key");
    let token = guard.token.expect("leased() leases with a token");
    tokio::time::sleep(SHORT * 4).await;
    assert_eq!(state(&c, &unguarded.id).await, Some(KeyState::Free), "the control's lease timed out");
    assert!(matches!(state(&c, &guard.id).await, Some(KeyState::Blocked { token: t, .. }) if t == token));
    assert!(!guard.is_lost());
    assert!(c.stats().await.unwrap().number("cmd_touch").unwrap_or(0) >= 6, "about one TOUCH per 67ms");
    assert_eq!(guard.release().await.unwrap(), Released::Yes);
    finish(server, [c]).await;
}

#[tokio::test]
async fn a_guard_with_its_own_window_touches_with_it_and_notices_a_lost_lease() {
    let server = start(config()).await;
    let c = client(&server).await;
    c.gen(1).await.unwrap();
    let guard = c.leased_for(Duration::from_secs(1), SHORT).await.unwrap().expect("a key");
    tokio::time::sleep(SHORT * 2).await;
    assert!(matches!(state(&c, &guard.id).await, Some(KeyState::Blocked { .. })), "kept past its 200ms window");
    assert!(c.delete(&guard.id).await.unwrap());
    eventually("the heartbeat to notice", || async { guard.is_lost() }).await;
    assert_eq!(guard.release_after(Duration::from_secs(1)).await.unwrap(), Released::NotFound);
    finish(server, [c]).await;
}

#[tokio::test]
async fn a_dropped_guard_gives_its_key_back_under_its_token() {
    let server = start(config()).await;
    let c = client(&server).await;
    let id = c.gen(1).await.unwrap()[0];
    let lease = {
        let guard = c.leased(Duration::from_secs(1)).await.unwrap().expect("the key");
        assert!(c.get(None, None).await.unwrap().is_none(), "leased");
        guard.lease().clone()
    };
    eventually("the dropped guard's release", || async { state(&c, &id).await == Some(KeyState::Free) }).await;
    assert_eq!(c.release(&lease, None).await.unwrap(), Released::Stale, "its lease is over");
    assert_eq!(c.stats().await.unwrap().number("cmd_rel"), Some(2), "one REL from the drop, one here");
    finish(server, [c]).await;
}

#[tokio::test]
async fn autorel_gives_a_dropped_client_s_keys_back() {
    let server = start(config()).await;
    let watcher = client(&server).await;
    let id = watcher.gen(1).await.unwrap()[0];
    let worker = Client::builder(server.addr()).autorel(true).connect().await.unwrap();
    worker.lease(None, None).await.unwrap().expect("the key");
    drop(worker);
    eventually("the close to release the key", || async { state(&watcher, &id).await == Some(KeyState::Free) }).await;
    assert_eq!(watcher.stats().await.unwrap().number("released_by_close"), Some(1));

    // autorel() turns it on for a client that is already connected.
    let late = client(&server).await;
    late.autorel().await.unwrap();
    late.lease(None, None).await.unwrap().expect("the key");
    drop(late);
    eventually("the second close", || async { state(&watcher, &id).await == Some(KeyState::Free) }).await;
    assert_eq!(watcher.stats().await.unwrap().number("cmd_autorel"), Some(2));
    finish(server, [watcher]).await;
}
