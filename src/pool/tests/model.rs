//! The engine's model-based property test: random sequences of operations run against the engine and
//! against [`Model`], a plain `BTreeMap` of what every live key should look like, and every outcome, the
//! stats, and `info()` of every id ever issued must agree after every step.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::*;

/// What one live key should look like, in engine milliseconds.
#[derive(Clone, Copy, Debug)]
struct ModelKey {
    created: u64,
    alive_until: u64,
    blocked_until: Option<u64>,
    /// The token of the last lease; current only while `blocked_until` is set.
    token: u64,
    leases: u32,
}

/// The reference model: every live key and the running totals.
#[derive(Debug)]
struct Model {
    block_ms: u64,
    keepalive_ms: u64,
    max_keys: usize,
    now: u64,
    keys: BTreeMap<KeyId, ModelKey>,
    totals: PoolStats,
    /// Blocks that ended in the same expiry pass that deleted their key, and no later than the key's
    /// keep-alive deadline. Whether the engine counts those in `released_by_timeout` depends on which of
    /// its timers fires first (at equal deadlines, on the wheel's order), so the model allows either: the
    /// engine's count must lie in `totals.released_by_timeout ..= that + timeout_slack`.
    timeout_slack: u64,
    /// The token the next lease gets.
    next_token: u64,
}

impl Model {
    fn new(block_ms: u64, keepalive_ms: u64, max_keys: usize) -> Model {
        Model {
            block_ms,
            keepalive_ms,
            max_keys,
            now: 0,
            keys: BTreeMap::new(),
            totals: PoolStats::default(),
            timeout_slack: 0,
            next_token: 1,
        }
    }

    fn stats(&self) -> PoolStats {
        let keys_blocked = self.keys.values().filter(|key| key.blocked_until.is_some()).count();
        PoolStats { keys: self.keys.len(), keys_free: self.keys.len() - keys_blocked, keys_blocked, ..self.totals }
    }

    /// The earliest deadline of any live key.
    fn next_deadline(&self) -> Option<u64> {
        self.keys.values().flat_map(|key| [Some(key.alive_until), key.blocked_until]).flatten().min()
    }

    /// One expiry pass at `now`: applies every deadline `<= now`. Returns how many it applied.
    fn expire(&mut self, now: u64) -> usize {
        self.now = now;
        let mut applied = 0;
        let totals = &mut self.totals;
        let slack = &mut self.timeout_slack;
        self.keys.retain(|_, key| {
            if key.alive_until <= now {
                totals.expired_keepalive += 1;
                if key.blocked_until.is_some_and(|until| until <= key.alive_until) {
                    *slack += 1;
                }
                applied += 1;
                return false;
            }
            if key.blocked_until.is_some_and(|until| until <= now) {
                key.blocked_until = None;
                totals.released_by_timeout += 1;
                applied += 1;
            }
            true
        });
        applied
    }

    fn generate(&mut self, count: u32) -> Result<(), PoolError> {
        if self.keys.len() + count as usize > self.max_keys {
            return Err(PoolError::Full);
        }
        self.totals.keys_generated += u64::from(count);
        Ok(())
    }

    fn add(&mut self, id: KeyId) {
        let key = ModelKey {
            created: self.now,
            alive_until: self.now + self.keepalive_ms,
            blocked_until: None,
            token: 0,
            leases: 0,
        };
        assert!(self.keys.insert(id, key).is_none(), "{id} is new");
    }

    fn free_keys(&self) -> usize {
        self.keys.values().filter(|key| key.blocked_until.is_none()).count()
    }

    /// GET handed out `id`, which must have been free; `None` is right only when nothing was free.
    fn get(&mut self, got: Option<KeyId>) {
        match got {
            None => {
                assert_eq!(self.free_keys(), 0, "GET missed with free keys");
                self.totals.get_misses += 1;
            }
            Some(id) => {
                let key = self.keys.get_mut(&id).unwrap_or_else(|| panic!("GET handed out {id}, which is not live"));
                assert_eq!(key.blocked_until, None, "GET handed out {id}, which is blocked");
                key.blocked_until = Some(self.now + self.block_ms);
                key.token = self.next_token;
                self.next_token += 1;
                key.leases += 1;
                self.totals.get_hits += 1;
            }
        }
    }

