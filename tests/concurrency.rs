//! Many clients at once: a key is never leased to two clients at the same time; races for one key,
//! one DEL or one REL have exactly one winner; concurrent GENs never mint the same id twice; and GET
//! chooses uniformly among the free keys (a chi-squared test with an honestly computed bound, plus a
//! test of independence between consecutive draws).
//!
//! Every test here is about behaviour, so all of them drive the daemon through the typed client,
//! `keypool::client::Client`, each racer and worker with a client (and so a connection) of its own.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use common::typed::{self, stat};
use common::{config, start, within};
use keypool::client::{Client, KeyId, Released, Reply};
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_never_hold_the_same_key_at_once() {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 150;
    const KEYS: usize = 5;

    let server = start(config()).await;
    let admin = typed::connect(server.addr()).await;
    let ids: HashSet<KeyId> = admin.gen(KEYS as u32).await.expect("GEN").into_iter().collect();
    assert_eq!(ids.len(), KEYS);
    let ids = Arc::new(ids);
    let held: Arc<Mutex<HashSet<KeyId>>> = Arc::default();

    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (held, ids, addr) = (Arc::clone(&held), Arc::clone(&ids), server.addr());
        tasks.push(tokio::spawn(async move {
            let c = typed::connect(addr).await;
            let (mut hits, mut misses) = (0u64, 0u64);
            for round in 0..ROUNDS {
                let Some(lease) = c.get(None, None).await.expect("GET") else {
                    misses += 1;
                    continue;
                };
                let id = lease.id;
                assert!(ids.contains(&id), "GET returned {id}, which was never generated");
                // The server has blocked `id` for us: nobody else may hold it until we release it.
                assert!(held.lock().unwrap().insert(id), "{id} leased to two clients at once");
                if round % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                // Forget it before the server frees it, or its next holder could be flagged falsely.
                held.lock().unwrap().remove(&id);
                assert_eq!(c.release(id, None).await.expect("REL"), Released::Yes, "releasing {id}, which we held");
                hits += 1;
            }
            (hits, misses)
        }));
    }
    let (mut hits, mut misses) = (0, 0);
    for task in tasks {
        let (h, m) = within("a client to finish its rounds", task).await.expect("a client task panicked");
        hits += h;
        misses += m;
    }
    assert_eq!(hits + misses, (CLIENTS * ROUNDS) as u64);
    assert!(hits > 0);

    let stats = admin.stats().await.expect("STATS");
    assert_eq!(stats.number("get_hits"), Some(hits));
    assert_eq!(stats.number("get_misses"), Some(misses));
    assert_eq!(stats.number("cmd_rel"), Some(hits));
    assert_eq!((stats.number("keys_free"), stats.number("keys_blocked")), (Some(KEYS as u64), Some(0)));
    typed::close_and_stop(server, [admin]).await;
}

