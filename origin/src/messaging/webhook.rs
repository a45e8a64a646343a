//! `POST /webhooks/{platform}`: inbound messages from a messaging platform.
//!
//! The request is authenticated with the platform's `webhook_secret`, either sent as is in
//! `X-Komora-Webhook-Secret` or as the HMAC-SHA256 key of the raw body in
//! `X-Komora-Signature: sha256=<hex>`. A good request stores the message, updates its
//! conversation (`last_message_id`, `last_activity_at`, `unread_count`) and enqueues its
//! tasks (`process_ai_reply`, one `download_and_save_media` per attachment) in one
//! transaction; anything wrong answers 4xx JSON and writes nothing. The body is capped at
//! `server.json_body_limit_bytes` (413) and the text at the outbound cap (400).
//!
//! Body (the same normalised shape for every platform; the platform-side relay maps to it):
//! `{"chat_id": "…", "message_id": "…", "text": "…", "sender": {"name": "…", "phone": "…"},
//!   "media": [{"url": "…", "content_type": "…", "name": "…"}]}`.
//! A redelivered webhook (same chat and message id) is answered 200 with `duplicate: true`.
//!
//! Telegram's own Update JSON (`{"update_id", "message": {"message_id", "chat": {"id"},
//! "from", "text" | "caption"}}`) is accepted too, with its native secret header
//! `X-Telegram-Bot-Api-Secret-Token`; updates without a message are answered 200 and ignored.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::api::error::ApiError;
use crate::api::messages::MAX_TEXT_CHARS;
use crate::app::AppState;
use crate::autobot::reply::ProcessAiReply;
use crate::db::now_ms;
use crate::media::download::{DownloadInput, DownloadMedia};
use crate::queue::config::PlatformConfig;
use crate::queue::store::enqueue_at;
use crate::queue::NewTask;
use crate::store::{clients, messages};

/// Inbound message as the webhook receives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    pub chat_id: String,
    pub message_id: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub sender: Sender,
    #[serde(default)]
    pub media: Vec<InboundMedia>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundMedia {
    pub url: String,
    pub content_type: Option<String>,
    pub name: Option<String>,
}

/// The normalised body, or a Telegram Update mapped to it (`None`: an update without a
/// message, e.g. a callback query, which is acknowledged and ignored).
pub fn parse_body(body: &[u8]) -> Result<Option<Inbound>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v.get("update_id").is_none() {
        return serde_json::from_value(v)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    let Some(msg) = v.get("message").or_else(|| v.get("channel_post")) else {
        return Ok(None);
    };
    let id_str = |x: Option<&serde_json::Value>| match x {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let chat_id = id_str(msg.pointer("/chat/id")).ok_or("message.chat.id missing")?;
    let message_id = id_str(msg.get("message_id")).ok_or("message.message_id missing")?;
    let text = msg
        .get("text")
        .or_else(|| msg.get("caption"))
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let from = msg.get("from");
    let name = from.map(|f| {
        let part = |k: &str| f.get(k).and_then(|x| x.as_str()).unwrap_or_default();
        format!("{} {}", part("first_name"), part("last_name"))
            .trim()
            .to_string()
    });
    Ok(Some(Inbound {
        chat_id,
        message_id,
        text,
        sender: Sender {
            name: name.filter(|n| !n.is_empty()),
            phone: None,
            email: None,
        },
        media: Vec::new(),
    }))
}

/// HMAC-SHA256 (RFC 2104) over `body` with `key`.
pub fn hmac_sha256(key: &[u8], body: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(body);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the platform's secret or a valid signature of `body`.
pub fn authenticate(platform: &PlatformConfig, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(secret) = platform.webhook_secret.as_deref().map(str::as_bytes) else {
        return false;
    };
    if let Some(given) = headers
        .get("x-komora-webhook-secret")
        .or_else(|| headers.get("x-telegram-bot-api-secret-token"))
    {
        return constant_time_eq(given.as_bytes(), secret);
    }
    if let Some(sig) = headers.get("x-komora-signature") {
        let Ok(sig) = sig.to_str() else {
            return false;
        };
        let hex_sig = sig.trim().strip_prefix("sha256=").unwrap_or(sig.trim());
        let Ok(given) = hex::decode(hex_sig) else {
            return false;
        };
        return constant_time_eq(&given, &hmac_sha256(secret, body));
    }
    false
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    crate::api::error::coded(status, code, &message.into())
}

/// The handler of `POST /webhooks/{platform}`.
pub async fn receive(
    State(state): State<AppState>,
    Path(platform): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The body limit of the JSON API, answered as its JSON 413 (not axum's plain text).
    let limit = state.config.server.json_body_limit;
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError {
                parameter: Some("body"),
                ..ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {limit} bytes"),
                )
            }
            .into_response()
        }
    };
    let Some(p) = state.config.platforms.get(&platform) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_platform",
            format!("platform {platform:?} is not configured"),
        );
    };
    // No secret configured: the webhook is off (never open), as the start-up warning says.
    if p.webhook_secret.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "webhook_disabled",
            format!("platform {platform:?} has no webhook_secret; its webhook is disabled"),
        );
    }
    if !authenticate(p, &headers, &body) {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong X-Komora-Webhook-Secret / X-Komora-Signature",
        );
    }
    let inbound: Inbound = match parse_body(&body) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return (StatusCode::OK, Json(json!({ "ignored": true }))).into_response();
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", e),
    };
    // Inbound text is capped like outbound text.
    if inbound.text.chars().count() > MAX_TEXT_CHARS {
        return ApiError::bad_param(
            "text",
            format!("text longer than {MAX_TEXT_CHARS} characters"),
        )
        .into_response();
    }
    if inbound.chat_id.is_empty() || inbound.message_id.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "chat_id and message_id must not be empty",
        );
    }
    match store_inbound(&state, p, &inbound, now_ms()).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, platform, "webhook: could not store message");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage",
                "could not store the message, retry later",
            )
        }
    }
}

