/*
 * worker_child.c - one child of `stepq worker`: fork/exec without a shell,
 * the payload on stdin, stdout read line by line (progress lines, the
 * result), and stopping it with its whole process group.
 *
 * The parent never blocks on a child: stdin and stdout are non-blocking
 * pipes served by the worker's poll() loop, so a child that never reads its
 * stdin, or prints a lot, cannot stall the others.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <jansson.h>

#include "worker.h"

#define LINE_CAP WORKER_OUT_CAP /* a longer line is cut into pieces */

static int set_flags(int fd, int cloexec, int nonblock)
{
    int fl = fcntl(fd, F_GETFD);

    if (fl < 0 || fcntl(fd, F_SETFD, cloexec ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC)) < 0)
        return -1;
    if (!nonblock)
        return 0;
    fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* A pipe whose both ends close on exec (the child dup2()s what it needs). */
static int cloexec_pipe(int p[2])
{
    if (pipe(p) != 0)
        return -1;
    if (set_flags(p[0], 1, 0) != 0 || set_flags(p[1], 1, 0) != 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * The child's environment: the worker's, less its secrets. A step's command
 * is often someone else's code; it gets what it needs to run, not the keys
 * to the queue or the API.
 * ------------------------------------------------------------------------- */
#define ENV_PASS_MAX 8
static const char *env_pass[ENV_PASS_MAX];
static int env_npass;

int slot_env_pass(const char *name)
{
    if (env_npass == ENV_PASS_MAX)
        return -1;
    env_pass[env_npass++] = name;
    return 0;
}

static int env_passed(const char *name)
{
    for (int i = 0; i < env_npass; i++) {
        if (strcmp(env_pass[i], name) == 0)
            return 1;
    }
    return 0;
}

/* Whether a Redis URL carries a password: user info with a ':' (or, in the
 * old form redis://secret@host, any user info). */
static int url_has_password(const char *url)
{
    const char *p = strstr(url, "://"), *at, *slash;

    if (p == NULL)
        return 0;
    p += 3;
    slash = strchr(p, '/');
    at = memchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
    return at != NULL && at > p;
}

/* In the child, after fork (single-threaded: unsetenv is safe). */
static void scrub_env(void)
{
    static const char *const secrets[] = {"STEPQ_API_TOKEN", "STEPQ_REDIS_PASSWORD",
                                          "STEPQ_REDIS_PASSWORD_FILE"};
    const char *url = getenv("REDIS_URL");

    for (size_t i = 0; i < sizeof(secrets) / sizeof(*secrets); i++) {
        if (!env_passed(secrets[i]))
            unsetenv(secrets[i]);
    }
    if (url != NULL && url_has_password(url) && !env_passed("REDIS_URL"))
        unsetenv("REDIS_URL");
}

/* In the child, after fork: never returns. Only the error pipe (kept as fd
 * 3, closed by a successful exec) tells the parent why exec failed. */
static void child_exec(const struct slot *s, char *const *argv, int in, int out, int ep,
                       pid_t parent)
{
    char attempt[24];
    sigset_t none;
    struct rlimit rl;

    setpgid(0, 0);
    /* A worker killed with SIGKILL cannot stop its children, and its steps
     * go to another worker: do not let this copy run on beside that one. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(126);
    if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(ep, 3) < 0)
        _exit(126);
    set_flags(3, 1, 0);
    /* Whatever else the worker holds (its Redis socket, other children's
     * pipes) must not leak into the command. */
    long max =
        getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (long)rl.rlim_cur : 65536;
    for (long fd = 4; fd < max; fd++)
        close((int)fd);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    snprintf(attempt, sizeof(attempt), "%ld", s->attempt);
    scrub_env();
    /* The worker is single-threaded, so setenv after fork is safe. */
    if (setenv("STEPQ_STEP_ID", s->id, 1) != 0 || setenv("STEPQ_STEP_TYPE", s->type, 1) != 0 ||
        setenv("STEPQ_ATTEMPT", attempt, 1) != 0 ||
        (s->ns != NULL && setenv("STEPQ_NAMESPACE", s->ns, 1) != 0))
        _exit(126);
    execvp(argv[0], argv);
    int e = errno;
    if (write(3, &e, sizeof(e)) < 0)
        _exit(127);
    _exit(127);
}

int slot_spawn(struct slot *s, char *const *argv)
{
    int in[2], out[2], ep[2], e;
    pid_t parent = getpid();

    s->out_fd = s->in_fd = s->err_fd = -1;
    if (cloexec_pipe(in) != 0)
        return -1;
    if (cloexec_pipe(out) != 0)
        goto out_close_in;
    if (cloexec_pipe(ep) != 0)
        goto out_close_out;
    s->pid = fork();
    if (s->pid < 0)
        goto out_close_ep;
    if (s->pid == 0)
        child_exec(s, argv, in[0], out[1], ep[1], parent);
    /* Both sides set the group, so a kill right after fork reaches it. */
    setpgid(s->pid, s->pid);
    close(in[0]);
    close(out[1]);
    close(ep[1]);
    s->in_fd = in[1];
    s->out_fd = out[0];
    s->err_fd = ep[0];
    set_flags(s->in_fd, 1, 1);
    set_flags(s->out_fd, 1, 1);
    set_flags(s->err_fd, 1, 1);
    s->state = SLOT_RUNNING;
    return 0;

out_close_ep:
    e = errno;
    close(ep[0]);
    close(ep[1]);
    errno = e;
out_close_out:
    e = errno;
    close(out[0]);
    close(out[1]);
    errno = e;
out_close_in:
    e = errno;
    close(in[0]);
    close(in[1]);
    errno = e;
    return -1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* `progress N [message]`, N a whole number 0..100. */
static int parse_progress(const char *line, long *pct, const char **msg)
{
    char *end;

    if (strncmp(line, "progress ", 9) != 0)
        return 0;
    errno = 0;
    long v = strtol(line + 9, &end, 10);
    if (end == line + 9 || errno != 0 || v < 0 || v > 100 || (*end != '\0' && *end != ' '))
        return 0;
    *pct = v;
    *msg = *end == ' ' ? end + 1 : "";
    return 1;
}

/* One line of output, without its newline. */
static void take_line(struct slot *s, slot_progress_fn fn, void *arg)
{
    long pct;
    const char *msg;

    if (parse_progress(s->line, &pct, &msg)) {
        fn(s, pct, msg, arg);
    } else {
        s->tail = sdscatlen(s->tail, s->line, sdslen(s->line));
        s->tail = sdscatlen(s->tail, "\n", 1);
        s->last = sdscpylen(s->last, s->line, sdslen(s->line));
        /* Keep the tail bounded; trim in big steps so it stays cheap. */
        if (sdslen(s->tail) > 2 * WORKER_OUT_CAP)
            sdsrange(s->tail, (ssize_t)(sdslen(s->tail) - WORKER_OUT_CAP), -1);
    }
    sdsclear(s->line);
}

static void take_bytes(struct slot *s, const char *buf, size_t n, slot_progress_fn fn, void *arg)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            take_line(s, fn, arg);
            continue;
        }
        /* NUL would cut the text short in Redis' eyes; show it. */
        char c = buf[i] == '\0' ? '?' : buf[i];
        s->line = sdscatlen(s->line, &c, 1);
        if (sdslen(s->line) >= LINE_CAP)
            take_line(s, fn, arg);
    }
}

