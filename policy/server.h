/*
 * server.h: the configuration model built from a pol_cfg tree (internal to policy/): global
 * options, <Connection> definitions, the <SessionCache>, virtual hosts and their plugin chains.
 *
 * Built once on the main thread (pol_server_load / pol_server_from_text), read-only afterwards
 * and shared by every shard. Every start-up error is one sentence "FILE:LINE: ..." in the
 * caller's buffer. The server owns the configuration tree (option texts point into it), every
 * plugin instance and the handles of loaded plugin shared objects; pol_server_free destroys
 * the plugins (type->destroy) and unloads the objects.
 */
#ifndef POL_SERVER_H
#define POL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "allow.h"
#include "config.h"
#include "eng/engine.h"
#include "pol/plugin.h"
#include "scache_mc.h"
#include "scache_redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Start-up error messages. */
#define POL_ERR_MAX 1024

struct pol_chain {
    struct pol_plugin **plugins;
    uint32_t count;
};

struct pol_plugin {
    const struct pol_plugin_type *type;
    const char *name;
    const char *module;
    const char *file;
    unsigned line;
    const char *vhost_name;     /* prefix of pol_log messages */
    struct pol_opt_value *opts; /* type->opt_count entries */
    const char **uc_keys;       /* type->opt_count entries; NULL: no uc_NAME */
    int log_level;              /* default 4 */
    bool on_error_continue;     /* on_error = continue */
    const char *score_field;    /* default "score" */
    char *score_detail_field;   /* score_field + "_detail" */
    const struct pol_server *srv; /* the server it belongs to (connection lookups) */
    struct pol_chain sub;       /* nested <Plugin> blocks (POL_TYPE_CHAIN only) */
    uint32_t index;             /* in pol_server.plugins: per-shard data slot */
    uint32_t depth;             /* 1 for a top-level plugin */
    void *data;                 /* pol_plugin_set_data */
    uint32_t metrics_slot;      /* pol_metrics_assign: its series (by vhost and name) */
    bool created;               /* type->create succeeded: destroy is due */
};

struct pol_vhost {
    const char *key; /* port number as written, or socket path */
    const char *name;
    const char *file;
    unsigned line;
    uint32_t index;
    struct pol_chain chain;
    uint32_t metrics_slot; /* pol_metrics_assign: its series (by name) */
};

enum pol_scache_kind {
    POL_SCACHE_NONE,   /* a fresh session per request (2.05 None) */
    POL_SCACHE_MEMORY, /* in-process, sharded by instance */
    POL_SCACHE_MEMCACHED, /* shared through memcached (scache_mc.h) */
    POL_SCACHE_REDIS,     /* shared through Redis (scache_redis.h) */
};

struct pol_scache_config {
    enum pol_scache_kind kind;
    uint32_t expire_s;          /* default 300 */
    uint32_t sessions_max;      /* whole daemon; divided between shards. Default 65536 */
    uint32_t session_bytes_max; /* largest stored session (serialised). Default 16384 */
    size_t memory_bytes;        /* whole daemon. Default sessions_max * 1 KiB */
    struct pol_scache_mc_config mc_cfg; /* Memcached: its options */
    struct pol_scache_mc *mc;           /* Memcached: opened after the connections */
    struct pol_scache_redis_config redis_cfg; /* Redis: its options */
    struct pol_scache_redis *redis;           /* Redis: opened after the connections */
    const char *file;
    unsigned line;
};

struct pol_conn_ops;

struct pol_conn_def {
    const char *name;
    const char *module; /* Sql, Memcached, Redis, Ldap */
    const char *file;
    unsigned line;
    const struct pol_cfg_node *block;
    const struct pol_conn_ops *ops; /* NULL: no implementation registered for module */
    void *impl;                     /* set by ops->open, owned by the module */
    bool opened;                    /* ops->open succeeded: close is due */
};

