//! The Rust client: typed async calls for every keypool command, over a small pool of connections.
//!
//! ```
//! use std::time::Duration;
//! use keypool::client::{Client, Released};
//! # use keypool::server::{Config, Handle};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
//! # let addr = server.addr();
//! let client = Client::connect(addr).await?;
//! client.gen(3).await?;
//!
//! // The safe way to hold a key: leased with a token, kept alive while working, always given back.
//! if let Some(key) = client.leased(Duration::from_secs(5)).await? {
//!     println!("working with {}", key.id);
//!     assert_eq!(key.release().await?, Released::Yes);
//! }
//! # server.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! How it is built, one concept per module:
//!
//! - `connection`: one TCP connection, its buffers, and reply lines cut from the stream;
//! - `command`: requests, their arguments checked and spelled onto the wire;
//! - `reply`: reply lines parsed into typed answers (no I/O, unit-tested on strings);
//! - [`types`](Lease): the typed results ([`Lease`], [`Released`], [`Info`], ...);
//! - [`Error`]: what can go wrong;
//! - [`Pipeline`]: many requests in one write, their replies read in order;
//! - [`LeaseGuard`]: a lease kept alive by a background task and always given back.
//!
//! A [`Client`] is cheap to clone and may be shared by tasks: each request takes an idle connection
//! (or opens one, with `AUTH`, `USE` and `AUTOREL` as configured) and returns it when answered. So a
//! request that waits for a key never holds up another task's request, and a connection that broke
//! or timed out is simply not returned: the next request opens a fresh one. Idle connections stay
//! open until the client is dropped (closing one could give back keys it leased under `AUTOREL`).

mod command;
mod connection;
mod error;
mod guard;
mod pipeline;
mod reply;
mod types;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use command::Command;
use connection::Connection;
use reply::Answer;

pub use error::{Error, Result};
pub use guard::LeaseGuard;
pub use pipeline::Pipeline;
pub use types::{
    Added, Info, KeyId, KeyRef, KeyState, Lease, PoolInfo, PoolsPage, Released, Reply, Stats, Token, Touched,
};

/// How long opening a connection (TCP, then `AUTH`/`USE`/`AUTOREL`) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the daemon may take to answer a request by default, on top of any wait the request asks for.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A keypool client: typed async methods for every command.
///
/// Clones share the same connections and settings. Every method returns [`Error::Io`] when the daemon
/// cannot be reached, [`Error::Timeout`] when it does not answer in time, [`Error::Client`] or
/// [`Error::Server`] when it refuses the request, and [`Error::NoAuth`] when it needs a token.
///
/// ```
/// use keypool::client::Client;
/// # use keypool::server::{Config, Handle};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
/// let client = Client::connect(server.addr()).await?;
/// let ids = client.gen(2).await?;
/// let lease = client.get(None, None).await?.expect("two keys are free");
/// assert!(ids.contains(&lease.id));
/// # server.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    token: Option<String>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    state: Mutex<State>,
}

/// What changes while the client runs; the lock is held for a push or a pop, never across an `.await`.
struct State {
    idle: Vec<Connection>,
    /// The pool every connection must be in (`None`: where it starts, `default` or the token's pool).
    pool: Option<String>,
    /// Whether every connection must have sent `AUTOREL`.
    autorel: bool,
    /// The daemon's `--block-timeout`, once read, for [`Client::leased`]'s heartbeat.
    block_timeout: Option<Duration>,
}

