/*
 * test_cleanup.c - cleanup of the old keys: every refusal leaves everything
 * in place; a run deletes exactly the old keys whose new twin exists; old
 * keys written after the check pass are kept and counted; a run killed with
 * SIGKILL halfway and run again finishes the job.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test.h"
#include "testlib.h"
#include "stepq_private.h"

static char BK[64];

static void pipe_cmds(int n, const char *fmt, int twin)
{
    for (int i = 0; i < n; i++) {
        redisAppendCommand(R, fmt, i);
        if (twin)
            redisAppendCommand(R, "COPY job:c%d step:c%d", i, i);
    }
    for (int i = 0; i < n * (twin ? 2 : 1); i++) {
        redisReply *r;
        redisGetReply(R, (void **)&r);
        freeReplyObject(r);
    }
}

/* n old step hashes with their twins, the pending queue on both sides, then
 * the switch to `step` and a backup of the old keys. */
static void setup(int n)
{
    t_flush();
    pipe_cmds(n, "HSET job:c%d type t", 1);
    freeReplyObject(t_cmd("ZADD jobs:pending 1 c1"));
    freeReplyObject(t_cmd("COPY jobs:pending steps:pending"));
    freeReplyObject(t_cmd("SET other:key x"));
    if (stepq_phase_move(Q, STEPQ_PHASE_STEP, "test", NULL, STEPQ_MOVE_FORCE) != STEPQ_OK)
        FAILF("phase move: %s", stepq_errstr(Q));
    if (stepq_backup(Q, BK, NULL, NULL) != STEPQ_OK)
        FAILF("backup: %s", stepq_errstr(Q));
}

