/*
 * plugins/http_resp.h: a small strict HTTP/1.0 and 1.1 response parser for the network
 * plugins' client side (CtIpRep). Pure: no I/O, no allocation; it reads the bytes received so
 * far and says whether they hold one complete response, where its head and body are, and
 * whether the connection may carry another request.
 *
 * Accepted: status line `HTTP/1.0` or `HTTP/1.1`, a three-digit status, an optional reason;
 * header lines `name: value` (token names, case-insensitive); CRLF or bare LF line ends; body
 * framed by Transfer-Encoding: chunked, by Content-Length, or (neither) by the peer's close.
 * Refused (-EPROTO): anything else in the status line, header names with other characters,
 * folded headers, Content-Length that is not digits (or two that differ), a Transfer-Encoding
 * other than chunked, 1xx responses (we never send Expect), bad chunk sizes, a close before the
 * framed end. The head is limited to POL_HTTP_HEAD_BYTES_MAX (-EMSGSIZE past it).
 */
#ifndef POL_PLUGINS_HTTP_RESP_H
#define POL_PLUGINS_HTTP_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POL_HTTP_HEAD_BYTES_MAX 8192
#define POL_HTTP_CONTENT_LENGTH_MAX 1000000000ull

struct pol_http_resp {
    int status;         /* 100..999 */
    int minor;          /* HTTP/1.minor */
    const char *reason; /* into the buffer; reason_len bytes */
    size_t reason_len;
    size_t head_len;    /* status line, headers and the empty line */
    bool chunked;
    bool has_length;
    size_t content_length;
    bool keep;          /* the connection may carry another request after this response */
    size_t msg_len;     /* the whole response (when complete) */
};

/* Parses buf[0..len). eof: the peer closed (no more bytes). Returns the length of the complete
 * response (> 0; *out filled), 0 when more bytes are needed, -EPROTO when malformed (*err_pos,
 * when not NULL, is the offset of the offending byte) or -EMSGSIZE when the head is too long. */
ssize_t pol_http_resp_parse(const char *buf, size_t len, bool eof, struct pol_http_resp *out,
                            size_t *err_pos);

/* The body of a complete response (after pol_http_resp_parse returned > 0): chunked bodies are
 * decoded into out, others copied. Returns the body length, or -ENOBUFS when cap is too small.
 * cap >= h->msg_len always suffices. */
ssize_t pol_http_resp_body(const char *msg, const struct pol_http_resp *h, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