/// Options for a [`Client`]: a token, a pool, `AUTOREL`, and timeouts.
///
/// ```
/// use std::time::Duration;
/// use keypool::client::Client;
/// # use keypool::server::{Config, Handle};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
/// let client = Client::builder(server.addr())
///     .pool("openai-prod")
///     .autorel(true)
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Some(Duration::from_secs(2)))
///     .connect()
///     .await?;
/// client.gen(1).await?;
/// assert_eq!(client.pool_stats("openai-prod").await?.number("keys"), Some(1));
/// # server.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    addr: String,
    token: Option<String>,
    pool: Option<String>,
    autorel: bool,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// Authenticates every connection with `AUTH token` (a static token or a JWT).
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(token.into());
        self
    }

    /// Moves every connection to `pool` with `USE` (default: the pool a connection starts in).
    pub fn pool(mut self, pool: impl Into<String>) -> ClientBuilder {
        self.pool = Some(pool.into());
        self
    }

    /// Sends `AUTOREL` on every connection, so that keys leased on one come back the moment it closes
    /// (the client is dropped, or the process dies).
    pub fn autorel(mut self, autorel: bool) -> ClientBuilder {
        self.autorel = autorel;
        self
    }

    /// How long opening a connection may take, `AUTH` and `USE` included (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How long the daemon may take to answer, on top of any wait a request asks for (default 5 s);
    /// `None` waits for ever.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.request_timeout = timeout;
        self
    }

    /// Opens a first connection (so that a wrong address or token fails here) and returns the client.
    pub async fn connect(self) -> Result<Client> {
        if let Some(token) = &self.token {
            Command::auth(token)?;
        }
        if let Some(pool) = &self.pool {
            Command::use_pool(pool)?;
        }
        let client = Client {
            inner: Arc::new(Inner {
                addr: self.addr,
                token: self.token,
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                state: Mutex::new(State {
                    idle: Vec::new(),
                    pool: self.pool,
                    autorel: self.autorel,
                    block_timeout: None,
                }),
            }),
        };
        let connection = client.checkout().await?;
        client.give_back(connection);
        Ok(client)
    }
}

impl Client {
    /// Connects to the daemon at `addr` (`"127.0.0.1:7171"`, a `SocketAddr`, a host name and port)
    /// with the default options.
    ///
    /// ```
    /// use keypool::client::{Client, Error};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Nothing listens on port 1: the error says so.
    /// assert!(matches!(Client::connect("127.0.0.1:1").await, Err(Error::Io(_))));
    /// # }
    /// ```
    pub async fn connect(addr: impl ToString) -> Result<Client> {
        Client::builder(addr).connect().await
    }

    /// Starts a [`ClientBuilder`] for the daemon at `addr`.
    pub fn builder(addr: impl ToString) -> ClientBuilder {
        ClientBuilder {
            addr: addr.to_string(),
            token: None,
            pool: None,
            autorel: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
        }
    }

    /// `GEN count`: mints `count` new free keys (1 to 10000) and returns their ids.
    ///
    /// [`Error::Server`] (`pool full`) when they would take the pool past `--max-keys`.
    pub async fn gen(&self, count: u32) -> Result<Vec<KeyId>> {
        match self.request(Command::Gen(count)).await? {
            Reply::Keys(ids) => Ok(ids),
            other => Err(mismatch(&other)),
        }
    }

    /// `ADD secret [keepalive]`: adds a key carrying `secret` (a third-party API key), or finds the
    /// one the pool already holds with it. A `keepalive` of zero keeps it until deleted.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keypool::client::{Added, Client};
    /// # use keypool::server::{Config, Handle};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
    /// let client = Client::connect(server.addr()).await?;
    /// let Added::New(id) = client.add("sk-live-51Hx9", Some(Duration::ZERO)).await? else { panic!() };
    /// assert_eq!(client.add("sk-live-51Hx9", None).await?, Added::Existing(id));
    /// let lease = client.lease(None, None).await?.expect("the key is free");
    /// assert_eq!(lease.to_string(), "sk-live-51Hx9");
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn add(&self, secret: &str, keepalive: Option<Duration>) -> Result<Added> {
        match self.request(Command::add(secret, keepalive)?).await? {
            Reply::Added(added) => Ok(added),
            other => Err(mismatch(&other)),
        }
    }

    /// `GET [wait [block]]`: leases a random free key without a token, waiting up to `wait` for one;
    /// `None` when none came free in time. `block` replaces the daemon's `--block-timeout` for this
    /// lease. Prefer [`Client::lease`], whose token makes the release safe.
    pub async fn get(&self, wait: Option<Duration>, block: Option<Duration>) -> Result<Option<Lease>> {
        match self.request(Command::Get { wait, block }).await? {
            Reply::Lease(lease) => Ok(lease),
            other => Err(mismatch(&other)),
        }
    }

