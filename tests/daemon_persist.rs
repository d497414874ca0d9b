//! The real binary and its data directory, in the ways a disk or an operator can let it down: a
//! directory it may not write (a clear error naming it, non-zero exit), a missing one (created) and an
//! empty one (an empty pool), a log damaged in the middle (refused with the file and byte offset, or
//! started from the good prefix with `--recover-truncate`), a torn last record (cut off by itself), a
//! disk that fills up while it runs (changes refused, reads served, recovery by itself once there is
//! room again, nothing acknowledged lost), and the new flags' bad values.
//!
//! Disk full is made with RLIMIT_FSIZE rather than a small filesystem (which would need root and a
//! mount): `prlimit --pid` lowers the daemon's soft limit, writes past it fail with EFBIG, and raising it
//! again is the disk coming back. The daemon is started with SIGXFSZ ignored, as a daemon under a
//! supervisor would need to be, since its default action kills the process at the first such write.

mod common;
mod daemon_process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{key_of, Client, TempDir};
use daemon_process::{run_to_exit, Daemon, Launcher, BIN};

/// The user the read-only test runs the daemon as when the tests run as root (root ignores permission
/// bits): `nobody`.
const NOBODY: u32 = 65534;

/// How long the daemon may take to notice the disk has room again (it retries every 250 ms).
const RECOVERY_WAIT: Duration = Duration::from_secs(5);

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// The effective user id of this process, from /proc/self/status (`Uid: real effective saved fs`).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|line| line.starts_with("Uid:")).expect("a Uid line");
    line.split_whitespace().nth(2).and_then(|uid| uid.parse().ok()).expect("an effective uid")
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {mode:o} {}: {error}", path.display()));
}

/// The log file of generation `generation` in `dir`.
fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation:020}"))
}

/// The byte ranges of the framed records of a log or snapshot: `(start, payload length)` each, read by
/// the documented frame (u32 LE length, u32 LE crc, payload).
fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset + 8 <= data.len() {
        let length = u32::from_le_bytes(data[offset..offset + 4].try_into().expect("four bytes")) as usize;
        assert!(length > 0 && offset + 8 + length <= data.len(), "a well-formed log has whole frames");
        frames.push((offset, length));
        offset += 8 + length;
    }
    assert_eq!(offset, data.len(), "a well-formed log ends at a frame boundary");
    frames
}

fn data_args(dir: &Path) -> Vec<&str> {
    vec!["--data-dir", arg(dir), "--fsync", "always"]
}

/// `GEN 1` `n` times, one request each, so that each key is one record of the log, in order.
async fn gen_one_by_one(c: &mut Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.extend(c.gen(1).await);
    }
    ids
}

#[tokio::test]
async fn a_read_only_data_directory_is_refused_with_its_name() {
    let temp = TempDir::new("persist-ro");
    let dir = temp.path().join("data");
    std::fs::create_dir(&dir).expect("create the data directory");
    let (launcher, binary_copy) = if effective_uid() == 0 {
        // Root may write anywhere: run the daemon as nobody, on a directory root owns.
        let binary = runnable_by(NOBODY, temp.path());
        (Launcher::as_user(NOBODY, &binary), Some(binary))
    } else {
        (Launcher::binary(), None)
    };
    chmod(&dir, 0o555);
    let listen = format!("127.0.0.1:{}", daemon_process::free_port());
    let (status, stderr) = run_to_exit(&launcher, &["--listen", &listen, "--data-dir", arg(&dir)]);
    assert!(!status.success(), "the daemon started on a read-only directory; stderr:\n{stderr}");
    assert!(stderr.contains(arg(&dir)), "the error does not name the directory {}:\n{stderr}", dir.display());
    assert!(stderr.contains("Permission denied"), "the error does not say why:\n{stderr}");
    assert!(!stderr.contains("panicked"), "the daemon panicked:\n{stderr}");

    // The same for a read-only directory that already holds data: the daemon cannot even take its lock.
    chmod(&dir, 0o755);
    let daemon = Daemon::start(&data_args(&dir)).await;
    Client::connect(daemon.addr).await.gen(3).await;
    daemon.stop();
    for entry in std::fs::read_dir(&dir).expect("list the data directory") {
        chmod(&entry.expect("an entry").path(), 0o444);
    }
    chmod(&dir, 0o555);
    let (status, stderr) = run_to_exit(&launcher, &["--listen", &listen, "--data-dir", arg(&dir)]);
    assert!(!status.success(), "the daemon started on a read-only directory holding data; stderr:\n{stderr}");
    assert!(stderr.contains(arg(&dir)), "the error does not name the directory {}:\n{stderr}", dir.display());
    chmod(&dir, 0o755);
    drop(binary_copy);
}

