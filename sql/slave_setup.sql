-- dbmirror slave setup: what transaction files need on a slave.
--
--     psql -v ON_ERROR_STOP=1 -d SLAVEDB -f sql/slave_setup.sql
--
-- `dbmirror-apply init` runs the same SQL. Running it again is harmless: it only creates what
-- is missing and replaces the functions with the current version, and it upgrades a slave
-- prepared by an earlier version in place, keeping what that slave has applied.
--
-- Every transaction file runs, in its own transaction, first
--     SELECT dbmirror.guard(slave, master, number, xid, previous_sha256, exported_at, committed_at);
-- which aborts the file unless it is the next one for that slave and records it, so a file
-- is applied exactly once and in order, by the applier or by hand with psql. (Files written
-- before the guard took `committed_at` call it with six arguments, and files written before it
-- took `exported_at` with the first five only.)
--
-- Among its changes, a file may call
--     SELECT dbmirror.check_table(table, columns, key);
-- before its first change of a table, which fails the file (DM008) unless the slave's table has
-- the master's columns and primary key, and
--     SELECT dbmirror.ddl(statement, search_path [, tables]);
-- for a schema change on the master, which runs it as far as the session's dbmirror.ddl allows
-- (refuse, mirrored or any; DM009 otherwise). Under mirrored, the default, two event triggers
-- keep it to the tables the file names; creating them takes a superuser, and without them
-- mirrored refuses all DDL. The applying role must own the tables the DDL changes.

CREATE SCHEMA IF NOT EXISTS dbmirror;

