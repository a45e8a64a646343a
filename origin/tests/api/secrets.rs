//! Secrets: none in a shipped file, each overridable from the environment, placeholders
//! and short webhook secrets rejected naming the key, and a platform without a webhook
//! secret has its webhook disabled — never open.

use komora_origin::config::Config;
use komora_origin::queue::config::PlatformFile;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{count, spawn_app_with};

fn webhook_errors(secret: &str) -> Vec<(String, String)> {
    let text = format!(
        "[platforms.telegram]\nbase_url = \"https://api.telegram.org\"\nwebhook_secret = \"{secret}\"\n"
    );
    match Config::parse("<t>", &text) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.into_iter().map(|e| (e.key, e.reason)).collect(),
    }
}

#[test]
fn placeholder_and_short_webhook_secrets_are_rejected_naming_the_key() {
    for secret in [
        "change-me-to-16-plus-chars",
        "change-me-change-me-change-me-change-me",
        "replace-with-a-long-random-secret",
        "an-example-secret-that-is-long-enough-0123",
        "0123456789abcdef",
        "short",
    ] {
        let errs = webhook_errors(secret);
        assert_eq!(errs.len(), 1, "{secret}: {errs:?}");
        assert_eq!(errs[0].0, "platforms.telegram.webhook_secret", "{secret}");
    }
    assert!(webhook_errors("9f2c51e0a7d84b6c93e1f05a2b7d6c48e3a1f9b0").is_empty());
    // An empty secret is valid: the webhook is disabled, and the config says so.
    let c = Config::parse(
        "<t>",
        "[platforms.telegram]\nbase_url = \"https://api.telegram.org\"\n",
    )
    .unwrap();
    assert!(c
        .platforms
        .get("telegram")
        .unwrap()
        .webhook_secret
        .is_none());
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("KOMORA_PLATFORM_TELEGRAM_WEBHOOK_SECRET"));
    // Other secrets are checked for placeholders too.
    let err = Config::parse(
        "<t>",
        "[ai]\napi_key = \"replace-me\"\n[media.s3]\nsecret_access_key = \"change-me\"\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["media.s3.secret_access_key", "ai.api_key"]);
}

#[test]
fn the_environment_overrides_the_webhook_secret() {
    let file = "[platforms.telegram]\nbase_url = \"https://api.telegram.org\"\n\
                webhook_secret = \"from-the-file-0123456789abcdef0123\"\n";
    let secret = "9f2c51e0a7d84b6c93e1f05a2b7d6c48e3a1f9b0";
    let c = Config::parse_with_env("<t>", file, |k| {
        (k == "KOMORA_PLATFORM_TELEGRAM_WEBHOOK_SECRET").then(|| secret.to_string())
    })
    .unwrap();
    assert_eq!(
        c.platforms
            .get("telegram")
            .unwrap()
            .webhook_secret
            .as_deref(),
        Some(secret)
    );
    // A placeholder from the environment is rejected like one in the file.
    let err = Config::parse_with_env("<t>", file, |k| {
        (k == "KOMORA_PLATFORM_TELEGRAM_WEBHOOK_SECRET")
            .then(|| "change-me-change-me-change-me-change-me".to_string())
    })
    .unwrap_err();
    assert_eq!(err.errors[0].key, "platforms.telegram.webhook_secret");
}

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every string value under a key that names a secret, anywhere in `table`.
fn secret_values(table: &toml::Table, path: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = format!("{path}{k}");
        match v {
            toml::Value::Table(t) => secret_values(t, &format!("{key}."), out),
            toml::Value::String(s)
                if ["secret", "token", "api_key", "password"]
                    .iter()
                    .any(|w| k.contains(w))
                    && !s.is_empty() =>
            {
                out.push(format!("{key} = {s:?}"))
            }
            _ => {}
        }
    }
}

#[test]
fn shipped_configs_carry_no_secret_and_pass_check_config() {
    for file in ["config/origin.toml", "docker/config/origin.toml"] {
        let path = workspace().join(file);
        let table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let mut found = Vec::new();
        secret_values(&table, "", &mut found);
        assert!(found.is_empty(), "{file} carries secrets: {found:?}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_komora-origin"))
            .arg("--check-config")
            .arg(&path)
            .env_remove("KOMORA_PLATFORM_TELEGRAM_WEBHOOK_SECRET")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {err}");
        assert!(
            err.contains("webhook is disabled") || !err.contains("platforms."),
            "{err}"
        );
        // The same file with a placeholder secret from the environment fails, naming the key.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_komora-origin"))
            .arg("--check-config")
            .arg(&path)
            .env(
                "KOMORA_PLATFORM_TELEGRAM_WEBHOOK_SECRET",
                "replace-with-a-long-random-secret",
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}");
        assert!(
            err.contains(&format!(
                "{}: platforms.telegram.webhook_secret:",
                path.display()
            )),
            "{err}"
        );
    }
}

both_backends!(a_platform_without_a_secret_has_its_webhook_disabled, |t| {
    let app = spawn_app_with(
        &t,
        |raw| {
            for name in ["telegram", "whatsapp"] {
                raw.platforms.platforms.insert(
                    name.into(),
                    PlatformFile {
                        base_url: "http://127.0.0.1:9".into(),
                        webhook_secret: if name == "whatsapp" {
                            "9f2c51e0a7d84b6c93e1f05a2b7d6c48e3a1f9b0".into()
                        } else {
                            String::new()
                        },
                        ..PlatformFile::default()
                    },
                );
            }
        },
        None,
    )
    .await;
    let body = json!({"chat_id": "c1", "message_id": "m1", "text": "hello"});
    let raw = serde_json::to_vec(&body).unwrap();
    let sig = hex::encode(komora_origin::messaging::webhook::hmac_sha256(b"", &raw));
    // Whatever is sent — no secret, an empty one, a signature made with an empty key.
    let attempts: [&[(&str, &str)]; 4] = [
        &[],
        &[("x-komora-webhook-secret", "")],
        &[("x-telegram-bot-api-secret-token", "")],
        &[("x-komora-signature", &format!("sha256={sig}"))],
    ];
    for headers in attempts {
        let mut req = app
            .client
            .post(format!("{}/webhooks/telegram", app.base))
            .header("content-type", "application/json")
            .body(raw.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 404, "{headers:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "webhook_disabled");
    }
    assert_eq!(count(&t.db, "SELECT count(*) FROM messages").await, 0);
    // A platform with a secret takes signed webhooks as before.
    let r = app
        .client
        .post(format!("{}/webhooks/whatsapp", app.base))
        .header(
            "x-komora-webhook-secret",
            "9f2c51e0a7d84b6c93e1f05a2b7d6c48e3a1f9b0",
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(count(&t.db, "SELECT count(*) FROM messages").await, 1);
});
