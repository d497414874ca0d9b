//! Request parsing: one line in, one [`Request`] (or a [`RequestError`] to send back) out.
//!
//! Parsing borrows the line and copies nothing: tokens are sub-slices, ids are checked into fixed
//! `[u8; 24]` arrays, numbers and durations are read straight from the bytes, and an `ADD`'s secret stays
//! a slice of the line ([`Secret`]). So a [`Request`] borrows the line it came from and must be answered
//! before that line leaves the read buffer. Errors are rare, so they may allocate their message; none of
//! them ever quotes a secret.
//!
//! Arguments are positional. The only lookahead is where the grammar needs it: after `REL <id>` and
//! `TOUCH <id>`, an all-digit token is a fencing token and anything else is a duration, because a bare
//! integer is never a duration.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::iter::Peekable;
use std::time::Duration;

use crate::pool::{valid_pool_name, KeyId, MAX_GEN_COUNT};
use crate::protocol::duration;

/// One parsed request. It borrows the line it was parsed from (only `ADD` actually does, for its secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `GEN [count]`: mint `count` new keys.
    Gen { count: u32 },
    /// `GET [<wait> [<block>]]`: lease a random free key. `GET` alone never waits, as in v1.
    Get(LeaseArgs),
    /// `LEASE [<wait> [<block>]]`: lease like `GET`, and answer with the lease's fencing token.
    Lease(LeaseArgs),
    /// `REL <id> [<token>] [<delay>]`: release a blocked key, only if `token` is its current lease's when
    /// given, and leave it leased to no one for `delay` when given. `REL <id>` alone is v1's release.
    Rel { id: KeyId, token: Option<u64>, delay: Option<Duration> },
    /// `TOUCH <id> [<token>] [<duration>]`: restart a blocked key's block window, for `block` when given
    /// (else the pool's block timeout), only if `token` is its current lease's when given.
    Touch { id: KeyId, token: Option<u64>, block: Option<Duration> },
    /// `DEL <id>`: delete a key.
    Del(KeyId),
    /// `PING <id>`: restart a key's keep-alive window.
    Ping(KeyId),
    /// `PING` with no argument: a health check.
    Health,
    /// `INFO <id>`: describe a key.
    Info(KeyId),
    /// `STATS [pool]`: describe the daemon, or one pool.
    Stats { pool: Option<&'a str> },
    /// `USE <pool>`: make `pool` the connection's current pool.
    Use { pool: &'a str },
    /// `POOLS [cursor]`: list pools, a page at a time.
    Pools { cursor: u64 },
    /// `AUTH <token>`: authenticate the connection. The token is a secret: `Debug` shows its length only.
    Auth { token: Secret<'a> },
    /// `VERSION`.
    Version,
    /// `COMPACT`: write a new snapshot and start a new log now.
    Compact,
    /// `QUIT`: close the connection.
    Quit,
    /// `AUTOREL`: release the keys this connection still holds when it closes.
    Autorel,
    /// `ADD <secret> [<keepalive>]`: add a key that carries `secret`, with its own keep-alive window when
    /// `keepalive` is given (`0s`: never expires by keep-alive).
    Add { secret: Secret<'a>, keepalive: Option<Duration> },
}

/// The optional arguments of `GET` and `LEASE`. `None` means "not given": no wait, the pool's block window.
/// The parser checks only their syntax; limits (`--max-wait`, `--max-block`) are the server's to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseArgs {
    /// How long to wait when no key is free (`0ms`: do not wait).
    pub wait: Option<Duration>,
    /// The block window of this lease.
    pub block: Option<Duration>,
}

/// Borrowed secret bytes; `Debug` prints only the length, never the bytes.
///
/// A request is logged with `{:?}` (`tracing::debug!(?request)`), and a secret must never reach a log, so
/// the bytes are reachable only through the field, by code that means to send them in a lease reply or
/// store them. The parser guarantees every byte is printable ASCII other than space (0x21..=0x7E), so a
/// secret can be written into a reply line as it is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret<'a>(pub &'a [u8]);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.len();
        write!(f, "Secret(<{len} {}>)", if len == 1 { "byte" } else { "bytes" })
    }
}

/// Why a line is not a request. `Display` is the text sent to the client after `ERROR` or `CLIENT_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The first token names no command. Answered with `ERROR`.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// A known command with missing, extra or malformed arguments. Answered with `CLIENT_ERROR`.
    #[error("{0}")]
    BadArguments(Cow<'static, str>),
}

/// The most bytes of an unknown command echoed back in its error.
const ECHO_LIMIT: usize = 32;

