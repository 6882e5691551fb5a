/*
 * request.c: building a request from parsed attributes, and the plugin API that reads it or
 * allocates from its arena (pol_req_attr*, pol_req_var, pol_req_alloc/strndup/printf).
 *
 * Runs on the shard that builds or processes the request; allocates only from the request's
 * arena. pol_req_build fails with -ENOMEM when the attributes do not fit the arena (the caller
 * chose the arena with pol_req_build_bytes, so that is a bug or a pool out of big buffers).
 * Duplicate names are removed with a small hash over the names (bounded by attrs_max), so a
 * request of 256 attributes costs no quadratic scan.
 */
#include "request.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "eng/assert.h"
#include "exec.h"
#include "server.h"
#include "var.h"

static const struct {
    const char *name;
    uint32_t len;
} wk_names[POL_WK_COUNT] = {
#define WK(e, s) [e] = {s, sizeof(s) - 1}
    WK(POL_WK_REQUEST, "request"),
    WK(POL_WK_INSTANCE, "instance"),
    WK(POL_WK_POLICY_CONTEXT, "policy_context"),
    WK(POL_WK_PROTOCOL_STATE, "protocol_state"),
    WK(POL_WK_CLIENT_ADDRESS, "client_address"),
    WK(POL_WK_CLIENT_NAME, "client_name"),
    WK(POL_WK_REVERSE_CLIENT_NAME, "reverse_client_name"),
    WK(POL_WK_HELO_NAME, "helo_name"),
    WK(POL_WK_SENDER, "sender"),
    WK(POL_WK_RECIPIENT, "recipient"),
    WK(POL_WK_RECIPIENT_COUNT, "recipient_count"),
    WK(POL_WK_QUEUE_ID, "queue_id"),
    WK(POL_WK_SIZE, "size"),
    WK(POL_WK_SASL_USERNAME, "sasl_username"),
    WK(POL_WK_STRESS, "stress"),
#undef WK
};

/* Dedup table: a power of two above twice the attribute limit keeps probes short. */
#define DEDUP_SLOTS 1024u
_Static_assert(DEDUP_SLOTS >= 2 * POL_PROTO_ATTRS_DEFAULT, "dedup table too small");

int pol_req_wk_index(const char *name, size_t len)
{
    for (int i = 0; i < POL_WK_COUNT; i++)
        if (wk_names[i].len == len && memcmp(wk_names[i].name, name, len) == 0)
            return i;
    return -1;
}

size_t pol_req_build_bytes(const struct pol_proto_attr *attrs, uint32_t count)
{
    size_t n = (size_t)count * sizeof(struct pol_attr) + POL_ARENA_ALIGN;
    if (count > DEDUP_SLOTS / 2)
        n += sizeof(uint16_t) * 4 * (size_t)count; /* the dedup table in the arena */
    for (uint32_t i = 0; i < count; i++)
        n += (size_t)attrs[i].name_len + attrs[i].value_len + 2 + 2 * POL_ARENA_ALIGN;
    return n;
}

