#!/usr/bin/env python3
"""split.py MODE BUILD_DIR [TEST...]: how .ci/run splits the suite for its sanitizer builds.

The integration, differential and fault tests are black-box programs (tests/integration/**/
itest_*) that start the daemon, its client and plugins and talk to them over sockets. Under a
sanitizer it is those products that must run instrumented, not the test programs: .ci/run builds
the products and the in-process tests in the sanitizer build, and runs the test programs of the
plain build against that build's products (RPD_PRODUCT_ROOT, tests/integration/harness.cpp).

Modes (BUILD_DIR is a configured meson build directory):
  targets   the build targets (paths relative to BUILD_DIR) of everything but the black-box
            test programs: the products, bench tools, test plugins and every in-process test
  products  only what the black-box tests run: targets outside tests/, and the test plugins
            (shared modules) under tests/integration
  intree    the tests that run in BUILD_DIR itself: every test whose program is not a
            black-box test program (unit tests, in-process integration tests, script checks)
  drivers   the tests whose program is a black-box test program (run from the plain build)
  deps      the build targets the named tests run and depend on
With TEST names after the mode, intree and drivers keep only those tests (unknown names fail).
"""
import json
import os
import subprocess
import sys


def intro(what, root):
    return json.loads(subprocess.check_output(["meson", "introspect", what, root]))


def is_driver(path, root):
    itdir = os.path.join(root, "tests", "integration") + os.sep
    base = os.path.basename(path)
    # it_lsan checks the sanitizer build's own daemon for its runtime: it runs in that build.
    return path.startswith(itdir) and base.startswith("itest_") and base != "itest_it_lsan"


def main():
    mode, root, want = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3:]
    out = []
    if mode in ("targets", "products"):
        tests_dir = os.path.join(root, "tests") + os.sep
        itdir = os.path.join(root, "tests", "integration") + os.sep
        for t in intro("--targets", root):
            for f in t["filename"]:
                if mode == "targets" and t["type"] == "executable" and is_driver(f, root):
                    continue
                if mode == "products" and f.startswith(tests_dir) and not (
                        t["type"] == "shared module" and f.startswith(itdir)):
                    continue
                out.append(os.path.relpath(f, root))
        print(" ".join(sorted(out)))
        return
    if mode == "deps":
        files = {t["id"]: t["filename"] for t in intro("--targets", root)}
        names = set(want)
        for t in intro("--tests", root):
            if t["name"] in names:
                names.discard(t["name"])
                for i in t["depends"]:
                    out += [os.path.relpath(f, root) for f in files.get(i, [])]
        if names:
            sys.exit("split.py: no such test: " + " ".join(sorted(names)))
        print(" ".join(sorted(set(out))))
        return
    if mode not in ("intree", "drivers"):
        sys.exit("split.py: unknown mode " + mode)
    names = set(want)
    for t in intro("--tests", root):
        if names and t["name"] not in names:
            continue
        names.discard(t["name"])
        if is_driver(t["cmd"][0], root) == (mode == "drivers"):
            out.append(t["name"])
    if names:
        sys.exit("split.py: no such test: " + " ".join(sorted(names)))
    print("\n".join(dict.fromkeys(out)))


if __name__ == "__main__":
    main()
