/*
 * exports_probe.c: a shared object that calls engine functions the daemon itself does not need
 * (polls, timers, the clock, cross-shard messages, counters), as a user plugin may. It is never
 * loaded; exports_test.sh checks that the ringpolicyd executable defines every eng_* symbol it
 * leaves undefined, which is what loading it with RTLD_NOW requires.
 */
#include "eng/engine.h"
#include "eng/log.h"

void eng_exports_probe(struct eng_shard *sh, struct eng_poll *p, struct eng_timer *t,
                       struct eng_xmsg *m, eng_poll_fn *pfn, eng_timer_fn *tfn);

void eng_exports_probe(struct eng_shard *sh, struct eng_poll *p, struct eng_timer *t,
                       struct eng_xmsg *m, eng_poll_fn *pfn, eng_timer_fn *tfn)
{
    uint64_t now = eng_now_ms(sh) + eng_clock_ms() + eng_clock_us();
    if (eng_poll_start(sh, p, 0, 1, pfn) == 0) {
        (void)eng_poll_update(sh, p, 4);
        eng_poll_stop(sh, p);
    }
    eng_timer_init(t, tfn);
    eng_timer_arm(sh, t, now % 1000u);
    if (eng_timer_armed(t))
        eng_timer_cancel(sh, t);
    eng_xshard_send(sh, (eng_shard_index(sh) + 1) % eng_shard_count(sh), m);
    const struct eng_stats *st = eng_shard_stats(sh);
    eng_log(ENG_LOG_DEBUG, "probe %llu %u", (unsigned long long)st->turns,
            (unsigned)eng_log_write_errors());
    eng_log_bytes(ENG_LOG_DEBUG, "probe ", "x\0y", 3);
    (void)eng_shard_app(sh);
    (void)eng_shard_engine(sh);
}
