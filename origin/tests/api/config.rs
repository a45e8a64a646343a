//! `config/origin.toml`: defaults, every bound reported with its key path, environment
//! overrides, and the `--check-config`, `keys create` and `seed` commands of the binary.

use komora_origin::config::Config;

use crate::common::count;

#[test]
fn shipped_file_and_defaults_are_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/origin.toml");
    let config = Config::load(std::path::Path::new(path)).unwrap();
    assert_eq!(config.database.url, "sqlite://var/komora.db");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8081");
    let defaults = Config::defaults().unwrap();
    assert_eq!(defaults.media.max_upload_bytes, 50 * 1024 * 1024);
}

#[test]
fn every_error_is_reported_with_its_key() {
    let text = r#"
[server]
listen = "nowhere"
json_body_limit_bytes = 10
shutdown_grace_ms = 999999999
[database]
url = "mysql://x"
max_connections = 0
acquire_timeout_ms = 1
[media]
store_url = "ftp://x"
max_upload_bytes = 0
public_base_url = "https://cdn/"
[media.s3]
endpoint = "localhost:9000"
"#;
    let errors = Config::parse("bad.toml", text).unwrap_err();
    let keys: Vec<&str> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "server.listen",
        "server.json_body_limit_bytes",
        "server.shutdown_grace_ms",
        "database.url",
        "database.max_connections",
        "database.acquire_timeout_ms",
        "media.store_url",
        "media.max_upload_bytes",
        "media.public_base_url",
        "media.s3.endpoint",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    let shown = errors.to_string();
    assert!(shown.contains("bad.toml: database.max_connections: "));
}

#[test]
fn unknown_keys_are_errors() {
    let errors = Config::parse("x.toml", "[database]\nurll = \"x\"\n").unwrap_err();
    assert!(errors.to_string().contains("urll"), "{errors}");
}

#[test]
fn environment_overrides_secrets() {
    let env = |k: &str| match k {
        "KOMORA_DATABASE_URL" => Some("postgres://u:secret@db/komora".to_string()),
        "KOMORA_MEDIA_STORE_URL" => Some("s3://bucket".to_string()),
        "KOMORA_S3_SECRET_ACCESS_KEY" => Some("s3cret".to_string()),
        _ => None,
    };
    let config = Config::parse_with_env("x.toml", "", env).unwrap();
    assert_eq!(config.database.url, "postgres://u:secret@db/komora");
    match config.media.store {
        komora_origin::config::StoreLocation::S3 { bucket, s3 } => {
            assert_eq!(bucket, "bucket");
            assert_eq!(s3.secret_access_key.as_deref(), Some("s3cret"));
        }
        other => panic!("expected S3, got {other:?}"),
    }
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_komora-origin"))
}

#[test]
fn check_config_exits_non_zero_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[database]\nmax_connections = 0\n[media]\nstore_url = \"x\"\n",
    )
    .unwrap();
    let out = bin().arg("--check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database.max_connections"), "{err}");
    assert!(err.contains("media.store_url"), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "").unwrap();
    let out = bin().arg("--check-config").arg(&good).output().unwrap();
    assert!(out.status.success());
}

#[test]
fn keys_create_and_seed_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/k.db", dir.path().display());
    let store = format!("file://{}/media", dir.path().display());
    let run = |args: &[&str]| {
        bin()
            .args(args)
            .env("KOMORA_DATABASE_URL", &db_url)
            .env("KOMORA_MEDIA_STORE_URL", &store)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["keys", "create", "--name", "ops", "--admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let out = run(&["seed", "--conversations", "120", "--messages", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = komora_origin::db::Db::connect(&db_url, &Default::default())
            .await
            .unwrap();
        let msgs = count(&db, "SELECT count(*) FROM messages").await;
        assert_eq!(msgs, 480);
        let key = komora_origin::store::api_keys::authenticate(&db, &token)
            .await
            .unwrap();
        assert!(key.is_some());
        // Denormalised counters agree with the messages they summarise.
        let bad = count(
            &db,
            "SELECT count(*) FROM conversations c WHERE unread_count <> \
             (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id \
              AND m.direction = 'in' AND m.read_at IS NULL) \
             OR last_message_id <> (SELECT max(id) FROM messages m WHERE m.conversation_id = c.id)",
        )
        .await;
        assert_eq!(bad, 0);
    });
}

crate::both_backends!(seed_counters_match_messages, |t| {
    let dir = tempfile::tempdir().unwrap();
    let store = komora_origin::media::store::open(&komora_origin::config::StoreLocation::Local(
        dir.path().to_path_buf(),
    ))
    .unwrap();
    let args = komora_origin::seed::SeedArgs {
        conversations: 700,
        messages: 5,
        rng_seed: 3,
    };
    komora_origin::seed::seed(&t.db, &store, &args)
        .await
        .unwrap();
    let bad = count(
        &t.db,
        "SELECT count(*) FROM conversations c WHERE unread_count <> \
         (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id \
          AND m.direction = 'in' AND m.read_at IS NULL)",
    )
    .await;
    assert_eq!(bad, 0);
    // Ids continue after the seed (PostgreSQL sequences were moved on).
    let f = crate::common::fixture(&t.db, 1, 1).await;
    assert!(f.conversations[0] > 700);
});

