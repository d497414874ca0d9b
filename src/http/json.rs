//! From the engine's reply, in wire form, to an HTTP status and a JSON body (or, for HEAD, headers).
//!
//! The gateway runs requests through the same `execute` as TCP, which writes protocol replies; mapping
//! those replies here, rather than adding a second way out of `execute`, is what keeps the two front ends
//! answering alike. Replies are whole lines of printable ASCII (`protocol::reply` guarantees it), so they
//! are read as text.
//!
//! Errors, whatever the route: `CLIENT_ERROR` is 400, `ERROR NOAUTH` 401, `NOT_FOUND` 404, `NOT_BLOCKED`
//! and `STALE` 409, `SERVER_ERROR` 503, each with `{"error": "<message>"}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;

/// An answer to an HTTP request: the whole body is known before the head is sent.
pub type Answer = Response<Full<Bytes>>;

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

/// A flat JSON object written straight into its body: the gateway's answers are a few fields each, and
/// writing them costs less than building a `serde_json::Value` first (strings are still escaped by
/// serde_json).
pub struct Object {
    text: Vec<u8>,
}

impl Object {
    pub fn new() -> Object {
        let mut text = Vec::with_capacity(96);
        text.push(b'{');
        Object { text }
    }

    fn name(&mut self, name: &str) {
        if self.text.len() > 1 {
            self.text.push(b',');
        }
        self.string_value(name);
        self.text.push(b':');
    }

    fn string_value(&mut self, value: &str) {
        // Writing a `&str` to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut self.text, value);
    }

    /// Adds `"name": "value"`.
    pub fn string(mut self, name: &str, value: &str) -> Object {
        self.name(name);
        self.string_value(value);
        self
    }

    /// Adds `"name": value` for a whole number.
    pub fn number(mut self, name: &str, value: u64) -> Object {
        self.name(name);
        self.text.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// Adds `"name": [strings]`.
    pub fn strings<'a>(mut self, name: &str, values: impl Iterator<Item = &'a str>) -> Object {
        self.name(name);
        self.text.push(b'[');
        for (at, value) in values.enumerate() {
            if at > 0 {
                self.text.push(b',');
            }
            self.string_value(value);
        }
        self.text.push(b']');
        self
    }

    /// Adds `"name": <JSON>`, for a value written by another `Object` or by serde_json.
    pub fn raw(mut self, name: &str, json: &[u8]) -> Object {
        self.name(name);
        self.text.extend_from_slice(json);
        self
    }

    /// The object's text, without a trailing newline.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.text.push(b'}');
        self.text
    }

    /// The answer with this object as its body.
    pub fn answer(self, status: StatusCode) -> Answer {
        json_text(status, self.into_bytes())
    }
}

/// An answer of `status` with `body` as its `content_type`.
pub fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    answer.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}

/// An answer of `status` with no body.
pub fn empty(status: StatusCode) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = status;
    answer
}

/// An `{"error": message}` answer.
pub fn error(status: StatusCode, message: &str) -> Answer {
    Object::new().string("error", message).answer(status)
}

/// A JSON answer from a document built as a `Value` (the OpenAPI document).
pub fn body(status: StatusCode, value: &Value) -> Answer {
    json_text(status, value.to_string().into_bytes())
}

/// An answer whose body is `text`, a JSON document, and a newline (for `curl` at a terminal).
fn json_text(status: StatusCode, mut text: Vec<u8>) -> Answer {
    text.push(b'\n');
    with_body(status, "application/json", text)
}

