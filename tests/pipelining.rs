//! Pipelining: many requests in one write are all answered, in request order, including requests whose
//! effects depend on earlier ones in the same write; pipelines whose replies run far past 64 KiB (where
//! the server pauses a batch to write it out and resumes from buffered input); pipelines cut into tiny
//! writes at arbitrary byte boundaries; and a client that stops reading its replies for a while, which
//! must lose nothing and must not stall other clients.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{config, key_of, num, start, stop, within, Client};
use tokio::io::AsyncWriteExt;

/// Sends `requests` in a single write while reading `expected` replies, and checks them line by line.
async fn pipeline_expecting(c: &mut Client, requests: &[u8], expected: &[String]) {
    let (writer, lines) = (&mut c.writer, &mut c.lines);
    let write = async {
        within("the pipeline to be written", writer.write_all(requests)).await.expect("write the pipeline");
    };
    let read = async {
        for (n, want) in expected.iter().enumerate() {
            let got = lines.line().await;
            assert_eq!(&got, want, "reply line {n} out of order or wrong");
        }
    };
    tokio::join!(write, read);
}

#[tokio::test]
async fn a_thousand_requests_in_one_write_are_answered_in_order() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(250).await;

    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let id = &ids[i / 4];
        let request = match i % 4 {
            0 => {
                expected.push(format!("ERROR unknown command 'C{i}'"));
                format!("C{i}")
            }
            1 => {
                expected.push("ALIVE".to_string());
                format!("PING {id}")
            }
            2 => {
                expected.push(format!("STAT id {id}"));
                expected.push("STAT state free".to_string());
                // created_ms, alive_until_ms and leases vary; they are checked below by prefix.
                expected.push("STAT created_ms *".to_string());
                expected.push("STAT alive_until_ms *".to_string());
                expected.push("STAT leases 0".to_string());
                expected.push("END".to_string());
                format!("INFO {id}")
            }
            _ => {
                expected.push("DELETED".to_string());
                format!("DEL {id}")
            }
        };
        requests.extend_from_slice(request.as_bytes());
        // Alternate the line endings the protocol accepts.
        requests.extend_from_slice(if i % 3 == 0 { b"\n" } else { b"\r\n" });
    }

    let (writer, lines) = (&mut c.writer, &mut c.lines);
    let write = async {
        within("the pipeline to be written", writer.write_all(&requests)).await.expect("write the pipeline");
    };
    let read = async {
        for (n, want) in expected.iter().enumerate() {
            let got = lines.line().await;
            match want.strip_suffix('*') {
                Some(prefix) => {
                    let value = got.strip_prefix(prefix).unwrap_or_else(|| panic!("line {n}: {got:?}, want {want}"));
                    assert!(value.parse::<u64>().is_ok(), "line {n}: {got:?}");
                }
                None => assert_eq!(&got, want, "reply line {n} out of order or wrong"),
            }
        }
    };
    tokio::join!(write, read);

    let stats = c.stats().await;
    assert_eq!(num(&stats, "keys"), 0, "every DEL in the pipeline was applied");
    assert_eq!(num(&stats, "cmd_ping"), 250);
    assert_eq!(num(&stats, "cmd_info"), 250);
    assert_eq!(num(&stats, "cmd_del"), 250);
    stop(server).await;
}

#[tokio::test]
async fn requests_in_one_write_see_the_effects_of_earlier_ones() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.send("GEN 2\nGET\nGET\nGET\nSTATS\nPING\n").await;
    let made: HashSet<String> = c.lines.key_block().await.into_iter().collect();
    assert_eq!(made.len(), 2);
    let leased: HashSet<String> = [key_of(&c.line().await), key_of(&c.line().await)].into();
    assert_eq!(leased, made, "the two GETs lease the two keys the GEN before them made");
    assert_eq!(c.line().await, "NOT_FOUND", "the third GET finds both keys blocked");
    let stats: std::collections::HashMap<_, _> = common::stat_pairs(&c.block().await).into_iter().collect();
    assert_eq!(num(&stats, "keys_blocked"), 2);
    assert_eq!(c.line().await, "PONG");

    let [a, b]: [String; 2] = leased.into_iter().collect::<Vec<_>>().try_into().expect("two ids");
    c.send(format!("REL {a}\nREL {a}\nDEL {b}\nREL {b}\nGET\nGET\n")).await;
    for want in ["RELEASED", "NOT_BLOCKED", "DELETED", "NOT_FOUND"] {
        assert_eq!(c.line().await, want);
    }
    assert_eq!(c.line().await, format!("KEY {a}"), "only the released key is left to lease");
    assert_eq!(c.line().await, "NOT_FOUND");
    stop(server).await;
}

