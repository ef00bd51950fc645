//! Reading what the master captured, and comparing tables between clusters.

use dbmirror_sql::copy_text;
use dbmirror_sql::CANONICAL_SETTINGS;

use crate::Cluster;

/// One captured change, as the tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub xid: i64,
    /// 'i', 'u', 'd' or 't'.
    pub op: char,
    /// `schema.table`, unquoted.
    pub table: String,
    /// Old key values: deletes, and updates that changed the key.
    pub key: Option<Vec<Option<String>>>,
    /// New row values (NULL where an update left the column unchanged).
    pub values: Option<Vec<Option<String>>>,
    /// Names of the columns an update left unchanged.
    pub unchanged: Vec<String>,
}

/// `SET` statements for the canonical settings the exporter renders values under.
pub fn render_settings() -> String {
    CANONICAL_SETTINGS.iter().map(|(name, value)| format!("SET {name} = '{value}';")).collect()
}

/// Every captured change of committed transactions, in export order.
pub fn captured(master: &Cluster) -> Vec<Captured> {
    let mut client = master.client();
    client.batch_execute(&render_settings()).expect("settings apply");
    let rows = client
        .query(
            "SELECT d.xid, d.op, s.nspname || '.' || s.relname, dbmirror_values(d.shape, d.key, true), \
                    dbmirror_values(d.shape, d.data, false), d.unchanged, s.columns \
               FROM dbmirror_pendingdata d JOIN dbmirror_pending p USING (xid) \
               CROSS JOIN LATERAL (SELECT * FROM dbmirror_shape s WHERE s.shape = d.shape LIMIT 1) s \
              ORDER BY p.commit_seq, d.cid, d.seq",
            &[],
        )
        .expect("captured changes can be read");
    rows.iter()
        .map(|row| {
            let op: i8 = row.get(1);
            let unchanged: Option<Vec<u8>> = row.get(5);
            let columns: Vec<String> = row.get(6);
            let unchanged = unchanged
                .map(|bits| {
                    columns
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
                        .map(|(_, c)| c.clone())
                        .collect()
                })
                .unwrap_or_default();
            // dbmirror_values() renders a row as COPY text.
            let values = |i: usize| {
                row.get::<_, Option<&str>>(i).map(|text| {
                    let fields = copy_text::fields(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
                    fields.into_iter().map(|f| f.map(|f| f.into_owned())).collect()
                })
            };
            Captured {
                xid: row.get(0),
                op: op as u8 as char,
                table: row.get(2),
                key: values(3),
                values: values(4),
                unchanged,
            }
        })
        .collect()
}

/// The rows of `table` as text, sorted, read under canonical settings.
pub fn table_rows(cluster: &Cluster, table: &str) -> Vec<String> {
    let mut client = cluster.client();
    client.batch_execute(&render_settings()).expect("settings apply");
    client
        .query(&format!("SELECT dbmirror_row::text FROM {table} dbmirror_row ORDER BY 1"), &[])
        .unwrap_or_else(|e| panic!("could not read {table}: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The rows of `table` itself (not of tables inheriting from it) as text, sorted, read under
/// canonical settings, through `client`.
pub fn own_rows(client: &mut postgres::Client, table: &str) -> Result<Vec<String>, postgres::Error> {
    client.batch_execute(&render_settings())?;
    let rows = client.query(&format!("SELECT dbmirror_row::text FROM ONLY {table} dbmirror_row ORDER BY 1"), &[])?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Fails, showing the first differences, unless every table has the same rows on both sides.
pub fn assert_tables_equal(master: &Cluster, slave: &Cluster, tables: &[&str]) {
    for table in tables {
        let (m, s) = (table_rows(master, table), table_rows(slave, table));
        if m != s {
            let only_master: Vec<&String> = m.iter().filter(|r| !s.contains(r)).take(5).collect();
            let only_slave: Vec<&String> = s.iter().filter(|r| !m.contains(r)).take(5).collect();
            panic!(
                "table {table} differs: master has {} rows, slave {}\nonly on master: {only_master:?}\nonly on slave: {only_slave:?}",
                m.len(),
                s.len()
            );
        }
    }
}
