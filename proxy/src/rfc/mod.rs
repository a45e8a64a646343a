//! HTTP caching semantics of a shared cache (RFC 9111, RFC 9213), kept apart from the proxy
//! hooks so each rule can be read next to the RFC section it implements.
//!
//! - [`vary`]: secondary cache keys (RFC 9111 §4.1): which stored variant answers a request.
//!
//! `service.rs` calls into these from its pingora hooks; `policy.rs` uses them to decide
//! what is stored and for how long.

pub mod vary;
