/*
 * cmd_worker.c - `stepq worker`: registers, heartbeats, claims the steps it
 * can run and runs a command for each (worker_child.c), reports progress and
 * the end of every attempt, and runs the reaper so that the steps of a worker
 * that died come back without an operator.
 *
 * Several namespaces (--namespace A --namespace B, or A,B) make one lane
 * each: its own handle (on a cluster, a connection to the master of its
 * slot), registration, heartbeat, reaper and claim back-off. The slots are
 * shared: each claim round offers the free slots to the lanes in turn,
 * starting one further each round, split evenly among the lanes due, and a
 * lane with nothing pending gives its share to the others (docs/cluster.md,
 * "Many queues, one fleet"). A slot remembers its lane, so its progress and
 * its end go to the namespace its step came from.
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

/* One namespace the worker claims from. */
struct lane {
    stepq *q;
    const char *ns; /* NULL: no prefix */
    int registered, redis_down;
    long long next_hb, next_claim, next_reap, idle_ms;
};

struct worker {
    struct lane lanes[CLI_NS_MAX];
    size_t nlanes, rr; /* rr: the lane offered the free slots first next round */
    const char *id;
    const char *caps[CAPS_MAX];
    size_t ncaps;
    char **argv;
    long concurrency, ttl_ms, reap_timeout_ms, timeout_ms, grace_ms;
    long keep_completed, keep_failed; /* caps of the ended sets, held by the reaper */
    struct slot *slots;
    int draining;
    int taken_over; /* another process registered our id in a namespace: we stop (exit 4) */
    long long drain_deadline;
    long claimed, completed, failed, lost;
};

static int sig_pipe[2] = {-1, -1};
/* Set by SIGTERM/SIGINT and given to every lane's handle: a call in course
 * when the signal comes, and every call of the drain, stops waiting for a
 * Redis that does not answer (stepq_set_stop_flag), so the worker stops in
 * seconds, not after the library's reconnection waits (20 s each on a
 * cluster). The steps it could not hand back stay active, held by it, and
 * the reaper requeues them once its heartbeat ran out. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    unsigned char c = (unsigned char)sig;
    int e = errno;

    if (sig == SIGTERM || sig == SIGINT)
        stop_requested = 1;
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

/* What a lane's messages start with when there are several: its namespace. */
static const char *lane_tag(const struct worker *w, const struct lane *l, char *buf, size_t len)
{
    if (w->nlanes < 2)
        return "";
    snprintf(buf, len, "[%s] ", l->ns ? l->ns : "");
    return buf;
}

/* A Redis call failed: connection errors are logged once per outage and
 * retried later; anything else is logged every time. */
static void redis_error(struct worker *w, struct lane *l, const char *what)
{
    int e = stepq_err(l->q);
    char tag[80];

    if (e == STEPQ_E_IO || e == STEPQ_E_EOF) {
        if (!l->redis_down)
            wlog(w, "%s%s: %s; retrying", lane_tag(w, l, tag, sizeof(tag)), what,
                 stepq_errstr(l->q));
        l->redis_down = 1;
        return;
    }
    wlog(w, "%s%s: %s", lane_tag(w, l, tag, sizeof(tag)), what, stepq_errstr(l->q));
}

static void redis_ok(struct worker *w, struct lane *l)
{
    char tag[80];

    if (l->redis_down)
        wlog(w, "%sredis is back", lane_tag(w, l, tag, sizeof(tag)));
    l->redis_down = 0;
}

static struct lane *lane_of(struct worker *w, const struct slot *s)
{
    return &w->lanes[s->lane];
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
    stepq *q = lane_of(w, s)->q;
    char *json = NULL;

