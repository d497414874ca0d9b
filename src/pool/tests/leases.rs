//! Unit tests of issue 7's lease features: fencing tokens, REL and TOUCH with tokens, delayed release,
//! waiting leases and their wake-ups, release-on-close holders, keys with secrets (ADD), and windows
//! beyond the timer horizon.
//!
//! Same harness as the v1 tests (see the parent module): a paused clock, deadlines exact to the
//! millisecond, and `check_invariants` after every step, which the helpers here run after every call.

use super::*;

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// Lease terms: a block window of `block_ms` (the pool's when `None`), on `holder`'s list if given.
fn terms(block_ms: Option<u64>, holder: Option<HolderId>) -> LeaseTerms {
    LeaseTerms { block: block_ms.map(Duration::from_millis), holder }
}

/// Leases a free key at once on `terms`, which must succeed: its id, token and secret.
fn lease_on(pool: &mut Pool, terms: LeaseTerms) -> (KeyId, u64, Option<Vec<u8>>) {
    let leased = match pool.lease(terms, Duration::ZERO) {
        LeaseOutcome::Leased(leased) => (*leased.id, leased.token, leased.secret.map(<[u8]>::to_vec)),
        other => panic!("expected a lease, got {other:?}"),
    };
    pool.check_invariants();
    leased
}

/// Leases a free key at once on the pool's terms: its id and token.
fn lease(pool: &mut Pool) -> (KeyId, u64) {
    let (id, token, _) = lease_on(pool, LeaseTerms::default());
    (id, token)
}

/// A lease request on `terms` that waits up to `wait_ms`; no key may be free.
fn wait_on(pool: &mut Pool, terms: LeaseTerms, wait_ms: u64) -> WaitTicket {
    let ticket = match pool.lease(terms, Duration::from_millis(wait_ms)) {
        LeaseOutcome::Waiting(ticket) => ticket,
        other => panic!("expected to wait, got {other:?}"),
    };
    pool.check_invariants();
    ticket
}

/// A lease request on the pool's terms that waits up to `wait_ms`.
fn wait(pool: &mut Pool, wait_ms: u64) -> WaitTicket {
    wait_on(pool, LeaseTerms::default(), wait_ms)
}

/// Polls a wait with `waker`.
fn poll_with(pool: &mut Pool, ticket: &WaitTicket, waker: &Waker) -> Poll<Option<Grant>> {
    let outcome = pool.poll_wait(ticket, &mut Context::from_waker(waker));
    pool.check_invariants();
    outcome
}

/// Polls a wait with a no-op waker.
fn poll(pool: &mut Pool, ticket: &WaitTicket) -> Poll<Option<Grant>> {
    poll_with(pool, ticket, Waker::noop())
}

/// Collects a wait that must have been served.
fn granted(pool: &mut Pool, ticket: WaitTicket) -> Grant {
    match poll(pool, &ticket) {
        Poll::Ready(Some(grant)) => grant,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// Collects a wait that must have run out.
fn timed_out(pool: &mut Pool, ticket: WaitTicket) {
    assert_eq!(poll(pool, &ticket), Poll::Ready(None), "expected the wait to have run out");
}

/// Checks that every one of `tickets` is still waiting.
fn assert_waiting(pool: &mut Pool, tickets: &[&WaitTicket]) {
    for (at, ticket) in tickets.iter().enumerate() {
        assert_eq!(poll(pool, ticket), Poll::Pending, "waiter {at} at {}", now(pool));
    }
}

fn info(pool: &mut Pool, id: &KeyId) -> KeyInfo {
    pool.info(id).unwrap_or_else(|| panic!("{id} is live"))
}

/// REL with an optional token and a delay of `delay_ms`.
fn rel(pool: &mut Pool, id: &KeyId, token: Option<u64>, delay_ms: u64) -> Release {
    let outcome = pool.release_with(id, token, Duration::from_millis(delay_ms));
    pool.check_invariants();
    outcome
}

/// TOUCH with an optional token and an optional block window.
fn touch(pool: &mut Pool, id: &KeyId, token: Option<u64>, block_ms: Option<u64>) -> Release {
    let outcome = pool.touch(id, token, block_ms.map(Duration::from_millis));
    pool.check_invariants();
    outcome
}

/// ADD, which must not be refused.
fn add(pool: &mut Pool, secret: &str, keepalive_ms: Option<u64>) -> Added {
    let outcome = pool.add(secret.as_bytes(), keepalive_ms.map(Duration::from_millis)).expect("room for the key");
    pool.check_invariants();
    outcome
}

/// ADD of a secret the pool does not hold yet: the new key's id.
fn add_new(pool: &mut Pool, secret: &str, keepalive_ms: Option<u64>) -> KeyId {
    match add(pool, secret, keepalive_ms) {
        Added::New(id) => id,
        other => panic!("expected a new key, got {other:?}"),
    }
}

fn open_holder(pool: &mut Pool) -> HolderId {
    let holder = pool.open_holder();
    pool.check_invariants();
    holder
}

fn close_holder(pool: &mut Pool, holder: HolderId) -> usize {
    let released = pool.close_holder(holder);
    pool.check_invariants();
    released
}

fn cancel(pool: &mut Pool, ticket: WaitTicket) {
    pool.cancel_wait(ticket);
    pool.check_invariants();
}

const DAY_MS: u64 = 24 * 3600 * 1000;

// ---------------------------------------------------------------------------------------------------------
// Fencing tokens

#[test]
fn tokens_grow_strictly_across_get_lease_and_granted_waits() {
    paused(async {
        let mut pool = pool();
        generate(&mut pool, 2);
        let mut tokens = Vec::new();
        let got = pool.get().expect("a free key");
        tokens.push(info(&mut pool, &got).token.expect("GET made a lease with a token"));
        let (leased, token) = lease(&mut pool);
        tokens.push(token);
        let waiting = wait(&mut pool, 50);
        assert_eq!(rel(&mut pool, &got, None, 0), Release::Released);
        let grant = granted(&mut pool, waiting);
        assert_eq!(grant.id, got);
        tokens.push(grant.token);
        // A grant that is cancelled used its token up: no later lease is given it again.
        let cancelled = wait(&mut pool, 50);
        assert_eq!(rel(&mut pool, &leased, Some(token), 0), Release::Released);
        cancel(&mut pool, cancelled);
        let (_, after_cancel) = lease(&mut pool);
        assert_eq!(after_cancel, grant.token + 2, "token {} went to the cancelled grant", grant.token + 1);
        tokens.push(after_cancel);
        advance_and_drain(&mut pool, BLOCK_MS).await;
        for _ in 0..2 {
            tokens.push(lease(&mut pool).1);
        }
        assert_eq!(tokens[0], 1, "the first lease's token");
        assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "tokens grow strictly: {tokens:?}");
    });
}

// ---------------------------------------------------------------------------------------------------------
// REL with a token

#[test]
fn release_with_the_current_token_releases_and_any_other_token_is_stale() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        let (_, token) = lease(&mut pool);
        assert_eq!(rel(&mut pool, &id, Some(token + 1), 0), Release::Stale, "a token not handed out yet");
        assert_eq!(rel(&mut pool, &id, Some(0), 0), Release::Stale, "a token never handed out");
        assert_eq!(info(&mut pool, &id).token, Some(token), "a stale REL changes nothing");
        assert_eq!(rel(&mut pool, &id, Some(token), 0), Release::Released);
        assert_eq!(info(&mut pool, &id).state, KeyState::Free);
        assert_eq!(rel(&mut pool, &id, Some(token), 0), Release::Stale, "that lease is over");
        assert_eq!(rel(&mut pool, &id, None, 0), Release::NotBlocked);
        assert_eq!(rel(&mut pool, &unknown_id(), Some(token), 0), Release::NotFound);
        assert!(pool.delete(&id));
        assert_eq!(rel(&mut pool, &id, Some(token), 0), Release::NotFound);
        let stats = pool.stats();
        assert_eq!((stats.released_by_timeout, stats.get_hits), (0, 1));
    });
}

