/*
 * render.h: writes one synthesized request of a corpus in policy-protocol form, exactly as
 * Postfix 3.7 smtpd would send it (attribute names and order of smtpd_check.c; one empty line
 * at the end). Pure: no I/O, no allocation; callable from any thread on a built corpus.
 *
 * What the log does not say is synthesized, the same way every time: client_port (from the
 * connection number), server_address/server_port (options; the port defaults to 25, or 587/465
 * for a syslog_name ending in /submission or /smtps), helo_name (the connection's reject lines,
 * else the client name, else [address]), protocol_name (likewise, else ESMTP), size before
 * END-OF-MESSAGE (0: the MAIL FROM SIZE= parameter is not logged), no TLS attributes.
 *
 * Copies (--multiply): copy k > 0 of a request has its times moved by k copy spans (so its
 * instance differs), its IPv4 client address moved within the same /8 (IPv6: within the same
 * /64), and its queue id suffixed with "Z" and k in hex; senders, recipients and SASL names stay.
 */
#ifndef RPL_RENDER_H
#define RPL_RENDER_H

#include <stddef.h>
#include <stdint.h>

#include "corpus.h"

#ifdef __cplusplus
extern "C" {
#endif

struct rpl_render_opts {
    const char *server_address; /* NULL: "127.0.0.1" */
    uint32_t server_port;       /* 0: by service name */
    const char *policy_context; /* NULL: sent empty, as Postfix does when none is configured */
    int64_t copy_span_us;       /* from rpl_copy_span_us */
};

/* The distance between copies: longer than the corpus's span of transaction start times. */
int64_t rpl_copy_span_us(const struct rpl_corpus *c);

/* Writes request r of copy `copy` into out[0..cap). Returns its length, or 0 when it does not
 * fit (the caller counts it). */
size_t rpl_render(const struct rpl_corpus *c, const struct rpl_req *r, uint32_t copy,
                  const struct rpl_render_opts *o, char *out, size_t cap);

/* The client address of copy `copy` (unchanged for copy 0 and for what is not an IP address)
 * into out (NUL-terminated). Returns its length, or 0 if cap is too small. */
size_t rpl_copy_addr(const char *addr, size_t len, uint32_t copy, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
