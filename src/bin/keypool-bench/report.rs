//! The run's result: merged from every connection, printed as a table or as one JSON object.
//!
//! Every workload reports the same figures; `contend` adds a handoff section (lines in the table, fields
//! in the JSON) and nothing else changes, so reports of the other workloads read exactly as before.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use keypool::protocol::duration;

use crate::driver::{new_histogram, Tally};

/// Everything a run measured, with what was asked for.
pub struct Summary {
    pub target: &'static str,
    pub workload: &'static str,
    pub connections: usize,
    pub idle: usize,
    pub pipeline: usize,
    pub rate: Option<u64>,
    pub keys: usize,
    pub seconds: f64,
    pub latency: Histogram<u64>,
    pub ops: u64,
    pub not_found: u64,
    pub errors: u64,
    pub unexpected: u64,
    pub failed_connections: usize,
    pub first_unexpected: Option<String>,
    pub first_failure: Option<String>,
    /// `STALE` replies; reported with the handoffs, the only workload that can get them.
    pub stale: u64,
    /// The `contend` workload's figures; `None` for the others.
    pub handoff: Option<HandoffFigures>,
}

/// What `contend` measures besides operations: how fast freed keys reach the next waiter.
pub struct HandoffFigures {
    /// How long each LEASE waited at most (`--wait`).
    pub wait: Duration,
    /// How long each key was kept before its REL (`--hold`).
    pub hold: Duration,
    /// From a REL sent to its key's next LEASED received, in microseconds; one entry per handoff.
    pub latency: Histogram<u64>,
}

impl Summary {
    /// Merges the connections' tallies.
    pub fn merge(mut self, tallies: Vec<Tally>) -> Summary {
        let mut latency = new_histogram();
        for tally in tallies {
            let _ = latency.add(&tally.latency);
            self.ops += tally.ops;
            self.not_found += tally.not_found;
            self.errors += tally.errors;
            self.unexpected += tally.unexpected;
            self.stale += tally.stale;
            if let Some(failure) = tally.failure {
                self.failed_connections += 1;
                self.first_failure.get_or_insert(failure);
            }
        }
        self.latency = latency;
        self
    }

    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Handoffs a second over the measured time (0 for workloads without handoffs).
    pub fn handoffs_per_sec(&self) -> f64 {
        match &self.handoff {
            Some(handoff) if self.seconds > 0.0 => handoff.latency.len() as f64 / self.seconds,
            _ => 0.0,
        }
    }

    /// One JSON object; latencies in microseconds.
    pub fn to_json(&self) -> serde_json::Value {
        let mut report = json!({
            "target": self.target,
            "workload": self.workload,
            "connections": self.connections,
            "idle_connections": self.idle,
            "pipeline": self.pipeline,
            "rate": self.rate,
            "keys": self.keys,
            "duration_s": self.seconds,
            "ops": self.ops,
            "ops_per_sec": self.ops_per_sec().round(),
            "not_found": self.not_found,
            "errors": self.errors,
            "unexpected": self.unexpected,
            "failed_connections": self.failed_connections,
            "first_unexpected": self.first_unexpected,
            "first_failure": self.first_failure,
            "latency_us": latency_json(&self.latency),
        });
        if let Some(handoff) = &self.handoff {
            report["wait_ms"] = json!(handoff.wait.as_millis() as u64);
            report["hold_ms"] = json!(handoff.hold.as_millis() as u64);
            report["handoffs"] = json!(handoff.latency.len());
            report["handoffs_per_sec"] = json!(self.handoffs_per_sec().round());
            report["stale"] = json!(self.stale);
            report["handoff_latency_us"] = latency_json(&handoff.latency);
        }
        report
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let pace = match self.rate {
            Some(rate) => format!("open loop at {rate} ops/s"),
            None => format!("pipeline {}", self.pipeline),
        };
        let idle = match self.idle {
            0 => String::new(),
            n => format!(" + {n} idle"),
        };
        let mut text = format!(
            "target     {} ({} workload, {} connections{idle}, {pace}, {} keys)\n\
             duration   {:.1} s\n\
             ops        {} ({:.0} ops/s)\n\
             latency    {}\n",
            self.target,
            self.workload,
            self.connections,
            self.keys,
            self.seconds,
            self.ops,
            self.ops_per_sec(),
            percentiles(&self.latency),
        );
        if let Some(handoff) = &self.handoff {
            text.push_str(&format!(
                "handoffs   {} ({:.0}/s; --wait {}, --hold {})\n\
                 handoff    {}\n",
                handoff.latency.len(),
                self.handoffs_per_sec(),
                duration::format(handoff.wait),
                duration::format(handoff.hold),
                percentiles(&handoff.latency),
            ));
        }
        text.push_str(&format!("not found  {}\n", self.not_found));
        if self.handoff.is_some() {
            text.push_str(&format!("stale      {}\n", self.stale));
        }
        text.push_str(&format!("errors     {}\nunexpected {}\n", self.errors, self.unexpected));
        if let Some(example) = &self.first_unexpected {
            text.push_str(&format!("first odd reply: {example:?}\n"));
        }
        if self.failed_connections > 0 {
            text.push_str(&format!(
                "failed connections: {} (first: {})\n",
                self.failed_connections,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        text
    }
}

/// The value at percentile `p` (0 to 100), or 0 when nothing was recorded.
fn percentile(histogram: &Histogram<u64>, p: f64) -> u64 {
    if histogram.is_empty() {
        0
    } else {
        histogram.value_at_quantile(p / 100.0)
    }
}

/// The percentiles every latency is reported at, in microseconds, as JSON.
fn latency_json(histogram: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": percentile(histogram, 50.0),
        "p90": percentile(histogram, 90.0),
        "p99": percentile(histogram, 99.0),
        "p99_9": percentile(histogram, 99.9),
        "max": histogram.max(),
        "mean": (histogram.mean() * 10.0).round() / 10.0,
    })
}

/// The same percentiles for people: `p50 87us  p90 ...  max 3.38ms`.
fn percentiles(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        micros(percentile(histogram, 50.0)),
        micros(percentile(histogram, 90.0)),
        micros(percentile(histogram, 99.0)),
        micros(percentile(histogram, 99.9)),
        micros(histogram.max()),
    )
}