/// Starts `clients` clients, each with its connection open and answering (a `PING`), lines them up at
/// a barrier, has each make its `request` at the same moment, and returns every answer.
async fn race<T, F, Fut>(addr: std::net::SocketAddr, clients: usize, request: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Client) -> Fut,
    Fut: Future<Output = keypool::client::Result<T>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let c = typed::connect(addr).await;
        c.health().await.expect("PONG");
        let (barrier, request) = (Arc::clone(&barrier), request(c));
        tasks.push(tokio::spawn(async move {
            within("the other racers", barrier.wait()).await;
            request.await.expect("a racer's request")
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(within("a racer", task).await.expect("a racer panicked"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_for_one_key_have_exactly_one_winner() {
    let server = start(config()).await;
    let admin = typed::connect(server.addr()).await;
    let id = admin.gen(1).await.expect("GEN").remove(0);

    for round in 0..10 {
        // Each request is made inside the racer's task, after the barrier: the future starts there.
        let replies = race(server.addr(), 16, |c| async move { c.get(None, None).await }).await;
        let winners: Vec<_> = replies.iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {replies:?}");
        assert_eq!(winners[0].id, id);
        assert!(winners[0].token.is_none() && winners[0].secret.is_none(), "a plain `KEY <id>`: {winners:?}");
        assert_eq!(replies.iter().filter(|r| r.is_none()).count(), 15, "the others NOT_FOUND: {replies:?}");

        let replies = race(server.addr(), 16, move |c| async move { c.release(id, None).await }).await;
        assert_eq!(replies.iter().filter(|r| **r == Released::Yes).count(), 1, "round {round}: {replies:?}");
        let not_blocked = replies.iter().filter(|r| **r == Released::NotBlocked).count();
        assert_eq!(not_blocked, 15, "round {round}: {replies:?}");
    }

    let replies = race(server.addr(), 16, move |c| async move { c.delete(&id).await }).await;
    assert_eq!(replies.iter().filter(|deleted| **deleted).count(), 1, "one DELETED: {replies:?}");
    assert_eq!(replies.iter().filter(|deleted| !**deleted).count(), 15, "the others NOT_FOUND: {replies:?}");
    assert_eq!(stat(&admin, "keys").await, 0);
    typed::close_and_stop(server, [admin]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_gens_never_mint_the_same_id() {
    const CLIENTS: usize = 16;
    const GENS: usize = 4;
    const COUNT: usize = 1000;
    let server = start(config()).await;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let addr = server.addr();
        tasks.push(tokio::spawn(async move {
            let c = typed::connect(addr).await;
            let mut ids = Vec::new();
            for _ in 0..GENS {
                let minted = c.gen(COUNT as u32).await.expect("GEN");
                assert_eq!(minted.len(), COUNT, "GEN {COUNT} returned {} keys", minted.len());
                ids.extend(minted);
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        for id in within("a generating client", task).await.expect("a client task panicked") {
            assert!(all.insert(id), "{id} was generated twice");
        }
    }
    assert_eq!(all.len(), CLIENTS * GENS * COUNT);
    let admin = typed::connect(server.addr()).await;
    let stats = admin.stats().await.expect("STATS");
    assert_eq!(stats.number("keys"), Some(all.len() as u64));
    assert_eq!(stats.number("keys_generated"), Some(all.len() as u64));
    typed::close_and_stop(server, [admin]).await;
}

/// GET must pick uniformly among the free keys. With 10 keys, each draw followed by a REL so that all
/// 10 are free for every draw, the draws are i.i.d. uniform over 10 values if the chooser is fair.
///
/// Upper bound: Pearson's statistic over N = 5000 draws (500 expected per key) follows chi-squared
/// with 9 degrees of freedom to an excellent approximation; P(chi2_9 > 70) = 1.5e-11, so a fair chooser
/// fails this with probability around 1e-11. A chooser that never picks one of the keys (an off-by-one
/// range) scores about 555; one that picks a key 1.5 times as often as the others scores about 100.
///
/// Lower bound: P(chi2_9 < 0.03) = 1.2e-10. A deterministic rotation through the free list, which is
/// "perfectly" even, scores 0 and fails.
///
/// Independence: the draw repeats the previous one with probability exactly 1/10, so the number of
/// repeats among 4999 consecutive pairs is Binomial(4999, 0.1), mean 500. By the Chernoff bound
/// P(X >= 0.15 n) <= exp(-n KL(0.15 || 0.1)) = 3e-27 and P(X <= 0.05 n) <= exp(-n KL(0.05 || 0.1))
/// = 5e-37. Choosers that avoid or favour the key just released fail this.
#[tokio::test]
async fn get_chooses_uniformly_among_free_keys() {
    const KEYS: usize = 10;
    const DRAWS: usize = 5000;
    let server = start(config()).await;
    let c = typed::connect(server.addr()).await;
    let ids = c.gen(KEYS as u32).await.expect("GEN");
    assert_eq!(ids.len(), KEYS);
    let mut counts: HashMap<KeyId, u64> = ids.iter().map(|id| (*id, 0)).collect();

    let mut previous = c.get(None, None).await.expect("GET").expect("a free key").id;
    *counts.get_mut(&previous).expect("a generated id") += 1;
    let mut repeats = 0u64;
    let mut pipeline = c.pipeline();
    for _ in 1..DRAWS {
        // Release the last draw and make the next one in a single write.
        let replies = pipeline.release(previous, None).get(None, None).run().await.expect("REL and GET");
        let [released, got] = &replies[..] else { panic!("two replies to two requests: {replies:?}") };
        assert_eq!(released.as_ref().expect("REL"), &Reply::Released(Released::Yes));
        let Ok(Reply::Lease(Some(lease))) = got else { panic!("GET found no free key: {got:?}") };
        let id = lease.id;
        *counts.get_mut(&id).unwrap_or_else(|| panic!("{id} was never generated")) += 1;
        if id == previous {
            repeats += 1;
        }
        previous = id;
    }

    let expected = DRAWS as f64 / KEYS as f64;
    let chi2: f64 = counts.values().map(|&n| (n as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 70.0, "GET is biased: chi-squared {chi2:.1} over 9 degrees of freedom; counts {counts:?}");
    assert!(chi2 > 0.03, "GET is too even to be random: chi-squared {chi2:.4}; counts {counts:?}");
    let pairs = (DRAWS - 1) as f64;
    let repeat_rate = repeats as f64 / pairs;
    assert!(
        (0.05..=0.15).contains(&repeat_rate),
        "consecutive GETs are not independent: {repeats} repeats in {pairs} pairs (expected about 10%)"
    );
    typed::close_and_stop(server, [c]).await;
}
