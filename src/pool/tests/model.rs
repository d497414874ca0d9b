//! The engine's model-based property test: random sequences of operations run against the engine and
//! against [`Model`], a plain `BTreeMap` of what every live key should look like plus a list of every wait
//! ever asked, and every outcome, the stats, `info()` of every id ever issued and the state of every wait
//! not yet collected must agree after every step.
//!
//! The model is written to be obviously right rather than fast: every rule is a few lines over the whole
//! map (O(n) per operation is fine here). Where the engine chooses and the model cannot know the choice,
//! the model checks that the choice was allowed and follows it:
//!
//! - GET and LEASE draw a random free key: any free key is allowed, none only when none is free;
//! - keys that come free in the same expiry pass go to waiters in the order their timers fire, which for
//!   equal deadlines is the timer wheel's business. The grants carry consecutive tokens in that order, so
//!   the engine's tokens tell the order, and the model then hands the keys out by its own rule (a freed key
//!   goes to the oldest waiter, or is free) and must come out the same.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::*;

/// Where a model key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelPlace {
    Free,
    /// Leased until `until` under `token`, on the list of holder number `holder`, if any.
    Blocked {
        until: u64,
        token: u64,
        holder: Option<usize>,
    },
    /// Released with a delay: leased to no one until `until`.
    Delayed {
        until: u64,
    },
}

/// Which keep-alive window a key follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelKeepalive {
    Pool,
    Own(u64),
    Never,
}

/// What one live key should look like, in engine milliseconds.
#[derive(Clone, Debug)]
struct ModelKey {
    created: u64,
    /// `None` for a key that never expires by keep-alive.
    alive_until: Option<u64>,
    keepalive: ModelKeepalive,
    place: ModelPlace,
    /// The token of the key's last lease, 0 if it was never leased; current only while it is blocked.
    last_token: u64,
    leases: u32,
    secret: Option<Vec<u8>>,
}

/// Where a lease request that waited is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ModelWait {
    /// In line until `until`; leases on these terms when served.
    Waiting { until: u64, block: Option<u64> },
    /// Served, not collected yet.
    Granted(Grant),
    /// Its wait ran out, not collected yet.
    TimedOut,
    /// Collected or cancelled: the ticket is spent.
    Done,
}

/// One lease request that waited, by ticket number (the order they came in).
#[derive(Clone, Debug)]
struct ModelTicket {
    /// The holder number of the connection that asked, if it asked for release on close.
    holder: Option<usize>,
    wait: ModelWait,
}

