/*
 * test_walk_pipe.c - the walks with several pages of commands in flight
 * (src/walk_pipe.c, issue 14), exact when cut and when the phase moves:
 *
 * The reconcile (the rollback out of 'step', `backfill --repair`,
 * src/reconcile.c): a pass whose connection is cut with scripts still on
 * their way fails, and running it again leaves both sides exactly equal; a
 * pass under which the phase moves stops, and none of the scripts already
 * on their way behind the move writes anything.
 *
 * The backfill's merge of a big collection in chunks (src/backfill.c): a
 * member page holds several scripts, and a run cut after one that is not
 * the last of its page resumes at that page: every member arrives.
 *
 * Cleanup's big collections, decided in chunks once the delete pass is
 * over: each one still decided.
 *
 * The cuts and the move are placed by tests/integ/relay.c.
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
    int when;               /* the script (counted from 1) the hook acts at */
    int armed;              /* 0: wait for `reconciling` in the phase hash first */
    atomic_int seen;        /* scripts counted */
    atomic_int done;        /* the hook acted */
    atomic_int ntwins;      /* twins named by scripts behind the move */
    atomic_int new1_before; /* step:NEW1 named by a script before the move */
};

/* Whether a script names key k (the hook sees its first RELAY_ARGV
 * arguments: a reconcile script of 100 pairs fits). */
static int names_key(int argc, const char *const *argv, const size_t *lens, const char *k)
{
    for (int i = 0; i < argc && i < RELAY_ARGV; i++)
        if (relay_arg_is(argc, argv, lens, i, k))
            return 1;
    return 0;
}

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
    if (n < a->when && names_key(argc, argv, lens, "step:NEW1"))
        atomic_store(&a->new1_before, 1);
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
    /* step:NEW1 (no old twin: a repair deletes it) is kept when its script
     * came behind the move. Where it falls in the SCAN order is up to the
     * server's hash seed: about 1 run in 20 its pair is among the first
     * 200, repaired before the move, as it should be. */
    ASSERT_EQ(t_int("EXISTS step:NEW1"), atomic_load(&a.new1_before) ? 0 : 1);
}

/* Cuts at a backfill_members script of jobs:completed whose recorded
 * member cursor (ARGV[6]) is the one the script before it recorded, and not
 * "0": a script after the first of its page. */
struct member_cut {
    char last[32];
    atomic_int cut;
};

static enum relay_action cut_in_page(int argc, const char *const *argv, const size_t *lens,
                                     void *arg)
{
    struct member_cut *c = arg;

    if (argc < 13 || !relay_arg_is(argc, argv, lens, 2, "4") ||
        !relay_arg_is(argc, argv, lens, 3, "stepq:backfill") ||
        !relay_arg_is(argc, argv, lens, 5, "jobs:completed") ||
        !relay_arg_is(argc, argv, lens, 11, "member_cursor") || lens[12] >= sizeof(c->last))
        return RELAY_FORWARD;
    if (strlen(c->last) == lens[12] && memcmp(c->last, argv[12], lens[12]) == 0 &&
        !relay_arg_is(argc, argv, lens, 12, "0")) {
        atomic_store(&c->cut, 1);
        return RELAY_CUT;
    }
    memcpy(c->last, argv[12], lens[12]);
    c->last[lens[12]] = '\0';
    return RELAY_FORWARD;
}

/* A big queue collection is merged in pages of ten scripts; each records
 * the member cursor a resume starts from, and only the last of a page the
 * cursor after the page: a run cut in the middle of a page resumes there
 * and every member arrives. */
static void test_backfill_member_page_cut(void)
{
    struct member_cut c = {.cut = 0};
    stepq_backfill_opts bo = {.batch = 5};
    stepq_backfill_result res = {0};

    t_flush();
    t_phase("dual-write");
    for (int i = 0; i < 3000; i++)
        redisAppendCommand(R, "SADD jobs:completed m%d", i);
    for (int i = 0; i < 3000; i++) {
        void *r = NULL;
        REQUIRE(redisGetReply(R, &r) == REDIS_OK);
        freeReplyObject(r);
    }
    relay *rl;
    stepq *q = relay_stepq(&rl, cut_in_page, &c);
    REQUIRE(q != NULL);
    CHECK(stepq_backfill(q, &bo, NULL, NULL, NULL) == STEPQ_ERR);
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&c.cut) == 1);
    ASSERT_STR(t_str("HGET stepq:backfill stage"), "fixed");
    CHECK(t_int("SCARD steps:completed") < 3000);
    REQUIRE(stepq_backfill(Q, &bo, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.resumed, 1);
    ASSERT_EQ(t_int("SCARD steps:completed"), 3000);
}

