//! Komora's one-command runner (`komora up`) and its development helpers.
//!
//! It owns nothing of the product's logic: it creates a dev TLS certificate (`certs`),
//! runs a stand-in messaging platform so the demo's outbound messages are delivered
//! somewhere local (`standin`), and starts the origin, a worker and the edge as child
//! processes with configs derived from `config/*.toml` (`up`).

pub mod certs;
pub mod standin;
pub mod up;
