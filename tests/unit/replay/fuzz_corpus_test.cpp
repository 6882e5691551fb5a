// fuzz_corpus_test.cpp: runs the libFuzzer target tests/fuzz/fuzz_maillog.c over its committed
// corpus (tests/fuzz/corpus/maillog), so every build checks the inputs the fuzzer found
// interesting, with the target's own invariants (it aborts on a broken one).
#include <catch2/catch.hpp>

#include <dirent.h>

#include <string>
#include <vector>

#include "replay_testutil.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef RPL_FUZZ_CORPUS_DIR
#error "RPL_FUZZ_CORPUS_DIR must name tests/fuzz/corpus/maillog"
#endif

TEST_CASE("the fuzz target passes over its committed corpus", "[fuzzcorpus]")
{
    std::vector<std::string> files;
    DIR *d = opendir(RPL_FUZZ_CORPUS_DIR);
    REQUIRE(d != nullptr);
    while (struct dirent *e = readdir(d))
        if (e->d_name[0] != '.')
            files.push_back(std::string(RPL_FUZZ_CORPUS_DIR) + "/" + e->d_name);
    closedir(d);
    REQUIRE(files.size() >= 10);
    size_t bytes = 0;
    for (const std::string &f : files) {
        std::string data = rpltest::read_file(f);
        INFO(f);
        CHECK(LLVMFuzzerTestOneInput((const uint8_t *)data.data(), data.size()) == 0);
        bytes += data.size();
    }
    CHECK(bytes > 0);
}

// Regression tests named after what the fuzzer found (the input is also in the corpus above).

// fuzz_maillog, 2026-11-25, 30-minute run: a NOQUEUE reject whose client has no address
// compared an absent field ({NULL, 0}) with memcmp(..., NULL, 0), undefined behaviour (UBSan:
// "null pointer passed as argument 2"). It shows only under UBSan (this test in the sanitizer
// build, where UBSAN_OPTIONS halts on it).
TEST_CASE("crash-ubsan-str-eq-null-slice", "[fuzzcorpus]")
{
    std::string data =
        rpltest::read_file(std::string(RPL_FUZZ_CORPUS_DIR) + "/crash-ubsan-str-eq-null-slice");
    REQUIRE(!data.empty());
    CHECK(LLVMFuzzerTestOneInput((const uint8_t *)data.data(), data.size()) == 0);
}
