-- Schema of the demo workload, created on both master and slave (dbmirror does not mirror DDL).
CREATE TABLE account (
    id          bigserial PRIMARY KEY,
    owner       text NOT NULL,
    balance     numeric(12, 2) NOT NULL DEFAULT 0,
    opened      timestamptz NOT NULL DEFAULT now(),
    tags        text[]
);
CREATE TABLE transfer (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      bigint NOT NULL REFERENCES account,
    target      bigint NOT NULL REFERENCES account,
    amount      numeric(12, 2) NOT NULL,
    memo        jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE "Audit Log" (
    "Key"       uuid PRIMARY KEY,
    "Détail"    text,
    "raw"       bytea
);
