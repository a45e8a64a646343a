//! Builds the HTTP application: routes, shared state, and the listener it serves on.
//!
//! `App::build` is what `komora-origin serve` runs; tests call `App::from_state` with their
//! own database and store and a listener on port 0, then read the real port back.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::Db;
use crate::media::store::MediaStore;

/// State shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    /// Where media bytes live.
    pub media: MediaStore,
}

impl AppState {
    /// The URL of the media with this sha256: signed when `media.signed_urls` is on.
    pub fn media_url(&self, sha256: &str) -> String {
        self.media_url_at(sha256, crate::media::signing::unix_now())
    }

    /// [`AppState::media_url`] as made at `now` (Unix seconds): its `exp` is `now` rounded
    /// up past one `media.signed_url_window_secs`, so it repeats within a window.
    pub fn media_url_at(&self, sha256: &str, now: u64) -> String {
        let url = format!("{}/media/{sha256}", self.config.media.public_base_url);
        match &self.config.media.access {
            crate::config::MediaAccess::Signed(signer) => {
                format!("{url}?{}", signer.query(sha256, now))
            }
            crate::config::MediaAccess::Public | crate::config::MediaAccess::NoKeys => url,
        }
    }
}

/// The whole router: `/api`, `/media`, probes and the queue's routes.
pub fn router(state: AppState) -> Router {
    let probes = Router::new()
        .route("/healthz", get(crate::api::health::healthz))
        .route("/readyz", get(crate::api::health::readyz))
        .route("/metrics", get(crate::api::health::metrics))
        .layer(axum::middleware::map_response(
            |mut resp: axum::response::Response| async move {
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            },
        ));
    Router::new()
        .merge(crate::api::routes(&state))
        .route(
            "/media/{id}",
            get(crate::media::serve::serve).head(crate::media::serve::serve),
        )
        .merge(probes)
        .merge(crate::queue::routes())
        // Outermost, around every route, fallback and the auth middleware: whoever answers
        // without reading the request body, the response says the connection ends.
        .layer(axum::middleware::from_fn(
            crate::unread_body::close_if_unread,
        ))
        .with_state(state)
}

/// A built application bound to its listener, ready to run.
pub struct App {
    listener: TcpListener,
    state: AppState,
}

impl App {
    /// Connects the database (migrating it) and the object store from `config`; binds
    /// `listener` or, when `None`, `server.listen`.
    pub async fn build(config: Config, listener: Option<TcpListener>) -> anyhow::Result<App> {
        if matches!(config.media.access, crate::config::MediaAccess::NoKeys) {
            anyhow::bail!(
                "media.signed_urls: true, but {} is not set: set it to one or more \
                 comma-separated keys of at least {} bytes (the first signs), or set \
                 media.signed_urls = false to serve media to anyone with the URL",
                crate::media::signing::KEYS_ENV,
                crate::media::signing::MIN_KEY_LEN
            );
        }
        let db = Db::connect(&config.database.url, &config.database.pool).await?;
        let media = crate::media::store::open(&config.media.store)?;
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(config.server.listen).await?,
        };
        Ok(App::from_state(
            AppState {
                db,
                config: Arc::new(config),
                media,
            },
            listener,
        ))
    }

    /// An app over ready-made state.
    pub fn from_state(state: AppState, listener: TcpListener) -> App {
        App { listener, state }
    }

    /// The address actually bound (the real port when configured with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests for at most
    /// `server.shutdown_grace_ms` before giving up on them.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = self.state.config.server.shutdown_grace;
        let worker = crate::queue::start_in_server(&self.state);
        let app = router(self.state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        let serve = axum::serve(self.listener, app)
            .with_graceful_shutdown(signal)
            .into_future();
        let deadline = async move {
            if stopping_rx.await.is_err() {
                // The server ended on its own; never fire.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            r = serve => r,
            _ = deadline => {
                tracing::warn!(?grace, "shutdown grace elapsed; dropping in-flight requests");
                Ok(())
            }
        };
        if let Some(w) = worker {
            w.abort();
        }
        result
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
