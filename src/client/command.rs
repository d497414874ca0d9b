//! Requests as the client sends them: each command, checked and spelled onto the wire, and the shape
//! of the reply it expects.
//!
//! Every argument is checked before it is written, so that no value a caller passes can end a request
//! line early or smuggle in a second request: a secret with a space or a newline is refused here, never
//! sent. Durations always go out in milliseconds (`1500ms`), the unit every `Duration` the client is
//! given is counted in once sub-millisecond parts are dropped.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::error::{Error, Result};
use super::types::{KeyId, KeyRef};
use crate::pool::valid_pool_name;

/// One request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Command {
    Gen(u32),
    Add { secret: String, keepalive: Option<Duration> },
    Get { wait: Option<Duration>, block: Option<Duration> },
    Lease { wait: Option<Duration>, block: Option<Duration> },
    Release { key: KeyRef, delay: Option<Duration> },
    Touch { key: KeyRef, block: Option<Duration> },
    Delete(KeyId),
    PingKey(KeyId),
    Health,
    Info(KeyId),
    Stats(Option<String>),
    Pools(u64),
    Version,
    Autorel,
    Use(String),
    Auth(String),
}

/// The shape of the reply a command expects; see [`super::reply::ReplyParser`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    Keys,
    Added,
    Lease { with_token: bool },
    Released,
    Touched,
    Deleted,
    Alive,
    Pong,
    Info,
    Stats,
    Pools,
    Version,
    Ok,
    Using,
    Auth,
}

impl Command {
    /// `ADD secret [keepalive]`, refusing a secret the daemon would refuse or misread.
    pub fn add(secret: &str, keepalive: Option<Duration>) -> Result<Command> {
        if secret.is_empty() || !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(Error::InvalidArgument("a secret is 1 or more printable ASCII bytes without spaces".into()));
        }
        Ok(Command::Add { secret: secret.to_string(), keepalive })
    }

    /// `USE pool`, refusing a malformed pool name.
    pub fn use_pool(pool: &str) -> Result<Command> {
        check_pool_name(pool)?;
        Ok(Command::Use(pool.to_string()))
    }

    /// `STATS [pool]`, refusing a malformed pool name.
    pub fn stats(pool: Option<&str>) -> Result<Command> {
        if let Some(pool) = pool {
            check_pool_name(pool)?;
        }
        Ok(Command::Stats(pool.map(str::to_string)))
    }

    /// `AUTH token`, refusing a token that is not one word of printable ASCII.
    pub fn auth(token: &str) -> Result<Command> {
        if token.is_empty() || !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(Error::InvalidArgument("a token is 1 or more printable ASCII bytes without spaces".into()));
        }
        Ok(Command::Auth(token.to_string()))
    }

    /// What the reply looks like.
    pub fn expect(&self) -> Expect {
        match self {
            Command::Gen(_) => Expect::Keys,
            Command::Add { .. } => Expect::Added,
            Command::Get { .. } => Expect::Lease { with_token: false },
            Command::Lease { .. } => Expect::Lease { with_token: true },
            Command::Release { .. } => Expect::Released,
            Command::Touch { .. } => Expect::Touched,
            Command::Delete(_) => Expect::Deleted,
            Command::PingKey(_) => Expect::Alive,
            Command::Health => Expect::Pong,
            Command::Info(_) => Expect::Info,
            Command::Stats(_) => Expect::Stats,
            Command::Pools(_) => Expect::Pools,
            Command::Version => Expect::Version,
            Command::Autorel => Expect::Ok,
            Command::Auth(_) => Expect::Auth,
            Command::Use(_) => Expect::Using,
        }
    }

    /// How long the daemon may rightly take before it answers: a wait for a key, else nothing. The
    /// request timeout is counted on top of it.
    pub fn wait(&self) -> Duration {
        match self {
            Command::Get { wait, .. } | Command::Lease { wait, .. } => wait.unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        }
    }

    /// Appends the request line, CRLF included, to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Command::Gen(count) => {
                out.put_slice(b"GEN ");
                put_number(out, u64::from(*count));
            }
            Command::Add { secret, keepalive } => {
                out.put_slice(b"ADD ");
                out.put_slice(secret.as_bytes());
                put_optional_duration(out, *keepalive);
            }
            Command::Get { wait, block } => put_lease(out, b"GET", *wait, *block),
            Command::Lease { wait, block } => put_lease(out, b"LEASE", *wait, *block),
            Command::Release { key, delay } => {
                put_key(out, b"REL ", key);
                put_optional_duration(out, *delay);
            }
            Command::Touch { key, block } => {
                put_key(out, b"TOUCH ", key);
                put_optional_duration(out, *block);
            }
            Command::Delete(id) => put_id(out, b"DEL ", id),
            Command::PingKey(id) => put_id(out, b"PING ", id),
            Command::Health => out.put_slice(b"PING"),
            Command::Info(id) => put_id(out, b"INFO ", id),
            Command::Stats(pool) => {
                out.put_slice(b"STATS");
                if let Some(pool) = pool {
                    out.put_u8(b' ');
                    out.put_slice(pool.as_bytes());
                }
            }
            Command::Pools(cursor) => {
                out.put_slice(b"POOLS ");
                put_number(out, *cursor);
            }
            Command::Version => out.put_slice(b"VERSION"),
            Command::Autorel => out.put_slice(b"AUTOREL"),
            Command::Use(pool) => {
                out.put_slice(b"USE ");
                out.put_slice(pool.as_bytes());
            }
            Command::Auth(token) => {
                out.put_slice(b"AUTH ");
                out.put_slice(token.as_bytes());
            }
        }
        out.put_slice(b"\r\n");
    }
}

