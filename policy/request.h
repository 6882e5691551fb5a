/*
 * request.h: struct pol_req, one request being answered (internal to policy/).
 *
 * A request is taken from its home shard's pool (the shard of the connection it came on) with
 * one arena buffer, built from the parser's attribute offsets by copying names and values into
 * the arena once (the receive buffer goes straight back), then processed: on the home shard, or
 * on the shard owning its session (Memory session cache), then handed back to the home shard,
 * which sends the reply and returns the request and the arena to its pools.
 *
 * Everything a plugin obtains through struct pol_req * lives in the arena and stays valid
 * until the request is released.
 */
#ifndef POL_REQUEST_H
#define POL_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "eng/engine.h"
#include "proto.h"
#include "session.h"
#include "sstore.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_req;
struct pol_server;
struct pol_vhost;
struct pol_chain;
struct pol_plugin;
struct pol_shard;

/* Postfix attributes indexed when the request is built (spec 6.3, TOOLCHAIN 8). */
enum pol_wk {
    POL_WK_REQUEST,
    POL_WK_INSTANCE,
    POL_WK_POLICY_CONTEXT,
    POL_WK_PROTOCOL_STATE,
    POL_WK_CLIENT_ADDRESS,
    POL_WK_CLIENT_NAME,
    POL_WK_REVERSE_CLIENT_NAME,
    POL_WK_HELO_NAME,
    POL_WK_SENDER,
    POL_WK_RECIPIENT,
    POL_WK_RECIPIENT_COUNT,
    POL_WK_QUEUE_ID,
    POL_WK_SIZE,
    POL_WK_SASL_USERNAME,
    POL_WK_STRESS,
    POL_WK_COUNT
};

struct pol_attr {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
};

/* One plugin result (spec 11.3). */
struct pol_res {
    struct pol_res *next;
    const char *action; /* NULL: a result without action */
    uint32_t len;
    bool abort;
};

struct pol_res_list {
    struct pol_res *head, *tail;
    uint32_t count;
};

/* One running chain: the top level, or a plugin's sub-chain. */
struct pol_frame {
    const struct pol_chain *chain;
    uint32_t idx;                /* plugin being run */
    bool started;                /* that plugin has been stepped in this frame */
    bool sub_done;               /* its sub-chain just finished */
    void *state;                 /* its req_state */
    struct pol_res_list results; /* this chain's results so far */
    struct pol_res_list pending; /* results the current plugin added */
    struct pol_res_list sub;     /* results of the sub-chain that just finished */
    const char *last_match;
};

enum pol_req_phase {
    POL_PHASE_NEW,          /* built, not started */
    POL_PHASE_SESSION_WAIT, /* queued behind another request for the same session */
    POL_PHASE_RUNNING,      /* in the chain runner */
    POL_PHASE_PLUGIN_WAIT,  /* a plugin returned POL_WAIT */
    POL_PHASE_DONE,         /* outcome set, session stored */
};

enum pol_req_outcome {
    POL_OUT_NONE,
    POL_OUT_REPLY,   /* reply[0..reply_len) is the encoded answer */
    POL_OUT_FAILED,  /* error holds "plugin NAME failed: DETAIL" or another sentence */
    POL_OUT_TIMEOUT, /* request_timeout expired */
};

#define POL_REQ_DETAIL_MAX 512u
/* Chain steps one request may take (each plugin step, sub-chain entry and exit): a plugin
 * that keeps returning POL_SUBCHAIN or a loop of sub-chains cannot spin the shard. */
#define POL_REQ_STEPS_MAX 100000u

typedef void pol_req_done_fn(struct pol_req *r);

struct pol_scache_mc_lock;

struct pol_req {
    struct pol_shard *home; /* pool owner; NULL for requests made by a test */
    struct pol_shard *ps;   /* shard processing it (session owner) */
    const struct pol_server *srv;
    const struct pol_vhost *vhost;

    void *arena_buf;
    uint32_t arena_class;
    struct pol_arena arena;

    struct pol_attr *attrs; /* wire order, duplicates removed (later value wins) */
    uint32_t attr_count;
    uint16_t wk[POL_WK_COUNT]; /* index + 1 into attrs, 0 when absent */

    struct pol_session sess;
    struct pol_sstore_ent *sent;     /* Memory cache entry held (its lock), NULL: none */
    struct pol_sstore_waiter waiter; /* queued behind another request of the instance */
    struct pol_scache_mc_lock *mlock; /* Memcached cache: its handle (waiting or held) */
    struct pol_scache_redis_lock *rlock; /* Redis cache: its handle (waiting or held) */
    bool mc_held;  /* Memcached/Redis cache: mlock/rlock holds the session's lock */
    bool mc_nomem; /* Memcached/Redis cache: the session did not fit the arena */
    struct pol_req *next;            /* ready queue, free list */

    struct pol_frame *frames;
    uint32_t depth; /* frames in use */
    uint32_t steps;
    enum pol_req_phase phase;
    bool timed_out; /* answered by the deadline; released when its operation returns */
    bool answered;  /* done() was called with the answer already */
    bool final;     /* this done() call releases the request */

    enum pol_req_outcome outcome;
    const char *reply;
    size_t reply_len;
    const char *last_match;
    const char *result_text; /* actions joined with ',' for the result line */
    size_t result_len;
    char detail[POL_REQ_DETAIL_MAX];

    uint64_t start_us; /* session lookup started (spec 5.3) */
    struct eng_timer deadline;

    /* The host (daemon or testkit) that made the request. */
    pol_req_done_fn *done;
    void *host;
    uint64_t conn_id;
    uint32_t listener;
    struct eng_xmsg xm_go;      /* home -> owner: process it */
    struct eng_xmsg xm_answer;  /* owner -> home: answer (maybe before the release) */
    struct eng_xmsg xm_release; /* owner -> home: release after a timed-out operation ended */
};

/* Arena bytes needed to build a request from these attributes (before plugin headroom). */
size_t pol_req_build_bytes(const struct pol_proto_attr *attrs, uint32_t count);
/* Resets r (keeping home, arena buffer) and builds its attributes from the parser's result.
 * buf is the presented input the offsets refer to. Returns 0 or -ENOMEM (arena too small). */
int pol_req_build(struct pol_req *r, const char *buf, const struct pol_proto_attr *attrs,
                  uint32_t count);
/* A well-known attribute; NULL when absent. */
const char *pol_req_wk(const struct pol_req *r, enum pol_wk k, size_t *len);
/* Index of a well-known attribute name, or -1. */
int pol_req_wk_index(const char *name, size_t len);

#ifdef __cplusplus
}
#endif

#endif
