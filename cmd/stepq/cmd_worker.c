/*
 * cmd_worker.c - `stepq worker`: registers, heartbeats, claims the steps it
 * can run and runs a command for each (worker_child.c), reports progress and
 * the end of every attempt, and runs the reaper so that the steps of a worker
 * that died come back without an operator.
 *
 * One thread, one poll() loop: the children's pipes plus a self-pipe that
 * the SIGCHLD/SIGTERM/SIGINT handlers write to. Nothing in the loop waits on
 * a child; Redis calls are short (the library's command timeout) and a lost
 * connection only delays them: running children keep running and their end
 * is reported when Redis is back.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "cli.h"
#include "worker.h"

#define CONCURRENCY_MAX 256
#define REPORT_BATCH    100 /* acks per round trip (stepq_complete_many takes 100) */
#define CAPS_MAX        64
#define KILL_GRACE_MS   2000 /* SIGTERM, then SIGKILL this much later */
#define OUTPUT_WAIT_MS  500  /* how long an exited child's stdout may stay open */
#define IDLE_MIN_MS     50   /* claim back-off when the queue is empty ... */
#define IDLE_MAX_MS     200  /* ... doubling up to this */
#define RETRY_MS        1000 /* after a Redis error */

struct worker {
    stepq *q;
    const char *id;
    const char *caps[CAPS_MAX];
    size_t ncaps;
    char **argv;
    long concurrency, ttl_ms, reap_timeout_ms, timeout_ms, grace_ms;
    long keep_completed, keep_failed; /* caps of the ended sets, held by the reaper */
    struct slot *slots;
    int registered, draining, redis_down;
    int taken_over; /* another process registered our id: we stop (exit 4) */
    long long drain_deadline, next_hb, next_claim, next_reap, idle_ms;
    long claimed, completed, failed, lost;
};

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    unsigned char c = (unsigned char)sig;
    int e = errno;

    if (write(sig_pipe[1], &c, 1) < 0) {
        /* The pipe is full: the loop is awake anyway. */
    }
    errno = e;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wlog(const struct worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void wlog(const struct worker *w, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "stepq worker %s: ", w->id);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* A Redis call failed: connection errors are logged once per outage and
 * retried later; anything else is logged every time. */
static void redis_error(struct worker *w, const char *what)
{
    int e = stepq_err(w->q);

    if (e == STEPQ_E_IO || e == STEPQ_E_EOF) {
        if (!w->redis_down)
            wlog(w, "%s: %s; retrying", what, stepq_errstr(w->q));
        w->redis_down = 1;
        return;
    }
    wlog(w, "%s: %s", what, stepq_errstr(w->q));
}

static void redis_ok(struct worker *w)
{
    if (w->redis_down)
        wlog(w, "redis is back");
    w->redis_down = 0;
}

static long jitter(long ms)
{
    return ms + (long)(random() % (ms / 2 + 1));
}

/* ---------------------------------------------------------------------------
 * Registration, heartbeat, reaper
 * ------------------------------------------------------------------------- */

/* The steps we hold were requeued by someone's reaper: their tokens are
 * stale, and another worker may run them now, so stop our copies. */
/* Is the step still active and held with this slot's token? 1 yes, 0 no,
 * -1 when Redis could not tell (then the slot is left alone: the complete
 * or fail at its end checks the token anyway). */
static int still_held(struct worker *w, const struct slot *s)
{
    char *json = NULL;

    if (stepq_get(w->q, s->id, &json) != STEPQ_OK)
        return stepq_err(w->q) == STEPQ_E_NOTFOUND ? 0 : -1;
    json_t *o = json_loads(json, 0, NULL);
    stepq_str_free(json);
    const char *st = json_string_value(json_object_get(o, "status"));
    const char *tok = json_string_value(json_object_get(o, "token"));
    int held = st && tok && strcmp(st, "active") == 0 && strcmp(tok, s->token) == 0;
    json_decref(o);
    return held;
}

/*
 * The worker was reaped: the steps it held then were requeued, but steps it
 * claimed after the reap (a claim does not need the registration) are still
 * its own. Stop only the commands whose step is no longer held with their
 * token.
 */
static void drop_all_held(struct worker *w, long long now)
{
    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        if ((s->state != SLOT_RUNNING && s->state != SLOT_DONE) || s->killed != KILL_NONE ||
            still_held(w, s) != 0)
            continue;
        if (s->state == SLOT_RUNNING) {
            wlog(w, "step %s was requeued while it ran here; stopping its command", s->id);
            slot_stop(s, KILL_STALE, now, KILL_GRACE_MS);
        } else {
            s->killed = KILL_STALE;
        }
    }
}

