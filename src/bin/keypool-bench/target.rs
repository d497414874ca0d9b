//! The servers keypool-bench can drive, and how each one spells a lease, a ping, a lookup and a mint.
//!
//! keypool is the subject; memcached and redis are calibration baselines a user already runs, driven
//! through the same connection and pipeline machinery so that the figures compare like with like:
//!
//! | operation | keypool | memcached | redis |
//! |---|---|---|---|
//! | take (lease, 1st half) | `GET` | `get <key>` | `SPOP keypool:free` |
//! | give back (lease, 2nd half) | `REL <id>` | `touch <key> 60` | `SADD keypool:free <id>` |
//! | ping | `PING <id>` | `touch <key> 300` | `EXPIRE keypool:key:<id> 300` |
//! | info | `INFO <id>` | `get <key>` | `TTL keypool:key:<id>` |
//! | gen | `GEN 1` | `set <new key> 0 300 24` | `SADD keypool:free <new id>` |
//!
//! The `contend` workload (`LEASE <wait>`, `REL <id> <token>`) has no baseline: memcached and redis
//! cannot make a request wait for a key and hand it to the oldest waiter. It runs on keypool's own
//! client (`contend.rs`), and only its [`Reply`] accounting passes through here.
//!
//! Replies are parsed incrementally: [`Target::parse`] looks at the front of the read buffer and either
//! finds one complete reply or says it needs more bytes, so a reply split across reads is never misread.

use bytes::{BufMut, BytesMut};

/// A key id as the bench handles it: 24 ASCII letters and digits, for every target.
pub type Id = [u8; 24];

/// A keypool fencing token: names one lease of a key, so that its `REL` cannot free a later lease.
pub type Token = u64;

/// One request the bench can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Lease a key (first half of the `lease` workload). For memcached, which cannot choose a key,
    /// the bench names a random seeded one.
    Take(Option<Id>),
    /// Give back the key a `Take` returned.
    GiveBack(Id),
    /// Keep a seeded key alive.
    Ping(Id),
    /// Look a seeded key up.
    Info(Id),
    /// Mint one key (for memcached and redis, the bench draws its id).
    Gen(Id),
}

/// What a reply meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Success; for `Take`, the id of the key leased.
    Done(Option<Id>),
    /// A `contend` LEASE got a key, under this lease.
    Leased { id: Id, token: Token },
    /// A well-formed miss: nothing free, no such key, not blocked.
    NotFound,
    /// A `contend` REL came too late: that lease was already over (it timed out, and the key may be leased
    /// again). Kept apart from `NotFound` because in `contend` it means `--hold` outlasted the block
    /// timeout, which a run should show rather than blend into the misses.
    Stale,
    /// The server reported an error (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`, redis `-ERR`).
    Error(String),
    /// A reply the bench did not expect for this request.
    Unexpected(String),
}

/// Which server is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Keypool,
    Memcached,
    Redis,
}

/// The redis set that holds free ids, and the prefix of per-key strings that `EXPIRE` and `TTL` act on.
pub const REDIS_FREE_SET: &str = "keypool:free";
pub const REDIS_KEY_PREFIX: &str = "keypool:key:";

