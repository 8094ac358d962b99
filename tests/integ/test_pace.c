/* test_pace.c - pacing of bulk walks: the rate limit and the pause switch. */
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include "test.h"
#include "testlib.h"
#include "stepq_private.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 3000 keys at 10000 keys/s, after the one-second burst is spent, take at
 * least 0.3 s: the bound is a floor only, so a slow machine cannot fail it. */
static void test_rate_limit(void)
{
    stepq__pace p;

    t_flush();
    stepq__pace_init(&p, Q, 10000, 0, 0);
    for (int i = 0; i < 100; i++) /* spend the initial burst */
        REQUIRE(stepq__pace_wait(&p, 100) == STEPQ_OK);
    double t0 = now_s();
    for (int i = 0; i < 30; i++)
        REQUIRE(stepq__pace_wait(&p, 100) == STEPQ_OK);
    double el = now_s() - t0;
    if (el < 0.29)
        FAILF("3000 keys at 10000/s took %.3f s, want >= 0.3", el);
}

static void *unpause_later(void *arg)
{
    (void)arg;
    usleep(400000);
    redisContext *c = redisConnectUnix(R->unix_sock.path);
    const char *db = strstr(t_url(), "db=");
    freeReplyObject(redisCommand(c, "SELECT %s", db ? db + 3 : "0"));
    freeReplyObject(redisCommand(c, "HSET stepq:throttle paused 0"));
    redisFree(c);
    return NULL;
}

/* A walk paused through the throttle hash waits until it is resumed; a
 * rate written there overrides the one it started with. */
static void test_pause_and_override(void)
{
    stepq__pace p;
    pthread_t th;

    t_flush();
    freeReplyObject(t_cmd("HSET stepq:throttle paused 1"));
    stepq__pace_init(&p, Q, 0, 0, 0);
    pthread_create(&th, NULL, unpause_later, NULL);
    double t0 = now_s();
    REQUIRE(stepq__pace_wait(&p, 1) == STEPQ_OK);
    double el = now_s() - t0;
    pthread_join(th, NULL);
    CHECK(el >= 0.35);
    CHECK(p.backoffs > 0);
    freeReplyObject(t_cmd("HSET stepq:throttle rate 123"));
    usleep(600000);
    REQUIRE(stepq__pace_wait(&p, 1) == STEPQ_OK);
    CHECK(p.rate > 122.9 && p.rate < 123.1);
}

/* A clock that moves 300 ms at every reading: the throttle check (every
 * 500 ms) is not due when a walk asks stepq__pace_io_due and due when it
 * then waits. */
static long long fake_ms;

static long long jumpy_clock(void)
{
    return fake_ms += 300;
}

/* The walks ask whether pacing will talk to Redis, empty their pipe when
 * it will, then wait: a wait that sent a command when the clock had
 * crossed a check in between read the throttle hash in place of the reply
 * of a script still on its way (a 5M-step backfill stopped on "unexpected
 * reply from backfill_members.lua"). With a clock that crosses a check at
 * every reading: the chunked merge of a big set, the pipelined walk of many
 * pages and verify's member comparison all stay in step with their replies. */
static void test_pace_checks_wait_for_an_empty_pipe(void)
{
    stepq_backfill_opts bo = {.big = 10, .batch = 20};
    stepq_verify_opts vo = {.big = 10, .batch = 20};
    stepq_backfill_result res = {0};
    int clean = 0;

    t_flush();
    for (int i = 0; i < 3000; i++)
        freeReplyObject(t_cmd("SADD jobs:completed m%d", i));
    for (int i = 0; i < 1500; i++)
        freeReplyObject(t_cmd("HSET job:K%d id K%d status pending", i, i));
    freeReplyObject(t_cmd("SADD steps:completed m0"));
    freeReplyObject(t_cmd("HSET stepq:phase phase dual-write dual_write_since 1"));
    stepq__pace_clock = jumpy_clock;
    int rc = stepq_backfill(Q, &bo, NULL, NULL, &res);
    int vrc = rc == STEPQ_OK ? stepq_verify(Q, &vo, NULL, NULL, &clean, NULL) : STEPQ_ERR;
    stepq__pace_clock = NULL;
    if (rc != STEPQ_OK)
        FAILF("backfill: %s", stepq_errstr(Q));
    ASSERT_EQ(t_int("SCARD steps:completed"), 3000);
    ASSERT_EQ(res.merged, 2999);
    if (vrc != STEPQ_OK)
        FAILF("verify: %s", stepq_errstr(Q));
    ASSERT_EQ(clean, 1);
}

int main(void)
{
    t_setup();
    RUN(test_rate_limit);
    RUN(test_pause_and_override);
    RUN(test_pace_checks_wait_for_an_empty_pipe);
    t_teardown();
    TEST_END();
}
