//! Every command and every reply over the wire: GEN, GET, REL, DEL, PING (with and without an id),
//! INFO, STATS, VERSION and QUIT; unknown commands and malformed arguments; case-insensitive command
//! names and case-sensitive ids; LF and CRLF line endings, runs of blanks, blank lines; INFO's fields and
//! their times as sane Unix milliseconds; STATS' fields and its counters moving as commands are served.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{assert_id, config, key_of, num, start, stop, swap_case, unix_ms, Client, UNKNOWN_ID, VERSION};

#[tokio::test]
async fn gen_returns_new_distinct_keys_then_end() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;

    // Without a count GEN makes one key.
    c.send_line("GEN").await;
    let one = c.lines.key_block().await;
    assert_eq!(one.len(), 1);

    let three = c.gen(3).await;
    let many = c.gen(10_000).await;
    let all: HashSet<&String> = one.iter().chain(&three).chain(&many).collect();
    assert_eq!(all.len(), 1 + 3 + 10_000, "every generated id is new");

    let stats = c.stats().await;
    assert_eq!(num(&stats, "keys"), 10_004);
    assert_eq!(num(&stats, "keys_free"), 10_004);
    assert_eq!(num(&stats, "keys_generated"), 10_004);
    stop(server).await;
}

#[tokio::test]
async fn gen_rejects_counts_outside_1_to_10000_and_creates_nothing() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let bad_counts = ["GEN 0", "GEN 10001", "GEN -1", "GEN +5", "GEN 1.5", "GEN x", "GEN 99999999999999999999999"];
    for request in bad_counts {
        let reply = c.cmd(request).await;
        assert_eq!(reply, "CLIENT_ERROR GEN count must be a whole number from 1 to 10000", "{request}");
    }
    let reply = c.cmd("GEN 1 2").await;
    assert!(reply.starts_with("CLIENT_ERROR ") && reply.len() > "CLIENT_ERROR ".len(), "GEN 1 2: {reply:?}");
    assert_eq!(c.stat("keys").await, 0, "a rejected GEN creates nothing");
    assert_eq!(c.gen(1).await.len(), 1, "the connection still works");
    stop(server).await;
}

#[tokio::test]
async fn get_leases_each_free_key_once_then_not_found() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("GET").await, "NOT_FOUND", "an empty pool has nothing to lease");

    let ids: HashSet<String> = c.gen(3).await.into_iter().collect();
    let mut leased = HashSet::new();
    for _ in 0..3 {
        let id = c.get().await.expect("a free key");
        assert!(ids.contains(&id), "GET returned {id}, which GEN never made");
        assert!(leased.insert(id.clone()), "GET returned {id} twice while it was blocked");
        assert_eq!(c.state(&id).await.as_deref(), Some("blocked"));
    }
    assert_eq!(c.cmd("GET").await, "NOT_FOUND", "every key is blocked");

    let stats = c.stats().await;
    assert_eq!((num(&stats, "keys_free"), num(&stats, "keys_blocked")), (0, 3));
    stop(server).await;
}

#[tokio::test]
async fn rel_frees_a_blocked_key_and_says_why_it_cannot() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);

    assert_eq!(c.cmd(&format!("REL {id}")).await, "NOT_BLOCKED", "a free key is not blocked");
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    assert_eq!(c.cmd(&format!("REL {id}")).await, "RELEASED");
    assert_eq!(c.state(&id).await.as_deref(), Some("free"));
    assert_eq!(c.cmd(&format!("REL {id}")).await, "NOT_BLOCKED", "releasing twice");
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()), "a released key can be leased again");
    assert_eq!(c.cmd(&format!("REL {UNKNOWN_ID}")).await, "NOT_FOUND");
    stop(server).await;
}

#[tokio::test]
async fn del_removes_free_and_blocked_keys_for_good() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let ids = c.gen(2).await;
    let blocked = &c.get().await.expect("a free key");
    let free = ids.iter().find(|id| *id != blocked).expect("two keys");
    assert_eq!(c.state(free).await.as_deref(), Some("free"));

    assert_eq!(c.cmd(&format!("DEL {free}")).await, "DELETED");
    assert_eq!(c.cmd(&format!("DEL {blocked}")).await, "DELETED", "a blocked key can be deleted");
    for id in [free, blocked] {
        assert_eq!(c.cmd(&format!("DEL {id}")).await, "NOT_FOUND", "deleting twice");
        assert_eq!(c.cmd(&format!("INFO {id}")).await, "NOT_FOUND");
        assert_eq!(c.cmd(&format!("PING {id}")).await, "NOT_FOUND");
        assert_eq!(c.cmd(&format!("REL {id}")).await, "NOT_FOUND");
    }
    assert_eq!(c.cmd("GET").await, "NOT_FOUND", "a deleted key never comes back");
    assert_eq!(c.cmd(&format!("DEL {UNKNOWN_ID}")).await, "NOT_FOUND");
    let stats = c.stats().await;
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_free"), num(&stats, "keys_blocked")), (0, 0, 0));
    stop(server).await;
}