void slot_read(struct slot *s, slot_progress_fn fn, void *arg)
{
    char buf[8192];

    while (s->out_fd >= 0) {
        ssize_t n = read(s->out_fd, buf, sizeof(buf));
        if (n > 0) {
            take_bytes(s, buf, (size_t)n, fn, arg);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        close_fd(&s->out_fd);
        if (sdslen(s->line) > 0)
            take_line(s, fn, arg);
    }
}

void slot_write(struct slot *s)
{
    while (s->in_fd >= 0 && sdslen(s->payload) > 0) {
        ssize_t n = write(s->in_fd, s->payload, sdslen(s->payload));
        if (n > 0) {
            sdsrange(s->payload, n, -1);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EPIPE: the child closed its stdin; it did not want it */
    }
    close_fd(&s->in_fd);
}

void slot_exited(struct slot *s, int status, long long now)
{
    int e = 0;

    s->exited = 1;
    s->status = status;
    s->exited_at = now;
    if (s->err_fd >= 0 && read(s->err_fd, &e, sizeof(e)) == (ssize_t)sizeof(e))
        s->exec_errno = e;
    close_fd(&s->err_fd);
    /* A stopped child's grandchildren go with it, even if they ignored
     * SIGTERM. */
    if (s->killed != KILL_NONE)
        slot_signal(s, SIGKILL);
    /* Nobody reads the rest of the payload any more. */
    close_fd(&s->in_fd);
}

void slot_signal(const struct slot *s, int sig)
{
    if (s->pid > 0)
        kill(-s->pid, sig);
}

void slot_stop(struct slot *s, enum slot_kill why, long long now, long grace_ms)
{
    if (s->state != SLOT_RUNNING || s->exited || s->killed != KILL_NONE)
        return;
    s->killed = why;
    s->term_at = now;
    s->kill_at = now + grace_ms;
    slot_signal(s, SIGTERM);
}

static sds strip_newline(sds t)
{
    size_t n = sdslen(t);

    if (n > 0 && t[n - 1] == '\n')
        sdsrange(t, 0, (ssize_t)n - 2);
    return t;
}

int slot_outcome(const struct slot *s, const char *cmd, sds *ret_text)
{
    if (s->exec_errno != 0) {
        *ret_text = sdscatprintf(sdsempty(), "cannot run '%s': %s; check the command and PATH", cmd,
                                 strerror(s->exec_errno));
        return 0;
    }
    if (s->killed == KILL_TIMEOUT) {
        *ret_text = sdscatprintf(sdsempty(), "timed out after %.1f s; the command was killed",
                                 (double)(s->deadline - s->started) / 1000.0);
        return 0;
    }
    if (WIFSIGNALED(s->status)) {
        *ret_text = sdscatprintf(sdsempty(), "killed by signal %d (%s)", WTERMSIG(s->status),
                                 strsignal(WTERMSIG(s->status)));
        return 0;
    }
    if (!WIFEXITED(s->status) || WEXITSTATUS(s->status) != 0) {
        sds t = sdscatprintf(sdsempty(), "exit status %d",
                             WIFEXITED(s->status) ? WEXITSTATUS(s->status) : -1);
        if (sdslen(s->last) > 0)
            t = sdscatprintf(t, ": %.512s", s->last);
        *ret_text = t;
        return 0;
    }
    json_t *j = sdslen(s->last) > 0 ? json_loads(s->last, JSON_DECODE_ANY, NULL) : NULL;
    if (j != NULL) {
        json_decref(j);
        *ret_text = sdsdup(s->last);
        return 1;
    }
    size_t n = sdslen(s->tail);
    size_t from = n > WORKER_OUT_CAP ? n - WORKER_OUT_CAP : 0;
    *ret_text = strip_newline(sdsnewlen(s->tail + from, n - from));
    return 1;
}

void slot_release(struct slot *s)
{
    close_fd(&s->in_fd);
    close_fd(&s->out_fd);
    close_fd(&s->err_fd);
    sdsfree(s->payload);
    sdsfree(s->tail);
    sdsfree(s->line);
    sdsfree(s->last);
    slot_init(s);
}

void slot_init(struct slot *s)
{
    memset(s, 0, sizeof(*s));
    s->in_fd = s->out_fd = s->err_fd = -1;
    s->state = SLOT_FREE;
}