    if (stepq_get(q, s->id, &json) != STEPQ_OK)
        return stepq_err(q) == STEPQ_E_NOTFOUND ? 0 : -1;
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
 * token. Only the slots of lane `l` (all lanes when NULL).
 */
static void drop_all_held(struct worker *w, const struct lane *l, long long now)
{
    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        if ((s->state != SLOT_RUNNING && s->state != SLOT_DONE) || s->killed != KILL_NONE ||
            (l != NULL && lane_of(w, s) != l) || still_held(w, s) != 0)
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
static void taken_over(struct worker *w, struct lane *l, long long now)
{
    char tag[80];

    wlog(w, "%s%s; stopping", lane_tag(w, l, tag, sizeof(tag)), stepq_errstr(l->q));
    w->taken_over = 1;
    /* The id is another's in that namespace; in the others it is still
     * ours, and deregistering there requeues what we leave behind. */
    l->registered = 0;
    drop_all_held(w, NULL, now);
    if (!w->draining) {
        w->draining = 1;
        w->drain_deadline = now + w->grace_ms;
    }
}

static void heartbeat(struct worker *w, struct lane *l, long long now)
{
    char tag[80];

    l->next_hb = now + (l->registered ? w->ttl_ms / 3 : RETRY_MS);
    if (w->taken_over)
        return;
    if (!l->registered) {
        if (stepq_worker_register(l->q, w->id, w->caps, w->ncaps, w->ttl_ms) != STEPQ_OK) {
            if (stepq_err(l->q) == STEPQ_E_CONFLICT)
                taken_over(w, l, now);
            else
                redis_error(w, l, "register");
            return;
        }
        l->registered = 1;
        l->next_hb = now + w->ttl_ms / 3;
    } else if (stepq_worker_heartbeat(l->q, w->id, w->ttl_ms) != STEPQ_OK) {
        if (stepq_err(l->q) == STEPQ_E_CONFLICT) {
            taken_over(w, l, now);
            return;
        }
        if (stepq_err(l->q) != STEPQ_E_NOTFOUND) {
            redis_error(w, l, "heartbeat");
            return;
        }
        wlog(w, "%sthis worker was reaped (no heartbeat in time); registering again",
             lane_tag(w, l, tag, sizeof(tag)));
        l->registered = 0;
        drop_all_held(w, l, now);
        heartbeat(w, l, now);
        return;
    }
    redis_ok(w, l);
    /* Long-running processes show up in `stepq migrate status`. */
    if (stepq_proc_announce(l->q, "worker", w->ttl_ms * 2) != STEPQ_OK)
        redis_error(w, l, "announce");
}

static void reap(struct worker *w, struct lane *l, long long now)
{
    stepq_reap_opts o = {.timeout_ms = w->reap_timeout_ms,
                         .keep_completed = w->keep_completed,
                         .keep_failed = w->keep_failed};
    stepq_reap_result res;
    char tag[80];

    l->next_reap = now + jitter(w->ttl_ms / 2 < 5000 ? w->ttl_ms / 2 : 5000);
    if (stepq_reap_pass(l->q, &o, &res) != STEPQ_OK) {
        redis_error(w, l, "reap");
        return;
    }
    lane_tag(w, l, tag, sizeof(tag));
    if (res.requeued > 0)
        wlog(w, "%srequeued %ld step(s) of dead workers", w->nlanes > 1 ? tag : "", res.requeued);
    if (res.stale > 0)
        wlog(w, "%sdropped %ld stale entr%s (set members whose record says otherwise)",
             w->nlanes > 1 ? tag : "", res.stale, res.stale == 1 ? "y" : "ies");
}

/* ---------------------------------------------------------------------------
 * Children
 * ------------------------------------------------------------------------- */

static void on_progress(struct slot *s, long pct, const char *msg, void *arg)
{
    struct worker *w = arg;
    struct lane *l = lane_of(w, s);

    if (s->killed != KILL_NONE)
        return;
    if (stepq_progress(l->q, s->id, s->token, pct, msg) == STEPQ_OK) {
        redis_ok(w, l);
        return;
    }
    int e = stepq_err(l->q);
    if (e == STEPQ_E_CONFLICT || e == STEPQ_E_NOTFOUND) {
        wlog(w, "step %s: %s; stopping its command", s->id, stepq_errstr(l->q));
        slot_stop(s, KILL_STALE, now_ms(), KILL_GRACE_MS);
        return;
    }
    redis_error(w, l, "progress");
}

/* Takes one claimed step (a JSON object) into a free slot and starts it. */
static void start_step(struct worker *w, struct lane *l, struct slot *s, json_t *step,
                       long long now)
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
    s->lane = (int)(l - w->lanes);
    s->ns = l->ns;
    w->claimed++;
    if (slot_spawn(s, w->argv) != 0) {
        char why[160];
        int final = 0;
        snprintf(why, sizeof(why), "cannot start '%s': %s", w->argv[0], strerror(errno));
        wlog(w, "step %s: %s", s->id, why);
        if (stepq_fail(l->q, s->id, s->token, why, &final) != STEPQ_OK)
            redis_error(w, l, "fail");
        slot_release(s);
        return;
    }
    char tag[80];
    wlog(w, "%sstep %s (%s, attempt %ld) started, pid %d", lane_tag(w, l, tag, sizeof(tag)), s->id,
         s->type, s->attempt, (int)s->pid);
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
static void refuse_step(struct worker *w, struct lane *l, json_t *step, const char *why)
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
    if (stepq_fail(l->q, sid, json_string_value(tok), text, &final) != STEPQ_OK) {
        redis_error(w, l, "fail");
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

/* Claims up to `want` steps of lane l into free slots; returns 1 when it
 * got any. */
static int claim(struct worker *w, struct lane *l, long want, long long now)
{
    char *json = NULL;

    if (want == 0 || w->draining || !l->registered)
        return 0;
    if (stepq_claim(l->q, w->id, w->caps, w->ncaps, want, &json) != STEPQ_OK) {
        if (stepq_err(l->q) == STEPQ_E_NOTFOUND) {
            redis_ok(w, l);
            /* Idle: back off a little, so an empty queue costs little. */
            l->next_claim = now + l->idle_ms;
            l->idle_ms = l->idle_ms * 2 > IDLE_MAX_MS ? IDLE_MAX_MS : l->idle_ms * 2;
        } else {
            redis_error(w, l, "claim");
            l->next_claim = now + RETRY_MS;
        }
        return 0;
    }
    redis_ok(w, l);
    l->idle_ms = IDLE_MIN_MS;
    l->next_claim = now;
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
            refuse_step(w, l, step, why);
            continue;
        }
        while (k < w->concurrency && w->slots[k].state != SLOT_FREE)
            k++;
        if (k == w->concurrency)
            break; /* cannot happen: we asked for no more than the free slots */
        start_step(w, l, &w->slots[k], step, now);
    }
    json_decref(a);
    return 1;
}

/*
 * One claim round: the free slots are offered to the lanes whose claim is
 * due, starting with w->rr, each taking an even share of what is still free
 * (at least one). A lane with nothing pending backs off and its share goes
 * to the lanes after it, so no slot idles while any namespace has work, and
 * a busy namespace cannot starve another: the next round starts after the
 * last lane that got steps, so with one slot the busy lanes take turns.
 */
static void claim_round(struct worker *w, long long now)
{
    struct lane *due[CLI_NS_MAX];
    size_t n = 0;

    if (w->draining || free_slots(w) == 0)
        return;
    for (size_t k = 0; k < w->nlanes; k++) {
        struct lane *l = &w->lanes[(w->rr + k) % w->nlanes];
        if (l->registered && now >= l->next_claim)
            due[n++] = l;
    }
    for (size_t i = 0; i < n; i++) {
        long left = free_slots(w);
        if (left == 0)
            break;
        long share = left / (long)(n - i);
        if (claim(w, due[i], share > 0 ? share : 1, now_ms()))
            w->rr = ((size_t)(due[i] - w->lanes) + 1) % w->nlanes;
    }
}

/* A report failed for the whole call: Redis is away (try again later), or
 * anything else (logged; the slot is freed). Returns -1 to retry, else 0. */
static int report_error(struct worker *w, struct lane *l, const char *what)
{
    int e = stepq_err(l->q);

    if (e == STEPQ_E_IO || e == STEPQ_E_EOF) {
        redis_error(w, l, what);
        return -1;
    }
    wlog(w, "%s: %s", what, stepq_errstr(l->q));
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
    struct lane *l = lane_of(w, s);
    int final = 0;

    if (stepq_fail(l->q, s->id, s->token, text, &final) == STEPQ_OK) {
        redis_ok(w, l);
        w->failed++;
        wlog(w, "step %s failed (%s): %s", s->id, final ? "no attempts left" : "will retry", text);
        return 0;
    }
    int e = stepq_err(l->q);
    if (e == STEPQ_E_CONFLICT || e == STEPQ_E_NOTFOUND) {
        report_lost(w, s, stepq_errstr(l->q));
        return 0;
    }
    return report_error(w, l, "fail");
}

/*
 * Reports the successes of n slots in one round trip (stepq_complete_many):
 * under load many commands end between two looks, and one call for all of
 * them spares Redis a script call each. Each ack gets its own answer; a
 * refused one does not stop the others. Slots whose report is settled are
 * freed; on a connection error all are tried again later. All n slots are
 * of one lane.
 */
static void report_completed(struct worker *w, struct slot **who, sds *texts, size_t n,
                             long long now)
{
    stepq_ack acks[REPORT_BATCH];
    struct lane *l = lane_of(w, who[0]);

    for (size_t i = 0; i < n; i++)
        acks[i] = (stepq_ack){.id = who[i]->id, .token = who[i]->token, .result = texts[i]};
    int rc = stepq_complete_many(l->q, acks, n);
    int e = stepq_err(l->q);
    if (rc != STEPQ_OK && e != STEPQ_E_CONFLICT && e != STEPQ_E_NOTFOUND) {
        if (n > 1 && e != STEPQ_E_IO && e != STEPQ_E_EOF) {
            /* The batch was refused whole (a bad ack): one by one, so
             * that one bad ack does not strand the others. */
            for (size_t i = 0; i < n; i++)
                report_completed(w, who + i, texts + i, 1, now);
            return;
        }
        int retry = report_error(w, l, "complete");
        for (size_t i = 0; i < n; i++) {
            if (retry)
                who[i]->report_at = now + RETRY_MS;
            else
                slot_release(who[i]);
        }
        return;
    }
    redis_ok(w, l);
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

/* Reports the ends of the attempts of lane `lane` that are due: failures
 * one by one, successes in batches. */
static void report_due_lane(struct worker *w, int lane, long long now)
{
    struct slot *who[REPORT_BATCH];
    sds texts[REPORT_BATCH];
    size_t n = 0;

    for (long i = 0; i < w->concurrency; i++) {
        struct slot *s = &w->slots[i];
        sds text = NULL;
        if (s->state != SLOT_DONE || now < s->report_at || s->lane != lane)
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

static void report_due(struct worker *w, long long now)
{
    for (size_t l = 0; l < w->nlanes; l++)
        report_due_lane(w, (int)l, now);
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
        } else if (s->state == SLOT_DONE && lane_of(w, s)->redis_down) {
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

    for (size_t i = 0; i < w->nlanes; i++) {
        const struct lane *l = &w->lanes[i];
        t = min_ll(t, l->next_hb);
        t = min_ll(t, l->next_reap);
        if (!w->draining && free_slots(w) > 0 && l->registered)
            t = min_ll(t, l->next_claim);
    }
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

    for (size_t i = 0; i < w->nlanes; i++) {
        struct lane *l = &w->lanes[i];
        l->next_hb = l->next_reap = l->next_claim = now;
        l->idle_ms = IDLE_MIN_MS;
    }
    for (;;) {
        now = now_ms();
        on_signals(w, now);
        reap_children(w, now);
        if (w->draining && !busy(w))
            break;
        if (w->draining && now >= w->drain_deadline)
            drain_expired(w, now);
        for (size_t i = 0; i < w->nlanes; i++) {
            struct lane *l = &w->lanes[i];
            if (now >= l->next_hb)
                heartbeat(w, l, now);
            /* A signal that came during that call: no reap or claim after
             * it (each would wait for Redis too). */
            on_signals(w, now_ms());
            if (!w->draining && now >= l->next_reap)
                reap(w, l, now);
        }
        on_signals(w, now_ms());
        claim_round(w, now_ms());
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
    "usage: stepq worker [--namespace NS]... [--id W] [--capability C]... [--concurrency N]\n"
    "                    [--timeout S] [--grace S] [--heartbeat-ttl-ms N]\n"
    "                    [--reap-timeout-ms N] [--retention D] [--keep-completed N]\n"
    "                    [--keep-failed N]\n"
    "                    [--pass-env NAME]... -- CMD [ARG...]\n"
    "Registers worker W (default HOST-PID), claims the steps it can run and runs CMD\n"
    "for each (no shell): the payload on stdin, STEPQ_STEP_ID, STEPQ_STEP_TYPE,\n"
    "STEPQ_ATTEMPT and STEPQ_NAMESPACE (the step's) in the environment. A stdout line\n"
    "'progress N [message]' reports progress. Exit 0 completes the step with the last\n"
    "stdout line as result when it is JSON, else the stdout tail (64 KiB); a non-zero\n"
    "exit, a signal or --timeout S (default 3600, 0: none) fails the attempt and the\n"
    "step is retried until its max attempts. SIGTERM: no new claims, running steps get\n"
    "--grace S (default 30), then the worker deregisters and exits 0. The worker also\n"
    "requeues the steps of workers whose heartbeat is older than --reap-timeout-ms\n"
    "(default: the ttl), and prunes the completed and failed sets: ids whose record is\n"
    "gone (kept --retention D, default $STEPQ_RETENTION, then 7d), and the oldest steps\n"
    "over --keep-completed N / --keep-failed N (default: no cap). Exit 4 when another\n"
    "live worker holds the id (at start), or when another process took it over while\n"
    "this one stalled.\n"
    "CMD gets the worker's environment less its secrets: STEPQ_API_TOKEN,\n"
    "STEPQ_REDIS_PASSWORD, STEPQ_REDIS_PASSWORD_FILE and a REDIS_URL that holds a\n"
    "password are left out unless named with --pass-env NAME.\n"
    "Several namespaces (--namespace A --namespace B, or A,B): the worker registers in\n"
    "each and shares its slots among them in turn; a namespace with nothing pending\n"
    "leaves its share to the others.\n";

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
    for (size_t i = 0; i < w->nlanes; i++) {
        struct lane *l = &w->lanes[i];
        /* Not where another process took the id over: that would release
         * its registration. */
        if (l->registered && stepq_worker_deregister(l->q, w->id) != STEPQ_OK) {
            redis_error(w, l, "deregister");
            int e = stepq_err(l->q);
            if (e == STEPQ_E_IO || e == STEPQ_E_EOF)
                continue; /* Redis is away: the withdrawal would wait for nothing */
        }
        if (stepq_proc_withdraw(l->q) != STEPQ_OK)
            redis_error(w, l, "withdraw");
    }
    wlog(w, "stopped: %ld claimed, %ld completed, %ld failed, %ld lost", w->claimed, w->completed,
         w->failed, w->lost);
}

/* Connects and registers every lane; returns EXIT_DONE or an exit code
 * after printing why (the lanes connected so far stay for stepq_free). */
static int lanes_start(struct cli *cli, struct worker *w)
{
    const char *nss[CLI_NS_MAX];

    w->nlanes = cli_namespaces(cli, worker_usage, nss);
    for (size_t i = 0; i < w->nlanes; i++) {
        struct cli one = *cli;
        struct lane *l = &w->lanes[i];
        one.ns = l->ns = nss[i];
        one.nns = nss[i] ? 1 : 0;
        l->q = cli_connect(&one, "stepq-worker");
        stepq_set_stop_flag(l->q, &stop_requested);
        /* Check the id and capabilities before anything runs. */
        if (stepq_worker_register(l->q, w->id, w->caps, w->ncaps, w->ttl_ms) != STEPQ_OK) {
            if (w->nlanes > 1)
                fprintf(stderr, "stepq: worker: in namespace '%s':\n", l->ns ? l->ns : "");
            return cli_fail(l->q, "worker");
        }
        l->registered = 1;
    }
    return EXIT_DONE;
}

static void lanes_free(struct worker *w)
{
    for (size_t i = 0; i < w->nlanes; i++)
        stepq_free(w->lanes[i].q);
}

int cmd_worker(struct cli *cli, int argc, char **argv)
{
    static struct worker w; /* the lanes are big; not on the stack */
    char default_id[STEPQ_ID_MAX], host[64] = "";

    w = (struct worker){
        .concurrency = 1, .ttl_ms = 15000, .timeout_ms = 3600000, .grace_ms = 30000};
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
    if ((rc = lanes_start(cli, &w)) != EXIT_DONE) {
        /* Registered in some namespaces before one refused: undo those. */
        for (size_t i = 0; i < w.nlanes; i++) {
            if (w.lanes[i].registered)
                stepq_worker_deregister(w.lanes[i].q, w.id);
        }
        lanes_free(&w);
        return rc;
    }
    w.slots = calloc((size_t)w.concurrency, sizeof(*w.slots));
    if (w.slots == NULL || setup_signals() != 0) {
        fprintf(stderr, "stepq: worker: cannot set up: %s\n", strerror(errno));
        free(w.slots);
        lanes_free(&w);
        return EXIT_FAILED;
    }
    for (long i = 0; i < w.concurrency; i++)
        slot_init(&w.slots[i]);
    srandom((unsigned)(getpid() ^ now_ms()));
    if (w.nlanes > 1)
        wlog(&w, "running '%s' for up to %ld step(s) at a time, from %zu namespaces", w.argv[0],
             w.concurrency, w.nlanes);
    else
        wlog(&w, "running '%s' for up to %ld step(s) at a time", w.argv[0], w.concurrency);
    run(&w);
    shutdown_worker(&w);
    free(w.slots);
    lanes_free(&w);
    return w.taken_over ? EXIT_REFUSED : EXIT_DONE;
}