fn check_pool_name(pool: &str) -> Result<()> {
    if valid_pool_name(pool.as_bytes()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument("a pool name is 1 to 64 letters, digits, '_', '.' or '-'".into()))
    }
}

fn put_number(out: &mut BytesMut, n: u64) {
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn put_duration(out: &mut BytesMut, duration: Duration) {
    put_number(out, u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    out.put_slice(b"ms");
}

fn put_optional_duration(out: &mut BytesMut, duration: Option<Duration>) {
    if let Some(duration) = duration {
        out.put_u8(b' ');
        put_duration(out, duration);
    }
}

fn put_id(out: &mut BytesMut, verb: &[u8], id: &KeyId) {
    out.put_slice(verb);
    out.put_slice(id.as_bytes());
}

fn put_key(out: &mut BytesMut, verb: &[u8], key: &KeyRef) {
    put_id(out, verb, &key.id);
    if let Some(token) = key.token {
        out.put_u8(b' ');
        put_number(out, token);
    }
}

/// `GET`/`LEASE [wait [block]]`: a block window without a wait needs a wait of `0ms` before it.
fn put_lease(out: &mut BytesMut, verb: &[u8], wait: Option<Duration>, block: Option<Duration>) {
    out.put_slice(verb);
    if wait.is_some() || block.is_some() {
        out.put_u8(b' ');
        put_duration(out, wait.unwrap_or(Duration::ZERO));
    }
    put_optional_duration(out, block);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &[u8; 24] = b"8JqXbX3v1bJ0oYyqPZ2hXa7M";

    fn spell(command: Command) -> String {
        let mut out = BytesMut::new();
        command.encode(&mut out);
        String::from_utf8(out.to_vec()).expect("requests are ASCII")
    }

    fn id() -> KeyId {
        KeyId::parse(ID).expect("a well-formed id")
    }

    #[test]
    fn every_command_is_spelled_as_protocol_md_has_it() {
        let ms = Duration::from_millis;
        assert_eq!(spell(Command::Gen(3)), "GEN 3\r\n");
        assert_eq!(spell(Command::add("sk-1", None).unwrap()), "ADD sk-1\r\n");
        assert_eq!(spell(Command::add("sk-1", Some(ms(0))).unwrap()), "ADD sk-1 0ms\r\n");
        assert_eq!(spell(Command::Get { wait: None, block: None }), "GET\r\n");
        assert_eq!(spell(Command::Get { wait: Some(ms(5000)), block: None }), "GET 5000ms\r\n");
        assert_eq!(spell(Command::Lease { wait: None, block: Some(ms(200)) }), "LEASE 0ms 200ms\r\n");
        assert_eq!(spell(Command::Lease { wait: Some(ms(1)), block: Some(ms(2)) }), "LEASE 1ms 2ms\r\n");
        let with_token = KeyRef { id: id(), token: Some(42) };
        assert_eq!(spell(Command::Release { key: with_token, delay: None }), format!("REL {} 42\r\n", id()));
        let plain = KeyRef::from(id());
        assert_eq!(
            spell(Command::Release { key: plain, delay: Some(ms(60_000)) }),
            format!("REL {} 60000ms\r\n", id())
        );
        assert_eq!(spell(Command::Touch { key: with_token, block: Some(ms(9)) }), format!("TOUCH {} 42 9ms\r\n", id()));
        assert_eq!(spell(Command::Delete(id())), format!("DEL {}\r\n", id()));
        assert_eq!(spell(Command::PingKey(id())), format!("PING {}\r\n", id()));
        assert_eq!(spell(Command::Health), "PING\r\n");
        assert_eq!(spell(Command::Info(id())), format!("INFO {}\r\n", id()));
        assert_eq!(spell(Command::stats(None).unwrap()), "STATS\r\n");
        assert_eq!(spell(Command::stats(Some("openai-prod")).unwrap()), "STATS openai-prod\r\n");
        assert_eq!(spell(Command::Pools(0)), "POOLS 0\r\n");
        assert_eq!(spell(Command::Version), "VERSION\r\n");
        assert_eq!(spell(Command::Autorel), "AUTOREL\r\n");
        assert_eq!(spell(Command::use_pool("a_b.c-1").unwrap()), "USE a_b.c-1\r\n");
        assert_eq!(spell(Command::auth("t0k3n").unwrap()), "AUTH t0k3n\r\n");
    }

    #[test]
    fn arguments_that_would_break_the_line_are_refused() {
        for secret in ["", "two words", "line\r\nDEL x", "tab\there", "caf\u{e9}"] {
            assert!(matches!(Command::add(secret, None), Err(Error::InvalidArgument(_))), "{secret:?}");
        }
        for pool in ["", "a/b", "a b", "x\n"] {
            assert!(matches!(Command::use_pool(pool), Err(Error::InvalidArgument(_))), "{pool:?}");
            assert!(matches!(Command::stats(Some(pool)), Err(Error::InvalidArgument(_))), "{pool:?}");
        }
        assert!(matches!(Command::use_pool(&"p".repeat(65)), Err(Error::InvalidArgument(_))));
        assert!(matches!(Command::auth("a b"), Err(Error::InvalidArgument(_))));
    }
}
