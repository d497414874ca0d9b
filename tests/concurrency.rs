//! Many clients at once: a key is never leased to two clients at the same time; races for one key,
//! one DEL or one REL have exactly one winner; concurrent GENs never mint the same id twice; and GET
//! chooses uniformly among the free keys (a chi-squared test with an honestly computed bound, plus a
//! test of independence between consecutive draws).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use common::{config, key_of, num, start, stop, within, Client};
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_never_hold_the_same_key_at_once() {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 150;
    const KEYS: usize = 5;

    let server = start(config()).await;
    let mut admin = Client::connect(server.addr()).await;
    let ids: HashSet<String> = admin.gen(KEYS).await.into_iter().collect();
    let ids = Arc::new(ids);
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();

    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (held, ids, addr) = (Arc::clone(&held), Arc::clone(&ids), server.addr());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let (mut hits, mut misses) = (0u64, 0u64);
            for round in 0..ROUNDS {
                let Some(id) = c.get().await else {
                    misses += 1;
                    continue;
                };
                assert!(ids.contains(&id), "GET returned {id}, which was never generated");
                // The server has blocked `id` for us: nobody else may hold it until we release it.
                assert!(held.lock().unwrap().insert(id.clone()), "{id} leased to two clients at once");
                if round % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                // Forget it before the server frees it, or its next holder could be flagged falsely.
                held.lock().unwrap().remove(&id);
                assert_eq!(c.cmd(&format!("REL {id}")).await, "RELEASED", "releasing {id}, which we held");
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

    let stats = admin.stats().await;
    assert_eq!(num(&stats, "get_hits"), hits);
    assert_eq!(num(&stats, "get_misses"), misses);
    assert_eq!(num(&stats, "cmd_rel"), hits);
    assert_eq!((num(&stats, "keys_free"), num(&stats, "keys_blocked")), (KEYS as u64, 0));
    stop(server).await;
}

/// Starts `clients` connections, lines them up at a barrier, has each send `request` at the same moment,
/// and returns every reply.
async fn race(addr: std::net::SocketAddr, clients: usize, request: String) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (barrier, request) = (Arc::clone(&barrier), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            assert_eq!(c.cmd("PING").await, "PONG");
            within("the other racers", barrier.wait()).await;
            c.cmd(&request).await
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
    let mut admin = Client::connect(server.addr()).await;
    let id = admin.gen(1).await.remove(0);

    for round in 0..10 {
        let replies = race(server.addr(), 16, "GET".to_string()).await;
        let winners: Vec<&String> = replies.iter().filter(|r| r.starts_with("KEY ")).collect();
        assert_eq!(winners.len(), 1, "round {round}: {replies:?}");
        assert_eq!(key_of(winners[0]), id);
        assert!(replies.iter().filter(|r| *r != winners[0]).all(|r| r == "NOT_FOUND"), "{replies:?}");

        let replies = race(server.addr(), 16, format!("REL {id}")).await;
        assert_eq!(replies.iter().filter(|r| *r == "RELEASED").count(), 1, "round {round}: {replies:?}");
        assert_eq!(replies.iter().filter(|r| *r == "NOT_BLOCKED").count(), 15, "round {round}: {replies:?}");
    }

    let replies = race(server.addr(), 16, format!("DEL {id}")).await;
    assert_eq!(replies.iter().filter(|r| *r == "DELETED").count(), 1, "{replies:?}");
    assert_eq!(replies.iter().filter(|r| *r == "NOT_FOUND").count(), 15, "{replies:?}");
    assert_eq!(admin.stat("keys").await, 0);
    stop(server).await;
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
            let mut c = Client::connect(addr).await;
            let mut ids = Vec::new();
            for _ in 0..GENS {
                ids.extend(c.gen(COUNT).await);
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        for id in within("a generating client", task).await.expect("a client task panicked") {
            assert!(all.insert(id.clone()), "{id} was generated twice");
        }
    }
    assert_eq!(all.len(), CLIENTS * GENS * COUNT);
    let mut admin = Client::connect(server.addr()).await;
    let stats = admin.stats().await;
    assert_eq!(num(&stats, "keys"), all.len() as u64);
    assert_eq!(num(&stats, "keys_generated"), all.len() as u64);
    stop(server).await;
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
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(KEYS).await;
    let mut counts: HashMap<String, u64> = ids.iter().map(|id| (id.clone(), 0)).collect();

    let mut previous = c.get().await.expect("a free key");
    *counts.get_mut(&previous).expect("a generated id") += 1;
    let mut repeats = 0u64;
    for _ in 1..DRAWS {
        // Release the last draw and make the next one in a single write.
        c.send(format!("REL {previous}\r\nGET\r\n")).await;
        assert_eq!(c.line().await, "RELEASED");
        let id = key_of(&c.line().await);
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
    stop(server).await;
}
