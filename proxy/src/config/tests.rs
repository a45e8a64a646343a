//! Unit tests of parsing and validating the edge config.

use super::*;
use std::time::Duration;

#[test]
fn defaults_validate() {
    let c = EdgeConfig::load(None, &Overrides::default()).unwrap(); // unwrap: test-only
    assert_eq!(c.server.grace_period, Duration::from_secs(5));
    assert_eq!(c.route("/media/abc").unwrap().mode, RouteMode::Cache); // unwrap: test-only
    assert_eq!(c.route("/api/x").unwrap().mode, RouteMode::Bypass); // unwrap: test-only
}

#[test]
fn defaults_deny_internal_paths_and_bound_request_heads() {
    let c = EdgeConfig::load(None, &Overrides::default()).unwrap(); // unwrap: test-only
    for p in ["/metrics", "/readyz", "/admin/queues"] {
        assert_eq!(c.route(p).unwrap().mode, RouteMode::Deny, "{p}"); // unwrap: test-only
    }
    assert_eq!(c.route("/media/x").unwrap().mode, RouteMode::Cache); // unwrap: test-only
    assert_eq!(c.server.request_header_timeout, Duration::from_secs(10));
    let e = RawConfig::parse(
        "t.toml",
        "[server]\nrequest_header_timeout_secs = 0\n[[route]]\nprefix = \"/\"\nmode = \"nope\"\n",
    )
    .unwrap() // unwrap: test-only
    .validate("t.toml")
    .unwrap_err();
    let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["server.request_header_timeout_secs", "route[0].mode"],
        "{e}"
    );
    assert!(e.to_string().contains("\"deny\""), "{e}");
}

#[test]
fn every_error_has_its_key_path() {
    let raw = RawConfig::parse(
        "t.toml",
        r#"
        [server]
        listen = ["nope"]
        threads = 0
        [cache.memory]
        max_capacity = 0
        [[route]]
        prefix = "media"
        "#,
    )
    .unwrap(); // unwrap: test-only
    let e = raw.validate("t.toml").unwrap_err();
    let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"server.listen[0]"), "{keys:?}");
    assert!(keys.contains(&"server.threads"), "{keys:?}");
    assert!(keys.contains(&"cache.memory.max_capacity"), "{keys:?}");
    assert!(keys.contains(&"route[0].prefix"), "{keys:?}");
    assert!(e
        .to_string()
        .contains("t.toml: cache.memory.max_capacity: must be > 0"));
}

#[test]
fn http_semantics_route_keys() {
    let c = EdgeConfig::load(None, &Overrides::default()).unwrap(); // unwrap: test-only
    let media = &c.route("/media/x").unwrap().semantics; // unwrap: test-only
    assert!(!media.store_any_status && !media.request_directives);
    assert!(media.heuristic.is_none());
    assert_eq!(media.targeted, ["cdn-cache-control"]);
    let c = RawConfig::parse(
        "t.toml",
        "[[route]]\nprefix = \"/\"\nstore_any_status = true\nheuristic_percent = 10\n\
         request_directives = true\ntargeted_fields = [\"Edge-CC\", \"CDN-Cache-Control\"]\n",
    )
    .unwrap() // unwrap: test-only
    .validate("t.toml")
    .unwrap(); // unwrap: test-only
    let s = &c.route("/x").unwrap().semantics; // unwrap: test-only
    assert!(s.store_any_status && s.request_directives);
    let h = s.heuristic.unwrap(); // unwrap: test-only
    assert_eq!((h.percent, h.max), (10, Duration::from_secs(86_400)));
    assert_eq!(s.targeted, ["edge-cc", "cdn-cache-control"]);
    let e = RawConfig::parse(
        "t.toml",
        "[[route]]\nprefix = \"/\"\nheuristic_percent = 101\ntargeted_fields = [\"a b\"]\n",
    )
    .unwrap() // unwrap: test-only
    .validate("t.toml")
    .unwrap_err();
    let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["route[0].heuristic_percent", "route[0].targeted_fields"],
        "{e}"
    );
}

#[test]
fn unknown_keys_are_errors() {
    let e = RawConfig::parse(
        "t.toml",
        "top = 1\n[cache]\nbogus = 1\n[cache.memory]\nx = 2\n[[route]]\nprefix = \"/\"\ny = 3\n",
    )
    .unwrap_err();
    let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), 4, "{e}");
    for k in ["top", "cache.bogus", "cache.memory.x", "route[0].y"] {
        assert!(keys.contains(&k), "{k} missing: {e}");
    }
}

#[test]
fn unknown_keys_and_value_errors_reported_together() {
    let e = RawConfig::parse("t.toml", "[server]\nthreads = 0\nbogus = 1\n").unwrap_err();
    let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["server.bogus", "server.threads"], "{e}");
}

#[test]
fn type_errors_name_their_key() {
    let e = RawConfig::parse("t.toml", "[cache.disk]\nmax_capacity = \"big\"\n").unwrap_err();
    assert_eq!(e.errors[0].key, "cache.disk.max_capacity", "{e}");
}
