//! `status`: what the slave has applied, what the spool holds, what it waits for, and what is
//! in quarantine. Only looks: moves nothing.

use dbmirror_cli::error::Error;
use dbmirror_sql::SLAVE_STATE_TABLE;

use crate::apply::connect;
use crate::config::Config;
use crate::inbox::{quarantined, Inbox};

#[derive(Debug, serde::Serialize)]
struct Status {
    slave: String,
    last_applied: Option<i64>,
    last_xid: Option<i64>,
    applied_at: Option<String>,
    master: Option<String>,
    next: u64,
    /// Numbers of the transaction files in the spool.
    files_in_spool: Vec<u64>,
    manifests_in_spool: usize,
    /// Numbers missing between the next file and the last file present.
    gaps: Vec<u64>,
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

pub fn show(config: &Config, json: bool) -> Result<(), Error> {
    let mut client = connect(config)?;
    let row = client.query_opt(
        &format!(
            "SELECT last_number, last_xid, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), master \
               FROM {SLAVE_STATE_TABLE} WHERE slave_name = $1"
        ),
        &[&config.slave_name],
    )?;
    let (last_applied, last_xid, applied_at, master) = match &row {
        Some(r) => (Some(r.get(0)), Some(r.get(1)), Some(r.get(2)), Some(r.get(3))),
        None => (None, None, None, None),
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
    let status = Status {
        slave: config.slave_name.clone(),
        last_applied,
        last_xid,
        applied_at,
        master,
        next,
        files_in_spool: files,
        manifests_in_spool: inbox.manifest_count(),
        gaps,
        waiting,
        quarantined: quarantined(config).into_iter().map(|(file, reason)| Quarantined { file, reason }).collect(),
        signatures_required: config.public_key.is_some(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status).expect("status always serialises"));
        return Ok(());
    }
    println!("slave:         {}", status.slave);
    match (status.last_applied, &status.applied_at) {
        (Some(n), Some(at)) => {
            println!("last applied:  file {n} (master transaction {}) at {at}", status.last_xid.unwrap_or(0))
        }
        _ => println!("last applied:  none yet"),
    }
    println!("next file:     {}", status.next);
    println!("in the spool:  {} files, {} manifests", status.files_in_spool.len(), status.manifests_in_spool);
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
    Ok(())
}
