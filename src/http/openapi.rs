//! `/openapi.json`: the OpenAPI 3 document of the gateway.
//!
//! The operations are written out here by hand, one per endpoint and method; the paths they sit under come
//! from the router's own table ([`ROUTES`]), so the document lists exactly the paths and methods the
//! gateway answers (a test sends every one of them, and checks each path's `Allow` against it).

use serde_json::{json, Map, Value};

use super::router::{Endpoint, ROUTES};
use crate::server::VERSION;

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut item = Map::new();
        for method in route.methods {
            let mut op = operation(route.endpoint, method);
            let mut parameters: Vec<Value> = Vec::new();
            if route.path.contains("{pool}") {
                parameters.push(path_parameter("pool", "The pool's name: 1 to 64 of [A-Za-z0-9_.-]."));
            }
            if route.path.contains("{id}") {
                parameters.push(path_parameter("id", "The key's id: 24 letters and digits."));
            }
            if let Some(Value::Array(query)) = op.get_mut("parameters").map(Value::take) {
                parameters.extend(query);
            }
            if !parameters.is_empty() {
                op["parameters"] = Value::Array(parameters);
            }
            if let Some(id) = op.get_mut("operationId") {
                // Unique per path: the pool form gets its own id.
                if route.path.starts_with("/pools/{pool}") {
                    *id = Value::from(format!("{}InPool", id.as_str().unwrap_or_default()));
                }
            }
            item.insert(method.to_ascii_lowercase(), op);
        }
        paths.insert(route.path.to_string(), Value::Object(item));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "keypool HTTP gateway",
            "version": VERSION,
            "description": "Leases API keys from a keypool daemon over HTTP: the same engine, pools, limits and \
                authentication as the line protocol (protocol.md). Key routes act on the pool `default`, or on \
                the pool named by the `/pools/{pool}` prefix.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": object(&[("error", json!({ "type": "string" }))]),
                "Status": object(&[("status", json!({ "type": "string" }))]),
                "Lease": object(&[
                    ("key_id", json!({ "type": "string" })),
                    ("token", json!({ "type": "integer", "format": "int64" })),
                    ("secret", json!({ "type": "string" })),
                ]),
            },
        },
        "security": [{ "bearer": [] }],
    })
}