impl<'a> Request<'a> {
    /// Parses one request line (without its line ending). `Ok(None)` for a blank line, which is not a
    /// request and gets no reply. The request borrows `line`.
    pub fn parse(line: &'a [u8]) -> Result<Option<Request<'a>>, RequestError> {
        let mut tokens = line.split(|&b| b == b' ' || b == b'\t').filter(|token| !token.is_empty());
        let Some(command) = tokens.next() else {
            return Ok(None);
        };
        let mut args = Args { command: "", tokens: tokens.peekable() };
        let request = if command.eq_ignore_ascii_case(b"GET") {
            args.command = "GET";
            let lease = args.lease_args()?;
            args.finish(Request::Get(lease))?
        } else if command.eq_ignore_ascii_case(b"LEASE") {
            args.command = "LEASE";
            let lease = args.lease_args()?;
            args.finish(Request::Lease(lease))?
        } else if command.eq_ignore_ascii_case(b"REL") {
            args.command = "REL";
            let id = args.key_id()?;
            let (token, delay) = args.optional_token_then_duration("delay")?;
            args.finish(Request::Rel { id, token, delay })?
        } else if command.eq_ignore_ascii_case(b"TOUCH") {
            args.command = "TOUCH";
            let id = args.key_id()?;
            let (token, block) = args.optional_token_then_duration("block")?;
            args.finish(Request::Touch { id, token, block })?
        } else if command.eq_ignore_ascii_case(b"PING") {
            args.command = "PING";
            match args.optional_key_id()? {
                Some(id) => args.finish(Request::Ping(id))?,
                None => Request::Health,
            }
        } else if command.eq_ignore_ascii_case(b"GEN") {
            args.command = "GEN";
            let count = args.optional_count()?.unwrap_or(1);
            args.finish(Request::Gen { count })?
        } else if command.eq_ignore_ascii_case(b"ADD") {
            args.command = "ADD";
            let secret = args.secret()?;
            let keepalive = args.optional_duration("keepalive")?;
            args.finish(Request::Add { secret, keepalive })?
        } else if command.eq_ignore_ascii_case(b"DEL") {
            args.command = "DEL";
            let id = args.key_id()?;
            args.finish(Request::Del(id))?
        } else if command.eq_ignore_ascii_case(b"INFO") {
            args.command = "INFO";
            let id = args.key_id()?;
            args.finish(Request::Info(id))?
        } else if command.eq_ignore_ascii_case(b"AUTOREL") {
            args.command = "AUTOREL";
            args.finish(Request::Autorel)?
        } else if command.eq_ignore_ascii_case(b"STATS") {
            args.command = "STATS";
            let pool = args.optional_pool_name()?;
            args.finish(Request::Stats { pool })?
        } else if command.eq_ignore_ascii_case(b"USE") {
            args.command = "USE";
            let pool = args.optional_pool_name()?.ok_or_else(|| bad("USE needs a pool name"))?;
            args.finish(Request::Use { pool })?
        } else if command.eq_ignore_ascii_case(b"AUTH") {
            args.command = "AUTH";
            // Any bytes the line can carry; whether they are a valid token is the authenticator's call.
            // Errors never quote the token.
            let token = args.tokens.next().ok_or_else(|| bad("AUTH needs a token"))?;
            args.finish(Request::Auth { token: Secret(token) })?
        } else if command.eq_ignore_ascii_case(b"POOLS") {
            args.command = "POOLS";
            let cursor = match args.tokens.next() {
                None => 0,
                Some(token) => parse_fencing_token(token).ok_or_else(|| bad("malformed cursor"))?,
            };
            args.finish(Request::Pools { cursor })?
        } else if command.eq_ignore_ascii_case(b"VERSION") {
            args.command = "VERSION";
            args.finish(Request::Version)?
        } else if command.eq_ignore_ascii_case(b"COMPACT") {
            args.command = "COMPACT";
            args.finish(Request::Compact)?
        } else if command.eq_ignore_ascii_case(b"QUIT") {
            args.command = "QUIT";
            args.finish(Request::Quit)?
        } else {
            return Err(RequestError::UnknownCommand(printable(command)));
        };
        Ok(Some(request))
    }

    /// Whether the request may change the pool (and so must be logged, with `--data-dir`). A lease that
    /// finds no free key changes nothing, but it might have.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Gen { .. }
                | Request::Add { .. }
                | Request::Get(_)
                | Request::Lease(_)
                | Request::Rel { .. }
                | Request::Touch { .. }
                | Request::Del(_)
                | Request::Ping(_)
        )
    }

    /// The command's name, as counted in STATS (`cmd_<name>`).
    pub fn command(&self) -> Command {
        match self {
            Request::Gen { .. } => Command::Gen,
            Request::Get(_) => Command::Get,
            Request::Lease(_) => Command::Lease,
            Request::Rel { .. } => Command::Rel,
            Request::Touch { .. } => Command::Touch,
            Request::Del(_) => Command::Del,
            Request::Ping(_) | Request::Health => Command::Ping,
            Request::Info(_) => Command::Info,
            Request::Add { .. } => Command::Add,
            Request::Autorel => Command::Autorel,
            Request::Stats { .. } => Command::Stats,
            Request::Use { .. } => Command::Use,
            Request::Pools { .. } => Command::Pools,
            Request::Auth { .. } => Command::Auth,
            Request::Version => Command::Version,
            Request::Compact => Command::Compact,
            Request::Quit => Command::Quit,
        }
    }
}

