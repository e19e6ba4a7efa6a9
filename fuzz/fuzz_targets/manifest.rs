//! cargo-fuzz target: see `fuzz/checks/manifest.rs` for the property (the
//! workspace's tests replay the same check over the corpus).
#![no_main]

#[path = "../checks/manifest.rs"]
mod manifest;

libfuzzer_sys::fuzz_target!(|data: &[u8]| manifest::check(data));
