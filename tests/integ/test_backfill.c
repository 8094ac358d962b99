/*
 * test_backfill.c - the backfill: copies every rule of the map with TTLs,
 * merges into collections that dual writes already started, refuses before
 * dual-write and past maxmemory, reports per-key errors, writes nothing on a
 * dry run, and resumes after kill -9 to the same result as an uninterrupted
 * run (the real binary, killed at several points).
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "test.h"
#include "migratelib.h"

static void test_refused_before_dual_write(void)
{
    t_flush();
    m_seed(20);
    CHECK(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "dual-write") != NULL);
    ASSERT_EQ((m_count("step:*") + m_count("steps:*") + m_count("worker:*:steps")), 0);
    ASSERT_EQ(t_exists("stepq:backfill"), 0);
}

static void test_copies_every_rule(void)
{
    t_flush();
    m_seed(200);
    t_phase("dual-write");
    stepq_backfill_result res = {0};
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(m_count("job:*"), m_count("step:*"));
    ASSERT_EQ(t_int("ZCARD steps:pending"), 50);
    ASSERT_EQ(t_int("SCARD steps:completed"), 50);
    ASSERT_EQ(m_count("worker:*:steps"), m_count("worker:*:jobs"));
    /* TTLs travel with the data: absolute expiry, not reset. */
    ASSERT_EQ(t_int("PEXPIRETIME step:L00002"), t_int("PEXPIRETIME job:L00002"));
    ASSERT_EQ(t_int("PEXPIRETIME steps:completed"), t_int("PEXPIRETIME jobs:completed"));
    ASSERT_EQ(t_int("TTL step:L00000"), -1);
    ASSERT_EQ(m_sides_equal(), 0);
    ASSERT_STR(t_str("HGET stepq:backfill state"), "done");
    ASSERT_EQ(res.errors, 0);
    ASSERT_EQ(res.resumed, 0);
    CHECK(res.keys_total > 0);
    /* The estimate counts what the walk counts: status never says 5/2. */
    ASSERT_EQ(res.keys_done, res.keys_total);
    /* A second run copies nothing and changes nothing. */
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.copied, 0);
    CHECK(res.skipped > 0);
    ASSERT_EQ(m_sides_equal(), 0);
}

/* Dual writes started before the backfill: the collections exist on both
 * sides, each with members the other lacks; the merge adds only what is
 * still in the source, with the source's score, and keeps the live score. */
/* keys_total counts as keys_done does: a fixed collection absent (one
 * pair, "gone") and one merged in chunks (the pair and its members). */
