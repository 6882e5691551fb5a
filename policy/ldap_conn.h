/*
 * ldap_conn.h: the `Ldap` connection (spec 9.4): an asynchronous LDAP client per shard on
 * libldap 2.5 (policy/ldap.c), and the registry LdapUserConfig uses to share one client per
 * <Connection> block and shard.
 *
 * Who may call: pol_ldap_config_*, pol_ldap_conn_get/put on the main thread (plugin create and
 * destroy); pol_ldap_client_* and pol_ldap_conn_shard_* on the shard that owns the client. A
 * search's done callback runs on that shard from its loop, never inside pol_ldap_search.
 * libldap's types stay inside ldap.c.
 */
#ifndef POL_LDAP_CONN_H
#define POL_LDAP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eng/engine.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pol_cfg_node;
struct pol_conn_def;

/* Searches in flight or queued per client (one shard, one connection); one more is refused
 * with POL_LDAP_BUSY and counted. */
#define POL_LDAP_OPS_MAX_DEFAULT 1024u

struct pol_ldap_config {
    char *host;       /* "localhost"; a value with "://" is used as the URI */
    unsigned port;    /* 389 */
    bool starttls;    /* 1: STARTTLS, server certificate required valid (libldap DEMAND) */
    char *binddn;     /* NULL: anonymous bind */
    char *password;   /* NULL: none */
    unsigned timeout_s; /* 120: connect, STARTTLS, bind and each search */
    bool keepalive;   /* 1: SO_KEEPALIVE on the socket */
    uint32_t ops_max; /* POL_LDAP_OPS_MAX_DEFAULT */
};

/* Reads a <Connection> block's options (2.05's: host, port, keepalive, timeout, binddn,
 * password, starttls; module and connection_class are ignored). 0, or -1 with a sentence in
 * err (bad number or boolean, port out of range, out of memory). Free with
 * pol_ldap_config_free, also after a failure. */
int pol_ldap_config_parse(const struct pol_cfg_node *block, struct pol_ldap_config *cfg,
                          char *err, size_t err_len);
void pol_ldap_config_defaults(struct pol_ldap_config *cfg); /* the table above; no strings */
void pol_ldap_config_free(struct pol_ldap_config *cfg);

/* ---------------------------------------------------------------------------------------------
 * Client (one shard)
 */

enum pol_ldap_status {
    POL_LDAP_OK,        /* the search completed with resultCode success */
    POL_LDAP_ERROR,     /* the server (or libldap, e.g. a bad filter) reported an error */
    POL_LDAP_TIMEOUT,   /* no result within timeout_s: abandoned */
    POL_LDAP_LOST,      /* the connection broke while the search was out */
    POL_LDAP_DOWN,      /* no connection: connect, STARTTLS or bind failed (or backing off) */
    POL_LDAP_BUSY,      /* unused by the client (pol_ldap_search returns -EBUSY) */
    POL_LDAP_CANCELLED, /* the client is being destroyed */
};
const char *pol_ldap_status_text(enum pol_ldap_status st);

struct pol_ldap_result; /* valid only during the done callback */
typedef void pol_ldap_done_fn(void *ctx, const struct pol_ldap_result *res);

enum pol_ldap_status pol_ldap_result_status(const struct pol_ldap_result *res);
/* A sentence for anything but POL_LDAP_OK ("" for OK). */
const char *pol_ldap_result_error(const struct pol_ldap_result *res);
/* Entries returned (POL_LDAP_OK, and ERROR after some entries, e.g. sizeLimitExceeded). */
size_t pol_ldap_result_count(const struct pol_ldap_result *res);
/* The first entry's DN (NULL without entries). */
const char *pol_ldap_result_dn(const struct pol_ldap_result *res);
/* The first entry's value number idx of attribute attr (names compared without case, as
 * Net::LDAP::Entry does). 0 with *v, *len set; -ENOENT without such a value or entry. */
int pol_ldap_result_value(const struct pol_ldap_result *res, const char *attr, size_t idx,
                          const char **v, size_t *len);

