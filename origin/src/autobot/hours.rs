//! Office working hours: is an office open at a given instant, and why.
//!
//! Pure functions over the office's settings (`offices.working_hours`, `offices.days_off`,
//! `offices.timezone`), so the autobot's decision and `doctor` use the same code and tests
//! cover timezones, midnight and days off without a database.
//!
//! `working_hours` is a JSON object from weekday (`mon`..`sun`) to a list of `"HH:MM-HH:MM"`
//! ranges in local time. A range whose end is not after its start (`"22:00-06:00"`) runs past
//! midnight: its tail belongs to the day it started, so a day off on that day cancels the
//! whole shift. `days_off` is a JSON array of local dates `"YYYY-MM-DD"`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One office's schedule, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfficeHours {
    /// Ranges per weekday (Monday first), minutes since local midnight; `end <= start` spans
    /// midnight.
    pub week: [Vec<(u32, u32)>; 7],
    pub days_off: BTreeSet<NaiveDate>,
}

fn parse_hm(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let h: u32 = h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    let m: u32 = m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

fn fmt_hm(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn day_index(w: Weekday) -> usize {
    w.num_days_from_monday() as usize
}

impl OfficeHours {
    /// Parses the two JSON columns. Errors name the offending entry.
    pub fn parse(working_hours: &str, days_off: &str) -> Result<OfficeHours, String> {
        let raw: BTreeMap<String, Vec<String>> = if working_hours.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(working_hours)
                .map_err(|e| format!("working_hours is not {{\"mon\": [\"09:00-18:00\"]}}: {e}"))?
        };
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for (day, ranges) in raw {
            let i = DAYS
                .iter()
                .position(|d| *d == day.to_ascii_lowercase())
                .ok_or_else(|| format!("working_hours: {day:?} is not mon..sun"))?;
            for r in ranges {
                let (a, b) = r
                    .split_once('-')
                    .ok_or_else(|| format!("working_hours.{day}: {r:?} is not HH:MM-HH:MM"))?;
                let (a, b) = (parse_hm(a)?, parse_hm(b)?);
                if a >= 1440 {
                    return Err(format!("working_hours.{day}: {r:?} starts at 24:00"));
                }
                week[i].push((a, b));
            }
        }
        let off: Vec<String> = if days_off.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(days_off)
                .map_err(|e| format!("days_off is not [\"YYYY-MM-DD\"]: {e}"))?
        };
        let mut set = BTreeSet::new();
        for d in off {
            let date = NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .map_err(|_| format!("days_off: {d:?} is not YYYY-MM-DD"))?;
            set.insert(date);
        }
        Ok(OfficeHours {
            week,
            days_off: set,
        })
    }

    /// Whether the office is open at `now` in `tz`, with a one-line reason.
    pub fn is_open(&self, tz: Tz, now: DateTime<Utc>) -> (bool, String) {
        let local = now.with_timezone(&tz);
        let date = local.date_naive();
        let minute = local.hour() * 60 + local.minute();
        let stamp = format!("{} {} {}", local.format("%a %Y-%m-%d %H:%M"), tz.name(), "");
        let stamp = stamp.trim_end();
        let today = day_index(date.weekday());
        let today_off = self.days_off.contains(&date);
        if !today_off {
            for &(s, e) in &self.week[today] {
                let open = if s < e {
                    minute >= s && minute < e
                } else {
                    minute >= s
                };
                if open {
                    return (
                        true,
                        format!(
                            "open: {stamp} is within {} {}-{}",
                            DAYS[today],
                            fmt_hm(s),
                            fmt_hm(e)
                        ),
                    );
                }
            }
        }
        // The tail of yesterday's overnight shift, unless yesterday was a day off.
        let yesterday = date - Duration::days(1);
        let y = day_index(yesterday.weekday());
        if !self.days_off.contains(&yesterday) {
            for &(s, e) in &self.week[y] {
                if e <= s && minute < e {
                    return (
                        true,
                        format!(
                            "open: {stamp} is within {} {}-{} (overnight)",
                            DAYS[y],
                            fmt_hm(s),
                            fmt_hm(e)
                        ),
                    );
                }
            }
        }
        if today_off {
            return (false, format!("closed: {stamp}, {date} is a day off"));
        }
        if self.week[today].is_empty() {
            return (
                false,
                format!("closed: {stamp}, no working hours on {}", DAYS[today]),
            );
        }
        let ranges: Vec<String> = self.week[today]
            .iter()
            .map(|&(s, e)| format!("{}-{}", fmt_hm(s), fmt_hm(e)))
            .collect();
        (
            false,
            format!(
                "closed: {stamp} is outside {} {}",
                DAYS[today],
                ranges.join(", ")
            ),
        )
    }
}