/// The scenario fencing tokens exist for: A's lease times out, B leases the same key, and A's late REL
/// (or TOUCH) must not end B's lease.
#[test]
fn a_holder_whose_lease_timed_out_gets_stale_and_the_next_holder_keeps_the_key() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        let (_, token_a) = lease(&mut pool);
        advance_and_drain(&mut pool, BLOCK_MS).await;
        assert_eq!(info(&mut pool, &id).state, KeyState::Free, "A's block timed out");
        let (leased_b, token_b) = lease(&mut pool);
        assert_eq!(leased_b, id);
        assert!(token_b > token_a);
        assert_eq!(rel(&mut pool, &id, Some(token_a), 0), Release::Stale);
        assert_eq!(touch(&mut pool, &id, Some(token_a), None), Release::Stale);
        assert_eq!(rel(&mut pool, &id, Some(token_a), 50), Release::Stale, "nor with a delay");
        let info_b = info(&mut pool, &id);
        assert_eq!(info_b.state, KeyState::Blocked, "B still holds the key");
        assert_eq!(info_b.token, Some(token_b), "INFO shows B's token");
        assert_eq!(info_b.blocked_until_ms, Some(unix(&pool, 2 * BLOCK_MS)), "B's window is untouched");
        assert_eq!(rel(&mut pool, &id, Some(token_b), 0), Release::Released);
        assert_eq!(pool.stats().released_by_timeout, 1);
    });
}

#[test]
fn release_of_a_free_or_delayed_key_is_not_blocked_without_a_token_and_stale_with_one() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        assert_eq!(rel(&mut pool, &id, None, 0), Release::NotBlocked);
        assert_eq!(rel(&mut pool, &id, None, 50), Release::NotBlocked);
        assert_eq!(info(&mut pool, &id).state, KeyState::Free, "a delay on a free key does nothing");
        assert_eq!(rel(&mut pool, &id, Some(1), 0), Release::Stale);
        let (_, token) = lease(&mut pool);
        assert_eq!(rel(&mut pool, &id, Some(token), 50), Release::Released);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::NotBlocked);
        assert_eq!(rel(&mut pool, &id, None, 10), Release::NotBlocked);
        assert_eq!(rel(&mut pool, &id, Some(token), 0), Release::Stale, "the delayed lease is over");
        let delayed = info(&mut pool, &id);
        assert_eq!((delayed.state, delayed.free_at_ms), (KeyState::Delayed, Some(unix(&pool, 50))), "unchanged");
    });
}

// ---------------------------------------------------------------------------------------------------------
// TOUCH

#[test]
fn touch_restarts_the_block_window_from_now() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        advance_and_drain(&mut pool, 10).await;
        let (_, token) = lease(&mut pool); // blocked until 110
        advance_and_drain(&mut pool, 60).await;
        assert_eq!(touch(&mut pool, &id, None, None), Release::Released, "no token: the pool's window");
        let touched = info(&mut pool, &id);
        assert_eq!(touched.blocked_until_ms, Some(unix(&pool, 70 + BLOCK_MS)));
        assert_eq!((touched.token, touched.leases), (Some(token), 1), "the same lease");
        assert_eq!(touch(&mut pool, &id, Some(token + 1), Some(1000)), Release::Stale);
        assert_eq!(info(&mut pool, &id).blocked_until_ms, Some(unix(&pool, 70 + BLOCK_MS)), "a stale TOUCH");
        advance_and_drain(&mut pool, 20).await; // 90
        assert_eq!(touch(&mut pool, &id, Some(token), Some(30)), Release::Released, "a shorter window");
        assert_eq!(info(&mut pool, &id).blocked_until_ms, Some(unix(&pool, 120)));
        advance_and_drain(&mut pool, 29).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked), "at the new deadline - 1 ms");
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free), "at the new deadline");
        assert_eq!(pool.stats().released_by_timeout, 1, "the old timer did not fire too");
        advance_and_drain(&mut pool, 100).await;
        assert_eq!(pool.stats().released_by_timeout, 1);
    });
}

#[test]
fn touch_does_not_restart_the_keep_alive_window() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        advance_and_drain(&mut pool, 50).await;
        assert_eq!(touch(&mut pool, &id, None, Some(1000)), Release::Released);
        assert_eq!(info(&mut pool, &id).alive_until_ms, Some(unix(&pool, KEEPALIVE_MS)));
        advance_and_drain(&mut pool, KEEPALIVE_MS - 51).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Blocked));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&id), None, "deleted at its keep-alive deadline, still blocked");
        let stats = pool.stats();
        assert_eq!((stats.expired_keepalive, stats.released_by_timeout), (1, 0));
    });
}

#[test]
fn touch_of_a_free_delayed_or_unknown_key_touches_nothing() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        assert_eq!(touch(&mut pool, &id, None, None), Release::NotBlocked);
        assert_eq!(touch(&mut pool, &id, Some(1), Some(10)), Release::Stale);
        assert_eq!(info(&mut pool, &id).state, KeyState::Free);
        let (_, token) = lease(&mut pool);
        assert_eq!(rel(&mut pool, &id, Some(token), 50), Release::Released);
        assert_eq!(touch(&mut pool, &id, None, Some(500)), Release::NotBlocked);
        assert_eq!(touch(&mut pool, &id, Some(token), Some(500)), Release::Stale);
        let delayed = info(&mut pool, &id);
        assert_eq!((delayed.state, delayed.free_at_ms), (KeyState::Delayed, Some(unix(&pool, 50))), "the delay stands");
        assert_eq!(touch(&mut pool, &unknown_id(), None, None), Release::NotFound);
        assert_eq!(touch(&mut pool, &unknown_id(), Some(token), None), Release::NotFound);
    });
}

