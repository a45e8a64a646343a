//! Builds the HTTP application: routes, shared state, and the listeners it serves on.
//!
//! Two listeners, so what must not be public never is:
//!
//! | listener | serves |
//! |---|---|
//! | public, `server.listen` (behind the edge) | `/api/*`, `/media/*`, `/webhooks/*`, `/console/*`, `/healthz`, `/readyz` |
//! | internal, `server.internal_listen` (loopback by default) | `/metrics`, `/admin/*` (admin key), `/healthz`, `/readyz` |
//!
//! The public listener answers 404 for `/metrics` and `/admin/*`.
//!
//! `App::build` is what `komora-origin serve` runs; tests call `App::from_state` with their
//! own database and store and a listener on port 0 (plus, if they need it,
//! `with_internal_listener`), then read the real ports back.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::routing::{any, get};
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

/// `/healthz` and `/readyz`, never cached; on both listeners.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(crate::api::health::healthz))
        .route("/readyz", get(crate::api::health::readyz))
        .layer(axum::middleware::map_response(no_store))
}

async fn no_store(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn internal_only() -> crate::api::error::ApiError {
    crate::api::error::ApiError::not_found("route")
}

/// The public router: `/api`, `/media`, the webhooks, the ops console and the probes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::api::routes(&state))
        .route(
            "/media/{id}",
            get(crate::media::serve::serve).head(crate::media::serve::serve),
        )
        .merge(probes())
        .merge(crate::queue::public_routes())
        .merge(crate::console::routes())
        // Internal-listener paths: 404 here for anyone, before any authentication.
        .route("/metrics", any(internal_only))
        .route("/admin", any(internal_only))
        .route("/admin/{*rest}", any(internal_only))
        // Outermost, around every route, fallback and the auth middleware: whoever answers
        // without reading the request body, the response says the connection ends.
        .layer(axum::middleware::from_fn(
            crate::unread_body::close_if_unread,
        ))
        .with_state(state)
}

/// The internal router: `/metrics`, the admin API (admin keys only: 401 without a key,
/// 403 for an operator key) and the probes.
pub fn internal_router(state: AppState) -> Router {
    let admin = crate::queue::internal_routes().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::api::auth::require_admin,
    ));
    Router::new()
        .route("/metrics", get(crate::api::health::metrics))
        .layer(axum::middleware::map_response(no_store))
        .merge(admin)
        .merge(probes())
        .fallback(|| async { crate::api::error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(
            crate::unread_body::close_if_unread,
        ))
        .with_state(state)
}

/// A built application bound to its listeners, ready to run.
pub struct App {
    listener: TcpListener,
    /// `None`: the internal API is not served (tests that do not need it).
    internal: Option<TcpListener>,
    state: AppState,
}

impl App {
    /// Connects the database (migrating it) and the object store from `config`; binds
    /// `listener` or, when `None`, `server.listen`, and `server.internal_listen`.
    pub async fn build(config: Config, listener: Option<TcpListener>) -> anyhow::Result<App> {
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
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
        let internal = TcpListener::bind(config.server.internal_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "binding server.internal_listen {}: {e}",
                    config.server.internal_listen
                )
            })?;
        Ok(App::from_state(
            AppState {
                db,
                config: Arc::new(config),
                media,
            },
            listener,
        )
        .with_internal_listener(internal))
    }

    /// An app over ready-made state, serving only the public router on `listener`.
    pub fn from_state(state: AppState, listener: TcpListener) -> App {
        App {
            listener,
            internal: None,
            state,
        }
    }

    /// Also serves the internal router (`/metrics`, `/admin/*`) on `listener`.
    pub fn with_internal_listener(mut self, listener: TcpListener) -> App {
        self.internal = Some(listener);
        self
    }

    /// The address actually bound (the real port when configured with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The internal listener's address, when there is one.
    pub fn internal_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.internal.as_ref().map(TcpListener::local_addr)
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
        let app = router(self.state.clone());
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // Both listeners stop on the same signal.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            let _ = stopping_tx.send(());
        };
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let internal = self.internal.map(|l| {
            let serve = axum::serve(l, internal_router(self.state.clone()))
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future();
            tokio::spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "internal listener failed");
                }
            })
        });
        tokio::spawn(signal);
        let serve = axum::serve(self.listener, app)
            .with_graceful_shutdown(stopped(stop_rx))
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
        if let Some(i) = internal {
            i.abort();
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
