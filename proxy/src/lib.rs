//! Komora edge: a pingora caching proxy for the CRM media origin, with a memory + disk cache.
//!
//! - [`config`]: flat TOML (`config/edge.toml`) → validated [`config::EdgeConfig`].
//! - [`server`]: builds the pingora `Server` (listeners, origin health checks, admin).
//! - [`service`]: the `ProxyHttp` hooks; [`policy`]: what is stored and for how long;
//!   [`rfc`]: the HTTP caching rules (RFC 9111, RFC 9213) policy and hooks apply.
//! - [`connection`]: the HTTP/1 connection loop (pipelining, request head deadline);
//!   [`idle`]: waiting for the next head with no request state allocated.
//! - [`storage`]: our `pingora_cache::Storage` (memory tier, disk tier, on-disk entry
//!   format, streaming fills); [`eviction`]: the disk byte budget.
//! - [`hit`]: the fast path of fresh hits, written straight to plain HTTP/1.1 sockets
//!   (sendfile for large bodies) or through pingora's session.
//! - [`lock`]: the cache lock that collapses concurrent misses.
//! - [`admin`]: purge and `/metrics`; [`metrics`]: the Prometheus registry.
//! - [`signing`]: signed media URLs checked before the cache.
//! - [`access_log`]: one line per request, written off the hot path; [`logging`]: the
//!   diagnostic log (client closes are counted, not errors).
//!
//! `main.rs` only parses flags; tests drive the `komora-edge` binary end to end.

pub mod access_log;
pub mod admin;
pub mod cache_status;
pub mod clock;
pub mod config;
pub mod connection;
pub mod eviction;
pub mod hit;
pub mod idle;
pub mod listen;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod rfc;
pub mod server;
pub mod service;
pub mod signing;
pub mod storage;
