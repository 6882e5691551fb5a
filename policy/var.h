/*
 * var.h: variable references `[scope:]name` (spec 12.1), the POL_OPT_VAR option type
 * (internal to policy/; plugins see struct pol_var as opaque and read it with pol_req_var).
 *
 * Parsed once at start-up. Split at the first colon: no colon, `request:` or `r:` read a request
 * attribute, `session:` or `s:` a session value; any other scope is a start-up error (2.05 only
 * fails when a request reaches the plugin; spec 16 #20 asks us to validate at start-up). An
 * empty reference reads nothing.
 */
#ifndef POL_VAR_H
#define POL_VAR_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum pol_var_scope {
    POL_VAR_REQUEST,
    POL_VAR_SESSION,
};

struct pol_var {
    enum pol_var_scope scope;
    bool empty;       /* the reference was "": reads nothing */
    const char *name; /* points into the configured text */
    size_t name_len;
};

/* Returns 0, or -1 with a sentence in err ("unknown scope X in variable reference Y"). */
int pol_var_parse(const char *text, struct pol_var *out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
