/*
 * fuzz_spf.c: libFuzzer target for the SPF evaluator's parsers and state machine
 * (policy/spf/record.c, macro.c, eval.c).
 *
 * The first input byte picks the part; the rest is its text:
 *   0  a record (when pol_spf_record_is_v1 says it is one): pol_spf_record_check and the term
 * iterator must agree (the check succeeds exactly when iterating reaches the end without an error),
 * every term is a slice of the record, its modifiers lie inside it, and every mechanism prints
 * (pol_spf_term_format) into a NUL-terminated string that fits its buffer; 1  a macro string (bit 0
 * of the second byte: explanation or domain-spec): a string that passes pol_spf_macro_check expands
 * without a syntax error, into a NUL-terminated output of the reported length; a failed check has a
 * diagnosis text; a domain-spec's query name (pol_spf_name_normalize) has at most 253 bytes and
 * labels of 1..63 bytes; 2  a whole evaluation: the text is the TXT record of every name, answers
 * come at once from a resolver that also gives one A, AAAA, MX and PTR record per query (the second
 *      byte picks which answers are NXDOMAIN, empty, SERVFAIL or time-outs), and the
 *      evaluation must finish within the DNS limits with a result and a local explanation.
 * Build: see README.md (tests/fuzz/build.sh spf OUT).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spf/spf.h"
#include "spf/spf_int.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_spf: %s\n", what);
        abort();
    }
}

static void fuzz_record(const char *rec, size_t len)
{
    char err[512];
    struct pol_spf_record_info info;
    if (!pol_spf_record_is_v1(rec, len))
        return; /* the parser's precondition: record selection comes first */
    int rc = pol_spf_record_check(rec, len, &info, err, sizeof err);
    size_t pos = 0;
    int it = 0;
    unsigned terms = 0;
    struct pol_spf_term t;
    while ((it = pol_spf_record_next(rec, len, &pos, &t, err, sizeof err)) == 1) {
        check(t.text >= rec && t.text + t.text_len <= rec + len, "term outside the record");
        check(t.spec_len == 0 || (t.spec >= rec && t.spec + t.spec_len <= rec + len),
              "domain-spec outside the record");
        check(pos <= len, "position past the end");
        terms++;
        check(terms <= len, "more terms than bytes");
        if (t.kind != POL_SPF_TERM_MECH)
            continue; /* only mechanisms are printed ("mechanism 'X' matched") */
        char out[600];
        size_t n = pol_spf_term_format(&t, out, sizeof out);
        check(n < sizeof out && out[n] == '\0' && strlen(out) == n, "term format");
        char tiny[4];
        n = pol_spf_term_format(&t, tiny, sizeof tiny);
        check(n < sizeof tiny && tiny[n] == '\0', "term format into a short buffer");
    }
    check(it == 0 || err[0] != '\0', "an iteration error without a text");
    if (rc == 0) {
        check(it == 0, "check passed, iteration failed");
        check(info.redirect_len == 0 || info.redirect_pos + info.redirect_len <= len,
              "redirect outside the record");
        check(info.exp_len == 0 || info.exp_pos + info.exp_len <= len, "exp outside the record");
    } else {
        check(err[0] != '\0', "a check error without a text");
    }
}

static void fuzz_macro(const char *s, size_t len, bool exp)
{
    struct pol_spf_macro_diag diag;
    if (!pol_spf_macro_check(s, len, exp, &diag)) {
        char err[512];
        pol_spf_macro_diag_text(&diag, s, len, err, sizeof err);
        check(err[0] != '\0' && strlen(err) < sizeof err, "a macro error without a text");
        check(diag.pos < len, "diagnosis position past the end");
        return;
    }
    struct pol_spf_ip ip;
    check(pol_spf_ip_parse("2001:db8::cb01", 14, &ip) == 0, "ip");
    struct pol_spf_macro_ctx c = {
        .s = "strong-bad@email.example.com",
        .s_len = 28,
        .l = "strong-bad",
        .l_len = 10,
        .o = "email.example.com",
        .o_len = 17,
        .d = "email.example.com",
        .d_len = 17,
        .h = "mx.example.org",
        .h_len = 14,
        .r = "receiver.example.net",
        .r_len = 20,
        .p = NULL,
        .p_len = SIZE_MAX,
        .ip = &ip,
        .scope = POL_SPF_SCOPE_MFROM,
        .t = 1700000000,
    };
    char out[1100];
    size_t out_len = 0;
    bool dropped = false;
    enum pol_spf_expand_rc rc =
        pol_spf_macro_expand(s, len, &c, exp, out, sizeof out, &out_len, &dropped);
    if (rc == POL_SPF_EXPAND_NEED_P) {
        c.p = "unknown";
        c.p_len = 7;
        rc = pol_spf_macro_expand(s, len, &c, exp, out, sizeof out, &out_len, &dropped);
    }
    check(rc != POL_SPF_EXPAND_SYNTAX && rc != POL_SPF_EXPAND_NEED_P,
          "a checked macro string did not expand");
    if (rc == POL_SPF_EXPAND_LONG) {
        check(exp, "only explanations are too long");
        return;
    }
    check(out_len < sizeof out && out[out_len] == '\0', "expansion not terminated");
    if (exp)
        return;
    char name[254];
    size_t n = pol_spf_name_normalize(out, out_len, dropped, name);
    check(n <= 253, "query name too long");
    if (n == 0)
        return;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '.') {
            check(label >= 1, "empty label");
            label = 0;
        } else {
            check(++label <= 63, "label over 63 bytes");
        }
    }
    check(label >= 1, "empty last label");
}

