-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 5
-- xid: 1005
-- changes: 2
-- exported-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: f1ea6736ca4fd456a8faacb2a2b6ecddeba0ef87daee035b69d5c507a0001abc
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 5, 1005, 'f1ea6736ca4fd456a8faacb2a2b6ecddeba0ef87daee035b69d5c507a0001abc');
TRUNCATE ONLY "public"."Order Line";
INSERT INTO "public"."Order Line" ("Order", "Line", "item", "qty") OVERRIDING SYSTEM VALUE VALUES ('2', '1', '3', '9');
COMMIT;
