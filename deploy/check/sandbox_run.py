#!/usr/bin/python3
"""sandbox_run.py: run a command under a seccomp allow-list, as systemd or a container runtime
would, so deploy/check.sh can run ringpolicyd under the exact system call set of the systemd
unit or of the Kubernetes seccomp profile.

  sandbox_run.py [--kill] [--deny NAME]... ALLOWFILE -- COMMAND [ARG]...

ALLOWFILE has one system call name per line (syscalls.py prints these). Calls outside it fail
with EPERM, as under the unit's SystemCallErrorNumber=EPERM and the profile's
defaultErrnoRet 1; with --kill they kill the process instead (SIGSYS), which is how the check
proves that nothing outside the list is ever called. --deny removes a name from the list (used
to show what happens when a runtime's default profile blocks io_uring).

Needs Debian's python3-seccomp (libseccomp's binding), hence /usr/bin/python3. Names this
libseccomp does not know on this architecture are skipped, as runc does. Sets no_new_privs
(the unit's NoNewPrivileges=yes; a runtime always does). Exit status 2 on bad usage.
"""
import os
import sys

try:
    import seccomp
except ImportError:
    print("sandbox_run.py: needs python3-seccomp (apt-get install python3-seccomp)",
          file=sys.stderr)
    sys.exit(2)


def main(argv):
    kill = False
    deny = set()
    args = argv[1:]
    while args and args[0].startswith("--") and args[0] != "--":
        if args[0] == "--kill":
            kill = True
            args = args[1:]
        elif args[0] == "--deny" and len(args) > 1:
            deny.add(args[1])
            args = args[2:]
        else:
            break
    if len(args) < 3 or args[1] != "--":
        print("usage: sandbox_run.py [--kill] [--deny NAME]... ALLOWFILE -- COMMAND [ARG]...",
              file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        names = {line.strip() for line in f if line.strip()} - deny
    default = seccomp.KILL_PROCESS if kill else seccomp.ERRNO(1)
    filt = seccomp.SyscallFilter(default)
    for name in sorted(names):
        try:
            filt.add_rule(seccomp.ALLOW, name)
        except (ValueError, RuntimeError, OSError):
            pass  # not a system call of this architecture
    filt.set_attr(seccomp.Attr.CTL_NNP, 1)
    filt.load()
    os.execvp(args[2], args[2:])
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
