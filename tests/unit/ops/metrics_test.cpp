/*
 * metrics_test.cpp: policy/metrics.c without an engine: action words, label escaping, name
 * slots (and their limit), per-shard blocks written by two threads and summed by a scrape, the
 * histogram's cumulative buckets, the collector API and per-shard sources (sums by label,
 * max fields, counters carried over a replaced source, the entry limit).
 */
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

extern "C" {
#include "exec.h"
#include "metrics.h"
#include "server.h"
#include "sstore.h"
}

namespace
{

std::string scrape()
{
    static char buf[1 << 20];
    eng_http_body b = {buf, sizeof(buf), 0, false};
    pol_metrics_write(&b);
    REQUIRE_FALSE(b.overflow);
    return std::string(buf, b.len);
}

bool has_line(const std::string &page, const std::string &line)
{
    return page.find("\n" + line + "\n") != std::string::npos || page.rfind(line + "\n", 0) == 0;
}

pol_server *load(const std::string &text)
{
    pol_server *s = nullptr;
    char err[POL_ERR_MAX];
    int rc = pol_server_from_text("m.conf", text.c_str(), &s, err, sizeof(err));
    INFO(err);
    REQUIRE(rc == 0);
    return s;
}

const char *k_conf = "<VirtualHost 1>\n name = \"in\"\n <Plugin a>\n  module = \"Action\"\n"
                     "  action = \"dunno\"\n </Plugin>\n <Plugin b>\n  module = \"Action\"\n"
                     "  action = \"dunno\"\n </Plugin>\n</VirtualHost>\n"
                     "<VirtualHost 2>\n name = \"we\\\"ird\"\n <Plugin a>\n  module = \"Action\"\n"
                     "  action = \"dunno\"\n </Plugin>\n</VirtualHost>\n";

} // namespace

TEST_CASE("action words", "[metrics]")
{
    auto a = [](const char *s) { return pol_metrics_action_of(s, strlen(s)); };
    CHECK(a("REJECT blocked") == POL_MA_REJECT);
    CHECK(a("reject") == POL_MA_REJECT);
    CHECK(a("DUNNO") == POL_MA_DUNNO);
    CHECK(a("defer_if_permit try later") == POL_MA_DEFER_IF_PERMIT);
    CHECK(a("PREPEND X-Spam: yes") == POL_MA_PREPEND);
    CHECK(a("450 4.7.1 later") == POL_MA_4XX);
    CHECK(a("554 5.7.1 no") == POL_MA_5XX);
    CHECK(a("45 too short") == POL_MA_OTHER);
    CHECK(a("rejected") == POL_MA_OTHER);
    CHECK(a("") == POL_MA_OTHER);
    CHECK(std::string(pol_metrics_action_name(POL_MA_DEFER_IF_REJECT)) == "defer_if_reject");
}

TEST_CASE("label values are escaped and cut at the buffer", "[metrics]")
{
    char buf[64] = "";
    pol_metrics_label(buf, sizeof(buf), "vhost", "a\"b\\c\nd");
    CHECK(std::string(buf) == "vhost=\"a\\\"b\\\\c\\nd\"");
    pol_metrics_label(buf, sizeof(buf), "plugin", "p");
    CHECK(std::string(buf) == "vhost=\"a\\\"b\\\\c\\nd\",plugin=\"p\"");
    char small[12] = "";
    pol_metrics_label(small, sizeof(small), "k", "0123456789abcdef");
    CHECK(strlen(small) < sizeof(small));
}

