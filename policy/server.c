/*
 * server.c: the configuration model (server.h): global options, <Connection>, <SessionCache>
 * and <VirtualHost> blocks, virtual host selection, -d and --cron.
 *
 * Main thread, start-up only; the built model is read-only and shared by the shards. Errors are
 * one sentence "FILE:LINE: ..." and stop the build. 2.05 compatibility: options 2.05 reads are
 * parsed as leniently as Perl reads them (numbers by their numeric prefix); unknown global,
 * connection, session cache and virtual host options are ignored with a level-2 warning naming
 * file:line (real files carry 1.x options). ringpolicyd's own options are strictly typed.
 * The pre-fork pool options (min_servers ... max_requests) are accepted and kept as hints;
 * nothing depends on them.
 */
#include "server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng/assert.h"
#include "eng/dns.h"
#include "eng/log.h"
#include "ldap_conn.h"
#include "proto.h"
#include "mc_conn.h"
#include "redis_conn.h"
#include "ringpolicyd_config.h"
#include "sql_conn.h"
#include "values.h"

void pol_errf(char *err, size_t err_len, const char *file, unsigned line, const char *fmt, ...)
{
    int n = line ? snprintf(err, err_len, "%s:%u: ", file ? file : "?", line)
                 : snprintf(err, err_len, "%s: ", file ? file : "?");
    if (n < 0 || (size_t)n >= err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
    va_end(ap);
}

void pol_server_warn(struct pol_server *s, const char *file, unsigned line, const char *fmt, ...)
{
    char msg[1024];
    int n = snprintf(msg, sizeof(msg), "%s:%u: ", file ? file : "?", line);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(msg))
        vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    char **w = realloc(s->warnings, sizeof(char *) * (s->warning_count + 1));
    char *copy = strdup(msg);
    if (!w || !copy) {
        free(copy);
        if (w)
            s->warnings = w;
        return; /* a lost warning is not worth failing start-up for */
    }
    s->warnings = w;
    w[s->warning_count++] = copy;
}

/* ---------------------------------------------------------------------------------------------
 * Global options
 */

static void globals_default(struct pol_globals *g)
{
    memset(g, 0, sizeof(*g));
    g->port = "127.0.0.1:12345";
    g->host = "127.0.0.1";
    g->syslog_ident = "mtpolicyd";
    g->syslog_facility = "mail";
    g->log_level = 2;
    g->request_timeout_s = 20;
    g->keepalive_timeout_s = 60;
    g->min_servers = 4;
    g->min_spare_servers = 4;
    g->max_spare_servers = 12;
    g->max_servers = 25;
    g->max_requests = 1000;
    g->plugin_dir = RINGPOLICYD_PLUGIN_DIR;
    g->backend = ENG_BACKEND_AUTO;
    g->max_connections = POL_MAX_CONNECTIONS_DEFAULT;
    g->max_request_bytes = POL_PROTO_REQUEST_BYTES_DEFAULT;
    g->max_line_bytes = POL_PROTO_LINE_BYTES_DEFAULT;
    g->max_attributes = POL_PROTO_ATTRS_DEFAULT;
    g->max_pipelined_bytes = 256u << 10;
    g->drain_timeout_s = 10;
    g->dns_cache_entries = POL_DNS_CACHE_ENTRIES_DEFAULT;
    g->dns_cache_bytes = POL_DNS_CACHE_BYTES_DEFAULT;
}

/* Perl's numeric reading of a 2.05 option: the numeric prefix, negatives as 0. */
static uint32_t perl_uint(const char *v)
{
    double d = pol_num_perl(v, strlen(v));
    if (!(d > 0))
        return 0;
    return d >= 4294967295.0 ? UINT32_MAX : (uint32_t)d;
}

/* Perl truthiness: "" and "0" are false. */
static bool perl_true(const char *v)
{
    return !(v[0] == '\0' || strcmp(v, "0") == 0);
}