#[tokio::test]
async fn ping_answers_pong_alone_and_alive_for_a_key() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("PING").await, "PONG");
    let id = c.gen(1).await.remove(0);
    assert_eq!(c.cmd(&format!("PING {id}")).await, "ALIVE");
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    assert_eq!(c.cmd(&format!("PING {id}")).await, "ALIVE", "a blocked key can be kept alive");
    assert_eq!(c.state(&id).await.as_deref(), Some("blocked"), "PING does not release");
    assert_eq!(c.cmd(&format!("PING {UNKNOWN_ID}")).await, "NOT_FOUND");
    stop(server).await;
}

#[tokio::test]
async fn info_reports_fields_and_sane_unix_millisecond_times() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd(&format!("INFO {UNKNOWN_ID}")).await, "NOT_FOUND");

    // The server reads the wall clock once and adds its monotonic time to it: allow a little skew.
    const SKEW_MS: u64 = 50;
    let before = unix_ms();
    let id = c.gen(1).await.remove(0);
    let after = unix_ms();

    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["id"], id);
    assert_eq!(info["state"], "free");
    assert_eq!(num(&info, "leases"), 0);
    let created = num(&info, "created_ms");
    assert!(
        before - SKEW_MS <= created && created <= after + SKEW_MS,
        "created_ms {created} not in [{before}, {after}]"
    );
    assert_eq!(num(&info, "alive_until_ms"), created + 300_000, "keep-alive window starts at GEN");

    let before_get = unix_ms();
    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    let after_get = unix_ms();
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "blocked");
    assert_eq!(num(&info, "leases"), 1);
    assert_eq!(num(&info, "created_ms"), created, "created_ms never changes");
    assert_eq!(num(&info, "alive_until_ms"), created + 300_000, "GET does not restart the keep-alive");
    let blocked_until = num(&info, "blocked_until_ms");
    assert!(
        before_get + 60_000 - SKEW_MS <= blocked_until && blocked_until <= after_get + 60_000 + SKEW_MS,
        "blocked_until_ms {blocked_until} is not GET time + 60s ([{before_get}, {after_get}] + 60000)"
    );

    assert_eq!(c.cmd(&format!("REL {id}")).await, "RELEASED");
    let info = c.info(&id).await.expect("the key exists");
    assert_eq!(info["state"], "free");
    assert!(!info.contains_key("blocked_until_ms"), "blocked_until_ms only while blocked");
    assert_eq!(num(&info, "leases"), 1, "REL does not count as a lease");

    assert_eq!(c.get().await.as_deref(), Some(id.as_str()));
    assert_eq!(num(&c.info(&id).await.expect("the key exists"), "leases"), 2, "every GET counts");

    let before_ping = unix_ms();
    assert_eq!(c.cmd(&format!("PING {id}")).await, "ALIVE");
    let after_ping = unix_ms();
    let alive_until = num(&c.info(&id).await.expect("the key exists"), "alive_until_ms");
    assert!(
        before_ping + 300_000 - SKEW_MS <= alive_until && alive_until <= after_ping + 300_000 + SKEW_MS,
        "PING restarts the keep-alive: alive_until_ms {alive_until}, pinged in [{before_ping}, {after_ping}]"
    );
    stop(server).await;
}

#[tokio::test]
async fn version_reports_the_crate_semver() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let reply = c.cmd("VERSION").await;
    assert_eq!(reply, format!("VERSION {VERSION}"));
    let parts: Vec<&str> = VERSION.split(['.', '-', '+']).collect();
    assert!(parts.len() >= 3 && parts[..3].iter().all(|p| p.parse::<u64>().is_ok()), "{VERSION} is not semver");
    stop(server).await;
}

