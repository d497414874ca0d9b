//! Hostile and broken clients: overlong lines, complete or still arriving, get `CLIENT_ERROR line too
//! long` and a closed connection (after the replies to earlier requests); lines exactly at the limit
//! pass; garbage and binary bytes (NUL, 0xFF, escape sequences) get single-line printable errors and the
//! connection goes on; clients that hang up mid-line or without reading leave the pool intact for
//! everyone else; `--max-connections` turns extra clients away and admits new ones once others leave;
//! `--max-keys` refuses a GEN that would pass it and creates nothing.

mod common;

use std::time::Duration;

use common::{config, key_of, num, start, stop, within, Client};
use tokio::io::AsyncWriteExt;

const TOO_LONG: &str = "CLIENT_ERROR line too long";

fn config_with_max_line(max_line: usize) -> keypool::server::Config {
    let mut config = config();
    config.max_line = max_line;
    config
}

/// Polls STATS on `c` until `curr_connections` is `n`, so that the server has finished with every
/// other connection.
async fn wait_for_connections(c: &mut Client, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let curr = c.stat("curr_connections").await;
        if curr == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "curr_connections stayed at {curr}, expected {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_overlong_complete_line_gets_an_error_and_the_connection_closes() {
    let server = start(config_with_max_line(64)).await;
    let mut c = Client::connect(server.addr()).await;
    c.send(format!("GET {}\r\n", "x".repeat(100))).await;
    assert_eq!(c.line().await, TOO_LONG);
    c.expect_closed().await;
    stop(server).await;
}

#[tokio::test]
async fn an_overlong_line_is_refused_before_its_end_arrives() {
    let server = start(config_with_max_line(64)).await;
    let mut c = Client::connect(server.addr()).await;
    // No LF ever comes: the server must not wait for one.
    c.send("P".repeat(200)).await;
    assert_eq!(c.line().await, TOO_LONG);
    c.expect_closed().await;
    stop(server).await;
}

#[tokio::test]
async fn a_line_exactly_at_the_limit_passes_and_one_byte_more_does_not() {
    let server = start(config_with_max_line(64)).await;
    let at_limit = format!("PING{}", " ".repeat(60));
    assert_eq!(at_limit.len(), 64);

    let mut c = Client::connect(server.addr()).await;
    c.send(format!("{at_limit}\n")).await;
    assert_eq!(c.line().await, "PONG", "64 bytes and LF");
    c.send(format!("{at_limit}\r\n")).await;
    assert_eq!(c.line().await, "PONG", "64 bytes and CRLF: the CR is not counted");
    // The CR arrives first and the LF later: 65 bytes buffered, but the last one may be the ending.
    c.send(format!("{at_limit}\r")).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    c.send("\n").await;
    assert_eq!(c.line().await, "PONG", "64 bytes and CR, LF in a later write");

    c.send(format!("{at_limit} \n")).await;
    assert_eq!(c.line().await, TOO_LONG, "65 bytes");
    c.expect_closed().await;

    // A partial line one byte over the limit is refused too, even though its CR might still come.
    let mut c = Client::connect(server.addr()).await;
    c.send(format!("{at_limit} ")).await;
    assert_eq!(c.line().await, TOO_LONG, "65 bytes, no ending yet");
    c.expect_closed().await;
    stop(server).await;
}

#[tokio::test]
async fn requests_before_an_overlong_line_are_answered_and_those_after_are_not() {
    let server = start(config_with_max_line(64)).await;
    let mut c = Client::connect(server.addr()).await;
    c.send(format!("PING\nGEN 2\n{}\nGEN 3\nPING\n", "A".repeat(100))).await;
    assert_eq!(c.line().await, "PONG");
    assert_eq!(c.lines.key_block().await.len(), 2);
    assert_eq!(c.line().await, TOO_LONG);
    c.expect_closed().await;

    let mut observer = Client::connect(server.addr()).await;
    assert_eq!(observer.stat("keys").await, 2, "the GEN after the overlong line was not served");
    stop(server).await;
}

