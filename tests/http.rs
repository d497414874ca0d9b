//! The HTTP gateway over real HTTP/1.1 (issue 8): every route and status code, the JSON shapes and HEAD's
//! headers, bad requests (400, 404, 405 with Allow, 413, 415), waits that wait as `LEASE <wait>` and are
//! withdrawn when the client hangs up, parity with TCP both ways on the same pools, pools by path, and
//! shutdown. Authentication is in `http_auth.rs`; metrics and the OpenAPI document in
//! `http_observability.rs`.

mod common;
mod http_support;

use std::time::Duration;

use common::{assert_id, config, Client, UNKNOWN_ID};
use http_support::Daemon;
use hyper::Method;
use serde_json::json;

#[tokio::test]
async fn the_seed_routes_answer_as_the_issue_says() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();

    http.get("/keys").await.expect(404);
    let one = http.post("/keys").await;
    let id = one.expect(201).json()["key_id"].as_str().expect("key_id").to_string();
    assert_id(&id);
    assert_eq!(one.header("content-type"), Some("application/json"));

    // A count lists the keys, even a count of one.
    let listed = http.post_json("/keys", json!({ "count": 1 })).await.expect(201).json();
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1));
    let three = http.post_json("/keys", json!({ "count": 3 })).await.expect(201).json();
    assert_eq!(three["keys"].as_array().map(Vec::len), Some(3));

    // Lease the five keys, then none is free.
    let mut leased = Vec::new();
    for _ in 0..5 {
        let (key, token) = http.lease("").await;
        assert_id(&key);
        assert!(leased.iter().all(|(_, t)| *t < token), "tokens grow");
        leased.push((key, token));
    }
    assert_eq!(http.get("/keys").await.expect(404).error(), "not found");

    let (key, token) = leased[0].clone();
    let info = http.get(&format!("/keys/{key}")).await.expect(200).json();
    assert_eq!(info["id"], json!(key));
    assert_eq!(info["state"], json!("blocked"));
    assert_eq!(info["token"], json!(token));
    assert_eq!(info["leases"], json!(1));
    assert!(info["created_ms"].as_u64().is_some() && info["blocked_until_ms"].as_u64().is_some(), "{info}");

    let head = http.head(&format!("/keys/{key}")).await;
    head.expect(200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(head.header("x-keypool-state"), Some("blocked"));
    assert_eq!(head.header("x-keypool-leases"), Some("1"));
    for header in ["x-keypool-created-ms", "x-keypool-alive-until-ms", "x-keypool-blocked-until-ms"] {
        let value = head.header(header).unwrap_or_else(|| panic!("{header} missing"));
        assert!(value.parse::<u64>().is_ok(), "{header}: {value}");
    }

    assert_eq!(http.put(&format!("/keepalive/{key}")).await.expect(200).json(), json!({ "status": "alive" }));
    assert_eq!(http.put(&format!("/keys/{key}?token={}", token + 1000)).await.expect(409).error(), "stale");
    assert_eq!(
        http.put(&format!("/keys/{key}?token={token}")).await.expect(200).json(),
        json!({ "status": "released" })
    );
    assert_eq!(http.put(&format!("/keys/{key}")).await.expect(409).error(), "not blocked");
    let head = http.head(&format!("/keys/{key}")).await;
    assert_eq!(head.expect(200).header("x-keypool-state"), Some("free"));
    assert_eq!(head.header("x-keypool-blocked-until-ms"), None, "only while blocked");

    assert_eq!(http.delete(&format!("/keys/{key}")).await.expect(200).json(), json!({ "status": "deleted" }));
    for reply in [
        http.delete(&format!("/keys/{key}")).await,
        http.get(&format!("/keys/{key}")).await,
        http.put(&format!("/keys/{key}")).await,
        http.put(&format!("/keepalive/{key}")).await,
        http.put(&format!("/keys/{key}/touch")).await,
    ] {
        assert_eq!(reply.expect(404).error(), "not found");
    }
    assert!(http.head(&format!("/keys/{UNKNOWN_ID}")).await.expect(404).body.is_empty());
    assert_eq!(http.get("/health").await.expect(200).json(), json!({ "status": "ok" }));
    daemon.stop().await;
}

