/*
 * report.c: ringpolicyd-replay's output (see report.h). Text for people, one JSON object for
 * scripts; both carry the setup, so a number can be reproduced (STYLE.md section 10).
 */
#include "report.h"

#include <stdbool.h>
#include <string.h>

static void json_str(FILE *out, const char *s)
{
    bench_json_string(out, s, strlen(s));
}

void rpl_report_corpus(FILE *out, const struct rpl_corpus *c)
{
    const struct rpl_load_stats *s = &c->stats;
    fprintf(out,
            "logs: %llu files, %llu lines (%llu Postfix lines used, %llu other Postfix, %llu "
            "other programs, %llu garbage, %llu too long)\n",
            (unsigned long long)s->files, (unsigned long long)s->lines,
            (unsigned long long)(s->lines - s->kind_count[RPL_LINE_GARBAGE] -
                                 s->kind_count[RPL_LINE_OTHER_PROGRAM] -
                                 s->kind_count[RPL_LINE_POSTFIX_OTHER]),
            (unsigned long long)s->kind_count[RPL_LINE_POSTFIX_OTHER],
            (unsigned long long)s->kind_count[RPL_LINE_OTHER_PROGRAM],
            (unsigned long long)s->kind_count[RPL_LINE_GARBAGE],
            (unsigned long long)s->long_lines);
    fprintf(out,
            "mails: %llu accepted (%llu without to= lines: %llu placeholder recipients), %llu "
            "rejected-recipient lines (%llu NOQUEUE transactions, %llu folded into a mail), "
            "%llu rejects at other stages; %u smtpd processes, %u connections\n",
            (unsigned long long)s->mails, (unsigned long long)s->mails_no_rcpt,
            (unsigned long long)s->rcpts_unlogged, (unsigned long long)s->rejects_rcpt,
            (unsigned long long)s->noqueue_txns, (unsigned long long)s->merged_txns,
            (unsigned long long)s->rejects_other, c->proc_count, c->conn_count);
    fprintf(out, "requests per copy: %llu (RCPT %llu, DATA %llu, END-OF-MESSAGE %llu) over %.0f s "
                 "of log time\n",
            (unsigned long long)c->req_count, (unsigned long long)c->req_count_by_stage[0],
            (unsigned long long)c->req_count_by_stage[1],
            (unsigned long long)c->req_count_by_stage[2],
            (double)(c->t_last_us - c->t_first_us) / 1e6);
}

static unsigned long long errors_of(const struct rpl_server_stats *s)
{
    return (unsigned long long)rpl_server_stats_errors(s);
}

static void text_server(FILE *out, const char *name, const struct rpl_server_stats *st, double secs)
{
    const struct bench_hist *h = &st->latency;
    fprintf(out,
            "%s: %llu replies in %.3f s = %.1f req/s; errors %llu (closed %llu, malformed %llu, "
            "timeouts %llu, connect %llu); %llu connects\n",
            name, (unsigned long long)st->requests, secs,
            secs > 0 ? (double)st->requests / secs : 0.0, errors_of(st),
            (unsigned long long)st->err_closed, (unsigned long long)st->err_malformed,
            (unsigned long long)st->err_timeout, (unsigned long long)st->err_connect,
            (unsigned long long)st->connects);
    fprintf(out, "  latency us: p50 %llu  p90 %llu  p99 %llu  p99.9 %llu  max %llu  mean %.1f\n",
            (unsigned long long)bench_hist_percentile(h, 50),
            (unsigned long long)bench_hist_percentile(h, 90),
            (unsigned long long)bench_hist_percentile(h, 99),
            (unsigned long long)bench_hist_percentile(h, 99.9),
            (unsigned long long)bench_hist_max(h), bench_hist_mean(h));
    fprintf(out, "  actions:");
    bench_actions_print_text(out, &st->actions);
    fputc('\n', out);
}

static void mode_text(char *out, size_t len, const struct rpl_run_opts *o,
                      const struct rpl_run_result *r)
{
    if (o->open_loop)
        snprintf(out, len, "open loop at %g x the recorded pace%s (%.0f s of log in %.0f s)",
                 r->speed, o->max_gap_us > 0 ? ", long pauses cut" : "", r->recorded_seconds,
                 r->recorded_seconds / r->speed);
    else
        snprintf(out, len, "closed loop (as fast as the server answers)");
}

