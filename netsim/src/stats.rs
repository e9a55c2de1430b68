//! Process CPU time and peak memory, read from /proc (Linux). Nodes of a run share one
//! process, so per-node figures are the process totals divided by the node count.

/// CPU seconds (user + system) used by this process so far.
pub fn cpu_time() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // The kernel's USER_HZ is 100 on every mainstream Linux configuration.
    100.0
}

/// Peak resident memory of this process in MiB (VmHWM).
pub fn peak_memory_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

/// Current resident memory in MiB (VmRSS).
pub fn memory_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// Resets the peak-memory mark, so a second run in the same process is measured alone.
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
