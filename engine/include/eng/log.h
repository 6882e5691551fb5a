/*
 * eng/log.h: levelled logging to syslog, a file or standard error, as mtpolicyd does it.
 *
 * Levels are mtpolicyd's (0 err, 1 warning, 2 notice, 3 info, 4 debug). A message is written
 * when its level is not above the configured level; level 0 configured means "errors only"
 * (ringpolicyd's decision, spec section 16 #15). Every message is escaped first (spec 5.2: NUL
 * as \0, CR \r, LF \n, backslash \\, other control bytes as \xHH, TAB and bytes >= 0x80 kept),
 * so one message is always one line. For the file and stderr targets, bytes that are not
 * printable ASCII or newline are then written as %HH (spec 5.1). No timestamp or pid is added
 * to file lines (mtpolicyd compatibility); syslog lines carry ident[pid] and the facility.
 *
 * Threads: callable from any thread. On shard threads lines are buffered per thread and
 * written once per loop turn (eng_log_flush, called by the loop), so logging the per-request
 * result line costs no system call per request; other threads write at once. Lines longer than
 * ENG_LOG_LINE_MAX are truncated with "...". A failed write is counted, never fatal.
 */
#ifndef ENG_LOG_H
#define ENG_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    ENG_LOG_ERR = 0,
    ENG_LOG_WARNING = 1,
    ENG_LOG_NOTICE = 2,
    ENG_LOG_INFO = 3,
    ENG_LOG_DEBUG = 4,
};

#define ENG_LOG_LINE_MAX 8192

enum eng_log_target {
    ENG_LOG_STDERR,
    ENG_LOG_SYSLOG,
    ENG_LOG_FILE,
};

struct eng_log_config {
    int level; /* 0..4; values above 4 mean 4 */
    enum eng_log_target target;
    const char *path;  /* ENG_LOG_FILE: opened for append */
    const char *ident; /* syslog identity, default "ringpolicyd" */
    int facility;      /* syslog facility, default LOG_MAIL */
};

/* Opens (or reopens) the target. Returns 0 or -errno with a sentence in err. Before the first
 * call, messages go to stderr at level 2. */
int eng_log_open(const struct eng_log_config *cfg, char *err, size_t err_len);
void eng_log_close(void);

bool eng_log_enabled(int level);
int eng_log_level(void);
void eng_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void eng_logv(int level, const char *fmt, va_list ap);
/* Logs prefix (a C string, may be NULL) followed by bytes[0..len) as they are: NUL bytes and
 * '%' included (no format is applied), escaped like every message (NUL as \0, spec 5.2). The
 * message is cut at ENG_LOG_LINE_MAX with "...", as eng_log does. For request data, which may
 * hold any byte. */
void eng_log_bytes(int level, const char *prefix, const char *bytes, size_t len);
/* Writes this thread's buffered lines. */
void eng_log_flush(void);

/* Messages that could not be written (a full disk, no syslog socket). Added by the engine. */
uint64_t eng_log_write_errors(void);

/* The escaping of spec 5.2 into out (always NUL-terminated, truncated to fit). Returns the
 * length written. Exposed for tests and for plugins that log raw request data. */
size_t eng_log_escape(char *out, size_t out_len, const char *in, size_t in_len);

#ifdef __cplusplus
}
#endif

#endif
