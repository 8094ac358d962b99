/*
 * test_mutants_queue.c - the queue's holes that `make mutate` found: each
 * case fails with one deliberate bug of tests/mutate/mutations.txt (named
 * above it) and passes without. Tests against a bug, not the happy path:
 * a TTL on the twin as well as on the record, a claim resumed while the
 * worker holds other steps, a pending entry whose record disagrees, a
 * worker id taken over from a stalled process, and a step that changes
 * hands between the claim script and the read of its record (placed there
 * by tests/integ/relay.c, not by a sleep).
 */
#include <stdatomic.h>
#include <unistd.h>
#include "test.h"
#include "testlib.h"
#include "relay.h"
#include "stepq_private.h"

static char *claim1(stepq *q, const char *worker)
{
    char *json = NULL;
    if (stepq_claim(q, worker, NULL, 0, 1, &json) != STEPQ_OK)
        return NULL;
    size_t len = strlen(json);
    memmove(json, json + 1, len - 2);
    json[len - 2] = '\0';
    return json;
}

/* Claims one step for `worker`: its id and token into id/tok. */
static int claim_into(const char *worker, char *id, char *tok)
{
    char *json = claim1(Q, worker);
    if (json == NULL) {
        FAILF("claim for %s: %s", worker, stepq_errstr(Q));
        return -1;
    }
    snprintf(id, STEPQ_ID_MAX, "%s", t_field(json, "id"));
    snprintf(tok, 64, "%s", t_field(json, "token"));
    stepq_str_free(json);
    return 0;
}

/* Both records of `id` expire, within 2 s of each other. */
static void expect_ttl_both(const char *phase, const char *what, const char *id)
{
    long long o = t_int("PTTL job:%s", id), n = t_int("PTTL step:%s", id);
    if (o <= 0 || n <= 0 || llabs(o - n) > 2000)
        FAILF("phase %s, %s: PTTL job:%s %lld, step:%s %lld; want both set, within 2 s", phase,
              what, id, o, id, n);
}

/* mutation twin_copy_drops_ttl: in the dual phases a step's record is
 * written on the side read and copied to the other; the retention TTL of a
 * step that ended must be on both (invariant 3), whichever side is read. */
static void test_ended_step_expires_on_both_sides(void)
{
    static const char *const dual[] = {"dual-write", "dual-read", "step-primary"};
    char id[STEPQ_ID_MAX], tok[64];
    int final = 0;

    for (size_t i = 0; i < sizeof(dual) / sizeof(*dual); i++) {
        t_flush();
        t_phase(dual[i]);
        REQUIRE(stepq_submit(Q, NULL, id) == STEPQ_OK);
        REQUIRE(claim_into("w1", id, tok) == 0);
        REQUIRE(stepq_complete(Q, id, tok, "ok") == STEPQ_OK);
        expect_ttl_both(dual[i], "completed", id);

        stepq_submit_opts once = {.max_attempts = 1};
        REQUIRE(stepq_submit(Q, &once, id) == STEPQ_OK);
        REQUIRE(claim_into("w1", id, tok) == 0);
        REQUIRE(stepq_fail(Q, id, tok, "boom", &final) == STEPQ_OK);
        ASSERT_EQ(final, 1);
        expect_ttl_both(dual[i], "failed", id);

        REQUIRE(stepq_submit(Q, NULL, id) == STEPQ_OK);
        REQUIRE(stepq_cancel(Q, id) == STEPQ_OK);
        expect_ttl_both(dual[i], "cancelled", id);
    }
}

/* A legacy step claimed in dual-write: both records exist, and a progress
 * hash only on the old side, with `ttl_s` (0: none). */
static void legacy_claimed(const char *id, int ttl_s, char *tok)
{
    char got[STEPQ_ID_MAX];

    t_flush();
    freeReplyObject(t_cmd("HSET job:%s id %s type legacy status pending priority 1", id, id));
    freeReplyObject(t_cmd("ZADD jobs:pending 1 %s", id));
    t_phase("dual-write");
    if (claim_into("w1", got, tok) == 0)
        ASSERT_STR(got, id);
    freeReplyObject(t_cmd("HSET job:%s:progress percent 5 note legacy", id));
    if (ttl_s > 0)
        freeReplyObject(t_cmd("EXPIRE job:%s:progress %d", id, ttl_s));
}

/* mutation twin_whole_copy_drops_ttl: the first dual write of a progress
 * hash that exists only on the old side copies it whole first (invariant
 * 1), and its TTL with it (invariant 3). */
