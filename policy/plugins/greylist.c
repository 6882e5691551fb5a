/*
 * greylist.c: the Greylist plugin (spec 13.12, section 16 #1-#4): greylisting with tickets in
 * memcached and an auto-whitelist (autowl) in SQL, with the intended semantics.
 *
 * Per request (triplet = sender, client_address, recipient; the sender domain is the text after
 * the last '@', or the whole sender):
 *   1. enabled (uc) off: nothing.
 *   2. use_autowl and query_autowl: the autowl count for (sender domain, client) (SQL, cached
 *      per mail in `greylist-autowl-count`, "" for none; an entry unused for
 *      autowl_expire_days counts as none). At least autowl_threshold: refresh it (count + 1,
 *      last_seen now; once per mail, flag `greylist-is_autowl`) and pass. 16 #1: the count
 *      really is the count (2.05 compared 0/1).
 *   3. The ticket (memcached key `SENDER,CLIENT,RECIPIENT`, cached per mail in
 *      `greylist-ticket`, "" for none): valid (now > its value): with use_autowl, once per mail
 *      (flag `greylist-autowl-add`) increment the autowl entry or create it with count 1 (SQL:
 *      an expired row still there is restarted at count 1 rather than inserted again); delete
 *      the ticket; pass. Too early: `defer_message` + " (Ns left)" when append_waittime.
 *   4. No ticket and create_ticket: store now + min_retry_wait with lifetime max_retry_wait and
 *      defer with defer_message. Otherwise nothing.
 *   5. Pass: score once per mail (flag `greylist-score`); mode `dunno` or `accept` answers
 *      `dunno` (16 #4: 2.05 sent `accept`, which Postfix does not know); else nothing.
 * The session keys carry no plugin name, so Greylist plugins of one mail share them (spec: the
 * shipped configuration relies on it).
 *
 * Options besides 2.05's: min_retry_wait, max_retry_wait, autowl_expire_days and autowl_table
 * are honoured (16 #2; the effective values are logged at start-up); `memcached` and `db` name
 * the connections (defaults "memcached" and "db", the names 2.05 hard-codes);
 * `ipv4_aggregate` / `ipv6_aggregate` (off by default) replace the client address by its /24
 * or /64 network in the ticket key and the autowl, for senders whose retries come from another
 * address of the same pool. <AWL> (module Sql; autowl_expire_days, autowl_table) and <Ticket>
 * (module Memcached; min_retry_wait, max_retry_wait) blocks: a value there wins over the
 * plugin-level one; other options in them are warned about and ignored.
 * Redis stores (<Ticket> / <AWL> module = "Redis", on the connection named by `redis`, default
 * "redis" as 2.05 hard-codes), stored exactly as 2.05's Greylist::Ticket::Redis and
 * Greylist::AWL::Redis do, so a Perl mtpolicyd and ringpolicyd can share one Redis: the ticket
 * is GET / SET KEY VALUE EX max_retry_wait / DEL on the ticket key; the autowl entry is the key
 * `awl-,DOMAIN,IP` holding the count: GET, create SET KEY 1 EX autowl_expire_days*86400,
 * increment INCR KEY then EXPIRE KEY autowl_expire_days*86400 (pipelined). Redis expires the
 * entries itself (the cron task has nothing to do for them).
 *
 * Start-up: the autowl table is created when missing (appendix B; SQLite, PostgreSQL or MySQL
 * DDL): SQLite's at create (a local file: an unwritable path fails start-up); PostgreSQL's and
 * MySQL's text is built at create and runs on each shard before its first autowl query, through
 * the normal Sql path, retried with backoff while it fails (acct_ddl.h), so neither start nor
 * --check needs the server. Requests that need the table while its check is out wait for it;
 * while it fails they fail like a database outage (on_error decides). --cron runs the DDL
 * synchronously before it expires rows.
 * Cron `hourly` deletes autowl rows unused for autowl_expire_days (16 #3).
 * SQL or memcached failures fail the request (on_error decides), as a 2.05 DBI or memcached
 * error would; the reason is in the log.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <eng/assert.h>
#include <eng/log.h>
#include <pol/mc.h>
#include <pol/sql.h>

#include "redis_conn.h"

#include "plugins/acct_ddl.h"
#include "plugins/acct_sql.h"
#include "plugins/common.h"

/* Shards whose autowl gates one plugin keeps (engine shards are far fewer). */
#define GL_SHARDS_MAX 1024u

enum {
    OPT_ENABLED,
    OPT_SCORE,
    OPT_MODE,
    OPT_DEFER_MESSAGE,
    OPT_APPEND_WAITTIME,
    OPT_USE_AUTOWL,
    OPT_QUERY_AUTOWL,
    OPT_CREATE_TICKET,
    OPT_AUTOWL_THRESHOLD,
    OPT_MIN_RETRY_WAIT,
    OPT_MAX_RETRY_WAIT,
    OPT_AUTOWL_EXPIRE_DAYS,
    OPT_AUTOWL_TABLE,
    OPT_MEMCACHED,
    OPT_DB,
    OPT_IPV4_AGGREGATE,
    OPT_IPV6_AGGREGATE,
    OPT_REDIS,
    OPT_AWL_MODULE, /* <AWL> and <Ticket> blocks: BLOCK.OPTION (unset: the plugin-level value) */
    OPT_AWL_EXPIRE_DAYS,
    OPT_AWL_TABLE,
    OPT_TICKET_MODULE,
    OPT_TICKET_MIN_RETRY_WAIT,
    OPT_TICKET_MAX_RETRY_WAIT,
    OPT_COUNT,
};

