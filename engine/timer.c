/*
 * timer.c: intrusive timers on a hashed wheel of 4096 one-millisecond slots (Varghese and Lauck,
 * scheme 4). A timer sits in slot expires_ms & 4095 on a circular doubly linked list, so arming
 * and cancelling are O(1) and never allocate. Each turn the loop processes every slot from the
 * last processed millisecond up to eng_now_ms and fires the timers that are due, in expiry
 * order; a timer more than 4.096 s out stays in its slot and is skipped until its turn comes, a
 * cost of one comparison per revolution. The slot of the current millisecond is processed again
 * on the next turn, so a timer armed by a callback for "now" fires on the next turn and never
 * waits a revolution. A bitmap of non-empty slots gives the next deadline for the loop's wait
 * without scanning the lists (it may wake early for a far timer, at most once per revolution).
 *
 * Owner: one shard; all functions run on its thread. Callbacks run from the loop, never inside
 * eng_timer_arm, and may arm or cancel any timer including their own. A timer armed with delay 0
 * inside a callback fires on the next turn, not in the same pass.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void list_init(struct eng_timer *head)
{
    head->next = head->prev = head;
}

static bool list_empty(const struct eng_timer *head)
{
    return head->next == head;
}

static uint32_t slot_of(uint64_t ms)
{
    return (uint32_t)(ms & (ENG_WHEEL_SLOTS - 1));
}

int eng_wheel_init(struct eng_shard *sh)
{
    struct eng_wheel *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    for (uint32_t i = 0; i < ENG_WHEEL_SLOTS; i++)
        list_init(&w->slot[i]);
    w->next_ms = sh->now_ms;
    sh->wheel = w;
    return 0;
}

void eng_timer_init(struct eng_timer *t, eng_timer_fn *fn)
{
    ENG_ASSERT(fn != NULL);
    t->next = t->prev = NULL;
    t->expires_ms = 0;
    t->fn = fn;
}

bool eng_timer_armed(const struct eng_timer *t)
{
    return t->next != NULL;
}

static void wheel_insert(struct eng_wheel *w, struct eng_timer *t)
{
    uint32_t s = slot_of(t->expires_ms);
    struct eng_timer *head = &w->slot[s];
    t->prev = head->prev;
    t->next = head;
    head->prev->next = t;
    head->prev = t;
    w->bitmap[s / 64] |= 1ull << (s % 64);
}

static void wheel_unlink(struct eng_wheel *w, struct eng_timer *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
    uint32_t s = slot_of(t->expires_ms);
    if (list_empty(&w->slot[s]))
        w->bitmap[s / 64] &= ~(1ull << (s % 64));
}

void eng_timer_arm(struct eng_shard *sh, struct eng_timer *t, uint64_t delay_ms)
{
    eng_assert_on_shard(sh);
    ENG_ASSERT(t->fn != NULL);
    struct eng_wheel *w = sh->wheel;
    if (eng_timer_armed(t)) {
        wheel_unlink(w, t);
        w->armed_count--;
    }
    /* Never before the first unprocessed millisecond, so the wheel cannot skip it. */
    uint64_t at = sh->now_ms + delay_ms;
    t->expires_ms = at < w->next_ms ? w->next_ms : at;
    wheel_insert(w, t);
    w->armed_count++;
}

void eng_timer_cancel(struct eng_shard *sh, struct eng_timer *t)
{
    eng_assert_on_shard(sh);
    if (!eng_timer_armed(t))
        return;
    wheel_unlink(sh->wheel, t);
    ENG_ASSERT(sh->wheel->armed_count > 0);
    sh->wheel->armed_count--;
}

/* Fires the due timers of one slot. The list is moved aside first so that timers armed by
 * callbacks land in a fresh list and wait for the next pass. */
