//! Urlencoded form bodies and query strings as name/value pairs, keeping repeated names
//! (a bulk selection sends `ids` once per ticked box), with typed getters whose failures
//! are 400 pages.

use axum::extract::{FromRequest, Request};

use super::ConsoleError;

/// A parsed form or query string.
#[derive(Debug, Clone, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn parse(raw: &[u8]) -> Form {
        Form(
            url::form_urlencoded::parse(raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.trim())
    }

    /// `name` as a positive integer id; a 400 page names the field otherwise.
    pub fn id(&self, name: &str) -> Result<Option<i64>, ConsoleError> {
        self.get(name).map(|v| parse_id(name, v)).transpose()
    }

    /// Every value of `name` as ids.
    pub fn ids(&self, name: &str) -> Result<Vec<i64>, ConsoleError> {
        self.all(name)
            .filter(|v| !v.is_empty())
            .map(|v| parse_id(name, v))
            .collect()
    }
}

/// A task id as typed or sent: 1 and up.
pub fn parse_id(name: &str, v: &str) -> Result<i64, ConsoleError> {
    match v.trim().trim_start_matches('#').parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConsoleError::BadRequest(format!(
            "{name}: {v:?} is not a task id (a whole number from 1)"
        ))),
    }
}

/// Most bytes a console form may have (a bulk selection of a few thousand ids fits).
const MAX_FORM: usize = 256 * 1024;

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::to_bytes(req.into_body(), MAX_FORM).await {
            Ok(b) => Ok(Form::parse(&b)),
            Err(_) => Err(ConsoleError::BadRequest(format!(
                "the form could not be read (at most {MAX_FORM} bytes)"
            ))),
        }
    }
}
