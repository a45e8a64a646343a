//! A stand-in messaging platform for the demo stack.
//!
//! The demo config points every platform adapter's `base_url` here, so a message posted in
//! the demo is really delivered over HTTP (and its task really finishes) without reaching
//! Telegram or WhatsApp. It accepts any POST, counts it, and answers like a platform would
//! with a JSON body carrying a fresh platform message id.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};

/// Messages the stand-in has accepted since it started.
#[derive(Debug, Default)]
pub struct Delivered(AtomicU64);

impl Delivered {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves the stand-in on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
) -> anyhow::Result<(SocketAddr, Arc<Delivered>, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let delivered = Arc::new(Delivered::default());
    let app = Router::new()
        .route("/__stats", get(stats))
        .route("/{*path}", post(accept))
        .with_state(delivered.clone());
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("komora: stand-in platform stopped: {e}");
        }
    });
    Ok((addr, delivered, handle))
}

async fn accept(State(d): State<Arc<Delivered>>) -> Json<serde_json::Value> {
    let n = d.0.fetch_add(1, Ordering::Relaxed) + 1;
    Json(serde_json::json!({ "ok": true, "message_id": format!("standin-{n}") }))
}

async fn stats(State(d): State<Arc<Delivered>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "delivered": d.count() }))
}
