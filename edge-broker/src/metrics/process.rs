//! The standard `process_*` metrics of Prometheus client libraries (resident and virtual
//! memory, CPU seconds, open and maximum file descriptors, start time), read from Linux's
//! `/proc/self` at scrape time: no background task, no dependency.
//!
//! `/proc` reports CPU time in clock ticks of `USER_HZ`, which the kernel fixes at 100 on every
//! architecture we build for (x86_64, aarch64, armv7), whatever `CONFIG_HZ` is.

use std::path::Path;

use super::PromText;

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's resources; a field is `None` when `/proc` did not give it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessReading {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessReading {
    /// Reads `/proc/self` (and the boot time from `/proc/stat`).
    pub fn current() -> ProcessReading {
        let proc = Path::new("/proc");
        let read = |name: &str| std::fs::read_to_string(proc.join(name)).ok();
        let stat = read("self/stat");
        let fields = stat.as_deref().and_then(stat_fields);
        let status = read("self/status");
        let boot_time = read("stat").as_deref().and_then(boot_time);
        let tick = |i: usize| fields.as_ref()?.get(i)?.parse::<f64>().ok();
        ProcessReading {
            cpu_seconds: tick(UTIME)
                .zip(tick(STIME))
                .map(|(u, s)| (u + s) / TICKS_PER_SECOND),
            resident_bytes: status.as_deref().and_then(|s| status_kib(s, "VmRSS:")),
            virtual_bytes: status.as_deref().and_then(|s| status_kib(s, "VmSize:")),
            open_fds: std::fs::read_dir(proc.join("self/fd"))
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: read("self/limits").as_deref().and_then(max_open_files),
            start_time_seconds: tick(STARTTIME)
                .zip(boot_time)
                .map(|(start, boot)| boot + start / TICKS_PER_SECOND),
        }
    }

    /// Renders the families with the names and meanings Prometheus client libraries use.
    pub fn render(&self, text: &mut PromText) {
        if let Some(v) = self.cpu_seconds {
            text.counter_f64(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                v,
            );
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                text.gauge(name, help, &[(&[], value)]);
            }
        }
    }
}

/// Indices into the fields after the command name of `/proc/<pid>/stat` (field 3, `state`, is
/// index 0): utime is field 14, stime 15, starttime 22 (proc(5)).
const UTIME: usize = 11;
const STIME: usize = 12;
const STARTTIME: usize = 19;

/// The fields after `(comm)`: the command name may hold spaces and parentheses, so split after
/// the last `)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// A `Name:   123 kB` line of `/proc/<pid>/status`, in bytes.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// `btime` of `/proc/stat`: boot time, unix seconds.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed_even_with_odd_command_names() {
        let stat = "4242 (edge (broker) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    250 50 0 0 20 0 9 0 12345 123456789 2000 18446744073709551615";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[UTIME], "250");
        assert_eq!(fields[STIME], "50");
        assert_eq!(fields[STARTTIME], "12345");
        assert_eq!(
            status_kib("Name:\tx\nVmSize:\t  2048 kB\nVmRSS:\t 1000 kB\n", "VmRSS:"),
            Some(1_024_000)
        );
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1.7e9));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_is_read_and_rendered() {
        let reading = ProcessReading::current();
        assert!(reading.resident_bytes.is_some_and(|b| b > 0));
        assert!(reading.open_fds.is_some_and(|n| n >= 3));
        assert!(reading.max_fds.is_some());
        let now = crate::message::now_ms() as f64 / 1000.0;
        let started = reading.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
        let mut text = PromText::new();
        reading.render(&mut text);
        let text = text.finish();
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
