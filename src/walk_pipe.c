/*
 * walk_pipe.c - the walks' round trips hidden: a window of pipelined
 * commands whose replies are read in order by the reader pushed with each,
 * and a SCAN driver that keeps the next page on its way while this one is
 * processed (docs/migration-engine.md, "Pipelining").
 *
 * Why: over a network every round trip costs the link's RTT. A walk that
 * sends a page's scripts and waits for them before it asks for the next
 * page leaves Redis idle for one RTT a page, and one that reads the next
 * page only after that, for two. Here the next SCAN goes out right after a
 * page arrives, before the page's own commands, so that its reply comes
 * back while Redis still works on them; the page's commands are queued
 * without waiting; replies are taken in order as they come. Redis runs one
 * connection's commands in order, so what a walk's scripts record (the
 * backfill's checkpoint: the cursor that produced their page) still only
 * ever covers work that is done.
 *
 * Bounded: no new SCAN while `cap` keys or more are in flight (sent, their
 * replies not yet read), so memory and the work a kill can redo stay fixed
 * whatever the size of the keyspace.
 *
 * A reader must not send a command and wait for its reply (that reply would
 * come after the window's): work that must (a big collection merged in
 * chunks, pacing that reads the throttle hash) asks for `idle`, which runs
 * once the window has drained, with no new SCAN sent meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stepq_private.h"

int stepq__window_push(stepq *q, stepq__window *w, stepq__reader_fn fn, void *ctx, long keys)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        struct stepq__wentry *e = stepq__realloc(w->e, cap * sizeof(*e));
        if (e == NULL) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        /* Unwrap the ring into the new array. */
        for (size_t i = 0; i < w->n; i++)
            e[w->cap + i] = e[(w->head + i) % w->cap];
        if (w->n > 0)
            memmove(e, e + w->cap, w->n * sizeof(*e));
        w->e = e;
        w->head = 0;
        w->cap = cap;
    }
    w->e[(w->head + w->n) % w->cap] = (struct stepq__wentry){fn, ctx, keys};
    w->n++;
    w->keys += keys;
    return STEPQ_OK;
}

/* Runs the oldest reader: it reads its reply. */
static int window_step(stepq *q, stepq__window *w)
{
    struct stepq__wentry e = w->e[w->head];

    w->head = (w->head + 1) % w->cap;
    w->n--;
    w->keys -= e.keys;
    return e.fn(q, e.ctx, 0);
}

int stepq__window_next(stepq *q, stepq__window *w)
{
    return w->n > 0 ? window_step(q, w) : STEPQ_OK;
}

/* After an error: the connection is dropped (the replies still on their
 * way cannot be matched any more) and every reader left is told to let go
 * of its context; the first error is kept. */
void stepq__window_abort(stepq *q, stepq__window *w)
{
    char keep[STEPQ_ERRSTR_MAX];
    int kind = q->err;

    snprintf(keep, sizeof(keep), "%s", q->errstr);
    stepq__drop(q);
    while (w->n > 0) {
        struct stepq__wentry e = w->e[w->head];
        w->head = (w->head + 1) % w->cap;
        w->n--;
        e.fn(q, e.ctx, 1);
    }
    w->keys = 0;
    stepq__set_error(q, kind, "%s", keep);
}

int stepq__window_drain(stepq *q, stepq__window *w)
{
    while (w->n > 0)
        if (window_step(q, w) != STEPQ_OK) {
            stepq__window_abort(q, w);
            return STEPQ_ERR;
        }
    return STEPQ_OK;
}

void stepq__window_release(stepq__window *w)
{
    stepq__free(w->e);
    memset(w, 0, sizeof(*w));
}

/* ---------------------------------------------------------------------------
 * The SCAN driver
 * ------------------------------------------------------------------------- */

/* The reply of the SCAN in flight: the next one goes out at once (before
 * the commands of this page), and the page waits for the driver. */
