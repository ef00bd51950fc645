-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 3
-- xid: 1003
-- changes: 17
-- exported-at: 2026-01-01T00:00:00.000000Z
-- committed-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: 99460b70b1b930f04a3f4ef7ac7bf8816ab0ea955ba4c762f0851c6314e40660
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 3, 1003, '99460b70b1b930f04a3f4ef7ac7bf8816ab0ea955ba4c762f0851c6314e40660', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
SELECT dbmirror.check_table('"public"."item"', ARRAY['"id" integer', '"name" text', '"price" numeric(10,2)', '"tags" text[]', '"seen" timestamp with time zone'], ARRAY['"id"']);
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '3.00', "tags" = NULL WHERE "id" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '2.00' WHERE "id" = '2' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '4.00' WHERE "id" = '3' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '6.00' WHERE "id" = '4' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '8.00' WHERE "id" = '5' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '10.00' WHERE "id" = '6' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '12.00' WHERE "id" = '7' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '14.00' WHERE "id" = '8' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '16.00' WHERE "id" = '9' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
WITH m AS (UPDATE ONLY "public"."item" SET "price" = '18.00' WHERE "id" = '10' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."item"') FROM m;
SELECT dbmirror.check_table('"public"."Order Line"', ARRAY['"Order" integer', '"Line" integer', '"item" integer', '"qty" integer'], ARRAY['"Order"', '"Line"']);
WITH m AS (UPDATE ONLY "public"."Order Line" SET "Line" = '3' WHERE "Order" = '1' AND "Line" = '2' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of "public"."Order Line"') FROM m;
WITH m AS (DELETE FROM ONLY "public"."item" WHERE "id" = '40' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from "public"."item"') FROM m;
WITH m AS (DELETE FROM ONLY "public"."item" WHERE "id" = '41' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from "public"."item"') FROM m;
WITH m AS (DELETE FROM ONLY "public"."item" WHERE "id" = '42' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from "public"."item"') FROM m;
WITH m AS (DELETE FROM ONLY "public"."item" WHERE "id" = '43' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from "public"."item"') FROM m;
WITH m AS (DELETE FROM ONLY "public"."item" WHERE "id" = '44' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from "public"."item"') FROM m;
WITH m AS (DELETE FROM ONLY "public"."item" WHERE "id" = '45' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from "public"."item"') FROM m;
SELECT dbmirror.advance_sequence('public.item_id_seq', 51, true);
COMMIT;
