/*
 * eng/assert.h: assertions for programmer errors, used by engine/ and policy/.
 *
 * ENG_ASSERT stays on in every build and is for cheap checks. ENG_DEBUG_ASSERT walks
 * structures and is compiled only when ENG_DEBUG is defined (debug and sanitizer builds).
 * Both print the expression, file:line and the current shard id, then abort() so that a core
 * is written. Never use them for anything a peer, a config file or the kernel can cause:
 * those are operational errors (STYLE.md section 5).
 */
#ifndef ENG_ASSERT_H
#define ENG_ASSERT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Prints "assertion failed: EXPR at FILE:LINE (shard N)" to stderr and aborts. */
__attribute__((noreturn)) void eng_assert_fail(const char *expr, const char *file, int line);

#define ENG_ASSERT(x) ((x) ? (void)0 : eng_assert_fail(#x, __FILE__, __LINE__))

#ifdef ENG_DEBUG
#define ENG_DEBUG_ASSERT(x) ENG_ASSERT(x)
#else
#define ENG_DEBUG_ASSERT(x) ((void)0)
#endif

#ifdef __cplusplus
}
#endif

#endif
