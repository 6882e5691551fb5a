#!/usr/bin/env bash
# deploy/check.sh [RINGPOLICYD]: check everything under deploy/, offline once the packages are
# installed. Called by CI as `bash deploy/check.sh BUILD/policy/ringpolicyd`; the binary may also
# come from $RINGPOLICYD_BIN. Without one, the steps that run the daemon are skipped (and
# counted as failures when $CI is set, because then they must run).
#
#  kubernetes   every overlay renders (kubectl kustomize), every component is used by one, and
#               every object is valid: Kubernetes OpenAPI schemas, no unknown field, references
#               inside the overlay (deploy/check/validate.mjs)
#  config       the mtpolicyd.conf of each overlay, with the files the pod would mount, parses
#               with mtpolicyd's own parser (Config::General, as 2.05 calls it); and
#               `ringpolicyd --check` on it, reported (fatal with DEPLOY_CHECK_STRICT_CONFIG=1:
#               the overlays use modules still being built, see docs/deployment.md)
#  seccomp      the Kubernetes profile allows exactly the unit's system calls (systemd 252)
#  systemd      systemd-analyze verify, and an exposure score of at most 2.0 (security --offline)
#  cron         the cron file's lines, user and binary
#  sandboxes    ringpolicyd serves (both backends, SIGHUP, SIGTERM, --check, --cron) under the
#               unit's system call filter and under the profile (behind tini, as in the image),
#               where any call outside them kills it; a blocked io_uring falls back to epoll
#               (backend auto) or stops start-up with its reason (backend uring)
#  reloader     the config-reloader sidecar against a real daemon
#  postfix      the Postfix snippets with postconf and a running Postfix
#  container    the Containerfile, statically (no registry to build from)
#  shell        shellcheck on deploy's shell scripts
#
# Installs what it needs from Debian's packages and, pinned by deploy/check/package-lock.json,
# from the npm registry (kept in deploy/check/node_modules between runs). Exit 0 when every
# check passed (or was skipped outside CI), 1 otherwise, with the reason above the summary.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
D=$REPO/deploy
RPD=${1:-${RINGPOLICYD_BIN:-}}
export DEBIAN_FRONTEND=noninteractive
T0=$(date +%s)

PASSED=0 FAILED=0 SKIPPED=0
FAILURES=()
pass() { PASSED=$((PASSED + 1)); echo "check: $1: ok"; }
failed() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); echo "check: $1: FAILED${2:+ ($2)}"; }
skip() {
    if [ -n "${CI:-}" ]; then
        failed "$1" "cannot run in CI: $2"
    else
        SKIPPED=$((SKIPPED + 1))
        echo "check: $1: skipped ($2)"
    fi
}
# step NAME COMMAND...: run, indent its output, count.
step() {
    local name=$1 rc
    shift
    echo "check: $name"
    "$@" 2>&1 | sed 's/^/    /'
    rc=${PIPESTATUS[0]}
    case $rc in
        0) pass "$name" ;;
        77) skip "$name" "prerequisite missing" ;;
        *) failed "$name" "exit $rc" ;;
    esac
}

WORK=$(mktemp -d /tmp/rpd-deploy-check.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
# Prerequisites

PKGS=(python3-seccomp libconfig-general-perl libtie-ixhash-perl postfix tini binutils systemd
      shellcheck nodejs)
need_install() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            return 0
    done
    return 1
}
install_packages() {
    need_install "${PKGS[@]}" || return 0
    command -v npm >/dev/null || PKGS+=(npm)
    if [ "$(id -u)" != 0 ]; then
        echo "check: not root: cannot install ${PKGS[*]}; the checks that need them will fail"
        return 0
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends "${PKGS[@]}" \
        >"$WORK/apt.log" 2>&1 ||
        { apt-get update -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 &&
          apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends "${PKGS[@]}" \
              >"$WORK/apt.log" 2>&1; } ||
        { tail -n 20 "$WORK/apt.log"; echo "check: apt-get install failed"; }
}
install_packages

