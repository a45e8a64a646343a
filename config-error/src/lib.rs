//! One config-error shape and one TOML loader for every Komora config file (the edge's
//! `config/edge.toml`, the origin's `config/origin.toml` and the queue's `[queue]` section in it).
//!
//! The convention every config module follows:
//!
//! - Serde structs mirror the file one to one and carry `#[serde(deny_unknown_fields)]`:
//!   the loader relies on it to report a misspelt key instead of ignoring it.
//! - [`parse`] turns the text into those structs and reports *every* key that does not
//!   deserialize (unknown keys, wrong types), each with its dotted key path, not only the
//!   first: it drops the offending key and deserializes again, so the caller's validation
//!   still runs on everything else.
//! - Validation into typed values pushes every problem as a [`ConfigError`] with its key
//!   path ([`check_range`] for bounds), and [`ConfigErrors`] prints them all, one
//!   `FILE: KEY: REASON` line each: what `--check-config` shows ops.
//! - Defaults are named constants, used by the serde defaults and named in the field docs.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

/// One problem found in a config file: the dotted key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `cache.memory.max_capacity` or
    /// `route[1].prefix`; `<toml>` for a syntax error, `<file>` when the file cannot be read.
    pub key: String,
    /// Why the value is rejected.
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every problem found in one file, each printed on its own line as `FILE: KEY: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file the errors are about (`<defaults>` when no file was given).
    pub file: String,
    /// All errors found, in order of discovery.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn new(file: impl Into<String>, errors: Vec<ConfigError>) -> Self {
        ConfigErrors {
            file: file.into(),
            errors,
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of `path`; a read failure is one `<file>` error naming the file.
pub fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::new(
            path.display().to_string(),
            vec![ConfigError::new("<file>", format!("cannot read: {e}"))],
        )
    })
}

/// What [`parse`] made of a file: the value deserialized from every key that could be, and
/// one error per key that could not (dropped, so its default applies in `value`).
#[derive(Debug)]
pub struct Parsed<T> {
    pub value: T,
    pub errors: Vec<ConfigError>,
}

/// Rounds of "drop the failing key, deserialize again" before giving up on a file; far
/// more keys than any Komora file has.
const MAX_ROUNDS: usize = 512;

/// Parses TOML `text` (named `file` in errors) into `T`, reporting every key that does not
/// deserialize. `Err` only when nothing usable is left: a TOML syntax error (one `<toml>`
/// error with its line) or a problem no key can be dropped for.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<Parsed<T>, ConfigErrors> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(String::new(), |s| {
            let before = text.get(..s.start).unwrap_or(text);
            format!(" (line {})", before.lines().count().max(1))
        });
        ConfigErrors::new(
            file,
            vec![ConfigError::new(
                "<toml>",
                format!("{}{line}", one_line(e.message())),
            )],
        )
    })?;
    let mut errors = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let e = match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            Ok(value) => return Ok(Parsed { value, errors }),
            Err(e) => e,
        };
        let segments: Vec<_> = e.path().iter().cloned().collect();
        errors.push(ConfigError::new(
            key_path(&segments),
            reason(e.inner().message()),
        ));
        if !drop_key(&mut table, &segments) {
            break;
        }
    }
    Err(ConfigErrors::new(file, errors))
}

/// The dotted path of serde's segments: `cache.memory.x`, `route[0].y`.
fn key_path(segments: &[serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push_str(if out.is_empty() { "?" } else { ".?" }),
        }
    }
    if out.is_empty() {
        out.push_str("<root>");
    }
    out
}

/// serde's message in the words of a config file: "unknown key (expected one of: …)"
/// rather than "unknown field `x`, expected one of `a`, `b`".
fn reason(message: &str) -> String {
    let message = one_line(message);
    match message.strip_prefix("unknown field `") {
        Some(rest) => {
            let expected = rest.split_once("`, ").map_or("", |(_, e)| e);
            let expected = expected.replace('`', "");
            match expected.strip_prefix("expected one of ") {
                Some(list) => format!("unknown key (expected one of: {list})"),
                None if expected.is_empty() => "unknown key".to_string(),
                None => format!("unknown key ({expected})"),
            }
        }
        None => message,
    }
}

fn one_line(s: &str) -> String {
    s.trim().replace('\n', " ")
}

/// Removes the key at `segments` from `table`. A bad array element drops the whole array
/// (removing the element alone would shift the indexes later errors are reported with); a
/// bad key inside an element's table is removed from that table only. `false` when there
/// is nothing to remove (the error is not about one key).
fn drop_key(table: &mut toml::Table, segments: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    match segments.split_last() {
        Some((Segment::Map { key } | Segment::Enum { variant: key }, parents)) => {
            let parent = if parents.is_empty() {
                Some(table)
            } else {
                value_at(table, parents).and_then(toml::Value::as_table_mut)
            };
            parent.is_some_and(|t| t.remove(key).is_some())
        }
        Some((Segment::Seq { .. }, _)) => {
            let holder = segments
                .iter()
                .rposition(|s| matches!(s, Segment::Map { .. } | Segment::Enum { .. }));
            holder.is_some_and(|i| drop_key(table, &segments[..=i]))
        }
        _ => false,
    }
}

