//! Query-string parsing with errors that name the parameter (axum's `Query` rejection
//! would answer in plain text and without the name).

use std::collections::HashMap;

use super::error::ApiError;
use crate::store::Cursor;

/// The decoded query string. Repeated keys keep the last value.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The raw value, treating an empty value as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(
        &self,
        name: &'static str,
        min: i64,
        max: i64,
        default: i64,
    ) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_param(
                    name,
                    format!("{name} must be an integer in {min}..={max}"),
                )),
            },
        }
    }

    /// A keyset cursor, if present.
    pub fn cursor(&self, name: &'static str) -> Result<Option<Cursor>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => Cursor::decode(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad_param(name, format!("{name} is not a valid cursor"))),
        }
    }
}

/// A positive integer id from a path segment.
pub fn path_id(
    raw: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_param("id", "id must be a positive integer");
    let axum::extract::Path(s) = raw.map_err(|_| bad())?;
    match s.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad()),
    }
}