/// A lease whose window has passed is over even if the expiry task has not applied it yet: TOUCH and REL
/// apply the timeout first (counted once), and do not revive the lease.
#[test]
fn touch_and_release_of_a_lease_past_its_window_find_it_over() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        let (_, token) = lease(&mut pool);
        advance(BLOCK_MS).await;
        assert_eq!(touch(&mut pool, &id, Some(token), None), Release::Stale);
        assert_eq!(pool.stats().released_by_timeout, 1);
        assert_eq!(touch(&mut pool, &id, None, None), Release::NotBlocked);
        assert_eq!(rel(&mut pool, &id, Some(token), 0), Release::Stale);
        drain(&mut pool);
        assert_eq!(pool.stats().released_by_timeout, 1, "the pass does not count it again");
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
    });
}

// ---------------------------------------------------------------------------------------------------------
// Delayed release

#[test]
fn a_delayed_key_is_leased_to_no_one_until_its_delay_ends() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        let (_, token) = lease(&mut pool);
        advance_and_drain(&mut pool, 10).await;
        assert_eq!(rel(&mut pool, &id, Some(token), 50), Release::Released);
        assert_eq!(
            pool.info(&id),
            Some(KeyInfo {
                id,
                state: KeyState::Delayed,
                created_ms: unix(&pool, 0),
                alive_until_ms: Some(unix(&pool, KEEPALIVE_MS)),
                blocked_until_ms: None,
                token: None,
                free_at_ms: Some(unix(&pool, 60)),
                leases: 1,
            })
        );
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_free, stats.keys_blocked, stats.keys_delayed), (1, 0, 0, 1));
        assert_eq!(pool.get(), None, "GET does not hand out a delayed key");
        assert_eq!(pool.lease(LeaseTerms::default(), Duration::ZERO), LeaseOutcome::NotFound);
        advance_and_drain(&mut pool, 49).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Delayed), "at the delay's end - 1 ms");
        assert_eq!(pool.get(), None);
        advance_and_drain(&mut pool, 1).await;
        let freed = info(&mut pool, &id);
        assert_eq!((freed.state, freed.free_at_ms, freed.token), (KeyState::Free, None, None));
        let stats = pool.stats();
        assert_eq!((stats.keys_free, stats.keys_delayed, stats.released_by_timeout), (1, 0, 0), "not a timeout");
        assert_eq!(pool.get(), Some(id));
        assert_eq!(pool.stats().get_misses, 3);
    });
}

/// INFO at the end of a delay that the expiry task has not applied yet finds the key free.
#[test]
fn a_delay_that_has_passed_is_applied_by_the_next_command_on_the_key() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        assert_eq!(rel(&mut pool, &id, None, 50), Release::Released);
        advance(50).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        pool.check_invariants();
        assert_eq!(pool.stats().keys_delayed, 0);
        drain(&mut pool);
        assert_eq!(pool.get(), Some(id));
    });
}

#[test]
fn a_delayed_key_can_be_deleted_and_its_delay_timer_goes_with_it() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        assert_eq!(rel(&mut pool, &id, None, 50), Release::Released);
        assert!(pool.delete(&id));
        pool.check_invariants();
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_delayed), (0, 0));
        assert_eq!(advance_and_drain(&mut pool, 50).await, 0, "no timer left for the delay");
        assert_eq!(pool.info(&id), None);
    });
}

#[test]
fn a_delayed_key_that_misses_its_keep_alive_is_deleted() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        advance_and_drain(&mut pool, 100).await;
        lease(&mut pool);
        assert_eq!(rel(&mut pool, &id, None, 500), Release::Released); // free at 600, alive until 300
        advance_and_drain(&mut pool, KEEPALIVE_MS - 101).await;
        assert_eq!(state(&mut pool, &id), Some(KeyState::Delayed));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&id), None);
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_delayed, stats.expired_keepalive, stats.released_by_timeout), (0, 0, 1, 1));
        assert_eq!(advance_and_drain(&mut pool, 500).await, 0, "the delay's timer went with the key");
    });
}

#[test]
fn a_waiter_gets_a_delayed_key_the_moment_its_delay_ends() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        let (_, token) = lease(&mut pool);
        assert_eq!(rel(&mut pool, &id, Some(token), 50), Release::Released);
        let waiting = wait(&mut pool, 200);
        advance_and_drain(&mut pool, 49).await;
        assert_waiting(&mut pool, &[&waiting]);
        advance_and_drain(&mut pool, 1).await;
        let grant = granted(&mut pool, waiting);
        assert_eq!((grant.id, grant.token), (id, token + 1));
        let leased = info(&mut pool, &id);
        assert_eq!((leased.state, leased.blocked_until_ms), (KeyState::Blocked, Some(unix(&pool, 50 + BLOCK_MS))));
        assert_eq!(pool.stats().waits_served, 1);
    });
}

#[test]
fn a_delayed_release_takes_the_lease_off_its_holders_list() {
    paused(async {
        let mut pool = pool();
        let holder = open_holder(&mut pool);
        let id = generate(&mut pool, 1)[0];
        let (_, token, _) = lease_on(&mut pool, terms(None, Some(holder)));
        assert_eq!(rel(&mut pool, &id, Some(token), 50), Release::Released);
        assert_eq!(close_holder(&mut pool, holder), 0);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Delayed), "the close does not end the delay");
        assert_eq!(pool.stats().released_by_close, 0);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Waiting leases: first come, first served, whatever frees the key

#[test]
fn a_lease_that_may_wait_takes_a_free_key_at_once() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        match pool.lease(LeaseTerms::default(), Duration::from_millis(100)) {
            LeaseOutcome::Leased(leased) => assert_eq!(*leased.id, id),
            other => panic!("expected a lease, got {other:?}"),
        }
        pool.check_invariants();
        assert_eq!(pool.lease(LeaseTerms::default(), Duration::ZERO), LeaseOutcome::NotFound, "no wait, no key");
        let stats = pool.stats();
        assert_eq!((stats.get_hits, stats.get_misses, stats.waiters), (1, 1, 0));
    });
}