/// A path to the daemon binary that `uid` may execute: the one cargo built if every directory above it
/// lets others through, else a copy in `scratch` (which must be world-readable).
fn runnable_by(uid: u32, scratch: &Path) -> PathBuf {
    let probe = |binary: &Path| {
        Command::new("setpriv")
            .args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".to_string()])
            .arg(binary)
            .arg("--version")
            .output()
            .map(|output| output.status.success())
            .unwrap_or_else(|error| panic!("cannot run setpriv (util-linux): {error}"))
    };
    if probe(Path::new(BIN)) {
        return PathBuf::from(BIN);
    }
    chmod(scratch, 0o755);
    let copy = scratch.join("keypool");
    std::fs::copy(BIN, &copy).expect("copy the binary");
    chmod(&copy, 0o755);
    assert!(probe(&copy), "user {uid} cannot run {} even from a copy in {}", BIN, scratch.display());
    copy
}

#[tokio::test]
async fn a_missing_data_directory_is_created_and_an_empty_one_starts_empty() {
    let temp = TempDir::new("persist-new");
    let missing = temp.path().join("not").join("yet");
    let daemon = Daemon::start(&data_args(&missing)).await;
    assert!(missing.is_dir(), "the data directory was not created");
    let mut c = Client::connect(daemon.addr).await;
    assert_eq!(c.stat("keys").await, 0);
    assert_eq!(c.stats().await["persistence"], "always");
    let ids = c.gen(2).await;
    drop(c);
    daemon.stop();
    let daemon = Daemon::start(&data_args(&missing)).await;
    let mut c = Client::connect(daemon.addr).await;
    assert_eq!(c.stat("keys").await, 2, "the keys made in the created directory are kept");
    for id in &ids {
        assert_eq!(c.state(id).await.as_deref(), Some("free"));
    }
    drop(c);
    daemon.stop();

    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).expect("create an empty directory");
    let daemon = Daemon::start(&data_args(&empty)).await;
    let mut c = Client::connect(daemon.addr).await;
    assert_eq!(c.stat("keys").await, 0, "an empty directory starts an empty pool");
    assert_eq!(c.stat("recovery_ms").await, 0, "nothing to recover takes no time");
    drop(c);
    daemon.stop();
}

/// A stopped daemon's directory holding 20 keys, one log record each; the ids in log order.
async fn twenty_keys(dir: &Path) -> Vec<String> {
    let daemon = Daemon::start(&data_args(dir)).await;
    let mut c = Client::connect(daemon.addr).await;
    let ids = gen_one_by_one(&mut c, 20).await;
    drop(c);
    daemon.stop();
    ids
}

/// Starts the daemon on `dir` and checks which of `ids` are there: exactly `kept` of them, the first.
async fn check_prefix_kept(daemon: &Daemon, ids: &[String], kept: usize) {
    let mut c = Client::connect(daemon.addr).await;
    for (i, id) in ids.iter().enumerate() {
        let state = c.state(id).await;
        if i < kept {
            assert_eq!(state.as_deref(), Some("free"), "key {i} of the good prefix is missing");
        } else {
            assert_eq!(state, None, "key {i}, at or after the damage, is there");
        }
    }
    assert_eq!(c.stat("keys").await, kept as u64);
}

