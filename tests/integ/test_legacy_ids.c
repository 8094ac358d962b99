/*
 * test_legacy_ids.c - steps the old system wrote with ids stepq would never
 * make (issue 10, finding 10): longer than 199 bytes, holding a NUL, holding
 * ':' ('a:b'), ending in ':progress'. The walk skipped them in silence:
 * backfill exited 0, verify was clean, and claim in 'step' later dropped
 * them from the pending queue as orphans. Now the key map's {id} is any
 * bytes: each is copied, verified, claimable, and (where a C string can
 * name it) reachable through the queue's API; an old-looking key that no
 * rule maps is named and fails backfill and verify.
 */
#include "test.h"
#include "migratelib.h"
#include "stepq_private.h"

#define LONG_LEN 250

static char long_id[LONG_LEN + 1];
static const char nul_id[] = {'n', 'u', '\0', 'l'}; /* 4 bytes */

/* A pending legacy step `id` (len bytes) in job:{id} and jobs:pending. */
static void legacy_step(const char *id, size_t len, const char *prio)
{
    freeReplyObject(
        t_cmd("HSET job:%b status pending priority %s type legacy attempts 0", id, len, prio));
    freeReplyObject(t_cmd("ZADD jobs:pending %s %b", prio, id, len));
}

static void seed(void)
{
    t_flush();
    memset(long_id, 'L', LONG_LEN);
    long_id[LONG_LEN] = '\0';
    legacy_step(long_id, LONG_LEN, "5");
    legacy_step(nul_id, sizeof(nul_id), "4");
    legacy_step("a:b", 3, "3");
    /* 'p:progress': the key map reads job:p:progress as the progress hash
     * of step 'p' (the more specific template); its twin is the same name
     * either way, step:p:progress, so it is copied all the same. */
    freeReplyObject(t_cmd("HSET job:p:progress percent 40"));
    freeReplyObject(t_cmd("HSET job:q:r:progress percent 10"));
    freeReplyObject(t_cmd("SADD worker:w:1:jobs a:b"));
}

/* Every legacy key has its twin after a backfill, and verify is clean. */
static void test_backfill_copies_every_id(void)
{
    seed();
    t_phase("dual-write");
    stepq_backfill_result res = {0};
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.errors, 0);
    CHECK(t_exists("step:%s", long_id) == 1);
    CHECK(t_int("EXISTS step:%b", nul_id, sizeof(nul_id)) == 1);
    CHECK(t_exists("step:a:b") == 1);
    CHECK(t_exists("step:p:progress") == 1);
    CHECK(t_exists("step:q:r:progress") == 1);
    CHECK(t_exists("worker:w:1:steps") == 1);
    ASSERT_EQ(m_count("job:*"), m_count("step:*"));
    int clean = 0;
    char *json = NULL;
    REQUIRE(stepq_verify(Q, NULL, NULL, NULL, &clean, &json) == STEPQ_OK);
    CHECK(clean);
    CHECK(strstr(json, "\"unmapped\":0") != NULL);
    stepq_str_free(json);
    ASSERT_EQ(m_sides_equal(), 0);
}

/* A difference on a legacy id is found and named, escaped (a NUL cut the
 * name before; the 199-byte buffer dropped the long one). */
static void test_verify_sees_legacy_ids(void)
{
    seed();
    t_phase("dual-write");
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_OK);
    freeReplyObject(t_cmd("HSET step:%b status failed", nul_id, sizeof(nul_id)));
    freeReplyObject(t_cmd("HSET step:%s status failed", long_id));
    freeReplyObject(t_cmd("DEL step:a:b"));
    stepq_verify_opts o = {.rounds = -1};
    int clean = 1;
    char *json = NULL;
    REQUIRE(stepq_verify(Q, &o, NULL, NULL, &clean, &json) == STEPQ_OK);
    CHECK(!clean);
    CHECK(strstr(json, "\"different\":2") != NULL);
    CHECK(strstr(json, "\"missing\":1") != NULL);
    CHECK(strstr(json, "\\\"job:nu\\\\x00l\\\"") != NULL);
    stepq_str_free(json);
}

/* Walked all the way to 'step', every legacy step is claimed, none dropped
 * as an orphan. */
static void test_claimed_in_step(void)
{
    seed();
    t_phase("dual-write");
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_OK);
    t_phase("step");
    char *json = NULL;
    REQUIRE(stepq_claim(Q, "w9", NULL, 0, 10, &json) == STEPQ_OK);
    CHECK(strstr(json, long_id) != NULL);
    CHECK(strstr(json, "\"nu\\u0000l\"") != NULL);
    CHECK(strstr(json, "\"a:b\"") != NULL);
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:stats orphans_dropped"), "");
    ASSERT_EQ(t_int("ZCARD steps:pending"), 0);
}

/* The queue's API takes what the migration carries ('a:b', 250 bytes) and
 * refuses an id whose record the key map reads as another key. */
