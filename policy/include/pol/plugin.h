/*
 * pol/plugin.h: the ringpolicyd plugin API (version 1). Built-in plugins and users' shared
 * objects are written against this header and nothing else from policy/.
 *
 * A plugin type (struct pol_plugin_type) declares its typed options and four callbacks:
 * create (once, at start-up, after its options were parsed and checked), step (per request),
 * cron (for `ringpolicyd --cron=...`) and destroy. One <Plugin NAME> block of the
 * configuration becomes one struct pol_plugin instance.
 *
 * A step is one move of a small state machine. It returns
 *   POL_NEXT      done with this request; results, if any, were added with pol_result*();
 *   POL_WAIT      it started an asynchronous operation and will call pol_req_resume(r) from
 *                 that operation's completion callback; step is then called again;
 *   POL_SUBCHAIN  run this plugin's nested <Plugin> chain (plugins declared POL_TYPE_CHAIN);
 *                 when the sub-chain is done, step is called again and
 *                 pol_req_subchain_done(r) is true;
 *   POL_FAIL      it failed; pol_req_fail() set the detail. The chain then does what the
 *                 plugin's on_error says (mtpolicyd semantics, spec 11.3).
 * A step never blocks, sleeps or loops without a bound. Per-request state that must survive
 * POL_WAIT or POL_SUBCHAIN lives in req_state (req_state_bytes, zeroed before the first step
 * of each request).
 *
 * Threads: create, cron and destroy run on the main thread. step and everything taking a
 * struct pol_req * run on the shard processing the request. Plugin instances are shared by
 * all shards and are read-only after create; per-shard mutable state goes in shard_start's
 * *shard_data.
 *
 * Memory: strings returned by pol_req_* and pol_session_* stay valid until the request ends,
 * unless the same key is set or deleted again. pol_req_alloc and friends allocate from the
 * request's bounded arena, released in one step when the request ends; they return NULL when
 * the arena's limit is reached (the plugin should then fail the request).
 */
#ifndef POL_PLUGIN_H
#define POL_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eng/engine.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POL_PLUGIN_API_VERSION 1u

struct pol_plugin; /* one configured <Plugin NAME> block */
struct pol_req;    /* one request being answered */
struct pol_regex;  /* a compiled PCRE2 pattern */
struct pol_var;    /* a variable reference [scope:]name (spec 12.1) */

/* ---------------------------------------------------------------------------------------------
 * Options
 */

enum pol_opt_type {
    POL_OPT_STRING,   /* any text */
    POL_OPT_INT,      /* optional '-' then digits */
    POL_OPT_NUMBER,   /* Perl-style number: 5, -2.5, .5, 1e3 (not 5., 0x10, inf) */
    POL_OPT_BOOL,     /* exactly 1, 0 or empty (false) */
    POL_OPT_LIST,     /* comma-separated, blanks around commas dropped */
    POL_OPT_REGEX,    /* PCRE2, compiled at start-up; a bad pattern is a start-up error */
    POL_OPT_TEMPLATE, /* string with %NAME% placeholders (pol_template_expand) */
    POL_OPT_VAR,      /* [scope:]name (request:, r:, session:, s:) */
};

enum {
    POL_OPT_REQUIRED = 1u << 0, /* missing option: start-up error naming file and line */
    POL_OPT_UC = 1u << 1,       /* user-configurable: uc_NAME = SESSION_KEY is accepted */
};

struct pol_opt_def {
    const char *name;
    enum pol_opt_type type;
    const char *default_text; /* NULL: unset unless configured */
    unsigned flags;
};

struct pol_list {
    size_t count;
    const char *const *items; /* NUL-terminated strings */
};

/* A parsed option value; valid for the plugin's lifetime. */
struct pol_opt_value {
    bool set;               /* configured, or has a default */
    const char *text;       /* as written in the file (after unquoting); "" when unset */
    size_t text_len;
    long long i;            /* POL_OPT_INT */
    double num;             /* POL_OPT_NUMBER */
    bool b;                 /* POL_OPT_BOOL */
    struct pol_list list;   /* POL_OPT_LIST */
    const struct pol_regex *re;  /* POL_OPT_REGEX */
    const struct pol_var *var;   /* POL_OPT_VAR */
    const char *file;       /* where it was set (NULL for defaults) */
    unsigned line;
};

/* The value of option idx (an index into the type's opts[]). Never NULL. */
const struct pol_opt_value *pol_opt(const struct pol_plugin *p, unsigned idx);

