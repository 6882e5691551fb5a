/*
 * fail2ban.c: the Fail2Ban plugin (spec 13.9): ban the client address through fail2ban-server.
 *
 * Once per mail (flag `NAME-fail2ban`) and unless `enabled` (user-configurable) is `off`, the
 * command `set JAIL banip IP` goes to fail2ban-server's Unix socket as 2.05 sends it: the bytes
 * of a Python pickle (protocol 2) of ['set', JAIL, 'banip', IP], each string a SHORT_BINSTRING
 * (so at most 255 bytes: longer ones fail the plugin, where 2.05 sent a broken length byte),
 * then `<F2B_END_COMMAND>`. No result. A connect failure fails the plugin ("cant connect
 * fail2ban socket: ...", as 2.05). The socket is kept open between requests, as in 2.05.
 *
 * Difference: 2.05 writes the command and never reads; ringpolicyd waits for fail2ban's reply
 * (a pickle ending in `<F2B_END_COMMAND>`, whose content it does not interpret) before the
 * chain goes on, so replies never pile up in the socket and a ban is in place when the answer
 * goes out. ringpolicyd's own option `timeout_ms` (default 5000) bounds that wait; a timeout
 * or a closed socket fails the plugin.
 *
 * Owns its target and flag key (create .. destroy, main thread) and per shard one stream
 * (netcall.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>

#include "plugins/common.h"
#include "plugins/netcall.h"

enum {
    OPT_SOCKET,
    OPT_JAIL,
    OPT_ENABLED,
    OPT_TIMEOUT_MS,
    OPT_COUNT,
};

static const struct pol_opt_def f2b_opts[] = {
    [OPT_SOCKET] = {"socket", POL_OPT_STRING, "/var/run/fail2ban/fail2ban.sock", 0},
    [OPT_JAIL] = {"jail", POL_OPT_STRING, "postfix", 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_TIMEOUT_MS] = {"timeout_ms", POL_OPT_INT, "5000", 0},
};
_Static_assert(sizeof f2b_opts / sizeof f2b_opts[0] == OPT_COUNT, "one def per option");

#define F2B_END "<F2B_END_COMMAND>"
#define F2B_TIMEOUT_MS_MAX 600000
#define F2B_STRING_MAX 255 /* SHORT_BINSTRING's length is one byte */

struct f2b_data {
    struct pol_netcall_def def; /* first: netcall.h */
    char *flag;
};

/* fail2ban's replies end with the terminator, like its commands. */
static ssize_t f2b_frame(void *arg, const char *buf, size_t len, bool eof, bool *keep)
{
    (void)arg;
    (void)eof;
    (void)keep;
    const char *end = memmem(buf, len, F2B_END, sizeof(F2B_END) - 1);
    return end ? (ssize_t)(end - buf) + (ssize_t)sizeof(F2B_END) - 1 : 0;
}

