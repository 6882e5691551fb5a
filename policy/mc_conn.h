/*
 * mc_conn.h: the Memcached connection module inside policy/ (pol/mc.h is what plugins see): its
 * pol_conn_ops for the core's connection registry and what the session cache and tests need
 * besides the plugin API.
 *
 * <Connection NAME> module = "Memcached" options (spec 9.2): servers (default
 * "127.0.0.1:11211"; "host:port, host:port", keys spread with ketama), namespace (prepended to
 * every key; no spaces or control bytes, at most ENG_MC_PREFIX_BYTES_MAX bytes).
 */
#ifndef POL_MC_CONN_H
#define POL_MC_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include "eng/mc.h"
#include "pol/mc.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const struct pol_conn_ops pol_conn_Memcached;

/* The connection's namespace (key prefix) and name. */
const char *pol_mc_namespace(const struct pol_mc *mc);
const char *pol_mc_name(const struct pol_mc *mc);
/* The memcached connection named name, NULL when there is none or it is another module (for
 * the session cache, which has no plugin). */
struct pol_mc *pol_mc_of_server(const struct pol_server *s, const char *name);
/* Whether two keys (as given to pol_mc_*) go to the same server (on sh's thread). */
bool pol_mc_same_server(struct eng_shard *sh, struct pol_mc *mc, const char *k1, size_t l1,
                        const char *k2, size_t l2);
/* Counters of this connection's client on sh (on sh's thread). */
void pol_mc_get_stats(struct eng_shard *sh, struct pol_mc *mc, struct eng_mc_stats *out);

#ifdef __cplusplus
}
#endif

#endif