static const struct pol_opt_def greylist_opts[] = {
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_MODE] = {"mode", POL_OPT_STRING, "passive", 0},
    [OPT_DEFER_MESSAGE] = {"defer_message", POL_OPT_STRING, "defer greylisting is active", 0},
    [OPT_APPEND_WAITTIME] = {"append_waittime", POL_OPT_BOOL, "1", 0},
    [OPT_USE_AUTOWL] = {"use_autowl", POL_OPT_BOOL, "1", 0},
    [OPT_QUERY_AUTOWL] = {"query_autowl", POL_OPT_BOOL, "1", 0},
    [OPT_CREATE_TICKET] = {"create_ticket", POL_OPT_BOOL, "1", 0},
    [OPT_AUTOWL_THRESHOLD] = {"autowl_threshold", POL_OPT_INT, "3", 0},
    [OPT_MIN_RETRY_WAIT] = {"min_retry_wait", POL_OPT_INT, "300", 0},
    [OPT_MAX_RETRY_WAIT] = {"max_retry_wait", POL_OPT_INT, "7200", 0},
    [OPT_AUTOWL_EXPIRE_DAYS] = {"autowl_expire_days", POL_OPT_INT, "60", 0},
    [OPT_AUTOWL_TABLE] = {"autowl_table", POL_OPT_STRING, "autowl", 0},
    /* unset: "memcached" / "redis", checked only when a store uses them (the core checks a set
     * connection option at start-up whatever the stores) */
    [OPT_MEMCACHED] = {"memcached", POL_OPT_STRING, NULL, 0},
    [OPT_DB] = {"db", POL_OPT_STRING, NULL, 0}, /* unset: "db" (checked only with use_autowl) */
    [OPT_IPV4_AGGREGATE] = {"ipv4_aggregate", POL_OPT_BOOL, "0", 0},
    [OPT_IPV6_AGGREGATE] = {"ipv6_aggregate", POL_OPT_BOOL, "0", 0},
    [OPT_REDIS] = {"redis", POL_OPT_STRING, NULL, 0},
    [OPT_AWL_MODULE] = {"AWL.module", POL_OPT_STRING, "Sql", 0},
    [OPT_AWL_EXPIRE_DAYS] = {"AWL.autowl_expire_days", POL_OPT_INT, NULL, 0},
    [OPT_AWL_TABLE] = {"AWL.autowl_table", POL_OPT_STRING, NULL, 0},
    [OPT_TICKET_MODULE] = {"Ticket.module", POL_OPT_STRING, "Memcached", 0},
    [OPT_TICKET_MIN_RETRY_WAIT] = {"Ticket.min_retry_wait", POL_OPT_INT, NULL, 0},
    [OPT_TICKET_MAX_RETRY_WAIT] = {"Ticket.max_retry_wait", POL_OPT_INT, NULL, 0},
};
_Static_assert(sizeof greylist_opts / sizeof greylist_opts[0] == OPT_COUNT, "one def per option");

#define K_TICKET "greylist-ticket"
#define K_COUNT "greylist-autowl-count"
#define K_IS_AUTOWL "greylist-is_autowl"
#define K_SCORE "greylist-score"
#define K_AUTOWL_ADD "greylist-autowl-add"

struct greylist {
    struct pol_mc *mc;       /* Ticket Memcached */
    struct pol_sql *db;      /* AWL Sql; NULL when use_autowl = 0 */
    struct pol_redis *redis; /* Ticket or AWL Redis */
    bool ticket_redis, awl_redis;
    uint32_t min_wait, max_wait;
    int64_t expire_s; /* autowl_expire_days in seconds */
    long long threshold;
    char *q_get, *q_incr, *q_create, *q_restart, *q_expire; /* with the table name quoted */
    char *q_ddl;                                            /* CREATE TABLE IF NOT EXISTS */
    bool ddl_async;  /* PostgreSQL, MySQL: q_ddl runs on each shard's gate */
    int ddl_created; /* the gates' shared flag (acct_ddl.h) */
    struct pol_ddl_stmt ddl_stmt;
    char ddl_what[640]; /* "Greylist NAME: auto-whitelist table T" */
    /* per shard, each written by its own shard at start; freed by destroy (main thread, after
     * the shards and their Sql connections stopped) */
    struct pol_ddl_gate *gates[GL_SHARDS_MAX];
};

enum gl_phase {
    GL_START,
    GL_AWL_GET, /* SELECT out */
    GL_AWL_GOT,
    GL_TICKET_GET, /* memcached get out */
    GL_TICKET_GOT,
    GL_AWL_WRITE,    /* INSERT/UPDATE out: then pass (autowl) or delete the ticket */
    GL_TICKET_WRITE, /* set/delete out: then defer or pass */
    GL_AWL_GATE,     /* waiting for the autowl table's check: then the SQL operation again */
};

struct gl_req {
    struct pol_req *r;
    enum gl_phase phase, after; /* after a write: what comes next */
    int status;                 /* the operation's outcome: 0, or <0 */
    int redis_pending;          /* Redis AWL increment: INCR and EXPIRE replies still out */
    const char *awl_key;        /* Redis AWL: "awl-,DOMAIN,IP" */
    size_t awl_key_len;
    char err[160];
    const char *domain, *ip, *tkey;
    size_t domain_len, ip_len, tkey_len;
    bool have_count;
    bool row_read;     /* SQL: the entry was looked up by this request */
    bool row_found;    /* ... and a row exists (maybe expired: then "create" restarts it) */
    long long count;   /* the autowl count, or -1 for none */
    int64_t last_seen; /* of the autowl entry read */
    int64_t ticket;    /* -1 for none */
    bool defer_after;
    bool pass_after;
    /* the SQL operation that waits for the table's check (GL_AWL_GATE) */
    struct pol_ddl_waiter gate_wait;
    bool gate_write, gate_create;
    enum gl_phase gate_after;
};

/* ---------------------------------------------------------------------------------------------
 * Start-up, cron
 */

static void greylist_destroy(struct pol_plugin *p)
{
    struct greylist *g = pol_plugin_data(p);
    if (!g)
        return;
    free(g->q_get);
    free(g->q_incr);
    free(g->q_create);
    free(g->q_restart);
    free(g->q_expire);
    free(g->q_ddl);
    for (unsigned i = 0; i < GL_SHARDS_MAX; i++)
        if (g->gates[i]) {
            pol_ddl_gate_fini(g->gates[i]);
            free(g->gates[i]);
        }
    free(g);
    pol_plugin_set_data(p, NULL);
}