/* A strictly typed integer option of ours in [lo, hi]. */
static int strict_uint(const struct pol_cfg_node *o, long long lo, long long hi, uint32_t *out,
                       char *err, size_t err_len)
{
    long long v;
    char why[256];
    const char *t = o->value ? o->value : "";
    if (!pol_value_int(t, strlen(t), &v, why, sizeof(why)) || v < lo || v > hi) {
        pol_errf(err, err_len, o->file, o->line,
                 "%s must be an integer from %lld to %lld, not '%s'", o->name, lo, hi,
                 o->value ? o->value : "");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int backend_parse(const struct pol_cfg_node *o, enum eng_backend *b, char *err,
                         size_t err_len)
{
    const char *v = o->value ? o->value : "";
    if (strcmp(v, "auto") == 0)
        *b = ENG_BACKEND_AUTO;
    else if (strcmp(v, "uring") == 0 || strcmp(v, "io_uring") == 0)
        *b = ENG_BACKEND_URING;
    else if (strcmp(v, "epoll") == 0)
        *b = ENG_BACKEND_EPOLL;
    else {
        pol_errf(err, err_len, o->file, o->line, "backend must be auto, uring or epoll, not '%s'",
                 v);
        return -1;
    }
    return 0;
}

static int log_level_parse(const char *v)
{
    long long lv;
    char why[256];
    if (!pol_value_int(v, strlen(v), &lv, why, sizeof(why)) || lv < 0)
        return 2; /* 2.05: a non-numeric level means the default */
    return lv > 4 ? 4 : (int)lv;
}

/* The 2.05 options: text, or read the Perl way. Returns false when o is not one of them. */
static bool global_205(struct pol_globals *g, const struct pol_cfg_node *o)
{
    const char *n = o->name, *v = o->value ? o->value : "";
    static const struct {
        const char *name;
        size_t off;
    } texts[] = {
#define T(f) {#f, offsetof(struct pol_globals, f)}
        T(port),   T(host),     T(user),         T(group),           T(pid_file),
        T(chroot), T(log_file), T(syslog_ident), T(syslog_facility), T(program_name),
#undef T
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (strcmp(n, texts[i].name) == 0) {
            *(const char **)(void *)((char *)g + texts[i].off) = v;
            return true;
        }
    static const struct {
        const char *name;
        size_t off;
    } nums[] = {
#define N(o, f) {o, offsetof(struct pol_globals, f)}
        N("request_timeout", request_timeout_s),
        N("keepalive_timeout", keepalive_timeout_s),
        N("max_keepalive", max_keepalive),
        N("min_servers", min_servers),
        N("min_spare_servers", min_spare_servers),
        N("max_spare_servers", max_spare_servers),
        N("max_servers", max_servers),
        N("max_requests", max_requests),
#undef N
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        if (strcmp(n, nums[i].name) == 0) {
            *(uint32_t *)(void *)((char *)g + nums[i].off) = perl_uint(v);
            return true;
        }
    if (strcmp(n, "log_level") == 0)
        g->log_level = log_level_parse(v);
    else if (strcmp(n, "vhost_by_policy_context") == 0)
        g->vhost_by_policy_context = perl_true(v);
    else
        return false;
    return true;
}

/* dns_servers: the resolver's servers (eng_dns_servers_check); empty means the system's. */
static int dns_servers_parse(struct pol_globals *g, const struct pol_cfg_node *o, char *err,
                             size_t err_len)
{
    const char *v = o->value ? o->value : "";
    char why[256];
    if (eng_dns_servers_check(v, why, sizeof(why)) != 0) {
        pol_errf(err, err_len, o->file, o->line, "dns_servers: %s", why);
        return -1;
    }
    g->dns_servers = v[0] ? v : NULL;
    return 1;
}

/* allow: the client allow-list (allow.h). */
static int allow_parse(struct pol_globals *g, const struct pol_cfg_node *o, char *err,
                       size_t err_len)
{
    char why[256];
    if (pol_allow_parse(o->value ? o->value : "", &g->allow, why, sizeof(why)) != 0) {
        pol_errf(err, err_len, o->file, o->line, "allow: %s", why);
        return -1;
    }
    return 1;
}

/* max_staging_bytes_per_shard must hold four of the largest staging buffers: one connection's
 * input (the larger of a request plus 1 KiB and max_pipelined_bytes, as daemon.c sizes
 * stage_bytes_max) plus one 4 KiB receive buffer. Checked after every global option was read. */
static int staging_check(const struct pol_globals *g, const struct pol_cfg_node *root, char *err,
                         size_t err_len)
{
    uint64_t stage = (uint64_t)g->max_request_bytes + 1024;
    if (stage < g->max_pipelined_bytes)
        stage = g->max_pipelined_bytes;
    uint64_t min = 4 * (stage + 4096);
    if (g->max_staging_bytes_per_shard == 0 || g->max_staging_bytes_per_shard >= min)
        return 0;
    const struct pol_cfg_node *o = NULL;
    for (const struct pol_cfg_node *c = root->children; c; c = c->next)
        if (!c->is_block && strcmp(c->name, "max_staging_bytes_per_shard") == 0)
            o = c;
    pol_errf(err, err_len, o ? o->file : root->file, o ? o->line : 0,
             "max_staging_bytes_per_shard must be 0 (64 MiB) or at least %llu (4 x (the larger "
             "of max_request_bytes + 1024 and max_pipelined_bytes, plus 4096)), not %u",
             (unsigned long long)min, g->max_staging_bytes_per_shard);
    return -1;
}

/* ringpolicyd's own options. Returns 1 when handled, 0 when unknown, -1 on error. */
static int global_ours(struct pol_globals *g, const struct pol_cfg_node *o, char *err,
                       size_t err_len)
{
    const char *n = o->name, *v = o->value ? o->value : "";
    uint32_t u = 0;
    if (strcmp(n, "error_action") == 0)
        g->error_action = v;
    else if (strcmp(n, "plugin_dir") == 0)
        g->plugin_dir = v;
    else if (strcmp(n, "http_port") == 0)
        g->http_port = v;
    else if (strcmp(n, "backend") == 0)
        return backend_parse(o, &g->backend, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "shards") == 0) {
        if (strict_uint(o, 0, 1024, &u, err, err_len) != 0)
            return -1;
        g->shards = u;
    } else if (strcmp(n, "max_connections") == 0)
        return strict_uint(o, 1, 1 << 20, &g->max_connections, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "max_request_bytes") == 0)
        return strict_uint(o, 64, 64 << 20, &g->max_request_bytes, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "max_line_bytes") == 0)
        return strict_uint(o, 16, 64 << 20, &g->max_line_bytes, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "max_attributes") == 0)
        return strict_uint(o, 1, 65000, &g->max_attributes, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "max_pipelined_bytes") == 0)
        return strict_uint(o, 0, 1u << 30, &g->max_pipelined_bytes, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "dns_servers") == 0)
        return dns_servers_parse(g, o, err, err_len);
    else if (strcmp(n, "dns_cache_entries") == 0)
        return strict_uint(o, 0, 1u << 24, &g->dns_cache_entries, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "dns_cache_bytes") == 0)
        return strict_uint(o, 4096, 1u << 31, &g->dns_cache_bytes, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "drain_timeout") == 0)
        return strict_uint(o, 0, 86400, &g->drain_timeout_s, err, err_len) == 0 ? 1 : -1;
    else if (strcmp(n, "allow") == 0)
        return allow_parse(g, o, err, err_len);
    else if (strcmp(n, "max_staging_bytes_per_shard") == 0)
        return strict_uint(o, 0, UINT32_MAX, &g->max_staging_bytes_per_shard, err, err_len) == 0
                   ? 1
                   : -1;
    else
        return 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * <Connection NAME> and <SessionCache>
 */

