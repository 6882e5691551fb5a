/*
 * eng/proc.h: process set-up for daemons: detaching, pid files, privilege drop, chroot.
 *
 * Main thread only, before eng_run (no shard thread may exist: fork would lose them). Every
 * function returns 0 or -errno and writes one actionable sentence into err.
 */
#ifndef ENG_PROC_H
#define ENG_PROC_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Detach: fork, setsid, fork again, chdir("/"), stdin/stdout/stderr to /dev/null. Returns in
 * the grandchild only. The original process waits for the daemon's eng_proc_ready: it exits 0
 * when start-up succeeded, and 1 after writing the failure to its standard error when it failed
 * or the daemon exited first (so `ringpolicyd` without -f reports what went wrong and its exit
 * status says whether a daemon is running). */
int eng_proc_daemonize(char *err, size_t err_len);

/* In the daemon after eng_proc_daemonize, once start-up is over (pid file written, privileges
 * dropped): ok, or the reason it failed, for the waiting original process. Once; a no-op
 * without eng_proc_daemonize. */
void eng_proc_ready(bool ok, const char *failure);

/* Creates path with this process's pid. If the file names another running process, fails with
 * -EEXIST ("... is running with pid N"); a stale file is overwritten. */
int eng_proc_pidfile_create(const char *path, char *err, size_t err_len);
/* Removes path if it still holds this process's pid. */
void eng_proc_pidfile_remove(const char *path);

/* Enter chroot_dir (if non-NULL/non-empty), then switch to group(s) and user (each may be NULL
 * or empty = unchanged). groups: names or numeric ids separated by spaces or commas; the first
 * is the primary group, all become supplementary groups. A process that is not root and already
 * runs as the user and group(s) asked for (e.g. started by systemd with User= and Group=) keeps
 * them: nothing is switched. */
int eng_proc_drop_privileges(const char *user, const char *groups, const char *chroot_dir,
                             char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
