//! `status`: what has been exported for the slave, what waits and for how long, and what the
//! outbox holds; and the verdict of all that as a monitoring check (see
//! [`dbmirror_cli::health`]). `run` writes the same figures as metrics.

use dbmirror_cli::health::{Health, LagThresholds, Level};
use dbmirror_cli::metrics::Gauge;
use dbmirror_spool::Entry;

use crate::config::{Config, Output};
use crate::error::Error;
use crate::master::{CaptureProblem, Master, MasterStatus};

#[derive(Debug, serde::Serialize)]
struct Status {
    slave: String,
    #[serde(flatten)]
    master: MasterStatus,
    outbox: Option<Outbox>,
    /// What keeps mirrored tables from being captured completely; empty when all is well.
    capture_problems: Vec<CaptureProblem>,
    health: Health,
}

#[derive(Debug, serde::Serialize)]
struct Outbox {
    directory: String,
    files: usize,
    manifests: usize,
    temporary: usize,
    unrecognized: usize,
}

/// The verdict: a capture problem is CRITICAL (changes are being lost), the age of the oldest
/// waiting transaction (when one waits) is judged by `lag`.
fn health(master: &MasterStatus, problems: &[CaptureProblem], lag: &LagThresholds) -> Health {
    let mut health = Health::default();
    for problem in problems {
        health.raise(Level::Critical, format!("capture is incomplete: {}", problem.problem));
    }
    if let Some(seconds) = master.oldest_waiting_age_seconds {
        health.lag("the oldest waiting transaction's age", seconds, lag);
    }
    health
}

/// The figures of `master` as Prometheus gauges, with `up` saying whether the last pass
/// succeeded; without figures (the master cannot be read), only that.
pub fn gauges(master: Option<&MasterStatus>, up: bool) -> Vec<Gauge> {
    let up = Gauge {
        name: "dbmirror_export_up",
        help: "1 when the last pass of dbmirror-export run succeeded, 0 when it failed.",
        value: f64::from(u8::from(up)),
    };
    let Some(master) = master else {
        return vec![up];
    };
    let mut gauges = vec![
        up,
        Gauge {
            name: "dbmirror_export_last_file_number",
            help: "Number of the last file assigned for the slave.",
            value: master.last_number as f64,
        },
        Gauge {
            name: "dbmirror_export_waiting_transactions",
            help: "Transactions captured on the master and not yet exported for the slave.",
            value: master.waiting_transactions as f64,
        },
    ];
    // 0 when nothing waits; otherwise the age of the commit time capture recorded.
    let none_waits = (master.waiting_transactions == 0).then_some(0.0);
    if let Some(seconds) = master.oldest_waiting_age_seconds.or(none_waits) {
        gauges.push(Gauge {
            name: "dbmirror_export_oldest_waiting_age_seconds",
            help: "Seconds since the oldest waiting transaction committed (0 when none waits).",
            value: seconds,
        });
    }
    gauges
}

/// Prints the status, and returns its verdict.
pub fn show(config: &Config, json: bool, lag: &LagThresholds) -> Result<Level, Error> {
    let mut master = Master::connect(&config.master, &config.slave_name)?;
    let outbox = match &config.output {
        Output::Files { directory, .. } => {
            let entries = dbmirror_spool::scan(directory)?;
            let count = |f: fn(&Entry) -> bool| entries.iter().filter(|e| f(e)).count();
            Some(Outbox {
                directory: directory.display().to_string(),
                files: count(|e| matches!(e, Entry::Transaction { .. })),
                manifests: count(|e| matches!(e, Entry::Manifest { .. })),
                temporary: count(|e| matches!(e, Entry::Temporary(_))),
                unrecognized: count(|e| matches!(e, Entry::Unrecognized { .. })),
            })
        }
        Output::Direct { .. } => None,
    };
    let figures = master.status()?;
    let capture_problems = master.capture_problems()?;
    let status = Status {
        slave: config.slave_name.clone(),
        health: health(&figures, &capture_problems, lag),
        master: figures,
        outbox,
        capture_problems,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status).expect("status always serialises"));
        return Ok(status.health.level);
    }
    println!("health:                {}", status.health.summary());
    // A slave name is a channel: every slave database that applies its files follows it, each
    // with its applied state of its own.
    println!("slave (channel):       {}", status.slave);
    match (&status.master.snapshot, status.master.seeding) {
        (_, true) => {
            println!("started from:          a snapshot that did not finish: run dbmirror-export snapshot again")
        }
        (Some(snapshot), false) => println!("started from:          a snapshot (under {snapshot})"),
        (None, false) => println!("started from:          its registration (no snapshot)"),
    }
    println!("last file number:      {}", status.master.last_number);
    if !status.master.awaiting_copy.is_empty() {
        println!(
            "awaiting a copy:       {} (left out of the files until dbmirror-export snapshot --table)",
            status.master.awaiting_copy.join(", ")
        );
    }
    println!("assigned, not written: {}", status.master.unwritten);
    println!(
        "waiting:               {} transactions, {} changes",
        status.master.waiting_transactions, status.master.waiting_changes
    );
    if let (Some(at), Some(seconds)) =
        (&status.master.oldest_waiting_committed_at, status.master.oldest_waiting_age_seconds)
    {
        println!("oldest waiting:        committed at {at}, {seconds:.0}s ago");
    }
    if let Some(outbox) = &status.outbox {
        println!(
            "outbox:                {} ({} files, {} manifests, {} temporary, {} unrecognized)",
            outbox.directory, outbox.files, outbox.manifests, outbox.temporary, outbox.unrecognized
        );
    }
    if status.capture_problems.is_empty() {
        println!("capture:               complete on every mirrored table");
    }
    for problem in &status.capture_problems {
        println!("CAPTURE PROBLEM:       {}", problem.problem);
        if let Some(hint) = &problem.hint {
            println!("                       HINT: {hint}");
        }
    }
    Ok(status.health.level)
}
