//! Restore: the changes a pool reports, replayed over a snapshot taken while it kept changing, rebuild it.
//!
//! The property test runs the model test's random operations (so the engine is checked against the model
//! at every step as well) on a pool that reports to a recording change log. At a random step the log
//! "rotates" and a snapshot starts; the snapshot is read out a few slots at a time between the following
//! operations, as compaction reads it between clients' requests. At the end a fresh pool restores the
//! snapshot, replays the changes recorded after the rotation, and applies the clock; it must hold exactly
//! the keys of the original, each in the same state, except that leases of release-on-close holders come
//! back free. Records go through the real encoding (`persist::format`) both ways.

use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::model::{op, Op, Run};
use super::*;
use crate::persist::format::{self, Frame, Record};

/// A change log that keeps the encoded records.
#[derive(Default)]
struct Recorder(Mutex<Vec<u8>>);

impl ChangeLog for Recorder {
    fn record(&self, pool: &str, change: &Change<'_>) {
        format::put_change(&mut self.0.lock().expect("recorder lock"), pool, change);
    }
}

impl Recorder {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("recorder lock").clone()
    }
}

/// A snapshot being read out of a pool a few slots at a time.
struct Snapshot {
    /// Where the log stood when it began: the changes after this go over the snapshot.
    log_from: usize,
    next_slot: Option<usize>,
    images: Vec<u8>,
    count: u32,
}

impl Snapshot {
    fn step(&mut self, pool: &Pool, slots: usize) {
        if let Some(from) = self.next_slot {
            let (images, count) = (&mut self.images, &mut self.count);
            self.next_slot = pool.export(from, slots, |image| {
                format::put_image(images, image);
                *count += 1;
            });
        }
    }
}

/// Every key of `pool` as stored, sorted by id, with release-on-close leases shown free (as they are
/// restored).
fn state(pool: &Pool) -> Vec<String> {
    let mut keys = Vec::new();
    pool.export(0, usize::MAX, |image| {
        let mut image = *image;
        if let PlaceImage::Blocked { autorel: true, .. } = image.place {
            image.place = PlaceImage::Free;
        }
        keys.push(format!("{image:?}"));
    });
    keys.sort();
    keys
}

/// Rebuilds a pool from `snapshot` (if any) and the log after it, on `original`'s clock.
fn restore(original: &Pool, snapshot: Option<&Snapshot>, log: &[u8]) -> (Pool, u64) {
    let mut pool = Pool::with_id_generator(original.config.clone(), KeyIdGenerator::from_seed(2));
    // The same clock, so that both read the same Unix times.
    pool.clock = original.clock;
    let mut highest_token = 0;
    let mut log_from = 0;
    if let Some(snapshot) = snapshot {
        log_from = snapshot.log_from;
        let mut framed = Vec::new();
        format::put_snapshot_keys(&mut framed, "default", snapshot.count, &snapshot.images);
        let Frame::Record(payload, _) = format::next_frame(&framed, 0) else { panic!("a whole snapshot record") };
        let Ok(Record::SnapshotKeys { images, .. }) = format::decode(payload) else { panic!("snapshot keys") };
        pool.reserve(snapshot.count as usize);
        for image in images {
            let image = image.expect("an image that decodes");
            highest_token = highest_token.max(pool.restore_snapshot_key(&image).unwrap_or(0));
        }
        pool.index_snapshot_keys();
    }
    let mut offset = log_from;
    loop {
        match format::next_frame(log, offset) {
            Frame::Record(payload, next) => {
                let Ok(Record::Change { pool: name, change }) = format::decode(payload) else { panic!("a change") };
                assert_eq!(name, "default");
                highest_token = highest_token.max(pool.restore(&change).unwrap_or(0));
                offset = next;
            }
            Frame::End => break,
            other => panic!("the log at {offset}: {other:?}"),
        }
    }
    pool.finish_restore();
    // As `Pools::finish_restore` does for the counter the pools share.
    pool.tokens.raise_above(highest_token);
    (pool, highest_token)
}

