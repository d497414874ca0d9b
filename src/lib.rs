//! keypool: a daemon that owns a pool of random API keys and leases them out over a line protocol.
//!
//! Clients speak a memcached-style text protocol over TCP (`protocol.md` is the contract): `GEN` mints
//! keys, `GET` leases a uniformly random free key, `REL` gives it back, `PING <id>` keeps a key alive,
//! `DEL` deletes it, `INFO` and `STATS` report. A leased key is released by itself when its block
//! window passes; a key not pinged within its keep-alive window is deleted for good.
//!
//! The crate is laid out as the architecture is, with dependencies pointing one way:
//!
//! - [`pool`]: the engine. Keys, the free list, leases and timers; every operation O(1) in the number
//!   of keys. No I/O.
//! - [`protocol`]: request parsing and reply writing over byte buffers. No I/O, no engine.
//! - [`server`]: the listener, the connection loop, and the expiry task that wire the two together.
//! - [`auth`]: static tokens and JWTs, checked for `AUTH`, and the pools each one grants. No sockets.
//! - [`http`]: the HTTP gateway, a second front end on the same engine (REST routes, `/metrics`, OpenAPI).
//! - [`persist`]: the snapshot and append-only log in `--data-dir`, and recovery from them. Knows the
//!   engine's change records, not the server.
//! - [`client`]: the Rust client: typed async calls for every command, pipelining, and a lease guard.
//!
//! The daemon binary (`src/bin/keypool.rs`) turns flags into a [`server::Config`], recovers the state
//! with [`server::Shared::new`] and serves it with [`server::serve`].

pub mod auth;
pub mod client;
pub mod http;
pub mod persist;
pub mod pool;
pub mod protocol;
pub mod server;
