//! Which slaves of one master share a batch (`dbmirror-export --config a.toml --config b.toml
//! once`): the slaves of one process whose batches can be rendered once and written for all of
//! them by `export_batch` of [`crate::export`].
//!
//! Each slave keeps everything of its own exactly as when it is exported alone: its session on
//! the master (with its lock), its batches (what a crash left unwritten, else an assignment),
//! its outbox with its state file, and the record of what it was sent. What is shared is the
//! reading and the rendering. Per batch, the slaves whose batches hold the same transactions,
//! in the same order, and that leave none of their changes out (a slave given a copy of a
//! table by `dbmirror-export snapshot --table` leaves out the changes its copy holds, and all
//! of the table's while it awaits the copy) form a group; any other slave is a group of one,
//! exported exactly as it would be alone. Slaves registered and exported together assign the
//! same transactions, so the usual case is one group.
//!
//! A group's files are all written first, then each slave's batch is made durable and
//! published ([`export::Files`]' end of batch, each slave's on a thread of its own, while the
//! next batch is written), then each is recorded as written. A crash
//! anywhere leaves each slave with its batch either assigned and unwritten, which the next
//! start writes again byte for byte (a file rendered for a group is the file rendered for its
//! slave alone), or written.
//!
//! Settings of the process, not of a slave (sleep_interval, batch_size, alert_command,
//! log_format, metrics_file, metrics_interval), are taken from the first configuration.

use crate::config::{Config, Output};
use crate::error::Error;
use crate::export;
use crate::master::{Assigned, Master};

/// Checks, before connecting, that `configs` can be served by one process: one slave, in
/// either mode, or several, each in file mode, each slave and each outbox named once.
pub fn check(configs: &[Config]) -> Result<(), Error> {
    if configs.len() == 1 {
        return Ok(());
    }
    for (i, config) in configs.iter().enumerate() {
        let Output::Files { directory, .. } = &config.output else {
            return Err(Error::config(format!(
                "slave \"{}\" is configured for direct mode, which one process serves for one slave only",
                config.slave_name
            ))
            .with_hint("Run the direct-mode slave in a dbmirror-export of its own; several configurations must all write files."));
        };
        for earlier in &configs[..i] {
            if earlier.slave_name == config.slave_name {
                return Err(Error::config(format!("slave \"{}\" is configured twice", config.slave_name))
                    .with_hint("Give each slave's configuration once."));
            }
            if let Output::Files { directory: other, .. } = &earlier.output {
                if other == directory {
                    return Err(Error::config(format!(
                        "slaves \"{}\" and \"{}\" have the same transaction_file_directory \"{}\"",
                        earlier.slave_name,
                        config.slave_name,
                        directory.display()
                    ))
                    .with_hint("Each slave needs an outbox of its own."));
                }
            }
        }
    }
    Ok(())
}

/// Each slave's session on the master, checked to reach the first one's master: the same
/// cluster (system identifier) and database.
pub(crate) fn connect_all(configs: &[Config]) -> Result<Vec<Master>, Error> {
    let mut masters: Vec<Master> = Vec::with_capacity(configs.len());
    for config in configs {
        let master = export::start(config)?;
        if let Some(first) = masters.first() {
            let (a, b) = (&first.identity, &master.identity);
            if a.system_identifier != b.system_identifier || a.database != b.database {
                return Err(Error::config(format!(
                    "slave \"{}\" is configured with master database \"{}\" of cluster {}, but slave \"{}\" with database \
                     \"{}\" of cluster {}",
                    configs[0].slave_name,
                    a.database,
                    a.system_identifier,
                    config.slave_name,
                    b.database,
                    b.system_identifier
                ))
                .with_hint("One dbmirror-export serves the slaves of one master database; run one for each master."));
            }
        }
        masters.push(master);
    }
    Ok(masters)
}

/// The slaves with a batch, in groups (positions in `batches`) that share their transactions:
/// the same xids in the same order, and none of their changes left out by a table filter. A
/// slave that shares with none is a group of one.
pub(crate) fn groups(masters: &mut [Master], batches: &[Vec<Assigned>]) -> Result<Vec<Vec<usize>>, Error> {
    let with_batch: Vec<usize> = (0..batches.len()).filter(|&i| !batches[i].is_empty()).collect();
    // One slave alone is a group of one, whatever it leaves out.
    if with_batch.len() == 1 {
        return Ok(vec![with_batch]);
    }
    let same = |a: &[Assigned], b: &[Assigned]| a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.xid == b.xid);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut alone: Vec<Vec<usize>> = Vec::new();
    for i in with_batch {
        let batch = &batches[i];
        // A slave that takes a table from a copy of its own leaves the changes that the copy
        // holds out of its files (or all of the table's, while it awaits the copy): while it
        // may leave out any of this batch, it is exported alone.
        let xids: Vec<i64> = batch.iter().map(|a| a.xid).collect();
        if !masters[i].table_filter()?.keeps_all(&xids) {
            alone.push(vec![i]);
            continue;
        }
        match groups.iter_mut().find(|group| same(&batches[group[0]], batch)) {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups.append(&mut alone);
    Ok(groups)
}

/// The slaves' names, for log lines: `a, b, c`.
pub fn names(configs: &[Config]) -> String {
    configs.iter().map(|c| c.slave_name.as_str()).collect::<Vec<_>>().join(", ")
}
