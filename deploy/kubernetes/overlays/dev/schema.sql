-- Tables of mtpolicyd's accounting how-to (per-client quota settings), for PostgreSQL. The
-- Accounting plugin creates its own acct_* tables. Runs once, when the volume is empty.
CREATE TABLE relay_policies (
    id serial PRIMARY KEY,
    "desc" varchar(64) NOT NULL,
    config text NOT NULL
);
CREATE TABLE relay_hosts (
    id serial PRIMARY KEY,
    client_address varchar(64) NOT NULL,
    relay_policy integer NOT NULL REFERENCES relay_policies (id)
);
CREATE INDEX relay_hosts_client_address ON relay_hosts (client_address);
INSERT INTO relay_policies ("desc", config) VALUES
    ('standard relay host', '{"quota_count":"10000"}'),
    ('premium relay host', '{"quota_count":"100000"}');
