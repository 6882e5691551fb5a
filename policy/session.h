/*
 * session.h: the working copy of a session while a request runs (internal to policy/).
 *
 * A session is a list of (key, value) byte strings living in the request's arena: loaded from
 * the session cache as one serialised blob, changed by plugins through pol_session_*, then
 * serialised again for the store. Deleted entries stay in the list marked dead, so pointers
 * handed to plugins stay valid until the request ends. Sessions are small (a score, its details
 * and a few flags), so lookups are a linear scan.
 *
 * Serialised form: per live entry, u32 key length, u32 value length (host order: the blob never
 * leaves the process), the key, a NUL, the value, a NUL. Loading parses a copy in place.
 */
#ifndef POL_SESSION_H
#define POL_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_sess_ent {
    struct pol_sess_ent *next;
    const char *key;
    const char *val;
    uint32_t key_len;
    uint32_t val_len;
    bool live;
};

struct pol_session {
    struct pol_sess_ent *head, *tail;
    uint32_t live_count;
    bool dirty; /* changed since loaded */
};

void pol_sess_init(struct pol_session *s);
/* Parses a serialised blob that already lives in the arena (entries point into it). Returns 0,
 * -ENOMEM (arena full) or -EINVAL (malformed; asserted for blobs we wrote ourselves). */
int pol_sess_load(struct pol_session *s, struct pol_arena *a, const char *blob, size_t len);
const struct pol_sess_ent *pol_sess_find(const struct pol_session *s, const char *key,
                                         size_t key_len);
/* Copies key and value into the arena. 0 or -ENOMEM. */
int pol_sess_set(struct pol_session *s, struct pol_arena *a, const char *key, size_t key_len,
                 const char *val, size_t val_len);
bool pol_sess_del(struct pol_session *s, const char *key, size_t key_len);
size_t pol_sess_del_prefix(struct pol_session *s, const char *prefix, size_t prefix_len);
size_t pol_sess_serialized_bytes(const struct pol_session *s);
/* out has pol_sess_serialized_bytes(s) bytes. */
void pol_sess_serialize(const struct pol_session *s, char *out);

#ifdef __cplusplus
}
#endif

#endif
