/*
 * test_mutants_engine.c - the migration engine's holes that `make mutate`
 * found: each case fails with one deliberate bug of
 * tests/mutate/mutations.txt (named above it) and passes without.
 *
 * Verify: the expiry of collections, small and big, and expiries that both
 * exist but lie further apart than the tolerance. Phase moves: each
 * precondition refused on the record that almost meets it (a backfill from
 * before the move into dual-write, new keys untrusted since a return to
 * job, a verify that found differences, a forward verify where a reverse
 * one is needed, a backup from before step-primary), then allowed once it
 * is met. Backfill: a run cut between two scripts of one page resumes
 * without a gap, a twin that exists is left as it is, and a big
 * collection's member that left the source while its chunk was on the way
 * is not put back (the cut and the leaving placed by tests/integ/relay.c).
 * The model's findings (docs/model.md): a backfill whose run crosses the
 * move to 'step' stops, and a rollback out of 'step' stopped between its
 * two reconcile passes is seen by backfill and moves, and finished by
 * running it again.
 */
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#include "test.h"
#include "migratelib.h"
#include "relay.h"

static char BK[64];

static char *verify(const stepq_verify_opts *o, int *clean)
{
    char *json = NULL;
    *clean = -1;
    if (stepq_verify(Q, o, NULL, NULL, clean, &json) != STEPQ_OK)
        FAILF("verify: %s", stepq_errstr(Q));
    return json;
}

/* A verify that must find exactly `ttl` expiries off and nothing else, and
 * name each key of `keys` (NULL-terminated). */
static void expect_ttl_off(const stepq_verify_opts *o, int ttl, const char *const *keys)
{
    int clean;
    char *json = verify(o, &clean);

    if (json == NULL)
        return;
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "ttl_off"), ttl == 1 ? "1" : "2");
    ASSERT_STR(t_field(json, "different"), "0");
    ASSERT_STR(t_field(json, "missing"), "0");
    for (; *keys; keys++) {
        if (strstr(json, *keys) == NULL)
            FAILF("the report does not name '%s': %s", *keys, json);
    }
    stepq_str_free(json);
}

/* mutation verify_coll_ttl_ignored: a set's twin that never expires (a
 * completed set copied without its TTL) is a difference, as it is for a
 * hash. */
static void test_verify_set_ttl(void)
{
    stepq_verify_opts o = {.rounds = 1, .pause_ms = 1};

    t_flush();
    t_phase("dual-write");
    freeReplyObject(t_cmd("SADD jobs:completed a b c"));
    freeReplyObject(t_cmd("EXPIRE jobs:completed 86400"));
    freeReplyObject(t_cmd("SADD steps:completed a b c"));
    expect_ttl_off(&o, 1, (const char *const[]){"jobs:completed", NULL});
}

/* mutations verify_ttl_tolerance_lua, verify_ttl_tolerance_c: two expiries
 * a minute apart are off, whether the pair is decided by the script (a
 * set) or in the client (a hash: verify.c compares hash pairs itself). */
static void test_verify_ttl_beyond_tolerance(void)
{
    stepq_verify_opts o = {.rounds = 1, .pause_ms = 1};

    t_flush();
    t_phase("dual-write");
    freeReplyObject(t_cmd("SADD jobs:failed a b"));
    freeReplyObject(t_cmd("SADD steps:failed a b"));
    freeReplyObject(t_cmd("EXPIRE jobs:failed 86400"));
    freeReplyObject(t_cmd("EXPIRE steps:failed 86460"));
    freeReplyObject(t_cmd("HSET job:H id H status completed"));
    freeReplyObject(t_cmd("HSET step:H id H status completed"));
    freeReplyObject(t_cmd("EXPIRE job:H 3600"));
    freeReplyObject(t_cmd("EXPIRE step:H 3660"));
    expect_ttl_off(&o, 2, (const char *const[]){"jobs:failed", "job:H", NULL});
}

/* mutation verify_big_coll_ttl_ignored: the same for a set compared member
 * by member (above `big`): no TTL on the twin, then one a minute off. */
static void test_verify_big_set_ttl(void)
{
    stepq_verify_opts o = {.big = 10, .batch = 10, .rounds = 1, .pause_ms = 1};

    t_flush();
    t_phase("dual-write");
    for (int i = 0; i < 50; i++)
        freeReplyObject(t_cmd("SADD jobs:completed m%d", i));
    freeReplyObject(t_cmd("EXPIRE jobs:completed 86400"));
    freeReplyObject(t_cmd("COPY jobs:completed steps:completed"));
    freeReplyObject(t_cmd("PERSIST steps:completed"));
    expect_ttl_off(&o, 1, (const char *const[]){"jobs:completed", NULL});
    freeReplyObject(t_cmd("EXPIRE steps:completed 86460"));
    expect_ttl_off(&o, 1, (const char *const[]){"jobs:completed", NULL});
}

