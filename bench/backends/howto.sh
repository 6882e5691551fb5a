#!/usr/bin/env bash
# howto.sh: the seed's accounting/quota how-to (SqlUserConfig + Quota + Accounting, Memory
# sessions) on MariaDB, PostgreSQL and SQLite, driven by ringpolicyd-load at 16 and 64
# connections, one run each; prints ringpolicyd-load's line per backend and connection count,
# and the daemon's per-shard SQL counters at exit. The numbers in BENCHMARKS.md section 6.
#
# Usage (as root: it starts a private PostgreSQL 15 and MariaDB on loopback in a temp dir):
#   bench/backends/howto.sh [BUILD_DIR]          # default build
#   BES="maria" EXTRA="  connections = 4" bench/backends/howto.sh build
# Knobs: BES (backends, default "maria pg sqlite"), DUR (seconds, 8), WARM (2), EXTRA (lines
# added to the <Connection db> block), CONNS (default "16 64").
set -u
cd "$(dirname "$0")/../.."
B=${1:-build}
R=$(mktemp -d /tmp/rpd-howto-bench.XXXXXX)
chmod 755 "$R"
PG=/usr/lib/postgresql/15/bin
DUR=${DUR:-8}
WARM=${WARM:-2}
CONNS=${CONNS:-16 64}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
MYPORT=$(free_port)

cleanup() {
    [ -n "${MYPID:-}" ] && kill "$MYPID" 2>/dev/null && wait "$MYPID" 2>/dev/null
    runuser -u postgres -- $PG/pg_ctl -D "$R/pg/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$R"
}
trap cleanup EXIT

# PostgreSQL: fsync off, as a benchmark of the client, not of the disk.
install -d -o postgres -g postgres -m 700 "$R/pg"
runuser -u postgres -- $PG/initdb -D "$R/pg/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
    --no-sync >/dev/null
runuser -u postgres -- $PG/pg_ctl -D "$R/pg/data" -l "$R/pg/log" -w -o "-p $PGPORT -k $R/pg \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off" start >/dev/null
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE policyd" >/dev/null

# MariaDB: a private server, no binary log, a small buffer pool.
if [[ " ${BES:-maria pg sqlite} " == *" maria "* ]]; then
    install -d -o mysql -g mysql "$R/m"
    mariadb-install-db --user=mysql --datadir="$R/m/data" --auth-root-authentication-method=normal \
        --skip-test-db >/dev/null
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$R/m/data" \
        --socket="$R/m/sock" --port="$MYPORT" --bind-address=127.0.0.1 --pid-file="$R/m/pid" \
        --skip-log-bin --innodb-buffer-pool-size=32M >"$R/m/log" 2>&1 </dev/null &
    MYPID=$!
    for _ in $(seq 100); do
        mariadb -h127.0.0.1 -P"$MYPORT" -uroot -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.2
    done
    # The seed how-to's MySQL statements, verbatim.
    mariadb -h127.0.0.1 -P"$MYPORT" -uroot -e "CREATE DATABASE policyd"
    mariadb -h127.0.0.1 -P"$MYPORT" -uroot policyd <<'SQL'
  CREATE TABLE `relay_policies` (
    `id` int(11) NOT NULL auto_increment,
    `desc` VARCHAR(64) NOT NULL,
    `config` TEXT NOT NULL,
    PRIMARY KEY  (`id`)
  ) ENGINE=InnoDB;

  INSERT INTO relay_policies VALUES(1, 'standard relay host', '{"quota_count":"10000"}');
  INSERT INTO relay_policies VALUES(2, 'premium relay host', '{"quota_count":"100000"}');

  CREATE TABLE `relay_hosts` (
    `id` int(11) NOT NULL auto_increment,
    `client_address` VARCHAR(64) NOT NULL,
    `relay_policy` int(11) NOT NULL,
    PRIMARY KEY  (`id`),
    KEY `relay_policy` (`relay_policy`),
    CONSTRAINT `relay_hosts_ibfk_1` FOREIGN KEY (`relay_policy`) REFERENCES `relay_policies` (`id`)
  ) ENGINE=InnoDB;

  INSERT INTO relay_hosts VALUES(NULL, '2604:8d00:0:1::3', 1);
  INSERT INTO relay_hosts VALUES(NULL, '2604:8d00:0:1::4', 2);
