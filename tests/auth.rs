//! Authentication over the wire (issue 4). With a tokens file and/or a JWT secret configured, a connection
//! must `AUTH <token>` before anything but bare `PING`, `VERSION` and `QUIT`: every other command gets
//! `ERROR NOAUTH authentication required` and does nothing. A static token or an HS256 JWT puts the
//! connection in the pool it grants (`default` for `*`), and `USE`, `STATS <pool>` and `POOLS` see only
//! what it grants. A wrong, forged, expired or incomplete token gets `CLIENT_ERROR invalid token`, and the
//! third failure in a row is answered and then the connection closed. A second AUTH replaces the grant, a
//! reloaded tokens file changes who may AUTH from then on, no reply ever carries a token, and with auth off
//! AUTH is refused as not enabled.
//!
//! The server runs in-process, reading its tokens file and JWT secret from a temp dir. JWTs come from the
//! library's `mint_hs256`; those it cannot make (no `exp`, no `sub`, `alg: none`, ...) are signed here by
//! hand with HMAC-SHA256 over base64url JSON, which also checks the server against a second, independent
//! signer. SIGHUP and protected mode need the real binary: they are in `daemon_auth.rs`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{close_and_stop, config, start, unix_secs, within, Client, TempDir, UNKNOWN_ID, VERSION};
use hmac::{Hmac, Mac};
use keypool::auth::{mint_hs256, Authenticator, JwtVerifier, LEEWAY_SECS};
use keypool::server::Handle;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

const NOAUTH: &str = "ERROR NOAUTH authentication required";
const INVALID: &str = "CLIENT_ERROR invalid token";
const FORBIDDEN: &str = "CLIENT_ERROR forbidden";

/// A static token for pool `team-a` only.
const TEAM_A: &str = "tok-team-a-Xq81vR";
/// A static token for pool `team-b` only.
const TEAM_B: &str = "tok-team-b-Lm27Kd";
/// A static token for every pool.
const ROOT: &str = "tok-root-Pz55Wn";

/// The tokens file: the three tokens above, written as an operator would, with a comment line, a blank
/// line, a tab between fields and a comment after them.
fn tokens_file() -> String {
    format!("# keypool test tokens\n{TEAM_A} team-a\n\n{TEAM_B}\tteam-b   # the b team\n{ROOT} *\n")
}

/// The HS256 secret of the JWT tests.
const JWT_SECRET: &[u8] = b"integration-test jwt secret, 32+ bytes long";

/// The header of an HS256 JWT.
const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Which credentials a test server accepts.
#[derive(Default)]
struct Setup {
    /// Static tokens, from [`tokens_file`].
    tokens: bool,
    /// HS256 JWTs signed with [`JWT_SECRET`].
    jwt: bool,
    /// With `jwt`: the audience JWTs must name.
    audience: Option<&'static str>,
}

/// A server with authentication on, its authenticator (to reload the tokens as SIGHUP would), and the
/// directory of the files it read, removed when this is dropped.
struct AuthServer {
    handle: Handle,
    auth: Arc<Authenticator>,
    files: TempDir,
}

impl AuthServer {
    async fn start(setup: Setup) -> AuthServer {
        let files = TempDir::new("auth-test");
        let tokens = setup.tokens.then(|| files.write("tokens", tokens_file()));
        let jwt = setup.jwt.then(|| {
            let secret = files.write("jwt-secret", JWT_SECRET);
            JwtVerifier::from_secret_file(&secret, setup.audience.map(str::to_owned)).expect("a usable secret file")
        });
        let auth = Arc::new(Authenticator::new(tokens, jwt).expect("a valid tokens file"));
        assert!(auth.is_enabled());
        let handle = start(keypool::server::Config { auth: Arc::clone(&auth), ..config() }).await;
        AuthServer { handle, auth, files }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    async fn stop(self, clients: impl IntoIterator<Item = Client>) {
        close_and_stop(self.handle, clients).await;
    }
}

/// A new connection that has sent `AUTH token` and been answered `OK`.
async fn authed(addr: SocketAddr, token: &str) -> Client {
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&format!("AUTH {token}")).await, "OK", "AUTH with a valid token");
    c
}

