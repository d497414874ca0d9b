//! The request side of a connection as a pure function: buffered bytes in, each complete line framed and
//! parsed, malformed ones answered, well-formed ones handed to the caller to answer.
//!
//! This is the loop a connection runs over its read buffer, without the socket and without the pool, so
//! that it can be property-tested and fuzzed on plain bytes: whatever bytes arrive, in whatever pieces,
//! what comes out is a sequence of well-formed reply lines, the same for any split, or a clean
//! `CLIENT_ERROR line too long` after which the connection closes. The caller decides what a request's
//! reply is (the server applies it to the pool) and when a batch must pause (`ControlFlow::Break`).

use std::ops::ControlFlow;

use bytes::{Buf, BytesMut};

use super::framing::{self, Line, LineTooLong};
use super::{reply, Request, RequestError};

/// Why [`answer_lines`] or [`answer_lines_ahead`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped<B> {
    /// Every complete line was answered; what is left of the input is at most a partial line.
    NeedInput,
    /// A line passed the limit: `CLIENT_ERROR line too long` is in the output, and the connection must be
    /// closed without reading further.
    LineTooLong,
    /// The caller's `answer` broke off after the request it was given, which is consumed; calling again
    /// goes on with the next line.
    Break(B),
}

/// How many lines are framed and parsed before the first of them is answered: the most requests the
/// caller sees ahead (see [`answer_lines_ahead`]).
pub const LOOKAHEAD: usize = 32;

