//! A connection's request side over arbitrary bytes: `protocol::codec::answer_lines` (framing, parsing,
//! and the error replies) fed the input whole and again cut into pieces, with a stand-in for the pool
//! that answers each request through the real reply writers. Both runs must write the same bytes and end
//! the same way, and what they write must be whole reply lines: printable ASCII, ended by CRLF, each
//! starting with a reply word, and `CLIENT_ERROR line too long` last if a line was too long.
//!
//! The first two bytes of the input choose the line limit and how the rest is cut.

#![no_main]

use std::ops::ControlFlow;

use bytes::BytesMut;
use keypool::pool::KeyId;
use keypool::protocol::codec::{answer_lines, Stopped};
use keypool::protocol::reply::{self, words};
use keypool::protocol::Request;
use libfuzzer_sys::fuzz_target;

const ID: &[u8] = b"abcdefghijklmnopqrstuvwx";

/// Small, so that the pause-and-resume path (the server's 64 KiB high-water mark) runs often.
const HIGH_WATER: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    OutputFull,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Open,
    Quit,
    LineTooLong,
}

/// Replies as the server would, without a pool. ADD's secret is written back in lease replies, as a
/// later GET of that key would send it.
fn stand_in(request: Request<'_>, out: &mut BytesMut) -> ControlFlow<Pause> {
    let id = KeyId::parse(ID).expect("a well-formed id");
    match request {
        Request::Gen { count } => {
            for _ in 0..count.min(20) {
                reply::key(out, &id, None);
            }
            reply::end(out);
        }
        Request::Get(_) => reply::key(out, &id, None),
        Request::Lease(_) => reply::leased(out, &id, u64::MAX, None),
        Request::Add { secret, .. } => {
            reply::key(out, &id, Some(secret.0));
            reply::leased(out, &id, 1, Some(secret.0));
            reply::exists(out, &id);
        }
        Request::Info(id) => {
            reply::stat_text(out, "id", id.as_str());
            reply::end(out);
        }
        Request::Stats { .. } => {
            reply::stat(out, "keys", 1);
            reply::end(out);
        }
        Request::Version => reply::version(out, "0.1.0"),
        Request::Del(_) => reply::word(out, words::NOT_FOUND),
        Request::Quit => return ControlFlow::Break(Pause::Quit),
        _ => reply::word(out, words::OK),
    }
    if out.len() >= HIGH_WATER {
        ControlFlow::Break(Pause::OutputFull)
    } else {
        ControlFlow::Continue(())
    }
}

/// Feeds `chunks` as a connection's reads; returns everything written and how the connection ended.
fn serve<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, max_line: usize) -> (Vec<u8>, Ending) {
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    let mut written = Vec::new();
    for chunk in chunks {
        input.extend_from_slice(chunk);
        loop {
            let stopped = answer_lines(&mut input, max_line, &mut output, stand_in);
            written.extend_from_slice(&output);
            output.clear();
            match stopped {
                Stopped::NeedInput => break,
                Stopped::Break(Pause::OutputFull) => continue,
                Stopped::Break(Pause::Quit) => return (written, Ending::Quit),
                Stopped::LineTooLong => return (written, Ending::LineTooLong),
            }
        }
        // The server reads more only while the buffer holds at most a partial line under the limit.
        assert!(input.len() <= max_line + 1, "{} bytes left buffered", input.len());
    }
    (written, Ending::Open)
}

const REPLY_WORDS: [&str; 18] = [
    "KEY",
    "LEASED",
    "EXISTS",
    "END",
    "STAT",
    "VERSION",
    "ERROR",
    "CLIENT_ERROR",
    "SERVER_ERROR",
    words::NOT_FOUND,
    words::RELEASED,
    words::NOT_BLOCKED,
    words::DELETED,
    words::ALIVE,
    words::PONG,
    words::STALE,
    words::TOUCHED,
    words::OK,
];

fn assert_well_formed(written: &[u8], ending: Ending) {
    let mut last = None;
    for line in written.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\r\n").unwrap_or_else(|| panic!("not ended by CRLF: {line:?}"));
        assert!(text.iter().all(|&b| (0x20..=0x7E).contains(&b)), "not printable ASCII: {text:?}");
        let text = std::str::from_utf8(text).expect("ASCII");
        let word = text.split(' ').next().unwrap_or_default();
        assert!(REPLY_WORDS.contains(&word), "unknown reply word in {text:?}");
        last = Some(text);
    }
    if ending == Ending::LineTooLong {
        assert_eq!(last, Some("CLIENT_ERROR line too long"));
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, cut, stream @ ..] = data else {
        return;
    };
    let max_line = [8, 30, 64, 4096][usize::from(*limit) % 4];
    let (whole, ending) = serve([stream], max_line);
    assert_well_formed(&whole, ending);
    // Pieces of 1 to 16 bytes, their sizes cycling through the bits of `cut`.
    let mut chunks = Vec::new();
    let mut rest = stream;
    let mut size = usize::from(*cut);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at((size % 16 + 1).min(rest.len()));
        chunks.push(chunk);
        rest = after;
        size = size.rotate_right(3) ^ chunk.len();
    }
    assert_eq!(serve(chunks, max_line), (whole, ending), "a different split gave different replies");
});
