//! `--http`: one connection to keypool's HTTP gateway, leasing as the `lease` workload does over the line
//! protocol: `GET /keys`, then `PUT /keys/{id}?token=<token>` for the key it got, over one HTTP/1.1
//! keep-alive connection, one request in flight.
//!
//! The client is a few lines of HTTP/1.1 over a `TcpStream` rather than a client crate: the bench must
//! measure the gateway, not a client's pooling and allocation, and this is the same loop a tuned client
//! would run. Each request counts as one operation and is timed from its write to its full reply, as the
//! line driver times a GET or a REL; only those sent after the warm-up and answered before the end count.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::driver::{new_histogram, Live, Schedule, Tally};

/// Runs one HTTP connection to `addr` through `schedule`. Never fails: a broken connection ends early and
/// says why in `Tally::failure`.
pub async fn run(addr: String, schedule: Schedule, live: Arc<Live>) -> Tally {
    let mut tally =
        Tally { latency: new_histogram(), ops: 0, not_found: 0, errors: 0, unexpected: 0, stale: 0, failure: None };
    if let Err(error) = drive(&addr, schedule, &live, &mut tally).await {
        tally.failure = Some(format!("{error:#}"));
    }
    tally
}

/// One answer: its status and body.
struct Answer {
    status: u16,
    body: BytesMut,
}

async fn drive(addr: &str, schedule: Schedule, live: &Live, tally: &mut Tally) -> Result<()> {
    let mut socket = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    socket.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(4096);
    let mut request = Vec::with_capacity(128);
    while Instant::now() < schedule.end {
        request.clear();
        request.extend_from_slice(b"GET /keys HTTP/1.1\r\nhost: keypool\r\n\r\n");
        let leased = exchange(&mut socket, &mut input, &request, schedule, live, tally).await?;
        match leased.status {
            200 => {}
            404 => {
                tally.not_found += 1;
                continue;
            }
            _ => {
                note_unexpected(live, tally, &leased);
                continue;
            }
        }
        let (Some(id), Some(token)) = (field(&leased.body, "key_id"), field(&leased.body, "token")) else {
            note_unexpected(live, tally, &leased);
            continue;
        };
        request.clear();
        request.extend_from_slice(b"PUT /keys/");
        request.extend_from_slice(id);
        request.extend_from_slice(b"?token=");
        request.extend_from_slice(token);
        request.extend_from_slice(b" HTTP/1.1\r\nhost: keypool\r\ncontent-length: 0\r\n\r\n");
        let released = exchange(&mut socket, &mut input, &request, schedule, live, tally).await?;
        match released.status {
            200 => {}
            409 => tally.stale += 1,
            404 => tally.not_found += 1,
            _ => note_unexpected(live, tally, &released),
        }
    }
    Ok(())
}

/// Sends `request`, reads its answer, and counts it if it falls inside the measured window.
async fn exchange(
    socket: &mut TcpStream,
    input: &mut BytesMut,
    request: &[u8],
    schedule: Schedule,
    live: &Live,
    tally: &mut Tally,
) -> Result<Answer> {
    let sent = Instant::now();
    socket.write_all(request).await.context("cannot send")?;
    let answer = read_answer(socket, input).await?;
    let answered = Instant::now();
    if sent >= schedule.measure_from && answered <= schedule.end {
        let micros = u64::try_from(answered.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
        let _ = tally.latency.record(micros.max(1));
        tally.ops += 1;
        live.ops.fetch_add(1, Ordering::Relaxed);
    }
    Ok(answer)
}

/// Reads one HTTP/1.1 answer with a `content-length` body (the gateway always sends one).
async fn read_answer(socket: &mut TcpStream, input: &mut BytesMut) -> Result<Answer> {
    loop {
        if let Some(head_end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&input[..head_end]).context("a reply head that is not UTF-8")?;
            let status = head.get(9..12).and_then(|code| code.parse::<u16>().ok()).context("no status code")?;
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = head_end + 4 + length;
            while input.len() < total {
                read_more(socket, input).await?;
            }
            input.advance(head_end + 4);
            let body = input.split_to(length);
            return Ok(Answer { status, body });
        }
        read_more(socket, input).await?;
    }
}

async fn read_more(socket: &mut TcpStream, input: &mut BytesMut) -> Result<()> {
    input.reserve(4096);
    if socket.read_buf(input).await.context("cannot read")? == 0 {
        bail!("the gateway closed the connection");
    }
    Ok(())
}

/// The value of a string or number field of a flat JSON object, as bytes, without parsing the rest.
fn field<'a>(body: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let key = format!("\"{name}\":");
    let at = body.windows(key.len()).position(|w| w == key.as_bytes())? + key.len();
    let rest = &body[at..];
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    let end = rest.iter().position(|&b| b == b'"' || b == b',' || b == b'}')?;
    Some(&rest[..end])
}

fn note_unexpected(live: &Live, tally: &mut Tally, answer: &Answer) {
    tally.unexpected += 1;
    let example = format!("HTTP {} {}", answer.status, String::from_utf8_lossy(&answer.body).trim());
    let mut first = live.first_unexpected.lock().unwrap_or_else(|e| e.into_inner());
    first.get_or_insert(example);
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_are_read_from_the_gateways_lease_answer() {
        let body = br#"{"key_id":"abcdefghijklmnopqrstuvwx","token":42}"#;
        assert_eq!(field(body, "key_id"), Some(&b"abcdefghijklmnopqrstuvwx"[..]));
        assert_eq!(field(body, "token"), Some(&b"42"[..]));
        assert_eq!(field(body, "secret"), None);
    }
}
