/*
 * sql_sqlite.c: the SQLite side of the Sql connection: connections, statement caches and the
 * job each query becomes on a worker thread (see sql_int.h).
 *
 * A file database gets one connection per worker (opened on first use, on that worker), in WAL
 * mode so readers do not wait for the writer, with a busy handler that waits until the query's
 * deadline and a progress handler that interrupts a statement running past it. An in-memory
 * database (dbi:SQLite::memory:) lives as long as its one connection, so it has exactly one,
 * opened at start-up and used under a mutex by the single worker and by pol_sql_exec_sync:
 * one database per <Connection>, as a DBI user of one process expects. Values are bound as
 * text; REAL results are formatted as Perl prints numbers (%.15g). Rows are copied into a
 * struct sql_rows (malloc'd on the worker, freed by the shard after done), at most
 * LITE_ROWS_BYTES_MAX bytes.
 *
 * Threads: pol_sql_lite_run on workers; open, close and exec_sync on the main thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "eng/assert.h"
#include "eng/engine.h"
#include "sql_int.h"

#define LITE_STMT_CACHE 64u                      /* prepared statements per connection */
#define LITE_ROWS_BYTES_MAX (16u * 1024u * 1024u) /* one result's values */
#define LITE_SYNC_BUSY_MS 30000u                 /* exec_sync waits this long for a lock */
#define LITE_PROGRESS_OPS 1000                   /* VM steps between deadline checks */

_Static_assert((LITE_STMT_CACHE & (LITE_STMT_CACHE - 1)) == 0, "cache size is a power of two");

struct lite_stmt {
    char *sql;
    size_t len;
    sqlite3_stmt *st;
};

struct sql_lite_conn {
    sqlite3 *db;
    uint64_t deadline_us; /* of the statement running; 0: none */
    bool timed_out;
    struct lite_stmt cache[LITE_STMT_CACHE];
};

/* ---------------------------------------------------------------------------------------------
 * Connections
 */

static int on_busy(void *arg, int count)
{
    struct sql_lite_conn *c = arg;
    uint64_t now = eng_clock_us();
    if (c->deadline_us && now >= c->deadline_us)
        return 0; /* give up: SQLITE_BUSY */
    uint64_t wait_us = (uint64_t)(count < 10 ? count + 1 : 10) * 1000u;
    if (c->deadline_us && c->deadline_us - now < wait_us)
        wait_us = c->deadline_us - now;
    struct timespec ts = {0, (long)(wait_us * 1000u)};
    nanosleep(&ts, NULL);
    return 1;
}

static int on_progress(void *arg)
{
    struct sql_lite_conn *c = arg;
    if (c->deadline_us && eng_clock_us() >= c->deadline_us) {
        c->timed_out = true;
        return 1; /* interrupt: SQLITE_INTERRUPT */
    }
    return 0;
}

static void lite_conn_close(struct sql_lite_conn *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < LITE_STMT_CACHE; i++) {
        sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
    }
    sqlite3_close(c->db);
    free(c);
}

static struct sql_lite_conn *lite_conn_open(const struct pol_sql *db, char *err, size_t err_len)
{
    const struct pol_sql_dsn *d = db->dsn;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | (d->uri ? SQLITE_OPEN_URI : 0) |
                (d->memory ? SQLITE_OPEN_FULLMUTEX : SQLITE_OPEN_NOMUTEX);
    struct sql_lite_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(d->memory ? ":memory:" : d->path, &c->db, flags, NULL);
    if (rc == SQLITE_OK && !d->memory) {
        /* WAL: readers do not wait for the writer (persistent in the file). */
        char *msg = NULL;
        rc = sqlite3_exec(c->db, "PRAGMA journal_mode=WAL", NULL, NULL, &msg);
        sqlite3_free(msg);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "cannot open SQLite database %s: %s",
                 d->memory ? ":memory:" : d->path, c->db ? sqlite3_errmsg(c->db) : "out of memory");
        lite_conn_close(c);
        return NULL;
    }
    sqlite3_busy_handler(c->db, on_busy, c);
    sqlite3_progress_handler(c->db, LITE_PROGRESS_OPS, on_progress, c);
    return c;
}