/* Builds the autowl table's DDL; SQLite runs it now, PostgreSQL and MySQL on the shards. */
static int ddl(struct pol_plugin *p, struct greylist *g, const char *qt, char *err, size_t err_len)
{
    char *sql = NULL;
    int rc;
    if (pol_sql_driver_of(g->db) == POL_SQL_PG)
        rc = asprintf(&sql,
                      "CREATE TABLE IF NOT EXISTS %s (id BIGSERIAL PRIMARY KEY, "
                      "sender_domain VARCHAR(255) NOT NULL, client_ip VARCHAR(39) NOT NULL, "
                      "count BIGINT NOT NULL, last_seen BIGINT NOT NULL, "
                      "UNIQUE (client_ip, sender_domain))",
                      qt);
    else if (pol_sql_driver_of(g->db) == POL_SQL_MYSQL) /* 2.05's MySQL layout (appendix B) */
        rc = asprintf(&sql,
                      "CREATE TABLE IF NOT EXISTS %s (`id` int(11) NOT NULL AUTO_INCREMENT, "
                      "`sender_domain` VARCHAR(255) NOT NULL, `client_ip` VARCHAR(39) NOT NULL, "
                      "`count` INT UNSIGNED NOT NULL, `last_seen` INT UNSIGNED NOT NULL, "
                      "PRIMARY KEY (`id`), UNIQUE KEY `domain_ip` (`client_ip`, `sender_domain`), "
                      "KEY(`client_ip`), KEY(`sender_domain`)) ENGINE=`MyISAM` "
                      "DEFAULT CHARSET=latin1",
                      qt);
    else
        rc = asprintf(&sql,
                      "CREATE TABLE IF NOT EXISTS %s (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                      "sender_domain VARCHAR(255) NOT NULL, client_ip VARCHAR(39) NOT NULL, "
                      "count INT UNSIGNED NOT NULL, last_seen INTEGER NOT NULL)",
                      qt);
    if (rc < 0) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (pol_sql_driver_of(g->db) != POL_SQL_SQLITE) {
        /* Shards and hosts run it at once: serialized (acct_sql.h) */
        size_t cap = strlen(sql) + 128;
        char *shared = malloc(cap);
        bool pg = pol_sql_driver_of(g->db) == POL_SQL_PG;
        if (!shared || pol_acct_sql_ddl_shared(pg, sql, shared, cap) == 0) {
            if (shared)
                snprintf(err, err_len, "autowl_table %s: must not contain $rpd$", qt);
            else
                snprintf(err, err_len, "out of memory");
            free(shared);
            free(sql);
            return -1;
        }
        free(sql);
        sql = shared;
    }
    g->q_ddl = sql;
    char why[256] = "";
    if (pol_sql_driver_of(g->db) != POL_SQL_SQLITE) {
        /* One synchronous attempt while the server answers (a started daemon has its table,
         * as before); a failure is no start-up error: the shards' gates retry. */
        if (pol_sql_exec_sync(g->db, sql, NULL, 0, NULL, NULL, why, sizeof(why)) == 0)
            return 0;
        g->ddl_async = true;
        g->ddl_stmt = (struct pol_ddl_stmt){g->q_ddl, false};
        snprintf(g->ddl_what, sizeof(g->ddl_what), "Greylist %s: auto-whitelist table %s",
                 pol_plugin_name(p), qt);
        eng_log(ENG_LOG_WARNING,
                "%s not checked at start-up (%s); each shard checks it before its first "
                "auto-whitelist query, retrying while it fails",
                g->ddl_what, why);
        return 0;
    }
    if (pol_sql_exec_sync(g->db, sql, NULL, 0, NULL, NULL, why, sizeof(why)) != 0) {
        snprintf(err, err_len, "cannot create the auto-whitelist table %s: %s", qt, why);
        return -1;
    }
    return 0;
}