/* ---------------------------------------------------------------------------------------------
 * Whole evaluations on an answer-at-once resolver
 */

struct fake {
    const char *rec;
    size_t rec_len;
    unsigned mode;
    unsigned calls;
};

static int fake_lookup(void *impl, enum pol_spf_rr_type type, const char *name,
                       pol_spf_lookup_done_fn *done, void *ctx)
{
    struct fake *f = impl;
    check(name != NULL && strlen(name) >= 1 && strlen(name) <= 253, "query name length");
    f->calls++;
    check(f->calls <= 1000, "too many lookups for one evaluation");
    static const char a[4] = {(char)192, 0, 2, 1};
    static const char aaaa[16] = {0x20, 0x01, 0x0d, (char)0xb8, [15] = 1};
    struct pol_spf_rr rr = {NULL, 0};
    switch (type) {
    case POL_SPF_RR_A:
        rr = (struct pol_spf_rr){a, 4};
        break;
    case POL_SPF_RR_AAAA:
        rr = (struct pol_spf_rr){aaaa, 16};
        break;
    case POL_SPF_RR_MX:
        rr = (struct pol_spf_rr){"mx.example.com", 14};
        break;
    case POL_SPF_RR_PTR:
        rr = (struct pol_spf_rr){"mail.example.com", 16};
        break;
    case POL_SPF_RR_TXT:
        rr = (struct pol_spf_rr){f->rec, f->rec_len};
        break;
    }
    /* two mode bits per record type: normal, NXDOMAIN, empty, or (rarely) an error */
    unsigned m = (f->mode >> (2 * (unsigned)type % 8)) & 3;
    struct pol_spf_answer ans = {POL_SPF_DNS_OK, NULL, &rr, 1};
    if (m == 1)
        ans = (struct pol_spf_answer){POL_SPF_DNS_NXDOMAIN, NULL, NULL, 0};
    else if (m == 2)
        ans.count = 0;
    else if (m == 3 && (f->calls % 3) == 0)
        ans = (struct pol_spf_answer){f->calls % 2 ? POL_SPF_DNS_TIMEOUT : POL_SPF_DNS_SERVFAIL,
                                      "SERVFAIL", NULL, 0};
    done(ctx, &ans);
    return 0;
}

static void fuzz_eval(const char *rec, size_t len, unsigned mode)
{
    static uint64_t mem[64 * 1024];
    check(pol_spf_eval_bytes() <= sizeof mem, "evaluation state too big for the harness");
    struct pol_spf_eval *e = (struct pol_spf_eval *)(void *)mem;
    struct fake f = {rec, len, mode, 0};
    struct pol_spf_resolver res = {fake_lookup, &f};
    struct pol_spf_limits lim;
    pol_spf_limits_default(&lim);
    struct pol_spf_request rq = {
        .scope = mode & 0x80 ? POL_SPF_SCOPE_HELO : POL_SPF_SCOPE_MFROM,
        .identity = mode & 0x80 ? "mx.example.org" : "strong-bad@email.example.com",
        .ip = mode & 0x40 ? "2001:db8::1" : "192.0.2.1",
        .helo = "mx.example.org",
        .receiver = "receiver.example.net",
        .default_expl = "See %{d} %{s} %{i} %{r}",
        .now_s = 1700000000,
    };
    enum pol_spf_eval_status st = pol_spf_eval_start(e, &res, &lim, &rq, NULL, NULL);
    check(st == POL_SPF_EVAL_DONE, "an answer-at-once evaluation did not finish");
    enum pol_spf_result r = pol_spf_eval_result(e);
    check(r <= POL_SPF_PERMERROR, "result out of range");
    const char *le = pol_spf_eval_local_expl(e);
    check(le != NULL && le[0] != '\0' && strlen(le) < POL_SPF_EXPL_BYTES, "local explanation");
    const char *ae = pol_spf_eval_auth_expl(e);
    check(ae == NULL || r == POL_SPF_FAIL, "an authority explanation without a fail");
    check(ae == NULL || strlen(ae) < POL_SPF_EXPL_BYTES, "authority explanation too long");
    check(pol_spf_eval_lookups(e) == f.calls, "lookup count");
    /* DNS-interactive terms (10) plus their MX/PTR names (10 each), the record lookups of
     * include/redirect targets, exp= and %{p}: a generous bound */
    check(f.calls <= 400, "more lookups than the limits allow");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *s = (const char *)data + 2;
    size_t len = size - 2;
    if (len > POL_SPF_RECORD_BYTES_MAX + 64)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_record(s, len);
        break;
    case 1:
        fuzz_macro(s, len, data[1] & 1);
        break;
    default:
        fuzz_eval(s, len, data[1]);
        break;
    }
    return 0;
}
