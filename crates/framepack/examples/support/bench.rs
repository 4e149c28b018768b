//! Shared by the benchmark examples: process memory figures from `/proc/self/status` (Linux),
//! medians, the load average, and the PyTorch side of a paired benchmark as a child process.
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

/// The 1, 5 and 15 minute load averages (Linux), or `?`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The PyTorch side of a paired benchmark: a long-lived Python script that prints
/// `ready torch <version>` after its warm-up, then answers each `run` line with one timed run's
/// seconds (`tools/bench_medium_torch.py`, `tools/nano_torch.py`).
pub struct Torch {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// torch's version, as the script reported it.
    pub version: String,
}

impl Torch {
    /// Starts `python script args…` and waits for its warm-up.
    pub fn start(python: &str, script: &std::path::Path, args: &[&str]) -> Result<Self, String> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{python}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let Some(version) = line.trim().strip_prefix("ready torch ") else {
            let _ = child.kill();
            return Err(format!("the PyTorch side did not start (said {:?})", line.trim()));
        };
        let version = version.to_string();
        Ok(Self { child, stdin, stdout, version })
    }

    /// One timed run on the PyTorch side, in seconds.
    pub fn run(&mut self) -> Result<f64, String> {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "run").and_then(|_| self.stdin.flush()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        line.trim().parse::<f64>().map_err(|_| format!("unexpected reply {:?}", line.trim()))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}