/* Before the first member page of jobs:completed is read, its twin becomes
 * a string (a SET by hand), after verify_batch found two big sets. */
static enum relay_action twin_retyped(int argc, const char *const *argv, const size_t *lens,
                                      void *arg)
{
    atomic_int *armed = arg;

    if (relay_arg_is(argc, argv, lens, 0, "SSCAN") &&
        relay_arg_is(argc, argv, lens, 1, "jobs:completed") && atomic_exchange(armed, 0))
        freeReplyObject(t_cmd("SET steps:completed retyped"));
    return RELAY_FORWARD;
}

/* mutation verify_big_type_change_ignored: a big pair whose twin changed
 * type between verify_batch and its member chunks is a difference, named,
 * and the walk goes on (no protocol error from a WRONGTYPE answer). */
static void test_verify_big_twin_retyped(void)
{
    atomic_int armed = 1;
    stepq_verify_opts o = {.big = 10, .rounds = -1};
    int clean = -1;
    char *json = NULL;

    t_flush();
    t_phase("dual-write");
    for (int i = 0; i < 50; i++)
        freeReplyObject(t_cmd("SADD jobs:completed m%d", i));
    freeReplyObject(t_cmd("COPY jobs:completed steps:completed"));
    freeReplyObject(t_cmd("HSET job:A f 1"));
    freeReplyObject(t_cmd("HSET step:A f 1"));
    relay *rl;
    stepq *q = relay_stepq(&rl, twin_retyped, &armed);
    REQUIRE(q != NULL);
    if (stepq_verify(q, &o, NULL, NULL, &clean, &json) != STEPQ_OK)
        FAILF("verify: %s", stepq_errstr(q));
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&armed) == 0);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "1");
    CHECK(json != NULL && strstr(json, "jobs:completed") != NULL);
    stepq_str_free(json);
}

/* ---------------------------------------------------------------------------
 * Phase moves: each precondition refused when it is almost met
 * ------------------------------------------------------------------------- */

static stepq_phase phase_now(void)
{
    stepq_phase p = STEPQ_PHASE_COUNT;
    stepq_phase_get(Q, &p);
    return p;
}

static void move(stepq_phase to)
{
    usleep(3000); /* the records are compared by ms timestamps */
    if (stepq_phase_move(Q, to, "t", NULL, 0) != STEPQ_OK)
        FAILF("move to %s: %s", stepq_phase_name(to), stepq_errstr(Q));
    usleep(3000);
}

static void expect_refused(stepq_phase to, const char *needle)
{
    stepq_phase before = phase_now();

    usleep(3000);
    if (stepq_phase_move(Q, to, "t", NULL, 0) == STEPQ_OK) {
        FAILF("the move to %s was allowed; want it refused with '%s'", stepq_phase_name(to),
              needle);
        return;
    }
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    if (strstr(stepq_errstr(Q), needle) == NULL)
        FAILF("refusal '%s' does not say '%s'", stepq_errstr(Q), needle);
    ASSERT_EQ(phase_now(), before);
}

/* Legacy data, dual writes, a backfill and a clean verify: ready for
 * dual-read. */
static void ready_for_dual_read(void)
{
    t_flush();
    m_seed(20);
    move(STEPQ_PHASE_DUAL_WRITE);
    if (m_backfill() < 0 || !m_verify(0))
        FAILF("backfill or verify failed");
}

/* mutation move_dual_read_old_backfill: a backfill that started before
 * writers wrote both sides (forced in phase job) does not count, even with
 * a clean verify since: an update to an old key after it was copied, and
 * before the move into dual-write, would be lost. */
static void test_move_needs_backfill_after_dual_write(void)
{
    stepq_backfill_opts forced = {.force = 1, .who = "t"};

    t_flush();
    m_seed(20);
    REQUIRE(stepq_backfill(Q, &forced, NULL, NULL, NULL) == STEPQ_OK);
    move(STEPQ_PHASE_DUAL_WRITE);
    REQUIRE(m_verify(0));
    expect_refused(STEPQ_PHASE_DUAL_READ, "no finished backfill that started after dual writes");
    REQUIRE(m_backfill() >= 0);
    REQUIRE(m_verify(0));
    move(STEPQ_PHASE_DUAL_READ);
}