#[test]
fn waiters_are_served_in_arrival_order_by_release() {
    paused(async {
        let mut pool = pool();
        generate(&mut pool, 3);
        let leased: Vec<(KeyId, u64)> = (0..3).map(|_| lease(&mut pool)).collect();
        let waiters: Vec<WaitTicket> = (0..3).map(|_| wait(&mut pool, 200)).collect();
        assert_eq!(pool.stats().waiters, 3);
        let order = [1, 2, 0];
        for (served, &key) in order.iter().enumerate() {
            advance_and_drain(&mut pool, 5).await;
            let (id, token) = leased[key];
            assert_eq!(rel(&mut pool, &id, Some(token), 0), Release::Released);
            let blocked = info(&mut pool, &id);
            assert_eq!(blocked.token, Some(4 + served as u64), "waiter {served} got the key under the next token");
            assert_eq!(blocked.blocked_until_ms, Some(unix(&pool, now(&pool) + BLOCK_MS)), "a full window");
            assert_eq!(pool.stats().waiters, 2 - served);
        }
        // Collected in reverse: the order they were served in is the order they came in.
        for (served, ticket) in waiters.into_iter().enumerate().rev() {
            let grant = granted(&mut pool, ticket);
            assert_eq!((grant.id, grant.token), (leased[order[served]].0, 4 + served as u64));
        }
        let stats = pool.stats();
        assert_eq!((stats.waits_served, stats.get_hits, stats.keys_free, stats.keys_blocked), (3, 6, 0, 3));
    });
}

#[test]
fn waiters_are_served_in_arrival_order_by_block_timeouts() {
    paused(async {
        let mut pool = pool();
        generate(&mut pool, 3);
        let mut leased = Vec::new();
        for _ in 0..3 {
            leased.push(lease(&mut pool).0); // blocked until 100, 110, 120
            advance_and_drain(&mut pool, 10).await;
        }
        let waiters: Vec<WaitTicket> = (0..3).map(|_| wait(&mut pool, 200)).collect();
        advance_and_drain(&mut pool, BLOCK_MS - 31).await; // 99
        assert_waiting(&mut pool, &waiters.iter().collect::<Vec<_>>());
        for (served, id) in leased.iter().enumerate() {
            advance_and_drain(&mut pool, if served == 0 { 1 } else { 10 }).await;
            let blocked = info(&mut pool, id);
            assert_eq!(
                (blocked.state, blocked.token),
                (KeyState::Blocked, Some(4 + served as u64)),
                "at {}",
                now(&pool)
            );
            assert_eq!(blocked.blocked_until_ms, Some(unix(&pool, now(&pool) + BLOCK_MS)));
            assert_waiting(&mut pool, &waiters[served + 1..].iter().collect::<Vec<_>>());
        }
        for (served, ticket) in waiters.into_iter().enumerate() {
            assert_eq!(granted(&mut pool, ticket).id, leased[served]);
        }
        let stats = pool.stats();
        assert_eq!((stats.released_by_timeout, stats.waits_served, stats.keys_free), (3, 3, 0));
    });
}

#[test]
fn waiters_are_served_in_arrival_order_by_gen_and_the_rest_of_the_keys_stay_free() {
    paused(async {
        let mut pool = pool();
        let waiters: Vec<WaitTicket> = (0..3).map(|_| wait(&mut pool, 200)).collect();
        let first = generate(&mut pool, 2);
        assert_eq!(pool.stats().waiters, 1, "GEN 2 serves two of three waiters");
        assert_eq!(pool.stats().keys_free, 0);
        let more = generate(&mut pool, 5);
        let stats = pool.stats();
        assert_eq!((stats.waiters, stats.keys_free, stats.keys_blocked), (0, 4, 3));
        let expected = [first[0], first[1], more[0]];
        for (served, ticket) in waiters.into_iter().enumerate() {
            let grant = granted(&mut pool, ticket);
            assert_eq!((grant.id, grant.token, grant.secret), (expected[served], 1 + served as u64, None));
        }
        assert!(more[1..].iter().all(|id| state(&mut pool, id) == Some(KeyState::Free)));
    });
}

#[test]
fn waiters_are_served_in_arrival_order_by_add_and_get_the_secret() {
    paused(async {
        let mut pool = pool();
        let waiters: Vec<WaitTicket> = (0..3).map(|_| wait(&mut pool, 200)).collect();
        let first = add_new(&mut pool, "first", None);
        let second = add_new(&mut pool, "second", Some(1000));
        assert_eq!(add(&mut pool, "first", None), Added::Exists(first), "an ADD that creates nothing serves no one");
        assert_eq!(pool.stats().waiters, 1);
        let third = add_new(&mut pool, "third", Some(0));
        let expected = [(first, "first"), (second, "second"), (third, "third")];
        for (served, ticket) in waiters.into_iter().enumerate() {
            let grant = granted(&mut pool, ticket);
            let (id, secret) = expected[served];
            assert_eq!(grant, Grant { id, token: 1 + served as u64, secret: Some(secret.as_bytes().into()) });
        }
        let stats = pool.stats();
        assert_eq!((stats.keys_added, stats.waits_served, stats.keys_free), (3, 3, 0));
    });
}

#[test]
fn waiters_are_served_in_arrival_order_by_a_closing_holder_oldest_lease_first() {
    paused(async {
        let mut pool = pool();
        let holder = open_holder(&mut pool);
        generate(&mut pool, 3);
        let mut leased = Vec::new();
        for _ in 0..3 {
            leased.push(lease_on(&mut pool, terms(None, Some(holder))).0);
            advance_and_drain(&mut pool, 1).await;
        }
        let waiters: Vec<WaitTicket> = (0..3).map(|_| wait(&mut pool, 200)).collect();
        assert_eq!(close_holder(&mut pool, holder), 3);
        for (served, ticket) in waiters.into_iter().enumerate() {
            assert_eq!(granted(&mut pool, ticket).id, leased[served]);
        }
        let stats = pool.stats();
        assert_eq!((stats.released_by_close, stats.waits_served, stats.keys_free), (3, 3, 0));
    });
}

#[test]
fn a_granted_wait_is_leased_on_the_waiters_terms() {
    paused(async {
        let mut pool = pool();
        let holder = open_holder(&mut pool);
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let waiting = wait_on(&mut pool, terms(Some(1000), Some(holder)), 200);
        advance_and_drain(&mut pool, 10).await;
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!(info(&mut pool, &id).blocked_until_ms, Some(unix(&pool, 1010)), "the waiter's block window");
        let grant = granted(&mut pool, waiting);
        assert_eq!(close_holder(&mut pool, holder), 1, "the grant's lease is on the waiter's holder");
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        assert_eq!(rel(&mut pool, &id, Some(grant.token), 0), Release::Stale);
    });
}

