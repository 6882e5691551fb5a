/*
 * metrics.c: per-shard counters and the Prometheus text exposition (see metrics.h).
 *
 * Owns the global name table (main-thread writer, published with release stores of the
 * counts), one block per shard (allocated on the shard at start, freed at stop; a pointer to
 * it is published for scrapes) and the collector table. The request path touches only the
 * calling shard's block through a thread-local pointer: no lock, no atomic read-modify-write,
 * no allocation. A scrape reads each block with relaxed loads, so a value can be a turn old;
 * histograms are read bucket by bucket, so _count may trail a bucket by a request in flight.
 *
 * Limits: POL_METRICS_VHOSTS_MAX vhost names and POL_METRICS_PLUGINS_MAX plugin names over the
 * life of the process (reloads add names, never remove them); later names share "_other".
 * The exposition must fit the HTTP response buffer (daemon.c sizes it); a scrape that does
 * not fit gets a 500 and is counted by the HTTP layer.
 */
#include "metrics.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "eng/assert.h"
#include "exec.h"
#include "ringpolicyd_config.h"
#include "server.h"
#include "sstore.h"

#define V POL_METRICS_VHOSTS_MAX
#define P POL_METRICS_PLUGINS_MAX
#define B (POL_METRICS_LAT_BOUNDS + 1) /* buckets, the last one +Inf */

static const uint64_t lat_bounds_us[POL_METRICS_LAT_BOUNDS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000};
static const char *const lat_bounds_s[POL_METRICS_LAT_BOUNDS] = {
    "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.01",  "0.025",  "0.05",    "0.1",    "0.25",  "1",      "5"};

/* Copies of a shard's plain counters, refreshed once a second. */
struct msnap {
    uint64_t built, replies, failed, timeouts, shed, session_full, session_nomem;
    uint64_t sessions, session_bytes, hits, misses, waits, evicted, expired, too_big,
        store_failed;
};

/* A per-shard source (metrics.h): its last values and what earlier sources of the same desc
 * and label value left (counters only). Written by the shard; desc, label and the values are
 * read by scrapes (relaxed; desc and label published by the release store of nsrc). */
struct msource {
    const struct pol_metrics_source_desc *desc;
    char label[POL_METRICS_NAME_BYTES];
    pol_metrics_snap_fn *fn; /* NULL: removed (values hold the kept counters) */
    void *ctx;
    uint64_t base[POL_METRICS_SOURCE_FIELDS_MAX];
    uint64_t cur[POL_METRICS_SOURCE_FIELDS_MAX];
};

struct mshard {
    struct eng_shard *sh;
    struct msource src[POL_METRICS_SOURCES_MAX];
    unsigned nsrc; /* entries in use (release store; scrapes acquire) */
    uint64_t proto_errors, no_vhost;
    uint64_t requests[V], failed[V], timeouts[V];
    uint64_t replies[V][POL_MA_COUNT];
    uint64_t lat[V][B];
    uint64_t lat_sum_us[V];
    uint64_t pl_lat[P][B];
    uint64_t pl_sum_us[P];
    struct msnap snap;
};

struct collector {
    _Atomic(pol_metrics_collect_fn *) fn;
    void *_Atomic ctx;
};

static struct {
    unsigned shard_count;
    struct eng *e;
    struct mshard *_Atomic *shards;
    char vh_names[V][POL_METRICS_NAME_BYTES];
    atomic_uint vh_count;
    char pl_names[P][POL_METRICS_NAME_BYTES];
    uint32_t pl_vh[P];
    atomic_uint pl_count;
    struct collector coll[POL_METRICS_COLLECTORS_MAX];
    atomic_ullong reloads_ok, reloads_failed, reload_ok_time_s;
    bool tsc;            /* pol_metrics_ticks reads the TSC */
    double us_per_tick;  /* 1.0 without the TSC */
} g;

/* initial-exec: libpol.a is built position-independent, and the default TLS model would then
 * call __tls_get_addr on every counter; policy is always linked into the executable. */
static __thread struct mshard *self __attribute__((tls_model("initial-exec")));

#define M_INC(field) __atomic_store_n(&(field), (field) + 1, __ATOMIC_RELAXED)
#define M_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define M_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define M_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* ---------------------------------------------------------------------------------------------
 * Action words
 */

static const char *const action_names[POL_MA_COUNT] = {
    "ok",      "dunno",    "reject",   "defer", "defer_if_reject", "defer_if_permit",
    "prepend", "hold",     "discard",  "filter", "redirect",       "warn",
    "info",    "bcc",      "4xx",      "5xx",    "other"};

const char *pol_metrics_action_name(enum pol_metrics_action a)
{
    ENG_ASSERT(a < POL_MA_COUNT);
    return action_names[a];
}

