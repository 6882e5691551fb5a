/*
 * proc.c: daemon process set-up: detach, pid file, chroot and privilege drop (spec 3: user,
 * group, pid_file, chroot).
 *
 * Main thread only, before eng_run. Every function returns 0 or -errno with one sentence in err.
 * The pid file is checked and written under an flock, so two daemons started at once cannot both
 * win; a file naming a live process (kill(pid, 0) succeeds or fails with EPERM) is refused, a
 * stale one overwritten. Privileges: names are resolved before chroot (the passwd and group
 * files are usually outside it), then chroot, then groups, then the user. With a user but no
 * group, the user's primary group and its supplementary groups (initgroups) are taken, so root's
 * groups never survive the drop; a process that is not root and already has the user and groups
 * asked for keeps them. Detaching leaves the original process waiting on a pipe for the daemon's
 * eng_proc_ready, so that its exit status and standard error tell how start-up went. Known limit: a
 * recycled pid of an unrelated process makes a stale pid file look live, as in mtpolicyd
 * (Net::Server).
 */
#include "eng/proc.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include "internal.h"

#define ENG_PROC_GROUPS_MAX 64

/* Fills err with "<what>: <strerror(errno)>" and returns -errno. */
static int sys_fail(char *err, size_t err_len, const char *what)
{
    int rc = -errno;
    snprintf(err, err_len, "%s: %s", what, strerror(errno));
    return rc;
}

/* The daemon's end of the readiness pipe, -1 when there is none (or it was used). */
static int g_ready_fd = -1;

/* The original process: waits for the daemon's verdict ('0', or '1' and a message; nothing if
 * it exited first) and exits with it. */
static _Noreturn void ready_wait(int fd)
{
    char buf[1024];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (len += (size_t)n) == sizeof(buf) - 1)
            break;
    }
    if (len > 0 && buf[0] == '0')
        _exit(0);
    buf[len] = '\0';
    if (len > 1)
        fprintf(stderr, "%s\n", buf + 1);
    else
        fprintf(stderr, "the daemon exited during start-up\n");
    _exit(1);
}

void eng_proc_ready(bool ok, const char *failure)
{
    if (g_ready_fd < 0)
        return;
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "%c%s", ok ? '0' : '1', ok || !failure ? "" : failure);
    size_t len = n < 0 ? 1 : (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    if (write(g_ready_fd, buf, len) < 0) {
        /* The original process is gone: nobody to tell. */
    }
    close(g_ready_fd);
    g_ready_fd = -1;
}

int eng_proc_daemonize(char *err, size_t err_len)
{
    fflush(stdout);
    fflush(stderr);
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return sys_fail(err, err_len, "cannot detach: pipe");
    /* Fork twice with setsid between: the daemon is no session leader and can never acquire a
     * controlling terminal again. */
    for (int round = 0; round < 2; round++) {
        pid_t pid = fork();
        if (pid < 0) {
            int rc = sys_fail(err, err_len, "cannot detach: fork");
            if (round == 0) {
                close(ready[0]);
                close(ready[1]);
            }
            return rc;
        }
        if (pid > 0 && round == 0) {
            close(ready[1]);
            ready_wait(ready[0]);
        }
        if (pid > 0)
            _exit(0);
        if (round == 0) {
            close(ready[0]);
            if (setsid() < 0)
                return sys_fail(err, err_len, "cannot detach: setsid");
        }
    }
    g_ready_fd = ready[1];
    if (chdir("/") < 0)
        return sys_fail(err, err_len, "cannot detach: chdir /");
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return sys_fail(err, err_len, "cannot detach: /dev/null");
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
    eng_log_after_fork();
    return 0;
}

/* The pid in an open pid file, or 0. */
static long pidfile_read_fd(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && (end == buf + n || isspace((unsigned char)*end)) ? pid : 0;
}

int eng_proc_pidfile_create(const char *path, char *err, size_t err_len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = -errno;
        snprintf(err, err_len, "cannot open pid file %s: %s", path, strerror(errno));
        return rc;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        snprintf(err, err_len, "pid file %s is locked by another process starting up", path);
        return -EEXIST;
    }
    long old = pidfile_read_fd(fd);
    if (old > 0 && old != (long)getpid() && (kill((pid_t)old, 0) == 0 || errno == EPERM)) {
        close(fd);
        snprintf(err, err_len, "pid file %s: another ringpolicyd is running with pid %ld", path,
                 old);
        return -EEXIST;
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    int rc = 0;
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len)
        rc = -errno;
    close(fd); /* releases the lock */
    if (rc < 0)
        snprintf(err, err_len, "cannot write pid file %s: %s", path, strerror(-rc));
    return rc;
}

void eng_proc_pidfile_remove(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    long pid = pidfile_read_fd(fd);
    close(fd);
    if (pid == (long)getpid())
        unlink(path);
}