/// The answer to `reply`, a complete protocol reply, shown as `shape`.
pub fn respond(shape: Shape, reply: &[u8]) -> Answer {
    // Replies are printable ASCII; anything else would be a bug, and is answered as one.
    let Ok(text) = std::str::from_utf8(reply) else {
        return unexpected("(binary)");
    };
    let first = text.lines().next().unwrap_or_default();
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
            Shape::InfoHeaders => empty(status),
            _ => error(status, message),
        };
    }
    match shape {
        Shape::Generated { listed } => {
            let ids = text.lines().filter_map(|line| line.strip_prefix("KEY "));
            match (listed, ids.clone().next()) {
                (true, _) => Object::new().strings("keys", ids).answer(StatusCode::CREATED),
                (false, Some(id)) => Object::new().string("key_id", id).answer(StatusCode::CREATED),
                (false, None) => unexpected(first),
            }
        }
        Shape::Added => match (word, rest) {
            ("KEY", id) => Object::new().string("key_id", id).answer(StatusCode::CREATED),
            ("EXISTS", id) => Object::new().string("key_id", id).string("status", "exists").answer(StatusCode::OK),
            _ => unexpected(first),
        },
        Shape::Leased => {
            let mut fields = rest.split(' ');
            match (word, fields.next(), fields.next().and_then(|token| token.parse::<u64>().ok())) {
                ("LEASED", Some(id), Some(token)) => {
                    let leased = Object::new().string("key_id", id).number("token", token);
                    let leased = match fields.next() {
                        Some(secret) => leased.string("secret", secret),
                        None => leased,
                    };
                    leased.answer(StatusCode::OK)
                }
                _ => unexpected(first),
            }
        }
        Shape::Status => {
            let status = word.to_ascii_lowercase().replace('_', " ");
            Object::new().string("status", &status).answer(StatusCode::OK)
        }
        Shape::Health => Object::new().string("status", "ok").answer(StatusCode::OK),
        Shape::Info | Shape::Stats => stat_fields(text).answer(StatusCode::OK),
        Shape::InfoHeaders => info_headers(text),
        Shape::Pools => {
            let mut pools = b"[".to_vec();
            let listed =
                text.lines().filter_map(|line| line.strip_prefix("POOL ")).filter_map(|line| line.split_once(' '));
            for (at, (name, keys)) in listed.enumerate() {
                if at > 0 {
                    pools.push(b',');
                }
                let pool = Object::new().string("name", name).number("keys", keys.parse::<u64>().unwrap_or_default());
                pools.extend_from_slice(&pool.into_bytes());
            }
            pools.push(b']');
            let cursor = text.lines().find_map(|line| line.strip_prefix("END ")).and_then(|c| c.parse::<u64>().ok());
            Object::new().raw("pools", &pools).number("next_cursor", cursor.unwrap_or_default()).answer(StatusCode::OK)
        }
    }
}

/// `STAT <name> <value>` lines as a JSON object; a value that is a whole number becomes a number.
fn stat_fields(text: &str) -> Object {
    text.lines().filter_map(|line| line.strip_prefix("STAT ")).filter_map(|line| line.split_once(' ')).fold(
        Object::new(),
        |object, (name, value)| match value.parse::<u64>() {
            Ok(number) => object.number(name, number),
            Err(_) => object.string(name, value),
        },
    )
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
fn info_headers(text: &str) -> Answer {
    let mut answer = empty(StatusCode::OK);
    let headers: &mut HeaderMap = answer.headers_mut();
    for line in text.lines().filter_map(|line| line.strip_prefix("STAT ")) {
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
    answer
}

/// A reply this route should never get: a bug, reported as such rather than as a guess.
fn unexpected(first: &str) -> Answer {
    tracing::warn!(reply = first.split(' ').next().unwrap_or_default(), "HTTP gateway: unexpected reply");
    error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply from the engine")
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;
    use serde_json::json;

    async fn json_of(answer: Answer) -> (StatusCode, Value) {
        let status = answer.status();
        let bytes = answer.into_body().collect().await.expect("a body").to_bytes();
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

    #[test]
    fn objects_are_valid_json_whatever_their_strings_hold() {
        let text = Object::new()
            .string("plain", "abc")
            .string("awkward", "quote \" backslash \\ newline \n")
            .number("big", u64::MAX)
            .strings("list", ["a", "\"b\""].into_iter())
            .into_bytes();
        let parsed: Value = serde_json::from_slice(&text).expect("JSON");
        assert_eq!(
            parsed,
            json!({ "plain": "abc", "awkward": "quote \" backslash \\ newline \n", "big": u64::MAX, "list": ["a", "\"b\""] })
        );
        assert_eq!(Object::new().into_bytes(), b"{}");
    }

    #[tokio::test]
    async fn a_reply_that_is_not_text_is_a_500_whatever_the_shape() {
        for shape in [Shape::Status, Shape::Leased, Shape::Info, Shape::Health] {
            let (status, body) = json_of(respond(shape, b"\xff\xfe\r\n")).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{shape:?}");
            assert_eq!(body, json!({ "error": "unexpected reply from the engine" }), "{shape:?}");
        }
    }

    #[tokio::test]
    async fn pools_are_listed_with_their_cursor() {
        let (_, pools) = json_of(respond(Shape::Pools, b"POOL a 3\r\nPOOL b 0\r\nEND 7\r\n")).await;
        assert_eq!(
            pools,
            json!({ "pools": [{ "name": "a", "keys": 3 }, { "name": "b", "keys": 0 }], "next_cursor": 7 })
        );
        let (_, empty) = json_of(respond(Shape::Pools, b"END 0\r\n")).await;
        assert_eq!(empty, json!({ "pools": [], "next_cursor": 0 }));
    }

    #[tokio::test]
    async fn a_lease_carries_its_secret_only_when_the_key_has_one() {
        let (_, plain) = json_of(respond(Shape::Leased, b"LEASED abc 7\r\n")).await;
        assert_eq!(plain, json!({ "key_id": "abc", "token": 7 }));
        let (_, secret) = json_of(respond(Shape::Leased, b"LEASED abc 7 sk-1\r\n")).await;
        assert_eq!(secret, json!({ "key_id": "abc", "token": 7, "secret": "sk-1" }));
    }
}
