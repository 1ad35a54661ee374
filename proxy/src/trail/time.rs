//! RFC 3339 timestamps in UTC with millisecond precision, without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn rfc3339(t: SystemTime) -> String {
    Timestamp::at(t).as_str().to_owned()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in place: every decision record has one, and the formatting
/// machinery cost more than the rest of the record's fields together.
pub struct Timestamp([u8; 24]);

impl Timestamp {
    pub fn at(t: SystemTime) -> Self {
        // Four-digit years: beyond 9999 the clock is wrong, and the stamp says the last moment
        // it can.
        const MAX_SECS: u64 = 253_402_300_799;
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, millis) = match d.as_secs() {
            s if s > MAX_SECS => (MAX_SECS, 999),
            s => (s, d.subsec_millis()),
        };
        let (days, rem) = ((secs / 86_400) as i64, (secs % 86_400) as u32);
        let (y, m, day) = civil_from_days(days);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        digits(&mut b[0..4], y as u32);
        digits(&mut b[5..7], m);
        digits(&mut b[8..10], day);
        digits(&mut b[11..13], rem / 3600);
        digits(&mut b[14..16], (rem / 60) % 60);
        digits(&mut b[17..19], rem % 60);
        digits(&mut b[20..23], millis);
        Timestamp(b)
    }

    pub fn as_str(&self) -> &str {
        // Only ever ASCII digits and separators.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `v` in decimal, right-aligned and zero-padded into `out`.
fn digits(out: &mut [u8], mut v: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Parses what [`rfc3339`] writes (and the same without fractions or with an offset of Z only).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let millis: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(y, m, day);
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    Some(
        UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(secs).ok()?)
            + std::time::Duration::from_millis(millis),
    )
}

/// Howard Hinnant's civil-from-days.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_350_123_456);
        let s = rfc3339(t);
        assert_eq!(s, "2026-11-22T12:22:03.456Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_007)),
            "2000-02-29T00:00:00.007Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1000)),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_251_199))
        );
    }
}
