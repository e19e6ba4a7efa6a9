//! cargo-fuzz target: see `fuzz/checks/layer.rs` for the property (the
//! workspace's tests replay the same check over the corpus).
#![no_main]

#[path = "../checks/layer.rs"]
mod layer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| layer::check(data));