static int scan_reader(stepq *q, void *ctx, int abort)
{
    stepq__walk *w = ctx;

    w->scan_out = 0;
    if (abort)
        return STEPQ_OK;
    redisReply *r = stepq__read_reply(q);
    if (r == NULL)
        return STEPQ_ERR;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(w->cursor) ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected SCAN reply");
        return STEPQ_ERR;
    }
    memcpy(w->page_cursor, w->cursor, sizeof(w->cursor));
    memcpy(w->cursor, r->element[0]->str, r->element[0]->len + 1);
    w->scan_done = strcmp(w->cursor, "0") == 0;
    w->page = r;
    return STEPQ_OK;
}

static int send_scan(stepq *q, stepq__walk *w)
{
    const char *argv[] = {"SCAN", w->cursor, "COUNT", w->count, "MATCH", w->match};

    if (stepq__ensure(q) != STEPQ_OK)
        return STEPQ_ERR;
    memcpy(w->sent_cursor, w->cursor, sizeof(w->cursor));
    /* Without a namespace every key may be ours: no MATCH to filter. */
    if (redisAppendCommandArgv(q->rc, strcmp(w->match, "*") != 0 ? 6 : 4, argv, NULL) != REDIS_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while queueing a command");
        return STEPQ_ERR;
    }
    w->scan_out = 1;
    return stepq__window_push(q, &w->win, scan_reader, w, 0);
}

int stepq__walk_flush(stepq *q)
{
    int done = 0;

    while (q->rc != NULL && !done)
        if (redisBufferWrite(q->rc, &done) != REDIS_OK) {
            stepq__set_error(q, STEPQ_E_IO, "lost the connection to redis: %s", q->rc->errstr);
            stepq__drop(q);
            return STEPQ_ERR;
        }
    return STEPQ_OK;
}

/* Drains the window with no new SCAN sent, then runs the walk's idle work. */
static int settle(stepq *q, stepq__walk *w)
{
    w->hold = 1;
    int rc = stepq__window_drain(q, &w->win);
    w->hold = 0;
    if (rc == STEPQ_OK && w->idle != NULL) {
        w->want_idle = 0;
        rc = w->idle(q, w->arg);
    }
    return rc;
}

int stepq__walk_pace(stepq *q, stepq__walk *w, stepq__pace *p, long n)
{
    /* What was queued goes out now, not after the wait: a rate spreads the
     * commands over time instead of sending a page's worth at once. */
    if (stepq__walk_flush(q) != STEPQ_OK)
        return STEPQ_ERR;
    /* Pacing reads the throttle hash, PINGs, reads INFO: on an empty pipe. */
    int io = stepq__pace_io_due(p);
    if (io) {
        w->hold = 1;
        int rc = stepq__window_drain(q, &w->win);
        w->hold = 0;
        if (rc != STEPQ_OK)
            return STEPQ_ERR;
    }
    return stepq__pace_wait_io(p, n, io);
}

void stepq__walk_idle(stepq__walk *w)
{
    w->want_idle = 1;
}

long stepq__walk_cap(long count, long max_latency_ms)
{
    /* With a latency bound a foreground client queues behind at most the
     * script running and the one behind it. */
    return max_latency_ms > 0 ? 2 * count : STEPQ_WALK_PAGES * count;
}

/*
 * On a cluster a SCAN cursor belongs to one node, and a page read while the
 * slot migrates lacks the keys already moved (walk.c). So there the walk
 * reads one page at a time: each SCAN goes out on an empty pipe, after the
 * slot is settled, and starts over from 0 when the owner changed; after the
 * last page the owner is checked once more. A page whose commands failed on
 * a lost connection or a redirection (pipelined commands get MOVED and ASK
 * as errors) is redone from its cursor: every page function is idempotent.
 * Pipelining within a page stays; across pages it would hide a migration.
 */
