/*
 * test_reaper.c - the reaper trusts the records, not the collections
 * (design.md, invariant 7): a member of an active or worker set whose record
 * disagrees is a stale entry, dropped and counted, never requeued.
 */
#include <unistd.h>
#include "test.h"
#include "testlib.h"

/* Submits a step, claims it for `worker` and returns its token in tok. */
static void claim_one(const char *worker, char *id, char *tok, size_t toklen)
{
    char *json = NULL;

    if (stepq_submit(Q, NULL, id) != STEPQ_OK)
        FAILF("submit: %s", stepq_errstr(Q));
    if (stepq_claim(Q, worker, NULL, 0, 1, &json) != STEPQ_OK) {
        FAILF("claim: %s", stepq_errstr(Q));
        return;
    }
    json[strlen(json) - 1] = '\0'; /* one step: unwrap the array */
    snprintf(tok, toklen, "%s", t_field(json + 1, "token"));
    stepq_str_free(json);
}

static long long stale_dropped(void)
{
    const char *v = t_str("HGET stepq:stats stale_dropped");
    return *v ? atoll(v) : 0;
}

/* The scenario of issue 10: a completed step left in the active set and in
 * its worker's set (a stale copy), the worker dead: `reap --timeout-ms 0`
 * must not put the completed step back in pending. */