/// The value at a non-empty `path` below `table`.
fn value_at<'a>(
    table: &'a mut toml::Table,
    path: &[serde_path_to_error::Segment],
) -> Option<&'a mut toml::Value> {
    use serde_path_to_error::Segment;
    let (first, rest) = path.split_first()?;
    let mut v = match first {
        Segment::Map { key } | Segment::Enum { variant: key } => table.get_mut(key)?,
        _ => return None,
    };
    for s in rest {
        v = match (s, v) {
            (Segment::Map { key } | Segment::Enum { variant: key }, toml::Value::Table(t)) => {
                t.get_mut(key)?
            }
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Pushes `KEY: must be in MIN..=MAX, got V` unless `min <= v <= max`; `true` when in range.
pub fn check_range<T: PartialOrd + fmt::Display>(
    errors: &mut Vec<ConfigError>,
    key: impl Into<String>,
    v: T,
    min: T,
    max: T,
) -> bool {
    if v < min || v > max {
        errors.push(ConfigError::new(
            key,
            format!("must be in {min}..={max}, got {v}"),
        ));
        false
    } else {
        true
    }
}

/// `Ok(value)` when validation found nothing, else every error with the file's name.
pub fn finish<T>(
    file: &str,
    value: Option<T>,
    errors: Vec<ConfigError>,
) -> Result<T, ConfigErrors> {
    match value {
        Some(v) if errors.is_empty() => Ok(v),
        _ => Err(ConfigErrors::new(file, errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct File {
        a: u64,
        inner: Inner,
        list: Vec<Item>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        b: u64,
        c: String,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Item {
        name: String,
    }

    fn keys(e: &[ConfigError]) -> Vec<&str> {
        e.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn every_unknown_key_and_type_error_is_reported_and_the_rest_kept() {
        let text = "a = 1\nx = 2\n[inner]\nb = \"big\"\nc = \"kept\"\ny = 3\n\
                    [[list]]\nname = \"n\"\nz = 4\n";
        let p = parse::<File>("f.toml", text).unwrap(); // unwrap: test-only
                                                        // Keys are visited in table order (sorted), not file order.
        assert_eq!(keys(&p.errors), ["inner.b", "inner.y", "list[0].z", "x"]);
        assert_eq!(p.value.a, 1);
        assert_eq!(p.value.inner.c, "kept");
        assert_eq!(p.value.inner.b, 0, "a mistyped key takes its default");
        assert_eq!(p.value.list, [Item { name: "n".into() }]);
        assert!(p.errors[3]
            .reason
            .starts_with("unknown key (expected one of: a, inner, list)"));
        assert!(
            p.errors[0].reason.contains("expected u64"),
            "{:?}",
            p.errors[0]
        );
    }

    #[test]
    fn a_bad_array_element_drops_the_array_a_bad_key_in_it_only_the_key() {
        let p = parse::<File>("f.toml", "list = [\"x\", { name = \"b\" }]\n").unwrap(); // unwrap: test-only
        assert_eq!(keys(&p.errors), ["list[0]"]);
        assert!(p.value.list.is_empty());
        let text = "list = [{ name = 1 }, { name = \"b\", q = 1 }]\n";
        let p = parse::<File>("f.toml", text).unwrap(); // unwrap: test-only
        assert_eq!(keys(&p.errors), ["list[0].name", "list[1].q"]);
        assert_eq!(p.value.list.len(), 2);
        assert_eq!(p.value.list[1].name, "b");
    }

    #[test]
    fn syntax_error_names_its_line_and_display_lists_every_error() {
        let e = parse::<File>("f.toml", "a = 1\n[inner\n").unwrap_err();
        assert_eq!(keys(&e.errors), ["<toml>"]);
        assert!(e.errors[0].reason.ends_with("(line 2)"), "{e}");
        let e = ConfigErrors::new(
            "f.toml",
            vec![
                ConfigError::new("a", "bad"),
                ConfigError::new("b.c", "worse"),
            ],
        );
        assert_eq!(e.to_string(), "f.toml: a: bad\nf.toml: b.c: worse");
    }

    #[test]
    fn range_checks_and_finish() {
        let mut errors = Vec::new();
        assert!(check_range(&mut errors, "k", 5, 1, 10));
        assert!(!check_range(&mut errors, "k", 0, 1, 10));
        assert_eq!(errors, [ConfigError::new("k", "must be in 1..=10, got 0")]);
        assert!(finish("f", Some(1), errors).is_err());
        assert_eq!(finish("f", Some(1), Vec::new()), Ok(1));
        assert!(read(Path::new("/nonexistent/komora.toml")).is_err());
    }
}
