//! cargo-fuzz target: see `fuzz/checks/selector.rs` for the property (the
//! workspace's tests replay the same check over the corpus).
#![no_main]

#[path = "../checks/selector.rs"]
mod selector;

libfuzzer_sys::fuzz_target!(|data: &[u8]| selector::check(data));
