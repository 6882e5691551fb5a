// fake_dns.hpp: an in-process resolver for the SPF evaluator's tests (struct
// pol_spf_resolver), serving zone data as the openspf suite's driver does (pyspf
// test/testspf.py DNSLookup): a name's entries in order; a TIMEOUT entry answers "time-out"
// unless a record of the asked type came before it (then the answer stops there); a name
// that is not there is NXDOMAIN (one starting with "error." times out); CNAMEs are followed as
// a recursive resolver would (a loop is a SERVFAIL). Answers come at once (inside lookup, as a
// cache hit might) or later from run() (async), so both paths of the evaluator are used.
// Header-only, C++17.
#ifndef SPF_FAKE_DNS_HPP
#define SPF_FAKE_DNS_HPP

#include <arpa/inet.h>
#include <cstring>
#include <deque>
#include <functional>
#include <string>
#include <vector>

extern "C" {
#include "spf/spf.h"
}

namespace spftest
{

struct Rec {
    std::string name; // lower case, no trailing dot
    std::string type; // "A", "AAAA", "MX", "PTR", "CNAME", "TXT", "SPF", "TIMEOUT"
    std::vector<std::string> data;
};

class FakeDns
{
  public:
    std::vector<Rec> zone;
    bool async = false;
    std::vector<std::string> queries; // "TYPE name", in order
    int refuse_after = -1;            // lookups accepted before lookup() returns -EIO

    pol_spf_resolver resolver()
    {
        return pol_spf_resolver{&FakeDns::lookup_cb, this};
    }

    void add(const std::string &name, const std::string &type, std::vector<std::string> data)
    {
        zone.push_back(Rec{lc(name), type, std::move(data)});
    }

    // Delivers queued answers until none is left (async mode). Returns how many.
    size_t run()
    {
        size_t n = 0;
        while (!pending_.empty()) {
            auto p = pending_.front();
            pending_.pop_front();
            deliver(p);
            n++;
        }
        return n;
    }

    static std::string lc(std::string s)
    {
        for (auto &c : s)
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
        while (!s.empty() && s.back() == '.')
            s.pop_back();
        return s;
    }

  private:
    struct Pending {
        pol_spf_rr_type type;
        std::string name;
        pol_spf_lookup_done_fn *done;
        void *ctx;
    };
    std::deque<Pending> pending_;

    static int lookup_cb(void *impl, pol_spf_rr_type type, const char *name,
                         pol_spf_lookup_done_fn *done, void *ctx)
    {
        auto *self = static_cast<FakeDns *>(impl);
        self->queries.push_back(std::string(pol_spf_rr_type_name(type)) + " " + name);
        if (self->refuse_after >= 0 && (int)self->queries.size() > self->refuse_after)
            return -5;
        Pending p{type, name, done, ctx};
        if (self->async)
            self->pending_.push_back(p);
        else
            self->deliver(p);
        return 0;
    }

    struct Answer {
        pol_spf_rcode rcode = POL_SPF_DNS_OK;
        std::vector<std::string> data;
    };

    Answer resolve(const std::string &name, const std::string &type, int depth) const
    {
        Answer a;
        bool found = false, seen = false;
        for (const auto &r : zone) {
            if (r.name != name)
                continue;
            found = true;
            if (r.type == "TIMEOUT") {
                if (!seen)
                    a.rcode = POL_SPF_DNS_TIMEOUT;
                return a;
            }
            if (r.type == "CNAME" && type != "CNAME") {
                if (depth > 8) {
                    a.rcode = POL_SPF_DNS_SERVFAIL;
                    return a;
                }
                return resolve(lc(r.data.at(0)), type, depth + 1);
            }
            if (r.type != type)
                continue;
            seen = true;
            a.data.push_back(rdata(r));
        }
        if (!found)
            a.rcode = name.rfind("error.", 0) == 0 ? POL_SPF_DNS_TIMEOUT : POL_SPF_DNS_NXDOMAIN;
        return a;
    }

    static std::string rdata(const Rec &r)
    {
        if (r.type == "A" || r.type == "AAAA") {
            unsigned char b[16];
            int af = r.type == "A" ? AF_INET : AF_INET6;
            if (inet_pton(af, r.data.at(0).c_str(), b) != 1)
                return "";
            return std::string((const char *)b, af == AF_INET ? 4 : 16);
        }
        if (r.type == "TXT" || r.type == "SPF") {
            std::string s;
            for (const auto &d : r.data)
                s += d;
            return s;
        }
        std::string s = r.data.at(0); // MX exchange, PTR target
        if (!s.empty() && s.back() == '.')
            s.pop_back();
        return s;
    }

    void deliver(const Pending &p) const
    {
        Answer a = resolve(lc(p.name), pol_spf_rr_type_name(p.type), 0);
        std::vector<pol_spf_rr> rrs;
        for (const auto &d : a.data)
            rrs.push_back(pol_spf_rr{d.data(), d.size()});
        pol_spf_answer ans{a.rcode, a.rcode == POL_SPF_DNS_SERVFAIL ? "SERVFAIL" : nullptr,
                           rrs.data(), rrs.size()};
        p.done(p.ctx, &ans);
    }
};

// One evaluation on caller memory, with its outcome as strings.
struct Outcome {
    std::string result, local, auth, mech;
    bool has_auth = false;
    bool waited = false;
    int done_calls = 0;
    pol_spf_limit limit = POL_SPF_LIMIT_NONE;
};

struct Check {
    pol_spf_scope scope = POL_SPF_SCOPE_MFROM;
    std::string identity, ip = "192.0.2.1", helo = "mail.example.org";
    std::string receiver = "receiver.example.net";
    std::string default_expl = "DEFAULT";
    bool no_default_expl = false;
    pol_spf_limits limits{POL_SPF_DNS_TERMS_DEFAULT, POL_SPF_NAMES_PER_TERM_DEFAULT,
                          POL_SPF_VOID_LOOKUPS_DEFAULT};
};

inline Outcome evaluate(FakeDns &dns, const Check &c)
{
    std::vector<unsigned long long> mem(pol_spf_eval_bytes() / 8 + 1);
    auto *e = reinterpret_cast<pol_spf_eval *>(mem.data());
    std::memset(mem.data(), 0xa5, mem.size() * 8); // stale content must not matter
    pol_spf_request rq{};
    rq.scope = c.scope;
    rq.identity = c.identity.c_str();
    rq.ip = c.ip.c_str();
    rq.helo = c.helo.c_str();
    rq.receiver = c.receiver.c_str();
    rq.default_expl = c.no_default_expl ? nullptr : c.default_expl.c_str();
    rq.now_s = 1700000000;
    Outcome o;
    auto res = dns.resolver();
    auto done = [](void *ctx, pol_spf_eval *) { static_cast<Outcome *>(ctx)->done_calls++; };
    pol_spf_eval_status st = pol_spf_eval_start(e, &res, &c.limits, &rq, done, &o);
    if (st == POL_SPF_EVAL_WAIT) {
        o.waited = true;
        dns.run();
    }
    if (st == POL_SPF_EVAL_DONE || o.done_calls == 1) {
        o.result = pol_spf_result_name(pol_spf_eval_result(e));
        o.local = pol_spf_eval_local_expl(e);
        const char *a = pol_spf_eval_auth_expl(e);
        o.has_auth = a != nullptr;
        o.auth = a ? a : "";
        const char *m = pol_spf_eval_mechanism(e);
        o.mech = m ? m : "";
        o.limit = pol_spf_eval_limit_hit(e);
    } else {
        o.result = "<not done>";
    }
    return o;
}

} // namespace spftest

#endif