#[test]
fn unknown_keys_type_errors_and_bad_values_are_reported_together() {
    let text = r#"
[server]
listen = 8081
bogus = 1
[database]
max_connections = 0
[queue]
lease_ms = "long"
[queue.kinds.send_message]
queue = "urgent"
extra = 1
[platforms.telegram]
base_url = "ftp://x"
timeout_ms = 5
"#;
    let errors = Config::parse("bad.toml", text).unwrap_err();
    let mut keys: Vec<&str> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "database.max_connections",
            "platforms.telegram.base_url",
            "platforms.telegram.timeout_ms",
            "queue.kinds.send_message.extra",
            "queue.kinds.send_message.queue",
            "queue.lease_ms",
            "server.bogus",
            "server.listen",
        ],
        "{errors}"
    );
    let shown = errors.to_string();
    assert!(
        shown.contains("bad.toml: server.bogus: unknown key"),
        "{shown}"
    );
    assert!(
        shown.contains("bad.toml: queue.lease_ms: invalid type"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 8, "{shown}");
}

fn shipped(rel: &str) -> komora_origin::config::ConfigFile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    let file = komora_origin::config::ConfigFile::parse(rel, &text).unwrap();
    // What is written also validates (the environment is not consulted).
    Config::parse(rel, &text).unwrap();
    file
}

/// `config/origin.toml` says its values are the defaults; the exceptions are the examples it
/// marks as such (the per-kind tunings, the RAG URL, the telegram platform).
#[test]
fn shipped_origin_toml_loads_to_the_values_its_comments_claim() {
    use komora_origin::queue::config::{KindFile, PlatformFile};
    let got = shipped("config/origin.toml");
    let mut want = komora_origin::config::ConfigFile::default();
    let kind = |queue: &str| KindFile {
        queue: Some(queue.into()),
        ..Default::default()
    };
    want.queue.kinds.insert(
        "send_message".into(),
        KindFile {
            concurrency: Some(8),
            timeout_ms: Some(30_000),
            max_attempts: Some(8),
            backoff_base_ms: Some(1_000),
            backoff_max_ms: Some(600_000),
            ..kind("high")
        },
    );
    want.queue.kinds.insert(
        "process_ai_reply".into(),
        KindFile {
            timeout_ms: Some(60_000),
            ..kind("high")
        },
    );
    want.queue.kinds.insert(
        "download_and_save_media".into(),
        KindFile {
            concurrency: Some(4),
            timeout_ms: Some(120_000),
            ..kind("low")
        },
    );
    want.ai.url = "https://rag.example.com/v1/answer".into();
    want.platforms.platforms.insert(
        "telegram".into(),
        PlatformFile {
            base_url: "https://api.telegram.org".into(),
            ..Default::default()
        },
    );
    assert_eq!(got, want);
    // The defaults are the values the comments give.
    let d = komora_origin::config::ConfigFile::default();
    assert_eq!(
        (d.server.listen.as_str(), d.server.internal_listen.as_str()),
        ("127.0.0.1:8081", "127.0.0.1:9181")
    );
    assert_eq!(
        (d.server.json_body_limit_bytes, d.server.shutdown_grace_ms),
        (1_048_576, 10_000)
    );
    assert_eq!(
        (
            d.database.url.as_str(),
            d.database.max_connections,
            d.database.acquire_timeout_ms
        ),
        ("sqlite://var/komora.db", 10, 5_000)
    );
    assert_eq!(
        (d.media.store_url.as_str(), d.media.max_upload_bytes),
        ("file://var/media", 52_428_800)
    );
    assert!(d.media.signed_urls && !d.media.s3.allow_http);
    assert_eq!(d.media.signed_url_window_secs, 86_400);
    let q = &d.queue;
    assert_eq!(
        (
            q.lease_ms,
            q.heartbeat_ms,
            q.poll_ms,
            q.claim_batch,
            q.worker_concurrency
        ),
        (30_000, 10_000, 200, 32, 16)
    );
    assert_eq!((q.sweep_ms, q.prune_after_hours), (5_000, 168));
    assert_eq!(
        (q.weights.high, q.weights.default, q.weights.low),
        (6, 3, 1)
    );
    assert_eq!((d.ai.timeout_ms, d.ai.history), (20_000, 20));
    assert_eq!(d.ai.channels, ["telegram"]);
    let p = PlatformFile::default();
    assert_eq!((p.timeout_ms, p.media_max_bytes), (10_000, 20_971_520));
}

#[test]
fn docker_origin_toml_loads_to_exactly_its_keys() {
    use komora_origin::queue::config::PlatformFile;
    let got = shipped("docker/config/origin.toml");
    let mut want = komora_origin::config::ConfigFile::default();
    want.server.listen = "0.0.0.0:8081".into();
    want.server.internal_listen = "127.0.0.1:9181".into();
    want.server.shutdown_grace_ms = 20_000;
    want.database.url = "postgres://komora@postgres:5432/komora".into();
    want.database.max_connections = 20;
    want.media.store_url = "s3://komora-media".into();
    want.media.max_upload_bytes = 104_857_600;
    want.media.signed_urls = true;
    want.media.s3.endpoint = Some("http://s3:9000".into());
    want.media.s3.region = Some("us-east-1".into());
    want.media.s3.allow_http = true;
    want.queue.worker_in_server = false;
    want.platforms.platforms.insert(
        "telegram".into(),
        PlatformFile {
            base_url: "https://api.telegram.org".into(),
            ..Default::default()
        },
    );
    assert_eq!(got, want);
}