/*
 * Another process registered our worker id (it took over a registration
 * whose heartbeat had run out while we were stalled, or after a reap): the
 * id is its now. Stop the commands whose steps it requeued, claim nothing
 * more, let the others finish within the grace, and exit 4 without
 * deregistering (that would release its registration).
 */
static void taken_over(struct worker *w, long long now)
{
    wlog(w, "%s; stopping", stepq_errstr(w->q));
    w->taken_over = 1;
    w->registered = 0;
    drop_all_held(w, now);
    if (!w->draining) {
        w->draining = 1;
        w->drain_deadline = now + w->grace_ms;
    }
}

static void heartbeat(struct worker *w, long long now)
{
    w->next_hb = now + (w->registered ? w->ttl_ms / 3 : RETRY_MS);
    if (w->taken_over)
        return;
    if (!w->registered) {
        if (stepq_worker_register(w->q, w->id, w->caps, w->ncaps, w->ttl_ms) != STEPQ_OK) {
            if (stepq_err(w->q) == STEPQ_E_CONFLICT)
                taken_over(w, now);
            else
                redis_error(w, "register");
            return;
        }
        w->registered = 1;
        w->next_hb = now + w->ttl_ms / 3;
    } else if (stepq_worker_heartbeat(w->q, w->id, w->ttl_ms) != STEPQ_OK) {
        if (stepq_err(w->q) == STEPQ_E_CONFLICT) {
            taken_over(w, now);
            return;
        }
        if (stepq_err(w->q) != STEPQ_E_NOTFOUND) {
            redis_error(w, "heartbeat");
            return;
        }
        wlog(w, "this worker was reaped (no heartbeat in time); registering again");
        w->registered = 0;
        drop_all_held(w, now);
        heartbeat(w, now);
        return;
    }
    redis_ok(w);
    /* Long-running processes show up in `stepq migrate status`. */
    if (stepq_proc_announce(w->q, "worker", w->ttl_ms * 2) != STEPQ_OK)
        redis_error(w, "announce");
}

static void reap(struct worker *w, long long now)
{
    stepq_reap_opts o = {.timeout_ms = w->reap_timeout_ms,
                         .keep_completed = w->keep_completed,
                         .keep_failed = w->keep_failed};
    stepq_reap_result res;

    w->next_reap = now + jitter(w->ttl_ms / 2 < 5000 ? w->ttl_ms / 2 : 5000);
    if (stepq_reap_pass(w->q, &o, &res) != STEPQ_OK) {
        redis_error(w, "reap");
        return;
    }
    if (res.requeued > 0)
        wlog(w, "requeued %ld step(s) of dead workers", res.requeued);
    if (res.stale > 0)
        wlog(w, "dropped %ld stale entr%s (set members whose record says otherwise)", res.stale,
             res.stale == 1 ? "y" : "ies");
}

/* ---------------------------------------------------------------------------
 * Children
 * ------------------------------------------------------------------------- */

static void on_progress(struct slot *s, long pct, const char *msg, void *arg)
{
    struct worker *w = arg;

    if (s->killed != KILL_NONE)
        return;
    if (stepq_progress(w->q, s->id, s->token, pct, msg) == STEPQ_OK) {
        redis_ok(w);
        return;
    }
    int e = stepq_err(w->q);
    if (e == STEPQ_E_CONFLICT || e == STEPQ_E_NOTFOUND) {
        wlog(w, "step %s: %s; stopping its command", s->id, stepq_errstr(w->q));
        slot_stop(s, KILL_STALE, now_ms(), KILL_GRACE_MS);
        return;
    }
    redis_error(w, "progress");
}

