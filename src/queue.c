/*
 * queue.c - the step lifecycle: submit, get, list, claim, progress,
 * complete, fail, cancel. Every mutation is one script of lua/ that reads the
 * phase and writes the keyspaces it names, atomically.
 */
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

#define PRIORITY_MAX    1000000
#define ATTEMPTS_MAX    1000
#define PAYLOAD_MAX     (1024 * 1024)
#define CLAIM_MAX       1000
#define CLAIM_BUDGET    "1000" /* candidates examined per claim */
#define CLAIM_HB_TTL_MS "30000"
#define TEXT_MAX        (64 * 1024)

static int check_id(stepq *q, const char *what, const char *id)
{
    if (id == NULL || !stepq__valid_id(id)) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid %s id '%.64s'; use 1 to 63 characters of A-Z a-z 0-9 _ . -", what,
                         id ? id : "");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* A step id: see STEPQ_STEP_ID_MAX (stepq.h). The migration carries any id;
 * the API refuses only what it cannot name (a NUL cannot be in a C string)
 * and an id whose record name the key map reads as another key: the names
 * of that step would be another step's (job:X:progress is X's progress). */
static int check_step_id(stepq *q, const char *id)
{
    size_t n = id ? strlen(id) : 0;
    int rs = q->km.role[STEPQ_ROLE_STEP];

    if (n == 0 || n >= STEPQ_STEP_ID_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid step id '%.64s'; use 1 to %d bytes (the id stepq gave, or the "
                         "old system's)",
                         id ? id : "", STEPQ_STEP_ID_MAX - 1);
        return STEPQ_ERR;
    }
    for (int side = 0; rs >= 0 && side < 2; side++) {
        sds k = stepq__keymap_key_n(&q->km, (size_t)rs, (enum stepq__side)side, id, n);
        size_t got_len = 0;
        int r = k ? stepq__keymap_match(&q->km, k, sdslen(k), NULL, NULL, &got_len) : -2;
        sdsfree(k);
        if (r == -2) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        if (r != rs || got_len != n) {
            stepq__set_error(q, STEPQ_E_INVALID,
                             "invalid step id '%.64s': the key map reads its record's name as "
                             "rule '%s' of another id, so it cannot name a step; use another id",
                             id, r >= 0 ? q->km.rules[r].name : "?");
            return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}

/* A comma-separated capability list: names like ids, no empty items. */
static int check_caps(stepq *q, const char *what, const char *list)
{
    char item[STEPQ_ID_MAX];
    const char *p = list;

    if (list == NULL || *list == '\0')
        return STEPQ_OK;
    for (;;) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof(item))
            goto bad;
        memcpy(item, p, n);
        item[n] = '\0';
        if (!stepq__valid_id(item))
            goto bad;
        if (p[n] == '\0')
            return STEPQ_OK;
        p += n + 1;
    }
bad:
    stepq__set_error(
        q, STEPQ_E_INVALID,
        "invalid %s '%.100s'; use a comma-separated list of names of A-Z a-z 0-9 _ . -", what,
        list);
    return STEPQ_ERR;
}

static int check_json(stepq *q, const char *what, const char *text)
{
    json_error_t e;
    json_t *j;

    if (strlen(text) > PAYLOAD_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID, "%s is larger than 1 MiB", what);
        return STEPQ_ERR;
    }
    j = json_loads(text, JSON_DECODE_ANY, &e);
    if (j == NULL) {
        stepq__set_error(q, STEPQ_E_INVALID, "%s is not valid JSON: %s at line %d, column %d", what,
                         e.text, e.line, e.column);
        return STEPQ_ERR;
    }
    json_decref(j);
    return STEPQ_OK;
}

#define SUBMIT_ARGS 6
#define BATCH_MAX   100

/* Whether the last call failed on the way (the connection), not by a
 * refusal: the call may have happened, and is asked about again. */
static int lost(const stepq *q)
{
    return q->err == STEPQ_E_IO || q->err == STEPQ_E_EOF;
}

/* Checks one step's options and writes its 6 script arguments (pointing
 * into o, into prio/maxa, or at constants). */