TEST_CASE("two shards count, a scrape sums; names survive a second server", "[metrics]")
{
    REQUIRE(pol_metrics_init(2, nullptr) == 0);
    pol_server *s = load(k_conf);
    pol_metrics_assign(s);
    uint32_t in = s->vhosts[0].metrics_slot, weird = s->vhosts[1].metrics_slot;
    CHECK(in != weird);
    CHECK(in != 0); /* 0 is "_other" */
    uint32_t pa = s->vhosts[0].chain.plugins[0]->metrics_slot;
    CHECK(pa != s->vhosts[1].chain.plugins[0]->metrics_slot); /* same name, other vhost */

    /* Catch2 assertions are not thread-safe (ThreadSanitizer reports them): the threads count
     * what went wrong, this thread checks it. */
    std::atomic<int> bad{0};
    auto work = [&](unsigned idx, int n) {
        if (pol_metrics_shard_start(nullptr, idx) != 0) {
            bad++;
            return;
        }
        bad += !pol_metrics_enabled();
        for (int i = 0; i < n; i++) {
            pol_metrics_request(in);
            pol_metrics_reply(in, "REJECT x", 8, 300); /* bucket le=0.0005 */
            pol_metrics_plugin_step(pa, 40);
        }
        pol_metrics_request(weird);
        pol_metrics_failure(weird, true, 0);
        pol_metrics_failure(weird, false, 2000000);
        pol_metrics_protocol_error();
        pol_shard_stats ps = {};
        ps.no_request = idx + 1;
        pol_sstore_stats ss = {};
        ss.sessions = 10;
        ss.hits = 5;
        pol_metrics_shard_snapshot(&ps, &ss);
        pol_metrics_shard_stop(idx);
        bad += pol_metrics_enabled();
    };
    std::thread t0(work, 0u, 100), t1(work, 1u, 50);
    t0.join();
    t1.join();
    REQUIRE(bad == 0);
    CHECK_FALSE(pol_metrics_enabled()); /* this thread has no block: calls are no-ops */
    pol_metrics_request(in);

    std::string p = scrape();
    INFO(p);
    CHECK(has_line(p, "ringpolicyd_requests_total{vhost=\"in\"} 150"));
    CHECK(has_line(p, "ringpolicyd_requests_total{vhost=\"we\\\"ird\"} 2"));
    CHECK(p.find("vhost=\"_other\"") == std::string::npos); /* nothing counted there */
    CHECK(has_line(p, "ringpolicyd_replies_total{vhost=\"in\",action=\"reject\"} 150"));
    CHECK(has_line(p, "ringpolicyd_replies_total{vhost=\"in\",action=\"dunno\"} 0"));
    CHECK(has_line(p, "ringpolicyd_request_failures_total{vhost=\"we\\\"ird\",reason=\"timeout\"} 2"));
    CHECK(has_line(p, "ringpolicyd_request_failures_total{vhost=\"we\\\"ird\",reason=\"error\"} 2"));
    CHECK(has_line(p, "ringpolicyd_request_duration_seconds_bucket{vhost=\"in\",le=\"0.00025\"} 0"));
    CHECK(has_line(p, "ringpolicyd_request_duration_seconds_bucket{vhost=\"in\",le=\"0.0005\"} 150"));
    CHECK(has_line(p, "ringpolicyd_request_duration_seconds_bucket{vhost=\"in\",le=\"+Inf\"} 150"));
    CHECK(has_line(p, "ringpolicyd_request_duration_seconds_sum{vhost=\"in\"} 0.045000"));
    CHECK(has_line(p, "ringpolicyd_request_duration_seconds_count{vhost=\"in\"} 150"));
    /* 2 s lands in the le="5" bucket, not below. */
    CHECK(has_line(p, "ringpolicyd_request_duration_seconds_bucket{vhost=\"we\\\"ird\",le=\"1\"} 0"));
    CHECK(has_line(p, "ringpolicyd_request_duration_seconds_bucket{vhost=\"we\\\"ird\",le=\"5\"} 2"));
    CHECK(has_line(p, "ringpolicyd_plugin_step_duration_seconds_count{vhost=\"in\",plugin=\"a\"} 150"));
    CHECK(has_line(p, "ringpolicyd_plugin_step_duration_seconds_bucket{vhost=\"in\",plugin=\"a\",le=\"5e-05\"} 150"));
    CHECK(has_line(p, "ringpolicyd_protocol_errors_total 2"));
    CHECK(has_line(p, "ringpolicyd_requests_shed_total 3"));
    CHECK(has_line(p, "ringpolicyd_session_cache_sessions 20"));
    CHECK(has_line(p, "ringpolicyd_session_cache_hits_total 10"));
    CHECK(p.find("# TYPE ringpolicyd_request_duration_seconds histogram\n") != std::string::npos);
    CHECK(p.find("ringpolicyd_connections_open") == std::string::npos); /* no engine here */

    /* A reloaded server with the same names gets the same slots (series continue). */
    pol_server *s2 = load(k_conf);
    pol_metrics_assign(s2);
    CHECK(s2->vhosts[0].metrics_slot == in);
    CHECK(s2->vhosts[0].chain.plugins[0]->metrics_slot == pa);
    pol_metrics_reload(true);
    pol_metrics_reload(false);
    pol_metrics_reload(false);
    p = scrape();
    CHECK(has_line(p, "ringpolicyd_config_reloads_total{result=\"ok\"} 1"));
    CHECK(has_line(p, "ringpolicyd_config_reloads_total{result=\"failed\"} 2"));
    pol_server_free(s2);
    pol_server_free(s);
    pol_metrics_fini();
}