/// The reference model: every live key, every wait, every holder, and the running totals.
#[derive(Debug)]
struct Model {
    block_ms: u64,
    keepalive_ms: u64,
    max_keys: usize,
    now: u64,
    keys: BTreeMap<KeyId, ModelKey>,
    /// Every wait ever asked, in the order asked: the line is the `Waiting` ones, in this order.
    tickets: Vec<ModelTicket>,
    /// Whether each holder ever opened is still open, by holder number.
    holders: Vec<bool>,
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
            tickets: Vec::new(),
            holders: Vec::new(),
            totals: PoolStats::default(),
            timeout_slack: 0,
            next_token: 1,
        }
    }

    fn count(&self, place: impl Fn(&ModelPlace) -> bool) -> usize {
        self.keys.values().filter(|key| place(&key.place)).count()
    }

    fn free_keys(&self) -> usize {
        self.count(|place| *place == ModelPlace::Free)
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            keys: self.keys.len(),
            keys_free: self.free_keys(),
            keys_blocked: self.count(|place| matches!(place, ModelPlace::Blocked { .. })),
            keys_delayed: self.count(|place| matches!(place, ModelPlace::Delayed { .. })),
            waiters: self.tickets.iter().filter(|ticket| matches!(ticket.wait, ModelWait::Waiting { .. })).count(),
            ..self.totals
        }
    }

    /// The earliest deadline of any live key or waiting request.
    fn next_deadline(&self) -> Option<u64> {
        let keys = self.keys.values().flat_map(|key| {
            let place = match key.place {
                ModelPlace::Free => None,
                ModelPlace::Blocked { until, .. } | ModelPlace::Delayed { until } => Some(until),
            };
            [key.alive_until, place]
        });
        let waits = self.tickets.iter().map(|ticket| match ticket.wait {
            ModelWait::Waiting { until, .. } => Some(until),
            _ => None,
        });
        keys.chain(waits).flatten().min()
    }

    /// One expiry pass at `now`: applies every deadline `<= now`. Returns how many it applied, and the
    /// live keys whose block or delay ended, which the caller hands out with [`Model::hand_out`] in the
    /// order the engine did.
    fn expire(&mut self, now: u64) -> (usize, Vec<KeyId>) {
        self.now = now;
        let mut applied = 0;
        for ticket in &mut self.tickets {
            if matches!(ticket.wait, ModelWait::Waiting { until, .. } if until <= now) {
                ticket.wait = ModelWait::TimedOut;
                self.totals.waits_timed_out += 1;
                self.totals.get_misses += 1;
                applied += 1;
            }
        }
        let totals = &mut self.totals;
        let slack = &mut self.timeout_slack;
        self.keys.retain(|_, key| match key.alive_until {
            Some(alive_until) if alive_until <= now => {
                totals.expired_keepalive += 1;
                if matches!(key.place, ModelPlace::Blocked { until, .. } if until <= alive_until) {
                    *slack += 1;
                }
                applied += 1;
                false
            }
            _ => true,
        });
        let mut freed = Vec::new();
        for (id, key) in &mut self.keys {
            match key.place {
                ModelPlace::Blocked { until, .. } if until <= now => {
                    self.totals.released_by_timeout += 1;
                    freed.push(*id);
                }
                ModelPlace::Delayed { until } if until <= now => freed.push(*id),
                _ => continue,
            }
            key.place = ModelPlace::Free;
            applied += 1;
        }
        (applied, freed)
    }

    /// Takes the next token.
    fn take_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token - 1
    }

    /// Leases the key `id`, which must be live and not blocked, on the given terms. Returns the token.
    fn start_lease(&mut self, id: &KeyId, block: Option<u64>, holder: Option<usize>) -> u64 {
        let token = self.take_token();
        let until = self.now + block.unwrap_or(self.block_ms);
        let key = self.keys.get_mut(id).expect("a live key");
        key.place = ModelPlace::Blocked { until, token, holder };
        key.last_token = token;
        key.leases += 1;
        token
    }

    /// The key `id` came free: it goes to the oldest waiting request, or it is free. (Every waiting
    /// request's wait ends after now: expiry passes time out the others first.)
    fn hand_out(&mut self, id: &KeyId) {
        let Some(at) = self.tickets.iter().position(|ticket| matches!(ticket.wait, ModelWait::Waiting { .. })) else {
            self.keys.get_mut(id).expect("a live key").place = ModelPlace::Free;
            return;
        };
        let ModelWait::Waiting { block, .. } = self.tickets[at].wait else { unreachable!() };
        let holder = self.tickets[at].holder;
        let token = self.start_lease(id, block, holder);
        let secret = self.keys[id].secret.clone().map(Vec::into_boxed_slice);
        self.tickets[at].wait = ModelWait::Granted(Grant { id: *id, token, secret });
    }

    fn generate(&mut self, count: u32) -> Result<(), PoolError> {
        if self.keys.len() + count as usize > self.max_keys {
            return Err(PoolError::Full);
        }
        self.totals.keys_generated += u64::from(count);
        Ok(())
    }

    /// A new key, free or straight to a waiter.
    fn create(&mut self, id: KeyId, keepalive: ModelKeepalive, secret: Option<Vec<u8>>) {
        let alive_until = match keepalive {
            ModelKeepalive::Pool => Some(self.now + self.keepalive_ms),
            ModelKeepalive::Own(window) => Some(self.now + window),
            ModelKeepalive::Never => None,
        };
        let key = ModelKey {
            created: self.now,
            alive_until,
            keepalive,
            place: ModelPlace::Free,
            last_token: 0,
            leases: 0,
            secret,
        };
        assert!(self.keys.insert(id, key).is_none(), "{id} is new");
        self.hand_out(&id);
    }

    /// What ADD of `secret` must answer; `Ok(None)` stands for a new key, whose id only the engine knows.
    fn add(&self, secret: &[u8]) -> Result<Option<KeyId>, PoolError> {
        if let Some((id, _)) = self.keys.iter().find(|(_, key)| key.secret.as_deref() == Some(secret)) {
            return Ok(Some(*id));
        }
        if self.keys.len() >= self.max_keys {
            return Err(PoolError::Full);
        }
        Ok(None)
    }

    /// GET handed out `id` (its token is checked through INFO), or nothing, which is right only when no
    /// key was free.
    fn get(&mut self, got: Option<KeyId>) {
        match got {
            None => {
                assert_eq!(self.free_keys(), 0, "GET missed with free keys");
                self.totals.get_misses += 1;
            }
            Some(id) => {
                let key = self.keys.get(&id).unwrap_or_else(|| panic!("GET handed out {id}, which is not live"));
                assert_eq!(key.place, ModelPlace::Free, "GET handed out {id}, which is not free");
                self.start_lease(&id, None, None);
                self.totals.get_hits += 1;
            }
        }
    }

    /// A lease request on these terms, and what the engine answered: a lease of a free key (any one),
    /// `NOT_FOUND` only when no key is free and the request would not wait, and a wait only when no key is
    /// free and it would.
    fn lease(&mut self, outcome: &LeaseOutcome<'_>, wait: u64, block: Option<u64>, holder: Option<usize>) {
        match outcome {
            LeaseOutcome::Leased(leased) => {
                let key = self.keys.get(leased.id).unwrap_or_else(|| panic!("leased {}, not live", leased.id));
                assert_eq!(key.place, ModelPlace::Free, "leased {}, which is not free", leased.id);
                assert_eq!(leased.secret, key.secret.as_deref(), "the secret of {}", leased.id);
                assert_eq!(leased.token, self.next_token, "the lease's token");
                self.start_lease(leased.id, block, holder);
                self.totals.get_hits += 1;
            }
            LeaseOutcome::NotFound => {
                assert_eq!(self.free_keys(), 0, "NOT_FOUND with free keys");
                assert_eq!(wait, 0, "a request that may wait got NOT_FOUND at once");
                self.totals.get_misses += 1;
            }
            LeaseOutcome::Waiting(_) => {
                assert_eq!(self.free_keys(), 0, "a request waits while keys are free");
                assert!(wait > 0, "a request that may not wait waits");
                let until = self.now + wait;
                self.tickets.push(ModelTicket { holder, wait: ModelWait::Waiting { until, block } });
            }
        }
    }

    /// REL: with a token, only that lease; with a delay, the key is leased to no one until it passes.
    fn release(&mut self, id: &KeyId, token: Option<u64>, delay: u64) -> Release {
        let Some(key) = self.keys.get_mut(id) else {
            return Release::NotFound;
        };
        match (key.place, token) {
            (ModelPlace::Blocked { token: current, .. }, given) if given.is_none_or(|given| given == current) => {
                if delay == 0 {
                    self.hand_out(id);
                } else {
                    key.place = ModelPlace::Delayed { until: self.now + delay };
                }
                Release::Released
            }
            (_, Some(_)) => Release::Stale,
            (_, None) => Release::NotBlocked,
        }
    }

    /// TOUCH: the same answers as REL; restarts the block window, and nothing else.
    fn touch(&mut self, id: &KeyId, token: Option<u64>, block: Option<u64>) -> Release {
        let Some(key) = self.keys.get_mut(id) else {
            return Release::NotFound;
        };
        match (&mut key.place, token) {
            (ModelPlace::Blocked { token: current, until, .. }, given)
                if given.is_none_or(|given| given == *current) =>
            {
                *until = self.now + block.unwrap_or(self.block_ms);
                Release::Released
            }
            (_, Some(_)) => Release::Stale,
            (_, None) => Release::NotBlocked,
        }
    }

    fn delete(&mut self, id: &KeyId) -> bool {
        self.keys.remove(id).is_some()
    }

    fn keep_alive(&mut self, id: &KeyId) -> bool {
        let now = self.now;
        let pool_window = self.keepalive_ms;
        match self.keys.get_mut(id) {
            None => false,
            Some(key) => {
                key.alive_until = match key.keepalive {
                    ModelKeepalive::Pool => Some(now + pool_window),
                    ModelKeepalive::Own(window) => Some(now + window),
                    ModelKeepalive::Never => None,
                };
                true
            }
        }
    }

    /// Collecting a wait: pending while it waits; once served or timed out, its outcome, and it is spent.
    fn collect(&mut self, at: usize) -> Poll<Option<Grant>> {
        let outcome = match &self.tickets[at].wait {
            ModelWait::Waiting { .. } => return Poll::Pending,
            ModelWait::Granted(grant) => {
                self.totals.waits_served += 1;
                self.totals.get_hits += 1;
                Poll::Ready(Some(grant.clone()))
            }
            ModelWait::TimedOut => Poll::Ready(None),
            ModelWait::Done => panic!("collecting a spent ticket"),
        };
        self.tickets[at].wait = ModelWait::Done;
        outcome
    }

    /// Cancelling a wait consumes nothing: a lease made for it, if still current, is undone.
    fn cancel(&mut self, at: usize) {
        let wait = std::mem::replace(&mut self.tickets[at].wait, ModelWait::Done);
        if let ModelWait::Granted(grant) = wait {
            let Some(key) = self.keys.get_mut(&grant.id) else {
                return;
            };
            if matches!(key.place, ModelPlace::Blocked { token, .. } if token == grant.token) {
                key.leases -= 1;
                self.hand_out(&grant.id);
            }
        }
    }

    fn open_holder(&mut self) -> usize {
        self.holders.push(true);
        self.holders.len() - 1
    }

    /// Closing a holder releases its leases that are still current, oldest first, as REL would.
    fn close_holder(&mut self, holder: usize) -> usize {
        assert!(self.holders[holder], "closing holder {holder} twice");
        self.holders[holder] = false;
        let mut held: Vec<(u64, KeyId)> = self
            .keys
            .iter()
            .filter_map(|(id, key)| match key.place {
                ModelPlace::Blocked { token, holder: Some(of), .. } if of == holder => Some((token, *id)),
                _ => None,
            })
            .collect();
        held.sort();
        for (_, id) in &held {
            self.hand_out(id);
        }
        self.totals.released_by_close += held.len() as u64;
        held.len()
    }
}