/// Fails the test unless `AUTH token` on a new connection is refused, and leaves the connection as
/// unauthenticated as before. One connection per token, so the three-strikes rule never interferes.
async fn assert_refused(addr: SocketAddr, token: &str, why: &str) {
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&format!("AUTH {token}")).await, INVALID, "{why}");
    assert_eq!(c.cmd("GEN").await, NOAUTH, "{why}: a refused AUTH unlocks nothing");
}

/// An hour from now, in seconds since the Unix epoch.
fn in_an_hour() -> u64 {
    unix_secs() + 3600
}

/// A JWT from [`JWT_SECRET`] granting `sub` for the next hour, with no audience.
fn jwt(sub: &str) -> String {
    mint_hs256(JWT_SECRET, sub, in_an_hour(), None)
}

/// A JWT of `header` and `claims` (JSON texts) signed with HMAC-SHA256 under `secret`, made here rather
/// than by the library: for tokens `mint_hs256` cannot make, and as a second, independent signer.
fn sign_jwt(header: &str, claims: &str, secret: &[u8]) -> String {
    let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The reply lines of `request`: one line, or for STATS and POOLS every line up to and including the
/// `END` that closes the block (a refusal is a single line there too).
async fn replies(c: &mut Client, request: &str) -> Vec<String> {
    c.send_line(request).await;
    let mut lines = vec![c.line().await];
    let block = ["STAT ", "POOL ", "END"].iter().any(|start| lines[0].starts_with(start));
    while block && !lines.last().expect("a line").starts_with("END") {
        lines.push(c.line().await);
    }
    lines
}

#[tokio::test]
async fn before_auth_every_gated_command_gets_noauth_and_does_nothing() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut c = Client::connect(server.addr()).await;
    let id = UNKNOWN_ID;
    let gated = [
        "GEN".to_string(),
        "GEN 3".into(),
        "gen 1".into(),
        "ADD sk-some-secret".into(),
        "ADD sk-other-secret 10s".into(),
        "GET".into(),
        "GET 1s".into(),
        "get 0ms 500ms".into(),
        "LEASE".into(),
        "LEASE 1s 500ms".into(),
        format!("REL {id}"),
        format!("REL {id} 1 5s"),
        format!("TOUCH {id}"),
        format!("TOUCH {id} 1 1s"),
        format!("DEL {id}"),
        format!("PING {id}"),
        format!("ping {id}"),
        format!("INFO {id}"),
        "AUTOREL".into(),
        "STATS".into(),
        "STATS default".into(),
        "STATS team-a".into(),
        "USE default".into(),
        "USE team-a".into(),
        "POOLS".into(),
        "POOLS 7".into(),
    ];
    for request in &gated {
        // `GET 1s` would wait a second, and `cmd` then read NOT_FOUND, were it not refused at once.
        assert_eq!(c.cmd(request).await, NOAUTH, "{request} before AUTH");
    }
    // The same, pipelined in one write: one NOAUTH each, in order.
    let burst: String = gated.iter().map(|request| format!("{request}\r\n")).collect();
    c.send(burst).await;
    for request in &gated {
        assert_eq!(c.line().await, NOAUTH, "{request} before AUTH, pipelined");
    }

    // None of that made a key or a pool, and none of it counted as a failed AUTH.
    assert_eq!(c.cmd(&format!("AUTH {ROOT}")).await, "OK");
    assert_eq!(c.all_pools().await, BTreeMap::new());
    assert_eq!(c.stat("keys").await, 0);
    // Refused requests were not served, so they count under no command.
    for counter in ["cmd_gen", "cmd_get", "cmd_del", "cmd_use"] {
        assert_eq!(c.stat(counter).await, 0, "{counter} counts a request refused before AUTH");
    }
    assert_eq!(c.stat("cmd_pools").await, 1, "only the POOLS after AUTH counts");
    server.stop([c]).await;
}

#[tokio::test]
async fn before_auth_bare_ping_version_auth_and_quit_are_served() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.cmd("PING").await, "PONG", "the health check needs no AUTH");
    assert_eq!(c.cmd("ping").await, "PONG");
    assert_eq!(c.cmd("VERSION").await, format!("VERSION {VERSION}"));
    assert_eq!(c.cmd("AUTH not-a-token").await, INVALID, "AUTH itself is served");
    assert_eq!(c.cmd(&format!("AUTH {TEAM_A}")).await, "OK");

    // QUIT closes a connection that never authenticated, with no reply, and ignores what follows it.
    let mut quitter = Client::connect(server.addr()).await;
    quitter.send("QUIT\r\nGEN\r\n").await;
    quitter.expect_closed().await;
    let mut quitter = Client::connect(server.addr()).await;
    quitter.send_line("quit").await;
    quitter.expect_closed().await;
    server.stop([c]).await;
}

