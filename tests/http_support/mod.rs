//! Helpers for the HTTP gateway's tests: a daemon serving TCP and HTTP from one state, in-process on free
//! ports of 127.0.0.1, and a small JSON client over hyper's HTTP/1.1 client (keep-alive).
//!
//! Every request is bounded by [`common::IO_TIMEOUT`](super::common::IO_TIMEOUT), so a gateway that stops
//! answering fails the test instead of hanging it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keypool::server::{Config, Handle, Shared};
use serde_json::Value;

use super::common::{within, IO_TIMEOUT};

/// Both front ends on one engine.
pub struct Daemon {
    pub tcp: Handle,
    pub http: keypool::http::Handle,
    pub shared: Arc<Shared>,
}

impl Daemon {
    pub async fn start(config: Config) -> Daemon {
        let shared = Arc::new(Shared::new(config).expect("state without a data directory"));
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let tcp = Handle::start_shared(any_port, Arc::clone(&shared)).await.expect("bind TCP");
        let http = keypool::http::Handle::start(any_port, Arc::clone(&shared)).await.expect("bind HTTP");
        Daemon { tcp, http, shared }
    }

    /// A client of the gateway.
    pub fn client(&self) -> Http {
        Http::new(self.http.addr())
    }

    pub async fn stop(self) {
        within("the gateway to stop", self.http.stop()).await;
        within("the TCP server to stop", self.tcp.stop()).await;
    }
}

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics (failing the test) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {:?}", self.json())).to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Reply {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", String::from_utf8_lossy(&self.body));
        self
    }
}

/// A client of one gateway, with an optional bearer token.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    bearer: Option<String>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Http { client, base: format!("http://{addr}"), bearer: None }
    }

    /// This client, sending `Authorization: Bearer <token>`.
    pub fn with_bearer(&self, token: &str) -> Http {
        Http { bearer: Some(token.to_string()), ..self.clone() }
    }

    /// Sends a request; `body` is sent with `content_type` when given.
    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Reply {
        let mut request = hyper::Request::builder().method(method.clone()).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                request = request.header(CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(payload)).expect("a well-formed request");
        let what = format!("{method} {path}");
        within(&what, async {
            let response = self.client.request(request).await.unwrap_or_else(|error| panic!("{what}: {error}"));
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap_or_else(|error| panic!("{what}: body: {error}")).to_bytes();
            Reply { status: parts.status, headers: parts.headers, body }
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn head(&self, path: &str) -> Reply {
        self.send(Method::HEAD, path, None).await
    }

    pub async fn put(&self, path: &str) -> Reply {
        self.send(Method::PUT, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        self.send(Method::POST, path, None).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(("application/json", body.to_string().into_bytes()))).await
    }

    /// `GET <prefix>/keys` that must lease: the key id and token.
    pub async fn lease(&self, prefix: &str) -> (String, u64) {
        let reply = self.get(&format!("{prefix}/keys")).await;
        let leased = reply.expect(200).json();
        let id = leased["key_id"].as_str().expect("a key id").to_string();
        (id, leased["token"].as_u64().expect("a token"))
    }

    /// `POST <prefix>/keys` that must create one key: its id.
    pub async fn gen_one(&self, prefix: &str) -> String {
        let reply = self.post(&format!("{prefix}/keys")).await;
        reply.expect(201).json()["key_id"].as_str().expect("a key id").to_string()
    }
}

/// How long the tests' clients allow for one request.
pub const REQUEST_TIMEOUT: std::time::Duration = IO_TIMEOUT;