/// What the autobot should do about an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reply: bool,
    pub reason: String,
}

/// The autobot answers only when it is enabled and the office is closed.
pub fn autobot_decision(
    enabled: bool,
    timezone: &str,
    working_hours: &str,
    days_off: &str,
    now: DateTime<Utc>,
) -> Decision {
    if !enabled {
        return Decision {
            reply: false,
            reason: "autobot is off for this office".into(),
        };
    }
    let tz: Tz = match timezone.parse() {
        Ok(tz) => tz,
        Err(_) => {
            return Decision {
                reply: false,
                reason: format!("office timezone {timezone:?} is not an IANA zone"),
            }
        }
    };
    let hours = match OfficeHours::parse(working_hours, days_off) {
        Ok(h) => h,
        Err(e) => {
            return Decision {
                reply: false,
                reason: format!("office hours are invalid: {e}"),
            }
        }
    };
    let (open, why) = hours.is_open(tz, now);
    Decision {
        reply: !open,
        reason: if open {
            format!("inside working hours, a person answers ({why})")
        } else {
            format!("outside working hours ({why})")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap() // unwrap: test-only
    }

    fn weekdays_9_18() -> String {
        r#"{"mon":["09:00-18:00"],"tue":["09:00-18:00"],"wed":["09:00-18:00"],
            "thu":["09:00-18:00"],"fri":["09:00-18:00"]}"#
            .into()
    }

    #[test]
    fn same_instant_differs_across_timezones() {
        let h = OfficeHours::parse(&weekdays_9_18(), "[]").unwrap(); // unwrap: test-only

        // Tue 2026-11-24 08:30 UTC: 09:30 in Warsaw (open), 03:30 in New York (closed),
        // 17:30 in Tokyo (open), 21:30 in Auckland (closed).
        let now = utc(2026, 11, 24, 8, 30);
        assert!(h.is_open(chrono_tz::Europe::Warsaw, now).0);
        assert!(!h.is_open(chrono_tz::America::New_York, now).0);
        assert!(h.is_open(chrono_tz::Asia::Tokyo, now).0);
        let (open, why) = h.is_open(chrono_tz::Pacific::Auckland, now);
        assert!(!open);
        assert!(why.contains("outside tue 09:00-18:00"), "{why}");
    }

    #[test]
    fn boundaries_are_half_open() {
        let h = OfficeHours::parse(&weekdays_9_18(), "[]").unwrap(); // unwrap: test-only
        let tz = chrono_tz::UTC;
        assert!(!h.is_open(tz, utc(2026, 11, 24, 8, 59)).0);
        assert!(h.is_open(tz, utc(2026, 11, 24, 9, 0)).0);
        assert!(h.is_open(tz, utc(2026, 11, 24, 17, 59)).0);
        assert!(!h.is_open(tz, utc(2026, 11, 24, 18, 0)).0);
        // Saturday: no hours at all.
        let (open, why) = h.is_open(tz, utc(2026, 11, 28, 12, 0));
        assert!(!open);
        assert!(why.contains("no working hours on sat"), "{why}");
    }

    #[test]
    fn overnight_shift_spans_midnight() {
        let h = OfficeHours::parse(r#"{"fri":["22:00-06:00"]}"#, "[]").unwrap(); // unwrap: test-only
        let tz = chrono_tz::UTC;
        assert!(!h.is_open(tz, utc(2026, 11, 27, 21, 59)).0); // Fri
        assert!(h.is_open(tz, utc(2026, 11, 27, 23, 30)).0); // Fri night
        let (open, why) = h.is_open(tz, utc(2026, 11, 28, 5, 59)); // Sat early
        assert!(open, "{why}");
        assert!(why.contains("overnight"), "{why}");
        assert!(!h.is_open(tz, utc(2026, 11, 28, 6, 0)).0);
        // A day off on Friday cancels the whole shift, its Saturday tail included.
        let h = OfficeHours::parse(r#"{"fri":["22:00-06:00"]}"#, r#"["2026-11-27"]"#).unwrap(); // unwrap: test-only
        assert!(!h.is_open(tz, utc(2026, 11, 27, 23, 30)).0);
        assert!(!h.is_open(tz, utc(2026, 11, 28, 5, 0)).0);
    }

    #[test]
    fn midnight_in_local_time_not_utc() {
        // Open 00:00-02:00 on Wednesdays in Warsaw (UTC+1 in winter): Tue 23:30 UTC is
        // Wed 00:30 local.
        let h = OfficeHours::parse(r#"{"wed":["00:00-02:00"]}"#, "[]").unwrap(); // unwrap: test-only
        assert!(
            h.is_open(chrono_tz::Europe::Warsaw, utc(2026, 11, 24, 23, 30))
                .0
        );
        assert!(!h.is_open(chrono_tz::UTC, utc(2026, 11, 24, 23, 30)).0);
        // 24:00 as an end means midnight.
        let h = OfficeHours::parse(r#"{"tue":["18:00-24:00"]}"#, "[]").unwrap(); // unwrap: test-only
        assert!(h.is_open(chrono_tz::UTC, utc(2026, 11, 24, 23, 59)).0);
        assert!(!h.is_open(chrono_tz::UTC, utc(2026, 11, 25, 0, 0)).0);
    }

    #[test]
    fn days_off_are_local_dates() {
        let h = OfficeHours::parse(&weekdays_9_18(), r#"["2026-12-25"]"#).unwrap(); // unwrap: test-only
                                                                                    // Fri 2026-12-25 10:00 in Tokyo is 01:00 UTC.
        let (open, why) = h.is_open(chrono_tz::Asia::Tokyo, utc(2026, 12, 25, 1, 0));
        assert!(!open);
        assert!(why.contains("2026-12-25 is a day off"), "{why}");
        // The same instant in New York is Thu 24th 20:00: closed by hours, not the day off.
        let (open, why) = h.is_open(chrono_tz::America::New_York, utc(2026, 12, 25, 1, 0));
        assert!(!open);
        assert!(why.contains("outside thu"), "{why}");
        // Thursday 24th 10:00 Tokyo is open.
        assert!(h.is_open(chrono_tz::Asia::Tokyo, utc(2026, 12, 24, 1, 0)).0);
    }

    #[test]
    fn decision_needs_enabled_and_closed() {
        let wh = weekdays_9_18();
        let open_now = utc(2026, 11, 24, 10, 0);
        let closed_now = utc(2026, 11, 24, 20, 0);
        assert!(!autobot_decision(false, "UTC", &wh, "[]", closed_now).reply);
        let d = autobot_decision(true, "UTC", &wh, "[]", open_now);
        assert!(!d.reply);
        assert!(d.reason.starts_with("inside working hours"), "{}", d.reason);
        assert!(autobot_decision(true, "UTC", &wh, "[]", closed_now).reply);
        let d = autobot_decision(true, "Mars/Base", &wh, "[]", closed_now);
        assert!(!d.reply && d.reason.contains("IANA"));
        assert!(OfficeHours::parse(r#"{"mon":["9-18"]}"#, "[]").is_err());
        assert!(OfficeHours::parse(r#"{"xyz":["09:00-18:00"]}"#, "[]").is_err());
        assert!(OfficeHours::parse("{}", r#"["2026-13-01"]"#).is_err());
    }
}