/* User-configurable value (spec 12.5): if uc_NAME is configured and the session holds that
 * key, the session's value; otherwise the configured text (NULL when unset). */
const char *pol_uc(struct pol_req *r, const struct pol_plugin *p, unsigned idx, size_t *len);
/* The same through Perl's numeric conversion (leading numeric prefix, 0 if none); *set is
 * false when neither the session nor the configuration has a value. */
double pol_uc_number(struct pol_req *r, const struct pol_plugin *p, unsigned idx, bool *set);
/* Spec 12.2: false only when the effective value of the option is exactly "off". */
bool pol_uc_enabled(struct pol_req *r, const struct pol_plugin *p, unsigned idx);

/* ---------------------------------------------------------------------------------------------
 * Plugin types
 */

enum pol_step {
    POL_NEXT,
    POL_WAIT,
    POL_SUBCHAIN,
    POL_FAIL,
};

enum {
    POL_TYPE_CHAIN = 1u << 0,   /* accepts nested <Plugin> blocks (a sub-chain) */
    POL_TYPE_SCORING = 1u << 1, /* accepts score_field (spec 12.4) */
};

struct pol_plugin_type {
    uint32_t api_version; /* POL_PLUGIN_API_VERSION */
    const char *module;   /* the `module = "..."` name, case sensitive */
    const struct pol_opt_def *opts;
    size_t opt_count;
    unsigned flags;
    size_t req_state_bytes;

    /* Optional. Main thread, after options were parsed. Returns 0, or -1 with a sentence in
     * err (reported with the block's file and line, start-up or the reload fails). When it
     * fails after pol_plugin_set_data, destroy is called for what it set up so far (so
     * destroy must accept a partly built state), unless it reset the data to NULL itself. */
    int (*create)(struct pol_plugin *p, char *err, size_t err_len);
    /* Optional. On each shard's thread at shard start / stop, for per-shard state. */
    int (*shard_start)(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                       char *err, size_t err_len);
    void (*shard_stop)(struct pol_plugin *p, struct eng_shard *sh, void *shard_data);
    /* Required. See the top of this file. */
    enum pol_step (*step)(struct pol_plugin *p, struct pol_req *r, void *req_state);
    /* Optional. `--cron=hourly,daily`: tasks holds the names. Returns 0, or -1 with a sentence
     * in err (logged as "plugin NAME failed in cron: ERR"; the other plugins still run). */
    int (*cron)(struct pol_plugin *p, const char *const *tasks, size_t task_count, char *err,
                size_t err_len);
    /* Optional. Main thread, at exit or after a reload retired this instance. */
    void (*destroy)(struct pol_plugin *p);
};

/* A shared object providing plugins exports this function (see docs/writing-a-plugin.md):
 * it returns a NULL-terminated array of types, or NULL if it cannot work with
 * host_api_version. `module = "HelloWorld"` loads PLUGIN_DIR/HelloWorld.so; a module name
 * containing '/' is a path to the .so. */
#define POL_PLUGIN_ENTRY ringpolicyd_plugin_types
typedef const struct pol_plugin_type *const *pol_plugin_entry_fn(uint32_t host_api_version);

/* ---------------------------------------------------------------------------------------------
 * Plugin instances
 */

const char *pol_plugin_name(const struct pol_plugin *p);   /* the block key */
const struct pol_plugin_type *pol_plugin_type_of(const struct pol_plugin *p);
int pol_plugin_log_level(const struct pol_plugin *p);      /* log_level option, default 4 */
const char *pol_plugin_score_field(const struct pol_plugin *p); /* default "score" */
bool pol_plugin_has_subchain(const struct pol_plugin *p);
void *pol_plugin_data(const struct pol_plugin *p);          /* set by create */
void pol_plugin_set_data(struct pol_plugin *p, void *data);
void *pol_plugin_shard_data(const struct pol_plugin *p, const struct pol_req *r);
/* Where the block starts, for messages. */
const char *pol_plugin_file(const struct pol_plugin *p);
unsigned pol_plugin_line(const struct pol_plugin *p);

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

/* Request attribute (later duplicate wins); NULL when absent. */
const char *pol_req_attr(const struct pol_req *r, const char *name, size_t *len);
/* Number of attributes and the i-th one, in wire order, duplicates removed. */
size_t pol_req_attr_count(const struct pol_req *r);
void pol_req_attr_at(const struct pol_req *r, size_t i, const char **name, size_t *name_len,
                     const char **value, size_t *value_len);