    fn release(&mut self, id: &KeyId) -> Release {
        match self.keys.get_mut(id) {
            None => Release::NotFound,
            Some(key) if key.blocked_until.is_none() => Release::NotBlocked,
            Some(key) => {
                key.blocked_until = None;
                Release::Released
            }
        }
    }

    fn delete(&mut self, id: &KeyId) -> bool {
        self.keys.remove(id).is_some()
    }

    fn keep_alive(&mut self, id: &KeyId) -> bool {
        match self.keys.get_mut(id) {
            None => false,
            Some(key) => {
                key.alive_until = self.now + self.keepalive_ms;
                true
            }
        }
    }
}

/// Which id an operation names.
#[derive(Clone, Debug)]
enum Target {
    /// One of the ids ever issued, live or not (any number picks one, modulo how many there are).
    Issued(usize),
    /// One of the live keys.
    Live(usize),
    /// A blocked key.
    Blocked(usize),
    /// An id never issued.
    Unknown,
}

#[derive(Clone, Debug)]
enum Op {
    Generate(u32),
    Get,
    Release(Target),
    Delete(Target),
    KeepAlive(Target),
    Info(Target),
    /// Moves time `ms` forward. `stepwise`: the expiry pass runs at every deadline on the way, as the
    /// expiry task does when it keeps up; otherwise it runs once, at the end, as when it falls behind.
    Advance {
        ms: u64,
        stepwise: bool,
    },
}

/// The engine and the model side by side.
struct Run {
    pool: Pool,
    model: Model,
    issued: Vec<KeyId>,
}

impl Run {
    fn new(block_ms: u64, keepalive_ms: u64, max_keys: usize) -> Run {
        Run {
            pool: pool_with(block_ms, keepalive_ms, max_keys),
            model: Model::new(block_ms, keepalive_ms, max_keys),
            issued: Vec::new(),
        }
    }

    fn resolve(&self, target: &Target) -> KeyId {
        let pick = |ids: Vec<KeyId>, index: &usize| if ids.is_empty() { unknown_id() } else { ids[index % ids.len()] };
        match target {
            Target::Issued(index) => pick(self.issued.clone(), index),
            Target::Live(index) => pick(self.model.keys.keys().copied().collect(), index),
            Target::Blocked(index) => pick(
                self.model.keys.iter().filter(|(_, key)| key.blocked_until.is_some()).map(|(id, _)| *id).collect(),
                index,
            ),
            Target::Unknown => unknown_id(),
        }
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Generate(count) => {
                let mut new = Vec::new();
                let outcome = self.pool.generate(*count, |id| new.push(*id));
                assert_eq!(outcome, self.model.generate(*count), "GEN {count}");
                if outcome.is_ok() {
                    assert_eq!(new.len(), *count as usize, "GEN {count} reports every id");
                } else {
                    assert!(new.is_empty(), "a refused GEN reports no ids");
                }
                for id in new {
                    assert!(!self.issued.contains(&id), "{id} issued twice");
                    self.model.add(id);
                    self.issued.push(id);
                }
            }
            Op::Get => {
                let got = self.pool.get();
                self.model.get(got);
            }
            Op::Release(target) => {
                let id = self.resolve(target);
                assert_eq!(self.pool.release(&id), self.model.release(&id), "REL {id}");
            }
            Op::Delete(target) => {
                let id = self.resolve(target);
                assert_eq!(self.pool.delete(&id), self.model.delete(&id), "DEL {id}");
            }
            Op::KeepAlive(target) => {
                let id = self.resolve(target);
                assert_eq!(self.pool.keep_alive(&id), self.model.keep_alive(&id), "PING {id}");
            }
            Op::Info(target) => {
                let id = self.resolve(target);
                assert_eq!(self.pool.info(&id), self.expected_info(&id), "INFO {id}");
            }
            Op::Advance { ms, stepwise } => {
                let target = self.model.now + ms;
                if *stepwise {
                    while let Some(deadline) = self.model.next_deadline().filter(|deadline| *deadline <= target) {
                        self.pass_at(deadline).await;
                        self.check();
                    }
                }
                self.pass_at(target).await;
            }
        }
        self.check();
    }

    /// Moves time to `at` and runs one expiry pass there, in the engine and in the model.
    async fn pass_at(&mut self, at: u64) {
        advance(at - self.model.now).await;
        assert_eq!(now(&self.pool), at);
        let work = drain(&mut self.pool);
        let applied = self.model.expire(at);
        if applied > 0 {
            assert!(work > 0, "{applied} deadlines due at {at}, yet poll_expired did nothing");
        }
    }

    fn expected_info(&self, id: &KeyId) -> Option<KeyInfo> {
        let key = self.model.keys.get(id)?;
        let unix = |ms| unix(&self.pool, ms);
        Some(KeyInfo {
            id: *id,
            state: if key.blocked_until.is_some() { KeyState::Blocked } else { KeyState::Free },
            created_ms: unix(key.created),
            alive_until_ms: Some(unix(key.alive_until)),
            blocked_until_ms: key.blocked_until.map(unix),
            token: key.blocked_until.map(|_| key.token),
            free_at_ms: None,
            leases: key.leases,
        })
    }

    /// The engine agrees with the model: invariants, stats, and every id ever issued.
    fn check(&mut self) {
        self.pool.check_invariants();
        let actual = self.pool.stats();
        let expected = self.model.stats();
        assert_eq!(
            PoolStats { released_by_timeout: 0, ..actual },
            PoolStats { released_by_timeout: 0, ..expected },
            "stats at {}",
            self.model.now
        );
        let least = expected.released_by_timeout;
        assert!(
            (least..=least + self.model.timeout_slack).contains(&actual.released_by_timeout),
            "released_by_timeout {} at {}, expected {least} (+ up to {})",
            actual.released_by_timeout,
            self.model.now,
            self.model.timeout_slack
        );
        for id in &self.issued {
            assert_eq!(self.pool.info(id), self.expected_info(id), "INFO {id} at {}", self.model.now);
        }
    }
}