/// The commands, for counting. `Command::ALL` lists them in the order STATS reports them.
///
/// The server counts into an array indexed by `command as usize`, so the variants are declared in the
/// same order as `ALL` (a unit test holds the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Gen,
    Get,
    Lease,
    Rel,
    Touch,
    Del,
    Ping,
    Info,
    Add,
    Autorel,
    Use,
    Pools,
    Auth,
    Stats,
    Version,
    Compact,
    Quit,
}

impl Command {
    /// Every command, in STATS order.
    pub const ALL: [Command; 17] = [
        Command::Gen,
        Command::Get,
        Command::Lease,
        Command::Rel,
        Command::Touch,
        Command::Del,
        Command::Ping,
        Command::Info,
        Command::Add,
        Command::Autorel,
        Command::Use,
        Command::Pools,
        Command::Auth,
        Command::Stats,
        Command::Version,
        Command::Compact,
        Command::Quit,
    ];

    /// The STATS counter name for this command.
    pub fn stat_name(self) -> &'static str {
        match self {
            Command::Gen => "cmd_gen",
            Command::Get => "cmd_get",
            Command::Lease => "cmd_lease",
            Command::Rel => "cmd_rel",
            Command::Touch => "cmd_touch",
            Command::Del => "cmd_del",
            Command::Ping => "cmd_ping",
            Command::Info => "cmd_info",
            Command::Add => "cmd_add",
            Command::Autorel => "cmd_autorel",
            Command::Use => "cmd_use",
            Command::Pools => "cmd_pools",
            Command::Auth => "cmd_auth",
            Command::Stats => "cmd_stats",
            Command::Version => "cmd_version",
            Command::Compact => "cmd_compact",
            Command::Quit => "cmd_quit",
        }
    }
}

/// The arguments after a command name, consumed left to right.
struct Args<'a, I: Iterator<Item = &'a [u8]>> {
    command: &'static str,
    /// Peekable so that GET and LEASE can leave a word that is no duration for `finish` to refuse.
    tokens: Peekable<I>,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Args<'a, I> {
    fn key_id(&mut self) -> Result<KeyId, RequestError> {
        self.optional_key_id()?.ok_or_else(|| bad(format!("{} needs a key id", self.command)))
    }

    fn optional_key_id(&mut self) -> Result<Option<KeyId>, RequestError> {
        match self.tokens.next() {
            None => Ok(None),
            Some(token) => {
                KeyId::parse(token).map(Some).ok_or_else(|| bad("malformed key id: ids are 24 letters and digits"))
            }
        }
    }

    fn optional_count(&mut self) -> Result<Option<u32>, RequestError> {
        let Some(token) = self.tokens.next() else {
            return Ok(None);
        };
        match parse_decimal(token) {
            Some(count) if (1..=u64::from(MAX_GEN_COUNT)).contains(&count) => Ok(Some(count as u32)),
            _ => Err(bad(format!("{} count must be a whole number from 1 to {MAX_GEN_COUNT}", self.command))),
        }
    }

    /// `[<wait> [<block>]]` of GET and LEASE.
    ///
    /// Only a token that starts with a digit is read as a duration, as every duration does. Anything else
    /// is left for [`Args::finish`] to refuse as `too many arguments`, which is what v1 answered to
    /// `GET now` and what v1 clients may rely on.
    fn lease_args(&mut self) -> Result<LeaseArgs, RequestError> {
        let mut lease = LeaseArgs::default();
        for (slot, what) in [(&mut lease.wait, "wait"), (&mut lease.block, "block")] {
            let Some(token) = self.tokens.next_if(|token| token.first().is_some_and(u8::is_ascii_digit)) else {
                break;
            };
            *slot = Some(duration_arg(token, what)?);
        }
        Ok(lease)
    }