SQL
fi

# The same tables in PostgreSQL's and SQLite's dialects.
REL_PG="CREATE TABLE relay_policies (id SERIAL PRIMARY KEY, \"desc\" VARCHAR(64) NOT NULL, config TEXT NOT NULL);
CREATE TABLE relay_hosts (id SERIAL PRIMARY KEY, client_address VARCHAR(64) NOT NULL, relay_policy INTEGER NOT NULL REFERENCES relay_policies (id));
CREATE INDEX relay_hosts_relay_policy ON relay_hosts (relay_policy);
INSERT INTO relay_policies VALUES (1, 'standard relay host', '{\"quota_count\":\"10000\"}'), (2, 'premium relay host', '{\"quota_count\":\"100000\"}');
INSERT INTO relay_hosts (client_address, relay_policy) VALUES ('2604:8d00:0:1::3', 1), ('2604:8d00:0:1::4', 2);"
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d policyd -c "$REL_PG" >/dev/null
sqlite3 "$R/policyd.sqlite" "$(echo "$REL_PG" | sed 's/SERIAL PRIMARY KEY/INTEGER PRIMARY KEY AUTOINCREMENT/g')"

conn() {
    case $1 in
    maria) printf '  dsn = "dbi:mysql:database=policyd;host=127.0.0.1;port=%s"\n  user = "root"\n  password = ""\n' "$MYPORT" ;;
    pg) printf '  dsn = "dbi:Pg:dbname=policyd;host=127.0.0.1;port=%s"\n  user = "postgres"\n  password = ""\n' "$PGPORT" ;;
    sqlite) printf '  dsn = "dbi:SQLite:dbname=%s/policyd.sqlite"\n' "$R" ;;
    esac
}

echo "howto.sh: $(date -u '+%F %T UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), git $(git rev-parse --short HEAD)"
for be in ${BES:-maria pg sqlite}; do
    port=$(free_port)
    cat >"$R/$be.conf" <<CONF
port = "127.0.0.1:$port"
<Connection db>
  module = "Sql"
$(conn "$be")
${EXTRA:-}
</Connection>
<SessionCache>
  module = "Memory"
</SessionCache>
<VirtualHost $port>
  name = "accounting"
  <Plugin QuotaPolicyConfig>
    module = "SqlUserConfig"
    sql_query = "SELECT p.config FROM relay_policies p JOIN relay_hosts h ON (h.relay_policy = p.id) WHERE h.client_address=?"
    field = "client_address"
  </Plugin>
  <Plugin QuotaIP>
    module = "Quota"
    field = "client_address"
    metric = "count"
    threshold = 100000000
    uc_threshold = "quota_count"
    action = "defer you exceeded your monthly limit, please insert coin"
  </Plugin>
  <Plugin AcctIP>
    module = "Accounting"
    fields = "client_address"
  </Plugin>
</VirtualHost>
CONF
    "$B/policy/ringpolicyd" -f -c "$R/$be.conf" >"$R/$be.log" 2>&1 &
    dpid=$!
    sleep 1.5
    for c in $CONNS; do
        echo "== $be $c: $("$B/bench/load/ringpolicyd-load" --server "127.0.0.1:$port" \
            --connections "$c" --duration "$DUR" --warmup "$WARM" --with-data --label "$be-$c" \
            2>&1 | tr '\n' ' ')"
    done
    kill "$dpid"
    wait "$dpid"
    grep -E "^sql db shard|^accounting db shard" "$R/$be.log" | head -4
done