/// Answers the complete lines at the front of `input`, consuming each once it is answered.
///
/// A blank line gets no reply; a line that names no command gets `ERROR unknown command '<name>'` and one
/// with bad arguments `CLIENT_ERROR <why>`; every request, `QUIT` included, goes to `answer` with the
/// output to append its reply to. A line longer than `max_line` (line ending excluded), complete or not,
/// stops everything with [`Stopped::LineTooLong`]. Never panics, whatever the bytes.
pub fn answer_lines<B>(
    input: &mut BytesMut,
    max_line: usize,
    output: &mut BytesMut,
    answer: impl FnMut(Request<'_>, &mut BytesMut) -> ControlFlow<B>,
) -> Stopped<B> {
    answer_lines_ahead(input, max_line, output, &mut NoLookahead(answer))
}

/// What [`answer_lines_ahead`] hands the requests to.
pub trait Responder<B> {
    /// Sees the requests of the lines about to be answered, in order, before the first is answered.
    fn ahead(&mut self, requests: &mut dyn Iterator<Item = Request<'_>>);

    /// Answers one request, appending its reply to `output`; `Break` stops after it.
    fn answer(&mut self, request: Request<'_>, output: &mut BytesMut) -> ControlFlow<B>;
}

/// A plain answering function, as a responder that does not look ahead.
struct NoLookahead<F>(F);

impl<B, F: FnMut(Request<'_>, &mut BytesMut) -> ControlFlow<B>> Responder<B> for NoLookahead<F> {
    fn ahead(&mut self, _: &mut dyn Iterator<Item = Request<'_>>) {}

    fn answer(&mut self, request: Request<'_>, output: &mut BytesMut) -> ControlFlow<B> {
        (self.0)(request, output)
    }
}

/// [`answer_lines`], showing the responder the requests of up to [`LOOKAHEAD`] lines before answering
/// them.
///
/// Lines are framed and parsed once, a group at a time, and [`Responder::ahead`] sees each group's
/// well-formed requests before the first of them is answered (a line with no complete line after it is
/// answered alone, unseen); the server uses that to start loading what
/// they will touch. A request the responder breaks off after may leave some that it saw ahead unanswered:
/// the next call shows them again.
pub fn answer_lines_ahead<B>(
    input: &mut BytesMut,
    max_line: usize,
    output: &mut BytesMut,
    responder: &mut impl Responder<B>,
) -> Stopped<B> {
    loop {
        let first = match framing::next_line(input, max_line) {
            Ok(Some(line)) => line,
            Ok(None) => return Stopped::NeedInput,
            Err(LineTooLong) => {
                reply::client_error(output, &LineTooLong.to_string());
                return Stopped::LineTooLong;
            }
        };
        // A lone line, as at pipeline 1, has nothing to look ahead at: it is answered on its own, without
        // the cost of framing a group.
        if memchr::memchr(b'\n', &input[first.consumed..]).is_none() {
            let flow = answer_parsed(Parsed::from(Request::parse(&input[..first.len])), responder, output);
            input.advance(first.consumed);
            match flow {
                ControlFlow::Break(reason) => return Stopped::Break(reason),
                ControlFlow::Continue(()) => continue,
            }
        }
        let mut lines: [Option<(Parsed<'_>, usize)>; LOOKAHEAD] = [const { None }; LOOKAHEAD];
        lines[0] = Some((Parsed::from(Request::parse(&input[..first.len])), first.consumed));
        let mut framed = 1;
        let mut offset = first.consumed;
        let mut too_long = false;
        while framed < LOOKAHEAD {
            match framing::next_line(&input[offset..], max_line) {
                Ok(Some(Line { len, consumed })) => {
                    lines[framed] = Some((Parsed::from(Request::parse(&input[offset..offset + len])), consumed));
                    offset += consumed;
                    framed += 1;
                }
                Ok(None) => break,
                Err(LineTooLong) => {
                    too_long = true;
                    break;
                }
            }
        }
        responder.ahead(&mut lines.iter().flatten().filter_map(|(parsed, _)| parsed.request()));
        let mut answered = 0;
        let mut stopped = None;
        for (parsed, consumed) in lines.into_iter().flatten() {
            let flow = answer_parsed(parsed, responder, output);
            answered += consumed;
            if let ControlFlow::Break(reason) = flow {
                stopped = Some(reason);
                break;
            }
        }
        // Only now: a request borrows its line (ADD's secret is a slice of it) until it is answered.
        input.advance(answered);
        if let Some(reason) = stopped {
            return Stopped::Break(reason);
        }
        if too_long {
            reply::client_error(output, &LineTooLong.to_string());
            return Stopped::LineTooLong;
        }
        if framed < LOOKAHEAD {
            return Stopped::NeedInput;
        }
    }
}

/// Answers one parsed line: a request by the responder, a malformed line here, a blank line not at all.
fn answer_parsed<B>(parsed: Parsed<'_>, responder: &mut impl Responder<B>, output: &mut BytesMut) -> ControlFlow<B> {
    match parsed {
        Parsed::Request(request) => responder.answer(request, output),
        Parsed::Blank => ControlFlow::Continue(()),
        Parsed::Error(error @ RequestError::UnknownCommand(_)) => {
            reply::error(output, &error.to_string());
            ControlFlow::Continue(())
        }
        Parsed::Error(RequestError::BadArguments(message)) => {
            reply::client_error(output, &message);
            ControlFlow::Continue(())
        }
    }
}

/// One framed line, parsed.
enum Parsed<'a> {
    Request(Request<'a>),
    Blank,
    Error(RequestError),
}

impl<'a> From<Result<Option<Request<'a>>, RequestError>> for Parsed<'a> {
    fn from(parsed: Result<Option<Request<'a>>, RequestError>) -> Self {
        match parsed {
            Ok(Some(request)) => Parsed::Request(request),
            Ok(None) => Parsed::Blank,
            Err(error) => Parsed::Error(error),
        }
    }
}

impl<'a> Parsed<'a> {
    fn request(&self) -> Option<Request<'a>> {
        match self {
            Parsed::Request(request) => Some(*request),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::pool::KeyId;
    use crate::protocol::reply::words;

    const ID: &[u8] = b"abcdefghijklmnopqrstuvwx";

    /// Why the stand-in server broke off a batch.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Pause {
        /// The output passed [`HIGH_WATER`]: write it out and go on, as the server does past 64 KiB.
        OutputFull,
        Quit,
    }

    /// Small, so that the pause-and-resume path runs often.
    const HIGH_WATER: usize = 200;

    /// Replies as the server would, without a pool: every reply function a request can reach, with
    /// made-up ids. `ADD` is answered with the secret in a lease reply, as a later `GET` of that key would
    /// send it back: whatever the parser admits as a secret must not break a reply line.
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
            // REL, TOUCH, PING, AUTOREL, and whatever commands come later.
            _ => reply::word(out, words::OK),
        }
        if out.len() >= HIGH_WATER {
            ControlFlow::Break(Pause::OutputFull)
        } else {
            ControlFlow::Continue(())
        }
    }

    /// How a stand-in connection ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ending {
        /// The input ran out with the connection still open.
        Open,
        Quit,
        LineTooLong,
    }

    /// Feeds `chunks` to a stand-in connection as its reads, and returns everything it wrote and how it
    /// ended. Mirrors the server's loop: answer what is buffered, write, resume after a pause, read more.
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
        }
        (written, Ending::Open)
    }

    /// The first word of every reply line the protocol has.
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

    /// Panics unless `written` is whole reply lines: each printable ASCII ended by CRLF, with no other CR
    /// or LF, starting with a reply word; and, if the connection closed for a long line, ending with it.
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

    /// Pieces that spell requests, almost-requests and noise when strung together.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let words = prop::sample::select(vec![
            &b"GET"[..],
            b"get",
            b"LEASE",
            b"REL",
            b"TOUCH",
            b"DEL",
            b"PING",
            b"INFO",
            b"STATS",
            b"VERSION",
            b"AUTOREL",
            b"ADD",
            b"GEN",
            b"QUIT",
            ID,
            b"abcdefghijklmnopqrstuvw",
            b"0",
            b"42",
            b"10000",
            b"18446744073709551616",
            b"5s",
            b"0ms",
            b"250ms",
            b"1h",
            b"99999999999999999999h",
            b"s3cr3t",
            b" ",
            b"\t",
            b"\r",
            b"\n",
            b"\r\n",
            b"\x00",
            b"\xff",
            b"\\",
        ]);
        prop_oneof![
            4 => words.prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ]
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(piece(), 0..60).prop_map(|pieces| pieces.concat())
    }

    /// `bytes` cut at the given sizes (cycled), the last piece holding whatever is left.
    fn split<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = bytes;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk);
            rest = after;
        }
        chunks
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_in_any_split_give_the_same_well_formed_replies_or_a_clean_close(
            bytes in stream(),
            sizes in prop::collection::vec(1usize..40, 1..20),
            max_line in prop::sample::select(vec![0usize, 8, 30, 64, 4096]),
        ) {
            let (whole, ending) = serve([bytes.as_slice()], max_line);
            assert_well_formed(&whole, ending);
            let (pieces, pieces_ending) = serve(split(&bytes, &sizes), max_line);
            prop_assert_eq!((&pieces, pieces_ending), (&whole, ending), "split at {:?}", sizes);
            let (bytewise, bytewise_ending) = serve(bytes.chunks(1), max_line);
            prop_assert_eq!((&bytewise, bytewise_ending), (&whole, ending), "one byte at a time");
        }

        #[test]
        fn arbitrary_bytes_never_make_a_malformed_reply(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            sizes in prop::collection::vec(1usize..64, 1..8),
        ) {
            let (whole, ending) = serve([bytes.as_slice()], 100);
            assert_well_formed(&whole, ending);
            prop_assert_eq!(serve(split(&bytes, &sizes), 100), (whole, ending));
        }
    }

    #[test]
    fn requests_go_to_the_caller_and_bad_lines_are_answered_here() {
        let mut input = BytesMut::from(&b"PING\r\n\r\nFLY\nGEN 0\nVERSION\nPI"[..]);
        let mut output = BytesMut::new();
        let mut seen = Vec::new();
        let stopped = answer_lines::<()>(&mut input, 64, &mut output, |request, out| {
            seen.push(request.command());
            reply::word(out, words::OK);
            ControlFlow::Continue(())
        });
        assert_eq!(stopped, Stopped::NeedInput);
        assert_eq!(seen, [crate::protocol::Command::Ping, crate::protocol::Command::Version]);
        assert_eq!(
            &output[..],
            b"OK\r\nERROR unknown command 'FLY'\r\nCLIENT_ERROR GEN count must be a whole number from 1 to 10000\r\nOK\r\n"
        );
        assert_eq!(&input[..], b"PI", "the partial line stays buffered");
    }

    #[test]
    fn a_break_consumes_its_request_and_the_next_call_goes_on() {
        let mut input = BytesMut::from(&b"QUIT\nPING\n"[..]);
        let mut output = BytesMut::new();
        let quit = |request: Request<'_>, out: &mut BytesMut| match request {
            Request::Quit => ControlFlow::Break("quit"),
            _ => {
                reply::word(out, words::PONG);
                ControlFlow::Continue(())
            }
        };
        assert_eq!(answer_lines(&mut input, 64, &mut output, quit), Stopped::Break("quit"));
        assert_eq!(&input[..], b"PING\n");
        assert_eq!(answer_lines(&mut input, 64, &mut output, quit), Stopped::NeedInput);
        assert_eq!(&output[..], b"PONG\r\n");
    }

    /// Records what a [`Responder`] is shown and asked, in order.
    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
        /// Break after answering this many requests.
        break_after: Option<usize>,
        answered: usize,
    }

    impl Responder<()> for Recorder {
        fn ahead(&mut self, requests: &mut dyn Iterator<Item = Request<'_>>) {
            let names: Vec<String> = requests.map(|request| format!(" {:?}", request.command())).collect();
            self.events.push(format!("ahead{}", names.concat()));
        }

        fn answer(&mut self, request: Request<'_>, out: &mut BytesMut) -> ControlFlow<()> {
            self.events.push(format!("answer {:?}", request.command()));
            reply::word(out, words::OK);
            self.answered += 1;
            if self.break_after == Some(self.answered) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }

    #[test]
    fn the_responder_sees_each_group_of_lines_before_answering_it() {
        // 40 lines: a group of LOOKAHEAD, then the rest; blank and malformed lines are answered here and
        // shown to no one.
        let mut text = String::from("GET\n\nBOGUS\nREL short\n");
        for _ in 4..40 {
            text.push_str("PING\n");
        }
        text.push_str("GE");
        let mut input = BytesMut::from(text.as_bytes());
        let mut output = BytesMut::new();
        let mut recorder = Recorder::default();
        assert_eq!(answer_lines_ahead(&mut input, 64, &mut output, &mut recorder), Stopped::NeedInput);
        assert_eq!(&input[..], b"GE", "only the partial line is left");
        let first_group = format!("ahead Get{}", " Ping".repeat(LOOKAHEAD - 4));
        let second_group = format!("ahead{}", " Ping".repeat(40 - LOOKAHEAD));
        let mut expected = vec![first_group, "answer Get".to_string()];
        expected.extend((4..LOOKAHEAD).map(|_| "answer Ping".to_string()));
        expected.push(second_group);
        expected.extend((LOOKAHEAD..40).map(|_| "answer Ping".to_string()));
        assert_eq!(recorder.events, expected);
        let replies = std::str::from_utf8(&output).expect("ASCII");
        assert!(replies.starts_with("OK\r\nERROR unknown command 'BOGUS'\r\nCLIENT_ERROR "), "{replies}");
    }

    #[test]
    fn requests_seen_ahead_but_not_answered_are_shown_again() {
        let mut input = BytesMut::from(&b"GET\nQUIT\nPING\nINFO x\n"[..]);
        let mut output = BytesMut::new();
        let mut recorder = Recorder { break_after: Some(2), ..Recorder::default() };
        assert_eq!(answer_lines_ahead(&mut input, 64, &mut output, &mut recorder), Stopped::Break(()));
        assert_eq!(&input[..], b"PING\nINFO x\n", "what follows the break stays buffered");
        assert_eq!(answer_lines_ahead(&mut input, 64, &mut output, &mut recorder), Stopped::NeedInput);
        assert_eq!(recorder.events, ["ahead Get Quit Ping", "answer Get", "answer Quit", "ahead Ping", "answer Ping"],);
        let replies = std::str::from_utf8(&output).expect("ASCII");
        assert_eq!(replies, "OK\r\nOK\r\nOK\r\nCLIENT_ERROR malformed key id: ids are 24 letters and digits\r\n");
    }

    #[test]
    fn a_long_line_is_answered_after_the_lines_before_it_and_stops_everything() {
        let (written, ending) = serve([&b"PING\nGEN 2\n"[..], b"AAAAAAAAAAAAAAAAAAAA", b"\nPING\n"], 10);
        assert_eq!(ending, Ending::LineTooLong);
        assert_eq!(
            written,
            b"OK\r\nKEY abcdefghijklmnopqrstuvwx\r\nKEY abcdefghijklmnopqrstuvwx\r\nEND\r\nCLIENT_ERROR line too long\r\n"
        );
    }

    #[test]
    fn a_lone_line_before_a_long_partial_line_is_answered_and_then_everything_stops() {
        let (written, ending) = serve([&b"PING\nAAAAAAAAAAAAAAAAAAAA"[..], b"\nPING\n"], 10);
        assert_eq!(ending, Ending::LineTooLong);
        assert_eq!(written, b"OK\r\nCLIENT_ERROR line too long\r\n");
    }

    #[test]
    fn the_stand_in_pauses_and_resumes_without_losing_a_reply() {
        let requests = "GEN 20\n".repeat(5) + "QUIT\nPING\n";
        let (written, ending) = serve([requests.as_bytes()], 64);
        assert_eq!(ending, Ending::Quit);
        assert_eq!(written.split(|&b| b == b'\n').filter(|line| line.starts_with(b"KEY ")).count(), 100);
        assert!(written.ends_with(b"END\r\n"), "nothing after QUIT");
    }
}