/* mutation move_dual_read_ignores_untrusted: after a return to job the new
 * keys are untrusted (writers stopped writing them), and dual-read needs a
 * repair first: a fresh backfill and a clean verify are not enough, even
 * when nothing was written meanwhile. The repair clears the mark. */
static void test_move_needs_repair_after_job(void)
{
    stepq_backfill_opts repair = {.repair = 1};

    ready_for_dual_read();
    move(STEPQ_PHASE_JOB);
    move(STEPQ_PHASE_DUAL_WRITE);
    REQUIRE(m_backfill() >= 0);
    REQUIRE(m_verify(0));
    expect_refused(STEPQ_PHASE_DUAL_READ, "backfill --repair");
    REQUIRE(stepq_backfill(Q, &repair, NULL, NULL, NULL) == STEPQ_OK);
    REQUIRE(m_verify(0));
    move(STEPQ_PHASE_DUAL_READ);
}

/* Dual writes (re)started during the repair (here: dual_write_since moved
 * past its start at the first progress report, as a rollback to job and a
 * move forward would): what it copied proves nothing, so the mark stays and
 * the repair says so (STEPQ_E_CONFLICT, exit 4), not a silent success. Its
 * advice, a repair again in dual-write, clears it. */
static void bump_dual_write(long long done, long long total, const char *key, const char *msg,
                            void *arg)
{
    int *n = arg;

    (void)done, (void)total, (void)key, (void)msg;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    if ((*n)++ == 0)
        freeReplyObject(t_cmd("HSET stepq:phase dual_write_since %lld",
                              (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1));
}

static void test_repair_raced_keeps_untrusted(void)
{
    stepq_backfill_opts repair = {.repair = 1};
    int reports = 0;

    ready_for_dual_read();
    move(STEPQ_PHASE_JOB);
    move(STEPQ_PHASE_DUAL_WRITE);
    REQUIRE(stepq_backfill(Q, &repair, bump_dual_write, &reports, NULL) == STEPQ_ERR);
    REQUIRE(reports > 0);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "stay untrusted") != NULL);
    CHECK(strstr(stepq_errstr(Q), "run 'stepq migrate backfill --repair' again in 'dual-write'") !=
          NULL);
    CHECK(t_int("HEXISTS stepq:phase untrusted_since") == 1);
    usleep(3000);
    REQUIRE(stepq_backfill(Q, &repair, NULL, NULL, NULL) == STEPQ_OK);
    CHECK(t_int("HEXISTS stepq:phase untrusted_since") == 0);
}

/* The run record's owner changed under a running backfill (a second
 * backfill took it over, or a failover lost the record's last write): the
 * run stops, saying so and what to do, and its advice, a backfill again,
 * resumes and copies everything. */
static void steal_owner(long long done, long long total, const char *key, const char *msg,
                        void *arg)
{
    int *n = arg;

    (void)done, (void)total, (void)key, (void)msg;
    if ((*n)++ == 0)
        freeReplyObject(t_cmd("HSET stepq:backfill owner lost"));
}

