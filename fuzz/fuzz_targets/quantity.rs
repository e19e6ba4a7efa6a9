//! cargo-fuzz target: see `fuzz/checks/quantity.rs` for the property (the
//! workspace's tests replay the same check over the corpus).
#![no_main]

#[path = "../checks/quantity.rs"]
mod quantity;

libfuzzer_sys::fuzz_target!(|data: &[u8]| quantity::check(data));
