/*
 * plugin.c: plugin instances: finding a plugin type (built-in, registered, or a user's shared
 * object), typing a <Plugin NAME> block's options against the type's pol_opt_def table, building
 * nested chains, calling create; and the accessors of pol/plugin.h.
 *
 * Main thread, start-up only (accessors: any thread, read-only). Every error is one sentence
 * "FILE:LINE: ..." naming the option's line, or the block's when the problem is the block. An
 * instance owns its parsed option values (lists, variables, compiled patterns) and its
 * sub-chain; the server owns the dlopen handles, each loaded once and unloaded after every
 * instance was destroyed.
 *
 * Beyond 2.05: unknown options, mistyped values and errors in nested blocks are start-up
 * errors (2.05 ignores unknown options and builds nested plugins on first use; spec 16 #20).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/assert.h"
#include "plugins/builtin.h"
#include "regex.h"
#include "ringpolicyd_config.h"
#include "server.h"
#include "values.h"
#include "var.h"

#define EXTRA_TYPES_MAX 32u

static const struct pol_plugin_type *extra_types[EXTRA_TYPES_MAX];
static unsigned extra_type_count;

int pol_server_register_type(const struct pol_plugin_type *t)
{
    ENG_ASSERT(t != NULL);
    ENG_ASSERT(t->module != NULL);
    if (extra_type_count == EXTRA_TYPES_MAX)
        return -ENOSPC;
    extra_types[extra_type_count++] = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Finding a type
 */

static const struct pol_plugin_type *find_static(const char *module)
{
    for (const struct pol_plugin_type *const *t = pol_builtin_types; *t; t++)
        if (strcmp((*t)->module, module) == 0)
            return *t;
    for (unsigned i = 0; i < extra_type_count; i++)
        if (strcmp(extra_types[i]->module, module) == 0)
            return extra_types[i];
    return NULL;
}

static int keep_handle(struct pol_server *s, void *h)
{
    for (uint32_t i = 0; i < s->dl_count; i++)
        if (s->dl_handles[i] == h) {
            dlclose(h); /* dlopen counted it again */
            return 0;
        }
    void **n = realloc(s->dl_handles, sizeof(void *) * (s->dl_count + 1));
    if (!n)
        return -ENOMEM;
    s->dl_handles = n;
    s->dl_handles[s->dl_count++] = h;
    return 0;
}

/* The type a shared object provides for `module`: the one named like the file (without
 * directory and ".so"), or its only type. */
static const struct pol_plugin_type *pick_type(const struct pol_plugin_type *const *types,
                                               const char *module)
{
    const char *base = strrchr(module, '/');
    base = base ? base + 1 : module;
    size_t bl = strlen(base);
    if (bl > 3 && strcmp(base + bl - 3, ".so") == 0)
        bl -= 3;
    size_t n = 0;
    for (; types[n]; n++)
        if (types[n]->module && strlen(types[n]->module) == bl &&
            memcmp(types[n]->module, base, bl) == 0)
            return types[n];
    return n == 1 ? types[0] : NULL;
}

static const struct pol_plugin_type *load_type(struct pol_server *s, const char *module,
                                               const char *file, unsigned line, char *err,
                                               size_t err_len)
{
    const struct pol_plugin_type *t = strchr(module, '/') ? NULL : find_static(module);
    if (t)
        return t;
    char path[4096];
    const char *dir = s->g.plugin_dir ? s->g.plugin_dir : RINGPOLICYD_PLUGIN_DIR;
    if (strchr(module, '/'))
        snprintf(path, sizeof(path), "%s", module);
    else
        snprintf(path, sizeof(path), "%s/%s.so", dir, module);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        pol_errf(err, err_len, file, line, "unknown module %s: not built in, and %s", module,
                 dlerror());
        return NULL;
    }
    /* POSIX dlsym returns functions as void *; copy the bits rather than cast, which ISO C
     * (and -Wpedantic) forbids between object and function pointers. */
    pol_plugin_entry_fn *entry = NULL;
    void *sym = dlsym(h, "ringpolicyd_plugin_types");
    _Static_assert(sizeof(entry) == sizeof(sym), "function and object pointers differ");
    memcpy(&entry, &sym, sizeof(entry));
    const struct pol_plugin_type *const *types = entry ? entry(POL_PLUGIN_API_VERSION) : NULL;
    if (!entry || !types || !(t = pick_type(types, module))) {
        pol_errf(err, err_len, file, line, "%s: %s", path,
                 !entry   ? "no ringpolicyd_plugin_types symbol (not a ringpolicyd plugin)"
                 : !types ? "the plugin refuses plugin API version 1"
                          : "no plugin type of that name in it");
        dlclose(h);
        return NULL;
    }
    if (t->api_version != POL_PLUGIN_API_VERSION || !t->step || !t->module) {
        pol_errf(err, err_len, file, line, "%s: plugin type %s has API version %u, need %u%s", path,
                 t->module ? t->module : "?", t->api_version, POL_PLUGIN_API_VERSION,
                 t->step ? "" : " (and no step function)");
        dlclose(h);
        return NULL;
    }
    if (keep_handle(s, h) != 0) {
        dlclose(h);
        pol_errf(err, err_len, file, line, "out of memory");
        return NULL;
    }
    return t;
}