void rpl_report_text(FILE *out, const struct rpl_run_opts *o, const struct rpl_report_setup *s,
                     const struct rpl_run_result *r)
{
    const struct rpl_run_stats *t = &r->total;
    char mode[256];
    mode_text(mode, sizeof(mode), o, r);
    fprintf(out, "replay: %llu of %llu scheduled requests completed, %s; %llu x the logs, %llu "
                 "streams, %llu connections, %u threads, stages %s\n",
            (unsigned long long)t->requests, (unsigned long long)r->scheduled, mode, 
            (unsigned long long)o->multiply, (unsigned long long)r->stream_count,
            (unsigned long long)r->conn_count, o->threads, s->stages_text);
    if (t->skipped_too_big)
        fprintf(out, "client: %llu requests too big to send (skipped)\n",
                (unsigned long long)t->skipped_too_big);
    if (o->open_loop)
        fprintf(out, "client: %llu requests sent over 1 ms after their time; the tool's own timer "
                     "lag (stream idle at the time) us: p50 %llu  p99 %llu  max %llu\n",
                (unsigned long long)t->late_sends,
                (unsigned long long)bench_hist_percentile(&t->timer_lag, 50),
                (unsigned long long)bench_hist_percentile(&t->timer_lag, 99),
                (unsigned long long)bench_hist_max(&t->timer_lag));
    for (unsigned srv = 0; srv < o->server_count; srv++) {
        char name[300];
        snprintf(name, sizeof(name), "%s %s", srv == 0 ? "server" : "against", s->server_text[srv]);
        text_server(out, name, &t->server[srv], r->seconds);
    }
    if (o->server_count == 2) {
        fprintf(out, "differences: %llu of %llu requests (%llu answered by both)\n",
                (unsigned long long)t->diff_count, (unsigned long long)t->requests,
                (unsigned long long)t->diff_compared);
        for (uint32_t i = 0; i < t->diff_kind_count; i++)
            fprintf(out, "  %s: %llu\n", t->diff_kinds[i].name,
                    (unsigned long long)t->diff_kinds[i].count);
        if (t->diff_other)
            fprintf(out, "  (other kinds): %llu\n", (unsigned long long)t->diff_other);
        for (uint32_t i = 0; i < t->sample_count; i++)
            fprintf(out, "-- difference %u (request %llu of the schedule):\n%.*s", i + 1,
                    (unsigned long long)t->samples[i].seq + 1, (int)t->samples[i].text_len,
                    t->samples[i].text);
    }
    fprintf(out, "client: %.2f s CPU = %.0f%% of one core\n", s->client_cpu_s,
            r->seconds > 0 ? 100.0 * s->client_cpu_s / r->seconds : 0.0);
    fprintf(out, "setup: git %s, kernel %s, cpu \"%s\" x %ld, timeout %u ms\n", s->base.git,
            s->base.kernel, s->base.cpu, s->base.cpus, o->timeout_ms);
    fprintf(out, "command: %s\n", s->base.command);
}

static void json_server(FILE *out, const struct rpl_server_stats *st, double secs)
{
    const struct bench_hist *h = &st->latency;
    fprintf(out,
            "\"requests\":%llu,\"errors\":%llu,\"timeouts\":%llu,\"errors_by_kind\":{\"closed\":"
            "%llu,\"malformed\":%llu,\"timeout\":%llu,\"connect\":%llu},\"connects\":%llu,"
            "\"seconds\":%.6f,\"rps\":%.1f,",
            (unsigned long long)st->requests, errors_of(st), (unsigned long long)st->err_timeout,
            (unsigned long long)st->err_closed, (unsigned long long)st->err_malformed,
            (unsigned long long)st->err_timeout, (unsigned long long)st->err_connect,
            (unsigned long long)st->connects, secs,
            secs > 0 ? (double)st->requests / secs : 0.0);
    fprintf(out,
            "\"latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu,"
            "\"mean\":%.1f},\"actions\":",
            (unsigned long long)bench_hist_percentile(h, 50),
            (unsigned long long)bench_hist_percentile(h, 90),
            (unsigned long long)bench_hist_percentile(h, 99),
            (unsigned long long)bench_hist_percentile(h, 99.9),
            (unsigned long long)bench_hist_max(h), bench_hist_mean(h));
    bench_actions_print_json(out, &st->actions);
}