#[tokio::test]
async fn a_pool_token_lands_in_its_pool_and_can_gen_and_get_there() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut a = authed(server.addr(), TEAM_A).await;
    let ids = a.gen(2).await;
    let got = a.get().await.expect("a free key in team-a");
    assert!(ids.contains(&got), "GET leased {got}, not one of team-a's keys {ids:?}");
    assert_eq!(a.cmd(&format!("REL {got}")).await, "RELEASED");
    let leased = a.lease("").await.expect("a free key in team-a");
    assert!(ids.contains(&leased.id));
    let added = a.add("sk-team-a-upstream").await;
    a.use_pool("team-a").await;
    assert_eq!(a.state(&added).await.as_deref(), Some("free"), "naming its own pool keeps the connection there");

    // The keys are in team-a, not in default: a connection allowed everywhere finds them there only.
    let mut root = authed(server.addr(), ROOT).await;
    assert_eq!(root.all_pools().await, BTreeMap::from([("team-a".to_string(), 3)]));
    assert_eq!(root.state(&ids[0]).await, None, "root starts in default, which has no team-a key");
    root.use_pool("team-a").await;
    assert_eq!(root.state(&leased.id).await.as_deref(), Some("blocked"));
    server.stop([a, root]).await;
}

#[tokio::test]
async fn a_star_token_lands_in_default_and_may_use_any_pool() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut root = authed(server.addr(), ROOT).await;
    let in_default = root.gen(1).await.remove(0);
    for pool in ["team-a", "team-b", "elsewhere", "default"] {
        root.use_pool(pool).await;
        root.gen(1).await;
        assert_eq!(
            root.pool_stats(pool).await[1],
            ("keys".to_string(), if pool == "default" { 2 } else { 1 }.to_string())
        );
    }
    assert_eq!(root.state(&in_default).await.as_deref(), Some("free"), "the first GEN went to default");
    let expected = [("default", 2), ("elsewhere", 1), ("team-a", 1), ("team-b", 1)];
    assert_eq!(root.all_pools().await, expected.map(|(pool, keys)| (pool.to_string(), keys)).into());
    server.stop([root]).await;
}

#[tokio::test]
async fn wrong_tokens_are_invalid_and_unlock_nothing() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let addr = server.addr();
    let swapped_case: String = TEAM_A.chars().map(|c| c.to_ascii_uppercase()).collect();
    let cases = [
        ("tok-unknown-1234", "an unknown token"),
        (&TEAM_A[..TEAM_A.len() - 1], "a prefix of a token"),
        (&format!("{TEAM_A}x"), "a token with a byte more"),
        (&swapped_case, "a token in another case"),
        ("team-a", "a pool name"),
        ("*", "the any-pool mark"),
        ("#", "a comment mark"),
        (&format!("{TEAM_A}{ROOT}"), "two tokens run together"),
        // JWT-shaped, and signed with the right secret, but this server takes no JWTs.
        (&jwt("team-a"), "a JWT where only static tokens are configured"),
    ];
    for (token, why) in cases {
        assert_refused(addr, token, why).await;
    }
    // Extra blanks around the token are separators, not part of it.
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&format!("AUTH  \t{TEAM_B}  ")).await, "OK");
    server.stop([c]).await;
}

