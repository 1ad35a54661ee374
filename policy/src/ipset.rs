//! A set of IP networks that answers "is this address in it?" in O(log n).
//!
//! CIDRs are turned into merged, sorted address ranges, one list per family, and searched by binary
//! search: a vendor with 10,000 networks costs a few more comparisons than one with 10, never a scan.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new<'a>(networks: impl IntoIterator<Item = &'a IpNetwork>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in networks {
            match net {
                IpNetwork::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNetwork::V6(n) => {
                    let start = u128::from(n.network());
                    let host_bits = 128 - u32::from(n.prefix());
                    let end = if host_bits == 128 {
                        u128::MAX
                    } else {
                        start | ((1u128 << host_bits) - 1)
                    };
                    v6.push((start, end));
                }
            }
        }
        IpSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are checked as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The union of several sets.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a IpSet>) -> IpSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for s in sets {
            v4.extend_from_slice(&s.v4);
            v6.extend_from_slice(&s.v6);
        }
        IpSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }
}

fn merge<T: Ord + Copy + num::One>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            // Overlapping or adjacent ranges become one.
            Some(last) if start <= last.1 || T::succ(last.1) == Some(start) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], ip: T) -> bool {
    // The last range starting at or before ip is the only candidate.
    let idx = ranges.partition_point(|(start, _)| *start <= ip);
    idx > 0 && ranges[idx - 1].1 >= ip
}

mod num {
    pub trait One: Sized {
        fn succ(v: Self) -> Option<Self>;
    }
    impl One for u32 {
        fn succ(v: Self) -> Option<Self> {
            v.checked_add(1)
        }
    }
    impl One for u128 {
        fn succ(v: Self) -> Option<Self> {
            v.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(cidrs: &[&str]) -> IpSet {
        let nets: Vec<IpNetwork> = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        IpSet::new(&nets)
    }

    #[test]
    fn v4_v6_and_mapped_addresses() {
        let s = set(&["203.0.113.0/24", "127.0.0.2/32", "2001:db8:1::/48"]);
        for yes in [
            "203.0.113.0",
            "203.0.113.255",
            "127.0.0.2",
            "2001:db8:1::5",
            "::ffff:203.0.113.9",
        ] {
            assert!(s.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "203.0.114.0",
            "127.0.0.1",
            "127.0.0.3",
            "2001:db8:2::1",
            "::1",
        ] {
            assert!(!s.contains(no.parse().unwrap()), "{no}");
        }
        assert!(set(&["0.0.0.0/0"]).contains("255.255.255.255".parse().unwrap()));
        assert!(set(&["::/0"]).contains("ffff::1".parse().unwrap()));
        assert!(!set(&["::/0"]).contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let s = set(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.0/8", "10.1.0.0/16"]);
        assert_eq!(s.v4.len(), 1);
        assert!(s.contains("10.255.255.255".parse().unwrap()));
    }

    proptest! {
        /// The range search agrees with checking every network one by one.
        #[test]
        fn agrees_with_a_linear_scan(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..64),
            probes in proptest::collection::vec(any::<u32>(), 64),
        ) {
            let nets: Vec<IpNetwork> = nets
                .into_iter()
                .map(|(a, p)| IpNetwork::V4(ipnetwork::Ipv4Network::new(a.into(), p).unwrap()))
                .collect();
            let s = IpSet::new(&nets);
            for p in probes {
                let ip = IpAddr::V4(p.into());
                prop_assert_eq!(s.contains(ip), nets.iter().any(|n| n.contains(ip)));
            }
        }

        #[test]
        fn agrees_with_a_linear_scan_v6(
            nets in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..32),
            probes in proptest::collection::vec(any::<u128>(), 32),
        ) {
            let nets: Vec<IpNetwork> = nets
                .into_iter()
                .map(|(a, p)| IpNetwork::V6(ipnetwork::Ipv6Network::new(a.into(), p).unwrap()))
                .collect();
            let s = IpSet::new(&nets);
            // Probe both random addresses and each network's own address.
            let extra: Vec<u128> = nets.iter().map(|n| match n { IpNetwork::V6(n) => u128::from(n.network()), _ => 0 }).collect();
            for p in probes.into_iter().chain(extra) {
                let ip = IpAddr::V6(p.into());
                prop_assert_eq!(s.contains(ip), nets.iter().any(|n| n.contains(ip)));
            }
        }
    }
}
