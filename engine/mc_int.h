/*
 * mc_int.h: what the memcached client (mc.c) and its protocol module (mc_proto.c) share, and
 * the hooks the shard loop calls (shard.c). Private to engine/ and its tests.
 */
#ifndef ENG_MC_INT_H
#define ENG_MC_INT_H

#include <stddef.h>
#include <stdint.h>

#include "eng/mc.h"

struct eng_cqe;

/* Upper bound of the bytes mc_request_format writes. */
size_t mc_request_bytes(enum eng_mc_cmd cmd, size_t key_len, size_t value_len);
/* Formats one request (key already encoded). num: exptime for set/add/touch, delta for incr.
 * Returns the bytes written. */
size_t mc_request_format(char *out, enum eng_mc_cmd cmd, const char *key, size_t key_len,
                         uint64_t num, const void *value, size_t value_len);

/* The shard loop: a completion of kind ENG_OP_MC, and the end of a turn (before the submit). */
void eng_mc_complete(struct eng_shard *sh, const struct eng_cqe *cqe);
void eng_mc_turn_end(struct eng_shard *sh);
/* The shard left its loop (after the application's shard_stop): frees the connections of
 * destroyed clients still closing (their cancellations will never be reaped) and the shard's
 * state. Connections of live clients are their owner's. */
void eng_mc_shard_exit(struct eng_shard *sh);

#endif
