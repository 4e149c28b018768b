//! Process memory figures from `/proc/self/status` (Linux), shared by the benchmark examples.
#![allow(dead_code)] // each example uses a subset

fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory (VmHWM) in GiB since start or the last [`reset_peak`].
pub fn peak_gib() -> f64 {
    status_kb("VmHWM:").unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

/// Current resident memory (VmRSS) in GiB.
pub fn rss_gib() -> f64 {
    status_kb("VmRSS:").unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
