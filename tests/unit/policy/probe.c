/*
 * probe.c: the `Probe` test plugin type (see probe.h). Options, in the order the step applies
 * them: enabled (uc: "off" does nothing), sub ("adopt": run the nested chain and adopt its
 * results; "eval:KEY": store its actions joined with "," in session KEY), wait (POL_WAIT once),
 * fail (POL_FAIL with this detail), set ("key=value" into the session), score (uc, number),
 * once (a flag: result "new" the first time, "done" after), tmpl (template with %IP% and
 * %SCORE%), keyvar (result: the variable's value), re (result "re-match" when client_address
 * matches), list (result "N:a|b|c"), action (result), empty (a result without action); noabort
 * makes the results non-aborting.
 */
#include "probe.h"

#include <stdio.h>
#include <string.h>

#include "server.h"

struct pol_req *probe_waiting;
char probe_cron_log[1024];

enum {
    OPT_ACTION,
    OPT_NOABORT,
    OPT_EMPTY,
    OPT_FAIL,
    OPT_WAIT,
    OPT_SCORE,
    OPT_ONCE,
    OPT_SET,
    OPT_SUB,
    OPT_ENABLED,
    OPT_TMPL,
    OPT_KEYVAR,
    OPT_RE,
    OPT_LIST,
    OPT_NUM,
    OPT_CRON_FAIL,
    OPT_COUNT
};

static const struct pol_opt_def probe_opts[OPT_COUNT] = {
    [OPT_ACTION] = {"action", POL_OPT_STRING, NULL, 0},
    [OPT_NOABORT] = {"noabort", POL_OPT_BOOL, "0", 0},
    [OPT_EMPTY] = {"empty", POL_OPT_BOOL, "0", 0},
    [OPT_FAIL] = {"fail", POL_OPT_STRING, NULL, 0},
    [OPT_WAIT] = {"wait", POL_OPT_BOOL, "0", 0},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, POL_OPT_UC},
    [OPT_ONCE] = {"once", POL_OPT_STRING, NULL, 0},
    [OPT_SET] = {"set", POL_OPT_STRING, NULL, 0},
    [OPT_SUB] = {"sub", POL_OPT_STRING, NULL, 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_TMPL] = {"tmpl", POL_OPT_TEMPLATE, NULL, 0},
    [OPT_KEYVAR] = {"keyvar", POL_OPT_VAR, NULL, 0},
    [OPT_RE] = {"re", POL_OPT_REGEX, NULL, 0},
    [OPT_LIST] = {"list", POL_OPT_LIST, NULL, 0},
    [OPT_NUM] = {"num", POL_OPT_INT, NULL, 0},
    [OPT_CRON_FAIL] = {"cron_fail", POL_OPT_BOOL, "0", 0},
};

struct probe_state {
    int waits;
};

static int result(struct pol_plugin *p, struct pol_req *r, const char *a)
{
    return pol_result(r, a, a ? strlen(a) : 0, !pol_opt(p, OPT_NOABORT)->b);
}

/* Runs the nested chain first when `sub` asks for it. Returns 1 to return POL_SUBCHAIN. */
static int sub_step(struct pol_plugin *p, struct pol_req *r)
{
    const struct pol_opt_value *sub = pol_opt(p, OPT_SUB);
    if (!sub->set || !pol_plugin_has_subchain(p))
        return 0;
    if (!pol_req_subchain_done(r))
        return 1;
    if (strcmp(sub->text, "adopt") == 0) {
        pol_req_adopt_subchain(r);
    } else if (strncmp(sub->text, "eval:", 5) == 0) {
        char *a = pol_req_subchain_actions(r, ",");
        if (a)
            pol_session_set(r, sub->text + 5, a, strlen(a));
    }
    return 0;
}

