//! `status`: what has been exported for the slave, what waits, and what the outbox holds.

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
}

#[derive(Debug, serde::Serialize)]
struct Outbox {
    directory: String,
    files: usize,
    manifests: usize,
    temporary: usize,
    unrecognized: usize,
}

pub fn show(config: &Config, json: bool) -> Result<(), Error> {
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
    let status = Status {
        slave: config.slave_name.clone(),
        master: master.status()?,
        outbox,
        capture_problems: master.capture_problems()?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status).expect("status always serialises"));
        return Ok(());
    }
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
    Ok(())
}