/// The operation of `method` on `endpoint`.
fn operation(endpoint: Endpoint, method: &str) -> Value {
    let error = |description: &str| json!({ "description": description, "content": json_of("Error") });
    let status = |description: &str| json!({ "description": description, "content": json_of("Status") });
    let open = json!([]);
    match (endpoint, method) {
        (Endpoint::Keys, "GET") => json!({
            "operationId": "leaseKey",
            "summary": "Lease a random free key (LEASE).",
            "parameters": [
                query("wait", "How long to wait for a free key, as `LEASE <wait>` (e.g. 5s)."),
                query("block", "This lease's block window (e.g. 30s)."),
            ],
            "responses": {
                "200": { "description": "Leased.", "content": json_of("Lease") },
                "400": error("A malformed or out-of-range parameter."),
                "404": error("No key is free (after waiting)."),
            },
        }),
        (Endpoint::Keys, _) => json!({
            "operationId": "createKeys",
            "summary": "Create keys (GEN), or add a key carrying a secret of yours (ADD).",
            "requestBody": {
                "required": false,
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": {
                        "count": { "type": "integer", "minimum": 1, "maximum": 10000 },
                        "secret": { "type": "string" },
                        "keepalive": { "type": "string", "description": "ADD only: the key's keep-alive window; 0s: never expires." },
                    },
                } } },
            },
            "responses": {
                "201": { "description": "Created: `{\"key_id\"}`, or `{\"keys\": [...]}` when `count` was given.", "content": json_any() },
                "200": { "description": "ADD of a secret the pool already holds: `{\"key_id\", \"status\": \"exists\"}`.", "content": json_any() },
                "400": error("A malformed body."),
                "413": error("A body over 64 KiB."),
                "415": error("A body that is not application/json."),
                "503": error("The pool is full, or there are too many pools."),
            },
        }),
        (Endpoint::Key, "GET") => json!({
            "operationId": "describeKey",
            "summary": "Describe a key (INFO): its fields, numbers as numbers.",
            "responses": { "200": { "description": "The key.", "content": json_any() }, "404": error("No such key.") },
        }),
        (Endpoint::Key, "HEAD") => json!({
            "operationId": "headKey",
            "summary": "Describe a key (INFO) in headers.",
            "responses": {
                "200": { "description": "The key.", "headers": {
                    "X-Keypool-State": header("free, blocked or delayed"),
                    "X-Keypool-Created-Ms": header("creation time, Unix ms"),
                    "X-Keypool-Alive-Until-Ms": header("keep-alive deadline, Unix ms"),
                    "X-Keypool-Blocked-Until-Ms": header("end of the block, Unix ms, while blocked"),
                    "X-Keypool-Free-At-Ms": header("end of the delay, Unix ms, while delayed"),
                    "X-Keypool-Leases": header("how many times the key was leased"),
                } },
                "404": { "description": "No such key." },
            },
        }),
        (Endpoint::Key, "PUT") => json!({
            "operationId": "releaseKey",
            "summary": "Release a leased key (REL).",
            "parameters": [
                query("token", "Release only the lease with this fencing token."),
                query("delay", "Lease the key to no one for this long first (e.g. 60s)."),
            ],
            "responses": {
                "200": status("Released: `{\"status\": \"released\"}`."),
                "404": error("No such key."),
                "409": error("`not blocked` or `stale`."),
            },
        }),
        (Endpoint::Key, _) => json!({
            "operationId": "deleteKey",
            "summary": "Delete a key for good (DEL).",
            "responses": { "200": status("`{\"status\": \"deleted\"}`."), "404": error("No such key.") },
        }),
        (Endpoint::Touch, _) => json!({
            "operationId": "touchKey",
            "summary": "Start a lease's block window again (TOUCH).",
            "parameters": [
                query("token", "Touch only the lease with this fencing token."),
                query("block", "The new block window (e.g. 30s)."),
            ],
            "responses": {
                "200": status("`{\"status\": \"touched\"}`."),
                "404": error("No such key."),
                "409": error("`not blocked` or `stale`."),
            },
        }),
        (Endpoint::KeepAlive, _) => json!({
            "operationId": "keepKeyAlive",
            "summary": "Restart a key's keep-alive window (PING <id>).",
            "responses": { "200": status("`{\"status\": \"alive\"}`."), "404": error("No such key.") },
        }),
        (Endpoint::Stats, _) => json!({
            "operationId": "stats",
            "summary": "The daemon's figures (STATS), or one pool's (STATS <pool>).",
            "responses": { "200": { "description": "STATS' fields, numbers as numbers.", "content": json_any() } },
        }),
        (Endpoint::Pools, _) => json!({
            "operationId": "listPools",
            "summary": "The pools and their key counts, a page at a time (POOLS).",
            "parameters": [query("cursor", "Where the page starts: 0, or the previous page's next_cursor.")],
            "responses": { "200": { "description": "`{\"pools\": [{\"name\", \"keys\"}], \"next_cursor\"}`; 0: done.", "content": json_any() } },
        }),
        (Endpoint::Health, _) => json!({
            "operationId": "health",
            "summary": "Liveness: the engine answers. No authentication.",
            "security": open,
            "responses": { "200": status("`{\"status\": \"ok\"}`.") },
        }),
        (Endpoint::Metrics, _) => json!({
            "operationId": "metrics",
            "summary": "Prometheus text format 0.0.4. No authentication.",
            "security": open,
            "responses": { "200": { "description": "The metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } } },
        }),
        (Endpoint::OpenApi, _) => json!({
            "operationId": "openapi",
            "summary": "This document. No authentication.",
            "security": open,
            "responses": { "200": { "description": "The document.", "content": json_any() } },
        }),
    }
}

fn json_of(schema: &str) -> Value {
    json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } })
}

fn json_any() -> Value {
    json!({ "application/json": { "schema": { "type": "object" } } })
}

fn object(properties: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> =
        properties.iter().map(|(name, schema)| (name.to_string(), schema.clone())).collect();
    json!({ "type": "object", "properties": properties })
}

fn query(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn header(description: &str) -> Value {
    json!({ "description": description, "schema": { "type": "string" } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_method_is_documented_with_a_unique_operation_id() {
        let document = document();
        let mut ids = std::collections::HashSet::new();
        for route in ROUTES {
            for method in route.methods {
                let op = &document["paths"][route.path][method.to_ascii_lowercase()];
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {} undocumented", route.path));
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
                assert!(op["responses"].is_object(), "{method} {} has responses", route.path);
                let declared =
                    op["parameters"].as_array().map_or(0, |p| p.iter().filter(|p| p["in"] == "path").count());
                assert_eq!(declared, route.path.matches('{').count(), "{method} {}: path parameters", route.path);
            }
        }
        assert_eq!(document["paths"].as_object().map(Map::len), Some(ROUTES.len()));
    }
}
