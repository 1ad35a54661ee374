//! Human-friendly units for the config file: durations like `"15m"` and sizes like `"200MiB"`.
//!
//! Operators read and write these values by hand, so a bare integer is refused for durations (is `30`
//! seconds or milliseconds?) and the error names the accepted units.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as one or more `<number><unit>` terms: `"500ms"`, `"15s"`, `"1h30m"`, `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

/// A byte count written as `"200MiB"`, `"1GiB"`, `"16KiB"`, `"10MB"`, `"512B"` or a bare integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty duration (expected e.g. \"30s\", \"15m\", \"1h30m\")".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!(
                    "invalid duration {text:?}: expected a number at {rest:?} (e.g. \"30s\", \"15m\", \"1h30m\")"
                ));
            }
            let value: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
            rest = rest[digits..].trim_start();
            let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let step = match unit {
                "ms" => Duration::from_millis(value),
                "s" => Duration::from_secs(value),
                "m" => Duration::from_secs(value.saturating_mul(60)),
                "h" => Duration::from_secs(value.saturating_mul(3600)),
                "d" => Duration::from_secs(value.saturating_mul(86_400)),
                "" => {
                    return Err(format!(
                        "invalid duration {text:?}: missing unit after {value} (expected ms, s, m, h or d)"
                    ))
                }
                other => {
                    return Err(format!(
                        "invalid duration {text:?}: unknown unit {other:?} (expected ms, s, m, h or d)"
                    ))
                }
            };
            total = total.saturating_add(step);
        }
        Ok(HumanDuration(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let mut secs = self.0.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"15m\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

const KIB: u64 = 1024;

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * KIB)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * KIB * KIB)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * KIB * KIB * KIB)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid size {text:?}: expected a number followed by a unit (e.g. \"16KiB\", \"200MiB\", \"1GiB\")"
            ));
        }
        let value: u64 = t[..digits]
            .parse()
            .map_err(|_| format!("invalid size {text:?}: number too large"))?;
        let unit = t[digits..].trim();
        let multiplier: u64 = match unit {
            "" | "B" => 1,
            "KiB" => KIB,
            "MiB" => KIB.pow(2),
            "GiB" => KIB.pow(3),
            "TiB" => KIB.pow(4),
            "KB" | "kB" => 1000,
            "MB" => 1000u64.pow(2),
            "GB" => 1000u64.pow(3),
            "TB" => 1000u64.pow(4),
            other => {
                return Err(format!(
                    "invalid size {text:?}: unknown unit {other:?} (expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                ))
            }
        };
        value
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {text:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [
            ("TiB", KIB.pow(4)),
            ("GiB", KIB.pow(3)),
            ("MiB", KIB.pow(2)),
            ("KiB", KIB),
        ] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"16KiB\", \"200MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (text, secs, shown) in [
            ("15m", 900, "15m"),
            ("1h30m", 5400, "1h30m"),
            ("30s", 30, "30s"),
            ("2d", 172_800, "2d"),
            ("90s", 90, "1m30s"),
        ] {
            let d = HumanDuration::parse(text).unwrap();
            assert_eq!(d.0, Duration::from_secs(secs), "{text}");
            assert_eq!(d.to_string(), shown);
        }
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(HumanDuration::parse("250ms").unwrap().to_string(), "250ms");
    }

    #[test]
    fn bad_durations_name_the_problem() {
        assert!(HumanDuration::parse("15")
            .unwrap_err()
            .contains("missing unit"));
        assert!(HumanDuration::parse("15x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
        assert!(HumanDuration::parse("m")
            .unwrap_err()
            .contains("expected a number"));
        assert!(HumanDuration::parse("").unwrap_err().contains("empty"));
    }

    #[test]
    fn sizes_parse_and_print() {
        for (text, bytes) in [
            ("200MiB", 200 * 1024 * 1024),
            ("1GiB", 1 << 30),
            ("16KiB", 16 * 1024),
            ("10MB", 10_000_000),
            ("512", 512),
            ("512B", 512),
        ] {
            assert_eq!(ByteSize::parse(text).unwrap().0, bytes, "{text}");
        }
        assert_eq!(ByteSize::mib(200).to_string(), "200MiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
        assert!(ByteSize::parse("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(ByteSize::parse("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }
}