/* ---------------------------------------------------------------------------------------------
 * Statements and rows
 */

static uint64_t text_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* The prepared statement for sql (one statement; trailing blanks and ';' allowed), from the
 * connection's cache. NULL with the reason in err. */
static sqlite3_stmt *stmt_get(struct sql_lite_conn *c, const char *sql, size_t len, char *err,
                              size_t err_len)
{
    struct lite_stmt *e = &c->cache[text_hash(sql, len) & (LITE_STMT_CACHE - 1)];
    if (e->st && e->len == len && memcmp(e->sql, sql, len) == 0)
        return e->st;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (sqlite3_prepare_v3(c->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &st, &tail) !=
        SQLITE_OK) {
        snprintf(err, err_len, "%s", sqlite3_errmsg(c->db));
        return NULL;
    }
    if (!st) {
        snprintf(err, err_len, "empty statement");
        return NULL;
    }
    for (; tail && tail < sql + len; tail++)
        if (*tail != ' ' && *tail != '\t' && *tail != '\n' && *tail != '\r' && *tail != ';') {
            sqlite3_finalize(st);
            snprintf(err, err_len, "only one statement per query");
            return NULL;
        }
    char *copy = malloc(len + 1);
    if (!copy)
        return st; /* usable, just not cached: the caller finalizes what it did not cache */
    memcpy(copy, sql, len);
    copy[len] = '\0';
    sqlite3_finalize(e->st);
    free(e->sql);
    *e = (struct lite_stmt){copy, len, st};
    return st;
}

static bool stmt_cached(const struct sql_lite_conn *c, const sqlite3_stmt *st)
{
    for (unsigned i = 0; i < LITE_STMT_CACHE; i++)
        if (c->cache[i].st == st)
            return true;
    return false;
}

static int bind_all(sqlite3_stmt *st, const char *const *params, const size_t *lens, size_t n,
                    char *err, size_t err_len)
{
    int want = sqlite3_bind_parameter_count(st);
    if ((size_t)want != n) {
        snprintf(err, err_len, "called with %zu bind variables when %d are needed", n, want);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = params[i] ? sqlite3_bind_text(st, (int)i + 1, params[i],
                                               lens ? (int)lens[i] : -1, SQLITE_STATIC)
                           : sqlite3_bind_null(st, (int)i + 1);
        if (rc != SQLITE_OK) {
            snprintf(err, err_len, "%s", sqlite3_errstr(rc));
            return -1;
        }
    }
    return 0;
}

static int rows_reserve(struct sql_rows *r, size_t cells, size_t bytes)
{
    if (r->data_len + bytes > LITE_ROWS_BYTES_MAX)
        return -1;
    if (r->row_count * r->col_count + cells > r->cells_cap) {
        size_t cap = r->cells_cap ? r->cells_cap * 2 : 64;
        while (cap < r->row_count * r->col_count + cells)
            cap *= 2;
        struct sql_cell *n = realloc(r->cells, cap * sizeof(*n));
        if (!n)
            return -1;
        r->cells = n;
        r->cells_cap = cap;
    }
    if (r->data_len + bytes > r->data_cap) {
        size_t cap = r->data_cap ? r->data_cap * 2 : 1024;
        while (cap < r->data_len + bytes)
            cap *= 2;
        char *n = realloc(r->data, cap);
        if (!n)
            return -1;
        r->data = n;
        r->data_cap = cap;
    }
    return 0;
}

