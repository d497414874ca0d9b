//! keypool-bench: the load generator bundled with keypool.
//!
//! It answers one question: how many leases a second, at what latency, on this machine, and how does that
//! compare with what I run today. It drives a keypool daemon (or one it starts in-process with
//! `--embedded`), or a memcached or redis server as a baseline, over N connections with P requests in
//! flight each (closed loop) or at a fixed rate (open loop), and reports throughput and latency
//! percentiles as a table or as JSON. Its `contend` workload asks a second question of keypool alone:
//! when more workers want keys than there are, how soon does a freed key reach the next one?
//!
//! The modules: `target` spells requests and parses replies per server; `workload` picks the next
//! request; `preflight` checks the daemon before a `contend` run; `seed` fills the server first;
//! `driver` runs one connection; `contend` runs one `contend` connection on keypool's own client;
//! `handoff` times keys from release to next lease across connections; `report` merges and prints.

mod contend;
mod driver;
#[cfg(test)]
mod fake_keypool;
mod handoff;
mod http;
mod preflight;
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
use preflight::ContendPlan;
use report::{micros, HandoffFigures, Summary};
use target::Target;
use workload::{OpSource, Workload, DEFAULT_WAIT};

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

    /// Requests each connection keeps in flight (closed loop). The contend workload allows only 1: a
    /// LEASE that waits holds back every later reply on its connection.
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

    /// contend only: how long each LEASE waits for a key when none is free (sent as `LEASE <ms>ms`;
    /// 0ms never waits) [default: 5s].
    #[arg(long, value_parser = any_duration)]
    wait: Option<Duration>,

    /// contend only: how long a connection keeps each key before its REL, standing for the work done
    /// with it (tokio's timer rounds it up to whole milliseconds) [default: 0ms].
    #[arg(long, value_parser = any_duration)]
    hold: Option<Duration>,

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

    /// Lease over keypool's HTTP gateway instead (GET /keys, then PUT /keys/{id}?token=), one request in
    /// flight per keep-alive connection; the keys are still seeded over --server. With --embedded, the
    /// embedded daemon serves HTTP too.
    #[arg(long)]
    http: bool,

    /// The HTTP gateway's address (host:port), for --http.
    #[arg(long, default_value = "127.0.0.1:7180", requires = "http", conflicts_with = "embedded")]
    http_server: String,
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

impl Flags {
    /// Refuses combinations of flags that cannot make a meaningful run, saying what to change.
    fn check(&self) -> Result<()> {
        if self.workload == Workload::Contend {
            self.check_contend()?;
        } else if self.wait.is_some() || self.hold.is_some() {
            let flag = if self.wait.is_some() { "--wait" } else { "--hold" };
            bail!("{flag} applies only to --workload contend");
        }
        if self.no_seed && self.workload.needs_ids(self.target) {
            bail!("the {} workload names seeded keys: drop --no-seed", self.workload.name());
        }
        if self.http && (self.target != Target::Keypool || self.workload != Workload::Lease) {
            bail!("--http drives keypool's HTTP gateway with the lease workload only");
        }
        if self.http && (self.pipeline > 1 || self.rate.is_some()) {
            bail!("--http keeps one request in flight per connection, closed loop: drop --pipeline and --rate");
        }
        if self.embedded && self.target != Target::Keypool {
            bail!("--embedded starts keypool; it cannot stand in for {}", self.target.name());
        }
        Ok(())
    }

    fn check_contend(&self) -> Result<()> {
        if self.target != Target::Keypool {
            bail!(
                "the contend workload needs keypool's LEASE <wait> and REL <id> <token>; {} has no way to make \
                 a request wait for a key: drop --target {}",
                self.target.name(),
                self.target.name()
            );
        }
        if self.no_seed {
            bail!("the contend workload needs exactly --keys keys in a fresh pool: drop --no-seed");
        }
        if self.keys == 0 {
            bail!("the contend workload needs at least one key to contend for: set --keys (e.g. --keys 10)");
        }
        if self.keys >= self.connections {
            bail!(
                "the contend workload needs fewer keys than connections, or no connection ever waits: \
                 --keys {} is not below --connections {} (try --connections 1000 --keys 10)",
                self.keys,
                self.connections
            );
        }
        if self.pipeline > 1 {
            bail!(
                "the contend workload keeps one request in flight per connection (a LEASE that waits holds \
                 back every later reply on its connection): drop --pipeline {}",
                self.pipeline
            );
        }
        if self.rate.is_some() {
            bail!(
                "the contend workload is closed loop (each connection releases the key it waited for \
                 before leasing again): drop --rate"
            );
        }
        Ok(())
    }

    /// The contend workload's plan; `None` for the others.
    fn contend_plan(&self) -> Option<ContendPlan> {
        (self.workload == Workload::Contend)
            .then(|| ContendPlan { hold: self.hold(), run: self.warmup + self.duration })
    }