static void data_step(struct pol_plugin *p, struct pol_req *r)
{
    const struct pol_opt_value *set = pol_opt(p, OPT_SET);
    if (set->set) {
        const char *eq = strchr(set->text, '=');
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(eq ? eq - set->text : 0), set->text);
        pol_session_set(r, key, eq ? eq + 1 : "", eq ? strlen(eq + 1) : 0);
    }
    bool have = false;
    double sc = pol_uc_number(r, p, OPT_SCORE, &have);
    if (have) {
        size_t len = 0;
        const char *t = pol_uc(r, p, OPT_SCORE, &len);
        char text[64];
        snprintf(text, sizeof(text), "%.*s", (int)len, t);
        pol_score_add(r, p, NULL, sc, text);
    }
}

static void result_step(struct pol_plugin *p, struct pol_req *r)
{
    const struct pol_opt_value *o = pol_opt(p, OPT_ONCE);
    if (o->set)
        result(p, r, pol_req_is_already_done(r, o->text) ? "done" : "new");
    if (pol_opt(p, OPT_TMPL)->set) {
        char score[64];
        pol_num_format(score, sizeof(score), pol_score_get(r, p));
        struct pol_tvar vars[] = {{"IP", pol_req_attr(r, "client_address", NULL)},
                                  {"SCORE", score}};
        result(p, r, pol_template_expand(r, pol_opt(p, OPT_TMPL)->text, vars, 2));
    }
    if (pol_opt(p, OPT_KEYVAR)->set) {
        size_t len = 0;
        const char *v = pol_req_var(r, pol_opt(p, OPT_KEYVAR)->var, &len);
        if (v) /* the value's bytes, NUL included */
            pol_result(r, v, len, !pol_opt(p, OPT_NOABORT)->b);
    }
    const char *ip = pol_req_attr(r, "client_address", NULL);
    if (pol_opt(p, OPT_RE)->set && ip && pol_regex_match(pol_opt(p, OPT_RE)->re, ip, strlen(ip)))
        result(p, r, "re-match");
    const struct pol_list *l = &pol_opt(p, OPT_LIST)->list;
    if (pol_opt(p, OPT_LIST)->set) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "%zu:", l->count);
        for (size_t i = 0; i < l->count && n > 0 && (size_t)n < sizeof(buf); i++)
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s%s", i ? "|" : "", l->items[i]);
        result(p, r, buf);
    }
    if (pol_opt(p, OPT_ACTION)->set)
        result(p, r, pol_opt(p, OPT_ACTION)->text);
    if (pol_opt(p, OPT_EMPTY)->b)
        result(p, r, NULL);
}

static enum pol_step probe_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct probe_state *st = req_state;
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    if (sub_step(p, r))
        return POL_SUBCHAIN;
    if (pol_opt(p, OPT_WAIT)->b && st->waits == 0) {
        st->waits = 1;
        probe_waiting = r;
        return POL_WAIT;
    }
    if (pol_opt(p, OPT_FAIL)->set)
        return pol_req_fail(r, "%s", pol_opt(p, OPT_FAIL)->text);
    data_step(p, r);
    result_step(p, r);
    return POL_NEXT;
}

static int probe_cron(struct pol_plugin *p, const char *const *tasks, size_t n, char *err,
                      size_t err_len)
{
    size_t used = strlen(probe_cron_log);
    snprintf(probe_cron_log + used, sizeof(probe_cron_log) - used, "%s%s(%s%s)", used ? " " : "",
             pol_plugin_name(p), n ? tasks[0] : "", n > 1 ? ",..." : "");
    if (pol_opt(p, OPT_CRON_FAIL)->b) {
        snprintf(err, err_len, "cron of %s failed on purpose", pol_plugin_name(p));
        return -1;
    }
    return 0;
}

static const struct pol_plugin_type probe_type = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Probe",
    .opts = probe_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN | POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct probe_state),
    .step = probe_step,
    .cron = probe_cron,
};

void probe_register(void)
{
    static int done;
    if (!done)
        pol_server_register_type(&probe_type);
    done = 1;
}
