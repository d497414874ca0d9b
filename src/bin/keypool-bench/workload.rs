//! Workloads: which request each connection sends next.
//!
//! Every connection has its own [`OpSource`]. A key that a `Take` leased is queued to be given back, and
//! a queued give-back always goes before anything new, so the `lease` workload alternates GET and REL
//! of the key it got, with each half counted as one operation. `contend` is not driven from here: its
//! connections are keypool clients of their own (`contend.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::RngExt;

use crate::target::{Id, Op, Reply, Target};

/// How long a `contend` LEASE waits for a key when `--wait` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// What the connections do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// GET a key, then REL the key it got; each is one operation.
    Lease,
    /// PING a random seeded key.
    Ping,
    /// INFO of a random seeded key.
    Info,
    /// GEN 1.
    Gen,
    /// Each new request: a GET (its REL follows) with probability 1/2, a PING with 3/10, an INFO with 2/10.
    Mixed,
    /// LEASE <wait> a key, then REL <id> <token> it; each is one operation. keypool only, one request
    /// in flight per connection, and fewer --keys than --connections so that connections wait: the
    /// report adds handoffs/s and the handoff latency (a REL sent to its key's next LEASED received).
    Contend,
}

impl Workload {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Lease => "lease",
            Workload::Ping => "ping",
            Workload::Info => "info",
            Workload::Gen => "gen",
            Workload::Mixed => "mixed",
            Workload::Contend => "contend",
        }
    }

    /// Whether the workload needs seeded ids to name.
    pub fn needs_ids(self, target: Target) -> bool {
        match self {
            Workload::Ping | Workload::Info | Workload::Mixed => true,
            Workload::Lease => target == Target::Memcached,
            // keypool seeding returns the ids anyway, and LEASE picks the key itself.
            Workload::Gen | Workload::Contend => false,
        }
    }
}

/// One connection's stream of requests.
pub struct OpSource {
    workload: Workload,
    target: Target,
    ids: Arc<Vec<Id>>,
    /// The give-backs owed, oldest first.
    to_give_back: VecDeque<Op>,
    rng: SmallRng,
}

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

impl OpSource {
    pub fn new(workload: Workload, target: Target, ids: Arc<Vec<Id>>) -> OpSource {
        OpSource { workload, target, ids, to_give_back: VecDeque::new(), rng: rand::make_rng() }
    }

    /// The next request to send.
    pub fn next_op(&mut self) -> Op {
        if let Some(give_back) = self.to_give_back.pop_front() {
            return give_back;
        }
        match self.workload {
            Workload::Lease => self.take(),
            Workload::Ping => Op::Ping(self.seeded_id()),
            Workload::Info => Op::Info(self.seeded_id()),
            Workload::Gen => Op::Gen(random_id(&mut self.rng)),
            Workload::Mixed => match self.rng.random_range(0..10) {
                0..5 => self.take(),
                5..8 => Op::Ping(self.seeded_id()),
                _ => Op::Info(self.seeded_id()),
            },
            Workload::Contend => unreachable!("contend connections run in contend.rs, not from an OpSource"),
        }
    }

    /// Learns from a reply: a leased key is queued to be given back.
    pub fn on_reply(&mut self, op: Op, reply: &Reply) {
        if let (Op::Take(_), Reply::Done(Some(id))) = (op, reply) {
            self.to_give_back.push_back(Op::GiveBack(*id));
        }
    }

    fn take(&mut self) -> Op {
        // memcached cannot pick a key by itself: name a random seeded one.
        match self.target {
            Target::Memcached => Op::Take(Some(self.seeded_id())),
            Target::Keypool | Target::Redis => Op::Take(None),
        }
    }

    fn seeded_id(&mut self) -> Id {
        match self.ids.len() {
            0 => [b'x'; 24],
            n => self.ids[self.rng.random_range(0..n)],
        }
    }
}

/// A random 24-character id, for targets where the bench mints ids itself.
pub fn random_id(rng: &mut SmallRng) -> Id {
    let mut id = [0u8; 24];
    for byte in &mut id {
        *byte = ALPHABET[rng.random_range(0..ALPHABET.len())];
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_alternates_take_and_give_back_of_the_key_it_got() {
        let id = *b"abcdefghijklmnopqrstuvwx";
        let mut source = OpSource::new(Workload::Lease, Target::Keypool, Arc::new(vec![]));
        let take = source.next_op();
        assert_eq!(take, Op::Take(None));
        source.on_reply(take, &Reply::Done(Some(id)));
        assert_eq!(source.next_op(), Op::GiveBack(id));
        assert_eq!(source.next_op(), Op::Take(None));
    }

    #[test]
    fn a_missed_take_queues_nothing() {
        let mut source = OpSource::new(Workload::Lease, Target::Keypool, Arc::new(vec![]));
        let take = source.next_op();
        source.on_reply(take, &Reply::NotFound);
        assert_eq!(source.next_op(), Op::Take(None));
    }

    #[test]
    fn ping_names_seeded_ids() {
        let ids = vec![*b"aaaaaaaaaaaaaaaaaaaaaaaa", *b"bbbbbbbbbbbbbbbbbbbbbbbb"];
        let mut source = OpSource::new(Workload::Ping, Target::Keypool, Arc::new(ids.clone()));
        for _ in 0..100 {
            match source.next_op() {
                Op::Ping(id) => assert!(ids.contains(&id)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
