//! `/metrics`: STATS and the telemetry in Prometheus' text format (0.0.4), encoded by
//! `prometheus-client`.
//!
//! Nothing is counted twice: a collector reads, at each scrape, the figures the engine keeps anyway (the
//! pools' STATS, under the lock for a moment, O(pools)) and the telemetry's atomics. So serving requests
//! pays nothing for metrics beyond the telemetry's increments, and a scrape always agrees with STATS.
//!
//! Names follow Prometheus' conventions: a `keypool_` prefix, `_total` on counters (the encoder adds it),
//! seconds for time. Labels carry pool names and command names only: never a key id or a secret.

use std::fmt;
use std::sync::Arc;

use hyper::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::pool::PoolStats;
use crate::protocol::Command;
use crate::server::telemetry::{Frontend, Outcome};
use crate::server::Shared;

/// The registry the gateway scrapes: one collector over the engine.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(EngineCollector { shared }));
    registry
}

/// `/metrics`' answer.
pub fn scrape(registry: &Registry) -> super::json::Answer {
    let mut text = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        Ok(()) => {
            super::json::with_body(StatusCode::OK, prometheus_client::encoding::prometheus_text::CONTENT_TYPE, text)
        }
        Err(fmt::Error) => super::json::error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics"),
    }
}

/// Reads the engine at each scrape.
struct EngineCollector {
    shared: Arc<Shared>,
}

impl fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineCollector")
    }
}

/// What one scrape reads under the lock.
struct Snapshot {
    /// Each pool's figures, by name.
    pools: Vec<(String, PoolStats)>,
    /// Running totals over every pool, dropped ones included.
    totals: PoolStats,
}

impl EngineCollector {
    fn snapshot(&self) -> Snapshot {
        let mut locked = self.shared.lock();
        let pools = &mut locked.pools;
        let mut names = Vec::with_capacity(pools.len());
        let mut cursor = 0;
        loop {
            cursor = pools.page(cursor, 1000, |name, _| names.push(name.to_string()));
            if cursor == 0 {
                break;
            }
        }
        let figures = names
            .into_iter()
            .filter_map(|name| {
                let pool = pools.find(&name)?;
                let stats = pools.get(pool)?.stats();
                Some((name, stats))
            })
            .collect();
        Snapshot { pools: figures, totals: pools.totals() }
    }
}

/// A gauge reported per pool: its name, its help, and how to read it from the pool's figures.
type PoolGauge = (&'static str, &'static str, fn(&PoolStats) -> usize);

/// Encodes one metric of one sample with no labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), fmt::Error> {
    let unit = None;
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Snapshot { pools, totals } = self.snapshot();
        let telemetry = &self.shared.telemetry;

        // Gauges, one sample per pool.
        let per_pool: [PoolGauge; 5] = [
            ("keypool_keys", "Keys in the pool.", |s| s.keys),
            ("keypool_keys_free", "Keys free to lease.", |s| s.keys_free),
            ("keypool_keys_blocked", "Keys leased and not yet released.", |s| s.keys_blocked),
            ("keypool_keys_delayed", "Keys released with a delay that has not passed yet.", |s| s.keys_delayed),
            ("keypool_waiters", "Requests waiting for a key.", |s| s.waiters),
        ];
        for (name, help, figure) in per_pool {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (pool, stats) in &pools {
                let labels = [("pool", pool.as_str())];
                ConstGauge::new(figure(stats) as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        single(&mut encoder, "keypool_pools", "Pools that exist.", &ConstGauge::new(pools.len() as i64))?;

        // Connections, by front end.
        let (tcp_open, tcp_opened, tcp_rejected) = self.shared.connection_counts();
        let (http_open, http_opened) = telemetry.http_connections();
        let mut open =
            encoder.encode_descriptor("keypool_connections", "Connections open.", None, MetricType::Gauge)?;
        for (frontend, count) in [(Frontend::Tcp, tcp_open), (Frontend::Http, http_open)] {
            ConstGauge::new(count as i64).encode(open.encode_family(&[("frontend", frontend.label())])?)?;
        }
        let mut opened = encoder.encode_descriptor(
            "keypool_connections_opened",
            "Connections accepted since start.",
            None,
            MetricType::Counter,
        )?;
        for (frontend, count) in [(Frontend::Tcp, tcp_opened), (Frontend::Http, http_opened)] {
            ConstCounter::new(count).encode(opened.encode_family(&[("frontend", frontend.label())])?)?;
        }
        single(
            &mut encoder,
            "keypool_connections_rejected",
            "TCP connections turned away by --max-connections.",
            &ConstCounter::new(tcp_rejected),
        )?;

        // The running totals STATS reports, over every pool.
        let running: [(&str, &str, u64); 9] = [
            ("keypool_keys_generated", "Keys created by GEN.", totals.keys_generated),
            ("keypool_keys_added", "Keys created by ADD.", totals.keys_added),
            ("keypool_lease_hits", "GETs and LEASEs that handed out a key.", totals.get_hits),
            ("keypool_lease_misses", "GETs and LEASEs answered NOT_FOUND.", totals.get_misses),
            ("keypool_waits_served", "Waiting requests that got a key.", totals.waits_served),
            ("keypool_waits_timed_out", "Waiting requests whose wait ran out.", totals.waits_timed_out),
            (
                "keypool_keys_released_by_timeout",
                "Blocks that ended because the block window passed.",
                totals.released_by_timeout,
            ),
            (
                "keypool_keys_released_by_close",
                "Leases released because their AUTOREL connection closed.",
                totals.released_by_close,
            ),
            (
                "keypool_keys_expired_keepalive",
                "Keys deleted because their keep-alive window passed.",
                totals.expired_keepalive,
            ),
        ];
        for (name, help, value) in running {
            single(&mut encoder, name, help, &ConstCounter::new(value))?;
        }

        // Requests by command and outcome, both front ends together.
        let mut commands = encoder.encode_descriptor(
            "keypool_commands",
            "Requests served, by command and outcome (TCP and HTTP together).",
            None,
            MetricType::Counter,
        )?;
        for command in Command::ALL {
            for outcome in Outcome::ALL {
                let count = telemetry.outcomes_of(command, outcome);
                if count > 0 {
                    let labels = [("command", command_label(command)), ("outcome", outcome.label())];
                    ConstCounter::new(count).encode(commands.encode_family(&labels)?)?;
                }
            }
        }

        // Latency, by command and front end.
        let mut latency = encoder.encode_descriptor(
            "keypool_request_duration",
            "Time from taking up a request to its reply being written (TCP: per pipelined batch), by command \
             and front end.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for frontend in Frontend::ALL {
            for command in Command::ALL {
                let histogram = telemetry.latency_of(frontend, command);
                if histogram.count > 0 {
                    let labels = [("command", command_label(command)), ("frontend", frontend.label())];
                    latency.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                        histogram.sum_seconds,
                        histogram.count,
                        &histogram.buckets,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The `command` label: the command's name in lower case, as STATS' `cmd_<name>`.
fn command_label(command: Command) -> &'static str {
    command.stat_name().trim_start_matches("cmd_")
}