static int f2b_create(struct pol_plugin *p, char *err, size_t err_len)
{
    long long timeout = pol_opt(p, OPT_TIMEOUT_MS)->i;
    if (timeout < 1 || timeout > F2B_TIMEOUT_MS_MAX) {
        snprintf(err, err_len, "timeout_ms must be 1..%d", F2B_TIMEOUT_MS_MAX);
        return -1;
    }
    if (pol_opt(p, OPT_JAIL)->text_len > F2B_STRING_MAX) {
        snprintf(err, err_len, "jail name longer than %d bytes", F2B_STRING_MAX);
        return -1;
    }
    struct f2b_data *d = calloc(1, sizeof(*d));
    if (!d || asprintf(&d->flag, "%s-fail2ban", pol_plugin_name(p)) < 0) {
        free(d);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (eng_stream_target_unix(pol_opt(p, OPT_SOCKET)->text, &d->def.target, err, err_len) !=
        0) {
        free(d->flag);
        free(d);
        return -1;
    }
    eng_stream_config_defaults(&d->def.cfg);
    d->def.cfg.conns_max = 2;
    d->def.cfg.response_bytes_max = 4096;
    d->def.cfg.frame = f2b_frame;
    d->def.timeout_ms = (uint32_t)timeout;
    pol_plugin_set_data(p, d);
    return 0;
}

static void f2b_destroy(struct pol_plugin *p)
{
    struct f2b_data *d = pol_plugin_data(p);
    if (!d)
        return;
    free(d->flag);
    free(d);
}

/* The command's bytes (Fail2Ban.pm's _command_pattern). Returns the length written, or 0 when
 * cap is too small. */
size_t pol_f2b_command(char *out, size_t cap, const char *jail, size_t jail_len, const char *ip,
                       size_t ip_len)
{
    static const char head[] = "\x80\x02]q\x00(U\x03setq\x01U";
    static const char mid[] = "q\x02U\x05" "banipq\x03U"; /* split: \x05b would be one escape */
    static const char tail[] = "q\x04" "e." F2B_END;
    ENG_ASSERT(jail_len <= F2B_STRING_MAX);
    ENG_ASSERT(ip_len <= F2B_STRING_MAX);
    size_t need = (sizeof(head) - 1) + 1 + jail_len + (sizeof(mid) - 1) + 1 + ip_len +
                  (sizeof(tail) - 1);
    if (need > cap)
        return 0;
    size_t o = 0;
    memcpy(out + o, head, sizeof(head) - 1);
    o += sizeof(head) - 1;
    out[o++] = (char)(unsigned char)jail_len;
    memcpy(out + o, jail, jail_len);
    o += jail_len;
    memcpy(out + o, mid, sizeof(mid) - 1);
    o += sizeof(mid) - 1;
    out[o++] = (char)(unsigned char)ip_len;
    memcpy(out + o, ip, ip_len);
    o += ip_len;
    memcpy(out + o, tail, sizeof(tail) - 1);
    o += sizeof(tail) - 1;
    ENG_ASSERT(o == need);
    return o;
}

static enum pol_step f2b_send(struct pol_plugin *p, struct pol_req *r, struct pol_netcall *c)
{
    struct f2b_data *d = pol_plugin_data(p);
    if (!pol_uc_enabled(r, p, OPT_ENABLED) || pol_req_is_already_done(r, d->flag))
        return POL_NEXT;
    size_t ip_len = 0;
    const char *ip = pol_req_attr(r, "client_address", &ip_len);
    if (!ip)
        ip = "";
    if (ip_len > F2B_STRING_MAX)
        return pol_req_fail(r, "client_address longer than %d bytes", F2B_STRING_MAX);
    const struct pol_opt_value *jail = pol_opt(p, OPT_JAIL);
    pol_log(p, r, "adding ip %s to fail2ban jail %s", ip, jail->text);
    size_t cap = 64 + jail->text_len + ip_len + sizeof(F2B_END);
    char *buf = pol_req_alloc(r, cap);
    if (!buf)
        return pol_req_fail(r, "no memory left in the request arena for the command");
    size_t len = pol_f2b_command(buf, cap, jail->text, jail->text_len, ip, ip_len);
    ENG_ASSERT(len > 0);
    return pol_netcall_start(p, r, c, buf, len);
}

static enum pol_step f2b_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct pol_netcall *c = req_state;
    if (!c->started)
        return f2b_send(p, r, c);
    ENG_ASSERT(c->finished);
    if (c->status == 0)
        return POL_NEXT;
    if (pol_netcall_connect_error(c->status))
        return pol_req_fail(r, "cant connect fail2ban socket: %s",
                            pol_netcall_strerror(c->status));
    return pol_req_fail(r, "fail2ban command failed: %s", pol_netcall_strerror(c->status));
}

const struct pol_plugin_type pol_type_Fail2Ban = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Fail2Ban",
    .opts = f2b_opts,
    .opt_count = OPT_COUNT,
    .flags = 0,
    .req_state_bytes = sizeof(struct pol_netcall),
    .create = f2b_create,
    .shard_start = pol_netcall_shard_start,
    .shard_stop = pol_netcall_shard_stop,
    .step = f2b_step,
    .destroy = f2b_destroy,
};
