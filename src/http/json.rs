//! From the engine's reply, in wire form, to an HTTP status and a JSON body (or, for HEAD, headers).
//!
//! The gateway runs requests through the same `execute` as TCP, which writes protocol replies; mapping
//! those replies here, rather than adding a second way out of `execute`, is what keeps the two front ends
//! answering alike. Replies are whole lines of printable ASCII (`protocol::reply` guarantees it), so they
//! are read as text.
//!
//! Errors, whatever the route: `CLIENT_ERROR` is 400, `ERROR NOAUTH` 401, `NOT_FOUND` 404, `NOT_BLOCKED`
//! and `STALE` 409, `SERVER_ERROR` 503, each with `{"error": "<message>"}`.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// How a successful reply is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// GEN: `{"key_id"}` for one key, `{"keys": [...]}` when a count was asked for; 201.
    Generated { listed: bool },
    /// ADD: 201 `{"key_id"}` for a new key, 200 `{"key_id", "status": "exists"}` for a known secret.
    Added,
    /// LEASE: `{"key_id", "token"}` and `"secret"` when the key has one.
    Leased,
    /// A one-word reply (`RELEASED`, `DELETED`, ...): `{"status": "<word in lower case>"}`.
    Status,
    /// INFO: its fields, numbers as numbers.
    Info,
    /// INFO for HEAD: its fields as `X-Keypool-*` headers, no body.
    InfoHeaders,
    /// STATS: its fields, numbers as numbers.
    Stats,
    /// POOLS: `{"pools": [{"name", "keys"}], "next_cursor"}`.
    Pools,
    /// PING: `{"status": "ok"}`.
    Health,
}

/// An `{"error": message}` answer.
pub fn error(status: StatusCode, message: &str) -> Response {
    body(status, &json!({ "error": message }))
}

/// A JSON answer.
pub fn body(status: StatusCode, value: &Value) -> Response {
    let mut text = value.to_string();
    text.push('\n');
    (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], text).into_response()
}

/// The answer to `reply`, a complete protocol reply, shown as `shape`.
pub fn respond(shape: Shape, reply: &[u8]) -> Response {
    let text = String::from_utf8_lossy(reply);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.first().copied().unwrap_or_default();
    let (word, rest) = first.split_once(' ').unwrap_or((first, ""));
    let failed = match word {
        "CLIENT_ERROR" => Some((StatusCode::BAD_REQUEST, rest)),
        "ERROR" => Some((StatusCode::UNAUTHORIZED, "authentication required")),
        "SERVER_ERROR" => Some((StatusCode::SERVICE_UNAVAILABLE, rest)),
        "NOT_FOUND" => Some((StatusCode::NOT_FOUND, "not found")),
        "NOT_BLOCKED" => Some((StatusCode::CONFLICT, "not blocked")),
        "STALE" => Some((StatusCode::CONFLICT, "stale")),
        _ => None,
    };
    if let Some((status, message)) = failed {
        return match shape {
            // A HEAD answer has no body; its status says it all.
            Shape::InfoHeaders => status.into_response(),
            _ => error(status, message),
        };
    }
    match shape {
        Shape::Generated { listed } => {
            let ids: Vec<&str> = lines.iter().filter_map(|line| line.strip_prefix("KEY ")).collect();
            match (listed, ids.first()) {
                (true, _) => body(StatusCode::CREATED, &json!({ "keys": ids })),
                (false, Some(id)) => body(StatusCode::CREATED, &json!({ "key_id": id })),
                (false, None) => unexpected(first),
            }
        }
        Shape::Added => match (word, rest) {
            ("KEY", id) => body(StatusCode::CREATED, &json!({ "key_id": id })),
            ("EXISTS", id) => body(StatusCode::OK, &json!({ "key_id": id, "status": "exists" })),
            _ => unexpected(first),
        },
        Shape::Leased => {
            let mut fields = rest.split(' ');
            match (word, fields.next(), fields.next().and_then(|token| token.parse::<u64>().ok())) {
                ("LEASED", Some(id), Some(token)) => {
                    let mut leased = json!({ "key_id": id, "token": token });
                    if let Some(secret) = fields.next() {
                        leased["secret"] = Value::from(secret);
                    }
                    body(StatusCode::OK, &leased)
                }
                _ => unexpected(first),
            }
        }
        Shape::Status => body(StatusCode::OK, &json!({ "status": word.to_ascii_lowercase().replace('_', " ") })),
        Shape::Health => body(StatusCode::OK, &json!({ "status": "ok" })),
        Shape::Info | Shape::Stats => body(StatusCode::OK, &Value::Object(stat_fields(&lines))),
        Shape::InfoHeaders => info_headers(&lines),
        Shape::Pools => {
            let pools: Vec<Value> = lines
                .iter()
                .filter_map(|line| line.strip_prefix("POOL "))
                .filter_map(|line| line.split_once(' '))
                .map(|(name, keys)| json!({ "name": name, "keys": keys.parse::<u64>().unwrap_or_default() }))
                .collect();
            let cursor = lines.iter().find_map(|line| line.strip_prefix("END ")).and_then(|c| c.parse::<u64>().ok());
            body(StatusCode::OK, &json!({ "pools": pools, "next_cursor": cursor.unwrap_or_default() }))
        }
    }
}