#[tokio::test]
async fn a_flipped_byte_mid_log_is_refused_naming_the_file_and_offset_unless_recover_truncate() {
    let temp = TempDir::new("persist-flip");
    let dir = temp.path().join("data");
    let ids = twenty_keys(&dir).await;
    let log = log_path(&dir, 1);
    let mut data = std::fs::read(&log).expect("read the log");
    let records = frames(&data);
    assert_eq!(records.len(), 21, "a header and one record per key");
    // Record 0 is the header; key i is record i + 1. Damage the middle of key 10's payload.
    let (start, length) = records[11];
    data[start + 8 + length / 2] ^= 0x40;
    std::fs::write(&log, &data).expect("write the damaged log");

    let (status, stderr) = match Daemon::try_start_with(&Launcher::binary(), &data_args(&dir)).await {
        Ok(daemon) => panic!("the daemon started on a damaged log; stderr:\n{}", daemon.stop()),
        Err(refused) => refused,
    };
    assert!(!status.success(), "the daemon exited with {status} on a damaged log");
    assert!(stderr.contains(arg(&log)), "the error does not name the log {}:\n{stderr}", log.display());
    assert!(stderr.contains(&format!("byte offset {start}")), "the error does not give the offset {start}:\n{stderr}");
    assert!(stderr.contains("--recover-truncate"), "the error does not say how to start anyway:\n{stderr}");
    assert_eq!(std::fs::read(&log).expect("read the log"), data, "a refused start changed the log");

    let mut args = data_args(&dir);
    args.push("--recover-truncate");
    let daemon = Daemon::start(&args).await;
    assert!(
        daemon.stderr().contains("--recover-truncate"),
        "the log does not say what was dropped:\n{}",
        daemon.stderr()
    );
    check_prefix_kept(&daemon, &ids, 10).await;
    let mut c = Client::connect(daemon.addr).await;
    let after = c.gen(1).await;
    drop(c);
    daemon.stop();

    // The damage is gone for good: a plain start works, with the prefix and what came after.
    let daemon = Daemon::start(&data_args(&dir)).await;
    let mut c = Client::connect(daemon.addr).await;
    assert_eq!(c.state(&after[0]).await.as_deref(), Some("free"), "the key made after the truncation is lost");
    assert_eq!(c.stat("keys").await, 11);
    drop(c);
    daemon.stop();
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_by_itself() {
    let temp = TempDir::new("persist-torn");
    let dir = temp.path().join("data");
    let ids = twenty_keys(&dir).await;
    let log = log_path(&dir, 1);
    let data = std::fs::read(&log).expect("read the log");
    let (start, length) = *frames(&data).last().expect("records");
    std::fs::write(&log, &data[..start + 8 + length / 2]).expect("tear the last record");
    let daemon = Daemon::start(&data_args(&dir)).await;
    assert!(daemon.stderr().contains("torn last record"), "the cut is not reported:\n{}", daemon.stderr());
    check_prefix_kept(&daemon, &ids, 19).await;
    daemon.stop();
    assert_eq!(std::fs::metadata(&log).expect("the log").len(), start as u64, "the torn record was not cut off");
}

/// A flipped bit in the length field of a record mid-log makes that record claim to run past the end
/// of the file, which is also what a torn last record looks like: recovery must not take it for one,
/// or it silently drops every acknowledged change after it.
#[tokio::test]
async fn a_damaged_length_field_mid_log_is_refused_not_taken_for_a_torn_tail() {
    let temp = TempDir::new("persist-length");
    let dir = temp.path().join("data");
    let ids = twenty_keys(&dir).await;
    let log = log_path(&dir, 1);
    let mut data = std::fs::read(&log).expect("read the log");
    let (start, _) = frames(&data)[11];
    // Adds 64 KiB to the length of key 10's record: it now runs past the end of the ~1.3 KB file.
    data[start + 2] ^= 0x01;
    std::fs::write(&log, &data).expect("write the damaged log");

    match Daemon::try_start_with(&Launcher::binary(), &data_args(&dir)).await {
        Ok(daemon) => {
            let mut c = Client::connect(daemon.addr).await;
            let keys = c.stat("keys").await;
            drop(c);
            let said = daemon.stop();
            panic!(
                "the daemon started on a log damaged at byte offset {start}, with {keys} of its {} acknowledged keys; \
                 stderr:\n{said}",
                ids.len()
            );
        }
        Err((_, stderr)) => {
            assert!(stderr.contains(arg(&log)), "the error does not name the log {}:\n{stderr}", log.display());
            assert!(
                stderr.contains(&format!("byte offset {start}")),
                "the error does not give the offset {start}:\n{stderr}"
            );
        }
    }
}

/// Sets the soft RLIMIT_FSIZE of process `pid` (`unlimited` or a byte count); the hard limit is left
/// alone, so that it can be raised again without CAP_SYS_RESOURCE.
fn set_file_size_limit(pid: u32, limit: &str) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={limit}:"))
        .status()
        .unwrap_or_else(|error| panic!("cannot run prlimit (util-linux): {error}"));
    assert!(status.success(), "prlimit --pid {pid} --fsize={limit}: failed");
}