#[tokio::test]
async fn a_megabyte_without_a_line_ending_gets_an_error_not_a_reset() {
    let server = start(config()).await; // --max-line 4096
    let mut c = Client::connect(server.addr()).await;
    let mut writer = c.writer;
    // The client keeps writing after the server has given up on it; its write may fail, which is fine.
    let flood = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..16 {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        writer
    });
    assert_eq!(c.lines.line().await, TOO_LONG);
    c.lines.expect_closed().await;
    let _ = within("the flooding writer to stop", flood).await;

    let mut other = Client::connect(server.addr()).await;
    assert_eq!(other.cmd("PING").await, "PONG", "the server still serves others");
    stop(server).await;
}

/// Deterministic pseudo-random bytes (xorshift32).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Reads back an echo as protocol.md writes it: printable ASCII as is, any other byte as `\xNN`.
fn decode_echo(echo: &str) -> Vec<u8> {
    let bytes = echo.as_bytes();
    let mut decoded = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes.get(at + 2..at + 4).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[at], bytes.get(at + 1), hex) {
            (b'\\', Some(b'x'), Some(byte)) => {
                decoded.push(byte);
                at += 4;
            }
            (byte, _, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    decoded
}

/// Checks `reply` is `ERROR unknown command '<echo>'` for the command token `token`, the echo being
/// printable and naming the token's first 32 bytes (protocol.md).
fn assert_unknown_command_echo(reply: &str, token: &[u8]) {
    let echo = reply
        .strip_prefix("ERROR unknown command '")
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{token:?} got {reply:?}, expected ERROR unknown command '<cmd>'"));
    assert!(echo.bytes().all(|b| b.is_ascii_graphic()), "unprintable echo for {token:?}: {reply:?}");
    let shown = &token[..token.len().min(32)];
    let echo = if token.len() > 32 { echo.strip_suffix("...").unwrap_or(echo) } else { echo };
    assert_eq!(decode_echo(echo), shown, "the echo {echo:?} does not name {token:?}");
}

#[tokio::test]
async fn binary_garbage_gets_one_printable_error_per_line_and_the_connection_goes_on() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;

    let fixed: [&[u8]; 8] = [
        b"\x00",
        b"\xff",
        b"\xff\xfe\xfd\xfc",
        b"\x00GET",
        b"GET\x00",
        b"PING\x00",
        b"\x1b[2J\x1b[H",
        b"\xc3\xa9t\xc3\xa9", // UTF-8 text that is not ASCII
    ];
    for request in fixed {
        c.send([request, b"\r\n"].concat()).await;
        assert_unknown_command_echo(&c.line().await, request);
    }

    // A hundred lines of random bytes with no blank, CR or LF inside: one error line each, in one write.
    let lines: Vec<Vec<u8>> = (0..100)
        .map(|n| {
            let mut line = noise(n + 1, 1 + n as usize % 40);
            // No blanks, line breaks or backslashes (which would make the echo ambiguous to read back).
            line.retain(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\\'));
            line.insert(0, 0xff); // never a command name
            line
        })
        .collect();
    let mut pipeline = Vec::new();
    for line in &lines {
        pipeline.extend_from_slice(line);
        pipeline.push(b'\n');
    }
    c.send(&pipeline).await;
    for line in &lines {
        assert_unknown_command_echo(&c.line().await, line);
    }

    // Binary bytes in arguments are malformed arguments.
    for request in [
        &b"GEN \x00"[..],
        b"GEN 5\xff",
        b"REL \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        c.send([request, b"\n"].concat()).await;
        let reply = c.line().await;
        assert!(reply.starts_with("CLIENT_ERROR "), "{request:?} got {reply:?}");
    }

    assert_eq!(c.cmd("PING").await, "PONG", "the connection survives garbage");
    assert_eq!(c.stat("keys").await, 0, "garbage created nothing");
    stop(server).await;
}

#[tokio::test]
async fn raw_noise_with_line_breaks_never_breaks_the_reply_stream() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut noise = noise(7, 16 * 1024);
    // Keep lines under --max-line and never spell a real request by accident: 0xFF starts every line.
    for (n, byte) in noise.iter_mut().enumerate() {
        if n % 97 == 0 {
            *byte = b'\n';
        } else if n % 97 == 1 {
            *byte = 0xff;
        } else if *byte == b'\n' {
            *byte = 0;
        }
    }
    noise.push(b'\n');
    c.send(&noise).await;
    c.send("PING\n").await;
    // Every reply is a well-formed error line (the client checks CRLF and ASCII) until the PONG.
    let mut errors = 0;
    loop {
        let line = c.line().await;
        if line == "PONG" {
            break;
        }
        assert!(line.starts_with("ERROR unknown command '"), "unexpected reply {line:?}");
        errors += 1;
    }
    assert!(errors > 100, "only {errors} error replies for ~170 garbage lines");

    let mut other = Client::connect(server.addr()).await;
    assert_eq!(other.cmd("PING").await, "PONG");
    assert_eq!(other.stat("keys").await, 0);
    stop(server).await;
}

