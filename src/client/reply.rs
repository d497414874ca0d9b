//! Reading replies: one line at a time into the typed answer the request expects.
//!
//! [`ReplyParser`] is fed the reply lines of one request, without their CRLF, and says when the reply
//! is complete. It does no I/O, so every reply form of protocol.md is unit-tested here on plain strings.
//!
//! Two kinds of failure are kept apart. An error reply (`CLIENT_ERROR`, `SERVER_ERROR`, `ERROR`) is
//! the answer to that one request: the connection is still in step and serves the next one. A line
//! this client does not understand is a [`Error::Protocol`]: after it, which line answers which request
//! is no longer known, so the caller drops the connection.

use std::collections::BTreeMap;

use super::command::Expect;
use super::error::Error;
use super::types::{Added, Info, KeyId, KeyState, Lease, PoolInfo, PoolsPage, Released, Reply, Stats, Touched};

/// A complete answer: a typed reply, or the plain acknowledgement of `AUTOREL`, `USE` or `AUTH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Reply(Reply),
    Done,
}

/// What one more line made of the reply.
#[derive(Debug)]
pub(super) enum Step {
    /// The reply goes on: feed the next line.
    More,
    /// The reply is complete: the answer, or the error the daemon answered with.
    Complete(Result<Answer, Error>),
}

/// Collects the lines of one reply.
pub(super) struct ReplyParser {
    expect: Expect,
    lines: usize,
    keys: Vec<KeyId>,
    figures: BTreeMap<String, String>,
    pools: Vec<PoolInfo>,
}

impl ReplyParser {
    /// A parser for the reply to a request that expects `expect`.
    pub fn new(expect: Expect) -> ReplyParser {
        ReplyParser { expect, lines: 0, keys: Vec::new(), figures: BTreeMap::new(), pools: Vec::new() }
    }

    /// Takes the next line of the reply. `Err` only for a line that does not belong in this reply,
    /// after which the connection is out of step.
    pub fn feed(&mut self, line: &str) -> Result<Step, Error> {
        let first = self.lines == 0;
        self.lines += 1;
        if first {
            if let Some(error) = error_reply(self.expect, line) {
                return Ok(Step::Complete(Err(error)));
            }
        }
        let done = |reply: Reply| Ok(Step::Complete(Ok(Answer::Reply(reply))));
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (self.expect, word) {
            (Expect::Keys, "KEY") => {
                self.keys.push(parse_id(rest, line)?);
                Ok(Step::More)
            }
            (Expect::Keys, "END") if rest.is_empty() => done(Reply::Keys(std::mem::take(&mut self.keys))),
            (Expect::Added, "KEY") => done(Reply::Added(Added::New(parse_id(rest, line)?))),
            (Expect::Added, "EXISTS") => done(Reply::Added(Added::Existing(parse_id(rest, line)?))),
            (Expect::Lease { .. }, "NOT_FOUND") if rest.is_empty() => done(Reply::Lease(None)),
            (Expect::Lease { with_token: false }, "KEY") => done(Reply::Lease(Some(parse_key(rest, line)?))),
            (Expect::Lease { with_token: true }, "LEASED") => done(Reply::Lease(Some(parse_leased(rest, line)?))),
            (Expect::Released, _) if rest.is_empty() => match word {
                "RELEASED" => done(Reply::Released(Released::Yes)),
                "NOT_BLOCKED" => done(Reply::Released(Released::NotBlocked)),
                "STALE" => done(Reply::Released(Released::Stale)),
                "NOT_FOUND" => done(Reply::Released(Released::NotFound)),
                _ => Err(unexpected(line)),
            },
            (Expect::Touched, _) if rest.is_empty() => match word {
                "TOUCHED" => done(Reply::Touched(Touched::Yes)),
                "NOT_BLOCKED" => done(Reply::Touched(Touched::NotBlocked)),
                "STALE" => done(Reply::Touched(Touched::Stale)),
                "NOT_FOUND" => done(Reply::Touched(Touched::NotFound)),
                _ => Err(unexpected(line)),
            },
            (Expect::Deleted, "DELETED") if rest.is_empty() => done(Reply::Deleted(true)),
            (Expect::Deleted, "NOT_FOUND") if rest.is_empty() => done(Reply::Deleted(false)),
            (Expect::Alive, "ALIVE") if rest.is_empty() => done(Reply::Alive(true)),
            (Expect::Alive, "NOT_FOUND") if rest.is_empty() => done(Reply::Alive(false)),
            (Expect::Pong, "PONG") if rest.is_empty() => done(Reply::Pong),
            (Expect::Info, "NOT_FOUND") if first && rest.is_empty() => done(Reply::Info(None)),
            (Expect::Info | Expect::Stats, "STAT") => {
                let (name, value) = rest.split_once(' ').ok_or_else(|| unexpected(line))?;
                self.figures.insert(name.to_string(), value.to_string());
                Ok(Step::More)
            }
            (Expect::Info, "END") if rest.is_empty() && !first => {
                done(Reply::Info(Some(info_from(&std::mem::take(&mut self.figures))?)))
            }
            (Expect::Stats, "END") if rest.is_empty() => {
                done(Reply::Stats(Stats::from_map(std::mem::take(&mut self.figures))))
            }
            (Expect::Pools, "POOL") => {
                let (name, keys) = rest.split_once(' ').ok_or_else(|| unexpected(line))?;
                let keys = keys.parse().map_err(|_| unexpected(line))?;
                self.pools.push(PoolInfo { name: name.to_string(), keys });
                Ok(Step::More)
            }
            (Expect::Pools, "END") => {
                let next = rest.parse().map_err(|_| unexpected(line))?;
                done(Reply::Pools(PoolsPage { pools: std::mem::take(&mut self.pools), next }))
            }
            (Expect::Version, "VERSION") if !rest.is_empty() => done(Reply::Version(rest.to_string())),
            (Expect::Ok | Expect::Auth, "OK") if rest.is_empty() => Ok(Step::Complete(Ok(Answer::Done))),
            (Expect::Using, "USING") if !rest.is_empty() => Ok(Step::Complete(Ok(Answer::Done))),
            _ => Err(unexpected(line)),
        }
    }
}

