/*
 * plugins/netcall.h: what the network plugins (Proxy, Fail2Ban, CtIpRep) share: one outbound
 * stream endpoint per plugin and shard (eng/stream.h), and a request/reply call made from a
 * plugin step that waits (POL_WAIT) and resumes the request with the reply copied into its
 * arena.
 *
 * A plugin's data (pol_plugin_data) starts with struct pol_netcall_def, filled by its create
 * (the target and the stream's configuration); pol_netcall_shard_start/stop are then its
 * shard_start/shard_stop. Internal to policy/plugins/.
 */
#ifndef POL_PLUGINS_NETCALL_H
#define POL_PLUGINS_NETCALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eng/stream.h>

#include "pol/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_netcall_def {
    struct eng_stream_target target;
    struct eng_stream_config cfg;
    uint32_t timeout_ms; /* each call's deadline */
};

int pol_netcall_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                            char *err, size_t err_len);
void pol_netcall_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data);

/* One call, in the plugin's req_state (zeroed before the request's first step). */
struct pol_netcall {
    struct eng_stream_req sr;
    struct pol_req *r;
    int status;        /* 0, or a negative errno (eng/stream.h; -ENOMEM: arena full) */
    const char *reply; /* status 0: the reply, NUL-terminated, in the request arena */
    size_t reply_len;
    bool started, finished;
};

/* Sends buf[0..len) (which must live in the request arena) and returns POL_WAIT; the step is
 * called again with c->finished set. */
enum pol_step pol_netcall_start(struct pol_plugin *p, struct pol_req *r, struct pol_netcall *c,
                                const char *buf, size_t len);

/* True for the statuses of a failed connect (refused, no such socket, unreachable, ...). */
bool pol_netcall_connect_error(int status);

/* A sentence for a failed call's status ("Connection refused", "timed out", ...). */
const char *pol_netcall_strerror(int status);

/* Fail2Ban's command `set JAIL banip IP` as 2.05 sends it (fail2ban.c; lengths at most 255).
 * Returns the bytes written to out, or 0 when cap is too small. */
size_t pol_f2b_command(char *out, size_t cap, const char *jail, size_t jail_len, const char *ip,
                       size_t ip_len);

#ifdef __cplusplus
}
#endif

#endif
