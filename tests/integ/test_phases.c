/*
 * test_phases.c - every operation in every phase: which keyspaces are
 * written and read, which channels get the events; the partial-record trap;
 * TTLs kept; lazy migration and misses; data of the old system.
 */
#include <time.h>
#include <unistd.h>
#include "test.h"
#include "testlib.h"

static const char *const phases[] = {"job", "dual-write", "dual-read", "step-primary", "step"};

struct sides {
    int w_old, w_new;
};

static struct sides sides_of(const char *p)
{
    struct sides s = {strcmp(p, "step") != 0, strcmp(p, "job") != 0};
    return s;
}

/* Checks that `key_fmt` (with %s for the id) exists exactly on the written
 * sides: "job"/"step" variants are built by the caller. */
static void expect_sides(const char *phase, const char *old_key, const char *new_key)
{
    struct sides s = sides_of(phase);
    if (t_exists("%s", old_key) != s.w_old)
        FAILF("phase %s: '%s' exists=%d, want %d", phase, old_key, !s.w_old, s.w_old);
    if (t_exists("%s", new_key) != s.w_new)
        FAILF("phase %s: '%s' exists=%d, want %d", phase, new_key, !s.w_new, s.w_new);
}

static void expect_events(const char *phase, t_events *ev, int n, const char *what)
{
    struct sides s = sides_of(phase);
    int o, w;
    t_events_take(ev, &o, &w);
    if (o != (s.w_old ? n : 0) || w != (s.w_new ? n : 0))
        FAILF("phase %s, %s: events old=%d new=%d, want %d/%d", phase, what, o, w, s.w_old ? n : 0,
              s.w_new ? n : 0);
}

/* HGETALL of both keys, sorted, must be equal. */
static void expect_equal_hashes(const char *a, const char *b)
{
    redisReply *ra = t_cmd("HGETALL %s", a), *rb = t_cmd("HGETALL %s", b);
    if (ra->elements != rb->elements || ra->elements == 0) {
        FAILF("'%s' has %zu fields, '%s' has %zu", a, ra->elements / 2, b, rb->elements / 2);
    } else {
        for (size_t i = 0; i < ra->elements; i += 2) {
            const char *v = t_str("HGET %s %s", b, ra->element[i]->str);
            if (strcmp(v, ra->element[i + 1]->str) != 0)
                FAILF("field '%s': '%s' vs '%s'", ra->element[i]->str, ra->element[i + 1]->str, v);
        }
    }
    freeReplyObject(ra);
    freeReplyObject(rb);
}

static char *claim1(const char *worker)
{
    char *json = NULL;
    if (stepq_claim(Q, worker, NULL, 0, 1, &json) != STEPQ_OK)
        return NULL;
    size_t len = strlen(json);
    memmove(json, json + 1, len - 2);
    json[len - 2] = '\0';
    return json;
}

