//! Pipelining: many requests in one write, their replies read back in order on one connection.
//!
//! The daemon answers a whole batch of pipelined requests under one lock and with one write, so a
//! pipeline of N requests costs about one round trip instead of N. A [`Pipeline`] is reusable: [`run`]
//! sends what was queued, empties the queue, and the same value can queue the next batch.
//!
//! [`run`]: Pipeline::run

use std::time::Duration;

use super::command::Command;
use super::error::{Error, Result};
use super::types::{KeyId, KeyRef, Reply};
use super::Client;

/// A batch of requests, sent together by [`Pipeline::run`].
///
/// Each request gets its own answer: one refused (say, `CLIENT_ERROR`) does not fail the others. Only a
/// broken connection fails the whole run.
///
/// ```
/// use keypool::client::{Client, Released, Reply};
/// # use keypool::server::{Config, Handle};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = Handle::start("127.0.0.1:0".parse()?, Config::default()).await?;
/// let client = Client::connect(server.addr()).await?;
/// let id = client.gen(1).await?[0];
/// let mut pipeline = client.pipeline();
/// pipeline.get(None, None).release(id, None).ping(&id).version();
/// let replies = pipeline.run().await?;
/// assert!(matches!(replies[0], Ok(Reply::Lease(Some(_)))));
/// assert!(matches!(replies[1], Ok(Reply::Released(Released::Yes))));
/// assert!(matches!(replies[2], Ok(Reply::Alive(true))));
/// assert!(matches!(replies[3], Ok(Reply::Version(_))));
/// assert!(pipeline.is_empty(), "run empties the queue");
/// # server.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct Pipeline<'c> {
    client: &'c Client,
    commands: Vec<Command>,
    /// The first argument refused while queueing; `run` reports it instead of sending anything.
    refused: Option<Error>,
}

impl<'c> Pipeline<'c> {
    pub(super) fn new(client: &'c Client) -> Pipeline<'c> {
        Pipeline { client, commands: Vec::new(), refused: None }
    }

    /// How many requests are queued.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Queues `GEN count`; answered [`Reply::Keys`].
    pub fn gen(&mut self, count: u32) -> &mut Self {
        self.push(Ok(Command::Gen(count)))
    }

    /// Queues `ADD secret [keepalive]`; answered [`Reply::Added`]. A secret the daemon would refuse
    /// makes [`Pipeline::run`] fail with [`Error::InvalidArgument`] before sending anything.
    pub fn add(&mut self, secret: &str, keepalive: Option<Duration>) -> &mut Self {
        self.push(Command::add(secret, keepalive))
    }

    /// Queues `GET [wait [block]]`; answered [`Reply::Lease`].
    pub fn get(&mut self, wait: Option<Duration>, block: Option<Duration>) -> &mut Self {
        self.push(Ok(Command::Get { wait, block }))
    }

    /// Queues `LEASE [wait [block]]`; answered [`Reply::Lease`]. A waiting request holds back the
    /// replies behind it until it is answered.
    pub fn lease(&mut self, wait: Option<Duration>, block: Option<Duration>) -> &mut Self {
        self.push(Ok(Command::Lease { wait, block }))
    }

    /// Queues `REL id [token] [delay]`; answered [`Reply::Released`].
    pub fn release(&mut self, key: impl Into<KeyRef>, delay: Option<Duration>) -> &mut Self {
        self.push(Ok(Command::Release { key: key.into(), delay }))
    }

    /// Queues `TOUCH id [token] [block]`; answered [`Reply::Touched`].
    pub fn touch(&mut self, key: impl Into<KeyRef>, block: Option<Duration>) -> &mut Self {
        self.push(Ok(Command::Touch { key: key.into(), block }))
    }

    /// Queues `DEL id`; answered [`Reply::Deleted`].
    pub fn delete(&mut self, id: &KeyId) -> &mut Self {
        self.push(Ok(Command::Delete(*id)))
    }

    /// Queues `PING id`; answered [`Reply::Alive`].
    pub fn ping(&mut self, id: &KeyId) -> &mut Self {
        self.push(Ok(Command::PingKey(*id)))
    }

    /// Queues `PING`; answered [`Reply::Pong`].
    pub fn health(&mut self) -> &mut Self {
        self.push(Ok(Command::Health))
    }

    /// Queues `INFO id`; answered [`Reply::Info`].
    pub fn info(&mut self, id: &KeyId) -> &mut Self {
        self.push(Ok(Command::Info(*id)))
    }

    /// Queues `STATS`; answered [`Reply::Stats`].
    pub fn stats(&mut self) -> &mut Self {
        self.push(Command::stats(None))
    }

    /// Queues `VERSION`; answered [`Reply::Version`].
    pub fn version(&mut self) -> &mut Self {
        self.push(Ok(Command::Version))
    }

    /// Sends every queued request in one write and returns their answers in the order queued, then
    /// empties the queue. The outer `Err` is a connection failure (or an argument refused while
    /// queueing, in which case nothing was sent); each inner one is the daemon's refusal of that
    /// request alone.
    pub async fn run(&mut self) -> Result<Vec<Result<Reply>>> {
        let commands = std::mem::take(&mut self.commands);
        if let Some(refused) = self.refused.take() {
            return Err(refused);
        }
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.client.exchange(&commands).await;
        // Keep the allocation for the next batch.
        self.commands = commands;
        self.commands.clear();
        replies
    }

    fn push(&mut self, command: Result<Command>) -> &mut Self {
        match command {
            Ok(command) => self.commands.push(command),
            Err(error) => {
                self.refused.get_or_insert(error);
            }
        }
        self
    }
}
