//! A worker loop: lease a key, do the work with it, give it back; rest it a minute when the API says
//! it hit its rate limit.
//!
//! ```sh
//! cargo run --example worker -- 100        # 100 jobs against 127.0.0.1:7171 ($KEYPOOL_ADDR)
//! ```
//!
//! `$KEYPOOL_TOKEN` and `$KEYPOOL_POOL`, when set, authenticate and choose the pool. The lease is kept
//! alive by the guard's heartbeat however long a job takes, and goes back under its token when the
//! job is done, or when the worker fails (`?` drops the guard, which gives the key back); `AUTOREL`
//! gives it back even if the process dies.

use std::time::Duration;

use anyhow::Context;
use keypool::client::Client;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("KEYPOOL_ADDR").unwrap_or_else(|_| "127.0.0.1:7171".to_string());
    let jobs: u64 = match std::env::args().nth(1) {
        Some(count) => count.parse().context("the argument is how many jobs to run")?,
        None => u64::MAX,
    };
    let mut builder = Client::builder(&addr).autorel(true);
    if let Ok(token) = std::env::var("KEYPOOL_TOKEN") {
        builder = builder.token(token);
    }
    if let Ok(pool) = std::env::var("KEYPOOL_POOL") {
        builder = builder.pool(pool);
    }
    let client = builder.connect().await.with_context(|| format!("cannot reach keypool at {addr}"))?;

    let mut done = 0;
    while done < jobs {
        // Wait up to 30 s for a free key; None: none came free in time, ask again.
        let Some(key) = client.leased(Duration::from_secs(30)).await? else { continue };
        let status = call_the_api(&key.to_string()).await;
        if status == 429 {
            key.release_after(Duration::from_secs(60)).await?;
        } else {
            key.release().await?;
        }
        done += 1;
    }
    println!("{done} jobs done");
    Ok(())
}

/// Stands for the call a real worker makes with the key (its secret, or its id): returns the HTTP
/// status the API answered.
async fn call_the_api(_key: &str) -> u16 {
    tokio::time::sleep(Duration::from_millis(10)).await;
    200
}