    fn wait(&self) -> Duration {
        self.wait.unwrap_or(DEFAULT_WAIT)
    }

    fn hold(&self) -> Duration {
        self.hold.unwrap_or(Duration::ZERO)
    }
}

fn main() -> Result<()> {
    let flags = Flags::parse();
    flags.check()?;
    // A generator pinned to one core (taskset) runs on tokio's current-thread runtime, the lightest.
    let runtime = match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .context("cannot start tokio")?;
    runtime.block_on(run(flags))
}

async fn run(flags: Flags) -> Result<()> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let shared = Arc::new(keypool::server::Shared::new(Config::default())?);
    let embedded = match flags.embedded {
        true => Some(Handle::start_shared(loopback, Arc::clone(&shared)).await?),
        false => None,
    };
    let embedded_http = match flags.embedded && flags.http {
        true => Some(keypool::http::Handle::start(loopback, shared).await?),
        false => None,
    };
    let addr = match &embedded {
        Some(handle) => handle.addr().to_string(),
        None => flags.server.clone(),
    };
    let http_addr = embedded_http.as_ref().map_or_else(|| flags.http_server.clone(), |http| http.addr().to_string());
    let summary = measure_at(&flags, &addr, &http_addr).await;
    if let Some(http) = embedded_http {
        http.stop().await;
    }
    if let Some(handle) = embedded {
        handle.stop().await;
    }
    let summary = summary?;
    if flags.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_table());
    }
    Ok(())
}

/// Checks and seeds the server at `addr`, drives it as `flags` say, and sums up what it measured.
#[cfg(test)]
async fn measure(flags: &Flags, addr: &str) -> Result<Summary> {
    measure_at(flags, addr, &flags.http_server).await
}