#[tokio::test]
async fn quit_closes_the_connection_without_a_reply_and_ignores_what_follows() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.send_line("QUIT").await;
    c.expect_closed().await;

    // Replies before QUIT in the same write still arrive; requests after it are not served.
    let mut c = Client::connect(server.addr()).await;
    c.send("PING\r\nquit\r\nGEN 5\r\n").await;
    assert_eq!(c.line().await, "PONG");
    c.expect_closed().await;

    let mut observer = Client::connect(server.addr()).await;
    let stats = observer.stats().await;
    assert_eq!(num(&stats, "keys"), 0, "the GEN after QUIT was not served");
    assert_eq!(num(&stats, "cmd_quit"), 2);
    stop(server).await;
}

#[tokio::test]
async fn unknown_commands_get_error_and_the_connection_goes_on() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("FOO").await, "ERROR unknown command 'FOO'");
    assert_eq!(c.cmd("fly me to the moon").await, "ERROR unknown command 'fly'");
    assert_eq!(c.cmd("GETS").await, "ERROR unknown command 'GETS'", "no prefix matching");
    assert_eq!(c.cmd("SET k 0 0 1").await, "ERROR unknown command 'SET'");
    assert_eq!(c.cmd("PING").await, "PONG");
    stop(server).await;
}

#[tokio::test]
async fn missing_extra_and_malformed_arguments_get_client_error() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let id = c.gen(1).await.remove(0);
    let bad_ids = [
        "short".to_string(),
        id[..23].to_string(),
        format!("{id}a"),
        format!("{}-", &id[..23]),
        format!("{}_", &id[..23]),
        format!("{}\u{e9}", &id[..22]), // 24 bytes, but not ASCII
    ];
    const MALFORMED: &str = "CLIENT_ERROR malformed key id: ids are 24 letters and digits";
    // (request, the exact reply when protocol.md spells it out)
    let mut requests: Vec<(String, Option<&str>)> = Vec::new();
    for command in ["REL", "DEL", "INFO"] {
        requests.push((command.to_string(), None));
        requests.push((format!("{command} {id} {id}"), None));
        requests.push((format!("{command} {id} extra"), None));
        requests.extend(bad_ids.iter().map(|bad| (format!("{command} {bad}"), Some(MALFORMED))));
    }
    requests.push((format!("PING {id} extra"), None));
    requests.extend(bad_ids.iter().map(|bad| (format!("PING {bad}"), Some(MALFORMED))));
    requests.push(("GET now".to_string(), Some("CLIENT_ERROR too many arguments for GET")));
    for extra in ["STATS items slabs", "STATS no/such", "VERSION 2", "QUIT now"] {
        requests.push((extra.to_string(), None));
    }
    for (request, exact) in &requests {
        let reply = c.cmd(request).await;
        match exact {
            Some(exact) => assert_eq!(&reply, exact, "{request:?}"),
            None => assert!(
                reply.starts_with("CLIENT_ERROR ") && reply.len() > "CLIENT_ERROR ".len(),
                "{request:?} got {reply:?}, expected CLIENT_ERROR <message>"
            ),
        }
    }
    // None of them did anything: the key is still there, free, and never leased or deleted.
    let info = c.info(&id).await.expect("the key survives malformed requests");
    assert_eq!((info["state"].as_str(), num(&info, "leases")), ("free", 0));
    assert_eq!(c.cmd("PING").await, "PONG", "QUIT with an argument did not close the connection");
    stop(server).await;
}

#[tokio::test]
async fn command_names_are_case_insensitive_but_ids_are_not() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.send_line("gen 2").await;
    let ids = c.lines.key_block().await;
    assert_eq!(ids.len(), 2);
    let id = key_of(&c.cmd("gEt").await);
    assert!(ids.contains(&id));

    // The same id with its letters' case swapped is a different, unknown id.
    let other = swap_case(&id);
    assert_ne!(other, id, "ids contain letters");
    assert_id(&other);
    for command in ["rel", "ping", "info", "del"] {
        assert_eq!(c.cmd(&format!("{command} {other}")).await, "NOT_FOUND", "{command} with the case swapped");
    }

    assert_eq!(c.cmd(&format!("Rel {id}")).await, "RELEASED");
    assert_eq!(c.cmd(&format!("pInG {id}")).await, "ALIVE");
    assert_eq!(c.cmd("ping").await, "PONG");
    assert_eq!(c.cmd("Version").await, format!("VERSION {VERSION}"));
    c.send_line(&format!("info {id}")).await;
    assert!(c.block().await.contains(&format!("STAT id {id}")));
    c.send_line("stats").await;
    assert!(c.block().await.iter().any(|line| line.starts_with("STAT keys ")));
    assert_eq!(c.cmd(&format!("dEL {id}")).await, "DELETED");
    c.send_line("Quit").await;
    c.expect_closed().await;
    stop(server).await;
}