/* Appends the current row of st. -1 when the result grows past LITE_ROWS_BYTES_MAX. */
static int row_append(struct sql_rows *r, sqlite3_stmt *st)
{
    size_t cols = r->col_count, bytes = 0;
    for (size_t j = 0; j < cols; j++)
        bytes += (size_t)sqlite3_column_bytes(st, (int)j) + 32;
    if (rows_reserve(r, cols, bytes) != 0)
        return -1;
    for (size_t j = 0; j < cols; j++) {
        struct sql_cell *cell = &r->cells[r->row_count * cols + j];
        char *out = r->data + r->data_len;
        cell->off = r->data_len;
        int type = sqlite3_column_type(st, (int)j);
        if (type == SQLITE_NULL) {
            cell->len = -1;
            continue;
        }
        size_t n;
        if (type == SQLITE_FLOAT) { /* as Perl prints a number */
            n = (size_t)snprintf(out, 32, "%.15g", sqlite3_column_double(st, (int)j));
        } else {
            const void *v = type == SQLITE_BLOB ? sqlite3_column_blob(st, (int)j)
                                                : (const void *)sqlite3_column_text(st, (int)j);
            n = (size_t)sqlite3_column_bytes(st, (int)j);
            if (n)
                memcpy(out, v, n);
        }
        out[n] = '\0'; /* values are NUL-terminated too */
        cell->len = (long)n;
        r->data_len += n + 1;
    }
    r->row_count++;
    return 0;
}

/* Steps st to the end, collecting rows. Returns 0, or -EIO / -ETIMEDOUT with err set. */
static int run_stmt(struct sql_lite_conn *c, sqlite3_stmt *st, struct sql_rows *r, char *err,
                    size_t err_len)
{
    r->col_count = (size_t)sqlite3_column_count(st);
    int rc;
    c->timed_out = false;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (row_append(r, st) != 0) {
            snprintf(err, err_len, "result larger than %u bytes", LITE_ROWS_BYTES_MAX);
            sqlite3_reset(st);
            return -EIO;
        }
    if (rc != SQLITE_DONE) {
        bool late = c->timed_out || (rc == SQLITE_BUSY && c->deadline_us &&
                                     eng_clock_us() >= c->deadline_us);
        snprintf(err, err_len, "%s", sqlite3_errmsg(c->db));
        sqlite3_reset(st);
        return late ? -ETIMEDOUT : -EIO;
    }
    r->affected = sqlite3_stmt_readonly(st) ? 0 : (uint64_t)sqlite3_changes64(c->db);
    sqlite3_reset(st);
    return 0;
}

const char *pol_sql_rows_value(const struct sql_rows *r, size_t row, size_t col, size_t *len)
{
    if (len)
        *len = 0;
    if (row >= r->row_count || col >= r->col_count)
        return NULL;
    const struct sql_cell *cell = &r->cells[row * r->col_count + col];
    if (cell->len < 0)
        return NULL;
    if (len)
        *len = (size_t)cell->len;
    return r->data + cell->off;
}

