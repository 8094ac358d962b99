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

int main(void)
{
    t_setup();
    RUN(test_completed_not_requeued);
    RUN(test_completed_not_requeued_in_step);
    RUN(test_stale_dropped_while_worker_lives);
    RUN(test_held_by_that_worker_only);
    RUN(test_claim_drops_completed_pending);
    t_teardown();
    TEST_END();
}