static int create_checked(struct pol_plugin *p, char *err, size_t err_len)
{
    struct greylist *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pol_plugin_set_data(p, g);
    const char *awl_mod = pol_opt(p, OPT_AWL_MODULE)->text,
               *ticket_mod = pol_opt(p, OPT_TICKET_MODULE)->text;
    g->awl_redis = strcmp(awl_mod, "Redis") == 0;
    g->ticket_redis = strcmp(ticket_mod, "Redis") == 0;
    if ((!g->awl_redis && strcmp(awl_mod, "Sql") != 0) ||
        (!g->ticket_redis && strcmp(ticket_mod, "Memcached") != 0)) {
        snprintf(err, err_len,
                 "unknown store (<AWL> module = \"Sql\" or \"Redis\", <Ticket> module = "
                 "\"Memcached\" or \"Redis\")");
        return -1;
    }
    /* A block's value wins over the plugin-level one (16 #2: honoured in both places). */
#define EFFECTIVE(blk, top) (pol_opt(p, blk)->set ? pol_opt(p, blk) : pol_opt(p, top))
    long long minw = EFFECTIVE(OPT_TICKET_MIN_RETRY_WAIT, OPT_MIN_RETRY_WAIT)->i,
              maxw = EFFECTIVE(OPT_TICKET_MAX_RETRY_WAIT, OPT_MAX_RETRY_WAIT)->i,
              days = EFFECTIVE(OPT_AWL_EXPIRE_DAYS, OPT_AUTOWL_EXPIRE_DAYS)->i;
    if (minw < 0 || minw > UINT32_MAX || maxw < 0 || maxw > UINT32_MAX || days < 0 ||
        days > 100000) {
        snprintf(err, err_len,
                 "min_retry_wait and max_retry_wait must be from 0 to %u seconds, "
                 "autowl_expire_days from 0 to 100000",
                 UINT32_MAX);
        return -1;
    }
    g->min_wait = (uint32_t)minw;
    g->max_wait = (uint32_t)maxw;
    g->expire_s = days * 86400;
    g->threshold = pol_opt(p, OPT_AUTOWL_THRESHOLD)->i;
    char why[256] = "";
    const struct pol_opt_value *mco = pol_opt(p, OPT_MEMCACHED), *ro = pol_opt(p, OPT_REDIS);
    const char *mcn = mco->set ? mco->text : "memcached";
    const char *rn = ro->set ? ro->text : "redis";
    bool need_redis = g->ticket_redis || (g->awl_redis && pol_opt(p, OPT_USE_AUTOWL)->b);
    if (need_redis && !(g->redis = pol_redis_lookup(p, rn, why, sizeof(why)))) {
        snprintf(err, err_len,
                 "%s (Greylist's Redis store: add a <Connection %s> block with module = "
                 "\"Redis\")",
                 why, rn);
        return -1;
    }
    if (!g->ticket_redis && !(g->mc = pol_mc_lookup(p, mcn, why, sizeof(why)))) {
        snprintf(err, err_len,
                 "%s (Greylist keeps its tickets in memcached: add a <Connection %s> block with "
                 "module = \"Memcached\")",
                 why, mcn);
        return -1;
    }
    const char *table = EFFECTIVE(OPT_AWL_TABLE, OPT_AUTOWL_TABLE)->text;
#undef EFFECTIVE
    if (pol_opt(p, OPT_USE_AUTOWL)->b && !g->awl_redis) {
        const char *dbn = pol_opt(p, OPT_DB)->set ? pol_opt(p, OPT_DB)->text : "db";
        if (!(g->db = pol_sql_lookup(p, dbn, why, sizeof(why)))) {
            snprintf(err, err_len,
                     "%s (Greylist keeps its auto-whitelist in SQL: add a <Connection %s> block "
                     "with module = \"Sql\", or set use_autowl = 0)",
                     why, dbn);
            return -1;
        }
        char qt[600];
        if (pol_sql_quote_ident(g->db, table, qt, sizeof(qt)) == 0) {
            snprintf(err, err_len, "autowl_table %s: name too long", table);
            return -1;
        }
        if (asprintf(&g->q_get,
                     "SELECT count, last_seen FROM %s WHERE sender_domain=? AND client_ip=?",
                     qt) < 0 ||
            asprintf(&g->q_incr,
                     "UPDATE %s SET count=count+1, last_seen=? WHERE sender_domain=? AND "
                     "client_ip=?",
                     qt) < 0 ||
            asprintf(&g->q_create,
                     "INSERT INTO %s (sender_domain, client_ip, count, last_seen) "
                     "VALUES(?, ?, 1, ?)",
                     qt) < 0 ||
            asprintf(&g->q_restart,
                     "UPDATE %s SET count=1, last_seen=? WHERE sender_domain=? AND client_ip=?",
                     qt) < 0 ||
            asprintf(&g->q_expire, "DELETE FROM %s WHERE last_seen < ?", qt) < 0) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        if (ddl(p, g, qt, err, err_len) != 0)
            return -1;
    }
    eng_log(ENG_LOG_NOTICE,
            "Greylist %s: tickets in %s, autowl in %s, min_retry_wait %u s, max_retry_wait %u s, "
            "autowl_expire_days %lld, autowl_table %s, autowl_threshold %lld, use_autowl %d, "
            "ipv4_aggregate %d, ipv6_aggregate %d",
            pol_plugin_name(p), ticket_mod, awl_mod, g->min_wait, g->max_wait, days, table,
            g->threshold, (int)pol_opt(p, OPT_USE_AUTOWL)->b,
            (int)pol_opt(p, OPT_IPV4_AGGREGATE)->b, (int)pol_opt(p, OPT_IPV6_AGGREGATE)->b);
    return 0;
}

/* The core calls destroy only for a plugin whose create succeeded: free what a failed one
 * allocated (a start-up error must not leak; LeakSanitizer reports it at --check's exit). */
static int greylist_create(struct pol_plugin *p, char *err, size_t err_len)
{
    int rc = create_checked(p, err, err_len);
    if (rc != 0)
        greylist_destroy(p);
    return rc;
}

/* PostgreSQL, MySQL: this shard's check of the autowl table (the request path waits for it). */
static int greylist_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                                char *err, size_t err_len)
{
    struct greylist *g = pol_plugin_data(p);
    *shard_data = NULL;
    if (!g->ddl_async)
        return 0;
    unsigned idx = sh ? eng_shard_index(sh) : 0;
    if (idx >= GL_SHARDS_MAX) {
        snprintf(err, err_len, "Greylist serves at most %u shards", GL_SHARDS_MAX);
        return -1;
    }
    ENG_ASSERT(g->gates[idx] == NULL);
    struct pol_ddl_gate *gate = calloc(1, sizeof(*gate));
    if (!gate) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pol_ddl_gate_init(gate, g->db, g->ddl_what, "auto-whitelist lookups and updates fail",
                      &g->ddl_created, &g->ddl_stmt, 1, false, NULL, NULL);
    g->gates[idx] = gate;
    pol_ddl_gate_start(gate, sh);
    *shard_data = gate;
    return 0;
}

static void greylist_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    (void)p;
    (void)sh;
    if (shard_data) /* freed by destroy: a statement out still completes into it */
        pol_ddl_gate_stop(shard_data);
}

static int greylist_cron(struct pol_plugin *p, const char *const *tasks, size_t task_count,
                         char *err, size_t err_len)
{
    struct greylist *g = pol_plugin_data(p);
    bool hourly = false;
    for (size_t i = 0; i < task_count; i++)
        hourly = hourly || strcmp(tasks[i], "hourly") == 0;
    if (!hourly || !g->db)
        return 0;
    char cutoff[32];
    snprintf(cutoff, sizeof(cutoff), "%" PRId64, (int64_t)time(NULL) - g->expire_s);
    const char *params[] = {cutoff};
    eng_log(ENG_LOG_INFO, "Greylist %s: expiring auto-whitelist entries unused for %" PRId64 " s",
            pol_plugin_name(p), g->expire_s);
    /* The daemon may never have reached the server: the table first (idempotent). */
    if (g->ddl_async && pol_sql_exec_sync(g->db, g->q_ddl, NULL, 0, NULL, NULL, err, err_len) != 0)
        return -1;
    return pol_sql_exec_sync(g->db, g->q_expire, params, 1, NULL, NULL, err, err_len);
}

