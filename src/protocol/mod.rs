//! The wire protocol, as pure functions over bytes: no sockets, no engine.
//!
//! A request is one line ended by LF (a CR before it is dropped); tokens are separated by runs of spaces
//! or tabs; command names are case-insensitive. Replies are lines ended by CRLF. `protocol.md` at the
//! repository root is the full contract; this module is its implementation:
//!
//! - [`framing`] finds complete lines in a read buffer and enforces the line-length limit;
//! - [`request`] turns one line into a [`Request`] or a [`RequestError`];
//! - [`reply`] appends reply lines to an output buffer;
//! - [`duration`] reads and writes durations such as `250ms`, `60s` and `5m`;
//! - [`codec`] runs framing and parsing over a read buffer, answering malformed lines, as a connection
//!   does (property-tested and fuzzed over arbitrary bytes).
//!
//! Keeping it free of I/O lets it be unit-tested, benchmarked and fuzzed on plain byte slices.

pub mod codec;
pub mod duration;
pub mod framing;
pub mod reply;
pub mod request;

pub use request::{Command, LeaseArgs, Request, RequestError, Secret};
