//! Facts about the node read from `/proc`, shared by the stats API, node
//! registration and the OOM score policy.

use std::collections::HashMap;

/// `/proc/meminfo` in bytes, by field name (`MemTotal`, `MemAvailable`, ...).
pub fn meminfo() -> HashMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().ok()?;
            Some((k.to_string(), kb * 1024))
        })
        .collect()
}

/// The node's memory (`MemTotal`) in bytes.
pub fn memory_total() -> u64 {
    meminfo().get("MemTotal").copied().unwrap_or(0)
}

/// The node's CPUs as capacity counts them: those this process may run on.
pub fn cpu_count() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}