/// Which id an operation names.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// One of the ids ever issued, live or not (any number picks one, modulo how many there are).
    Issued(usize),
    /// One of the live keys.
    Live(usize),
    /// A blocked key.
    Blocked(usize),
    /// A delayed key.
    Delayed(usize),
    /// An id never issued.
    Unknown,
}

/// Which token a REL or TOUCH gives.
#[derive(Clone, Debug)]
pub(super) enum TokenPick {
    /// None: v1's REL and TOUCH.
    Absent,
    /// The token of the key's last lease: current while it is blocked, stale after.
    Last,
    /// Any token from the first to the next one to be handed out (any number picks one): most likely
    /// stale, sometimes current, sometimes not handed out yet.
    Any(u64),
}

/// Which secret an ADD imports.
#[derive(Clone, Debug)]
pub(super) enum SecretPick {
    New,
    /// One imported before (any number picks one), live or not.
    Again(usize),
}

/// One request an [`Op::Prepare`] foresees.
#[derive(Clone, Debug)]
pub(super) enum Hint {
    Lease,
    Release(Target),
    Key(Target),
}

#[derive(Clone, Debug)]
pub(super) enum Op {
    Generate(u32),
    /// v1's GET.
    Get,
    /// LEASE: waits up to `wait_ms` (0: not at all), blocks for `block_ms` (`None`: the pool's window), on
    /// the list of an open holder if `holder` is given and one is open (any number picks one).
    Lease {
        wait_ms: u64,
        block_ms: Option<u64>,
        holder: Option<usize>,
    },
    /// REL; without a token and a delay, v1's REL.
    Release {
        target: Target,
        token: TokenPick,
        delay_ms: u64,
    },
    Touch {
        target: Target,
        token: TokenPick,
        block_ms: Option<u64>,
    },
    Delete(Target),
    KeepAlive(Target),
    Info(Target),
    /// ADD with the pool's keep-alive window (`None`), never expiring (`Some(0)`) or its own.
    Add {
        secret: SecretPick,
        keepalive_ms: Option<u64>,
    },
    /// Polls a wait not yet collected (any number picks one).
    Collect(usize),
    /// Cancels a wait not yet collected (any number picks one).
    Cancel(usize),
    OpenHolder,
    /// Closes an open holder (any number picks one) as a connection does: cancels its waits, then closes.
    CloseHolder(usize),
    /// Looks ahead at requests to come, as a connection does before a batch: must change nothing.
    Prepare(Vec<Hint>),
    /// Moves time `ms` forward. `stepwise`: the expiry pass runs at every deadline on the way, as the
    /// expiry task does when it keeps up; otherwise it runs once, at the end, as when it falls behind.
    Advance {
        ms: u64,
        stepwise: bool,
    },
}

