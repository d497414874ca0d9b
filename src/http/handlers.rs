//! One handler for every route: check the method, read the path, query and body into a
//! [`protocol::Request`](crate::protocol::Request), check the bearer token against the pool, and run the
//! request through [`run_one`] as a TCP connection would.
//!
//! Arguments are checked here only for their form (an id of 24 letters and digits, a duration with a
//! unit, a token of digits), with the protocol's own error messages; their limits (`--max-wait`,
//! `--max-block`, `--max-secret`) are `execute`'s to check, so they are the same on both front ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

use super::json::{self, Answer, Shape};
use super::router::{self, Endpoint, Matched, Route, Unmatched};
use super::{metrics, openapi, Gateway, MAX_BODY};
use crate::auth::Grant;
use crate::pool::{valid_pool_name, KeyId, DEFAULT_POOL, MAX_GEN_COUNT};
use crate::protocol::{duration, LeaseArgs, Request as Command, Secret};
use crate::server::telemetry::Frontend;
use crate::server::{run_one, Session};

/// A request refused before it reached the engine, already in its final form (boxed: an answer is large,
/// and refusals are the rare path).
type Refused = Box<Answer>;

/// Serves one request: finds its route, then answers it.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let matched = match router::find(parts.uri.path()) {
        Ok(matched) => matched,
        Err(Unmatched::NoRoute) => return json::error(StatusCode::NOT_FOUND, "no such route"),
        Err(Unmatched::Malformed) => {
            return json::error(StatusCode::BAD_REQUEST, "malformed path: a parameter is not percent-encoded UTF-8")
        }
    };
    let request = Asked { method: &parts.method, query: parts.uri.query(), headers: &parts.headers, body };
    match serve(&matched, &gateway, request).await {
        Ok(answer) => answer,
        Err(refused) => *refused,
    }
}

/// A request, taken apart: the matched path aside, what the handlers read of it.
struct Asked<'a> {
    method: &'a Method,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: Incoming,
}

async fn serve(matched: &Matched<'_>, gateway: &Gateway, request: Asked<'_>) -> Result<Answer, Refused> {
    let route = matched.route;
    let method = request.method;
    if !route.methods.contains(&method.as_str()) {
        return Err(method_not_allowed(route));
    }
    let query = Query::parse(request.query)?;
    // The pool a key route acts on; `None` for the routes that name no pool.
    let pool = match matched.pool.as_deref() {
        Some(name) if !valid_pool_name(name.as_bytes()) => {
            return Err(bad_request("malformed pool name: 1 to 64 letters, digits, '_', '.' or '-'"))
        }
        Some(name) => Some(name),
        None if matches!(route.endpoint, Endpoint::Keys | Endpoint::Key | Endpoint::Touch | Endpoint::KeepAlive) => {
            Some(DEFAULT_POOL)
        }
        None => None,
    };
    let id = matched.id.as_deref().map(key_id).transpose()?;
    let engine = Engine { gateway, headers: request.headers, pool };

    match (route.endpoint, id) {
        (Endpoint::Health, _) => {
            query.allow(&[])?;
            // Through the engine, which takes its lock: a daemon whose engine is stuck is not alive.
            engine.run_open(Command::Health, Shape::Health).await
        }
        (Endpoint::Metrics, _) => {
            query.allow(&[])?;
            Ok(metrics::scrape(&gateway.registry))
        }
        (Endpoint::OpenApi, _) => {
            query.allow(&[])?;
            Ok(json::body(StatusCode::OK, &openapi::document()))
        }
        (Endpoint::Stats, _) => {
            query.allow(&[])?;
            engine.run(Command::Stats { pool: matched.pool.as_deref() }, Shape::Stats).await
        }
        (Endpoint::Pools, _) => {
            query.allow(&["cursor"])?;
            let cursor = query.token("cursor", "malformed cursor")?.unwrap_or(0);
            engine.run(Command::Pools { cursor }, Shape::Pools).await
        }
        (Endpoint::Keys, _) if *method == Method::GET => {
            query.allow(&["wait", "block"])?;
            let lease = LeaseArgs { wait: query.duration("wait")?, block: query.duration("block")? };
            engine.run(Command::Lease(lease), Shape::Leased).await
        }
        (Endpoint::Keys, _) => create(&engine, &query, request.headers, request.body).await,
        (Endpoint::Key, Some(id)) if *method == Method::PUT => {
            query.allow(&["token", "delay"])?;
            let token = query.token("token", "malformed token")?;
            engine.run(Command::Rel { id, token, delay: query.duration("delay")? }, Shape::Status).await
        }
        (Endpoint::Key, Some(id)) if *method == Method::DELETE => {
            query.allow(&[])?;
            engine.run(Command::Del(id), Shape::Status).await
        }
        (Endpoint::Key, Some(id)) => {
            query.allow(&[])?;
            let shape = if *method == Method::HEAD { Shape::InfoHeaders } else { Shape::Info };
            engine.run(Command::Info(id), shape).await
        }
        (Endpoint::Touch, Some(id)) => {
            query.allow(&["token", "block"])?;
            let token = query.token("token", "malformed token")?;
            engine.run(Command::Touch { id, token, block: query.duration("block")? }, Shape::Status).await
        }
        (Endpoint::KeepAlive, Some(id)) => {
            query.allow(&[])?;
            engine.run(Command::Ping(id), Shape::Status).await
        }
        // Every route with an id in its path was given one above.
        (Endpoint::Key | Endpoint::Touch | Endpoint::KeepAlive, None) => Err(not_found()),
    }
}

