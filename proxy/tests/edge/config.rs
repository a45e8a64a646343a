//! `--check-config`: bad files are rejected with every error's key path; the shipped file is
//! valid.

use std::process::Command;

fn check(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn bad_config_rejected_with_every_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("edge.toml");
    std::fs::write(
        &p,
        r#"
[server]
listen = ["not-an-addr"]
threads = 0
[cache.memory]
max_capacity = 0
sendfile_min_size = 65536
sendfile_max_open_files = 2000000
[cache.disk]
chunk_size = 1
[[route]]
prefix = "media"
mode = "sometimes"
"#,
    )
    .unwrap();
    let (code, out) = check(&p);
    assert_eq!(code, 2, "{out}");
    for key in [
        "server.listen[0]",
        "server.threads",
        "cache.memory.max_capacity: must be > 0",
        "cache.memory.sendfile_min_size: must be in 0..=0",
        "cache.memory.sendfile_max_open_files: must be in 0..=1000000",
        "cache.disk.chunk_size",
        "route[0].prefix",
        "route[0].mode",
    ] {
        assert!(out.contains(key), "missing {key} in:\n{out}");
    }
    assert!(
        out.contains(&format!("{}: cache.memory.max_capacity", p.display())),
        "{out}"
    );
}

#[test]
fn unknown_key_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("edge.toml");
    std::fs::write(
        &p,
        "[cache]\ndirectory = \"/x\"\n[admin]\ntoken = \"t\"\n[[route]]\nprefix = \"/\"\nttl = 1\n",
    )
    .unwrap();
    let (code, out) = check(&p);
    assert_eq!(code, 2, "{out}");
    // every unknown key, each with its path
    for key in [
        "cache.directory: unknown key",
        "admin.token: unknown key",
        "route[0].ttl: unknown key",
    ] {
        assert!(out.contains(key), "missing {key} in:\n{out}");
    }
}

#[test]
fn shipped_config_is_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/edge.toml");
    let (code, out) = check(&p);
    assert_eq!(code, 0, "{out}");
}

