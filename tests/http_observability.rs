//! What operators and tools see of the HTTP gateway: `/metrics` parsed by a Prometheus text parser, with
//! its counters moving as requests are served over both front ends (and checked by `promtool check
//! metrics` when Prometheus' tools are installed), and `/openapi.json` parsed and checked against the
//! routes the gateway really answers.

mod common;
mod http_support;

use std::collections::{BTreeMap, BTreeSet};

use common::{config, Client};
use http_support::{Daemon, Http};
use hyper::Method;
use prometheus_parse::{Sample, Scrape, Value};

async fn scrape(http: &Http) -> Scrape {
    let reply = http.get("/metrics").await;
    reply.expect(200);
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = String::from_utf8(reply.body.to_vec()).expect("UTF-8");
    let lines = text.lines().map(|line| Ok(line.to_string()));
    Scrape::parse(lines).expect("a Prometheus text scrape")
}

/// The value of the sample of `metric` whose labels include `labels`; 0 when there is none (a counter
/// that has not moved is not listed).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric)
        .filter(|sample| labels.iter().all(|(name, want)| sample.labels.get(name) == Some(*want)))
        .collect();
    assert!(matching.len() <= 1, "{metric} {labels:?} matches {} samples", matching.len());
    match matching.first().map(|sample| &sample.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(Value::Histogram(buckets)) => buckets.last().map_or(0.0, |bucket| bucket.count),
        Some(other) => panic!("{metric}: unexpected {other:?}"),
    }
}

#[tokio::test]
async fn metrics_parse_and_their_counters_and_gauges_move_with_both_front_ends() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    let before = scrape(&http).await;
    assert_eq!(value(&before, "keypool_commands_total", &[("command", "lease")]), 0.0);

    // Over HTTP: 3 keys, 2 leases, a miss in another pool; over TCP: a GEN, a GET and a bad REL.
    http.post_json("/pools/red/keys", serde_json::json!({ "count": 3 })).await.expect(201);
    http.lease("/pools/red").await;
    http.lease("/pools/red").await;
    http.get("/pools/blue/keys").await.expect(404);
    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    tcp.gen(1).await;
    tcp.get().await.expect("a key");
    assert_eq!(tcp.cmd("REL 000000000000000000000000").await, "NOT_FOUND");

    let after = scrape(&http).await;
    let lease_ok = [("command", "lease"), ("outcome", "ok")];
    assert_eq!(value(&after, "keypool_commands_total", &lease_ok), 2.0);
    assert_eq!(value(&after, "keypool_commands_total", &[("command", "lease"), ("outcome", "not_found")]), 1.0);
    assert_eq!(value(&after, "keypool_commands_total", &[("command", "gen"), ("outcome", "ok")]), 2.0);
    assert_eq!(value(&after, "keypool_commands_total", &[("command", "rel"), ("outcome", "not_found")]), 1.0);
    assert_eq!(value(&after, "keypool_keys", &[("pool", "red")]), 3.0);
    assert_eq!(value(&after, "keypool_keys_blocked", &[("pool", "red")]), 2.0);
    assert_eq!(value(&after, "keypool_keys_free", &[("pool", "red")]), 1.0);
    assert_eq!(value(&after, "keypool_keys_blocked", &[("pool", "default")]), 1.0);
    assert_eq!(value(&after, "keypool_keys_generated_total", &[]), 4.0);
    assert_eq!(value(&after, "keypool_lease_hits_total", &[]), 3.0);
    assert_eq!(value(&after, "keypool_connections", &[("frontend", "tcp")]), 1.0);
    assert!(value(&after, "keypool_connections_opened_total", &[("frontend", "http")]) >= 1.0);
    let tcp_opened = value(&after, "keypool_connections_opened_total", &[("frontend", "tcp")]);
    assert_eq!(tcp_opened, 1.0);

    // Latency histograms, by command and front end.
    let http_leases = [("command", "lease"), ("frontend", "http")];
    assert_eq!(value(&after, "keypool_request_duration_seconds", &http_leases), 3.0);
    assert_eq!(value(&after, "keypool_request_duration_seconds", &[("command", "get"), ("frontend", "tcp")]), 1.0);
    assert_eq!(value(&after, "keypool_request_duration_seconds", &[("command", "gen"), ("frontend", "tcp")]), 1.0);

    // Every metric has HELP, and no sample carries a key id.
    for sample in &after.samples {
        let base = sample.metric.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(
            after.docs.contains_key(&sample.metric) || after.docs.contains_key(base),
            "{} has no HELP",
            sample.metric
        );
        assert!(sample.labels.values().all(|v| v.len() != 24 || v.chars().any(|c| !c.is_ascii_alphanumeric())));
    }
    daemon.stop().await;
}

#[tokio::test]
async fn promtool_finds_nothing_to_complain_about_when_it_is_installed() {
    let Ok(probe) = std::process::Command::new("promtool").arg("--version").output() else {
        eprintln!("promtool is not installed (Debian: apt-get install prometheus); skipping");
        return;
    };
    assert!(probe.status.success());
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    // Every kind of sample: gauges per pool, counters by outcome, histograms on both front ends.
    http.post("/pools/p/keys").await.expect(201);
    http.lease("/pools/p").await;
    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    tcp.gen(1).await;
    tcp.get().await;
    let body = http.get("/metrics").await.body;

    use std::io::Write;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    promtool.stdin.take().expect("stdin").write_all(&body).expect("feed promtool");
    let output = promtool.wait_with_output().expect("promtool ends");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    daemon.stop().await;
}

/// Fills a documented path's parameters with values that make a request the gateway routes.
fn concrete(path: &str) -> String {
    path.replace("{pool}", "docs").replace("{id}", "000000000000000000000000")
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_the_gateway_answers() {
    let daemon = Daemon::start(config()).await;
    let http = daemon.client();
    let document = http.get("/openapi.json").await.expect(200).json();
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "OpenAPI 3");
    assert_eq!(document["info"]["version"], serde_json::json!(common::VERSION));
    let paths = document["paths"].as_object().expect("paths");
    let documented: BTreeMap<&str, BTreeSet<String>> = paths
        .iter()
        .map(|(path, item)| {
            let methods = item.as_object().expect("a path item").keys().map(|m| m.to_ascii_uppercase()).collect();
            (path.as_str(), methods)
        })
        .collect();
    for required in ["/keys", "/keys/{id}", "/keepalive/{id}", "/health", "/metrics", "/openapi.json", "/pools"] {
        assert!(documented.contains_key(required), "{required} is documented");
    }
    assert!(documented["/keys/{id}"].contains("HEAD"));

    for (path, methods) in &documented {
        let concrete = concrete(path);
        // Each documented method is routed: whatever it answers, it is not "no such route" or 405.
        for method in methods {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let reply = http.send(method.clone(), &concrete, None).await;
            assert_ne!(reply.status.as_u16(), 405, "{method} {path}");
            if reply.status.as_u16() == 404 && method != Method::HEAD {
                assert_ne!(reply.error(), "no such route", "{method} {path}");
            }
        }
        // And no other: a method it does not list is 405, whose Allow is exactly the documented ones.
        let reply = http.send(Method::PATCH, &concrete, None).await;
        reply.expect(405);
        let allowed: BTreeSet<String> =
            reply.header("allow").expect("Allow").split(',').map(|m| m.trim().to_string()).collect();
        assert_eq!(&allowed, methods, "{path}");
    }
    // A path the document does not list is not served.
    assert_eq!(http.get("/keys/000000000000000000000000/lease").await.expect(404).error(), "no such route");
    daemon.stop().await;
}
