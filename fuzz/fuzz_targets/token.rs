//! Any Authorization header and any token: the bearer parser and the verifier (header, claims,
//! signature) refuse what is not a valid token, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vendorgate_policy::bearer(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let policy = vendorgate_fuzz::policy();
        let _ = policy.verify_token(text, vendorgate_fuzz::keys(), 1_800_000_000);
    }
});
