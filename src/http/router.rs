//! The gateway's routes: one table that requests are matched against and the OpenAPI document is built
//! from, and the matching.
//!
//! Fourteen fixed templates need no routing crate: a request's path is compared with each template
//! segment by segment, without allocating, and a `{name}` segment takes whatever one segment the path
//! has there. The handler then answers the methods the table lists and 405 with `Allow` for the rest, so
//! `Allow` is exactly the table's (a generic router would also answer HEAD wherever GET is served, and a
//! HEAD of `/keys` must not lease a key). Matching by hand was measured: with a generic router and its
//! middleware in the way, the gateway served a third fewer leases a second (BENCHMARKS.md).

use std::borrow::Cow;

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
    /// The path template, `{name}` for a parameter (OpenAPI's syntax).
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

/// A path that matched a route, with its parameters as the path gave them (percent-decoded).
#[derive(Debug)]
pub struct Matched<'a> {
    pub route: &'static Route,
    /// `{pool}`, in the `/pools/{pool}/...` forms.
    pub pool: Option<Cow<'a, str>>,
    /// `{id}`, in the routes of one key.
    pub id: Option<Cow<'a, str>>,
}

/// Why a path matched no route.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmatched {
    /// No template has this shape.
    NoRoute,
    /// A template matched, but a parameter is not valid percent-encoded UTF-8.
    Malformed,
}

/// The route `path` (without its query) names, and its parameters.
pub fn find(path: &str) -> Result<Matched<'_>, Unmatched> {
    let route = ROUTES.iter().find(|route| fits(route.path, path)).ok_or(Unmatched::NoRoute)?;
    let mut matched = Matched { route, pool: None, id: None };
    for (template, given) in route.path.split('/').zip(path.split('/')) {
        let slot = match template {
            "{pool}" => &mut matched.pool,
            "{id}" => &mut matched.id,
            _ => continue,
        };
        *slot = Some(percent_decoded(given).ok_or(Unmatched::Malformed)?);
    }
    Ok(matched)
}

/// Whether `path` has the shape of `template`: as many segments, the same literal ones, and a non-empty
/// segment wherever the template has a parameter.
fn fits(template: &str, path: &str) -> bool {
    let mut given = path.split('/');
    for expected in template.split('/') {
        match given.next() {
            Some(segment) if expected.starts_with('{') => {
                if segment.is_empty() {
                    return false;
                }
            }
            Some(segment) if segment == expected => {}
            _ => return false,
        }
    }
    given.next().is_none()
}

/// `segment` with its `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
/// Borrowed in the usual case of no escapes at all.
fn percent_decoded(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let mut bytes = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            // Two hex digits exactly (`from_str_radix` alone would also take a sign, as in `%+1`).
            let hex = tail.get(..2).filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_routes_and_parameters() {
        let matched = find("/pools/team-a/keys/abc/touch").expect("a route");
        assert_eq!(matched.route.path, "/pools/{pool}/keys/{id}/touch");
        assert_eq!(matched.pool.as_deref(), Some("team-a"));
        assert_eq!(matched.id.as_deref(), Some("abc"));

        let matched = find("/keys").expect("a route");
        assert_eq!((matched.route.endpoint, matched.pool, matched.id), (Endpoint::Keys, None, None));
        assert_eq!(find("/keys/abc").expect("a route").route.endpoint, Endpoint::Key);
        assert_eq!(find("/pools").expect("a route").route.endpoint, Endpoint::Pools);
        assert_eq!(find("/pools/p/stats").expect("a route").pool.as_deref(), Some("p"));
    }

    #[test]
    fn every_template_matches_itself_and_nothing_else_does() {
        for route in ROUTES {
            let path = route.path.replace("{pool}", "p").replace("{id}", "i");
            assert_eq!(find(&path).map(|matched| matched.route.path), Ok(route.path), "{path}");
        }
        for path in
            ["", "/", "/keys/", "//keys", "/keys//touch", "/key", "/keys/a/b", "/pools/", "/pools//keys", "/metrics/x"]
        {
            assert_eq!(find(path).map(|matched| matched.route.path), Err(Unmatched::NoRoute), "{path}");
        }
    }

    #[test]
    fn parameters_are_percent_decoded() {
        assert_eq!(find("/pools/no%20spaces/keys").expect("a route").pool.as_deref(), Some("no spaces"));
        assert_eq!(find("/keys/%41b").expect("a route").id.as_deref(), Some("Ab"));
        for broken in ["/keys/%", "/keys/%4", "/keys/%zz", "/keys/%+1", "/keys/%ff"] {
            assert_eq!(find(broken).map(|matched| matched.route.path), Err(Unmatched::Malformed), "{broken}");
        }
    }
}