static void run_phase(const char *phase)
{
    char id[STEPQ_ID_MAX], id2[STEPQ_ID_MAX], id3[STEPQ_ID_MAX], tok[64];
    char ko[128], kn[128];
    struct sides s = sides_of(phase);
    t_events *ev = t_events_start();

    t_flush();
    t_phase(phase);
    REQUIRE(stepq_submit(Q, NULL, id) == STEPQ_OK);
    t_events_watch(ev, id);
    snprintf(ko, sizeof(ko), "job:%s", id);
    snprintf(kn, sizeof(kn), "step:%s", id);
    expect_sides(phase, ko, kn);
    expect_sides(phase, "jobs:pending", "steps:pending");
    expect_events(phase, ev, 1, "submit");

    char *json;
    REQUIRE(stepq_get(Q, id, &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "status"), "pending");
    stepq_str_free(json);

    json = claim1("w1");
    REQUIRE(json != NULL);
    snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
    stepq_str_free(json);
    expect_sides(phase, "jobs:active", "steps:active");
    expect_sides(phase, "worker:w1:jobs", "worker:w1:steps");
    expect_events(phase, ev, 1, "claim");

    REQUIRE(stepq_progress(Q, id, tok, 50, "half") == STEPQ_OK);
    snprintf(ko, sizeof(ko), "job:%s:progress", id);
    snprintf(kn, sizeof(kn), "step:%s:progress", id);
    expect_sides(phase, ko, kn);
    expect_events(phase, ev, 1, "progress");

    REQUIRE(stepq_complete(Q, id, tok, "done") == STEPQ_OK);
    expect_sides(phase, "jobs:completed", "steps:completed");
    expect_events(phase, ev, 1, "complete");
    if (s.w_old && s.w_new) {
        snprintf(ko, sizeof(ko), "job:%s", id);
        snprintf(kn, sizeof(kn), "step:%s", id);
        expect_equal_hashes(ko, kn);
        snprintf(ko, sizeof(ko), "job:%s:progress", id);
        snprintf(kn, sizeof(kn), "step:%s:progress", id);
        expect_equal_hashes(ko, kn);
    }

    stepq_submit_opts once = {.max_attempts = 1};
    REQUIRE(stepq_submit(Q, &once, id2) == STEPQ_OK);
    t_events_watch(ev, id2);
    json = claim1("w1");
    REQUIRE(json != NULL);
    snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
    stepq_str_free(json);
    int final = 0;
    REQUIRE(stepq_fail(Q, id2, tok, "bad", &final) == STEPQ_OK);
    ASSERT_EQ(final, 1);
    expect_sides(phase, "jobs:failed", "steps:failed");
    expect_events(phase, ev, 3, "submit+claim+fail");

    REQUIRE(stepq_submit(Q, NULL, id3) == STEPQ_OK);
    t_events_watch(ev, id3);
    REQUIRE(stepq_cancel(Q, id3) == STEPQ_OK);
    snprintf(ko, sizeof(ko), "job:%s", id3);
    snprintf(kn, sizeof(kn), "step:%s", id3);
    if (s.w_old)
        ASSERT_STR(t_str("HGET %s status", ko), "cancelled");
    if (s.w_new)
        ASSERT_STR(t_str("HGET %s status", kn), "cancelled");
    expect_events(phase, ev, 2, "submit+cancel");
    t_events_stop(ev);
}

static void test_every_operation_in_every_phase(void)
{
    for (size_t i = 0; i < 5; i++) {
        int before = test_failures;
        run_phase(phases[i]);
        if (test_failures != before)
            fprintf(stderr, "  ^ in phase %s\n", phases[i]);
    }
}

/* The seed's own layout, as the existing system writes it. */
static void legacy_job(const char *id, int prio, int ttl_s)
{
    freeReplyObject(t_cmd("HMSET job:%s id %s type legacy priority %d status pending payload {} "
                          "owner_team billing",
                          id, id, prio));
    freeReplyObject(t_cmd("ZADD jobs:pending %d %s", prio, id));
    if (ttl_s > 0)
        freeReplyObject(t_cmd("EXPIRE job:%s %d", id, ttl_s));
}

/* Invariant 1: a legacy job with fields stepq does not know, claimed during
 * dual-write before any backfill, gets an identical step: twin (all fields
 * and its TTL), not a partial record of the fields the claim wrote. */
static void test_partial_record_trap(void)
{
    t_flush();
    legacy_job("L1", 3, 5000);
    freeReplyObject(t_cmd("HSET job:L1:progress percent 10 note legacy"));
    t_phase("dual-write");
    char *json = claim1("w1");
    REQUIRE(json != NULL);
    ASSERT_STR(t_field(json, "id"), "L1");
    ASSERT_STR(t_field(json, "owner_team"), "billing");
    char tok[64];
    snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
    stepq_str_free(json);
    expect_equal_hashes("job:L1", "step:L1");
    ASSERT_STR(t_str("HGET step:L1 owner_team"), "billing");
    long long ttl_old = t_int("PTTL job:L1"), ttl_new = t_int("PTTL step:L1");
    CHECK(ttl_old > 4000000 && ttl_new > 4000000);
    CHECK(ttl_old - ttl_new < 1000 && ttl_new - ttl_old < 1000);
    /* The progress hash too, at its first update. */
    REQUIRE(stepq_progress(Q, "L1", tok, 60, "go") == STEPQ_OK);
    expect_equal_hashes("job:L1:progress", "step:L1:progress");
    ASSERT_STR(t_str("HGET step:L1:progress note"), "legacy");
}