#[tokio::test]
async fn touch_add_stats_and_pools_have_routes_too() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();

    // ADD: a new secret is created, a known one reported; leases carry the secret.
    let added = http.post_json("/keys", json!({ "secret": "sk-live-1", "keepalive": "0s" })).await.expect(201).json();
    let id = added["key_id"].as_str().expect("key_id").to_string();
    let again = http.post_json("/keys", json!({ "secret": "sk-live-1" })).await.expect(200).json();
    assert_eq!(again, json!({ "key_id": id, "status": "exists" }));
    let leased = http.get("/keys?wait=0ms&block=30s").await.expect(200).json();
    assert_eq!(leased["secret"], json!("sk-live-1"));
    let token = leased["token"].as_u64().expect("token");
    let info = http.get(&format!("/keys/{id}")).await.expect(200).json();
    assert!(info.get("alive_until_ms").is_none(), "0s keep-alive never expires: {info}");
    assert!(!info.to_string().contains("sk-live-1"), "INFO never shows the secret");

    // TOUCH, with and without the lease's token.
    let touch = format!("/keys/{id}/touch");
    assert_eq!(
        http.put(&format!("{touch}?token={token}&block=2m")).await.expect(200).json(),
        json!({ "status": "touched" })
    );
    assert_eq!(http.put(&format!("{touch}?token={}", token + 1)).await.expect(409).error(), "stale");
    assert_eq!(http.put(&format!("{touch}?block=0ms")).await.expect(400).error(), "block must be at least 1ms");
    http.put(&format!("/keys/{id}?delay=1h")).await.expect(200);
    assert_eq!(http.head(&format!("/keys/{id}")).await.header("x-keypool-state"), Some("delayed"));
    assert_eq!(http.put(&touch).await.expect(409).error(), "not blocked");

    // STATS, global and by pool; POOLS.
    http.post_json("/pools/team-a/keys", json!({ "count": 2 })).await.expect(201);
    let stats = http.get("/stats").await.expect(200).json();
    assert_eq!(stats["keys"], json!(3));
    assert_eq!(stats["keys_added"], json!(1));
    assert_eq!(stats["version"], json!(common::VERSION));
    assert_eq!(stats["pools"], json!(2));
    let team = http.get("/pools/team-a/stats").await.expect(200).json();
    assert_eq!(
        (team["pool"].clone(), team["keys"].clone(), team["keys_free"].clone()),
        (json!("team-a"), json!(2), json!(2))
    );
    let pools = http.get("/pools").await.expect(200).json();
    let mut listed: Vec<(String, u64)> = pools["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|pool| (pool["name"].as_str().expect("name").to_string(), pool["keys"].as_u64().expect("keys")))
        .collect();
    listed.sort();
    assert_eq!(listed, [("default".to_string(), 1), ("team-a".to_string(), 2)]);
    assert_eq!(pools["next_cursor"], json!(0));
    http.get("/pools?cursor=0").await.expect(200);
    daemon.stop().await;
}