static void test_backfill_owner_lost_advice(void)
{
    stepq_backfill_opts bo = {.batch = 5};
    stepq_backfill_result res = {0};
    int reports = 0;

    t_flush();
    m_seed(200);
    move(STEPQ_PHASE_DUAL_WRITE);
    REQUIRE(stepq_backfill(Q, &bo, steal_owner, &reports, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "took this run over") != NULL);
    CHECK(strstr(stepq_errstr(Q), "run 'stepq migrate backfill' again: it resumes") != NULL);
    REQUIRE(stepq_backfill(Q, &bo, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.resumed, 1);
    ASSERT_EQ(m_sides_equal(), 0);
}

/* mutation clean_verify_ignores_verdict: a verify that found a difference
 * is not a clean one. */
static void test_move_needs_clean_verify(void)
{
    ready_for_dual_read();
    char was[32];
    snprintf(was, sizeof(was), "%s", t_str("HGET step:L00001 status"));
    freeReplyObject(t_cmd("HSET step:L00001 status tampered"));
    stepq_verify_opts o = {.rounds = 1, .pause_ms = 1};
    int clean;
    stepq_str_free(verify(&o, &clean));
    ASSERT_EQ(clean, 0);
    expect_refused(STEPQ_PHASE_DUAL_READ, "no clean verify");
    freeReplyObject(t_cmd("HSET step:L00001 status %s", was));
    REQUIRE(m_verify(0));
    move(STEPQ_PHASE_DUAL_READ);
}

/* mutation move_back_forward_verify: back to dual-write, reads return to
 * the old keys, so only a clean verify --reverse counts (a forward one does
 * not look for keys that exist only on the new side). */
static void test_move_back_needs_reverse_verify(void)
{
    ready_for_dual_read();
    move(STEPQ_PHASE_DUAL_READ);
    REQUIRE(m_verify(0));
    expect_refused(STEPQ_PHASE_DUAL_WRITE, "verify --reverse");
    REQUIRE(m_verify(1));
    move(STEPQ_PHASE_DUAL_WRITE);
}

/* mutation move_step_stale_backup: into step, the backup must be finished
 * after the move into step-primary (what was written since is not in an
 * older one). */
static void test_move_needs_backup_after_step_primary(void)
{
    ready_for_dual_read();
    move(STEPQ_PHASE_DUAL_READ);
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    REQUIRE(m_verify(0));
    move(STEPQ_PHASE_STEP_PRIMARY);
    expect_refused(STEPQ_PHASE_STEP, "no verified backup of the old keys since the move");
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    move(STEPQ_PHASE_STEP);
}

/* ---------------------------------------------------------------------------
 * Backfill: cut between two scripts, and a member that leaves meanwhile
 * ------------------------------------------------------------------------- */

/* The position of ARGV[i] (1-based) of an EVALSHA in argv, or -1. */
static int argv_at(int argc, const char *const *argv, int i)
{
    if (argc < 3 || !(argv[0][0] == 'E' || argv[0][0] == 'e'))
        return -1;
    int numkeys = atoi(argv[2]);
    int at = 2 + numkeys + i;
    return at < argc && at < RELAY_ARGV ? at : -1;
}

struct cut {
    atomic_int cut;
    char cursor[32]; /* of the last page seen */
};

/* Cuts the connection at the second backfill_batch script of one page of
 * the walk: the first script of the page ran, the others did not. The
 * scripts of the walk's pages carry the page's checkpoint cursor (ARGV[3]);
 * those of the fixed keys, which go first, carry none. */
static enum relay_action cut_mid_page(int argc, const char *const *argv, const size_t *lens,
                                      void *arg)
{
    struct cut *c = arg;
    int cur = argv_at(argc, argv, 3);

    if (!relay_arg_is(argc, argv, lens, 3, "stepq:backfill") || cur < 0 || lens[cur] == 0 ||
        lens[cur] >= sizeof(c->cursor) || relay_arg_is(argc, argv, lens, cur, "set") ||
        relay_arg_is(argc, argv, lens, cur, "zset"))
        return RELAY_FORWARD;
    if (strlen(c->cursor) == lens[cur] && memcmp(c->cursor, argv[cur], lens[cur]) == 0) {
        atomic_store(&c->cut, 1);
        return RELAY_CUT;
    }
    memcpy(c->cursor, argv[cur], lens[cur]);
    c->cursor[lens[cur]] = '\0';
    return RELAY_FORWARD;
}

/* mutation backfill_checkpoint_next_page: the scripts of one page travel in
 * one pipeline, each recording the cursor that produced the page. A run
 * that dies after the first of them (here: its connection cut right there)
 * resumes at that page again, and nothing is left uncopied. */
static void test_backfill_resumes_cut_page(void)
{
    struct cut c = {.cut = 0};
    stepq_backfill_opts bo = {.batch = 5};
    stepq_backfill_result res = {0};

    t_flush();
    m_seed(200);
    move(STEPQ_PHASE_DUAL_WRITE);
    relay *rl;
    stepq *q = relay_stepq(&rl, cut_mid_page, &c);
    REQUIRE(q != NULL);
    CHECK(stepq_backfill(q, &bo, NULL, NULL, NULL) == STEPQ_ERR);
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&c.cut) == 1);
    ASSERT_STR(t_str("HGET stepq:backfill stage"), "scan");
    REQUIRE(stepq_backfill(Q, &bo, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.resumed, 1);
    ASSERT_EQ(m_sides_equal(), 0);
}

/* Cuts the connection at the first chunk of a big per-id collection
 * (backfill_members.lua on a worker set): the pages queued after the one
 * that found it have run by then, their checkpoints recorded. */
static enum relay_action cut_first_chunk(int argc, const char *const *argv, const size_t *lens,
                                         void *arg)
{
    struct cut *c = arg;

    if (argc > 5 && relay_arg_is(argc, argv, lens, 2, "4") &&
        relay_arg_is(argc, argv, lens, 3, "stepq:backfill") && lens[5] > 7 &&
        memcmp(argv[5], "worker:", 7) == 0) {
        atomic_store(&c->cut, 1);
        return RELAY_CUT;
    }
    return RELAY_FORWARD;
}

