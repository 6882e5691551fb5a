#!/usr/bin/env python3
"""syscalls.py: the system call sets of ringpolicyd's sandboxes, for deploy/check.sh.

  syscalls.py unit-allow UNIT          the names the unit's SystemCallFilter= lines allow,
                                       expanded with `systemd-analyze syscall-filter`
  syscalls.py profile-allow PROFILE    the names an OCI seccomp profile (JSON) allows
  syscalls.py gen-profile UNIT         print the Kubernetes Localhost profile derived from the
                                       unit's filter (how deploy/kubernetes/seccomp/*.json was
                                       made; check.sh compares, see --check)
  syscalls.py gen-profile UNIT --check PROFILE
                                       exit 1 if PROFILE allows a different set than the unit

As systemd does, the first SystemCallFilter= line makes an allow-list, further plain lines add
to it and `~` lines take calls out of it; a unit whose first line is a deny-list is refused
here (the profile is an allow-list). Exit status 2 and one message on a malformed input. Uses
only the standard library, so any python3 runs it.
"""
import json
import subprocess
import sys

# The unit names these itself: systemd 252's @aio (inside @system-service) has them, but a
# systemd that moves them out of @system-service would otherwise silently force epoll.
IO_URING = ("io_uring_setup", "io_uring_enter", "io_uring_register")


def die(msg):
    print(f"syscalls.py: {msg}", file=sys.stderr)
    sys.exit(2)


def group_members(group, seen):
    """The system calls in a systemd @group, nested groups expanded."""
    try:
        out = subprocess.run(["systemd-analyze", "syscall-filter", group], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        die(f"systemd-analyze syscall-filter {group} failed: {e}")
    names = set()
    lines = out.splitlines()
    if not lines or lines[0].strip() != group:
        die(f"systemd-analyze does not know the group {group}")
    for line in lines[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if word.startswith("@"):
            if word not in seen:
                seen.add(word)
                names |= group_members(word, seen)
        else:
            names.add(word)
    return names


def unit_filter_words(unit_path):
    """The words of every SystemCallFilter= line of the [Service] section, in order; words of a
    deny line carry a leading ~."""
    words = []
    section = None
    try:
        with open(unit_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        die(f"cannot read {unit_path}: {e}")
    for number, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s
            continue
        if section != "[Service]" or not s.startswith("SystemCallFilter="):
            continue
        value = s.split("=", 1)[1].strip()
        if not value:
            die(f"{unit_path}:{number}: an empty SystemCallFilter= resets the list")
        if value.startswith("~") and not words:
            die(f"{unit_path}:{number}: the first SystemCallFilter= must be an allow-list")
        deny = value.startswith("~")
        words.extend(("~" if deny else "") + w for w in value.lstrip("~").split())
    if not words:
        die(f"{unit_path}: no SystemCallFilter= line")
    return words


def expand(word):
    if word.startswith("@"):
        return group_members(word, {word})
    return {word}


def unit_allow(unit_path):
    names = set()
    for w in unit_filter_words(unit_path):
        if w.startswith("~"):
            names -= expand(w[1:])
        else:
            names |= expand(w)
    return names


def profile_allow(profile_path):
    try:
        with open(profile_path, encoding="utf-8") as f:
            p = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read the seccomp profile {profile_path}: {e}")
    if p.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS",
                                      "SCMP_ACT_KILL", "SCMP_ACT_TRAP"):
        die(f"{profile_path}: defaultAction must refuse (SCMP_ACT_ERRNO or a kill), "
            f"not {p.get('defaultAction')!r}")
    names = set()
    for i, rule in enumerate(p.get("syscalls", [])):
        if rule.get("action") != "SCMP_ACT_ALLOW":
            die(f"{profile_path}: syscalls[{i}]: only SCMP_ACT_ALLOW rules are expected")
        if rule.get("args"):
            die(f"{profile_path}: syscalls[{i}]: argument filters are not expected")
        names |= set(rule.get("names", []))
    return names


def gen_profile(unit_path):
    names = unit_allow(unit_path)
    missing = [n for n in IO_URING if n not in names]
    if missing:
        die(f"{unit_path}: the filter does not allow {', '.join(missing)}")
    return {
        "comment": "ringpolicyd: systemd 252's @system-service plus io_uring_setup, "
                   "io_uring_enter and io_uring_register, less @privileged: the set "
                   "deploy/systemd/ringpolicyd.service allows. Generated by "
                   "deploy/check/syscalls.py gen-profile; deploy/check.sh checks that the "
                   "two agree.",
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": sorted(names), "action": "SCMP_ACT_ALLOW"}],
    }


def main(argv):
    if len(argv) >= 3 and argv[1] == "unit-allow":
        print("\n".join(sorted(unit_allow(argv[2]))))
    elif len(argv) >= 3 and argv[1] == "profile-allow":
        print("\n".join(sorted(profile_allow(argv[2]))))
    elif len(argv) == 3 and argv[1] == "gen-profile":
        print(json.dumps(gen_profile(argv[2]), indent=2))
    elif len(argv) == 5 and argv[1] == "gen-profile" and argv[3] == "--check":
        want = set(gen_profile(argv[2])["syscalls"][0]["names"])
        have = profile_allow(argv[4])
        if want != have:
            print(f"{argv[4]} and {argv[2]} allow different system calls:", file=sys.stderr)
            for n in sorted(want - have):
                print(f"  only the unit allows {n}", file=sys.stderr)
            for n in sorted(have - want):
                print(f"  only the profile allows {n}", file=sys.stderr)
            print(f"regenerate: python3 deploy/check/syscalls.py gen-profile {argv[2]} > "
                  f"{argv[4]}", file=sys.stderr)
            return 1
    else:
        die("usage: syscalls.py unit-allow UNIT | profile-allow PROFILE | "
            "gen-profile UNIT [--check PROFILE]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
