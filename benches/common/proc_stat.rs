//! CPU time of a process, for the benches' CPU-per-request figures.

/// User plus system CPU time of a whole process (all threads; `pid` a number or `self`) from
/// `/proc/<pid>/stat`, or `None` where that file does not exist. The kernel reports it in
/// USER_HZ ticks, which are 1/100 s on every mainstream Linux build.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