/// The engine and the model side by side.
pub(super) struct Run {
    pub(super) pool: Pool,
    model: Model,
    issued: Vec<KeyId>,
    /// The engine's tickets, by the model's ticket numbers; `None` once spent.
    tickets: Vec<Option<WaitTicket>>,
    /// The engine's holders, by the model's holder numbers.
    holders: Vec<HolderId>,
    /// Every secret imported so far.
    secrets: Vec<Vec<u8>>,
}

impl Run {
    pub(super) fn new(block_ms: u64, keepalive_ms: u64, max_keys: usize) -> Run {
        let mut pool = pool_with(block_ms, keepalive_ms, max_keys);
        // Small pools find keys through the index alone; the model checks the recent-lease path too
        // (the other unit tests keep the index path covered).
        pool.recent_from_keys = 0;
        Run {
            pool,
            model: Model::new(block_ms, keepalive_ms, max_keys),
            issued: Vec::new(),
            tickets: Vec::new(),
            holders: Vec::new(),
            secrets: Vec::new(),
        }
    }

    fn resolve(&self, target: &Target) -> KeyId {
        let pick = |ids: Vec<KeyId>, index: &usize| if ids.is_empty() { unknown_id() } else { ids[index % ids.len()] };
        let in_place = |wanted: fn(&ModelPlace) -> bool| {
            self.model.keys.iter().filter(|(_, key)| wanted(&key.place)).map(|(id, _)| *id).collect()
        };
        match target {
            Target::Issued(index) => pick(self.issued.clone(), index),
            Target::Live(index) => pick(self.model.keys.keys().copied().collect(), index),
            Target::Blocked(index) => pick(in_place(|place| matches!(place, ModelPlace::Blocked { .. })), index),
            Target::Delayed(index) => pick(in_place(|place| matches!(place, ModelPlace::Delayed { .. })), index),
            Target::Unknown => unknown_id(),
        }
    }

