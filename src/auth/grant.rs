//! What a successful AUTH allows ([`Grant`]).
//!
//! Both credential kinds end in the same place: a static token's line names a pool or `*`, and so does a
//! JWT's `sub`. Pool names follow the pool registry's rule ([`valid_pool_name`]), the same one `USE`
//! checks, so a token can never grant a pool that `USE` would refuse to name.

use crate::pool::{valid_pool_name, DEFAULT_POOL};

/// What one successful authentication allows the connection to use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grant {
    /// Exactly this pool and no other. The name is always a [`valid_pool_name`].
    Pool(String),
    /// Every pool (`*` in a tokens file or a JWT's `sub`).
    AnyPool,
}

impl Grant {
    /// Whether this grant covers every pool: what commands that act on the whole daemon need.
    pub fn allows_every_pool(&self) -> bool {
        matches!(self, Grant::AnyPool)
    }

    /// Whether a connection holding this grant may use `pool`. Says nothing of whether `pool` is a valid
    /// name: the server checks that first, so that a bad name gets its own error rather than `forbidden`.
    pub fn allows(&self, pool: &str) -> bool {
        match self {
            Grant::Pool(granted) => granted == pool,
            Grant::AnyPool => true,
        }
    }

    /// The pool a connection is in right after AUTH: the granted pool, or [`DEFAULT_POOL`] for `*`.
    pub fn home_pool(&self) -> &str {
        match self {
            Grant::Pool(granted) => granted,
            Grant::AnyPool => DEFAULT_POOL,
        }
    }

    /// Reads a grant as written in a tokens file or a JWT's `sub`: `*` or a pool name. `None` for anything
    /// else, so the caller can say where the bad value was without echoing it.
    pub(crate) fn from_field(field: &[u8]) -> Option<Grant> {
        if field == b"*" {
            return Some(Grant::AnyPool);
        }
        if !valid_pool_name(field) {
            return None;
        }
        // valid_pool_name admits ASCII only, so the bytes are UTF-8.
        let name = std::str::from_utf8(field).ok()?;
        Some(Grant::Pool(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_grant_allows_exactly_its_pool() {
        let grant = Grant::Pool("openai".to_owned());
        assert!(grant.allows("openai"));
        assert!(!grant.allows("openai2"));
        assert!(!grant.allows("opena"));
        assert!(!grant.allows(DEFAULT_POOL));
        assert_eq!(grant.home_pool(), "openai");
    }

    #[test]
    fn an_any_pool_grant_allows_every_pool_and_starts_in_default() {
        assert!(Grant::AnyPool.allows("openai"));
        assert!(Grant::AnyPool.allows(DEFAULT_POOL));
        assert_eq!(Grant::AnyPool.home_pool(), "default");
    }

    #[test]
    fn pool_names_are_1_to_64_of_the_safe_characters() {
        for good in ["default", "a", "A-z_0.9", &"p".repeat(64), "..", "-"] {
            assert!(valid_pool_name(good.as_bytes()), "{good:?}");
        }
        for bad in ["", &"p".repeat(65), "a b", "a/b", "*", "pool#1", "é", "a\tb", "a\0"] {
            assert!(!valid_pool_name(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn a_grant_field_is_a_star_or_a_pool_name() {
        assert_eq!(Grant::from_field(b"*"), Some(Grant::AnyPool));
        assert_eq!(Grant::from_field(b"team-a"), Some(Grant::Pool("team-a".to_owned())));
        assert_eq!(Grant::from_field(b"**"), None);
        assert_eq!(Grant::from_field(b""), None);
        assert_eq!(Grant::from_field(b"\xff"), None);
    }
}
