-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 5
-- xid: 1005
-- changes: 2
-- exported-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: 9dd1b2afdc5a5d6bc13f5181af7750ac17fc16dd2c041f478a424e6141dcae11
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 5, 1005, '9dd1b2afdc5a5d6bc13f5181af7750ac17fc16dd2c041f478a424e6141dcae11', '2026-01-01T00:00:00.000000Z');
TRUNCATE ONLY "public"."Order Line";
INSERT INTO "public"."Order Line" ("Order", "Line", "item", "qty") OVERRIDING SYSTEM VALUE VALUES ('2', '1', '3', '9');
COMMIT;