void pol_sql_rows_free(struct sql_rows *r)
{
    free(r->cells);
    free(r->data);
    memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------------------------------------
 * Jobs (worker threads)
 */

static struct sql_lite_conn *worker_conn(struct pol_sql *db, unsigned idx, char *err,
                                         size_t err_len)
{
    if (db->lite_mem) {
        pthread_mutex_lock(&db->lite_mem_lock);
        return db->lite_mem;
    }
    ENG_ASSERT(idx < db->workers);
    if (!db->lite[idx])
        db->lite[idx] = lite_conn_open(db, err, err_len);
    return db->lite[idx];
}

void pol_sql_lite_run(struct eng_work *w, unsigned worker_index)
{
    struct sql_op *op = (struct sql_op *)(void *)w;
    struct pol_sql *db = op->ss->db;
    op->err[0] = '\0';
    memset(&op->rows, 0, sizeof(op->rows));
    if (eng_clock_us() >= op->deadline_us) {
        snprintf(op->err, sizeof(op->err), "query timed out after %u ms (waiting for a worker)",
                 op->timeout_ms);
        op->status = -ETIMEDOUT;
        return;
    }
    struct sql_lite_conn *c = worker_conn(db, worker_index, op->err, sizeof(op->err));
    op->status = -EIO;
    if (c) {
        c->deadline_us = op->deadline_us;
        sqlite3_stmt *st = stmt_get(c, op->sql, op->sql_len, op->err, sizeof(op->err));
        if (st && bind_all(st, op->params, op->param_lens, op->param_count, op->err,
                           sizeof(op->err)) == 0)
            op->status = run_stmt(c, st, &op->rows, op->err, sizeof(op->err));
        if (st) {
            sqlite3_clear_bindings(st);
            if (!stmt_cached(c, st))
                sqlite3_finalize(st);
        }
        c->deadline_us = 0;
    }
    if (op->status == -ETIMEDOUT)
        snprintf(op->err, sizeof(op->err), "query timed out after %u ms", op->timeout_ms);
    if (op->status != 0)
        pol_sql_rows_free(&op->rows);
    if (db->lite_mem)
        pthread_mutex_unlock(&db->lite_mem_lock);
}

/* ---------------------------------------------------------------------------------------------
 * Start-up, shutdown, synchronous use (main thread)
 */

int pol_sql_lite_open(struct pol_sql *db, char *err, size_t err_len)
{
    pthread_mutex_init(&db->lite_mem_lock, NULL);
    if (db->dsn->memory) {
        db->workers = 1; /* the one connection serialises everything anyway */
        db->lite_mem = lite_conn_open(db, err, err_len);
        return db->lite_mem ? 0 : -1;
    }
    /* Open once now so that a bad path is a start-up error, and WAL mode is set. */
    struct sql_lite_conn *probe = lite_conn_open(db, err, err_len);
    if (!probe)
        return -1;
    lite_conn_close(probe);
    db->lite = calloc(db->workers, sizeof(*db->lite));
    if (!db->lite) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

void pol_sql_lite_close(struct pol_sql *db)
{
    for (unsigned i = 0; db->lite && i < db->workers; i++)
        lite_conn_close(db->lite[i]);
    free(db->lite);
    db->lite = NULL;
    lite_conn_close(db->lite_mem);
    db->lite_mem = NULL;
    pthread_mutex_destroy(&db->lite_mem_lock);
}

static int sync_each(struct sql_lite_conn *c, sqlite3_stmt *st, pol_sql_row_fn *each_row,
                     void *ctx, char *err, size_t err_len)
{
    struct sql_view v = {.pub = {.status = 0}};
    struct sql_rows rows = {0};
    int rc = run_stmt(c, st, &rows, err, err_len);
    if (rc == 0 && each_row) {
        v.rows = &rows;
        v.pub.row_count = rows.row_count;
        v.pub.col_count = rows.col_count;
        v.pub.rows_affected = rows.affected;
        for (size_t i = 0; i < rows.row_count; i++)
            each_row(ctx, &v.pub, i);
    }
    pol_sql_rows_free(&rows);
    return rc;
}

/* Runs every statement of sql (values bind to the first, which must then be the only one). */
static int sync_script(struct sql_lite_conn *c, const char *sql, const char *const *params,
                       size_t n, pol_sql_row_fn *each_row, void *ctx, char *err, size_t err_len)
{
    const char *p = sql;
    for (unsigned idx = 0; *p; idx++) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        if (sqlite3_prepare_v2(c->db, p, -1, &st, &tail) != SQLITE_OK) {
            snprintf(err, err_len, "%s", sqlite3_errmsg(c->db));
            return -1;
        }
        p = tail;
        if (!st)
            break; /* only blanks or comments left */
        int rc = idx == 0 && n ? bind_all(st, params, NULL, n, err, err_len) : 0;
        if (rc == 0 && idx > 0 && n) {
            snprintf(err, err_len, "values given for a script of several statements");
            rc = -1;
        }
        if (rc == 0)
            rc = sync_each(c, st, each_row, ctx, err, err_len);
        sqlite3_finalize(st);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int pol_sql_lite_exec_sync(struct pol_sql *db, const char *sql, const char *const *params,
                           size_t param_count, pol_sql_row_fn *each_row, void *ctx, char *err,
                           size_t err_len)
{
    struct sql_lite_conn *c = db->lite_mem;
    if (c)
        pthread_mutex_lock(&db->lite_mem_lock);
    else if (!(c = lite_conn_open(db, err, err_len)))
        return -1;
    c->deadline_us = eng_clock_us() + (uint64_t)LITE_SYNC_BUSY_MS * 1000u;
    int rc = sync_script(c, sql, params, param_count, each_row, ctx, err, err_len);
    c->deadline_us = 0;
    if (c == db->lite_mem)
        pthread_mutex_unlock(&db->lite_mem_lock);
    else
        lite_conn_close(c);
    return rc;
}
