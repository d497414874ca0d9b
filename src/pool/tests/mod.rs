//! Unit and model-based tests of the engine: the harness and the v1 commands here, the lease features of
//! issue 7 (tokens, waiters, TOUCH, delayed release, holders, ADD) in `leases.rs`, and the model-based
//! property test in `model.rs`.
//!
//! Every test runs the pool inside a current-thread tokio runtime whose clock is paused, so the test owns
//! time: [`advance`] moves tokio's clock (and with it the pool's [`Clock`] and the `DelayQueue`'s timers),
//! and [`drain`] then calls [`Pool::poll_expired`] with a no-op waker until it returns `Pending`, which is
//! what the server's expiry task does when it is woken. Every step ends with `check_invariants`.
//!
//! The deadline rule encoded everywhere: a deadline `d` (in whole milliseconds of engine time) takes effect
//! at the first expiry pass that runs when `now >= d`. At `now == d - 1` the key is untouched; at
//! `now == d` it is freed (block window) or deleted (keep-alive window).
//!
//! `restore.rs` checks that what the engine reports to a change log, replayed over a snapshot taken while
//! the pool kept changing, rebuilds the pool.
//!
//! The property test drives random operation sequences against a plain `BTreeMap` model of what every live
//! key should look like, and compares every outcome, the stats, and `info()` of every id ever issued after
//! every step.

use std::collections::BTreeMap;
use std::future::Future;
use std::task::Waker;

use super::*;

mod leases;
mod model;
mod restore;

/// A well-formed id that no generator will produce (the odds are one in 62^24 per id).
const UNKNOWN_ID: &[u8; KEY_ID_LEN] = b"unknownunknownunknown000";

/// Block window of the unit tests, in milliseconds.
const BLOCK_MS: u64 = 100;
/// Keep-alive window of the unit tests, in milliseconds.
const KEEPALIVE_MS: u64 = 300;

fn unknown_id() -> KeyId {
    KeyId::parse(UNKNOWN_ID).expect("a well-formed id")
}

fn config(block_ms: u64, keepalive_ms: u64, max_keys: usize) -> PoolConfig {
    PoolConfig {
        block_timeout: Duration::from_millis(block_ms),
        keepalive_timeout: Duration::from_millis(keepalive_ms),
        max_keys,
    }
}

/// A pool with seeded ids. Must be called inside the paused runtime: its clock starts there.
fn pool_with(block_ms: u64, keepalive_ms: u64, max_keys: usize) -> Pool {
    let pool = Pool::with_id_generator(config(block_ms, keepalive_ms, max_keys), KeyIdGenerator::from_seed(1));
    pool.check_invariants();
    pool
}

/// The pool the unit tests use: [`BLOCK_MS`], [`KEEPALIVE_MS`], room for 1000 keys.
fn pool() -> Pool {
    pool_with(BLOCK_MS, KEEPALIVE_MS, 1000)
}

/// A current-thread runtime with time enabled and the clock paused.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a tokio runtime")
}

/// Runs `test` to completion on a [`paused_runtime`], outside tokio's cooperative budget.
///
/// The budget matters: every timer the `DelayQueue` hands out costs it one poll of a fresh `Sleep`, and
/// each such poll spends one unit of the task's budget (128 per poll of the task). With the budget on,
/// `poll_expired` returns `Pending` after about 128 timers even though more are due, and wakes the task so
/// that it is polled again: right for the server's expiry task, but a synchronous loop on a no-op waker
/// would stop there and miss the rest. [`the_expiry_task_loop_applies_a_mass_expiry_within_the_coop_budget`]
/// covers the budgeted path.
fn paused<F: Future>(test: F) -> F::Output {
    paused_runtime().block_on(tokio::task::unconstrained(test))
}

/// Moves tokio's paused clock `ms` milliseconds forward and lets the time driver fire what is due.
async fn advance(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

/// Polls `poll_expired` until it returns `Pending`, checking every slice, and returns the total work.
///
/// The work is bounded by what there is to expire: one unit per lease (or delay) timer, one per key
/// deleted, one per waiter whose wait runs out, and one per firing of the keep-alive head timer, which
/// either deletes a key, or fires early once per drain, or ends a slice; plus, for every day of the pool's
/// life, a heartbeat and a re-arm of each timer capped at the one-day horizon. More than that means the
/// engine is spinning on a timer that does nothing.
fn drain(pool: &mut Pool) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let days = (now(pool) / (24 * 3600 * 1000)) as usize;
    let (keys, waiters) = (pool.stats().keys, pool.stats().waiters);
    let bound = 3 * keys + waiters + 8 + days * (keys + waiters + 2);
    let mut total = 0;
    while let Poll::Ready(work) = pool.poll_expired(&mut cx) {
        assert!((1..=EXPIRY_BUDGET).contains(&work), "a slice does 1..={EXPIRY_BUDGET} units, not {work}");
        total += work;
        assert!(total <= bound, "{total} units of expiry work with {} keys: poll_expired spins", pool.stats().keys);
        pool.check_invariants();
    }
    total
}

/// [`advance`], then [`drain`].
async fn advance_and_drain(pool: &mut Pool, ms: u64) -> usize {
    advance(ms).await;
    drain(pool)
}

/// Generates `count` keys, which must succeed, and returns their ids.
fn generate(pool: &mut Pool, count: u32) -> Vec<KeyId> {
    let mut ids = Vec::new();
    pool.generate(count, |id| ids.push(*id)).expect("room for the keys");
    pool.check_invariants();
    ids
}

/// The pool's engine time, in milliseconds.
fn now(pool: &Pool) -> u64 {
    pool.clock().now().0
}

/// Engine time `ms` as the Unix milliseconds `info()` reports.
fn unix(pool: &Pool, ms: u64) -> u64 {
    pool.clock().unix_ms(Millis(ms))
}

fn state(pool: &mut Pool, id: &KeyId) -> Option<KeyState> {
    pool.info(id).map(|info| info.state)
}

/// Gets keys until `wanted` is handed out, releasing the others again. The wanted key must be free.
fn get_exactly(pool: &mut Pool, wanted: &KeyId) {
    for _ in 0..10_000 {
        let id = pool.get().expect("a free key");
        pool.check_invariants();
        if id == *wanted {
            return;
        }
        assert_eq!(pool.release(&id), Release::Released);
    }
    panic!("GET never handed out {wanted}");
}

// ---------------------------------------------------------------------------------------------------------
// The test-harness itself.

#[test]
fn the_paused_clock_drives_the_engine_clock() {
    paused(async {
        let pool = pool();
        assert_eq!(now(&pool), 0);
        advance(1234).await;
        assert_eq!(now(&pool), 1234);
        assert_eq!(unix(&pool, 1234), unix(&pool, 0) + 1234);
    });
}

