/*
 * testkit.h: run a configuration and requests without the engine, for unit tests of the chain
 * runner and of plugins, and for the fuzzers. Single-threaded; it stands in for one shard.
 *
 * A kit holds one loaded configuration (parsed from text as if it were the file "test.conf"),
 * and, when the configuration has a <SessionCache module = "Memory"> block, the sessions
 * across requests, exactly as the daemon would keep them. Asynchronous plugin steps
 * (POL_WAIT) are not supported here: such a request fails with a message saying so.
 */
#ifndef POL_TESTKIT_H
#define POL_TESTKIT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pol_testkit;

/* Returns NULL with "test.conf:LINE: message" in err when the configuration is refused. */
struct pol_testkit *pol_testkit_new(const char *config_text, char *err, size_t err_len);
void pol_testkit_free(struct pol_testkit *k);

/* Sends one request, as the listener whose key is `port` (e.g. "12345", or a socket path)
 * would receive it. request is "name=value" lines separated by LF (a final empty line is
 * optional). Returns 0 and the encoded reply ("action=...\n...\n\n") in reply; or -1 and the
 * text of the error the daemon would log ("plugin NAME failed: DETAIL", "no virtual host ...")
 * when it would close the connection without a reply. */
int pol_testkit_request(struct pol_testkit *k, const char *port, const char *request,
                        char *reply, size_t reply_len);

/* A session value of the Memory session cache (NULL when absent or no such session). */
const char *pol_testkit_session_get(struct pol_testkit *k, const char *instance,
                                    const char *key);

/* The last per-request log line (spec 5.3), e.g. "test: instance=..., type=..., t=0ms,
 * plugin=..., result=...". */
const char *pol_testkit_last_result_line(const struct pol_testkit *k);

#ifdef __cplusplus
}
#endif

#endif
