-- bench/realistic/tables.sql: the tables of realistic.conf, created by hand for both daemons
-- (2.05's Accounting has no PostgreSQL definition). relay_policies/relay_hosts are the seed
-- how-to's (acct_rig.h has the same PostgreSQL form); the acct_ tables are what ringpolicyd
-- creates on PostgreSQL (policy/plugins/acct_sql.c), with the unique (key, time) index its
-- upsert needs. Run as role policyd on database policyd.
CREATE TABLE relay_policies (
  id SERIAL PRIMARY KEY,
  "desc" VARCHAR(64) NOT NULL,
  config TEXT NOT NULL
);
CREATE TABLE relay_hosts (
  id SERIAL PRIMARY KEY,
  client_address VARCHAR(64) NOT NULL,
  relay_policy INTEGER NOT NULL REFERENCES relay_policies (id)
);
CREATE INDEX relay_hosts_client_address ON relay_hosts (client_address);
INSERT INTO relay_policies (id, "desc", config) VALUES
  (1, 'standard relay host', '{"quota_count":"10000000"}'),
  (2, 'premium relay host', '{"quota_count":"100000000"}');
CREATE TABLE acct_client_address (
    "id" BIGSERIAL PRIMARY KEY,
    "key" VARCHAR(255) NOT NULL,
    "time" VARCHAR(255) NOT NULL,
    "count" BIGINT NOT NULL,
    "count_rcpt" BIGINT NOT NULL,
    "size" BIGINT NOT NULL,
    "size_rcpt" BIGINT NOT NULL
);
CREATE UNIQUE INDEX "acct_client_address_time_key" ON acct_client_address ("key", "time");
CREATE TABLE acct_sender (
    "id" BIGSERIAL PRIMARY KEY,
    "key" VARCHAR(255) NOT NULL,
    "time" VARCHAR(255) NOT NULL,
    "count" BIGINT NOT NULL,
    "count_rcpt" BIGINT NOT NULL,
    "size" BIGINT NOT NULL,
    "size_rcpt" BIGINT NOT NULL
);
CREATE UNIQUE INDEX "acct_sender_time_key" ON acct_sender ("key", "time");