/* Whether `name` is an option of connection module `module` (spec 9). */
static bool conn_option_known(const char *module, const char *name)
{
    static const struct {
        const char *module;
        const char *opts[8];
    } known[] = {
        {"Sql", {"dsn", "user", "password"}},
        {"Memcached", {"servers", "namespace", "debug"}},
        {"Redis", {"server", "sock", "sentinels", "service", "password", "db", "debug"}},
        {"Ldap", {"host", "port", "starttls", "binddn", "password", "timeout", "keepalive"}},
    };
    if (strcmp(name, "module") == 0)
        return true;
    for (size_t m = 0; m < sizeof(known) / sizeof(known[0]); m++) {
        if (strcmp(known[m].module, module) != 0)
            continue;
        for (size_t i = 0; i < 8 && known[m].opts[i]; i++)
            if (strcmp(name, known[m].opts[i]) == 0)
                return true;
    }
    return false;
}

/* Other options and blocks are warned about and ignored (real files carry 1.x options). */
static void conn_check_options(struct pol_server *s, const struct pol_cfg_node *b,
                               const char *module)
{
    for (const struct pol_cfg_node *o = b->children; o; o = o->next)
        if (o->is_block || !conn_option_known(module, o->name))
            pol_server_warn(s, o->file, o->line, "Connection %s: %s %s ignored", b->value,
                            o->is_block ? "block" : "option", o->name);
}