enum pol_metrics_action pol_metrics_action_of(const char *action, size_t len)
{
    size_t w = 0;
    while (w < len && action[w] != ' ' && action[w] != '\t')
        w++;
    if (w == 0)
        return POL_MA_OTHER;
    if (w == 3 && action[0] >= '2' && action[0] <= '5' && action[1] >= '0' && action[1] <= '9' &&
        action[2] >= '0' && action[2] <= '9')
        return action[0] == '4' ? POL_MA_4XX : POL_MA_5XX;
    /* Request path: compare only the words starting with the same letter. */
    char c = (char)(action[0] | 0x20);
    for (unsigned a = 0; a < POL_MA_4XX; a++)
        if (action_names[a][0] == c && strlen(action_names[a]) == w &&
            strncasecmp(action, action_names[a], w) == 0)
            return (enum pol_metrics_action)a;
    return POL_MA_OTHER;
}

/* ---------------------------------------------------------------------------------------------
 * Global state and name slots (main thread)
 */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The TSC is usable when it ticks at a constant rate through sleep states (constant_tsc and
 * nonstop_tsc in /proc/cpuinfo, which is also how the kernel's own choice is made visible). */
static bool tsc_invariant(void)
{
#if defined(__x86_64__)
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[4096];
    bool c = false, n = false;
    while (f && fgets(line, sizeof(line), f) && !(c && n))
        if (strncmp(line, "flags", 5) == 0) {
            c = strstr(line, " constant_tsc") != NULL;
            n = strstr(line, " nonstop_tsc") != NULL;
            break;
        }
    if (f)
        fclose(f);
    return c && n;
#else
    return false;
#endif
}

static void ticks_calibrate(void)
{
    g.tsc = false;
    g.us_per_tick = 1.0;
#if defined(__x86_64__)
    if (!tsc_invariant())
        return;
    uint64_t n0 = mono_ns(), t0 = __rdtsc();
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    uint64_t n1 = mono_ns(), t1 = __rdtsc();
    if (t1 <= t0 || n1 <= n0)
        return;
    g.us_per_tick = (double)(n1 - n0) / 1000.0 / (double)(t1 - t0);
    g.tsc = true;
#endif
}

uint64_t pol_metrics_ticks(void)
{
#if defined(__x86_64__)
    if (g.tsc)
        return __rdtsc();
#endif
    return mono_ns() / 1000u;
}

int pol_metrics_init(unsigned shard_count, struct eng *e)
{
    memset(&g, 0, sizeof(g));
    g.shards = calloc(shard_count ? shard_count : 1, sizeof(*g.shards));
    if (!g.shards)
        return -ENOMEM;
    g.shard_count = shard_count;
    g.e = e;
    ticks_calibrate();
    /* Slot 0 of each table collects the names that do not fit. */
    snprintf(g.vh_names[0], sizeof(g.vh_names[0]), "_other");
    snprintf(g.pl_names[0], sizeof(g.pl_names[0]), "_other");
    atomic_store(&g.vh_count, 1);
    atomic_store(&g.pl_count, 1);
    return 0;
}

void pol_metrics_fini(void)
{
    for (unsigned i = 0; g.shards && i < g.shard_count; i++)
        free(atomic_load(&g.shards[i]));
    free(g.shards);
    g.shards = NULL;
    g.shard_count = 0;
}

static uint32_t vh_slot(const char *name)
{
    unsigned n = atomic_load_explicit(&g.vh_count, memory_order_relaxed);
    for (unsigned i = 1; i < n; i++)
        if (strncmp(g.vh_names[i], name, POL_METRICS_NAME_BYTES - 1) == 0)
            return i;
    if (n >= V)
        return 0;
    snprintf(g.vh_names[n], sizeof(g.vh_names[n]), "%s", name);
    atomic_store_explicit(&g.vh_count, n + 1, memory_order_release);
    return n;
}

static uint32_t pl_slot(uint32_t vslot, const char *name)
{
    unsigned n = atomic_load_explicit(&g.pl_count, memory_order_relaxed);
    for (unsigned i = 1; i < n; i++)
        if (g.pl_vh[i] == vslot && strncmp(g.pl_names[i], name, POL_METRICS_NAME_BYTES - 1) == 0)
            return i;
    if (n >= P)
        return 0;
    snprintf(g.pl_names[n], sizeof(g.pl_names[n]), "%s", name);
    g.pl_vh[n] = vslot;
    atomic_store_explicit(&g.pl_count, n + 1, memory_order_release);
    return n;
}

static void assign_chain(const struct pol_chain *c, uint32_t vslot)
{
    for (uint32_t i = 0; i < c->count; i++) {
        c->plugins[i]->metrics_slot = pl_slot(vslot, c->plugins[i]->name);
        assign_chain(&c->plugins[i]->sub, vslot);
    }
}

void pol_metrics_assign(struct pol_server *s)
{
    for (uint32_t i = 0; i < s->vhost_count; i++) {
        struct pol_vhost *vh = &s->vhosts[i];
        vh->metrics_slot = vh_slot(vh->name);
        assign_chain(&vh->chain, vh->metrics_slot);
    }
}

void pol_metrics_reload(bool ok)
{
    if (ok) {
        atomic_fetch_add(&g.reloads_ok, 1);
        atomic_store(&g.reload_ok_time_s, (unsigned long long)time(NULL));
    } else {
        atomic_fetch_add(&g.reloads_failed, 1);
    }
}

int pol_metrics_register(pol_metrics_collect_fn *fn, void *ctx)
{
    if (!fn)
        return -EINVAL;
    for (unsigned i = 0; i < POL_METRICS_COLLECTORS_MAX; i++) {
        if (atomic_load(&g.coll[i].fn))
            continue;
        atomic_store_explicit(&g.coll[i].ctx, ctx, memory_order_relaxed);
        atomic_store_explicit(&g.coll[i].fn, fn, memory_order_release);
        return 0;
    }
    return -ENOSPC;
}

void pol_metrics_unregister(pol_metrics_collect_fn *fn, void *ctx)
{
    for (unsigned i = 0; i < POL_METRICS_COLLECTORS_MAX; i++)
        if (atomic_load(&g.coll[i].fn) == fn && atomic_load(&g.coll[i].ctx) == ctx)
            atomic_store_explicit(&g.coll[i].fn, NULL, memory_order_release);
}

/* ---------------------------------------------------------------------------------------------
 * Shards
 */

int pol_metrics_shard_start(struct eng_shard *sh, unsigned index)
{
    ENG_ASSERT(index < g.shard_count);
    struct mshard *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->sh = sh;
    self = m;
    atomic_store_explicit(&g.shards[index], m, memory_order_release);
    return 0;
}

void pol_metrics_shard_stop(unsigned index)
{
    ENG_ASSERT(index < g.shard_count);
    ENG_ASSERT(atomic_load(&g.shards[index]) == self);
    /* The block stays published (and is freed by pol_metrics_fini, after every shard
     * stopped): a scrape running on another shard may still be reading it. */
    self = NULL;
}

static unsigned bucket_of(uint64_t us)
{
    unsigned i = 0;
    while (i < POL_METRICS_LAT_BOUNDS && us > lat_bounds_us[i])
        i++;
    return i;
}

bool pol_metrics_enabled(void)
{
    return self != NULL;
}

void pol_metrics_request(uint32_t vslot)
{
    if (self && vslot < V)
        M_INC(self->requests[vslot]);
}

void pol_metrics_reply(uint32_t vslot, const char *action, size_t len, uint64_t us)
{
    struct mshard *m = self;
    if (!m || vslot >= V)
        return;
    M_INC(m->replies[vslot][pol_metrics_action_of(action, len)]);
    M_INC(m->lat[vslot][bucket_of(us)]);
    M_ADD(m->lat_sum_us[vslot], us);
}

void pol_metrics_failure(uint32_t vslot, bool timeout, uint64_t us)
{
    struct mshard *m = self;
    if (!m || vslot >= V)
        return;
    if (timeout) {
        M_INC(m->timeouts[vslot]);
        return;
    }
    M_INC(m->failed[vslot]);
    M_INC(m->lat[vslot][bucket_of(us)]);
    M_ADD(m->lat_sum_us[vslot], us);
}

void pol_metrics_plugin_step(uint32_t pslot, uint64_t us)
{
    struct mshard *m = self;
    if (!m || pslot >= P)
        return;
    M_INC(m->pl_lat[pslot][bucket_of(us)]);
    M_ADD(m->pl_sum_us[pslot], us);
}

void pol_metrics_plugin_step_ticks(uint32_t pslot, uint64_t ticks)
{
    /* A thread moved between CPUs can see a slightly smaller TSC: a huge difference is 0. */
    if (ticks > (UINT64_MAX >> 1))
        ticks = 0;
    pol_metrics_plugin_step(pslot, (uint64_t)((double)ticks * g.us_per_tick));
}

void pol_metrics_protocol_error(void)
{
    if (self)
        M_INC(self->proto_errors);
}

void pol_metrics_no_vhost(void)
{
    if (self)
        M_INC(self->no_vhost);
}

/* ---------------------------------------------------------------------------------------------
 * Per-shard sources (shard thread)
 */

static void source_snap(struct msource *m)
{
    uint64_t v[POL_METRICS_SOURCE_FIELDS_MAX] = {0};
    m->fn(m->ctx, v);
    for (unsigned i = 0; i < m->desc->field_count; i++)
        M_SET(m->cur[i], v[i]);
}

int pol_metrics_source_add(const struct pol_metrics_source_desc *desc, const char *label_value,
                           pol_metrics_snap_fn *fn, void *ctx)
{
    struct mshard *m = self;
    if (!desc || !fn || !desc->label_key || !desc->fields || desc->field_count == 0 ||
        desc->field_count > POL_METRICS_SOURCE_FIELDS_MAX)
        return -EINVAL;
    if (!m)
        return 0;
    const char *lv = label_value ? label_value : "";
    struct msource *e = NULL;
    /* A removed entry of the same family and label value carries its counters over. */
    for (unsigned i = 0; i < m->nsrc && !e; i++)
        if (!m->src[i].fn && m->src[i].desc == desc &&
            strncmp(m->src[i].label, lv, POL_METRICS_NAME_BYTES - 1) == 0)
            e = &m->src[i];
    if (!e) {
        if (m->nsrc >= POL_METRICS_SOURCES_MAX)
            return -ENOSPC;
        e = &m->src[m->nsrc];
        memset(e, 0, sizeof(*e));
        e->desc = desc;
        snprintf(e->label, sizeof(e->label), "%s", lv);
        __atomic_store_n(&m->nsrc, m->nsrc + 1, __ATOMIC_RELEASE);
    }
    e->fn = fn;
    e->ctx = ctx;
    source_snap(e);
    return 0;
}

void pol_metrics_source_remove(void *ctx)
{
    struct mshard *m = self;
    for (unsigned i = 0; m && i < m->nsrc; i++) {
        struct msource *e = &m->src[i];
        if (!e->fn || e->ctx != ctx)
            continue;
        source_snap(e);
        for (unsigned f = 0; f < e->desc->field_count; f++) {
            if (!e->desc->fields[f].gauge)
                M_SET(e->base[f], e->base[f] + e->cur[f]);
            M_SET(e->cur[f], 0);
        }
        e->fn = NULL;
        e->ctx = NULL;
    }
}

void pol_metrics_shard_snapshot(const struct pol_shard_stats *ps, const struct pol_sstore_stats *ss)
{
    struct msnap *s = self ? &self->snap : NULL;
    if (!s)
        return;
    for (unsigned i = 0; i < self->nsrc; i++)
        if (self->src[i].fn)
            source_snap(&self->src[i]);
    M_SET(s->built, ps->requests);
    M_SET(s->replies, ps->replies);
    M_SET(s->failed, ps->failed);
    M_SET(s->timeouts, ps->timeouts);
    M_SET(s->shed, ps->no_request);
    M_SET(s->session_full, ps->session_full);
    M_SET(s->session_nomem, ps->session_nomem);
    if (!ss)
        return;
    M_SET(s->sessions, ss->sessions);
    M_SET(s->session_bytes, ss->bytes_used);
    M_SET(s->hits, ss->hits);
    M_SET(s->misses, ss->misses);
    M_SET(s->waits, ss->waits);
    M_SET(s->evicted, ss->evicted);
    M_SET(s->expired, ss->expired);
    M_SET(s->too_big, ss->too_big);
    M_SET(s->store_failed, ss->store_failed);
}

/* ---------------------------------------------------------------------------------------------
 * Exposition
 */

void pol_metrics_label(char *buf, size_t buf_len, const char *key, const char *value)
{
    size_t n = strnlen(buf, buf_len);
    int w = snprintf(buf + n, buf_len - n, "%s%s=\"", n ? "," : "", key);
    if (w < 0 || (size_t)w >= buf_len - n)
        return;
    n += (size_t)w;
    for (const char *v = value; *v && n + 3 < buf_len; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            buf[n++] = '\\';
            buf[n++] = *v == '\n' ? 'n' : *v;
        } else {
            buf[n++] = *v;
        }
    }
    if (n + 1 < buf_len)
        buf[n++] = '"';
    buf[n] = '\0';
}