    /// `LEASE [wait [block]]`: leases a random free key with a fencing token, waiting up to `wait`
    /// (first come, first served); `None` when none came free in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keypool::client::{Client, Released};
    /// # use keypool::server::{Config, Handle};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
    /// let client = Client::connect(server.addr()).await?;
    /// client.gen(1).await?;
    /// let lease = client.lease(Some(Duration::from_secs(1)), None).await?.expect("one key is free");
    /// assert!(client.lease(Some(Duration::from_millis(10)), None).await?.is_none(), "none left");
    /// assert_eq!(client.release(&lease, None).await?, Released::Yes);
    /// assert_eq!(client.release(&lease, None).await?, Released::Stale, "that lease is over");
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lease(&self, wait: Option<Duration>, block: Option<Duration>) -> Result<Option<Lease>> {
        match self.request(Command::Lease { wait, block }).await? {
            Reply::Lease(lease) => Ok(lease),
            other => Err(mismatch(&other)),
        }
    }

    /// `REL id [token] [delay]`: gives a leased key back, now or after `delay` (to rest a key that hit
    /// its rate limit). Given a [`Lease`] from [`Client::lease`], its token is sent, so a lease that
    /// ran out answers [`Released::Stale`] instead of freeing the key from under its next holder.
    pub async fn release(&self, key: impl Into<KeyRef>, delay: Option<Duration>) -> Result<Released> {
        match self.request(Command::Release { key: key.into(), delay }).await? {
            Reply::Released(released) => Ok(released),
            other => Err(mismatch(&other)),
        }
    }

    /// `TOUCH id [token] [block]`: starts the key's block window again, for `block` or the daemon's
    /// `--block-timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keypool::client::{Client, KeyState, Touched};
    /// # use keypool::server::{Config, Handle};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
    /// let client = Client::connect(server.addr()).await?;
    /// let id = client.gen(1).await?[0];
    /// let lease = client.lease(None, None).await?.expect("a free key");
    /// assert_eq!(client.touch(&lease, Some(Duration::from_secs(90))).await?, Touched::Yes);
    /// let info = client.info(&id).await?.expect("the key exists");
    /// assert!(matches!(info.state, KeyState::Blocked { token, .. } if Some(token) == lease.token));
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn touch(&self, key: impl Into<KeyRef>, block: Option<Duration>) -> Result<Touched> {
        match self.request(Command::Touch { key: key.into(), block }).await? {
            Reply::Touched(touched) => Ok(touched),
            other => Err(mismatch(&other)),
        }
    }

    /// `DEL id`: deletes a key for good; `false` when there was no such key.
    pub async fn delete(&self, id: &KeyId) -> Result<bool> {
        match self.request(Command::Delete(*id)).await? {
            Reply::Deleted(deleted) => Ok(deleted),
            other => Err(mismatch(&other)),
        }
    }

    /// `PING id`: restarts the key's keep-alive window; `false` when there is no such key.
    ///
    /// ```
    /// use keypool::client::Client;
    /// # use keypool::server::{Config, Handle};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
    /// let client = Client::connect(server.addr()).await?;
    /// let id = client.gen(1).await?[0];
    /// assert!(client.ping(&id).await?);
    /// assert!(client.delete(&id).await?);
    /// assert!(!client.ping(&id).await?, "deleted for good");
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping(&self, id: &KeyId) -> Result<bool> {
        match self.request(Command::PingKey(*id)).await? {
            Reply::Alive(alive) => Ok(alive),
            other => Err(mismatch(&other)),
        }
    }

    /// `PING`: a health check; `Ok` when the daemon answered `PONG`.
    pub async fn health(&self) -> Result<()> {
        match self.request(Command::Health).await? {
            Reply::Pong => Ok(()),
            other => Err(mismatch(&other)),
        }
    }

    /// `INFO id`: describes a key; `None` when there is no such key.
    pub async fn info(&self, id: &KeyId) -> Result<Option<Info>> {
        match self.request(Command::Info(*id)).await? {
            Reply::Info(info) => Ok(info),
            other => Err(mismatch(&other)),
        }
    }

    /// `STATS`: the daemon's figures, summed over every pool.
    ///
    /// ```
    /// use keypool::client::Client;
    /// # use keypool::server::{Config, Handle};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
    /// let client = Client::connect(server.addr()).await?;
    /// client.gen(4).await?;
    /// let stats = client.stats().await?;
    /// assert_eq!(stats.number("keys_free"), Some(4));
    /// assert_eq!(stats.get("version"), Some(client.version().await?.as_str()));
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stats(&self) -> Result<Stats> {
        match self.request(Command::stats(None)?).await? {
            Reply::Stats(stats) => Ok(stats),
            other => Err(mismatch(&other)),
        }
    }