/* A connection module (spec 9): the code behind <Connection NAME> module = "X" blocks.
 * open runs on the main thread once the global options and every <Connection> block were read
 * (before any plugin is created, so plugins can look their connection up in create), and fills
 * def->impl; shard_start/shard_stop run on each shard's thread (before the plugins' shard_start,
 * after their shard_stop; not in the testkit, which has no engine shards); close frees impl
 * after every plugin was destroyed. open and shard_start return 0, or -1 with a sentence in
 * err (start-up fails naming the block's file and line). Every callback but open may be NULL. */
struct pol_conn_ops {
    const char *module;
    int (*open)(struct pol_server *s, struct pol_conn_def *def, char *err, size_t err_len);
    int (*shard_start)(struct pol_conn_def *def, struct eng_shard *sh, char *err,
                       size_t err_len);
    void (*shard_stop)(struct pol_conn_def *def, struct eng_shard *sh);
    void (*close)(struct pol_conn_def *def);
    /* Optional, for GET /readyz: 0 when the backend is reachable (from the module's own
     * counters or state: no I/O, no blocking), else -1 with a short reason in why. Runs on any
     * shard's thread, concurrently with the module's shards: read shared state with relaxed
     * atomic loads only. NULL: always ready. */
    int (*ready)(const struct pol_conn_def *def, char *why, size_t why_len);
};

/* The connection named name, NULL when there is none. */
const struct pol_conn_def *pol_server_conn(const struct pol_server *s, const char *name);

struct pol_globals {
    /* 2.05 options (section 3) */
    const char *port; /* comma list, default "127.0.0.1:12345" */
    const char *host; /* default "127.0.0.1" */
    const char *user, *group, *pid_file, *chroot;
    const char *log_file; /* NULL: syslog, or stderr with -f */
    const char *syslog_ident;
    const char *syslog_facility;
    const char *program_name;
    int log_level;                /* default 2 */
    uint32_t request_timeout_s;   /* default 20, 0 = unlimited */
    uint32_t keepalive_timeout_s; /* default 60, 0 = forever */
    uint32_t max_keepalive;       /* default 0 = unlimited */
    bool vhost_by_policy_context;
    /* pre-fork pool sizing of 2.05: accepted, kept as hints only */
    uint32_t min_servers, min_spare_servers, max_spare_servers, max_servers, max_requests;
    /* ringpolicyd's own */
    unsigned shards;              /* 0 = one per CPU */
    const char *error_action;     /* NULL or "": close without reply (2.05) */
    const char *plugin_dir;       /* default RINGPOLICYD_PLUGIN_DIR */
    enum eng_backend backend;     /* auto | uring | epoll */
    uint32_t max_connections;     /* per shard, default POL_MAX_CONNECTIONS_DEFAULT */
    uint32_t max_request_bytes;   /* default 65536 */
    uint32_t max_line_bytes;      /* default 16384 */
    uint32_t max_attributes;      /* default 256 */
    uint32_t max_pipelined_bytes; /* input held for one connection while its request is being
                                     answered (pipelining). Default 256 KiB */
    uint32_t drain_timeout_s;     /* default 10 */
    const char *dns_servers;      /* NULL: the system resolver (/etc/resolv.conf); else
                                     "IP[:PORT],..." (pol/dns.h) */
    uint32_t dns_cache_entries;   /* answers each shard's DNS cache keeps; 0: no cache.
                                     Default POL_DNS_CACHE_ENTRIES_DEFAULT */
    uint32_t dns_cache_bytes;     /* bytes of names and answers it keeps per shard. Default
                                     POL_DNS_CACHE_BYTES_DEFAULT */
    const char *http_port;        /* NULL or "": no HTTP listener; else addresses like `port`
                                     (host part defaults to 127.0.0.1) serving /metrics,
                                     /healthz and /readyz */
    struct pol_allow allow;       /* allow: client networks of the policy ports (allow.h);
                                     count 0 (default): every client */
    uint32_t max_staging_bytes_per_shard; /* the engine's staging budget per shard
                                             (stage_bytes_per_shard_max); 0 (default): 64 MiB */
};