/* ---------------------------------------------------------------------------------------------
 * Per request
 */

/* The client address as used in keys: as given, or its /24 (IPv4) or /64 (IPv6) network in
 * canonical form ("192.0.2.0/24", "2001:db8:1:2::/64") when aggregation is on. */
static const char *client_key(struct pol_plugin *p, struct pol_req *r, const char *ip, size_t len,
                              size_t *out_len)
{
    *out_len = len;
    char text[INET6_ADDRSTRLEN + 1];
    if (len >= sizeof(text))
        return ip;
    memcpy(text, ip, len);
    text[len] = '\0';
    unsigned char a[16];
    char buf[INET6_ADDRSTRLEN + 8];
    if (pol_opt(p, OPT_IPV4_AGGREGATE)->b && inet_pton(AF_INET, text, a) == 1) {
        a[3] = 0;
        inet_ntop(AF_INET, a, buf, sizeof(buf));
        strcat(buf, "/24");
    } else if (pol_opt(p, OPT_IPV6_AGGREGATE)->b && strchr(text, ':') &&
               inet_pton(AF_INET6, text, a) == 1) {
        memset(a + 8, 0, 8);
        inet_ntop(AF_INET6, a, buf, sizeof(buf));
        strcat(buf, "/64");
    } else {
        return ip;
    }
    char *s = pol_req_strndup(r, buf, strlen(buf));
    if (s)
        *out_len = strlen(s);
    return s;
}

static const char *num_text(struct pol_req *r, long long v)
{
    return pol_req_printf(r, "%lld", v);
}

static void mc_done(void *ctx, enum pol_mc_status st, const char *v, size_t len)
{
    struct gl_req *s = ctx;
    s->status = 0;
    if (s->phase == GL_TICKET_GET) {
        s->ticket = -1;
        if (st == POL_MC_OK) {
            /* Perl: `if (my $ticket = get(...))` then numeric comparisons. */
            char num[32];
            size_t n = len < sizeof(num) - 1 ? len : sizeof(num) - 1;
            memcpy(num, v, n);
            num[n] = '\0';
            double d = pol_num_perl(num, n);
            if (n > 0 && !(n == 1 && num[0] == '0'))
                s->ticket = (int64_t)d;
        } else if (st != POL_MC_NOT_FOUND) {
            s->status = -EIO;
            snprintf(s->err, sizeof(s->err), "memcached: %s", pol_mc_status_text(st));
        }
        s->phase = GL_TICKET_GOT;
    } else {
        ENG_ASSERT(s->phase == GL_TICKET_WRITE);
        if (st != POL_MC_OK && st != POL_MC_NOT_FOUND) {
            s->status = -EIO;
            snprintf(s->err, sizeof(s->err), "memcached: %s", pol_mc_status_text(st));
        }
    }
    pol_req_resume(s->r);
}

static void sql_done(void *ctx, const struct pol_sql_result *res)
{
    struct gl_req *s = ctx;
    s->status = res->status;
    if (res->status != 0) {
        snprintf(s->err, sizeof(s->err), "sql: %s", res->error ? res->error : "error");
    } else if (s->phase == GL_AWL_GET) {
        s->count = -1;
        s->row_read = true;
        s->row_found = res->row_count > 0;
        if (res->row_count > 0) {
            size_t l1 = 0, l2 = 0;
            const char *c = pol_sql_value(res, 0, 0, &l1), *ls = pol_sql_value(res, 0, 1, &l2);
            /* an expired entry counts as absent: decided in the step (it has the options) */
            s->last_seen = ls ? (int64_t)pol_num_perl(ls, l2) : 0;
            s->count = c ? (long long)pol_num_perl(c, l1) : 0;
            s->have_count = true;
        }
    }
    if (s->phase == GL_AWL_GET)
        s->phase = GL_AWL_GOT;
    pol_req_resume(s->r);
}

static enum pol_step queued(struct pol_req *r, int rc, const char *what)
{
    if (rc == 0)
        return POL_WAIT;
    return pol_req_fail(r, "cannot queue the %s: %s", what, strerror(-rc));
}

/* Redis replies: the ticket (GET, SET, DEL) and the autowl (GET, SET, INCR + EXPIRE). */
static void redis_done(void *ctx, enum eng_redis_status st, const struct eng_redis_reply *rep)
{
    struct gl_req *s = ctx;
    bool failed = st != ENG_REDIS_OK && st != ENG_REDIS_NIL;
    if (failed && s->status == 0) {
        s->status = -EIO;
        snprintf(s->err, sizeof(s->err), "redis: %s%s%.*s", eng_redis_status_text(st),
                 rep->len ? ": " : "", (int)(rep->len < 100 ? rep->len : 100),
                 rep->str ? rep->str : "");
    }
    bool got = !failed && st == ENG_REDIS_OK && rep->type == ENG_REDIS_T_STRING;
    if (s->phase == GL_TICKET_GET) {
        s->ticket = -1;
        /* Perl: `if (my $ticket = get(...))` then numeric comparisons. */
        if (got && rep->len > 0 && !(rep->len == 1 && rep->str[0] == '0'))
            s->ticket = (int64_t)pol_num_perl(rep->str, rep->len);
        s->phase = GL_TICKET_GOT;
    } else if (s->phase == GL_AWL_GET) {
        s->count = -1;
        if (got) { /* Redis expires the entry itself: last_seen is "now" */
            s->count = (long long)pol_num_perl(rep->str, rep->len);
            s->last_seen = (int64_t)time(NULL);
            s->have_count = true;
        }
        s->phase = GL_AWL_GOT;
    } else if (s->redis_pending > 0 && --s->redis_pending > 0) {
        return; /* INCR answered, EXPIRE still out */
    }
    pol_req_resume(s->r);
}

