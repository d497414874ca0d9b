//! Authentication on the HTTP gateway: `Authorization: Bearer <token or JWT>`, checked by the same
//! authenticator as TCP's AUTH. No token or a bad one is 401 (with `WWW-Authenticate: Bearer`), a pool the
//! token does not grant is 403, `/health`, `/metrics` and `/openapi.json` stay open, and a granted request
//! acts exactly as the same token's TCP connection would.

mod common;
mod http_support;

use std::sync::Arc;

use common::{config, unix_secs, Client, TempDir};
use http_support::Daemon;
use keypool::auth::{mint_hs256, Authenticator, JwtVerifier};
use serde_json::json;

const TEAM_A: &str = "tok-team-a-Xq81vR";
const ROOT: &str = "tok-root-Pz55Wn";
const JWT_SECRET: &[u8] = b"integration-test jwt secret, 32+ bytes long";

async fn start() -> (Daemon, TempDir) {
    let files = TempDir::new("http-auth");
    let tokens = files.write("tokens", format!("{TEAM_A} team-a\n{ROOT} *\n"));
    let secret = files.write("jwt-secret", JWT_SECRET);
    let jwt = JwtVerifier::from_secret_file(&secret, None).expect("a usable secret file");
    let auth = Arc::new(Authenticator::new(Some(tokens), Some(jwt)).expect("a valid tokens file"));
    (Daemon::start(keypool::server::Config { auth, ..config() }).await, files)
}

#[tokio::test]
async fn no_token_or_a_bad_one_is_401_and_an_ungranted_pool_403() {
    let (daemon, _files) = start().await;
    let anonymous = daemon.client();
    for path in ["/keys", "/pools/team-a/keys", "/stats", "/pools"] {
        let reply = anonymous.get(path).await;
        assert_eq!(reply.expect(401).error(), "authentication required: send Authorization: Bearer <token>", "{path}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let forged = mint_hs256(b"another secret, also 32 bytes long!!", "*", unix_secs() + 60, None);
    let expired = mint_hs256(JWT_SECRET, "*", unix_secs() - 3600, None);
    for bad in ["nope", TEAM_A.trim_end_matches('R'), &forged, &expired] {
        assert_eq!(anonymous.with_bearer(bad).post("/pools/team-a/keys").await.expect(401).error(), "invalid token");
    }
    let team_a = anonymous.with_bearer(TEAM_A);
    for path in ["/keys", "/pools/team-b/keys", "/pools/team-b/stats"] {
        assert_eq!(team_a.get(path).await.expect(403).error(), "forbidden", "{path}");
    }
    assert_eq!(team_a.post("/keys").await.expect(403).error(), "forbidden");

    // Open routes.
    anonymous.get("/health").await.expect(200);
    anonymous.get("/metrics").await.expect(200);
    anonymous.get("/openapi.json").await.expect(200);

    // Nothing was created by the refused requests, and refusals count under no command, as NOAUTH.
    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    assert_eq!(tcp.cmd(&format!("AUTH {ROOT}")).await, "OK");
    assert_eq!(tcp.stat("keys").await, 0);
    assert_eq!(tcp.stat("cmd_gen").await, 0);
    daemon.stop().await;
}

#[tokio::test]
async fn a_granted_token_or_jwt_works_as_on_tcp() {
    let (daemon, _files) = start().await;
    let team_a = daemon.client().with_bearer(TEAM_A);
    let id = team_a.gen_one("/pools/team-a").await;
    let (leased, token) = team_a.lease("/pools/team-a").await;
    assert_eq!(leased, id);

    // The same key, seen by a TCP connection holding the same token.
    let mut tcp = Client::connect(daemon.tcp.addr()).await;
    assert_eq!(tcp.cmd(&format!("AUTH {TEAM_A}")).await, "OK");
    assert_eq!(tcp.cmd(&format!("REL {id} {token}")).await, "RELEASED");

    // A JWT for team-a, and the root token for any pool.
    let jwt = mint_hs256(JWT_SECRET, "team-a", unix_secs() + 60, None);
    let by_jwt = daemon.client().with_bearer(&jwt);
    assert_eq!(by_jwt.lease("/pools/team-a").await.0, id);
    by_jwt.get("/pools/team-b/keys").await.expect(403);
    let root = daemon.client().with_bearer(ROOT);
    root.gen_one("").await;
    root.gen_one("/pools/team-b").await;

    // POOLS lists only what the token grants, as on TCP.
    let listed = team_a.get("/pools").await.expect(200).json();
    assert_eq!(listed["pools"], json!([{ "name": "team-a", "keys": 1 }]));
    let all = root.get("/pools").await.expect(200).json();
    assert_eq!(all["pools"].as_array().map(Vec::len), Some(3));
    daemon.stop().await;
}
