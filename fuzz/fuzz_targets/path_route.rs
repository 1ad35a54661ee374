//! Any path: normalized once and for all (normalizing the result changes nothing, and it has no
//! `..`, `//` or `\`), then matched against the routes without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    let Ok(normal) = vendorgate_policy::path::normalize(path) else {
        return;
    };
    assert_eq!(
        vendorgate_policy::path::normalize(&normal).as_deref(),
        Ok(normal.as_str()),
        "{path:?}"
    );
    assert!(normal.starts_with('/'), "{normal:?}");
    assert!(!normal.contains("//") && !normal.contains('\\'), "{normal:?}");
    assert!(!normal.split('/').any(|s| s == ".." || s == "."), "{normal:?}");
    let policy = vendorgate_fuzz::policy();
    for method in [http::Method::GET, http::Method::PUT, http::Method::DELETE] {
        let _ = policy.match_route(&method, &normal);
    }
});