/* The cursor of the first SCAN of a walk (src/walk_pipe.c sends "SCAN
 * cursor COUNT n MATCH p"; a preflight's sample, "SCAN 0 MATCH p COUNT n",
 * may come before it): where a run resumed. */
struct first_scan {
    char cursor[32];
    atomic_int seen;
};

static enum relay_action note_first_scan(int argc, const char *const *argv, const size_t *lens,
                                         void *arg)
{
    struct first_scan *f = arg;

    if (relay_arg_is(argc, argv, lens, 0, "SCAN") && relay_arg_is(argc, argv, lens, 2, "COUNT") &&
        lens[1] < sizeof(f->cursor) && atomic_load(&f->seen) == 0) {
        memcpy(f->cursor, argv[1], lens[1]);
        f->cursor[lens[1]] = '\0';
        atomic_store(&f->seen, 1);
    }
    return RELAY_FORWARD;
}

/* mutation backfill_big_not_held: the walk keeps several pages in flight,
 * so when a script finds a big collection (merged in chunks by the client
 * later) the pages behind it have already moved the checkpoint on. The
 * script holds the cursor of its page (`cursor_held`) until the merge is
 * done: a run killed before it resumes at that page, and every member
 * arrives. */
static void test_backfill_big_held(void)
{
    struct cut c = {.cut = 0};
    stepq_backfill_opts bo = {.batch = 5, .big = 10};
    stepq_backfill_result res = {0};

    /* The premise: pages behind the big one ran and recorded their cursor.
     * How many pages were in flight when the big one was found depends on
     * the SCAN order and the machine's load (1 run in 12 had none under
     * load): the cut run is tried again, a few times, until it holds. */
    char held[32];
    int premise = 0;
    for (int attempt = 0; attempt < 8 && !premise; attempt++) {
        t_flush();
        m_seed(300);
        for (int w = 0; w < 10; w++) {
            for (int i = 0; i < 40; i++)
                freeReplyObject(t_cmd("SADD worker:W%d:jobs m%d", w, i));
            freeReplyObject(t_cmd("SADD worker:W%d:steps m0", w));
        }
        move(STEPQ_PHASE_DUAL_WRITE);
        relay *rl;
        atomic_store(&c.cut, 0);
        stepq *q = relay_stepq(&rl, cut_first_chunk, &c);
        REQUIRE(q != NULL);
        CHECK(stepq_backfill(q, &bo, NULL, NULL, NULL) == STEPQ_ERR);
        stepq_free(q);
        relay_stop(rl);
        REQUIRE(atomic_load(&c.cut) == 1);
        snprintf(held, sizeof(held), "%s", t_str("HGET stepq:backfill cursor_held"));
        REQUIRE(held[0] != '\0');
        premise = strcmp(held, t_str("HGET stepq:backfill cursor")) != 0;
    }
    CHECK(premise);
    /* The resume starts at the held page. That, not only the members, is
     * what is checked: SCAN may return a key twice, so a resume from the
     * later cursor still met the skipped collections now and then (the
     * mutation survived about 1 run in 7 on a loaded machine). */
    struct first_scan f = {.seen = 0};
    relay *rl;
    stepq *q = relay_stepq(&rl, note_first_scan, &f);
    REQUIRE(q != NULL);
    REQUIRE(stepq_backfill(q, &bo, NULL, NULL, &res) == STEPQ_OK);
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&f.seen) == 1);
    ASSERT_STR(f.cursor, held);
    ASSERT_EQ(res.resumed, 1);
    for (int w = 0; w < 10; w++)
        ASSERT_EQ(t_int("SCARD worker:W%d:steps", w), 40);
    CHECK(t_int("HEXISTS stepq:backfill cursor_held") == 0);
}

/* mutation backfill_copies_big_whole: a collection above --big is merged
 * in chunks even when its twin is absent (a COPY of millions of members
 * holds Redis for seconds), and arrives whole, with its TTL. */