    /// `STATS pool`: one pool's figures (all zero for a pool that does not exist).
    pub async fn pool_stats(&self, pool: &str) -> Result<Stats> {
        match self.request(Command::stats(Some(pool))?).await? {
            Reply::Stats(stats) => Ok(stats),
            other => Err(mismatch(&other)),
        }
    }

    /// `POOLS cursor`: one page of the pool listing. Start at `0`; a page whose `next` is `0` is the
    /// last.
    pub async fn pools_page(&self, cursor: u64) -> Result<PoolsPage> {
        match self.request(Command::Pools(cursor)).await? {
            Reply::Pools(page) => Ok(page),
            other => Err(mismatch(&other)),
        }
    }

    /// Every pool with its key count, walking `POOLS` pages until the listing is complete.
    ///
    /// ```
    /// use keypool::client::{Client, PoolInfo};
    /// # use keypool::server::{Config, Handle};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
    /// let client = Client::connect(server.addr()).await?;
    /// client.use_pool("batch").await?;
    /// client.gen(2).await?;
    /// assert_eq!(client.pools().await?, vec![PoolInfo { name: "batch".into(), keys: 2 }]);
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn pools(&self) -> Result<Vec<PoolInfo>> {
        let mut pools = Vec::new();
        let mut cursor = 0;
        loop {
            let page = self.pools_page(cursor).await?;
            pools.extend(page.pools);
            if page.next == 0 {
                return Ok(pools);
            }
            cursor = page.next;
        }
    }

    /// `VERSION`: the daemon's version.
    pub async fn version(&self) -> Result<String> {
        match self.request(Command::Version).await? {
            Reply::Version(version) => Ok(version),
            other => Err(mismatch(&other)),
        }
    }

    /// `AUTOREL` on every connection of this client, now and from now on: keys leased from then on
    /// come back the moment the connection that leased them closes. Idle connections send it before
    /// their next request.
    pub async fn autorel(&self) -> Result<()> {
        self.state().autorel = true;
        // Send it now on one connection, so that a daemon that refuses it says so here.
        let connection = self.checkout().await?;
        self.give_back(connection);
        Ok(())
    }

    /// `USE pool` for every connection of this client, now and from now on. Fails, and changes
    /// nothing, when the daemon refuses the pool (`CLIENT_ERROR forbidden` for a token without it).
    pub async fn use_pool(&self, pool: &str) -> Result<()> {
        let command = Command::use_pool(pool)?;
        let mut connection = self.checkout().await?;
        self.timed(Duration::ZERO, connection.setup(std::slice::from_ref(&command))).await?;
        self.state().pool = Some(pool.to_string());
        self.give_back(connection);
        Ok(())
    }

    /// Leases a key with a token, waiting up to `wait`, and returns a guard that keeps it: a
    /// background task TOUCHes it every third of the daemon's block window, and the key goes back,
    /// under its token, on [`LeaseGuard::release`] or when the guard is dropped. `None` when no key
    /// came free in time.
    ///
    /// The block window is the daemon's `--block-timeout`, read once from `STATS`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keypool::client::Client;
    /// # use keypool::server::{Config, Handle};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
    /// let client = Client::connect(server.addr()).await?;
    /// client.gen(1).await?;
    /// {
    ///     let key = client.leased(Duration::from_secs(1)).await?.expect("a free key");
    ///     println!("calling the API with {key}");
    /// } // dropped: given back from a spawned task
    /// let again = client.leased(Duration::from_secs(1)).await?;
    /// assert!(again.is_some(), "the dropped guard gave the key back");
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn leased(&self, wait: Duration) -> Result<Option<LeaseGuard>> {
        let block = self.block_timeout().await?;
        let lease = self.lease(Some(wait), None).await?;
        Ok(lease.map(|lease| LeaseGuard::start(self.clone(), lease, block, None)))
    }

