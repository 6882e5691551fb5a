/*
 * var.c: parsing variable references (see var.h). Pure; the result points into the text, which
 * the configuration tree keeps alive for the server's lifetime.
 */
#include "var.h"

#include <stdio.h>
#include <string.h>

int pol_var_parse(const char *text, struct pol_var *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    out->scope = POL_VAR_REQUEST;
    if (!text || !*text) {
        out->empty = true;
        out->name = "";
        return 0;
    }
    const char *colon = strchr(text, ':');
    if (!colon) {
        out->name = text;
        out->name_len = strlen(text);
        return 0;
    }
    size_t sl = (size_t)(colon - text);
    if ((sl == 7 && memcmp(text, "request", 7) == 0) || (sl == 1 && text[0] == 'r'))
        out->scope = POL_VAR_REQUEST;
    else if ((sl == 7 && memcmp(text, "session", 7) == 0) || (sl == 1 && text[0] == 's'))
        out->scope = POL_VAR_SESSION;
    else {
        snprintf(err, err_len, "unknown scope %.*s while retrieving variable for %s", (int)sl, text,
                 text);
        return -1;
    }
    out->name = colon + 1;
    out->name_len = strlen(colon + 1);
    return 0;
}
