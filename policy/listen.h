/*
 * listen.h: the global `port` and `host` options (spec 3) as listening addresses for the
 * engine, each with the virtual host key it serves (spec 11.1).
 *
 * `port` is a comma list (split as mtpolicyd splits it); each entry is read the way
 * Net::Server 2.x (Net/Server/Proto.pm, parse_info) reads it: PORT (address from `host`),
 * HOST:PORT, [IPV6]:PORT, *:PORT, HOST:PORT/tcp, /path|unix, with |IPv4 / |IPv6 / |IPv* to
 * choose address families. A host name binds every address it resolves to (getaddrinfo, at
 * start-up, blocking). The key of a TCP listener is its port number in decimal, the key of a
 * Unix listener its path exactly as configured.
 *
 * Main thread, start-up only. Errors are one sentence naming the offending entry.
 */
#ifndef POL_LISTEN_H
#define POL_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eng/engine.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Listening addresses one configuration may produce (after name resolution). */
#define POL_LISTEN_MAX 64
/* mtpolicyd 2.05's defaults (Mail/MtPolicyd.pm). */
#define POL_LISTEN_PORT_DEFAULT "127.0.0.1:12345"
#define POL_LISTEN_HOST_DEFAULT "127.0.0.1"

#define POL_LISTEN_PATH_BYTES sizeof(((struct sockaddr_un *)0)->sun_path)

struct pol_listen {
    struct eng_listen eng;           /* tag is 0: the caller sets its virtual host's index */
    char key[POL_LISTEN_PATH_BYTES]; /* virtual host key: "12345" or the socket path */
};

/* One entry of the port list, before name resolution. */
struct pol_listen_spec {
    bool is_unix;
    char path[POL_LISTEN_PATH_BYTES]; /* Unix: the socket path */
    char host[256];                   /* TCP: a name or address; "*" means every address */
    uint16_t port;                    /* TCP: 1..65535 (service names are looked up) */
    bool want4, want6;                /* TCP: address families to bind */
};

/* Parses one entry (len bytes, not NUL-terminated); host is the global host option (NULL:
 * the default; "" or "*": every address). Returns 0, or -1 with a sentence in err. */
int pol_listen_spec_parse(const char *entry, size_t len, const char *host,
                          struct pol_listen_spec *out, char *err, size_t err_len);

/* Parses the port list (NULL: the default) and resolves it: writes up to out_cap listeners
 * to out, in the order of the entries and of each name's addresses, skipping exact
 * duplicates (as Net::Server does). Returns their number (at least 1), or -1 with a sentence
 * in err (an empty list, a bad entry, a name that does not resolve, more than out_cap). */
int pol_listen_parse(const char *port, const char *host, struct pol_listen *out, size_t out_cap,
                     char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
