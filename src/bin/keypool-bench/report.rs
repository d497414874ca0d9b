//! The run's result: merged from every connection, printed as a table or as one JSON object.

use hdrhistogram::Histogram;
use serde_json::json;

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

    /// One JSON object; latencies in microseconds.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
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
        })
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
             latency    {}\n\
             not found  {}\n\
             errors     {}\n\
             unexpected {}\n",
            self.target,
            self.workload,
            self.connections,
            self.keys,
            self.seconds,
            self.ops,
            self.ops_per_sec(),
            percentiles(&self.latency),
            self.not_found,
            self.errors,
            self.unexpected,
        );
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

    #[test]
    fn latencies_read_in_the_right_unit() {
        assert_eq!(micros(87), "87us");
        assert_eq!(micros(1_420), "1.42ms");
        assert_eq!(micros(2_100_000), "2.10s");
    }
}
