//! Prometheus metrics as a node_exporter textfile: `run` and `watch` write their figures to
//! `metrics_file` every `metrics_interval` seconds and when they stop, for node_exporter's
//! textfile collector to serve (air-gapped sites run node_exporter, not a scraper of each tool).
//!
//! The file is in Prometheus' text exposition format (HELP and TYPE lines, then one sample per
//! line), written to a temporary name and renamed over the old file, as the collector requires:
//! it must never read a half-written file. The temporary name does not end in `.prom`, so the
//! collector skips it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Default of `metrics_interval`, in seconds: node_exporter's usual scrape interval.
pub const DEFAULT_METRICS_INTERVAL: f64 = 15.0;

/// One gauge: a figure of one slave.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub value: f64,
}

/// The text of a metrics file: each gauge with its HELP and TYPE lines and one sample labelled
/// with the slave's name.
pub fn render(slave: &str, gauges: &[Gauge]) -> String {
    render_several(&[(slave.to_string(), gauges.to_vec())])
}

/// The text of a metrics file of several slaves (one exporter serving them): each gauge with
/// its HELP and TYPE lines once, as the text format requires, then one sample per slave that
/// has it, labelled with the slave's name.
pub fn render_several(slaves: &[(String, Vec<Gauge>)]) -> String {
    let label = |slave: &str| slave.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut names: Vec<(&str, &str)> = Vec::new();
    for gauge in slaves.iter().flat_map(|(_, gauges)| gauges) {
        if !names.iter().any(|(name, _)| *name == gauge.name) {
            names.push((gauge.name, gauge.help));
        }
    }
    let mut text = String::new();
    for (name, help) in names {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (slave, gauges) in slaves {
            for gauge in gauges.iter().filter(|g| g.name == name) {
                text.push_str(&format!("{name}{{slave=\"{}\"}} {}\n", label(slave), gauge.value));
            }
        }
    }
    text
}

/// Where and how often a running tool writes its metrics.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    interval: Duration,
    next: Instant,
}

impl MetricsFile {
    pub fn new(path: PathBuf, interval: Duration) -> Self {
        Self { path, interval, next: Instant::now() }
    }

    /// Whether `metrics_interval` has passed since the last write.
    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// Replaces the file with `gauges` of `slave`.
    pub fn write(&mut self, slave: &str, gauges: &[Gauge]) -> Result<(), Error> {
        self.write_several(&[(slave.to_string(), gauges.to_vec())])
    }

    /// Replaces the file with the gauges of each of several slaves.
    pub fn write_several(&mut self, slaves: &[(String, Vec<Gauge>)]) -> Result<(), Error> {
        self.next = Instant::now() + self.interval;
        replace(&self.path, render_several(slaves).as_bytes()).map_err(|e| {
            Error::caused_by(
                crate::Kind::Runtime,
                &format!("could not write metrics_file \"{}\"", self.path.display()),
                e,
            )
            .with_hint("Check that the directory of metrics_file exists and that this user may write to it.")
        })
    }
}

/// Writes `path` by a rename, so that a reader sees the old file or the new one, never a part.
/// No fsync: after a crash the figures are written again within `metrics_interval`.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Vec<Gauge> {
        vec![
            Gauge { name: "dbmirror_apply_lag_seconds", help: "Seconds since the last applied file.", value: 12.5 },
            Gauge { name: "dbmirror_apply_gap", help: "1 if a file is missing.", value: 0.0 },
        ]
    }

    /// Holds the text to the exposition format: every sample follows its HELP and TYPE lines,
    /// names and label as Prometheus parses them, values as floats.
    #[test]
    fn the_text_is_in_the_exposition_format() {
        let text = render("back\"up", &gauges());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        for chunk in lines.chunks(3) {
            let name = chunk[0].strip_prefix("# HELP ").unwrap().split(' ').next().unwrap();
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert_eq!(chunk[1], format!("# TYPE {name} gauge"));
            let (series, value) = chunk[2].rsplit_once(' ').unwrap();
            assert_eq!(series, format!("{name}{{slave=\"back\\\"up\"}}"));
            value.parse::<f64>().unwrap();
        }
    }

    /// One exporter serving several slaves writes one file: each gauge's HELP and TYPE once
    /// (the text format refuses them twice), then a sample for each slave that has it.
    #[test]
    fn several_slaves_share_each_gauges_help_and_type_lines() {
        let text = render_several(&[("a".into(), gauges()), ("b".into(), gauges()[..1].to_vec())]);
        assert_eq!(text.matches("# HELP dbmirror_apply_lag_seconds ").count(), 1, "{text}");
        assert!(
            text.contains(
                "dbmirror_apply_lag_seconds{slave=\"a\"} 12.5\ndbmirror_apply_lag_seconds{slave=\"b\"} 12.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("dbmirror_apply_gap{slave=\"a\"} 0\n") && !text.contains("dbmirror_apply_gap{slave=\"b\"}"),
            "{text}"
        );
        assert_eq!(render_several(&[("s".into(), gauges())]), render("s", &gauges()));
    }

    #[test]
    fn writing_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dbmirror.prom");
        let mut file = MetricsFile::new(path.clone(), Duration::from_secs(60));
        assert!(file.due());
        file.write("s", &gauges()).unwrap();
        assert!(!file.due());
        file.write("s", &gauges()[..1]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), render("s", &gauges()[..1]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