/// `POST /keys`: GEN, or ADD when the body carries a secret.
async fn create(
    engine: &Engine<'_>,
    query: &Query<'_>,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Answer, Refused> {
    query.allow(&[])?;
    let body = json_body(headers, body).await?;
    let Some(body) = body else {
        return engine.run(Command::Gen { count: 1 }, Shape::Generated { listed: false }).await;
    };
    let Value::Object(fields) = body else {
        return Err(bad_request("the body must be a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|name| !["count", "secret", "keepalive"].contains(&name.as_str())) {
        return Err(bad_request(&format!("unknown field '{}'", printable(unknown))));
    }
    match (fields.get("count"), fields.get("secret")) {
        (Some(_), Some(_)) => Err(bad_request("give either count (new keys) or secret (a key of yours), not both")),
        (None, Some(secret)) => {
            let Some(secret) = secret.as_str() else {
                return Err(bad_request("secret must be a string"));
            };
            if secret.is_empty() {
                return Err(bad_request("ADD needs a secret"));
            }
            if !secret.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
                return Err(bad_request("secret must be printable ASCII without spaces"));
            }
            let keepalive = match fields.get("keepalive") {
                None => None,
                Some(Value::String(text)) => Some(parse_duration("keepalive", text)?),
                Some(_) => return Err(bad_request("keepalive must be a duration such as \"30s\" or \"0s\"")),
            };
            engine.run(Command::Add { secret: Secret(secret.as_bytes()), keepalive }, Shape::Added).await
        }
        (count, None) => {
            if fields.contains_key("keepalive") {
                return Err(bad_request("keepalive is for a key with a secret"));
            }
            let count = match count {
                None => 1,
                Some(count) => count
                    .as_u64()
                    .filter(|count| (1..=u64::from(MAX_GEN_COUNT)).contains(count))
                    .and_then(|count| u32::try_from(count).ok())
                    .ok_or_else(|| {
                        bad_request(&format!("GEN count must be a whole number from 1 to {MAX_GEN_COUNT}"))
                    })?,
            };
            engine.run(Command::Gen { count }, Shape::Generated { listed: fields.contains_key("count") }).await
        }
    }
}

/// What a route needs to run a request on the engine.
struct Engine<'a> {
    gateway: &'a Gateway,
    headers: &'a HeaderMap,
    /// The pool the request acts on, which the bearer token must grant; `None` for routes of the whole
    /// daemon (`/stats`, `/pools`), which any valid token may use, as on TCP.
    pool: Option<&'a str>,
}

