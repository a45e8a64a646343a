//! What the console shows of an edge's `/metrics` (Prometheus text exposition): hit
//! ratio, entries and bytes per tier, evictions, purges, integrity and write failures.
//! Only counters and gauges by name are read; every other series is ignored.

use std::collections::BTreeMap;

/// Cache figures of one edge, from its `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeStats {
    /// `komora_edge_requests_total` by `cache_status`.
    pub requests: BTreeMap<String, u64>,
    /// Per tier (`memory`, `disk`), in name order.
    pub tiers: Vec<TierStats>,
    /// `komora_edge_integrity_failures_total`.
    pub integrity_failures: u64,
    /// `komora_edge_cache_write_failures_total`.
    pub write_failures: u64,
    /// `komora_edge_bytes_served_total` by source (`memory`, `disk`, `fill`, `origin`).
    pub served: BTreeMap<String, u64>,
}

/// One tier's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierStats {
    pub tier: String,
    /// `komora_edge_cache_entries`.
    pub entries: i64,
    /// `komora_edge_cache_bytes`.
    pub bytes: i64,
    /// `komora_edge_evictions_total`.
    pub evictions: u64,
    /// `komora_edge_purges_total`.
    pub purges: u64,
}

/// Cache statuses answered from the cache (`REVALIDATED`: a stored copy, confirmed by a 304).
const HIT_STATUSES: [&str; 4] = ["HIT", "STALE", "UPDATING", "REVALIDATED"];
/// Cache statuses that went to the origin for a cacheable request.
const MISS_STATUSES: [&str; 2] = ["MISS", "EXPIRED"];

impl EdgeStats {
    /// Hits over cache lookups (hits, misses and expired; `BYPASS` is not a lookup);
    /// `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let sum = |names: &[&str]| -> u64 {
            names
                .iter()
                .map(|n| self.requests.get(*n).copied().unwrap_or(0))
                .sum()
        };
        let hits = sum(&HIT_STATUSES);
        let lookups = hits + sum(&MISS_STATUSES);
        // u64 → f64 loses precision only past 2^53 requests.
        #[allow(clippy::cast_precision_loss)]
        (lookups > 0).then(|| hits as f64 / lookups as f64)
    }

    /// `komora_edge_evictions_total` over every tier.
    pub fn evictions(&self) -> u64 {
        self.tiers.iter().map(|t| t.evictions).sum()
    }

    /// The figures in Prometheus text exposition `text`; unknown series are ignored.
    pub fn from_metrics(text: &str) -> EdgeStats {
        let mut s = EdgeStats::default();
        let mut tiers: BTreeMap<String, TierStats> = BTreeMap::new();
        for (name, labels, value) in text.lines().filter_map(sample) {
            let label = |k: &str| {
                labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            // Counters and gauges are integers here; a fractional one would be a bug upstream.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (count, gauge) = (value.max(0.0) as u64, value as i64);
            match name {
                "komora_edge_requests_total" => {
                    s.requests.insert(label("cache_status"), count);
                }
                "komora_edge_integrity_failures_total" => s.integrity_failures = count,
                "komora_edge_cache_write_failures_total" => s.write_failures = count,
                "komora_edge_bytes_served_total" => {
                    s.served.insert(label("tier"), count);
                }
                "komora_edge_cache_entries"
                | "komora_edge_cache_bytes"
                | "komora_edge_evictions_total"
                | "komora_edge_purges_total" => {
                    let t = label("tier");
                    let ts = tiers.entry(t.clone()).or_insert_with(|| TierStats {
                        tier: t,
                        ..TierStats::default()
                    });
                    match name {
                        "komora_edge_cache_entries" => ts.entries = gauge,
                        "komora_edge_cache_bytes" => ts.bytes = gauge,
                        "komora_edge_evictions_total" => ts.evictions = count,
                        _ => ts.purges = count,
                    }
                }
                _ => {}
            }
        }
        s.tiers = tiers.into_values().collect();
        s
    }
}

/// A parsed sample: metric name, labels in order, value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// One sample line of the text exposition format: `name{k="v",…} value [timestamp]`.
/// `None` for comments, blank lines and lines that do not parse.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i + 1,
                ',' | ' ' => {}
                '=' => {
                    // A quoted value with \\, \" and \n escapes.
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = body.get(end..)?;
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP komora_edge_requests_total Requests by cache status
# TYPE komora_edge_requests_total counter
komora_edge_requests_total{cache_status="HIT"} 6
komora_edge_requests_total{cache_status="MISS"} 2
komora_edge_requests_total{cache_status="BYPASS"} 40
komora_edge_requests_total{cache_status="REVALIDATED"} 1
komora_edge_requests_total{cache_status="EXPIRED"} 1
komora_edge_cache_entries{tier="disk"} 3
komora_edge_cache_entries{tier="memory"} 2
komora_edge_cache_bytes{tier="disk"} 12345
komora_edge_cache_bytes{tier="memory"} 999
komora_edge_evictions_total{tier="memory"} 4
komora_edge_purges_total{tier="disk"} 1
komora_edge_integrity_failures_total 7
komora_edge_bytes_served_total{tier="origin"} 4096
komora_edge_responses_total{status_class="2xx",cache_status="HIT"} 6
odd_series{a="x\"y\\z",b="1"} 5 1700000000
"#;

    #[test]
    fn metrics_text_gives_hit_ratio_tiers_evictions_and_integrity_failures() {
        let s = EdgeStats::from_metrics(TEXT);
        // (HIT 6 + REVALIDATED 1) / (7 + MISS 2 + EXPIRED 1); BYPASS is not a lookup.
        assert_eq!(s.hit_ratio(), Some(0.7));
        assert_eq!(s.integrity_failures, 7);
        assert_eq!(s.evictions(), 4);
        let disk = &s.tiers[0];
        assert_eq!(
            (disk.tier.as_str(), disk.entries, disk.bytes, disk.purges),
            ("disk", 3, 12345, 1)
        );
        let mem = &s.tiers[1];
        assert_eq!(
            (mem.tier.as_str(), mem.entries, mem.bytes),
            ("memory", 2, 999)
        );
        assert_eq!(EdgeStats::from_metrics("").hit_ratio(), None);
    }

    #[test]
    fn sample_lines_with_escaped_labels_and_timestamps_parse() {
        let line = r#"odd_series{a="x\"y\\z",b="1"} 5 1700000000"#;
        let (name, labels, v) = sample(line).unwrap(); // unwrap: test-only, a fixed sample line
        assert_eq!(name, "odd_series");
        assert_eq!(labels[0], ("a".into(), "x\"y\\z".into()));
        assert_eq!(labels[1], ("b".into(), "1".into()));
        assert_eq!(v, 5.0);
        assert!(sample("# comment").is_none());
        assert!(sample("broken{a=\"x} 1").is_none());
        assert!(sample("no_value").is_none());
    }
}