/// The error a first reply line reports, if it is one. `AUTH` is refused with a `CLIENT_ERROR`, which
/// for it means the token, not the request.
fn error_reply(expect: Expect, line: &str) -> Option<Error> {
    if let Some(message) = line.strip_prefix("CLIENT_ERROR ") {
        return Some(match expect {
            Expect::Auth => Error::Auth(message.to_string()),
            _ => Error::Client(message.to_string()),
        });
    }
    if let Some(message) = line.strip_prefix("SERVER_ERROR ") {
        return Some(Error::Server(message.to_string()));
    }
    if line.starts_with("ERROR NOAUTH") {
        return Some(Error::NoAuth);
    }
    line.strip_prefix("ERROR ").map(|message| Error::Unsupported(message.to_string()))
}

fn unexpected(line: &str) -> Error {
    // A secret is sent only in lease replies, which are parsed before anything can be unexpected about
    // them; still, never echo more than a short prefix of a line.
    let shown: String = line.chars().take(80).collect();
    Error::Protocol(format!("{shown:?}"))
}

fn parse_id(text: &str, line: &str) -> Result<KeyId, Error> {
    KeyId::parse(text.as_bytes()).ok_or_else(|| unexpected(line))
}

/// `<id>` or `<id> <secret>`, after `KEY `.
fn parse_key(rest: &str, line: &str) -> Result<Lease, Error> {
    let (id, secret) = match rest.split_once(' ') {
        Some((id, secret)) => (id, Some(secret)),
        None => (rest, None),
    };
    if secret.is_some_and(|secret| secret.is_empty() || secret.contains(' ')) {
        return Err(Error::Protocol("a KEY line with a malformed secret".into()));
    }
    Ok(Lease { id: parse_id(id, line)?, token: None, secret: secret.map(str::to_string) })
}

/// `<id> <token>` or `<id> <token> <secret>`, after `LEASED `.
fn parse_leased(rest: &str, line: &str) -> Result<Lease, Error> {
    let mut fields = rest.splitn(3, ' ');
    let id = parse_id(fields.next().unwrap_or_default(), line)?;
    let token = fields.next().unwrap_or_default();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unexpected(line));
    }
    let token = token.parse().map_err(|_| unexpected(line))?;
    let secret = fields.next();
    if secret.is_some_and(|secret| secret.is_empty() || secret.contains(' ')) {
        return Err(Error::Protocol("a LEASED line with a malformed secret".into()));
    }
    Ok(Lease { id, token: Some(token), secret: secret.map(str::to_string) })
}

