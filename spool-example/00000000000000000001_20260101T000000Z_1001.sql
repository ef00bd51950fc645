-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 1
-- xid: 1001
-- changes: 1
-- exported-at: 2026-01-01T00:00:00.000000Z
-- committed-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: none
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 1, 1001, NULL, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
SELECT dbmirror.check_table('"public"."item"', ARRAY['"id" integer', '"name" text', '"price" numeric(10,2)', '"tags" text[]', '"seen" timestamp with time zone'], ARRAY['"id"']);
INSERT INTO "public"."item" ("id", "name", "price", "tags", "seen") OVERRIDING SYSTEM VALUE VALUES ('1', 'first', '1.50', '{a,b}', '2026-01-01 00:00:00+00');
SELECT dbmirror.advance_sequence('public.item_id_seq', 51, true);
COMMIT;