/* Takes one claimed step (a JSON object) into a free slot and starts it. */
static void start_step(struct worker *w, struct slot *s, json_t *step, long long now)
{
    json_t *payload = json_object_get(step, "payload");
    char *p = payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    snprintf(s->id, sizeof(s->id), "%s", json_string_value(json_object_get(step, "id")));
    snprintf(s->token, sizeof(s->token), "%s", json_string_value(json_object_get(step, "token")));
    const char *type = json_string_value(json_object_get(step, "type"));
    snprintf(s->type, sizeof(s->type), "%s", type ? type : "default");
    s->attempt = (long)json_integer_value(json_object_get(step, "attempts"));
    s->payload = sdsnew(p ? p : "{}");
    free(p);
    s->tail = sdsempty();
    s->line = sdsempty();
    s->last = sdsempty();
    s->started = now;
    s->deadline = w->timeout_ms > 0 ? now + w->timeout_ms : 0;
    w->claimed++;
    if (slot_spawn(s, w->argv) != 0) {
        char why[160];
        int final = 0;
        snprintf(why, sizeof(why), "cannot start '%s': %s", w->argv[0], strerror(errno));
        wlog(w, "step %s: %s", s->id, why);
        if (stepq_fail(w->q, s->id, s->token, why, &final) != STEPQ_OK)
            redis_error(w, "fail");
        slot_release(s);
        return;
    }
    wlog(w, "step %s (%s, attempt %ld) started, pid %d", s->id, s->type, s->attempt, (int)s->pid);
}

/*
 * Whether the worker can run a claimed step as it is: its id and token are
 * strings it can hand back (no NUL, fit their slots), and its type can go
 * into the environment (a C string: no NUL). Returns 1, or 0 with the
 * reason in why.
 */
static int runnable(json_t *step, char *why, size_t len)
{
    json_t *id = json_object_get(step, "id"), *tok = json_object_get(step, "token");
    json_t *type = json_object_get(step, "type");

    if (!json_is_string(id) || strlen(json_string_value(id)) != json_string_length(id) ||
        json_string_length(id) >= STEPQ_STEP_ID_MAX)
        snprintf(why, len, "its id is not a step id stepq can use");
    else if (!json_is_string(tok) || strlen(json_string_value(tok)) != json_string_length(tok) ||
             json_string_length(tok) >= sizeof(((struct slot *)0)->token))
        snprintf(why, len, "its claim token is malformed");
    else if (type != NULL && !json_is_string(type))
        snprintf(why, len, "its type is not a string");
    else if (type != NULL && strlen(json_string_value(type)) != json_string_length(type))
        snprintf(why, len, "its type holds a NUL byte, which cannot go into STEPQ_STEP_TYPE");
    else
        return 1;
    return 0;
}

/* A claimed step the worker cannot run is failed with the reason (retried
 * until its max attempts, like any failed attempt), never dropped in
 * silence; one whose id or token cannot even be handed back is logged. */
static void refuse_step(struct worker *w, json_t *step, const char *why)
{
    json_t *id = json_object_get(step, "id"), *tok = json_object_get(step, "token");
    int final = 0;

    if (strncmp(why, "its id", 6) == 0 || strncmp(why, "its claim token", 15) == 0) {
        char *shown = id ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
        wlog(w,
             "a claimed step cannot run here and cannot be failed: %s (id %s); it stays held "
             "by this worker until it stops",
             why, shown ? shown : "missing");
        free(shown);
        return;
    }
    const char *sid = json_string_value(id);
    char text[200];
    snprintf(text, sizeof(text), "the worker cannot run it: %s", why);
    wlog(w, "step %s cannot run here: %s; failing it", sid, why);
    if (stepq_fail(w->q, sid, json_string_value(tok), text, &final) != STEPQ_OK) {
        redis_error(w, "fail");
        return;
    }
    w->failed++;
    wlog(w, "step %s failed (%s): %s", sid, final ? "no attempts left" : "will retry", text);
}