#[tokio::test]
async fn bad_requests_get_400_404_405_413_and_415_with_json_errors() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    let id = http.gen_one("").await;

    let malformed_id = "malformed key id: ids are 24 letters and digits";
    for path in ["/keys/short", "/keys/abcdefghijklmnopqrstuvw!", "/keepalive/x", "/keys/x/touch"] {
        let method = if path.starts_with("/keys/") && !path.ends_with("touch") { Method::GET } else { Method::PUT };
        assert_eq!(http.send(method, path, None).await.expect(400).error(), malformed_id, "{path}");
    }
    let bad_params = [
        ("/keys?wait=5", "wait duration needs a unit (ms, s, m or h), as in 250ms, 60s, 5m"),
        ("/keys?wait=10m", "wait is longer than the maximum, 5m"),
        ("/keys?block=2h", "block is longer than the maximum, 1h"),
        ("/keys?wait=1s&wait=2s", "parameter 'wait' is given twice"),
        ("/keys?colour=blue", "unknown parameter 'colour'"),
        ("/pools?cursor=x", "malformed cursor"),
        ("/stats?verbose=1", "unknown parameter 'verbose'"),
    ];
    for (path, message) in bad_params {
        assert_eq!(http.get(path).await.expect(400).error(), message, "{path}");
    }
    assert_eq!(http.put(&format!("/keys/{id}?token=-1")).await.expect(400).error(), "malformed token");
    assert_eq!(
        http.put(&format!("/keys/{id}?delay=2h")).await.expect(400).error(),
        "delay is longer than the maximum, 1h"
    );
    assert_eq!(
        http.get("/pools/no%20spaces/keys").await.expect(400).error(),
        "malformed pool name: 1 to 64 letters, digits, '_', '.' or '-'"
    );
    assert_eq!(
        http.get("/pools/team%ff/keys").await.expect(400).error(),
        "malformed path: a parameter is not percent-encoded UTF-8"
    );

    // Unknown paths, and known paths with the wrong method.
    for path in ["/", "/key", "/keys/x/y/z", "/pools/a/pools", "/metrics/x"] {
        assert_eq!(http.get(path).await.expect(404).error(), "no such route", "{path}");
    }
    let wrong_methods = [
        (Method::PATCH, "/keys", "GET, POST"),
        (Method::HEAD, "/keys", "GET, POST"),
        (Method::DELETE, "/keys", "GET, POST"),
        (Method::POST, "/keys/{id}", "GET, HEAD, PUT, DELETE"),
        (Method::GET, "/keepalive/{id}", "PUT"),
        (Method::DELETE, "/pools/a/keys/{id}/touch", "PUT"),
        (Method::POST, "/health", "GET"),
        (Method::PUT, "/metrics", "GET"),
    ];
    for (method, path, allow) in wrong_methods {
        let path = path.replace("{id}", &id);
        let reply = http.send(method.clone(), &path, None).await;
        reply.expect(405);
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
        if method != Method::HEAD {
            assert_eq!(reply.error(), "method not allowed");
        }
    }
    assert_eq!(http.get(&format!("/keys/{id}")).await.json()["state"], json!("free"), "HEAD /keys leased nothing");

    // Bodies: too large, not JSON, not an object, bad fields.
    let huge = vec![b' '; 64 * 1024 + 1];
    assert_eq!(
        http.send(Method::POST, "/keys", Some(("application/json", huge))).await.expect(413).error(),
        "the body is larger than 64 KiB"
    );
    let text = Some(("text/plain", b"{\"count\": 2}".to_vec()));
    assert_eq!(http.send(Method::POST, "/keys", text).await.expect(415).error(), "the body must be application/json");
    let garbage = Some(("application/json", b"{count: 2".to_vec()));
    assert!(http.send(Method::POST, "/keys", garbage).await.expect(400).error().starts_with("the body is not JSON"));
    let gen_range = "GEN count must be a whole number from 1 to 10000";
    for (body, message) in [
        (json!([1, 2]), "the body must be a JSON object"),
        (json!({ "count": 0 }), gen_range),
        (json!({ "count": 10_001 }), gen_range),
        (json!({ "count": "3" }), gen_range),
        (json!({ "count": 1.5 }), gen_range),
        (json!({ "count": 2, "secret": "x" }), "give either count (new keys) or secret (a key of yours), not both"),
        (json!({ "secret": "has space" }), "secret must be printable ASCII without spaces"),
        (json!({ "secret": "" }), "ADD needs a secret"),
        (json!({ "secret": "x".repeat(1025) }), "secret is longer than the maximum, 1024 bytes"),
        (
            json!({ "secret": "ok", "keepalive": "soon" }),
            "keepalive duration must start with a whole number, as in 250ms, 60s, 5m",
        ),
        (json!({ "keepalive": "1s" }), "keepalive is for a key with a secret"),
        (json!({ "cuont": 2 }), "unknown field 'cuont'"),
    ] {
        assert_eq!(http.post_json("/keys", body.clone()).await.expect(400).error(), message, "{body}");
    }
    // A body with a JSON content type and parameters is fine; an empty JSON body is GEN 1.
    let typed = Some(("application/json; charset=utf-8", b"{\"count\": 2}".to_vec()));
    http.send(Method::POST, "/keys", typed).await.expect(201);
    http.send(Method::POST, "/keys", Some(("application/json", Vec::new()))).await.expect(201);
    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    assert_eq!(tcp.stat("keys").await, 4, "only the good requests made keys");
    daemon.stop().await;
}