static void test_completed_not_requeued(void)
{
    char id[STEPQ_ID_MAX], tok[64];
    long n = -1;

    t_flush();
    CHECK(stepq_worker_register(Q, "w1", NULL, 0, 60000) == STEPQ_OK);
    claim_one("w1", id, tok, sizeof(tok));
    CHECK(stepq_complete(Q, id, tok, "done") == STEPQ_OK);
    freeReplyObject(t_cmd("SADD jobs:active %s", id));
    freeReplyObject(t_cmd("SADD worker:w1:jobs %s", id));
    freeReplyObject(t_cmd("DEL worker:w1:heartbeat")); /* w1 dies */
    CHECK(stepq_reap(Q, 0, &n) == STEPQ_OK);
    ASSERT_EQ(n, 0);
    ASSERT_STR(t_str("HGET job:%s status", id), "completed");
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
    ASSERT_EQ(t_int("SISMEMBER jobs:active %s", id), 0);
    ASSERT_EQ(stale_dropped(), 1);
    /* A second pass finds nothing left to do. */
    stepq_reap_opts o = {.timeout_ms = 0};
    stepq_reap_result res = {.stale = -1};
    CHECK(stepq_reap_pass(Q, &o, &res) == STEPQ_OK);
    ASSERT_EQ(res.requeued, 0);
    ASSERT_EQ(res.stale, 0);
    ASSERT_EQ(stale_dropped(), 1);
    CHECK(stepq_reap_pass(Q, NULL, &res) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
}

/* The same in phase step, with the stale member on the new side. */
static void test_completed_not_requeued_in_step(void)
{
    char id[STEPQ_ID_MAX], tok[64];
    long n = -1;

    t_flush();
    t_phase("step");
    CHECK(stepq_worker_register(Q, "w1", NULL, 0, 60000) == STEPQ_OK);
    claim_one("w1", id, tok, sizeof(tok));
    CHECK(stepq_complete(Q, id, tok, "done") == STEPQ_OK);
    freeReplyObject(t_cmd("SADD steps:active %s", id));
    freeReplyObject(t_cmd("SADD worker:w1:steps %s", id));
    freeReplyObject(t_cmd("DEL worker:w1:heartbeat"));
    CHECK(stepq_reap(Q, 0, &n) == STEPQ_OK);
    ASSERT_EQ(n, 0);
    ASSERT_STR(t_str("HGET step:%s status", id), "completed");
    ASSERT_EQ(t_int("ZCARD steps:pending"), 0);
    ASSERT_EQ(t_int("SISMEMBER steps:active %s", id), 0);
    ASSERT_EQ(t_exists("job:%s", id), 0);
}

/* A stale entry is dropped even while its worker lives: the record, not
 * the worker's health, says it is not active. */
static void test_stale_dropped_while_worker_lives(void)
{
    char id[STEPQ_ID_MAX], tok[64];

    t_flush();
    CHECK(stepq_worker_register(Q, "w1", NULL, 0, 60000) == STEPQ_OK);
    claim_one("w1", id, tok, sizeof(tok));
    CHECK(stepq_complete(Q, id, tok, "done") == STEPQ_OK);
    freeReplyObject(t_cmd("SADD jobs:active %s", id));
    freeReplyObject(t_cmd("SADD worker:w1:jobs %s", id));
    /* And an active member whose record is gone (expired), and a step
     * held by w2 of which w1's set has a copy. */
    freeReplyObject(t_cmd("SADD jobs:active gone1"));
    char id2[STEPQ_ID_MAX], tok2[64];
    CHECK(stepq_worker_register(Q, "w2", NULL, 0, 60000) == STEPQ_OK);
    claim_one("w2", id2, tok2, sizeof(tok2));
    freeReplyObject(t_cmd("SADD worker:w1:jobs %s", id2));
    stepq_reap_opts o = {.timeout_ms = 60000};
    stepq_reap_result res = {.requeued = -1};
    CHECK(stepq_reap_pass(Q, &o, &res) == STEPQ_OK);
    ASSERT_EQ(res.requeued, 0);
    ASSERT_EQ(res.stale, 3);
    ASSERT_EQ(res.workers_removed, 0);
    ASSERT_EQ(t_int("SCARD jobs:active"), 1);
    ASSERT_EQ(t_int("SISMEMBER jobs:active %s", id2), 1);
    ASSERT_EQ(t_int("SCARD worker:w1:jobs"), 0);
    ASSERT_EQ(t_int("SISMEMBER worker:w2:jobs %s", id2), 1);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
    ASSERT_EQ(stale_dropped(), 3);
}

/* A step active with another worker is not requeued because a dead worker's
 * set also holds it (a stale copy there); a legacy record without a
 * `worker` field that ended is not requeued either; one that is active in a
 * dead worker's set is. */
static void test_held_by_that_worker_only(void)
{
    char id[STEPQ_ID_MAX], tok[64];

    t_flush();
    CHECK(stepq_worker_register(Q, "w1", NULL, 0, 60000) == STEPQ_OK);
    CHECK(stepq_worker_register(Q, "w2", NULL, 0, 60000) == STEPQ_OK);
    claim_one("w2", id, tok, sizeof(tok));
    freeReplyObject(t_cmd("SADD worker:w1:jobs %s", id));
    freeReplyObject(t_cmd("HSET job:L1 id L1 status completed priority 2"));
    freeReplyObject(t_cmd("HSET job:L2 id L2 status active priority 3"));
    freeReplyObject(t_cmd("SADD jobs:active L1 L2"));
    freeReplyObject(t_cmd("SADD worker:w1:jobs L1 L2"));
    freeReplyObject(t_cmd("DEL worker:w1:heartbeat"));
    stepq_reap_opts o = {.timeout_ms = 60000};
    stepq_reap_result res = {.requeued = -1};
    CHECK(stepq_reap_pass(Q, &o, &res) == STEPQ_OK);
    ASSERT_EQ(res.requeued, 1); /* L2 */
    ASSERT_EQ(res.stale, 2);    /* the copy of id in w1's set, and L1 */
    ASSERT_EQ(res.workers_removed, 1);
    ASSERT_STR(t_str("HGET job:%s status", id), "active");
    ASSERT_STR(t_str("HGET job:%s worker", id), "w2");
    ASSERT_EQ(t_int("SISMEMBER jobs:active %s", id), 1);
    ASSERT_EQ(t_int("SISMEMBER worker:w2:jobs %s", id), 1);
    CHECK(stepq_complete(Q, id, tok, "ok") == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:L1 status"), "completed");
    ASSERT_STR(t_str("ZSCORE jobs:pending L1"), "");
    ASSERT_STR(t_str("ZSCORE jobs:pending L2"), "3");
    ASSERT_EQ(t_int("SCARD jobs:active"), 0);
}

/* Claim already trusts the record: a pending member whose record says
 * completed is dropped from the queue, never claimed. */
static void test_claim_drops_completed_pending(void)
{
    char id[STEPQ_ID_MAX], tok[64], *json = NULL;

    t_flush();
    claim_one("w1", id, tok, sizeof(tok));
    CHECK(stepq_complete(Q, id, tok, "done") == STEPQ_OK);
    freeReplyObject(t_cmd("ZADD jobs:pending 5 %s", id));
    CHECK(stepq_claim(Q, "w1", NULL, 0, 1, &json) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_NOTFOUND);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
    ASSERT_STR(t_str("HGET job:%s status", id), "completed");
    ASSERT_STR(t_str("HGET job:%s attempts", id), "1");
    ASSERT_STR(t_str("HGET stepq:stats orphans_dropped"), "1");
}

/* Completes a fresh step; its id goes into id. */
static void complete_one(char *id)
{
    char tok[64];

    claim_one("w1", id, tok, sizeof(tok));
    if (stepq_complete(Q, id, tok, "done") != STEPQ_OK)
        FAILF("complete: %s", stepq_errstr(Q));
}

/* Is `id` in the JSON array of `stepq_list(state)`? */
static int listed(const char *state, const char *id)
{
    char *json = NULL, quoted[STEPQ_ID_MAX + 2];
    int in = 0;

    if (stepq_list(Q, state, 100000, &json) != STEPQ_OK) {
        FAILF("list: %s", stepq_errstr(Q));
        return -1;
    }
    snprintf(quoted, sizeof(quoted), "\"%s\"", id);
    in = strstr(json, quoted) != NULL;
    stepq_str_free(json);
    return in;
}

/* Finding 5 of issue 10: the completed and failed sets got their TTL
 * renewed by every completion, so they never expired, and ids whose record
 * expired stayed listed forever. Now the sets keep no TTL of ours and a
 * reaper pass prunes ids whose record is gone. */
static void test_ended_sets_pruned(void)
{
    char a[STEPQ_ID_MAX], b[STEPQ_ID_MAX], f[STEPQ_ID_MAX], tok[64];
    long n = -1;

    t_flush();
    complete_one(a);
    complete_one(b);
    ASSERT_EQ(t_int("PTTL jobs:completed"), -1);
    stepq_submit_opts once = {.max_attempts = 1};
    CHECK(stepq_submit(Q, &once, f) == STEPQ_OK);
    char *json = NULL;
    CHECK(stepq_claim(Q, "w1", NULL, 0, 1, &json) == STEPQ_OK);
    json[strlen(json) - 1] = '\0';
    snprintf(tok, sizeof(tok), "%s", t_field(json + 1, "token"));
    stepq_str_free(json);
    CHECK(stepq_fail(Q, f, tok, "boom", NULL) == STEPQ_OK);
    ASSERT_EQ(t_int("PTTL jobs:failed"), -1);
    CHECK(t_int("PTTL job:%s", a) > 0); /* the records keep theirs */
    /* The records of a and f expire. */
    freeReplyObject(t_cmd("DEL job:%s job:%s", a, f));
    ASSERT_EQ(listed("completed", a), 1);
    CHECK(stepq_reap(Q, 60000, &n) == STEPQ_OK);
    ASSERT_EQ(listed("completed", a), 0);
    ASSERT_EQ(listed("completed", b), 1);
    ASSERT_EQ(listed("failed", f), 0);
    CHECK(stepq_get(Q, b, &json) == STEPQ_OK);
    stepq_str_free(json);
}

/* keep_completed: the set is held at its cap, oldest finished first (a
 * page covers the whole set here), and the steps removed are gone whole. */
static void test_cap_holds(void)
{
    char ids[10][STEPQ_ID_MAX];

    t_flush();
    for (int i = 0; i < 10; i++) {
        complete_one(ids[i]);
        /* Finished in the reverse order of their ids. */
        freeReplyObject(t_cmd("HSET job:%s finished_at %d", ids[i], 2000000 - i));
    }
    freeReplyObject(t_cmd("HSET job:%s:progress percent 50", ids[9]));
    stepq_reap_opts o = {.timeout_ms = 60000, .keep_completed = 3};
    stepq_reap_result res = {0};
    CHECK(stepq_reap_pass(Q, &o, &res) == STEPQ_OK);
    ASSERT_EQ(res.capped, 7);
    ASSERT_EQ(res.pruned, 0);
    ASSERT_EQ(t_int("SCARD jobs:completed"), 3);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(t_int("SISMEMBER jobs:completed %s", ids[i]), 1);
        ASSERT_EQ(t_exists("job:%s", ids[i]), 1);
    }
    for (int i = 3; i < 10; i++)
        ASSERT_EQ(t_exists("job:%s", ids[i]), 0);
    ASSERT_EQ(t_exists("job:%s:progress", ids[9]), 0);
    ASSERT_STR(t_str("HGET stepq:stats capped"), "7");
    /* At the cap, nothing more goes. */
    CHECK(stepq_reap_pass(Q, &o, &res) == STEPQ_OK);
    ASSERT_EQ(res.capped, 0);
    ASSERT_EQ(t_int("SCARD jobs:completed"), 3);
    stepq_reap_opts bad = {.keep_failed = -1};
    CHECK(stepq_reap_pass(Q, &bad, &res) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
}

/* A pass does bounded work: about prune_count members of a set, and the
 * cursor kept in stepq:prune carries the next pass on until the whole set
 * was seen (half of the members here have a live record: a pass that
 * always started over would look at the same page forever). */
static void test_prune_bounded(void)
{
    char keep[STEPQ_ID_MAX];

    t_flush();
    complete_one(keep);
    for (int i = 0; i < 2000; i++) {
        if (i % 2 == 0)
            redisAppendCommand(R, "HSET job:x-%d status completed", i);
        else
            redisAppendCommand(R, "PING");
        redisAppendCommand(R, "SADD jobs:completed x-%d", i);
    }
    for (int i = 0; i < 4000; i++) {
        void *v;
        if (redisGetReply(R, &v) != REDIS_OK)
            exit(1);
        freeReplyObject(v);
    }
    ASSERT_EQ(t_int("SCARD jobs:completed"), 2001);
    stepq_reap_opts o = {.timeout_ms = 60000, .prune_count = 50};
    stepq_reap_result res = {0};
    CHECK(stepq_reap_pass(Q, &o, &res) == STEPQ_OK);
    CHECK(res.pruned > 0);
    CHECK(res.pruned <= 100); /* SSCAN's COUNT is a hint: a bucket more or so */
    ASSERT_EQ(t_int("SCARD jobs:completed"), 2001 - res.pruned);
    CHECK(strcmp(t_str("HGET stepq:prune completed_cursor"), "0") != 0);
    ASSERT_STR(t_str("HGET stepq:prune completed_key"), "jobs:completed");
    int passes = 1;
    while (t_int("SCARD jobs:completed") > 1001 && passes < 200) {
        CHECK(stepq_reap_pass(Q, &o, &res) == STEPQ_OK);
        CHECK(res.pruned <= 100);
        passes++;
    }
    CHECK(passes >= 10);
    ASSERT_EQ(t_int("SCARD jobs:completed"), 1001);
    ASSERT_EQ(listed("completed", keep), 1);
    ASSERT_STR(t_str("HGET stepq:stats pruned"), "1000");
}

/* The retention is the handle's: the records of ended steps get it. */
static void test_retention_option(void)
{
    char id[STEPQ_ID_MAX], tok[64];
    stepq_options o = {.ignore_env_pin = 1, .retention_ms = 5000};
    stepq *saved = Q;

    t_flush();
    Q = stepq_connect(t_url(), &o);
    REQUIRE(Q != NULL && stepq_err(Q) == STEPQ_E_NONE);
    complete_one(id);
    long long ttl = t_int("PTTL job:%s", id);
    CHECK(ttl > 0 && ttl <= 5000);
    claim_one("w1", id, tok, sizeof(tok));
    CHECK(stepq_cancel(Q, id) == STEPQ_OK);
    ttl = t_int("PTTL job:%s", id);
    CHECK(ttl > 0 && ttl <= 5000);
    stepq_free(Q);
    Q = saved;
    stepq_options bad = {.ignore_env_pin = 1, .retention_ms = 999};
    stepq *b = stepq_connect(t_url(), &bad);
    ASSERT_EQ(stepq_err(b), STEPQ_E_INVALID);
    CHECK(strstr(stepq_errstr(b), "invalid retention 999 ms") != NULL);
    stepq_free(b);
}

/* Finding 6 of issue 10: a worker id is owned by one process. A second live
 * registration of the id is refused; heartbeat and deregister act only on
 * the handle's own registration; a dead one's is taken over, its steps
 * requeued first, and the old owner finds out at its next heartbeat. */
static void test_worker_id_owned(void)
{
    char id[STEPQ_ID_MAX], tok[64];
    stepq_options opts = {.ignore_env_pin = 1};
    stepq *q2 = stepq_connect(t_url(), &opts);

    t_flush();
    REQUIRE(q2 != NULL && stepq_err(q2) == STEPQ_E_NONE);
    CHECK(stepq_worker_register(Q, "wx", NULL, 0, 60000) == STEPQ_OK);
    CHECK(stepq_worker_register(Q, "wx", NULL, 0, 60000) == STEPQ_OK); /* renews */
    CHECK(stepq_worker_register(q2, "wx", NULL, 0, 60000) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(q2), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(q2), "worker 'wx' is registered by a live process") != NULL);
    CHECK(strstr(stepq_errstr(q2), "pick another --id, or stop that process first") != NULL);
    CHECK(stepq_worker_heartbeat(q2, "wx", 60000) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(q2), STEPQ_E_CONFLICT);
    claim_one("wx", id, tok, sizeof(tok));
    CHECK(stepq_worker_deregister(q2, "wx") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(q2), STEPQ_E_CONFLICT);
    ASSERT_STR(t_str("HGET job:%s status", id), "active"); /* left alone */
    ASSERT_EQ(t_exists("worker:wx"), 1);
    CHECK(stepq_worker_heartbeat(Q, "wx", 60000) == STEPQ_OK);

    /* Q's process stalls past its ttl: q2 takes the id over, and Q's step
     * goes back to the queue. */
    freeReplyObject(t_cmd("DEL worker:wx:heartbeat"));
    CHECK(stepq_worker_register(q2, "wx", NULL, 0, 60000) == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:%s status", id), "pending");
    CHECK(strstr(t_str("HGET job:%s error", id), "worker wx lost") != NULL);
    ASSERT_EQ(t_int("SCARD worker:wx:jobs"), 0);
    CHECK(stepq_complete(Q, id, tok, "late") == STEPQ_ERR);
    CHECK(stepq_worker_heartbeat(Q, "wx", 60000) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "registered by another process now") != NULL);
    CHECK(stepq_worker_deregister(Q, "wx") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    ASSERT_EQ(t_exists("worker:wx"), 1);
    CHECK(stepq_worker_heartbeat(q2, "wx", 60000) == STEPQ_OK);
    CHECK(stepq_worker_deregister(q2, "wx") == STEPQ_OK);
    ASSERT_EQ(t_exists("worker:wx"), 0);
    stepq_free(q2);
}

int main(void)
{
    t_setup();
    RUN(test_completed_not_requeued);
    RUN(test_completed_not_requeued_in_step);
    RUN(test_stale_dropped_while_worker_lives);
    RUN(test_held_by_that_worker_only);
    RUN(test_claim_drops_completed_pending);
    RUN(test_ended_sets_pruned);
    RUN(test_cap_holds);
    RUN(test_prune_bounded);
    RUN(test_retention_option);
    RUN(test_worker_id_owned);
    t_teardown();
    TEST_END();
}
