#!/usr/bin/env python3
"""container_check.py: check deploy/container/Containerfile without building it (the image
registry is not reachable from CI), for deploy/check.sh.

  container_check.py REPO [BINARY]...

Checks, each printed as one line:
  1. both stages start FROM Debian 12 (the toolchain every test runs on);
  2. every COPY source (without --from) exists in the repository, and every directory the top
     meson.build enters with subdir() is copied (else `meson setup` fails in the image);
  3. every package named in an apt-get install exists in this machine's Debian 12 lists;
  4. the build stage installs the package that provides each meson dependency()
     (pkg-config name → .pc file → package) and cc.find_library() (lib*.so → package);
  5. with BINARY (the built ringpolicyd, ringpolicyd-client): the runtime stage installs the
     package of every shared library they need (readelf NEEDED → ldconfig → package);
  6. what deploy/kubernetes expects of the image: the reloader path, the numeric USER equal to
     the pods' runAsUser, the ENTRYPOINT's daemon.
Exit status 0 when all hold, 1 when one does not, 2 on bad usage. Needs dpkg, apt-cache,
pkg-config and readelf (binutils), which the build machine has.
"""
import glob
import os
import re
import shlex
import subprocess
import sys

problems = []


def problem(msg):
    problems.append(msg)
    print(f"  FAIL {msg}")


def ok(msg):
    print(f"  ok   {msg}")


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return r.returncode, r.stdout


def instructions(path):
    """(stage index, INSTRUCTION, argument text) with continuation lines joined."""
    out, stage, buf = [], -1, ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            text = (buf + line).strip()
            buf = ""
            word, _, rest = text.partition(" ")
            word = word.upper()
            if word == "FROM":
                stage += 1
            out.append((stage, word, rest.strip()))
    return out


def apt_packages(run_arg):
    """Package names of `apt-get install` commands in a RUN argument."""
    pkgs = []
    for cmd in re.split(r"&&|;", run_arg):
        words = shlex.split(cmd)
        if "apt-get" in words and "install" in words:
            after = words[words.index("install") + 1:]
            pkgs += [w for w in after if not w.startswith("-") and "=" not in w]
    return pkgs


def check_from(ins, args):
    for stage, word, rest in ins:
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = args.get(image.strip("${}"), image) if image.startswith("$") else image
        if re.search(r"(^|/)debian:(12|bookworm)([-.].*)?$", image):
            ok(f"stage {stage}: FROM {image}")
        else:
            problem(f"stage {stage}: FROM {image} is not Debian 12")


def check_copies(ins, repo):
    copied = set()
    for _, word, rest in ins:
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for src in parts[:-1]:
            copied.add(src.rstrip("/"))
            if not os.path.exists(os.path.join(repo, src)):
                problem(f"COPY {src}: not in the repository")
    with open(os.path.join(repo, "meson.build"), encoding="utf-8") as f:
        subdirs = re.findall(r"^\s*subdir\('([^']+)'\)", f.read(), re.M)
    missing = [d for d in subdirs if d not in copied]
    for d in missing:
        problem(f"meson.build enters {d}/, which the Containerfile does not copy")
    if not missing:
        ok(f"COPY sources exist; meson's subdirs {', '.join(subdirs)} are copied")


def check_exist(stage_pkgs):
    for stage, pkgs in stage_pkgs.items():
        rc, out = run("apt-cache", "show", "--no-all-versions", *pkgs)
        found = set(re.findall(r"^Package: (\S+)", out, re.M))
        for p in pkgs:
            if p not in found:
                problem(f"stage {stage}: package {p} is not in Debian's lists (apt-get update?)")
        if rc == 0 and found >= set(pkgs):
            ok(f"stage {stage}: all {len(pkgs)} packages exist")


def owner(path):
    """The package that ships `path`: the name as given first (a lib*.so symlink belongs to the
    -dev package, its target to the library package), then with symlinks and /usr merge
    resolved."""
    path = os.path.normpath(path)
    for p in (path, os.path.realpath(path), "/usr" + path if path.startswith("/lib") else None):
        if p:
            rc, out = run("dpkg", "-S", p)
            if rc == 0:
                return out.split(":")[0].strip()
    return None