static int cluster_scan(stepq *q, stepq__walk *w)
{
    int restarted;

    if (!w->redo)
        w->deadline = 0; /* the page before was acknowledged whole */
    w->redo = 0;
    if (stepq__walk_settle(q, w->owner, w->cursor, &restarted) != STEPQ_OK)
        return STEPQ_ERR;
    return send_scan(q, w);
}

/* After the last page on a cluster: 1 when the owner changed during the
 * walk, which then starts over from 0. */
static int cluster_restart(stepq *q, stepq__walk *w, int *rc)
{
    int restarted = 0;

    *rc = stepq__walk_settle(q, w->owner, w->cursor, &restarted);
    if (*rc == STEPQ_OK && restarted)
        w->scan_done = 0;
    return *rc == STEPQ_OK && restarted;
}

/* After a failed page on a cluster: 1 when it is redone. */
static int cluster_redo(stepq *q, stepq__walk *w)
{
    if (q->cl == NULL || !stepq__walk_retry(q, &w->deadline))
        return 0;
    stepq__window_abort(q, &w->win);
    freeReplyObject(w->page);
    w->page = NULL;
    memcpy(w->cursor, w->sent_cursor, sizeof(w->cursor));
    w->scan_out = w->scan_done = w->hold = 0;
    w->redo = 1;
    stepq__clear_error(q);
    return 1;
}

int stepq__walk_run(stepq *q, stepq__walk *w, const char *from, long count, long cap,
                    stepq__page_fn fn, stepq__idle_fn idle, void *arg)
{
    return stepq__walk_run_match(q, w, NULL, from, count, cap, fn, idle, arg);
}

int stepq__walk_run_match(stepq *q, stepq__walk *w, const char *match, const char *from, long count,
                          long cap, stepq__page_fn fn, stepq__idle_fn idle, void *arg)
{
    int rc = STEPQ_OK;

    memset(w, 0, sizeof(*w)); /* owner "": the first page on a cluster records it */
    w->match = match ? sdsnew(match) : sdscatfmt(sdsempty(), "%s*", q->km.ns);
    if (w->match == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    snprintf(w->cursor, sizeof(w->cursor), "%s", from && *from ? from : "0");
    snprintf(w->count, sizeof(w->count), "%ld", count > 0 ? count : 100);
    w->cap = cap > 0 ? cap : STEPQ_WALK_PAGES * (count > 0 ? count : 100);
    w->idle = idle;
    w->arg = arg;
    for (;;) {
        if (w->page != NULL) {
            redisReply *page = w->page;
            char cur[32];
            memcpy(cur, w->page_cursor, sizeof(cur));
            w->page = NULL;
            /* The next page is asked for before this one's commands go out
             * (on one server: a cluster reads one page at a time). */
            if (q->cl == NULL && !w->scan_done && !w->scan_out && w->win.keys < w->cap)
                rc = send_scan(q, w);
            if (rc == STEPQ_OK)
                rc = fn(q, page->element[1], cur, arg);
            freeReplyObject(page);
        } else if (w->want_idle) {
            rc = settle(q, w);
        } else if (!w->scan_done && !w->scan_out && !w->hold && w->win.keys < w->cap &&
                   (q->cl == NULL || w->win.n == 0)) {
            rc = q->cl == NULL ? send_scan(q, w) : cluster_scan(q, w);
        } else if (w->win.n > 0) {
            rc = window_step(q, &w->win);
        } else if (q->cl == NULL || !cluster_restart(q, w, &rc)) {
            break; /* the end, or the slot never settled */
        }
        if (rc != STEPQ_OK && !cluster_redo(q, w))
            break;
        rc = STEPQ_OK;
    }
    if (rc != STEPQ_OK) {
        stepq__window_abort(q, &w->win);
        freeReplyObject(w->page);
        w->page = NULL;
    } else if (w->want_idle) {
        rc = settle(q, w);
    }
    stepq__window_release(&w->win);
    sdsfree(w->match);
    w->match = NULL;
    return rc;
}