-- One row per slave name (several masters can feed one database under different names).
CREATE TABLE IF NOT EXISTS dbmirror.slave_state (
    slave_name      text PRIMARY KEY,
    -- System identifier of the master cluster the files come from.
    master          text NOT NULL,
    -- Number, master xid and time of the last applied file.
    last_number     bigint NOT NULL CHECK (last_number > 0),
    last_xid        bigint NOT NULL,
    applied_at      timestamptz NOT NULL,
    -- sha256 of the SQL text of the last applied file when the applier applied it (it checks
    -- the next file's previous-sha256 against it); NULL after a file applied by hand.
    last_sha256     text
);

-- One row per applied file: which master transaction each number carried, and when the master
-- assigned it. A file that comes again under an applied number is a true re-send only if it
-- carries the same; otherwise the master's history diverged (it was restored from an older
-- copy, say) and the slave must not take the new history for the one it applied. Rows may be
-- deleted to save space; a number without a row can no longer be checked this way.
CREATE TABLE IF NOT EXISTS dbmirror.applied_file (
    slave_name      text NOT NULL,
    number          bigint NOT NULL,
    -- The master transaction the file carried.
    xid             bigint NOT NULL,
    -- When the master assigned the number (the header's exported-at); NULL for files written
    -- before the guard took it.
    exported_at     timestamptz,
    -- sha256 of the file's SQL text when the applier applied it; NULL after psql -f.
    sha256          text,
    applied_at      timestamptz NOT NULL,
    CONSTRAINT applied_file_pkey PRIMARY KEY (slave_name, number)
);
-- The master's commit time of the file's transaction (the header's committed-at); NULL for
-- files written before the master recorded it. Added apart so that slaves prepared earlier get
-- it too.
ALTER TABLE dbmirror.applied_file ADD COLUMN IF NOT EXISTS committed_at timestamptz;

-- Monitoring, for dashboards that read SQL: per slave name, the last applied file and how far
-- behind the master it is. The lag is counted from the master commit time of the last applied
-- transaction (last_committed_at; for files written before the master recorded it, from when
-- the master assigned the file its number, its exported-at): an idle master makes it grow too.
-- Files waiting in the spool, gaps and quarantined files are on disk, not in the database:
-- `dbmirror-apply status --json` reports them. last_committed_at comes last so that CREATE OR
-- REPLACE upgrades the view of a slave prepared earlier.
CREATE OR REPLACE VIEW dbmirror.status AS
SELECT s.slave_name,
       s.last_number AS last_applied,
       s.applied_at,
       a.exported_at AS last_exported_at,
       extract(epoch FROM pg_catalog.now() - coalesce(a.committed_at, a.exported_at))::double precision AS lag_seconds,
       a.committed_at AS last_committed_at
  FROM dbmirror.slave_state s
  LEFT JOIN dbmirror.applied_file a ON a.slave_name = s.slave_name AND a.number = s.last_number;

-- A slave prepared by an earlier version knows only its last applied file: that one starts the
-- history. Harmless when the row is there already.
INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, sha256, applied_at)
SELECT s.slave_name, s.last_number, s.last_xid, NULL, s.last_sha256, s.applied_at
  FROM dbmirror.slave_state s
ON CONFLICT (slave_name, number) DO NOTHING;

-- Aborts the current transaction unless file `number` from master `master` is the next one for
-- `slave`; otherwise records it as applied. Errors carry their own SQLSTATE so the applier can
-- tell them apart:
--   DM001  already applied       DM002  out of order (an earlier file is missing)
--   DM003  another master        DM004  does not follow the file applied before it
--   DM006  a file with this number was applied, but it carried another master transaction or
--          export time: the master's history diverged
-- committed_at, the master's commit time, is recorded for monitoring only. The six-argument
-- guard of earlier versions is dropped first: beside this one, whose last argument has a
-- default, a call with six arguments would be ambiguous.
DROP FUNCTION IF EXISTS dbmirror.guard(text, text, bigint, bigint, text, timestamptz);
CREATE OR REPLACE FUNCTION dbmirror.guard(slave text, master text, number bigint, xid bigint, previous_sha256 text,
                                          exported_at timestamptz, committed_at timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    state dbmirror.slave_state%ROWTYPE;
    applied dbmirror.applied_file%ROWTYPE;
BEGIN
    SELECT * INTO state FROM dbmirror.slave_state s WHERE s.slave_name = guard.slave FOR UPDATE;
    IF NOT FOUND THEN
        IF guard.number <> 1 THEN
            RAISE EXCEPTION 'file % for slave "%" is out of order: no file has been applied yet, the next is 1', guard.number, guard.slave
                USING ERRCODE = 'DM002',
                      HINT = 'Apply the files in order, starting with file 1.';
        END IF;
        INSERT INTO dbmirror.slave_state (slave_name, master, last_number, last_xid, applied_at, last_sha256)
        VALUES (guard.slave, guard.master, guard.number, guard.xid, pg_catalog.clock_timestamp(), NULL);
        INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, committed_at, sha256, applied_at)
        VALUES (guard.slave, guard.number, guard.xid, guard.exported_at, guard.committed_at, NULL, pg_catalog.clock_timestamp())
        ON CONFLICT ON CONSTRAINT applied_file_pkey DO UPDATE
           SET xid = excluded.xid, exported_at = excluded.exported_at, committed_at = excluded.committed_at,
               sha256 = NULL, applied_at = excluded.applied_at;
        RETURN;
    END IF;
    IF state.master <> guard.master THEN
        RAISE EXCEPTION 'file % for slave "%" comes from master %, but this slave follows master %', guard.number, guard.slave, guard.master, state.master
            USING ERRCODE = 'DM003',
                  HINT = 'The file belongs to another master''s spool; check where it was copied from.';
    END IF;
    IF guard.number <= state.last_number THEN
        SELECT * INTO applied FROM dbmirror.applied_file a WHERE a.slave_name = guard.slave AND a.number = guard.number;
        -- The export time tells two exports of one number apart even when a restored master
        -- handed out the same xid again; files without it are compared by xid alone.
        IF FOUND AND (applied.xid <> guard.xid
                      OR applied.exported_at <> guard.exported_at) THEN
            RAISE EXCEPTION 'file % for slave "%" is not the file % that was applied: the master''s history diverged', guard.number, guard.slave, guard.number
                USING ERRCODE = 'DM006',
                      DETAIL = pg_catalog.format('File %s was applied as master transaction %s exported at %s; this one is master transaction %s exported at %s.',
                                                 guard.number, applied.xid, coalesce(applied.exported_at::text, 'an unrecorded time'),
                                                 guard.xid, coalesce(guard.exported_at::text, 'an unrecorded time')),
                      HINT = 'Was the master restored from an older copy? The slave has applied changes that the master''s history no longer has: make the slave a copy of the master again before applying its files.';
        END IF;
        RAISE EXCEPTION 'file % for slave "%" was already applied (last applied: %)', guard.number, guard.slave, state.last_number
            USING ERRCODE = 'DM001';
    END IF;
    IF guard.number > state.last_number + 1 THEN
        RAISE EXCEPTION 'file % for slave "%" is out of order: the next file is %', guard.number, guard.slave, state.last_number + 1
            USING ERRCODE = 'DM002',
                  HINT = 'Apply the missing files first.';
    END IF;
    IF state.last_sha256 IS NOT NULL AND guard.previous_sha256 IS DISTINCT FROM state.last_sha256 THEN
        RAISE EXCEPTION 'file % for slave "%" does not follow the file applied as %', guard.number, guard.slave, state.last_number
            USING ERRCODE = 'DM004',
                  DETAIL = pg_catalog.format('The file names previous sha256 %s, the applied file had %s.', guard.previous_sha256, state.last_sha256),
                  HINT = 'A file was replaced or the spool was mixed up; compare both files with their manifests.';
    END IF;
    UPDATE dbmirror.slave_state s
       SET last_number = guard.number, last_xid = guard.xid, applied_at = pg_catalog.clock_timestamp(), last_sha256 = NULL
     WHERE s.slave_name = guard.slave;
    -- A row left from before the slave's state was reset describes a file of another life.
    INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, committed_at, sha256, applied_at)
    VALUES (guard.slave, guard.number, guard.xid, guard.exported_at, guard.committed_at, NULL, pg_catalog.clock_timestamp())
    ON CONFLICT ON CONSTRAINT applied_file_pkey DO UPDATE
       SET xid = excluded.xid, exported_at = excluded.exported_at, committed_at = excluded.committed_at,
           sha256 = NULL, applied_at = excluded.applied_at;