/* Reads a variable reference (spec 12.1); NULL when absent. */
const char *pol_req_var(struct pol_req *r, const struct pol_var *v, size_t *len);
const char *pol_req_vhost_name(const struct pol_req *r);
struct eng_shard *pol_req_shard(const struct pol_req *r);

/* Request arena. NULL when its limit is reached. */
void *pol_req_alloc(struct pol_req *r, size_t bytes);
char *pol_req_strndup(struct pol_req *r, const char *s, size_t len);
char *pol_req_printf(struct pol_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Results (spec 11.3): action may be NULL (a result without action). The text is copied. */
int pol_result(struct pol_req *r, const char *action, size_t len, bool abort);
int pol_resultf(struct pol_req *r, bool abort, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* mtpolicyd's new_header_once: "PREPEND NAME: VALUE" when !already_done, else "dunno";
 * both abort. */
int pol_result_header_once(struct pol_req *r, bool already_done, const char *name,
                           const char *value);

/* Sets the failure detail ("plugin NAME failed: DETAIL") and returns POL_FAIL. */
enum pol_step pol_req_fail(struct pol_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* After POL_WAIT: continue the chain. Call exactly once, on the request's shard, from the
 * completion callback of the operation (never from inside step). If the request timed out in
 * the meantime the chain does not continue and the request is released. */
void pol_req_resume(struct pol_req *r);

/* After POL_SUBCHAIN: true on the step call that follows the sub-chain. */
bool pol_req_subchain_done(const struct pol_req *r);
/* The sub-chain's results: make them this plugin's results (Condition, ScoreAction, ...). */
void pol_req_adopt_subchain(struct pol_req *r);
/* Or read them (Eval): the actions in order, joined with sep, NULL if there were none. */
char *pol_req_subchain_actions(struct pol_req *r, const char *sep);

/* ---------------------------------------------------------------------------------------------
 * Sessions (spec 10, 12.3). Keys and values are byte strings; a value stored here is copied.
 * Without a persistent session cache the session lives for one request.
 */

const char *pol_session_get(struct pol_req *r, const char *key, size_t *len);
int pol_session_set(struct pol_req *r, const char *key, const char *val, size_t len); /* 0/-ENOMEM */
bool pol_session_del(struct pol_req *r, const char *key);
size_t pol_session_del_prefix(struct pol_req *r, const char *prefix); /* returns count deleted */
/* Once-per-mail flag: false the first time for this mail (and sets it), true afterwards. */
bool pol_req_is_already_done(struct pol_req *r, const char *flag);

/* ---------------------------------------------------------------------------------------------
 * Scoring (spec 12.4): adds value to the session's score_field and appends "LABEL=TEXT" to
 * score_field_detail. text is the value as configured (e.g. "2.5"); NULL formats value with
 * %.15g. label NULL means the plugin's name.
 */
int pol_score_add(struct pol_req *r, const struct pol_plugin *p, const char *label, double value,
                  const char *text);
/* The current score (0 if none) and its details (NULL if none). */
double pol_score_get(struct pol_req *r, const struct pol_plugin *p);
const char *pol_score_detail(struct pol_req *r, const struct pol_plugin *p);

/* ---------------------------------------------------------------------------------------------
 * Helpers shared by plugins
 */

/* PCRE2 match, unanchored unless the pattern anchors itself. */
bool pol_regex_match(const struct pol_regex *re, const char *s, size_t len);

/* Message templates (spec 12.7): only the first occurrence of each %NAME% is replaced; a
 * NULL value becomes "". Result in the request arena (NULL when full). */
struct pol_tvar {
    const char *name; /* without the % signs */
    const char *value;
};
char *pol_template_expand(struct pol_req *r, const char *tmpl, const struct pol_tvar *vars,
                          size_t var_count);

/* Perl's string-to-number conversion: the longest leading numeric prefix, 0 if none. */
double pol_num_perl(const char *s, size_t len);
/* Perl's number-to-string conversion (%.15g). Returns the length. */
size_t pol_num_format(char *buf, size_t buf_len, double v);

/* Logging at the plugin's log_level, prefixed "VHOSTNAME: " (r may be NULL in cron). */
void pol_log(const struct pol_plugin *p, const struct pol_req *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Logging at an explicit level (eng/log.h levels). */
void pol_log_at(int level, const struct pol_plugin *p, const struct pol_req *r, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif

#endif
