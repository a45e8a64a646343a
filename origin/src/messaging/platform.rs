//! Messaging platform HTTP adapters: send a text to a chat, classify the answer.
//!
//! One adapter per platform shape. `telegram` speaks the Bot API
//! (`POST {base_url}/bot{token}/sendMessage`, answer `{"ok":true,"result":{"message_id":N}}`);
//! every other configured platform uses the generic JSON shape
//! (`POST {base_url}/messages` with `Authorization: Bearer {token}`, body
//! `{"chat_id","text"}`, answer `{"id": …}`). Both send `Idempotency-Key: komora-message-{id}`
//! so a platform that honours it drops a repeat after a crash between send and record
//! (telegram does not; see `tasks::send_message` for what happens instead).
//!
//! 4xx (other than 408 and 429) means the platform refused the message for good; 5xx,
//! 408, 429, timeouts and connection errors are worth retrying.

use serde_json::{json, Value};

use crate::queue::config::PlatformConfig;
use crate::queue::tasks::TaskError;

/// Turns an HTTP status and body into a task error for non-success answers.
pub fn classify(status: reqwest::StatusCode, body: &str, what: &str) -> TaskError {
    let body: String = body.chars().take(300).collect();
    let msg = format!("{what} answered {status}: {body}");
    if status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        TaskError::Permanent(msg)
    } else {
        TaskError::Retry(msg)
    }
}

/// A transport error (timeout, refused connection) is retried; a fetch the SSRF guard
/// refused (the host resolves to a forbidden address, a redirect went to one) is permanent.
pub fn transport(e: &reqwest::Error, what: &str) -> TaskError {
    if let Some(r) = crate::fetch::refused_in(e) {
        return refused(&r, what);
    }
    if e.is_timeout() {
        TaskError::Retry(format!("{what} timed out: {e}"))
    } else {
        TaskError::Retry(format!("{what} unreachable: {e}"))
    }
}

/// A fetch the SSRF guard refused, as a permanent task error.
pub fn refused(r: &crate::fetch::Refused, what: &str) -> TaskError {
    TaskError::Permanent(format!("{what} {r}"))
}

/// The SSRF-safe client for `allowed` (failing to build one is transient).
pub fn client(
    http: &crate::fetch::SafeHttp,
    allowed: &[crate::fetch::AllowedHost],
) -> Result<crate::fetch::SafeClient, TaskError> {
    http.client(allowed)
        .map_err(|e| TaskError::Retry(format!("HTTP client: {e}")))
}

/// Why a send failed, and whether the platform may have taken the message anyway.
#[derive(Debug)]
pub enum SendFailure {
    /// The message certainly did not reach the platform (no connection, refused by the SSRF
    /// guard, or the platform answered with an error).
    NotSent(TaskError),
    /// The request went out and no answer came back (timeout, cut connection, unreadable
    /// answer): the platform may have delivered it.
    MaybeSent(TaskError),
}

/// A transport error, split by whether the request may have reached the platform.
fn send_failure(e: &reqwest::Error, what: &str) -> SendFailure {
    let err = transport(e, what);
    if e.is_connect() || crate::fetch::refused_in(e).is_some() || e.is_builder() {
        SendFailure::NotSent(err)
    } else {
        SendFailure::MaybeSent(err)
    }
}

/// Sends `text` to chat `chat_id`; returns the platform's message id when it gives one.
pub async fn send_text(
    http: &crate::fetch::SafeHttp,
    platform: &PlatformConfig,
    chat_id: &str,
    text: &str,
    message_id: i64,
) -> Result<Option<String>, SendFailure> {
    let what = format!("platform {}", platform.name);
    let http = client(http, &platform.allowed_hosts).map_err(SendFailure::NotSent)?;
    let not_sent = |r: crate::fetch::Refused| SendFailure::NotSent(refused(&r, &what));
    let req = if platform.name == "telegram" {
        http.post(&format!(
            "{}/bot{}/sendMessage",
            platform.base_url, platform.token
        ))
        .map_err(not_sent)?
        .json(&json!({ "chat_id": chat_id, "text": text }))
    } else {
        http.post(&format!("{}/messages", platform.base_url))
            .map_err(not_sent)?
            .bearer_auth(&platform.token)
            .json(&json!({ "chat_id": chat_id, "text": text }))
    };
    let resp = req
        .header("Idempotency-Key", format!("komora-message-{message_id}"))
        .timeout(platform.timeout)
        .send()
        .await
        .map_err(|e| send_failure(&e, &what))?;
    let status = resp.status();
    // The platform answered: an unreadable success body may still be a delivery.
    let body = resp
        .text()
        .await
        .map_err(|e| SendFailure::MaybeSent(transport(&e, &what)))?;
    if !status.is_success() {
        return Err(SendFailure::NotSent(classify(status, &body, &what)));
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = v
        .pointer("/result/message_id")
        .or_else(|| v.get("id"))
        .or_else(|| v.get("message_id"))
        .and_then(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    Ok(id)
}