/// Runs `ops` against a fresh engine and model in a paused runtime, checking after every step.
fn run_model(block_ms: u64, keepalive_ms: u64, max_keys: usize, ops: &[Op]) -> Model {
    paused(async {
        let mut run = Run::new(block_ms, keepalive_ms, max_keys);
        run.check();
        for op in ops {
            run.apply(op).await;
        }
        run.model
    })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => any::<usize>().prop_map(Target::Issued),
        3 => any::<usize>().prop_map(Target::Live),
        3 => any::<usize>().prop_map(Target::Blocked),
        1 => Just(Target::Unknown),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..=4).prop_map(Op::Generate),
        1 => (5u32..=30).prop_map(Op::Generate),
        6 => Just(Op::Get),
        4 => target().prop_map(Op::Release),
        2 => target().prop_map(Op::Delete),
        4 => target().prop_map(Op::KeepAlive),
        2 => target().prop_map(Op::Info),
        6 => (0u64..=120, any::<bool>()).prop_map(|(ms, stepwise)| Op::Advance { ms, stepwise }),
    ]
}

#[test]
fn the_model_harness_sees_every_kind_of_expiry() {
    let ops = [
        Op::Generate(3),
        Op::Get,
        Op::Advance { ms: 30, stepwise: true },
        Op::Generate(2),
        Op::Get,
        Op::KeepAlive(Target::Blocked(0)),
        Op::Advance { ms: 120, stepwise: true },
        Op::Get,
        Op::Release(Target::Blocked(0)),
        Op::Advance { ms: 120, stepwise: false },
        Op::Advance { ms: 120, stepwise: true },
    ];
    let model = run_model(40, 100, 10, &ops);
    assert!(model.totals.released_by_timeout >= 2, "{model:?}");
    assert_eq!(model.totals.expired_keepalive, 5, "{model:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_model_after_every_step(
        // Windows of at least 1 ms: the model applies deadlines only in expiry passes, and every Advance
        // ends with a full pass, so no command ever meets a key past a deadline. Zero windows, where it
        // would, are pinned down by their own tests above.
        block_ms in 1u64..=80,
        keepalive_ms in 1u64..=250,
        max_keys in 1usize..=30,
        ops in prop::collection::vec(op(), 1..100),
    ) {
        run_model(block_ms, keepalive_ms, max_keys, &ops);
    }
}
