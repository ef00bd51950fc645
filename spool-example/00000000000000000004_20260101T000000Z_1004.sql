-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 4
-- xid: 1004
-- changes: 1
-- exported-at: 2026-01-01T00:00:00.000000Z
-- committed-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: 904513932ed9dd7f1a1cbf9d0662cf65abcf9a8d056ffa9fe94db03d31c2782f
\set ON_ERROR_STOP on
SET client_encoding = 'UTF8';
SET standard_conforming_strings = 'on';
BEGIN;
SET LOCAL DateStyle = 'ISO, YMD';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL TimeZone = 'UTC';
SET LOCAL extra_float_digits = '3';
SET LOCAL bytea_output = 'hex';
SET LOCAL lc_monetary = 'C';
SET LOCAL xmloption = 'content';
SET LOCAL session_replication_role = 'replica';
SELECT dbmirror.guard('slave1', '7000000000000000001', 4, 1004, '904513932ed9dd7f1a1cbf9d0662cf65abcf9a8d056ffa9fe94db03d31c2782f', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
SELECT dbmirror.check_table('"public"."item"', ARRAY['"id" integer', '"name" text', '"price" numeric(10,2)', '"tags" text[]', '"seen" timestamp with time zone'], ARRAY['"id"']);
WITH m AS (UPDATE ONLY "public"."item" SET "name" = 'tab	here, quote '' and \ backslash
newline' WHERE "id" = '3' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
SELECT dbmirror.advance_sequence('public.item_id_seq', 51, true);
COMMIT;
