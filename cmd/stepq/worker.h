/*
 * worker.h - the pieces of `stepq worker`: one slot per running child
 * (worker_child.c) and the event loop that claims, heartbeats, reaps and
 * reports (cmd_worker.c).
 */
#ifndef STEPQ_WORKER_H
#define STEPQ_WORKER_H

#include <sys/types.h>
#include <hiredis/sds.h>

#include "stepq.h"

#define WORKER_OUT_CAP (64 * 1024) /* bytes of stdout kept for the result */

enum slot_state {
    SLOT_FREE = 0,
    SLOT_RUNNING, /* the child runs, or its stdout is still open */
    SLOT_DONE,    /* ended; its end waits to be reported (Redis was away) */
};

/* Why the worker stopped a child before it ended by itself. */
enum slot_kill {
    KILL_NONE = 0,
    KILL_TIMEOUT, /* --timeout passed: fail the attempt */
    KILL_STALE,   /* the step was taken from us (reaped, cancelled): do not report */
    KILL_DRAIN,   /* the SIGTERM grace period ran out: deregister requeues it */
};

struct slot {
    enum slot_state state;
    char id[STEPQ_STEP_ID_MAX]; /* a legacy step's id may be long */
    char token[72];
    char type[STEPQ_ID_MAX];
    long attempt;
    pid_t pid;                 /* also the child's process group */
    int out_fd, in_fd, err_fd; /* -1 once closed */
    sds payload;               /* what is left to write to the child's stdin */
    sds tail;                  /* the last output (progress lines excluded) */
    sds line;                  /* the line being assembled */
    sds last;                  /* the last complete line that was not progress */
    long long started, deadline, term_at, kill_at, exited_at, report_at;
    int exited, status, exec_errno;
    enum slot_kill killed;
    int lane;       /* the namespace its step came from (cmd_worker.c) */
    const char *ns; /* that namespace, STEPQ_NAMESPACE of the command; NULL: none */
};

/* A `progress N [message]` line; called for each one the child prints. */
typedef void (*slot_progress_fn)(struct slot *s, long percent, const char *msg, void *arg);

/*
 * Starts argv[0] (PATH lookup, no shell) for the step in `s` (id, type,
 * attempt and payload set by the caller) in its own process group, with the
 * payload on stdin, stdout on a pipe and STEPQ_STEP_ID, STEPQ_STEP_TYPE,
 * STEPQ_ATTEMPT (and STEPQ_NAMESPACE when s->ns is set) in its environment. Returns 0, or -1 with
 * errno set.
 */
int slot_spawn(struct slot *s, char *const *argv);

/* Lets the secret variable `name` through to the children (--pass-env):
 * by default slot_spawn leaves out STEPQ_API_TOKEN, STEPQ_REDIS_PASSWORD,
 * STEPQ_REDIS_PASSWORD_FILE and a REDIS_URL holding a password. Returns 0,
 * or -1 when too many names were given. */
int slot_env_pass(const char *name);

/* Reads what the child printed, without blocking; calls fn for each progress
 * line. Closes stdout at its end. */
void slot_read(struct slot *s, slot_progress_fn fn, void *arg);
/* Writes more of the payload, without blocking; closes stdin when all is
 * written or the child stopped reading. */
void slot_write(struct slot *s);
/* Records the child's exit (from waitpid) and whether exec failed. */
void slot_exited(struct slot *s, int status, long long now);
/* Signals the child's whole process group. */
void slot_signal(const struct slot *s, int sig);
/* Starts stopping the child: SIGTERM now, SIGKILL after grace_ms. */
void slot_stop(struct slot *s, enum slot_kill why, long long now, long grace_ms);

/* Whether the attempt succeeded, and its result (a new sds): the last line
 * when it is JSON, else the output tail. On failure, the reason. */
int slot_outcome(const struct slot *s, const char *cmd, sds *ret_text);
/* Makes a zeroed slot FREE, with no descriptors. */
void slot_init(struct slot *s);
/* Closes what is open and frees the buffers; the slot is FREE again. */
void slot_release(struct slot *s);

#endif