static int submit_args(stepq *q, const stepq_submit_opts *o, char *id, char prio[24], char maxa[24],
                       const char **args)
{
    static const stepq_submit_opts none = {0};

    o = o ? o : &none;
    const char *type = o->type ? o->type : "default";
    const char *payload = o->payload ? o->payload : "{}";
    long max_attempts = o->max_attempts ? o->max_attempts : 3;
    if (o->priority < 0 || o->priority > PRIORITY_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid priority %ld; use 0 to %d (higher runs first)", o->priority,
                         PRIORITY_MAX);
        return STEPQ_ERR;
    }
    if (max_attempts < 1 || max_attempts > ATTEMPTS_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid max attempts %ld; use 1 to %d", max_attempts,
                         ATTEMPTS_MAX);
        return STEPQ_ERR;
    }
    if (check_id(q, "type", type) != STEPQ_OK || check_caps(q, "requires", o->requires) ||
        check_json(q, "payload", payload) != STEPQ_OK)
        return STEPQ_ERR;
    if (stepq__uuid7(id) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_IO, "cannot read random bytes for an id");
        return STEPQ_ERR;
    }
    snprintf(prio, 24, "%ld", o->priority);
    snprintf(maxa, 24, "%ld", max_attempts);
    args[0] = id;
    args[1] = type;
    args[2] = prio;
    args[3] = o->requires ? o->requires : "";
    args[4] = maxa;
    args[5] = payload;
    return STEPQ_OK;
}

int stepq_submit_many(stepq *q, const stepq_submit_opts *o, size_t n, char (*ret_ids)[STEPQ_ID_MAX])
{
    const char *args[1 + SUBMIT_ARGS * BATCH_MAX];
    char ids[BATCH_MAX][37], prio[BATCH_MAX][24], maxa[BATCH_MAX][24];

    stepq__clear_error(q);
    if (n < 1 || n > BATCH_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid batch of %zu steps; use 1 to %d", n,
                         BATCH_MAX);
        return STEPQ_ERR;
    }
    /* Every step is checked before anything is sent: all or nothing. */
    for (size_t i = 0; i < n; i++) {
        if (submit_args(q, o ? &o[i] : NULL, ids[i], prio[i], maxa[i],
                        args + 1 + SUBMIT_ARGS * i) != STEPQ_OK)
            return STEPQ_ERR;
    }
    int nargs = 1 + SUBMIT_ARGS * (int)n;
    args[0] = "0";
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_SUBMIT, nargs, args, NULL);
    if (r == NULL && lost(q)) {
        /* The ids are ours, so a submit whose reply was lost can be sent
         * again: with the retry flag the script skips the ids it created. */
        args[0] = "1";
        r = stepq__eval_queue(q, STEPQ_SCRIPT_SUBMIT, nargs, args, NULL);
    }
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    for (size_t i = 0; i < n; i++)
        memcpy(ret_ids[i], ids[i], sizeof(ids[i]));
    stepq__ns_register(q);
    return STEPQ_OK;
}

int stepq_submit(stepq *q, const stepq_submit_opts *o, char ret_id[STEPQ_ID_MAX])
{
    return stepq_submit_many(q, o, 1, (char(*)[STEPQ_ID_MAX])ret_id);
}

int stepq_get(stepq *q, const char *id, char **ret_json)
{
    redisReply *r;

    stepq__clear_error(q);
    if (check_step_id(q, id) != STEPQ_OK)
        return STEPQ_ERR;
    r = stepq__eval_queue(q, STEPQ_SCRIPT_GET, 1, &id, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_NOTFOUND, "step '%s' does not exist", id);
        return STEPQ_ERR;
    }
    json_t *o = stepq__step_object(r->element[0], r->element[1]);
    freeReplyObject(r);
    return stepq__ret_json(q, o, ret_json);
}

/* A reply that is an array of strings, as a JSON array. */
static json_t *string_array(const redisReply *r)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_STRING)
            json_array_append_new(a, json_stringn(r->element[i]->str, r->element[i]->len));
    }
    return a;
}

