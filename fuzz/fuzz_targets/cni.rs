//! cargo-fuzz target: see `fuzz/checks/cni.rs` for the property (the
//! workspace's tests replay the same check over the corpus).
#![no_main]

#[path = "../checks/cni.rs"]
mod cni;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cni::check(data));