/// Stores one inbound message and enqueues its tasks in one transaction.
pub async fn store_inbound(
    state: &AppState,
    p: &PlatformConfig,
    m: &Inbound,
    now: i64,
) -> Result<serde_json::Value, sqlx::Error> {
    let config = &state.config;
    let mut tx = state.db.pool.begin().await?;
    // Every write goes through the store: the message insert keeps the conversation's
    // unread count and last message (the newest wins) in step.
    let existing = clients::find_conversation(&mut tx, &p.name, &m.chat_id).await?;
    let conversation_id: i64 = match existing {
        Some(id) => id,
        None => {
            let office_id: Option<i64> = match p.office_id {
                Some(id) => Some(id),
                None => sqlx::query("SELECT id FROM offices ORDER BY id LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?,
            };
            let name = m
                .sender
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| format!("{} {}", p.name, m.chat_id));
            let client_id = clients::create_client_at(
                &mut tx,
                &name,
                m.sender.phone.as_deref(),
                m.sender.email.as_deref(),
                now,
            )
            .await?;
            clients::create_conversation_at(&mut tx, &p.name, client_id, office_id, &m.chat_id, now)
                .await?
        }
    };
    let mut message = messages::NewMessage::inbound(conversation_id, m.text.as_str());
    message.created_at = now;
    let Some(message_id) = messages::insert_inbound_once(&mut tx, &message, &m.message_id).await?
    else {
        // The platform redelivered a message we already have: nothing to write.
        let id = messages::find_by_external_id(&mut tx, conversation_id, "in", &m.message_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.rollback().await?;
        return Ok(json!({
            "message_id": id, "conversation_id": conversation_id, "duplicate": true, "tasks": []
        }));
    };
    let mut tasks = Vec::new();
    for (position, media) in m.media.iter().enumerate() {
        let input = DownloadInput {
            message_id,
            position: i64::try_from(position).unwrap_or(i64::MAX),
            url: media.url.clone(),
            content_type: media.content_type.clone(),
            name: media.name.clone(),
            platform: Some(p.name.clone()),
        };
        let task =
            NewTask::of::<DownloadMedia>(&input).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        tasks.push(enqueue_at(&mut tx, &config.queue, task, now).await?);
    }
    if config.ai.enabled && config.ai.channels.contains(&p.name) {
        let task = ProcessAiReply::task(message_id);
        tasks.push(enqueue_at(&mut tx, &config.queue, task, now).await?);
    }
    tx.commit().await?;
    Ok(json!({
        "message_id": message_id, "conversation_id": conversation_id, "duplicate": false,
        "tasks": tasks
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn telegram_update_maps_to_inbound() {
        let m = parse_body(
            br#"{"update_id":1,"message":{"message_id":5,"chat":{"id":-100},"caption":"pic"}}"#,
        )
        .unwrap() // unwrap: test-only
        .unwrap(); // unwrap: test-only
        assert_eq!((m.chat_id.as_str(), m.message_id.as_str()), ("-100", "5"));
        assert_eq!(m.text, "pic");
        assert!(parse_body(br#"{"update_id":1}"#).unwrap().is_none()); // unwrap: test-only
        assert!(parse_body(br#"{"chat_id":"1"}"#).is_err());
        assert!(parse_body(b"not json").is_err());
    }
}
