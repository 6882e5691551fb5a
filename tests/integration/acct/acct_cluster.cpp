// acct_cluster.cpp: two ringpolicyd daemons sharing one PostgreSQL: their counters add up in
// the same rows; and how far over a quota the pair can go. Each daemon sees its own mails at
// once and the other's only after the other flushed (flush_interval) and its own cached value
// expired (cache_ttl): paced slower than that, the pair stops exactly at the limit; in a burst
// faster than that, each may accept up to the limit on its own, so the pair's overshoot is at
// most (N-1) x threshold, in general (N-1) x what the other hosts accept for that key within
// flush_interval + cache_ttl. Both are measured and printed.
#include "acct_rig.h"

using namespace itest;
using namespace acctit;

namespace
{

std::string cluster_config(uint16_t port, const std::string &vhost)
{
    return "port = \"127.0.0.1:" + std::to_string(port) + "\"\nshards = 2\n" + pg_connection() +
           vhost_block(std::to_string(port), "cluster", vhost);
}

std::string quota_vhost(int threshold)
{
    return "  <Plugin quota>\n    module = \"Quota\"\n    field = \"client_address\"\n"
           "    metric = \"count\"\n    threshold = " +
           std::to_string(threshold) +
           "\n    cache_ttl = 0.2\n    action = \"defer over quota\"\n  </Plugin>\n"
           "  <Plugin acct>\n    module = \"Accounting\"\n    fields = \"client_address\"\n"
           "    flush_interval = 0.2\n  </Plugin>\n";
}

struct Pair {
    uint16_t pa = free_tcp_port(), pb = free_tcp_port();
    std::unique_ptr<Daemon> a, b;
    explicit Pair(const std::string &vhost)
    {
        pg_up();
        pg_rows("DROP TABLE IF EXISTS acct_client_address");
        a = start_ring(cluster_config(pa, vhost), Endpoint::tcp(pa));
        b = start_ring(cluster_config(pb, vhost), Endpoint::tcp(pb));
    }
};

uint64_t count_of_key(const std::string &key)
{
    auto rows = pg_rows("SELECT COALESCE(SUM(\"count\"), 0) FROM acct_client_address WHERE "
                        "\"key\" = '" +
                        key + "'");
    return rows.empty() ? 0 : std::stoull(rows[0]);
}

/* Sends mails from client alternately to both daemons, pause_ms apart, until both defer;
 * returns how many were accepted. */
int accepted_until_deferred(Pair &p, const std::string &client, int pause_ms, int max_mails)
{
    Conn ca(Endpoint::tcp(p.pa)), cb(Endpoint::tcp(p.pb));
    int accepted = 0;
    bool a_deferred = false, b_deferred = false;
    for (int i = 0; i < max_mails && !(a_deferred && b_deferred); i++) {
        Conn &c = i % 2 == 0 ? ca : cb;
        std::string got =
            action_of(c.request(eom(client + "." + std::to_string(i), client, 100, 1)));
        if (got == "dunno")
            accepted++;
        else if (got == "defer over quota")
            (i % 2 == 0 ? a_deferred : b_deferred) = true;
        else
            FAIL("unexpected reply " << got);
        if (pause_ms)
            sleep_ms(pause_ms);
    }
    return accepted;
}

} // namespace

TEST_CASE("two daemons add to the same rows", "[cluster]")
{
    Pair p("  <Plugin acct>\n    module = \"Accounting\"\n    fields = \"client_address\"\n"
           "    flush_interval = 0.1\n  </Plugin>\n");
    Conn ca(Endpoint::tcp(p.pa)), cb(Endpoint::tcp(p.pb));
    for (int i = 0; i < 10; i++)
        REQUIRE(action_of(ca.request(eom("sa" + std::to_string(i), "192.0.2.50", 10, 1))) ==
                "dunno");
    for (int i = 0; i < 15; i++)
        REQUIRE(action_of(cb.request(eom("sb" + std::to_string(i), "192.0.2.50", 10, 1))) ==
                "dunno");
    INFO("a:\n" << p.a->log() << "\nb:\n" << p.b->log());
    CHECK(wait_for([] { return count_of_key("192.0.2.50"); }, (uint64_t)25) == 25);
    CHECK(pg_rows(acct_select("acct_client_address")).size() == 1);
    CHECK(p.a->stop() == 0);
    CHECK(p.b->stop() == 0);
    CHECK(count_of_key("192.0.2.50") == 25);
}

TEST_CASE("quota over two daemons: exact when paced beyond the window, bounded in a burst",
          "[cluster]")
{
    const int threshold = 10;
    Pair p(quota_vhost(threshold));
    /* Paced: 600 ms between mails, more than flush_interval + cache_ttl (400 ms). */
    int paced = accepted_until_deferred(p, "192.0.2.60", 600, 4 * threshold);
    /* Burst: as fast as the replies come. */
    int burst = accepted_until_deferred(p, "192.0.2.61", 0, 4 * threshold);
    INFO("a:\n" << p.a->log() << "\nb:\n" << p.b->log());
    printf("quota over 2 daemons, threshold %d, flush_interval 0.2 s, cache_ttl 0.2 s: paced "
           "(600 ms apart) accepted %d (over by %d); burst accepted %d (over by %d, bound "
           "(N-1) x threshold = %d)\n",
           threshold, paced, paced - threshold, burst, burst - threshold, threshold);
    CHECK(paced == threshold);
    CHECK(burst >= threshold);
    CHECK(burst <= 2 * threshold);
    /* Once both have flushed and refreshed, both defer. */
    sleep_ms(600);
    CHECK(action_of(ask(Endpoint::tcp(p.pa), eom("late.a", "192.0.2.61", 1, 1))) ==
          "defer over quota");
    CHECK(action_of(ask(Endpoint::tcp(p.pb), eom("late.b", "192.0.2.61", 1, 1))) ==
          "defer over quota");
    CHECK(wait_for([] { return count_of_key("192.0.2.61"); }, (uint64_t)burst) == (uint64_t)burst);
}
