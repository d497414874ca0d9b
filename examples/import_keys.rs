//! Imports a file of third-party API keys, one per line, into a pool: `ADD` per line, counting the
//! keys added and those the pool already held (so a re-run creates nothing new).
//!
//! ```sh
//! cargo run --example import_keys -- keys.txt 0s   # 0s: keep them until deleted (default: the daemon's keep-alive)
//! ```
//!
//! `$KEYPOOL_ADDR` (default `127.0.0.1:7171`), `$KEYPOOL_TOKEN` and `$KEYPOOL_POOL` say where to. The
//! `ADD`s go out 500 to a pipeline, so a large file costs a few round trips, not one per key. Blank
//! lines and lines starting with `#` are skipped; a line the daemon refuses is reported with its
//! number, and the import goes on.

use anyhow::{bail, Context};
use keypool::client::{Added, Client, Reply};
use keypool::protocol::duration;

/// How many `ADD`s share one write.
const BATCH: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        bail!("usage: import_keys FILE [KEEPALIVE]   (KEEPALIVE such as 0s, 5m; default: the daemon's)");
    };
    let keepalive = args.next().map(|text| duration::parse(&text)).transpose().context("KEEPALIVE")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let secrets: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(at, line)| (at + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .collect();

    let addr = std::env::var("KEYPOOL_ADDR").unwrap_or_else(|_| "127.0.0.1:7171".to_string());
    let mut builder = Client::builder(&addr);
    if let Ok(token) = std::env::var("KEYPOOL_TOKEN") {
        builder = builder.token(token);
    }
    if let Ok(pool) = std::env::var("KEYPOOL_POOL") {
        builder = builder.pool(pool);
    }
    let client = builder.connect().await.with_context(|| format!("cannot reach keypool at {addr}"))?;

    let (mut added, mut existing, mut refused) = (0, 0, 0);
    for batch in secrets.chunks(BATCH) {
        let mut pipeline = client.pipeline();
        let mut sent = Vec::with_capacity(batch.len());
        for &(line, secret) in batch {
            // The client refuses a secret with spaces before sending: check each here to name its line.
            if secret.contains(char::is_whitespace) || !secret.is_ascii() {
                eprintln!("line {line}: a secret is printable ASCII without spaces; skipped");
                refused += 1;
                continue;
            }
            pipeline.add(secret, keepalive);
            sent.push(line);
        }
        for (line, reply) in sent.into_iter().zip(pipeline.run().await?) {
            match reply {
                Ok(Reply::Added(Added::New(_))) => added += 1,
                Ok(Reply::Added(Added::Existing(_))) => existing += 1,
                Ok(other) => bail!("line {line}: unexpected reply {other:?}"),
                Err(error) => {
                    eprintln!("line {line}: {error}");
                    refused += 1;
                }
            }
        }
    }
    println!("{added} added, {existing} already in the pool, {refused} refused");
    Ok(())
}
