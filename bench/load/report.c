/*
 * report.c: what ringpolicyd-load prints: the setup (so a number can be reproduced, STYLE.md
 * 10) and the result, as text or as one JSON object. Runs once, after the workers stopped.
 */
#include <stdio.h>
#include <string.h>

#include "hist.h"
#include "load.h"

static void servers_text(char *out, size_t out_len, const struct load_opts *o)
{
    out[0] = '\0';
    for (unsigned i = 0; i < o->server_count; i++) {
        size_t used = strlen(out);
        snprintf(out + used, out_len - used, "%s%s", i ? "," : "", o->servers[i].text);
    }
}

static void source_text(char *out, size_t out_len, const struct load_opts *o)
{
    if (o->request_file) {
        snprintf(out, out_len, "fixed request from %s (%zu bytes)", o->request_file,
                 o->fixed_request_len);
        return;
    }
    const struct bench_reqgen_opts *g = &o->gen_opts;
    char clients[64];
    if (g->fresh_clients)
        snprintf(clients, sizeof(clients), "a new client every mail");
    else
        snprintf(clients, sizeof(clients), "%u clients, %u hot", g->client_pool, g->hot_clients);
    snprintf(out, out_len,
             "generated Postfix 3.7 requests (seed %llu, %u-%u recipients, %s%s%s%s)",
             (unsigned long long)o->seed, g->rcpt_min, g->rcpt_max, clients,
             g->with_data ? ", with DATA" : "",
             g->policy_context && *g->policy_context ? ", policy_context=" : "",
             g->policy_context ? g->policy_context : "");
}

/* The latency figures every report prints. */
struct latency_summary {
    unsigned long long p50, p90, p99, p999, max;
    double mean;
};

static struct latency_summary latency_of(const struct bench_hist *h)
{
    return (struct latency_summary){
        .p50 = bench_hist_percentile(h, 50),
        .p90 = bench_hist_percentile(h, 90),
        .p99 = bench_hist_percentile(h, 99),
        .p999 = bench_hist_percentile(h, 99.9),
        .max = bench_hist_max(h),
        .mean = bench_hist_mean(h),
    };
}

/* The load generator's own CPU cost per answered request: what it takes from a shared box. */
static double client_us_per_request(const struct load_result *r)
{
    return r->stats.requests ? r->client_cpu_s * 1e6 / (double)r->stats.requests : 0.0;
}

void load_report_text(FILE *out, const struct load_opts *o, const struct bench_setup *s,
                      const struct load_result *r)
{
    const struct load_stats *st = &r->stats;
    fprintf(out,
            "ringpolicyd-load%s%s: %llu requests in %.2f s = %.1f req/s; errors %llu "
            "(closed %llu, malformed %llu, timeouts %llu, connect %llu; %llu outside the "
            "window)\n",
            *o->label ? " " : "", o->label, (unsigned long long)st->requests, r->seconds,
            (double)st->requests / r->seconds, (unsigned long long)load_stats_errors(st),
            (unsigned long long)st->err_closed, (unsigned long long)st->err_malformed,
            (unsigned long long)st->err_timeout, (unsigned long long)st->err_connect,
            (unsigned long long)st->err_warmup);
    struct latency_summary l = latency_of(&st->latency);
    fprintf(out, "latency us: p50 %llu  p90 %llu  p99 %llu  p99.9 %llu  max %llu  mean %.1f\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean);
    fprintf(out, "actions:");
    bench_actions_print_text(out, &st->actions);
    fputc('\n', out);
    fprintf(out,
            "client: %.2f s CPU in the window = %.0f%% of one core, %.1f us per request, %u "
            "threads, %llu connects\n",
            r->client_cpu_s, 100.0 * r->client_cpu_s / r->seconds, client_us_per_request(r),
            o->threads, (unsigned long long)st->connects);
    char servers[2048], source[512];
    servers_text(servers, sizeof(servers), o);
    source_text(source, sizeof(source), o);
    fprintf(out,
            "setup: git %s, kernel %s, cpu \"%s\" x %ld, connections %u, threads %u, "
            "servers %s, warmup %u s, duration %u s, timeout %d ms, %s\n",
            s->git, s->kernel, s->cpu, s->cpus, o->connections, o->threads, servers, o->warmup_s,
            o->duration_s, o->timeout_ms, source);
    fprintf(out, "command: %s\n", s->command);
}

void load_json_string(FILE *out, const char *s)
{
    bench_json_string(out, s, strlen(s));
}

static void json_setup(FILE *out, const struct load_opts *o, const struct bench_setup *s)
{
    char source[512];
    source_text(source, sizeof(source), o);
    fprintf(out, "\"setup\":{\"git\":");
    load_json_string(out, s->git);
    fprintf(out, ",\"kernel\":");
    load_json_string(out, s->kernel);
    fprintf(out, ",\"cpu\":");
    load_json_string(out, s->cpu);
    fprintf(out, ",\"cpus\":%ld,\"connections\":%u,\"threads\":%u,\"servers\":[", s->cpus,
            o->idle ? o->idle : o->connections, o->threads);
    for (unsigned i = 0; i < o->server_count; i++) {
        fputs(i ? "," : "", out);
        load_json_string(out, o->servers[i].text);
    }
    fprintf(out,
            "],\"warmup_s\":%u,\"duration_s\":%u,\"timeout_ms\":%d,\"requests_from\":", o->warmup_s,
            o->duration_s, o->timeout_ms);
    load_json_string(out, source);
    fprintf(out, ",\"label\":");
    load_json_string(out, o->label);
    fprintf(out, ",\"command\":");
    load_json_string(out, s->command);
    fputc('}', out);
}

void load_report_json(FILE *out, const struct load_opts *o, const struct bench_setup *s,
                      const struct load_result *r)
{
    const struct load_stats *st = &r->stats;
    fprintf(out, "{\"requests\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"rps\":%.1f,",
            (unsigned long long)st->requests, (unsigned long long)load_stats_errors(st), r->seconds,
            (double)st->requests / r->seconds);
    struct latency_summary l = latency_of(&st->latency);
    fprintf(out,
            "\"latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,"
            "\"max\":%llu,\"mean\":%.1f},",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean);
    fprintf(out, "\"actions\":");
    bench_actions_print_json(out, &st->actions);
    fprintf(out,
            ",\"errors_detail\":{\"closed\":%llu,\"malformed\":%llu,\"timeouts\":%llu,"
            "\"connect\":%llu,\"outside_window\":%llu},",
            (unsigned long long)st->err_closed, (unsigned long long)st->err_malformed,
            (unsigned long long)st->err_timeout, (unsigned long long)st->err_connect,
            (unsigned long long)st->err_warmup);
    fprintf(out, "\"client_cpu_pct\":%.1f,\"client_cpu_us_per_req\":%.2f,\"connects\":%llu,",
            100.0 * r->client_cpu_s / r->seconds, client_us_per_request(r),
            (unsigned long long)st->connects);
    json_setup(out, o, s);
    fputs("}\n", out);
}