static long long old_count(void)
{
    redisReply *r = t_cmd("EVAL %s 0",
                          "local n = 0 for _, k in ipairs(redis.call('KEYS', 'job*')) do n = n + 1 "
                          "end return n");
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* A refused cleanup: the error kind, the text, and nothing deleted. */
static void refused(const char *want, unsigned flags)
{
    stepq_cleanup_opts o = {.flags = flags};
    long long n = t_int("DBSIZE");

    CHECK(stepq_cleanup(Q, BK, &o, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    if (strstr(stepq_errstr(Q), want) == NULL)
        FAILF("error '%s' lacks '%s'", stepq_errstr(Q), want);
    ASSERT_EQ(t_int("DBSIZE"), n);
}

static void test_wrong_phase(void)
{
    setup(10);
    freeReplyObject(t_cmd("HSET stepq:phase phase step-primary"));
    refused("cleanup runs only in phase 'step', and the phase is 'step-primary'", 0);
    refused("only in phase 'step'", STEPQ_CLEANUP_FORCE); /* not overridable */
}

static void test_backup_not_covering(void)
{
    stepq_backup_opts newside = {.side_new = 1};

    setup(10);
    freeReplyObject(t_cmd("HSET job:late type t"));
    refused("does not hold old key 'job:late'", STEPQ_CLEANUP_FORCE);
    freeReplyObject(t_cmd("DEL job:late"));
    REQUIRE(stepq_backup(Q, BK, &newside, NULL) == STEPQ_OK);
    refused("holds the new keys", 0);
    freeReplyObject(t_cmd("HSET stepq:phase phase step-primary"));
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    freeReplyObject(t_cmd("HSET stepq:phase phase step"));
    refused("taken before the switch", 0);
}

/* A live process (another process) pinned to step-primary, which reads
 * old keys on a miss, refuses the cleanup; --force overrides it, audited. */
static void test_pinned_process(void)
{
    int ready[2];
    stepq_cleanup_opts o = {.flags = STEPQ_CLEANUP_FORCE, .who = "tester"};
    stepq_cleanup_result res;
    char c;

    setup(10);
    REQUIRE(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("PRIMARY_KEY_PATTERN", "step", 1);
        setenv("ENABLE_DUAL_WRITE_STEPS", "true", 1);
        stepq *h = stepq_connect(t_url(), NULL);
        stepq_proc_announce(h, "worker", 60000);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    REQUIRE(read(ready[0], &c, 1) == 1);
    refused("is pinned to phase 'step-primary', which reads old keys", 0);
    REQUIRE(stepq_cleanup(Q, BK, &o, &res) == STEPQ_OK);
    ASSERT_EQ(res.deleted, 11);
    const char *last = t_str("LINDEX stepq:audit -1");
    CHECK(strstr(last, "\"action\":\"cleanup-force\"") != NULL);
    CHECK(strstr(last, "step-primary") != NULL);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(ready[0]);
    close(ready[1]);
}

/* An old key read after the backup (the backup's own DUMP does not count)
 * refuses the cleanup and names the key. */
static void test_recently_read(void)
{
    setup(10);
    usleep(3200000); /* OBJECT IDLETIME counts whole seconds */
    freeReplyObject(t_cmd("HGETALL job:c4"));
    refused("old key 'job:c4' was read", 0);
    ASSERT_EQ(old_count(), 11);
}

/* redis-server started after the switch (a switch time from before its
 * start stands in for a restart): loading set every key's access time, so
 * the refusal says that, rather than that something reads old keys. */
static void test_restart_after_switch(void)
{
    setup(10);
    /* An access past the backup's own window (IDLETIME counts seconds, so
     * a window is widened by 1.5 s). */
    usleep(1600 * 1000);
    freeReplyObject(t_cmd("HGET job:c1 type"));
    long long up = atoll(strstr(t_str("INFO server"), "uptime_in_seconds:") + 18);
    freeReplyObject(t_cmd("HSET stepq:phase since %lld", stepq__now_ms() - (up + 60) * 1000));
    refused("redis-server restarted", 0);
    ASSERT_EQ(old_count(), 11);
}

/* Old keys go when the new side knows their step; the others stay and are
 * named: a step record without a twin, a collection holding such a step. */
static void kept_cb(const char *key, size_t len, const char *why, void *arg)
{
    (void)len;
    (void)why;
    if (strncmp(key, "job:k", 5) == 0)
        (*(int *)arg)++;
}

static void test_deletes_only_twinned(void)
{
    stepq_cleanup_result res;
    int named = 0;
    stepq_cleanup_opts o = {.kept = kept_cb, .arg = &named};
    stepq_cleanup_opts dry = {.flags = STEPQ_CLEANUP_DRY_RUN};

    t_flush();
    pipe_cmds(40, "HSET job:c%d type t", 1);
    pipe_cmds(5, "HSET job:k%d type t", 0);
    freeReplyObject(t_cmd("SADD jobs:active c1"));
    freeReplyObject(t_cmd("SADD steps:active c1"));
    freeReplyObject(t_cmd("SADD worker:w1:jobs c2"));
    freeReplyObject(t_cmd("SADD worker:w2:jobs c3 k1"));
    freeReplyObject(t_cmd("SET other:key x"));
    REQUIRE(stepq_phase_move(Q, STEPQ_PHASE_STEP, "test", NULL, STEPQ_MOVE_FORCE) == STEPQ_OK);
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    long long n = t_int("DBSIZE");
    REQUIRE(stepq_cleanup(Q, BK, &dry, &res) == STEPQ_OK);
    ASSERT_EQ(res.deleted, 42);
    ASSERT_EQ(t_int("DBSIZE"), n);
    REQUIRE(stepq_cleanup(Q, BK, &o, &res) == STEPQ_OK);
    ASSERT_EQ(res.old_keys, 48);
    ASSERT_EQ(res.deleted, 42);
    ASSERT_EQ(res.kept, 6);
    ASSERT_EQ(named, 5);
    ASSERT_EQ(old_count(), 5); /* job:k0..4; the worker sets are checked below */
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(t_int("EXISTS job:k%d", i), 1);
    ASSERT_EQ(t_int("EXISTS worker:w1:jobs"), 0); /* its step is on the new side */
    ASSERT_EQ(t_int("EXISTS worker:w2:jobs"), 1); /* k1 is not */
    ASSERT_EQ(t_int("EXISTS jobs:active"), 0);
    ASSERT_EQ(t_int("EXISTS steps:active"), 1);
    ASSERT_EQ(t_int("EXISTS step:c39"), 1);
    ASSERT_EQ(t_int("EXISTS other:key"), 1);
}

/* Old keys written once the check pass is over are kept and counted: the
 * delete pass works from the check pass's names, and a last SCAN looks for
 * the others. job:late was never backed up; job:c5 was, but was deleted
 * before the check pass and written again during the delete pass, so its
 * idle time was never read: kept too. job:kp (a pending step only the old
 * side has) is kept by the delete pass and counted once, as kept. */
static void late_cb(long long done, long long total, const char *key, const char *msg, void *arg)
{
    (void)done, (void)total, (void)key, (void)msg;
    if ((*(int *)arg)++ == 0) {
        freeReplyObject(t_cmd("HSET job:late type t"));
        freeReplyObject(t_cmd("HSET job:c5 type t"));
    }
}

static void test_appeared_after_check(void)
{
    stepq_cleanup_result res;
    int calls = 0;
    stepq_cleanup_opts o = {.progress = late_cb, .arg = &calls};

    t_flush();
    pipe_cmds(300, "HSET job:c%d type t", 1);
    freeReplyObject(t_cmd("HSET job:kp status pending"));
    REQUIRE(stepq_phase_move(Q, STEPQ_PHASE_STEP, "test", NULL, STEPQ_MOVE_FORCE) == STEPQ_OK);
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    freeReplyObject(t_cmd("DEL job:c5"));
    REQUIRE(stepq_cleanup(Q, BK, &o, &res) == STEPQ_OK);
    CHECK(calls > 1);
    ASSERT_EQ(res.old_keys, 300);
    ASSERT_EQ(res.deleted, 299);
    ASSERT_EQ(res.kept, 1);
    ASSERT_EQ(res.not_in_backup, 2);
    ASSERT_EQ(t_int("EXISTS job:late"), 1);
    ASSERT_EQ(t_int("EXISTS job:c5"), 1);
    ASSERT_EQ(t_int("EXISTS job:kp"), 1);
    ASSERT_EQ(old_count(), 3);
}

/* A cleanup killed with SIGKILL halfway (another process, slowed by its
 * rate) leaves a consistent state; running it again finishes the job. */
static void test_kill9_and_rerun(void)
{
    stepq_cleanup_result res;

    setup(3000);
    pid_t pid = fork();
    if (pid == 0) {
        stepq_options so = {.ignore_env_pin = 1};
        stepq *h = stepq_connect(t_url(), &so);
        stepq_cleanup_opts o = {.rate = 1500};
        _exit(stepq_cleanup(h, BK, &o, NULL) == STEPQ_OK ? 0 : 1);
    }
    long long n = 0;
    for (int i = 0; i < 200 && (n = old_count()) > 2500; i++)
        usleep(20000);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st));
    n = old_count();
    if (n == 0 || n > 2600)
        FAILF("the killed run left %lld old keys; want it stopped halfway", n);
    REQUIRE(stepq_cleanup(Q, BK, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.deleted, n);
    ASSERT_EQ(res.kept, 0);
    ASSERT_EQ(old_count(), 0);
    ASSERT_EQ(t_int("EXISTS step:c0"), 1);
    ASSERT_EQ(t_int("EXISTS step:c2999"), 1);
    ASSERT_EQ(t_int("EXISTS steps:pending"), 1);
}

int main(void)
{
    snprintf(BK, sizeof(BK), "/tmp/stepq-test-cleanup-%d.bk", (int)getpid());
    t_setup();
    RUN(test_wrong_phase);
    RUN(test_backup_not_covering);
    RUN(test_pinned_process);
    RUN(test_recently_read);
    RUN(test_restart_after_switch);
    RUN(test_deletes_only_twinned);
    RUN(test_appeared_after_check);
    RUN(test_kill9_and_rerun);
    unlink(BK);
    t_teardown();
    TEST_END();
}
