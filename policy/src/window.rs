//! Access windows: the days and hours, in a vendor's own time zone, when its agents may work.
//!
//! A window is wall-clock time where the vendor is (`Africa/Tunis`, `mon-sat`, `08:00-19:00`), so
//! it follows that zone's daylight-saving changes: 08:00 is 08:00 local on both sides of a change,
//! the hour that a spring change skips holds no instant, and the hour an autumn change repeats is
//! inside or outside twice. Instants are turned into local time with the IANA database compiled
//! into `jiff`, so a policy means the same on every machine whatever its own zone files say.
//!
//! Which windows a request is held to depends on its class: the windows that name the class, if
//! any do; otherwise the windows that name no class. A request is inside if it falls in any one
//! of them. A vendor with no windows that apply works at any hour.

use std::fmt;

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Monday first, as ISO 8601 counts.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A problem in a window's text, for the config error that names its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("unknown time zone {0:?} (an IANA name such as \"Europe/Paris\" or \"UTC\")")]
    TimeZone(String),
    #[error("days {0:?}: expected day names or ranges such as \"mon-fri\" or \"mon,wed,sat\"")]
    Days(String),
    #[error("hours {0:?}: expected \"HH:MM-HH:MM\" (24-hour clock; \"22:00-06:00\" runs overnight, \"00:00-24:00\" is all day)")]
    Hours(String),
    #[error("hours {0:?}: start and end are the same; write \"00:00-24:00\" for the whole day")]
    EmptyHours(String),
}

/// Days of the week as bits, Monday = bit 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    /// `"mon-fri"`, `"sat,sun"`, `"mon-wed,fri"`, `"fri-mon"` (a range may wrap past Sunday).
    pub fn parse(text: &str) -> Result<Days, WindowError> {
        let bad = || WindowError::Days(text.to_string());
        let day = |name: &str| {
            DAYS.iter()
                .position(|d| d.eq_ignore_ascii_case(name.trim()))
                .ok_or_else(bad)
        };
        let mut bits = 0u8;
        for part in text.split(',') {
            match part.split_once('-') {
                Some((from, to)) => {
                    let (mut d, to) = (day(from)?, day(to)?);
                    loop {
                        bits |= 1 << d;
                        if d == to {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day(part)?,
            }
        }
        Ok(Days(bits))
    }

    fn has(self, day: usize) -> bool {
        self.0 & (1 << day) != 0
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of three days or more as ranges: "mon-fri,sun".
        let mut parts = Vec::new();
        let mut d = 0;
        while d < 7 {
            if !self.has(d) {
                d += 1;
                continue;
            }
            let start = d;
            while d + 1 < 7 && self.has(d + 1) {
                d += 1;
            }
            match d - start {
                0 => parts.push(DAYS[start].to_string()),
                1 => parts.push(format!("{},{}", DAYS[start], DAYS[d])),
                _ => parts.push(format!("{}-{}", DAYS[start], DAYS[d])),
            }
            d += 1;
        }
        f.write_str(&parts.join(","))
    }
}

/// From a start to an end minute of the local day; an end at or before the start runs past
/// midnight into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    start: u16,
    end: u16,
}

impl Hours {
    pub fn parse(text: &str) -> Result<Hours, WindowError> {
        let bad = || WindowError::Hours(text.to_string());
        let minute = |hm: &str| -> Result<u16, WindowError> {
            let (h, m) = hm.trim().split_once(':').ok_or_else(bad)?;
            if h.len() != 2 || m.len() != 2 {
                return Err(bad());
            }
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            match (h, m) {
                (0..=23, 0..=59) | (24, 0) => Ok(h * 60 + m),
                _ => Err(bad()),
            }
        };
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minute(start)?, minute(end)?);
        if start == end || (start == 0 && end == 0) {
            return Err(WindowError::EmptyHours(text.to_string()));
        }
        if start == 24 * 60 {
            return Err(bad());
        }
        Ok(Hours { start, end })
    }

    fn overnight(self) -> bool {
        self.end <= self.start
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// One window: days it opens on and its hours. An overnight window belongs to the day it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub days: Days,
    pub hours: Hours,
    /// Bit i set: applies to class i. Zero: to every class no window names.
    pub classes: u128,
}

impl Window {
    /// Whether local `day` (Monday = 0) and `minute` of that day fall inside.
    fn contains(&self, day: usize, minute: u16) -> bool {
        let Hours { start, end } = self.hours;
        if self.hours.overnight() {
            (self.days.has(day) && minute >= start)
                || (self.days.has((day + 6) % 7) && minute < end)
        } else {
            self.days.has(day) && minute >= start && minute < end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.days, self.hours)
    }
}

/// A vendor's windows and the zone they are read in.
#[derive(Debug, Clone)]
pub struct AccessWindows {
    pub zone: TimeZone,
    /// The zone's IANA name, for messages.
    pub zone_name: String,
    pub windows: Vec<Window>,
    /// Classes some window names.
    named: u128,
}

/// Where a moment fell, for the trace and the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMoment {
    /// `"sat 07:59"`.
    pub text: String,
}