int stepq_list(stepq *q, const char *state, long limit, char **ret_json)
{
    static const char *const states[] = {"pending", "active", "completed", "failed"};
    char lim[24];
    int ok = 0;

    stepq__clear_error(q);
    for (size_t i = 0; state != NULL && i < 4; i++)
        ok |= strcmp(state, states[i]) == 0;
    if (!ok) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "unknown state '%s'; expected one of: pending, active, completed, failed",
                         state ? state : "");
        return STEPQ_ERR;
    }
    if (limit < 1 || limit > 100000) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid limit %ld; use 1 to 100000", limit);
        return STEPQ_ERR;
    }
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *args[] = {state, lim};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_LIST, 2, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    json_t *a = string_array(r);
    freeReplyObject(r);
    return stepq__ret_json(q, a, ret_json);
}

/* Joins caps into "a,b,c" in buf; STEPQ_ERR when they do not fit or one
 * is not a valid name. */
static int join_caps(stepq *q, const char *const *caps, size_t n, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(caps[i]);
        if (!stepq__valid_id(caps[i]) || used + l + 2 > len) {
            stepq__set_error(q, STEPQ_E_INVALID,
                             "invalid capability '%.64s'; use names of A-Z a-z 0-9 _ . - (at "
                             "most %zu bytes in all)",
                             caps[i], len - 1);
            return STEPQ_ERR;
        }
        if (used > 0)
            buf[used++] = ',';
        memcpy(buf + used, caps[i], l + 1);
        used += l;
    }
    return STEPQ_OK;
}

/* Is `field` of the flat hash reply h equal to `value`? */
static int field_is(const redisReply *h, const char *field, const char *value)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && strcmp(f->str, field) == 0)
            return v->type == REDIS_REPLY_STRING && strcmp(v->str, value) == 0;
    }
    return 0;
}

/*
 * Reads the records of the steps a claim returned (id, key pairs) in one
 * pipelined round trip, into the array a. The claim script returns key
 * names, not records: an HGETALL inside a script costs five times what it
 * costs as a plain command (callgrind), and the record is most of a claim's
 * work. Read after the claim, a record shows the step's state then: one
 * cancelled or requeued meanwhile is left out (its status or token says
 * so); one whose key is gone (the phase moved on) is read again through the
 * get script, which finds it where the phase reads. STEPQ_ERR on a
 * connection error (the steps stay claimed with this token).
 */
static int claim_read(stepq *q, const redisReply *r, const char *token, json_t *a)
{
    size_t n = r->elements / 2;

    for (size_t i = 0; i < n; i++) {
        const redisReply *k = r->element[2 * i + 1];
        redisAppendCommand(q->rc, "HGETALL %b", k->str, k->len);
    }
    for (size_t i = 0; i < n; i++) {
        redisReply *h = stepq__read_reply(q), *got = NULL;
        if (h == NULL) {
            if (lost(q))
                return STEPQ_ERR;
            stepq__clear_error(q);
            continue; /* not a hash (an error reply): nothing to run */
        }
        if (h->type == REDIS_REPLY_ARRAY && h->elements == 0) {
            const char *id = r->element[2 * i]->str;
            got = stepq__eval_queue(q, STEPQ_SCRIPT_GET, 1, &id, NULL);
            if (got == NULL && lost(q)) {
                freeReplyObject(h);
                return STEPQ_ERR;
            }
            stepq__clear_error(q); /* not found: left out */
        }
        const redisReply *rec = h;
        if (got != NULL && got->type == REDIS_REPLY_ARRAY && got->elements == 2)
            rec = got->element[0];
        if (rec->type == REDIS_REPLY_ARRAY && field_is(rec, "status", "active") &&
            field_is(rec, "token", token)) {
            /* The id is the one claimed (the key's), whatever the record's
             * own `id` field says: a record of the old system may lack it. */
            const redisReply *id = r->element[2 * i];
            json_t *o = stepq__step_object(rec, NULL);
            if (o != NULL)
                json_object_set_new(o, "id", json_stringn(id->str, id->len));
            json_array_append_new(a, o);
        }
        freeReplyObject(got);
        freeReplyObject(h);
    }
    return STEPQ_OK;
}

/* A claim whose steps may be held with `token` but never reached the caller
 * is remembered, so that the next claim of `worker` takes them first. */
static void claim_remember(stepq *q, const char *worker, const char *token)
{
    snprintf(q->claim_token, sizeof(q->claim_token), "%s", token);
    snprintf(q->claim_worker, sizeof(q->claim_worker), "%s", worker);
}