fn shipped(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// `config/edge.toml` says its values are the built-in defaults, except `signed_urls = true`
/// on `/media/`: it loads to exactly the values its comments give, and so do no file at all.
#[test]
fn shipped_edge_toml_loads_to_the_values_its_comments_claim() {
    use komora_proxy::config::*;
    use std::num::{NonZeroU64, NonZeroUsize};
    use std::time::Duration;
    let file = EdgeConfig::load(Some(&shipped("config/edge.toml")), &Overrides::default()).unwrap();
    let defaults = EdgeConfig::load(None, &Overrides::default()).unwrap();
    for c in [&file, &defaults] {
        assert_eq!(
            c.server,
            ServerSettings {
                listen: vec!["0.0.0.0:8080".parse().unwrap()],
                tls_listen: vec![],
                tls_cert_key: None,
                // The CPUs this process may run on, as the edge's default reads them.
                threads: std::thread::available_parallelism().unwrap(),
                grace_period: Duration::from_secs(5),
                upgrade_sock: "/tmp/komora-edge-upgrade.sock".into(),
                pid_file: "/tmp/komora-edge.pid".into(),
                request_header_timeout: Duration::from_secs(10),
                keepalive_timeout: Duration::from_secs(60),
            }
        );
        assert_eq!(
            c.upstream,
            UpstreamSettings {
                origins: vec!["127.0.0.1:8081".into()],
                health_check_interval: Duration::from_secs(5),
                connect_timeout: Duration::from_millis(2000),
                read_timeout: Duration::from_millis(30_000),
            }
        );
        assert_eq!(
            c.cache,
            CacheSettings {
                dir: "/var/cache/komora".into(),
                lock_age_timeout: Duration::from_millis(10_000),
                lock_wait_timeout: Duration::from_millis(10_000),
                memory_max_capacity: NonZeroU64::new(268_435_456).unwrap(),
                memory_max_object_size: 1_048_576,
                disk_max_capacity: NonZeroU64::new(10_737_418_240).unwrap(),
                disk_chunk_size: NonZeroUsize::new(262_144).unwrap(),
                streaming_fill: true,
                sendfile_min_size: Some(32_768),
                sendfile_max_size: 524_288,
                sendfile_max_open_files: 4096,
            }
        );
        assert_eq!(
            c.admin,
            AdminSettings {
                listen: None,
                token_env: "KOMORA_ADMIN_TOKEN".into(),
            }
        );
        assert_eq!(c.access_log, None);
        let routes: Vec<_> = c
            .routes
            .iter()
            .map(|r| {
                let s = &r.semantics;
                (
                    r.prefix.as_str(),
                    r.mode,
                    r.default_ttl.as_secs(),
                    r.stale_if_error.as_secs(),
                    r.stale_while_revalidate.as_secs(),
                    r.client_max_age.map(|d| d.as_secs()),
                    r.cache_key_query.clone(),
                    (
                        s.store_any_status,
                        s.heuristic.is_none(),
                        s.request_directives,
                    ),
                    s.targeted.clone(),
                )
            })
            .collect();
        let route = |prefix, mode, client_max_age, query| {
            (
                prefix,
                mode,
                604_800,
                86_400,
                0,
                client_max_age,
                query,
                (false, true, false),
                vec![http::HeaderName::from_static("cdn-cache-control")],
            )
        };
        // Longest prefix first. The shipped file adds the console's two routes to the
        // built-in defaults.
        let routes: Vec<_> = if std::ptr::eq(c, &file) {
            assert_eq!(
                routes[..2],
                [
                    route("/console/assets/", RouteMode::Cache, None, KeyQuery::All),
                    route("/console/", RouteMode::Bypass, None, KeyQuery::All),
                ]
            );
            routes[2..].to_vec()
        } else {
            routes
        };
        assert_eq!(
            routes,
            [
                route("/metrics", RouteMode::Deny, None, KeyQuery::All),
                route("/readyz", RouteMode::Deny, None, KeyQuery::All),
                route("/admin/", RouteMode::Deny, None, KeyQuery::All),
                route("/media/", RouteMode::Cache, Some(604_800), KeyQuery::None),
                route("/", RouteMode::Bypass, None, KeyQuery::All),
            ]
        );
    }
    let signed = |c: &EdgeConfig| -> Vec<String> {
        c.routes
            .iter()
            .filter_map(|r| Some(format!("{} {}", r.prefix, r.signed.as_ref()?.env)))
            .collect()
    };
    assert_eq!(signed(&file), ["/media/ KOMORA_MEDIA_SIGNING_KEYS"]);
    assert!(signed(&defaults).is_empty());
}

/// `docker/config/edge.toml` as written (its origins resolve and its certificate exists only
/// inside compose, so the file is compared before validation).
#[test]
fn docker_edge_toml_parses_to_exactly_its_keys() {
    use komora_proxy::config::*;
    let path = shipped("docker/config/edge.toml");
    let got = RawConfig::load(&path).unwrap();
    let deny = |p: &str| RawRoute {
        prefix: Some(p.into()),
        mode: Some("deny".into()),
        ..Default::default()
    };
    let want = RawConfig {
        server: Some(RawServer {
            listen: Some(AddrList::Many(vec!["0.0.0.0:8080".into()])),
            tls_listen: Some(AddrList::Many(vec!["0.0.0.0:8443".into()])),
            tls_cert: Some("/etc/komora/tls/fullchain.pem".into()),
            tls_key: Some("/etc/komora/tls/privkey.pem".into()),
            threads: Some(4),
            grace_period_secs: Some(25),
            upgrade_sock: Some("/var/cache/komora/upgrade.sock".into()),
            pid_file: Some("/var/cache/komora/edge.pid".into()),
            request_header_timeout_secs: Some(10),
            keepalive_timeout_secs: Some(60),
        }),
        upstream: Some(RawUpstream {
            origins: Some(vec!["origin-a:8081".into(), "origin-b:8081".into()]),
            health_check_interval_secs: Some(5),
            ..Default::default()
        }),
        cache: Some(RawCache {
            dir: Some("/var/cache/komora".into()),
            memory: Some(RawMemory {
                max_capacity: Some(1 << 30),
                ..Default::default()
            }),
            disk: Some(RawDisk {
                max_capacity: Some(50 << 30),
                ..Default::default()
            }),
            ..Default::default()
        }),
        route: Some(vec![
            deny("/metrics"),
            deny("/readyz"),
            deny("/admin/"),
            RawRoute {
                prefix: Some("/media/".into()),
                mode: Some("cache".into()),
                default_ttl_secs: Some(604_800),
                stale_if_error_secs: Some(86_400),
                client_max_age_secs: Some(604_800),
                cache_key_query: Some(RawKeyQuery::Mode("none".into())),
                signed_urls: Some(true),
                ..Default::default()
            },
            RawRoute {
                prefix: Some("/console/assets/".into()),
                mode: Some("cache".into()),
                ..Default::default()
            },
            RawRoute {
                prefix: Some("/console/".into()),
                mode: Some("bypass".into()),
                ..Default::default()
            },
            RawRoute {
                prefix: Some("/".into()),
                mode: Some("bypass".into()),
                ..Default::default()
            },
        ]),
        admin: Some(RawAdmin {
            listen: Some("0.0.0.0:9180".into()),
            token_env: None,
        }),
        access_log: Some(RawAccessLog {
            path: Some("-".into()),
            format: Some("json".into()),
            queue_lines: None,
        }),
    };
    assert_eq!(got, want);
}