#[tokio::test]
async fn keys_cross_between_tcp_and_http_both_ways_on_the_same_pools() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    let mut tcp = Client::connect(daemon.tcp.addr()).await;

    // Made over TCP, leased over HTTP, released over TCP with the HTTP lease's token.
    let made = tcp.gen(1).await.remove(0);
    let (leased, token) = http.lease("").await;
    assert_eq!(leased, made);
    assert_eq!(tcp.cmd(&format!("REL {made} {}", token + 1)).await, "STALE");
    assert_eq!(tcp.cmd(&format!("REL {made} {token}")).await, "RELEASED");

    // Made over HTTP in a named pool, leased over TCP, released over HTTP with the TCP lease's token.
    let id = http.gen_one("/pools/blue").await;
    tcp.use_pool("blue").await;
    let lease = tcp.cmd("LEASE").await;
    let token: u64 = lease.rsplit(' ').next().and_then(|t| t.parse().ok()).expect("a token");
    assert_eq!(lease, format!("LEASED {id} {token}"));
    assert_eq!(http.put(&format!("/keys/{id}")).await.expect(404).error(), "not found", "not in default");
    http.put(&format!("/pools/blue/keys/{id}?token={token}")).await.expect(200);
    assert_eq!(tcp.state(&id).await.as_deref(), Some("free"));

    // The same counters: STATS over TCP counts the HTTP requests under their commands.
    let stats = tcp.stats().await;
    assert_eq!(stats["cmd_gen"], "2", "one GEN over each front end");
    assert_eq!(stats["cmd_lease"], "2", "one LEASE over each front end");
    assert_eq!(stats["cmd_rel"], "4");
    let http_stats = http.get("/stats").await.expect(200).json();
    assert_eq!(http_stats["cmd_rel"], json!(4));
    assert_eq!(http_stats["keys"], json!(2));
    daemon.stop().await;
}

#[tokio::test]
async fn pools_by_path_are_apart_and_a_pool_name_is_checked() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    let a = http.gen_one("/pools/a").await;
    http.get("/pools/b/keys").await.expect(404);
    http.get("/keys").await.expect(404);
    for other in ["/pools/b", ""] {
        http.get(&format!("{other}/keys/{a}")).await.expect(404);
        http.put(&format!("{other}/keepalive/{a}")).await.expect(404);
        http.delete(&format!("{other}/keys/{a}")).await.expect(404);
    }
    assert_eq!(http.lease("/pools/a").await.0, a);
    http.put(&format!("/pools/a/keepalive/{a}")).await.expect(200);
    http.get(&format!("/pools/{}/keys", "x".repeat(65))).await.expect(400);
    // STATS of a pool that does not exist is all zeros, as on TCP.
    assert_eq!(http.get("/pools/nobody/stats").await.expect(200).json()["keys"], json!(0));
    daemon.stop().await;
}

#[tokio::test]
async fn a_wait_is_served_by_a_key_made_over_tcp_and_runs_out_like_lease_wait() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    let mut tcp = Client::connect(daemon.tcp.addr()).await;

    let waiting = tokio::spawn({
        let http = http.clone();
        async move { http.get("/pools/w/keys?wait=5s").await }
    });
    tcp.use_pool("w").await;
    tcp.wait_for_stat("waiters", 1).await;
    let made = tcp.gen(1).await.remove(0);
    let reply = waiting.await.expect("the waiting request");
    assert_eq!(reply.expect(200).json()["key_id"], json!(made));

    let started = tokio::time::Instant::now();
    http.get("/pools/w/keys?wait=150ms").await.expect(404);
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited");
    let stats = tcp.stats().await;
    assert_eq!((stats["waits_served"].as_str(), stats["waits_timed_out"].as_str()), ("1", "1"));
    daemon.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_while_waiting_withdraws_its_wait() {
    let daemon = Daemon::start(config()).await;
    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    tcp.use_pool("gone").await;
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = tokio::net::TcpStream::connect(daemon.http.addr()).await.expect("connect");
        raw.write_all(b"GET /pools/gone/keys?wait=30s HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
        tcp.wait_for_stat("waiters", 1).await;
        // Dropped: the client hangs up.
    }
    tcp.wait_for_stat("waiters", 0).await;
    // The key goes to no one: it is free for the next lease.
    let made = tcp.gen(1).await.remove(0);
    assert_eq!(tcp.get().await.as_deref(), Some(made.as_str()));
    daemon.stop().await;
}

#[tokio::test]
async fn shutdown_answers_a_waiting_request_at_once() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    let waiting = tokio::spawn({
        let http = http.clone();
        async move { http.get("/keys?wait=60s").await }
    });
    tcp.wait_for_stat("waiters", 1).await;
    let Daemon { tcp: tcp_handle, http: http_handle, .. } = daemon;
    common::within("the gateway to stop", http_handle.stop()).await;
    let reply = waiting.await.expect("the waiting request");
    assert_eq!(reply.expect(503).error(), "shutting down");
    assert_eq!(tcp.stat("waiters").await, 0, "the wait was withdrawn");
    drop(tcp);
    tcp_handle.stop().await;
}