fn check_restore(block_ms: u64, keepalive_ms: u64, max_keys: usize, ops: &[Op], snapshot_at: Option<usize>) {
    paused(async {
        let mut run = Run::new(block_ms, keepalive_ms, max_keys);
        let recorder = Arc::new(Recorder::default());
        run.pool.set_change_log(Arc::clone(&recorder) as Arc<dyn ChangeLog>, "default");
        let mut snapshot = None;
        for (step, op) in ops.iter().enumerate() {
            if Some(step) == snapshot_at {
                snapshot = Some(Snapshot {
                    log_from: recorder.bytes().len(),
                    next_slot: Some(0),
                    images: Vec::new(),
                    count: 0,
                });
            }
            run.apply(op).await;
            if let Some(snapshot) = snapshot.as_mut() {
                snapshot.step(&run.pool, 3);
            }
        }
        if let Some(snapshot) = snapshot.as_mut() {
            snapshot.step(&run.pool, usize::MAX);
        }
        let (restored, highest_token) = restore(&run.pool, snapshot.as_ref(), &recorder.bytes());
        restored.check_invariants();
        assert_eq!(state(&restored), state(&run.pool), "restored with a snapshot at step {snapshot_at:?}");
        assert!(highest_token < run.pool.tokens.next(), "tokens recorded are tokens handed out");
        let expected_free =
            run.pool.stats().keys_free + run.pool.leases.iter().filter(|(_, lease)| lease.holder != NIL).count();
        assert_eq!(restored.stats().keys_free, expected_free, "free keys, counting release-on-close leases");
    });
}

#[test]
fn a_restored_pool_holds_keys_leases_delays_secrets_and_deadlines() {
    use super::model::{SecretPick, Target, TokenPick};
    let ops = [
        Op::Generate(5),
        Op::Get,
        Op::Lease { wait_ms: 0, block_ms: Some(70), holder: None },
        Op::OpenHolder,
        Op::Lease { wait_ms: 0, block_ms: None, holder: Some(0) },
        Op::Release { target: Target::Blocked(0), token: TokenPick::Last, delay_ms: 30 },
        Op::Add { secret: SecretPick::New, keepalive_ms: Some(0) },
        Op::Add { secret: SecretPick::New, keepalive_ms: Some(90) },
        Op::Advance { ms: 10, stepwise: true },
        Op::KeepAlive(Target::Live(1)),
        Op::Delete(Target::Live(2)),
    ];
    for snapshot_at in [None, Some(0), Some(3), Some(8), Some(10)] {
        check_restore(50, 200, 20, &ops, snapshot_at);
    }
}

#[test]
fn deadlines_that_passed_while_down_are_applied_on_restore() {
    paused(async {
        let mut pool = pool();
        let recorder = Arc::new(Recorder::default());
        pool.set_change_log(Arc::clone(&recorder) as Arc<dyn ChangeLog>, "default");
        let ids = generate(&mut pool, 3);
        advance(50).await;
        let leased = pool.get().expect("a free key");
        assert!(pool.keep_alive(&leased));
        // The daemon goes down here, at 50 ms; the log is all that is left of it.
        let log = recorder.bytes();
        advance(BLOCK_MS + 1).await;
        let (restored, _) = restore(&pool, None, &log);
        assert_eq!((restored.stats().keys, restored.stats().keys_free), (3, 3), "the lease ended while down");
        advance(KEEPALIVE_MS - BLOCK_MS - 50).await;
        let (mut restored, _) = restore(&pool, None, &log);
        assert_eq!(restored.stats().keys, 1, "only the key pinged at 50 ms outlived its keep-alive window");
        assert!(restored.info(&leased).is_some());
        for id in ids.iter().filter(|id| **id != leased) {
            assert!(restored.info(id).is_none(), "{id} expired while the daemon was down");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_taken_while_the_pool_changes_plus_the_log_after_it_rebuilds_the_pool(
        block_ms in 1u64..=80,
        keepalive_ms in 1u64..=250,
        max_keys in prop_oneof![1usize..=8, 1usize..=30],
        ops in prop::collection::vec(op(), 1..80),
        snapshot_at in prop::option::of(0usize..80),
    ) {
        check_restore(block_ms, keepalive_ms, max_keys, &ops, snapshot_at);
    }
}