static void test_progress_twin_keeps_ttl(void)
{
    char tok[64];

    legacy_claimed("LP1", 3600, tok);
    REQUIRE(stepq_progress(Q, "LP1", tok, 50, "half") == STEPQ_OK);
    ASSERT_STR(t_str("HGET step:LP1:progress note"), "legacy");
    long long o = t_int("PTTL job:LP1:progress"), n = t_int("PTTL step:LP1:progress");
    if (o <= 3000000 || n <= 3000000 || llabs(o - n) > 2000)
        FAILF("PTTL job:LP1:progress %lld, step:LP1:progress %lld; want both about 3600 s", o, n);
}

/* mutation twin_skips_new_only: the same when only the new side has the
 * hash (written in a later phase, then rolled back to dual-write): the old
 * one becomes its whole copy, not a record of the fields this write sets. */
static void test_progress_twin_from_new_side(void)
{
    char tok[64];

    legacy_claimed("LP2", 0, tok);
    freeReplyObject(t_cmd("RENAME job:LP2:progress step:LP2:progress"));
    REQUIRE(stepq_progress(Q, "LP2", tok, 60, "more") == STEPQ_OK);
    ASSERT_STR(t_str("HGET job:LP2:progress note"), "legacy");
    ASSERT_EQ(t_int("HLEN job:LP2:progress"), t_int("HLEN step:LP2:progress"));
    ASSERT_STR(t_str("HGET job:LP2:progress percent"), "60");
}

/* mutation claim_resume_ignores_token: a worker that still runs a step of
 * an earlier claim loses the reply of its next claim, which found nothing.
 * Resumed, that claim holds nothing with its token, so it goes on to claim
 * what is pending now; the step of the earlier claim is not returned again
 * (its token is another), nor does it stand in for a new claim. */
static void test_resume_while_holding_another_step(void)
{
    char a[STEPQ_ID_MAX], b[STEPQ_ID_MAX], got[STEPQ_ID_MAX], tok_a[64], tok[64];

    t_flush();
    REQUIRE(stepq_submit(Q, NULL, a) == STEPQ_OK);
    REQUIRE(claim_into("wr", got, tok_a) == 0);
    ASSERT_STR(got, a);
    /* The lost claim: its token is remembered, as stepq_claim does when
     * the reply does not come back (test_queue's test_claim_resumed_after_loss). */
    snprintf(Q->claim_token, sizeof(Q->claim_token), "%s", "0123456789abcdef0123456789abcdef");
    snprintf(Q->claim_worker, sizeof(Q->claim_worker), "%s", "wr");
    REQUIRE(stepq_submit(Q, NULL, b) == STEPQ_OK);
    if (claim_into("wr", got, tok) == 0)
        ASSERT_STR(got, b);
    ASSERT_STR(t_str("HGET job:%s token", a), tok_a); /* a stays with its claim */
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
}

/* mutation claim_takes_ended: a pending entry whose record says the step is
 * active (held by another worker) or ended is stale (invariant 7): dropped
 * and counted, never claimed, and the record is left as it was. */
static void test_stale_pending_entry_dropped(void)
{
    char id[STEPQ_ID_MAX], done[STEPQ_ID_MAX], got[STEPQ_ID_MAX], tok[64], tok2[64];

    t_flush();
    REQUIRE(stepq_submit(Q, NULL, id) == STEPQ_OK);
    REQUIRE(claim_into("w1", got, tok) == 0);
    REQUIRE(stepq_submit(Q, NULL, done) == STEPQ_OK);
    REQUIRE(claim_into("w1", got, tok2) == 0);
    REQUIRE(stepq_complete(Q, done, tok2, "ok") == STEPQ_OK);
    freeReplyObject(t_cmd("ZADD jobs:pending 0 %s 0 %s", id, done));
    char *json = claim1(Q, "w2");
    if (json != NULL)
        FAILF("w2 claimed %s, a step that is not pending", json);
    stepq_str_free(json);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), 0);
    ASSERT_STR(t_str("HGET stepq:stats orphans_dropped"), "2");
    ASSERT_STR(t_str("HGET job:%s worker", id), "w1");
    ASSERT_STR(t_str("HGET job:%s token", id), tok);
    ASSERT_STR(t_str("HGET job:%s attempts", id), "1");
    ASSERT_STR(t_str("HGET job:%s status", done), "completed");
    CHECK(stepq_complete(Q, id, tok, "ok") == STEPQ_OK);
}