static long free_slots(const struct worker *w)
{
    long n = 0;

    for (long i = 0; i < w->concurrency; i++)
        n += w->slots[i].state == SLOT_FREE;
    return n;
}

static void claim(struct worker *w, long long now)
{
    long want = free_slots(w);
    char *json = NULL;

    if (want == 0 || w->draining || !w->registered)
        return;
    if (stepq_claim(w->q, w->id, w->caps, w->ncaps, want, &json) != STEPQ_OK) {
        if (stepq_err(w->q) == STEPQ_E_NOTFOUND) {
            redis_ok(w);
            /* Idle: back off a little, so an empty queue costs little. */
            w->next_claim = now + w->idle_ms;
            w->idle_ms = w->idle_ms * 2 > IDLE_MAX_MS ? IDLE_MAX_MS : w->idle_ms * 2;
        } else {
            redis_error(w, "claim");
            w->next_claim = now + RETRY_MS;
        }
        return;
    }
    redis_ok(w);
    w->idle_ms = IDLE_MIN_MS;
    w->next_claim = now;
    /* Records of the old system may hold any byte: NULs are allowed. */
    json_error_t jerr;
    json_t *a = json_loads(json, JSON_ALLOW_NUL, &jerr), *step;
    size_t i;
    long k = 0;
    stepq_str_free(json);
    if (!json_is_array(a))
        wlog(w,
             "claim: cannot read the steps claimed (%s); they stay held by this worker until "
             "it stops",
             a ? "not an array" : jerr.text);
    json_array_foreach(a, i, step)
    {
        char why[120];
        if (!runnable(step, why, sizeof(why))) {
            refuse_step(w, step, why);
            continue;
        }
        while (k < w->concurrency && w->slots[k].state != SLOT_FREE)
            k++;
        if (k == w->concurrency)
            break; /* cannot happen: we asked for no more than the free slots */
        start_step(w, &w->slots[k], step, now);
    }
    json_decref(a);
}

/* A report failed for the whole call: Redis is away (try again later), or
 * anything else (logged; the slot is freed). Returns -1 to retry, else 0. */
static int report_error(struct worker *w, const char *what)
{
    int e = stepq_err(w->q);

    if (e == STEPQ_E_IO || e == STEPQ_E_EOF) {
        redis_error(w, what);
        return -1;
    }
    wlog(w, "%s: %s", what, stepq_errstr(w->q));
    return 0;
}

/* A step of ours was refused at its end: a stale token (we were reaped
 * meanwhile, or it was cancelled), so it is someone else's now. */
static void report_lost(struct worker *w, const struct slot *s, const char *why)
{
    w->lost++;
    wlog(w, "step %s: cannot report its end: %s", s->id, why);
}

/* Reports a failed attempt. Returns 0 when the slot can be freed, -1 to try
 * again later (Redis is away). */
static int report_fail(struct worker *w, struct slot *s, const char *text)
{
    int final = 0;

    if (stepq_fail(w->q, s->id, s->token, text, &final) == STEPQ_OK) {
        redis_ok(w);
        w->failed++;
        wlog(w, "step %s failed (%s): %s", s->id, final ? "no attempts left" : "will retry", text);
        return 0;
    }
    int e = stepq_err(w->q);
    if (e == STEPQ_E_CONFLICT || e == STEPQ_E_NOTFOUND) {
        report_lost(w, s, stepq_errstr(w->q));
        return 0;
    }
    return report_error(w, "fail");
}

/*
 * Reports the successes of n slots in one round trip (stepq_complete_many):
 * under load many commands end between two looks, and one call for all of
 * them spares Redis a script call each. Each ack gets its own answer; a
 * refused one does not stop the others. Slots whose report is settled are
 * freed; on a connection error all are tried again later.
 */