END
$fn$;

-- The guard as files written before it took the export time call it: the same checks, with
-- the xid alone telling two exports of one number apart.
CREATE OR REPLACE FUNCTION dbmirror.guard(slave text, master text, number bigint, xid bigint, previous_sha256 text)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT dbmirror.guard(slave, master, number, xid, previous_sha256, NULL::timestamptz, NULL::timestamptz);
$fn$;

-- Prepares the tables a snapshot fills: they must be empty, unless the session sets
-- dbmirror.replace to on (dbmirror-apply --replace, or PGOPTIONS='-c dbmirror.replace=on'
-- psql -f FILE): then they are emptied first. The first file of a snapshot calls it, through
-- start_stream for a whole snapshot, or after the guard for tables added to a running slave.
CREATE OR REPLACE FUNCTION dbmirror.snapshot_tables(tables text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    tbl text;
    has_rows boolean;
    filled text[] := '{}';
BEGIN
    IF pg_catalog.current_setting('dbmirror.replace', true) = 'on' THEN
        -- Each table with its own ONLY: the snapshot copies every table of an inheritance tree.
        EXECUTE 'TRUNCATE ' || (SELECT pg_catalog.string_agg('ONLY ' || t::regclass::text, ', ') FROM pg_catalog.unnest(tables) t);
    ELSE
        FOREACH tbl IN ARRAY tables LOOP
            EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', tbl::regclass) INTO STRICT has_rows;
            IF has_rows THEN
                filled := filled || tbl;
            END IF;
        END LOOP;
        IF filled <> '{}' THEN
            RAISE EXCEPTION 'a snapshot goes into empty tables, but % % not empty',
                            pg_catalog.array_to_string(filled, ', '), CASE WHEN pg_catalog.cardinality(filled) = 1 THEN 'is' ELSE 'are' END
                USING ERRCODE = 'DM007',
                      HINT = 'Empty them, or let the snapshot replace their rows: dbmirror-apply --replace, or PGOPTIONS=''-c dbmirror.replace=on'' psql -f FILE.';
        END IF;
    END IF;
END
$fn$;

-- Starts a stream with the first file of a snapshot (`dbmirror-export snapshot`), in place of
-- the guard: the slave follows `master` from file `number` on, whatever it followed before (a
-- snapshot seeds a new slave, or seeds a lost one again; files of the stream it replaces are
-- then "already applied" and never run). The snapshot's `tables` are prepared by
-- snapshot_tables(). A start file that comes again is told apart by the guard's own checks
-- (DM001, DM006).
CREATE OR REPLACE FUNCTION dbmirror.start_stream(slave text, master text, number bigint, xid bigint,
                                                 exported_at timestamptz, tables text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    state dbmirror.slave_state%ROWTYPE;
BEGIN
    SELECT * INTO state FROM dbmirror.slave_state s WHERE s.slave_name = start_stream.slave FOR UPDATE;
    IF FOUND AND state.master = start_stream.master AND start_stream.number <= state.last_number THEN
        PERFORM dbmirror.guard(slave, master, number, xid, NULL, exported_at);
    END IF;
    PERFORM dbmirror.snapshot_tables(tables);
    INSERT INTO dbmirror.slave_state (slave_name, master, last_number, last_xid, applied_at, last_sha256)
    VALUES (slave, master, number, xid, pg_catalog.clock_timestamp(), NULL)
    ON CONFLICT (slave_name) DO UPDATE
       SET master = excluded.master, last_number = excluded.last_number, last_xid = excluded.last_xid,
           applied_at = excluded.applied_at, last_sha256 = NULL;
    -- The history of the stream this one replaces stays: its numbers are below this one (the
    -- exporter never numbers a snapshot at or below a number its outbox has seen), and a row
    -- left under a number of this stream describes a file of another life.
    -- The snapshot's data is as of its export time: that is its commit time for monitoring.
    INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, committed_at, sha256, applied_at)
    VALUES (slave, number, xid, exported_at, exported_at, NULL, pg_catalog.clock_timestamp())
    ON CONFLICT ON CONSTRAINT applied_file_pkey DO UPDATE
       SET xid = excluded.xid, exported_at = excluded.exported_at, committed_at = excluded.committed_at,
           sha256 = NULL, applied_at = excluded.applied_at;
END
$fn$;

-- Fails the file when an UPDATE or DELETE did not find exactly its one row: the slave has
-- drifted from the master, and going on would hide it.
CREATE OR REPLACE FUNCTION dbmirror.one_row(matched bigint, what text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF matched <> 1 THEN
        RAISE EXCEPTION '% matched % rows on the slave instead of 1', what, matched
            USING ERRCODE = 'DM005',
                  HINT = 'The slave no longer equals the master for this table; compare them with dbmirror-export verify.';
    END IF;
END
$fn$;

-- Moves a sequence forward to the master's position, never backwards (a file applied late
-- must not undo a newer value).
CREATE OR REPLACE FUNCTION dbmirror.advance_sequence(seq regclass, value bigint, is_called boolean)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    current_value bigint;
    current_called boolean;
    step bigint;
BEGIN
    EXECUTE pg_catalog.format('SELECT last_value, is_called FROM %s', seq) INTO current_value, current_called;
    SELECT s.seqincrement INTO step FROM pg_catalog.pg_sequence s WHERE s.seqrelid = seq;
    -- Compare the values nextval() would return next.
    IF (step > 0 AND value + CASE WHEN is_called THEN step ELSE 0 END
                   > current_value + CASE WHEN current_called THEN step ELSE 0 END)
       OR (step < 0 AND value + CASE WHEN is_called THEN step ELSE 0 END
                   < current_value + CASE WHEN current_called THEN step ELSE 0 END) THEN
        PERFORM pg_catalog.setval(seq, value, is_called);
    END IF;
END
$fn$;

-- For tables mirrored with check_conflicts: whether a column still holds the value the master's
-- row had before the change, compared as text under the file's canonical settings (every type
-- has an output function, not every type an equality operator). NULL is only NULL.
CREATE OR REPLACE FUNCTION dbmirror.old_value(value anyelement, old text)
RETURNS boolean LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT CASE WHEN old IS NULL THEN value IS NULL
                ELSE value IS NOT NULL AND pg_catalog.format('%s', value) = old END
