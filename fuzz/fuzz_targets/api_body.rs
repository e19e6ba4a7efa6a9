//! cargo-fuzz target: see `fuzz/checks/api_body.rs` for the property (the
//! workspace's tests replay the same check over the corpus).
#![no_main]

#[path = "../checks/api_body.rs"]
mod api_body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| api_body::check(data));
