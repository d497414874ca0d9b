//! Authentication: who may use the daemon, and which pools. No I/O beyond reading the two config files,
//! no sockets, no protocol.
//!
//! Auth is off unless a credential is configured, by either or both of:
//!
//! - a tokens file (`--auth-tokens`): lines `<token> <pool>` or `<token> *`, parsed into a [`TokenTable`]
//!   that is looked up in constant time and re-read on SIGHUP ([`Authenticator::reload_tokens`]);
//! - a JWT secret file (`--jwt-secret-file`, optionally `--jwt-audience`): HS256 tokens whose `sub` names
//!   the pool, checked by a [`JwtVerifier`].
//!
//! The server holds one [`Authenticator`]. On `AUTH <token>` it calls [`Authenticator::authenticate`] and
//! gets a [`Grant`] (one pool, or every pool) or a [`Rejection`] to log at debug level; the client is told
//! only `OK` or `CLIENT_ERROR invalid token`. The grant decides the connection's first pool
//! ([`Grant::home_pool`]) and which pools `USE` may select ([`Grant::allows`]).
//!
//! Nothing here ever prints a token or a secret: errors name files and line numbers, and the `Debug` of
//! every type that holds credentials shows only counts.
//!
//! - `grant.rs`: [`Grant`], what a successful AUTH allows.
//! - `tokens.rs`: the tokens file format and [`TokenTable`].
//! - `jwt.rs`: [`JwtVerifier`], [`JwtError`], and [`mint_hs256`] for tests and tooling.
//! - `authenticator.rs`: [`Authenticator`], which tries both and swaps tokens on reload.
//! - `error.rs`: [`AuthFileError`], why a config file cannot be used.

mod authenticator;
mod error;
mod grant;
mod jwt;
#[cfg(test)]
mod test_files;
mod tokens;

pub use authenticator::{Authenticator, Rejection};
pub use error::AuthFileError;
pub use grant::Grant;
pub use jwt::{mint_hs256, JwtError, JwtVerifier, LEEWAY_SECS};
pub use tokens::{TokenLineProblem, TokenTable, MAX_TOKEN_LEN};