/* Connection modules with an implementation (pol_conn_ops); add a line per module. */
static const struct pol_conn_ops *const conn_modules[] = {
    &pol_sql_conn_ops, /* Sql (owner: sql), sql.c */
    &pol_conn_Memcached, /* Memcached (owner: memcached), mc.c */
    &pol_conn_Redis, /* Redis (owner: redis), redis.c */
    &pol_conn_Ldap, /* Ldap (owner: ldap), ldap.c: options checked at start-up */
    NULL,
};

static int conn_add(struct pol_server *s, const struct pol_cfg_node *b, char *err, size_t err_len)
{
    static const char *const modules[] = {"Sql", "Memcached", "Redis", "Ldap"};
    const char *name = b->value ? b->value : "";
    const struct pol_cfg_node *m = pol_cfg_option(b, "module");
    if (!m || !m->value || !*m->value) {
        pol_errf(err, err_len, b->file, b->line, "no module defined for connection %s!", name);
        return -1;
    }
    bool known = false;
    for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
        known = known || strcmp(m->value, modules[i]) == 0;
    if (!known) {
        pol_errf(err, err_len, m->file, m->line,
                 "could not load connection %s: unknown module %s (Sql, Memcached, Redis or Ldap)",
                 name, m->value);
        return -1;
    }
    struct pol_conn_def *n = realloc(s->conns, sizeof(*n) * (s->conn_count + 1));
    if (!n) {
        pol_errf(err, err_len, b->file, b->line, "out of memory");
        return -1;
    }
    s->conns = n;
    const struct pol_conn_ops *ops = NULL;
    for (size_t i = 0; conn_modules[i] && !ops; i++)
        if (strcmp(conn_modules[i]->module, m->value) == 0)
            ops = conn_modules[i];
    n[s->conn_count++] = (struct pol_conn_def){
        .name = name, .module = m->value, .file = b->file, .line = b->line, .block = b, .ops = ops};
    conn_check_options(s, b, m->value);
    return 0;
}

/* After every <Connection> block was read (s->conns no longer moves): opens those whose module
 * has an implementation (every module has one now; a NULL ops would be kept as a definition
 * only, and plugins that need it fail to start in their own way). */
static int conns_open(struct pol_server *s, char *err, size_t err_len)
{
    for (uint32_t i = 0; i < s->conn_count; i++) {
        struct pol_conn_def *d = &s->conns[i];
        if (!d->ops)
            continue;
        char why[512] = "";
        if (d->ops->open(s, d, why, sizeof(why)) != 0) {
            pol_errf(err, err_len, d->file, d->line, "could not open connection %s: %s", d->name,
                     why[0] ? why : "open failed");
            return -1;
        }
        d->opened = true;
    }
    return 0;
}