#[tokio::test]
async fn use_and_stats_of_a_pool_the_token_does_not_grant_are_forbidden() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut a = authed(server.addr(), TEAM_A).await;
    let id = a.gen(1).await.remove(0);
    for pool in ["team-b", "default", "team-a2", "team-", "TEAM-A", "elsewhere"] {
        assert_eq!(a.cmd(&format!("USE {pool}")).await, FORBIDDEN, "USE {pool} with a team-a token");
        assert_eq!(a.cmd(&format!("STATS {pool}")).await, FORBIDDEN, "STATS {pool} with a team-a token");
    }
    assert_eq!(a.state(&id).await.as_deref(), Some("free"), "a forbidden USE leaves the connection in team-a");
    assert_eq!(a.pool_stats("team-a").await[1], ("keys".to_string(), "1".to_string()), "its own pool's STATS");
    // A name that is no pool name at all gets that error, not `forbidden`.
    assert!(a.cmd("USE a/b").await.starts_with("CLIENT_ERROR malformed pool name"));
    assert!(a.cmd("STATS a/b").await.starts_with("CLIENT_ERROR malformed pool name"));

    // Knowing a key's id is not enough: from team-b, team-a's key is not there for any command.
    let mut b = authed(server.addr(), TEAM_B).await;
    for request in [format!("INFO {id}"), format!("PING {id}"), format!("REL {id}"), format!("DEL {id}")] {
        assert_eq!(b.cmd(&request).await, "NOT_FOUND", "{request} from team-b");
    }
    assert_eq!(b.cmd("GET").await, "NOT_FOUND", "team-a's free key is not leased to team-b");
    assert_eq!(b.cmd("USE team-a").await, FORBIDDEN);
    assert_eq!(a.state(&id).await.as_deref(), Some("free"), "team-b touched nothing of team-a's");
    server.stop([a, b]).await;
}

/// Creates pool `name` with `keys` keys for each pair, by one pipelined burst of `USE` and `GEN`, read
/// while it is written so that neither side's buffers fill up.
async fn create_pools(c: &mut Client, pools: &[(String, usize)]) {
    let burst: String = pools.iter().map(|(pool, keys)| format!("USE {pool}\r\nGEN {keys}\r\n")).collect();
    let Client { lines, writer } = c;
    let write = async { within("a burst to be written", writer.write_all(burst.as_bytes())).await.expect("write") };
    let read = async {
        for (pool, keys) in pools {
            assert_eq!(lines.line().await, format!("USING {pool}"));
            assert_eq!(lines.key_block().await.len(), *keys, "GEN {keys} in {pool}");
        }
    };
    tokio::join!(write, read);
}

#[tokio::test]
async fn pools_lists_only_the_granted_pool_for_a_one_pool_token() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut root = authed(server.addr(), ROOT).await;
    // More than a page of other pools first, so that the team pools come on the second page, after a
    // first page that a one-pool token sees as empty: its cursor must still lead on.
    let mut pools: Vec<(String, usize)> = (0..1100).map(|i| (format!("filler-{i}"), 1)).collect();
    pools.extend([("team-a".to_string(), 2), ("team-b".to_string(), 1), ("other".to_string(), 3)]);
    create_pools(&mut root, &pools).await;
    assert_eq!(root.all_pools().await.len(), 1103, "a token for every pool lists every pool");

    let mut a = authed(server.addr(), TEAM_A).await;
    let mut b = authed(server.addr(), TEAM_B).await;
    assert_eq!(a.all_pools().await, BTreeMap::from([("team-a".to_string(), 2)]));
    assert_eq!(b.all_pools().await, BTreeMap::from([("team-b".to_string(), 1)]));
    let (first_page, next) = b.pools_page(0).await;
    assert_eq!((first_page, next > 0), (vec![], true), "the first page shows team-b no other pool's name");

    // Once its pool is gone, a one-pool token lists nothing at all.
    let id = b.get().await.expect("team-b's key");
    assert_eq!(b.cmd(&format!("DEL {id}")).await, "DELETED");
    assert_eq!(b.all_pools().await, BTreeMap::new());
    server.stop([root, a, b]).await;
}

