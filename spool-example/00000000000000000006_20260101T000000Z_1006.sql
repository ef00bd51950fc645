-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 6
-- xid: 1006
-- changes: 3
-- exported-at: 2026-01-01T00:00:00.000000Z
-- committed-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: ff1953d9e7d508e38d3db3c753b5cdf78c56667132b1898aa712f9abec329b0c
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 6, 1006, 'ff1953d9e7d508e38d3db3c753b5cdf78c56667132b1898aa712f9abec329b0c', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
SELECT dbmirror.check_table('"public"."item"', ARRAY['"id" integer', '"name" text', '"price" numeric(10,2)', '"tags" text[]', '"seen" timestamp with time zone'], ARRAY['"id"']);
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '7.00' WHERE "id" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
SELECT dbmirror.ddl('ALTER TABLE item ADD COLUMN note text DEFAULT ''none''', '"$user", public', ARRAY['"public"."item"']);
SELECT dbmirror.check_table('"public"."item"', ARRAY['"id" integer', '"name" text', '"price" numeric(10,2)', '"tags" text[]', '"seen" timestamp with time zone', '"note" text'], ARRAY['"id"']);
WITH m AS (UPDATE ONLY "public"."item" SET "note" = 'noted' WHERE "id" = '2' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
SELECT dbmirror.advance_sequence('public.item_id_seq', 51, true);
COMMIT;