static void test_api_takes_legacy_ids(void)
{
    seed();
    t_phase("step");
    freeReplyObject(t_cmd("RENAME job:a:b step:a:b"));
    freeReplyObject(t_cmd("RENAME job:%s step:%s", long_id, long_id));
    freeReplyObject(t_cmd("RENAME jobs:pending steps:pending"));
    char *json = NULL;
    REQUIRE(stepq_get(Q, "a:b", &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "status"), "pending");
    stepq_str_free(json);
    REQUIRE(stepq_get(Q, long_id, &json) == STEPQ_OK);
    stepq_str_free(json);
    REQUIRE(stepq_claim(Q, "w9", NULL, 0, 10, &json) == STEPQ_OK);
    stepq_str_free(json);
    const char *tok = t_str("HGET step:a:b token");
    char token[64];
    snprintf(token, sizeof(token), "%s", tok);
    REQUIRE(stepq_progress(Q, "a:b", token, 50, "half") == STEPQ_OK);
    REQUIRE(stepq_complete(Q, "a:b", token, "{}") == STEPQ_OK);
    ASSERT_STR(t_str("HGET step:a:b status"), "completed");
    REQUIRE(stepq_cancel(Q, long_id) == STEPQ_OK);
    ASSERT_STR(t_str("HGET step:%s status", long_id), "cancelled");
    /* Ending in ':progress': its record would be step 'p's progress. */
    long long before = t_int("DBSIZE");
    CHECK(stepq_get(Q, "p:progress", NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
    CHECK(strstr(stepq_errstr(Q), "rule 'progress'") != NULL);
    CHECK(stepq_cancel(Q, "p:progress") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
    ASSERT_EQ(t_int("DBSIZE"), before);
    char big[STEPQ_STEP_ID_MAX + 1];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(stepq_get(Q, big, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
}

struct seen {
    int n;
    char key[128], msg[256];
};

static void on_err(long long done, long long total, const char *key, const char *msg, void *arg)
{
    struct seen *s = arg;

    (void)done;
    (void)total;
    if (key == NULL)
        return;
    if (s->n++ == 0) {
        snprintf(s->key, sizeof(s->key), "%s", key);
        snprintf(s->msg, sizeof(s->msg), "%s", msg);
    }
}

/* A key that looks like an old per-id key but that no rule maps (its id
 * would be empty) is named, and backfill and verify fail; the others are
 * still copied. */
static void test_unmapped_key_fails_the_walk(void)
{
    seed();
    freeReplyObject(t_cmd("HSET job: status pending"));
    freeReplyObject(t_cmd("SADD worker::jobs x"));
    t_phase("dual-write");
    struct seen s = {0};
    stepq_backfill_result res = {0};
    CHECK(stepq_backfill(Q, NULL, on_err, &s, &res) == STEPQ_ERR);
    ASSERT_EQ(res.errors, 2);
    CHECK(strstr(stepq_errstr(Q), "run 'stepq migrate backfill' again") != NULL);
    CHECK(strcmp(s.key, "job:") == 0 || strcmp(s.key, "worker::jobs") == 0);
    CHECK(strstr(s.msg, "no rule of the key map maps it") != NULL);
    ASSERT_STR(t_str("HGET stepq:backfill state"), "failed");
    CHECK(t_exists("step:a:b") == 1);
    struct seen v = {0};
    int clean = 1;
    char *json = NULL;
    REQUIRE(stepq_verify(Q, NULL, on_err, &v, &clean, &json) == STEPQ_OK);
    CHECK(!clean);
    ASSERT_EQ(v.n, 2);
    CHECK(strstr(json, "\"unmapped\":2") != NULL);
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:verify clean"), "0");
    /* Gone, the walk passes again. */
    freeReplyObject(t_cmd("DEL job: worker::jobs"));
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_OK);
    REQUIRE(stepq_verify(Q, NULL, NULL, NULL, &clean, NULL) == STEPQ_OK);
    CHECK(clean);
}

/* A key whose name holds a NUL is named whole, escaped as verify does:
 * backfill named it 'job:nu' (a C string cut at the NUL). */
static void test_nul_key_named_whole(void)
{
    t_flush();
    freeReplyObject(t_cmd("SET job:%b x", nul_id, sizeof(nul_id))); /* the map says hash */
    t_phase("dual-write");
    struct seen s = {0};
    CHECK(stepq_backfill(Q, NULL, on_err, &s, NULL) == STEPQ_ERR);
    ASSERT_EQ(s.n, 1);
    ASSERT_STR(s.key, "\"job:nu\\x00l\"");
    CHECK(strstr(s.msg, "source is a string") != NULL);
}

/* Finding 13: a number in a record or a reply that is not one is an error
 * naming it; strtoll read "12abc" as 12 and "abc" as 0, in silence. */
static void test_malformed_numbers_named(void)
{
    t_flush();
    legacy_step("a:b", 3, "3");
    freeReplyObject(t_cmd("HSET stepq:phase phase dual-write dual_write_since 12abc"));
    CHECK(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_PROTOCOL);
    CHECK(strstr(stepq_errstr(Q), "stepq:phase dual_write_since: '12abc' is not a whole number") !=
          NULL);
    ASSERT_EQ(t_exists("step:a:b"), 0);
    /* The operator's throttle: "abc" read as rate 0, which is unlimited. */
    freeReplyObject(t_cmd("HSET stepq:phase dual_write_since 1"));
    freeReplyObject(t_cmd("HSET stepq:throttle rate abc"));
    stepq_backfill_opts o = {.rate = 100};
    CHECK(stepq_backfill(Q, &o, NULL, NULL, NULL) == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(Q), "stepq:throttle rate") != NULL);
}

int main(void)
{
    t_setup();
    RUN(test_backfill_copies_every_id);
    RUN(test_verify_sees_legacy_ids);
    RUN(test_claimed_in_step);
    RUN(test_api_takes_legacy_ids);
    RUN(test_unmapped_key_fails_the_walk);
    RUN(test_nul_key_named_whole);
    RUN(test_malformed_numbers_named);
    t_teardown();
    TEST_END();
}
