//! The origin's configuration: `config/origin.toml`.
//!
//! The serde structs below mirror the file one to one (unknown keys are errors); they are
//! then validated into [`Config`], the typed values the rest of the code uses. Loading
//! (`komora_config::parse`) and validation collect every problem with its key path instead
//! of stopping at the first (unknown keys, wrong types and invalid values alike), so
//! `komora-origin --check-config FILE` lists them all. Defaults are the `DEFAULT_*`
//! constants, used by the `Default` impls and named in the field docs.
//!
//! `[server]`, `[database]` and `[media]` are declared here; secrets can also come from the
//! environment (see [`apply_env`]) so they need not live in the file.
//!
//! Sections owned by other modules (`[queue]`, `[worker]`, `[ai]`, `[platforms.*]`) are
//! declared in `crate::queue::config` and validated there.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One problem found in a config file, and every problem of one file: the workspace's one
/// config-error shape (`komora_config`), printed as `FILE: KEY: REASON`.
pub use komora_config::{ConfigError, ConfigErrors};

/// `config/origin.toml` as written. Every section is optional; missing keys take defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub server: ServerFile,
    pub database: DatabaseFile,
    pub media: MediaFile,
    pub queue: crate::queue::config::QueueFile,
    pub ai: crate::queue::config::AiFile,
    pub platforms: crate::queue::config::PlatformsFile,
    pub console: crate::edge_admin::ConsoleFile,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub media: MediaConfig,
    pub queue: crate::queue::config::QueueConfig,
    pub ai: crate::queue::config::AiConfig,
    pub platforms: crate::queue::config::PlatformsConfig,
    /// `[console]`: the edges the console reads and purges.
    pub edges: crate::edge_admin::EdgesConfig,
}

impl ConfigFile {
    /// Parses TOML text as written (no environment, no validation): every key that does not
    /// deserialize is an error. `komora up` builds its derived configs from this.
    pub fn parse(file: &str, text: &str) -> Result<ConfigFile, ConfigErrors> {
        let parsed = komora_config::parse::<ConfigFile>(file, text)?;
        komora_config::finish(file, Some(parsed.value), parsed.errors)
    }

    /// Validates every section, collecting all errors.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) -> Option<Config> {
        let server = self.server.validate("server", errors);
        let database = self.database.validate("database", errors);
        let media = self.media.validate("media", errors);
        let kinds = crate::queue::tasks::kind_defaults();
        let queue = self.queue.validate("queue", &kinds, errors);
        let ai = self.ai.validate("ai", errors);
        let platforms = self.platforms.validate("platforms", errors);
        let edges = self.console.validate("console", errors);
        if !errors.is_empty() {
            return None;
        }
        Some(Config {
            server: server?,
            database: database?,
            media: media?,
            queue: queue?,
            ai: ai?,
            platforms: platforms?,
            edges: edges?,
        })
    }
}

impl Config {
    /// Reads, parses and validates a file; all problems are reported together.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = komora_config::read(path)?;
        Config::parse_with_env(&path.display().to_string(), &text, |k| {
            std::env::var(k).ok()
        })
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_with_env(file, text, |_| None)
    }

    /// Like [`Config::parse`], then overrides keys from the environment (see [`apply_env`])
    /// before validating. `env` looks a variable up (`|k| std::env::var(k).ok()` in prod).
    /// Every problem is reported: keys that do not deserialize (unknown, mistyped) take
    /// their defaults so that validation still checks the rest.
    pub fn parse_with_env(
        file: &str,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let parsed = komora_config::parse::<ConfigFile>(file, text)?;
        let (mut raw, mut errors) = (parsed.value, parsed.errors);
        apply_env(&mut raw, env);
        let config = raw.validate(&mut errors);
        komora_config::finish(file, config, errors)
    }

    /// What is valid but worth telling ops at start and in `--check-config` (e.g. a
    /// platform whose webhook is disabled because it has no secret).
    pub fn warnings(&self) -> Vec<String> {
        self.platforms.warnings()
    }

    /// The built-in defaults (what an empty file gives).
    pub fn defaults() -> Result<Config, ConfigErrors> {
        Config::parse("<defaults>", "")
    }
}

