//! The client's one error type.
//!
//! The variants follow who is at fault, because that is what decides what a caller does next: an I/O
//! failure or a timeout (retry, maybe elsewhere), a request the daemon refused as malformed or out of
//! limits (`CLIENT_ERROR`: fix the call), a request it could not serve (`SERVER_ERROR`: back off),
//! authentication (fix the token), or a reply this client does not understand (a daemon of another
//! version). Outcomes that are part of the protocol's normal life, such as `NOT_FOUND` or `STALE`, are
//! not errors: they are values of the typed results.

use std::time::Duration;

/// What can go wrong talking to a keypool daemon.
///
/// ```
/// use keypool::client::Error;
///
/// let error = Error::Client("malformed key id: ids are 24 letters and digits".into());
/// assert_eq!(error.to_string(), "the daemon refused the request: malformed key id: ids are 24 letters and digits");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection could not be opened, or broke (the daemon is down, restarted, or closed it).
    /// The connection is dropped; the next request opens a new one.
    #[error("cannot talk to the keypool daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon did not answer in time (the connect timeout, or the request timeout plus any wait the
    /// request asked for). The connection is dropped, so a late reply can never answer a later request.
    #[error("the keypool daemon did not answer within {0:?}")]
    Timeout(Duration),
    /// `CLIENT_ERROR <message>`: the daemon refused the request as malformed or outside its limits.
    #[error("the daemon refused the request: {0}")]
    Client(String),
    /// `SERVER_ERROR <message>`: a well-formed request the daemon could not serve (`pool full`,
    /// `too many pools`, `too many connections`).
    #[error("the daemon could not serve the request: {0}")]
    Server(String),
    /// `ERROR NOAUTH`: the daemon requires authentication; give the builder a token.
    #[error("the daemon requires authentication: connect with a token (ClientBuilder::token)")]
    NoAuth,
    /// `AUTH` was refused (`invalid token`, or `authentication is not enabled`).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// `ERROR <message>` other than NOAUTH: the daemon does not know the command (an older daemon).
    #[error("the daemon does not know the request: {0}")]
    Unsupported(String),
    /// An argument the client will not send, because the daemon would refuse it or read it as more than
    /// one argument (a secret with a space, a pool name with a slash).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A reply this client does not understand. The connection is dropped, since what follows on it
    /// can no longer be matched to requests.
    #[error("unexpected reply from the daemon: {0}")]
    Protocol(String),
}

impl Error {
    /// Whether the error broke the connection (I/O, timeout, protocol), rather than answering one
    /// request: such a connection is never reused.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Timeout(_) | Error::Protocol(_))
    }
}

/// The result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
