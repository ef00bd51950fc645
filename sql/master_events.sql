-- dbmirror master setup, last part: what keeps capture complete after DDL.
--
-- Part of the `dbmirror` extension script, after every function of the extension exists. See
-- docs/capture.md, "What cannot be captured".

-- Every problem that keeps a mirrored table from being captured completely, and whether
-- dbmirror's event triggers (which refuse such DDL where it happens) are in place. The
-- exporter's status and verify report these rows.
CREATE FUNCTION dbmirror_capture_problems() RETURNS TABLE (tbl regclass, problem text, hint text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT m.tbl, p.problem, p.hint
      FROM @extschema@.dbmirror_mirrored_tables() AS m(tbl),
           LATERAL @extschema@.dbmirror_table_problems(m.tbl) AS p
    UNION ALL
    SELECT NULL, pg_catalog.format('dbmirror''s event trigger %s is missing or not ENABLE ALWAYS', v.name),
           'Without it, DDL that disables capture (ALTER TABLE ... DISABLE TRIGGER, SET UNLOGGED) is not refused, or DDL on mirrored tables is neither captured nor warned about. Recreate the extension, or ALTER EVENT TRIGGER ... ENABLE ALWAYS.'
      FROM (VALUES ('dbmirror_ddl_command_end'), ('dbmirror_sql_drop'), ('dbmirror_ddl_start'), ('dbmirror_ddl_drop'),
                   ('dbmirror_ddl_end')) AS v(name)
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger e
                        WHERE e.evtname = v.name AND e.evtenabled = 'A')
$fn$;

-- After each DDL command: a new trigger calling recordchange() (the seed's form, a restore, or
-- dbmirror_mirror_table()) gets dbmirror's companion triggers, ENABLE ALWAYS; any other DDL on
-- a mirrored table that would leave its capture incomplete (DISABLE TRIGGER, SET UNLOGGED, a
-- BEFORE trigger that would fire after dbmirror's ordering trigger...) is refused.
CREATE FUNCTION dbmirror_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    cmd record;
    tbl oid;
    capture oid := '@extschema@.recordchange()'::pg_catalog.regprocedure;
BEGIN
    FOR cmd IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
        tbl := NULL;
        IF cmd.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
            SELECT t.tgrelid INTO tbl FROM pg_catalog.pg_trigger t WHERE t.oid = cmd.objid;
            IF cmd.command_tag = 'CREATE TRIGGER' AND EXISTS (
                   SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.oid = cmd.objid AND t.tgfoid = capture) THEN
                PERFORM @extschema@.dbmirror_check_table(tbl, 'new_capture_trigger');
                CONTINUE;
            END IF;
        ELSIF cmd.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND cmd.objsubid = 0 THEN
            tbl := cmd.objid;
        END IF;
        IF tbl IS NOT NULL AND EXISTS (
               SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = tbl AND t.tgfoid = capture) THEN
            PERFORM @extschema@.dbmirror_check_table(tbl, 'ddl');
        END IF;
    END LOOP;
END
$fn$;

-- After objects are dropped: dropping one of dbmirror's own triggers of a mirrored table is
-- refused; once a table's last capture trigger is gone, dbmirror's own triggers go too.
CREATE FUNCTION dbmirror_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    obj record;
    trg record;
    tbl regclass;
    capture oid := '@extschema@.recordchange()'::pg_catalog.regprocedure;
    own oid := '@extschema@.dbmirror_before()'::pg_catalog.regprocedure;
BEGIN
    FOR obj IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE object_type = 'trigger' LOOP
        tbl := pg_catalog.to_regclass(pg_catalog.format('%I.%I', obj.address_names[1], obj.address_names[2]));
        CONTINUE WHEN tbl IS NULL;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = tbl AND t.tgfoid = capture) THEN
            PERFORM @extschema@.dbmirror_check_table(tbl, 'ddl');
        ELSIF obj.address_names[3] NOT LIKE '~dbmirror\_%' THEN
            FOR trg IN SELECT t.tgname FROM pg_catalog.pg_trigger t WHERE t.tgrelid = tbl AND t.tgfoid = own LOOP
                EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS %I ON %s', trg.tgname, tbl);
            END LOOP;
        END IF;
    END LOOP;
END
$fn$;

CREATE EVENT TRIGGER dbmirror_ddl_command_end ON ddl_command_end
    EXECUTE FUNCTION dbmirror_ddl_command_end();
CREATE EVENT TRIGGER dbmirror_sql_drop ON sql_drop
    EXECUTE FUNCTION dbmirror_sql_drop();
-- Event triggers, like ordinary ones, do not fire in sessions with session_replication_role =
-- replica unless they are ENABLE ALWAYS.
ALTER EVENT TRIGGER dbmirror_ddl_command_end ENABLE ALWAYS;
ALTER EVENT TRIGGER dbmirror_sql_drop ENABLE ALWAYS;

-- DDL in the stream (trigger/src/ddl.rs): dbmirror_ddl_event() records DDL on mirrored tables
-- when dbmirror.capture_ddl is on, and warns about it when it is off. The start finds the
-- tables a DROP drops from while they exist; sql_drop, the tables that lost a column,
-- constraint or default; the end decides.
CREATE EVENT TRIGGER dbmirror_ddl_start ON ddl_command_start EXECUTE FUNCTION dbmirror_ddl_event();
CREATE EVENT TRIGGER dbmirror_ddl_drop ON sql_drop EXECUTE FUNCTION dbmirror_ddl_event();
CREATE EVENT TRIGGER dbmirror_ddl_end ON ddl_command_end EXECUTE FUNCTION dbmirror_ddl_event();
ALTER EVENT TRIGGER dbmirror_ddl_start ENABLE ALWAYS;
ALTER EVENT TRIGGER dbmirror_ddl_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER dbmirror_ddl_end ENABLE ALWAYS;
