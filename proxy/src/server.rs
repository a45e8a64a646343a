//! Building the pingora [`Server`] from our validated configuration: server settings (threads,
//! grace period, upgrade socket) come from `edge.toml`, not a pingora YAML file; HTTP and
//! HTTPS (rustls, h2 over ALPN) listeners served through [`crate::connection::EdgeApp`];
//! origin peers with TCP health checks; the admin
//! listener; storage and cache lock as process-lifetime statics.

use crate::admin::AdminApp;
use crate::config::EdgeConfig;
use crate::connection::EdgeApp;
use crate::listen::PlainListeners;
use crate::lock::EdgeLock;
use crate::service::Edge;
use crate::storage::TieredStorage;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::LoadBalancer;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::sync::Arc;

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The cache directory could not be opened.
    #[error("cache.dir {0}: {1}")]
    CacheDir(String, std::io::Error),
    /// Origin peers could not be set up.
    #[error("upstream.origins: {0}")]
    Origins(std::io::Error),
    /// TLS certificate/key could not be loaded.
    #[error("server.tls_cert/tls_key: {0}")]
    Tls(String),
    /// The access log could not be opened.
    #[error("{0}")]
    AccessLog(#[from] crate::access_log::StartError),
}

fn server_conf(config: &EdgeConfig) -> ServerConf {
    let s = &config.server;
    let grace = s.grace_period.as_secs();
    ServerConf {
        threads: s.threads.get(),
        // pingora waits grace_period_seconds, then gives runtimes
        // graceful_shutdown_timeout_seconds to stop; split our budget between the two so the
        // process is gone within `server.grace_period_secs`.
        grace_period_seconds: Some(grace.saturating_sub(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: s.upgrade_sock.display().to_string(),
        pid_file: s.pid_file.display().to_string(),
        ..ServerConf::default()
    }
}

/// Raise the soft open-file limit to the hard limit: the edge holds client sockets, origin
/// connections and up to `cache.memory.sendfile_max_open_files` entry files, and the usual
/// soft default (1024) is far below what a busy edge needs. Failure is logged, not fatal.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// Build the server with all services; call `run_forever` on the result.
/// The disk index rebuild starts here in the background; listeners do not wait for it.
///
/// With `upgrade`, bootstrap takes the listening sockets over from the edge running with
/// the same `server.upgrade_sock` (pingora's graceful upgrade): it waits for them until
/// that process gets SIGQUIT, then this one accepts on the very same sockets, so no
/// connection is refused while the old process drains.
pub fn build(config: EdgeConfig, upgrade: bool) -> Result<Server, BuildError> {
    raise_open_file_limit();
    let config = Arc::new(config);
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(&config));
    server.bootstrap();

    let storage: &'static TieredStorage = Box::leak(Box::new(
        TieredStorage::new(&config.cache)
            .map_err(|e| BuildError::CacheDir(config.cache.dir.display().to_string(), e))?,
    ));
    if let Err(e) = storage.start_rebuild() {
        tracing::warn!(error = %e, "could not start the disk index rebuild");
    }
    let lock: &'static CacheKeyLockImpl = Box::leak(Box::new(EdgeLock::new(
        config.cache.lock_age_timeout,
        storage,
    )));

    let mut lb = LoadBalancer::try_from_iter(config.upstream.origins.iter().map(String::as_str))
        .map_err(BuildError::Origins)?;
    lb.set_health_check(TcpHealthCheck::new());
    lb.health_check_frequency = Some(config.upstream.health_check_interval);
    let health = background_service("origin health check", lb);
    let upstreams = health.task();

    let mut edge = Edge::new(config.clone(), storage, lock, upstreams);
    edge.access_log = config
        .access_log
        .as_ref()
        .map(crate::access_log::AccessLog::start)
        .transpose()?;
    let app = Arc::new(EdgeApp::new(
        pingora::proxy::http_proxy(&server.configuration, edge),
        config.server.request_header_timeout,
    ));
    // Plain HTTP: the edge's own accept loop (`crate::listen`: no per-connection handshake
    // future, no L4 buffers). TLS: pingora's listeners, serving the same app.
    if !config.server.listen.is_empty() {
        server.add_service(PlainListeners::new(
            "komora-edge",
            config.server.listen.clone(),
            app.clone(),
        ));
    }
    if let Some((cert, key)) = &config.server.tls_cert_key {
        let mut proxy = Service::new("komora-edge-tls".to_string(), EdgeApp::clone(&app));
        for addr in &config.server.tls_listen {
            let mut tls =
                TlsSettings::intermediate(&cert.display().to_string(), &key.display().to_string())
                    .map_err(|e| BuildError::Tls(e.to_string()))?;
            tls.enable_h2();
            proxy.add_tls_with_settings(&addr.to_string(), None, tls);
        }
        server.add_service(proxy);
    }
    server.add_service(health);

    if let Some(addr) = config.admin.listen {
        let token = std::env::var(&config.admin.token_env)
            .ok()
            .filter(|t| !t.is_empty());
        let mut admin = Service::new(
            "komora-admin".to_string(),
            AdminApp::new(storage, token, config.clone()),
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    Ok(server)
}