$fn$;

-- Checks, before a file's first change of a table, that the slave's table has the master's
-- shape: `columns` are the master's captured columns (`"name" TYPE`, TYPE as format_type()
-- prints it with this search_path, so types outside pg_catalog are schema-qualified; generated
-- columns are left out, the slave computes them), `key` its primary key columns in key order.
-- A difference fails the file (DM008) naming the table and every difference, rather than letting
-- its rows go into columns that mean something else, or fail later on an obscure error. It runs
-- for every table of every file, so the common case is one catalog query and one comparison of
-- arrays; only a table that differs pays for the details.
CREATE OR REPLACE FUNCTION dbmirror.check_table(tbl text, columns text[], key text[])
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    here_columns text[];
    here_key text[];
    differences text[] := '{}';
    master_column record;
BEGIN
    SELECT ARRAY(SELECT '"' || pg_catalog.replace(a.attname, '"', '""') || '" ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                  ORDER BY a.attnum),
           ARRAY(SELECT '"' || pg_catalog.replace(a.attname, '"', '""') || '"'
                   FROM pg_catalog.pg_index i, pg_catalog.pg_attribute a
                  WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
                  ORDER BY pg_catalog.array_position(i.indkey::int2[], a.attnum))
      INTO here_columns, here_key
      FROM pg_catalog.pg_class c
     WHERE c.oid = pg_catalog.to_regclass(tbl) AND c.relkind IN ('r', 'p');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % does not exist here', tbl
            USING ERRCODE = 'DM008',
                  HINT = 'A schema change reached one side only (DDL outside the stream, or the slave altered by hand): create the table as the master has it, then apply the file again.';
    END IF;
    -- The same columns in any order: as many, each of one side among the other's.
    IF here_columns @> columns AND here_columns <@ columns
       AND pg_catalog.cardinality(here_columns) = pg_catalog.cardinality(columns) AND here_key = key THEN
        RETURN;
    END IF;
    -- Both sides as (name, type), to say what differs column by column.
    FOR master_column IN
        WITH master AS (
            SELECT m[1] AS name, m[2] AS type
              FROM pg_catalog.unnest(columns) c, pg_catalog.regexp_match(c, '^("(?:[^"]|"")*") (.*)$') m),
        here AS (
            SELECT m[1] AS name, m[2] AS type
              FROM pg_catalog.unnest(here_columns) c, pg_catalog.regexp_match(c, '^("(?:[^"]|"")*") (.*)$') m)
        SELECT master.name AS master_name, master.type AS master_type, here.name AS here_name, here.type AS here_type
          FROM master FULL JOIN here ON here.name = master.name
         WHERE master.type IS DISTINCT FROM here.type
         ORDER BY pg_catalog.array_position(columns, master.name || ' ' || master.type),
                  pg_catalog.array_position(here_columns, here.name || ' ' || here.type)
    LOOP
        differences := differences || CASE
            WHEN master_column.here_name IS NULL THEN
                pg_catalog.format('column %s %s is missing here', master_column.master_name, master_column.master_type)
            WHEN master_column.master_name IS NULL THEN
                pg_catalog.format('column %s is only here', master_column.here_name)
            ELSE
                pg_catalog.format('column %s is %s here, %s on the master', master_column.here_name,
                                  master_column.here_type, master_column.master_type)
        END;
    END LOOP;
    IF here_key IS DISTINCT FROM key THEN
        differences := differences || pg_catalog.format('%s here, (%s) on the master',
            CASE WHEN here_key = '{}' THEN 'no primary key'
                 ELSE 'primary key (' || pg_catalog.array_to_string(here_key, ', ') || ')' END,
            pg_catalog.array_to_string(key, ', '));
    END IF;
    RAISE EXCEPTION 'table % differs from the master''s: %', tbl, pg_catalog.array_to_string(differences, '; ')
        USING ERRCODE = 'DM008',
              HINT = 'A schema change reached one side only (DDL outside the stream, or the slave altered by hand): bring the table to the master''s shape, then apply the file again.';
END
$fn$;

-- Schema changes (DDL) travel in files as
--     SELECT dbmirror.ddl(statement, search_path [, tables]);
-- with the statement as the master ran it, the master session's search_path, and the tables the
-- master says it changes (as they are named after it). What this slave lets it do is the
-- session's setting dbmirror.ddl (the applier sets it from its `ddl` setting; by hand,
-- PGOPTIONS='-c dbmirror.ddl=any' psql -f FILE):
--   refuse    no DDL: the file fails (DM009);
--   mirrored  (the default) the statement may create, change or drop only the tables it names
--             and what belongs to them: their columns, indexes, constraints, defaults, owned
--             sequences, their row type, and types (enum, domain, composite) used by their
--             columns. Anything else fails the file (DM009). The event triggers below enforce it;
--   any       the statement runs whatever it does.
-- The statement runs as the role applying the file, which must own the tables it changes.
--
-- "mirrored" keeps an honest master's DDL to the tables the slave mirrors; it does not make
-- arbitrary SQL safe. The statement text may hold several statements, and only DDL fires event
-- triggers: other statements run unchecked beside DDL on a named table. That a file comes from
-- the master is what the manifests' signatures prove (the applier's public_key); a slave that
-- must not take schema changes at all sets refuse.
CREATE OR REPLACE FUNCTION dbmirror.ddl(statement text, search_path text, tables text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    policy text := coalesce(nullif(pg_catalog.current_setting('dbmirror.ddl', true), ''), 'mirrored');
    first_line text := pg_catalog.split_part(statement, E'\n', 1);
    named oid[];
BEGIN
    IF policy NOT IN ('refuse', 'mirrored', 'any') THEN
        RAISE EXCEPTION 'dbmirror.ddl must be refuse, mirrored or any, not "%"', policy
            USING ERRCODE = '22023',
                  HINT = 'Set it to one of these (the applier''s ddl setting), or leave it unset for mirrored.';
    END IF;
    IF pg_catalog.length(first_line) > 200 OR first_line <> statement THEN
        first_line := pg_catalog.left(first_line, 200) || '...';
    END IF;
    IF policy = 'refuse' THEN
        RAISE EXCEPTION 'this slave refuses DDL (dbmirror.ddl = refuse), and the file carries: %', first_line
            USING ERRCODE = 'DM009',
                  HINT = 'To let the slave take the master''s schema changes, set the applier''s ddl setting to mirrored or any, or run the file with SET dbmirror.ddl = ''any'' first (PGOPTIONS=''-c dbmirror.ddl=any'' psql -f FILE).';
    END IF;
    IF policy = 'mirrored' THEN
        IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_event_trigger e
             WHERE e.evtname IN ('dbmirror_slave_ddl_command_end', 'dbmirror_slave_sql_drop')
               AND e.evtenabled = 'A') <> 2 THEN
            RAISE EXCEPTION 'DDL refused: this slave cannot hold DDL to the tables the file names (dbmirror.ddl = mirrored), its event triggers dbmirror_slave_ddl_command_end and dbmirror_slave_sql_drop are missing or not ENABLE ALWAYS; the file carries: %', first_line
                USING ERRCODE = 'DM009',
                      HINT = 'Run sql/slave_setup.sql (or dbmirror-apply init) as a superuser, which creates them; or set dbmirror.ddl to any (the applier''s ddl setting) to run the master''s DDL unchecked.';
        END IF;
        -- What the statement may drop, as it is before the statement: once dropped, an index or
        -- a sequence can no longer be traced to its table, nor a type to the columns using it.
        named := ARRAY(SELECT pg_catalog.to_regclass(t) FROM pg_catalog.unnest(tables) AS t
                        WHERE pg_catalog.to_regclass(t) IS NOT NULL);
        PERFORM pg_catalog.set_config('dbmirror.ddl_belongings', ARRAY(
            SELECT pg_catalog.format('%s/%s', o.classid::oid, o.objid)
              FROM (SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid
                      FROM pg_catalog.pg_index i WHERE i.indrelid = ANY (named)
                    UNION ALL
                    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, d.objid
                      FROM pg_catalog.pg_depend d
                     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                       AND d.refobjid = ANY (named) AND d.deptype IN ('a', 'i')
                    UNION ALL
                    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t
                      FROM dbmirror.ddl_used_types(named) AS t) AS o(classid, objid))::text, true);
        -- The event triggers act while this names the tables; an empty list is a list too.
        PERFORM pg_catalog.set_config('dbmirror.ddl_tables', tables::text, true);
        PERFORM pg_catalog.set_config('dbmirror.ddl_seen', '', true);
    END IF;
    PERFORM pg_catalog.set_config('search_path', ddl.search_path, true);
    EXECUTE statement;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF policy = 'mirrored' THEN
        PERFORM pg_catalog.set_config('dbmirror.ddl_tables', '', true);
        -- Statements that fire no event trigger (roles, databases, anything not DDL) cannot be
        -- checked, so a text without DDL is refused as a whole.
        IF pg_catalog.current_setting('dbmirror.ddl_seen') <> 'on' THEN
            RAISE EXCEPTION 'DDL refused: the statement is not DDL that this slave can hold to the tables it names (dbmirror.ddl = mirrored): %', first_line
                USING ERRCODE = 'DM009',
                      HINT = 'If this slave should run it, set dbmirror.ddl to any (the applier''s ddl setting, or PGOPTIONS=''-c dbmirror.ddl=any'' psql -f FILE).';
        END IF;
    END IF;
