-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 5
-- xid: 1005
-- changes: 2
-- exported-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: 08d594de609db8ca2746e5e7c839e94a9c5fc9d9ddddd4f6be44aaae4d65fb7c
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 5, 1005, '08d594de609db8ca2746e5e7c839e94a9c5fc9d9ddddd4f6be44aaae4d65fb7c', '2026-01-01T00:00:00.000000Z');
TRUNCATE ONLY "public"."Order Line";
INSERT INTO "public"."Order Line" ("Order", "Line", "item", "qty") OVERRIDING SYSTEM VALUE VALUES ('2', '1', '3', '9');
COMMIT;
