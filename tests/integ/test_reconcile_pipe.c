/*
 * test_reconcile_pipe.c - the reconcile walk (the rollback out of 'step',
 * `backfill --repair`) with several pages of scripts in flight
 * (src/reconcile.c on src/walk_pipe.c): a pass whose connection is cut with
 * scripts still on their way fails, and running it again leaves both sides
 * exactly equal; a pass under which the phase moves stops, and none of the
 * scripts already on their way behind the move writes anything.
 *
 * The cut and the move are placed by tests/integ/relay.c at the n-th
 * reconcile_batch script (EVALSHA sha numkeys stepq:phase pairs...).
 */
#include <stdatomic.h>
#include <unistd.h>
#include "test.h"
#include "migratelib.h"
#include "relay.h"

#define STEPS 2000

/* Is this a reconcile_batch script (KEYS[1] the phase hash, then pairs)? */
static int is_reconcile(int argc, const char *const *argv, const size_t *lens)
{
    return argc > 5 && relay_arg_is(argc, argv, lens, 0, "EVALSHA") &&
           relay_arg_is(argc, argv, lens, 3, "stepq:phase") && atoi(argv[2]) >= 3 &&
           atoi(argv[2]) % 2 == 1;
}

struct at {
    int when;          /* the script (counted from 1) the hook acts at */
    int armed;         /* 0: wait for `reconciling` in the phase hash first */
    atomic_int seen;   /* scripts counted */
    atomic_int done;   /* the hook acted */
    atomic_int ntwins; /* twins named by scripts behind the move */
};

/* Cuts the connection at script number `when` of the first rollback pass
 * (the survey before it writes nothing and is not counted). */
static enum relay_action cut_at(int argc, const char *const *argv, const size_t *lens, void *arg)
{
    struct at *a = arg;

    if (!is_reconcile(argc, argv, lens))
        return RELAY_FORWARD;
    if (!a->armed && t_int("HEXISTS stepq:phase reconciling") == 0)
        return RELAY_FORWARD;
    a->armed = 1;
    if (atomic_fetch_add(&a->seen, 1) + 1 == a->when) {
        atomic_store(&a->done, 1);
        return RELAY_CUT;
    }
    return RELAY_FORWARD;
}

/* Moves the phase to dual-read just before script number `when` reaches
 * Redis; counts the pairs of every script after it. */
static enum relay_action move_at(int argc, const char *const *argv, const size_t *lens, void *arg)
{
    struct at *a = arg;

    if (!is_reconcile(argc, argv, lens))
        return RELAY_FORWARD;
    int n = atomic_fetch_add(&a->seen, 1) + 1;
    if (n == a->when) {
        t_phase("dual-read");
        atomic_store(&a->done, 1);
    } else if (n > a->when) {
        atomic_fetch_add(&a->ntwins, (argc - 4) / 2);
    }
    return RELAY_FORWARD;
}

/* Legacy data backfilled, then the new side moved on without the old one:
 * a field on every new record, new progress keys gone, a new step the old
 * side never had. */
static void diverged(void)
{
    t_flush();
    m_seed(STEPS);
    t_phase("dual-write");
    m_backfill();
    for (int i = 0; i < STEPS; i++) {
        redisAppendCommand(R, "HSET step:L%05d note n%d", i, i);
        if (i % 10 == 0)
            redisAppendCommand(R, "DEL step:L%05d:progress", i);
    }
    for (int i = 0; i < STEPS + STEPS / 10; i++) {
        void *r = NULL;
        REQUIRE(redisGetReply(R, &r) == REDIS_OK);
        freeReplyObject(r);
    }
    freeReplyObject(t_cmd("HSET step:NEW1 id NEW1 status completed"));
}

/* A rollback out of 'step' cut with scripts of several pages on their way
 * fails; run again, it leaves the old keys exactly equal to the new ones. */
static void test_rollback_cut_mid_walk(void)
{
    struct at a = {.when = 12};
    char *json = NULL;

    diverged();
    t_phase("step");
    relay *rl;
    stepq *q = relay_stepq(&rl, cut_at, &a);
    REQUIRE(q != NULL);
    CHECK(stepq_rollback(q, "t", NULL, 0, NULL, NULL, NULL) == STEPQ_ERR);
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&a.done) == 1);
    ASSERT_EQ(t_int("HEXISTS stepq:phase reconciling"), 1);
    CHECK(m_sides_equal() > 0); /* cut halfway: not equal yet */
    REQUIRE(stepq_rollback(Q, "t", NULL, 0, NULL, NULL, &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "to"), "step-primary");
    stepq_str_free(json);
    ASSERT_EQ(t_int("HEXISTS stepq:phase reconciling"), 0);
    ASSERT_EQ(m_sides_equal(), 0);
    ASSERT_STR(t_str("HGET job:L00007 note"), "n7");
    ASSERT_STR(t_str("HGET job:NEW1 status"), "completed");
    ASSERT_EQ(t_int("EXISTS job:L00010:progress"), 0);
}

/* A repair under which the phase moves to dual-read stops with a conflict;
 * the scripts already on their way behind the move write nothing. */
static void test_repair_phase_moves(void)
{
    struct at a = {.when = 4};
    stepq_backfill_opts bo = {.repair = 1};

    diverged();
    relay *rl;
    stepq *q = relay_stepq(&rl, move_at, &a);
    REQUIRE(q != NULL);
    CHECK(stepq_backfill(q, &bo, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(q), STEPQ_E_CONFLICT);
    if (strstr(stepq_errstr(q), "phase moved to 'dual-read'") == NULL)
        FAILF("repair under a move: '%s'", stepq_errstr(q));
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&a.done) == 1);
    CHECK(atomic_load(&a.ntwins) > 0); /* scripts were on their way behind the move */
    /* Only the scripts before the move (the fixed keys' and two of the
     * walk's, 100 pairs each) repaired anything; a pair may come twice
     * (SCAN gives both of its keys), so a twin named behind the move may
     * have been repaired before it. */
    for (int i = 0; i < STEPS; i++)
        redisAppendCommand(R, "HEXISTS step:L%05d note", i);
    int repaired = 0;
    for (int i = 0; i < STEPS; i++) {
        redisReply *r = NULL;
        REQUIRE(redisGetReply(R, (void **)&r) == REDIS_OK);
        repaired += r->integer == 0;
        freeReplyObject(r);
    }
    CHECK(repaired > 0);
    if (repaired > 2 * 100)
        FAILF("%d step records repaired; the scripts before the move hold 200 pairs", repaired);
    ASSERT_EQ(t_int("EXISTS step:NEW1"), 1);
}

int main(void)
{
    t_setup();
    RUN(test_rollback_cut_mid_walk);
    RUN(test_repair_phase_moves);
    t_teardown();
    TEST_END();
}
