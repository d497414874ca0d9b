//! Checks of the daemon itself before a `contend` run, read from its `STATS`.
//!
//! `contend` measures K keys shared by C connections, so its figures mean something only if the pool
//! holds exactly the K keys the bench seeds, for the whole run, and each connection's REL arrives while
//! its lease is still current. Flags cannot tell; the daemon can:
//!
//! - `keys` must be 0 before seeding: keys left by an earlier run (a second `contend` against the same
//!   daemon adds K more) would quietly turn K=10 into K=20;
//! - `block_timeout_ms` must exceed `--hold`, or every lease times out before its REL (`STALE`);
//! - `keepalive_timeout_ms` must outlast the warm-up plus the measured time, or the seeded keys expire
//!   mid-run (the bench does not PING them) and every waiter starves.
//!
//! A figure the daemon does not report is not checked.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use keypool::client::{Client, Stats};
use keypool::protocol::duration;

/// The daemon figures a `contend` run depends on, as `STATS` reports them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DaemonFigures {
    pub keys: Option<u64>,
    pub block_timeout: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
}

/// What the run asks of the daemon.
#[derive(Clone, Copy, Debug)]
pub struct ContendPlan {
    pub hold: Duration,
    /// Warm-up plus measured time.
    pub run: Duration,
}

/// Asks the keypool daemon at `addr` for its STATS and refuses a run they would make meaningless.
pub async fn check_contend(addr: &str, plan: ContendPlan) -> Result<()> {
    let figures = daemon_figures(addr).await?;
    check(&figures, plan)
}

/// The checks themselves, apart from the socket.
pub fn check(figures: &DaemonFigures, plan: ContendPlan) -> Result<()> {
    if let Some(keys) = figures.keys.filter(|&keys| keys > 0) {
        bail!(
            "the daemon's pool already holds {keys} keys, and contend needs exactly --keys keys in it: \
             start a fresh daemon (or use --embedded)"
        );
    }
    if let Some(block) = figures.block_timeout.filter(|&block| block <= plan.hold) {
        bail!(
            "--hold {} is not shorter than the daemon's block timeout ({}): every lease would time out \
             before its REL; shorten --hold or start keypool with a longer --block-timeout",
            duration::format(plan.hold),
            duration::format(block)
        );
    }
    if let Some(keepalive) = figures.keepalive_timeout.filter(|&keepalive| keepalive <= plan.run) {
        bail!(
            "the daemon's keep-alive window ({}) ends before the run does (warm-up + duration = {}): the \
             seeded keys would expire mid-run; shorten --duration or start keypool with a longer \
             --keepalive-timeout",
            duration::format(keepalive),
            duration::format(plan.run)
        );
    }
    Ok(())
}

async fn daemon_figures(addr: &str) -> Result<DaemonFigures> {
    let client = Client::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    let stats = client.stats().await.context("STATS failed; is --server a keypool daemon?")?;
    Ok(figures_from(&stats))
}

/// The figures a `contend` run depends on, from a `STATS` reply.
fn figures_from(stats: &Stats) -> DaemonFigures {
    DaemonFigures {
        keys: stats.number("keys"),
        block_timeout: stats.number("block_timeout_ms").map(Duration::from_millis),
        keepalive_timeout: stats.number("keepalive_timeout_ms").map(Duration::from_millis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(hold_ms: u64, run_s: u64) -> ContendPlan {
        ContendPlan { hold: Duration::from_millis(hold_ms), run: Duration::from_secs(run_s) }
    }

    fn fresh() -> DaemonFigures {
        DaemonFigures {
            keys: Some(0),
            block_timeout: Some(Duration::from_secs(60)),
            keepalive_timeout: Some(Duration::from_secs(300)),
        }
    }

    #[test]
    fn the_figures_are_read_from_stats_and_the_others_ignored() {
        let stats: std::collections::BTreeMap<String, String> =
            [("pid", "1"), ("keys", "0"), ("block_timeout_ms", "60000"), ("keepalive_timeout_ms", "300000")]
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect();
        assert_eq!(figures_from(&Stats::from_map(stats)), fresh());
        assert_eq!(figures_from(&Stats::default()), DaemonFigures::default(), "a figure not reported is not checked");
    }

    #[test]
    fn a_fresh_default_daemon_passes() {
        check(&fresh(), plan(0, 11)).unwrap();
        check(&DaemonFigures::default(), plan(0, 11)).unwrap();
    }

    #[test]
    fn a_pool_with_keys_already_is_refused() {
        let figures = DaemonFigures { keys: Some(10), ..fresh() };
        let error = check(&figures, plan(0, 11)).unwrap_err().to_string();
        assert!(error.contains("already holds 10 keys"), "{error}");
    }

    #[test]
    fn a_hold_as_long_as_the_block_timeout_is_refused() {
        let error = check(&fresh(), plan(60_000, 11)).unwrap_err().to_string();
        assert!(error.contains("--hold 1m") && error.contains("--block-timeout"), "{error}");
        check(&fresh(), plan(59_999, 11)).unwrap();
    }

    #[test]
    fn a_run_longer_than_the_keep_alive_window_is_refused() {
        let error = check(&fresh(), plan(0, 300)).unwrap_err().to_string();
        assert!(error.contains("--keepalive-timeout"), "{error}");
    }
}