/// Overrides from the environment, applied over the file (secrets belong here, not in git):
///
/// - `KOMORA_LISTEN` → `server.listen`, `KOMORA_INTERNAL_LISTEN` → `server.internal_listen`
/// - `KOMORA_DATABASE_URL` → `database.url`
/// - `KOMORA_MEDIA_STORE_URL` → `media.store_url`
/// - `KOMORA_S3_ENDPOINT`, `KOMORA_S3_REGION`, `KOMORA_S3_ACCESS_KEY_ID`,
///   `KOMORA_S3_SECRET_ACCESS_KEY` → `media.s3.*`
/// - `KOMORA_PLATFORM_<NAME>_WEBHOOK_SECRET` → `platforms.<name>.webhook_secret` (for each
///   platform the file declares; `KOMORA_PLATFORM_<NAME>_TOKEN` and `KOMORA_AI_API_KEY`
///   are read by `crate::queue::config`)
/// - `KOMORA_MEDIA_SIGNING_KEYS` → the media URL signing keys (environment only)
/// - each `console.edges[].admin_token_env` → that edge's admin token (environment only)
///
/// Standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT`, …) are read by the S3 client itself; `media.s3.*` keys win over them.
pub fn apply_env(raw: &mut ConfigFile, env: impl Fn(&str) -> Option<String>) {
    if let Some(v) = env("KOMORA_LISTEN") {
        raw.server.listen = v;
    }
    if let Some(v) = env("KOMORA_INTERNAL_LISTEN") {
        raw.server.internal_listen = v;
    }
    if let Some(v) = env("KOMORA_DATABASE_URL") {
        raw.database.url = v;
    }
    if let Some(v) = env("KOMORA_MEDIA_STORE_URL") {
        raw.media.store_url = v;
    }
    if let Some(v) = env("KOMORA_S3_ENDPOINT") {
        raw.media.s3.endpoint = Some(v);
    }
    if let Some(v) = env("KOMORA_S3_REGION") {
        raw.media.s3.region = Some(v);
    }
    if let Some(v) = env("KOMORA_S3_ACCESS_KEY_ID") {
        raw.media.s3.access_key_id = Some(v);
    }
    if let Some(v) = env("KOMORA_S3_SECRET_ACCESS_KEY") {
        raw.media.s3.secret_access_key = Some(v);
    }
    for (name, p) in raw.platforms.platforms.iter_mut() {
        let var = crate::queue::config::webhook_secret_env(name);
        if let Some(v) = env(&var).filter(|v| !v.is_empty()) {
            p.webhook_secret = v;
        }
    }
    if let Some(v) = env(crate::media::signing::KEYS_ENV) {
        raw.media.signing_keys = Some(v);
    }
    raw.console.apply_env(&env);
}

/// Pushes an error unless `min <= v <= max` (`komora_config::check_range`, in this
/// module's argument order).
fn check_range<T: PartialOrd + fmt::Display>(
    key: &str,
    v: T,
    min: T,
    max: T,
    errors: &mut Vec<ConfigError>,
) -> bool {
    komora_config::check_range(errors, key, v, min, max)
}

/// `[server]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    /// Address and port the HTTP API listens on. Default `"127.0.0.1:8081"` ([`DEFAULT_LISTEN`]); any `IP:PORT` (port 0 picks a free port).
    /// Env `KOMORA_LISTEN`.
    pub listen: String,
    /// Address and port of the internal listener: `/metrics` and the admin API
    /// (`/admin/*`), which the public listener answers 404 for; `/healthz` and `/readyz`
    /// are on both. Keep it off the public network. Default `"127.0.0.1:9181"` ([`DEFAULT_INTERNAL_LISTEN`]); any
    /// `IP:PORT` (port 0 picks a free port). Env `KOMORA_INTERNAL_LISTEN`.
    pub internal_listen: String,
    /// Largest JSON request body, bytes. Default 1048576 (1 MiB,
    /// [`DEFAULT_JSON_BODY_LIMIT_BYTES`]); 1024..=67108864.
    /// Media uploads have their own limit, `media.max_upload_bytes`.
    pub json_body_limit_bytes: u64,
    /// How long a graceful shutdown waits for in-flight requests, milliseconds.
    /// Default 10000 ([`DEFAULT_SHUTDOWN_GRACE_MS`]); 0..=600000.
    pub shutdown_grace_ms: u64,
}