#[test]
fn poll_expired_is_pending_when_nothing_is_due() {
    paused(async {
        let mut pool = pool();
        assert_eq!(drain(&mut pool), 0, "an empty pool");
        generate(&mut pool, 3);
        pool.get().expect("a free key");
        assert_eq!(drain(&mut pool), 0, "nothing due yet");
        assert_eq!(advance_and_drain(&mut pool, BLOCK_MS - 1).await, 0, "one millisecond before the first deadline");
    });
}

#[test]
fn draining_with_a_noop_waker_fires_due_timers() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        pool.get().expect("the key");
        assert!(advance_and_drain(&mut pool, BLOCK_MS).await > 0);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        assert!(advance_and_drain(&mut pool, KEEPALIVE_MS).await > 0);
        assert_eq!(pool.info(&id), None);
    });
}

// ---------------------------------------------------------------------------------------------------------
// GEN

#[test]
fn generate_creates_free_keys_and_reports_each_new_id_in_order() {
    paused(async {
        let mut pool = pool();
        advance(7).await;
        let mut reported = Vec::new();
        pool.generate(5, |id| reported.push(*id)).expect("room");
        pool.check_invariants();
        let mut generator = KeyIdGenerator::from_seed(1);
        let drawn: Vec<KeyId> = (0..5).map(|_| generator.next_id()).collect();
        assert_eq!(reported, drawn, "the generator's ids, in the order they were drawn");
        let distinct: std::collections::BTreeSet<_> = reported.iter().collect();
        assert_eq!(distinct.len(), 5, "ids are distinct");
        for id in &reported {
            assert_eq!(
                pool.info(id),
                Some(KeyInfo {
                    id: *id,
                    state: KeyState::Free,
                    created_ms: unix(&pool, 7),
                    alive_until_ms: Some(unix(&pool, 7 + KEEPALIVE_MS)),
                    blocked_until_ms: None,
                    token: None,
                    free_at_ms: None,
                    leases: 0,
                })
            );
        }
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_free, stats.keys_blocked, stats.keys_generated), (5, 5, 0, 5));
    });
}

#[test]
fn generate_zero_keys_changes_nothing() {
    paused(async {
        let mut pool = pool();
        let mut called = false;
        assert_eq!(pool.generate(0, |_| called = true), Ok(()));
        pool.check_invariants();
        assert!(!called);
        assert_eq!(pool.stats(), PoolStats::default());
        assert_eq!(advance_and_drain(&mut pool, KEEPALIVE_MS * 2).await, 0, "no keep-alive timer for no keys");
    });
}

#[test]
fn generate_fills_the_pool_to_exactly_max_keys() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 10);
        generate(&mut pool, 7);
        generate(&mut pool, 3);
        assert_eq!(pool.stats().keys, 10);
    });
}

#[test]
fn generate_past_max_keys_is_refused_and_creates_nothing() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 10);
        generate(&mut pool, 8);
        pool.get().expect("a free key");
        let before = pool.stats();
        let mut called = 0;
        assert_eq!(pool.generate(3, |_| called += 1), Err(PoolError::Full));
        pool.check_invariants();
        assert_eq!(called, 0, "no id is reported");
        assert_eq!(pool.stats(), before, "nothing created, nothing counted");
        assert_eq!(pool.generate(u32::MAX, |_| called += 1), Err(PoolError::Full));
        assert_eq!(called, 0);
        generate(&mut pool, 2);
        assert_eq!(pool.generate(1, |_| ()), Err(PoolError::Full), "blocked keys count against max_keys");
    });
}

#[test]
fn deleted_and_expired_keys_give_their_room_back() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 3);
        let ids = generate(&mut pool, 3);
        assert_eq!(pool.generate(1, |_| ()), Err(PoolError::Full));
        assert!(pool.delete(&ids[0]));
        generate(&mut pool, 1);
        assert_eq!(pool.generate(1, |_| ()), Err(PoolError::Full));
        advance_and_drain(&mut pool, KEEPALIVE_MS).await;
        assert_eq!(pool.stats().keys, 0);
        generate(&mut pool, 3);
    });
}

#[test]
fn max_keys_of_zero_refuses_every_key() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 0);
        assert_eq!(pool.generate(1, |_| ()), Err(PoolError::Full));
        assert_eq!(pool.generate(0, |_| ()), Ok(()));
        assert_eq!(pool.stats(), PoolStats::default());
    });
}

#[test]
fn max_keys_is_capped_at_what_the_engine_can_index() {
    paused(async {
        let pool = pool_with(BLOCK_MS, KEEPALIVE_MS, usize::MAX);
        assert_eq!(pool.config().max_keys, MAX_POOL_KEYS);
    });
}

// ---------------------------------------------------------------------------------------------------------
// GET

#[test]
fn get_on_an_empty_pool_misses() {
    paused(async {
        let mut pool = pool();
        assert_eq!(pool.get(), None);
        assert_eq!(pool.get(), None);
        pool.check_invariants();
        assert_eq!(pool.stats(), PoolStats { get_misses: 2, ..PoolStats::default() });
    });
}

#[test]
fn get_blocks_the_key_for_the_block_window_and_counts_the_lease() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        advance(11).await;
        assert_eq!(pool.get(), Some(id));
        pool.check_invariants();
        assert_eq!(
            pool.info(&id),
            Some(KeyInfo {
                id,
                state: KeyState::Blocked,
                created_ms: unix(&pool, 0),
                alive_until_ms: Some(unix(&pool, KEEPALIVE_MS)),
                blocked_until_ms: Some(unix(&pool, 11 + BLOCK_MS)),
                token: Some(1),
                free_at_ms: None,
                leases: 1,
            })
        );
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_free, stats.keys_blocked, stats.get_hits), (1, 0, 1, 1));
    });
}

#[test]
fn get_never_hands_out_a_blocked_key() {
    paused(async {
        let mut pool = pool();
        let ids = generate(&mut pool, 50);
        let mut handed = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let id = pool.get().expect("a free key");
            pool.check_invariants();
            assert!(handed.insert(id), "{id} handed out twice");
        }
        assert_eq!(handed, ids.iter().copied().collect());
        assert_eq!(pool.get(), None, "all blocked");
        let stats = pool.stats();
        assert_eq!((stats.keys_free, stats.keys_blocked, stats.get_hits, stats.get_misses), (0, 50, 50, 1));
    });
}

#[test]
fn get_never_hands_out_a_deleted_key() {
    paused(async {
        let mut pool = pool();
        let ids = generate(&mut pool, 20);
        for id in ids.iter().step_by(2) {
            assert!(pool.delete(id));
        }
        for _ in 0..10 {
            let id = pool.get().expect("a free key");
            assert!(ids.iter().skip(1).step_by(2).any(|kept| *kept == id));
        }
        assert_eq!(pool.get(), None);
    });
}