impl Engine<'_> {
    /// Checks the bearer token, then runs `request` and answers in `shape`.
    async fn run(&self, request: Command<'_>, shape: Shape) -> Result<Answer, Refused> {
        let grant = self.authorize()?;
        Ok(self.execute(grant, request, shape).await)
    }

    /// Runs `request` without asking for a token (`/health`).
    async fn run_open(&self, request: Command<'_>, shape: Shape) -> Result<Answer, Refused> {
        Ok(self.execute(None, request, shape).await)
    }

    async fn execute(&self, grant: Option<Grant>, request: Command<'_>, shape: Shape) -> Answer {
        let shared = &self.gateway.shared;
        let command = request.command();
        let mut session = Session::new(shared);
        session.grant = grant;
        if let Some(pool) = self.pool {
            session.use_pool(pool);
        }
        let started = Instant::now();
        let reply = tokio::select! {
            // The request first: most are answered on their first poll, and then the shutdown signal is
            // never polled, which would register (and drop) a waiter on it under its lock.
            biased;
            reply = run_one(shared, &mut session, request) => reply,
            // Shutdown: a waiting request is not kept waiting; the session's Drop withdraws its wait.
            () = self.gateway.stop.cancelled() => {
                return json::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            }
        };
        shared.telemetry.record_latency(Frontend::Http, command, 1, started.elapsed());
        json::respond(shape, &reply)
    }

    /// The grant of the request's bearer token: `None` when authentication is off. 401 without a token or
    /// with one that AUTH would refuse, 403 when it does not grant the request's pool.
    fn authorize(&self) -> Result<Option<Grant>, Refused> {
        let auth = &self.gateway.shared.config.auth;
        if !auth.is_enabled() {
            return Ok(None);
        }
        let presented = self
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(presented) = presented.filter(|token| !token.is_empty()) else {
            return Err(unauthorized("authentication required: send Authorization: Bearer <token>"));
        };
        let grant = auth.authenticate(presented.as_bytes()).map_err(|rejection| {
            // Why, for the debug log only; the client is told no more than AUTH tells it.
            tracing::debug!(?rejection, "HTTP bearer token refused");
            unauthorized("invalid token")
        })?;
        match self.pool {
            Some(pool) if !grant.allows(pool) => Err(Box::new(json::error(StatusCode::FORBIDDEN, "forbidden"))),
            _ => Ok(Some(grant)),
        }
    }
}

/// The body of a POST as JSON: `None` when it is empty. 413 past [`MAX_BODY`], 415 when it says it is not
/// JSON, 400 when it is not.
async fn json_body(headers: &HeaderMap, body: Incoming) -> Result<Option<Value>, Refused> {
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Box::new(json::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be application/json")));
        }
    }
    let declared = headers.get(CONTENT_LENGTH).and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    // Past the limit while streaming (a chunked body), or the client went away: either way, no request.
    let bytes: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(too_large()),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|error| bad_request(&format!("the body is not JSON: {error}")))
}

/// A request's query parameters, as given (no percent-decoding: no value the routes take needs it).
struct Query<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Query<'a> {
    fn parse(query: Option<&'a str>) -> Result<Query<'a>, Refused> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(bad_request(&format!("parameter '{}' is given twice", printable(name))));
            }
            pairs.push((name, value));
        }
        Ok(Query { pairs })
    }

    /// Refuses any parameter but `known`.
    fn allow(&self, known: &[&str]) -> Result<(), Refused> {
        match self.pairs.iter().find(|(name, _)| !known.contains(name)) {
            Some((name, _)) => Err(bad_request(&format!("unknown parameter '{}'", printable(name)))),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(given, _)| *given == name).map(|(_, value)| *value)
    }

    /// A duration parameter, such as `wait=5s`.
    fn duration(&self, name: &str) -> Result<Option<Duration>, Refused> {
        self.get(name).map(|text| parse_duration(name, text)).transpose()
    }

    /// A whole-number parameter (a fencing token, a cursor), as the protocol reads one.
    fn token(&self, name: &str, malformed: &str) -> Result<Option<u64>, Refused> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_request(malformed));
        }
        text.parse::<u64>().map(Some).map_err(|_| bad_request(malformed))
    }
}

fn parse_duration(what: &str, text: &str) -> Result<Duration, Refused> {
    duration::parse(text).map_err(|error| bad_request(&format!("{what} {error}")))
}

fn key_id(text: &str) -> Result<KeyId, Refused> {
    KeyId::parse(text.as_bytes()).ok_or_else(|| bad_request("malformed key id: ids are 24 letters and digits"))
}

/// At most 32 characters of a client's text, safe to quote in an error.
fn printable(text: &str) -> String {
    text.chars().take(32).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

fn bad_request(message: &str) -> Refused {
    Box::new(json::error(StatusCode::BAD_REQUEST, message))
}

fn not_found() -> Refused {
    Box::new(json::error(StatusCode::NOT_FOUND, "not found"))
}

fn too_large() -> Refused {
    Box::new(json::error(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is larger than {} KiB", MAX_BODY / 1024)))
}

fn unauthorized(message: &str) -> Refused {
    let mut answer = json::error(StatusCode::UNAUTHORIZED, message);
    answer.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Box::new(answer)
}

fn method_not_allowed(route: &Route) -> Refused {
    let mut answer = json::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    if let Ok(allow) = HeaderValue::from_str(&route.methods.join(", ")) {
        answer.headers_mut().insert(ALLOW, allow);
    }
    Box::new(answer)
}
