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