static void test_backfill_big_absent_twin_chunked(void)
{
    stepq_backfill_opts bo = {.batch = 5, .big = 10};
    stepq_backfill_result res = {0};

    t_flush();
    t_phase("dual-write");
    for (int i = 0; i < 50; i++)
        freeReplyObject(t_cmd("SADD jobs:completed m%d", i));
    freeReplyObject(t_cmd("EXPIRE jobs:completed 86400"));
    REQUIRE(stepq_backfill(Q, &bo, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.merged, 50);
    ASSERT_EQ(res.copied, 0);
    ASSERT_EQ(t_int("SCARD steps:completed"), 50);
    CHECK(t_int("TTL steps:completed") > 86000);
}

/* mutation backfill_replaces_newer_twin: a twin that exists is the dual
 * writes' (newer than the old key when they differ: a repair is another
 * command); the backfill leaves it as it is, with its own TTL. */
static void test_backfill_keeps_existing_twin(void)
{
    stepq_backfill_result res = {0};

    t_flush();
    t_phase("dual-write");
    freeReplyObject(t_cmd("HSET job:T id T status pending attempts 0"));
    freeReplyObject(t_cmd("HSET step:T id T status active attempts 1 worker w1"));
    freeReplyObject(t_cmd("EXPIRE step:T 7200"));
    REQUIRE(stepq_backfill(Q, NULL, NULL, NULL, &res) == STEPQ_OK);
    ASSERT_EQ(res.copied, 0);
    ASSERT_STR(t_str("HGET step:T status"), "active");
    ASSERT_STR(t_str("HGET step:T worker"), "w1");
    CHECK(t_int("TTL step:T") > 7000);
}

struct leave {
    atomic_int armed;
    const char *key, *rem; /* the big collection, and how a member leaves it */
    char member[64];
};

/* Before the first chunk of the big collection reaches Redis, the first
 * member it carries leaves the source (claimed, or pruned by retention). */
static enum relay_action member_leaves(int argc, const char *const *argv, const size_t *lens,
                                       void *arg)
{
    struct leave *l = arg;
    int ncp = argv_at(argc, argv, 4);

    if (argc < 4 || !relay_arg_is(argc, argv, lens, 2, "4") ||
        !relay_arg_is(argc, argv, lens, 5, l->key) || ncp < 0)
        return RELAY_FORWARD;
    int m = argv_at(argc, argv, 5 + 2 * atoi(argv[ncp]));
    if (m < 0 || !atomic_exchange(&l->armed, 0))
        return RELAY_FORWARD;
    snprintf(l->member, sizeof(l->member), "%.*s", (int)lens[m], argv[m]);
    freeReplyObject(t_cmd("%s %s %s", l->rem, l->key, l->member));
    return RELAY_FORWARD;
}

/* mutations backfill_members_no_recheck, backfill_members_set_no_recheck: a
 * big collection is merged in chunks read before their script runs; each
 * member is checked in the source again there, so one that left meanwhile
 * is not put back (a zset, jobs:pending, and a set, jobs:completed). */
static void test_backfill_members_recheck(void)
{
    static const char *const old[] = {"jobs:pending", "jobs:completed"};
    static const char *const twin[] = {"steps:pending", "steps:completed"};

    for (int k = 0; k < 2; k++) {
        struct leave l = {.armed = 1, .key = old[k], .rem = k ? "SREM" : "ZREM"};
        stepq_backfill_opts bo = {.big = 500};

        t_flush();
        t_phase("dual-write");
        for (int i = 0; i < 3000; i++)
            redisAppendCommand(R, k ? "SADD %s p%d" : "ZADD %s 3 p%d", old[k], i);
        for (int i = 0; i < 3000; i++) {
            void *r;
            if (redisGetReply(R, &r) != REDIS_OK)
                exit(1);
            freeReplyObject(r);
        }
        /* a dual write: the twin exists */
        freeReplyObject(t_cmd(k ? "SADD %s n1" : "ZADD %s 1 n1", twin[k]));
        relay *rl;
        stepq *q = relay_stepq(&rl, member_leaves, &l);
        REQUIRE(q != NULL);
        CHECK(stepq_backfill(q, &bo, NULL, NULL, NULL) == STEPQ_OK);
        stepq_free(q);
        relay_stop(rl);
        REQUIRE(l.member[0] != '\0');
        ASSERT_EQ(t_int(k ? "SCARD %s" : "ZCARD %s", twin[k]), 3000); /* 2999 old + n1 */
        if (k ? t_int("SISMEMBER %s %s", twin[k], l.member) != 0
              : *t_str("ZSCORE %s %s", twin[k], l.member) != '\0')
            FAILF("'%s' left %s before its chunk was merged, yet is in %s", l.member, old[k],
                  twin[k]);
    }
}

/* mutation backfill_in_step: in 'step', and while a rollback out of it is
 * unfinished, the backfill is refused before it starts: its message says
 * why, and the finished run's record is left as it was (the scripts would
 * refuse too, but only after a new run replaced that record). */
static void test_backfill_refused_before_start(void)
{
    const char *phases[] = {"step", "step-primary"};

    for (int i = 0; i < 2; i++) {
        t_flush();
        t_phase(phases[i]);
        if (i == 1)
            freeReplyObject(t_cmd("HSET stepq:phase reconciling 1"));
        freeReplyObject(t_cmd("HSET stepq:backfill state done run_id r1 finished_at 5"));
        freeReplyObject(t_cmd("HSET job:X id X status pending attempts 0"));
        CHECK(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_ERR);
        if (strstr(stepq_errstr(Q), "cannot backfill") == NULL)
            FAILF("backfill in %s: '%s'", phases[i], stepq_errstr(Q));
        ASSERT_STR(t_str("HGET stepq:backfill state"), "done");
        ASSERT_STR(t_str("HGET stepq:backfill run_id"), "r1");
        ASSERT_EQ(t_int("EXISTS step:X"), 0);
    }
}

/* mutation verify_absent_collection_gone (finding F3 of docs/model.md): a
 * worker pinned to 'job' claimed step 0 in dual-write, so jobs:pending
 * emptied (an absent key) while steps:pending kept 0. A forward verify
 * takes a queue collection's absent key as empty and reports its twin. */
static void test_verify_absent_collection(void)
{
    stepq_verify_opts o = {.rounds = 1, .pause_ms = 1};
    int clean;

    t_flush();
    t_phase("dual-write");
    freeReplyObject(t_cmd("HSET job:0 id 0 status active attempts 1 worker w1"));
    freeReplyObject(t_cmd("HSET step:0 id 0 status active attempts 1 worker w1"));
    freeReplyObject(t_cmd("SADD jobs:active 0"));
    freeReplyObject(t_cmd("SADD steps:active 0"));
    char *json = verify(&o, &clean);
    ASSERT_EQ(clean, 1); /* both pending sets absent: equal */
    stepq_str_free(json);
    freeReplyObject(t_cmd("ZADD steps:pending 1 0"));
    json = verify(&o, &clean);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "1");
    if (json != NULL && strstr(json, "steps:pending") == NULL)
        FAILF("the report does not name steps:pending: %s", json);
    stepq_str_free(json);
}

