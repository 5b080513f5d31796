//! Cron expressions in a time zone: the five classic fields (minute, hour, day of month, month,
//! day of week) with `*`, lists, ranges, steps and names (`JAN`, `MON`), or one of `@hourly`,
//! `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`). As in Vixie cron, when
//! both day fields are restricted a day matching either one matches.
//!
//! Slots are civil times in the schedule's zone: across a daylight-saving gap a slot that does
//! not exist runs at the first instant after the gap; in a fold (a repeated hour) it runs once,
//! at the first occurrence.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    days_any: bool,
    weekdays_any: bool,
    tz: TimeZone,
    tz_name: String,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field as a bit set over `lo..=hi`, and whether it was `*` (unrestricted).
fn field(text: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            // Month names count from 1 (lo), weekday names from 0 (lo).
            return Ok(i as u32 + lo);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{what}: `{s}` is not a number or a name"))?;
        if v < lo || v > hi {
            return Err(format!("{what}: {v} is outside {lo}-{hi}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    let star = text == "*";
    for part in text.split(',') {
        if part.is_empty() {
            return Err(format!("{what}: an empty list item in `{text}`"));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("{what}: step `{s}` is not a number"))?;
                if step == 0 {
                    return Err(format!("{what}: a step of 0"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{what}: range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15` means from 5 to the end, every 15.
            (a, if part.contains('/') { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    // Day of week 7 is Sunday too.
    if names.len() == 7 && bits & (1 << 7) != 0 {
        bits = (bits | 1) & !(1 << 7);
    }
    Ok((bits, star))
}

impl Cron {
    /// Parses `expr` for the IANA zone `tz` (e.g. `Asia/Tokyo`, `UTC`).
    pub fn parse(expr: &str, tz: &str) -> Result<Cron, String> {
        let zone = TimeZone::get(tz).map_err(|e| format!("time zone `{tz}`: {e}"))?;
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "`{other}` is not a known macro (@hourly, @daily, @weekly, @monthly, @yearly)"
                ));
            }
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "`{expr}` has {} fields; a cron expression has 5 (minute hour day-of-month month day-of-week)",
                parts.len()
            ));
        }
        let (minutes, _) = field(parts[0], 0, 59, &[], "minute")?;
        let (hours, _) = field(parts[1], 0, 23, &[], "hour")?;
        let (days, days_any) = field(parts[2], 1, 31, &[], "day of month")?;
        let (months, _) = field(parts[3], 1, 12, &MONTHS, "month")?;
        let (weekdays, weekdays_any) = field(parts[4], 0, 7, &WEEKDAYS, "day of week")?;
        let cron = Cron {
            text: expr.trim().to_owned(),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_any,
            weekdays_any,
            tz: zone,
            tz_name: tz.to_owned(),
        };
        // An expression that can never fire (30 February) is an error, not a silent no-op.
        if cron.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(format!("`{expr}` never matches a date"));
        }
        Ok(cron)
    }

    pub fn expression(&self) -> &str {
        &self.text
    }

    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first slot strictly after `after`, within the next eight years.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(self.tz.clone()).datetime();
        // The next whole minute.
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.checked_add(8.years()).ok()?;
        while t < limit {
            if self.months & (1 << t.month()) == 0 {
                // First minute of the next month.
                let first = t.date().first_of_month().checked_add(1.month()).ok()?;
                t = first.to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = next_hour(t)?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = self.tz.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
            if at > after {
                return Some(at);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

fn next_hour(t: DateTime) -> Option<DateTime> {
    t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, tz: &str, after: &str) -> String {
        Cron::parse(expr, tz)
            .unwrap()
            .next_after(ts(after))
            .unwrap()
            .to_string()
    }

    #[test]
    fn fields_ranges_steps_and_names() {
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-01-01T00:07:30Z"),
            "2026-01-01T00:15:00Z"
        );
        assert_eq!(
            next("0 9 * * MON-FRI", "UTC", "2026-11-27T10:00:00Z"),
            "2026-11-30T09:00:00Z"
        ); // Fri → Mon
        assert_eq!(
            next("30 2 1 JAN,jul *", "UTC", "2026-02-01T00:00:00Z"),
            "2026-07-01T02:30:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "UTC", "2026-01-01T00:06:00Z"),
            "2026-01-01T00:25:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "UTC", "2026-11-30T00:00:00Z"),
            "2026-12-06T00:00:00Z"
        ); // 7 = Sunday
        assert_eq!(
            next("0 0 * * 6-7", "UTC", "2026-11-30T00:00:00Z"),
            "2026-12-05T00:00:00Z"
        );
        assert_eq!(
            next("@daily", "UTC", "2026-03-04T00:00:00Z"),
            "2026-03-05T00:00:00Z"
        );
        // Both day fields restricted: either matches (the 13th, or any Friday).
        assert_eq!(
            next("0 0 13 * FRI", "UTC", "2026-11-01T00:00:00Z"),
            "2026-11-06T00:00:00Z"
        );
        // Leap day.
        assert_eq!(
            next("0 12 29 2 *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T12:00:00Z"
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 03:00 in Tokyo is 18:00 UTC the day before.
        assert_eq!(
            next("0 3 * * *", "Asia/Tokyo", "2026-11-29T12:00:00Z"),
            "2026-11-29T18:00:00Z"
        );
        // New York springs forward on 2026-03-08: 02:30 does not exist, it runs at 03:30 EDT.
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
            "2026-03-08T07:30:00Z"
        );
        // Falls back on 2026-11-01: 01:30 happens twice, the job runs once (the first).
        let c = Cron::parse("30 1 * * *", "America/New_York").unwrap();
        let first = c.next_after(ts("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(first.to_string(), "2026-11-01T05:30:00Z");
        assert_eq!(
            c.next_after(first).unwrap().to_string(),
            "2026-11-02T06:30:00Z"
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, tz, why) in [
            ("* * * *", "UTC", "has 4 fields"),
            ("61 * * * *", "UTC", "outside 0-59"),
            ("*/0 * * * *", "UTC", "step of 0"),
            ("0 0 30 2 *", "UTC", "never matches"),
            ("0 0 * * FUNDAY", "UTC", "not a number or a name"),
            ("5-1 * * * *", "UTC", "backwards"),
            ("@fortnightly", "UTC", "not a known macro"),
            ("0 0 * * *", "Mars/Olympus", "time zone"),
            ("0 0 * * *", "../../../etc/passwd", "time zone"),
            ("0 0 * * *", "", "time zone"),
            ("1,,2 * * * *", "UTC", "empty list item"),
        ] {
            let e = Cron::parse(expr, tz).unwrap_err();
            assert!(e.contains(why), "{expr}: {e}");
        }
    }
}