static int redis_cmd(struct pol_req *r, struct greylist *g, struct gl_req *s, int argc,
                     const char *const *argv, const size_t *lens)
{
    return pol_redis_command(pol_req_shard(r), g->redis, argc, argv, lens, 0, redis_done, s);
}

/* The ticket store: Memcached or Redis (same key, value and lifetime). */
static enum pol_step ticket_get(struct pol_req *r, struct greylist *g, struct gl_req *s)
{
    s->status = 0;
    s->phase = GL_TICKET_GET;
    if (!g->ticket_redis)
        return queued(r, pol_mc_get(pol_req_shard(r), g->mc, s->tkey, s->tkey_len, 0, mc_done, s),
                      "ticket lookup");
    const char *argv[] = {"GET", s->tkey};
    size_t lens[] = {3, s->tkey_len};
    return queued(r, redis_cmd(r, g, s, 2, argv, lens), "ticket lookup");
}

static enum pol_step ticket_del(struct pol_req *r, struct greylist *g, struct gl_req *s)
{
    s->status = 0;
    s->phase = GL_TICKET_WRITE;
    if (!g->ticket_redis)
        return queued(r,
                      pol_mc_delete(pol_req_shard(r), g->mc, s->tkey, s->tkey_len, 0, mc_done, s),
                      "ticket removal");
    const char *argv[] = {"DEL", s->tkey};
    size_t lens[] = {3, s->tkey_len};
    return queued(r, redis_cmd(r, g, s, 2, argv, lens), "ticket removal");
}

static enum pol_step ticket_set(struct pol_req *r, struct greylist *g, struct gl_req *s,
                                const char *v)
{
    s->status = 0;
    s->phase = GL_TICKET_WRITE;
    if (!g->ticket_redis)
        return queued(r,
                      pol_mc_set(pol_req_shard(r), g->mc, s->tkey, s->tkey_len, v, strlen(v),
                                 g->max_wait, 0, mc_done, s),
                      "ticket creation");
    /* max_retry_wait 0: no lifetime (Redis refuses EX 0; memcached reads 0 as "never"). */
    char ex[16];
    snprintf(ex, sizeof(ex), "%u", g->max_wait);
    const char *argv[] = {"SET", s->tkey, v, "EX", ex};
    size_t lens[] = {3, s->tkey_len, strlen(v), 2, strlen(ex)};
    return queued(r, redis_cmd(r, g, s, g->max_wait ? 5 : 3, argv, lens), "ticket creation");
}

static void gate_woken(struct pol_ddl_waiter *w, bool ok, const char *error)
{
    struct gl_req *s = (struct gl_req *)(void *)((char *)w - offsetof(struct gl_req, gate_wait));
    s->status = ok ? 0 : -EIO;
    if (!ok)
        snprintf(s->err, sizeof(s->err), "sql: the auto-whitelist table is not ready: %s", error);
    pol_req_resume(s->r);
}

/* The SQL autowl table on this shard, before an operation on it: POL_NEXT to go on, POL_WAIT
 * while its check is out (the step goes on in GL_AWL_GATE), or a failure like an outage. */
static enum pol_step awl_gate(struct pol_plugin *p, struct pol_req *r, struct gl_req *s, bool write,
                              bool create, enum gl_phase after)
{
    struct pol_ddl_gate *gate = pol_plugin_shard_data(p, r);
    if (!gate || pol_ddl_gate_ready(gate))
        return POL_NEXT;
    if (!pol_ddl_gate_pending(gate))
        return pol_req_fail(r, "sql: the auto-whitelist table is not ready: %s",
                            pol_ddl_gate_error(gate));
    s->gate_write = write;
    s->gate_create = create;
    s->gate_after = after;
    s->gate_wait.fn = gate_woken;
    s->status = 0;
    s->phase = GL_AWL_GATE;
    pol_ddl_gate_wait(gate, &s->gate_wait);
    return POL_WAIT;
}

/* The autowl lookup: SQL or Redis; ends in GL_AWL_GOT. */
static enum pol_step awl_get(struct pol_plugin *p, struct pol_req *r, struct greylist *g,
                             struct gl_req *s)
{
    s->status = 0;
    s->phase = GL_AWL_GET;
    if (g->awl_redis) {
        const char *argv[] = {"GET", s->awl_key};
        size_t lens[] = {3, s->awl_key_len};
        return queued(r, redis_cmd(r, g, s, 2, argv, lens), "auto-whitelist lookup");
    }
    enum pol_step gs = awl_gate(p, r, s, false, false, s->after);
    if (gs != POL_NEXT)
        return gs;
    s->phase = GL_AWL_GET;
    const char *params[] = {s->domain, s->ip};
    size_t lens[] = {s->domain_len, s->ip_len};
    return queued(r,
                  pol_sql_query(pol_req_shard(r), g->db, g->q_get, params, lens, 2, 0, sql_done, s),
                  "auto-whitelist lookup");
}

/* Redis autowl: create (SET KEY 1 EX) or increment (INCR, EXPIRE), as 2.05's AWL::Redis. */
static enum pol_step awl_write_redis(struct pol_req *r, struct greylist *g, struct gl_req *s,
                                     bool create)
{
    char ex[24];
    snprintf(ex, sizeof(ex), "%" PRId64, g->expire_s);
    size_t exl = strlen(ex);
    s->status = 0;
    if (create) {
        const char *argv[] = {"SET", s->awl_key, "1", "EX", ex};
        size_t lens[] = {3, s->awl_key_len, 1, 2, exl};
        s->redis_pending = 1;
        return queued(r, redis_cmd(r, g, s, g->expire_s ? 5 : 3, argv, lens),
                      "auto-whitelist update");
    }
    const char *incr[] = {"INCR", s->awl_key};
    size_t incr_lens[] = {4, s->awl_key_len};
    s->redis_pending = g->expire_s ? 2 : 1;
    int rc = redis_cmd(r, g, s, 2, incr, incr_lens);
    if (rc != 0 || !g->expire_s)
        return queued(r, rc, "auto-whitelist update");
    const char *exp[] = {"EXPIRE", s->awl_key, ex};
    size_t exp_lens[] = {6, s->awl_key_len, exl};
    rc = redis_cmd(r, g, s, 3, exp, exp_lens);
    if (rc != 0) {
        /* INCR is out and will resume the request: report the failure through it. */
        s->redis_pending = 1;
        s->status = rc;
        snprintf(s->err, sizeof(s->err), "cannot queue the auto-whitelist update: %s",
                 strerror(-rc));
    }
    return POL_WAIT;
}