#[tokio::test]
async fn a_lone_cr_is_part_of_the_line() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.send("PI\rNG\n").await;
    assert_unknown_command_echo(&c.line().await, b"PI\rNG");
    // Only the one CR right before the LF is part of the line ending.
    c.send("PING\r\r\n").await;
    assert_unknown_command_echo(&c.line().await, b"PING\r");
    // A long unknown command is echoed in part.
    c.send(format!("{}\n", "Q".repeat(100))).await;
    assert_unknown_command_echo(&c.line().await, "Q".repeat(100).as_bytes());
    assert_eq!(c.cmd("PING").await, "PONG");
    stop(server).await;
}

#[tokio::test]
async fn clients_that_hang_up_mid_line_or_unread_leave_the_pool_intact() {
    let server = start(config()).await;
    let mut owner = Client::connect(server.addr()).await;
    let ids = owner.gen(5).await;
    let leased = owner.get().await.expect("a free key");

    // Hangs up in the middle of a request: the partial line is dropped unanswered.
    let mut c = Client::connect(server.addr()).await;
    c.send(format!("DEL {}", ids[0])).await;
    drop(c);

    // Sends complete requests and a partial one, then hangs up without reading the replies.
    let mut c = Client::connect(server.addr()).await;
    c.send("GEN 3\nGEN 4").await;
    drop(c);

    // Half-closes after a complete request and a partial one: answered, then closed.
    let mut c = Client::connect(server.addr()).await;
    c.send(format!("PING\nREL {leased}")).await;
    c.shutdown_write().await;
    assert_eq!(c.line().await, "PONG");
    c.expect_closed().await;

    // Garbage, then an overlong line: closed.
    let mut c = Client::connect(server.addr()).await;
    c.send(b"\x00\xff\n".as_slice()).await;
    assert!(c.line().await.starts_with("ERROR "));
    c.send(vec![b'z'; 5000]).await;
    assert_eq!(c.line().await, TOO_LONG);
    c.expect_closed().await;

    wait_for_connections(&mut owner, 1).await;
    let stats = owner.stats().await;
    assert_eq!(num(&stats, "keys"), 5 + 3, "only the complete GEN 3 was served");
    assert_eq!(num(&stats, "keys_blocked"), 1, "the half-closed client's partial REL was not served");
    for id in &ids {
        let info = owner.info(id).await.unwrap_or_else(|| panic!("{id} was lost"));
        assert_eq!(info["state"], if *id == leased { "blocked" } else { "free" });
    }
    assert_eq!(owner.cmd(&format!("REL {leased}")).await, "RELEASED");
    stop(server).await;
}