static void slot_run(struct eng_shard *sh, uint32_t s)
{
    struct eng_wheel *w = sh->wheel;
    struct eng_timer *head = &w->slot[s];
    if (list_empty(head))
        return;
    struct eng_timer pending;
    pending.next = head->next;
    pending.prev = head->prev;
    pending.next->prev = &pending;
    pending.prev->next = &pending;
    list_init(head);
    w->bitmap[s / 64] &= ~(1ull << (s % 64));

    while (pending.next != &pending) {
        struct eng_timer *t = pending.next;
        t->prev->next = t->next;
        t->next->prev = t->prev;
        if (t->expires_ms > sh->now_ms) {
            wheel_insert(w, t); /* a later revolution */
            continue;
        }
        t->next = t->prev = NULL;
        w->armed_count--;
        ENG_STAT_INC(sh, timers_fired);
        t->fn(sh, t);
    }
}

void eng_wheel_run(struct eng_shard *sh)
{
    struct eng_wheel *w = sh->wheel;
    if (sh->now_ms < w->next_ms)
        return;
    uint64_t span = sh->now_ms - w->next_ms + 1;
    if (w->armed_count == 0) {
        w->next_ms = sh->now_ms;
        return;
    }
    if (span >= ENG_WHEEL_SLOTS) {
        /* A long stall: one pass over every slot, starting at the oldest. */
        for (uint32_t i = 0; i < ENG_WHEEL_SLOTS; i++)
            slot_run(sh, slot_of(w->next_ms + i));
    } else {
        for (uint64_t ms = w->next_ms; ms <= sh->now_ms; ms++)
            slot_run(sh, slot_of(ms));
    }
    w->next_ms = sh->now_ms; /* this millisecond's slot again next turn (see above) */
}

/* Distance in slots from `from` to the next non-empty slot at or after it (circular), or
 * ENG_WHEEL_SLOTS when all are empty. */
static uint32_t next_busy_slot(const struct eng_wheel *w, uint32_t from)
{
    for (uint32_t d = 0; d < ENG_WHEEL_SLOTS;) {
        uint32_t s = (from + d) & (ENG_WHEEL_SLOTS - 1);
        uint64_t word = w->bitmap[s / 64] >> (s % 64);
        if (word)
            return d + (uint32_t)__builtin_ctzll(word);
        d += 64 - s % 64;
    }
    return ENG_WHEEL_SLOTS;
}

uint32_t eng_wheel_timeout_ms(const struct eng_shard *sh)
{
    const struct eng_wheel *w = sh->wheel;
    if (w->armed_count == 0)
        return UINT32_MAX;
    /* The current slot: anything due there (armed for "now" by a callback) means no sleep; the
     * rest of it belongs to later revolutions. */
    const struct eng_timer *head = &w->slot[slot_of(w->next_ms)];
    for (const struct eng_timer *t = head->next; t != head; t = t->next)
        if (t->expires_ms <= sh->now_ms)
            return 0;
    uint32_t d = next_busy_slot(w, slot_of(w->next_ms + 1)) + 1;
    uint64_t due = w->next_ms + d; /* at most one revolution ahead */
    return due <= sh->now_ms ? 0 : (uint32_t)(due - sh->now_ms);
}

/* Test hooks: a shard that has nothing but a wheel. */
struct eng_shard *eng_test_wheel_shard_new(uint64_t now_ms)
{
    struct eng_shard *sh = calloc(1, sizeof(*sh));
    ENG_ASSERT(sh != NULL);
    sh->now_ms = now_ms;
    ENG_ASSERT(eng_wheel_init(sh) == 0);
    eng_tls_shard = sh;
    return sh;
}

void eng_test_wheel_advance(struct eng_shard *sh, uint64_t now_ms)
{
    ENG_ASSERT(now_ms >= sh->now_ms);
    sh->now_ms = now_ms;
    eng_wheel_run(sh);
}

uint32_t eng_test_wheel_timeout(struct eng_shard *sh)
{
    return eng_wheel_timeout_ms(sh);
}

void eng_test_wheel_shard_free(struct eng_shard *sh)
{
    if (eng_tls_shard == sh)
        eng_tls_shard = NULL;
    free(sh->wheel);
    free(sh);
}