#[test]
fn a_closed_holders_id_files_nothing_under_the_holder_that_reuses_its_slot() {
    paused(async {
        let mut pool = pool();
        let closed = open_holder(&mut pool);
        assert_eq!(close_holder(&mut pool, closed), 0);
        let reopened = open_holder(&mut pool);
        generate(&mut pool, 2);
        let (stray, _, _) = lease_on(&mut pool, terms(None, Some(closed)));
        let (own, _, _) = lease_on(&mut pool, terms(None, Some(reopened)));
        assert_eq!(close_holder(&mut pool, closed), 0, "closing twice does nothing");
        assert_eq!(close_holder(&mut pool, reopened), 1, "only its own lease");
        assert_eq!(state(&mut pool, &own), Some(KeyState::Free));
        assert_eq!(state(&mut pool, &stray), Some(KeyState::Blocked), "a stray lease waits out its window");
    });
}

// ---------------------------------------------------------------------------------------------------------
// Waits that end without a key

#[test]
fn a_wait_runs_out_exactly_at_its_deadline_and_is_counted() {
    paused(async {
        let mut pool = pool();
        let waiting = wait(&mut pool, 50);
        assert_eq!(pool.stats().waiters, 1);
        advance_and_drain(&mut pool, 49).await;
        assert_waiting(&mut pool, &[&waiting]);
        advance_and_drain(&mut pool, 1).await;
        let stats = pool.stats();
        assert_eq!((stats.waiters, stats.waits_timed_out, stats.get_misses), (0, 1, 1), "counted when it runs out");
        timed_out(&mut pool, waiting);
        let id = generate(&mut pool, 1)[0];
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free), "a wait that ran out takes no key");
        let stats = pool.stats();
        assert_eq!((stats.waits_served, stats.waits_timed_out, stats.get_hits, stats.get_misses), (0, 1, 0, 1));
    });
}

/// Deadlines are exact: a waiter whose wait has passed is not served, even before its timer fires. The
/// key goes to the next waiter, or back to the free list, and the stale timer must then do nothing.
#[test]
fn a_waiter_whose_wait_has_passed_is_not_served_even_before_its_timer_fires() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let expired = wait(&mut pool, 50);
        let next = wait(&mut pool, 200);
        advance(50).await; // no expiry pass: the first waiter's timer has not fired
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        timed_out(&mut pool, expired);
        assert_eq!(granted(&mut pool, next).id, id);
        drain(&mut pool);
        // A new waiter may take the spent waiter's place; the old timer must not touch it.
        let again = wait(&mut pool, 10);
        advance_and_drain(&mut pool, 9).await;
        assert_waiting(&mut pool, &[&again]);
        advance_and_drain(&mut pool, 1).await;
        timed_out(&mut pool, again);
        let stats = pool.stats();
        assert_eq!((stats.waits_timed_out, stats.waits_served, stats.get_misses, stats.waiters), (2, 1, 2, 0));
    });
}

#[test]
fn a_key_freed_when_every_waiter_has_run_out_goes_back_to_the_free_list() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let expired = wait(&mut pool, 50);
        advance(60).await;
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        drain(&mut pool);
        timed_out(&mut pool, expired);
        drain(&mut pool);
        assert_eq!(pool.stats().waits_timed_out, 1);
        assert_eq!(pool.get(), Some(id));
    });
}

#[test]
fn a_cancelled_waiter_consumes_nothing_and_the_key_goes_to_the_next() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let first = wait(&mut pool, 200);
        let cancelled = wait(&mut pool, 200);
        let third = wait(&mut pool, 200);
        cancel(&mut pool, cancelled);
        assert_eq!(pool.stats().waiters, 2);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        let grant = granted(&mut pool, first);
        assert_eq!(rel(&mut pool, &id, Some(grant.token), 0), Release::Released);
        assert_eq!(granted(&mut pool, third).token, grant.token + 1, "the cancelled waiter was skipped");
        // With no one else waiting, the key goes back to the free list.
        let alone = wait(&mut pool, 200);
        cancel(&mut pool, alone);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        advance_and_drain(&mut pool, 200).await;
        let stats = pool.stats();
        assert_eq!((stats.waiters, stats.waits_served, stats.waits_timed_out, stats.get_misses), (0, 2, 0, 0));
        assert_eq!(info(&mut pool, &id).leases, 3);
    });
}

/// A waiter that goes away after it was served: the lease made for it is undone, the key goes to the next
/// waiter (or back to the free list), and nothing counts it as a lease or a hit.
#[test]
fn a_wait_cancelled_after_its_grant_gives_the_key_back() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        let (_, token) = lease(&mut pool);
        let cancelled = wait(&mut pool, 200);
        let next = wait(&mut pool, 200);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!((info(&mut pool, &id).token, info(&mut pool, &id).leases), (Some(token + 1), 2));
        cancel(&mut pool, cancelled);
        let passed_on = info(&mut pool, &id);
        assert_eq!((passed_on.token, passed_on.leases), (Some(token + 2), 2), "the undone lease is not counted");
        assert_eq!(granted(&mut pool, next).token, token + 2);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        // Nobody else waiting: the key is free again.
        lease(&mut pool);
        let alone = wait(&mut pool, 200);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        cancel(&mut pool, alone);
        let freed = info(&mut pool, &id);
        assert_eq!((freed.state, freed.leases), (KeyState::Free, 3));
        let stats = pool.stats();
        assert_eq!((stats.get_hits, stats.waits_served, stats.keys_free, stats.keys_blocked), (3, 1, 1, 0));
        advance_and_drain(&mut pool, 200).await;
        assert_eq!(pool.stats().released_by_timeout, 0, "the undone lease's timer is gone");
    });
}

/// Cancelling a served wait whose lease is already over (released by its key id, and leased again) must
/// leave the new lease alone.
#[test]
fn a_wait_cancelled_after_its_lease_ended_leaves_the_next_lease_alone() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let served = wait(&mut pool, 200);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released, "someone releases the grant's lease");
        let (_, token) = lease(&mut pool);
        let leases = info(&mut pool, &id).leases;
        cancel(&mut pool, served);
        let after = info(&mut pool, &id);
        assert_eq!((after.state, after.token, after.leases), (KeyState::Blocked, Some(token), leases));
    });
}