def meson_requirements(repo):
    """(what, file that provides it) for the required dependencies of every meson.build."""
    reqs = []
    for mb in glob.glob(os.path.join(repo, "**", "meson.build"), recursive=True):
        rel = os.path.relpath(mb, repo)
        if rel.startswith("build") or "/node_modules/" in rel:
            continue
        with open(mb, encoding="utf-8") as f:
            text = f.read()
        for call, name, tail in re.findall(r"(dependency|find_library)\('([^']+)'([^)]*)\)", text):
            if "required : false" in tail.replace("required: false", "required : false"):
                continue
            if call == "dependency":
                if name in ("threads",):
                    continue
                rc, out = run("pkg-config", "--path", name)
                reqs.append((f"dependency('{name}')", out.strip() if rc == 0 else None))
            else:
                rc, out = run("gcc", f"-print-file-name=lib{name}.so")
                path = out.strip()
                reqs.append((f"find_library('{name}')", path if os.path.isabs(path) else None))
    return reqs


def check_build_deps(repo, build_pkgs):
    bad = 0
    for what, path in meson_requirements(repo):
        pkg = owner(path) if path else None
        if not pkg:
            problem(f"{what}: not installed on this machine, cannot tell its package")
            bad += 1
        elif pkg not in build_pkgs:
            problem(f"{what}: the build stage does not install {pkg}")
            bad += 1
    if not bad:
        ok("the build stage installs the package of every required meson dependency")


def check_runtime_libs(binaries, runtime_pkgs):
    bad = 0
    for b in binaries:
        rc, out = run("readelf", "-d", b)
        if rc != 0:
            problem(f"{b}: readelf failed")
            bad += 1
            continue
        for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out):
            rc, cache = run("ldconfig", "-p")
            m = re.search(rf"^\s*{re.escape(lib)} \(([^)]*)\) => (\S+)", cache, re.M)
            pkg = owner(m.group(2)) if m else None
            if pkg in ("libc6", "libgcc-s1"):
                continue  # in every Debian image
            if not pkg:
                problem(f"{os.path.basename(b)} needs {lib}, whose package is unknown")
                bad += 1
            elif pkg.split(":")[0] not in runtime_pkgs:
                problem(f"{os.path.basename(b)} needs {lib} ({pkg}): not installed in the runtime stage")
                bad += 1
    if binaries and not bad:
        ok("the runtime stage installs the package of every library the binaries need")


def check_manifest_match(ins, repo):
    text = open(os.path.join(repo, "deploy/kubernetes/base/deployment.yaml"), encoding="utf-8").read()
    users = set(re.findall(r"runAsUser: (\d+)", text))
    user = [rest for _, w, rest in ins if w == "USER"]
    if not user or not re.fullmatch(r"\d+:\d+", user[-1]):
        problem(f"USER {user[-1] if user else '(none)'}: must be numeric uid:gid")
    elif users != {user[-1].split(":")[0]}:
        problem(f"USER {user[-1]} but the pods run as {sorted(users)}")
    else:
        ok(f"USER {user[-1]} is the pods' runAsUser")
    reloader = re.search(r'command: \["(/usr/libexec/[^"]+)"\]', text)
    copies = " ".join(rest for _, w, rest in ins if w == "COPY")
    if not reloader or reloader.group(1) not in copies:
        problem("the reloader command of deployment.yaml is not copied into the image")
    else:
        ok(f"{reloader.group(1)} is installed")
    entry = [rest for _, w, rest in ins if w == "ENTRYPOINT"]
    if not entry or "/usr/bin/ringpolicyd" not in entry[-1]:
        problem("ENTRYPOINT does not run /usr/bin/ringpolicyd (the manifests pass only args)")


def main(argv):
    if len(argv) < 2:
        print("usage: container_check.py REPO [BINARY]...", file=sys.stderr)
        return 2
    repo, binaries = argv[1], argv[2:]
    path = os.path.join(repo, "deploy/container/Containerfile")
    ins = instructions(path)
    args = {}
    for _, w, rest in ins:
        if w == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    stage_pkgs = {}
    for stage, w, rest in ins:
        if w == "RUN":
            stage_pkgs.setdefault(stage, []).extend(apt_packages(rest))
    if len(stage_pkgs) != 2:
        problem(f"wanted apt-get install in the build and the runtime stage, found {len(stage_pkgs)}")
        return 1
    check_from(ins, args)
    check_copies(ins, repo)
    check_exist(stage_pkgs)
    check_build_deps(repo, set(stage_pkgs[0]))
    check_runtime_libs(binaries, set(stage_pkgs[max(stage_pkgs)]))
    check_manifest_match(ins, repo)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
