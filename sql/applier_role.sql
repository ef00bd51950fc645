-- A role for dbmirror-apply that can change the mirrored tables and nothing else.
--
--     psql -v ON_ERROR_STOP=1 -d SLAVEDB -v role=dbmirror_apply \
--          -v tables='public.orders, public."Order Line"' \
--          -v sequences='public.orders_id_seq' -f sql/applier_role.sql
--
-- Run it as a superuser after sql/slave_setup.sql; `sequences` may be left out. Then give the
-- applier's `slave` connection string user=dbmirror_apply (and a password or certificate as
-- your pg_hba.conf requires). What the role may do:
--   * read, insert, update, delete and truncate the mirrored tables (UPDATE and DELETE need
--     SELECT to find rows by key);
--   * read and set the mirrored tables' sequences (setval needs UPDATE);
--   * read and write its own rows of dbmirror.slave_state and dbmirror.applied_file, through
--     dbmirror.guard();
--   * SET session_replication_role = replica inside a file's transaction (PostgreSQL 15 and
--     later), so the slave's own triggers and foreign-key actions do not fire twice;
--   * check the mirrored tables' shape (dbmirror.check_table()).
-- The master's DDL (dbmirror.ddl()) runs as this role too, and changing a table takes its
-- owner: a slave that takes DDL (the applier's ddl setting) needs the tables owned by this role.
-- The applier also refuses any statement that is not one the exporter writes, before sending
-- it; the role is the second wall.

\if :{?role}
\else
    \echo 'set the role name: -v role=NAME'
    \quit
\endif

SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec

GRANT USAGE ON SCHEMA dbmirror TO :"role";
GRANT SELECT, INSERT, UPDATE ON dbmirror.slave_state, dbmirror.applied_file TO :"role";
GRANT EXECUTE ON FUNCTION dbmirror.guard(text, text, bigint, bigint, text, timestamptz, timestamptz),
                          dbmirror.guard(text, text, bigint, bigint, text),
                          dbmirror.start_stream(text, text, bigint, bigint, timestamptz, text[]),
                          dbmirror.snapshot_tables(text[]),
                          dbmirror.one_row(bigint, text),
                          dbmirror.old_value(anyelement, text),
                          dbmirror.advance_sequence(regclass, bigint, boolean),
                          dbmirror.check_table(text, text[], text[]),
                          dbmirror.ddl(text, text, text[]) TO :"role";
GRANT SET ON PARAMETER session_replication_role TO :"role";

\if :{?tables}
SELECT DISTINCT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, :'role')
  FROM unnest(string_to_array(:'tables', ',')) AS t(name)
  JOIN pg_class c ON c.oid = t.name::regclass
  JOIN pg_namespace n ON n.oid = c.relnamespace \gexec
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLE :tables TO :"role";
\endif
\if :{?sequences}
GRANT SELECT, UPDATE ON SEQUENCE :sequences TO :"role";
\endif
