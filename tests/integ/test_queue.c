/* test_queue.c - the step lifecycle in phase job, against a real Redis. */
#include <unistd.h>
#include "test.h"
#include "testlib.h"
#include "stepq_private.h"

static char *claim1(const char *worker, const char *const *caps, size_t n)
{
    char *json = NULL;
    if (stepq_claim(Q, worker, caps, n, 1, &json) != STEPQ_OK)
        return NULL;
    /* One step: unwrap the array. */
    size_t len = strlen(json);
    memmove(json, json + 1, len - 2);
    json[len - 2] = '\0';
    return json;
}

static void submit(stepq_submit_opts *o, char *id)
{
    if (stepq_submit(Q, o, id) != STEPQ_OK)
        FAILF("submit: %s", stepq_errstr(Q));
}

static void test_lifecycle(void)
{
    char id[STEPQ_ID_MAX], tok[64];
    char *json;
    stepq_submit_opts o = {.type = "resize", .priority = 7, .payload = "{\"w\":640}"};

    t_flush();
    submit(&o, id);
    REQUIRE(stepq_get(Q, id, &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "status"), "pending");
    ASSERT_STR(t_field(json, "type"), "resize");
    ASSERT_STR(t_field(json, "priority"), "7");
    ASSERT_STR(t_field(json, "payload"), "{\"w\":640}");
    ASSERT_STR(t_field(json, "progress"), "{}");
    stepq_str_free(json);
    ASSERT_EQ(t_int("ZSCORE jobs:pending %s", id), -999); /* a bulk string, not an int */
    ASSERT_STR(t_str("ZSCORE jobs:pending %s", id), "7");

    json = claim1("w1", NULL, 0);
    REQUIRE(json != NULL);
    ASSERT_STR(t_field(json, "id"), id);
    ASSERT_STR(t_field(json, "status"), "active");
    ASSERT_STR(t_field(json, "attempts"), "1");
    snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
    stepq_str_free(json);
    ASSERT_EQ(t_int("SISMEMBER jobs:active %s", id), 1);
    ASSERT_EQ(t_int("SISMEMBER worker:w1:jobs %s", id), 1);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);

    CHECK(stepq_progress(Q, id, tok, 40, "resizing") == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:%s:progress percent", id), "40");
    CHECK(stepq_complete(Q, id, tok, "{\"ok\":1}") == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:%s status", id), "completed");
    ASSERT_EQ(t_int("SISMEMBER jobs:completed %s", id), 1);
    ASSERT_EQ(t_int("SISMEMBER jobs:active %s", id), 0);
    ASSERT_EQ(t_int("SISMEMBER worker:w1:jobs %s", id), 0);
    /* Retention: the step and its progress carry a TTL; the set none (the
     * reaper prunes ids whose record expired, test_reaper). */
    ASSERT_EQ(t_int("PTTL jobs:completed"), -1);
    CHECK(t_int("PTTL job:%s", id) > 0);
    CHECK(t_int("PTTL job:%s:progress", id) > 0);
    /* Nothing of the new pattern in phase job. */
    ASSERT_EQ(t_exists("step:%s", id), 0);
    ASSERT_EQ(t_int("EXISTS steps:completed"), 0);
    /* A second complete is refused. */
    CHECK(stepq_complete(Q, id, tok, "") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
}

static void test_priority_then_fifo(void)
{
    char ids[6][STEPQ_ID_MAX];
    long prio[6] = {1, 5, 1, 5, 3, 5};
    int order[6] = {1, 3, 5, 4, 0, 2}; /* by priority desc, then submit order */

    t_flush();
    /* Twice: one by one, and as one batch (made within a millisecond: the
     * ids' counter keeps their order). */
    for (int round = 0; round < 2; round++) {
        t_flush();
        if (round == 0) {
            for (int i = 0; i < 6; i++) {
                stepq_submit_opts o = {.priority = prio[i]};
                submit(&o, ids[i]);
            }
        } else {
            stepq_submit_opts o[6];
            for (int i = 0; i < 6; i++)
                o[i] = (stepq_submit_opts){.priority = prio[i]};
            REQUIRE(stepq_submit_many(Q, o, 6, ids) == STEPQ_OK);
        }
        for (int i = 0; i < 6; i++) {
            char *json = claim1("w", NULL, 0);
            REQUIRE(json != NULL);
            ASSERT_STR(t_field(json, "id"), ids[order[i]]);
            stepq_str_free(json);
        }
        CHECK(claim1("w", NULL, 0) == NULL);
        ASSERT_EQ(stepq_err(Q), STEPQ_E_NOTFOUND);
    }
}

static void test_capabilities(void)
{
    char gpu[STEPQ_ID_MAX], any[STEPQ_ID_MAX];
    const char *caps_gpu[] = {"gpu", "x86"};
    stepq_submit_opts o1 = {.priority = 9, .requires = "gpu,x86"}, o2 = {.priority = 1};

    t_flush();
    submit(&o1, gpu);
    submit(&o2, any);
    /* A worker without gpu skips the higher-priority gpu step. */
    char *json = claim1("cpu", NULL, 0);
    REQUIRE(json != NULL);
    ASSERT_STR(t_field(json, "id"), any);
    stepq_str_free(json);
    CHECK(claim1("cpu", NULL, 0) == NULL);
    json = claim1("g", caps_gpu, 2);
    REQUIRE(json != NULL);
    ASSERT_STR(t_field(json, "id"), gpu);
    stepq_str_free(json);
}

static void test_retry_then_failed(void)
{
    char id[STEPQ_ID_MAX], tok[64];
    stepq_submit_opts o = {.max_attempts = 2};
    int final = -1;

    t_flush();
    submit(&o, id);
    for (int attempt = 1; attempt <= 2; attempt++) {
        char *json = claim1("w", NULL, 0);
        REQUIRE(json != NULL);
        ASSERT_STR(t_field(json, "attempts"), attempt == 1 ? "1" : "2");
        snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
        stepq_str_free(json);
        CHECK(stepq_fail(Q, id, tok, "boom", &final) == STEPQ_OK);
        ASSERT_EQ(final, attempt == 2);
    }
    ASSERT_STR(t_str("HGET job:%s status", id), "failed");
    ASSERT_STR(t_str("HGET job:%s error", id), "boom");
    ASSERT_EQ(t_int("SISMEMBER jobs:failed %s", id), 1);
    ASSERT_EQ(t_int("PTTL jobs:failed"), -1);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
}

static void test_cancel(void)
{
    char a[STEPQ_ID_MAX], b[STEPQ_ID_MAX];

    t_flush();
    submit(NULL, a);
    submit(NULL, b);
    CHECK(stepq_cancel(Q, a) == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:%s status", a), "cancelled");
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 1);
    CHECK(stepq_cancel(Q, a) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    char *json = claim1("w", NULL, 0);
    REQUIRE(json != NULL);
    char tok[64];
    snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
    stepq_str_free(json);
    CHECK(stepq_cancel(Q, b) == STEPQ_OK); /* active: the worker loses it */
    CHECK(stepq_complete(Q, b, tok, "") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    ASSERT_EQ(t_int("SCARD jobs:active"), 0);
    CHECK(stepq_cancel(Q, "no-such-step") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_NOTFOUND);
}

/* A worker whose heartbeat expired loses its steps to the reaper; its
 * stale token can then not complete the step another worker reclaimed. */
static void test_reaper_and_stale_token(void)
{
    char id[STEPQ_ID_MAX], tok1[64], tok2[64];
    long n = -1;

    t_flush();
    CHECK(stepq_worker_register(Q, "w1", NULL, 0, 60000) == STEPQ_OK);
    CHECK(stepq_worker_register(Q, "w2", NULL, 0, 60000) == STEPQ_OK);
    submit(NULL, id);
    char *json = claim1("w1", NULL, 0);
    REQUIRE(json != NULL);
    snprintf(tok1, sizeof(tok1), "%s", t_field(json, "token"));
    stepq_str_free(json);
    CHECK(stepq_reap(Q, 60000, &n) == STEPQ_OK);
    ASSERT_EQ(n, 0);                                   /* alive */
    freeReplyObject(t_cmd("DEL worker:w1:heartbeat")); /* w1 dies */
    CHECK(stepq_reap(Q, 60000, &n) == STEPQ_OK);
    ASSERT_EQ(n, 1);
    ASSERT_STR(t_str("HGET job:%s status", id), "pending");
    ASSERT_EQ(t_int("SISMEMBER workers:idle w1") + t_int("SISMEMBER workers:active w1"), 0);
    ASSERT_EQ(t_exists("worker:w1"), 0);
    json = claim1("w2", NULL, 0);
    REQUIRE(json != NULL);
    snprintf(tok2, sizeof(tok2), "%s", t_field(json, "token"));
    ASSERT_STR(t_field(json, "attempts"), "2");
    stepq_str_free(json);
    CHECK(stepq_complete(Q, id, tok1, "late") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(stepq_progress(Q, id, tok1, 10, "") == STEPQ_ERR);
    CHECK(stepq_complete(Q, id, tok2, "ok") == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:%s result", id), "ok");
    /* w1 finds out at its next heartbeat. */
    CHECK(stepq_worker_heartbeat(Q, "w1", 60000) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_NOTFOUND);
}

/* A heartbeat in the seed's layout (a timestamp in seconds, no TTL) that is
 * old counts as dead, and a legacy active job with no `worker` field is
 * found through worker:{id}:jobs. An active member whose key is not a hash
 * (damaged data) is passed over, not an error that stops the reaping. */
static void test_reaper_legacy_layout(void)
{
    t_flush();
    freeReplyObject(t_cmd("HSET job:L1 id L1 status active priority 2"));
    freeReplyObject(t_cmd("SADD jobs:active L1"));
    freeReplyObject(t_cmd("SADD worker:old1:jobs L1"));
    freeReplyObject(t_cmd("SET job:L0 damaged"));
    freeReplyObject(t_cmd("SADD jobs:active L0"));
    freeReplyObject(t_cmd("SADD worker:old1:jobs L0"));
    freeReplyObject(t_cmd("SADD workers:active old1"));
    freeReplyObject(t_cmd("SET worker:old1:heartbeat 1000000000")); /* 2001, in seconds */
    long n = -1;
    CHECK(stepq_reap(Q, 30000, &n) == STEPQ_OK);
    ASSERT_EQ(n, 1);
    ASSERT_STR(t_str("ZSCORE jobs:pending L1"), "2");
    ASSERT_EQ(t_int("SISMEMBER jobs:active L1"), 0);
    ASSERT_STR(t_str("GET job:L0"), "damaged");
}

static void test_deregister_requeues(void)
{
    char id[STEPQ_ID_MAX];

    t_flush();
    CHECK(stepq_worker_register(Q, "w9", NULL, 0, 60000) == STEPQ_OK);
    submit(NULL, id);
    char *json = claim1("w9", NULL, 0);
    REQUIRE(json != NULL);
    stepq_str_free(json);
    ASSERT_EQ(t_int("SISMEMBER workers:active w9"), 1);
    CHECK(stepq_worker_deregister(Q, "w9") == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:%s status", id), "pending");
    ASSERT_EQ(t_int("SISMEMBER workers:active w9"), 0);
    CHECK(stepq_workers(Q, &json) == STEPQ_OK);
    ASSERT_STR(json, "[]");
    stepq_str_free(json);
}

/* Bad input gets a clear error and changes nothing. */
static void test_bad_input_changes_nothing(void)
{
    char id[STEPQ_ID_MAX];

    t_flush();
    submit(NULL, id);
    long long before = t_int("DBSIZE");
    stepq_submit_opts bad_json = {.payload = "{\"a\":"};
    CHECK(stepq_submit(Q, &bad_json, id) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
    CHECK(strstr(stepq_errstr(Q), "payload is not valid JSON") != NULL);
    stepq_submit_opts bad_prio = {.priority = -1};
    CHECK(stepq_submit(Q, &bad_prio, id) == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(Q), "invalid priority -1") != NULL);
    stepq_submit_opts bad_req = {.requires = "gpu,,x"};
    CHECK(stepq_submit(Q, &bad_req, id) == STEPQ_ERR);
    stepq_submit_opts bad_type = {.type = "a:b"};
    CHECK(stepq_submit(Q, &bad_type, id) == STEPQ_ERR);
    /* Any id but one the key map reads as another key (test_legacy_ids). */
    CHECK(stepq_get(Q, "x:progress", NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
    CHECK(stepq_get(Q, "", NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
    char *json;
    CHECK(stepq_list(Q, "done", 10, &json) == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(Q), "expected one of: pending") != NULL);
    CHECK(stepq_progress(Q, id, "t", 101, "") == STEPQ_ERR);
    ASSERT_EQ(t_int("DBSIZE"), before);
}

/* The submit script creates a step once even when sent twice: the retry
 * after a lost reply cannot duplicate it, nor reset a step that moved on. */
static void test_submit_idempotent_script(void)
{
    const char *args[] = {"0", "S1", "t", "4", "", "3", "{}"};

    t_flush();
    redisReply *r = stepq__eval_queue(Q, STEPQ_SCRIPT_SUBMIT, 7, args, NULL);
    REQUIRE(r != NULL);
    ASSERT_EQ(r->integer, 1);
    freeReplyObject(r);
    freeReplyObject(t_cmd("HSET job:S1 status active"));
    freeReplyObject(t_cmd("ZREM jobs:pending S1"));
    args[0] = "1"; /* the retry after a lost reply */
    r = stepq__eval_queue(Q, STEPQ_SCRIPT_SUBMIT, 7, args, NULL);
    REQUIRE(r != NULL);
    ASSERT_EQ(r->integer, 0);
    freeReplyObject(r);
    ASSERT_STR(t_str("HGET job:S1 status"), "active");
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
}

/* After SCRIPT FLUSH (or a restart without persistence) the scripts are
 * loaded again on NOSCRIPT; after the connection is killed, the next call
 * reconnects. Neither is visible to the caller. */
static void test_noscript_and_reconnect(void)
{
    char id[STEPQ_ID_MAX];
    char *json;

    t_flush();
    freeReplyObject(t_cmd("SCRIPT FLUSH"));
    CHECK(stepq_submit(Q, NULL, id) == STEPQ_OK);
    t_kill_q();
    /* The first call after the kill fails with IO or EOF, or succeeds after
     * a transparent retry (submit resends its idempotent script). */
    int rc = stepq_get(Q, id, &json);
    if (rc == STEPQ_OK)
        stepq_str_free(json);
    else
        CHECK(stepq_err(Q) == STEPQ_E_IO || stepq_err(Q) == STEPQ_E_EOF);
    REQUIRE(stepq_get(Q, id, &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "id"), id);
    stepq_str_free(json);
}

/* A claim whose steps never reached the caller (the connection failed
 * between the claim and the read of its records) is resumed by the next
 * claim of the same worker: the steps come back with the same token instead
 * of staying held by nobody. The loss is staged by remembering the token of
 * a claim as the library does when the connection fails. */
static void test_claim_resumed_after_loss(void)
{
    char a[STEPQ_ID_MAX], b[STEPQ_ID_MAX], tok[33];
    char *json;

    t_flush();
    REQUIRE(stepq_submit(Q, NULL, a) == STEPQ_OK);
    REQUIRE(stepq_submit(Q, NULL, b) == STEPQ_OK);
    REQUIRE((json = claim1("wr", NULL, 0)) != NULL);
    ASSERT_STR(t_field(json, "id"), a);
    snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
    stepq_str_free(json);
    ASSERT_EQ((long long)strlen(Q->claim_token), 0); /* delivered: nothing to resume */

    snprintf(Q->claim_token, sizeof(Q->claim_token), "%s", tok);
    snprintf(Q->claim_worker, sizeof(Q->claim_worker), "%s", "wr");
    REQUIRE((json = claim1("other", NULL, 0)) != NULL);
    ASSERT_STR(t_field(json, "id"), b); /* another worker: a claim of its own */
    stepq_str_free(json);
    REQUIRE((json = claim1("wr", NULL, 0)) != NULL);
    ASSERT_STR(t_field(json, "id"), a); /* the lost claim's step, again */
    ASSERT_STR(t_field(json, "token"), tok);
    stepq_str_free(json);
    ASSERT_EQ((long long)strlen(Q->claim_token), 0);
    ASSERT_STR(t_str("HGET job:%s attempts", a), "1"); /* not claimed twice */
    CHECK(stepq_complete(Q, a, tok, "ok") == STEPQ_OK);
}

/* A live process announces itself with its pin; status lists it, and an
 * announcement that was not renewed in time disappears. */
static void test_processes_in_status(void)
{
    char *json;

    t_flush();
    setenv("PRIMARY_KEY_PATTERN", "step", 1);
    setenv("ENABLE_DUAL_WRITE_STEPS", "true", 1);
    stepq *p = stepq_connect(t_url(), NULL);
    unsetenv("PRIMARY_KEY_PATTERN");
    unsetenv("ENABLE_DUAL_WRITE_STEPS");
    REQUIRE(stepq_err(p) == 0);
    REQUIRE(stepq_proc_announce(p, "worker", 60000) == STEPQ_OK);
    REQUIRE(stepq_proc_announce(Q, "serve", 1) == STEPQ_OK);
    usleep(20000);
    REQUIRE(stepq_status(Q, &json) == STEPQ_OK);
    CHECK(strstr(json, "\"kind\":\"worker\"") != NULL);
    CHECK(strstr(json, "\"phase\":\"step-primary\"") != NULL);
    CHECK(strstr(json, "\"kind\":\"serve\"") == NULL); /* expired */
    stepq_str_free(json);
    REQUIRE(stepq_proc_withdraw(p) == STEPQ_OK);
    ASSERT_EQ(t_int("HLEN stepq:procs"), 0);
    stepq_free(p);
}

/* Batches: many submits in one call; completes where one refusal does not
 * stop the others and each ack says how it went. */
static void test_batches(void)
{
    stepq_submit_opts o[3] = {{.priority = 1}, {.priority = 2}, {.priority = 3}};
    char ids[3][STEPQ_ID_MAX];
    char *json;

    t_flush();
    REQUIRE(stepq_submit_many(Q, o, 3, ids) == STEPQ_OK);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 3);
    o[1].payload = "{bad";
    CHECK(stepq_submit_many(Q, o, 3, ids) == STEPQ_ERR); /* all or nothing */
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 3);
    REQUIRE(stepq_claim(Q, "w", NULL, 0, 3, &json) == STEPQ_OK);
    stepq_ack acks[3];
    static char toks[3][64], sids[3][64];
    for (int i = 0; i < 3; i++) {
        /* the claim returns priority 3, 2, 1: match by id */
        const char *p = json;
        for (int k = 0; k <= i; k++)
            p = strstr(p + 1, "\"id\":\"");
        snprintf(sids[i], sizeof(sids[i]), "%.36s", p + 6);
        const char *t = strstr(p, "\"token\":\"");
        snprintf(toks[i], sizeof(toks[i]), "%.32s", t + 9);
        acks[i] = (stepq_ack){.id = sids[i], .token = toks[i], .result = "ok"};
    }
    stepq_str_free(json);
    acks[1].token = "stale";
    CHECK(stepq_complete_many(Q, acks, 3) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    ASSERT_EQ(acks[0].status, STEPQ_E_NONE);
    ASSERT_EQ(acks[1].status, STEPQ_E_CONFLICT);
    ASSERT_EQ(acks[2].status, STEPQ_E_NONE);
    ASSERT_EQ(t_int("SCARD jobs:completed"), 2);
    ASSERT_STR(t_str("HGET job:%s status", sids[1]), "active");
}

/* A record that is not a hash (damaged data) fails its own step only: the
 * rest of a batch is claimed or completed whole, and the damaged member is
 * dropped from the pending set rather than examined by every claim. */
static void test_damaged_record_contained(void)
{
    stepq_submit_opts o[3] = {{.priority = 1}, {.priority = 1}, {.priority = 1}};
    char ids[3][STEPQ_ID_MAX];
    char *json;

    t_flush();
    REQUIRE(stepq_submit_many(Q, o, 3, ids) == STEPQ_OK);
    freeReplyObject(t_cmd("DEL job:%s", ids[1]));
    freeReplyObject(t_cmd("SET job:%s damaged", ids[1]));
    REQUIRE(stepq_claim(Q, "w", NULL, 0, 3, &json) == STEPQ_OK);
    CHECK(strstr(json, ids[0]) != NULL);
    CHECK(strstr(json, ids[1]) == NULL);
    CHECK(strstr(json, ids[2]) != NULL);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
    ASSERT_STR(t_str("HGET stepq:stats orphans_dropped"), "1");

    stepq_ack acks[2];
    static char toks[2][64];
    const char *p = json;
    for (int i = 0; i < 2; i++) {
        p = strstr(p + 1, "\"id\":\"");
        const char *t = strstr(p, "\"token\":\"");
        snprintf(toks[i], sizeof(toks[i]), "%.32s", t + 9);
    }
    stepq_str_free(json);
    acks[0] = (stepq_ack){.id = ids[0], .token = toks[0], .result = "ok"};
    acks[1] = (stepq_ack){.id = ids[2], .token = toks[1], .result = "ok"};
    /* Damage the second after its claim: the first is completed all the same. */
    freeReplyObject(t_cmd("DEL job:%s", ids[2]));
    freeReplyObject(t_cmd("RPUSH job:%s damaged", ids[2]));
    CHECK(stepq_complete_many(Q, acks, 2) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "not a step record") != NULL);
    ASSERT_EQ(acks[0].status, STEPQ_E_NONE);
    ASSERT_EQ(acks[1].status, STEPQ_E_CONFLICT);
    ASSERT_EQ(t_int("SCARD jobs:completed"), 1);
    ASSERT_EQ(t_int("SISMEMBER jobs:completed %s", ids[0]), 1);
    ASSERT_EQ(t_int("SISMEMBER jobs:active %s", ids[0]), 0);
    ASSERT_EQ(t_int("SISMEMBER worker:w:jobs %s", ids[0]), 0);
    ASSERT_STR(t_str("HGET job:%s status", ids[0]), "completed");
}

int main(void)
{
    t_setup();
    RUN(test_lifecycle);
    RUN(test_priority_then_fifo);
    RUN(test_capabilities);
    RUN(test_retry_then_failed);
    RUN(test_cancel);
    RUN(test_reaper_and_stale_token);
    RUN(test_reaper_legacy_layout);
    RUN(test_deregister_requeues);
    RUN(test_bad_input_changes_nothing);
    RUN(test_submit_idempotent_script);
    RUN(test_batches);
    RUN(test_damaged_record_contained);
    RUN(test_noscript_and_reconnect);
    RUN(test_claim_resumed_after_loss);
    RUN(test_processes_in_status);
    t_teardown();
    TEST_END();
}