    fn token(&self, id: &KeyId, pick: &TokenPick) -> Option<u64> {
        match pick {
            TokenPick::Absent => None,
            TokenPick::Last => Some(self.model.keys.get(id).map_or(1, |key| key.last_token)),
            TokenPick::Any(n) => Some(1 + n % self.model.next_token),
        }
    }

    /// The model's number of an open holder, if any is open.
    fn open_holder(&self, pick: usize) -> Option<usize> {
        let open: Vec<usize> = (0..self.model.holders.len()).filter(|at| self.model.holders[*at]).collect();
        (!open.is_empty()).then(|| open[pick % open.len()])
    }

    /// The model's number of a wait not yet collected, if any.
    fn live_ticket(&self, pick: usize) -> Option<usize> {
        let live: Vec<usize> = (0..self.tickets.len()).filter(|at| self.tickets[*at].is_some()).collect();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }

    fn cancel(&mut self, at: usize) {
        let ticket = self.tickets[at].take().expect("a ticket not yet spent");
        self.pool.cancel_wait(ticket);
        self.model.cancel(at);
    }

    pub(super) async fn apply(&mut self, op: &Op) {
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
                    self.model.create(id, ModelKeepalive::Pool, None);
                    self.issued.push(id);
                }
            }
            Op::Get => {
                let got = self.pool.get();
                self.model.get(got);
            }
            Op::Lease { wait_ms, block_ms, holder } => {
                let holder = holder.and_then(|pick| self.open_holder(pick));
                let terms = LeaseTerms {
                    block: block_ms.map(Duration::from_millis),
                    holder: holder.map(|at| self.holders[at]),
                };
                let outcome = self.pool.lease(terms, Duration::from_millis(*wait_ms));
                self.model.lease(&outcome, *wait_ms, *block_ms, holder);
                if let LeaseOutcome::Waiting(ticket) = outcome {
                    self.tickets.push(Some(ticket));
                }
            }
            Op::Release { target, token, delay_ms } => {
                let id = self.resolve(target);
                let token = self.token(&id, token);
                let actual = if token.is_none() && *delay_ms == 0 {
                    self.pool.release(&id)
                } else {
                    self.pool.release_with(&id, token, Duration::from_millis(*delay_ms))
                };
                assert_eq!(actual, self.model.release(&id, token, *delay_ms), "REL {id} {token:?} {delay_ms}ms");
            }
            Op::Touch { target, token, block_ms } => {
                let id = self.resolve(target);
                let token = self.token(&id, token);
                let actual = self.pool.touch(&id, token, block_ms.map(Duration::from_millis));
                assert_eq!(actual, self.model.touch(&id, token, *block_ms), "TOUCH {id} {token:?} {block_ms:?}");
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
            Op::Prepare(hints) => {
                let upcoming: Vec<Upcoming> = hints
                    .iter()
                    .map(|hint| match hint {
                        Hint::Lease => Upcoming::Lease,
                        Hint::Release(target) => Upcoming::Release(self.resolve(target)),
                        Hint::Key(target) => Upcoming::Key(self.resolve(target)),
                    })
                    .collect();
                self.pool.look_ahead(&upcoming);
            }
            Op::Add { secret, keepalive_ms } => self.add(secret, *keepalive_ms),
            Op::Collect(pick) => {
                if let Some(at) = self.live_ticket(*pick) {
                    let ticket = self.tickets[at].as_ref().expect("a live ticket");
                    let actual = self.pool.poll_wait(ticket, &mut Context::from_waker(Waker::noop()));
                    let expected = self.model.collect(at);
                    assert_eq!(actual, expected, "collecting wait {at}");
                    if actual.is_ready() {
                        self.tickets[at] = None;
                    }
                }
            }
            Op::Cancel(pick) => {
                if let Some(at) = self.live_ticket(*pick) {
                    self.cancel(at);
                }
            }
            Op::OpenHolder => {
                self.holders.push(self.pool.open_holder());
                self.model.open_holder();
            }
            Op::CloseHolder(pick) => {
                if let Some(holder) = self.open_holder(*pick) {
                    for at in 0..self.tickets.len() {
                        if self.tickets[at].is_some() && self.model.tickets[at].holder == Some(holder) {
                            self.cancel(at);
                        }
                    }
                    let released = self.pool.close_holder(self.holders[holder]);
                    assert_eq!(released, self.model.close_holder(holder), "closing holder {holder}");
                }
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

    fn add(&mut self, pick: &SecretPick, keepalive_ms: Option<u64>) {
        let secret = match pick {
            SecretPick::Again(index) if !self.secrets.is_empty() => self.secrets[index % self.secrets.len()].clone(),
            _ => {
                let secret = format!("secret-{}", self.secrets.len()).into_bytes();
                self.secrets.push(secret.clone());
                secret
            }
        };
        let expected = self.model.add(&secret);
        let actual = self.pool.add(&secret, keepalive_ms.map(Duration::from_millis));
        let shown = String::from_utf8_lossy(&secret);
        match (actual, expected) {
            (Ok(Added::New(id)), Ok(None)) => {
                assert!(!self.issued.contains(&id), "{id} issued twice");
                self.issued.push(id);
                let keepalive = match keepalive_ms {
                    None => ModelKeepalive::Pool,
                    Some(0) => ModelKeepalive::Never,
                    Some(window) => ModelKeepalive::Own(window),
                };
                self.model.create(id, keepalive, Some(secret));
                self.model.totals.keys_added += 1;
            }
            (Ok(Added::Exists(id)), Ok(Some(expected))) => assert_eq!(id, expected, "ADD {shown}"),
            (Err(PoolError::Full), Err(PoolError::Full)) => {}
            (actual, expected) => panic!("ADD {shown}: the engine answered {actual:?}, the model {expected:?}"),
        }
    }

    /// Moves time to `at` and runs one expiry pass there, in the engine and in the model.
    async fn pass_at(&mut self, at: u64) {
        advance(at - self.model.now).await;
        assert_eq!(now(&self.pool), at);
        let work = drain(&mut self.pool);
        let (applied, freed) = self.model.expire(at);
        if applied > 0 {
            assert!(work > 0, "{applied} deadlines due at {at}, yet poll_expired did nothing");
        }
        for id in self.handout_order(freed) {
            self.model.hand_out(&id);
        }
    }

    /// The order in which the engine handed out the keys that came free in one pass. Timers due at once
    /// fire in the wheel's order, which only the engine knows; but each key it gave a waiter carries a token
    /// from the model's next one on, in the order of the grants, and a key it left free came after every
    /// grant (a key is left free only when no one waits). If the engine broke the rules, the model's own
    /// hand-out in this order comes out different, and the check after the step says so.
    fn handout_order(&mut self, freed: Vec<KeyId>) -> Vec<KeyId> {
        let first_new = self.model.next_token;
        let mut ordered: Vec<(u64, KeyId)> = freed
            .into_iter()
            .map(|id| match self.pool.info(&id) {
                Some(KeyInfo { token: Some(token), .. }) if token >= first_new => (token, id),
                _ => (u64::MAX, id),
            })
            .collect();
        ordered.sort();
        ordered.into_iter().map(|(_, id)| id).collect()
    }

    fn expected_info(&self, id: &KeyId) -> Option<KeyInfo> {
        let key = self.model.keys.get(id)?;
        let unix = |ms| unix(&self.pool, ms);
        let (state, blocked_until_ms, token, free_at_ms) = match key.place {
            ModelPlace::Free => (KeyState::Free, None, None, None),
            ModelPlace::Blocked { until, token, .. } => (KeyState::Blocked, Some(unix(until)), Some(token), None),
            ModelPlace::Delayed { until } => (KeyState::Delayed, None, None, Some(unix(until))),
        };
        Some(KeyInfo {
            id: *id,
            state,
            created_ms: unix(key.created),
            alive_until_ms: key.alive_until.map(unix),
            blocked_until_ms,
            token,
            free_at_ms,
            leases: key.leases,
        })
    }

    /// The engine agrees with the model: invariants, stats, every id ever issued, and every wait not
    /// yet collected (read from the engine's table, without collecting it).
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
        for (at, ticket) in self.tickets.iter().enumerate() {
            let Some(ticket) = ticket else {
                continue;
            };
            let actual = match &self.pool.waiters[ticket.0 as usize].state {
                WaitState::Waiting => "waiting".to_string(),
                WaitState::Granted(grant) => format!("{grant:?}"),
                WaitState::TimedOut => "timed out".to_string(),
            };
            let expected = match &self.model.tickets[at].wait {
                ModelWait::Waiting { .. } => "waiting".to_string(),
                ModelWait::Granted(grant) => format!("{grant:?}"),
                ModelWait::TimedOut => "timed out".to_string(),
                ModelWait::Done => panic!("wait {at} is spent in the model, not in the engine"),
            };
            assert_eq!(actual, expected, "wait {at} at {}", self.model.now);
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
        1 => any::<usize>().prop_map(Target::Delayed),
        1 => Just(Target::Unknown),
    ]
}

fn token() -> impl Strategy<Value = TokenPick> {
    prop_oneof![
        2 => Just(TokenPick::Absent),
        2 => Just(TokenPick::Last),
        1 => any::<u64>().prop_map(TokenPick::Any),
    ]
}

/// A window in milliseconds, or `None` (half the time) for the pool's.
fn window(max: u64) -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), (1..=max).prop_map(Some)]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..=4).prop_map(Op::Generate),
        1 => (5u32..=30).prop_map(Op::Generate),
        3 => Just(Op::Get),
        8 => (prop_oneof![1 => Just(0u64), 2 => 1u64..=300], window(120), prop::option::of(any::<usize>()))
            .prop_map(|(wait_ms, block_ms, holder)| Op::Lease { wait_ms, block_ms, holder }),
        5 => (target(), token(), prop_oneof![3 => Just(0u64), 1 => 1u64..=150])
            .prop_map(|(target, token, delay_ms)| Op::Release { target, token, delay_ms }),
        2 => (target(), token(), window(120)).prop_map(|(target, token, block_ms)| Op::Touch { target, token, block_ms }),
        2 => target().prop_map(Op::Delete),
        3 => target().prop_map(Op::KeepAlive),
        1 => target().prop_map(Op::Info),
        3 => (
            prop_oneof![Just(SecretPick::New), any::<usize>().prop_map(SecretPick::Again)],
            prop_oneof![Just(None), Just(Some(0)), (1u64..=250).prop_map(Some)],
        )
            .prop_map(|(secret, keepalive_ms)| Op::Add { secret, keepalive_ms }),
        3 => any::<usize>().prop_map(Op::Collect),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::OpenHolder),
        2 => any::<usize>().prop_map(Op::CloseHolder),
        6 => (0u64..=120, any::<bool>()).prop_map(|(ms, stepwise)| Op::Advance { ms, stepwise }),
        2 => prop::collection::vec(hint(), 0..40).prop_map(Op::Prepare),
    ]
}