int stepq_claim(stepq *q, const char *worker, const char *const *caps, size_t ncaps, long max,
                char **ret_json)
{
    char capbuf[4096], token[33], count[24];
    redisReply *r;

    stepq__clear_error(q);
    if (check_id(q, "worker", worker) != STEPQ_OK ||
        join_caps(q, caps, ncaps, capbuf, sizeof(capbuf)) != STEPQ_OK)
        return STEPQ_ERR;
    if (max < 1 || max > CLAIM_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid claim count %ld; use 1 to %d", max,
                         CLAIM_MAX);
        return STEPQ_ERR;
    }
    /* A claim of this worker lost on the way (below) is resumed: with its
     * token and the retry flag, the script returns what the token holds
     * before it claims more. */
    int resume = q->claim_token[0] != '\0' && strcmp(q->claim_worker, worker) == 0;
    if (resume)
        memcpy(token, q->claim_token, sizeof(token));
    else if (stepq__random_hex(token, 16) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_IO, "cannot read random bytes for a token");
        return STEPQ_ERR;
    }
    snprintf(count, sizeof(count), "%ld", max);
    const char *args[] = {
        worker, token, capbuf, count, CLAIM_BUDGET, CLAIM_HB_TTL_MS, resume ? "1" : "0"};
    /* Until the steps are in the caller's hands, the claim may have
     * happened with nobody to run its steps: remember it (one claim a
     * handle; another worker's lost claim is not overwritten). */
    int own = resume || q->claim_token[0] == '\0';
    if (own)
        claim_remember(q, worker, token);
    r = stepq__eval_queue(q, STEPQ_SCRIPT_CLAIM, 7, args, NULL);
    if (r == NULL && lost(q)) {
        /* The claim may have happened with its reply lost: ask again with
         * the same token, and the script returns what that token holds. */
        args[6] = "1";
        r = stepq__eval_queue(q, STEPQ_SCRIPT_CLAIM, 7, args, NULL);
    }
    if (r == NULL) {
        /* Refused by the script: nothing was claimed. Any other error may
         * have come after the claim: it stays remembered. */
        if (own &&
            (q->err == STEPQ_E_INVALID || q->err == STEPQ_E_CONFLICT || q->err == STEPQ_E_NOTFOUND))
            q->claim_token[0] = '\0';
        return STEPQ_ERR;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        if (own)
            q->claim_token[0] = '\0';
        stepq__set_error(q, STEPQ_E_NOTFOUND, "nothing to claim for worker '%s'", worker);
        return STEPQ_ERR;
    }
    /* id, key pairs, all strings: claim_read indexes them as such. */
    int shape = r->elements % 2 == 0;
    for (size_t i = 0; shape && i < r->elements; i++)
        shape = r->element[i]->type == REDIS_REPLY_STRING;
    if (!shape) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_PROTOCOL,
                         "unexpected reply from claim.lua: expected id, key pairs (the claim "
                         "stays remembered)");
        return STEPQ_ERR;
    }
    json_t *a = json_array();
    if (a != NULL && claim_read(q, r, token, a) != STEPQ_OK && lost(q)) {
        /* Claimed, but the records were lost on the way: the retry flag
         * returns what this token holds. */
        freeReplyObject(r);
        json_array_clear(a);
        args[6] = "1";
        r = stepq__eval_queue(q, STEPQ_SCRIPT_CLAIM, 7, args, NULL);
        if (r != NULL && (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0 ||
                          claim_read(q, r, token, a) != STEPQ_OK)) {
            freeReplyObject(r);
            r = NULL;
        }
    }
    if (r == NULL || a == NULL) {
        freeReplyObject(r);
        json_decref(a);
        if (a == NULL)
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR; /* the claim stays remembered */
    }
    freeReplyObject(r);
    if (own)
        q->claim_token[0] = '\0';
    if (json_array_size(a) == 0) {
        json_decref(a);
        stepq__set_error(q, STEPQ_E_NOTFOUND, "nothing to claim for worker '%s'", worker);
        return STEPQ_ERR;
    }
    return stepq__ret_json(q, a, ret_json);
}

