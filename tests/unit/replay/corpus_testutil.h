// corpus_testutil.h: a corpus built from log text held in a string, for the bench/replay tests.
#ifndef REPLAY_CORPUS_TESTUTIL_H
#define REPLAY_CORPUS_TESTUTIL_H

#include <catch2/catch.hpp>

#include <string>

extern "C" {
#include "corpus.h"
}

#include "replay_testutil.h"

namespace rpltest {

// Feeds the lines of `log` (classic timestamps get `year`) and builds the requests of `mask`.
struct log_corpus {
    rpl_corpus c;
    explicit log_corpus(const std::string &log, unsigned mask = 7u, int year = 2026)
    {
        rpl_load_opts lo = {year, 0};
        rpl_corpus_init(&c, &lo);
        rpl_corpus_begin_file(&c, 0);
        for (const std::string &line : split_lines(log))
            REQUIRE(rpl_corpus_feed(&c, line.data(), line.size()) == 0);
        REQUIRE(rpl_corpus_finish(&c) == 0);
        REQUIRE(rpl_corpus_build(&c, mask) == 0);
    }
    ~log_corpus() { rpl_corpus_free(&c); }
    log_corpus(const log_corpus &) = delete;
    log_corpus &operator=(const log_corpus &) = delete;

    std::string str(rpl_str s) const { return std::string(c.strs + s.off, s.len); }
};

} // namespace rpltest

#endif
