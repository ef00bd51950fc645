-- dbmirror transaction file
-- format: 1
-- master: 7000000000000000001
-- database: "postgres"
-- slave: "slave1"
-- number: 2
-- xid: 1002
-- changes: 52
-- exported-at: 2026-01-01T00:00:00.000000Z
-- committed-at: 2026-01-01T00:00:00.000000Z
-- previous-sha256: 58de0232eec4e02ee596dd888e8b25c518738a12ffb8be8336143e3d67408e31
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
SELECT dbmirror.guard('slave1', '7000000000000000001', 2, 1002, '58de0232eec4e02ee596dd888e8b25c518738a12ffb8be8336143e3d67408e31', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
SELECT dbmirror.check_table('"public"."item"', ARRAY['"id" integer', '"name" text', '"price" numeric(10,2)', '"tags" text[]', '"seen" timestamp with time zone'], ARRAY['"id"']);
COPY "public"."item" ("id", "name", "price", "tags", "seen") FROM STDIN;
2	bulk 1	1.00	\N	\N
3	bulk 2	2.00	\N	\N
4	bulk 3	3.00	\N	\N
5	bulk 4	4.00	\N	\N
6	bulk 5	5.00	\N	\N
7	bulk 6	6.00	\N	\N
8	bulk 7	7.00	\N	\N
9	bulk 8	8.00	\N	\N
10	bulk 9	9.00	\N	\N
11	bulk 10	10.00	\N	\N
12	bulk 11	11.00	\N	\N
13	bulk 12	12.00	\N	\N
14	bulk 13	13.00	\N	\N
15	bulk 14	14.00	\N	\N
16	bulk 15	15.00	\N	\N
17	bulk 16	16.00	\N	\N
18	bulk 17	17.00	\N	\N
19	bulk 18	18.00	\N	\N
20	bulk 19	19.00	\N	\N
21	bulk 20	20.00	\N	\N
22	bulk 21	21.00	\N	\N
23	bulk 22	22.00	\N	\N
24	bulk 23	23.00	\N	\N
25	bulk 24	24.00	\N	\N
26	bulk 25	25.00	\N	\N
27	bulk 26	26.00	\N	\N
28	bulk 27	27.00	\N	\N
29	bulk 28	28.00	\N	\N
30	bulk 29	29.00	\N	\N
31	bulk 30	30.00	\N	\N
32	bulk 31	31.00	\N	\N
33	bulk 32	32.00	\N	\N
34	bulk 33	33.00	\N	\N
35	bulk 34	34.00	\N	\N
36	bulk 35	35.00	\N	\N
37	bulk 36	36.00	\N	\N
38	bulk 37	37.00	\N	\N
39	bulk 38	38.00	\N	\N
40	bulk 39	39.00	\N	\N
41	bulk 40	40.00	\N	\N
42	bulk 41	41.00	\N	\N
43	bulk 42	42.00	\N	\N
44	bulk 43	43.00	\N	\N
45	bulk 44	44.00	\N	\N
46	bulk 45	45.00	\N	\N
47	bulk 46	46.00	\N	\N
48	bulk 47	47.00	\N	\N
49	bulk 48	48.00	\N	\N
50	bulk 49	49.00	\N	\N
51	bulk 50	50.00	\N	\N
\.
SELECT dbmirror.check_table('"public"."Order Line"', ARRAY['"Order" integer', '"Line" integer', '"item" integer', '"qty" integer'], ARRAY['"Order"', '"Line"']);
INSERT INTO "public"."Order Line" ("Order", "Line", "item", "qty") OVERRIDING SYSTEM VALUE VALUES ('1', '1', '1', '3');
INSERT INTO "public"."Order Line" ("Order", "Line", "item", "qty") OVERRIDING SYSTEM VALUE VALUES ('1', '2', '2', '1');
SELECT dbmirror.advance_sequence('public.item_id_seq', 51, true);
COMMIT;