#[tokio::test]
async fn replies_far_past_64_kib_arrive_whole_and_in_order() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;

    // Twelve GEN 10000 replies are about 3.6 MB; a PONG between them marks each block's end.
    const BLOCKS: usize = 12;
    let requests = "GEN 10000\r\nPING\r\n".repeat(BLOCKS) + "STATS\r\n";
    let (writer, lines) = (&mut c.writer, &mut c.lines);
    let write = async {
        within("the pipeline to be written", writer.write_all(requests.as_bytes())).await.expect("write");
    };
    let read = async {
        let mut all = HashSet::new();
        for n in 0..BLOCKS {
            let ids = lines.key_block().await;
            assert_eq!(ids.len(), 10_000, "block {n}");
            all.extend(ids);
            assert_eq!(lines.line().await, "PONG", "the PING after block {n}");
        }
        assert_eq!(all.len(), BLOCKS * 10_000, "every id is distinct");
        common::stat_pairs(&lines.block().await).into_iter().collect::<std::collections::HashMap<_, _>>()
    };
    let ((), stats) = tokio::join!(write, read);
    assert_eq!(num(&stats, "keys"), (BLOCKS * 10_000) as u64);
    assert_eq!(num(&stats, "cmd_gen"), BLOCKS as u64);
    stop(server).await;
}

#[tokio::test]
async fn a_long_run_of_small_requests_resumes_in_order_after_each_pause() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;

    // 40,000 small requests: about 600 KiB of replies, so the server pauses to write many times, and
    // each unknown command's reply names its position.
    let mut requests = String::new();
    let mut expected = Vec::new();
    for i in 0..40_000 {
        if i % 2 == 0 {
            requests.push_str("PING\n");
            expected.push("PONG".to_string());
        } else {
            requests.push_str(&format!("X{i}\n"));
            expected.push(format!("ERROR unknown command 'X{i}'"));
        }
    }
    pipeline_expecting(&mut c, requests.as_bytes(), &expected).await;
    assert_eq!(c.stat("cmd_ping").await, 20_000);
    stop(server).await;
}

#[tokio::test]
async fn a_pipeline_cut_into_tiny_writes_is_framed_the_same() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);

    let mut requests = String::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        match i % 3 {
            0 => {
                requests.push_str("PING\r\n");
                expected.push("PONG".to_string());
            }
            1 => {
                requests.push_str(&format!("  ping\t{id} \n"));
                expected.push("ALIVE".to_string());
            }
            _ => {
                requests.push_str(&format!("Z{i}\r\n\r\n"));
                expected.push(format!("ERROR unknown command 'Z{i}'"));
            }
        }
    }
    // Chunks of 1 to 7 bytes, from a fixed xorshift sequence: CR and LF often land in different writes.
    let bytes = requests.as_bytes();
    let (writer, lines) = (&mut c.writer, &mut c.lines);
    let write = async {
        let mut state: u32 = 0x9e37_79b9;
        let mut at = 0;
        while at < bytes.len() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let len = (1 + state as usize % 7).min(bytes.len() - at);
            within("a write", writer.write_all(&bytes[at..at + len])).await.expect("write a chunk");
            writer.flush().await.expect("flush");
            at += len;
            if at % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let read = async {
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(&lines.line().await, want, "reply {n}");
        }
    };
    tokio::join!(write, read);
    c.expect_silence(Duration::from_millis(50)).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_nothing_and_stalls_no_one() {
    let server = start(config()).await;
    let mut slow = Client::connect(server.addr()).await;

    // About 3 MB of replies that the slow client leaves unread for a while: more than the socket
    // buffers hold, so the server's write to it has to wait.
    const BLOCKS: usize = 10;
    slow.send("GEN 10000\n".repeat(BLOCKS) + "PING\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Meanwhile another client is served at once.
    let mut other = Client::connect(server.addr()).await;
    assert_eq!(other.cmd("PING").await, "PONG");
    let id = other.gen(1).await.remove(0);
    assert_eq!(other.cmd(&format!("PING {id}")).await, "ALIVE");

    let mut all = HashSet::new();
    for n in 0..BLOCKS {
        let ids = slow.lines.key_block().await;
        assert_eq!(ids.len(), 10_000, "block {n}");
        all.extend(ids);
    }
    assert_eq!(slow.line().await, "PONG");
    assert_eq!(all.len(), BLOCKS * 10_000);
    assert_eq!(other.stat("keys").await, (BLOCKS * 10_000 + 1) as u64);
    stop(server).await;
}

#[tokio::test]
async fn replies_before_quit_arrive_in_full() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.send("GEN 10000\r\nPING\r\nQUIT\r\n").await;
    assert_eq!(c.lines.key_block().await.len(), 10_000);
    assert_eq!(c.line().await, "PONG");
    c.expect_closed().await;
    stop(server).await;
}