END
$fn$;

-- The types the columns of `tables` use (their own, an array's element, a domain's base type),
-- and the tables' row types: a statement on these tables may change them (ALTER TYPE ... ADD
-- VALUE of an enum the table uses, say).
CREATE OR REPLACE FUNCTION dbmirror.ddl_used_types(tables oid[])
RETURNS SETOF oid LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT u.t
      FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid,
           LATERAL (VALUES (ty.oid), (ty.typelem), (ty.typbasetype)) AS u(t)
     WHERE a.attrelid = ANY (tables) AND a.attnum > 0 AND NOT a.attisdropped AND u.t <> 0
    UNION
    SELECT c.reltype FROM pg_catalog.pg_class c WHERE c.oid = ANY (tables)
$fn$;

-- Whether the object `objid` of catalog `classid`, as it is now, is one of `tables` or belongs
-- to one of them (see dbmirror.ddl).
CREATE OR REPLACE FUNCTION dbmirror.ddl_belongs(classid oid, objid oid, tables oid[])
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce(CASE classid
        WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN (
            SELECT CASE
                       WHEN c.relkind IN ('r', 'p') THEN c.oid = ANY (tables)
                       WHEN c.relkind IN ('i', 'I') THEN EXISTS (
                           SELECT 1 FROM pg_catalog.pg_index i WHERE i.indexrelid = c.oid AND i.indrelid = ANY (tables))
                       -- Owned sequences: serial columns (auto) and identity columns (internal).
                       WHEN c.relkind = 'S' THEN EXISTS (
                           SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                              AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                              AND d.refobjid = ANY (tables) AND d.deptype IN ('a', 'i'))
                       WHEN c.relkind = 't' THEN EXISTS (
                           SELECT 1 FROM pg_catalog.pg_class t WHERE t.reltoastrelid = c.oid AND t.oid = ANY (tables))
                       WHEN c.relkind = 'c' THEN c.reltype IN (SELECT dbmirror.ddl_used_types(tables))
                       ELSE false
                   END
              FROM pg_catalog.pg_class c WHERE c.oid = objid)
        WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN
            objid IN (SELECT dbmirror.ddl_used_types(tables))
        WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN (
            SELECT c.conrelid = ANY (tables) OR c.contypid IN (SELECT dbmirror.ddl_used_types(tables))
              FROM pg_catalog.pg_constraint c WHERE c.oid = objid)
        WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN (
            SELECT d.adrelid = ANY (tables) FROM pg_catalog.pg_attrdef d WHERE d.oid = objid)
        ELSE false
    END, false)