/// [`measure`], with the HTTP gateway at `http_addr` for `--http`.
async fn measure_at(flags: &Flags, addr: &str, http_addr: &str) -> Result<Summary> {
    let addr = addr.to_string();
    if let Some(plan) = flags.contend_plan() {
        preflight::check_contend(&addr, plan).await?;
    }
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
            let live = Arc::clone(&live);
            if flags.http {
                return tokio::spawn(http::run(http_addr.to_string(), schedule, live));
            }
            if flags.workload == Workload::Contend {
                return tokio::spawn(contend::run(addr.clone(), flags.wait(), flags.hold(), schedule, live));
            }
            let source = OpSource::new(flags.workload, flags.target, Arc::clone(&ids));
            tokio::spawn(driver::run(flags.target, addr.clone(), source, pace, schedule, live))
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
        target: if flags.http { "keypool-http" } else { flags.target.name() },
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
        stale: 0,
        handoff: flags.contend_plan().map(|plan| HandoffFigures {
            wait: flags.wait(),
            hold: plan.hold,
            latency: live.handoffs.latency(),
        }),
    }
    .merge(tallies);
    drop(idle);
    Ok(summary)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("keypool-bench").chain(args.iter().copied())).expect("flags parse")
    }

    /// The error `check` gives for `args`.
    fn refusal(args: &[&str]) -> String {
        match flags(args).check() {
            Ok(()) => panic!("{args:?} was accepted"),
            Err(error) => {
                let error = error.to_string();
                assert!(!error.contains("  "), "a message continued over lines keeps single spaces: {error}");
                error
            }
        }
    }

    const CONTEND: [&str; 6] = ["--workload", "contend", "--connections", "1000", "--keys", "10"];

    fn contend_with(extra: &[&'static str]) -> Vec<&'static str> {
        [&CONTEND[..], extra].concat()
    }

    #[test]
    fn contend_at_the_target_figures_is_accepted_with_its_defaults() {
        let flags = flags(&CONTEND);
        flags.check().unwrap();
        assert_eq!(flags.wait(), Duration::from_secs(5));
        assert_eq!(flags.hold(), Duration::ZERO);
        let plan = flags.contend_plan().expect("contend has a plan");
        assert_eq!(plan.run, Duration::from_secs(11), "warm-up and duration");
        flags_with_wait_and_hold().check().unwrap();
    }

    fn flags_with_wait_and_hold() -> Flags {
        let flags = flags(&contend_with(&["--wait", "250ms", "--hold", "2ms", "--pipeline", "1"]));
        assert_eq!((flags.wait(), flags.hold()), (Duration::from_millis(250), Duration::from_millis(2)));
        flags
    }

    #[test]
    fn contend_needs_fewer_keys_than_connections() {
        let error = refusal(&["--workload", "contend"]);
        assert!(error.contains("--keys 100000 is not below --connections 50"), "{error}");
        let error = refusal(&["--workload", "contend", "--connections", "10", "--keys", "10"]);
        assert!(error.contains("fewer keys than connections"), "{error}");
        let error = refusal(&["--workload", "contend", "--keys", "0"]);
        assert!(error.contains("at least one key"), "{error}");
    }

    #[test]
    fn contend_is_for_keypool_only() {
        for target in ["redis", "memcached"] {
            let error = refusal(&contend_with(&["--target", target]));
            assert!(error.contains("needs keypool's LEASE") && error.contains(target), "{error}");
        }
    }

    #[test]
    fn contend_refuses_a_pipeline_an_open_loop_and_no_seed() {
        let error = refusal(&contend_with(&["--pipeline", "2"]));
        assert!(error.contains("one request in flight") && error.contains("--pipeline 2"), "{error}");
        let error = refusal(&contend_with(&["--rate", "1000"]));
        assert!(error.contains("--rate"), "{error}");
        let error = refusal(&contend_with(&["--no-seed"]));
        assert!(error.contains("--no-seed"), "{error}");
    }

    #[test]
    fn wait_and_hold_belong_to_contend_only() {
        assert!(refusal(&["--wait", "1s"]).contains("--wait applies only to --workload contend"));
        assert!(refusal(&["--workload", "ping", "--hold", "1ms"]).contains("--hold applies only"));
    }

    #[test]
    fn a_wait_without_a_unit_is_refused_by_the_parser() {
        let args = ["keypool-bench", "--workload", "contend", "--wait", "5"];
        let error = Flags::try_parse_from(args).unwrap_err().to_string();
        assert!(error.contains("unit"), "{error}");
    }

    #[test]
    fn the_other_workloads_pass_as_before() {
        for workload in ["lease", "ping", "info", "gen", "mixed"] {
            flags(&["--workload", workload, "--pipeline", "32"]).check().unwrap();
            assert!(flags(&["--workload", workload]).contend_plan().is_none());
        }
    }

    /// A short contend run against the stand-in keypool.
    async fn contend_against_the_fake(extra: &[&str]) -> Summary {
        let addr = fake_keypool::start().await.to_string();
        let mut args = vec!["--workload", "contend", "--connections", "16", "--keys", "4", "--duration", "500ms"];
        args.extend_from_slice(&["--warmup", "100ms", "--quiet"]);
        args.extend_from_slice(extra);
        let flags = flags(&args);
        flags.check().unwrap();
        measure(&flags, &addr).await.expect("the run completes")
    }

    fn assert_clean(summary: &Summary) {
        assert_eq!(summary.workload, "contend");
        assert_eq!(summary.keys, 4);
        assert!(summary.ops > 0);
        assert_eq!(
            (summary.errors, summary.unexpected, summary.stale, summary.failed_connections),
            (0, 0, 0, 0),
            "first odd reply {:?}, first failure {:?}",
            summary.first_unexpected,
            summary.first_failure
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn contend_hands_keys_over_and_times_each_handoff() {
        let summary = contend_against_the_fake(&[]).await;
        assert_clean(&summary);
        let handoff = summary.handoff.as_ref().expect("contend reports handoffs");
        let handoffs = handoff.latency.len();
        assert!(handoffs > 0, "no handoffs in {} ops", summary.ops);
        // Each handoff is one REL and one LEASE, both counted as operations (give or take the
        // cycles cut by the window's edges).
        assert!(handoffs <= summary.ops / 2 + 16, "{handoffs} handoffs from {} ops", summary.ops);
        assert!(handoff.latency.max() < 1_000_000, "a handoff took {}us", handoff.latency.max());

        let json = summary.to_json();
        assert_eq!(json["handoffs"], handoffs);
        assert_eq!(json["wait_ms"], 5000);
        assert_eq!(json["hold_ms"], 0);
        assert_eq!(json["stale"], 0);
        let p = |name: &str| json["handoff_latency_us"][name].as_u64().unwrap();
        assert!(p("p50") > 0 && p("p50") <= p("p90") && p("p90") <= p("p99"));
        assert!(p("p99") <= p("p99_9") && p("p99_9") <= p("max"));
        let table = summary.to_table();
        assert!(table.contains("handoffs   ") && table.contains("handoff    p50 "), "{table}");
        assert!(table.contains("stale      0"), "{table}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_hold_paces_the_handoffs_and_stays_out_of_their_latency() {
        let summary = contend_against_the_fake(&["--hold", "20ms"]).await;
        assert_clean(&summary);
        let handoff = summary.handoff.as_ref().expect("contend reports handoffs");
        let handoffs = handoff.latency.len();
        // 4 keys each held at least 20ms: at most 4 * 500ms / 20ms = 100 handoffs in the measured 500ms.
        assert!((1..=104).contains(&handoffs), "{handoffs} handoffs with 4 keys held 20ms each");
        assert!(
            handoff.latency.value_at_quantile(0.5) < 20_000,
            "the hold is work with the key, not time it spends free: p50 {}us",
            handoff.latency.value_at_quantile(0.5)
        );
        assert_eq!(summary.to_json()["hold_ms"], 20);
    }
}