#[tokio::test]
async fn replies_before_quit_arrive_in_full_even_if_the_client_sends_more_after_it() {
    let server = start(config()).await;
    let mut c = Client::connect_with_small_receive_buffer(server.addr()).await;
    // The GEN's reply (300 kB) is more than the client's receive buffer takes, so most of it is still in
    // the server's send buffer when the server closes the connection after QUIT. A request sent after
    // QUIT (pipelining clients may send one) is then in the server's receive buffer, unread.
    c.send("GEN 10000\r\nQUIT\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = c.writer.write_all(b"PING\r\n").await; // the server may already have closed
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Everything answered before QUIT must still arrive, whole, before the connection ends.
    let mut keys = 0;
    loop {
        match c.lines.try_line().await {
            Ok(Some(line)) if line == "END" => break,
            Ok(Some(line)) => {
                key_of(&line);
                keys += 1;
            }
            Ok(None) => panic!("the connection closed after {keys} of the GEN's 10000 KEY lines"),
            Err(error) => panic!("the connection was reset ({error}) after {keys} of the GEN's 10000 KEY lines"),
        }
    }
    assert_eq!(keys, 10_000);
    c.expect_closed().await;
    stop(server).await;
}

/// A pool of 40,000 keys is past the size from which the server looks ahead at a pipelined batch before
/// answering it (32,768 keys; see `pool/lookahead.rs`). Rounds of one write each (releases of the keys the
/// last round leased, 16 GETs, a PING, a DEL, a TOUCH, a delayed REL and requests for an unknown key) must
/// be answered exactly as without it: in order, every GET a free key (never one leased in the same write,
/// delayed or deleted), every held key released.
#[tokio::test]
async fn pipelines_into_a_pool_large_enough_to_be_looked_ahead_for_are_answered_exactly() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.extend(c.gen(10_000).await);
    }
    let unknown = "unknownunknownunknown000";
    let mut held: Vec<String> = Vec::new();
    let mut unavailable: HashSet<String> = HashSet::new();
    for round in 0..40 {
        let mut requests = String::new();
        for id in &held {
            requests.push_str(&format!("REL {id}\n"));
        }
        requests.push_str(&"GET\n".repeat(16));
        // Keys 0..40 are deleted, one a round; pinged keys come from further on.
        let deleted = &ids[round];
        let pinged = &ids[1000 + round * 37];
        requests.push_str(&format!("PING {pinged}\nDEL {deleted}\nTOUCH {unknown}\nREL {unknown}\nINFO {unknown}\n"));
        c.send(requests).await;
        for id in &held {
            assert_eq!(c.line().await, "RELEASED", "round {round}: REL {id}");
        }
        let mut leased: Vec<String> = Vec::new();
        for _ in 0..16 {
            let id = key_of(&c.line().await);
            assert!(!unavailable.contains(&id), "round {round}: {id} was leased while delayed or deleted");
            assert!(!leased.contains(&id), "round {round}: {id} leased twice in one write");
            leased.push(id);
        }
        assert_eq!(c.line().await, "ALIVE", "round {round}: PING");
        assert_eq!(c.line().await, "DELETED", "round {round}: DEL");
        for request in ["TOUCH", "REL", "INFO"] {
            assert_eq!(c.line().await, "NOT_FOUND", "round {round}: {request} of an unknown id");
        }
        // A key leased now and deleted just above is gone: it is not held any more.
        leased.retain(|id| id != deleted);
        unavailable.insert(deleted.clone());
        // One key a round is given back with a delay instead, in a write of its own.
        if let Some(id) = leased.pop() {
            assert_eq!(c.cmd(&format!("REL {id} 1h")).await, "RELEASED");
            unavailable.insert(id);
        }
        held = leased;
    }
    let stats = c.stats().await;
    let delayed = unavailable.len() as u64 - 40;
    assert_eq!(num(&stats, "keys"), 40_000 - 40);
    assert_eq!(num(&stats, "keys_blocked"), held.len() as u64);
    assert_eq!(num(&stats, "keys_delayed"), delayed);
    assert_eq!(num(&stats, "keys_free"), 40_000 - 40 - held.len() as u64 - delayed);
    for id in &held {
        assert_eq!(c.state(id).await.as_deref(), Some("blocked"));
    }
    stop(server).await;
}