TEST_CASE("names past the table share _other", "[metrics]")
{
    REQUIRE(pol_metrics_init(1, nullptr) == 0);
    std::string conf;
    for (unsigned i = 0; i < POL_METRICS_VHOSTS_MAX + 2; i++)
        conf += "<VirtualHost " + std::to_string(i + 1) + ">\n name = \"v" + std::to_string(i) +
                "\"\n <Plugin a>\n  module = \"Action\"\n  action = \"dunno\"\n </Plugin>\n"
                "</VirtualHost>\n";
    pol_server *s = load(conf);
    pol_metrics_assign(s);
    /* Slot 0 is _other: POL_METRICS_VHOSTS_MAX - 1 names fit. */
    CHECK(s->vhosts[POL_METRICS_VHOSTS_MAX - 2].metrics_slot == POL_METRICS_VHOSTS_MAX - 1);
    CHECK(s->vhosts[POL_METRICS_VHOSTS_MAX - 1].metrics_slot == 0);
    CHECK(s->vhosts[POL_METRICS_VHOSTS_MAX].metrics_slot == 0);
    REQUIRE(pol_metrics_shard_start(nullptr, 0) == 0);
    pol_metrics_request(s->vhosts[POL_METRICS_VHOSTS_MAX].metrics_slot);
    std::string p = scrape();
    CHECK(has_line(p, "ringpolicyd_requests_total{vhost=\"_other\"} 1"));
    pol_metrics_shard_stop(0);
    pol_server_free(s);
    pol_metrics_fini();
}

namespace
{
int g_calls;
void collect(void *ctx, eng_http_body *out)
{
    g_calls++;
    pol_metrics_write_head(out, "ringpolicyd_test_things", "gauge", "Things.");
    pol_metrics_write_value(out, "ringpolicyd_test_things", "", *static_cast<uint64_t *>(ctx));
}
} // namespace

TEST_CASE("collectors: registered ones write, unregistered ones do not; at most 32", "[metrics]")
{
    REQUIRE(pol_metrics_init(1, nullptr) == 0);
    uint64_t v = 42;
    REQUIRE(pol_metrics_register(collect, &v) == 0);
    g_calls = 0;
    std::string p = scrape();
    CHECK(g_calls == 1);
    CHECK(has_line(p, "ringpolicyd_test_things 42"));
    CHECK(p.find("# TYPE ringpolicyd_test_things gauge\n") != std::string::npos);
    pol_metrics_unregister(collect, &v);
    p = scrape();
    CHECK(g_calls == 1);
    CHECK(p.find("ringpolicyd_test_things") == std::string::npos);
    CHECK(pol_metrics_register(nullptr, &v) == -EINVAL);
    uint64_t many[POL_METRICS_COLLECTORS_MAX + 1] = {};
    for (unsigned i = 0; i < POL_METRICS_COLLECTORS_MAX; i++)
        REQUIRE(pol_metrics_register(collect, &many[i]) == 0);
    CHECK(pol_metrics_register(collect, &many[POL_METRICS_COLLECTORS_MAX]) == -ENOSPC);
    for (unsigned i = 0; i < POL_METRICS_COLLECTORS_MAX; i++)
        pol_metrics_unregister(collect, &many[i]);
    pol_metrics_fini();
}

TEST_CASE("a page that does not fit is flagged, not overrun", "[metrics]")
{
    REQUIRE(pol_metrics_init(1, nullptr) == 0);
    char buf[512];
    eng_http_body b = {buf, sizeof(buf), 0, false};
    pol_metrics_write(&b);
    CHECK(b.overflow);
    CHECK(b.len <= sizeof(buf));
    pol_metrics_fini();
}

namespace
{
const pol_metrics_field k_src_fields[3] = {
    {"ringpolicyd_test_ops_total", "Operations.", false, false},
    {"ringpolicyd_test_depth", "Queued now.", true, false},
    {"ringpolicyd_test_depth_max", "Most queued.", true, true},
};
const pol_metrics_source_desc k_src = {"connection", k_src_fields, 3};

struct Client {
    uint64_t ops = 0, depth = 0, depth_max = 0;
};
void snap(void *ctx, uint64_t *v)
{
    const Client *c = static_cast<const Client *>(ctx);
    v[0] = c->ops;
    v[1] = c->depth;
    v[2] = c->depth_max;
}

/* On a new thread as shard idx (once per shard and test: a second start would replace the
 * block): start its block, run f, snapshot, and stop the block when asked. */
template <typename F> void on_shard(unsigned idx, bool stop, F f)
{
    std::thread t([&] {
        REQUIRE(pol_metrics_shard_start(nullptr, idx) == 0);
        f();
        pol_shard_stats ps{};
        pol_metrics_shard_snapshot(&ps, nullptr);
        if (stop)
            pol_metrics_shard_stop(idx);
    });
    t.join();
}
} // namespace

