/*
 * events.c - following the lifecycle events on pub/sub.
 *
 * A follower subscribes to the events channel of both patterns and to
 * worker_events, whatever the phase: in the dual phases every event is
 * published on both channels with one id, and a phase move then never makes
 * the follower miss an event. Duplicates are dropped by event id.
 */
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

#define SEEN_RING 1024

struct seen {
    char ids[SEEN_RING][24];
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

/* The event's "id" if it has one that fits (events of other publishers may
 * have none: those pass through). */
static int event_id(const char *msg, size_t len, char *id, size_t idlen)
{
    json_t *o = json_loadb(msg, len, 0, NULL);
    const char *v = json_string_value(json_object_get(o, "id"));
    int ok = v != NULL && strlen(v) < idlen;

    if (ok)
        snprintf(id, idlen, "%s", v);
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

int stepq_events_follow(stepq *q, long max_events, stepq_event_fn fn, void *arg)
{
    struct seen *seen = stepq__calloc(1, sizeof(*seen));
    int r = q->km.role[STEPQ_ROLE_EVENTS], rc = STEPQ_ERR;
    long delivered = 0;

    if (seen == NULL || r < 0) {
        stepq__set_error(q, r < 0 ? STEPQ_E_INVALID : STEPQ_E_OOM,
                         r < 0 ? "the key map has no 'events' rule" : "out of memory");
        goto out;
    }
    const char *argv[] = {"SUBSCRIBE", q->km.rules[r].tpl[0], q->km.rules[r].tpl[1],
                          "worker_events"};
    redisReply *rep = stepq__command(q, 4, argv, NULL);
    if (rep == NULL)
        goto out;
    freeReplyObject(rep);
    /* A subscriber waits as long as it takes: no read timeout. */
    struct timeval none = {0, 0};
    redisSetTimeout(q->rc, none);
    for (;;) {
        void *v = NULL;
        if (redisGetReply(q->rc, &v) != REDIS_OK) {
            stepq__set_error(q, STEPQ_E_IO, "lost the subscription: %s", q->rc->errstr);
            stepq__drop(q);
            goto out;
        }
        rep = v;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
            strcmp(rep->element[0]->str, "message") == 0) {
            const redisReply *m = rep->element[2];
            char id[24];
            if (!event_id(m->str, m->len, id, sizeof(id)) || !seen_before(seen, id)) {
                delivered++;
                if (fn(m->str, m->len, arg) != 0 || (max_events > 0 && delivered >= max_events)) {
                    freeReplyObject(rep);
                    break;
                }
            }
        }
        freeReplyObject(rep);
    }
    /* The connection is in subscriber mode: drop it, the next call reconnects. */
    stepq__drop(q);
    rc = STEPQ_OK;
out:
    stepq__free(seen);
    return rc;
}
