//! Seeding: filling the server with `--keys` keys before the run, and learning their ids.
//!
//! keypool mints its own ids (`GEN 10000` batches, a few to a pipeline of the keypool client); for memcached and redis the
//! bench draws ids and stores them (`set`, and `SADD` to the free set plus a string per key for `EXPIRE`).

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use keypool::client::{Client, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::{Id, Target, REDIS_FREE_SET, REDIS_KEY_PREFIX};
use crate::workload::random_id;

/// The most keys one `GEN` may mint.
const GEN_BATCH: usize = 10_000;
/// How many seeding requests are in flight at once.
const IN_FLIGHT: usize = 8;
/// Ids per seeding request for memcached and redis.
const CHUNK: usize = 1000;

/// Puts `count` keys into the server and returns their ids. For redis, `per_key_strings` also stores a
/// string per key for `EXPIRE` and `TTL` to act on; the lease workload needs only the set.
pub async fn seed(target: Target, addr: &str, count: usize, per_key_strings: bool) -> Result<Vec<Id>> {
    match target {
        Target::Keypool => seed_keypool(addr, count).await,
        Target::Memcached | Target::Redis => {
            let mut stream =
                TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr} to seed"))?;
            stream.set_nodelay(true)?;
            let mut rng = rand::make_rng();
            let ids: Vec<Id> = (0..count).map(|_| random_id(&mut rng)).collect();
            if target == Target::Redis {
                send_and_count_lines(&mut stream, format!("DEL {REDIS_FREE_SET}\r\n").as_bytes(), 1).await?;
            }
            for chunk in ids.chunks(CHUNK) {
                let (request, replies) = store_request(target, chunk, per_key_strings);
                send_and_count_lines(&mut stream, &request, replies).await?;
            }
            Ok(ids)
        }
    }
}

/// The requests that store `chunk`, and how many one-line replies they bring.
fn store_request(target: Target, chunk: &[Id], per_key_strings: bool) -> (Vec<u8>, usize) {
    let mut request = Vec::new();
    let id_text = |id: &Id| String::from_utf8_lossy(id).into_owned();
    match target {
        Target::Memcached => {
            for id in chunk {
                let id = id_text(id);
                request.extend_from_slice(format!("set {id} 0 0 24\r\n{id}\r\n").as_bytes());
            }
            (request, chunk.len())
        }
        Target::Redis => {
            request.extend_from_slice(format!("SADD {REDIS_FREE_SET}").as_bytes());
            for id in chunk {
                request.extend_from_slice(format!(" {}", id_text(id)).as_bytes());
            }
            request.extend_from_slice(b"\r\n");
            if !per_key_strings {
                return (request, 1);
            }
            for id in chunk {
                request.extend_from_slice(format!("SET {REDIS_KEY_PREFIX}{} 1 EX 3600\r\n", id_text(id)).as_bytes());
            }
            (request, chunk.len() + 1)
        }
        Target::Keypool => (request, 0),
    }
}

/// Sends `request` and reads `replies` one-line replies, failing on any error reply.
async fn send_and_count_lines(stream: &mut TcpStream, request: &[u8], replies: usize) -> Result<()> {
    stream.write_all(request).await?;
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut seen = 0;
    while seen < replies {
        if stream.read_buf(&mut input).await? == 0 {
            bail!("the server closed the connection while seeding");
        }
        while let Some(end) = memchr::memchr(b'\n', &input) {
            let line = &input[..end];
            if line.starts_with(b"-") || line.starts_with(b"ERROR") || line.starts_with(b"SERVER_ERROR") {
                bail!("seeding failed: {}", String::from_utf8_lossy(line).trim_end());
            }
            input.advance(end + 1);
            seen += 1;
        }
    }
    Ok(())
}

/// `GEN 10000` batches, [`IN_FLIGHT`] to a pipeline, through the client.
async fn seed_keypool(addr: &str, count: usize) -> Result<Vec<Id>> {
    let client = Client::connect(addr).await.with_context(|| format!("cannot connect to {addr} to seed"))?;
    let mut ids = Vec::with_capacity(count);
    let mut pipeline = client.pipeline();
    while ids.len() < count {
        let mut requested = ids.len();
        while pipeline.len() < IN_FLIGHT && requested < count {
            let batch = GEN_BATCH.min(count - requested);
            pipeline.gen(batch as u32);
            requested += batch;
        }
        for reply in pipeline.run().await.context("seeding failed")? {
            match reply.context("seeding failed: GEN")? {
                Reply::Keys(minted) => ids.extend(minted.iter().map(|id| *id.as_bytes())),
                other => bail!("seeding failed: GEN answered {other:?}"),
            }
        }
    }
    Ok(ids)
}
