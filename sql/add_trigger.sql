-- dbmirror's AddTrigger.sql: start mirroring one table of the master.
--
--     psql -v ON_ERROR_STOP=1 -v table='public."My Table"' -d MASTERDB -f sql/add_trigger.sql
--
-- dbmirror_mirror_table() refuses a table without a primary key, and installs the row trigger
-- and the TRUNCATE trigger. The seed's own form also works for the row trigger:
--     CREATE TRIGGER "T_Trig" AFTER INSERT OR DELETE OR UPDATE ON "T"
--         FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();
SELECT dbmirror_mirror_table(:'table');
