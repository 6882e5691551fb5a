/*
 * session.c: the request's working copy of its session and the plugin API over it
 * (pol_session_*, pol_req_is_already_done). See session.h for the representation.
 *
 * Runs on the shard processing the request; touches only the request's arena. Fails with
 * -ENOMEM when the arena is full (the plugin then fails the request). Limit: lookups are linear
 * in the number of entries ever set in this request, fine for the few dozen a session holds.
 */
#include "session.h"

#include <errno.h>
#include <string.h>

#include "eng/assert.h"
#include "request.h"

void pol_sess_init(struct pol_session *s)
{
    memset(s, 0, sizeof(*s));
}

static int append(struct pol_session *s, struct pol_arena *a, const char *key, uint32_t key_len,
                  const char *val, uint32_t val_len)
{
    struct pol_sess_ent *e = pol_arena_alloc(a, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->next = NULL;
    e->key = key;
    e->key_len = key_len;
    e->val = val;
    e->val_len = val_len;
    e->live = true;
    if (s->tail)
        s->tail->next = e;
    else
        s->head = e;
    s->tail = e;
    s->live_count++;
    return 0;
}

static uint32_t get_u32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

int pol_sess_load(struct pol_session *s, struct pol_arena *a, const char *blob, size_t len)
{
    size_t off = 0;
    while (off < len) {
        if (len - off < 8)
            return -EINVAL;
        uint32_t kl = get_u32(blob + off), vl = get_u32(blob + off + 4);
        off += 8;
        if ((size_t)kl + vl + 2 > len - off)
            return -EINVAL;
        const char *k = blob + off, *v = blob + off + kl + 1;
        if (k[kl] != '\0' || v[vl] != '\0')
            return -EINVAL;
        if (append(s, a, k, kl, v, vl) < 0)
            return -ENOMEM;
        off += (size_t)kl + vl + 2;
    }
    s->dirty = false;
    return 0;
}

static struct pol_sess_ent *find(const struct pol_session *s, const char *key, size_t key_len)
{
    for (struct pol_sess_ent *e = s->head; e; e = e->next)
        if (e->live && e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
            return e;
    return NULL;
}

const struct pol_sess_ent *pol_sess_find(const struct pol_session *s, const char *key,
                                         size_t key_len)
{
    return find(s, key, key_len);
}

int pol_sess_set(struct pol_session *s, struct pol_arena *a, const char *key, size_t key_len,
                 const char *val, size_t val_len)
{
    if (key_len > UINT32_MAX / 2 || val_len > UINT32_MAX / 2)
        return -ENOMEM;
    char *v = pol_arena_strndup(a, val ? val : "", val ? val_len : 0);
    if (!v)
        return -ENOMEM;
    struct pol_sess_ent *e = find(s, key, key_len);
    s->dirty = true;
    if (e) {
        /* Replace in place: the old value stays in the arena, so a pointer a plugin still
         * holds remains readable (plugin.h promises validity only until the next set). */
        e->val = v;
        e->val_len = (uint32_t)(val ? val_len : 0);
        return 0;
    }
    char *k = pol_arena_strndup(a, key, key_len);
    if (!k)
        return -ENOMEM;
    return append(s, a, k, (uint32_t)key_len, v, (uint32_t)(val ? val_len : 0));
}

bool pol_sess_del(struct pol_session *s, const char *key, size_t key_len)
{
    struct pol_sess_ent *e = find(s, key, key_len);
    if (!e)
        return false;
    e->live = false;
    ENG_ASSERT(s->live_count > 0);
    s->live_count--;
    s->dirty = true;
    return true;
}

size_t pol_sess_del_prefix(struct pol_session *s, const char *prefix, size_t prefix_len)
{
    size_t n = 0;
    for (struct pol_sess_ent *e = s->head; e; e = e->next) {
        if (!e->live || e->key_len < prefix_len || memcmp(e->key, prefix, prefix_len) != 0)
            continue;
        e->live = false;
        ENG_ASSERT(s->live_count > 0);
        s->live_count--;
        n++;
    }
    if (n)
        s->dirty = true;
    return n;
}

size_t pol_sess_serialized_bytes(const struct pol_session *s)
{
    size_t n = 0;
    for (const struct pol_sess_ent *e = s->head; e; e = e->next)
        if (e->live)
            n += 8 + (size_t)e->key_len + e->val_len + 2;
    return n;
}

void pol_sess_serialize(const struct pol_session *s, char *out)
{
    char *p = out;
    for (const struct pol_sess_ent *e = s->head; e; e = e->next) {
        if (!e->live)
            continue;
        memcpy(p, &e->key_len, 4);
        memcpy(p + 4, &e->val_len, 4);
        p += 8;
        memcpy(p, e->key, e->key_len);
        p[e->key_len] = '\0';
        p += e->key_len + 1;
        memcpy(p, e->val, e->val_len);
        p[e->val_len] = '\0';
        p += e->val_len + 1;
    }
    ENG_DEBUG_ASSERT((size_t)(p - out) == pol_sess_serialized_bytes(s));
}

/* ---------------------------------------------------------------------------------------------
 * Plugin API (pol/plugin.h)
 */

const char *pol_session_get(struct pol_req *r, const char *key, size_t *len)
{
    ENG_ASSERT(key != NULL);
    const struct pol_sess_ent *e = find(&r->sess, key, strlen(key));
    if (!e)
        return NULL;
    if (len)
        *len = e->val_len;
    return e->val;
}

int pol_session_set(struct pol_req *r, const char *key, const char *val, size_t len)
{
    ENG_ASSERT(key != NULL);
    return pol_sess_set(&r->sess, &r->arena, key, strlen(key), val, len);
}

bool pol_session_del(struct pol_req *r, const char *key)
{
    ENG_ASSERT(key != NULL);
    return pol_sess_del(&r->sess, key, strlen(key));
}

size_t pol_session_del_prefix(struct pol_req *r, const char *prefix)
{
    ENG_ASSERT(prefix != NULL);
    return pol_sess_del_prefix(&r->sess, prefix, strlen(prefix));
}

bool pol_req_is_already_done(struct pol_req *r, const char *flag)
{
    ENG_ASSERT(flag != NULL);
    size_t n = strlen(flag);
    if (find(&r->sess, flag, n))
        return true;
    /* mtpolicyd stores 1. When the arena is full the flag cannot be kept; answering "not yet
     * done" is what 2.05 does without a session, so degrade to that. */
    (void)pol_sess_set(&r->sess, &r->arena, flag, n, "1", 1);
    return false;
}