TEST_CASE("per-shard sources: summed by label over shards, max as the largest, one head per family",
          "[metrics]")
{
    REQUIRE(pol_metrics_init(2, nullptr) == 0);
    /* A thread without a block: accepted, nothing published. */
    Client none;
    CHECK(pol_metrics_source_add(&k_src, "db", snap, &none) == 0);
    pol_metrics_source_remove(&none);
    pol_metrics_source_desc bad = {"connection", k_src_fields, 0};
    CHECK(pol_metrics_source_add(&bad, "db", snap, &none) == -EINVAL);
    CHECK(pol_metrics_source_add(&k_src, "db", nullptr, &none) == -EINVAL);

    Client a0{10, 2, 5}, a1{7, 1, 9}, b1{3, 0, 1};
    on_shard(0, false, [&] { REQUIRE(pol_metrics_source_add(&k_src, "db", snap, &a0) == 0); });
    on_shard(1, false, [&] {
        REQUIRE(pol_metrics_source_add(&k_src, "db", snap, &a1) == 0);
        REQUIRE(pol_metrics_source_add(&k_src, "we\"ird", snap, &b1) == 0);
    });
    std::string p = scrape();
    INFO(p);
    CHECK(has_line(p, "ringpolicyd_test_ops_total{connection=\"db\"} 17"));
    CHECK(has_line(p, "ringpolicyd_test_ops_total{connection=\"we\\\"ird\"} 3"));
    CHECK(has_line(p, "ringpolicyd_test_depth{connection=\"db\"} 3"));
    CHECK(has_line(p, "ringpolicyd_test_depth_max{connection=\"db\"} 9"));
    CHECK(has_line(p, "# TYPE ringpolicyd_test_ops_total counter"));
    CHECK(has_line(p, "# TYPE ringpolicyd_test_depth gauge"));
    size_t first = p.find("# TYPE ringpolicyd_test_ops_total");
    CHECK(p.find("# TYPE ringpolicyd_test_ops_total", first + 1) == std::string::npos);
    size_t dbs = 0;
    for (size_t at = p.find("ringpolicyd_test_ops_total{connection=\"db\"}"); at != std::string::npos;
         at = p.find("ringpolicyd_test_ops_total{connection=\"db\"}", at + 1))
        dbs++;
    CHECK(dbs == 1);

    pol_metrics_fini();
}

TEST_CASE("per-shard sources: a replaced source's counters carry over, gauges are gone once "
          "removed",
          "[metrics]")
{
    REQUIRE(pol_metrics_init(1, nullptr) == 0);
    Client a0{10, 2, 5}, n0{4, 1, 1};
    std::string p1, p2;
    /* One shard is one thread: everything of shard 0 (and the scrapes) on the same thread. */
    std::thread t([&] {
        pol_shard_stats ps{};
        if (pol_metrics_shard_start(nullptr, 0) != 0)
            return;
        pol_metrics_source_add(&k_src, "db", snap, &a0);
        pol_metrics_shard_snapshot(&ps, nullptr);
        /* A reload: the old client goes (its last values are taken), a new one starts at 0. */
        a0.ops = 12;
        pol_metrics_source_remove(&a0);
        pol_metrics_source_add(&k_src, "db", snap, &n0);
        pol_metrics_shard_snapshot(&ps, nullptr);
        p1 = scrape();
        pol_metrics_source_remove(&n0);
        p2 = scrape();
        pol_metrics_shard_stop(0);
    });
    t.join();
    INFO(p1);
    CHECK(has_line(p1, "ringpolicyd_test_ops_total{connection=\"db\"} 16")); /* 12 + 4 */
    CHECK(has_line(p1, "ringpolicyd_test_depth{connection=\"db\"} 1"));
    CHECK(has_line(p2, "ringpolicyd_test_ops_total{connection=\"db\"} 16"));
    CHECK(has_line(p2, "ringpolicyd_test_depth{connection=\"db\"} 0"));
    pol_metrics_fini();
}

TEST_CASE("per-shard sources: at most POL_METRICS_SOURCES_MAX entries per shard", "[metrics]")
{
    REQUIRE(pol_metrics_init(1, nullptr) == 0);
    static Client cs[POL_METRICS_SOURCES_MAX + 1];
    on_shard(0, true, [&] {
        for (unsigned i = 0; i < POL_METRICS_SOURCES_MAX; i++)
            REQUIRE(pol_metrics_source_add(&k_src, ("c" + std::to_string(i)).c_str(), snap,
                                           &cs[i]) == 0);
        CHECK(pol_metrics_source_add(&k_src, "one-more", snap, &cs[POL_METRICS_SOURCES_MAX]) ==
              -ENOSPC);
        /* A removed entry is reused by the same label, not by another. */
        pol_metrics_source_remove(&cs[0]);
        CHECK(pol_metrics_source_add(&k_src, "one-more", snap, &cs[POL_METRICS_SOURCES_MAX]) ==
              -ENOSPC);
        CHECK(pol_metrics_source_add(&k_src, "c0", snap, &cs[0]) == 0);
    });
    pol_metrics_fini();
}