static void report_completed(struct worker *w, struct slot **who, sds *texts, size_t n,
                             long long now)
{
    stepq_ack acks[REPORT_BATCH];

    for (size_t i = 0; i < n; i++)
        acks[i] = (stepq_ack){.id = who[i]->id, .token = who[i]->token, .result = texts[i]};
    int rc = stepq_complete_many(w->q, acks, n);
    int e = stepq_err(w->q);
    if (rc != STEPQ_OK && e != STEPQ_E_CONFLICT && e != STEPQ_E_NOTFOUND) {
        if (n > 1 && e != STEPQ_E_IO && e != STEPQ_E_EOF) {
            /* The batch was refused whole (a bad ack): one by one, so
             * that one bad ack does not strand the others. */
            for (size_t i = 0; i < n; i++)
                report_completed(w, who + i, texts + i, 1, now);
            return;
        }
        int retry = report_error(w, "complete");
        for (size_t i = 0; i < n; i++) {
            if (retry)
                who[i]->report_at = now + RETRY_MS;
            else
                slot_release(who[i]);
        }
        return;
    }
    redis_ok(w);
    for (size_t i = 0; i < n; i++) {
        if (acks[i].status == STEPQ_E_NONE) {
            w->completed++;
            wlog(w, "step %s completed", who[i]->id);
        } else {
            report_lost(w, who[i],
                        acks[i].status == STEPQ_E_NOTFOUND
                            ? "it no longer exists"
                            : "it is not held with this token any more");
        }
        slot_release(who[i]);
    }
}

/* Reports the ends of the attempts that are due: failures one by one,
 * successes in batches. */
static void report_due(struct worker *w, long long now)
{
    struct slot *who[REPORT_BATCH];
    sds texts[REPORT_BATCH];
    size_t n = 0;

    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        sds text = NULL;
        if (s->state != SLOT_DONE || now < s->report_at)
            continue;
        if (s->killed == KILL_DRAIN && w->taken_over) {
            /* No deregister will requeue it (the id is another's now): its
             * attempt fails, so that it is retried. */
            if (report_fail(w, s, "its worker stopped: another process took the worker id") == 0 ||
                now >= w->drain_deadline)
                slot_release(s); /* one try: the worker is on its way out */
            else
                s->report_at = now + RETRY_MS;
            continue;
        }
        if (s->killed == KILL_STALE || s->killed == KILL_DRAIN) {
            slot_release(s); /* not ours any more, or deregister requeues it */
            continue;
        }
        if (!slot_outcome(s, w->argv[0], &text)) {
            if (report_fail(w, s, text) == 0)
                slot_release(s);
            else
                s->report_at = now + RETRY_MS;
            sdsfree(text);
            continue;
        }
        who[n] = s;
        texts[n++] = text;
        if (n == REPORT_BATCH) {
            report_completed(w, who, texts, n, now);
            while (n > 0)
                sdsfree(texts[--n]);
        }
    }
    if (n > 0)
        report_completed(w, who, texts, n, now);
    while (n > 0)
        sdsfree(texts[--n]);
}

/* Moves children along: timeouts, kills, ends, reports. */
static void tend(struct worker *w, long long now)
{
    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        if (s->state == SLOT_RUNNING && !s->exited) {
            if (s->deadline > 0 && now >= s->deadline && s->killed == KILL_NONE) {
                wlog(w, "step %s timed out; stopping its command", s->id);
                slot_stop(s, KILL_TIMEOUT, now, KILL_GRACE_MS);
            } else if (s->killed != KILL_NONE && s->kill_at > 0 && now >= s->kill_at) {
                slot_signal(s, SIGKILL);
                s->kill_at = 0;
            }
            continue;
        }
        if (s->state == SLOT_RUNNING && (s->out_fd < 0 || now >= s->exited_at + OUTPUT_WAIT_MS)) {
            /* Ended. A grandchild may hold stdout open; we do not wait for it. */
            slot_read(s, on_progress, w);
            s->state = SLOT_DONE;
            s->report_at = now;
        }
    }
    report_due(w, now);
}

static void reap_children(struct worker *w, long long now)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (long i = 0; i < w->concurrency; i++) {
            struct slot *s = &w->slots[i];
            if (s->state == SLOT_RUNNING && s->pid == pid && !s->exited) {
                slot_exited(s, status, now);
                break;
            }
        }
    }
}