/// A chi-square test over 20 000 draws among 8 free keys (7 degrees of freedom): 40 is exceeded with
/// probability about 1e-6 by a uniform chooser. Blocked and deleted keys must never be drawn.
#[test]
fn get_is_uniform_over_the_free_keys() {
    paused(async {
        let mut pool = pool();
        let ids = generate(&mut pool, 12);
        let blocked: Vec<KeyId> = (0..2).map(|_| pool.get().expect("a free key")).collect();
        let mut free: Vec<KeyId> = ids.iter().filter(|id| !blocked.contains(id)).copied().collect();
        let deleted = free.split_off(8);
        for id in &deleted {
            assert!(pool.delete(id));
        }
        pool.check_invariants();
        assert_uniform(&lease_and_release(&mut pool, 20_000), &free);
    });
}

/// Leases and releases a key `draws` times; counts how often each key was leased.
fn lease_and_release(pool: &mut Pool, draws: u32) -> BTreeMap<KeyId, u32> {
    let mut counts: BTreeMap<KeyId, u32> = BTreeMap::new();
    for _ in 0..draws {
        let id = pool.get().expect("a free key");
        *counts.entry(id).or_default() += 1;
        assert_eq!(pool.release(&id), Release::Released);
    }
    pool.check_invariants();
    counts
}

/// Asserts that only keys in `free` were leased, and passes the chi-square test of
/// [`get_is_uniform_over_the_free_keys`] (for 8 keys: 7 degrees of freedom).
fn assert_uniform(counts: &BTreeMap<KeyId, u32>, free: &[KeyId]) {
    assert!(counts.keys().all(|id| free.contains(id)), "only free keys are drawn: {counts:?}");
    let draws: u32 = counts.values().sum();
    let expected = f64::from(draws) / free.len() as f64;
    let chi_square: f64 =
        free.iter().map(|id| (f64::from(counts.get(id).copied().unwrap_or(0)) - expected).powi(2) / expected).sum();
    assert!(chi_square < 40.0, "chi-square {chi_square} over {counts:?}");
}

/// The same chi-square test where most slots hold free keys, so that GET first draws among all the slots
/// (see `Pool::draw_by_slot`), and a quarter of its draws land on a blocked key, a delayed one or a
/// vacant slot and are drawn again from the free list: the two ways together must still be uniform.
#[test]
fn get_is_uniform_when_it_draws_by_slot() {
    paused(async {
        let mut pool = pool();
        let ids = generate(&mut pool, 12);
        let blocked = pool.get().expect("a free key");
        let delayed = pool.get().expect("a free key");
        assert_eq!(pool.release_with(&delayed, None, Duration::from_secs(3600)), Release::Released);
        let free: Vec<KeyId> = ids.iter().filter(|&&id| id != blocked && id != delayed).copied().collect();
        let (deleted, free) = free.split_first().expect("keys");
        assert!(pool.delete(deleted));
        assert!(super::draws_by_slot(free.len(), pool.keys.slots_end()), "9 free keys of 12 slots");
        assert_uniform(&lease_and_release(&mut pool, 20_000), free);
    });
}

/// A draw by slot that lands on a free key past its keep-alive deadline (the expiry task has not run
/// yet) must not hand it out.
#[test]
fn a_draw_by_slot_never_hands_out_a_dead_key() {
    paused(async {
        let mut pool = pool();
        let old = generate(&mut pool, 4);
        advance(KEEPALIVE_MS / 2).await;
        let young = generate(&mut pool, 4);
        assert!(super::draws_by_slot(8, pool.keys.slots_end()));
        // Past the old keys' deadline, with no expiry run: the four old keys are still free in the list.
        tokio::time::advance(Duration::from_millis(KEEPALIVE_MS / 2 + 10)).await;
        for _ in 0..200 {
            let id = pool.get().expect("a live free key");
            assert!(young.contains(&id) && !old.contains(&id), "{id} is not one of the live keys");
            assert_eq!(pool.release(&id), Release::Released);
        }
        pool.check_invariants();
    });
}

/// The same chi-square test, with GET's random draws made ahead by [`Pool::prepare`] (called here as
/// `look_ahead`, which it is in a pool too large for the caches), as a connection
/// looking ahead at a pipeline makes them: hints that foresee fewer leases than run, more (the extra draws
/// are used later), and releases in between that change the free list's length after the draw was made.
/// Once with every slot in play (the draws are by slot), once with four more keys blocked throughout, so
/// that too few slots hold free keys and the draws are positions of the free list.
#[test]
fn get_stays_uniform_when_its_draws_are_made_ahead() {
    for blocked in [0, 4] {
        paused(draws_made_ahead_stay_uniform(blocked));
    }
}

/// [`get_stays_uniform_when_its_draws_are_made_ahead`] with `blocked` keys held throughout.
async fn draws_made_ahead_stay_uniform(blocked: usize) {
    let mut pool = pool();
    let mut free = generate(&mut pool, 8 + blocked as u32);
    for _ in 0..blocked {
        let id = pool.get().expect("a free key");
        free.retain(|&kept| kept != id);
    }
    assert_eq!(super::draws_by_slot(free.len(), pool.keys.slots_end()), blocked == 0);
    let draws = 20_000;
    let mut counts: BTreeMap<KeyId, u32> = BTreeMap::new();
    let mut held = Vec::new();
    for round in 0..draws {
        let hints = [Upcoming::Lease, Upcoming::Lease, Upcoming::Key(free[round % 8]), Upcoming::Lease];
        pool.look_ahead(&hints[..round % 5]);
        let id = pool.get().expect("a free key");
        *counts.entry(id).or_default() += 1;
        held.push(id);
        // Keys go back one or two rounds later, so the list is sometimes 7 long, sometimes 6.
        if held.len() > 1 + round % 2 {
            for id in held.drain(..) {
                assert_eq!(pool.release(&id), Release::Released);
            }
        }
        pool.check_invariants();
    }
    assert_uniform(&counts, &free);
}

/// Looking ahead changes nothing a client can see, whatever it is told: hints for unknown keys, for keys
/// in every state, for more leases than there are free keys, and for an empty pool.
#[test]
fn prepare_changes_nothing_visible() {
    paused(async {
        let mut pool = pool();
        pool.look_ahead(&[Upcoming::Lease, Upcoming::Key(unknown_id()), Upcoming::Release(unknown_id())]);
        assert_eq!(pool.get(), None);
        let ids = generate(&mut pool, 6);
        let leased = pool.get().expect("a free key");
        let delayed = pool.get().expect("a free key");
        assert_eq!(pool.release_with(&delayed, None, Duration::from_millis(50)), Release::Released);
        let before: Vec<Option<KeyInfo>> = ids.iter().map(|id| pool.info(id)).collect();
        let stats = pool.stats();
        let mut hints = vec![Upcoming::Lease; 40];
        hints.extend(ids.iter().map(|&id| Upcoming::Key(id)));
        hints.extend([Upcoming::Release(leased), Upcoming::Release(unknown_id()), Upcoming::Key(unknown_id())]);
        for _ in 0..3 {
            pool.look_ahead(&hints);
        }
        pool.check_invariants();
        assert_eq!(ids.iter().map(|id| pool.info(id)).collect::<Vec<_>>(), before);
        assert_eq!(pool.stats(), stats);
    });
}