void pol_metrics_write_head(struct eng_http_body *out, const char *name, const char *type,
                            const char *help)
{
    eng_http_body_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void pol_metrics_write_value(struct eng_http_body *out, const char *name, const char *labels,
                             uint64_t value)
{
    if (labels && *labels)
        eng_http_body_printf(out, "%s{%s} %llu\n", name, labels, (unsigned long long)value);
    else
        eng_http_body_printf(out, "%s %llu\n", name, (unsigned long long)value);
}

typedef uint64_t mfield_fn(const struct mshard *m, size_t i, size_t j);

static uint64_t sum_shards(mfield_fn *f, size_t i, size_t j)
{
    uint64_t t = 0;
    for (unsigned s = 0; s < g.shard_count; s++) {
        const struct mshard *m = atomic_load_explicit(&g.shards[s], memory_order_acquire);
        if (m)
            t += f(m, i, j);
    }
    return t;
}

static uint64_t f_requests(const struct mshard *m, size_t i, size_t j)
{
    (void)j;
    return M_GET(m->requests[i]);
}
static uint64_t f_failed(const struct mshard *m, size_t i, size_t j)
{
    (void)j;
    return M_GET(m->failed[i]);
}
static uint64_t f_timeouts(const struct mshard *m, size_t i, size_t j)
{
    (void)j;
    return M_GET(m->timeouts[i]);
}
static uint64_t f_replies(const struct mshard *m, size_t i, size_t j)
{
    return M_GET(m->replies[i][j]);
}
static uint64_t f_lat(const struct mshard *m, size_t i, size_t j)
{
    return M_GET(m->lat[i][j]);
}
static uint64_t f_lat_sum(const struct mshard *m, size_t i, size_t j)
{
    (void)j;
    return M_GET(m->lat_sum_us[i]);
}
static uint64_t f_pl_lat(const struct mshard *m, size_t i, size_t j)
{
    return M_GET(m->pl_lat[i][j]);
}
static uint64_t f_pl_sum(const struct mshard *m, size_t i, size_t j)
{
    (void)j;
    return M_GET(m->pl_sum_us[i]);
}

/* The value of field f of every entry of desc d with label value lab, over every shard. */
static uint64_t source_sum(const struct pol_metrics_source_desc *d, const char *lab, unsigned f,
                           bool max)
{
    uint64_t t = 0;
    for (unsigned s = 0; s < g.shard_count; s++) {
        const struct mshard *m = atomic_load_explicit(&g.shards[s], memory_order_acquire);
        unsigned n = m ? __atomic_load_n(&m->nsrc, __ATOMIC_ACQUIRE) : 0;
        for (unsigned i = 0; i < n; i++) {
            const struct msource *e = &m->src[i];
            if (e->desc != d || strcmp(e->label, lab) != 0)
                continue;
            uint64_t v = M_GET(e->base[f]) + M_GET(e->cur[f]);
            t = max ? (v > t ? v : t) : t + v;
        }
    }
    return t;
}

/* Whether entry (s2, j) is the first, in shard and entry order from (s, i), with its label. */
static bool label_first(unsigned s, unsigned i, unsigned s2, unsigned j,
                        const struct pol_metrics_source_desc *d, const char *lab)
{
    for (unsigned a = s; a <= s2; a++) {
        const struct mshard *m = atomic_load_explicit(&g.shards[a], memory_order_acquire);
        unsigned n = m ? __atomic_load_n(&m->nsrc, __ATOMIC_ACQUIRE) : 0;
        for (unsigned b = a == s ? i : 0; b < n && !(a == s2 && b == j); b++)
            if (m->src[b].desc == d && strcmp(m->src[b].label, lab) == 0)
                return false;
        if (a == s2)
            break;
    }
    return true;
}

/* One histogram series: buckets (cumulative), _sum in seconds, _count. */
static void write_hist(struct eng_http_body *out, const char *name, const char *labels,
                       mfield_fn *bucket, mfield_fn *sum, size_t i)
{
    uint64_t cum = 0;
    for (unsigned b = 0; b < B; b++) {
        cum += sum_shards(bucket, i, b);
        eng_http_body_printf(out, "%s_bucket{%s,le=\"%s\"} %llu\n", name, labels,
                             b < POL_METRICS_LAT_BOUNDS ? lat_bounds_s[b] : "+Inf",
                             (unsigned long long)cum);
    }
    uint64_t us = sum_shards(sum, i, 0);
    eng_http_body_printf(out, "%s_sum{%s} %llu.%06llu\n%s_count{%s} %llu\n", name, labels,
                         (unsigned long long)(us / 1000000), (unsigned long long)(us % 1000000),
                         name, labels, (unsigned long long)cum);
}

static void write_vhosts(struct eng_http_body *out)
{
    unsigned nv = atomic_load_explicit(&g.vh_count, memory_order_acquire);
    /* Slot 0 ("_other": names past the table) only once something was counted there. */
    unsigned v0 = sum_shards(f_requests, 0, 0) > 0 ? 0 : 1;
    char lab[256];
    pol_metrics_write_head(out, "ringpolicyd_requests_total", "counter",
                           "Policy requests received, by virtual host.");
    for (unsigned v = v0; v < nv; v++) {
        lab[0] = '\0';
        pol_metrics_label(lab, sizeof(lab), "vhost", g.vh_names[v]);
        pol_metrics_write_value(out, "ringpolicyd_requests_total", lab, sum_shards(f_requests, v, 0));
    }
    pol_metrics_write_head(out, "ringpolicyd_replies_total", "counter",
                           "Replies sent, by virtual host and action word of the first action.");
    for (unsigned v = v0; v < nv; v++)
        for (unsigned a = 0; a < POL_MA_COUNT; a++) {
            uint64_t n = sum_shards(f_replies, v, a);
            if (n == 0 && a != POL_MA_DUNNO)
                continue; /* keeps the page short; dunno is always there */
            lab[0] = '\0';
            pol_metrics_label(lab, sizeof(lab), "vhost", g.vh_names[v]);
            pol_metrics_label(lab, sizeof(lab), "action", action_names[a]);
            pol_metrics_write_value(out, "ringpolicyd_replies_total", lab, n);
        }
    pol_metrics_write_head(out, "ringpolicyd_request_failures_total", "counter",
                           "Requests without a reply from the chain (error_action or close), "
                           "by virtual host and reason.");
    for (unsigned v = v0; v < nv; v++) {
        for (int t = 0; t < 2; t++) {
            lab[0] = '\0';
            pol_metrics_label(lab, sizeof(lab), "vhost", g.vh_names[v]);
            pol_metrics_label(lab, sizeof(lab), "reason", t ? "timeout" : "error");
            pol_metrics_write_value(out, "ringpolicyd_request_failures_total", lab,
                                    sum_shards(t ? f_timeouts : f_failed, v, 0));
        }
    }
    pol_metrics_write_head(out, "ringpolicyd_request_duration_seconds", "histogram",
                           "Time from the session lookup to the answer, by virtual host.");
    for (unsigned v = v0; v < nv; v++) {
        lab[0] = '\0';
        pol_metrics_label(lab, sizeof(lab), "vhost", g.vh_names[v]);
        write_hist(out, "ringpolicyd_request_duration_seconds", lab, f_lat, f_lat_sum, v);
    }
}

static void write_plugins(struct eng_http_body *out)
{
    unsigned np = atomic_load_explicit(&g.pl_count, memory_order_acquire);
    char lab[256];
    pol_metrics_write_head(out, "ringpolicyd_plugin_step_duration_seconds", "histogram",
                           "Time spent in each step of a plugin (not waiting for its "
                           "asynchronous operations), by virtual host and plugin.");
    for (unsigned p = 1; p < np; p++) {
        lab[0] = '\0';
        pol_metrics_label(lab, sizeof(lab), "vhost", g.vh_names[g.pl_vh[p]]);
        pol_metrics_label(lab, sizeof(lab), "plugin", g.pl_names[p]);
        write_hist(out, "ringpolicyd_plugin_step_duration_seconds", lab, f_pl_lat, f_pl_sum, p);
    }
}

#define SNAP_FIELD(f)                                                                              \
    static uint64_t f_snap_##f(const struct mshard *m, size_t i, size_t j)                         \
    {                                                                                              \
        (void)i;                                                                                   \
        (void)j;                                                                                   \
        return M_GET(m->snap.f);                                                                   \
    }
SNAP_FIELD(shed)
SNAP_FIELD(session_full)
SNAP_FIELD(sessions)
SNAP_FIELD(session_bytes)
SNAP_FIELD(hits)
SNAP_FIELD(misses)
SNAP_FIELD(waits)
SNAP_FIELD(evicted)
SNAP_FIELD(expired)
SNAP_FIELD(too_big)
SNAP_FIELD(store_failed)
static uint64_t f_proto(const struct mshard *m, size_t i, size_t j)
{
    (void)i;
    (void)j;
    return M_GET(m->proto_errors);
}
static uint64_t f_novh(const struct mshard *m, size_t i, size_t j)
{
    (void)i;
    (void)j;
    return M_GET(m->no_vhost);
}

static void write_one(struct eng_http_body *out, const char *name, const char *type,
                      const char *help, uint64_t v)
{
    pol_metrics_write_head(out, name, type, help);
    pol_metrics_write_value(out, name, "", v);
}

static void write_policy_scalars(struct eng_http_body *out)
{
    static const struct {
        const char *name, *type, *help;
        mfield_fn *f;
    } tab[] = {
        {"ringpolicyd_protocol_errors_total", "counter",
         "Connections closed for a malformed or oversized policy request.", f_proto},
        {"ringpolicyd_no_vhost_total", "counter",
         "Requests closed because no virtual host matched.", f_novh},
        {"ringpolicyd_requests_shed_total", "counter",
         "Requests shed because no request slot or arena was free.", f_snap_shed},
        {"ringpolicyd_session_cache_sessions", "gauge", "Sessions in the Memory session cache.",
         f_snap_sessions},
        {"ringpolicyd_session_cache_bytes", "gauge", "Bytes used by the Memory session cache.",
         f_snap_session_bytes},
        {"ringpolicyd_session_cache_hits_total", "counter", "Session lookups that found one.",
         f_snap_hits},
        {"ringpolicyd_session_cache_misses_total", "counter", "Session lookups that found none.",
         f_snap_misses},
        {"ringpolicyd_session_cache_waits_total", "counter",
         "Requests that queued behind another request of the same instance.", f_snap_waits},
        {"ringpolicyd_session_cache_evicted_total", "counter", "Sessions evicted (LRU).",
         f_snap_evicted},
        {"ringpolicyd_session_cache_expired_total", "counter", "Sessions expired.",
         f_snap_expired},
        {"ringpolicyd_session_cache_too_big_total", "counter",
         "Sessions not stored: larger than max_session_bytes.", f_snap_too_big},
        {"ringpolicyd_session_cache_store_failed_total", "counter",
         "Sessions not stored: no memory even after evicting.", f_snap_store_failed},
        {"ringpolicyd_session_cache_full_total", "counter",
         "Requests given a throw-away session: every entry was held.", f_snap_session_full},
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        write_one(out, tab[i].name, tab[i].type, tab[i].help, sum_shards(tab[i].f, 0, 0));
}

static void write_engine(struct eng_http_body *out)
{
    static const char *const reasons[ENG_CLOSE_REASON_COUNT] = {
        "peer", "reset", "app", "oversize", "nomem", "shutdown", "error"};
    if (!g.e)
        return;
    struct eng_stats st;
    eng_stats_sum(g.e, &st);
    write_one(out, "ringpolicyd_connections_open", "gauge",
              "Connections open now (policy and HTTP).", st.conns_open);
    write_one(out, "ringpolicyd_connections_accepted_total", "counter",
              "Connections accepted (policy and HTTP).", st.accepted);
    pol_metrics_write_head(out, "ringpolicyd_connections_closed_total", "counter",
                           "Connections closed, by reason.");
    for (unsigned r = 0; r < ENG_CLOSE_REASON_COUNT; r++) {
        char lab[64] = "";
        pol_metrics_label(lab, sizeof(lab), "reason", reasons[r]);
        pol_metrics_write_value(out, "ringpolicyd_connections_closed_total", lab, st.closed[r]);
    }
    write_one(out, "ringpolicyd_accept_paused_total", "counter",
              "Times accepting stopped at max_connections.", st.accept_paused);
    write_one(out, "ringpolicyd_accept_errors_total", "counter", "Failed accepts (EMFILE...).",
              st.accept_errors);
    write_one(out, "ringpolicyd_input_oversize_total", "counter",
              "Connections closed for input beyond the staging limit.", st.stage_oversize);
    write_one(out, "ringpolicyd_receive_buffers_exhausted_total", "counter",
              "Times the provided receive buffers ran out.", st.recv_enobufs);
    write_one(out, "ringpolicyd_bytes_received_total", "counter", "Bytes received.", st.bytes_in);
    write_one(out, "ringpolicyd_bytes_sent_total", "counter", "Bytes sent.", st.bytes_out);
    write_one(out, "ringpolicyd_xshard_messages_total", "counter",
              "Messages between shards.", st.xmsg_sent);
}

/* A per-shard engine counter, one series per running shard. */
static void write_shard_counter(struct eng_http_body *out, const char *name, const char *help,
                                size_t off)
{
    pol_metrics_write_head(out, name, "counter", help);
    for (unsigned s = 0; s < g.shard_count; s++) {
        const struct mshard *m = atomic_load_explicit(&g.shards[s], memory_order_acquire);
        if (!m || !m->sh)
            continue;
        const uint64_t *v = (const uint64_t *)(const void *)((const char *)eng_shard_stats(m->sh) +
                                                             off);
        eng_http_body_printf(out, "%s{shard=\"%u\"} %llu\n", name, s,
                             (unsigned long long)__atomic_load_n(v, __ATOMIC_RELAXED));
    }
}

static void write_shards(struct eng_http_body *out)
{
    write_shard_counter(out, "ringpolicyd_shard_turns_total", "Event loop turns, by shard.",
                        offsetof(struct eng_stats, turns));
    write_shard_counter(out, "ringpolicyd_shard_turns_slow_total",
                        "Event loop turns longer than the warning threshold, by shard.",
                        offsetof(struct eng_stats, turns_slow));
    /* The engine's turn histogram has power-of-two buckets in microseconds; its sum is not
     * kept, so the busy time is estimated from the bucket midpoints. */
    pol_metrics_write_head(out, "ringpolicyd_shard_busy_seconds_total", "counter",
                           "Estimated time spent in loop turns (from the turn histogram's "
                           "bucket midpoints), by shard.");
    for (unsigned s = 0; s < g.shard_count; s++) {
        const struct mshard *m = atomic_load_explicit(&g.shards[s], memory_order_acquire);
        if (!m || !m->sh)
            continue;
        const struct eng_stats *st = eng_shard_stats(m->sh);
        double us = 0;
        for (unsigned b = 0; b < ENG_TURN_HIST_BUCKETS; b++)
            us += (double)M_GET(st->turn_us_hist[b]) * (b == 0 ? 1.0 : 1.5 * (double)(1u << b));
        eng_http_body_printf(out, "ringpolicyd_shard_busy_seconds_total{shard=\"%u\"} %.6f\n", s,
                             us / 1e6);
    }
}

/* Every source family: one head per field, one sample per label value, summed over shards and
 * over every entry of that label value (max fields: the largest). */
static void write_sources(struct eng_http_body *out)
{
    const struct pol_metrics_source_desc *done[POL_METRICS_SOURCES_MAX];
    unsigned ndone = 0;
    for (unsigned s = 0; s < g.shard_count; s++) {
        const struct mshard *m = atomic_load_explicit(&g.shards[s], memory_order_acquire);
        unsigned n = m ? __atomic_load_n(&m->nsrc, __ATOMIC_ACQUIRE) : 0;
        for (unsigned i = 0; i < n; i++) {
            const struct pol_metrics_source_desc *d = m->src[i].desc;
            bool seen = false;
            for (unsigned k = 0; k < ndone && !seen; k++)
                seen = done[k] == d;
            if (seen || ndone >= POL_METRICS_SOURCES_MAX)
                continue;
            done[ndone++] = d;
            for (unsigned f = 0; f < d->field_count; f++) {
                const struct pol_metrics_field *fd = &d->fields[f];
                pol_metrics_write_head(out, fd->name, fd->gauge ? "gauge" : "counter", fd->help);
                /* Each label value once, from the first shard and entry that has it. */
                for (unsigned s2 = s; s2 < g.shard_count; s2++) {
                    const struct mshard *m2 =
                        atomic_load_explicit(&g.shards[s2], memory_order_acquire);
                    unsigned n2 = m2 ? __atomic_load_n(&m2->nsrc, __ATOMIC_ACQUIRE) : 0;
                    for (unsigned j = s2 == s ? i : 0; j < n2; j++) {
                        const struct msource *e = &m2->src[j];
                        if (e->desc != d || !label_first(s, i, s2, j, d, e->label))
                            continue;
                        char lab[256] = "";
                        pol_metrics_label(lab, sizeof(lab), d->label_key, e->label);
                        pol_metrics_write_value(out, fd->name, lab,
                                                source_sum(d, e->label, f, fd->max));
                    }
                }
            }
        }
    }
}

static void write_reloads(struct eng_http_body *out)
{
    pol_metrics_write_head(out, "ringpolicyd_config_reloads_total", "counter",
                           "Configuration reloads (SIGHUP), by result.");
    pol_metrics_write_value(out, "ringpolicyd_config_reloads_total", "result=\"ok\"",
                            atomic_load(&g.reloads_ok));
    pol_metrics_write_value(out, "ringpolicyd_config_reloads_total", "result=\"failed\"",
                            atomic_load(&g.reloads_failed));
    write_one(out, "ringpolicyd_config_last_reload_success_timestamp_seconds", "gauge",
              "When the last successful reload happened (0: none).",
              atomic_load(&g.reload_ok_time_s));
    pol_metrics_write_head(out, "ringpolicyd_build_info", "gauge", "Version of ringpolicyd.");
    eng_http_body_printf(out, "ringpolicyd_build_info{version=\"%s\",shards=\"%u\"} 1\n",
                         RINGPOLICYD_VERSION, g.shard_count);
}

void pol_metrics_write(struct eng_http_body *out)
{
    write_vhosts(out);
    write_plugins(out);
    write_policy_scalars(out);
    write_engine(out);
    write_shards(out);
    write_sources(out);
    write_reloads(out);
    for (unsigned i = 0; i < POL_METRICS_COLLECTORS_MAX; i++) {
        pol_metrics_collect_fn *fn =
            atomic_load_explicit(&g.coll[i].fn, memory_order_acquire);
        if (fn)
            fn(atomic_load_explicit(&g.coll[i].ctx, memory_order_relaxed), out);
    }
}
