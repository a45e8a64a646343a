//! `download_and_save_media`: fetch a media URL the platform gave, store it
//! content-addressed, and link it to its message.
//!
//! The body is hashed while it streams in and cut off at the platform's `media_max_bytes`;
//! the object goes under the same key layout as uploads (`crate::store::media::object_key`),
//! so identical content is stored once whichever way it arrived. Re-running is harmless:
//! the media row is keyed by sha256 and the link by (message, media).
//!
//! Input: [`DownloadInput`], `{"message_id", "position"?, "url", "content_type"?, "name"?,
//! "platform"?}`.

use std::time::Duration;

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::messaging::platform::{classify, client, refused, transport};
use crate::queue::tasks::{TaskContext, TaskError, TaskOptions};
use komora_queue::store::ClaimedTask;

pub struct DownloadMedia;

/// What to fetch and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownloadInput {
    /// The message the media is attached to.
    pub message_id: i64,
    /// Its place among the message's attachments (0 first).
    #[serde(default)]
    pub position: i64,
    /// Where the platform serves it (checked by the SSRF guard).
    pub url: String,
    /// The platform's content type; else the response's.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The original file name, if the platform gave one.
    #[serde(default)]
    pub name: Option<String>,
    /// The platform (its size cap, timeout and allowed hosts apply).
    #[serde(default)]
    pub platform: Option<String>,
}

/// Size cap and timeout when the task names no configured platform.
const DEFAULT_MAX_BYTES: u64 = 20 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl komora_queue::Task for DownloadMedia {
    const KIND: &'static str = "download_and_save_media";
    type Input = DownloadInput;
    type Context = TaskContext;

    fn options() -> TaskOptions {
        TaskOptions::on("low")
    }

    /// One live download per attachment slot of a message.
    fn idempotency_key(input: &DownloadInput) -> Option<String> {
        Some(format!(
            "{}:{}:{}",
            Self::KIND,
            input.message_id,
            input.position
        ))
    }

    async fn run(
        &self,
        ctx: &TaskContext,
        input: DownloadInput,
        _task: &ClaimedTask,
    ) -> Result<(), TaskError> {
        let message_id = input.message_id;
        let position = input.position;
        let url = input.url.as_str();
        let platform = input
            .platform
            .as_deref()
            .and_then(|p| ctx.config.platforms.get(p));
        let (max_bytes, timeout) = platform
            .map(|p| (p.media_max_bytes, p.timeout))
            .unwrap_or((DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT));
        // A media URL comes from the webhook body: only the platform's allowed hosts may be
        // non-public.
        let allowed = platform.map(|p| p.allowed_hosts.as_slice()).unwrap_or(&[]);
        let Some(store) = ctx.media.clone() else {
            return Err(TaskError::Retry(
                "no media object store in this worker".into(),
            ));
        };
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => {
                return Err(TaskError::Permanent(format!(
                    "{url:?} is not an http(s) URL"
                )))
            }
        }

        let resp = client(&ctx.http, allowed)?
            .get(url)
            .map_err(|r| refused(&r, "media download"))?
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport(&e, "media download"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(classify(status, &body, "media download"));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(TaskError::Permanent(format!(
                "media is larger than {max_bytes} bytes"
            )));
        }
        let content_type = input
            .content_type
            .clone()
            .or_else(|| {
                resp.headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            })
            .filter(|v| !v.is_empty() && v.len() <= 100)
            .unwrap_or_else(|| "application/octet-stream".into());
        let mut hasher = Sha256::new();
        let mut buf = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(&e, "media download"))?;
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(TaskError::Permanent(format!(
                    "media is larger than {max_bytes} bytes"
                )));
            }
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
        }
        let sha = hex::encode(hasher.finalize());
        let size = i64::try_from(buf.len()).unwrap_or(i64::MAX);
        let key = crate::store::media::object_key(&sha);
        store
            .put(
                &object_store::path::Path::from(key.as_str()),
                PutPayload::from(buf),
            )
            .await
            .map_err(|e| TaskError::Retry(format!("object store: {e}")))?;

        let now = crate::db::now_ms();
        let name = input
            .name
            .as_deref()
            .map(|s| s.chars().take(255).collect::<String>());
        // Through the store, like every media and message write.
        let mut tx = ctx.db.pool.begin().await?;
        let media_id = crate::store::media::insert_in(
            &mut tx,
            &sha,
            size,
            &content_type,
            name.as_deref(),
            now,
        )
        .await?;
        crate::store::messages::link_media(&mut tx, message_id, media_id, position).await?;
        tx.commit().await?;
        Ok(())
    }
}
