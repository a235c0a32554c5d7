//! What the current process is and has used: CPU time and peak memory for
//! reports, and whether it runs as root. Read from `/proc/self`, so no unsafe
//! calls; `/proc` reports CPU in USER_HZ ticks, which Linux fixes at 100 per
//! second.

/// What this process has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessUsage {
    /// User + system CPU time.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
}

/// Which CPU times of `/proc/PID/stat` to add up.
#[derive(Debug, Clone, Copy)]
pub enum CpuOf {
    /// The process itself: utime + stime.
    Itself,
    /// Its children it has waited for: cutime + cstime.
    WaitedChildren,
}

/// CPU seconds of process `pid` (`"self"` or a number) from its stat line.
pub fn cpu_seconds(pid: &str, of: CpuOf) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: utime, stime, cutime and
    // cstime are fields 14 to 17 of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let first = match of {
        CpuOf::Itself => 11,
        CpuOf::WaitedChildren => 13,
    };
    let ticks: u64 = f.get(first)?.parse::<u64>().ok()? + f.get(first + 1)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Peak resident set size of process `pid` (`VmHWM`), in bytes.
pub fn peak_rss(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Reads the current process's usage; zeros where `/proc` is unavailable.
pub fn self_usage() -> ProcessUsage {
    ProcessUsage {
        cpu_seconds: cpu_seconds("self", CpuOf::Itself).unwrap_or(0.0),
        peak_rss_bytes: peak_rss("self").unwrap_or(0),
    }
}

/// True when the effective user id is 0 (read from `/proc`, no unsafe call).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uid = s.lines().find(|l| l.starts_with("Uid:"))?;
            Some(uid.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_grows_with_work() {
        let before = super::self_usage();
        let v: Vec<u8> = vec![1; 64 << 20];
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_add(v.iter().map(|&b| b as u64).sum::<u64>());
        }
        let after = super::self_usage();
        assert!(x > 0);
        assert!(
            after.cpu_seconds >= before.cpu_seconds + 0.2,
            "{before:?} → {after:?}"
        );
        assert!(after.peak_rss_bytes >= 64 << 20, "{after:?}");
    }
}
