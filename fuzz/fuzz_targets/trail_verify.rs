//! Any file as a decision trail: `audit verify` says intact or broken (where), never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.jsonl");
    std::fs::write(&path, data).unwrap();
    let _ = vendorgate::audit::verify::verify(&[path], None);
});
