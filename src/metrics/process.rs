//! The standard `process_*` metrics that Prometheus's own clients export (client_golang,
//! client_python), read from `/proc` at scrape time through the `procfs` crate:
//! prometheus-client has no process collector. Linux only; elsewhere the family is
//! empty.
//!
//! | metric | type | from |
//! | --- | --- | --- |
//! | `process_cpu_seconds_total` | counter | `/proc/self/stat` utime + stime, in clock ticks |
//! | `process_resident_memory_bytes` | gauge | `/proc/self/stat` rss, in pages |
//! | `process_virtual_memory_bytes` | gauge | `/proc/self/stat` vsize |
//! | `process_open_fds` | gauge | the entries of `/proc/self/fd` |
//! | `process_max_fds` | gauge | `/proc/self/limits`, "Max open files", soft limit |
//! | `process_start_time_seconds` | gauge | `/proc/stat` btime + the start time in clock ticks |
//! | `process_threads` | gauge | `/proc/self/stat` num_threads |

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One reading of the process's figures; a field is `None` when its file could not
/// be read (the series is then left out of that scrape, never made up).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// `None` also when the limit is unlimited.
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

impl ProcessFigures {
    /// This process, now.
    #[cfg(target_os = "linux")]
    pub fn read() -> ProcessFigures {
        use procfs::process::{LimitValue, Process};
        use procfs::WithCurrentSystemInfo;
        let mut figures = ProcessFigures::default();
        let Ok(me) = Process::myself() else {
            return figures;
        };
        let ticks = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            figures.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            figures.resident_bytes = Some(stat.rss_bytes().get());
            figures.virtual_bytes = Some(stat.vsize);
            figures.threads = u64::try_from(stat.num_threads).ok();
            figures.start_time_seconds = procfs::boot_time_secs()
                .ok()
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        }
        figures.open_fds = me.fd_count().ok().map(|n| n as u64);
        if let Ok(limits) = me.limits() {
            figures.max_fds = match limits.max_open_files.soft_limit {
                LimitValue::Value(n) => Some(n),
                LimitValue::Unlimited => None,
            };
        }
        figures
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> ProcessFigures {
        ProcessFigures::default()
    }
}

/// Reads the figures at every scrape; register it in a registry without a prefix.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = ProcessFigures::read();
        if let Some(seconds) = figures.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                figures.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                figures.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                figures.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                figures.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                figures.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                figures.threads.map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Checks the reader against what the kernel says by other means: the open
    /// descriptors grow by the files this test opens, the start time is in the past
    /// and after boot, the CPU time grows with work, and RSS is at least what
    /// `/proc/self/status` calls VmRSS, rounded down to a page.
    #[test]
    fn figures_follow_the_process() {
        let before = ProcessFigures::read();
        let files: Vec<std::fs::File> = (0..8)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let during = ProcessFigures::read();
        let (before_fds, during_fds) = (before.open_fds.unwrap(), during.open_fds.unwrap());
        // Other test threads may open files meanwhile; ours are there at least.
        assert!(during_fds >= before_fds + 8, "{before_fds} -> {during_fds}");
        drop(files);

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = during.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );

        let cpu_before = during.cpu_seconds.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut spin = 0u64;
        while std::time::Instant::now() < deadline {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let cpu_after = ProcessFigures::read().cpu_seconds.unwrap();
        assert!(cpu_after >= cpu_before + 0.1, "{cpu_before} -> {cpu_after}");

        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let rss = ProcessFigures::read().resident_bytes.unwrap();
        // Both read the same counter at slightly different moments.
        let status_bytes = vm_rss_kib * 1024;
        assert!(
            rss.abs_diff(status_bytes) < status_bytes / 2,
            "stat rss {rss} vs status VmRSS {status_bytes}"
        );
        assert!(during.threads.unwrap() >= 1);
        assert!(during.virtual_bytes.unwrap() >= rss);
    }

    #[test]
    fn max_fds_is_the_soft_limit_of_open_files() {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let soft = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap();
        let read = ProcessFigures::read().max_fds;
        match soft {
            "unlimited" => assert_eq!(read, None),
            n => assert_eq!(read, Some(n.parse().unwrap())),
        }
    }

    #[test]
    fn the_collector_encodes_every_figure_it_read() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "process_threads ",
            "# TYPE process_cpu_seconds counter",
        ] {
            assert!(text.contains(name), "{name} in:\n{text}");
        }
    }
}