    /// `[<token>] [<duration>]` after the id of REL and TOUCH: an all-digit token is the fencing token
    /// (a bare integer is never a duration), and whatever follows it, or stands in its place, must be a
    /// duration, named `what` in errors. A token after the duration is left for [`Args::finish`].
    fn optional_token_then_duration(
        &mut self,
        what: &'static str,
    ) -> Result<(Option<u64>, Option<Duration>), RequestError> {
        let mut next = self.tokens.next();
        let mut fencing_token = None;
        if let Some(token) = next.filter(|token| token.iter().all(u8::is_ascii_digit)) {
            fencing_token = Some(parse_fencing_token(token).ok_or_else(|| bad("malformed token"))?);
            next = self.tokens.next();
        }
        let duration = next.map(|token| duration_arg(token, what)).transpose()?;
        Ok((fencing_token, duration))
    }

    fn optional_duration(&mut self, what: &'static str) -> Result<Option<Duration>, RequestError> {
        self.tokens.next().map(|token| duration_arg(token, what)).transpose()
    }

    /// A pool name, if there is an argument: 1 to 64 of `[A-Za-z0-9_.-]`.
    fn optional_pool_name(&mut self) -> Result<Option<&'a str>, RequestError> {
        let Some(token) = self.tokens.next() else {
            return Ok(None);
        };
        if !valid_pool_name(token) {
            return Err(bad("malformed pool name: 1 to 64 letters, digits, '_', '.' or '-'"));
        }
        // Checked ASCII just above, so this cannot fail.
        std::str::from_utf8(token).map(Some).map_err(|_| bad("malformed pool name"))
    }

    /// ADD's secret. Its length limit (`--max-secret`) is the server's to check. Errors never quote it.
    fn secret(&mut self) -> Result<Secret<'a>, RequestError> {
        let secret = self.tokens.next().ok_or_else(|| bad(format!("{} needs a secret", self.command)))?;
        // Space and tab never get here (they separate tokens), but CR, other control bytes and non-ASCII
        // do; refusing them means a secret can be written back into a reply line as it is.
        if !secret.iter().all(|&b| (0x21..=0x7E).contains(&b)) {
            return Err(bad("secret must be printable ASCII without spaces"));
        }
        Ok(Secret(secret))
    }

    /// Checks that no argument is left over and yields `request`.
    fn finish(&mut self, request: Request<'a>) -> Result<Request<'a>, RequestError> {
        match self.tokens.next() {
            None => Ok(request),
            Some(_) => Err(bad(format!("too many arguments for {}", self.command))),
        }
    }
}

fn bad(message: impl Into<Cow<'static, str>>) -> RequestError {
    RequestError::BadArguments(message.into())
}

/// A duration argument, or the client error `<what> <why not>` (`wait duration needs a unit ...`).
fn duration_arg(token: &[u8], what: &str) -> Result<Duration, RequestError> {
    let parsed = match std::str::from_utf8(token) {
        // The path every well-formed duration takes (they are ASCII); it borrows, and non-ASCII text
        // simply fails to parse.
        Ok(text) => duration::parse(text),
        // Not even UTF-8, so certainly not a duration; a lossy copy (this is the error path) only picks
        // the explanation: no number first, or a unit that is not ms, s, m or h.
        Err(_) => duration::parse(&String::from_utf8_lossy(token)),
    };
    parsed.map_err(|error| bad(format!("{what} {error}")))
}

/// A decimal number of at most 19 digits (so it cannot overflow), without sign or separators.
fn parse_decimal(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 19 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(token.iter().fold(0, |n, &digit| n * 10 + u64::from(digit - b'0')))
}

/// A fencing token: 1 to 20 decimal digits whose value fits a u64 (up to `18446744073709551615`).
fn parse_fencing_token(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    token.iter().try_fold(0u64, |n, &digit| n.checked_mul(10)?.checked_add(u64::from(digit - b'0')))
}