/// Default `server.listen` (the edge listens on 8080 in front of it).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// Default `server.internal_listen`: loopback only.
pub const DEFAULT_INTERNAL_LISTEN: &str = "127.0.0.1:9181";
/// Default `server.json_body_limit_bytes` (1 MiB).
pub const DEFAULT_JSON_BODY_LIMIT_BYTES: u64 = 1024 * 1024;
/// Default `server.shutdown_grace_ms`.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: DEFAULT_LISTEN.into(),
            internal_listen: DEFAULT_INTERNAL_LISTEN.into(),
            json_body_limit_bytes: DEFAULT_JSON_BODY_LIMIT_BYTES,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
        }
    }
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    pub internal_listen: std::net::SocketAddr,
    pub json_body_limit: usize,
    pub shutdown_grace: std::time::Duration,
}

impl ServerFile {
    fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<ServerConfig> {
        let listen = match self.listen.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{key}.listen"),
                    format!("{:?} is not IP:PORT: {e}", self.listen),
                ));
                None
            }
        };
        let internal_listen = match self.internal_listen.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{key}.internal_listen"),
                    format!("{:?} is not IP:PORT: {e}", self.internal_listen),
                ));
                None
            }
        };
        if let (Some(l), Some(i)) = (listen, internal_listen) {
            if l == i && l.port() != 0 {
                errors.push(ConfigError::new(
                    format!("{key}.internal_listen"),
                    format!("{i} is also server.listen: the internal API must not be public"),
                ));
            }
        }
        let limit_ok = check_range(
            &format!("{key}.json_body_limit_bytes"),
            self.json_body_limit_bytes,
            1024,
            64 * 1024 * 1024,
            errors,
        );
        let grace_ok = check_range(
            &format!("{key}.shutdown_grace_ms"),
            self.shutdown_grace_ms,
            0,
            600_000,
            errors,
        );
        if !(limit_ok && grace_ok) {
            return None;
        }
        Some(ServerConfig {
            listen: listen?,
            internal_listen: internal_listen?,
            json_body_limit: usize::try_from(self.json_body_limit_bytes).ok()?,
            shutdown_grace: std::time::Duration::from_millis(self.shutdown_grace_ms),
        })
    }
}

/// `[database]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseFile {
    /// Database URL: `sqlite://PATH` (file and folder created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`. Default `"sqlite://var/komora.db"`
    /// ([`DEFAULT_DATABASE_URL`]).
    /// Env `KOMORA_DATABASE_URL` (put PostgreSQL passwords there, not in the file).
    pub url: String,
    /// Most connections the pool opens. Default 10 ([`DEFAULT_MAX_CONNECTIONS`]); 1..=1000.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing, milliseconds.
    /// Default 5000 ([`DEFAULT_ACQUIRE_TIMEOUT_MS`]); 100..=600000.
    pub acquire_timeout_ms: u64,
}

/// Default `database.url`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://var/komora.db";
/// Default `database.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default `database.acquire_timeout_ms`.
pub const DEFAULT_ACQUIRE_TIMEOUT_MS: u64 = 5_000;

impl Default for DatabaseFile {
    fn default() -> Self {
        DatabaseFile {
            url: DEFAULT_DATABASE_URL.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout_ms: DEFAULT_ACQUIRE_TIMEOUT_MS,
        }
    }
}

/// Validated `[database]`.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub pool: crate::db::PoolSettings,
}

