-- One pgbench transaction of the demo workload: open an account, move money between two
-- accounts, log it, now and then close an account. Runs with several clients at once, so
-- transactions conflict on the same rows.
\set a random(1, 200)
\set b random(1, 200)
\set amount random(1, 500)
BEGIN;
INSERT INTO account (owner, tags) VALUES ('client ' || :client_id || E'\t"quoted"', ARRAY['new', 'ü']);
UPDATE account SET balance = balance - :amount WHERE id = :a;
UPDATE account SET balance = balance + :amount WHERE id = :b;
INSERT INTO transfer (source, target, amount, memo)
    SELECT :a, :b, :amount, jsonb_build_object('note', 'pgbench', 'client', :client_id)
    WHERE EXISTS (SELECT 1 FROM account WHERE id = :a) AND EXISTS (SELECT 1 FROM account WHERE id = :b);
INSERT INTO "Audit Log" VALUES (gen_random_uuid(), 'moved ' || :amount || E' \\ back\nslash', decode(md5(random()::text), 'hex'));
DELETE FROM "Audit Log" WHERE "Key" IN (SELECT "Key" FROM "Audit Log" ORDER BY "Key" LIMIT 1) AND random() < 0.2;
END;