#[test]
fn a_wait_cancelled_after_it_ran_out_changes_nothing() {
    paused(async {
        let mut pool = pool();
        let passed_over = wait(&mut pool, 50);
        advance(50).await;
        let id = generate(&mut pool, 1)[0]; // the wait has passed, though its timer has not fired
        assert_eq!(state(&mut pool, &id), Some(KeyState::Free));
        cancel(&mut pool, passed_over);
        drain(&mut pool);
        lease(&mut pool);
        let ran_out = wait(&mut pool, 10);
        advance_and_drain(&mut pool, 10).await; // its timer fired; it was never collected
        cancel(&mut pool, ran_out);
        drain(&mut pool);
        let stats = pool.stats();
        assert_eq!((stats.waiters, stats.waits_timed_out, stats.get_misses, stats.keys_blocked), (0, 2, 2, 1));
    });
}

/// A lease that may wait, asked while a mass expiry is still being applied: GET's draw gives up after a
/// few dead keys, so the request waits although a live key is free. The key must still come to it.
#[test]
fn a_waiting_lease_during_a_mass_expiry_gets_the_live_key_left_on_the_free_list() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, 100, 10_000);
        generate(&mut pool, 5000);
        advance(50).await;
        let live = generate(&mut pool, 1)[0];
        advance(60).await; // the 5000 are due; `live` is not; no expiry pass has run
        let mut waiting = None;
        for _ in 0..20 {
            match pool.lease(LeaseTerms::default(), Duration::from_millis(1000)) {
                LeaseOutcome::Leased(leased) => {
                    assert_eq!(*leased.id, live);
                    assert_eq!(pool.release(&live), Release::Released);
                }
                LeaseOutcome::Waiting(ticket) => {
                    waiting = Some(ticket);
                    break;
                }
                LeaseOutcome::NotFound => panic!("a lease that may wait did not"),
            }
        }
        let waiting = waiting.expect("some draw gave up on the dead keys");
        pool.check_invariants();
        drain(&mut pool);
        assert_eq!(granted(&mut pool, waiting).id, live);
        assert_eq!(pool.stats().keys, 1);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Wake-ups

#[test]
fn a_waiting_lease_registers_its_waker_and_a_grant_wakes_it_once() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let waiting = wait(&mut pool, 200);
        let (counter, waker) = counting_waker();
        assert_eq!(poll_with(&mut pool, &waiting, &waker), Poll::Pending);
        assert_eq!(poll_with(&mut pool, &waiting, &waker), Poll::Pending, "polled again by the same task");
        advance_and_drain(&mut pool, 50).await;
        assert_eq!(wakes(&counter), 0, "nothing happened yet");
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!(wakes(&counter), 1, "the grant wakes the waiting task, once");
        match poll_with(&mut pool, &waiting, &waker) {
            Poll::Ready(Some(grant)) => assert_eq!(grant.id, id),
            other => panic!("expected a grant, got {other:?}"),
        }
        advance_and_drain(&mut pool, 200).await;
        assert_eq!(wakes(&counter), 1);
    });
}

#[test]
fn a_waiting_lease_is_woken_when_its_wait_runs_out() {
    paused(async {
        let mut pool = pool();
        let waiting = wait(&mut pool, 50);
        let (counter, waker) = counting_waker();
        assert_eq!(poll_with(&mut pool, &waiting, &waker), Poll::Pending);
        advance_and_drain(&mut pool, 49).await;
        assert_eq!(wakes(&counter), 0);
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(wakes(&counter), 1, "the timeout wakes the waiting task");
        assert_eq!(poll_with(&mut pool, &waiting, &waker), Poll::Ready(None));
    });
}

#[test]
fn a_waiting_lease_wakes_the_task_that_polled_it_last() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let waiting = wait(&mut pool, 200);
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        assert_eq!(poll_with(&mut pool, &waiting, &first_waker), Poll::Pending);
        assert_eq!(poll_with(&mut pool, &waiting, &second_waker), Poll::Pending);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!((wakes(&first), wakes(&second)), (0, 1));
    });
}