/// An `INFO` reply's fields as an [`Info`]. Fields this client does not know are ignored, as
/// protocol.md asks of clients for `STATS`.
fn info_from(figures: &BTreeMap<String, String>) -> Result<Info, Error> {
    let text = |name: &str| figures.get(name).ok_or_else(|| Error::Protocol(format!("INFO without {name}")));
    let number = |name: &str| -> Result<u64, Error> {
        text(name)?.parse().map_err(|_| Error::Protocol(format!("INFO {name} is not a number")))
    };
    let optional = |name: &str| figures.contains_key(name).then(|| number(name)).transpose();
    let id = KeyId::parse(text("id")?.as_bytes()).ok_or_else(|| Error::Protocol("INFO id is malformed".into()))?;
    let state = match text("state")?.as_str() {
        "free" => KeyState::Free,
        "blocked" => KeyState::Blocked { until_ms: number("blocked_until_ms")?, token: number("token")? },
        "delayed" => KeyState::Delayed { free_at_ms: number("free_at_ms")? },
        other => return Err(Error::Protocol(format!("INFO state {other:?}"))),
    };
    Ok(Info {
        id,
        state,
        created_ms: number("created_ms")?,
        alive_until_ms: optional("alive_until_ms")?,
        leases: number("leases")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8JqXbX3v1bJ0oYyqPZ2hXa7M";

    fn id() -> KeyId {
        KeyId::parse(ID.as_bytes()).expect("a well-formed id")
    }

    /// Feeds `lines` and returns the answer, checking that it completes exactly at the last line.
    fn parse(expect: Expect, lines: &[&str]) -> Result<Answer, Error> {
        let mut parser = ReplyParser::new(expect);
        for (at, line) in lines.iter().enumerate() {
            match parser.feed(line).unwrap_or_else(|error| panic!("{line:?}: {error}")) {
                Step::More => assert!(at + 1 < lines.len(), "{lines:?} left the reply incomplete"),
                Step::Complete(answer) => {
                    assert_eq!(at + 1, lines.len(), "{lines:?} completed at line {at}");
                    return answer;
                }
            }
        }
        unreachable!("the loop returns or fails on the last line")
    }

    fn reply(expect: Expect, lines: &[&str]) -> Reply {
        match parse(expect, lines) {
            Ok(Answer::Reply(reply)) => reply,
            other => panic!("{lines:?} gave {other:?}"),
        }
    }

    fn desyncs(expect: Expect, line: &str) -> bool {
        matches!(ReplyParser::new(expect).feed(line), Err(Error::Protocol(_)))
    }

    #[test]
    fn leases_with_and_without_tokens_and_secrets() {
        let plain = Expect::Lease { with_token: false };
        let tokened = Expect::Lease { with_token: true };
        let lease =
            |token, secret: Option<&str>| Reply::Lease(Some(Lease { id: id(), token, secret: secret.map(Into::into) }));
        assert_eq!(reply(plain, &[&format!("KEY {ID}")]), lease(None, None));
        assert_eq!(reply(plain, &[&format!("KEY {ID} sk-1")]), lease(None, Some("sk-1")));
        assert_eq!(reply(plain, &["NOT_FOUND"]), Reply::Lease(None));
        assert_eq!(reply(tokened, &[&format!("LEASED {ID} 42")]), lease(Some(42), None));
        assert_eq!(reply(tokened, &[&format!("LEASED {ID} 18446744073709551615 s")]), lease(Some(u64::MAX), Some("s")));
        assert_eq!(reply(tokened, &["NOT_FOUND"]), Reply::Lease(None));
        for bad in
            ["LEASED short 1", &format!("LEASED {ID}"), &format!("LEASED {ID} -1"), &format!("LEASED {ID} 1 a b")]
        {
            assert!(desyncs(tokened, bad), "{bad:?}");
        }
        assert!(desyncs(plain, &format!("LEASED {ID} 1")));
    }

    #[test]
    fn release_and_touch_outcomes() {
        for (line, released, touched) in [
            ("NOT_BLOCKED", Released::NotBlocked, Touched::NotBlocked),
            ("STALE", Released::Stale, Touched::Stale),
            ("NOT_FOUND", Released::NotFound, Touched::NotFound),
        ] {
            assert_eq!(reply(Expect::Released, &[line]), Reply::Released(released));
            assert_eq!(reply(Expect::Touched, &[line]), Reply::Touched(touched));
        }
        assert_eq!(reply(Expect::Released, &["RELEASED"]), Reply::Released(Released::Yes));
        assert_eq!(reply(Expect::Touched, &["TOUCHED"]), Reply::Touched(Touched::Yes));
        assert!(desyncs(Expect::Released, "TOUCHED"));
        assert!(desyncs(Expect::Touched, "RELEASED"));
    }

    #[test]
    fn blocks_of_keys_stats_and_pools() {
        let other = "0Vt4ozQwLpTqN1mH5kEe9RrS";
        let keys = reply(Expect::Keys, &[&format!("KEY {ID}"), &format!("KEY {other}"), "END"]);
        assert_eq!(keys, Reply::Keys(vec![id(), KeyId::parse(other.as_bytes()).unwrap()]));
        let Reply::Stats(stats) = reply(Expect::Stats, &["STAT pid 7", "STAT version 0.1.0", "END"]) else {
            panic!("not stats")
        };
        assert_eq!((stats.number("pid"), stats.get("version"), stats.get("nope")), (Some(7), Some("0.1.0"), None));
        let pools = reply(Expect::Pools, &["POOL default 3", "POOL a-b 0", "END 17"]);
        let pool = |name: &str, keys| PoolInfo { name: name.into(), keys };
        assert_eq!(pools, Reply::Pools(PoolsPage { pools: vec![pool("default", 3), pool("a-b", 0)], next: 17 }));
        assert_eq!(reply(Expect::Pools, &["END 0"]), Reply::Pools(PoolsPage { pools: vec![], next: 0 }));
        assert!(desyncs(Expect::Keys, "STAT x 1"));
    }

    #[test]
    fn info_in_every_state() {
        let head = [format!("STAT id {ID}"), "STAT created_ms 10".to_string()];
        let info = |lines: &[&str]| {
            let mut all: Vec<&str> = head.iter().map(String::as_str).collect();
            all.extend_from_slice(lines);
            all.push("END");
            match reply(Expect::Info, &all) {
                Reply::Info(Some(info)) => info,
                other => panic!("{other:?}"),
            }
        };
        let free = info(&["STAT state free", "STAT alive_until_ms 20", "STAT leases 0", "STAT future_field x"]);
        assert_eq!(free, Info { id: id(), state: KeyState::Free, created_ms: 10, alive_until_ms: Some(20), leases: 0 });
        let blocked = info(&["STAT state blocked", "STAT blocked_until_ms 30", "STAT token 5", "STAT leases 1"]);
        assert_eq!(blocked.state, KeyState::Blocked { until_ms: 30, token: 5 });
        assert_eq!(blocked.alive_until_ms, None, "ADD <secret> 0s keys have no keep-alive deadline");
        let delayed = info(&["STAT state delayed", "STAT free_at_ms 40", "STAT leases 2"]);
        assert_eq!(delayed.state, KeyState::Delayed { free_at_ms: 40 });
        assert_eq!(reply(Expect::Info, &["NOT_FOUND"]), Reply::Info(None));
        let mut parser = ReplyParser::new(Expect::Info);
        parser.feed("STAT state free").unwrap();
        assert!(matches!(parser.feed("END"), Err(Error::Protocol(_))), "INFO without an id");
    }

    #[test]
    fn single_line_replies() {
        assert_eq!(reply(Expect::Added, &[&format!("KEY {ID}")]), Reply::Added(Added::New(id())));
        assert_eq!(reply(Expect::Added, &[&format!("EXISTS {ID}")]), Reply::Added(Added::Existing(id())));
        assert_eq!(reply(Expect::Deleted, &["DELETED"]), Reply::Deleted(true));
        assert_eq!(reply(Expect::Deleted, &["NOT_FOUND"]), Reply::Deleted(false));
        assert_eq!(reply(Expect::Alive, &["ALIVE"]), Reply::Alive(true));
        assert_eq!(reply(Expect::Alive, &["NOT_FOUND"]), Reply::Alive(false));
        assert_eq!(reply(Expect::Pong, &["PONG"]), Reply::Pong);
        assert_eq!(reply(Expect::Version, &["VERSION 0.1.0"]), Reply::Version("0.1.0".into()));
        assert_eq!(parse(Expect::Ok, &["OK"]).unwrap(), Answer::Done);
        assert_eq!(parse(Expect::Using, &["USING p"]).unwrap(), Answer::Done);
        assert!(desyncs(Expect::Pong, "ALIVE"));
    }

    #[test]
    fn error_replies_answer_their_request_only() {
        let error = |expect, line| parse(expect, &[line]).expect_err("an error reply");
        assert!(
            matches!(error(Expect::Keys, "CLIENT_ERROR GEN count must be"), Error::Client(m) if m == "GEN count must be")
        );
        assert!(matches!(error(Expect::Keys, "SERVER_ERROR pool full"), Error::Server(m) if m == "pool full"));
        assert!(matches!(error(Expect::Info, "ERROR NOAUTH authentication required"), Error::NoAuth));
        assert!(matches!(
            error(Expect::Lease { with_token: true }, "ERROR unknown command 'LEASE'"),
            Error::Unsupported(_)
        ));
        assert!(matches!(error(Expect::Auth, "CLIENT_ERROR invalid token"), Error::Auth(m) if m == "invalid token"));
    }
}