#[tokio::test]
async fn three_failed_auths_in_a_row_close_the_connection_after_the_third_reply() {
    let server = AuthServer::start(Setup { tokens: true, jwt: true, ..Setup::default() }).await;
    let addr = server.addr();
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd("AUTH tok-wrong-1").await, INVALID);
    assert_eq!(c.cmd(&format!("AUTH {}", mint_hs256(b"forged", "*", in_an_hour(), None))).await, INVALID);
    // Other commands in between neither end the run of failures nor count as one.
    assert_eq!(c.cmd("PING").await, "PONG");
    assert_eq!(c.cmd("GEN").await, NOAUTH);
    assert_eq!(c.cmd("VERSION").await, format!("VERSION {VERSION}"));
    assert_eq!(c.cmd("AUTH tok-wrong-3").await, INVALID, "the third failure is answered");
    c.expect_closed().await;

    // Pipelined: the three failures are answered, and nothing after them, not even a valid AUTH.
    let mut c = Client::connect(addr).await;
    c.send(format!("AUTH x1\r\nAUTH x2\r\nAUTH x3\r\nPING\r\nAUTH {ROOT}\r\nGEN\r\n")).await;
    for _ in 0..3 {
        assert_eq!(c.line().await, INVALID);
    }
    c.expect_closed().await;

    // An authenticated connection that fails three times is closed too; until then its grant stands.
    let mut c = authed(addr, TEAM_A).await;
    assert_eq!(c.cmd("AUTH tok-wrong-1").await, INVALID);
    c.gen(1).await;
    assert_eq!(c.cmd("USE team-b").await, FORBIDDEN, "a failed AUTH grants nothing new");
    assert_eq!(c.cmd("AUTH tok-wrong-2").await, INVALID);
    assert_eq!(c.cmd("AUTH tok-wrong-3").await, INVALID);
    c.expect_closed().await;

    // Malformed AUTH lines are not attempts: they never reach the authenticator.
    let mut c = Client::connect(addr).await;
    for _ in 0..3 {
        assert_eq!(c.cmd("AUTH").await, "CLIENT_ERROR AUTH needs a token");
    }
    assert_eq!(c.cmd(&format!("AUTH {ROOT}")).await, "OK");
    server.stop([c]).await;
}

#[tokio::test]
async fn a_successful_auth_resets_the_count_of_failures() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut c = Client::connect(server.addr()).await;
    for round in 0..3 {
        assert_eq!(c.cmd("AUTH tok-wrong-1").await, INVALID, "round {round}");
        assert_eq!(c.cmd("AUTH tok-wrong-2").await, INVALID, "round {round}");
        assert_eq!(c.cmd("PING").await, "PONG", "round {round}: two failures leave the connection open");
        assert_eq!(c.cmd(&format!("AUTH {TEAM_A}")).await, "OK", "round {round}: and a valid token still works");
    }
    c.gen(1).await;
    // The count starts again from zero after the last success: two are allowed, the third closes.
    assert_eq!(c.cmd("AUTH tok-wrong-1").await, INVALID);
    assert_eq!(c.cmd("AUTH tok-wrong-2").await, INVALID);
    assert_eq!(c.cmd("AUTH tok-wrong-3").await, INVALID);
    c.expect_closed().await;
    server.stop([]).await;
}

#[tokio::test]
async fn a_second_auth_replaces_the_grant_and_moves_the_connection() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut c = authed(server.addr(), TEAM_A).await;
    let a_id = c.gen(1).await.remove(0);

    // From team-a to team-b: team-a is now forbidden, and the connection is in team-b.
    assert_eq!(c.cmd(&format!("AUTH {TEAM_B}")).await, "OK");
    assert_eq!(c.state(&a_id).await, None, "the connection moved to team-b");
    let b_id = c.gen(1).await.remove(0);
    assert_eq!(c.cmd("USE team-a").await, FORBIDDEN);
    assert_eq!(c.cmd("STATS team-a").await, FORBIDDEN);
    assert_eq!(c.all_pools().await, BTreeMap::from([("team-b".to_string(), 1)]));

    // To every pool: in default, and anything may be used.
    assert_eq!(c.cmd(&format!("AUTH {ROOT}")).await, "OK");
    assert_eq!(c.state(&b_id).await, None, "the connection moved to default");
    c.use_pool("team-a").await;
    assert_eq!(c.state(&a_id).await.as_deref(), Some("free"));
    c.use_pool("team-b").await;

    // Back to one pool, from another pool: the connection lands in the granted pool, not where it was.
    assert_eq!(c.cmd(&format!("AUTH {TEAM_A}")).await, "OK");
    assert_eq!(c.state(&a_id).await.as_deref(), Some("free"), "the connection moved back to team-a");
    assert_eq!(c.cmd("USE team-b").await, FORBIDDEN);
    assert_eq!(c.all_pools().await, BTreeMap::from([("team-a".to_string(), 1)]));
    server.stop([c]).await;
}

