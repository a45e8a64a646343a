//! HTTP caching conformance of the edge, written from the RFC text: a scriptable origin on
//! port 0 sends exactly the headers a rule is about and counts requests; the real
//! `komora-edge` binary runs in front of it on a `/rfc/` cache route with plain RFC
//! semantics. Each test asserts status, body sha256 and origin request counts.
//! One file per RFC section.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../edge/common.rs"]
mod common;
mod origin;

mod rfc9110_7_6_3_via;
mod rfc9111_3_storing;
mod rfc9111_4_1_vary;
mod rfc9111_4_2_freshness;
mod rfc9111_4_3_4_update;
mod rfc9111_4_3_5_head;
mod rfc9111_4_4_invalidation;
mod rfc9111_5_2_1_request;
mod rfc9111_5_2_directives;
mod rfc9213_targeted;

use common::{spawn_edge, EdgeProc};
use std::path::Path;

/// The edge config every conformance test runs with: one cache route with no default TTL
/// and no stale serving of its own, so only the origin's headers decide.
pub const RFC_ROUTE: &str = r#"
[admin]
token_env = "KOMORA_ADMIN_TOKEN"

[[route]]
prefix = "/rfc/"
mode = "cache"
default_ttl_secs = 0
stale_if_error_secs = 0
"#;

/// Spawn the edge in front of `origin` with [`RFC_ROUTE`] plus `extra` route keys.
pub fn edge(origin: &origin::Origin, cache: &Path, extra: &str) -> EdgeProc {
    spawn_edge(origin.addr, cache, Some(&format!("{RFC_ROUTE}{extra}")))
}