impl DatabaseFile {
    fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<DatabaseConfig> {
        let mut ok = true;
        if crate::db::Backend::from_url(&self.url).is_none() {
            errors.push(ConfigError::new(
                format!("{key}.url"),
                "unsupported scheme (use sqlite:// or postgres://)",
            ));
            ok = false;
        }
        ok &= check_range(
            &format!("{key}.max_connections"),
            self.max_connections,
            1,
            1000,
            errors,
        );
        ok &= check_range(
            &format!("{key}.acquire_timeout_ms"),
            self.acquire_timeout_ms,
            100,
            600_000,
            errors,
        );
        ok.then(|| DatabaseConfig {
            url: self.url.clone(),
            pool: crate::db::PoolSettings {
                max_connections: self.max_connections,
                acquire_timeout: std::time::Duration::from_millis(self.acquire_timeout_ms),
            },
        })
    }
}

/// `[media]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaFile {
    /// Where media bytes live: `file://PATH` (a local folder, created if missing; relative
    /// paths are relative to the working directory) or `s3://BUCKET` (see `[media.s3]`).
    /// Default `"file://var/media"` ([`DEFAULT_STORE_URL`]). Env `KOMORA_MEDIA_STORE_URL`.
    pub store_url: String,
    /// Largest upload accepted by `POST /api/media`, bytes. Default 52428800 (50 MiB,
    /// [`DEFAULT_MAX_UPLOAD_BYTES`]);
    /// 1..=5368709120 (5 GiB).
    pub max_upload_bytes: u64,
    /// Prefix of media URLs returned by the API, e.g. `"https://cdn.example.com"`; empty
    /// means relative URLs (`/media/<sha256>`). Default `""`; must not end with `/`.
    pub public_base_url: String,
    /// S3 settings, used when `store_url` is `s3://…`.
    pub s3: S3File,
    /// Media are served only on signed URLs (`/media/<sha256>?exp=…&sig=…`, see
    /// `crate::media::signing`); unsigned, expired or tampered requests get 403. Default
    /// `true`; `false` serves media to anyone with the URL (public-media deployments only).
    /// The keys come from the environment, `KOMORA_MEDIA_SIGNING_KEYS` (comma-separated, at
    /// least 32 bytes each; the first signs, all verify): `serve` refuses to start when this
    /// is `true` and the variable is unset, while `--check-config` checks the file only.
    pub signed_urls: bool,
    /// Lifetime granularity of signed URLs, seconds: a URL's `exp` is rounded up to a
    /// multiple of this, so it is valid at least this long and less than twice this, and is
    /// the same URL (browser-cacheable) for that long. Default 86400 (1 day,
    /// `crate::media::signing::DEFAULT_WINDOW_SECS`); 60..=2592000.
    pub signed_url_window_secs: u64,
    /// `KOMORA_MEDIA_SIGNING_KEYS` as read by [`apply_env`]; never read from the file (a key
    /// written there is an unknown-key error).
    #[serde(skip)]
    pub signing_keys: Option<String>,
}

/// Default `media.store_url`.
pub const DEFAULT_STORE_URL: &str = "file://var/media";
/// Default `media.max_upload_bytes` (50 MiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;

impl Default for MediaFile {
    fn default() -> Self {
        MediaFile {
            store_url: DEFAULT_STORE_URL.into(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            public_base_url: String::new(),
            s3: S3File::default(),
            signed_urls: true,
            signed_url_window_secs: crate::media::signing::DEFAULT_WINDOW_SECS,
            signing_keys: None,
        }
    }
}

/// `[media.s3]` as written. Every key is optional; unset keys fall back to `AWS_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3File {
    /// S3-compatible endpoint, e.g. `"http://127.0.0.1:9000"` for MinIO. Default: AWS.
    /// Env `KOMORA_S3_ENDPOINT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region. Default `AWS_REGION` or `"us-east-1"`. Env `KOMORA_S3_REGION`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Access key id. Default `AWS_ACCESS_KEY_ID`. Env `KOMORA_S3_ACCESS_KEY_ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key. Default `AWS_SECRET_ACCESS_KEY`. Env `KOMORA_S3_SECRET_ACCESS_KEY`
    /// (prefer the environment: never commit secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Allow a plain `http://` endpoint (local test servers). Default `false`.
    pub allow_http: bool,
}

