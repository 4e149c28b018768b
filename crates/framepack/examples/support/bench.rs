//! Shared by the benchmark examples: process memory figures from `/proc/self/status` (Linux) and
//! medians.
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

/// Anonymous resident memory (RssAnon: the process's own allocations) in GiB.
pub fn anon_gib() -> f64 {
    status_kb("RssAnon:").unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

/// File-backed resident memory (RssFile: mapped files such as checkpoints) in GiB.
pub fn file_gib() -> f64 {
    status_kb("RssFile:").unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

/// Median of `v` (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
