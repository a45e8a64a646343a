//! `[console]` of `config/origin.toml`: the edges the console reads and purges. Tokens
//! come from the environment variables the entries name, never from the file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Default `console.edge_timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;

/// `[console]` as written: the edges the console shows and purges.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleFile {
    /// The edges whose admin listener the console reads `/metrics` from and sends purges
    /// to, as `[[console.edges]]` tables (see [`EdgeFile`]). Default none: the edge page
    /// says so. A purge goes to every edge listed.
    pub edges: Vec<EdgeFile>,
    /// Timeout of each request to an edge's admin listener, milliseconds (connect and
    /// answer). Default 3000; 100..=60000.
    pub edge_timeout_ms: u64,
}

impl Default for ConsoleFile {
    fn default() -> Self {
        ConsoleFile {
            edges: Vec::new(),
            edge_timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

impl ConsoleFile {
    /// Validates the section at `key` (`console`).
    pub fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<EdgesConfig> {
        validate(
            &format!("{key}.edges"),
            &self.edges,
            &format!("{key}.edge_timeout_ms"),
            self.edge_timeout_ms,
            errors,
        )
    }

    /// Reads each edge's token from the variable it names (`env` looks one up).
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) {
        for e in &mut self.edges {
            if !e.admin_token_env.is_empty() {
                e.token = env(&e.admin_token_env).filter(|t| !t.is_empty());
            }
        }
    }
}

/// One `[[console.edges]]` entry as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    /// Name shown in the console, e.g. `"edge-1"`. Required; unique; 1..=64 characters.
    pub name: String,
    /// Base URL of the edge's admin listener (its `admin.listen`), e.g.
    /// `"http://10.0.0.5:9180"`. Required; `http://` or `https://`, no path or query.
    pub admin_url: String,
    /// Name of the environment variable holding the edge's admin token (the variable its
    /// `admin.token_env` names), e.g. `"KOMORA_EDGE1_ADMIN_TOKEN"`. Required. Unset at
    /// start: the metrics still show, purges on this edge are refused with that reason.
    pub admin_token_env: String,
    /// The token read from `admin_token_env` by `crate::config::apply_env`; never read
    /// from the file (a `token` key there is an unknown-key error).
    #[serde(skip)]
    pub token: Option<String>,
}

/// A validated edge. `Debug` never prints the token.
#[derive(Clone)]
pub struct Edge {
    pub name: String,
    /// The admin listener's base URL, without a trailing `/`.
    pub admin_url: url::Url,
    /// The variable the token comes from (shown when it is missing).
    pub token_env: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("name", &self.name)
            .field("admin_url", &self.admin_url.as_str())
            .field("token_env", &self.token_env)
            .field("token", &self.token.as_ref().map(|_| "SET"))
            .finish()
    }
}

/// The validated edge list and the timeout of each request to one of them.
#[derive(Debug, Clone)]
pub struct EdgesConfig {
    pub edges: Vec<Edge>,
    pub timeout: Duration,
}

impl Default for EdgesConfig {
    fn default() -> Self {
        EdgesConfig {
            edges: Vec::new(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        }
    }
}

/// Validates `edges` (at `key`, e.g. `console.edges`) and `timeout_ms` (at `timeout_key`),
/// pushing one error per problem.
pub fn validate(
    key: &str,
    edges: &[EdgeFile],
    timeout_key: &str,
    timeout_ms: u64,
    errors: &mut Vec<ConfigError>,
) -> Option<EdgesConfig> {
    let before = errors.len();
    if !(100..=60_000).contains(&timeout_ms) {
        errors.push(ConfigError::new(
            timeout_key,
            format!("{timeout_ms} is out of range 100..=60000"),
        ));
    }
    let mut out = Vec::new();
    for (i, e) in edges.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let name = e.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            errors.push(ConfigError::new(
                format!("{k}.name"),
                "required, 1 to 64 characters",
            ));
        } else if edges[..i].iter().any(|o| o.name.trim() == name) {
            errors.push(ConfigError::new(
                format!("{k}.name"),
                format!("{name:?} is listed twice"),
            ));
        }
        let url = match url::Url::parse(&e.admin_url) {
            Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    format!("scheme {:?} is not http or https", u.scheme()),
                ));
                None
            }
            Ok(u) if u.path() != "/" || u.query().is_some() || u.fragment().is_some() => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    "give the admin listener's base URL only (no path or query)",
                ));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    "no credentials in the URL: name the token's variable in admin_token_env",
                ));
                None
            }
            Ok(u) => Some(u),
            Err(err) => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    format!("{:?} is not a URL: {err}", e.admin_url),
                ));
                None
            }
        };
        let env_ok = !e.admin_token_env.is_empty()
            && e.admin_token_env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !env_ok {
            errors.push(ConfigError::new(
                format!("{k}.admin_token_env"),
                "required: the name of the environment variable holding the edge's admin token",
            ));
        }
        if let Some(admin_url) = url {
            out.push(Edge {
                name: name.to_string(),
                admin_url,
                token_env: e.admin_token_env.clone(),
                token: e.token.clone().filter(|t| !t.is_empty()),
            });
        }
    }
    (errors.len() == before).then(|| EdgesConfig {
        edges: out,
        timeout: Duration::from_millis(timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_config_errors_name_the_key() {
        let edge = |name: &str, url: &str, env: &str| EdgeFile {
            name: name.into(),
            admin_url: url.into(),
            admin_token_env: env.into(),
            token: None,
        };
        let mut errors = Vec::new();
        let ok = validate(
            "console.edges",
            &[edge("a", "http://127.0.0.1:9180", "A_TOKEN")],
            "console.edge_timeout_ms",
            3000,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            ok.unwrap().edges[0].admin_url.as_str(), // unwrap: test-only
            "http://127.0.0.1:9180/"
        );
        let bad = [
            edge("a", "http://127.0.0.1:9180/metrics", "A"),
            edge("a", "ftp://x", "A"),
            edge("", "http://u:p@h", "bad-name"),
        ];
        let mut errors = Vec::new();
        assert!(validate(
            "console.edges",
            &bad,
            "console.edge_timeout_ms",
            5,
            &mut errors
        )
        .is_none());
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "console.edge_timeout_ms",
                "console.edges[0].admin_url",
                "console.edges[1].name",
                "console.edges[1].admin_url",
                "console.edges[2].name",
                "console.edges[2].admin_url",
                "console.edges[2].admin_token_env",
            ]
        );
        let debug = format!(
            "{:?}",
            Edge {
                name: "a".into(),
                admin_url: url::Url::parse("http://h").unwrap(), // unwrap: test-only constant
                token_env: "A".into(),
                token: Some("s3cret".into()),
            }
        );
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