/* Step 5. */
static enum pol_step pass(struct pol_plugin *p, struct pol_req *r)
{
    const struct pol_opt_value *score = pol_opt(p, OPT_SCORE);
    if (score->set && !pol_req_is_already_done(r, K_SCORE) &&
        pol_score_add(r, p, NULL, score->num, score->text) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    if (pol_builtin_opt_is(p, OPT_MODE, "accept") || pol_builtin_opt_is(p, OPT_MODE, "dunno"))
        return pol_builtin_result(r, "dunno", 5);
    return POL_NEXT;
}

static enum pol_step defer(struct pol_plugin *p, struct pol_req *r, int64_t ticket)
{
    const char *msg = pol_opt(p, OPT_DEFER_MESSAGE)->text;
    if (ticket < 0 || !pol_opt(p, OPT_APPEND_WAITTIME)->b)
        return pol_builtin_result(r, msg, strlen(msg));
    char *a = pol_req_printf(r, "%s (%" PRId64 "s left)", msg, ticket - (int64_t)time(NULL));
    if (!a)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    return pol_builtin_result(r, a, strlen(a));
}

static enum pol_step awl_write(struct pol_plugin *p, struct pol_req *r, struct gl_req *s,
                               bool create, enum gl_phase after)
{
    struct greylist *g = pol_plugin_data(p);
    if (g->awl_redis) {
        s->phase = GL_AWL_WRITE;
        s->after = after;
        return awl_write_redis(r, g, s, create);
    }
    enum pol_step gs = awl_gate(p, r, s, true, create, after);
    if (gs != POL_NEXT)
        return gs;
    const char *now = num_text(r, (long long)time(NULL));
    if (!now)
        return pol_req_fail(r, "no memory left in the request arena");
    const char *params[3];
    size_t lens[3];
    /* An expired entry counts as none, but its row is still there (until the cron task): the
     * "create" restarts that row (count 1, last_seen now) instead of inserting a second one,
     * which the unique (client_ip, sender_domain) key refuses. */
    const char *q = create ? (s->row_found ? g->q_restart : g->q_create) : g->q_incr;
    if (create && !s->row_found) {
        params[0] = s->domain, lens[0] = s->domain_len;
        params[1] = s->ip, lens[1] = s->ip_len;
        params[2] = now, lens[2] = strlen(now);
    } else {
        params[0] = now, lens[0] = strlen(now);
        params[1] = s->domain, lens[1] = s->domain_len;
        params[2] = s->ip, lens[2] = s->ip_len;
    }
    s->phase = GL_AWL_WRITE;
    s->after = after;
    return queued(r, pol_sql_query(pol_req_shard(r), g->db, q, params, lens, 3, 0, sql_done, s),
                  "auto-whitelist update");
}

static enum pol_step ticket_step(struct pol_plugin *p, struct pol_req *r, struct gl_req *s)
{
    struct greylist *g = pol_plugin_data(p);
    size_t tl = 0;
    const char *t = pol_session_get(r, K_TICKET, &tl);
    if (t) { /* cached for this mail */
        s->ticket = tl ? (int64_t)pol_num_perl(t, tl) : -1;
        s->phase = GL_TICKET_GOT;
        return POL_NEXT;
    }
    return ticket_get(r, g, s);
}

static enum pol_step after_ticket(struct pol_plugin *p, struct pol_req *r, struct gl_req *s)
{
    struct greylist *g = pol_plugin_data(p);
    if (s->ticket >= 0) {
        if ((int64_t)time(NULL) > s->ticket) {
            pol_log(p, r, "%.*s has a valid greylisting ticket", (int)s->tkey_len, s->tkey);
            if (pol_opt(p, OPT_USE_AUTOWL)->b && !pol_req_is_already_done(r, K_AUTOWL_ADD)) {
                /* add_autowl: the count cached for this mail decides increment or create */
                size_t cl = 0;
                const char *c = pol_session_get(r, K_COUNT, &cl);
                /* Not looked up yet for this mail (query_autowl = 0), or "none" from an earlier
                 * request of the mail: whether an expired row is there decides INSERT or
                 * restart (SQL; Redis expires entries itself). */
                if (!c || (cl == 0 && !g->awl_redis && !s->row_read)) {
                    s->after = GL_TICKET_GOT;
                    return awl_get(p, r, g, s);
                }
                return awl_write(p, r, s, cl == 0, GL_TICKET_WRITE);
            }
            s->pass_after = true;
            return ticket_del(r, g, s);
        }
        pol_log(p, r, "%.*s has a invalid greylisting ticket. wait again", (int)s->tkey_len,
                s->tkey);
        return defer(p, r, s->ticket);
    }
    if (!pol_opt(p, OPT_CREATE_TICKET)->b)
        return POL_NEXT;
    pol_log(p, r, "creating new greylisting ticket");
    const char *v = num_text(r, (long long)time(NULL) + g->min_wait);
    if (!v)
        return pol_req_fail(r, "no memory left in the request arena");
    s->defer_after = true;
    return ticket_set(r, g, s, v);
}

/* The autowl count for this mail: from the session, or by a query (POL_WAIT). */
static enum pol_step awl_lookup(struct pol_plugin *p, struct pol_req *r, struct gl_req *s,
                                enum gl_phase after)
{
    struct greylist *g = pol_plugin_data(p);
    size_t cl = 0;
    const char *c = pol_session_get(r, K_COUNT, &cl);
    if (c) {
        s->count = cl ? (long long)pol_num_perl(c, cl) : -1;
        s->have_count = true;
        s->last_seen = (int64_t)time(NULL); /* cached after the expiry check: not again */
        s->phase = after;
        return POL_NEXT;
    }
    s->after = after;
    return awl_get(p, r, g, s);
}

static enum pol_step greylist_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct gl_req *s = req_state;
    struct greylist *g = pol_plugin_data(p);
    enum pol_step st;
    for (;;) {
        switch (s->phase) {
        case GL_START: {
            if (!pol_uc_enabled(r, p, OPT_ENABLED))
                return POL_NEXT;
            s->r = r;
            size_t sl = 0, il = 0, rl = 0;
            const char *sender = pol_req_attr(r, "sender", &sl);
            const char *ip = pol_req_attr(r, "client_address", &il);
            const char *rcpt = pol_req_attr(r, "recipient", &rl);
            sender = sender ? sender : "";
            const char *at = sl ? memrchr(sender, '@', sl) : NULL;
            s->domain = at ? at + 1 : sender;
            s->domain_len = at ? sl - (size_t)(at + 1 - sender) : sl;
            s->ip = client_key(p, r, ip ? ip : "", ip ? il : 0, &s->ip_len);
            char *k = s->ip ? pol_req_printf(r, "%.*s,%.*s,%.*s", (int)sl, sender, (int)s->ip_len,
                                             s->ip, (int)rl, rcpt ? rcpt : "")
                            : NULL;
            if (!k)
                return pol_req_fail(r, "no memory left in the request arena for the key");
            s->tkey = k;
            s->tkey_len = strlen(k);
            if (g->awl_redis) { /* 2.05: join(',', 'awl-', DOMAIN, IP) */
                char *ak = pol_req_printf(r, "awl-,%.*s,%.*s", (int)s->domain_len, s->domain,
                                          (int)s->ip_len, s->ip);
                if (!ak)
                    return pol_req_fail(r, "no memory left in the request arena for the key");
                s->awl_key = ak;
                s->awl_key_len = strlen(ak);
            }
            s->count = -1;
            s->ticket = -1;
            if (pol_opt(p, OPT_USE_AUTOWL)->b && pol_opt(p, OPT_QUERY_AUTOWL)->b) {
                st = awl_lookup(p, r, s, GL_AWL_GOT);
                if (st != POL_NEXT)
                    return st;
                continue;
            }
            st = ticket_step(p, r, s);
            if (st != POL_NEXT)
                return st;
            continue;
        }
        case GL_AWL_GOT: {
            if (s->status != 0)
                return pol_req_fail(r, "%s", s->err);
            if (s->have_count && s->count >= 0 && s->last_seen + g->expire_s < (int64_t)time(NULL))
                s->count = -1; /* unused for autowl_expire_days: absent */
            if (!pol_session_get(r, K_COUNT, NULL)) {
                const char *txt = s->count >= 0 ? num_text(r, s->count) : "";
                if (!txt || pol_session_set(r, K_COUNT, txt, strlen(txt)) != 0)
                    return pol_req_fail(r, "cannot store session key %s", K_COUNT);
            }
            if (s->after == GL_TICKET_GOT) /* the lookup add_autowl needed */
                return awl_write(p, r, s, s->count < 0, GL_TICKET_WRITE);
            if (s->count >= 0 && s->count >= g->threshold) {
                pol_log(p, r, "client on greylist autowl");
                if (!pol_req_is_already_done(r, K_IS_AUTOWL))
                    return awl_write(p, r, s, false, GL_START /* then pass */);
                return pass(p, r);
            }
            pol_log(p, r,
                    s->count < 0 ? "client is not on autowl"
                                 : "client has not yet reached autowl_threshold");
            st = ticket_step(p, r, s);
            if (st != POL_NEXT)
                return st;
            continue;
        }
        case GL_TICKET_GOT: {
            if (s->status != 0)
                return pol_req_fail(r, "%s", s->err);
            if (!pol_session_get(r, K_TICKET, NULL)) {
                const char *txt = s->ticket >= 0 ? num_text(r, (long long)s->ticket) : "";
                if (!txt || pol_session_set(r, K_TICKET, txt, strlen(txt)) != 0)
                    return pol_req_fail(r, "cannot store session key %s", K_TICKET);
            }
            return after_ticket(p, r, s);
        }
        case GL_AWL_WRITE:
            if (s->status != 0)
                return pol_req_fail(r, "%s", s->err);
            if (s->after == GL_START) /* the autowl refresh of step 2 */
                return pass(p, r);
            /* add_autowl done: delete the ticket, then pass */
            s->pass_after = true;
            return ticket_del(r, g, s);
        case GL_TICKET_WRITE:
            if (s->status != 0)
                return pol_req_fail(r, "%s", s->err);
            if (s->defer_after)
                return defer(p, r, -1);
            ENG_ASSERT(s->pass_after);
            return pass(p, r);
        case GL_AWL_GATE: /* the table's check ended */
            if (s->status != 0)
                return pol_req_fail(r, "%s", s->err);
            if (s->gate_write)
                return awl_write(p, r, s, s->gate_create, s->gate_after);
            s->after = s->gate_after;
            return awl_get(p, r, g, s);
        case GL_AWL_GET:
        case GL_TICKET_GET:
            ENG_ASSERT(!"Greylist step while an operation is out");
            return POL_NEXT;
        }
    }
}

const struct pol_plugin_type pol_type_Greylist = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Greylist",
    .opts = greylist_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct gl_req),
    .create = greylist_create,
    .shard_start = greylist_shard_start,
    .shard_stop = greylist_shard_stop,
    .step = greylist_step,
    .cron = greylist_cron,
    .destroy = greylist_destroy,
};