#[tokio::test]
async fn a_full_disk_refuses_changes_serves_reads_and_recovers_by_itself() {
    let temp = TempDir::new("persist-full");
    let dir = temp.path().join("data");
    let daemon = Daemon::start_with(&Launcher::ignoring_sigxfsz(), &data_args(&dir)).await;
    let mut c = Client::connect(daemon.addr).await;
    let mut acknowledged = c.gen(5).await;
    let log = log_path(&dir, 1);
    let full_at = std::fs::metadata(&log).expect("the log").len() + 200;
    set_file_size_limit(daemon.pid(), &full_at.to_string());

    // Fill the log: each GEN is acknowledged only once on disk, until one cannot be written.
    let mut refused = false;
    for _ in 0..100 {
        c.send_line("GEN 1").await;
        let line = c.lines.try_line().await.expect("read a reply").expect("a reply before the close");
        if line == "SERVER_ERROR persistence failure" {
            // Its reply waited for the disk: the client is told, and the connection closed.
            c.expect_closed().await;
            refused = true;
            break;
        }
        acknowledged.push(key_of(&line));
        assert_eq!(c.line().await, "END");
    }
    assert!(refused, "100 GENs past a {full_at}-byte file size limit were all acknowledged");
    assert!(std::fs::metadata(&log).expect("the log").len() <= full_at, "the log grew past the limit");

    // Reads go on; changes are refused and change nothing.
    let mut c = Client::connect(daemon.addr).await;
    let stats = c.stats().await;
    assert_eq!(stats["persistence_failed"], "1", "STATS does not show the failure");
    let keys = common::num(&stats, "keys");
    let victim = acknowledged[0].clone();
    for request in ["GEN 1".to_string(), "GET".to_string(), format!("DEL {victim}"), format!("PING {victim}")] {
        assert_eq!(c.cmd(&request).await, "SERVER_ERROR persistence failure", "{request} while the disk is full");
    }
    let info = c.info(&victim).await.expect("INFO works and the key is there");
    assert_eq!(info["state"], "free", "a refused GET leased the key");
    assert_eq!(c.stat("keys").await, keys, "a refused GEN or DEL changed the key count");
    assert_eq!(c.cmd("PING").await, "PONG");

    // Room again: the daemon notices by itself and takes changes.
    set_file_size_limit(daemon.pid(), "unlimited");
    let deadline = tokio::time::Instant::now() + RECOVERY_WAIT;
    while c.stat("persistence_failed").await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the daemon did not recover within {RECOVERY_WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acknowledged.extend(c.gen(2).await);
    assert_eq!(c.cmd(&format!("DEL {victim}")).await, "DELETED");
    let leased = c.get().await.expect("a free key");
    drop(c);
    daemon.stop();

    // Everything acknowledged is on disk.
    let daemon = Daemon::start(&data_args(&dir)).await;
    let mut c = Client::connect(daemon.addr).await;
    assert_eq!(c.state(&victim).await, None, "the acknowledged DEL is undone");
    for id in acknowledged.iter().filter(|id| **id != victim) {
        let expected = if *id == leased { "blocked" } else { "free" };
        assert_eq!(c.state(id).await.as_deref(), Some(expected), "{id} after the restart");
    }
    drop(c);
    daemon.stop();
}

#[tokio::test]
async fn bad_persistence_flags_are_refused() {
    let temp = TempDir::new("persist-flags");
    let dir = temp.path().join("data");
    let dir = arg(&dir);
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--data-dir", dir, "--fsync", "sometimes"], &["--fsync", "sometimes"]),
        (&["--data-dir", dir, "--fsync", ""], &["--fsync"]),
        (&["--data-dir", dir, "--compact-min", "64MB"], &["--compact-min"]),
        (&["--data-dir", dir, "--compact-min=-1"], &["--compact-min"]),
        (&["--data-dir", dir, "--compact-min", "99999999999G"], &["--compact-min"]),
        (&["--fsync", "always"], &["--data-dir"]),
        (&["--compact-min", "1MiB"], &["--data-dir"]),
    ];
    for (args, words) in cases {
        let listen = format!("127.0.0.1:{}", daemon_process::free_port());
        let mut full = vec!["--listen", listen.as_str()];
        full.extend_from_slice(args);
        let (status, stderr) = run_to_exit(&Launcher::binary(), &full);
        assert!(!status.success(), "{args:?} was accepted");
        for word in words {
            assert!(stderr.contains(word), "the error for {args:?} does not mention {word:?}:\n{stderr}");
        }
    }
    let (status, stderr) = run_to_exit(&Launcher::binary(), &["--recover-truncate"]);
    assert!(!status.success() && stderr.contains("--data-dir"), "--recover-truncate without --data-dir: {stderr}");
    assert!(!Path::new(dir).exists(), "a refused start created the data directory");
}
