/*
 * sql_conn.h: the Sql connection module inside policy/ (pol/sql.h is what plugins see): its
 * pol_conn_ops for the core's connection registry, its options and its counters.
 *
 * <Connection NAME> module = "Sql" options (spec 9.1 plus ringpolicyd's own, all optional
 * but dsn):
 *   dsn, user, password   as 2.05 (sql_dsn.h)
 *   connections           PostgreSQL connections per shard (default 1, at most 16)
 *   workers               SQLite worker threads (default 2; 1 for an in-memory database)
 *   query_timeout_ms      a query's deadline when the plugin gives none (default: 3/4 of
 *                         request_timeout, at most 10000; 10000 when request_timeout is 0)
 *   queue_max             queries queued or in flight per shard (default 1024)
 *   statement_cache       prepared statements per PostgreSQL connection (default 256, 0 none)
 */
#ifndef POL_SQL_CONN_H
#define POL_SQL_CONN_H

#include <stdint.h>

#include "pol/sql.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const struct pol_conn_ops pol_sql_conn_ops;

struct pol_sql_stats {
    uint64_t queries;     /* accepted by pol_sql_query */
    uint64_t ok;          /* done with status 0 */
    uint64_t failed;      /* done with status < 0 (any reason) */
    uint64_t timeouts;    /* ... of which the deadline passed */
    uint64_t cancelled;   /* ... of which the shard stopped first (-ESHUTDOWN) */
    uint64_t queue_full;  /* pol_sql_query refused with -ENOBUFS */
    uint64_t round_trips; /* PostgreSQL: pipeline round trips; SQLite: jobs run */
    uint64_t reconnects;  /* PostgreSQL: connections established after the first */
    uint64_t queue_depth; /* queries queued or in flight now */
    uint64_t queue_depth_max;
};

/* Sums every shard's counters of db (relaxed reads; any thread). */
void pol_sql_stats_get(const struct pol_sql *db, struct pol_sql_stats *out);
/* The connection's name, as in <Connection NAME>. */
const char *pol_sql_name(const struct pol_sql *db);

#ifdef __cplusplus
}
#endif

#endif