static uint32_t name_hash(const char *s, uint32_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: names are short, this is plenty */
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Index of an earlier attribute with the same name, or -1; remembers this one otherwise. The
 * table holds index + 1 (0 = empty). */
static int dedup(uint16_t *slots, uint32_t mask, const struct pol_attr *attrs, const char *name,
                 uint32_t len, uint32_t idx)
{
    for (uint32_t h = name_hash(name, len) & mask;; h = (h + 1) & mask) {
        if (slots[h] == 0) {
            slots[h] = (uint16_t)(idx + 1);
            return -1;
        }
        const struct pol_attr *a = &attrs[slots[h] - 1];
        if (a->name_len == len && memcmp(a->name, name, len) == 0)
            return slots[h] - 1;
    }
}

static void req_reset(struct pol_req *r)
{
    struct pol_shard *home = r->home;
    void *buf = r->arena_buf;
    uint32_t cls = r->arena_class;
    struct pol_arena a = r->arena;
    memset(r, 0, offsetof(struct pol_req, done));
    r->home = home;
    r->arena_buf = buf;
    r->arena_class = cls;
    r->arena = a;
    pol_arena_reset(&r->arena);
    pol_sess_init(&r->sess);
}

int pol_req_build(struct pol_req *r, const char *buf, const struct pol_proto_attr *attrs,
                  uint32_t count)
{
    ENG_ASSERT(count < UINT16_MAX);
    req_reset(r);
    /* The dedup table lives on the stack for ordinary requests and in the arena only for
     * requests with more than DEDUP_SLOTS / 2 attributes (max_attributes raised). */
    uint16_t stack_slots[DEDUP_SLOTS];
    uint16_t *slots = stack_slots;
    uint32_t slots_n = DEDUP_SLOTS;
    if (count > DEDUP_SLOTS / 2) {
        while (slots_n < 2 * count)
            slots_n *= 2;
        slots = pol_arena_alloc(&r->arena, sizeof(uint16_t) * slots_n);
        if (!slots)
            return -ENOMEM;
    }
    memset(slots, 0, sizeof(uint16_t) * slots_n);
    struct pol_attr *out = pol_arena_alloc(&r->arena, sizeof(*out) * (count ? count : 1));
    if (!out)
        return -ENOMEM;
    uint32_t n = 0;
    for (uint32_t i = 0; i < count; i++) {
        const char *name = buf + attrs[i].name_off;
        int prev = dedup(slots, slots_n - 1, out, name, attrs[i].name_len, n);
        struct pol_attr *a = prev >= 0 ? &out[prev] : &out[n++];
        a->name = name;
        a->name_len = attrs[i].name_len;
        a->value = buf + attrs[i].value_off;
        a->value_len = attrs[i].value_len;
    }
    /* Names and values still point into buf: copy them into the arena for good. */
    for (uint32_t i = 0; i < n; i++) {
        char *nm = pol_arena_strndup(&r->arena, out[i].name, out[i].name_len);
        char *val = nm ? pol_arena_strndup(&r->arena, out[i].value, out[i].value_len) : NULL;
        if (!val)
            return -ENOMEM;
        out[i].name = nm;
        out[i].value = val;
        int k = pol_req_wk_index(nm, out[i].name_len);
        if (k >= 0)
            r->wk[k] = (uint16_t)(i + 1);
    }
    r->attrs = out;
    r->attr_count = n;
    return 0;
}

const char *pol_req_wk(const struct pol_req *r, enum pol_wk k, size_t *len)
{
    ENG_ASSERT(k < POL_WK_COUNT);
    if (r->wk[k] == 0)
        return NULL;
    const struct pol_attr *a = &r->attrs[r->wk[k] - 1];
    if (len)
        *len = a->value_len;
    return a->value;
}

/* ---------------------------------------------------------------------------------------------
 * Plugin API (pol/plugin.h)
 */

static const char *attr_n(const struct pol_req *r, const char *name, size_t name_len, size_t *len)
{
    int k = pol_req_wk_index(name, name_len);
    if (k >= 0)
        return pol_req_wk(r, (enum pol_wk)k, len);
    for (uint32_t i = 0; i < r->attr_count; i++) {
        const struct pol_attr *a = &r->attrs[i];
        if (a->name_len == name_len && memcmp(a->name, name, name_len) == 0) {
            if (len)
                *len = a->value_len;
            return a->value;
        }
    }
    return NULL;
}

const char *pol_req_attr(const struct pol_req *r, const char *name, size_t *len)
{
    ENG_ASSERT(name != NULL);
    return attr_n(r, name, strlen(name), len);
}

size_t pol_req_attr_count(const struct pol_req *r)
{
    return r->attr_count;
}

void pol_req_attr_at(const struct pol_req *r, size_t i, const char **name, size_t *name_len,
                     const char **value, size_t *value_len)
{
    ENG_ASSERT(i < r->attr_count);
    const struct pol_attr *a = &r->attrs[i];
    if (name)
        *name = a->name;
    if (name_len)
        *name_len = a->name_len;
    if (value)
        *value = a->value;
    if (value_len)
        *value_len = a->value_len;
}

const char *pol_req_var(struct pol_req *r, const struct pol_var *v, size_t *len)
{
    if (!v || v->empty)
        return NULL;
    if (v->scope == POL_VAR_SESSION) {
        const struct pol_sess_ent *e = pol_sess_find(&r->sess, v->name, v->name_len);
        if (!e)
            return NULL;
        if (len)
            *len = e->val_len;
        return e->val;
    }
    return attr_n(r, v->name, v->name_len, len);
}

const char *pol_req_vhost_name(const struct pol_req *r)
{
    return r->vhost ? r->vhost->name : "";
}

struct eng_shard *pol_req_shard(const struct pol_req *r)
{
    return r->ps ? r->ps->sh : NULL;
}

void *pol_req_alloc(struct pol_req *r, size_t bytes)
{
    return pol_arena_alloc(&r->arena, bytes);
}

char *pol_req_strndup(struct pol_req *r, const char *s, size_t len)
{
    return pol_arena_strndup(&r->arena, s, len);
}

char *pol_req_printf(struct pol_req *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = pol_arena_free_bytes(&r->arena);
    char *p = r->arena.base + r->arena.used_bytes;
    int n = vsnprintf(p, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room)
        return NULL;
    void *got = pol_arena_alloc(&r->arena, (size_t)n + 1);
    ENG_ASSERT(got == p);
    return p;
}