#[test]
fn a_waiter_passed_over_because_its_wait_has_passed_is_woken_too() {
    paused(async {
        let mut pool = pool();
        let id = generate(&mut pool, 1)[0];
        lease(&mut pool);
        let waiting = wait(&mut pool, 50);
        let (counter, waker) = counting_waker();
        assert_eq!(poll_with(&mut pool, &waiting, &waker), Poll::Pending);
        advance(50).await;
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert_eq!(wakes(&counter), 1);
        assert_eq!(poll_with(&mut pool, &waiting, &waker), Poll::Ready(None));
        drain(&mut pool);
        assert_eq!(wakes(&counter), 1);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Release on close

#[test]
fn closing_a_holder_releases_only_the_leases_it_still_holds() {
    paused(async {
        let mut pool = pool();
        let holder = open_holder(&mut pool);
        let other = open_holder(&mut pool);
        generate(&mut pool, 8);
        let (held, held_token, _) = lease_on(&mut pool, terms(None, Some(holder)));
        let (released, released_token, _) = lease_on(&mut pool, terms(None, Some(holder)));
        assert_eq!(rel(&mut pool, &released, Some(released_token), 0), Release::Released);
        let (delayed, _, _) = lease_on(&mut pool, terms(None, Some(holder)));
        assert_eq!(rel(&mut pool, &delayed, None, 500), Release::Released);
        let (deleted, _, _) = lease_on(&mut pool, terms(None, Some(holder)));
        assert!(pool.delete(&deleted));
        let (timed_out, _, _) = lease_on(&mut pool, terms(Some(10), Some(holder)));
        let (others, others_token, _) = lease_on(&mut pool, terms(None, Some(other)));
        let (plain, plain_token) = lease(&mut pool);
        advance_and_drain(&mut pool, 10).await;
        assert_eq!(state(&mut pool, &timed_out), Some(KeyState::Free));
        get_exactly(&mut pool, &timed_out); // leased again, by someone else
        let leased_again = info(&mut pool, &timed_out).token;
        assert_eq!(touch(&mut pool, &held, Some(held_token), Some(1000)), Release::Released, "TOUCH keeps the holder");
        assert_eq!(close_holder(&mut pool, holder), 1);
        assert_eq!(state(&mut pool, &held), Some(KeyState::Free));
        assert_eq!(state(&mut pool, &delayed), Some(KeyState::Delayed));
        assert_eq!(info(&mut pool, &timed_out).token, leased_again, "the new lease is not the holder's");
        assert_eq!(info(&mut pool, &others).token, Some(others_token));
        assert_eq!(info(&mut pool, &plain).token, Some(plain_token));
        let stats = pool.stats();
        assert_eq!((stats.released_by_close, stats.released_by_timeout), (1, 1));
        assert_eq!(close_holder(&mut pool, other), 1);
        assert_eq!(state(&mut pool, &others), Some(KeyState::Free));
        assert_eq!(pool.stats().released_by_close, 2);
        let reopened = open_holder(&mut pool);
        assert_eq!(close_holder(&mut pool, reopened), 0, "a holder's slot, reused, starts empty");
    });
}

/// A lease whose window (or key) has passed but that the expiry task has not applied yet ended by
/// timeout, not by the close: the close leaves it to the timer, which counts it once.
#[test]
fn closing_a_holder_leaves_leases_past_their_deadline_to_the_expiry() {
    paused(async {
        let mut pool = pool();
        let holder = open_holder(&mut pool);
        let ids = generate(&mut pool, 2);
        let (short, _, _) = lease_on(&mut pool, terms(Some(10), Some(holder)));
        let (long, _, _) = lease_on(&mut pool, terms(Some(10_000), Some(holder)));
        advance(10).await;
        assert_eq!(close_holder(&mut pool, holder), 1, "only the lease still within its window");
        assert_eq!(pool.stats().released_by_close, 1);
        drain(&mut pool);
        assert_eq!(state(&mut pool, &short), Some(KeyState::Free));
        assert_eq!(state(&mut pool, &long), Some(KeyState::Free));
        assert_eq!(pool.stats().released_by_timeout, 1);
        // And a lease whose key has missed its keep-alive is deleted by the expiry, not released.
        let other = open_holder(&mut pool);
        lease_on(&mut pool, terms(Some(10_000), Some(other)));
        advance(KEEPALIVE_MS).await;
        assert_eq!(close_holder(&mut pool, other), 0);
        drain(&mut pool);
        assert!(ids.iter().all(|id| pool.info(id).is_none()));
        let stats = pool.stats();
        assert_eq!((stats.released_by_close, stats.expired_keepalive), (1, 2));
    });
}

// ---------------------------------------------------------------------------------------------------------
// ADD: keys with secrets

#[test]
fn add_creates_a_free_key_that_carries_its_secret() {
    paused(async {
        let mut pool = pool();
        advance(5).await;
        let id = add_new(&mut pool, "sk-live-1", None);
        assert_eq!(
            pool.info(&id),
            Some(KeyInfo {
                id,
                state: KeyState::Free,
                created_ms: unix(&pool, 5),
                alive_until_ms: Some(unix(&pool, 5 + KEEPALIVE_MS)),
                blocked_until_ms: None,
                token: None,
                free_at_ms: None,
                leases: 0,
            })
        );
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_free, stats.keys_added, stats.keys_generated), (1, 1, 1, 0));
        assert_eq!(lease_on(&mut pool, LeaseTerms::default()), (id, 1, Some(b"sk-live-1".to_vec())));
        let generated = generate(&mut pool, 1)[0];
        assert_eq!(lease_on(&mut pool, LeaseTerms::default()), (generated, 2, None), "a generated key has no secret");
    });
}

#[test]
fn re_adding_a_secret_answers_exists_and_creates_nothing_whatever_the_keys_state() {
    paused(async {
        let mut pool = pool();
        let id = add_new(&mut pool, "secret", None);
        assert_eq!(add(&mut pool, "secret", None), Added::Exists(id));
        assert_eq!(add(&mut pool, "secret", Some(0)), Added::Exists(id), "whatever keep-alive is asked");
        assert_eq!(info(&mut pool, &id).alive_until_ms, Some(unix(&pool, KEEPALIVE_MS)), "and changes nothing");
        let (_, token) = lease(&mut pool);
        assert_eq!(add(&mut pool, "secret", None), Added::Exists(id), "blocked");
        assert_eq!(info(&mut pool, &id).token, Some(token));
        assert_eq!(rel(&mut pool, &id, Some(token), 50), Release::Released);
        assert_eq!(add(&mut pool, "secret", None), Added::Exists(id), "delayed");
        assert_ne!(add_new(&mut pool, "secreT", None), id, "secrets are compared byte for byte");
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_added), (2, 2));
    });
}

#[test]
fn a_secret_makes_a_new_key_once_its_old_key_is_deleted_or_expired() {
    paused(async {
        let mut pool = pool();
        let first = add_new(&mut pool, "secret", None);
        assert!(pool.delete(&first));
        let second = add_new(&mut pool, "secret", None);
        assert_ne!(second, first);
        advance_and_drain(&mut pool, KEEPALIVE_MS).await;
        assert_eq!(pool.info(&second), None);
        let third = add_new(&mut pool, "secret", None);
        // Past the keep-alive deadline with no expiry pass yet: ADD applies the expiry first.
        advance(KEEPALIVE_MS).await;
        let fourth = add_new(&mut pool, "secret", None);
        assert_ne!(fourth, third);
        assert_eq!(pool.info(&third), None);
        assert_eq!(pool.stats().expired_keepalive, 2);
        drain(&mut pool);
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_added, stats.expired_keepalive), (1, 4, 2));
    });
}

#[test]
fn a_grant_carries_its_own_copy_of_the_secret() {
    paused(async {
        let mut pool = pool();
        let id = add_new(&mut pool, "the-secret", None);
        lease(&mut pool);
        let waiting = wait(&mut pool, 200);
        assert_eq!(rel(&mut pool, &id, None, 0), Release::Released);
        assert!(pool.delete(&id), "the key goes before the waiter collects its grant");
        let grant = granted(&mut pool, waiting);
        assert_eq!((grant.id, grant.secret.as_deref()), (id, Some(&b"the-secret"[..])));
    });
}

#[test]
fn a_key_with_its_own_keep_alive_window_expires_at_its_own_deadline() {
    paused(async {
        let mut pool = pool();
        let generated = generate(&mut pool, 1)[0];
        let short = add_new(&mut pool, "short", Some(50));
        let long = add_new(&mut pool, "long", Some(500));
        assert_eq!(info(&mut pool, &short).alive_until_ms, Some(unix(&pool, 50)));
        assert_eq!(info(&mut pool, &long).alive_until_ms, Some(unix(&pool, 500)));
        advance_and_drain(&mut pool, 49).await;
        assert!(pool.info(&short).is_some());
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&short), None, "the short window, not the pool's");
        advance_and_drain(&mut pool, KEEPALIVE_MS - 50).await;
        assert_eq!(pool.info(&generated), None);
        assert!(pool.info(&long).is_some(), "the long window, not the pool's");
        assert!(pool.keep_alive(&long), "PING restarts the key's own window");
        pool.check_invariants();
        assert_eq!(info(&mut pool, &long).alive_until_ms, Some(unix(&pool, KEEPALIVE_MS + 500)));
        advance_and_drain(&mut pool, 499).await;
        assert!(pool.info(&long).is_some());
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&long), None);
        assert_eq!(pool.stats().expired_keepalive, 3);
    });
}

