//! `status` as a monitoring check: the verdict of both tools' `status` in the codes of Nagios
//! plugins (also read by Icinga, Zabbix and Sensu), with the thresholds that decide it.
//!
//! `status` has its own exit-code table, [`STATUS_EXIT_CODES`], apart from the tools' tables in
//! [`crate::error`]: a monitoring system reads 1 as WARNING and 2 as CRITICAL, whatever else
//! these numbers mean for the other commands.

/// The exit codes of `status`: its `--help` shows them, and the README's `status` table says
/// the same.
pub const STATUS_EXIT_CODES: &str = "Exit codes of status (as a Nagios plugin):
  0  OK: nothing needs a person
  1  WARNING: lag over --warn-lag
  2  CRITICAL: lag over --crit-lag, a quarantined file, a gap older than --gap-age, or incomplete capture
  3  UNKNOWN: cannot tell (database unreachable, bad configuration)";

/// Default of `--warn-lag`: an hour.
pub const DEFAULT_WARN_LAG: f64 = 3_600.0;
/// Default of `--crit-lag`: a day, as a slave fed by a daily transfer may well lag most of one.
pub const DEFAULT_CRIT_LAG: f64 = 86_400.0;
/// Default of `--gap-age`: an hour, time enough for a transfer to finish copying.
pub const DEFAULT_GAP_AGE: f64 = 3_600.0;

/// How bad, in the order of the Nagios codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Level {
    /// The exit code of `status` for this level.
    pub const fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }
}

/// The lag thresholds of `status`, in seconds.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LagThresholds {
    /// Lag in seconds over which status says WARNING (exit code 1)
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WARN_LAG)]
    pub warn_lag: f64,
    /// Lag in seconds over which status says CRITICAL (exit code 2)
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CRIT_LAG)]
    pub crit_lag: f64,
}

/// The verdict of `status`: the worst level found, and a sentence for each finding.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub level: Level,
    pub problems: Vec<String>,
}

impl Default for Health {
    fn default() -> Self {
        Self { level: Level::Ok, problems: Vec::new() }
    }
}

impl Health {
    /// Records a finding of `level`.
    pub fn raise(&mut self, level: Level, problem: String) {
        self.level = self.level.max(level);
        self.problems.push(problem);
    }

    /// Judges a lag of `seconds` (`what` names it in the finding).
    pub fn lag(&mut self, what: &str, seconds: f64, thresholds: &LagThresholds) {
        if seconds > thresholds.crit_lag {
            self.raise(Level::Critical, format!("{what} is {seconds:.0}s, over --crit-lag {}s", thresholds.crit_lag));
        } else if seconds > thresholds.warn_lag {
            self.raise(Level::Warning, format!("{what} is {seconds:.0}s, over --warn-lag {}s", thresholds.warn_lag));
        }
    }

    /// The first line of the human-readable `status`, as Nagios shows it.
    pub fn summary(&self) -> String {
        let word = match self.level {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        };
        match self.problems.is_empty() {
            true => word.to_string(),
            false => format!("{word}: {}", self.problems.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: LagThresholds = LagThresholds { warn_lag: 10.0, crit_lag: 100.0 };

    #[test]
    fn lag_is_ok_then_warning_then_critical() {
        let mut health = Health::default();
        health.lag("lag", 10.0, &THRESHOLDS);
        assert_eq!((health.level, health.summary()), (Level::Ok, "OK".to_string()));
        health.lag("lag", 11.0, &THRESHOLDS);
        assert_eq!(health.level, Level::Warning);
        health.lag("lag", 101.0, &THRESHOLDS);
        assert_eq!(health.level.exit_code(), 2);
        assert_eq!(health.summary(), "CRITICAL: lag is 11s, over --warn-lag 10s; lag is 101s, over --crit-lag 100s");
    }

    #[test]
    fn the_worst_finding_decides() {
        let mut health = Health::default();
        health.raise(Level::Critical, "quarantined".into());
        health.raise(Level::Warning, "late".into());
        assert_eq!(health.level, Level::Critical);
    }

    #[test]
    fn the_table_lists_each_level_with_its_code() {
        for level in [Level::Ok, Level::Warning, Level::Critical, Level::Unknown] {
            assert!(STATUS_EXIT_CODES.contains(&format!("\n  {}  ", level.exit_code())), "{level:?}");
        }
    }
}
