//! Engine benchmarks: the cost of one operation on pools of 1e3, 1e5 and 1e6 keys.
//!
//! Every operation of the engine is meant to be O(1) in the number of keys, so each group runs the same
//! operation at every size. Two things grow with the pool even so: the work (which should not) and the
//! memory a random key lives in (which must: a million keys are some 80 MB, far past the CPU caches, so
//! touching a random one costs cache and TLB misses that a thousand keys never pay). To tell them apart,
//! the `_hot` groups run the same operation on a pool of the same size but on a working set of
//! [`HOT_KEYS`] keys only: if the engine does O(1) work, those figures are flat in n.
//!
//! - `get_release`: GET a uniformly random free key, then REL it (every key is free between iterations).
//! - `get_release_hot`: the same with all but [`HOT_KEYS`] keys blocked, so GET draws among those.
//! - `batch_get_release`: batches of [`BATCH_PAIRS`] GETs and RELs as a pipelined connection sends them,
//!   each REL giving back a key leased [`OUTSTANDING`] GETs before, with the batch shown to
//!   `Pool::prepare` first as the server does; `batch_get_release_blind` without it. Throughput is per
//!   operation.
//! - `keep_alive`: PING a random existing key, drawn from the pool's ids shuffled up front.
//! - `keep_alive_hot`: PING the same [`HOT_KEYS`] keys round and round.
//! - `generate_1`: GEN of one key. The keys made in a sample are deleted again outside the timed part,
//!   a chunk at a time, so the pool stays at its nominal size while it is measured.
//!
//! The engine needs a tokio runtime for its timers; the benchmarks run inside a current-thread runtime
//! entered for their whole duration. Windows are long (an hour), so no timer ever comes due, and nothing
//! drives `poll_expired`: these are the costs of the operations themselves, timer bookkeeping included.
//!
//! `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3` for a quick run.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keypool::pool::{KeyId, KeyIdGenerator, Pool, PoolConfig, Upcoming};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The pool sizes every group runs at.
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// The working set of the `_hot` groups.
const HOT_KEYS: usize = 1_000;

/// The `GET`/`REL` pairs of one batch in the `batch_` groups, as a connection at pipeline 32 sees them.
const BATCH_PAIRS: usize = 16;

/// Leases outstanding in the `batch_` groups: a `REL` gives back the key leased this many `GET`s before,
/// as clients with many requests in flight do.
const OUTSTANDING: usize = 500;

/// How many keys `generate_1` makes between two untimed clean-ups.
const GENERATE_CHUNK: u64 = 1_000;

/// A pool of `size` free keys and their ids, shuffled. Must be called inside the runtime.
fn filled_pool(size: usize) -> (Pool, Vec<KeyId>) {
    let config = PoolConfig {
        block_timeout: Duration::from_secs(3600),
        keepalive_timeout: Duration::from_secs(3600),
        max_keys: 2 * SIZES[SIZES.len() - 1],
    };
    let mut pool = Pool::with_id_generator(config, KeyIdGenerator::from_seed(size as u64));
    let mut ids = Vec::with_capacity(size);
    pool.generate(u32::try_from(size).expect("a size that fits u32"), |id| ids.push(*id)).expect("room for the keys");
    ids.shuffle(&mut SmallRng::seed_from_u64(7));
    (pool, ids)
}

fn engine(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime");
    let _entered = runtime.enter();
    let mut pools: Vec<(usize, Pool, Vec<KeyId>)> =
        SIZES.iter().map(|&size| (size, filled_pool(size))).map(|(size, (pool, ids))| (size, pool, ids)).collect();

    let mut group = c.benchmark_group("get_release");
    group.throughput(Throughput::Elements(1));
    for (size, pool, _) in &mut pools {
        group.bench_function(BenchmarkId::from_parameter(*size), |b| {
            b.iter(|| {
                let id = pool.get().expect("every key is free");
                black_box(pool.release(&id))
            })
        });
        assert_eq!(pool.stats().keys_free, *size);
    }
    group.finish();

    for (name, look_ahead) in [("batch_get_release", true), ("batch_get_release_blind", false)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(2 * BATCH_PAIRS as u64));
        for (size, pool, _) in &mut pools {
            let mut outstanding: VecDeque<KeyId> = (0..OUTSTANDING).map(|_| pool.get().expect("a free key")).collect();
            group.bench_function(BenchmarkId::from_parameter(*size), |b| {
                b.iter(|| {
                    if look_ahead {
                        let mut upcoming = [Upcoming::Lease; 2 * BATCH_PAIRS];
                        for (pair, id) in outstanding.iter().take(BATCH_PAIRS).enumerate() {
                            upcoming[2 * pair + 1] = Upcoming::Release(*id);
                        }
                        pool.prepare(&upcoming);
                    }
                    for _ in 0..BATCH_PAIRS {
                        outstanding.push_back(pool.get().expect("a free key"));
                        let id = outstanding.pop_front().expect("leases outstanding");
                        black_box(pool.release(&id));
                    }
                })
            });
            for id in outstanding.drain(..) {
                pool.release(&id);
            }
            assert_eq!(pool.stats().keys_free, *size);
        }
        group.finish();
    }

    let mut group = c.benchmark_group("get_release_hot");
    group.throughput(Throughput::Elements(1));
    for (size, pool, _) in &mut pools {
        let blocked: Vec<KeyId> = (0..*size - HOT_KEYS).map(|_| pool.get().expect("a free key")).collect();
        assert_eq!(pool.stats().keys_free, HOT_KEYS);
        group.bench_function(BenchmarkId::from_parameter(*size), |b| {
            b.iter(|| {
                let id = pool.get().expect("a free key");
                black_box(pool.release(&id))
            })
        });
        for id in &blocked {
            pool.release(id);
        }
        assert_eq!(pool.stats().keys_free, *size);
    }
    group.finish();

    for (name, working_set) in [("keep_alive", None), ("keep_alive_hot", Some(HOT_KEYS))] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        for (size, pool, ids) in &mut pools {
            let ids = &ids[..working_set.unwrap_or(ids.len())];
            let mut next = 0;
            group.bench_function(BenchmarkId::from_parameter(*size), |b| {
                b.iter(|| {
                    let id = &ids[next];
                    next = if next + 1 == ids.len() { 0 } else { next + 1 };
                    black_box(pool.keep_alive(id))
                })
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("generate_1");
    group.throughput(Throughput::Elements(1));
    for (size, pool, _) in &mut pools {
        let mut made = Vec::with_capacity(GENERATE_CHUNK as usize);
        group.bench_function(BenchmarkId::from_parameter(*size), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(GENERATE_CHUNK);
                    let start = Instant::now();
                    for _ in 0..chunk {
                        pool.generate(1, |id| made.push(*id)).expect("room for the key");
                    }
                    timed += start.elapsed();
                    for id in made.drain(..) {
                        assert!(pool.delete(&id));
                    }
                    left -= chunk;
                }
                timed
            })
        });
        assert_eq!(pool.stats().keys, *size);
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
