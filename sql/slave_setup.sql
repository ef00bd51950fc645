-- dbmirror slave setup: what transaction files need on a slave.
--
--     psql -v ON_ERROR_STOP=1 -d SLAVEDB -f sql/slave_setup.sql
--
-- `dbmirror-apply init` runs the same SQL. Running it again is harmless: it only creates what
-- is missing and replaces the functions with the current version.
--
-- Every transaction file runs, in its own transaction, first
--     SELECT dbmirror.guard(slave, master, number, xid, previous_sha256);
-- which aborts the file unless it is the next one for that slave and records it, so a file
-- is applied exactly once and in order, by the applier or by hand with psql.

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

-- Aborts the current transaction unless file `number` from master `master` is the next one for
-- `slave`; otherwise records it as applied. Errors carry their own SQLSTATE so the applier can
-- tell them apart:
--   DM001  already applied       DM002  out of order (an earlier file is missing)
--   DM003  another master        DM004  does not follow the file applied before it
CREATE OR REPLACE FUNCTION dbmirror.guard(slave text, master text, number bigint, xid bigint, previous_sha256 text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    state dbmirror.slave_state%ROWTYPE;
BEGIN
    SELECT * INTO state FROM dbmirror.slave_state s WHERE s.slave_name = slave FOR UPDATE;
    IF NOT FOUND THEN
        IF number <> 1 THEN
            RAISE EXCEPTION 'file % for slave "%" is out of order: no file has been applied yet, the next is 1', number, slave
                USING ERRCODE = 'DM002',
                      HINT = 'Apply the files in order, starting with file 1.';
        END IF;
        INSERT INTO dbmirror.slave_state (slave_name, master, last_number, last_xid, applied_at, last_sha256)
        VALUES (slave, master, number, xid, pg_catalog.clock_timestamp(), NULL);
        RETURN;
    END IF;
    IF state.master <> master THEN
        RAISE EXCEPTION 'file % for slave "%" comes from master %, but this slave follows master %', number, slave, master, state.master
            USING ERRCODE = 'DM003',
                  HINT = 'The file belongs to another master''s spool; check where it was copied from.';
    END IF;
    IF number <= state.last_number THEN
        RAISE EXCEPTION 'file % for slave "%" was already applied (last applied: %)', number, slave, state.last_number
            USING ERRCODE = 'DM001';
    END IF;
    IF number > state.last_number + 1 THEN
        RAISE EXCEPTION 'file % for slave "%" is out of order: the next file is %', number, slave, state.last_number + 1
            USING ERRCODE = 'DM002',
                  HINT = 'Apply the missing files first.';
    END IF;
    IF state.last_sha256 IS NOT NULL AND previous_sha256 IS DISTINCT FROM state.last_sha256 THEN
        RAISE EXCEPTION 'file % for slave "%" does not follow the file applied as %', number, slave, state.last_number
            USING ERRCODE = 'DM004',
                  DETAIL = pg_catalog.format('The file names previous sha256 %s, the applied file had %s.', previous_sha256, state.last_sha256),
                  HINT = 'A file was replaced or the spool was mixed up; compare both files with their manifests.';
    END IF;
    UPDATE dbmirror.slave_state s
       SET last_number = number, last_xid = xid, applied_at = pg_catalog.clock_timestamp(), last_sha256 = NULL
     WHERE s.slave_name = slave;
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