struct cross {
    atomic_int armed;
};

/* Before the first backfill_batch script reaches Redis, the phase moves to
 * 'step' (an operator's move made while the run was on its way). */
static enum relay_action move_to_step_first(int argc, const char *const *argv, const size_t *lens,
                                            void *arg)
{
    struct cross *c = arg;

    if (argc < 5 || !relay_arg_is(argc, argv, lens, 3, "stepq:backfill") ||
        !relay_arg_is(argc, argv, lens, 4, "stepq:phase") || !atomic_exchange(&c->armed, 0))
        return RELAY_FORWARD;
    t_phase("step");
    return RELAY_FORWARD;
}

/* mutation backfill_guard_ignores_step (finding F1 of docs/model.md): the
 * preflight saw step-primary; the phase moved to 'step' before the run's
 * first script. The frozen jobs:active still names X, which completed in
 * 'step' (the new side only); the script must refuse rather than put X
 * back in steps:active, where the reaper would find it. */
static void test_backfill_crossing_step_stops(void)
{
    struct cross c = {.armed = 1};

    t_flush();
    t_phase("step-primary");
    freeReplyObject(t_cmd("HSET job:X id X status active attempts 1 worker w1"));
    freeReplyObject(t_cmd("SADD jobs:active X"));
    freeReplyObject(t_cmd("HSET step:X id X status completed attempts 1"));
    freeReplyObject(t_cmd("SADD steps:completed X"));
    freeReplyObject(t_cmd("SADD steps:active Y"));
    relay *rl;
    stepq *q = relay_stepq(&rl, move_to_step_first, &c);
    REQUIRE(q != NULL);
    CHECK(stepq_backfill(q, NULL, NULL, NULL, NULL) == STEPQ_ERR);
    if (strstr(stepq_errstr(q), "moved to 'step'") == NULL)
        FAILF("backfill across the move: '%s'", stepq_errstr(q));
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&c.armed) == 0);
    ASSERT_EQ(t_int("SISMEMBER steps:active X"), 0);
}

struct stop_after_move {
    atomic_int state; /* 0 before the move, 1 after it, 2 cut */
};

/* A rollback out of 'step' stopped between its move and its second
 * reconcile: just before the move takes effect, a writer still in 'step'
 * completes X (new keys only); the first reconcile script after the move is
 * where the process dies. */