#[tokio::test]
async fn lf_and_crlf_endings_blanks_and_blank_lines() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;

    // LF alone and CRLF both end a request; replies always end with CRLF (the client checks).
    c.send("PING\n").await;
    assert_eq!(c.line().await, "PONG");
    c.send("PING\r\n").await;
    assert_eq!(c.line().await, "PONG");

    // Blank lines of every kind get no reply at all: the next line read is the PING's.
    c.send("\n\r\n   \n\t\t\r\n \t \r\n").await;
    c.send("PING\n").await;
    assert_eq!(c.line().await, "PONG");
    c.send("\r\n\n").await;
    c.expect_silence(Duration::from_millis(100)).await;

    // Leading, trailing and repeated spaces and tabs separate tokens.
    c.send("  \t GEN \t\t  2 \t \r\n").await;
    let ids = c.lines.key_block().await;
    assert_eq!(ids.len(), 2);
    c.send(format!("\tPING\t{}\t\n", ids[0])).await;
    assert_eq!(c.line().await, "ALIVE");
    c.send(format!("   INFO     {}   \r\n", ids[1])).await;
    assert_eq!(c.block().await[0], format!("STAT id {}", ids[1]));
    c.send(" GET \n").await;
    let id = key_of(&c.line().await);
    c.send(format!("REL  \t{id}\t  \r\n")).await;
    assert_eq!(c.line().await, "RELEASED");

    // A request split across writes, even between its CR and its LF, is one request.
    for piece in ["PI", "NG", "\r", "\n"] {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(c.line().await, "PONG");
    c.expect_silence(Duration::from_millis(50)).await;
    stop(server).await;
}

/// Every figure STATS must report (protocol.md).
const STAT_NAMES: [&str; 27] = [
    "pid",
    "uptime",
    "time",
    "version",
    "keys",
    "keys_free",
    "keys_blocked",
    "max_keys",
    "block_timeout_ms",
    "keepalive_timeout_ms",
    "curr_connections",
    "total_connections",
    "rejected_connections",
    "cmd_gen",
    "cmd_get",
    "cmd_rel",
    "cmd_del",
    "cmd_ping",
    "cmd_info",
    "cmd_stats",
    "cmd_version",
    "cmd_quit",
    "keys_generated",
    "get_hits",
    "get_misses",
    "released_by_timeout",
    "expired_keepalive",
];

#[tokio::test]
async fn stats_reports_every_field_with_sane_values() {
    let mut config = config();
    config.pool.block_timeout = Duration::from_millis(1500);
    config.pool.keepalive_timeout = Duration::from_secs(90);
    config.pool.max_keys = 12_345;
    let server = start(config).await;
    let mut c = Client::connect(server.addr()).await;
    c.gen(5).await;
    c.get().await.expect("a free key");

    c.send_line("STATS").await;
    let lines = c.block().await;
    let pairs = common::stat_pairs(&lines);
    let names: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
    for name in STAT_NAMES {
        assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "STAT {name} once in {names:?}");
    }
    // protocol.md: clients must ignore names they do not know, so more names are allowed; none repeated.
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "a STAT name repeats: {names:?}");
    for (name, value) in &pairs {
        if name != "version" && name != "persistence" {
            assert!(value.parse::<u64>().is_ok(), "STAT {name} {value:?} is not a whole number");
        }
    }
    let stats: std::collections::HashMap<String, String> = pairs.into_iter().collect();
    assert_eq!(num(&stats, "pid"), u64::from(std::process::id()), "the server runs in this process");
    assert!(num(&stats, "uptime") < 60, "the server just started");
    let now_s = unix_ms() / 1000;
    let time = num(&stats, "time");
    assert!(time.abs_diff(now_s) <= 2, "time {time} is not the current Unix time in seconds ({now_s})");
    assert_eq!(stats["version"], VERSION);
    assert_eq!(stats["persistence"], "off", "no --data-dir");
    assert_eq!((num(&stats, "keys"), num(&stats, "keys_free"), num(&stats, "keys_blocked")), (5, 4, 1));
    assert_eq!(num(&stats, "max_keys"), 12_345);
    assert_eq!(num(&stats, "block_timeout_ms"), 1500);
    assert_eq!(num(&stats, "keepalive_timeout_ms"), 90_000);
    assert_eq!(num(&stats, "curr_connections"), 1);
    assert_eq!(num(&stats, "total_connections"), 1);
    assert_eq!(num(&stats, "rejected_connections"), 0);
    stop(server).await;
}

