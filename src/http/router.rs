//! The gateway's routes, as one table that the router is built from and the OpenAPI document is checked
//! against.
//!
//! Each path is routed to one handler for every method, which answers the methods the table lists and
//! 405 with `Allow` for the rest. Doing the method dispatch here rather than with axum's per-method
//! routers keeps `Allow` exactly the table's (axum would also answer HEAD wherever GET is served, and a
//! HEAD of `/keys` must not lease a key).
//!
//! Whatever goes wrong before a handler runs (a path parameter that is not UTF-8, say) or past the routes
//! (an unknown path) is answered with the same `{"error": ...}` body as everything else.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::handlers;
use super::json;
use super::Gateway;

/// What a path does; the handler dispatches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/keys`: GET leases (LEASE), POST creates (GEN, or ADD with a secret).
    Keys,
    /// `/keys/{id}`: GET and HEAD describe (INFO), PUT releases (REL), DELETE deletes (DEL).
    Key,
    /// `/keys/{id}/touch`: PUT restarts a lease's block window (TOUCH).
    Touch,
    /// `/keepalive/{id}`: PUT restarts a key's keep-alive window (PING id).
    KeepAlive,
    /// `/stats` (STATS) and `/pools/{pool}/stats` (STATS pool).
    Stats,
    /// `/pools`: the pools, a page at a time (POOLS).
    Pools,
    /// `/health`: liveness (PING).
    Health,
    /// `/metrics`: Prometheus text format.
    Metrics,
    /// `/openapi.json`: the OpenAPI document.
    OpenApi,
}

/// One path, what it does, and the methods it answers.
#[derive(Debug)]
pub struct Route {
    /// The path template, `{name}` for a parameter (axum's syntax, and OpenAPI's).
    pub path: &'static str,
    pub endpoint: Endpoint,
    pub methods: &'static [&'static str],
}

/// Every route the gateway serves. Key routes come twice: for the `default` pool, and under
/// `/pools/{pool}` for a named one.
pub const ROUTES: &[Route] = &[
    Route { path: "/keys", endpoint: Endpoint::Keys, methods: &["GET", "POST"] },
    Route { path: "/keys/{id}", endpoint: Endpoint::Key, methods: &["GET", "HEAD", "PUT", "DELETE"] },
    Route { path: "/keys/{id}/touch", endpoint: Endpoint::Touch, methods: &["PUT"] },
    Route { path: "/keepalive/{id}", endpoint: Endpoint::KeepAlive, methods: &["PUT"] },
    Route { path: "/stats", endpoint: Endpoint::Stats, methods: &["GET"] },
    Route { path: "/pools/{pool}/keys", endpoint: Endpoint::Keys, methods: &["GET", "POST"] },
    Route { path: "/pools/{pool}/keys/{id}", endpoint: Endpoint::Key, methods: &["GET", "HEAD", "PUT", "DELETE"] },
    Route { path: "/pools/{pool}/keys/{id}/touch", endpoint: Endpoint::Touch, methods: &["PUT"] },
    Route { path: "/pools/{pool}/keepalive/{id}", endpoint: Endpoint::KeepAlive, methods: &["PUT"] },
    Route { path: "/pools/{pool}/stats", endpoint: Endpoint::Stats, methods: &["GET"] },
    Route { path: "/pools", endpoint: Endpoint::Pools, methods: &["GET"] },
    Route { path: "/health", endpoint: Endpoint::Health, methods: &["GET"] },
    Route { path: "/metrics", endpoint: Endpoint::Metrics, methods: &["GET"] },
    Route { path: "/openapi.json", endpoint: Endpoint::OpenApi, methods: &["GET"] },
];

/// The gateway's router: every route of [`ROUTES`], a JSON 404 for any other path, and JSON bodies on the
/// errors axum answers by itself.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        let method_router = if route.path.contains('{') {
            any(
                move |State(gateway): State<Arc<Gateway>>,
                      Path(params): Path<HashMap<String, String>>,
                      request: Request| { handlers::handle(route, gateway, params, request) },
            )
        } else {
            any(move |State(gateway): State<Arc<Gateway>>, request: Request| {
                handlers::handle(route, gateway, HashMap::new(), request)
            })
        };
        router = router.route(route.path, method_router);
    }
    router
        .fallback(|| async { json::error(axum::http::StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::map_response(errors_as_json))
        .with_state(gateway)
}

/// Gives an error that axum answered by itself (a path parameter it could not decode, say) the
/// gateway's `{"error": ...}` body, keeping its status and headers.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = std::str::from_utf8(&text).ok().map(str::trim).filter(|text| !text.is_empty());
    let message = message.or(status.canonical_reason()).unwrap_or("error").to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let rebuilt = json::error(status, &message).into_response();
    let (rebuilt_parts, body) = rebuilt.into_parts();
    parts.headers.extend(rebuilt_parts.headers);
    Response::from_parts(parts, body)
}
