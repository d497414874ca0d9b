//! Reply writing: each function appends one complete reply line (or a block of lines) to the output
//! buffer of a batch, ended by CRLF. Nothing here allocates beyond growing that buffer: numbers go
//! through `itoa` and ids are copied straight from their fixed arrays.

use bytes::{BufMut, BytesMut};

use crate::pool::{KeyId, KeyInfo};

/// `KEY <id>`
pub fn key(out: &mut BytesMut, id: &KeyId) {
    out.put_slice(b"KEY ");
    out.put_slice(id.as_bytes());
    out.put_slice(b"\r\n");
}

/// `END`, closing a list of `KEY` or `STAT` lines.
pub fn end(out: &mut BytesMut) {
    out.put_slice(b"END\r\n");
}

/// `STAT <name> <number>`
pub fn stat(out: &mut BytesMut, name: &str, value: u64) {
    stat_text(out, name, itoa::Buffer::new().format(value));
}

/// `STAT <name> <text>`; `text` must not contain a line ending.
pub fn stat_text(out: &mut BytesMut, name: &str, text: &str) {
    out.put_slice(b"STAT ");
    out.put_slice(name.as_bytes());
    out.put_u8(b' ');
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

/// INFO's block: one `STAT` line per field, then `END`.
pub fn info(out: &mut BytesMut, info: &KeyInfo) {
    stat_text(out, "id", info.id.as_str());
    stat_text(out, "state", info.state.as_str());
    stat(out, "created_ms", info.created_ms);
    if let Some(until) = info.alive_until_ms {
        stat(out, "alive_until_ms", until);
    }
    if let Some(until) = info.blocked_until_ms {
        stat(out, "blocked_until_ms", until);
    }
    if let Some(token) = info.token {
        stat(out, "token", token);
    }
    if let Some(at) = info.free_at_ms {
        stat(out, "free_at_ms", at);
    }
    stat(out, "leases", u64::from(info.leases));
    end(out);
}

/// A fixed one-word reply such as `RELEASED` (give it without the line ending).
pub fn word(out: &mut BytesMut, word: &'static str) {
    out.put_slice(word.as_bytes());
    out.put_slice(b"\r\n");
}

/// `VERSION <version>`
pub fn version(out: &mut BytesMut, version: &str) {
    out.put_slice(b"VERSION ");
    out.put_slice(version.as_bytes());
    out.put_slice(b"\r\n");
}

/// `ERROR <message>`: the request named no known command.
pub fn error(out: &mut BytesMut, message: &str) {
    message_line(out, "ERROR ", message);
}

/// `CLIENT_ERROR <message>`: the request was malformed.
pub fn client_error(out: &mut BytesMut, message: &str) {
    message_line(out, "CLIENT_ERROR ", message);
}

/// `SERVER_ERROR <message>`: the server refused a well-formed request.
pub fn server_error(out: &mut BytesMut, message: &str) {
    message_line(out, "SERVER_ERROR ", message);
}

fn message_line(out: &mut BytesMut, prefix: &str, message: &str) {
    debug_assert!(!message.contains(['\r', '\n']), "reply messages are single lines");
    out.put_slice(prefix.as_bytes());
    out.put_slice(message.as_bytes());
    out.put_slice(b"\r\n");
}

/// The reply words, named once so that the server and the tests agree on spelling.
pub mod words {
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const RELEASED: &str = "RELEASED";
    pub const NOT_BLOCKED: &str = "NOT_BLOCKED";
    pub const DELETED: &str = "DELETED";
    pub const ALIVE: &str = "ALIVE";
    pub const PONG: &str = "PONG";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::KeyState;

    #[test]
    fn info_lists_blocked_until_only_while_blocked() {
        let id = KeyId::parse(b"abcdefghijklmnopqrstuvwx").unwrap();
        let mut info_block = KeyInfo {
            id,
            state: KeyState::Blocked,
            created_ms: 1,
            alive_until_ms: Some(2),
            blocked_until_ms: Some(3),
            token: None,
            free_at_ms: None,
            leases: 4,
        };
        let mut out = BytesMut::new();
        info(&mut out, &info_block);
        assert_eq!(
            &out[..],
            b"STAT id abcdefghijklmnopqrstuvwx\r\nSTAT state blocked\r\nSTAT created_ms 1\r\n\
              STAT alive_until_ms 2\r\nSTAT blocked_until_ms 3\r\nSTAT leases 4\r\nEND\r\n"
        );
        info_block.state = KeyState::Free;
        info_block.blocked_until_ms = None;
        out.clear();
        info(&mut out, &info_block);
        assert!(!String::from_utf8_lossy(&out).contains("blocked_until_ms"));
        assert!(String::from_utf8_lossy(&out).contains("STAT state free\r\n"));
    }

    #[test]
    fn errors_carry_their_prefix() {
        let mut out = BytesMut::new();
        error(&mut out, "unknown command 'X'");
        client_error(&mut out, "bad");
        server_error(&mut out, "pool full");
        assert_eq!(&out[..], b"ERROR unknown command 'X'\r\nCLIENT_ERROR bad\r\nSERVER_ERROR pool full\r\n");
    }
}