#define POL_MAX_CONNECTIONS_DEFAULT 4096u
/* A relay's working set: 9 lists x the clients of a TTL, plus SPF and DBL names (measured with
 * bench/dnschain: 8192 entries evicted most answers of a 65,536-client pool within seconds). */
#define POL_DNS_CACHE_ENTRIES_DEFAULT 65536u
#define POL_DNS_CACHE_BYTES_DEFAULT (16u << 20)

struct pol_server {
    struct pol_cfg *cfg; /* owns every configured string */
    struct pol_globals g;
    struct pol_conn_def *conns;
    uint32_t conn_count;
    struct pol_scache_config scache;
    struct pol_vhost *vhosts;
    uint32_t vhost_count;
    struct pol_plugin **plugins; /* every instance, nested ones too, depth first */
    uint32_t plugin_count;
    uint32_t depth_max; /* deepest plugin (1: no sub-chains) */
    char **warnings;    /* "FILE:LINE: ..." for the log (level 2) */
    uint32_t warning_count;
    void **dl_handles;
    uint32_t dl_count;
};

/* Extra plugin types (tests, embedders), consulted after the built-ins. Main thread, before
 * loading a configuration. Returns 0 or -ENOSPC (at most 32). */
int pol_server_register_type(const struct pol_plugin_type *t);

/* Loads the file (pol_cfg_load) and builds the model. Returns 0; -2 when the file does not
 * exist or has no <VirtualHost> (2.05 exits 1 for those), -1 for any other error; err holds
 * "FILE:LINE: ..." then. *out is owned by the caller (pol_server_free). The builders below
 * return the same values. */
int pol_server_load(const char *path, struct pol_server **out, char *err, size_t err_len);
/* Builds from text, as if read from the file `name` (tests, testkit). */
int pol_server_from_text(const char *name, const char *text, struct pol_server **out, char *err,
                         size_t err_len);
/* Builds from a parsed tree; takes ownership of cfg in every case. */
int pol_server_from_cfg(struct pol_cfg *cfg, struct pol_server **out, char *err, size_t err_len);
void pol_server_free(struct pol_server *s);

/* The virtual host for a request (spec 11.2): by policy_context when enabled and non-empty,
 * else by the listener key (port number as written in the file, or socket path). NULL: none. */
const struct pol_vhost *pol_server_select_vhost(const struct pol_server *s, const char *key,
                                                const char *policy_context, size_t pc_len);
const struct pol_vhost *pol_server_vhost_by_key(const struct pol_server *s, const char *key);

/* -d: a description of the virtual hosts and their chains. */
void pol_server_dump(const struct pol_server *s, FILE *out);
/* --cron=LIST: every plugin's cron, nested ones after their parent (spec 14). */
void pol_server_cron(const struct pol_server *s, const char *const *tasks, size_t task_count);

/* plugin.c: builds one <Plugin NAME> block (and its nested blocks) into s->plugins. */
struct pol_plugin *pol_plugin_build(struct pol_server *s, const struct pol_cfg_node *block,
                                    const char *vhost_name, uint32_t depth, char *err,
                                    size_t err_len);
/* plugin.c: calls destroy on a created instance and frees it. */
void pol_plugin_free(struct pol_plugin *p);
/* plugin.c: unloads every shared object the server loaded. */
void pol_plugin_unload_all(struct pol_server *s);

/* helpers.c: logs msg[0..len) at level, NUL bytes included (escaped as \0 by the log). */
void pol_log_bytes(int level, const char *msg, size_t len);

/* Writes "FILE:LINE: msg" (or "FILE: msg" when line is 0) into err. */
void pol_errf(char *err, size_t err_len, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Appends "FILE:LINE: msg" to s->warnings (start-up only). */
void pol_server_warn(struct pol_server *s, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif

#endif