/* ---------------------------------------------------------------------------
 * The loop
 * ------------------------------------------------------------------------- */

static int busy(const struct worker *w)
{
    for (long i = 0; i < w->concurrency; i++) {
        if (w->slots[i].state != SLOT_FREE)
            return 1;
    }
    return 0;
}

static void on_signals(struct worker *w, long long now)
{
    unsigned char c;

    while (read(sig_pipe[0], &c, 1) == 1) {
        if (c != SIGTERM && c != SIGINT)
            continue;
        if (w->draining) {
            wlog(w, "second signal: stopping now");
            w->drain_deadline = now;
        } else {
            wlog(w, "stopping: no new claims; waiting up to %ld ms for %s", w->grace_ms,
                 busy(w) ? "running steps" : "nothing");
            w->draining = 1;
            w->drain_deadline = now + w->grace_ms;
        }
    }
}

/* The grace period ran out: stop what still runs; deregister requeues it. */
static void drain_expired(struct worker *w, long long now)
{
    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        if (s->state == SLOT_RUNNING && !s->exited && s->killed != KILL_DRAIN) {
            wlog(w, "step %s still runs after the grace period; stopping it (it will be requeued)",
                 s->id);
            s->killed = KILL_NONE;
            slot_stop(s, KILL_DRAIN, now, 200);
        } else if (s->state == SLOT_DONE && w->redis_down) {
            s->killed = KILL_DRAIN; /* cannot report it; deregister requeues it */
        }
    }
}

static long long min_ll(long long a, long long b)
{
    return a < b ? a : b;
}

/* How long poll() may sleep: until the next thing that is due. */
static int poll_timeout(const struct worker *w, long long now)
{
    long long t = now + 1000;

    t = min_ll(t, w->next_hb);
    t = min_ll(t, w->next_reap);
    if (!w->draining && free_slots(w) > 0)
        t = min_ll(t, w->next_claim);
    if (w->draining)
        t = min_ll(t, w->drain_deadline);
    for (long i = 0; i < w->concurrency; i++) {
        const struct slot *s = &w->slots[i];
        if (s->state == SLOT_RUNNING && !s->exited) {
            if (s->deadline > 0 && s->killed == KILL_NONE)
                t = min_ll(t, s->deadline);
            if (s->kill_at > 0)
                t = min_ll(t, s->kill_at);
        } else if (s->state == SLOT_RUNNING) {
            t = min_ll(t, s->exited_at + OUTPUT_WAIT_MS);
        } else if (s->state == SLOT_DONE) {
            t = min_ll(t, s->report_at);
        }
    }
    return t <= now ? 0 : (int)(t - now);
}

static void poll_once(struct worker *w, long long now)
{
    struct pollfd fds[1 + 2 * CONCURRENCY_MAX];
    struct slot *who[1 + 2 * CONCURRENCY_MAX];
    nfds_t n = 0;

    fds[n].fd = sig_pipe[0];
    fds[n].events = POLLIN;
    who[n++] = NULL;
    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        if (s->state != SLOT_RUNNING)
            continue;
        if (s->out_fd >= 0) {
            fds[n] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
            who[n++] = s;
        }
        if (s->in_fd >= 0) {
            fds[n] = (struct pollfd){.fd = s->in_fd, .events = POLLOUT};
            who[n++] = s;
        }
    }
    if (poll(fds, n, poll_timeout(w, now)) <= 0)
        return;
    for (nfds_t i = 1; i < n; i++) {
        if (fds[i].revents == 0)
            continue;
        if (fds[i].fd == who[i]->out_fd)
            slot_read(who[i], on_progress, w);
        else if (fds[i].fd == who[i]->in_fd)
            slot_write(who[i]);
    }
}