static char BK[64];

static void sadd_many(const char *key, const char *prefix, int n)
{
    for (int i = 0; i < n; i++)
        redisAppendCommand(R, "SADD %s %s%d", key, prefix, i);
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        REQUIRE(redisGetReply(R, &r) == REDIS_OK);
        freeReplyObject(r);
    }
}

/* Cleanup decides a collection above 1000 members in chunks on an empty
 * pipe; the names of such collections wait for the end of the delete pass
 * (each drain costs the pages in flight). Each is still decided: deleted
 * when every member is safe, kept when one is a live step only the old
 * side holds, a pending step in no new queue, or a new record that is not
 * a hash (the script's inline check of a member's new record, then
 * unsafe() for any answer but a status). */
static void test_cleanup_big_collections(void)
{
    stepq_cleanup_result res = {0};

    t_flush();
    /* Each set: members of steps gone from both sides, then one whose
     * records are the `setup` commands (';'-separated). */
    const char *sets[][3] = {
        {"worker:wA:jobs", "x1", ""},
        {"worker:wB:jobs", "live1", "HSET job:live1 id live1 status pending"},
        {"jobs:failed", "z1",
         "HSET job:a1 id a1 status completed;HSET step:a1 id a1 status "
         "completed"},
        /* A member whose new record says pending is safe only when the new
         * pending queue holds it; one whose new record is not a hash is not. */
        {"worker:wC:jobs", "p1", "HSET step:p1 id p1 status pending;ZADD steps:pending 0 p1"},
        {"worker:wD:jobs", "p2", "HSET step:p2 id p2 status pending"},
        {"worker:wE:jobs", "s1", "SET step:s1 x"},
    };
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        char prefix[2] = {(char)('a' + i), '\0'};
        sadd_many(sets[i][0], prefix, 1200);
        freeReplyObject(t_cmd("SADD %s %s", sets[i][0], sets[i][1]));
        char cmds[160], *save = NULL;
        snprintf(cmds, sizeof(cmds), "%s", sets[i][2]);
        for (char *c = strtok_r(cmds, ";", &save); c; c = strtok_r(NULL, ";", &save)) {
            const char *argv[8];
            int argc = 0;
            for (char *w, *in = NULL; argc < 8 && (w = strtok_r(argc ? NULL : c, " ", &in));)
                argv[argc++] = w;
            freeReplyObject(redisCommandArgv(R, argc, argv, NULL));
        }
    }
    REQUIRE(stepq_phase_move(Q, STEPQ_PHASE_STEP, "t", NULL, STEPQ_MOVE_FORCE) == STEPQ_OK);
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    REQUIRE(stepq_cleanup(Q, BK, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(t_int("EXISTS worker:wA:jobs"), 0);
    ASSERT_EQ(t_int("EXISTS jobs:failed"), 0);
    ASSERT_EQ(t_int("EXISTS job:a1"), 0);
    ASSERT_EQ(t_int("EXISTS worker:wB:jobs"), 1); /* it holds live1 */
    ASSERT_EQ(t_int("EXISTS job:live1"), 1);
    ASSERT_EQ(t_int("EXISTS worker:wC:jobs"), 0); /* p1 is queued */
    ASSERT_EQ(t_int("EXISTS worker:wD:jobs"), 1); /* p2 is pending in no queue */
    ASSERT_EQ(t_int("EXISTS worker:wE:jobs"), 1); /* step:s1 is not a hash */
    ASSERT_EQ(res.deleted, 4);
    ASSERT_EQ(res.kept, 4);
}

int main(void)
{
    snprintf(BK, sizeof(BK), "/tmp/stepq-test-walk-pipe-%d.bk", (int)getpid());
    t_setup();
    RUN(test_rollback_cut_mid_walk);
    RUN(test_repair_phase_moves);
    RUN(test_backfill_member_page_cut);
    RUN(test_cleanup_big_collections);
    t_teardown();
    unlink(BK);
    TEST_END();
}