static void test_progress_adds_up(void)
{
    stepq_backfill_opts bo = {.big = 10};
    stepq_backfill_result res = {0};

    t_flush();
    for (int i = 0; i < 25; i++)
        freeReplyObject(t_cmd("SADD jobs:completed m%d", i));
    freeReplyObject(t_cmd("HSET job:A id A status pending"));
    t_phase("dual-write");
    REQUIRE(stepq_backfill(Q, &bo, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.merged, 25);
    CHECK(res.gone > 0);
    ASSERT_EQ(res.keys_done, res.keys_total);
}

static void test_merges_collections(void)
{
    t_flush();
    t_phase("dual-write");
    freeReplyObject(t_cmd("ZADD jobs:pending 1 a 2 b 3 c"));
    freeReplyObject(t_cmd("ZADD steps:pending 9 c 4 d"));
    freeReplyObject(t_cmd("SADD jobs:completed x y"));
    freeReplyObject(t_cmd("EXPIRE jobs:completed 500"));
    freeReplyObject(t_cmd("SADD steps:completed z"));
    stepq_backfill_result res = {0};
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(t_int("ZCARD steps:pending"), 4);
    ASSERT_STR(t_str("ZSCORE steps:pending a"), "1");
    ASSERT_STR(t_str("ZSCORE steps:pending c"), "9");
    ASSERT_EQ(t_int("SCARD steps:completed"), 3);
    CHECK(t_int("TTL steps:completed") > 490);
    ASSERT_EQ(res.merged, 4);
}

/* Big collections are merged in chunks, member by member. */
static void test_big_collection(void)
{
    t_flush();
    t_phase("dual-write");
    for (int i = 0; i < 5000; i += 500) {
        redisReply *r;
        char cmd[64];
        (void)cmd;
        for (int j = i; j < i + 500; j++)
            redisAppendCommand(R, "SADD jobs:completed c%d", j);
        for (int j = i; j < i + 500; j++) {
            redisGetReply(R, (void **)&r);
            freeReplyObject(r);
        }
    }
    freeReplyObject(t_cmd("SADD steps:completed c1 extra"));
    freeReplyObject(t_cmd("EXPIRE jobs:completed 1000"));
    freeReplyObject(t_cmd("ZADD steps:pending 1 p0 1 p1"));
    for (int j = 0; j < 12000; j++)
        redisAppendCommand(R, "ZADD jobs:pending %d p%d", j % 5, j);
    for (int j = 0; j < 12000; j++) {
        redisReply *r;
        redisGetReply(R, (void **)&r);
        freeReplyObject(r);
    }
    /* A dry run counts the members the new side lacks, and writes none. */
    stepq_backfill_opts o = {.batch = 200, .dry_run = 1};
    stepq_backfill_result res = {0};
    REQUIRE(stepq_backfill(Q, &o, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.merged, 4999 + 11998);
    ASSERT_EQ(t_int("SCARD steps:completed"), 2);
    ASSERT_EQ(t_int("ZCARD steps:pending"), 2);
    o.dry_run = 0;
    memset(&res, 0, sizeof(res));
    REQUIRE(stepq_backfill(Q, &o, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(t_int("ZCARD steps:pending"), 12000);
    ASSERT_STR(t_str("ZSCORE steps:pending p0"), "1");
    ASSERT_STR(t_str("ZSCORE steps:pending p11999"), "4");
    ASSERT_EQ(t_int("SCARD steps:completed"), 5001);
    ASSERT_EQ(res.merged, 4999 + 11998);
    CHECK(t_int("TTL steps:completed") > 990);
}

static void test_dry_run_writes_nothing(void)
{
    t_flush();
    m_seed(40);
    t_phase("dual-write");
    stepq_backfill_opts o = {.dry_run = 1};
    stepq_backfill_result res = {0};
    REQUIRE(stepq_backfill(Q, &o, NULL, NULL, &res) == STEPQ_OK);
    CHECK(res.copied > 40);
    ASSERT_EQ((m_count("step:*") + m_count("steps:*") + m_count("worker:*:steps")), 0);
    ASSERT_EQ(t_exists("stepq:backfill"), 0);
}

static void test_memory_preflight(void)
{
    t_flush();
    m_seed(100);
    t_phase("dual-write");
    stepq_backfill_opts o = {.memory_limit = 1024, .who = "tester"};
    CHECK(stepq_backfill(Q, &o, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "maxmemory") != NULL);
    ASSERT_EQ((m_count("step:*") + m_count("steps:*") + m_count("worker:*:steps")), 0);
    o.force = 1;
    REQUIRE(stepq_backfill(Q, &o, NULL, NULL, NULL) == STEPQ_OK);
    ASSERT_EQ(m_count("job:*"), m_count("step:*"));
    const char *last = t_str("LINDEX stepq:audit -1");
    CHECK(strstr(last, "\"action\":\"backfill\"") != NULL);
    CHECK(strstr(last, "\"force\":true") != NULL);
    CHECK(strstr(last, "tester") != NULL);
}

static void test_pinned_job_process_refuses(void)
{
    t_flush();
    m_seed(10);
    t_phase("dual-write");
    freeReplyObject(t_cmd("HSET stepq:procs p1 {\"id\":\"p1\",\"kind\":\"worker\",\"phase\":"
                          "\"job\",\"seen\":%lld,\"ttl\":60000}",
                          (long long)time(NULL) * 1000));
    CHECK(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "pinned") != NULL);
    ASSERT_EQ((m_count("step:*") + m_count("steps:*") + m_count("worker:*:steps")), 0);
}

struct errs {
    int n;
    char key[64];
};

static void on_err(long long done, long long total, const char *key, const char *msg, void *arg)
{
    struct errs *e = arg;
    (void)done;
    (void)total;
    (void)msg;
    if (key != NULL && e->n++ == 0)
        snprintf(e->key, sizeof(e->key), "%s", key);
}

static void test_per_key_errors(void)
{
    t_flush();
    m_seed(10);
    t_phase("dual-write");
    freeReplyObject(t_cmd("SET job:oops not-a-hash"));
    struct errs e = {0};
    stepq_backfill_result res = {0};
    CHECK(stepq_backfill(Q, NULL, on_err, &e, &res) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_SERVER);
    ASSERT_EQ(res.errors, 1);
    ASSERT_EQ(e.n, 1);
    ASSERT_STR(e.key, "job:oops");
    ASSERT_EQ(t_exists("step:oops"), 0);
    ASSERT_EQ(t_exists("step:L00001"), 1);
    ASSERT_STR(t_str("HGET stepq:backfill state"), "failed");
}

/* ---------------------------------------------------------------------------
 * kill -9 and resume, with the real binary
 * ------------------------------------------------------------------------- */

static pid_t spawn_backfill(const char *rate)
{
    pid_t pid = fork();
    if (pid == 0) {
        const char *bin = getenv("STEPQ_BIN");
        int fd = open("/dev/null", 1);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "-u", t_url(), "migrate", "backfill", "--batch", "40", "--rate", rate,
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The digest of the new side, from a verify that must come out clean. */
static void new_digest(char *out, size_t n)
{
    stepq_verify_opts o = {0};
    char *json = NULL;
    int clean = 0;
    out[0] = '\0';
    if (stepq_verify(Q, &o, NULL, NULL, &clean, &json) != STEPQ_OK)
        return;
    CHECK(clean);
    snprintf(out, n, "%s", t_field(json, "digest_new"));
    stepq_str_free(json);
}

static void test_kill9_resume(void)
{
    char want[32], got[32];

    if (getenv("STEPQ_BIN") == NULL) {
        FAILF("STEPQ_BIN is not set");
        return;
    }
    /* The uninterrupted run. */
    t_flush();
    m_seed(1500);
    for (int i = 0; i < 3000; i++)
        redisAppendCommand(R, "SADD jobs:completed x%d", i);
    for (int i = 0; i < 3000; i++) {
        void *r;
        redisGetReply(R, &r);
        freeReplyObject(r);
    }
    t_phase("dual-write");
    pid_t pid = spawn_backfill("0");
    int st;
    waitpid(pid, &st, 0);
    REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    new_digest(want, sizeof(want));
    REQUIRE(want[0] != '\0');

    /* The same data, killed at several points, a key deleted meanwhile
     * (both sides, as a dual write would) and a member removed. */
    t_flush();
    m_seed(1500);
    for (int i = 0; i < 3000; i++)
        redisAppendCommand(R, "SADD jobs:completed x%d", i);
    for (int i = 0; i < 3000; i++) {
        void *r;
        redisGetReply(R, &r);
        freeReplyObject(r);
    }
    freeReplyObject(t_cmd("SADD jobs:completed doomed"));
    freeReplyObject(t_cmd("HSET job:doomed id doomed"));
    t_phase("dual-write");
    int kills = 0;
    long long last_done = -1;
    for (int k = 0; k < 4; k++) {
        pid = spawn_backfill("300");
        /* Kill it once it made some progress past the last checkpoint (a
         * fixed sleep would race the start-up under a sanitizer). */
        for (int w = 0; w < 1000; w++) {
            sleep_ms(10);
            if (strcmp(t_str("HGET stepq:backfill state"), "running") == 0 &&
                atoll(t_str("HGET stepq:backfill keys_done")) > last_done + 40 * (k + 1))
                break;
        }
        if (k == 1) {
            freeReplyObject(t_cmd("DEL job:doomed step:doomed"));
            freeReplyObject(t_cmd("SREM jobs:completed doomed"));
            freeReplyObject(t_cmd("SREM steps:completed doomed"));
        }
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st))
            kills++;
        ASSERT_STR(t_str("HGET stepq:backfill state"), "running");
        long long d = atoll(t_str("HGET stepq:backfill keys_done"));
        CHECK(d > last_done);
        last_done = d;
    }
    CHECK(kills >= 2);
    ASSERT_STR(t_str("HGET stepq:backfill state"), "running");
    pid = spawn_backfill("0");
    waitpid(pid, &st, 0);
    REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ASSERT_STR(t_str("HGET stepq:backfill state"), "done");
    ASSERT_EQ(t_exists("step:doomed"), 0);
    ASSERT_EQ(t_int("SISMEMBER steps:completed doomed"), 0);
    new_digest(got, sizeof(got));
    ASSERT_STR(got, want);
    ASSERT_EQ(m_sides_equal(), 0);
    ASSERT_EQ(t_int("PEXPIRETIME step:L00003"), t_int("PEXPIRETIME job:L00003"));
}

int main(void)
{
    t_setup();
    RUN(test_refused_before_dual_write);
    RUN(test_copies_every_rule);
    RUN(test_merges_collections);
    RUN(test_big_collection);
    RUN(test_progress_adds_up);
    RUN(test_dry_run_writes_nothing);
    RUN(test_memory_preflight);
    RUN(test_pinned_job_process_refuses);
    RUN(test_per_key_errors);
    RUN(test_kill9_resume);
    t_teardown();
    TEST_END();
}
