//! An address as text without the heap or the `fmt` machinery: every request writes its client's
//! address into `X-Forwarded-For` and its decision record, usually an IPv4 one.

use std::fmt::Write;
use std::net::IpAddr;

/// Room for the longest IPv6 text (`ffff:…:255.255.255.255` is 45 characters).
pub struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> Self {
        let mut t = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b".");
                    }
                    t.push(itoa::Buffer::new().format(octet).as_bytes());
                }
            }
            // Rarer, and its compression rules are worth leaving to std.
            IpAddr::V6(v6) => {
                let _ = write!(t, "{v6}");
            }
        }
        t
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }

    pub fn as_str(&self) -> &str {
        // Only ever filled from ASCII digits, dots, colons and hex.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.45",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "fe80::1:2:3:4",
            "::ffff:192.0.2.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }
}