/// A pool that fits in the caches is not prepared for; a large one is, and its draws made ahead are used
/// by the leases that follow, oldest first.
#[test]
fn only_a_pool_too_large_for_the_caches_is_prepared_for() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 1 << 16);
        generate(&mut pool, 1000);
        pool.prepare(&[Upcoming::Lease; 4]);
        assert_eq!(pool.ahead.len(), 0);
        while pool.stats().keys < lookahead::PREPARE_FROM_KEYS {
            pool.generate(MAX_GEN_COUNT, |_| {}).expect("room for the keys");
        }
        pool.prepare(&[Upcoming::Lease; 4]);
        assert_eq!(pool.ahead.len(), 4);
        for left in (0..4).rev() {
            pool.get().expect("a free key");
            assert_eq!(pool.ahead.len(), left);
        }
    });
}

/// In a pool too large for the caches, a key leased is found again through the recent leases (see
/// `recent.rs`) rather than the index; a hint that names a slot since reused by another key is caught,
/// and the id is looked up in the index as ever.
#[test]
fn recent_leases_find_keys_again_and_stale_hints_are_caught() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 1 << 16);
        while pool.stats().keys < lookahead::PREPARE_FROM_KEYS {
            pool.generate(MAX_GEN_COUNT, |_| {}).expect("room for the keys");
        }
        let leased = pool.get().expect("a free key");
        let slot = pool.recent.hint(&leased).expect("the lease was noted");
        assert_eq!(pool.keys[slot].id, leased);
        assert_eq!(pool.release(&leased), Release::Released);
        assert_eq!(pool.release(&leased), Release::NotBlocked);

        // The key goes, and a new key takes its slot (the most recently vacated): the hint still names
        // the slot, which now holds another id.
        assert!(pool.delete(&leased));
        let newcomer = generate(&mut pool, 1)[0];
        assert_eq!(pool.keys[slot].id, newcomer, "the new key reuses the slot");
        assert_eq!(pool.recent.hint(&leased), Some(slot), "the stale hint is still there");
        assert_eq!(pool.release(&leased), Release::NotFound);
        assert!(pool.info(&leased).is_none());
        assert_eq!(pool.release(&newcomer), Release::NotBlocked);
        pool.check_invariants();
    });
}

/// A batch that breaks off before its leases run (its output filled, a GET waits) is shown again, and
/// looked ahead at again: the draws it left must not pile up in front of the next batch's leases, which
/// would then use draws made for others and miss every prefetch.
#[test]
fn draws_a_batch_left_unused_do_not_pile_up() {
    paused(async {
        let mut pool = pool();
        generate(&mut pool, 200);
        pool.look_ahead(&[Upcoming::Lease; 32]);
        for _ in 0..5 {
            pool.get().expect("a free key");
        }
        pool.look_ahead(&[Upcoming::Lease; 27]);
        assert_eq!(pool.ahead.len(), 27);
        for _ in 0..27 {
            pool.get().expect("a free key");
        }
        assert_eq!(pool.ahead.len(), 0, "the batch's leases used exactly the draws made for them");
    });
}

// ---------------------------------------------------------------------------------------------------------
// REL

#[test]
fn release_frees_a_blocked_key() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        pool.get().expect("the key");
        advance(5).await;
        assert_eq!(pool.release(&id), Release::Released);
        pool.check_invariants();
        let info = pool.info(&id).expect("the key");
        assert_eq!((info.state, info.blocked_until_ms, info.leases), (KeyState::Free, None, 1));
        let stats = pool.stats();
        assert_eq!((stats.keys_free, stats.keys_blocked, stats.released_by_timeout), (1, 0, 0));
        assert_eq!(pool.get(), Some(id), "a released key can be leased again");
    });
}

#[test]
fn release_of_a_free_key_is_not_blocked() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        assert_eq!(pool.release(&id), Release::NotBlocked);
        pool.get().expect("the key");
        assert_eq!(pool.release(&id), Release::Released);
        assert_eq!(pool.release(&id), Release::NotBlocked, "releasing twice");
        pool.check_invariants();
    });
}

#[test]
fn release_of_an_unknown_or_deleted_key_is_not_found() {
    paused(async {
        let mut pool = pool();
        assert_eq!(pool.release(&unknown_id()), Release::NotFound);
        let id = generate(&mut pool, 1)[0];
        pool.get().expect("the key");
        assert!(pool.delete(&id));
        assert_eq!(pool.release(&id), Release::NotFound);
        pool.check_invariants();
    });
}

#[test]
fn release_cancels_the_block_timer_so_a_later_lease_keeps_its_full_window() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        pool.get().expect("the key"); // blocked until 100
        advance_and_drain(&mut pool, 10).await;
        assert_eq!(pool.release(&id), Release::Released);
        advance_and_drain(&mut pool, 40).await;
        assert_eq!(pool.get(), Some(id)); // blocked until 150
                                          // The block list's head timer is not moved when its head is released: it may fire at 100, find
                                          // nothing due, and re-arm. The second lease must keep its full window regardless.
        advance_and_drain(&mut pool, 50).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked));
        advance_and_drain(&mut pool, 49).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        assert_eq!(pool.stats().released_by_timeout, 1);
    });
}

// ---------------------------------------------------------------------------------------------------------
// The block window

#[test]
fn a_block_ends_by_itself_exactly_at_its_deadline() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        advance(3).await;
        pool.get().expect("the key"); // blocked until 103
        assert_eq!(advance_and_drain(&mut pool, BLOCK_MS - 1).await, 0);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked), "at deadline - 1 ms");
        assert!(advance_and_drain(&mut pool, 1).await > 0);
        assert_eq!(now(&pool), 3 + BLOCK_MS);
        let info = pool.info(&id).expect("the key");
        assert_eq!((info.state, info.blocked_until_ms, info.leases), (KeyState::Free, None, 1), "at the deadline");
        let stats = pool.stats();
        assert_eq!((stats.keys_free, stats.keys_blocked, stats.released_by_timeout), (1, 0, 1));
        assert_eq!(pool.release(&id), Release::NotBlocked);
    });
}

#[test]
fn a_block_that_ended_is_counted_once_and_its_key_can_be_leased_again() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        for lease in 1..=3 {
            assert!(pool.keep_alive(&id));
            assert_eq!(pool.get(), Some(id));
            assert_eq!(pool.get(), None);
            advance_and_drain(&mut pool, BLOCK_MS).await;
            assert_eq!(pool.info(&id).expect("alive").leases, lease);
            assert_eq!(pool.stats().released_by_timeout, u64::from(lease));
        }
        let stats = pool.stats();
        assert_eq!((stats.get_hits, stats.get_misses), (3, 3));
    });
}

