//! Building the pingora [`Server`] from our validated configuration: server settings (threads,
//! grace period, upgrade socket) come from `edge.toml`, not a pingora YAML file; HTTP and
//! HTTPS (rustls, h2 over ALPN) listeners served through [`crate::connection::EdgeApp`];
//! origin peers with TCP health checks; the admin
//! listener; storage and cache lock as process-lifetime statics.

use crate::admin::AdminApp;
use crate::config::EdgeConfig;
use crate::connection::EdgeApp;
use crate::listen::Listeners;
use crate::lock::EdgeLock;
use crate::service::Edge;
use crate::storage::TieredStorage;
use pingora::apps::HttpServerOptions;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::LoadBalancer;
use pingora::listeners::tls::Acceptor;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora::tls::{version, ServerConfig};
use std::path::Path;
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

/// The TLS acceptor for `server.tls_cert` and `server.tls_key`: TLS 1.2 and 1.3, ALPN `h2`
/// then `http/1.1` (what pingora's `TlsSettings::intermediate` with `enable_h2` builds),
/// made here so that an unreadable, empty or mismatched certificate or key is a startup
/// error naming the files, where pingora's listener would panic when it starts.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<Acceptor, BuildError> {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    pingora::tls::install_default_crypto_provider();
    let (chain, private_key) = pingora::tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| BuildError::Tls(format!("{cert}, {key}: {e}")))?
        .ok_or_else(|| {
            BuildError::Tls(format!(
                "{cert} holds no PEM certificate or {key} no PEM private key \
                 (PKCS#1, PKCS#8 or SEC1)"
            ))
        })?;
    let mut tls = ServerConfig::builder_with_protocol_versions(&[&version::TLS12, &version::TLS13])
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| BuildError::Tls(format!("{cert}, {key}: {e}")))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Acceptor::from_server_config(Arc::new(tls)))
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
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, edge);
    // pingora closes an idle HTTP/2 connection only when told to; the edge's HTTP/1 loop
    // uses the same timeout between requests.
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.server.keepalive_timeout);
    proxy.server_options = Some(options);
    let app = Arc::new(EdgeApp::new(
        proxy,
        config.server.request_header_timeout,
        config.server.keepalive_timeout,
    ));
    // The edge's own accept loops (`crate::listen`: no per-connection handshake future
    // held for the connection's life, no L4 buffers), plain and TLS serving the same app.
    if !config.server.listen.is_empty() {
        server.add_service(Listeners::plain(
            "komora-edge",
            config.server.listen.clone(),
            app.clone(),
        ));
    }
    if let Some((cert, key)) = &config.server.tls_cert_key {
        server.add_service(Listeners::tls(
            "komora-edge-tls",
            config.server.tls_listen.clone(),
            Arc::new(tls_acceptor(cert, key)?),
            app.clone(),
        ));
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
