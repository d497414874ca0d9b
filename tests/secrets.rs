//! Pools of one's own keys over the wire (issue 7): `ADD <secret>` answers `KEY <id>` for a new key and
//! `EXISTS <id>` for a secret the pool already holds (so re-importing a list is idempotent); the secret
//! comes back in lease replies (`KEY <id> <secret>`, `LEASED <id> <token> <secret>`) and nowhere else: not
//! in ADD's own reply, INFO, STATS or any error; secrets are 1 to `--max-secret` bytes of printable ASCII
//! without spaces; `ADD <secret> <keepalive>` gives the key a keep-alive window of its own, and `0s` one
//! that never ends; ADD obeys `--max-keys` as GEN does.
//!
//! The tests of behaviour drive the daemon through the typed client, `keypool::client::Client`, whose
//! parser refuses a `KEY <id>` or `EXISTS <id>` line with anything after the id, so "the secret is not
//! echoed" still holds there. Four tests keep the raw line client, because what they assert is on the
//! wire: the exact lease lines with and without a secret (v1's `KEY <id>` beside `KEY <id> <secret>`),
//! every raw reply line scanned for a leaked secret, and `CLIENT_ERROR` texts for bad secrets.

mod common;

use std::time::{Duration, Instant};

use common::typed::{self, stat};
use common::{close_and_stop, config, config_with_windows, key_and_secret_of, key_of, leased_of, start};
use common::{unix_ms, Client as RawClient};
use keypool::client::{Added, Client, Error, Info, KeyId};

/// How late a timed event may be observed, past its deadline.
const SLACK: Duration = Duration::from_millis(200);

/// How much earlier than its deadline an event may be observed: engine time is whole milliseconds.
const ROUNDING: Duration = Duration::from_millis(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every line of `lines` that gives away `secret`, or its first or last dozen bytes.
fn leaks<'a>(lines: &'a [String], secret: &str) -> Vec<&'a String> {
    let (head, tail) = (&secret[..12], &secret[secret.len() - 12..]);
    lines.iter().filter(|line| line.contains(head) || line.contains(tail)).collect()
}

/// `ADD secret [keepalive]` on `c`, which must make a new key (`KEY <id>`): its id.
async fn add_new(c: &Client, secret: &str, keepalive: Option<Duration>) -> KeyId {
    match c.add(secret, keepalive).await.expect("ADD") {
        Added::New(id) => id,
        Added::Existing(id) => panic!("ADD {secret} answered EXISTS {id}, not a new key"),
    }
}

/// The INFO of a key that must exist.
async fn info(c: &Client, id: &KeyId) -> Info {
    c.info(id).await.expect("INFO").unwrap_or_else(|| panic!("{id} does not exist"))
}