#[test]
fn blocks_end_in_deadline_order() {
    paused(async {
        let mut pool = pool();
        let ids = generate(&mut pool, 3);
        let mut leased = Vec::new();
        for _ in 0..3 {
            leased.push(pool.get().expect("a free key"));
            advance_and_drain(&mut pool, 10).await;
        }
        // Leased at 0, 10 and 20; now 30.
        assert_eq!(leased.iter().collect::<std::collections::BTreeSet<_>>(), ids.iter().collect());
        for (ended, id) in leased.iter().enumerate() {
            advance_and_drain(&mut pool, if ended == 0 { BLOCK_MS - 30 } else { 10 }).await;
            for (i, other) in leased.iter().enumerate() {
                let expected = if i <= ended { KeyState::Free } else { KeyState::Blocked };
                assert_eq!(state(&mut pool, other), Some(expected), "at {}: {id}", now(&pool));
            }
        }
    });
}

#[test]
fn keep_alive_does_not_extend_a_block() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        pool.get().expect("the key");
        advance_and_drain(&mut pool, 50).await;
        assert!(pool.keep_alive(&id));
        let info = pool.info(&id).expect("the key");
        assert_eq!(info.blocked_until_ms, Some(unix(&pool, BLOCK_MS)));
        assert_eq!(info.alive_until_ms, Some(unix(&pool, 50 + KEEPALIVE_MS)));
        advance_and_drain(&mut pool, BLOCK_MS - 50).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
    });
}

/// A block window of zero ends the moment it starts: INFO never shows the key blocked, even before the
/// expiry pass has run, and whichever applies the timeout first counts it, once.
#[test]
fn a_zero_block_window_frees_the_key_at_once() {
    paused(async {
        let mut pool = pool_with(0, KEEPALIVE_MS, 10);
        let id = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, 5).await;
        assert_eq!(pool.get(), Some(id));
        assert_eq!(pool.info(&id).expect("the key").blocked_until_ms, None);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        assert_eq!(pool.stats().released_by_timeout, 1, "INFO applied the timeout, and counted it");
        drain(&mut pool);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        assert_eq!(pool.stats().released_by_timeout, 1, "the pass does not count it again");
        // A lease already over when REL comes: REL applies the timeout first (NOT_BLOCKED, counted once,
        // its timer cancelled so the pass does not count it again). DEL of such a key just deletes it.
        assert_eq!(pool.get(), Some(id));
        assert_eq!(pool.release(&id), Release::NotBlocked);
        assert_eq!(pool.stats().released_by_timeout, 2);
        drain(&mut pool);
        assert_eq!(pool.stats().released_by_timeout, 2);
        assert_eq!(pool.get(), Some(id));
        assert!(pool.delete(&id));
        pool.check_invariants();
        drain(&mut pool);
        assert_eq!(pool.stats().released_by_timeout, 3);
    });
}

// ---------------------------------------------------------------------------------------------------------
// DEL

#[test]
fn delete_removes_a_free_key_for_good() {
    paused(async {
        let mut pool = pool();
        let ids = generate(&mut pool, 3);
        assert!(pool.delete(&ids[1]));
        pool.check_invariants();
        assert_eq!(pool.info(&ids[1]), None);
        assert!(!pool.delete(&ids[1]), "deleting twice");
        assert!(!pool.keep_alive(&ids[1]));
        assert_eq!(pool.release(&ids[1]), Release::NotFound);
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_free, stats.keys_generated), (2, 2, 3));
        for _ in 0..2 {
            assert_ne!(pool.get(), Some(ids[1]));
        }
        assert_eq!(pool.get(), None);
    });
}

#[test]
fn delete_removes_a_blocked_key_and_cancels_its_block_timer() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        pool.get().expect("the key");
        assert!(pool.delete(&id));
        pool.check_invariants();
        assert_eq!(pool.info(&id), None);
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_free, stats.keys_blocked), (0, 0, 0));
        advance_and_drain(&mut pool, KEEPALIVE_MS * 2).await;
        let stats = pool.stats();
        assert_eq!((stats.released_by_timeout, stats.expired_keepalive), (0, 0), "nothing left to expire");
    });
}

#[test]
fn delete_of_an_unknown_key_is_false() {
    paused(async {
        let mut pool = pool();
        generate(&mut pool, 2);
        assert!(!pool.delete(&unknown_id()));
        assert_eq!(pool.stats().keys, 2);
    });
}

#[test]
fn a_deleted_head_does_not_stop_the_next_key_from_expiring_on_time() {
    paused(async {
        let mut pool = pool();
        let first = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, 10).await;
        let second = generate(&mut pool, 1)[0];
        assert!(pool.delete(&first));
        advance_and_drain(&mut pool, KEEPALIVE_MS - 1).await; // 309: the stale head timer fired at 300
        assert_eq!(state(&mut pool, &second), Some(KeyState::Free));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&second), None);
        assert_eq!(pool.stats().expired_keepalive, 1);
    });
}

// ---------------------------------------------------------------------------------------------------------
// PING and the keep-alive window

#[test]
fn a_key_not_kept_alive_is_deleted_exactly_at_its_deadline() {
    paused(async {
        let mut pool = pool();
        advance(2).await;
        let id = generate(&mut pool, 1)[0];
        assert_eq!(advance_and_drain(&mut pool, KEEPALIVE_MS - 1).await, 0);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free), "at deadline - 1 ms");
        assert!(advance_and_drain(&mut pool, 1).await > 0);
        assert_eq!(pool.info(&id), None, "at the deadline");
        assert!(!pool.keep_alive(&id), "gone for good");
        assert_eq!(pool.stats(), PoolStats { keys_generated: 1, expired_keepalive: 1, ..PoolStats::default() });
    });
}

#[test]
fn keep_alive_restarts_the_window_from_now() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, KEEPALIVE_MS - 1).await;
        assert!(pool.keep_alive(&id));
        pool.check_invariants();
        assert_eq!(pool.info(&id).expect("alive").alive_until_ms, Some(unix(&pool, 2 * KEEPALIVE_MS - 1)));
        advance_and_drain(&mut pool, KEEPALIVE_MS - 1).await;
        assert!(pool.info(&id).is_some(), "one millisecond before the new deadline");
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&id), None);
    });
}

#[test]
fn keep_alive_of_an_unknown_key_is_false() {
    paused(async {
        let mut pool = pool();
        assert!(!pool.keep_alive(&unknown_id()));
        generate(&mut pool, 1);
        assert!(!pool.keep_alive(&unknown_id()));
        pool.check_invariants();
    });
}

