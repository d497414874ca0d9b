//! [`AuthFileError`]: why a tokens file or a JWT secret file cannot be used.
//!
//! Its `Display` is what the operator reads, at startup (the daemon refuses to start) or after SIGHUP (the
//! old tokens stay in force). Every message names the file, and a tokens-file message names the line, but
//! none ever quotes a token or a secret: these messages go to logs and terminals.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::tokens::TokenLineProblem;

/// A tokens file or JWT secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read at all.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        /// Not marked `#[source]`: the message already includes it, and a chain printer would repeat it.
        cause: io::Error,
    },
    /// A line of a tokens file that is not `<token> <pool>` or `<token> *`. `file` is `None` when the text
    /// was parsed without one ([`TokenTable::parse`](super::TokenTable::parse)).
    #[error("{}line {line}: {problem}", FilePrefix(file.as_deref()))]
    Line { file: Option<PathBuf>, line: usize, problem: TokenLineProblem },
    /// A JWT secret file with nothing in it (after its one trailing newline is dropped): an empty HMAC key
    /// would let anyone sign tokens.
    #[error("{}: the JWT secret file is empty; put a long random secret in it (32 bytes or more)", path.display())]
    EmptySecret { path: PathBuf },
}

impl AuthFileError {
    /// The same error, said of `path`: [`TokenTable::load`](super::TokenTable::load) parses the text first
    /// and names the file after.
    pub(crate) fn in_file(self, path: &Path) -> AuthFileError {
        match self {
            AuthFileError::Line { file: None, line, problem } => {
                AuthFileError::Line { file: Some(path.to_owned()), line, problem }
            }
            other => other,
        }
    }
}

/// `"<path>, "` before a line number, or nothing when there is no file.
struct FilePrefix<'a>(Option<&'a Path>);

impl fmt::Display for FilePrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}, ", path.display()),
            None => Ok(()),
        }
    }
}
