/*
 * setup.c: the setup printed with benchmark results, and JSON strings (see setup.h).
 */
#include "setup.h"

#include <stdbool.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench_build_info.h"

static void cpu_model(char *out, size_t out_len)
{
    snprintf(out, out_len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon)
            continue;
        colon += 1 + strspn(colon + 1, " \t");
        snprintf(out, out_len, "%.*s", (int)strcspn(colon, "\n"), colon);
        break;
    }
    fclose(f);
}

void bench_command_append(char *cmd, size_t cmd_len, const char *arg)
{
    static const char plain_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789-_./:=,@+%";
    size_t used = strlen(cmd);
    bool plain = *arg != '\0' && strspn(arg, plain_chars) == strlen(arg);
    /* Room for a separator, two quotes, one escaped quote and the NUL, or stop. */
    if (used + 8 >= cmd_len)
        return;
    if (used)
        cmd[used++] = ' ';
    if (!plain)
        cmd[used++] = '\'';
    for (const char *p = arg; *p && used + 6 < cmd_len; p++) {
        if (*p == '\'' && !plain) {
            memcpy(cmd + used, "'\\''", 4);
            used += 4;
        } else {
            cmd[used++] = *p;
        }
    }
    if (!plain)
        cmd[used++] = '\'';
    cmd[used] = '\0';
}

void bench_setup_collect(struct bench_setup *s, int argc, char **argv)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->git, sizeof(s->git), "%s", BENCH_GIT_DESCRIBE);
    struct utsname u;
    snprintf(s->kernel, sizeof(s->kernel), "%s", uname(&u) == 0 ? u.release : "unknown");
    cpu_model(s->cpu, sizeof(s->cpu));
    s->cpus = sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 0; i < argc; i++)
        bench_command_append(s->command, sizeof(s->command), argv[i]);
}

void bench_json_string(FILE *out, const char *s, size_t len)
{
    fputc('"', out);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", out);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}
