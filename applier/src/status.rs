//! `status`: what the slave has applied, how far behind the master it is, what the spool holds,
//! what it waits for, and what is in quarantine; and the verdict of all that as a monitoring
//! check (see [`dbmirror_cli::health`]). `watch` writes the same figures as metrics. Only
//! looks: moves nothing.

use std::time::SystemTime;

use dbmirror_cli::error::Error;
use dbmirror_cli::health::{Health, LagThresholds, Level};
use dbmirror_cli::metrics::Gauge;
use dbmirror_spool::Entry;
use dbmirror_sql::{APPLIED_FILE_TABLE, SLAVE_STATE_TABLE};
use postgres::Client;

use crate::config::Config;
use crate::inbox::{quarantined, Inbox};

#[derive(Debug, serde::Serialize)]
pub struct Status {
    slave: String,
    last_applied: Option<i64>,
    last_xid: Option<i64>,
    applied_at: Option<String>,
    /// When the master assigned the last applied file its number (its exported-at).
    last_exported_at: Option<String>,
    /// The master commit time of the last applied transaction (its committed-at): the lag is
    /// counted from it. `None` for files written before the master recorded it.
    last_committed_at: Option<String>,
    /// Seconds since `last_committed_at`, or since `last_exported_at` without it.
    lag_seconds: Option<f64>,
    master: Option<String>,
    next: u64,
    /// Numbers of the transaction files in the spool.
    files_in_spool: Vec<u64>,
    /// How many of them are still to be applied.
    files_waiting: usize,
    manifests_in_spool: usize,
    /// Numbers missing between the next file and the last file present.
    gaps: Vec<u64>,
    /// Seconds since the oldest file beyond the first gap arrived (was last modified).
    gap_age_seconds: Option<f64>,
    waiting: Vec<String>,
    quarantined: Vec<Quarantined>,
    /// Whether manifests must be signed (a public key is configured).
    signatures_required: bool,
}

#[derive(Debug, serde::Serialize)]
struct Quarantined {
    file: String,
    reason: String,
}

/// `status` with its verdict, as `--json` prints it.
#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    status: &'a Status,
    health: &'a Health,
}

/// Reads the slave's state and the spool.
pub fn gather(config: &Config, client: &mut Client) -> Result<Status, Error> {
    let row = client.query_opt(
        &format!(
            "SELECT s.last_number, s.last_xid, \
                    to_char(s.applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), s.master, \
                    to_char(a.exported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    extract(epoch FROM pg_catalog.now() - coalesce(a.committed_at, a.exported_at))::double precision, \
                    to_char(a.committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
               FROM {SLAVE_STATE_TABLE} s \
               LEFT JOIN {APPLIED_FILE_TABLE} a ON a.slave_name = s.slave_name AND a.number = s.last_number \
              WHERE s.slave_name = $1"
        ),
        &[&config.slave_name],
    )?;
    let (last_applied, last_xid, applied_at, master, last_exported_at, lag_seconds, last_committed_at) = match &row {
        Some(r) => (Some(r.get(0)), Some(r.get(1)), Some(r.get(2)), Some(r.get(3)), r.get(4), r.get(5), r.get(6)),
        None => (None, None, None, None, None, None, None),
    };
    let next = last_applied.map_or(1, |n: i64| n as u64 + 1);
    let inbox = Inbox::scan(config, true)?;
    let files = inbox.present();
    let pending: Vec<u64> = files.iter().copied().filter(|n| *n >= next).collect();
    let gaps: Vec<u64> = match pending.last() {
        Some(&top) => (next..top).filter(|n| !pending.contains(n)).collect(),
        None => Vec::new(),
    };
    let mut waiting: Vec<String> = inbox.notes().to_vec();
    if let Some(first) = gaps.first() {
        waiting.insert(0, format!("waiting for file {first}"));
    } else if pending.first() == Some(&next) && !inbox.is_covered(next) {
        waiting.insert(0, format!("waiting for the manifest of file {next}"));
    }
    let gap_age_seconds = match gaps.first() {
        Some(&first) => oldest_beyond(config, first)?,
        None => None,
    };
    Ok(Status {
        slave: config.slave_name.clone(),
        last_applied,
        last_xid,
        applied_at,
        last_exported_at,
        last_committed_at,
        lag_seconds,
        master,
        next,
        files_waiting: pending.len(),
        files_in_spool: files,
        manifests_in_spool: inbox.manifest_count(),
        gaps,
        gap_age_seconds,
        waiting,
        quarantined: quarantined(config).into_iter().map(|(file, reason)| Quarantined { file, reason }).collect(),
        signatures_required: config.public_key.is_some(),
    })
}

/// Seconds since the oldest transaction file numbered above `gap` was last modified: how long
/// the gap has held files up.
fn oldest_beyond(config: &Config, gap: u64) -> Result<Option<f64>, Error> {
    let now = SystemTime::now();
    Ok(dbmirror_spool::scan(&config.spool)?
        .iter()
        .filter_map(|entry| match entry {
            Entry::Transaction { name, path } if name.number > gap => std::fs::metadata(path).ok()?.modified().ok(),
            _ => None,
        })
        .filter_map(|modified| now.duration_since(modified).ok())
        .map(|age| age.as_secs_f64())
        .reduce(f64::max))
}