#[test]
fn get_and_release_do_not_restart_the_keep_alive_window() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, 150).await;
        assert_eq!(pool.get(), Some(id));
        advance_and_drain(&mut pool, 50).await;
        assert_eq!(pool.release(&id), Release::Released);
        assert_eq!(pool.info(&id).expect("alive").alive_until_ms, Some(unix(&pool, KEEPALIVE_MS)));
        advance_and_drain(&mut pool, KEEPALIVE_MS - 200).await;
        assert_eq!(pool.info(&id), None);
    });
}

#[test]
fn a_missed_keep_alive_deletes_a_blocked_key_without_counting_a_block_timeout() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, KEEPALIVE_MS - 50).await;
        assert_eq!(pool.get(), Some(id)); // blocked until 350, alive until 300
        advance_and_drain(&mut pool, 50).await;
        assert_eq!(pool.info(&id), None);
        assert_eq!(pool.release(&id), Release::NotFound, "the holder finds it gone");
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_blocked, stats.released_by_timeout, stats.expired_keepalive), (0, 0, 0, 1));
        advance_and_drain(&mut pool, 100).await;
        assert_eq!(pool.stats().released_by_timeout, 0, "its block timer was cancelled");
    });
}

/// A key whose block and keep-alive window end in the same millisecond is deleted; whether its block also
/// counts as released by timeout is left open (it depends on which timer the wheel hands out first).
#[test]
fn a_block_and_a_keep_alive_window_ending_in_the_same_millisecond_delete_the_key() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, KEEPALIVE_MS - BLOCK_MS).await;
        assert_eq!(pool.get(), Some(id)); // blocked until 300, alive until 300
        advance_and_drain(&mut pool, BLOCK_MS - 1).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&id), None);
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_blocked, stats.expired_keepalive), (0, 0, 1));
        assert!(stats.released_by_timeout <= 1);
    });
}

#[test]
fn a_pinged_head_outlives_the_keys_behind_it() {
    paused(async {
        let mut pool = pool();
        let first = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, 10).await;
        let second = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, 10).await;
        let third = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, 10).await;
        assert!(pool.keep_alive(&first)); // now alive until 330; the head timer still says 300
        pool.check_invariants();
        advance_and_drain(&mut pool, KEEPALIVE_MS - 30).await; // 300: the early head timer fires
        assert_eq!(pool.stats().keys, 3);
        advance_and_drain(&mut pool, 10).await; // 310
        assert_eq!((pool.info(&first).is_some(), pool.info(&second).is_some()), (true, false));
        advance_and_drain(&mut pool, 10).await; // 320
        assert_eq!((pool.info(&first).is_some(), pool.info(&third).is_some()), (true, false));
        advance_and_drain(&mut pool, 9).await; // 329
        assert!(pool.info(&first).is_some());
        advance_and_drain(&mut pool, 1).await; // 330
        assert_eq!(pool.info(&first), None);
        assert_eq!(pool.stats().expired_keepalive, 3);
    });
}

#[test]
fn keys_generated_after_the_pool_emptied_expire_on_their_own_deadline() {
    paused(async {
        let mut pool = pool();
        let old = generate(&mut pool, 2);
        for id in &old {
            assert!(pool.delete(id));
        }
        advance_and_drain(&mut pool, 100).await;
        let new = generate(&mut pool, 2); // alive until 400; a stale head timer for 300 may still be armed
        advance_and_drain(&mut pool, KEEPALIVE_MS - 1).await; // 399
        assert_eq!(pool.stats().keys, 2);
        advance_and_drain(&mut pool, 1).await;
        assert!(new.iter().all(|id| pool.info(id).is_none()));
        assert_eq!(pool.stats().expired_keepalive, 2);
    });
}

/// A keep-alive window of zero: the keys are gone for every command at once, and the pass deletes them.
#[test]
fn a_zero_keep_alive_window_deletes_keys_at_once() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, 0, 10);
        let ids = generate(&mut pool, 3);
        assert!(ids.iter().all(|id| pool.info(id).is_none()));
        assert_eq!(pool.get(), None, "GET never hands out a key past its keep-alive deadline");
        assert!(!pool.keep_alive(&ids[0]), "PING does not revive a key past its deadline");
        drain(&mut pool);
        assert!(ids.iter().all(|id| pool.info(id).is_none()));
        assert_eq!(pool.stats().expired_keepalive, 3);
    });
}

// ---------------------------------------------------------------------------------------------------------
// INFO and STATS

#[test]
fn info_of_an_unknown_key_is_none() {
    paused(async {
        let mut pool = pool();
        assert_eq!(pool.info(&unknown_id()), None);
        generate(&mut pool, 1);
        assert_eq!(pool.info(&unknown_id()), None);
    });
}

#[test]
fn info_reports_times_as_unix_milliseconds_from_the_pool_epoch() {
    paused(async {
        let mut pool = pool();
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as u64;
        advance(1_000).await;
        let id = generate(&mut pool, 1)[0];
        let info = pool.info(&id).expect("the key");
        // The wall clock was read when the pool was created; allow for a slow machine.
        assert!(info.created_ms >= before + 1_000 - 5_000 && info.created_ms <= before + 1_000 + 5_000);
        assert_eq!(info.alive_until_ms, Some(info.created_ms + KEEPALIVE_MS));
    });
}

#[test]
fn leases_counts_every_time_get_handed_the_key_out() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        for lease in 1..=5 {
            assert_eq!(pool.get(), Some(id));
            assert_eq!(pool.info(&id).expect("alive").leases, lease);
            assert_eq!(pool.release(&id), Release::Released);
            assert_eq!(pool.info(&id).expect("alive").leases, lease, "release does not count");
        }
        assert!(pool.keep_alive(&id));
        assert_eq!(pool.info(&id).expect("alive").leases, 5, "keep-alive does not count");
    });
}

#[test]
fn stats_count_every_outcome() {
    paused(async {
        let mut pool = pool();
        let ids = generate(&mut pool, 4);
        assert_eq!(pool.generate(1000, |_| ()), Err(PoolError::Full));
        for _ in 0..3 {
            pool.get().expect("a free key");
        }
        let free = ids.iter().find(|id| state(&mut pool, id) == Some(KeyState::Free)).copied().expect("one free");
        assert!(pool.delete(&free));
        assert_eq!(pool.get(), None);
        advance_and_drain(&mut pool, BLOCK_MS).await;
        let survivor = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, KEEPALIVE_MS - BLOCK_MS).await;
        assert_eq!(
            pool.stats(),
            PoolStats {
                keys: 1,
                keys_free: 1,
                keys_blocked: 0,
                keys_generated: 5,
                get_hits: 3,
                get_misses: 1,
                released_by_timeout: 3,
                expired_keepalive: 3,
                ..PoolStats::default()
            }
        );
        assert!(pool.info(&survivor).is_some());
    });
}

// ---------------------------------------------------------------------------------------------------------
// Mass expiry