/* Runs one of the token-checked scripts: progress, complete, fail. */
static redisReply *held_call(stepq *q, enum stepq__script_id s, const char *id, const char *token,
                             const char *a3, const char *a4)
{
    stepq__clear_error(q);
    if (check_step_id(q, id) != STEPQ_OK)
        return NULL;
    if (token == NULL || *token == '\0' || strlen(token) > 64) {
        stepq__set_error(q, STEPQ_E_INVALID, "a claim token is required (from the claim)");
        return NULL;
    }
    if (strlen(a3) > TEXT_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "text is larger than 64 KiB; store large results "
                         "elsewhere and keep a reference");
        return NULL;
    }
    const char *args[] = {id, token, a3, a4};
    return stepq__eval_queue(q, s, 4, args, NULL);
}

int stepq_progress(stepq *q, const char *id, const char *token, long percent, const char *message)
{
    char pct[24];

    if (percent < 0 || percent > 100) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid percent %ld; use 0 to 100", percent);
        return STEPQ_ERR;
    }
    snprintf(pct, sizeof(pct), "%ld", percent);
    if (message != NULL && strlen(message) > 4096) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "progress message is longer than 4096 bytes; shorten it");
        return STEPQ_ERR;
    }
    redisReply *r = held_call(q, STEPQ_SCRIPT_PROGRESS, id, token, pct, message ? message : "");
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq_complete_many(stepq *q, stepq_ack *acks, size_t n)
{
    const char *args[1 + 3 * BATCH_MAX];
    int failed = 0;

    stepq__clear_error(q);
    if (n < 1 || n > BATCH_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid batch of %zu acks; use 1 to %d", n,
                         BATCH_MAX);
        return STEPQ_ERR;
    }
    args[0] = q->retention;
    for (size_t i = 0; i < n; i++) {
        const char *result = acks[i].result ? acks[i].result : "";
        if (check_step_id(q, acks[i].id) != STEPQ_OK)
            return STEPQ_ERR;
        if (acks[i].token == NULL || *acks[i].token == '\0' || strlen(acks[i].token) > 64) {
            stepq__set_error(q, STEPQ_E_INVALID, "a claim token is required (from the claim)");
            return STEPQ_ERR;
        }
        if (strlen(result) > TEXT_MAX) {
            stepq__set_error(q, STEPQ_E_INVALID,
                             "result of '%s' is larger than 64 KiB; store large results "
                             "elsewhere and keep a reference",
                             acks[i].id);
            return STEPQ_ERR;
        }
        args[1 + 3 * i] = acks[i].id;
        args[2 + 3 * i] = acks[i].token;
        args[3 + 3 * i] = result;
    }
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_COMPLETE, 1 + 3 * (int)n, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply to complete");
        return STEPQ_ERR;
    }
    /* Each ack gets its own status; the call fails with the first error. */
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_INTEGER) {
            acks[i].status = STEPQ_E_NONE;
            continue;
        }
        char first[STEPQ_ERRSTR_MAX];
        int kind = q->err;
        if (failed)
            snprintf(first, sizeof(first), "%s", q->errstr);
        stepq__set_script_error(q, e->type == REDIS_REPLY_STRING ? e->str : "");
        acks[i].status = q->err;
        if (failed) {
            q->err = kind;
            snprintf(q->errstr, sizeof(q->errstr), "%s", first);
        }
        failed = 1;
    }
    freeReplyObject(r);
    return failed ? STEPQ_ERR : STEPQ_OK;
}

int stepq_complete(stepq *q, const char *id, const char *token, const char *result)
{
    stepq_ack a = {.id = id, .token = token, .result = result};

    return stepq_complete_many(q, &a, 1);
}

int stepq_fail(stepq *q, const char *id, const char *token, const char *error, int *ret_final)
{
    redisReply *r = held_call(q, STEPQ_SCRIPT_FAIL, id, token, error ? error : "", q->retention);

    if (r == NULL)
        return STEPQ_ERR;
    if (ret_final != NULL)
        *ret_final = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq_cancel(stepq *q, const char *id)
{
    stepq__clear_error(q);
    if (check_step_id(q, id) != STEPQ_OK)
        return STEPQ_ERR;
    const char *args[] = {id, q->retention};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_CANCEL, 2, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}