/// Client bytes made safe to echo in a reply line: at most [`ECHO_LIMIT`] bytes, anything but printable
/// ASCII written as `\xNN`, so an error can never smuggle a line ending into the reply stream.
fn printable(bytes: &[u8]) -> String {
    let mut text = String::new();
    for &b in bytes.iter().take(ECHO_LIMIT) {
        if b.is_ascii_graphic() {
            text.push(char::from(b));
        } else {
            let _ = write!(text, "\\x{b:02x}");
        }
    }
    if bytes.len() > ECHO_LIMIT {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &[u8] = b"abcdefghijklmnopqrstuvwx";

    fn id() -> KeyId {
        KeyId::parse(ID).unwrap()
    }

    fn parse(line: &[u8]) -> Result<Option<Request<'_>>, RequestError> {
        Request::parse(line)
    }

    fn client_error(line: &[u8]) -> String {
        match parse(line) {
            Err(RequestError::BadArguments(message)) => message.into_owned(),
            other => panic!("{:?}: expected a client error, got {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn parses_every_command() {
        let rel = [b"REL ".as_slice(), ID].concat();
        let del = [b"DEL ".as_slice(), ID].concat();
        let ping = [b"PING ".as_slice(), ID].concat();
        let info = [b"INFO ".as_slice(), ID].concat();
        assert_eq!(parse(b"GEN"), Ok(Some(Request::Gen { count: 1 })));
        assert_eq!(parse(b"GEN 10000"), Ok(Some(Request::Gen { count: 10_000 })));
        assert_eq!(parse(b"GET"), Ok(Some(Request::Get(LeaseArgs::default()))));
        assert_eq!(parse(&rel), Ok(Some(Request::Rel { id: id(), token: None, delay: None })));
        assert_eq!(parse(&del), Ok(Some(Request::Del(id()))));
        assert_eq!(parse(&ping), Ok(Some(Request::Ping(id()))));
        assert_eq!(parse(b"PING"), Ok(Some(Request::Health)));
        assert_eq!(parse(&info), Ok(Some(Request::Info(id()))));
        assert_eq!(parse(b"STATS"), Ok(Some(Request::Stats { pool: None })));
        assert_eq!(parse(b"STATS team-a.prod_1"), Ok(Some(Request::Stats { pool: Some("team-a.prod_1") })));
        assert_eq!(parse(b"USE billing"), Ok(Some(Request::Use { pool: "billing" })));
        assert_eq!(parse(b"POOLS"), Ok(Some(Request::Pools { cursor: 0 })));
        assert_eq!(parse(b"POOLS 1000"), Ok(Some(Request::Pools { cursor: 1000 })));
        assert_eq!(parse(b"AUTH s3cr3t"), Ok(Some(Request::Auth { token: Secret(b"s3cr3t") })));
        assert_eq!(parse(b"VERSION"), Ok(Some(Request::Version)));
        assert_eq!(parse(b"QUIT"), Ok(Some(Request::Quit)));
    }

    #[test]
    fn commands_are_case_insensitive_and_blanks_are_flexible() {
        assert_eq!(parse(b"get"), Ok(Some(Request::Get(LeaseArgs::default()))));
        assert_eq!(parse(b"  \tGeN \t 5  "), Ok(Some(Request::Gen { count: 5 })));
    }

    #[test]
    fn ids_are_case_sensitive() {
        let upper = [b"REL ".as_slice(), &ID.to_ascii_uppercase()].concat();
        assert_ne!(parse(&upper), Ok(Some(Request::Rel { id: id(), token: None, delay: None })));
    }

    #[test]
    fn blank_lines_are_not_requests() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b" \t "), Ok(None));
    }

    #[test]
    fn unknown_commands_are_echoed_safely() {
        assert_eq!(parse(b"FLY away"), Err(RequestError::UnknownCommand("FLY".into())));
        assert_eq!(parse(b"\x00\xff\r"), Err(RequestError::UnknownCommand("\\x00\\xff\\x0d".into())));
        let long = vec![b'A'; 100];
        assert_eq!(parse(&long), Err(RequestError::UnknownCommand(format!("{}...", "A".repeat(32)))));
    }

    #[test]
    fn gen_counts_outside_the_range_are_client_errors() {
        for line in [&b"GEN 0"[..], b"GEN 10001", b"GEN -1", b"GEN 1.5", b"GEN x", b"GEN 99999999999999999999999"] {
            assert_eq!(client_error(line), "GEN count must be a whole number from 1 to 10000");
        }
    }

    #[test]
    fn missing_extra_and_malformed_arguments_are_client_errors() {
        assert_eq!(client_error(b"REL"), "REL needs a key id");
        assert_eq!(client_error(b"DEL"), "DEL needs a key id");
        assert_eq!(client_error(b"INFO"), "INFO needs a key id");
        assert_eq!(client_error(b"REL short"), "malformed key id: ids are 24 letters and digits");
        assert_eq!(client_error(b"PING abcdefghijklmnopqrstuvw-"), "malformed key id: ids are 24 letters and digits");
        assert_eq!(client_error(b"GET now"), "too many arguments for GET");
        assert_eq!(client_error(b"GEN 1 2"), "too many arguments for GEN");
        assert_eq!(client_error(b"STATS x y"), "too many arguments for STATS");
        let malformed = "malformed pool name: 1 to 64 letters, digits, '_', '.' or '-'";
        assert_eq!(client_error(b"USE"), "USE needs a pool name");
        assert_eq!(client_error(b"USE a/b"), malformed);
        assert_eq!(client_error(&[b"USE ".as_slice(), &[b'p'; 65]].concat()), malformed);
        assert_eq!(client_error(b"STATS *"), malformed);
        assert_eq!(client_error(b"POOLS -1"), "malformed cursor");
        assert_eq!(client_error(b"POOLS 1 2"), "too many arguments for POOLS");
        assert_eq!(client_error(b"AUTH"), "AUTH needs a token");
        assert_eq!(client_error(b"AUTH hunter2 x"), "too many arguments for AUTH");
        assert!(!format!("{:?}", parse(b"AUTH hunter2")).contains("hunter2"), "AUTH's Debug hides the token");
        assert_eq!(parse(&[b"USE ".as_slice(), &[b'p'; 64]].concat()).map(|r| r.is_some()), Ok(true));
        let two_ids = [b"DEL ".as_slice(), ID, b" ", ID].concat();
        assert_eq!(client_error(&two_ids), "too many arguments for DEL");
    }

    // ---- issue 7: leases, fencing tokens, TOUCH, delayed REL, AUTOREL, ADD ----

    fn ms(millis: u64) -> Option<Duration> {
        Some(Duration::from_millis(millis))
    }

    /// `<command> <ID><rest>`, e.g. `with_id("REL", " 42 5s")`.
    fn with_id(command: &str, rest: &str) -> Vec<u8> {
        [command.as_bytes(), b" ", ID, rest.as_bytes()].concat()
    }

    const NEEDS_UNIT: &str = "duration needs a unit (ms, s, m or h), as in 250ms, 60s, 5m";
    const NOT_A_NUMBER: &str = "duration must start with a whole number, as in 250ms, 60s, 5m";
    const UNKNOWN_UNIT: &str = "unknown duration unit; use ms, s, m or h";

    #[test]
    fn get_and_lease_take_an_optional_wait_then_an_optional_block() {
        let lease = |wait, block| LeaseArgs { wait, block };
        assert_eq!(parse(b"GET 5s"), Ok(Some(Request::Get(lease(ms(5_000), None)))));
        assert_eq!(parse(b"GET 0ms 30s"), Ok(Some(Request::Get(lease(ms(0), ms(30_000))))));
        assert_eq!(parse(b"LEASE"), Ok(Some(Request::Lease(LeaseArgs::default()))));
        assert_eq!(parse(b"LEASE 250ms"), Ok(Some(Request::Lease(lease(ms(250), None)))));
        assert_eq!(parse(b"LEASE 0ms 30s"), Ok(Some(Request::Lease(lease(ms(0), ms(30_000))))));
        assert_eq!(parse(b"lease 2m 1h"), Ok(Some(Request::Lease(lease(ms(120_000), ms(3_600_000))))));
        assert_eq!(parse(b"GeT \t 0s\t 1ms "), Ok(Some(Request::Get(lease(ms(0), ms(1))))));
    }

    #[test]
    fn get_and_lease_durations_need_a_unit_and_name_the_argument() {
        assert_eq!(client_error(b"GET 5"), format!("wait {NEEDS_UNIT}"));
        assert_eq!(client_error(b"LEASE 5"), format!("wait {NEEDS_UNIT}"));
        assert_eq!(client_error(b"GET 5s 30"), format!("block {NEEDS_UNIT}"));
        assert_eq!(client_error(b"LEASE 0ms 30"), format!("block {NEEDS_UNIT}"));
        assert_eq!(client_error(b"LEASE 1.5s"), format!("wait {UNKNOWN_UNIT}"));
        assert_eq!(client_error(b"LEASE 5sec"), format!("wait {UNKNOWN_UNIT}"));
        assert_eq!(client_error(b"LEASE 0ms 5\xff"), format!("block {UNKNOWN_UNIT}"));
        assert_eq!(client_error(b"GET 99999999999999999999s"), "wait duration is too large");
        assert_eq!(client_error(b"LEASE 1s 2s 3s"), "too many arguments for LEASE");
        assert_eq!(client_error(b"GET 1s 2s 3s"), "too many arguments for GET");
    }

    #[test]
    fn get_and_lease_arguments_that_do_not_start_with_a_digit_are_extra_as_in_v1() {
        // v1 answered `GET now` with "too many arguments for GET"; a word is not an attempt at a duration.
        assert_eq!(client_error(b"GET now"), "too many arguments for GET");
        assert_eq!(client_error(b"GET 5s now"), "too many arguments for GET");
        assert_eq!(client_error(b"LEASE now"), "too many arguments for LEASE");
        assert_eq!(client_error(b"LEASE \xff"), "too many arguments for LEASE");
    }

    #[test]
    fn rel_takes_an_optional_token_then_an_optional_delay() {
        let rel = |token, delay| Ok(Some(Request::Rel { id: id(), token, delay }));
        assert_eq!(parse(&with_id("REL", "")), rel(None, None));
        assert_eq!(parse(&with_id("REL", " 42")), rel(Some(42), None));
        assert_eq!(parse(&with_id("REL", " 5s")), rel(None, ms(5_000)));
        assert_eq!(parse(&with_id("REL", " 0s")), rel(None, ms(0)));
        assert_eq!(parse(&with_id("REL", " 42 5s")), rel(Some(42), ms(5_000)));
        assert_eq!(parse(&with_id("REL", " 0 250ms")), rel(Some(0), ms(250)));
        assert_eq!(parse(&with_id("REL", " 18446744073709551615")), rel(Some(u64::MAX), None));
        assert_eq!(parse(&with_id("REL", " 00000000000000000042")), rel(Some(42), None));
        assert_eq!(parse(&with_id("rel", "  42\t5s ")), rel(Some(42), ms(5_000)));
    }

    #[test]
    fn rel_refuses_a_token_after_the_delay_and_malformed_tokens_and_delays() {
        assert_eq!(client_error(&with_id("REL", " 5s 42")), "too many arguments for REL");
        assert_eq!(client_error(&with_id("REL", " 42 5s 6s")), "too many arguments for REL");
        assert_eq!(client_error(&with_id("REL", " 99999999999999999999")), "malformed token");
        assert_eq!(client_error(&with_id("REL", " 18446744073709551616")), "malformed token");
        assert_eq!(client_error(&with_id("REL", " 000000000000000000042")), "malformed token", "21 digits");
        assert_eq!(client_error(&with_id("REL", " 99999999999999999999 5s")), "malformed token");
        // After the token, a bare integer can only be a delay without its unit.
        assert_eq!(client_error(&with_id("REL", " 42 43")), format!("delay {NEEDS_UNIT}"));
        assert_eq!(client_error(&with_id("REL", " -1")), format!("delay {NOT_A_NUMBER}"));
        assert_eq!(client_error(&with_id("REL", " extra")), format!("delay {NOT_A_NUMBER}"));
        assert_eq!(client_error(&with_id("REL", " 5x")), format!("delay {UNKNOWN_UNIT}"));
        let not_utf8 = [b"REL ".as_slice(), ID, b" 42 \x80s"].concat();
        assert_eq!(client_error(&not_utf8), format!("delay {NOT_A_NUMBER}"));
    }

    #[test]
    fn touch_takes_an_optional_token_then_an_optional_block() {
        let touch = |token, block| Ok(Some(Request::Touch { id: id(), token, block }));
        assert_eq!(parse(&with_id("TOUCH", "")), touch(None, None));
        assert_eq!(parse(&with_id("TOUCH", " 42")), touch(Some(42), None));
        assert_eq!(parse(&with_id("TOUCH", " 5s")), touch(None, ms(5_000)));
        assert_eq!(parse(&with_id("TOUCH", " 42 5s")), touch(Some(42), ms(5_000)));
        assert_eq!(parse(&with_id("TOUCH", " 18446744073709551615")), touch(Some(u64::MAX), None));
        assert_eq!(parse(&with_id("touch", " 7 1h")), touch(Some(7), ms(3_600_000)));
    }

    #[test]
    fn touch_refuses_what_rel_refuses_naming_the_block() {
        assert_eq!(client_error(b"TOUCH"), "TOUCH needs a key id");
        assert_eq!(client_error(b"TOUCH short"), "malformed key id: ids are 24 letters and digits");
        assert_eq!(client_error(&with_id("TOUCH", " 5s 42")), "too many arguments for TOUCH");
        assert_eq!(client_error(&with_id("TOUCH", " 99999999999999999999")), "malformed token");
        assert_eq!(client_error(&with_id("TOUCH", " 42 43")), format!("block {NEEDS_UNIT}"));
        assert_eq!(client_error(&with_id("TOUCH", " soon")), format!("block {NOT_A_NUMBER}"));
    }

    #[test]
    fn autorel_takes_no_argument() {
        assert_eq!(parse(b"AUTOREL"), Ok(Some(Request::Autorel)));
        assert_eq!(parse(b"autoRel"), Ok(Some(Request::Autorel)));
        assert_eq!(client_error(b"AUTOREL x"), "too many arguments for AUTOREL");
    }

    #[test]
    fn add_takes_a_secret_and_an_optional_keepalive() {
        let add = |secret: &'static [u8], keepalive| Ok(Some(Request::Add { secret: Secret(secret), keepalive }));
        assert_eq!(parse(b"ADD s3cr3t"), add(b"s3cr3t", None));
        assert_eq!(parse(b"ADD s3cr3t 0s"), add(b"s3cr3t", ms(0)));
        assert_eq!(parse(b"ADD s3cr3t 10m"), add(b"s3cr3t", ms(600_000)));
        assert_eq!(parse(b"add !~\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"), add(b"!~\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", None));
        // Position decides, not shape: a secret may look like a duration or a number.
        assert_eq!(parse(b"ADD 5s"), add(b"5s", None));
        assert_eq!(parse(b"ADD 42 1h"), add(b"42", ms(3_600_000)));
    }

    #[test]
    fn add_refuses_missing_and_unprintable_secrets_without_echoing_them() {
        assert_eq!(client_error(b"ADD"), "ADD needs a secret");
        assert_eq!(client_error(b"ADD  \t "), "ADD needs a secret");
        const UNPRINTABLE: &str = "secret must be printable ASCII without spaces";
        for line in
            [&b"ADD ab\x01cd"[..], b"ADD ab\x7fcd", b"ADD ab\xffcd", b"ADD caf\xc3\xa9", b"ADD ab\rcd", b"ADD \x00"]
        {
            assert_eq!(client_error(line), UNPRINTABLE, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(client_error(b"ADD s3cr3t 10"), format!("keepalive {NEEDS_UNIT}"));
        assert_eq!(client_error(b"ADD s3cr3t forever"), format!("keepalive {NOT_A_NUMBER}"));
        assert_eq!(client_error(b"ADD s3cr3t 10m 1s"), "too many arguments for ADD");
        for line in [&b"ADD s3cr3t 10"[..], b"ADD s3cr3t 10m 1s", b"ADD s3cr3t forever"] {
            assert!(!client_error(line).contains("s3cr3t"), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn the_debug_form_of_an_add_shows_the_secret_length_and_never_the_secret() {
        let request = parse(b"ADD hunter2-s3cr3t 1m").unwrap().unwrap();
        let shown = format!("{request:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104, 117"), "the bytes as numbers: {shown}");
        assert!(shown.contains("Secret(<14 bytes>)"), "{shown}");
        assert_eq!(format!("{:?}", Secret(b"x")), "Secret(<1 byte>)");
        assert_eq!(format!("{:#?}", Secret(b"hunter2")), "Secret(<7 bytes>)");
    }

    #[test]
    fn every_request_counts_under_its_command() {
        let rel = with_id("REL", " 1 1s");
        let touch = with_id("TOUCH", "");
        let cases: [(&[u8], Command); 7] = [
            (b"GET 1s", Command::Get),
            (b"LEASE", Command::Lease),
            (&rel, Command::Rel),
            (&touch, Command::Touch),
            (b"ADD x", Command::Add),
            (b"AUTOREL", Command::Autorel),
            (b"COMPACT", Command::Compact),
        ];
        for (line, command) in cases {
            assert_eq!(parse(line).unwrap().unwrap().command(), command);
        }
    }

    #[test]
    fn commands_are_declared_in_stats_order_so_they_index_the_counters() {
        for (index, command) in Command::ALL.into_iter().enumerate() {
            assert_eq!(command as usize, index, "{command:?}");
        }
        let names: Vec<&str> = Command::ALL.iter().map(|command| command.stat_name()).collect();
        assert_eq!(
            names,
            [
                "cmd_gen",
                "cmd_get",
                "cmd_lease",
                "cmd_rel",
                "cmd_touch",
                "cmd_del",
                "cmd_ping",
                "cmd_info",
                "cmd_add",
                "cmd_autorel",
                "cmd_use",
                "cmd_pools",
                "cmd_auth",
                "cmd_stats",
                "cmd_version",
                "cmd_compact",
                "cmd_quit"
            ]
        );
    }
}
