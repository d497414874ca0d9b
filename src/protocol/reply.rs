//! Reply writing: each function appends one complete reply line (or a block of lines) to the output
//! buffer of a batch, ended by CRLF. Nothing here allocates beyond growing that buffer: numbers go
//! through `itoa` and ids are copied straight from their fixed arrays.
//!
//! A key's secret is written here and nowhere else: only the lease replies (`KEY`, `LEASED`) take one.

use bytes::{BufMut, BytesMut};

use crate::pool::{KeyId, KeyInfo};

/// `KEY <id>`, or `KEY <id> <secret>` when handing out a key that carries a secret (GET). A key without
/// one, and GEN and ADD, which never send the secret back, pass `None`: the line is then exactly v1's.
///
/// `secret` must be printable ASCII without spaces, as the parser admits it; it is written as it is.
pub fn key(out: &mut BytesMut, id: &KeyId, secret: Option<&[u8]>) {
    out.put_slice(b"KEY ");
    out.put_slice(id.as_bytes());
    put_secret(out, secret);
    out.put_slice(b"\r\n");
}

/// `LEASED <id> <token>`, or `LEASED <id> <token> <secret>` for a key that carries a secret (LEASE).
///
/// `secret` must be printable ASCII without spaces, as the parser admits it; it is written as it is.
pub fn leased(out: &mut BytesMut, id: &KeyId, token: u64, secret: Option<&[u8]>) {
    out.put_slice(b"LEASED ");
    out.put_slice(id.as_bytes());
    out.put_u8(b' ');
    out.put_slice(itoa::Buffer::new().format(token).as_bytes());
    put_secret(out, secret);
    out.put_slice(b"\r\n");
}

/// `EXISTS <id>`: ADD of a secret the pool already holds, under key `id`.
pub fn exists(out: &mut BytesMut, id: &KeyId) {
    out.put_slice(b"EXISTS ");
    out.put_slice(id.as_bytes());
    out.put_slice(b"\r\n");
}

/// ` <secret>` when there is one. A space or line ending inside it would let a secret split or forge
/// reply lines; the parser never admits one, and the debug build checks that nothing else slipped in.
fn put_secret(out: &mut BytesMut, secret: Option<&[u8]>) {
    if let Some(secret) = secret {
        debug_assert!(
            !secret.is_empty() && secret.iter().all(|b| (0x21..=0x7E).contains(b)),
            "a secret is 1 or more bytes of printable ASCII without spaces"
        );
        out.put_u8(b' ');
        out.put_slice(secret);
    }
}

/// `USING <pool>`, the answer to USE.
pub fn using(out: &mut BytesMut, pool: &str) {
    out.put_slice(b"USING ");
    out.put_slice(pool.as_bytes());
    out.put_slice(b"\r\n");
}

/// `POOL <name> <keys>`, one line of a POOLS listing.
pub fn pool(out: &mut BytesMut, name: &str, keys: u64) {
    out.put_slice(b"POOL ");
    out.put_slice(name.as_bytes());
    out.put_u8(b' ');
    out.put_slice(itoa::Buffer::new().format(keys).as_bytes());
    out.put_slice(b"\r\n");
}

/// `END <cursor>`, closing a POOLS page: where the next page starts, 0 when the listing is complete.
pub fn end_with_cursor(out: &mut BytesMut, cursor: u64) {
    out.put_slice(b"END ");
    out.put_slice(itoa::Buffer::new().format(cursor).as_bytes());
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

/// INFO's block: one `STAT` line per field, then `END`. The fields come in a fixed order: `id`, `state`,
/// `created_ms`, `alive_until_ms` (unless the key never expires by keep-alive), `blocked_until_ms` and
/// `token` (while blocked), `free_at_ms` (while delayed), `leases`. A key's secret is never among them.
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
    /// REL or TOUCH with a fencing token that is not the key's current lease's.
    pub const STALE: &str = "STALE";
    pub const TOUCHED: &str = "TOUCHED";
    /// AUTOREL.
    pub const OK: &str = "OK";
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

    fn id() -> KeyId {
        KeyId::parse(b"abcdefghijklmnopqrstuvwx").unwrap()
    }

    fn info_of(info_block: &KeyInfo) -> String {
        let mut out = BytesMut::new();
        info(&mut out, info_block);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn info_of_a_blocked_key_shows_its_token_after_blocked_until() {
        let blocked = KeyInfo {
            id: id(),
            state: KeyState::Blocked,
            created_ms: 1,
            alive_until_ms: Some(2),
            blocked_until_ms: Some(3),
            token: Some(18_446_744_073_709_551_615),
            free_at_ms: None,
            leases: 4,
        };
        assert_eq!(
            info_of(&blocked),
            "STAT id abcdefghijklmnopqrstuvwx\r\nSTAT state blocked\r\nSTAT created_ms 1\r\n\
             STAT alive_until_ms 2\r\nSTAT blocked_until_ms 3\r\nSTAT token 18446744073709551615\r\n\
             STAT leases 4\r\nEND\r\n"
        );
    }

    #[test]
    fn info_of_a_delayed_key_shows_when_it_comes_free() {
        let delayed = KeyInfo {
            id: id(),
            state: KeyState::Delayed,
            created_ms: 10,
            alive_until_ms: Some(20),
            blocked_until_ms: None,
            token: None,
            free_at_ms: Some(15),
            leases: 1,
        };
        assert_eq!(
            info_of(&delayed),
            "STAT id abcdefghijklmnopqrstuvwx\r\nSTAT state delayed\r\nSTAT created_ms 10\r\n\
             STAT alive_until_ms 20\r\nSTAT free_at_ms 15\r\nSTAT leases 1\r\nEND\r\n"
        );
    }

    #[test]
    fn info_of_a_key_that_never_expires_has_no_alive_until() {
        let immortal = KeyInfo {
            id: id(),
            state: KeyState::Free,
            created_ms: 10,
            alive_until_ms: None,
            blocked_until_ms: None,
            token: None,
            free_at_ms: None,
            leases: 0,
        };
        assert_eq!(
            info_of(&immortal),
            "STAT id abcdefghijklmnopqrstuvwx\r\nSTAT state free\r\nSTAT created_ms 10\r\nSTAT leases 0\r\nEND\r\n"
        );
    }

    #[test]
    fn key_and_leased_carry_the_secret_only_when_there_is_one() {
        let mut out = BytesMut::new();
        key(&mut out, &id(), None);
        key(&mut out, &id(), Some(b"s3cr3t"));
        leased(&mut out, &id(), 42, None);
        leased(&mut out, &id(), u64::MAX, Some(b"s3cr3t"));
        exists(&mut out, &id());
        assert_eq!(
            &out[..],
            b"KEY abcdefghijklmnopqrstuvwx\r\nKEY abcdefghijklmnopqrstuvwx s3cr3t\r\n\
              LEASED abcdefghijklmnopqrstuvwx 42\r\nLEASED abcdefghijklmnopqrstuvwx 18446744073709551615 s3cr3t\r\n\
              EXISTS abcdefghijklmnopqrstuvwx\r\n"
        );
    }

    #[test]
    fn the_new_words_are_spelled_as_in_the_protocol() {
        let mut out = BytesMut::new();
        for w in [words::STALE, words::TOUCHED, words::OK] {
            word(&mut out, w);
        }
        assert_eq!(&out[..], b"STALE\r\nTOUCHED\r\nOK\r\n");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "printable ASCII")]
    fn a_secret_with_a_line_ending_never_reaches_the_wire_in_debug_builds() {
        key(&mut BytesMut::new(), &id(), Some(b"ab\r\nSTALE"));
    }
}