/* mutations register_takes_live_id, heartbeat_ignores_instance: a worker
 * id is owned by one process (the handle's instance token). Another one's
 * registration is refused while the owner's heartbeat lives; once it ran
 * out, the newcomer takes the id over, and the old owner's next heartbeat
 * is refused instead of renewing the newcomer's registration. */
static void test_worker_id_owned(void)
{
    stepq_options o = {.ignore_env_pin = 1};
    stepq *other = stepq_connect(t_url(), &o);

    t_flush();
    REQUIRE(stepq_err(other) == 0);
    REQUIRE(stepq_worker_register(Q, "wo", NULL, 0, 60000) == STEPQ_OK);
    CHECK(stepq_worker_register(other, "wo", NULL, 0, 60000) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(other), STEPQ_E_CONFLICT);
    freeReplyObject(t_cmd("DEL worker:wo:heartbeat")); /* Q's process stalled */
    REQUIRE(stepq_worker_register(other, "wo", NULL, 0, 60000) == STEPQ_OK);
    CHECK(stepq_worker_heartbeat(Q, "wo", 60000) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "registered by another process now") != NULL);
    CHECK(stepq_worker_heartbeat(other, "wo", 60000) == STEPQ_OK);
    stepq_free(other);
}

/* ---------------------------------------------------------------------------
 * A step that changes hands between the claim script and the read of its
 * record (the library's filter, src/queue.c claim_read)
 * ------------------------------------------------------------------------- */

struct meddle {
    atomic_int armed;
    int (*act)(struct meddle *m);
    char id[STEPQ_ID_MAX], tok[64];
    int done;
};

/* Runs m->act once, before the first HGETALL of the relayed client: the
 * read of the records that the claim script returned. */
static enum relay_action before_read(int argc, const char *const *argv, const size_t *lens,
                                     void *arg)
{
    struct meddle *m = arg;

    if (relay_arg_is(argc, argv, lens, 0, "HGETALL") && atomic_exchange(&m->armed, 0))
        m->done = m->act(m) == 0;
    return RELAY_FORWARD;
}

static int act_cancel(struct meddle *m)
{
    return stepq_cancel(Q, m->id) == STEPQ_OK ? 0 : -1;
}

/* The worker is released (its step requeued) and another worker claims the
 * step: active again, with another token. */
static int act_reclaim(struct meddle *m)
{
    char got[STEPQ_ID_MAX];

    if (stepq_worker_deregister(Q, "wa") != STEPQ_OK || claim_into("wb", got, m->tok) != 0)
        return -1;
    return strcmp(got, m->id) == 0 ? 0 : -1;
}

static void claim_meddled(int (*act)(struct meddle *m))
{
    struct meddle m = {.act = act};
    relay *rl = relay_start(before_read, &m);
    stepq_options o = {.ignore_env_pin = 1, .reconnect_tries = 1};
    stepq *q = stepq_connect(relay_url(rl), &o);

    t_flush();
    REQUIRE(stepq_err(q) == 0);
    REQUIRE(stepq_worker_register(Q, "wa", NULL, 0, 60000) == STEPQ_OK);
    REQUIRE(stepq_submit(Q, NULL, m.id) == STEPQ_OK);
    atomic_store(&m.armed, 1);
    char *json = claim1(q, "wa");
    CHECK(m.done);
    if (json != NULL)
        FAILF("the claim handed out %s, which is no longer held by its token", json);
    else
        ASSERT_EQ(stepq_err(q), STEPQ_E_NOTFOUND);
    stepq_str_free(json);
    stepq_free(q);
    relay_stop(rl);
    if (act == act_cancel)
        ASSERT_STR(t_str("HGET job:%s status", m.id), "cancelled");
    else
        CHECK(stepq_complete(Q, m.id, m.tok, "ok") == STEPQ_OK); /* wb holds it */
}

/* mutation claim_token_filter_dropped: cancelled meanwhile. */
static void test_claim_read_after_cancel(void)
{
    claim_meddled(act_cancel);
}

/* mutation claim_filter_ignores_token: reclaimed meanwhile by another
 * worker (still `active`, another token): two workers would run it. */
static void test_claim_read_after_reclaim(void)
{
    claim_meddled(act_reclaim);
}

int main(void)
{
    t_setup();
    RUN(test_ended_step_expires_on_both_sides);
    RUN(test_progress_twin_keeps_ttl);
    RUN(test_progress_twin_from_new_side);
    RUN(test_resume_while_holding_another_step);
    RUN(test_stale_pending_entry_dropped);
    RUN(test_worker_id_owned);
    RUN(test_claim_read_after_cancel);
    RUN(test_claim_read_after_reclaim);
    t_teardown();
    TEST_END();
}