/// Where the validated media store lives.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// A local folder.
    Local(std::path::PathBuf),
    /// An S3 bucket with its settings.
    S3 { bucket: String, s3: S3File },
}

/// Validated `[media]`.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub store: StoreLocation,
    pub max_upload_bytes: u64,
    pub public_base_url: String,
    /// Who may read `/media`.
    pub access: MediaAccess,
}

/// Who may read `/media`: from `signed_urls` and the keys in the environment.
#[derive(Debug, Clone)]
pub enum MediaAccess {
    /// Anyone with the URL (`signed_urls = false`).
    Public,
    /// Only signed URLs.
    Signed(crate::media::signing::MediaSigner),
    /// Signed URLs wanted but no key in the environment: nothing verifies (every `/media`
    /// request is refused) and `App::build` refuses to start.
    NoKeys,
}

impl MediaFile {
    fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<MediaConfig> {
        let store = if let Some(path) = self.store_url.strip_prefix("file://") {
            if path.is_empty() {
                errors.push(ConfigError::new(format!("{key}.store_url"), "empty path"));
                None
            } else {
                Some(StoreLocation::Local(path.into()))
            }
        } else if let Some(bucket) = self.store_url.strip_prefix("s3://") {
            let bucket = bucket.trim_end_matches('/');
            if bucket.is_empty() || bucket.contains('/') {
                errors.push(ConfigError::new(
                    format!("{key}.store_url"),
                    "expected s3://BUCKET (no path)",
                ));
                None
            } else {
                Some(StoreLocation::S3 {
                    bucket: bucket.to_string(),
                    s3: self.s3.clone(),
                })
            }
        } else {
            errors.push(ConfigError::new(
                format!("{key}.store_url"),
                format!("{:?}: use file://PATH or s3://BUCKET", self.store_url),
            ));
            None
        };
        if let Some(endpoint) = &self.s3.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                errors.push(ConfigError::new(
                    format!("{key}.s3.endpoint"),
                    "must start with http:// or https://",
                ));
            }
        }
        if let Some(reason) = self
            .s3
            .secret_access_key
            .as_deref()
            .and_then(crate::queue::config::placeholder)
        {
            errors.push(ConfigError::new(
                format!("{key}.s3.secret_access_key"),
                reason,
            ));
        }
        let size_ok = check_range(
            &format!("{key}.max_upload_bytes"),
            self.max_upload_bytes,
            1,
            5 * 1024 * 1024 * 1024,
            errors,
        );
        let base_ok = if self.public_base_url.ends_with('/') {
            errors.push(ConfigError::new(
                format!("{key}.public_base_url"),
                "must not end with /",
            ));
            false
        } else {
            true
        };
        let window_ok = check_range(
            &format!("{key}.signed_url_window_secs"),
            self.signed_url_window_secs,
            60,
            30 * 86_400,
            errors,
        );
        let access = match (&self.signing_keys, self.signed_urls) {
            (_, false) => Some(MediaAccess::Public),
            (None, true) => Some(MediaAccess::NoKeys),
            (Some(list), true) => match crate::media::signing::parse_keys(list) {
                Ok(keys) => Some(MediaAccess::Signed(
                    crate::media::signing::MediaSigner::new(keys, self.signed_url_window_secs),
                )),
                Err(reason) => {
                    errors.push(ConfigError::new(
                        format!(
                            "{key}.signed_urls (env {})",
                            crate::media::signing::KEYS_ENV
                        ),
                        reason,
                    ));
                    None
                }
            },
        };
        if !(size_ok && base_ok && window_ok) {
            return None;
        }
        Some(MediaConfig {
            store: store?,
            max_upload_bytes: self.max_upload_bytes,
            public_base_url: self.public_base_url.clone(),
            access: access?,
        })
    }
}
