#!/bin/sh
# tests/fuzz/build.sh NAME OUT: builds the libFuzzer target tests/fuzz/fuzz_NAME.c into OUT
# with clang (address and undefined sanitizers), from the repository root. .ci/run uses it for
# every target when it exists; each target's owner keeps its recipe here.
set -e
name=$1
out=$2
if [ -z "$name" ] || [ -z "$out" ]; then
    echo "usage: tests/fuzz/build.sh NAME OUT" >&2
    exit 2
fi
cd "$(dirname "$0")/../.."
FLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -std=gnu17"
case $name in
proto)
    exec clang $FLAGS -Ipolicy -Ipolicy/include -Iengine/include \
        tests/fuzz/fuzz_proto.c policy/proto.c engine/assert.c tests/fuzz/main_thread.c -o "$out" ;;
config)
    exec clang $FLAGS -Ipolicy -Ipolicy/include -Iengine/include \
        tests/fuzz/fuzz_config.c policy/config.c policy/config_read.c engine/assert.c \
        tests/fuzz/main_thread.c -o "$out" ;;
maillog)
    exec clang $FLAGS -Ibench/replay -Ibench/common \
        tests/fuzz/fuzz_maillog.c bench/replay/maillog.c bench/replay/reader.c \
        bench/replay/corpus.c bench/replay/layout.c bench/replay/render.c -lxxhash -o "$out" ;;
sql_dsn) # owner: sql
    exec clang $FLAGS -Ipolicy -Ipolicy/include -Iengine/include \
        tests/fuzz/fuzz_sql_dsn.c policy/sql_dsn.c engine/assert.c tests/fuzz/main_thread.c \
        -o "$out" ;;
mc_reply) # owner: memcached
    exec clang $FLAGS -Iengine -Iengine/include \
        tests/fuzz/fuzz_mc_reply.c engine/mc_proto.c engine/assert.c tests/fuzz/main_thread.c \
        -lxxhash -o "$out" ;;
spf) # owner: spf
    exec clang $FLAGS -Ipolicy -Ipolicy/include -Iengine/include \
        tests/fuzz/fuzz_spf.c policy/spf/record.c policy/spf/macro.c policy/spf/eval.c \
        engine/assert.c tests/fuzz/main_thread.c -o "$out" ;;
http) # owner: ops
    exec clang $FLAGS -Iengine/include \
        tests/fuzz/fuzz_http.c engine/http_parse.c engine/assert.c tests/fuzz/main_thread.c \
        -o "$out" ;;
dns_txt) # owner: dns
    exec clang $FLAGS -Iengine/include -Ipolicy/include \
        tests/fuzz/fuzz_dns_txt.c engine/dns_msg.c policy/dns_text.c engine/assert.c \
        tests/fuzz/main_thread.c -o "$out" ;;
http_resp) # owner: netplug
    exec clang $FLAGS -Ipolicy \
        tests/fuzz/fuzz_http_resp.c policy/plugins/http_resp.c \
        -o "$out" ;;
*)
    echo "tests/fuzz/build.sh: no recipe for tests/fuzz/fuzz_$name.c" >&2
    exit 1 ;;
esac