    /// [`Client::leased`] with a block window of its own: the lease and every heartbeat `TOUCH` ask
    /// for `block`, and the heartbeat runs every third of it.
    pub async fn leased_for(&self, wait: Duration, block: Duration) -> Result<Option<LeaseGuard>> {
        let lease = self.lease(Some(wait), Some(block)).await?;
        Ok(lease.map(|lease| LeaseGuard::start(self.clone(), lease, block, Some(block))))
    }

    /// A [`Pipeline`]: requests queued here go out in one write and their replies are read in order.
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::new(self)
    }

    /// The daemon's `--block-timeout`, read from `STATS` the first time and remembered.
    async fn block_timeout(&self) -> Result<Duration> {
        if let Some(block) = self.state().block_timeout {
            return Ok(block);
        }
        let stats = self.stats().await?;
        let block = stats
            .number("block_timeout_ms")
            .map(Duration::from_millis)
            .ok_or_else(|| Error::Protocol("STATS without block_timeout_ms".into()))?;
        self.state().block_timeout = Some(block);
        Ok(block)
    }

    /// Sends one request and returns its reply; the daemon's refusal is the error.
    async fn request(&self, command: Command) -> Result<Reply> {
        let mut connection = self.checkout().await?;
        let answer = self.timed(command.wait(), connection.exchange_one(&command)).await?;
        self.give_back(connection);
        into_reply(answer?)
    }

    /// Sends `commands` in one write and returns their replies in order (used by [`Pipeline`]).
    async fn exchange(&self, commands: &[Command]) -> Result<Vec<Result<Reply>>> {
        let mut connection = self.checkout().await?;
        // The daemon answers a waiting request before the ones behind it: their waits add up.
        let waits = commands.iter().map(Command::wait).fold(Duration::ZERO, Duration::saturating_add);
        let answers = self.timed(waits, connection.exchange(commands)).await?;
        self.give_back(connection);
        Ok(answers.into_iter().map(|answer| answer.and_then(into_reply)).collect())
    }

    /// Runs `future` under the request timeout, lengthened by `wait`.
    async fn timed<T>(&self, wait: Duration, future: impl Future<Output = Result<T>>) -> Result<T> {
        match self.inner.request_timeout {
            None => future.await,
            Some(timeout) => {
                let limit = timeout.saturating_add(wait);
                tokio::time::timeout(limit, future).await.map_err(|_| Error::Timeout(limit))?
            }
        }
    }

    /// An idle connection brought in line with the client's pool and `AUTOREL`, or a new one.
    async fn checkout(&self) -> Result<Connection> {
        let (idle, setup) = {
            let state = self.state();
            let idle = state.idle.last();
            let mut setup = Vec::new();
            if idle.is_none() {
                if let Some(token) = &self.inner.token {
                    setup.push(Command::Auth(token.clone()));
                }
            }
            if let Some(pool) = &state.pool {
                if idle.is_none_or(|connection| connection.pool.as_ref() != Some(pool)) {
                    setup.push(Command::Use(pool.clone()));
                }
            }
            if state.autorel && idle.is_none_or(|connection| !connection.autorel) {
                setup.push(Command::Autorel);
            }
            let mut state = state;
            (state.idle.pop(), setup)
        };
        match idle {
            Some(mut connection) => {
                if !setup.is_empty() {
                    self.timed(Duration::ZERO, connection.setup(&setup)).await?;
                }
                Ok(connection)
            }
            None => {
                let limit = self.inner.connect_timeout;
                tokio::time::timeout(limit, Connection::open(&self.inner.addr, &setup))
                    .await
                    .map_err(|_| Error::Timeout(limit))?
            }
        }
    }

    fn give_back(&self, connection: Connection) {
        self.state().idle.push(connection);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock guards plain pushes and pops that cannot panic half-way: a poisoned lock still
        // holds a consistent state.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("addr", &self.inner.addr).finish_non_exhaustive()
    }
}

fn into_reply(answer: Answer) -> Result<Reply> {
    match answer {
        Answer::Reply(reply) => Ok(reply),
        Answer::Done => Err(Error::Protocol("a bare acknowledgement where a reply was due".into())),
    }
}

/// A reply of the wrong kind for the request: the parser never makes one, but the client says so
/// rather than panic if it ever did.
fn mismatch(reply: &Reply) -> Error {
    Error::Protocol(format!("a reply of the wrong kind: {:?}", std::mem::discriminant(reply)))
}