#[tokio::test]
async fn stats_counts_http_connections_apart_from_tcp_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start(config()).await;
    let mut raw = tokio::net::TcpStream::connect(daemon.http.addr()).await.expect("connect");
    raw.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
    let mut answer = [0u8; 512];
    let n = common::within("the health answer", raw.read(&mut answer)).await.expect("read");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&answer[..n]));

    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    assert_eq!(tcp.stat("http_curr_connections").await, 1, "the open keep-alive connection");
    assert_eq!(tcp.stat("http_total_connections").await, 1);
    assert_eq!(tcp.stat("curr_connections").await, 1, "TCP's figure counts TCP only");
    // A second connection, which the client keeps open in its pool.
    let http = daemon.client();
    let stats = http.get("/stats").await.expect(200).json();
    assert_eq!(stats["http_total_connections"], 2, "the /stats request came on a second connection");

    drop(raw);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tcp.stat("http_curr_connections").await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the closed HTTP connection is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((tcp, http));
    daemon.stop().await;
}

#[tokio::test]
async fn idle_timeout_closes_an_idle_keep_alive_connection_but_not_a_waiting_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idle = Duration::from_millis(300);
    let daemon = Daemon::start(keypool::server::Config { idle_timeout: Some(idle), ..config() }).await;
    let mut raw = tokio::net::TcpStream::connect(daemon.http.addr()).await.expect("connect");

    // A wait three times the idle timeout is a request in progress: it runs out and is answered.
    raw.write_all(b"GET /keys?wait=900ms HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
    let mut answer = [0u8; 512];
    let n = common::within("the wait's answer", raw.read(&mut answer)).await.expect("read");
    assert!(answer[..n].starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&answer[..n]));

    // Then idle: closed once the timeout has passed, not before.
    let idle_since = tokio::time::Instant::now();
    let n = common::within("the close", raw.read(&mut answer)).await.expect("read");
    assert_eq!(n, 0, "an answer instead of a close: {}", String::from_utf8_lossy(&answer[..n]));
    let waited = idle_since.elapsed();
    assert!(waited >= idle - Duration::from_millis(50), "closed after {waited:?}, before the idle timeout");
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    daemon.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start(config()).await;
    let mut raw = tokio::net::TcpStream::connect(daemon.http.addr()).await.expect("connect");
    // Three pipelined requests on one connection; the last asks to close it.
    raw.write_all(
        b"POST /keys HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n\
          GET /keys HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("send");
    let mut answer = String::new();
    common::within("three answers and a close", raw.read_to_string(&mut answer)).await.expect("read");
    let statuses: Vec<&str> = answer.lines().filter(|line| line.starts_with("HTTP/1.1 ")).collect();
    assert_eq!(statuses, ["HTTP/1.1 201 Created", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"], "{answer}");
    daemon.stop().await;
}

#[tokio::test]
async fn the_daemon_serves_http_with_the_flag_and_refuses_an_open_address_without_auth() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keypool"))
        // TEST-NET-1: refused before any bind is tried; were the check missing, the bind would fail instead.
        .args(["--listen", "127.0.0.1:0", "--http", "192.0.2.1:7180"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run keypool");
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for keypool") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("keypool did not refuse --http 192.0.2.1:7180 in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(stderr.contains("refusing to listen on 192.0.2.1:7180 without authentication"), "{stderr}");

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_keypool")).arg("--help").output().expect("--help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--http") && help.contains("KEYPOOL_HTTP"), "{help}");
}

#[tokio::test]
async fn a_client_past_max_connections_is_told_503_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = config();
    config.max_connections = 1;
    let daemon = Daemon::start(config).await;
    let addr = daemon.http.addr();
    let mut held = tokio::net::TcpStream::connect(addr).await.expect("connect");
    held.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
    let mut first = [0u8; 12];
    common::within("the first reply", held.read_exact(&mut first)).await.expect("read");
    assert_eq!(&first, b"HTTP/1.1 200", "the one connection allowed is served");

    let mut refused = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut answer = Vec::new();
    common::within("the refusal", refused.read_to_end(&mut answer)).await.expect("read to the close");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("{\"error\":\"too many connections\"}\n"), "{answer}");
    drop(held);
    daemon.stop().await;
}