static enum relay_action stop_after_the_move(int argc, const char *const *argv, const size_t *lens,
                                             void *arg)
{
    struct stop_after_move *s = arg;

    if (argc < 5 || !relay_arg_is(argc, argv, lens, 3, "stepq:phase"))
        return RELAY_FORWARD;
    if (relay_arg_is(argc, argv, lens, 4, "stepq:audit") && atomic_load(&s->state) == 0) {
        freeReplyObject(t_cmd("HSET step:X status completed"));
        freeReplyObject(t_cmd("SMOVE steps:active steps:completed X"));
        atomic_store(&s->state, 1);
        return RELAY_FORWARD;
    }
    if (atomic_load(&s->state) == 1 && !relay_arg_is(argc, argv, lens, 4, "stepq:audit")) {
        atomic_store(&s->state, 2);
        return RELAY_CUT;
    }
    return RELAY_FORWARD;
}

/* mutation rollback_unmarked (finding F2 of docs/model.md): the old keys
 * miss what 'step' wrote after the first pass until the second one ends.
 * Meanwhile a backfill (step-primary allows it) would merge the stale
 * jobs:active into steps:active and another move would read old keys as
 * whole; both refuse, naming the rollback, and running the rollback again
 * finishes the reconcile without moving further. */
static void test_rollback_stopped_after_move(void)
{
    struct stop_after_move s = {.state = 0};
    char *json = NULL;

    t_flush();
    t_phase("step");
    freeReplyObject(t_cmd("HSET job:X id X status active attempts 1 worker w1"));
    freeReplyObject(t_cmd("SADD jobs:active X"));
    freeReplyObject(t_cmd("HSET step:X id X status active attempts 1 worker w1"));
    freeReplyObject(t_cmd("SADD steps:active X"));
    relay *rl;
    stepq *q = relay_stepq(&rl, stop_after_the_move, &s);
    REQUIRE(q != NULL);
    CHECK(stepq_rollback(q, "t", NULL, 0, NULL, NULL, NULL) == STEPQ_ERR);
    stepq_free(q);
    relay_stop(rl);
    REQUIRE(atomic_load(&s.state) == 2);
    ASSERT_STR(t_str("HGET stepq:phase phase"), "step-primary");
    ASSERT_STR(t_str("HGET job:X status"), "active"); /* stale until the rollback ends */

    CHECK(stepq_backfill(Q, NULL, NULL, NULL, NULL) == STEPQ_ERR);
    if (strstr(stepq_errstr(Q), "stepq migrate rollback") == NULL)
        FAILF("backfill during the rollback: '%s'", stepq_errstr(Q));
    ASSERT_EQ(t_int("SISMEMBER steps:active X"), 0);
    CHECK(stepq_phase_move(Q, STEPQ_PHASE_DUAL_READ, "t", NULL, 0) == STEPQ_ERR);
    if (strstr(stepq_errstr(Q), "stepq migrate rollback") == NULL)
        FAILF("move during the rollback: '%s'", stepq_errstr(Q));

    REQUIRE(stepq_rollback(Q, "t", NULL, 0, NULL, NULL, &json) == STEPQ_OK);
    ASSERT_STR(t_field(json, "to"), "step-primary");
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:phase phase"), "step-primary");
    ASSERT_EQ(t_int("HEXISTS stepq:phase reconciling"), 0);
    ASSERT_STR(t_str("HGET job:X status"), "completed");
    ASSERT_EQ(t_int("SISMEMBER jobs:active X"), 0);
    ASSERT_EQ(t_int("SISMEMBER jobs:completed X"), 1);
}

int main(void)
{
    snprintf(BK, sizeof(BK), "/tmp/stepq-test-mutants-%d.bk", (int)getpid());
    t_setup();
    RUN(test_verify_set_ttl);
    RUN(test_verify_ttl_beyond_tolerance);
    RUN(test_verify_big_set_ttl);
    RUN(test_verify_big_twin_retyped);
    RUN(test_move_needs_backfill_after_dual_write);
    RUN(test_move_needs_repair_after_job);
    RUN(test_repair_raced_keeps_untrusted);
    RUN(test_backfill_owner_lost_advice);
    RUN(test_move_needs_clean_verify);
    RUN(test_move_back_needs_reverse_verify);
    RUN(test_move_needs_backup_after_step_primary);
    RUN(test_backfill_resumes_cut_page);
    RUN(test_backfill_big_held);
    RUN(test_backfill_big_absent_twin_chunked);
    RUN(test_backfill_keeps_existing_twin);
    RUN(test_backfill_members_recheck);
    RUN(test_backfill_refused_before_start);
    RUN(test_verify_absent_collection);
    RUN(test_backfill_crossing_step_stops);
    RUN(test_rollback_stopped_after_move);
    t_teardown();
    unlink(BK);
    TEST_END();
}