#[tokio::test]
async fn a_valid_jwt_grants_its_sub_a_pool_or_every_pool() {
    let server = AuthServer::start(Setup { jwt: true, ..Setup::default() }).await;
    let addr = server.addr();
    let mut j = authed(addr, &jwt("team-j")).await;
    let ids = j.gen(2).await;
    assert!(j.get().await.is_some_and(|id| ids.contains(&id)), "GET in team-j leases a team-j key");
    for pool in ["default", "team-a", "team-j2"] {
        assert_eq!(j.cmd(&format!("USE {pool}")).await, FORBIDDEN, "USE {pool} with a team-j JWT");
        assert_eq!(j.cmd(&format!("STATS {pool}")).await, FORBIDDEN, "STATS {pool} with a team-j JWT");
    }
    j.use_pool("team-j").await;

    let mut star = authed(addr, &jwt("*")).await;
    let in_default = star.gen(1).await.remove(0);
    assert_eq!(star.all_pools().await, BTreeMap::from([("default".to_string(), 1), ("team-j".to_string(), 2)]));
    star.use_pool("team-j").await;
    assert!(star.state(&ids[1]).await.is_some(), "team-j's keys are in team-j");
    star.use_pool("anything-else").await;
    assert_eq!(j.state(&in_default).await, None);
    assert_eq!(j.all_pools().await, BTreeMap::from([("team-j".to_string(), 2)]), "a team-j JWT lists team-j only");

    // A token from another signer with the same secret is as good; a static token is not, with no file.
    let claims = format!(r#"{{"sub":"team-j","exp":{},"iat":{}}}"#, in_an_hour(), unix_secs());
    let mut hand_made = authed(addr, &sign_jwt(HS256, &claims, JWT_SECRET)).await;
    assert!(hand_made.state(&ids[0]).await.is_some(), "the hand-signed token lands in team-j");
    assert_refused(addr, TEAM_A, "a static token where only JWTs are configured").await;
    server.stop([j, star, hand_made]).await;
}

#[tokio::test]
async fn jwts_that_are_forged_expired_or_incomplete_are_invalid() {
    let server = AuthServer::start(Setup { jwt: true, ..Setup::default() }).await;
    let (hour, now) = (in_an_hour(), unix_secs());
    let valid = jwt("team-j");
    let mut altered: Vec<&str> = valid.split('.').collect();
    let star_payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"*","exp":{hour}}}"#));
    altered[1] = &star_payload;
    let cases = [
        (mint_hs256(b"some other secret", "team-j", hour, None), "signed with another secret"),
        (mint_hs256(JWT_SECRET, "team-j", now - LEEWAY_SECS - 60, None), "expired a minute ago"),
        (sign_jwt(HS256, r#"{"sub":"team-j"}"#, JWT_SECRET), "no exp"),
        (sign_jwt(HS256, &format!(r#"{{"sub":"team-j","exp":"{hour}"}}"#), JWT_SECRET), "exp as a string"),
        (sign_jwt(HS256, &format!(r#"{{"exp":{hour}}}"#), JWT_SECRET), "no sub"),
        (sign_jwt(HS256, &format!(r#"{{"sub":7,"exp":{hour}}}"#), JWT_SECRET), "sub not a string"),
        (mint_hs256(JWT_SECRET, "team/j", hour, None), "sub not a pool name"),
        (mint_hs256(JWT_SECRET, "", hour, None), "sub empty"),
        (mint_hs256(JWT_SECRET, "**", hour, None), "sub `**`"),
        (sign_jwt(HS256, &format!(r#"{{"sub":"team-j","exp":{hour},"nbf":{hour}}}"#), JWT_SECRET), "nbf ahead"),
        (mint_hs256(JWT_SECRET, "team-j", hour, Some("elsewhere")), "an aud where no audience is configured"),
        (altered.join("."), "a payload altered to grant every pool"),
        (valid[..valid.len() - 2].to_string(), "a cut signature"),
        (format!("{}.", valid.rsplit_once('.').expect("three parts").0), "no signature"),
        (sign_jwt(r#"{"alg":"HS512","typ":"JWT"}"#, &format!(r#"{{"sub":"*","exp":{hour}}}"#), JWT_SECRET), "HS512"),
    ];
    for (token, why) in &cases {
        assert_refused(server.addr(), token, why).await;
    }
    // `alg: none` with no signature: the classic forgery.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"*","exp":{hour}}}"#))
    );
    assert_refused(server.addr(), &none, "alg none").await;
    // Within the leeway an expired token is still good: clocks may disagree by a second or two.
    let mut c = authed(server.addr(), &mint_hs256(JWT_SECRET, "team-j", now - 1, None)).await;
    c.gen(1).await;
    server.stop([c]).await;
}

#[tokio::test]
async fn with_an_audience_configured_a_jwt_must_name_it() {
    let server = AuthServer::start(Setup { jwt: true, audience: Some("keypool-test"), ..Setup::default() }).await;
    let addr = server.addr();
    let hour = in_an_hour();
    assert_refused(addr, &mint_hs256(JWT_SECRET, "team-j", hour, None), "no aud").await;
    assert_refused(addr, &mint_hs256(JWT_SECRET, "team-j", hour, Some("keypool-prod")), "another aud").await;
    assert_refused(addr, &mint_hs256(JWT_SECRET, "team-j", hour, Some("keypool-tes")), "a prefix of the aud").await;
    let listed = format!(r#"{{"sub":"team-j","exp":{hour},"aud":["other","keypool-prod"]}}"#);
    assert_refused(addr, &sign_jwt(HS256, &listed, JWT_SECRET), "a list of other audiences").await;

    let mut c = authed(addr, &mint_hs256(JWT_SECRET, "team-j", hour, Some("keypool-test"))).await;
    let id = c.gen(1).await.remove(0);
    assert_eq!(c.cmd("USE default").await, FORBIDDEN);
    // RFC 7519: `aud` may be a list, and then one of its entries must be ours.
    let listed = format!(r#"{{"sub":"team-j","exp":{hour},"aud":["other","keypool-test"]}}"#);
    let mut listed = authed(addr, &sign_jwt(HS256, &listed, JWT_SECRET)).await;
    assert_eq!(listed.state(&id).await.as_deref(), Some("free"), "the listed-audience token is in team-j");
    server.stop([c, listed]).await;
}

#[tokio::test]
async fn static_tokens_and_jwts_work_side_by_side() {
    let server = AuthServer::start(Setup { tokens: true, jwt: true, ..Setup::default() }).await;
    let addr = server.addr();
    let mut a = authed(addr, TEAM_A).await;
    let id = a.gen(1).await.remove(0);
    let mut j = authed(addr, &jwt("team-a")).await;
    assert_eq!(j.state(&id).await.as_deref(), Some("free"), "a JWT for team-a lands where the team-a token did");
    let mut root = authed(addr, ROOT).await;
    root.use_pool("team-a").await;
    assert_refused(addr, &mint_hs256(b"wrong", "team-a", in_an_hour(), None), "a forged JWT").await;
    assert_refused(addr, "tok-unknown", "an unknown static token").await;
    server.stop([a, j, root]).await;
}

#[tokio::test]
async fn reloaded_tokens_decide_who_may_auth_from_then_on() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let addr = server.addr();
    let mut before = authed(addr, TEAM_A).await;

    server.files.write("tokens", format!("tok-fresh-Vb40 team-c\n{ROOT} *\n"));
    assert_eq!(server.auth.reload_tokens().expect("the new file is valid"), Some(2));
    assert_refused(addr, TEAM_A, "a token removed by the reload").await;
    assert_refused(addr, TEAM_B, "a token removed by the reload").await;
    let mut fresh = authed(addr, "tok-fresh-Vb40").await;
    fresh.gen(1).await;
    assert_eq!(fresh.cmd("USE team-a").await, FORBIDDEN);
    authed(addr, ROOT).await;
    // A grant already given stands (documented on `Authenticator::reload_tokens`).
    before.gen(1).await;
    assert_eq!(before.all_pools().await, BTreeMap::from([("team-a".to_string(), 1)]));

    // A file that does not parse changes nothing.
    server.files.write("tokens", "tok-newer-Hh62 team-d\nlonely-line\n");
    assert!(server.auth.reload_tokens().is_err());
    authed(addr, "tok-fresh-Vb40").await;
    assert_refused(addr, "tok-newer-Hh62", "a token of a file that was refused").await;
    server.stop([before, fresh]).await;
}

#[tokio::test]
async fn no_reply_ever_carries_a_token() {
    let server = AuthServer::start(Setup { tokens: true, jwt: true, ..Setup::default() }).await;
    let addr = server.addr();
    let (valid_jwt, forged_jwt) = (jwt("team-j"), mint_hs256(b"forged", "*", in_an_hour(), None));
    let expired_jwt = mint_hs256(JWT_SECRET, "*", unix_secs() - 3600, None);
    let near_miss = format!("{ROOT}0");
    // Failures two at a time, then a success, so that the connection stays open throughout.
    let session = [
        format!("AUTH {near_miss}"),
        format!("AUTH {TEAM_A} {TEAM_B}"),
        format!("AUTH {forged_jwt}"),
        "AUTH".to_string(),
        format!("GEN {TEAM_A}"),
        format!("USE {ROOT}"),
        "STATS".into(),
        "POOLS".into(),
        format!("AUTH {TEAM_A}"),
        "GEN 2".into(),
        "STATS".into(),
        "STATS team-a".into(),
        "POOLS".into(),
        "USE team-b".into(),
        format!("AUTH {expired_jwt}"),
        format!("AUTH {ROOT}x"),
        format!("AUTH {valid_jwt}"),
        "STATS".into(),
        "POOLS".into(),
        format!("AUTH {ROOT}"),
        "STATS".into(),
        "STATS team-a".into(),
        "POOLS".into(),
        format!("ADD {TEAM_B}-lookalike"),
        "VERSION".into(),
        "PING".into(),
    ];
    let mut c = Client::connect(addr).await;
    let mut heard = Vec::new();
    for request in &session {
        heard.extend(replies(&mut c, request).await);
    }
    assert!(heard.iter().any(|line| line == "OK") && heard.iter().any(|line| line == INVALID));
    let secrets =
        [TEAM_A, TEAM_B, ROOT, &near_miss, &valid_jwt, &forged_jwt, &expired_jwt, "integration-test jwt secret"];
    for line in &heard {
        for secret in &secrets {
            assert!(!line.contains(secret), "the reply {line:?} carries the token {secret:?}");
        }
        // Nor a telling piece of one: no JWT part, and no static token's random tail.
        for part in valid_jwt.split('.').chain(forged_jwt.split('.')).chain(["Xq81vR", "Lm27Kd", "Pz55Wn"]) {
            assert!(!line.contains(part), "the reply {line:?} carries {part:?}");
        }
    }
    server.stop([c]).await;
}

#[tokio::test]
async fn with_auth_off_auth_is_refused_as_not_enabled_and_nothing_needs_it() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    for token in ["anything", ROOT, "a.b.c", "anything"] {
        // Never counted as failures: the connection stays open however many are sent.
        assert_eq!(c.cmd(&format!("AUTH {token}")).await, "CLIENT_ERROR authentication is not enabled");
    }
    c.gen(1).await;
    c.use_pool("team-a").await;
    c.gen(1).await;
    assert_eq!(c.pool_stats("default").await[1], ("keys".to_string(), "1".to_string()));
    let expected = BTreeMap::from([("default".to_string(), 1), ("team-a".to_string(), 1)]);
    assert_eq!(c.all_pools().await, expected);
    close_and_stop(server, [c]).await;
}

#[tokio::test]
async fn auth_takes_effect_from_the_next_request_of_the_same_pipeline() {
    let server = AuthServer::start(Setup { tokens: true, ..Setup::default() }).await;
    let mut c = Client::connect(server.addr()).await;
    c.send(format!(
        "GEN\r\nAUTH {TEAM_A}\r\nGEN 2\r\nUSE team-b\r\nAUTH {TEAM_B}\r\nUSE team-b\r\nUSE team-a\r\nPOOLS\r\n"
    ))
    .await;
    assert_eq!(c.line().await, NOAUTH, "the GEN before the AUTH");
    assert_eq!(c.line().await, "OK");
    assert_eq!(c.lines.key_block().await.len(), 2, "the GEN right after the AUTH");
    assert_eq!(c.line().await, FORBIDDEN, "team-b with the team-a token");
    assert_eq!(c.line().await, "OK");
    assert_eq!(c.line().await, "USING team-b", "team-b with the team-b token");
    assert_eq!(c.line().await, FORBIDDEN, "team-a with the team-b token");
    assert_eq!(c.lines.pools_page().await, (vec![], 0), "team-b has no keys yet, and team-a is not shown");
    server.stop([c]).await;
}