/// `STAT <name> <value>` lines as a JSON object; a value that is a whole number becomes a number.
fn stat_fields(lines: &[&str]) -> Map<String, Value> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("STAT "))
        .filter_map(|line| line.split_once(' '))
        .map(|(name, value)| {
            let value = value.parse::<u64>().map_or_else(|_| Value::from(value), Value::from);
            (name.to_string(), value)
        })
        .collect()
}

/// The header each INFO field is sent as on a HEAD answer.
const INFO_HEADERS: [(&str, &str); 6] = [
    ("state", "x-keypool-state"),
    ("created_ms", "x-keypool-created-ms"),
    ("alive_until_ms", "x-keypool-alive-until-ms"),
    ("blocked_until_ms", "x-keypool-blocked-until-ms"),
    ("free_at_ms", "x-keypool-free-at-ms"),
    ("leases", "x-keypool-leases"),
];

/// A HEAD answer: 200 and INFO's fields as `X-Keypool-*` headers (the fields absent from INFO, absent).
fn info_headers(lines: &[&str]) -> Response {
    let mut headers = HeaderMap::new();
    for line in lines.iter().filter_map(|line| line.strip_prefix("STAT ")) {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let Some((_, header)) = INFO_HEADERS.iter().find(|(field, _)| *field == name) else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(header), value);
        }
    }
    (StatusCode::OK, headers).into_response()
}

/// A reply this route should never get: a bug, reported as such rather than as a guess.
fn unexpected(first: &str) -> Response {
    tracing::warn!(reply = first.split(' ').next().unwrap_or_default(), "HTTP gateway: unexpected reply");
    error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply from the engine")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("a body");
        (status, serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[tokio::test]
    async fn wire_errors_become_statuses_with_their_messages() {
        let cases: [(&[u8], StatusCode, &str); 5] = [
            (
                b"CLIENT_ERROR wait is longer than the maximum, 5m\r\n",
                StatusCode::BAD_REQUEST,
                "wait is longer than the maximum, 5m",
            ),
            (b"NOT_FOUND\r\n", StatusCode::NOT_FOUND, "not found"),
            (b"NOT_BLOCKED\r\n", StatusCode::CONFLICT, "not blocked"),
            (b"STALE\r\n", StatusCode::CONFLICT, "stale"),
            (b"SERVER_ERROR pool full\r\n", StatusCode::SERVICE_UNAVAILABLE, "pool full"),
        ];
        for (reply, status, message) in cases {
            assert_eq!(json_of(respond(Shape::Status, reply)).await, (status, json!({ "error": message })));
        }
    }

    #[tokio::test]
    async fn info_fields_are_numbers_where_they_are_numbers() {
        let reply =
            b"STAT id abc\r\nSTAT state blocked\r\nSTAT created_ms 17\r\nSTAT token 42\r\nSTAT leases 1\r\nEND\r\n";
        let (status, info) = json_of(respond(Shape::Info, reply)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(info, json!({ "id": "abc", "state": "blocked", "created_ms": 17, "token": 42, "leases": 1 }));
    }

    #[tokio::test]
    async fn a_lease_carries_its_secret_only_when_the_key_has_one() {
        let (_, plain) = json_of(respond(Shape::Leased, b"LEASED abc 7\r\n")).await;
        assert_eq!(plain, json!({ "key_id": "abc", "token": 7 }));
        let (_, secret) = json_of(respond(Shape::Leased, b"LEASED abc 7 sk-1\r\n")).await;
        assert_eq!(secret, json!({ "key_id": "abc", "token": 7, "secret": "sk-1" }));
    }
}