/* A group name or number. */
static int group_resolve(const char *name, gid_t *out, char *err, size_t err_len)
{
    char *end;
    unsigned long n = strtoul(name, &end, 10);
    if (*name && *end == '\0') {
        *out = (gid_t)n;
        return 0;
    }
    struct group *gr = getgrnam(name);
    if (!gr) {
        snprintf(err, err_len, "unknown group '%s'", name);
        return -ENOENT;
    }
    *out = gr->gr_gid;
    return 0;
}

/* "a b,c" -> gids; the first is the primary group. Returns the count or -errno. */
static int groups_parse(const char *groups, gid_t *gids, char *err, size_t err_len)
{
    int count = 0;
    const char *p = groups;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t len = strcspn(p, " ,\t");
        if (len == 0)
            break;
        if (count == ENG_PROC_GROUPS_MAX) {
            snprintf(err, err_len, "group: more than %d groups", ENG_PROC_GROUPS_MAX);
            return -E2BIG;
        }
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(len < 255 ? len : 255), p);
        int rc = group_resolve(name, &gids[count], err, err_len);
        if (rc < 0)
            return rc;
        count++;
        p += len;
    }
    return count;
}

static int user_resolve(const char *user, uid_t *uid, gid_t *gid, char *name, size_t name_len,
                        char *err, size_t err_len)
{
    char *end;
    unsigned long n = strtoul(user, &end, 10);
    struct passwd *pw = *end == '\0' ? getpwuid((uid_t)n) : getpwnam(user);
    if (!pw && *end != '\0') {
        snprintf(err, err_len, "unknown user '%s'", user);
        return -ENOENT;
    }
    *uid = pw ? pw->pw_uid : (uid_t)n;
    *gid = pw ? pw->pw_gid : (gid_t)n;
    snprintf(name, name_len, "%s", pw ? pw->pw_name : "");
    return 0;
}

/* Not root, and already in primary group gid (real and effective) and every group of
 * gids[0..n): there is nothing to switch, and no right to. */
static bool already_in_groups(gid_t gid, const gid_t *gids, int n)
{
    if (geteuid() == 0 || getgid() != gid || getegid() != gid)
        return false;
    gid_t cur[ENG_PROC_GROUPS_MAX * 4];
    int m = getgroups(ENG_PROC_GROUPS_MAX * 4, cur);
    if (m < 0)
        return false;
    for (int i = 0; i < n; i++) {
        bool found = gids[i] == gid;
        for (int j = 0; j < m && !found; j++)
            found = cur[j] == gids[i];
        if (!found)
            return false;
    }
    return true;
}

static int fail(int rc, char *err, size_t err_len, const char *what, const char *arg)
{
    snprintf(err, err_len, "%s %s: %s", what, arg, strerror(-rc));
    return rc;
}

int eng_proc_drop_privileges(const char *user, const char *groups, const char *chroot_dir,
                             char *err, size_t err_len)
{
    bool have_user = user && user[0];
    bool have_groups = groups && groups[0];
    uid_t uid = 0;
    gid_t user_gid = 0;
    char user_name[256] = "";
    gid_t gids[ENG_PROC_GROUPS_MAX];
    int ngroups = 0;
    int rc;
    if (have_user &&
        (rc = user_resolve(user, &uid, &user_gid, user_name, sizeof(user_name), err, err_len)) < 0)
        return rc;
    if (have_groups && (ngroups = groups_parse(groups, gids, err, err_len)) < 0)
        return ngroups;
    if (chroot_dir && chroot_dir[0]) {
        if (chdir(chroot_dir) < 0 || chroot(chroot_dir) < 0 || chdir("/") < 0)
            return fail(-errno, err, err_len, "cannot chroot to", chroot_dir);
    }
    if (ngroups > 0 && already_in_groups(gids[0], gids, ngroups)) {
        /* e.g. systemd's User= and Group=: keep them */
    } else if (ngroups > 0) {
        if (setgroups((size_t)ngroups, gids) < 0)
            return fail(-errno, err, err_len, "cannot set supplementary groups", groups);
        if (setgid(gids[0]) < 0)
            return fail(-errno, err, err_len, "cannot switch to group", groups);
    } else if (have_user && !already_in_groups(user_gid, NULL, 0)) {
        if ((user_name[0] ? initgroups(user_name, user_gid) : setgroups(1, &user_gid)) < 0 ||
            setgid(user_gid) < 0)
            return fail(-errno, err, err_len, "cannot switch to the groups of user", user);
    }
    if (have_user && !(geteuid() != 0 && getuid() == uid && geteuid() == uid)) {
        if (setuid(uid) < 0)
            return fail(-errno, err, err_len, "cannot switch to user", user);
        if (uid != 0 && setuid(0) == 0) {
            snprintf(err, err_len, "switched to user %s but could regain root", user);
            return -EPERM;
        }
    }
    return 0;
}
