//! Authentication: who may use the daemon, and which pools. No I/O beyond reading config files, no
//! sockets, no protocol.
//!
//! - `grant.rs`: [`Grant`] and the pool-name rule ([`valid_pool_name`]).
//! - `tokens.rs`: the tokens file format and [`TokenTable`], looked up in constant time.
//! - `jwt.rs`: [`JwtVerifier`], [`JwtError`], and [`mint_hs256`] for tests and tooling.
//! - `error.rs`: [`AuthFileError`], why a config file cannot be used.

mod error;
mod grant;
mod jwt;
#[cfg(test)]
mod test_files;
mod tokens;

pub use error::AuthFileError;
pub use grant::{valid_pool_name, Grant, DEFAULT_POOL, MAX_POOL_NAME_LEN};
pub use jwt::{mint_hs256, JwtError, JwtVerifier, LEEWAY_SECS};
pub use tokens::{TokenLineProblem, TokenTable, MAX_TOKEN_LEN};
