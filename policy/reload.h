/*
 * reload.h: hot reload of the configuration on SIGHUP (internal to policy/; daemon.c drives
 * it from the engine's signal thread).
 *
 * Sequence: pol_reload_load reads and builds the file with the start-up code on the main
 * thread and checks it against the running server (every policy listener needs a vhost; options
 * that only a restart can change keep their running values, with a warning). pol_reload_apply
 * then, with eng_run_on_shards (which waits for every shard): 1. prepares the new generation
 * on every shard (connections' and plugins' shard_start; a failure undoes it everywhere and the
 * old one stays), 2. switches every shard to it (requests built from then on use it; a request
 * homed on a shard that switched may be processed on one that has not yet, which is why step 1
 * finishes everywhere first), 3. waits until no request of the old generation is left on any
 * shard (requests in flight finish on the old chains) and retires it (shard_stop on every
 * shard). The caller frees the old server after that, on the main thread.
 *
 * What survives a reload: connections to clients (policy and HTTP), listeners the new
 * configuration still has, the Memory session cache and its sessions, counters (series are
 * keyed by vhost and plugin names). What is rebuilt: vhosts, chains and plugins, and
 * <Connection> definitions (the new generation opens its own backend connections before the old
 * one closes its; there is no gap but also no reuse). Listeners (port, host, http_port) follow
 * the new configuration: the caller (daemon.c) binds the added ones before the switch and
 * starts them after it, and removes the dropped ones after it (their open connections stay).
 * Restart-only: shards, backend, user, group, chroot, pid_file, log_file, syslog options, log_level, error_action, the limits (max_connections,
 * max_request_bytes, max_line_bytes, max_attributes, max_pipelined_bytes), drain_timeout,
 * dns_servers, dns_cache_entries, dns_cache_bytes and the <SessionCache> block (Memory or None: the running cache and its sessions
 * stay). A Memcached session cache is the exception: its sessions live in memcached, so the new
 * generation's cache (on the new generation's connections, with its options) takes over; a
 * reload switching between Memcached and another module is refused.
 */
#ifndef POL_RELOAD_H
#define POL_RELOAD_H

#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_server;
struct pol_shard;

/* Loads path and checks it against cur. keys are the vhost keys of the running policy
 * listeners. Returns 0 with *out (the caller owns it), or -1 with "FILE:LINE: ..." in err.
 * Warnings about restart-only options are logged at level 2 (NOTICE). Main thread. */
int pol_reload_load(const char *path, const struct pol_server *cur, const char *const *keys,
                    size_t key_count, struct pol_server **out, char *err, size_t err_len);

/* How shards map to their policy state. */
typedef struct pol_shard *pol_reload_shard_fn(void *shard_app);

enum pol_reload_result {
    POL_RELOAD_FAILED,  /* next is not in use anywhere; err says why; the caller frees next */
    POL_RELOAD_RETIRED, /* next in use; old retired everywhere: the caller frees old */
    POL_RELOAD_PENDING, /* next in use; old still has requests after wait_ms: call
                           pol_reload_retire later, free old only once it returns 0 */
};

/* Steps 1-3 above, from a non-shard thread. */
enum pol_reload_result pol_reload_apply(struct eng *e, pol_reload_shard_fn *shard_of,
                                        const struct pol_server *old,
                                        const struct pol_server *next, uint32_t wait_ms,
                                        char *err, size_t err_len);

/* Step 3 alone: waits up to wait_ms for old's requests to end, then retires it. Returns 0
 * (retired: free it) or -EBUSY. */
int pol_reload_retire(struct eng *e, pol_reload_shard_fn *shard_of, const struct pol_server *old,
                      uint32_t wait_ms);

#ifdef __cplusplus
}
#endif

#endif
