//! keypool-bench: the load generator bundled with keypool.
//!
//! It answers one question: how many leases a second, at what latency, on this machine, and how does that
//! compare with what I run today. It drives a keypool daemon (or one it starts in-process with
//! `--embedded`), or a memcached or redis server as a baseline, over N connections with P requests in
//! flight each (closed loop) or at a fixed rate (open loop), and reports throughput and latency
//! percentiles as a table or as JSON.
//!
//! The modules: `target` spells requests and parses replies per server; `workload` picks the next
//! request; `seed` fills the server first; `driver` runs one connection; `report` merges and prints.

mod driver;
mod report;
mod seed;
mod target;
mod workload;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keypool::protocol::duration;
use keypool::server::{Config, Handle};
use tokio::time::Instant;

use driver::{Live, Pace, Schedule};
use report::{micros, Summary};
use target::Target;
use workload::{OpSource, Workload};

/// Load generator for keypool (and, as baselines, memcached and redis).
///
/// One-command demo: `cargo run --release --bin keypool-bench -- --embedded`.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Server to drive (host:port).
    #[arg(long, default_value = "127.0.0.1:7171", conflicts_with = "embedded")]
    server: String,

    /// Start a keypool daemon inside this process, on a free loopback port, and drive that.
    #[arg(long)]
    embedded: bool,

    /// What kind of server --server is: keypool, or memcached / redis as baselines.
    #[arg(long, value_enum, default_value = "keypool")]
    target: Target,

    /// Connections, all running at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    connections: u64,

    /// Requests each connection keeps in flight (closed loop).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pipeline: u64,

    /// How long to measure (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    duration: Duration,

    /// How long to run before measuring.
    #[arg(long, default_value = "1s", value_parser = any_duration)]
    warmup: Duration,

    /// Keys to create before the run (GEN 10000 batches), unless --no-seed.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,

    /// Do not create keys first: drive the pool as it is (lease and gen only).
    #[arg(long)]
    no_seed: bool,

    /// What each connection does.
    #[arg(long, value_enum, default_value = "lease")]
    workload: Workload,

    /// Open loop: send this many requests a second in total (at most 10,000,000), timing each from when
    /// it was meant to go.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rate: Option<u64>,

    /// Also hold this many idle connections open for the whole run (they connect before the busy ones).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    idle: u64,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,

    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration::parse(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        other => other.map_err(|e| e.to_string()),
    }
}

fn any_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| e.to_string())
}

fn main() -> Result<()> {
    let flags = Flags::parse();
    if flags.no_seed && flags.workload.needs_ids(flags.target) {
        bail!("the {} workload names seeded keys: drop --no-seed", flags.workload.name());
    }
    if flags.embedded && flags.target != Target::Keypool {
        bail!("--embedded starts keypool; it cannot stand in for {}", flags.target.name());
    }
    // A generator pinned to one core (taskset) runs on tokio's current-thread runtime, the lightest.
    let runtime = match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .context("cannot start tokio")?;
    runtime.block_on(run(flags))
}

async fn run(flags: Flags) -> Result<()> {
    let embedded = match flags.embedded {
        true => Some(Handle::start(SocketAddr::from(([127, 0, 0, 1], 0)), Config::default()).await?),
        false => None,
    };
    let addr = match &embedded {
        Some(handle) => handle.addr().to_string(),
        None => flags.server.clone(),
    };
    let keys = if flags.no_seed { 0 } else { flags.keys as usize };
    let ids = Arc::new(seed::seed(flags.target, &addr, keys, flags.workload.needs_ids(flags.target)).await?);

    let mut idle = Vec::with_capacity(flags.idle as usize);
    for _ in 0..flags.idle {
        idle.push(tokio::net::TcpStream::connect(&addr).await.context("cannot open an idle connection")?);
    }

    let connections = flags.connections as usize;
    let pace = match flags.rate {
        Some(rate) => Pace::Open { interval: Duration::from_secs_f64(connections as f64 / rate as f64) },
        None => Pace::Closed { pipeline: flags.pipeline as usize },
    };
    let start = Instant::now();
    let schedule = Schedule { start, measure_from: start + flags.warmup, end: start + flags.warmup + flags.duration };
    let live = Arc::new(Live::default());
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let source = OpSource::new(flags.workload, flags.target, Arc::clone(&ids));
            tokio::spawn(driver::run(flags.target, addr.clone(), source, pace, schedule, Arc::clone(&live)))
        })
        .collect();
    let progress = (!flags.quiet && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(show_progress(Arc::clone(&live), schedule)));

    let mut tallies = Vec::with_capacity(connections);
    for task in tasks {
        tallies.push(task.await.context("a connection task panicked")?);
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let first_unexpected = live.first_unexpected.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let summary = Summary {
        target: flags.target.name(),
        workload: flags.workload.name(),
        connections,
        idle: flags.idle as usize,
        pipeline: flags.pipeline as usize,
        rate: flags.rate,
        keys: ids.len(),
        seconds: flags.duration.as_secs_f64(),
        latency: driver::new_histogram(),
        ops: 0,
        not_found: 0,
        errors: 0,
        unexpected: 0,
        failed_connections: 0,
        first_unexpected,
        first_failure: None,
    }
    .merge(tallies);

    if flags.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_table());
    }
    drop(idle);
    if let Some(handle) = embedded {
        handle.stop().await;
    }
    Ok(())
}

/// Once a second: ops/s and p99 over the last second, on one rewritten stderr line.
async fn show_progress(live: Arc<Live>, schedule: Schedule) {
    let mut ticks = tokio::time::interval_at(schedule.start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_ops = 0;
    loop {
        let now = ticks.tick().await;
        let ops = live.ops.load(Ordering::Relaxed);
        let p99 = live
            .interval
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map_or(0, |histogram| histogram.value_at_quantile(0.99));
        let phase = if now < schedule.measure_from { "warm-up" } else { "measuring" };
        eprint!(
            "\r[{:>4.0}s {phase}] {:>10} ops/s  p99 {:<10}",
            now.duration_since(schedule.start).as_secs_f64(),
            ops - last_ops,
            micros(p99)
        );
        last_ops = ops;
    }
}