static void test_dual_read_lazy_migration(void)
{
    t_flush();
    legacy_job("L2", 1, 3600);
    freeReplyObject(t_cmd("HSET job:L2:progress percent 20"));
    t_phase("dual-read");
    char *json;
    REQUIRE(stepq_get(Q, "L2", &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "owner_team"), "billing");
    stepq_str_free(json);
    expect_equal_hashes("job:L2", "step:L2");
    expect_equal_hashes("job:L2:progress", "step:L2:progress");
    CHECK(t_int("PTTL step:L2") > 3500000);
    ASSERT_STR(t_str("HGET stepq:stats lazy_migrations"), "2");
    ASSERT_STR(t_str("HGET stepq:stats fallback_reads"), "2");
    /* The second read finds the new key. */
    REQUIRE(stepq_get(Q, "L2", &json) == STEPQ_OK);
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:stats lazy_migrations"), "2");
}

static void test_step_primary_counts_misses(void)
{
    t_flush();
    legacy_job("L3", 1, 0);
    t_phase("step-primary");
    char *json;
    REQUIRE(stepq_get(Q, "L3", &json) == STEPQ_OK);
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:stats primary_misses"), "1");
    ASSERT_EQ(t_exists("step:L3"), 0);
    /* In phase step, the old keys are not read at all. */
    t_phase("step");
    CHECK(stepq_get(Q, "L3", &json) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_NOTFOUND);
}

/* In dual-read the pending queue is read from the new side; a step that is
 * only in the old queue (never backfilled) is still claimed, as a fallback. */
static void test_dual_read_claims_from_old_queue(void)
{
    t_flush();
    legacy_job("L4", 1, 0);
    t_phase("dual-read");
    char *json = claim1("w");
    REQUIRE(json != NULL);
    ASSERT_STR(t_field(json, "id"), "L4");
    stepq_str_free(json);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
    ASSERT_EQ(t_int("SISMEMBER steps:active L4"), 1);
    ASSERT_EQ(t_int("SISMEMBER jobs:active L4"), 1);
    expect_equal_hashes("job:L4", "step:L4");
}

static void test_legacy_data_claimed_like_ours(void)
{
    t_flush();
    legacy_job("L5", 9, 0);
    char id[STEPQ_ID_MAX];
    REQUIRE(stepq_submit(Q, NULL, id) == STEPQ_OK);
    char *json = claim1("w");
    REQUIRE(json != NULL);
    ASSERT_STR(t_field(json, "id"), "L5"); /* priority 9 first */
    char tok[64];
    snprintf(tok, sizeof(tok), "%s", t_field(json, "token"));
    stepq_str_free(json);
    REQUIRE(stepq_complete(Q, "L5", tok, "ok") == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:L5 owner_team"), "billing");
    ASSERT_STR(t_str("HGET job:L5 status"), "completed");
}

/* The seed's flags pin a process: ENABLE_DUAL_WRITE_STEPS=true with the
 * stored phase at job still writes both sides. */
static void test_env_pin(void)
{
    t_flush();
    setenv("ENABLE_DUAL_WRITE_STEPS", "true", 1);
    stepq *p = stepq_connect(t_url(), NULL);
    unsetenv("ENABLE_DUAL_WRITE_STEPS");
    REQUIRE(p != NULL && stepq_err(p) == 0);
    ASSERT_EQ(stepq_phase_pin(p), STEPQ_PHASE_DUAL_WRITE);
    char id[STEPQ_ID_MAX];
    REQUIRE(stepq_submit(p, NULL, id) == STEPQ_OK);
    ASSERT_EQ(t_exists("job:%s", id), 1);
    ASSERT_EQ(t_exists("step:%s", id), 1);
    stepq_free(p);

    setenv("PRIMARY_KEY_PATTERN", "stp", 1);
    p = stepq_connect(t_url(), NULL);
    unsetenv("PRIMARY_KEY_PATTERN");
    ASSERT_EQ(stepq_err(p), STEPQ_E_INVALID);
    CHECK(strstr(stepq_errstr(p), "PRIMARY_KEY_PATTERN='stp' is unknown") != NULL);
    stepq_free(p);
}

static void test_phase_moves(void)
{
    stepq_phase p;

    t_flush();
    REQUIRE(stepq_phase_get(Q, &p) == STEPQ_OK);
    ASSERT_EQ(p, STEPQ_PHASE_JOB);
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_DUAL_READ, "t", NULL, 0) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "next is 'dual-write'") != NULL);
    ASSERT_EQ(t_exists("stepq:phase"), 0); /* nothing changed */
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_DUAL_WRITE, "t", "go", 0) == STEPQ_OK);
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_JOB, "t", "back", 0) == STEPQ_OK);
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_STEP, "t", "jump", STEPQ_MOVE_FORCE) == STEPQ_OK);
    REQUIRE(stepq_phase_get(Q, &p) == STEPQ_OK);
    ASSERT_EQ(p, STEPQ_PHASE_STEP);
    ASSERT_EQ(t_int("LLEN stepq:audit"), 3);
    char *json;
    REQUIRE(stepq_audit_tail(Q, 1, &json) == STEPQ_OK);
    CHECK(strstr(json, "\"force\":true") != NULL);
    CHECK(strstr(json, "\"from\":\"job\",\"to\":\"step\"") != NULL);
    stepq_str_free(json);
}