impl Target {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Keypool => "keypool",
            Target::Memcached => "memcached",
            Target::Redis => "redis",
        }
    }

    /// Appends the request for `op` to `out`.
    pub fn encode(self, op: Op, out: &mut BytesMut) {
        let put = |out: &mut BytesMut, parts: &[&[u8]]| {
            for part in parts {
                out.put_slice(part);
            }
            out.put_slice(b"\r\n");
        };
        match (self, op) {
            (Target::Keypool, Op::Take(_)) => put(out, &[b"GET"]),
            (Target::Keypool, Op::GiveBack(id)) => put(out, &[b"REL ", &id]),
            (Target::Keypool, Op::Ping(id)) => put(out, &[b"PING ", &id]),
            (Target::Keypool, Op::Info(id)) => put(out, &[b"INFO ", &id]),
            (Target::Keypool, Op::Gen(_)) => put(out, &[b"GEN 1"]),

            (Target::Memcached, Op::Take(id)) => put(out, &[b"get ", &id.unwrap_or([b'x'; 24])]),
            (Target::Memcached, Op::GiveBack(id)) => put(out, &[b"touch ", &id, b" 60"]),
            (Target::Memcached, Op::Ping(id)) => put(out, &[b"touch ", &id, b" 300"]),
            (Target::Memcached, Op::Info(id)) => put(out, &[b"get ", &id]),
            (Target::Memcached, Op::Gen(id)) => {
                put(out, &[b"set ", &id, b" 0 300 24"]);
                put(out, &[&id]);
            }

            (Target::Redis, Op::Take(_)) => put(out, &[b"SPOP ", REDIS_FREE_SET.as_bytes()]),
            (Target::Redis, Op::GiveBack(id)) | (Target::Redis, Op::Gen(id)) => {
                put(out, &[b"SADD ", REDIS_FREE_SET.as_bytes(), b" ", &id])
            }
            (Target::Redis, Op::Ping(id)) => put(out, &[b"EXPIRE ", REDIS_KEY_PREFIX.as_bytes(), &id, b" 300"]),
            (Target::Redis, Op::Info(id)) => put(out, &[b"TTL ", REDIS_KEY_PREFIX.as_bytes(), &id]),
        }
    }

    /// Reads the reply to `op` from the front of `buf`: `Some((reply, bytes used))`, or `None` when the
    /// reply is not complete yet.
    pub fn parse(self, op: Op, buf: &[u8]) -> Option<(Reply, usize)> {
        match self {
            Target::Keypool => parse_keypool(op, buf),
            Target::Memcached => parse_memcached(op, buf),
            Target::Redis => parse_redis(op, buf),
        }
    }
}

/// The first line of `buf` without its CRLF (or LF), and the bytes it spans with its ending.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = memchr::memchr(b'\n', buf)?;
    let text = &buf[..end];
    Some((text.strip_suffix(b"\r").unwrap_or(text), end + 1))
}