void pol_plugin_unload_all(struct pol_server *s)
{
    for (uint32_t i = 0; i < s->dl_count; i++)
        dlclose(s->dl_handles[i]);
    free(s->dl_handles);
    s->dl_handles = NULL;
    s->dl_count = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Option values
 */

/* A list: one allocation holding the pointer array and the NUL-terminated items. */
static int parse_list(const char *text, struct pol_list *out)
{
    size_t tl = strlen(text);
    size_t n = pol_value_list_split(text, tl, POL_LIST_COMMA, NULL, 0);
    struct pol_value_slice *sl = malloc(sizeof(*sl) * (n ? n : 1));
    char **items = malloc(sizeof(char *) * (n ? n : 1) + tl + n + 1);
    if (!sl || !items) {
        free(sl);
        free(items);
        return -ENOMEM;
    }
    size_t got = pol_value_list_split(text, tl, POL_LIST_COMMA, sl, n);
    ENG_ASSERT(got == n);
    char *buf = (char *)(items + (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        memcpy(buf, sl[i].ptr, sl[i].len);
        buf[sl[i].len] = '\0';
        items[i] = buf;
        buf += sl[i].len + 1;
    }
    free(sl);
    out->count = n;
    out->items = (const char *const *)items;
    return 0;
}

static int opt_parse(const struct pol_opt_def *d, const char *text, struct pol_opt_value *v,
                     char *why, size_t why_len)
{
    v->set = true;
    v->text = text;
    v->text_len = strlen(text);
    switch (d->type) {
    case POL_OPT_STRING:
    case POL_OPT_TEMPLATE:
        return 0;
    case POL_OPT_INT:
        return pol_value_int(text, v->text_len, &v->i, why, why_len) ? 0 : -1;
    case POL_OPT_NUMBER:
        return pol_value_number(text, v->text_len, &v->num, why, why_len) ? 0 : -1;
    case POL_OPT_BOOL:
        return pol_value_bool(text, v->text_len, &v->b, why, why_len) ? 0 : -1;
    case POL_OPT_LIST:
        if (parse_list(text, &v->list) == 0)
            return 0;
        snprintf(why, why_len, "out of memory");
        return -1;
    case POL_OPT_REGEX:
        v->re = pol_regex_compile(text, why, why_len);
        return v->re ? 0 : -1;
    case POL_OPT_VAR: {
        struct pol_var *var = malloc(sizeof(*var));
        if (!var || pol_var_parse(text, var, why, why_len) != 0) {
            if (!var)
                snprintf(why, why_len, "out of memory");
            free(var);
            return -1;
        }
        v->var = var;
        return 0;
    }
    }
    snprintf(why, why_len, "option type %d is unknown", (int)d->type);
    return -1;
}

static void opt_free(const struct pol_opt_def *d, struct pol_opt_value *v)
{
    if (!v->set)
        return;
    if (d->type == POL_OPT_LIST)
        free((void *)v->list.items);
    else if (d->type == POL_OPT_REGEX)
        pol_regex_free((struct pol_regex *)v->re);
    else if (d->type == POL_OPT_VAR)
        free((void *)v->var);
    memset(v, 0, sizeof(*v));
}

/* ---------------------------------------------------------------------------------------------
 * Building an instance
 */

static int opt_index(const struct pol_plugin_type *t, const char *name)
{
    for (size_t i = 0; i < t->opt_count; i++)
        if (strcmp(t->opts[i].name, name) == 0)
            return (int)i;
    return -1;
}

static struct pol_plugin *plugin_alloc(const struct pol_plugin_type *t)
{
    struct pol_plugin *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->type = t;
    p->opts = calloc(t->opt_count ? t->opt_count : 1, sizeof(*p->opts));
    p->uc_keys = calloc(t->opt_count ? t->opt_count : 1, sizeof(*p->uc_keys));
    if (!p->opts || !p->uc_keys) {
        free(p->opts);
        free(p->uc_keys);
        free(p);
        return NULL;
    }
    p->log_level = 4;
    p->score_field = "score";
    return p;
}

static int add_sub(struct pol_plugin *p, struct pol_plugin *child)
{
    struct pol_plugin **n = realloc(p->sub.plugins, sizeof(*n) * (p->sub.count + 1));
    if (!n)
        return -ENOMEM;
    p->sub.plugins = n;
    n[p->sub.count++] = child;
    return 0;
}

/* One option line of the block: a common option, score_field, uc_NAME or a type option. */
static int apply_option(struct pol_plugin *p, const struct pol_cfg_node *o, char *err,
                        size_t err_len)
{
    const struct pol_plugin_type *t = p->type;
    const char *name = o->name, *val = o->value ? o->value : "";
    char why[512];
    if (strcmp(name, "module") == 0)
        return 0;
    if (strcmp(name, "name") == 0 && opt_index(t, "name") < 0) {
        p->name = val; /* 2.05 passes the block's options after name: a `name` line wins */
        return 0;
    }
    if (strcmp(name, "on_error") == 0) {
        p->on_error_continue = strcmp(val, "continue") == 0;
        return 0;
    }
    if (strcmp(name, "log_level") == 0) {
        long long lv;
        if (pol_value_int(val, strlen(val), &lv, why, sizeof(why)) && lv >= -1000 && lv <= 1000) {
            p->log_level = (int)lv;
            return 0;
        }
        pol_errf(err, err_len, o->file, o->line, "plugin %s: log_level: '%s' is not an integer",
                 p->name, val);
        return -1;
    }
    if (strcmp(name, "score_field") == 0 && (t->flags & POL_TYPE_SCORING)) {
        p->score_field = val;
        return 0;
    }
    int idx = opt_index(t, name);
    if (idx < 0 && strncmp(name, "uc_", 3) == 0) {
        int base = opt_index(t, name + 3);
        if (base >= 0 && (t->opts[base].flags & POL_OPT_UC)) {
            p->uc_keys[base] = val;
            return 0;
        }
    }
    if (idx < 0) {
        pol_errf(err, err_len, o->file, o->line, "plugin %s: unknown option '%s' for module %s",
                 p->name, name, p->module);
        return -1;
    }
    p->opts[idx].file = o->file;
    p->opts[idx].line = o->line;
    if (opt_parse(&t->opts[idx], val, &p->opts[idx], why, sizeof(why)) != 0) {
        pol_errf(err, err_len, o->file, o->line, "plugin %s: option %s: %s", p->name, name, why);
        return -1;
    }
    return 0;
}

/* Defaults for unset options, then the required check. */
static int finish_options(struct pol_plugin *p, char *err, size_t err_len)
{
    const struct pol_plugin_type *t = p->type;
    char why[512];
    for (size_t i = 0; i < t->opt_count; i++) {
        const struct pol_opt_def *d = &t->opts[i];
        if (p->opts[i].set)
            continue;
        if (d->flags & POL_OPT_REQUIRED) {
            pol_errf(err, err_len, p->file, p->line, "plugin %s: missing required option '%s'",
                     p->name, d->name);
            return -1;
        }
        if (d->default_text && opt_parse(d, d->default_text, &p->opts[i], why, sizeof(why))) {
            pol_errf(err, err_len, p->file, p->line, "plugin %s: default of option %s: %s", p->name,
                     d->name, why);
            return -1;
        }
        if (!d->default_text)
            p->opts[i].text = "";
    }
    return 0;
}

/* Spec 9: an option named after a connection kind names a <Connection> of that module. */
static int check_connections(const struct pol_server *s, const struct pol_plugin *p, char *err,
                             size_t err_len)
{
    static const char *const kinds[][2] = {
        {"db", "Sql"}, {"memcached", "Memcached"}, {"redis", "Redis"}, {"ldap", "Ldap"}};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        int idx = opt_index(p->type, kinds[k][0]);
        if (idx < 0 || p->type->opts[idx].type != POL_OPT_STRING || !p->opts[idx].set)
            continue;
        const struct pol_opt_value *v = &p->opts[idx];
        const struct pol_conn_def *c = NULL;
        for (uint32_t i = 0; i < s->conn_count && !c; i++)
            if (strcmp(s->conns[i].name, v->text) == 0 &&
                strcmp(s->conns[i].module, kinds[k][1]) == 0)
                c = &s->conns[i];
        if (!c) {
            pol_errf(err, err_len, v->file ? v->file : p->file, v->file ? v->line : p->line,
                     "plugin %s: no connection %s configured!", p->name, v->text);
            return -1;
        }
    }
    return 0;
}

/* A named option block inside a <Plugin> (Greylist's <AWL> and <Ticket>): its options are the
 * type's options named BLOCK.OPTION. A type declaring none refuses the block; an option the
 * type does not declare inside a block it knows is warned about and ignored (2.05 passes such
 * blocks as a hash to the store, which ignores what it does not know). */
static int block_options(struct pol_server *s, struct pol_plugin *p, const struct pol_cfg_node *b,
                         char *err, size_t err_len)
{
    const struct pol_plugin_type *t = p->type;
    size_t bl = strlen(b->name);
    bool known = false;
    for (size_t i = 0; i < t->opt_count && !known; i++)
        known = strncmp(t->opts[i].name, b->name, bl) == 0 && t->opts[i].name[bl] == '.';
    if (!known) {
        pol_errf(err, err_len, b->file, b->line, "plugin %s: module %s accepts no <%s> block",
                 p->name, p->module, b->name);
        return -1;
    }
    for (const struct pol_cfg_node *o = b->children; o; o = o->next) {
        char name[256];
        int n = snprintf(name, sizeof(name), "%s.%s", b->name, o->name);
        if (o->is_block || n < 0 || (size_t)n >= sizeof(name) || opt_index(t, name) < 0) {
            pol_server_warn(s, o->file, o->line, "plugin %s: %s %s in <%s> ignored", p->name,
                            o->is_block ? "block" : "option", o->name, b->name);
            continue;
        }
        struct pol_cfg_node copy = *o;
        copy.name = name;
        if (apply_option(p, &copy, err, err_len) != 0)
            return -1;
    }
    return 0;
}

static int build_children(struct pol_server *s, struct pol_plugin *p,
                          const struct pol_cfg_node *block, char *err, size_t err_len)
{
    for (const struct pol_cfg_node *c = block->children; c; c = c->next) {
        if (!c->is_block) {
            if (apply_option(p, c, err, err_len) != 0)
                return -1;
            continue;
        }
        if (strcmp(c->name, "Plugin") != 0) {
            if (block_options(s, p, c, err, err_len) != 0)
                return -1;
            continue;
        }
        if (!(p->type->flags & POL_TYPE_CHAIN)) {
            pol_errf(err, err_len, c->file, c->line, "plugin %s: module %s accepts no <%s> block",
                     p->name, p->module, c->name);
            return -1;
        }
        struct pol_plugin *child =
            pol_plugin_build(s, c, p->vhost_name, p->depth + 1, err, err_len);
        if (!child)
            return -1;
        if (add_sub(p, child) != 0) {
            pol_errf(err, err_len, c->file, c->line, "out of memory");
            return -1;
        }
    }
    return 0;
}

static int register_instance(struct pol_server *s, struct pol_plugin *p)
{
    struct pol_plugin **n = realloc(s->plugins, sizeof(*n) * (s->plugin_count + 1));
    if (!n)
        return -ENOMEM;
    s->plugins = n;
    p->index = s->plugin_count;
    n[s->plugin_count++] = p;
    if (p->depth > s->depth_max)
        s->depth_max = p->depth;
    return 0;
}

struct pol_plugin *pol_plugin_build(struct pol_server *s, const struct pol_cfg_node *block,
                                    const char *vhost_name, uint32_t depth, char *err,
                                    size_t err_len)
{
    const char *name = block->value ? block->value : "";
    const struct pol_cfg_node *mod = pol_cfg_option(block, "module");
    if (!mod || !mod->value || !*mod->value) {
        pol_errf(err, err_len, block->file, block->line, "no module defined for plugin %s!", name);
        return NULL;
    }
    const struct pol_plugin_type *t = load_type(s, mod->value, mod->file, mod->line, err, err_len);
    if (!t)
        return NULL;
    struct pol_plugin *p = plugin_alloc(t);
    if (!p) {
        pol_errf(err, err_len, block->file, block->line, "out of memory");
        return NULL;
    }
    p->name = name;
    p->module = mod->value;
    p->file = block->file;
    p->line = block->line;
    p->vhost_name = vhost_name;
    p->depth = depth;
    p->srv = s;
    if (build_children(s, p, block, err, err_len) != 0 || finish_options(p, err, err_len) != 0 ||
        check_connections(s, p, err, err_len) != 0)
        goto fail;
    size_t fl = strlen(p->score_field);
    if (!(p->score_detail_field = malloc(fl + sizeof("_detail")))) {
        pol_errf(err, err_len, block->file, block->line, "out of memory");
        goto fail;
    }
    memcpy(p->score_detail_field, p->score_field, fl);
    memcpy(p->score_detail_field + fl, "_detail", sizeof("_detail"));
    if (t->create) {
        char why[512] = "";
        if (t->create(p, why, sizeof(why)) != 0) {
            pol_errf(err, err_len, block->file, block->line, "could not initialize plugin %s: %s",
                     p->name, why[0] ? why : "create failed");
            if (t->destroy && pol_plugin_data(p)) /* what create set up before it failed */
                t->destroy(p);
            goto fail;
        }
    }
    p->created = true;
    if (register_instance(s, p) != 0) {
        pol_errf(err, err_len, block->file, block->line, "out of memory");
        goto fail;
    }
    return p;
fail:
    pol_plugin_free(p);
    return NULL;
}

void pol_plugin_free(struct pol_plugin *p)
{
    if (!p)
        return;
    /* Children were registered in the server when built; free them only through here when
     * the parent owns them (pol_server_free frees parents, which free their sub-chains). */
    for (uint32_t i = 0; i < p->sub.count; i++)
        pol_plugin_free(p->sub.plugins[i]);
    free(p->sub.plugins);
    if (p->created && p->type->destroy)
        p->type->destroy(p);
    for (size_t i = 0; i < p->type->opt_count; i++)
        opt_free(&p->type->opts[i], &p->opts[i]);
    free(p->opts);
    free(p->uc_keys);
    free(p->score_detail_field);
    free(p);
}

/* ---------------------------------------------------------------------------------------------
 * Accessors (pol/plugin.h)
 */

const struct pol_opt_value *pol_opt(const struct pol_plugin *p, unsigned idx)
{
    ENG_ASSERT(idx < p->type->opt_count);
    return &p->opts[idx];
}

const char *pol_plugin_name(const struct pol_plugin *p)
{
    return p->name;
}

const struct pol_plugin_type *pol_plugin_type_of(const struct pol_plugin *p)
{
    return p->type;
}

int pol_plugin_log_level(const struct pol_plugin *p)
{
    return p->log_level;
}

const char *pol_plugin_score_field(const struct pol_plugin *p)
{
    return p->score_field;
}

bool pol_plugin_has_subchain(const struct pol_plugin *p)
{
    return p->sub.count > 0;
}

void *pol_plugin_data(const struct pol_plugin *p)
{
    return p->data;
}

void pol_plugin_set_data(struct pol_plugin *p, void *data)
{
    p->data = data;
}

const char *pol_plugin_file(const struct pol_plugin *p)
{
    return p->file;
}

unsigned pol_plugin_line(const struct pol_plugin *p)
{
    return p->line;
}