$fn$;

-- Fails the statement of dbmirror.ddl() that touched `what` (see dbmirror.ddl, mirrored);
-- `untraced` when the object cannot be told (GRANT and REVOKE report none).
CREATE OR REPLACE FUNCTION dbmirror.ddl_refuse(what text, untraced boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    tables text[] := pg_catalog.current_setting('dbmirror.ddl_tables')::text[];
    named text := CASE WHEN tables = '{}' THEN 'none' ELSE pg_catalog.array_to_string(tables, ', ') END;
BEGIN
    RAISE EXCEPTION 'DDL refused: the statement %, %', what,
                    CASE WHEN untraced THEN pg_catalog.format('which cannot be traced to the tables the file names (%s)', named)
                         ELSE pg_catalog.format('which is none of the tables the file names (%s) and belongs to none of them', named) END
        USING ERRCODE = 'DM009',
              HINT = 'The master''s DDL reaches beyond the tables it names (dbmirror.ddl = mirrored). If this slave should run it, set dbmirror.ddl to any (the applier''s ddl setting, or PGOPTIONS=''-c dbmirror.ddl=any'' psql -f FILE).';
END
$fn$;

-- After each DDL command inside dbmirror.ddl() under mirrored: everything it created or changed
-- must be a named table or belong to one. Named tables are looked up now, so that a table the
-- statement creates or renames (under the name it has now) counts.
CREATE OR REPLACE FUNCTION dbmirror.ddl_command_end()
RETURNS event_trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    names text[] := nullif(pg_catalog.current_setting('dbmirror.ddl_tables', true), '')::text[];
    tables oid[];
    cmd record;
BEGIN
    IF names IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('dbmirror.ddl_seen', 'on', true);
    tables := ARRAY(SELECT pg_catalog.to_regclass(n) FROM pg_catalog.unnest(names) AS n
                     WHERE pg_catalog.to_regclass(n) IS NOT NULL);
    FOR cmd IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
        IF cmd.classid IS NULL THEN
            -- GRANT and REVOKE report no object, so which tables they touch is unknown.
            PERFORM dbmirror.ddl_refuse(pg_catalog.format('%s changes privileges on %s objects', cmd.command_tag,
                                                          pg_catalog.lower(cmd.object_type)), true);
        ELSIF NOT dbmirror.ddl_belongs(cmd.classid, cmd.objid, tables) THEN
            PERFORM dbmirror.ddl_refuse(pg_catalog.format('%s changes %s %s', cmd.command_tag, cmd.object_type,
                                                          cmd.object_identity));
        END IF;
    END LOOP;
END
$fn$;

-- After objects are dropped inside dbmirror.ddl() under mirrored: each one the statement named,
-- or reached through a normal dependency (CASCADE), must be a named table or belong to one.
-- What goes with a dropped object by an automatic or internal dependency (a table's indexes,
-- row type, toast table...) is judged with that object. The dropped objects are gone from the
-- catalogs: a table and its parts are known by their names, indexes, sequences and types by
-- what dbmirror.ddl() recorded before the statement.
CREATE OR REPLACE FUNCTION dbmirror.ddl_sql_drop()
RETURNS event_trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    names text[] := nullif(pg_catalog.current_setting('dbmirror.ddl_tables', true), '')::text[];
    belongings text[];
    named text[];
    obj record;
BEGIN
    IF names IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('dbmirror.ddl_seen', 'on', true);
    belongings := coalesce(nullif(pg_catalog.current_setting('dbmirror.ddl_belongings', true), ''), '{}')::text[];
    -- Each name as "schema"."name" made from its parts, as address_names gives them.
    named := ARRAY(SELECT pg_catalog.format('%I.%I', p[1], p[2])
                     FROM pg_catalog.unnest(names) AS n, pg_catalog.parse_ident(n) AS p);
    FOR obj IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE original OR normal LOOP
        CONTINUE WHEN CASE
            WHEN obj.object_type IN ('table', 'table column', 'table constraint', 'default value') THEN
                pg_catalog.format('%I.%I', obj.address_names[1], obj.address_names[2]) = ANY (named)
            WHEN obj.object_type IN ('index', 'sequence', 'type') THEN
                pg_catalog.format('%s/%s', obj.classid, obj.objid) = ANY (belongings)
            ELSE false
        END;
        PERFORM dbmirror.ddl_refuse(pg_catalog.format('%s drops %s %s', TG_TAG, obj.object_type,
                                                      obj.object_identity));
    END LOOP;
END
$fn$;

-- Event triggers fire for DDL in any session; these do nothing outside dbmirror.ddl(). Like
-- ordinary triggers, they would not fire in files (session_replication_role = replica) unless
-- ENABLE ALWAYS. Only a superuser may create event triggers: without them, mirrored refuses
-- all DDL (dbmirror.ddl says so), while the rest of the slave works.
DO $do$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER) THEN
        RAISE NOTICE 'event triggers dbmirror_slave_ddl_command_end and dbmirror_slave_sql_drop not created: % is not a superuser', CURRENT_USER
            USING HINT = 'Without them, the master''s DDL is refused under dbmirror.ddl = mirrored (the default); run this script as a superuser to create them.';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger e WHERE e.evtname = 'dbmirror_slave_ddl_command_end') THEN
        CREATE EVENT TRIGGER dbmirror_slave_ddl_command_end ON ddl_command_end EXECUTE FUNCTION dbmirror.ddl_command_end();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger e WHERE e.evtname = 'dbmirror_slave_sql_drop') THEN
        CREATE EVENT TRIGGER dbmirror_slave_sql_drop ON sql_drop EXECUTE FUNCTION dbmirror.ddl_sql_drop();
    END IF;
    ALTER EVENT TRIGGER dbmirror_slave_ddl_command_end ENABLE ALWAYS;
    ALTER EVENT TRIGGER dbmirror_slave_sql_drop ENABLE ALWAYS;
END
$do$;
