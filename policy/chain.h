/*
 * chain.h: the chain runner (spec 11.3, 11.4), internal to policy/.
 *
 * Runs a virtual host's chain for one request as a small machine over a stack of frames (one
 * per running chain: the top level and each nested sub-chain), so a plugin may wait for an
 * asynchronous operation (POL_WAIT) or run its sub-chain (POL_SUBCHAIN) at any depth without
 * recursion. Runs on the shard processing the request; never blocks.
 */
#ifndef POL_CHAIN_H
#define POL_CHAIN_H

#include "request.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pol_chain_status {
    POL_CHAIN_DONE,    /* finished: pol_chain_results / r->last_match */
    POL_CHAIN_WAITING, /* a plugin returned POL_WAIT: call pol_chain_run again after resume */
    POL_CHAIN_FAILED,  /* r->detail: "plugin NAME failed: DETAIL" */
};

/* Prepares r to run chain: frames for depth_max levels from the arena. 0 or -ENOMEM. */
int pol_chain_start(struct pol_req *r, const struct pol_chain *chain, uint32_t depth_max);
/* Runs until the chain is done, fails, or waits. Plugins that fail with on_error = continue
 * are logged at level 0 ("plugin NAME failed: DETAIL") and skipped. */
enum pol_chain_status pol_chain_run(struct pol_req *r);
/* After POL_CHAIN_DONE: the top-level results, in order. */
const struct pol_res_list *pol_chain_results(const struct pol_req *r);

#ifdef __cplusplus
}
#endif

#endif