# npm packages, exactly as locked; reinstalled only when the lock file changes.
npm_install() {
    local stamp=$D/check/node_modules/.deploy-check-lock
    local want
    want=$(sha256sum "$D/check/package-lock.json" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "node_modules matches package-lock.json"
        return 0
    fi
    (cd "$D/check" && npm ci --no-audit --no-fund --loglevel=error) || return 1
    echo "$want" >"$stamp"
}
step "npm ci (deploy/check)" npm_install

# ---------------------------------------------------------------------------------------------
# Kubernetes

OVERLAYS=()
render_overlays() {
    local dir name comp used rc=0
    command -v kubectl >/dev/null || { echo "kubectl is not installed"; return 1; }
    for dir in "$D"/kubernetes/overlays/*/; do
        name=$(basename "$dir")
        if kubectl kustomize "$dir" >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
            echo "overlays/$name: $(grep -c '^kind:' "$WORK/$name.yaml") objects"
            OVERLAYS+=("$WORK/$name.yaml")
        else
            echo "overlays/$name does not render:"
            cat "$WORK/$name.err"
            rc=1
        fi
    done
    # A component no overlay includes would never be validated.
    for comp in "$D"/kubernetes/components/*/ "$D"/kubernetes/seccomp/; do
        comp=$(realpath --relative-to="$D/kubernetes" "$comp")
        used=$(grep -ls -- "- \.\./\.\./$comp\$" "$D"/kubernetes/overlays/*/kustomization.yaml)
        if [ -z "$used" ]; then
            echo "component $comp is used by no overlay, so nothing checks it"
            rc=1
        fi
    done
    [ ${#OVERLAYS[@]} -gt 0 ] || rc=1
    return $rc
}
echo "check: render overlays"
if render_overlays >"$WORK/render.out" 2>&1; then
    sed 's/^/    /' "$WORK/render.out"
    pass "render overlays"
else
    sed 's/^/    /' "$WORK/render.out"
    failed "render overlays"
fi

# Also writes the files each ringpolicyd container mounts, and names its configuration in
# CONFIG lines (for the next step).
validate() {
    node "$D/check/validate.mjs" --examples "$D/kubernetes/overlays/production/examples" \
        --materialize "$WORK/mounts" "${OVERLAYS[@]}" >"$WORK/validate.out" 2>&1
    local rc=$?
    grep -v '^CONFIG ' "$WORK/validate.out"
    grep '^CONFIG ' "$WORK/validate.out" >"$WORK/configs"
    return $rc
}
step "validate manifests" validate
step "validator catches broken manifests" node --test --test-reporter=spec "$D/check/test/"
config_check() {
    local what file rc=0 out
    [ -s "$WORK/configs" ] || { echo "no ringpolicyd configuration found in the overlays"; return 1; }
    while read -r _ what file; do
        if out=$(perl -MConfig::General=ParseConfig -MTie::IxHash -e '
                tie my %h, "Tie::IxHash";
                %h = ParseConfig(-AllowMultiOptions => "no", -ConfigFile => $ARGV[0],
                                 -Tie => "Tie::IxHash");
                die "no <VirtualHost>\n" unless $h{VirtualHost};' "$file" 2>&1); then
            echo "$what: parses as mtpolicyd 2.05 parses it"
        else
            echo "$what: mtpolicyd's parser refuses it: $out"
            rc=1
        fi
        [ -n "$RPD" ] || continue
        if out=$("$RPD" --check -c "$file" 2>&1); then
            echo "$what: ringpolicyd --check: ${out//$'\n'/ | }"
        elif [ "${DEPLOY_CHECK_STRICT_CONFIG:-0}" = 1 ]; then
            echo "$what: ringpolicyd --check refuses it: $out"
            rc=1
        else
            echo "$what: NOTE: this ringpolicyd cannot load it yet: ${out//$'\n'/ | }"
        fi
    done <"$WORK/configs"
    return $rc
}
step "overlay configurations" config_check

# ---------------------------------------------------------------------------------------------
# Host packaging

UNIT=$D/systemd/ringpolicyd.service
PROFILE=$D/kubernetes/seccomp/ringpolicyd-io-uring.json

seccomp_check() {
    local v
    v=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
    if [ "$v" != 252 ]; then
        echo "systemd $v: the profile was generated with systemd 252's groups; comparing skipped"
        python3 "$D/check/syscalls.py" profile-allow "$PROFILE" >/dev/null
        return
    fi
    python3 "$D/check/syscalls.py" gen-profile "$UNIT" --check "$PROFILE" &&
        echo "$(python3 "$D/check/syscalls.py" profile-allow "$PROFILE" | wc -l) system calls, the same as the unit's"
}
step "seccomp profile = unit's filter" seccomp_check

systemd_check() {
    local unit=$WORK/ringpolicyd.service exec=${RPD:-/bin/true} score
    command -v systemd-analyze >/dev/null || { echo "no systemd-analyze"; return 77; }
    # verify wants the ExecStart binary to exist: point it at the built one.
    sed "s#^ExecStart=/usr/bin/ringpolicyd#ExecStart=$(realpath "$exec")#" "$UNIT" >"$unit"
    systemd-analyze verify --man=no "$unit" || return 1
    echo "systemd-analyze verify: clean"
    score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || { echo "no exposure score from systemd-analyze security"; return 1; }
    echo "exposure level $score (at most 2.0 allowed)"
    awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'
}
step "systemd unit" systemd_check

cron_check() {
    local f=$D/cron/ringpolicyd n=0 rc=0 line tasks
    while IFS= read -r line; do
        case $line in '' | \#* | [A-Z]*=*) continue ;; esac
        n=$((n + 1))
        read -r -a w <<<"$line"
        if [ ${#w[@]} -lt 7 ] || [ "${w[5]}" != mtpolicyd ]; then
            echo "line $n: wanted 5 time fields, user mtpolicyd and a command: $line"
            rc=1
            continue
        fi
        tasks=$(sed -n 's#.*/usr/bin/ringpolicyd --cron \([a-z,]*\)$#\1#p' <<<"$line")
        if [ -z "$tasks" ] || ! grep -qE '^(hourly|daily|weekly|monthly)(,(hourly|daily|weekly|monthly))*$' <<<"$tasks"; then
            echo "line $n: no '/usr/bin/ringpolicyd --cron TASKS' (hourly, daily, weekly, monthly)"
            rc=1
        fi
    done <"$f"
    [ $n = 4 ] || { echo "$n schedule lines, Debian's mtpolicyd has 4"; rc=1; }
    grep -q '^ExecStart=/usr/bin/ringpolicyd$' "$UNIT" || { echo "the unit runs another binary"; rc=1; }
    [ $rc = 0 ] && echo "4 schedules, user mtpolicyd, /usr/bin/ringpolicyd --cron"
    return $rc
}
step "cron file" cron_check

# ---------------------------------------------------------------------------------------------
# Running the daemon

SANDBOX="/usr/bin/python3 $D/check/sandbox_run.py"
sandbox_runs() {
    python3 "$D/check/syscalls.py" unit-allow "$UNIT" >"$WORK/unit.allow" || return 1
    python3 "$D/check/syscalls.py" profile-allow "$PROFILE" >"$WORK/profile.allow" || return 1
    local ex="python3 $D/check/exercise.py --bin $RPD"
    echo "unit filter, backend uring:" &&
        $ex --backend uring --expect-backend io_uring --wrap="$SANDBOX --kill $WORK/unit.allow --" &&
        echo "unit filter, backend epoll:" &&
        $ex --backend epoll --expect-backend epoll --wrap="$SANDBOX --kill $WORK/unit.allow --" &&
        echo "Kubernetes profile, behind tini as in the image, backend uring:" &&
        $ex --backend uring --expect-backend io_uring \
            --wrap="$SANDBOX --kill $WORK/profile.allow -- /usr/bin/tini -s --" &&
        echo "io_uring blocked (a runtime's default profile), backend auto:" &&
        $ex --backend auto --expect-backend epoll \
            --wrap="$SANDBOX --deny io_uring_setup $WORK/profile.allow --" &&
        echo "io_uring blocked, backend uring:" &&
        $ex --backend uring --expect-start-failure "io_uring_setup is blocked (EPERM)" \
            --wrap="$SANDBOX --deny io_uring_setup $WORK/profile.allow --"
}
if [ -z "$RPD" ]; then
    skip "sandboxes" "no ringpolicyd binary given"
    skip "config reloader" "no ringpolicyd binary given"
elif [ ! -x "$RPD" ]; then
    failed "sandboxes" "$RPD is not executable"
    failed "config reloader" "$RPD is not executable"
else
    if /usr/bin/python3 -c 'import seccomp' 2>/dev/null && [ -x /usr/bin/tini ]; then
        step "sandboxes" sandbox_runs
    else
        skip "sandboxes" "python3-seccomp or tini missing"
    fi
    step "config reloader" bash "$D/check/test/reloader_test.sh" "$RPD"
fi

step "postfix snippets" bash "$D/check/postfix_check.sh" "$RPD"
BINS=()
for b in "$RPD" "$(dirname "${RPD:-.}")/client/ringpolicyd-client"; do
    [ -n "$RPD" ] && [ -x "$b" ] && BINS+=("$b")
done
step "Containerfile" python3 "$D/check/container_check.py" "$REPO" "${BINS[@]}"
if command -v shellcheck >/dev/null; then
    step "shellcheck" shellcheck -x deploy/check.sh deploy/container/config-reloader \
        deploy/check/testlib.sh deploy/check/postfix_check.sh deploy/check/test/reloader_test.sh
else
    skip "shellcheck" "shellcheck missing"
fi

echo
for f in "${FAILURES[@]}"; do echo "check: FAILED: $f"; done
echo "deploy/check.sh: $PASSED checks passed, $FAILED failed, $SKIPPED skipped in $(($(date +%s) - T0)) s"
[ "$FAILED" = 0 ]