/* Issue 10, finding 13: a rate that is neither >= 0, -1 nor -2 is refused
 * with an error and writes nothing (it freed a reply twice, or failed
 * without an error). */
static void test_throttle_bad_rate(void)
{
    t_flush();
    CHECK(stepq_throttle(Q, 1, -1.5) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
    CHECK(stepq_throttle(Q, -1, -0.5) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_INVALID);
    CHECK(strstr(stepq_errstr(Q), "rate is keys/s") != NULL);
    ASSERT_EQ(t_int("EXISTS stepq:throttle"), 0);
    CHECK(stepq_throttle(Q, 1, 250) == STEPQ_OK);
    ASSERT_STR(t_str("HGET stepq:throttle paused"), "1");
    CHECK(stepq_throttle(Q, -1, -2) == STEPQ_OK);
    ASSERT_EQ(t_int("HEXISTS stepq:throttle rate"), 0);
}

/* The library's private "reconciled" bit is not a public flag: a caller
 * that passes any other bit still gets the reconcile out of 'step'. */
static void test_move_flags_masked(void)
{
    t_flush();
    t_phase("step");
    freeReplyObject(t_cmd("HSET step:s1 status pending"));
    freeReplyObject(t_cmd("HSET job:s1 status stale"));
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_STEP_PRIMARY, "t", NULL, 1u << 8) == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:s1 status"), "pending");
}

/* Out of 'step' the old keys are reconciled after the move too, which
 * needs writers that write both sides: straight to 'job' is refused, even
 * forced, and nothing changes. */
static void test_step_to_job_refused(void)
{
    t_flush();
    t_phase("step");
    freeReplyObject(t_cmd("HSET job:X id X status pending"));
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_JOB, "t", NULL, STEPQ_MOVE_FORCE) == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(Q), "even forced") != NULL);
    ASSERT_STR(t_str("HGET stepq:phase phase"), "step");
    ASSERT_EQ(t_int("EXISTS stepq:phase") && *t_str("HGET stepq:phase reconciling"), 0);
    ASSERT_STR(t_str("HGET job:X status"), "pending");
}

/* A rollback out of 'step' that the move's rules refuse (a process pinned
 * to 'job' cannot run beside step-primary) begins no reconcile: no
 * `reconciling` left behind, the old keys untouched, the refusal audited. */
static void test_rollback_refused_begins_nothing(void)
{
    t_flush();
    t_phase("step");
    freeReplyObject(t_cmd("HSET job:X id X status pending"));
    freeReplyObject(t_cmd("HSET stepq:procs fake:1 {\"id\":\"fake:1\",\"kind\":\"worker\","
                          "\"phase\":\"job\",\"seen\":%lld,\"ttl\":60000}",
                          (long long)time(NULL) * 1000));
    CHECK(stepq_rollback(Q, "t", NULL, 0, NULL, NULL, NULL) == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(Q), "pinned to phase 'job'") != NULL);
    ASSERT_STR(t_str("HGET stepq:phase phase"), "step");
    ASSERT_EQ(t_int("HEXISTS stepq:phase reconciling"), 0);
    ASSERT_STR(t_str("HGET job:X status"), "pending");
    CHECK(strstr(t_str("LINDEX stepq:audit -1"), "\"refused\"") != NULL);
}

int main(void)
{
    t_setup();
    RUN(test_every_operation_in_every_phase);
    RUN(test_partial_record_trap);
    RUN(test_dual_read_lazy_migration);
    RUN(test_step_primary_counts_misses);
    RUN(test_dual_read_claims_from_old_queue);
    RUN(test_legacy_data_claimed_like_ours);
    RUN(test_env_pin);
    RUN(test_phase_moves);
    RUN(test_throttle_bad_rate);
    RUN(test_move_flags_masked);
    RUN(test_step_to_job_refused);
    RUN(test_rollback_refused_begins_nothing);
    t_teardown();
    TEST_END();
}