impl AccessWindows {
    pub fn new(zone_name: &str, windows: Vec<Window>) -> Result<AccessWindows, WindowError> {
        let zone =
            TimeZone::get(zone_name).map_err(|_| WindowError::TimeZone(zone_name.to_string()))?;
        let named = windows.iter().fold(0, |acc, w| acc | w.classes);
        Ok(AccessWindows {
            zone,
            zone_name: zone_name.to_string(),
            windows,
            named,
        })
    }

    /// The windows a request of `class` is held to (none: no restriction).
    pub fn applying(&self, class: usize) -> impl Iterator<Item = &Window> {
        let bit = 1u128 << class;
        let specific = self.named & bit != 0;
        self.windows.iter().filter(move |w| {
            if specific {
                w.classes & bit != 0
            } else {
                w.classes == 0
            }
        })
    }

    /// The local day (Monday = 0) and minute at `now` (seconds since the epoch).
    fn local(&self, now: u64) -> (usize, u16) {
        let instant = i64::try_from(now)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(Timestamp::MAX);
        let local = self.zone.to_datetime(instant);
        let day = local.weekday().to_monday_zero_offset() as usize;
        (day, local.hour() as u16 * 60 + local.minute() as u16)
    }

    /// `Ok` when `class` may be used at `now`: inside one of the windows that apply, or none apply.
    /// `Err` carries the local time, for the refusal's rule.
    pub fn check(&self, class: usize, now: u64) -> Result<(), LocalMoment> {
        let mut applying = self.applying(class).peekable();
        if applying.peek().is_none() {
            return Ok(());
        }
        let (day, minute) = self.local(now);
        if applying.any(|w| w.contains(day, minute)) {
            Ok(())
        } else {
            Err(self.moment(now))
        }
    }

    /// The local time at `now` as text: `"sat 07:59"`.
    pub fn moment(&self, now: u64) -> LocalMoment {
        let (day, minute) = self.local(now);
        LocalMoment {
            text: format!("{} {:02}:{:02}", DAYS[day], minute / 60, minute % 60),
        }
    }

