//! [`Authenticator`]: the daemon's one answer to `AUTH <token>`, over static tokens, JWTs, or both.
//!
//! The tokens table sits behind an `RwLock<Arc<TokenTable>>`. A lookup takes the read lock only to clone
//! the `Arc`, then looks up with no lock held, so a SIGHUP reload never waits on lookups in flight nor they
//! on it. A reload reads and parses the new file with no lock held, and takes the write lock only to swap
//! the pointer; a bad file never reaches the swap, so the old table stays in force. A std lock, not
//! tokio's: nothing awaits while holding it. (`arc-swap` would drop the read lock too, but this is one
//! read per AUTH, not per request.)

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use super::error::AuthFileError;
use super::grant::Grant;
use super::jwt::{JwtError, JwtVerifier};
use super::tokens::TokenTable;

/// Checks presented tokens against the configured static tokens and JWT secret.
#[derive(Debug)]
pub struct Authenticator {
    tokens: Option<TokensFile>,
    jwt: Option<JwtVerifier>,
}

/// The `--auth-tokens` file and the table last loaded from it.
#[derive(Debug)]
struct TokensFile {
    path: PathBuf,
    table: RwLock<Arc<TokenTable>>,
}

/// Why a presented token was refused. For the server's debug log only: the client is told `CLIENT_ERROR
/// invalid token` whatever the reason. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No static token matched, and the token is not JWT-shaped or no JWT secret is configured.
    #[error("matches no configured token")]
    UnknownToken,
    /// No static token matched, and the JWT verifier refused it.
    #[error("JWT refused: {0}")]
    Jwt(#[from] JwtError),
}

impl Authenticator {
    /// Auth off: [`Authenticator::is_enabled`] is false and every token is refused.
    pub fn disabled() -> Authenticator {
        Authenticator { tokens: None, jwt: None }
    }

    /// Auth from a tokens file (loaded now), a JWT verifier, or both; with neither, the same as
    /// [`Authenticator::disabled`]. Fails if the tokens file cannot be read or has a bad line.
    pub fn new(tokens_file: Option<PathBuf>, jwt: Option<JwtVerifier>) -> Result<Authenticator, AuthFileError> {
        let tokens = match tokens_file {
            Some(path) => {
                let table = TokenTable::load(&path)?;
                Some(TokensFile { path, table: RwLock::new(Arc::new(table)) })
            }
            None => None,
        };
        Ok(Authenticator { tokens, jwt })
    }

    /// Whether any credential is configured, i.e. whether connections must AUTH before other commands.
    pub fn is_enabled(&self) -> bool {
        self.tokens.is_some() || self.jwt.is_some()
    }

    /// The tokens file, if one is configured.
    pub fn tokens_file(&self) -> Option<&Path> {
        self.tokens.as_ref().map(|tokens| tokens.path.as_path())
    }

    /// What `presented` (the argument of `AUTH`) grants. Static tokens are tried first, in constant time;
    /// then, if it looks like a JWT (three dot-separated base64url parts) and a JWT secret is configured,
    /// the JWT verifier. The error says why, for a debug log; it is not for the client.
    pub fn authenticate(&self, presented: &[u8]) -> Result<Grant, Rejection> {
        if let Some(tokens) = &self.tokens {
            if let Some(grant) = tokens.current().lookup(presented) {
                return Ok(grant);
            }
        }
        match (&self.jwt, jwt_shaped(presented)) {
            (Some(verifier), Some(token)) => Ok(verifier.verify(token)?),
            _ => Err(Rejection::UnknownToken),
        }
    }

    /// Re-reads the tokens file (on SIGHUP) and swaps the new table in whole: connections that AUTH after
    /// the swap see only the new tokens, those before only the old; grants already given are not revoked.
    /// Returns how many tokens are now in force, or `None` when no tokens file is configured. On error
    /// the old table stays in force; the caller logs the error, which names the file and line.
    pub fn reload_tokens(&self) -> Result<Option<usize>, AuthFileError> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let table = TokenTable::load(&tokens.path)?;
        let count = table.len();
        *tokens.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        Ok(Some(count))
    }
}

impl TokensFile {
    /// The table in force now. Poisoning is ignored: the lock only ever guards a pointer swap, which
    /// cannot panic halfway, so a poisoned lock still holds a whole table.
    fn current(&self) -> Arc<TokenTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// `presented` as a `str` if it has a JWT's shape: three parts split by `.`, the first two non-empty, all
/// base64url characters. The signature may be empty so that an `alg: none` token reaches the verifier and
/// is logged as what it is. A shape check only; the verifier decides.
fn jwt_shaped(presented: &[u8]) -> Option<&str> {
    let dots = presented.iter().filter(|&&b| b == b'.').count();
    let mut parts = presented.split(|&b| b == b'.');
    let (header, payload) = (parts.next()?, parts.next()?);
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if dots != 2 || header.is_empty() || payload.is_empty() || !presented.iter().all(base64url) {
        return None;
    }
    // All ASCII by the check above.
    std::str::from_utf8(presented).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::auth::jwt::mint_hs256;
    use crate::auth::test_files::TempFile;

    fn in_an_hour() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs() + 3600
    }

    fn pool(name: &str) -> Result<Grant, Rejection> {
        Ok(Grant::Pool(name.to_owned()))
    }

    fn jwt_verifier(secret: &[u8]) -> (TempFile, JwtVerifier) {
        let file = TempFile::with_contents(secret);
        let verifier = JwtVerifier::from_secret_file(file.path(), None).unwrap();
        (file, verifier)
    }