static void run(struct worker *w)
{
    long long now = now_ms();

    w->next_hb = w->next_reap = w->next_claim = now;
    w->idle_ms = IDLE_MIN_MS;
    for (;;) {
        now = now_ms();
        on_signals(w, now);
        reap_children(w, now);
        if (w->draining && !busy(w))
            break;
        if (w->draining && now >= w->drain_deadline)
            drain_expired(w, now);
        if (now >= w->next_hb)
            heartbeat(w, now);
        if (!w->draining && now >= w->next_reap)
            reap(w, now);
        if (!w->draining && now >= w->next_claim)
            claim(w, now_ms());
        tend(w, now_ms());
        poll_once(w, now_ms());
    }
}

/* ---------------------------------------------------------------------------
 * Setup
 * ------------------------------------------------------------------------- */

static int setup_signals(void)
{
    struct sigaction sa;

    if (pipe(sig_pipe) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(sig_pipe[i], F_SETFL, fcntl(sig_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A child that closes its stdin early must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Seconds as a decimal ("1.5"), into milliseconds; exits on bad input. */
static long seconds_ms(const char *usage, const char *name, const char *s, double max)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || !(v >= 0) || v > max)
        exit(cli_usage_error(usage, "invalid %s '%s'; use seconds from 0 to %.0f (e.g. 2.5)", name,
                             s, max));
    return (long)(v * 1000.0 + 0.5);
}

static const char worker_usage[] =
    "usage: stepq worker [--id W] [--capability C]... [--concurrency N] [--timeout S]\n"
    "                    [--grace S] [--heartbeat-ttl-ms N] [--reap-timeout-ms N]\n"
    "                    [--retention D] [--keep-completed N] [--keep-failed N]\n"
    "                    [--pass-env NAME]... -- CMD [ARG...]\n"
    "Registers worker W (default HOST-PID), claims the steps it can run and runs CMD\n"
    "for each (no shell): the payload on stdin, STEPQ_STEP_ID, STEPQ_STEP_TYPE and\n"
    "STEPQ_ATTEMPT in the environment. A stdout line 'progress N [message]' reports\n"
    "progress. Exit 0 completes the step with the last stdout line as result when it\n"
    "is JSON, else the stdout tail (64 KiB); a non-zero exit, a signal or --timeout S\n"
    "(default 3600, 0: none) fails the attempt and the step is retried until its\n"
    "max attempts. SIGTERM: no new claims, running steps get --grace S (default 30),\n"
    "then the worker deregisters and exits 0. The worker also requeues the steps of\n"
    "workers whose heartbeat is older than --reap-timeout-ms (default: the ttl), and\n"
    "prunes the completed and failed sets: ids whose record is gone (kept --retention D,\n"
    "default $STEPQ_RETENTION, then 7d), and the oldest steps over --keep-completed N /\n"
    "--keep-failed N (default: no cap). Exit 4 when another live worker holds the id\n"
    "(at start), or when another process took it over while this one stalled.\n"
    "CMD gets the worker's environment less its secrets: STEPQ_API_TOKEN,\n"
    "STEPQ_REDIS_PASSWORD, STEPQ_REDIS_PASSWORD_FILE and a REDIS_URL that holds a\n"
    "password are left out unless named with --pass-env NAME.\n";

static int parse_args(struct cli *cli, struct worker *w, int argc, char **argv)
{
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"id", required_argument, NULL, 'i'},
        {"capability", required_argument, NULL, 'c'},
        {"concurrency", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},
        {"grace", required_argument, NULL, 'g'},
        {"heartbeat-ttl-ms", required_argument, NULL, 'H'},
        {"reap-timeout-ms", required_argument, NULL, 'R'},
        {"keep-completed", required_argument, NULL, 'K'},
        {"keep-failed", required_argument, NULL, 'F'},
        {"pass-env", required_argument, NULL, 'E'},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "+" CLI_COMMON_SHORT "i:c:n:t:g:", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            w->id = optarg;
            break;
        case 'c':
            if (w->ncaps == CAPS_MAX)
                return cli_usage_error(worker_usage, "at most %d capabilities", CAPS_MAX);
            w->caps[w->ncaps++] = optarg;
            break;
        case 'n':
            w->concurrency = cli_long(worker_usage, "concurrency", optarg, 1, CONCURRENCY_MAX);
            break;
        case 't':
            w->timeout_ms = seconds_ms(worker_usage, "timeout", optarg, 7 * 86400);
            break;
        case 'g':
            w->grace_ms = seconds_ms(worker_usage, "grace", optarg, 86400);
            break;
        case 'H':
            w->ttl_ms = cli_long(worker_usage, "heartbeat ttl", optarg, 300, 3600000);
            break;
        case 'R':
            w->reap_timeout_ms = cli_long(worker_usage, "reap timeout", optarg, 300, 86400000);
            break;
        case 'K':
            w->keep_completed = cli_long(worker_usage, "keep-completed", optarg, 1, 1000000000);
            break;
        case 'F':
            w->keep_failed = cli_long(worker_usage, "keep-failed", optarg, 1, 1000000000);
            break;
        case 'E':
            if (slot_env_pass(optarg) != 0)
                return cli_usage_error(worker_usage, "--pass-env '%s': give at most 8 names",
                                       optarg);
            break;
        default:
            if (!cli_common_opt(cli, c, worker_usage))
                return cli_usage_error(worker_usage, "unknown option");
        }
    }
    if (optind >= argc)
        return cli_usage_error(worker_usage, "expected the command to run after '--'");
    w->argv = argv + optind;
    return EXIT_DONE;
}