fn id_from(token: &[u8]) -> Option<Id> {
    token.try_into().ok()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Classifies a line that is an error report in every line protocol, or else unexpected.
fn error_or_unexpected(first: &[u8]) -> Reply {
    if first.starts_with(b"ERROR") || first.starts_with(b"CLIENT_ERROR") || first.starts_with(b"SERVER_ERROR") {
        Reply::Error(text(first))
    } else {
        Reply::Unexpected(text(first))
    }
}

fn parse_keypool(op: Op, buf: &[u8]) -> Option<(Reply, usize)> {
    let (first, used) = line(buf)?;
    let reply = match (op, first) {
        (_, b"NOT_FOUND") | (Op::GiveBack(_), b"NOT_BLOCKED") => Reply::NotFound,
        (Op::Take(_), _) if first.starts_with(b"KEY ") => match id_from(&first[4..]) {
            Some(id) => Reply::Done(Some(id)),
            None => Reply::Unexpected(text(first)),
        },
        (Op::GiveBack(_), b"RELEASED") | (Op::Ping(_), b"ALIVE") => Reply::Done(None),
        (Op::Info(_), _) if first.starts_with(b"STAT ") => return block_until_end(buf),
        (Op::Gen(_), _) if first.starts_with(b"KEY ") => return block_until_end(buf),
        _ => error_or_unexpected(first),
    };
    Some((reply, used))
}

/// A block of lines closed by `END`: complete once the `END` line has arrived.
fn block_until_end(buf: &[u8]) -> Option<(Reply, usize)> {
    let mut used = 0;
    loop {
        let (next, len) = line(&buf[used..])?;
        used += len;
        if next == b"END" {
            return Some((Reply::Done(None), used));
        }
    }
}

fn parse_memcached(op: Op, buf: &[u8]) -> Option<(Reply, usize)> {
    let (first, used) = line(buf)?;
    let reply = match (op, first) {
        (Op::Take(_) | Op::Info(_), b"END") | (Op::GiveBack(_) | Op::Ping(_), b"NOT_FOUND") => Reply::NotFound,
        (Op::Take(_) | Op::Info(_), _) if first.starts_with(b"VALUE ") => return memcached_value(first, used, buf),
        (Op::GiveBack(_) | Op::Ping(_), b"TOUCHED") | (Op::Gen(_), b"STORED") => Reply::Done(None),
        _ => error_or_unexpected(first),
    };
    Some((reply, used))
}

/// `VALUE <key> <flags> <bytes>` then the data line then `END`; the key is the lease's id.
fn memcached_value(first: &[u8], used: usize, buf: &[u8]) -> Option<(Reply, usize)> {
    let mut fields = first.split(|&b| b == b' ').skip(1);
    let key = fields.next().and_then(id_from);
    let len = fields.nth(1).and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
    let (Some(key), Some(len)) = (key, len) else {
        return Some((Reply::Unexpected(text(first)), used));
    };
    let end_line = used + len + 2;
    let (last, last_len) = line(buf.get(end_line..)?)?;
    let reply = if last == b"END" { Reply::Done(Some(key)) } else { Reply::Unexpected(text(last)) };
    Some((reply, end_line + last_len))
}

fn parse_redis(op: Op, buf: &[u8]) -> Option<(Reply, usize)> {
    let (first, used) = line(buf)?;
    let reply = match first.first() {
        Some(b'-') => Reply::Error(text(first)),
        Some(b'$') if first == b"$-1" => Reply::NotFound,
        Some(b'$') => {
            let len: usize = match std::str::from_utf8(&first[1..]).ok().and_then(|n| n.parse().ok()) {
                Some(len) => len,
                None => return Some((Reply::Unexpected(text(first)), used)),
            };
            let data = buf.get(used..used + len + 2)?;
            let id = id_from(&data[..len]);
            let reply = match (op, id) {
                (Op::Take(_), Some(id)) => Reply::Done(Some(id)),
                _ => Reply::Unexpected(text(&data[..len])),
            };
            return Some((reply, used + len + 2));
        }
        Some(b':') => match (op, &first[1..]) {
            (Op::Ping(_), b"0") | (Op::Info(_), b"-2") => Reply::NotFound,
            (Op::GiveBack(_) | Op::Gen(_) | Op::Ping(_) | Op::Info(_), _) => Reply::Done(None),
            (Op::Take(_), _) => Reply::Unexpected(text(first)),
        },
        _ => Reply::Unexpected(text(first)),
    };
    Some((reply, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Id = *b"abcdefghijklmnopqrstuvwx";

    /// Feeds `stream` one byte more at a time and checks that the reply is found only once complete,
    /// and then with exactly the expected length.
    fn parses_only_when_complete(target: Target, op: Op, stream: &[u8], expected: Reply) {
        for cut in 0..stream.len() {
            assert_eq!(target.parse(op, &stream[..cut]), None, "{target:?} {op:?} at {cut} bytes");
        }
        let mut with_more = stream.to_vec();
        with_more.extend_from_slice(b"NEXT\r\n");
        assert_eq!(target.parse(op, &with_more), Some((expected, stream.len())));
    }

    #[test]
    fn keypool_replies_split_across_reads() {
        let k = Target::Keypool;
        parses_only_when_complete(k, Op::Take(None), b"KEY abcdefghijklmnopqrstuvwx\r\n", Reply::Done(Some(ID)));
        parses_only_when_complete(k, Op::Take(None), b"NOT_FOUND\r\n", Reply::NotFound);
        parses_only_when_complete(k, Op::GiveBack(ID), b"RELEASED\r\n", Reply::Done(None));
        parses_only_when_complete(k, Op::GiveBack(ID), b"NOT_BLOCKED\r\n", Reply::NotFound);
        parses_only_when_complete(k, Op::Ping(ID), b"ALIVE\r\n", Reply::Done(None));
        let info = b"STAT id abcdefghijklmnopqrstuvwx\r\nSTAT state free\r\nSTAT leases 0\r\nEND\r\n";
        parses_only_when_complete(k, Op::Info(ID), info, Reply::Done(None));
        parses_only_when_complete(k, Op::Gen(ID), b"KEY abcdefghijklmnopqrstuvwx\r\nEND\r\n", Reply::Done(None));
        parses_only_when_complete(
            k,
            Op::Gen(ID),
            b"SERVER_ERROR pool full\r\n",
            Reply::Error("SERVER_ERROR pool full".into()),
        );
        parses_only_when_complete(k, Op::Ping(ID), b"RELEASED\r\n", Reply::Unexpected("RELEASED".into()));
    }

    #[test]
    fn stale_is_odd_to_a_rel_without_a_token() {
        // STALE answers only a REL that named a token; the lease workload's REL names none.
        let odd = Target::Keypool.parse(Op::GiveBack(ID), b"STALE\r\n");
        assert_eq!(odd, Some((Reply::Unexpected("STALE".into()), 7)));
    }

    #[test]
    fn memcached_replies_split_across_reads() {
        let m = Target::Memcached;
        let value = b"VALUE abcdefghijklmnopqrstuvwx 0 24\r\nabcdefghijklmnopqrstuvwx\r\nEND\r\n";
        parses_only_when_complete(m, Op::Take(Some(ID)), value, Reply::Done(Some(ID)));
        parses_only_when_complete(m, Op::Take(Some(ID)), b"END\r\n", Reply::NotFound);
        parses_only_when_complete(m, Op::GiveBack(ID), b"TOUCHED\r\n", Reply::Done(None));
        parses_only_when_complete(m, Op::Ping(ID), b"NOT_FOUND\r\n", Reply::NotFound);
        parses_only_when_complete(m, Op::Gen(ID), b"STORED\r\n", Reply::Done(None));
    }

    #[test]
    fn redis_replies_split_across_reads() {
        let r = Target::Redis;
        parses_only_when_complete(r, Op::Take(None), b"$24\r\nabcdefghijklmnopqrstuvwx\r\n", Reply::Done(Some(ID)));
        parses_only_when_complete(r, Op::Take(None), b"$-1\r\n", Reply::NotFound);
        parses_only_when_complete(r, Op::GiveBack(ID), b":1\r\n", Reply::Done(None));
        parses_only_when_complete(r, Op::Ping(ID), b":0\r\n", Reply::NotFound);
        parses_only_when_complete(r, Op::Info(ID), b":297\r\n", Reply::Done(None));
        parses_only_when_complete(r, Op::Take(None), b"-ERR wrong\r\n", Reply::Error("-ERR wrong".into()));
    }

    #[test]
    fn requests_are_spelled_per_target() {
        let spell = |target: Target, op: Op| {
            let mut out = BytesMut::new();
            target.encode(op, &mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(spell(Target::Keypool, Op::Take(None)), "GET\r\n");
        assert_eq!(spell(Target::Keypool, Op::GiveBack(ID)), "REL abcdefghijklmnopqrstuvwx\r\n");
        assert_eq!(spell(Target::Memcached, Op::Ping(ID)), "touch abcdefghijklmnopqrstuvwx 300\r\n");
        assert_eq!(
            spell(Target::Memcached, Op::Gen(ID)),
            "set abcdefghijklmnopqrstuvwx 0 300 24\r\nabcdefghijklmnopqrstuvwx\r\n"
        );
        assert_eq!(spell(Target::Redis, Op::Take(None)), "SPOP keypool:free\r\n");
        assert_eq!(spell(Target::Redis, Op::Ping(ID)), "EXPIRE keypool:key:abcdefghijklmnopqrstuvwx 300\r\n");
    }
}
