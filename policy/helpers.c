/*
 * helpers.c: the plugin helpers of pol/plugin.h that build on the session: scoring (spec
 * 12.4), user-configurable options (12.5), message templates (12.7) and plugin logging (5.3).
 *
 * Runs on the shard processing the request (pol_log also from the main thread in cron).
 * Allocates only from the request arena; a full arena is reported as -ENOMEM / NULL for the
 * plugin to fail the request. Scores are kept in the session as text formatted like Perl prints
 * numbers (%.15g), which is also what a Condition comparing `s:score` sees in 2.05; the price is
 * that precision beyond 15 digits is not carried from one request to the next.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "request.h"
#include "server.h"

/* ---------------------------------------------------------------------------------------------
 * Scoring
 */

double pol_score_get(struct pol_req *r, const struct pol_plugin *p)
{
    size_t len = 0;
    const char *v = pol_session_get(r, p->score_field, &len);
    return v ? pol_num_perl(v, len) : 0.0;
}

const char *pol_score_detail(struct pol_req *r, const struct pol_plugin *p)
{
    return pol_session_get(r, p->score_detail_field, NULL);
}

int pol_score_add(struct pol_req *r, const struct pol_plugin *p, const char *label, double value,
                  const char *text)
{
    char num[64], vtext[64];
    double score = pol_score_get(r, p) + value;
    size_t n = pol_num_format(num, sizeof(num), score);
    if (pol_session_set(r, p->score_field, num, n) != 0)
        return -ENOMEM;
    if (!text) {
        pol_num_format(vtext, sizeof(vtext), value);
        text = vtext;
    }
    if (!label)
        label = p->name;
    size_t old_len = 0;
    const char *old = pol_session_get(r, p->score_detail_field, &old_len);
    char *d = old ? pol_req_printf(r, "%.*s, %s=%s", (int)old_len, old, label, text)
                  : pol_req_printf(r, "%s=%s", label, text);
    if (!d)
        return -ENOMEM;
    return pol_session_set(r, p->score_detail_field, d, strlen(d));
}

/* ---------------------------------------------------------------------------------------------
 * User-configurable options
 */

const char *pol_uc(struct pol_req *r, const struct pol_plugin *p, unsigned idx, size_t *len)
{
    ENG_ASSERT(idx < p->type->opt_count);
    if (p->uc_keys && p->uc_keys[idx]) {
        const char *v = pol_session_get(r, p->uc_keys[idx], len);
        if (v)
            return v;
    }
    const struct pol_opt_value *o = &p->opts[idx];
    if (!o->set)
        return NULL;
    if (len)
        *len = o->text_len;
    return o->text;
}

double pol_uc_number(struct pol_req *r, const struct pol_plugin *p, unsigned idx, bool *set)
{
    size_t len = 0;
    const char *v = pol_uc(r, p, idx, &len);
    if (set)
        *set = v != NULL;
    return v ? pol_num_perl(v, len) : 0.0;
}

bool pol_uc_enabled(struct pol_req *r, const struct pol_plugin *p, unsigned idx)
{
    size_t len = 0;
    const char *v = pol_uc(r, p, idx, &len);
    return !(v && len == 3 && memcmp(v, "off", 3) == 0);
}

/* ---------------------------------------------------------------------------------------------
 * Templates: Perl's `s/%NAME%/value/` applied once per variable, in order, each on the result
 * of the previous one (so only the first occurrence of each placeholder is replaced).
 */

static char *subst_first(struct pol_req *r, char *s, const char *name, const char *value)
{
    char ph[256];
    int pl = snprintf(ph, sizeof(ph), "%%%s%%", name);
    if (pl < 0 || (size_t)pl >= sizeof(ph))
        return s; /* a placeholder that long cannot be in any configured template we accept */
    char *at = strstr(s, ph);
    if (!at)
        return s;
    size_t head = (size_t)(at - s), vl = strlen(value), tail = strlen(at + pl);
    char *out = pol_req_alloc(r, head + vl + tail + 1);
    if (!out)
        return NULL;
    memcpy(out, s, head);
    memcpy(out + head, value, vl);
    memcpy(out + head + vl, at + pl, tail + 1);
    return out;
}

char *pol_template_expand(struct pol_req *r, const char *tmpl, const struct pol_tvar *vars,
                          size_t var_count)
{
    char *s = pol_req_strndup(r, tmpl, strlen(tmpl));
    for (size_t i = 0; s && i < var_count; i++)
        s = subst_first(r, s, vars[i].name, vars[i].value ? vars[i].value : "");
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * Logging
 */

/* Logs msg[0..len), NUL bytes included (request values may hold them; the log escapes them
 * as \0, spec 5.2) and '%' as it is: no format is applied. */
void pol_log_bytes(int level, const char *msg, size_t len)
{
    eng_log_bytes(level, NULL, msg, len);
}

static void plugin_logv(int level, const struct pol_plugin *p, const char *fmt, va_list ap)
{
    if (!eng_log_enabled(level))
        return;
    char msg[ENG_LOG_LINE_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (p && p->vhost_name)
        eng_log(level, "%s: %s", p->vhost_name, msg);
    else
        eng_log(level, "%s", msg);
}

void pol_log(const struct pol_plugin *p, const struct pol_req *r, const char *fmt, ...)
{
    (void)r;
    va_list ap;
    va_start(ap, fmt);
    plugin_logv(p ? p->log_level : ENG_LOG_DEBUG, p, fmt, ap);
    va_end(ap);
}

void pol_log_at(int level, const struct pol_plugin *p, const struct pol_req *r, const char *fmt,
                ...)
{
    (void)r;
    va_list ap;
    va_start(ap, fmt);
    plugin_logv(level, p, fmt, ap);
    va_end(ap);
}