/// Drains a mass expiry one call at a time: every call does at most a budget's worth of work, the
/// first one leaves work behind (the expiry really is sliced), and the calls together finish it.
fn drain_in_slices(pool: &mut Pool, expected_work: usize) -> Vec<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut slices = Vec::new();
    while let Poll::Ready(work) = pool.poll_expired(&mut cx) {
        assert!((1..=EXPIRY_BUDGET).contains(&work), "slice {} did {work} units", slices.len());
        slices.push(work);
        assert!(slices.len() < 100, "the expiry never finishes: {slices:?}");
    }
    pool.check_invariants();
    let total: usize = slices.iter().sum();
    assert!(total >= expected_work, "{total} units of work for {expected_work} expiries: {slices:?}");
    assert!(slices.len() >= expected_work.div_ceil(EXPIRY_BUDGET), "{slices:?}");
    slices
}

#[test]
fn a_mass_keep_alive_expiry_is_applied_in_bounded_slices() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 10_000);
        for _ in 0..5 {
            generate(&mut pool, 1000);
        }
        advance(KEEPALIVE_MS).await;
        let slices = drain_in_slices(&mut pool, 5000);
        assert!(slices.len() <= 10, "{slices:?}");
        assert_eq!(pool.stats().keys, 0);
        assert_eq!(pool.stats().expired_keepalive, 5000);
    });
}

#[test]
fn a_mass_block_timeout_is_applied_in_bounded_slices() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 10_000);
        for _ in 0..5 {
            generate(&mut pool, 1000);
        }
        for _ in 0..5000 {
            pool.get().expect("a free key");
        }
        pool.check_invariants();
        advance(BLOCK_MS).await;
        let slices = drain_in_slices(&mut pool, 5000);
        assert!(slices.len() <= 10, "{slices:?}");
        let stats = pool.stats();
        assert_eq!((stats.keys_free, stats.keys_blocked, stats.released_by_timeout), (5000, 0, 5000));
    });
}

/// The server's expiry task (`server/expiry.rs`) in miniature: `poll_fn` over `poll_expired` with the task's
/// own waker and coop budget, then a yield. The budget cuts slices short; the loop must still finish.
#[test]
fn the_expiry_task_loop_applies_a_mass_expiry_within_the_coop_budget() {
    paused_runtime().block_on(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 10_000);
        for _ in 0..5 {
            generate(&mut pool, 1000);
        }
        for _ in 0..5000 {
            pool.get().expect("a free key");
        }
        advance(BLOCK_MS).await;
        let mut slices = Vec::new();
        while pool.stats().keys_blocked > 0 {
            let work = std::future::poll_fn(|cx| pool.poll_expired(cx)).await;
            assert!((1..=EXPIRY_BUDGET).contains(&work));
            slices.push(work);
            pool.check_invariants();
            tokio::task::yield_now().await;
        }
        assert_eq!(now(&pool), BLOCK_MS, "the clock did not move");
        assert_eq!(pool.stats().released_by_timeout, 5000);
        assert!(slices.len() >= 5, "{slices:?}");
    });
}

#[test]
fn a_mass_expiry_of_blocked_keys_is_applied_in_bounded_slices() {
    paused(async {
        let mut pool = pool_with(KEEPALIVE_MS, KEEPALIVE_MS, 10_000);
        for _ in 0..5 {
            generate(&mut pool, 1000);
        }
        advance_and_drain(&mut pool, 1).await;
        for _ in 0..2500 {
            pool.get().expect("a free key");
        }
        advance(KEEPALIVE_MS).await;
        drain_in_slices(&mut pool, 5000);
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.released_by_timeout, stats.expired_keepalive), (0, 0, 5000));
    });
}

#[test]
fn clients_between_slices_of_a_mass_expiry_see_a_consistent_pool() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 10_000);
        let old = generate(&mut pool, 3000);
        advance_and_drain(&mut pool, 1).await;
        let young = generate(&mut pool, 10);
        advance(KEEPALIVE_MS - 1).await;
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(pool.poll_expired(&mut cx), Poll::Ready(_)));
        pool.check_invariants();
        // Between slices: the pool answers, and only old keys are still waiting to go. GET may answer
        // None while most free keys are dead (its work is capped), but never hands out a dead one.
        let leased = pool.get();
        assert!(pool.delete(&young[0]));
        assert!(pool.keep_alive(&young[1]));
        generate(&mut pool, 5);
        pool.check_invariants();
        drain(&mut pool);
        assert!(old.iter().all(|id| pool.info(id).is_none()));
        assert!(young[1..].iter().all(|id| pool.info(id).is_some()));
        assert_eq!(pool.stats().expired_keepalive, 3000);
        assert_eq!(pool.stats().keys, 9 + 5);
        assert!(leased.is_none_or(|id| young.contains(&id)), "GET handed out an expired key");
    });
}

// ---------------------------------------------------------------------------------------------------------
// Waking the expiry task

/// A waker that counts its wakes, standing in for the server's expiry task.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn counting_waker() -> (std::sync::Arc<CountingWaker>, Waker) {
    let counter = std::sync::Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
    (counter.clone(), Waker::from(counter))
}

fn wakes(counter: &CountingWaker) -> usize {
    counter.0.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn an_expiry_task_waiting_on_an_empty_pool_is_woken_by_the_first_timer() {
    paused(async {
        let mut pool = pool();
        let (counter, waker) = counting_waker();
        assert_eq!(pool.poll_expired(&mut Context::from_waker(&waker)), Poll::Pending);
        generate(&mut pool, 1);
        assert!(wakes(&counter) > 0, "GEN arms the keep-alive timer and must wake the task");
    });
}

#[test]
fn an_expiry_task_is_woken_by_a_timer_earlier_than_all_others() {
    paused(async {
        let mut pool = pool();
        generate(&mut pool, 1); // keep-alive timer at 300
        let (counter, waker) = counting_waker();
        assert_eq!(pool.poll_expired(&mut Context::from_waker(&waker)), Poll::Pending);
        let before = wakes(&counter);
        pool.get().expect("the key"); // block timer at 100
        assert!(wakes(&counter) > before, "an earlier timer must wake the task so it sleeps less");
    });
}

#[test]
fn an_expiry_task_is_woken_when_its_earliest_deadline_comes() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        pool.get().expect("the key");
        let (counter, waker) = counting_waker();
        assert_eq!(pool.poll_expired(&mut Context::from_waker(&waker)), Poll::Pending);
        advance(BLOCK_MS - 1).await;
        assert_eq!(wakes(&counter), 0, "woken before the deadline");
        advance(1).await;
        assert!(wakes(&counter) > 0, "not woken at the deadline");
        assert!(matches!(pool.poll_expired(&mut Context::from_waker(&waker)), Poll::Ready(_)));
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
    });
}

// ---------------------------------------------------------------------------------------------------------
// Long windows