struct pol_ldap_client;

/* On sh's thread. Allocates the client and its op table; does not connect (the first search
 * does). 0, or -ENOMEM / -errno of the work pool with a sentence in err. */
int pol_ldap_client_create(struct eng_shard *sh, const struct pol_ldap_config *cfg,
                           struct pol_ldap_client **out, char *err, size_t err_len);
/* On its shard. Every outstanding search's done runs with POL_LDAP_CANCELLED before this
 * returns; a connect in progress is waited for and its handle closed. NULL is a no-op. */
void pol_ldap_client_destroy(struct pol_ldap_client *c);

/* Subtree search under base with filter, asking for attrs (NULL-terminated; NULL: all user
 * attributes). base, filter and attrs must stay valid until done runs (a search waiting for
 * the connection is sent later). Returns 0: done runs exactly once, later, from the loop
 * (never inside this call), whatever happens (POL_LDAP_DOWN, TIMEOUT... included); or -EBUSY
 * when ops_max searches are outstanding (counted; done does not run). */
int pol_ldap_search(struct pol_ldap_client *c, const char *base, const char *filter,
                    const char *const *attrs, pol_ldap_done_fn *done, void *ctx);

struct pol_ldap_stats {
    uint64_t searches;       /* pol_ldap_search calls */
    uint64_t ok, errors, timeouts, lost, down, busy, cancelled; /* by outcome */
    uint64_t connects;       /* connections established (TCP, STARTTLS, bind done) */
    uint64_t connect_failures; /* connect, STARTTLS or bind failed */
    uint64_t outstanding;    /* gauge: searches queued or out */
    uint64_t outstanding_max;
};
void pol_ldap_client_stats(const struct pol_ldap_client *c, struct pol_ldap_stats *out);
/* True once a connection is established and bound (for tests and readiness). */
bool pol_ldap_client_connected(const struct pol_ldap_client *c);

/* RFC 4515 escaping as Net::LDAP::Util::escape_filter_value does: bytes 0x00-0x1F, '*', '(',
 * ')' and '\' become '\' and two lower-case hex digits. Writes at most out_len - 1 bytes and a
 * NUL; returns the escaped length (>= out_len: truncated). */
size_t pol_ldap_escape(const char *in, size_t in_len, char *out, size_t out_len);

/* ---------------------------------------------------------------------------------------------
 * Registry: one client per (<Connection> block, shard), shared by the plugins naming it.
 */

struct pol_ldap_conn;

/* Main thread. The registry entry of def (an `Ldap` connection), created with its options
 * parsed on first use, referenced once more per call. NULL with a sentence in err. */
struct pol_ldap_conn *pol_ldap_conn_get(const struct pol_conn_def *def, char *err,
                                        size_t err_len);
void pol_ldap_conn_put(struct pol_ldap_conn *lc); /* main thread; NULL is a no-op */
const struct pol_ldap_config *pol_ldap_conn_config(const struct pol_ldap_conn *lc);

/* On sh's thread: references (and on the first reference creates) this shard's client. 0, or
 * -1 with a sentence in err. Each successful call needs one pol_ldap_conn_shard_stop. */
int pol_ldap_conn_shard_start(struct pol_ldap_conn *lc, struct eng_shard *sh, char *err,
                              size_t err_len);
void pol_ldap_conn_shard_stop(struct pol_ldap_conn *lc, struct eng_shard *sh);
/* The shard's client (NULL when not started on sh). */
struct pol_ldap_client *pol_ldap_conn_client(struct pol_ldap_conn *lc, struct eng_shard *sh);

/* The module for the core's connection table (server.c): open checks the <Connection> block's
 * options at start-up and holds a reference until close. Not registered yet (see the report of
 * session 11): until it is, LdapUserConfig reads the block when it is created. */
struct pol_conn_ops;
extern const struct pol_conn_ops pol_conn_Ldap;

#ifdef __cplusplus
}
#endif

#endif