impl Status {
    /// The verdict: a quarantined file or a gap older than `gap_age` is CRITICAL, the lag is
    /// judged by `lag`.
    pub fn health(&self, lag: &LagThresholds, gap_age: f64) -> Health {
        let mut health = Health::default();
        for q in &self.quarantined {
            health.raise(Level::Critical, format!("\"{}\" is in quarantine: {}", q.file, q.reason));
        }
        if let (Some(first), Some(age)) = (self.gaps.first(), self.gap_age_seconds) {
            if age > gap_age {
                health.raise(
                    Level::Critical,
                    format!(
                        "file {first} is missing, and later files have waited {age:.0}s (over --gap-age {gap_age}s)"
                    ),
                );
            }
        }
        if let Some(seconds) = self.lag_seconds {
            health.lag("lag behind the master", seconds, lag);
        }
        health
    }

    /// The figures as Prometheus gauges, with `up` saying whether the last pass succeeded.
    pub fn gauges(&self, up: bool) -> Vec<Gauge> {
        let mut gauges = vec![
            up_gauge(up),
            Gauge {
                name: "dbmirror_apply_last_applied_number",
                help: "Number of the last file applied to the slave (0 before the first).",
                value: self.last_applied.unwrap_or(0) as f64,
            },
            Gauge {
                name: "dbmirror_apply_files_waiting",
                help: "Transaction files in the spool not yet applied.",
                value: self.files_waiting as f64,
            },
            Gauge {
                name: "dbmirror_apply_gap",
                help: "1 when a file is missing before files that arrived, 0 otherwise.",
                value: f64::from(u8::from(!self.gaps.is_empty())),
            },
            quarantined_gauge(self.quarantined.len()),
        ];
        // No lag before the first file (or after files applied before the slave recorded
        // export times): an absent series, not a made-up figure.
        if let Some(seconds) = self.lag_seconds {
            gauges.push(Gauge {
                name: "dbmirror_apply_lag_seconds",
                help: "Seconds since the last applied transaction committed on the master.",
                value: seconds,
            });
        }
        gauges
    }
}

fn up_gauge(up: bool) -> Gauge {
    Gauge {
        name: "dbmirror_apply_up",
        help: "1 when the last pass of dbmirror-apply watch succeeded, 0 when it failed.",
        value: f64::from(u8::from(up)),
    }
}

fn quarantined_gauge(count: usize) -> Gauge {
    Gauge { name: "dbmirror_apply_quarantined_files", help: "Files in quarantine.", value: count as f64 }
}

/// What `watch` can still say when the slave cannot be read: that it is down, and what the
/// quarantine holds.
pub fn gauges_when_down(config: &Config) -> Vec<Gauge> {
    vec![up_gauge(false), quarantined_gauge(quarantined(config).len())]
}

/// Prints the status, and returns its verdict.
pub fn show(config: &Config, json: bool, lag: &LagThresholds, gap_age: f64) -> Result<Level, Error> {
    let mut client = crate::apply::connect(config)?;
    let status = gather(config, &mut client)?;
    let health = status.health(lag, gap_age);
    if json {
        let report = Report { status: &status, health: &health };
        println!("{}", serde_json::to_string_pretty(&report).expect("status always serialises"));
        return Ok(health.level);
    }
    println!("health:        {}", health.summary());
    println!("slave:         {}", status.slave);
    match (status.last_applied, &status.applied_at) {
        (Some(n), Some(at)) => {
            println!("last applied:  file {n} (master transaction {}) at {at}", status.last_xid.unwrap_or(0))
        }
        _ => println!("last applied:  none yet"),
    }
    match (&status.last_committed_at, &status.last_exported_at, status.lag_seconds) {
        (Some(at), _, Some(seconds)) => {
            println!("lag:           {seconds:.0}s (the last applied transaction committed on the master at {at})")
        }
        (None, Some(at), Some(seconds)) => {
            println!("lag:           {seconds:.0}s (the last applied file was exported at {at})")
        }
        _ => {}
    }
    println!("next file:     {}", status.next);
    println!("in the spool:  {} files, {} manifests", status.files_in_spool.len(), status.manifests_in_spool);
    println!("to apply:      {} files", status.files_waiting);
    if !status.gaps.is_empty() {
        println!("gaps:          {:?}", status.gaps);
    }
    for line in &status.waiting {
        println!("waiting:       {line}");
    }
    if status.signatures_required {
        println!("signatures:    required (public_key)");
    } else {
        println!("signatures:    not checked: no public_key, so whoever can write to the spool can change the mirrored tables");
    }
    for q in &status.quarantined {
        println!("quarantined:   {} ({})", q.file, q.reason);
    }
    Ok(health.level)
}
