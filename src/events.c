/*
 * events.c - following the lifecycle events on pub/sub.
 *
 * A follower subscribes to the events channel(s) of the phase it starts in
 * (job_events in job, step_events in step, both in the dual phases) and to
 * worker_events. Every event names the phase it was published in; when one
 * shows a phase that also publishes elsewhere, the follower subscribes there
 * too, so a walk through the phases (job, dual-write, ..., step) never makes
 * it miss an event. It never unsubscribes: processes pinned to another phase
 * may still publish on the other channel. In the dual phases every event is
 * published on both channels with one id; duplicates are dropped by id.
 * A lost connection is re-established (with the library's backoff) and the
 * subscriptions renewed; what was published meanwhile is lost (pub/sub).
 */
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include <xxhash.h>

#include "stepq_private.h"

#define SEEN_RING 1024

struct seen {
    char ids[SEEN_RING][64];
    size_t next;
};

/* Returns 1 when the event id was seen recently; records it otherwise. */
static int seen_before(struct seen *s, const char *id)
{
    for (size_t i = 0; i < SEEN_RING; i++) {
        if (s->ids[i][0] != '\0' && strcmp(s->ids[i], id) == 0)
            return 1;
    }
    snprintf(s->ids[s->next], sizeof(s->ids[0]), "%s", id);
    s->next = (s->next + 1) % SEEN_RING;
    return 0;
}

/*
 * The key that names one event: its "id" and a hash of its whole text.
 * Event ids are a random base per script call and a counter (lua.md), so
 * two events share an id only by a 64-bit accident, and channels are shared
 * by every database of the server; the hash settles both, since the two
 * copies of one event are the same text. Events of other publishers may
 * have no id: those pass through.
 */
static int event_key(const char *msg, size_t len, char *key, size_t keylen)
{
    json_t *o = json_loadb(msg, len, JSON_ALLOW_NUL, NULL);
    const char *v = json_string_value(json_object_get(o, "id"));
    int ok = v != NULL && strlen(v) < 40;

    if (ok)
        snprintf(key, keylen, "%s:%016llx", v, (unsigned long long)XXH64(msg, len, 0));
    json_decref(o);
    return ok;
}

int stepq_event_channels(stepq *q, char **ret_json)
{
    stepq_phase p;
    int r = q->km.role[STEPQ_ROLE_EVENTS];

    if (r < 0) {
        stepq__set_error(q, STEPQ_E_INVALID, "the key map has no 'events' rule");
        return STEPQ_ERR;
    }
    if (q->pin >= 0)
        p = (stepq_phase)q->pin;
    else if (stepq_phase_get(q, &p) != STEPQ_OK)
        return STEPQ_ERR;
    json_t *a = json_array();
    if (p != STEPQ_PHASE_STEP)
        json_array_append_new(a, json_string(q->km.rules[r].tpl[0]));
    if (p != STEPQ_PHASE_JOB)
        json_array_append_new(a, json_string(q->km.rules[r].tpl[1]));
    return stepq__ret_json(q, a, ret_json);
}

/* Bit 0: the old channel, bit 1: the new one, as phase p publishes. */
static unsigned phase_sides(stepq_phase p)
{
    return (p != STEPQ_PHASE_STEP ? 1u : 0u) | (p != STEPQ_PHASE_JOB ? 2u : 0u);
}

/* The sides the event's "phase" field publishes to (0: none or unknown). */
static unsigned event_sides(const char *msg, size_t len)
{
    json_t *o = json_loadb(msg, len, JSON_ALLOW_NUL, NULL);
    const char *name = json_string_value(json_object_get(o, "phase"));
    stepq_phase p;
    unsigned sides = 0;

    if (name != NULL && stepq_phase_parse(name, &p, NULL, 0) == STEPQ_OK)
        sides = phase_sides(p);
    json_decref(o);
    return sides;
}

/* Subscribes to the channels of `sides` not subscribed yet (and to
 * worker_events on a fresh connection). The confirmations arrive among the
 * messages and are skipped there. */
static int subscribe(stepq *q, unsigned *have, unsigned want)
{
    const stepq__rule *rule = &q->km.rules[q->km.role[STEPQ_ROLE_EVENTS]];
    const char *argv[4] = {"SUBSCRIBE"};
    int argc = 1;

    if (*have == 0)
        argv[argc++] = "worker_events";
    for (int side = 0; side < 2; side++) {
        if ((want & (1u << side)) && !(*have & (1u << side)))
            argv[argc++] = rule->tpl[side];
    }
    if (argc == 1)
        return STEPQ_OK;
    if (redisAppendCommandArgv(q->rc, argc, argv, NULL) != REDIS_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    *have |= want;
    return STEPQ_OK;
}

/* (Re)connects and subscribes to the channels of the current phase plus
 * those seen so far. */
static int follow_start(stepq *q, unsigned *have)
{
    stepq_phase p;
    unsigned want = *have;

    if (q->pin >= 0)
        p = (stepq_phase)q->pin;
    else if (stepq_phase_get(q, &p) != STEPQ_OK)
        return STEPQ_ERR;
    *have = 0;
    if (stepq__ensure(q) != STEPQ_OK || subscribe(q, have, want | phase_sides(p)) != STEPQ_OK)
        return STEPQ_ERR;
    /* A subscriber waits as long as it takes: no read timeout. */
    struct timeval none = {0, 0};
    redisSetTimeout(q->rc, none);
    return STEPQ_OK;
}

int stepq_events_follow(stepq *q, long max_events, stepq_event_fn fn, void *arg)
{
    struct seen *seen = stepq__calloc(1, sizeof(*seen));
    int r = q->km.role[STEPQ_ROLE_EVENTS], rc = STEPQ_ERR;
    unsigned have = 0;
    long delivered = 0;

    stepq__clear_error(q);
    if (seen == NULL || r < 0) {
        stepq__set_error(q, r < 0 ? STEPQ_E_INVALID : STEPQ_E_OOM,
                         r < 0 ? "the key map has no 'events' rule" : "out of memory");
        goto out;
    }
    if (follow_start(q, &have) != STEPQ_OK)
        goto out;
    for (;;) {
        void *v = NULL;
        if (redisGetReply(q->rc, &v) != REDIS_OK) {
            /* Lost: reconnect (with backoff) and subscribe again. */
            stepq__drop(q);
            if (follow_start(q, &have) != STEPQ_OK)
                goto out;
            continue;
        }
        redisReply *rep = v;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(rep->element[0]->str, "message") == 0) {
            const redisReply *m = rep->element[2];
            char id[64];
            unsigned sides = event_sides(m->str, m->len);
            if ((sides & ~have) != 0 && subscribe(q, &have, sides) != STEPQ_OK) {
                freeReplyObject(rep);
                goto out_drop;
            }
            if (!event_key(m->str, m->len, id, sizeof(id)) || !seen_before(seen, id)) {
                delivered++;
                if (fn(m->str, m->len, arg) != 0 || (max_events > 0 && delivered >= max_events)) {
                    freeReplyObject(rep);
                    break;
                }
            }
        }
        freeReplyObject(rep);
    }
    rc = STEPQ_OK;
out_drop:
    /* The connection is in subscriber mode: drop it, the next call reconnects. */
    stepq__drop(q);
out:
    stepq__free(seen);
    return rc;
}
