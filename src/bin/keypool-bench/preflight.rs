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
use bytes::BytesMut;
use keypool::protocol::duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.write_all(b"STATS\r\n").await?;
    let mut input = BytesMut::with_capacity(4096);
    loop {
        if let Some(figures) = parse_stats(&input)? {
            return Ok(figures);
        }
        if stream.read_buf(&mut input).await? == 0 {
            bail!("the server closed the connection before answering STATS");
        }
    }
}

/// Reads a whole `STAT <name> <value>` ... `END` block, or `None` until its `END` has arrived.
fn parse_stats(buf: &[u8]) -> Result<Option<DaemonFigures>> {
    let mut figures = DaemonFigures::default();
    let mut rest = buf;
    while let Some(end) = memchr::memchr(b'\n', rest) {
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = &rest[end + 1..];
        if line == b"END" {
            return Ok(Some(figures));
        }
        let text = String::from_utf8_lossy(line);
        let Some(stat) = text.strip_prefix("STAT ") else {
            bail!("STATS answered {text:?}; is --server a keypool daemon?");
        };
        let (name, value) = stat.split_once(' ').unwrap_or((stat, ""));
        let number = || value.parse::<u64>().ok();
        match name {
            "keys" => figures.keys = number(),
            "block_timeout_ms" => figures.block_timeout = number().map(Duration::from_millis),
            "keepalive_timeout_ms" => figures.keepalive_timeout = number().map(Duration::from_millis),
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &[u8] = b"STAT pid 1\r\nSTAT keys 0\r\nSTAT block_timeout_ms 60000\r\n\
        STAT keepalive_timeout_ms 300000\r\nSTAT version 0.1.0\r\nEND\r\n";

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
    fn stats_are_read_only_once_complete() {
        for cut in 0..STATS.len() {
            assert_eq!(parse_stats(&STATS[..cut]).unwrap(), None, "at {cut} bytes");
        }
        assert_eq!(parse_stats(STATS).unwrap(), Some(fresh()));
    }

    #[test]
    fn a_reply_that_is_not_stats_is_refused() {
        let error = parse_stats(b"ERROR unknown command 'STATS'\r\n").unwrap_err().to_string();
        assert!(error.contains("keypool daemon"), "{error}");
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
