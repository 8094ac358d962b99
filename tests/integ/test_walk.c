/*
 * test_walk.c - the whole migration, phase by phase and all the way back:
 * legacy data in the seed's layout, equal on both sides wherever both
 * exist; every refused move leaves the phase as it was; then the same walk
 * while submitter and claimer processes run all the time, and at the end
 * every submitted step is accounted for, none lost, none claimed twice.
 */
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "test.h"
#include "migratelib.h"

static stepq_phase phase_now(void)
{
    stepq_phase p = STEPQ_PHASE_COUNT;
    stepq_phase_get(Q, &p);
    return p;
}

/* A refused move: STEPQ_E_CONFLICT, the phase unchanged, audited. */
static void expect_refused(stepq_phase to, const char *needle)
{
    stepq_phase before = phase_now();
    long long audits = t_int("LLEN stepq:audit");
    CHECK(stepq_phase_move(Q, to, "t", NULL, 0) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    if (strstr(stepq_errstr(Q), needle) == NULL)
        FAILF("refusal '%s' does not mention '%s'", stepq_errstr(Q), needle);
    ASSERT_EQ(phase_now(), before);
    if (strstr(needle, "one step") == NULL) {
        ASSERT_EQ(t_int("LLEN stepq:audit"), audits + 1);
        CHECK(strstr(t_str("LINDEX stepq:audit -1"), "\"refused\"") != NULL);
    }
}

static void move(stepq_phase to)
{
    usleep(3000); /* records are compared by ms timestamps */
    if (stepq_phase_move(Q, to, "t", NULL, 0) != STEPQ_OK)
        FAILF("move to %s: %s", stepq_phase_name(to), stepq_errstr(Q));
    usleep(3000);
}

static void rollback_to(stepq_phase to)
{
    char *json = NULL;
    usleep(3000);
    if (stepq_rollback(Q, "t", NULL, 0, NULL, NULL, &json) != STEPQ_OK)
        FAILF("rollback to %s: %s", stepq_phase_name(to), stepq_errstr(Q));
    stepq_str_free(json);
    ASSERT_EQ(phase_now(), to);
}

static void test_walk_static(void)
{
    t_flush();
    m_seed(300);
    expect_refused(STEPQ_PHASE_DUAL_READ, "one step");
    move(STEPQ_PHASE_DUAL_WRITE);
    CHECK(t_exists("stepq:phase") && atoll(t_str("HGET stepq:phase dual_write_since")) > 0);
    expect_refused(STEPQ_PHASE_DUAL_READ, "backfill");
    REQUIRE(m_backfill() > 0);
    ASSERT_EQ(m_sides_equal(), 0);
    expect_refused(STEPQ_PHASE_DUAL_READ, "verify");
    REQUIRE(m_verify(0));
    move(STEPQ_PHASE_DUAL_READ);
    ASSERT_EQ(m_sides_equal(), 0);
    /* The verify before the move into dual-read does not count for the next. */
    expect_refused(STEPQ_PHASE_STEP_PRIMARY, "verify");
    REQUIRE(m_verify(0));
    move(STEPQ_PHASE_STEP_PRIMARY);
    ASSERT_EQ(m_sides_equal(), 0);
    expect_refused(STEPQ_PHASE_STEP, "backup");
    REQUIRE(stepq_phase_move(Q, STEPQ_PHASE_STEP, "t", "test", STEPQ_MOVE_FORCE) == STEPQ_OK);
    CHECK(strstr(t_str("LINDEX stepq:audit -1"), "\"skipped\"") != NULL);

    /* In 'step' only the new keys are written: a new step, a finished one,
     * an expired one. */
    char id[STEPQ_ID_MAX];
    REQUIRE(stepq_submit(Q, NULL, id) == STEPQ_OK);
    ASSERT_EQ(t_exists("job:%s", id), 0);
    /* L00004 had ended before the switch and is pruned in 'step'. */
    freeReplyObject(t_cmd("HSET job:L00004 status completed"));
    freeReplyObject(t_cmd("DEL step:L00004 step:L00004:progress"));
    REQUIRE(stepq_cancel(Q, "L00008") == STEPQ_OK);
    /* L00012, pending at the switch, ended and was pruned in 'step': the
     * frozen old record says pending, the new side knows nothing, as for a
     * step the old application wrote after the switch. The rollback names
     * it and refuses; forced, it deletes it. */
    freeReplyObject(t_cmd("DEL step:L00012 step:L00012:progress"));
    freeReplyObject(t_cmd("ZREM steps:pending L00012"));
    CHECK(m_sides_equal() > 0);
    CHECK(stepq_rollback(Q, "t", NULL, 0, NULL, NULL, NULL) == STEPQ_ERR);
    if (strstr(stepq_errstr(Q), "'job:L00012'") == NULL ||
        strstr(stepq_errstr(Q), "'jobs:pending' member 'L00012'") == NULL ||
        strstr(stepq_errstr(Q), "--force") == NULL)
        FAILF("rollback with an old-only live step: '%s'", stepq_errstr(Q));
    ASSERT_EQ(phase_now(), STEPQ_PHASE_STEP);
    ASSERT_EQ(t_exists("stepq:phase") && *t_str("HGET stepq:phase reconciling"), 0);
    char *json = NULL;
    REQUIRE(stepq_rollback(Q, "t", NULL, STEPQ_MOVE_FORCE, NULL, NULL, &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "old_only_deleted"), "2");
    stepq_str_free(json);
    ASSERT_EQ(phase_now(), STEPQ_PHASE_STEP_PRIMARY);
    ASSERT_EQ(t_exists("job:L00012"), 0);
    ASSERT_EQ(m_sides_equal(), 0);
    ASSERT_EQ(t_exists("job:%s", id), 1);
    ASSERT_EQ(t_exists("job:L00004"), 0); /* deleted in 'step': stays deleted */
    ASSERT_STR(t_str("HGET job:L00008 status"), "cancelled");
    rollback_to(STEPQ_PHASE_DUAL_READ);
    ASSERT_EQ(m_sides_equal(), 0);
    rollback_to(STEPQ_PHASE_DUAL_WRITE);
    ASSERT_STR(t_str("HGET stepq:verify reverse"), "1");
    ASSERT_EQ(m_sides_equal(), 0);
    rollback_to(STEPQ_PHASE_JOB);
    ASSERT_EQ(t_exists("stepq:phase") && *t_str("HGET stepq:phase dual_write_since"), 0);
    CHECK(stepq_rollback(Q, "t", NULL, 0, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_NOTFOUND);
    /* A backfill from before the return to 'job' no longer counts. */
    move(STEPQ_PHASE_DUAL_WRITE);
    expect_refused(STEPQ_PHASE_DUAL_READ, "backfill");
}

/* Out of dual-read, a dirty verify --reverse refuses the rollback. */
static void test_rollback_refused_when_dirty(void)
{
    t_flush();
    m_seed(20);
    t_phase("dual-read");
    freeReplyObject(t_cmd("HSET step:ONLYNEW id ONLYNEW status pending"));
    CHECK(stepq_rollback(Q, "t", NULL, 0, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "verify --reverse") != NULL);
    ASSERT_EQ(phase_now(), STEPQ_PHASE_DUAL_READ);
    CHECK(strstr(t_str("LINDEX stepq:audit -1"), "\"refused\"") != NULL);
}

/* ---------------------------------------------------------------------------
 * The same walk under load
 * ------------------------------------------------------------------------- */

#define SUBMITTERS 2
#define CLAIMERS   3

static volatile sig_atomic_t stop;
static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static stepq *child_handle(void)
{
    stepq_options o = {.ignore_env_pin = 1};
    stepq *q = stepq_connect(t_url(), &o);
    signal(SIGTERM, on_term);
    return q;
}

static void submitter(int fd)
{
    stepq *q = child_handle();
    FILE *out = fdopen(fd, "w");
    while (!stop) {
        char id[STEPQ_ID_MAX];
        stepq_submit_opts o = {.priority = rand() % 3};
        if (stepq_submit(q, &o, id) != STEPQ_OK) {
            fprintf(stderr, "submit: %s\n", stepq_errstr(q));
            _exit(2);
        }
        fprintf(out, "%s\n", id);
        fflush(out);
        usleep(2000);
    }
    fclose(out);
    stepq_free(q);
    _exit(0);
}

/* Claims, reports progress and completes until told to stop and the queue
 * is empty; writes each id it completed. */
static void claimer(int n, int fd)
{
    stepq *q = child_handle();
    FILE *out = fdopen(fd, "w");
    char worker[16];
    snprintf(worker, sizeof(worker), "lw%d", n);
    for (;;) {
        char *json;
        if (stepq_claim(q, worker, NULL, 0, 1, &json) != STEPQ_OK) {
            if (stepq_err(q) != STEPQ_E_NOTFOUND) {
                fprintf(stderr, "claim: %s\n", stepq_errstr(q));
                _exit(2);
            }
            if (stop)
                break;
            usleep(3000);
            continue;
        }
        json[strlen(json) - 1] = '\0';
        char id[64], tok[64];
        snprintf(id, sizeof(id), "%s", t_field(json + 1, "id"));
        snprintf(tok, sizeof(tok), "%s", t_field(json + 1, "token"));
        stepq_str_free(json);
        if (stepq_progress(q, id, tok, 50, "half") != STEPQ_OK ||
            stepq_complete(q, id, tok, "ok") != STEPQ_OK) {
            fprintf(stderr, "claimer %d: %s: %s\n", n, id, stepq_errstr(q));
            _exit(3);
        }
        fprintf(out, "%s\n", id);
        fflush(out);
    }
    fclose(out);
    stepq_free(q);
    _exit(0);
}

static int verify_converges(int reverse)
{
    for (int i = 0; i < 4; i++)
        if (m_verify(reverse))
            return 1;
    return 0;
}

static long read_ids(int fd, char ***ids, long n)
{
    FILE *in = fdopen(fd, "r");
    char line[80];
    while (fgets(line, sizeof(line), in)) {
        line[strcspn(line, "\n")] = '\0';
        *ids = realloc(*ids, (size_t)(n + 1) * sizeof(**ids));
        (*ids)[n++] = strdup(line);
    }
    fclose(in);
    return n;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_walk_under_load(void)
{
    pid_t subs[SUBMITTERS], cls[CLAIMERS];
    int sfd[SUBMITTERS], cfd[CLAIMERS];

    t_flush();
    for (int i = 0; i < 200; i++) {
        char id[STEPQ_ID_MAX];
        REQUIRE(stepq_submit(Q, NULL, id) == STEPQ_OK);
    }
    /* The 200 ids above are not recorded by a submitter: keep them. */
    redisReply *pre = t_cmd("ZRANGE jobs:pending 0 -1");
    for (int i = 0; i < SUBMITTERS + CLAIMERS; i++) {
        int p[2];
        REQUIRE(pipe(p) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            if (i < SUBMITTERS)
                submitter(p[1]);
            claimer(i - SUBMITTERS, p[1]);
        }
        close(p[1]);
        if (i < SUBMITTERS) {
            subs[i] = pid;
            sfd[i] = p[0];
        } else {
            cls[i - SUBMITTERS] = pid;
            cfd[i - SUBMITTERS] = p[0];
        }
    }
    usleep(200000);
    move(STEPQ_PHASE_DUAL_WRITE);
    usleep(200000);
    CHECK(m_backfill() >= 0);
    CHECK(verify_converges(0));
    move(STEPQ_PHASE_DUAL_READ);
    usleep(200000);
    CHECK(verify_converges(0));
    move(STEPQ_PHASE_STEP_PRIMARY);
    usleep(200000);
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_STEP, "t", "test", STEPQ_MOVE_FORCE) == STEPQ_OK);
    usleep(300000);
    rollback_to(STEPQ_PHASE_STEP_PRIMARY);
    usleep(200000);
    rollback_to(STEPQ_PHASE_DUAL_READ);
    usleep(200000);
    /* Under load a reverse verify can catch a key mid-change; retry. */
    for (int i = 0; i < 4 && phase_now() != STEPQ_PHASE_DUAL_WRITE; i++) {
        char *json = NULL;
        if (stepq_rollback(Q, "t", NULL, 0, NULL, NULL, &json) != STEPQ_OK)
            fprintf(stderr, "  rollback: %s\n", stepq_errstr(Q));
        stepq_str_free(json);
    }
    ASSERT_EQ(phase_now(), STEPQ_PHASE_DUAL_WRITE);
    usleep(200000);
    rollback_to(STEPQ_PHASE_JOB);
    usleep(200000);

    for (int i = 0; i < SUBMITTERS; i++)
        kill(subs[i], SIGTERM);
    char **sub = NULL, **done = NULL;
    long ns = 0, nd = 0;
    for (size_t i = 0; i < pre->elements; i++) {
        sub = realloc(sub, (size_t)(ns + 1) * sizeof(*sub));
        sub[ns++] = strdup(pre->element[i]->str);
    }
    freeReplyObject(pre);
    for (int i = 0; i < SUBMITTERS; i++) {
        ns = read_ids(sfd[i], &sub, ns);
        int st;
        waitpid(subs[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    for (int i = 0; i < CLAIMERS; i++)
        kill(cls[i], SIGTERM);
    for (int i = 0; i < CLAIMERS; i++) {
        nd = read_ids(cfd[i], &done, nd);
        int st;
        waitpid(cls[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    qsort(sub, (size_t)ns, sizeof(*sub), cmp);
    qsort(done, (size_t)nd, sizeof(*done), cmp);
    /* Every submitted step completed exactly once. */
    ASSERT_EQ(nd, ns);
    long dup = 0, lost = 0;
    for (long i = 1; i < nd; i++)
        dup += strcmp(done[i - 1], done[i]) == 0;
    for (long i = 0, j = 0; i < ns; i++) {
        while (j < nd && strcmp(done[j], sub[i]) < 0)
            j++;
        if (j >= nd || strcmp(done[j], sub[i]) != 0)
            lost++;
    }
    ASSERT_EQ(dup, 0);
    ASSERT_EQ(lost, 0);
    CHECK(ns > 300);
    for (long i = 0; i < ns; i++)
        free(sub[i]);
    for (long i = 0; i < nd; i++)
        free(done[i]);
    free(sub);
    free(done);
    printf("  under load: %ld steps submitted, %ld completed once each\n", ns, nd);
}

int main(void)
{
    t_setup();
    RUN(test_walk_static);
    RUN(test_rollback_refused_when_dirty);
    RUN(test_walk_under_load);
    t_teardown();
    TEST_END();
}
