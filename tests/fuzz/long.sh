#!/usr/bin/env bash
# tests/fuzz/long.sh [SECONDS] [OUTDIR] [TARGET...]: the long fuzz runs of the RELIABILITY
# section. Builds every libFuzzer target of tests/fuzz/ (or the ones named) with
# tests/fuzz/build.sh, then runs them one at a time at nice 19 for SECONDS each (default 600)
# from a copy of its seed corpus with its dictionary, and prints a Markdown table: runs,
# executions per second, the final cov: and ft: (edges and features reached), corpus files
# before and after, crashes. Logs, grown corpora and crash inputs stay in OUTDIR (default
# /tmp/ringpolicyd-fuzz-long); a crash input is named crash-<target>-<hash>: add it to
# tests/fuzz/corpus/<target>/ and as a unit test named after it.
#
# Exit status: 0 when every target built and ran without a crash, 1 otherwise.
set -uo pipefail
secs=${1:-600}
out=${2:-/tmp/ringpolicyd-fuzz-long}
shift 2 2>/dev/null || shift $#
cd "$(dirname "$0")/../.."

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do
        n=$(basename "$f" .c)
        targets+=("${n#fuzz_}")
    done
fi

mkdir -p "$out"
rows=()
status=0
for name in "${targets[@]}"; do
    bin="$out/fuzz_$name"
    corpus="$out/corpus_$name"
    log="$out/fuzz_$name.log"
    if ! nice -n 19 tests/fuzz/build.sh "$name" "$bin" >"$out/build_$name.log" 2>&1; then
        rows+=("| $name | build failed (see $out/build_$name.log) | | | | | | |")
        status=1
        continue
    fi
    rm -rf "$corpus"
    mkdir -p "$corpus"
    [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$corpus/"
    before=$(find "$corpus" -type f | wc -l)
    opts=(-max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$out/crash-$name-")
    [ -f "tests/fuzz/$name.dict" ] && opts+=(-dict="tests/fuzz/$name.dict")
    [ "$name" = maillog ] && opts+=(-max_len=4096) # as fuzz_maillog.c recommends
    echo "long.sh: fuzzing $name for $secs s" >&2
    nice -n 19 "$bin" "${opts[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    after=$(find "$corpus" -type f | wc -l)
    # The last status line: "#RUNS DONE cov: N ft: N corp: N/SIZE ... exec/s: N rss: N".
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    crashes=$(find "$out" -maxdepth 1 -name "crash-$name-*" | wc -l)
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
    fi
    rows+=("| $name | $secs | ${runs:-?} | ${eps:-?} | ${cov:-?} | ${ft:-?} | $before → $after | $crashes (rc $rc) | ${rss:-?} |")
done

echo "| target | seconds | runs | exec/s | cov | ft | corpus files | crashes | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