/// The `DelayQueue`'s wheel reaches 2^36 - 1 ms (about 795 days) ahead; a timer further out makes
/// `insert_at` panic. Windows come from the command line with no upper bound (`--block-timeout 20000h`
/// parses), so the engine must either cap how far ahead it arms a timer (and re-arm when it fires) or
/// refuse such a configuration up front. Here: a block of 800 days, which must neither panic nor end early
/// (the key is pinged every 100 days, within its 200-day keep-alive window, to stay alive that long).
#[test]
fn a_block_window_beyond_the_timer_wheel_range_neither_panics_nor_ends_early() {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    paused(async {
        let mut pool = pool_with(800 * DAY_MS, 200 * DAY_MS, 10);
        let id = generate(&mut pool, 1)[0];
        assert_eq!(pool.get(), Some(id));
        pool.check_invariants();
        for _ in 0..7 {
            advance_and_drain(&mut pool, 100 * DAY_MS).await;
            assert!(pool.keep_alive(&id));
        }
        advance_and_drain(&mut pool, 100 * DAY_MS - 1).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
    });
}

/// As above, for the keep-alive window: GEN arms the head timer 1000 days ahead.
#[test]
fn a_keep_alive_window_beyond_the_timer_wheel_range_neither_panics_nor_ends_early() {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    paused(async {
        let mut pool = pool_with(BLOCK_MS, 1000 * DAY_MS, 10);
        let id = generate(&mut pool, 1)[0];
        pool.check_invariants();
        advance_and_drain(&mut pool, 1000 * DAY_MS - 1).await;
        assert!(pool.info(&id).is_some());
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&id), None);
    });
}

/// The wheel's reach is measured from the last time one of its timers fired, not from now: after a long
/// quiet spell with no timer due, a window well inside 795 days can still land beyond the reach.
#[test]
fn a_window_inside_the_timer_wheel_range_still_works_after_a_long_quiet_spell() {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    paused(async {
        let mut pool = pool_with(700 * DAY_MS, 700 * DAY_MS, 10);
        let id = generate(&mut pool, 1)[0]; // its keep-alive timer is the only one, 700 days out
        advance_and_drain(&mut pool, 200 * DAY_MS).await;
        assert_eq!(pool.get(), Some(id)); // blocked until day 900
        advance_and_drain(&mut pool, 500 * DAY_MS).await;
        assert_eq!(pool.info(&id), None, "deleted at day 700, still blocked");
    });
}

/// An idle daemon with an empty pool has no timer at all for as long as it stays idle; the first GEN after
/// more than 795 days of that must still work.
#[test]
fn the_first_key_after_a_very_long_idle_spell_works() {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    paused(async {
        let mut pool = pool();
        advance_and_drain(&mut pool, 800 * DAY_MS).await;
        let id = generate(&mut pool, 1)[0];
        assert_eq!(pool.get(), Some(id));
        advance_and_drain(&mut pool, BLOCK_MS).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        advance_and_drain(&mut pool, KEEPALIVE_MS - BLOCK_MS).await;
        assert_eq!(pool.info(&id), None);
    });
}

#[test]
fn windows_just_inside_the_timer_wheel_range_work() {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    paused(async {
        let mut pool = pool_with(790 * DAY_MS, 790 * DAY_MS, 10);
        let id = generate(&mut pool, 1)[0];
        assert_eq!(pool.get(), Some(id));
        advance_and_drain(&mut pool, 790 * DAY_MS - 1).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&id), None);
        assert_eq!(pool.stats().expired_keepalive, 1);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Expiry that runs late

/// `released_by_timeout` is "blocks that ended because the block window passed". A block that ended at
/// 110 while its key lived until 160 ended by timeout, whether or not the expiry pass ran between 110
/// and 160. Here the pass runs once, at 200 (as when the expiry task falls behind during a mass expiry).
#[test]
fn a_block_that_ended_before_its_key_expired_counts_as_a_timeout_even_if_the_expiry_pass_runs_late() {
    paused(async {
        let mut pool = pool_with(50, 100, 10);
        let head = generate(&mut pool, 1)[0]; // alive until 100
        advance_and_drain(&mut pool, 60).await;
        let late = generate(&mut pool, 1)[0]; // alive until 160
        get_exactly(&mut pool, &late); // blocked until 110
        assert_eq!(pool.info(&head).map(|info| info.state), Some(KeyState::Free));
        advance_and_drain(&mut pool, 140).await; // 200: everything is due at once
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.expired_keepalive), (0, 2));
        assert_eq!(stats.released_by_timeout, 1, "the block of {late} ended at 110, before its key expired at 160");
    });
}

#[test]
fn a_block_that_ended_before_its_key_expired_counts_as_a_timeout_when_the_expiry_pass_is_on_time() {
    paused(async {
        let mut pool = pool_with(50, 100, 10);
        generate(&mut pool, 1);
        advance_and_drain(&mut pool, 60).await;
        let late = generate(&mut pool, 1)[0];
        get_exactly(&mut pool, &late);
        for _ in 0..140 {
            advance_and_drain(&mut pool, 1).await;
        }
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.expired_keepalive, stats.released_by_timeout), (0, 2, 1));
    });
}

/// The memory budget per key (BENCHMARKS.md: under 80 bytes a key at 1e7 keys) rests on the record
/// staying at 64 bytes, slab entry included; a field added carelessly would break it silently.
#[test]
fn a_key_record_takes_64_bytes_in_the_slab() {
    assert_eq!(std::mem::size_of::<KeyRecord>(), 64);
    // The slab stores `Entry<KeyRecord>`, an enum of a vacant link or the record; the record's state tag
    // leaves it room for its own tag, which this checks through a vector of the same enum shape.
    enum Entry {
        #[allow(dead_code)]
        Vacant(usize),
        #[allow(dead_code)]
        Occupied(KeyRecord),
    }
    assert_eq!(std::mem::size_of::<Entry>(), 64);
}

/// A GET that meets a backlog of keys past their keep-alive deadline (a mass expiry the task has not
/// applied yet) never hands one out, and its work is bounded: one slice of the backlog plus a capped
/// number of draws, so it cannot hold the lock for the whole backlog.
#[test]
fn get_during_a_mass_expiry_hands_out_only_live_keys_with_bounded_work() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, 100, 10_000);
        generate(&mut pool, 5000);
        advance(50).await;
        let live = generate(&mut pool, 1)[0];
        advance(60).await; // the 5000 are due; `live` is not; no expiry pass has run
        let mut handed_out = None;
        for _ in 0..10 {
            let before = pool.stats().keys;
            let got = pool.get();
            let deleted = before - pool.stats().keys;
            assert!(deleted <= EXPIRY_BUDGET + MAX_DEAD_DRAWS, "one GET deleted {deleted} keys");
            pool.check_invariants();
            if let Some(id) = got {
                assert_eq!(id, live, "GET handed out a key past its keep-alive deadline");
                handed_out = Some(id);
                break;
            }
        }
        assert_eq!(handed_out, Some(live), "the live key is handed out once the backlog is trimmed");
    });
}
