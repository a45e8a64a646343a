//! Edge configuration: the flat TOML file (`config/edge.toml`), its validation into typed
//! values, and the command-line overrides.
//!
//! Parsing is two-step, like Cloudflare River: serde structs mirror the TOML one-to-one
//! ([`file`]: `deny_unknown_fields`, every field optional with a documented default), then
//! [`RawConfig::validate`] turns them into [`EdgeConfig`] with `SocketAddr`, `PathBuf`,
//! `Duration` and `NonZero*` values, one module per concern ([`server`], [`cache`],
//! [`route`], [`access_log`]). Loading (`komora_config::parse`) and validation collect every
//! error with its key path instead of stopping at the first one, so
//! `komora-edge --check-config` reports them all at once. Defaults are the named constants
//! of [`defaults`], which validation applies and the field docs name.

use std::path::Path;

pub mod access_log;
pub mod cache;
mod check;
pub mod defaults;
pub mod file;
pub mod route;
pub mod server;
#[cfg(test)]
mod tests;

/// One validation problem with its dotted key path, and every problem of one file: the
/// workspace's one config-error shape (`komora_config`).
pub use komora_config::{ConfigError, ConfigErrors};

pub use access_log::{AccessLogFormat, AccessLogSettings, AccessLogTarget};
pub use cache::CacheSettings;
pub use defaults::*;
pub use file::{
    AddrList, RawAccessLog, RawAdmin, RawCache, RawConfig, RawDisk, RawKeyQuery, RawMemory,
    RawRoute, RawServer, RawUpstream,
};
pub use route::{KeyQuery, Route, RouteMode};
pub use server::{AdminSettings, ServerSettings, UpstreamSettings};

/// The validated configuration the edge runs with.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// `[server]`
    pub server: ServerSettings,
    /// `[upstream]`
    pub upstream: UpstreamSettings,
    /// `[cache]`
    pub cache: CacheSettings,
    /// `[[route]]`, sorted longest prefix first.
    pub routes: Vec<Route>,
    /// `[admin]`
    pub admin: AdminSettings,
    /// `[access_log]`, `None` when off.
    pub access_log: Option<AccessLogSettings>,
}

/// Command-line values that replace file values (`--listen`, `--origin`, `--cache-dir`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `server.listen` (and clears `server.tls_listen`).
    pub listen: Option<String>,
    /// Replaces `upstream.origins`.
    pub origin: Option<String>,
    /// Replaces `cache.dir`.
    pub cache_dir: Option<String>,
    /// Replaces `admin.listen`.
    pub admin_listen: Option<String>,
    /// Replaces `access_log.path`.
    pub access_log: Option<String>,
}

impl RawConfig {
    /// Validate into typed values, collecting every error with its key path.
    pub fn validate(self, source: &str) -> Result<EdgeConfig, ConfigErrors> {
        let mut c = check::Checker { errors: Vec::new() };
        let server = server::validate_server(&mut c, self.server.unwrap_or_default());
        let upstream = server::validate_upstream(&mut c, self.upstream.unwrap_or_default());
        let cache = cache::validate_cache(&mut c, self.cache.unwrap_or_default());
        let routes = route::validate_routes(&mut c, self.route);
        let admin = server::validate_admin(&mut c, self.admin.unwrap_or_default());
        let access_log =
            access_log::validate_access_log(&mut c, self.access_log.unwrap_or_default());
        let config = EdgeConfig {
            server,
            upstream,
            cache,
            routes,
            admin,
            access_log,
        };
        komora_config::finish(source, Some(config), c.errors)
    }
}

impl EdgeConfig {
    /// Load `path` (or built-in defaults when `None`), apply overrides, validate.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigErrors> {
        let (mut raw, source) = match path {
            Some(p) => (RawConfig::load(p)?, p.display().to_string()),
            None => (RawConfig::default(), "<defaults>".to_string()),
        };
        raw.apply(overrides);
        raw.validate(&source)
    }

    /// One line per signed route whose keys are missing from the environment: the edge
    /// refuses to serve them (nothing would verify), `--check-config` warns.
    pub fn missing_signing_keys(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|r| {
                let v = r.signed.as_ref().filter(|v| !v.has_keys())?;
                Some(format!(
                    "route {:?}: signed_urls = true, but {} is unset or empty \
                     (set it to the origin's KOMORA_MEDIA_SIGNING_KEYS)",
                    r.prefix, v.env
                ))
            })
            .collect()
    }

    /// The route for a request path: longest matching prefix, `None` when nothing matches.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }
}