static void json_setup(FILE *out, const struct rpl_run_opts *o, const struct rpl_report_setup *s,
                       const struct rpl_run_result *r)
{
    fprintf(out, "\"setup\":{\"git\":");
    json_str(out, s->base.git);
    fprintf(out, ",\"kernel\":");
    json_str(out, s->base.kernel);
    fprintf(out, ",\"cpu\":");
    json_str(out, s->base.cpu);
    fprintf(out,
            ",\"cpus\":%ld,\"mode\":\"%s\",\"speed\":%g,\"max_gap_s\":%g,\"multiply\":%u,"
            "\"streams\":%llu,"
            "\"connections\":%llu,\"threads\":%u,\"timeout_ms\":%u,\"scheduled\":%llu,"
            "\"recorded_seconds\":%.3f,\"client_cpu_s\":%.3f,\"stages\":",
            s->base.cpus, o->open_loop ? "open" : "closed", o->open_loop ? r->speed : 0.0,
            (double)o->max_gap_us / 1e6, o->multiply, (unsigned long long)r->stream_count, (unsigned long long)r->conn_count,
            o->threads, o->timeout_ms, (unsigned long long)r->scheduled, r->recorded_seconds,
            s->client_cpu_s);
    json_str(out, s->stages_text);
    fprintf(out, ",\"command\":");
    json_str(out, s->base.command);
    fputc('}', out);
}

static void json_diffs(FILE *out, const struct rpl_run_stats *t)
{
    fprintf(out, ",\"differences\":{\"count\":%llu,\"compared\":%llu,\"kinds\":{",
            (unsigned long long)t->diff_count, (unsigned long long)t->diff_compared);
    for (uint32_t i = 0; i < t->diff_kind_count; i++) {
        fputs(i ? "," : "", out);
        json_str(out, t->diff_kinds[i].name);
        fprintf(out, ":%llu", (unsigned long long)t->diff_kinds[i].count);
    }
    if (t->diff_other)
        fprintf(out, "%s\"(other)\":%llu", t->diff_kind_count ? "," : "",
                (unsigned long long)t->diff_other);
    fprintf(out, "},\"first\":[");
    for (uint32_t i = 0; i < t->sample_count; i++) {
        fprintf(out, "%s{\"seq\":%llu,\"text\":", i ? "," : "",
                (unsigned long long)t->samples[i].seq);
        bench_json_string(out, t->samples[i].text, t->samples[i].text_len);
        fputc('}', out);
    }
    fprintf(out, "]}");
}

void rpl_report_json(FILE *out, const struct rpl_run_opts *o, const struct rpl_report_setup *s,
                     const struct rpl_run_result *r)
{
    const struct rpl_run_stats *t = &r->total;
    fputc('{', out);
    json_server(out, &t->server[0], r->seconds);
    fprintf(out, ",\"server\":");
    json_str(out, s->server_text[0]);
    if (o->server_count == 2) {
        fprintf(out, ",\"against\":{\"server\":");
        json_str(out, s->server_text[1]);
        fputc(',', out);
        json_server(out, &t->server[1], r->seconds);
        fputc('}', out);
        json_diffs(out, t);
    }
    fprintf(out, ",\"completed\":%llu,\"skipped_too_big\":%llu,\"late_sends\":%llu,"
                 "\"timer_lag_us\":{\"p50\":%llu,\"p99\":%llu,\"max\":%llu},",
            (unsigned long long)t->requests, (unsigned long long)t->skipped_too_big,
            (unsigned long long)t->late_sends,
            (unsigned long long)bench_hist_percentile(&t->timer_lag, 50),
            (unsigned long long)bench_hist_percentile(&t->timer_lag, 99),
            (unsigned long long)bench_hist_max(&t->timer_lag));
    const struct rpl_corpus *c = o->corpus;
    fprintf(out,
            "\"logs\":{\"lines\":%llu,\"mails\":%llu,\"rejected_recipients\":%llu,"
            "\"placeholder_recipients\":%llu,\"smtpd_processes\":%u,\"requests_per_copy\":%llu},",
            (unsigned long long)c->stats.lines, (unsigned long long)c->stats.mails,
            (unsigned long long)c->stats.rejects_rcpt,
            (unsigned long long)c->stats.rcpts_unlogged, c->proc_count,
            (unsigned long long)c->req_count);
    json_setup(out, o, s, r);
    fprintf(out, "}\n");
}