#[tokio::test]
async fn clients_past_max_connections_are_refused_until_others_leave() {
    let mut config = config();
    config.max_connections = 2;
    let server = start(config).await;
    let mut a = Client::connect(server.addr()).await;
    assert_eq!(a.cmd("PING").await, "PONG");
    let mut b = Client::connect(server.addr()).await;
    assert_eq!(b.cmd("PING").await, "PONG");

    let mut refused = Client::connect(server.addr()).await;
    assert_eq!(refused.line().await, "SERVER_ERROR too many connections");
    refused.expect_closed().await;

    // A burst of refused clients does not disturb the admitted ones.
    for _ in 0..20 {
        let mut c = Client::connect(server.addr()).await;
        assert_eq!(c.line().await, "SERVER_ERROR too many connections");
        c.expect_closed().await;
    }
    let stats = a.stats().await;
    assert_eq!(num(&stats, "rejected_connections"), 21);
    assert_eq!(num(&stats, "curr_connections"), 2);
    assert_eq!(b.cmd("PING").await, "PONG");

    // Once a client leaves, a new one is admitted (after the server has noticed the hang-up).
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut retries = 0;
    let mut admitted = loop {
        let mut c = Client::connect(server.addr()).await;
        match ping_probe(&mut c).await.as_deref() {
            Some("PONG") => break c,
            Some("SERVER_ERROR too many connections") | None => retries += 1,
            Some(other) => panic!("unexpected reply {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no client admitted 2s after one left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let id = key_of(&admitted.cmd("GEN").await);
    assert_eq!(admitted.line().await, "END");
    assert_eq!(admitted.cmd(&format!("PING {id}")).await, "ALIVE");
    assert_eq!(a.stat("rejected_connections").await, 21 + retries);

    // QUIT frees a place too.
    admitted.send_line("QUIT").await;
    admitted.expect_closed().await;
    wait_for_connections(&mut a, 1).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("PING").await, "PONG");
    stop(server).await;
}

/// Sends PING and returns the first reply line, or `None` if the connection was closed or reset (a
/// refused client may find its connection reset under its write; that counts as refused).
async fn ping_probe(c: &mut Client) -> Option<String> {
    if within("a write", c.writer.write_all(b"PING\r\n")).await.is_err() {
        return None;
    }
    c.lines.try_line().await.ok().flatten()
}

#[tokio::test]
async fn gen_past_max_keys_is_refused_and_creates_nothing() {
    let mut config = config();
    config.pool.max_keys = 10;
    let server = start(config).await;
    let mut c = Client::connect(server.addr()).await;

    assert_eq!(c.cmd("GEN 11").await, "SERVER_ERROR pool full");
    assert_eq!(c.cmd("GEN 10000").await, "SERVER_ERROR pool full");
    assert_eq!(c.stat("keys").await, 0, "a refused GEN creates nothing");

    let ids = c.gen(8).await;
    assert_eq!(c.cmd("GEN 3").await, "SERVER_ERROR pool full");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_generated")), (8, 8), "all or nothing");
    assert_eq!(num(&stats, "max_keys"), 10);

    c.gen(2).await; // exactly at the limit
    assert_eq!(c.cmd("GEN").await, "SERVER_ERROR pool full");

    // Blocked keys count toward the limit; deleted ones do not.
    c.get().await.expect("a free key");
    assert_eq!(c.cmd("GEN").await, "SERVER_ERROR pool full", "with a key blocked");
    assert_eq!(c.cmd(&format!("DEL {}", ids[1])).await, "DELETED");
    assert_eq!(c.gen(1).await.len(), 1);
    assert_eq!(c.cmd("GEN").await, "SERVER_ERROR pool full");
    assert_eq!(c.stat("keys").await, 10);
    assert_eq!(c.cmd("PING").await, "PONG", "the connection stays open");
    stop(server).await;
}