fn hint() -> impl Strategy<Value = Hint> {
    prop_oneof![
        2 => Just(Hint::Lease),
        1 => target().prop_map(Hint::Release),
        1 => target().prop_map(Hint::Key),
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
        Op::Release { target: Target::Blocked(0), token: TokenPick::Absent, delay_ms: 0 },
        Op::Advance { ms: 120, stepwise: false },
        Op::Advance { ms: 120, stepwise: true },
    ];
    let model = run_model(40, 100, 10, &ops);
    assert!(model.totals.released_by_timeout >= 2, "{model:?}");
    assert_eq!(model.totals.expired_keepalive, 5, "{model:?}");
}

/// The harness really drives the lease features: waits served by REL, a delay ending, GEN, ADD and a
/// cancelled grant, keys freed together in one late pass with fewer waiters than keys, a wait running
/// out, ADD of a secret held already, a key that never expires, and a holder closing.
#[test]
fn the_model_harness_sees_every_lease_feature() {
    let lease = |wait_ms, holder| Op::Lease { wait_ms, block_ms: None, holder };
    let ops = [
        Op::OpenHolder,
        Op::Add { secret: SecretPick::New, keepalive_ms: Some(0) },
        Op::Generate(1),
        lease(0, Some(0)),
        lease(0, None),
        Op::Release { target: Target::Blocked(1), token: TokenPick::Absent, delay_ms: 20 },
        lease(50, None),                                                                 // wait 0
        Op::Release { target: Target::Blocked(0), token: TokenPick::Last, delay_ms: 0 }, // serves wait 0
        lease(50, None),                                                                 // wait 1
        Op::Advance { ms: 20, stepwise: true }, // the delay ends: serves wait 1
        lease(500, None),                       // wait 2
        Op::Generate(1),                        // serves wait 2
        lease(500, None),                       // wait 3
        Op::Add { secret: SecretPick::New, keepalive_ms: Some(500) }, // serves wait 3
        Op::Add { secret: SecretPick::Again(0), keepalive_ms: None }, // exists
        lease(500, None),                       // wait 4
        lease(500, None),                       // wait 5
        Op::Cancel(0),                          // wait 0's grant is undone: serves wait 4
        Op::Advance { ms: 100, stepwise: false }, // at 120: two generated keys expire, two blocks end, one waiter
        Op::Collect(0),
        Op::Collect(0),
        Op::Collect(0),
        Op::Collect(0),
        Op::Collect(0),
        lease(0, Some(0)),
        lease(10, None),                        // wait 6
        Op::Advance { ms: 10, stepwise: true }, // runs out
        Op::Collect(0),
        Op::CloseHolder(0),
    ];
    let model = run_model(40, 100, 10, &ops);
    let totals = model.totals;
    assert_eq!((totals.waits_served, totals.waits_timed_out, totals.released_by_close), (5, 1, 1), "{model:#?}");
    assert_eq!((totals.keys_generated, totals.keys_added, totals.expired_keepalive), (2, 2, 2), "{model:#?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_model_after_every_step(
        // Windows of at least 1 ms: the model applies deadlines only in expiry passes, and every Advance
        // ends with a full pass, so no command ever meets a key past a deadline. Zero windows, where it
        // would, are pinned down by their own tests.
        block_ms in 1u64..=80,
        keepalive_ms in 1u64..=250,
        // Small pools half the time: requests wait only when every key is taken.
        max_keys in prop_oneof![1usize..=8, 1usize..=30],
        ops in prop::collection::vec(op(), 1..100),
    ) {
        run_model(block_ms, keepalive_ms, max_keys, &ops);
    }
}