static void conns_close(struct pol_server *s)
{
    for (uint32_t i = s->conn_count; i-- > 0;) {
        struct pol_conn_def *d = &s->conns[i];
        if (d->opened && d->ops->close)
            d->ops->close(d);
        d->opened = false;
        d->impl = NULL;
    }
}

const struct pol_conn_def *pol_server_conn(const struct pol_server *s, const char *name)
{
    for (uint32_t i = 0; i < s->conn_count; i++)
        if (strcmp(s->conns[i].name, name) == 0)
            return &s->conns[i];
    return NULL;
}

static int scache_memory_opt(struct pol_server *s, const struct pol_cfg_node *o, char *err,
                             size_t err_len)
{
    struct pol_scache_config *c = &s->scache;
    uint32_t u;
    if (strcmp(o->name, "expire") == 0) {
        c->expire_s = perl_uint(o->value ? o->value : "");
    } else if (strcmp(o->name, "max_sessions") == 0) {
        if (strict_uint(o, 1, 1u << 30, &c->sessions_max, err, err_len) != 0)
            return -1;
    } else if (strcmp(o->name, "max_session_bytes") == 0) {
        if (strict_uint(o, 256, 16u << 20, &c->session_bytes_max, err, err_len) != 0)
            return -1;
    } else if (strcmp(o->name, "max_memory_mb") == 0) {
        if (strict_uint(o, 1, 1u << 20, &u, err, err_len) != 0)
            return -1;
        c->memory_bytes = (size_t)u << 20;
    } else if (strcmp(o->name, "module") != 0) {
        pol_server_warn(s, o->file, o->line, "SessionCache option %s ignored", o->name);
    }
    return 0;
}

