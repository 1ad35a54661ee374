//! Any X-Forwarded-For from a trusted proxy: a client address or a refusal, never a panic; an
//! address it names is one the header holds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &str| {
    let policy = vendorgate_fuzz::policy();
    let peer: std::net::IpAddr = "127.0.0.10".parse().unwrap();
    if let Ok(client) = policy.client_ip(peer, Some(header)) {
        let named = header
            .split(',')
            .filter_map(|s| s.trim().parse::<std::net::IpAddr>().ok())
            .any(|ip| ip.to_canonical() == client);
        assert!(client == peer.to_canonical() || named, "{header:?} → {client}");
    }
});
