//! Any text as a config file: parsed or refused with a place in the file, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(errors) = vendorgate_policy::Config::from_toml(text, "fuzz.toml") {
        for e in &errors.0 {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
        }
    }
});