    #[test]
    fn disabled_refuses_everything() {
        let auth = Authenticator::disabled();
        assert!(!auth.is_enabled());
        assert_eq!(auth.authenticate(b"anything"), Err(Rejection::UnknownToken));
        assert_eq!(auth.reload_tokens().unwrap(), None);
        assert_eq!(auth.tokens_file(), None);
        assert!(!Authenticator::new(None, None).unwrap().is_enabled());
    }

    #[test]
    fn static_tokens_grant_their_pools() {
        let file = TempFile::with_contents(b"tok-a team-a\ntok-root *\n");
        let auth = Authenticator::new(Some(file.path().to_owned()), None).unwrap();
        assert!(auth.is_enabled());
        assert_eq!(auth.tokens_file(), Some(file.path()));
        assert_eq!(auth.authenticate(b"tok-a"), pool("team-a"));
        assert_eq!(auth.authenticate(b"tok-root"), Ok(Grant::AnyPool));
        assert_eq!(auth.authenticate(b"tok-"), Err(Rejection::UnknownToken));
        // JWT-shaped, but no JWT secret is configured.
        let jwt = mint_hs256(b"k", "team-a", in_an_hour(), None);
        assert_eq!(auth.authenticate(jwt.as_bytes()), Err(Rejection::UnknownToken));
    }

    #[test]
    fn jwts_alone() {
        let (_file, verifier) = jwt_verifier(b"jwt-secret");
        let auth = Authenticator::new(None, Some(verifier)).unwrap();
        assert!(auth.is_enabled());
        let token = mint_hs256(b"jwt-secret", "team-b", in_an_hour(), None);
        assert_eq!(auth.authenticate(token.as_bytes()), pool("team-b"));
        let forged = mint_hs256(b"guess", "team-b", in_an_hour(), None);
        assert_eq!(auth.authenticate(forged.as_bytes()), Err(Rejection::Jwt(JwtError::BadSignature)));
        assert_eq!(auth.authenticate(b"not-a-jwt"), Err(Rejection::UnknownToken));
        assert_eq!(auth.authenticate(b"a.b.c\xff"), Err(Rejection::UnknownToken));
        assert_eq!(auth.reload_tokens().unwrap(), None);
    }

    #[test]
    fn static_tokens_are_tried_before_jwts() {
        let (_secret, verifier) = jwt_verifier(b"jwt-secret");
        let tokens = TempFile::with_contents(b"aaa.bbb.ccc static-pool\nplain *\n");
        let auth = Authenticator::new(Some(tokens.path().to_owned()), Some(verifier)).unwrap();
        assert_eq!(auth.authenticate(b"aaa.bbb.ccc"), pool("static-pool"));
        assert_eq!(auth.authenticate(b"plain"), Ok(Grant::AnyPool));
        let token = mint_hs256(b"jwt-secret", "jwt-pool", in_an_hour(), None);
        assert_eq!(auth.authenticate(token.as_bytes()), pool("jwt-pool"));
        assert!(matches!(auth.authenticate(b"aaa.bbb.ccd"), Err(Rejection::Jwt(_))));
    }

    #[test]
    fn reload_swaps_in_the_new_file() {
        let file = TempFile::with_contents(b"old-token p\n");
        let auth = Authenticator::new(Some(file.path().to_owned()), None).unwrap();
        file.write(b"new-token p\nanother q\n");
        assert_eq!(auth.reload_tokens().unwrap(), Some(2));
        assert_eq!(auth.authenticate(b"old-token"), Err(Rejection::UnknownToken));
        assert_eq!(auth.authenticate(b"new-token"), pool("p"));
        assert_eq!(auth.authenticate(b"another"), pool("q"));
    }

    #[test]
    fn reload_keeps_the_old_table_when_the_new_file_is_bad() {
        let file = TempFile::with_contents(b"old-token p\n");
        let auth = Authenticator::new(Some(file.path().to_owned()), None).unwrap();

        file.write(b"new-token p\nnew-secret bad/pool\n");
        let error = auth.reload_tokens().unwrap_err();
        assert!(matches!(error, AuthFileError::Line { line: 2, .. }), "{error:?}");
        assert!(!error.to_string().contains("new-secret"), "{error}");
        assert_eq!(auth.authenticate(b"old-token"), pool("p"));
        assert_eq!(auth.authenticate(b"new-token"), Err(Rejection::UnknownToken));

        std::fs::remove_file(file.path()).unwrap();
        assert!(matches!(auth.reload_tokens(), Err(AuthFileError::Read { .. })));
        assert_eq!(auth.authenticate(b"old-token"), pool("p"));
    }

    #[test]
    fn a_bad_tokens_file_stops_startup() {
        let file = TempFile::with_contents(b"lonely\n");
        assert!(matches!(
            Authenticator::new(Some(file.path().to_owned()), None),
            Err(AuthFileError::Line { line: 1, .. })
        ));
    }

    #[test]
    fn jwt_shape_is_three_base64url_parts() {
        for yes in ["a.b.c", "eyJ.eyJ.", "A-_9.x.y-_"] {
            assert_eq!(jwt_shaped(yes.as_bytes()), Some(yes), "{yes}");
        }
        for no in ["", "abc", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.c=", "a.b.c ", "a+.b.c", "a/b.c.d"] {
            assert_eq!(jwt_shaped(no.as_bytes()), None, "{no}");
        }
    }

    #[test]
    fn an_authenticator_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Authenticator>();
    }
}
