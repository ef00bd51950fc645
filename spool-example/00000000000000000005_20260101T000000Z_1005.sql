-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 5
-- xid: 1005
-- changes: 2
-- exported-at: 2026-01-01T00:00:00.000000Z
-- committed-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: 0d9d9a9a1d2afcc57ac6dfffb7b665ccaac4bcc4f87e100c1cdca89dcf67a75c
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 5, 1005, '0d9d9a9a1d2afcc57ac6dfffb7b665ccaac4bcc4f87e100c1cdca89dcf67a75c', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
SELECT dbmirror.check_table('"public"."Order Line"', ARRAY['"Order" integer', '"Line" integer', '"item" integer', '"qty" integer'], ARRAY['"Order"', '"Line"']);
TRUNCATE ONLY "public"."Order Line";
INSERT INTO "public"."Order Line" ("Order", "Line", "item", "qty") OVERRIDING SYSTEM VALUE VALUES ('2', '1', '3', '9');
COMMIT;
