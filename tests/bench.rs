//! keypool-bench, run as a user would: the one-command demo (`--embedded`), briefly, with `--json`.
//! Checks that the report has every field, that operations happened, and that none failed; and that
//! the `contend` workload refuses what would make its figures meaningless (its runs themselves need a
//! daemon that answers `LEASE <wait>`, and are tested in the bench against a stand-in).

use std::process::Command;

use keypool::server::{Config, Handle};
use serde_json::Value;

/// Runs keypool-bench against an embedded daemon with `extra` flags and returns its JSON report.
fn run_bench(extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_keypool-bench"))
        .args(["--embedded", "--duration", "1s", "--warmup", "200ms", "--keys", "2000", "--connections", "8"])
        .args(["--json", "--quiet"])
        .args(extra)
        .output()
        .expect("keypool-bench runs");
    assert!(output.status.success(), "keypool-bench failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not one JSON object ({error}): {}", String::from_utf8_lossy(&output.stdout)))
}

fn number(report: &Value, field: &str) -> f64 {
    report[field].as_f64().unwrap_or_else(|| panic!("`{field}` is not a number in {report}"))
}

/// The checks every clean run must pass.
fn assert_clean_run(report: &Value, workload: &str) {
    assert_eq!(report["target"], "keypool");
    assert_eq!(report["workload"], workload);
    assert_eq!(number(report, "connections"), 8.0);
    assert_eq!(number(report, "keys"), 2000.0, "the pool was seeded with --keys");
    assert!(number(report, "ops") > 0.0, "no operations in {report}");
    assert!(number(report, "ops_per_sec") > 0.0);
    assert_eq!(number(report, "duration_s"), 1.0);
    for field in ["errors", "unexpected", "failed_connections"] {
        assert_eq!(number(report, field), 0.0, "`{field}` in {report}");
    }
    let latency = &report["latency_us"];
    let p = |name: &str| latency[name].as_f64().unwrap_or_else(|| panic!("latency_us.{name} in {report}"));
    assert!(p("p50") > 0.0);
    assert!(p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("p99_9") && p("p99_9") <= p("max"));
}

#[test]
fn the_embedded_lease_demo_reports_operations_and_no_errors() {
    let report = run_bench(&["--workload", "lease", "--pipeline", "4"]);
    assert_clean_run(&report, "lease");
    assert_eq!(number(&report, "pipeline"), 4.0);
    assert!(report["rate"].is_null(), "closed loop by default");
    assert_eq!(number(&report, "not_found"), 0.0, "2000 keys are plenty for 32 leases in flight");
}

#[test]
fn the_mixed_workload_drives_ping_and_info_cleanly() {
    let report = run_bench(&["--workload", "mixed"]);
    assert_clean_run(&report, "mixed");
}

#[test]
fn the_open_loop_sends_at_the_asked_rate() {
    let report = run_bench(&["--workload", "ping", "--rate", "2000"]);
    assert_clean_run(&report, "ping");
    assert_eq!(number(&report, "rate"), 2000.0);
    let ops = number(&report, "ops");
    assert!((1500.0..=2100.0).contains(&ops), "about 2000 ops in 1 s at 2000/s, got {ops}");
}

#[test]
fn a_rate_of_zero_or_past_ten_million_is_refused() {
    for rate in ["0", "10000001"] {
        let output = Command::new(env!("CARGO_BIN_EXE_keypool-bench"))
            .args(["--embedded", "--duration", "1s", "--rate", rate])
            .output()
            .expect("keypool-bench runs");
        assert!(!output.status.success(), "--rate {rate} was accepted");
        assert!(String::from_utf8_lossy(&output.stderr).contains("--rate"), "the error names the flag");
    }
}

#[test]
fn a_bad_flag_is_refused_with_a_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_keypool-bench"))
        .args(["--embedded", "--duration", "10"])
        .output()
        .expect("keypool-bench runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unit"), "the error should say a duration needs a unit: {stderr}");
}

#[test]
fn a_workload_that_names_seeded_keys_refuses_no_seed() {
    let output = Command::new(env!("CARGO_BIN_EXE_keypool-bench"))
        .args(["--embedded", "--no-seed", "--workload", "ping", "--duration", "1s"])
        .output()
        .expect("keypool-bench runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-seed"));
}

/// Runs keypool-bench with `args` and returns its stderr, failing if it succeeded.
fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_keypool-bench")).args(args).output().expect("keypool-bench runs");
    assert!(!output.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn contend_refuses_flags_that_leave_nothing_to_contend_for() {
    // Nothing listens on port 1: these are refused before any connection is tried.
    let stderr = refused(&["--server", "127.0.0.1:1", "--workload", "contend"]);
    assert!(stderr.contains("--keys 100000 is not below --connections 50"), "{stderr}");
    let stderr = refused(&["--server", "127.0.0.1:1", "--workload", "contend", "--target", "redis"]);
    assert!(stderr.contains("needs keypool's LEASE"), "{stderr}");
    let args = ["--server", "127.0.0.1:1", "--workload", "contend", "--connections", "20", "--keys", "2"];
    let stderr = refused(&[&args[..], &["--pipeline", "8"]].concat());
    assert!(stderr.contains("one request in flight"), "{stderr}");
}

#[test]
fn contend_refuses_a_hold_or_a_run_the_daemon_windows_would_cut_short() {
    let contend = ["--embedded", "--workload", "contend", "--connections", "4", "--keys", "2"];
    // The embedded daemon's block timeout is 60s and its keep-alive window 5m.
    let stderr = refused(&[&contend[..], &["--hold", "1m"]].concat());
    assert!(stderr.contains("--block-timeout"), "{stderr}");
    let stderr = refused(&[&contend[..], &["--duration", "5m"]].concat());
    assert!(stderr.contains("--keepalive-timeout"), "{stderr}");
}

#[test]
fn contend_refuses_a_pool_that_already_holds_keys() {
    // A daemon on this test's own runtime, which serves it from its worker threads meanwhile.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let daemon =
        runtime.block_on(Handle::start(([127, 0, 0, 1], 0).into(), Config::default())).expect("a daemon on loopback");
    let addr = daemon.addr().to_string();
    // A first run leaves its seeded keys in the pool.
    let lease = ["--server", &addr, "--keys", "5", "--connections", "2", "--duration", "100ms", "--warmup", "0ms"];
    let output = Command::new(env!("CARGO_BIN_EXE_keypool-bench")).args(lease).arg("--quiet").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = refused(&["--server", &addr, "--workload", "contend", "--connections", "4", "--keys", "2"]);
    assert!(stderr.contains("already holds 5 keys") && stderr.contains("fresh daemon"), "{stderr}");
    runtime.block_on(daemon.stop());
}
