//! keypool-bench, run as a user would: the one-command demo (`--embedded`), briefly, with `--json`.
//! Checks that the report has every field, that operations happened, and that none failed.

use std::process::Command;

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