    /// The windows for `class`, as text: `"mon-fri 09:00-17:00 or sat 10:00-12:00 (Europe/Paris)"`.
    pub fn describe(&self, class: usize) -> String {
        let windows: Vec<String> = self.applying(class).map(|w| w.to_string()).collect();
        format!("{} ({})", windows.join(" or "), self.zone_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_second() as u64
    }

    fn windows(zone: &str, specs: &[(&str, &str, u128)]) -> AccessWindows {
        let windows = specs
            .iter()
            .map(|(d, h, c)| Window {
                days: Days::parse(d).unwrap(),
                hours: Hours::parse(h).unwrap(),
                classes: *c,
            })
            .collect();
        AccessWindows::new(zone, windows).unwrap()
    }

    #[test]
    fn days_and_hours_parse_and_print() {
        assert_eq!(Days::parse("mon-fri").unwrap().to_string(), "mon-fri");
        assert_eq!(Days::parse("Sat, sun").unwrap().to_string(), "sat,sun");
        assert_eq!(Days::parse("fri-mon").unwrap().to_string(), "mon,fri-sun");
        assert_eq!(Days::parse("mon-sun").unwrap(), Days(0x7f));
        assert_eq!(
            Days::parse("mon,tue,thu").unwrap().to_string(),
            "mon,tue,thu"
        );
        for bad in ["", "monday", "mon-", "mon-xyz", "mon;tue"] {
            assert!(Days::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Hours::parse("08:00-19:00").unwrap().to_string(),
            "08:00-19:00"
        );
        assert_eq!(
            Hours::parse("00:00-24:00").unwrap().to_string(),
            "00:00-24:00"
        );
        assert!(Hours::parse("22:00-06:00").unwrap().overnight());
        for bad in [
            "8:00-19:00",
            "08:00",
            "08:60-09:00",
            "24:00-06:00",
            "25:00-26:00",
            "a-b",
        ] {
            assert!(
                matches!(Hours::parse(bad), Err(WindowError::Hours(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Hours::parse("09:00-09:00"),
            Err(WindowError::EmptyHours(_))
        ));
        assert!(AccessWindows::new("Mars/Olympus", vec![]).is_err());
    }

    #[test]
    fn a_day_window_opens_and_closes_on_the_minute_in_local_time() {
        // Tunis: UTC+1 all year.
        let w = windows("Africa/Tunis", &[("mon-sat", "08:00-19:00", 0)]);
        // Saturday 2026-12-05.
        assert!(w.check(0, at("2026-12-05T06:59:59Z")).is_err());
        assert!(w.check(0, at("2026-12-05T07:00:00Z")).is_ok());
        assert!(w.check(0, at("2026-12-05T17:59:59Z")).is_ok());
        let refused = w.check(0, at("2026-12-05T18:00:00Z")).unwrap_err();
        assert_eq!(refused.text, "sat 19:00");
        // Sunday: closed all day.
        assert!(w.check(0, at("2026-12-06T11:00:00Z")).is_err());
        assert_eq!(w.describe(0), "mon-sat 08:00-19:00 (Africa/Tunis)");
    }

    #[test]
    fn an_overnight_window_belongs_to_the_day_it_opens() {
        let w = windows("UTC", &[("fri", "22:00-06:00", 0)]);
        assert!(w.check(0, at("2026-12-04T21:59:00Z")).is_err()); // Fri 21:59
        assert!(w.check(0, at("2026-12-04T22:00:00Z")).is_ok()); // Fri 22:00
        assert!(w.check(0, at("2026-12-05T05:59:00Z")).is_ok()); // Sat 05:59
        assert!(w.check(0, at("2026-12-05T06:00:00Z")).is_err()); // Sat 06:00
        assert!(w.check(0, at("2026-12-05T22:30:00Z")).is_err()); // Sat 22:30: not a Friday
        assert!(w.check(0, at("2026-12-04T03:00:00Z")).is_err()); // Fri 03:00: Thursday's night
    }

    #[test]
    fn windows_follow_daylight_saving_both_ways() {
        // Paris: CET (UTC+1) in winter, CEST (UTC+2) from the last Sunday of March (2026-03-29,
        // 02:00 → 03:00) to the last Sunday of October (2026-10-25, 03:00 → 02:00).
        let w = windows("Europe/Paris", &[("mon-sun", "08:00-19:00", 0)]);
        // 06:30 UTC is 07:30 the day before spring's change (closed) and 08:30 the day after (open).
        assert!(w.check(0, at("2026-03-28T06:30:00Z")).is_err());
        assert!(w.check(0, at("2026-03-30T06:30:00Z")).is_ok());
        // Closing follows too: 17:30 UTC is 18:30 before (open), 19:30 after (closed).
        assert!(w.check(0, at("2026-03-28T17:30:00Z")).is_ok());
        assert!(w.check(0, at("2026-03-30T17:30:00Z")).is_err());
        // Autumn reverses it: 06:30 UTC is 08:30 before (open) and 07:30 after (closed).
        assert!(w.check(0, at("2026-10-24T06:30:00Z")).is_ok());
        assert!(w.check(0, at("2026-10-26T06:30:00Z")).is_err());
        assert!(w.check(0, at("2026-10-24T17:30:00Z")).is_err());
        assert!(w.check(0, at("2026-10-26T17:30:00Z")).is_ok());

        // The hour spring skips holds no instant: 02:00-03:00 on 2026-03-29 never opens.
        let skipped = windows("Europe/Paris", &[("sun", "02:00-03:00", 0)]);
        let start = at("2026-03-28T23:00:00Z");
        let open = (0..6 * 3600)
            .step_by(60)
            .filter(|s| skipped.check(0, start + s).is_ok())
            .count();
        assert_eq!(open, 0);
        // The hour autumn repeats is open twice: 02:00-03:00 local on 2026-10-25 is two hours.
        let start = at("2026-10-24T22:00:00Z");
        let open = (0..6 * 3600)
            .step_by(60)
            .filter(|s| skipped.check(0, start + s).is_ok())
            .count();
        assert_eq!(open, 120);
    }

    #[test]
    fn the_windows_naming_a_class_replace_the_general_ones_for_it() {
        let export = 1;
        let w = windows(
            "UTC",
            &[
                ("mon-sat", "08:00-19:00", 0),
                ("mon-fri", "09:00-17:00", 1 << export),
            ],
        );
        let saturday_ten = at("2026-12-05T10:00:00Z");
        assert!(w.check(0, saturday_ten).is_ok());
        assert!(w.check(export, saturday_ten).is_err());
        let friday_eight = at("2026-12-04T08:30:00Z");
        assert!(w.check(0, friday_eight).is_ok());
        assert!(w.check(export, friday_eight).is_err());
        assert!(w.check(export, at("2026-12-04T09:00:00Z")).is_ok());
        assert_eq!(w.describe(export), "mon-fri 09:00-17:00 (UTC)");
        // Windows only for export: other classes are unrestricted.
        let only = windows("UTC", &[("mon-fri", "09:00-17:00", 1 << export)]);
        assert!(only.check(0, saturday_ten).is_ok());
        assert!(only.check(export, saturday_ten).is_err());
    }
}
