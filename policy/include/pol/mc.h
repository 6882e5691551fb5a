/*
 * pol/mc.h: asynchronous memcached for plugins and the session cache, over a <Connection NAME>
 * module = "Memcached" block (spec 9.2: servers, namespace). Part of the plugin API (version 1).
 *
 * The client runs on each shard's ring: every operation a shard issues in one loop turn leaves
 * in one write per server, many operations are outstanding per connection, replies are matched
 * in order. Keys are distributed over the servers with ketama (consistent hashing), get the
 * connection's namespace prepended, and are encoded when they contain bytes memcached's
 * protocol cannot carry (space, control characters, longer than 250 bytes), so mail attributes
 * can be used as keys safely. A server that is down makes operations fail fast with
 * POL_MC_DOWN and is reconnected in the background with backoff.
 *
 * Threads: pol_mc_lookup at create (main thread); operations on a shard thread; done runs later
 * on the same shard (never inside the call); value is valid only during done.
 */
#ifndef POL_MC_H
#define POL_MC_H

#include <stddef.h>
#include <stdint.h>

#include <eng/engine.h>
#include <pol/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pol_mc;

enum pol_mc_status {
    POL_MC_OK,
    POL_MC_NOT_FOUND,  /* get/delete/incr: no such key */
    POL_MC_NOT_STORED, /* add: the key exists */
    POL_MC_DOWN,       /* no connection to the key's server */
    POL_MC_TIMEOUT,
    POL_MC_ERROR,      /* a protocol or server error */
};

const char *pol_mc_status_text(enum pol_mc_status st);

/* The Memcached connection named conn_name. NULL with "no connection NAME configured!" (or
 * "... is not a Memcached connection") in err. */
struct pol_mc *pol_mc_lookup(struct pol_plugin *p, const char *conn_name, char *err,
                             size_t err_len);

/* value/len: get → the value; incr → the new value as decimal text; others → NULL, 0. */
typedef void pol_mc_done_fn(void *ctx, enum pol_mc_status st, const char *value, size_t len);

/* Each returns 0 (done runs exactly once) or -errno when the operation could not be queued
 * (done will not run). exptime_s: 0 = never expires. timeout_ms 0: the connection's default. */
int pol_mc_get(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
               uint32_t timeout_ms, pol_mc_done_fn *done, void *ctx);
int pol_mc_set(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
               const char *value, size_t value_len, uint32_t exptime_s, uint32_t timeout_ms,
               pol_mc_done_fn *done, void *ctx);
int pol_mc_add(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
               const char *value, size_t value_len, uint32_t exptime_s, uint32_t timeout_ms,
               pol_mc_done_fn *done, void *ctx);
int pol_mc_delete(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
                  uint32_t timeout_ms, pol_mc_done_fn *done, void *ctx);
int pol_mc_incr(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
                uint64_t delta, uint32_t timeout_ms, pol_mc_done_fn *done, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