#[test]
fn a_key_added_with_a_keep_alive_of_zero_never_expires() {
    paused(async {
        let mut pool = pool();
        let id = add_new(&mut pool, "forever", Some(0));
        assert_eq!(info(&mut pool, &id).alive_until_ms, None);
        advance_and_drain(&mut pool, 10 * KEEPALIVE_MS).await;
        assert!(pool.keep_alive(&id));
        assert_eq!(info(&mut pool, &id).alive_until_ms, None, "PING leaves it without a deadline");
        let (_, token) = lease(&mut pool);
        advance_and_drain(&mut pool, 3 * DAY_MS).await;
        let later = info(&mut pool, &id);
        assert_eq!((later.state, later.alive_until_ms), (KeyState::Free, None));
        assert_eq!(rel(&mut pool, &id, Some(token), 0), Release::Stale);
        assert_eq!(pool.stats().expired_keepalive, 0);
        assert!(pool.delete(&id));
        pool.check_invariants();
    });
}

#[test]
fn a_keep_alive_of_zero_means_never_even_in_a_pool_whose_own_window_is_zero() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, 0, 10);
        let id = add_new(&mut pool, "forever", Some(0));
        assert_eq!(info(&mut pool, &id).alive_until_ms, None);
        advance_and_drain(&mut pool, 1000).await;
        assert!(pool.info(&id).is_some());
    });
}

#[test]
fn a_keep_alive_window_equal_to_the_pools_expires_with_the_pool() {
    paused(async {
        let mut pool = pool();
        let id = add_new(&mut pool, "same", Some(KEEPALIVE_MS));
        advance_and_drain(&mut pool, KEEPALIVE_MS - 1).await;
        assert!(pool.keep_alive(&id));
        advance_and_drain(&mut pool, KEEPALIVE_MS - 1).await;
        assert!(pool.info(&id).is_some());
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&id), None);
    });
}

#[test]
fn add_to_a_full_pool_is_refused_unless_the_secret_is_already_there() {
    paused(async {
        let mut pool = pool_with(BLOCK_MS, KEEPALIVE_MS, 2);
        let generated = generate(&mut pool, 1)[0];
        let first = add_new(&mut pool, "first", None);
        assert_eq!(pool.add(b"second", None), Err(PoolError::Full));
        pool.check_invariants();
        assert_eq!(add(&mut pool, "first", None), Added::Exists(first), "an existing secret needs no room");
        let stats = pool.stats();
        assert_eq!((stats.keys, stats.keys_added), (2, 1));
        assert!(pool.delete(&generated));
        add_new(&mut pool, "second", None);
        // A full pool where the secret's own key has expired: its room is given back first.
        advance(KEEPALIVE_MS).await;
        add_new(&mut pool, "first", None);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Windows beyond the timer horizon

/// Waits and blocks asked per request may be longer than the one-day timer horizon: they are re-armed
/// day by day and must end at their exact deadline, with the pool's default windows (`Pool::new`).
#[test]
fn waits_and_blocks_longer_than_the_timer_horizon_end_at_their_exact_deadline() {
    paused(async {
        let mut pool = Pool::new(PoolConfig::default());
        let waiting = wait(&mut pool, 3 * DAY_MS);
        let forever = add_new(&mut pool, "forever", Some(0));
        assert_eq!(granted(&mut pool, waiting).id, forever, "ADD serves the waiter");
        assert_eq!(rel(&mut pool, &forever, None, 0), Release::Released);
        lease_on(&mut pool, terms(Some(2 * DAY_MS), None));
        let long_wait = wait(&mut pool, 3 * DAY_MS);
        let too_short = wait(&mut pool, DAY_MS + 5);
        advance_and_drain(&mut pool, DAY_MS + 4).await;
        assert_waiting(&mut pool, &[&long_wait, &too_short]);
        advance_and_drain(&mut pool, 1).await;
        timed_out(&mut pool, too_short);
        advance_and_drain(&mut pool, DAY_MS - 6).await;
        assert_waiting(&mut pool, &[&long_wait]);
        assert_eq!(state(&mut pool, &forever), Some(KeyState::Blocked), "at the block's end - 1 ms");
        advance_and_drain(&mut pool, 1).await;
        let grant = granted(&mut pool, long_wait);
        assert_eq!(grant.id, forever, "served the moment the two-day block ended");
        assert_eq!(info(&mut pool, &forever).blocked_until_ms, Some(unix(&pool, 2 * DAY_MS + 60_000)));
        assert_eq!(touch(&mut pool, &forever, Some(grant.token), Some(10 * DAY_MS)), Release::Released);
        let lonely = wait(&mut pool, 5 * DAY_MS);
        advance_and_drain(&mut pool, 5 * DAY_MS - 1).await;
        assert_waiting(&mut pool, &[&lonely]);
        advance_and_drain(&mut pool, 1).await;
        timed_out(&mut pool, lonely);
        let stats = pool.stats();
        assert_eq!((stats.waits_served, stats.waits_timed_out, stats.released_by_timeout), (2, 2, 1));
    });
}

#[test]
fn touches_delays_and_keep_alive_windows_longer_than_the_timer_horizon_end_at_their_exact_deadline() {
    paused(async {
        let mut pool = Pool::new(PoolConfig::default());
        let key = add_new(&mut pool, "forever", Some(0));
        let (_, token) = lease(&mut pool);
        advance_and_drain(&mut pool, 1000).await;
        assert_eq!(touch(&mut pool, &key, Some(token), Some(3 * DAY_MS)), Release::Released);
        advance_and_drain(&mut pool, 3 * DAY_MS - 1).await;
        assert_eq!(state(&mut pool, &key), Some(KeyState::Blocked));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(state(&mut pool, &key), Some(KeyState::Free));
        let (_, token) = lease(&mut pool);
        assert_eq!(rel(&mut pool, &key, Some(token), 4 * DAY_MS), Release::Released);
        advance_and_drain(&mut pool, 4 * DAY_MS - 1).await;
        assert_eq!(state(&mut pool, &key), Some(KeyState::Delayed));
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(state(&mut pool, &key), Some(KeyState::Free));
        let mortal = add_new(&mut pool, "mortal", Some(3 * DAY_MS));
        advance_and_drain(&mut pool, 2 * DAY_MS).await;
        assert!(pool.keep_alive(&mortal));
        advance_and_drain(&mut pool, 3 * DAY_MS - 1).await;
        assert!(pool.info(&mortal).is_some());
        advance_and_drain(&mut pool, 1).await;
        assert_eq!(pool.info(&mortal), None);
        assert!(pool.info(&key).is_some());
        let stats = pool.stats();
        assert_eq!((stats.released_by_timeout, stats.expired_keepalive), (1, 1));
    });
}
