#!/bin/sh
# exports_test.sh EXE PROBE_SO HEADER...: user plugin .so files are loaded with RTLD_NOW and
# resolve the engine's API from the executable (export_dynamic). Checks that EXE exports every
# eng_* function declared in the given public headers, whether the daemon calls it or not, and
# every eng_* symbol PROBE_SO (a shared object calling them) leaves undefined.
exe=$1
probe=$2
shift 2
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$exe" | awk '{print $3}' | sort -u >"$tmp/exported"
# Declarations: eng_name( after a space, a '*' or at the start of a line; the eng_*_fn
# typedefs are types, not functions.
grep -hoE '(^|[ *])eng_[a-z0-9_]+\(' "$@" | grep -oE 'eng_[a-z0-9_]+' | grep -v '_fn$' |
    sort -u >"$tmp/declared"
nm -D --undefined-only "$probe" | awk '{print $2}' | grep '^eng_' | sort -u >"$tmp/probe"
if [ "$(wc -l <"$tmp/declared")" -lt 40 ] || [ "$(wc -l <"$tmp/probe")" -lt 10 ]; then
    echo "found too few declarations ($(wc -l <"$tmp/declared")) or probe symbols" \
        "($(wc -l <"$tmp/probe")): the check itself is broken"
    exit 1
fi
status=0
for f in declared probe; do
    missing=$(comm -23 "$tmp/$f" "$tmp/exported")
    if [ -n "$missing" ]; then
        echo "not exported by $exe ($f):" $missing
        status=1
    fi
done
[ $status = 0 ] && echo "$(wc -l <"$tmp/declared") declared, $(wc -l <"$tmp/probe") probe symbols exported"
exit $status
