//! Reading records back, in chain order, with filters and progress for large files.

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

use super::verify::order_files;
use crate::trail::schema::{text, Field};
use crate::trail::time::parse_rfc3339;

/// Which records a reviewer asked for.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub account: Option<String>,
    pub vendor: Option<String>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

/// The client address the policy used, else the TCP peer (refused handshakes have only that).
pub fn client_address(v: &Value) -> &str {
    match text(v, Field::ClientIp) {
        "" => text(v, Field::SourceIp),
        ip => ip,
    }
}

pub fn timestamp(v: &Value) -> Option<SystemTime> {
    parse_rfc3339(text(v, Field::Timestamp))
}

impl Filter {
    pub fn matches(&self, r: &Value) -> bool {
        let eq = |want: &Option<String>, f: Field| want.as_ref().is_none_or(|w| text(r, f) == w);
        if !(eq(&self.account, Field::Account)
            && eq(&self.vendor, Field::Vendor)
            && eq(&self.decision, Field::Decision)
            && eq(&self.reason, Field::Reason))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = timestamp(r) else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

/// `"2026-11-01T00:00:00Z"`, or a look-back such as `"24h"` / `"7d"` meaning that long ago.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    vendorgate_policy::HumanDuration::parse(s)
        .map(|d| SystemTime::now() - d.0)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor a look-back (24h, 7d)"))
}

/// Calls `each` with every record (raw line and parsed) of `files`, in chain order. Shows progress
/// on stderr when there is much to read.
pub fn for_each(files: &[PathBuf], mut each: impl FnMut(&str, &Value)) -> std::io::Result<u64> {
    let files = order_files(files);
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let show_progress = total > 32 * 1024 * 1024;
    let mut done = 0u64;
    let mut shown = 0u64;
    let mut count = 0u64;
    for path in &files {
        let reader = std::io::BufReader::new(std::fs::File::open(path)?);
        for line in reader.lines() {
            let line = line?;
            done += line.len() as u64 + 1;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                count += 1;
                each(&line, &v);
            }
            if show_progress && done * 100 / total.max(1) > shown {
                shown = done * 100 / total.max(1);
                let _ = write!(std::io::stderr(), "\rreading {} … {shown}%", path.display());
            }
        }
    }
    if show_progress {
        let _ = writeln!(std::io::stderr());
    }
    Ok(count)
}

/// The network a client address belongs to, for summaries: /24 for IPv4, /48 for IPv6.
pub fn network_of(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(IpAddr::V6(a)) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => ip.to_string(),
    }
}