static int scache_parse(struct pol_server *s, const struct pol_cfg_node *b, char *err,
                        size_t err_len)
{
    struct pol_scache_config *c = &s->scache;
    const struct pol_cfg_node *m = pol_cfg_option(b, "module");
    c->file = b->file;
    c->line = b->line;
    if (!m || !m->value || !*m->value) {
        pol_errf(err, err_len, b->file, b->line, "no module defined for SessionCache!");
        return -1;
    }
    if (strcmp(m->value, "None") == 0 || strcmp(m->value, "none") == 0) {
        c->kind = POL_SCACHE_NONE;
        return 0;
    }
    if (strcmp(m->value, "Memcached") == 0) { /* scache_mc.h; opened after the connections */
        c->kind = POL_SCACHE_MEMCACHED;
        return pol_scache_mc_parse(b, &c->mc_cfg, err, err_len);
    }
    if (strcmp(m->value, "Redis") == 0) { /* scache_redis.h; opened after the connections */
        c->kind = POL_SCACHE_REDIS;
        return pol_scache_redis_parse(b, &c->redis_cfg, err, err_len);
    }
    if (strcmp(m->value, "Memory") != 0) {
        pol_errf(err, err_len, m->file, m->line,
                 "could not load SessionCache %s: unknown module (None, Memory, Memcached or "
                 "Redis)",
                 m->value);
        return -1;
    }
    c->kind = POL_SCACHE_MEMORY;
    bool mem_set = false;
    for (const struct pol_cfg_node *o = b->children; o; o = o->next) {
        if (o->is_block) {
            pol_server_warn(s, o->file, o->line, "SessionCache block <%s> ignored", o->name);
            continue;
        }
        mem_set = mem_set || strcmp(o->name, "max_memory_mb") == 0;
        if (scache_memory_opt(s, o, err, err_len) != 0)
            return -1;
    }
    if (!mem_set)
        c->memory_bytes = (size_t)c->sessions_max * 1024; /* 1 KiB per session on average */
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * <VirtualHost KEY>
 */

static int vhost_build(struct pol_server *s, struct pol_vhost *vh, const struct pol_cfg_node *b,
                       char *err, size_t err_len)
{
    vh->key = b->value;
    vh->file = b->file;
    vh->line = b->line;
    if (!vh->key || !*vh->key) {
        pol_errf(err, err_len, b->file, b->line,
                 "<VirtualHost> needs a key: the port number or socket path it serves");
        return -1;
    }
    const struct pol_cfg_node *nm = pol_cfg_option(b, "name");
    if (!nm || !nm->value) { /* 2.05 requires it defined; `name =` (empty) is accepted */
        pol_errf(err, err_len, b->file, b->line, "<VirtualHost %s> has no name", vh->key);
        return -1;
    }
    vh->name = nm->value;
    for (const struct pol_cfg_node *c = b->children; c; c = c->next) {
        if (!c->is_block) {
            if (strcmp(c->name, "name") != 0)
                pol_server_warn(s, c->file, c->line, "VirtualHost option %s ignored", c->name);
            continue;
        }
        if (strcmp(c->name, "Plugin") != 0) {
            pol_server_warn(s, c->file, c->line, "VirtualHost block <%s> ignored", c->name);
            continue;
        }
        struct pol_plugin *p = pol_plugin_build(s, c, vh->name, 1, err, err_len);
        if (!p)
            return -1;
        struct pol_plugin **n = realloc(vh->chain.plugins, sizeof(*n) * (vh->chain.count + 1));
        if (!n) {
            pol_plugin_free(p);
            pol_errf(err, err_len, c->file, c->line, "out of memory");
            return -1;
        }
        vh->chain.plugins = n;
        n[vh->chain.count++] = p;
    }
    if (vh->chain.count == 0) {
        pol_errf(err, err_len, b->file, b->line,
                 "no <Plugin> defined for <VirtualHost> on port %s!", vh->key);
        return -1;
    }
    return 0;
}

static uint32_t count_blocks(const struct pol_cfg_node *root, const char *name)
{
    uint32_t n = 0;
    for (const struct pol_cfg_node *c = root->children; c; c = c->next)
        n += c->is_block && strcmp(c->name, name) == 0;
    return n;
}

static int vhosts_build(struct pol_server *s, const struct pol_cfg_node *root, const char *file,
                        char *err, size_t err_len)
{
    uint32_t n = count_blocks(root, "VirtualHost");
    if (n == 0) {
        pol_errf(err, err_len, file, 0, "no virtual hosts configured!");
        return -2;
    }
    s->vhosts = calloc(n, sizeof(*s->vhosts));
    if (!s->vhosts) {
        pol_errf(err, err_len, file, 0, "out of memory");
        return -1;
    }
    for (const struct pol_cfg_node *c = root->children; c; c = c->next) {
        if (!c->is_block || strcmp(c->name, "VirtualHost") != 0)
            continue;
        struct pol_vhost *vh = &s->vhosts[s->vhost_count];
        vh->index = s->vhost_count++;
        if (vhost_build(s, vh, c, err, err_len) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Building the server
 */

static int root_walk(struct pol_server *s, const struct pol_cfg_node *root, char *err,
                     size_t err_len)
{
    bool scache_seen = false;
    for (const struct pol_cfg_node *c = root->children; c; c = c->next) {
        if (!c->is_block) {
            if (global_205(&s->g, c))
                continue;
            int rc = global_ours(&s->g, c, err, err_len);
            if (rc < 0)
                return -1;
            if (rc == 0)
                pol_server_warn(s, c->file, c->line, "unknown option %s ignored", c->name);
        } else if (strcmp(c->name, "Connection") == 0) {
            if (conn_add(s, c, err, err_len) != 0)
                return -1;
        } else if (strcmp(c->name, "SessionCache") == 0) {
            if (scache_seen) {
                pol_errf(err, err_len, c->file, c->line, "more than one <SessionCache> block");
                return -1;
            }
            scache_seen = true;
            if (scache_parse(s, c, err, err_len) != 0)
                return -1;
        } else if (strcmp(c->name, "VirtualHost") != 0) {
            pol_server_warn(s, c->file, c->line, "unknown block <%s> ignored", c->name);
        }
    }
    return staging_check(&s->g, root, err, err_len);
}

int pol_server_from_cfg(struct pol_cfg *cfg, struct pol_server **out, char *err, size_t err_len)
{
    struct pol_server *s = calloc(1, sizeof(*s));
    if (!s) {
        pol_cfg_free(cfg);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    s->cfg = cfg;
    globals_default(&s->g);
    s->scache = (struct pol_scache_config){.kind = POL_SCACHE_NONE,
                                           .expire_s = 300,
                                           .sessions_max = 65536,
                                           .session_bytes_max = 16384};
    s->depth_max = 1;
    const struct pol_cfg_node *root = pol_cfg_root(cfg);
    const char *file = root->file ? root->file : "?";
    /* Connections and globals first: plugins refer to both (plugin_dir, <Connection>). */
    int rc = root_walk(s, root, err, err_len);
    if (rc == 0)
        rc = conns_open(s, err, err_len);
    if (rc == 0 && s->scache.kind == POL_SCACHE_MEMCACHED) {
        char why[256] = "";
        s->scache.mc = pol_scache_mc_open(s, &s->scache.mc_cfg, why, sizeof(why));
        if (!s->scache.mc) {
            pol_errf(err, err_len, s->scache.file, s->scache.line, "SessionCache: %s", why);
            rc = -1;
        }
    }
    if (rc == 0 && s->scache.kind == POL_SCACHE_REDIS) {
        char why[256] = "";
        s->scache.redis = pol_scache_redis_open(s, &s->scache.redis_cfg, why, sizeof(why));
        if (!s->scache.redis) {
            pol_errf(err, err_len, s->scache.file, s->scache.line, "SessionCache: %s", why);
            rc = -1;
        }
    }
    if (rc == 0)
        rc = vhosts_build(s, root, file, err, err_len);
    if (rc != 0) {
        pol_server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int pol_server_load(const char *path, struct pol_server **out, char *err, size_t err_len)
{
    if (access(path, F_OK) != 0) {
        snprintf(err, err_len, "configuration file %s does not exist!", path);
        return -2;
    }
    struct pol_cfg *cfg = NULL;
    struct pol_cfg_error ce;
    if (pol_cfg_load(path, &cfg, &ce) != 0) {
        pol_cfg_error_format(&ce, err, err_len);
        return -1;
    }
    return pol_server_from_cfg(cfg, out, err, err_len);
}

int pol_server_from_text(const char *name, const char *text, struct pol_server **out, char *err,
                         size_t err_len)
{
    struct pol_cfg_error ce;
    struct pol_cfg *cfg = NULL;
    struct pol_cfg_parser *p = pol_cfg_parser_new(name, ".");
    if (!p) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (pol_cfg_parser_feed(p, text, strlen(text), &ce) != 0) {
        pol_cfg_parser_finish(p, &cfg, &ce); /* frees the parser; the first error stays */
        pol_cfg_error_format(&ce, err, err_len);
        return -1;
    }
    if (pol_cfg_parser_finish(p, &cfg, &ce) != 0) {
        pol_cfg_error_format(&ce, err, err_len);
        return -1;
    }
    return pol_server_from_cfg(cfg, out, err, err_len);
}

void pol_server_free(struct pol_server *s)
{
    if (!s)
        return;
    /* Top-level plugins own their sub-chains; s->plugins is only an index. */
    for (uint32_t v = 0; v < s->vhost_count; v++) {
        for (uint32_t i = 0; i < s->vhosts[v].chain.count; i++)
            pol_plugin_free(s->vhosts[v].chain.plugins[i]);
        free(s->vhosts[v].chain.plugins);
    }
    free(s->vhosts);
    free(s->plugins);
    pol_scache_mc_close(s->scache.mc);
    pol_scache_redis_close(s->scache.redis);
    conns_close(s);
    free(s->conns);
    for (uint32_t i = 0; i < s->warning_count; i++)
        free(s->warnings[i]);
    free(s->warnings);
    pol_plugin_unload_all(s);
    pol_cfg_free(s->cfg);
    free(s);
}

/* ---------------------------------------------------------------------------------------------
 * Using the model
 */

const struct pol_vhost *pol_server_vhost_by_key(const struct pol_server *s, const char *key)
{
    for (uint32_t i = 0; i < s->vhost_count; i++)
        if (strcmp(s->vhosts[i].key, key) == 0)
            return &s->vhosts[i];
    return NULL;
}

const struct pol_vhost *pol_server_select_vhost(const struct pol_server *s, const char *key,
                                                const char *policy_context, size_t pc_len)
{
    if (s->g.vhost_by_policy_context && policy_context && pc_len > 0) {
        /* 2.05 picks an arbitrary one of several with the same name; we take the first. */
        for (uint32_t i = 0; i < s->vhost_count; i++)
            if (strlen(s->vhosts[i].name) == pc_len &&
                memcmp(s->vhosts[i].name, policy_context, pc_len) == 0)
                return &s->vhosts[i];
    }
    return key ? pol_server_vhost_by_key(s, key) : NULL;
}

static void dump_chain(const struct pol_chain *c, FILE *out, int indent)
{
    for (uint32_t i = 0; i < c->count; i++) {
        const struct pol_plugin *p = c->plugins[i];
        fprintf(out, "%*s<Plugin %s> module=%s (%s:%u)%s\n", indent, "", p->name, p->module,
                p->file, p->line, p->on_error_continue ? " on_error=continue" : "");
        for (size_t k = 0; k < p->type->opt_count; k++) {
            const struct pol_opt_value *v = &p->opts[k];
            if (!v->set)
                continue;
            fprintf(out, "%*s%s = \"%s\"%s", indent + 2, "", p->type->opts[k].name, v->text,
                    v->file ? "" : " (default)");
            if (p->uc_keys[k])
                fprintf(out, " uc_%s = \"%s\"", p->type->opts[k].name, p->uc_keys[k]);
            fputc('\n', out);
        }
        dump_chain(&p->sub, out, indent + 2);
    }
}

void pol_server_dump(const struct pol_server *s, FILE *out)
{
    fprintf(out, "----- Virtual Hosts -----\n");
    for (uint32_t i = 0; i < s->vhost_count; i++) {
        const struct pol_vhost *vh = &s->vhosts[i];
        fprintf(out, "<VirtualHost %s> name=%s (%s:%u)\n", vh->key, vh->name, vh->file, vh->line);
        dump_chain(&vh->chain, out, 2);
    }
}

static void cron_chain(const struct pol_chain *c, const char *const *tasks, size_t n)
{
    for (uint32_t i = 0; i < c->count; i++) {
        struct pol_plugin *p = c->plugins[i];
        eng_log(ENG_LOG_INFO, "running cron for plugin %s", p->name);
        char why[512] = "";
        if (p->type->cron && p->type->cron(p, tasks, n, why, sizeof(why)) != 0) {
            /* 2.05 runs the nested chain's cron after the plugin's own, inside the same eval:
             * a failing plugin skips its nested plugins. */
            eng_log(ENG_LOG_ERR, "plugin %s failed in cron: %s", p->name,
                    why[0] ? why : "cron failed");
            continue;
        }
        cron_chain(&p->sub, tasks, n);
    }
}

void pol_server_cron(const struct pol_server *s, const char *const *tasks, size_t task_count)
{
    for (uint32_t i = 0; i < s->vhost_count; i++)
        cron_chain(&s->vhosts[i].chain, tasks, task_count);
}