static void shutdown_worker(struct worker *w)
{
    /* Whatever still runs was killed by the grace period: wait for it. */
    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        if (s->state != SLOT_FREE && s->pid > 0 && !s->exited) {
            slot_signal(s, SIGKILL);
            waitpid(s->pid, NULL, 0);
        }
        slot_release(s);
    }
    if (!w->taken_over && stepq_worker_deregister(w->q, w->id) != STEPQ_OK)
        redis_error(w, "deregister");
    if (stepq_proc_withdraw(w->q) != STEPQ_OK)
        redis_error(w, "withdraw");
    wlog(w, "stopped: %ld claimed, %ld completed, %ld failed, %ld lost", w->claimed, w->completed,
         w->failed, w->lost);
}

int cmd_worker(struct cli *cli, int argc, char **argv)
{
    struct worker w = {.concurrency = 1, .ttl_ms = 15000, .timeout_ms = 3600000, .grace_ms = 30000};
    char default_id[STEPQ_ID_MAX], host[64] = "";

    int rc = parse_args(cli, &w, argc, argv);
    if (rc != EXIT_DONE)
        return rc;
    if (w.id == NULL) {
        gethostname(host, sizeof(host) - 1);
        host[strcspn(host, ".")] = '\0';
        snprintf(default_id, sizeof(default_id), "%.40s-%d", host[0] ? host : "worker",
                 (int)getpid());
        w.id = default_id;
    }
    if (w.reap_timeout_ms == 0)
        w.reap_timeout_ms = w.ttl_ms;
    w.q = cli_connect(cli, "stepq-worker");
    /* Check the id and capabilities before anything runs. */
    if (stepq_worker_register(w.q, w.id, w.caps, w.ncaps, w.ttl_ms) != STEPQ_OK) {
        rc = cli_fail(w.q, "worker");
        stepq_free(w.q);
        return rc;
    }
    w.registered = 1;
    w.slots = calloc((size_t)w.concurrency, sizeof(*w.slots));
    if (w.slots == NULL || setup_signals() != 0) {
        fprintf(stderr, "stepq: worker: cannot set up: %s\n", strerror(errno));
        free(w.slots);
        stepq_free(w.q);
        return EXIT_FAILED;
    }
    for (long i = 0; i < w.concurrency; i++)
        slot_init(&w.slots[i]);
    srandom((unsigned)(getpid() ^ now_ms()));
    wlog(&w, "running '%s' for up to %ld step(s) at a time", w.argv[0], w.concurrency);
    run(&w);
    shutdown_worker(&w);
    free(w.slots);
    stepq_free(w.q);
    return w.taken_over ? EXIT_REFUSED : EXIT_DONE;
}
