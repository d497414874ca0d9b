//! Request parsing: one line in, one [`Request`] (or a [`RequestError`] to send back) out.
//!
//! Parsing borrows the line and copies nothing: tokens are sub-slices, ids are checked into fixed
//! `[u8; 24]` arrays, and numbers are read straight from the bytes. Errors are rare, so they may
//! allocate their message.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::pool::{KeyId, MAX_GEN_COUNT};

/// One parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GEN [count]`: mint `count` new keys.
    Gen { count: u32 },
    /// `GET`: lease a random free key.
    Get,
    /// `REL <id>`: release a blocked key.
    Rel(KeyId),
    /// `DEL <id>`: delete a key.
    Del(KeyId),
    /// `PING <id>`: restart a key's keep-alive window.
    Ping(KeyId),
    /// `PING` with no argument: a health check.
    Health,
    /// `INFO <id>`: describe a key.
    Info(KeyId),
    /// `STATS`: describe the daemon.
    Stats,
    /// `VERSION`.
    Version,
    /// `QUIT`: close the connection.
    Quit,
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

impl Request {
    /// Parses one request line (without its line ending). `Ok(None)` for a blank line, which is not a
    /// request and gets no reply.
    pub fn parse(line: &[u8]) -> Result<Option<Request>, RequestError> {
        let mut tokens = line.split(|&b| b == b' ' || b == b'\t').filter(|token| !token.is_empty());
        let Some(command) = tokens.next() else {
            return Ok(None);
        };
        let mut args = Args { command: "", tokens };
        let request = if command.eq_ignore_ascii_case(b"GET") {
            args.command = "GET";
            args.finish(Request::Get)?
        } else if command.eq_ignore_ascii_case(b"REL") {
            args.command = "REL";
            let id = args.key_id()?;
            args.finish(Request::Rel(id))?
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
        } else if command.eq_ignore_ascii_case(b"DEL") {
            args.command = "DEL";
            let id = args.key_id()?;
            args.finish(Request::Del(id))?
        } else if command.eq_ignore_ascii_case(b"INFO") {
            args.command = "INFO";
            let id = args.key_id()?;
            args.finish(Request::Info(id))?
        } else if command.eq_ignore_ascii_case(b"STATS") {
            args.command = "STATS";
            args.finish(Request::Stats)?
        } else if command.eq_ignore_ascii_case(b"VERSION") {
            args.command = "VERSION";
            args.finish(Request::Version)?
        } else if command.eq_ignore_ascii_case(b"QUIT") {
            args.command = "QUIT";
            args.finish(Request::Quit)?
        } else {
            return Err(RequestError::UnknownCommand(printable(command)));
        };
        Ok(Some(request))
    }

    /// The command's name, as counted in STATS (`cmd_<name>`).
    pub fn command(&self) -> Command {
        match self {
            Request::Gen { .. } => Command::Gen,
            Request::Get => Command::Get,
            Request::Rel(_) => Command::Rel,
            Request::Del(_) => Command::Del,
            Request::Ping(_) | Request::Health => Command::Ping,
            Request::Info(_) => Command::Info,
            Request::Stats => Command::Stats,
            Request::Version => Command::Version,
            Request::Quit => Command::Quit,
        }
    }
}

/// The commands, for counting. `Command::ALL` lists them in the order STATS reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Gen,
    Get,
    Rel,
    Del,
    Ping,
    Info,
    Stats,
    Version,
    Quit,
}

impl Command {
    /// Every command, in STATS order.
    pub const ALL: [Command; 9] = [
        Command::Gen,
        Command::Get,
        Command::Rel,
        Command::Del,
        Command::Ping,
        Command::Info,
        Command::Stats,
        Command::Version,
        Command::Quit,
    ];

    /// The STATS counter name for this command.
    pub fn stat_name(self) -> &'static str {
        match self {
            Command::Gen => "cmd_gen",
            Command::Get => "cmd_get",
            Command::Rel => "cmd_rel",
            Command::Del => "cmd_del",
            Command::Ping => "cmd_ping",
            Command::Info => "cmd_info",
            Command::Stats => "cmd_stats",
            Command::Version => "cmd_version",
            Command::Quit => "cmd_quit",
        }
    }
}

/// The arguments after a command name, consumed left to right.
struct Args<'a, I: Iterator<Item = &'a [u8]>> {
    command: &'static str,
    tokens: I,
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

    /// Checks that no argument is left over and yields `request`.
    fn finish(&mut self, request: Request) -> Result<Request, RequestError> {
        match self.tokens.next() {
            None => Ok(request),
            Some(_) => Err(bad(format!("too many arguments for {}", self.command))),
        }
    }
}

fn bad(message: impl Into<Cow<'static, str>>) -> RequestError {
    RequestError::BadArguments(message.into())
}

/// A decimal number of at most 19 digits (so it cannot overflow), without sign or separators.
fn parse_decimal(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 19 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(token.iter().fold(0, |n, &digit| n * 10 + u64::from(digit - b'0')))
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

    fn parse(line: &[u8]) -> Result<Option<Request>, RequestError> {
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
        assert_eq!(parse(b"GET"), Ok(Some(Request::Get)));
        assert_eq!(parse(&rel), Ok(Some(Request::Rel(id()))));
        assert_eq!(parse(&del), Ok(Some(Request::Del(id()))));
        assert_eq!(parse(&ping), Ok(Some(Request::Ping(id()))));
        assert_eq!(parse(b"PING"), Ok(Some(Request::Health)));
        assert_eq!(parse(&info), Ok(Some(Request::Info(id()))));
        assert_eq!(parse(b"STATS"), Ok(Some(Request::Stats)));
        assert_eq!(parse(b"VERSION"), Ok(Some(Request::Version)));
        assert_eq!(parse(b"QUIT"), Ok(Some(Request::Quit)));
    }

    #[test]
    fn commands_are_case_insensitive_and_blanks_are_flexible() {
        assert_eq!(parse(b"get"), Ok(Some(Request::Get)));
        assert_eq!(parse(b"  \tGeN \t 5  "), Ok(Some(Request::Gen { count: 5 })));
    }

    #[test]
    fn ids_are_case_sensitive() {
        let upper = [b"REL ".as_slice(), &ID.to_ascii_uppercase()].concat();
        assert_ne!(parse(&upper), Ok(Some(Request::Rel(id()))));
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
        assert_eq!(client_error(b"STATS x"), "too many arguments for STATS");
        let two_ids = [b"DEL ".as_slice(), ID, b" ", ID].concat();
        assert_eq!(client_error(&two_ids), "too many arguments for DEL");
    }
}
