//! Progress of long work: rows and bytes done, rate and time left. On a terminal, one line
//! that redraws itself; otherwise a log line at intervals, so that a service's journal shows
//! that the work goes on.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::log;

/// How often a line is logged when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the terminal line is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(500);

/// Progress of one piece of long work, such as a snapshot.
pub struct Progress {
    what: String,
    /// Rows expected in all, if known (an estimate: the planner's row counts).
    expected_rows: Option<u64>,
    rows: u64,
    bytes: u64,
    started: Instant,
    shown: Instant,
    terminal: bool,
}

impl Progress {
    pub fn new(what: impl Into<String>, expected_rows: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            what: what.into(),
            expected_rows,
            rows: 0,
            bytes: 0,
            started: now,
            shown: now,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Counts `rows` more rows of `bytes` bytes, and shows progress when it is time to.
    pub fn add(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        self.bytes += bytes;
        let every = if self.terminal { DRAW_EVERY } else { LOG_EVERY };
        if self.shown.elapsed() >= every {
            self.shown = Instant::now();
            self.show();
        }
    }

    /// What has been done so far, as one line.
    pub fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.rows as f64 / seconds;
        let mut line = format!(
            "{}: {} rows, {:.1} MB, {:.0} rows/s, {:.1} MB/s",
            self.what,
            self.rows,
            self.bytes as f64 / 1e6,
            rate,
            self.bytes as f64 / 1e6 / seconds
        );
        if let Some(expected) = self.expected_rows.filter(|&e| e > 0) {
            let share = (self.rows as f64 / expected as f64).min(1.0);
            line.push_str(&format!(", about {:.0}%", share * 100.0));
            if rate > 0.0 && self.rows < expected {
                line.push_str(&format!(", about {:.0}s left", (expected - self.rows) as f64 / rate));
            }
        }
        line
    }

    fn show(&self) {
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K{}", self.line());
            let _ = err.flush();
        } else {
            log::info(&self.line());
        }
    }

    /// Ends the terminal line, so that what is logged next starts on its own line.
    pub fn finish(&self) {
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_rows_bytes_rates_and_the_share_done() {
        let mut progress = Progress::new("snapshot", Some(200));
        progress.terminal = true;
        progress.add(50, 2_000_000);
        let line = progress.line();
        assert!(line.starts_with("snapshot: 50 rows, 2.0 MB, "), "{line}");
        assert!(line.contains("about 25%") && line.contains("s left"), "{line}");
        assert!(!Progress::new("x", None).line().contains('%'));
    }
}