#[tokio::test]
async fn stats_counters_move_with_every_command() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let before = c.stats().await;

    let ids = c.gen(3).await; // cmd_gen +1, keys_generated +3
    c.gen(2).await; // cmd_gen +1, keys_generated +2
    for _ in 0..5 {
        c.get().await.expect("a free key"); // cmd_get +5, get_hits +5
    }
    assert_eq!(c.cmd("GET").await, "NOT_FOUND"); // cmd_get +1, get_misses +1
    assert_eq!(c.cmd(&format!("REL {}", ids[0])).await, "RELEASED"); // cmd_rel +1
    assert_eq!(c.cmd(&format!("REL {UNKNOWN_ID}")).await, "NOT_FOUND"); // cmd_rel +1
    assert_eq!(c.cmd(&format!("DEL {}", ids[1])).await, "DELETED"); // cmd_del +1
    assert_eq!(c.cmd("PING").await, "PONG"); // cmd_ping +1
    assert_eq!(c.cmd(&format!("PING {}", ids[2])).await, "ALIVE"); // cmd_ping +1
    c.info(&ids[2]).await.expect("the key exists"); // cmd_info +1
    c.info(UNKNOWN_ID).await; // cmd_info +1
    c.cmd("VERSION").await; // cmd_version +1
    c.cmd("VERSION").await; // cmd_version +1
                            // Only well-formed requests count (protocol.md): none of these moves a counter.
    for malformed in ["GET now", "GEN 0", "REL", "DEL short", "PING x y", "INFO", "STATS x y", "VERSION x", "QUIT x"] {
        assert!(c.cmd(malformed).await.starts_with("CLIENT_ERROR "), "{malformed}");
    }
    assert!(c.cmd("NOSUCH").await.starts_with("ERROR "));

    let mut other = Client::connect(server.addr()).await;
    assert_eq!(other.cmd("PING").await, "PONG"); // cmd_ping +1
    other.send_line("QUIT").await; // cmd_quit +1
    other.expect_closed().await;

    let after = c.stats().await; // cmd_stats +1 (this one), on top of the first
    let delta = |name: &str| num(&after, name) - num(&before, name);
    let expected = [
        ("cmd_gen", 2),
        ("cmd_get", 6),
        ("cmd_rel", 2),
        ("cmd_del", 1),
        ("cmd_ping", 3),
        ("cmd_info", 2),
        ("cmd_stats", 1),
        ("cmd_version", 2),
        ("cmd_quit", 1),
        ("keys_generated", 5),
        ("get_hits", 5),
        ("get_misses", 1),
        ("released_by_timeout", 0),
        ("expired_keepalive", 0),
    ];
    for (name, want) in expected {
        assert_eq!(delta(name), want, "{name} moved by {}, expected {want}", delta(name));
    }
    assert_eq!((num(&after, "keys"), num(&after, "keys_free"), num(&after, "keys_blocked")), (4, 1, 3));
    assert_eq!(num(&after, "total_connections"), 2);
    stop(server).await;
}

#[tokio::test]
async fn stats_counts_current_and_total_connections() {
    let server = start(config()).await;
    let mut a = Client::connect(server.addr()).await;
    assert_eq!((a.stat("curr_connections").await, a.stat("total_connections").await), (1, 1));

    let mut b = Client::connect(server.addr()).await;
    assert_eq!(b.cmd("PING").await, "PONG");
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("PING").await, "PONG");
    assert_eq!((a.stat("curr_connections").await, a.stat("total_connections").await), (3, 3));

    b.send_line("QUIT").await;
    b.expect_closed().await;
    drop(c); // a plain hang-up
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let stats = a.stats().await;
        if num(&stats, "curr_connections") == 1 {
            assert_eq!(num(&stats, "total_connections"), 3, "closed connections stay counted in the total");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "curr_connections never fell back to 1: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(server).await;
}