#[tokio::test]
async fn add_makes_a_key_and_a_repeated_secret_answers_exists() {
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let id = add_new(&c, "sk-live-4f1b9c2e7a", None).await; // `KEY <id>` exactly: the secret is not echoed
    assert_eq!(c.add("sk-live-4f1b9c2e7a", None).await.expect("ADD"), Added::Existing(id));
    let other = add_new(&c, "sk-live-88aa00ff11", None).await;
    assert_ne!(other, id);

    let described = info(&c, &id).await;
    assert_eq!(described.state, keypool::client::KeyState::Free);
    assert_eq!(described.leases, 0);
    let stats = c.stats().await.expect("STATS");
    let want = [("keys", 2), ("keys_free", 2), ("keys_added", 2), ("keys_generated", 0), ("cmd_add", 3)];
    for (name, value) in want {
        assert_eq!(stats.number(name), Some(value), "{name}");
    }

    // Importing the same list again creates nothing, whether its keys are free or leased.
    c.lease(None, None).await.expect("LEASE").expect("a free key");
    assert_eq!(c.add("sk-live-4f1b9c2e7a", None).await.expect("ADD"), Added::Existing(id));
    assert_eq!(c.add("sk-live-88aa00ff11", None).await.expect("ADD"), Added::Existing(other));
    let stats = c.stats().await.expect("STATS");
    assert_eq!((stats.number("keys"), stats.number("keys_added")), (Some(2), Some(2)));
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn lease_replies_carry_the_secret_and_v1_keys_reply_as_before() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let secret = "AKIA/EXAMPLE+key=42~!";
    let id = c.add(secret).await;

    let (got, got_secret) = key_and_secret_of(&c.cmd("GET").await);
    assert_eq!((got.as_str(), got_secret.as_str()), (id.as_str(), secret));
    assert_eq!(c.cmd(&format!("ADD {secret}")).await, format!("EXISTS {id}"), "EXISTS while leased too");
    assert_eq!(c.cmd(&format!("REL {id}")).await, "RELEASED");
    let lease = leased_of(&c.cmd("LEASE 0ms 5s").await);
    assert_eq!(lease.id, id);
    assert_eq!(lease.secret.as_deref(), Some(secret));
    assert_eq!(c.cmd(&format!("REL {id} {}", lease.token)).await, "RELEASED");

    // A generated key in the same pool still answers as in v1.
    c.gen(1).await;
    let mut plain = Vec::new();
    for _ in 0..2 {
        let reply = c.cmd("GET").await;
        if reply.split(' ').count() == 2 {
            plain.push(key_of(&reply));
        } else {
            assert_eq!(key_and_secret_of(&reply).1, secret);
        }
    }
    assert_eq!(plain.len(), 1, "one of the two keys is the generated one");
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn a_secret_appears_in_no_info_stats_or_error_reply() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let secret = "ghp_S3cr3tT0k3nValue0123456789";
    let id = c.add(secret).await;
    let lease = c.lease("").await.expect("the key");
    assert_eq!(lease.secret.as_deref(), Some(secret));

    let mut seen = c.info_lines(&id).await;
    c.send_line("STATS").await;
    seen.extend(c.block().await);
    let long = format!("{secret}{}", "x".repeat(1024));
    let refused = [
        (format!("ADD {long}"), "CLIENT_ERROR secret is longer than the maximum, 1024 bytes".to_string()),
        (format!("ADD {secret}\x01"), "CLIENT_ERROR secret must be printable ASCII without spaces".into()),
        (
            format!("ADD {secret} 30"),
            "CLIENT_ERROR keepalive duration needs a unit (ms, s, m or h), as in 250ms, 60s, 5m".into(),
        ),
        (format!("ADD {secret} 30s more"), "CLIENT_ERROR too many arguments for ADD".into()),
    ];
    for (request, want) in &refused {
        let reply = c.cmd(request).await;
        assert_eq!(&reply, want, "{}", &request[..20]);
        seen.push(reply);
    }
    assert_eq!(c.cmd(&format!("REL {id} {}", lease.token)).await, "RELEASED");
    seen.extend(c.info_lines(&id).await);
    assert!(leaks(&seen, secret).is_empty(), "the secret leaked: {:?}", leaks(&seen, secret));
    assert!(seen.iter().any(|line| line.contains(&id)), "the check above looked at real replies: {seen:?}");
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn bad_secrets_are_client_errors_and_the_connection_goes_on() {
    let server = start(config()).await;
    let mut c = RawClient::connect(server.addr()).await;
    let printable = "CLIENT_ERROR secret must be printable ASCII without spaces";
    let cases: Vec<(Vec<u8>, String)> = vec![
        (b"ADD".to_vec(), "CLIENT_ERROR ADD needs a secret".into()),
        (b"ADD abc\x01def".to_vec(), printable.into()),
        (b"ADD abc\x7fdef".to_vec(), printable.into()),
        (b"ADD \x1b[31mred".to_vec(), printable.into()),
        ("ADD caf\u{e9}".as_bytes().to_vec(), printable.into()),
        (b"ADD abc\rdef".to_vec(), printable.into()),
        (
            format!("ADD {}", "s".repeat(1025)).into_bytes(),
            "CLIENT_ERROR secret is longer than the maximum, 1024 bytes".into(),
        ),
        (
            b"ADD abc 5".to_vec(),
            "CLIENT_ERROR keepalive duration needs a unit (ms, s, m or h), as in 250ms, 60s, 5m".into(),
        ),
        (
            b"ADD abc def".to_vec(),
            "CLIENT_ERROR keepalive duration must start with a whole number, as in 250ms, 60s, 5m".into(),
        ),
    ];
    for (request, want) in &cases {
        let mut line = request.clone();
        line.extend_from_slice(b"\r\n");
        c.send(&line).await;
        assert_eq!(&c.line().await, want, "{:?}", String::from_utf8_lossy(request));
        assert_eq!(c.cmd("PING").await, "PONG", "the connection goes on");
    }
    assert_eq!(c.stat("keys").await, 0, "no refused ADD created a key");

    // The limits themselves are allowed: one byte, and exactly --max-secret bytes.
    c.add("!").await;
    c.add(&"~".repeat(1024)).await;
    assert_eq!(c.stat("keys_added").await, 2);
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn max_secret_sets_the_longest_secret() {
    let mut config = config();
    config.max_secret = 16;
    let server = start(config).await;
    let mut c = RawClient::connect(server.addr()).await;
    c.add(&"a".repeat(16)).await;
    let reply = c.cmd(&format!("ADD {}", "b".repeat(17))).await;
    assert_eq!(reply, "CLIENT_ERROR secret is longer than the maximum, 16 bytes");
    assert_eq!(c.stat("max_secret_bytes").await, 16);
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn add_with_its_own_keep_alive_expires_by_itself_and_ping_restarts_it() {
    let server = start(config_with_windows(ms(60_000), ms(60_000))).await;
    let c = typed::connect(server.addr()).await;
    let window = ms(300);
    let generated = c.gen(1).await.expect("GEN").remove(0);
    let id = add_new(&c, "own-window", Some(window)).await;
    let described = info(&c, &id).await;
    let created = described.created_ms;
    assert_eq!(described.alive_until_ms, Some(created + 300), "the key's own window, not the pool's");

    tokio::time::sleep(ms(150)).await;
    let since = Instant::now();
    let before = unix_ms();
    assert!(c.ping(&id).await.expect("PING"), "ALIVE");
    let alive_until = info(&c, &id).await.alive_until_ms.expect("a keep-alive window");
    assert!(alive_until + 2 >= before + 300 && alive_until <= unix_ms() + 300 + 50, "{alive_until}");

    loop {
        let described = c.info(&id).await.expect("INFO");
        let elapsed = since.elapsed();
        if described.is_none() {
            assert!(elapsed + ROUNDING >= window, "deleted {elapsed:?} after PING, within its window");
            break;
        }
        assert!(elapsed <= window + SLACK, "still there {elapsed:?} after PING: {described:?}");
        tokio::time::sleep(ms(5)).await;
    }
    assert_eq!(stat(&c, "expired_keepalive").await, 1);
    assert!(c.info(&generated).await.expect("INFO").is_some(), "the pool's window is untouched");
    // Its secret went with it: adding it again makes a new key.
    let again = add_new(&c, "own-window", None).await;
    assert_ne!(again, id);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn add_with_0s_never_expires_by_keep_alive() {
    let keepalive = ms(200);
    let server = start(config_with_windows(ms(60_000), keepalive)).await;
    let c = typed::connect(server.addr()).await;
    let since = Instant::now();
    // A zero keep-alive (sent as `0ms`): the key never expires that way.
    let forever = add_new(&c, "forever", Some(Duration::ZERO)).await;
    let pooled = add_new(&c, "pooled", None).await;
    // `alive_until_ms` is `None` exactly when INFO leaves the field out.
    let described = info(&c, &forever).await;
    assert_eq!(described.alive_until_ms, None, "a key that never expires has no alive_until_ms: {described:?}");
    assert!(info(&c, &pooled).await.alive_until_ms.is_some());

    // The pool's window passes: the key that follows it goes, the 0s key stays.
    loop {
        if c.info(&pooled).await.expect("INFO").is_none() {
            break;
        }
        assert!(since.elapsed() <= keepalive + SLACK, "the pooled key outlived its window");
        tokio::time::sleep(ms(5)).await;
    }
    tokio::time::sleep(ms(50)).await;
    let described = c.info(&forever).await.expect("INFO").expect("a 0s key does not expire by keep-alive");
    assert_eq!(described.alive_until_ms, None);
    assert!(c.ping(&forever).await.expect("PING"), "ALIVE");
    assert_eq!(info(&c, &forever).await.alive_until_ms, None, "PING sets none");
    let got = c.get(None, None).await.expect("GET").expect("the 0s key");
    assert_eq!((got.id, got.token, got.secret.as_deref()), (forever, None, Some("forever")));
    assert_eq!(stat(&c, "expired_keepalive").await, 1);
    typed::close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn add_obeys_max_keys_and_exists_needs_no_room() {
    let mut config = config();
    config.pool.max_keys = 2;
    let server = start(config).await;
    let c = typed::connect(server.addr()).await;
    let pool_full =
        |result: Result<Added, Error>| matches!(result, Err(Error::Server(message)) if message == "pool full");
    let first = add_new(&c, "first", None).await;
    assert_eq!(c.gen(1).await.expect("GEN").len(), 1);
    let refused = c.add("second", None).await;
    assert!(pool_full(refused), "SERVER_ERROR pool full");
    let exists = c.add("first", None).await.expect("ADD");
    assert_eq!(exists, Added::Existing(first), "a full pool still recognises its secrets");
    assert!(c.delete(&first).await.expect("DEL"), "DELETED");
    let second = add_new(&c, "second", None).await;
    let again = c.add("first", None).await;
    assert!(pool_full(again), "a deleted key's secret is gone; there is no room for it");
    assert_ne!(second, first);
    assert_eq!(stat(&c, "keys_added").await, 2);
    typed::close_and_stop(server, [c]).await;
}