/// A latency for people: `87us`, `1.42ms`, `2.1s`.
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(workload: &'static str, handoff: Option<HandoffFigures>) -> Summary {
        let mut latency = new_histogram();
        latency.record(100).unwrap();
        Summary {
            target: "keypool",
            workload,
            connections: 50,
            idle: 0,
            pipeline: 1,
            rate: None,
            keys: 10,
            seconds: 2.0,
            latency,
            ops: 1,
            not_found: 0,
            errors: 0,
            unexpected: 0,
            failed_connections: 0,
            first_unexpected: None,
            first_failure: None,
            stale: 0,
            handoff,
        }
    }

    const HANDOFF_FIELDS: [&str; 6] =
        ["wait_ms", "hold_ms", "handoffs", "handoffs_per_sec", "stale", "handoff_latency_us"];

    #[test]
    fn only_contend_reports_handoffs() {
        let json = summary("lease", None).to_json();
        for field in HANDOFF_FIELDS {
            assert!(json.get(field).is_none(), "`{field}` in a lease report: {json}");
        }
        let table = summary("lease", None).to_table();
        assert!(!table.contains("handoff") && !table.contains("stale"), "{table}");
    }

    #[test]
    fn contend_reports_handoffs_per_second_and_their_percentiles() {
        let mut latency = new_histogram();
        for micros in [100, 200, 300, 400] {
            latency.record(micros).unwrap();
        }
        let handoff = HandoffFigures { wait: Duration::from_secs(5), hold: Duration::from_millis(2), latency };
        let report = summary("contend", Some(handoff));
        let json = report.to_json();
        for field in HANDOFF_FIELDS {
            assert!(json.get(field).is_some(), "no `{field}` in {json}");
        }
        assert_eq!((json["wait_ms"].as_u64(), json["hold_ms"].as_u64()), (Some(5000), Some(2)));
        assert_eq!(json["handoffs"], 4);
        assert_eq!(json["handoffs_per_sec"], 2.0, "4 handoffs in 2 s");
        assert_eq!(json["handoff_latency_us"]["p50"], 200);
        assert_eq!(json["handoff_latency_us"]["max"], 400);
        let table = report.to_table();
        assert!(table.contains("handoffs   4 (2/s; --wait 5s, --hold 2ms)\n"), "{table}");
        assert!(table.contains("handoff    p50 200us  p90 400us  p99 400us  p99.9 400us  max 400us\n"), "{table}");
        assert!(table.contains("stale      0\n"), "{table}");
    }

    #[test]
    fn latencies_read_in_the_right_unit() {
        assert_eq!(micros(87), "87us");
        assert_eq!(micros(1_420), "1.42ms");
        assert_eq!(micros(2_100_000), "2.10s");
    }
}
