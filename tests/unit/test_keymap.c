/* test_keymap.c - the key map: names of both sides, matching, rules files. */
#include "test.h"
#include "stepq_private.h"

static void test_default_names(void)
{
    static const struct {
        const char *rule, *old, *new_;
    } want[] = {
        {"step", "job:42", "step:42"},
        {"progress", "job:42:progress", "step:42:progress"},
        {"pending", "jobs:pending", "steps:pending"},
        {"active", "jobs:active", "steps:active"},
        {"completed", "jobs:completed", "steps:completed"},
        {"failed", "jobs:failed", "steps:failed"},
        {"worker_steps", "worker:42:jobs", "worker:42:steps"},
    };
    stepq__keymap km;

    stepq__keymap_default(&km);
    for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
        size_t r = 0;
        while (r < km.n && strcmp(km.rules[r].name, want[i].rule) != 0)
            r++;
        REQUIRE(r < km.n);
        sds o = stepq__keymap_key(&km, r, STEPQ_OLD, "42");
        sds n = stepq__keymap_key(&km, r, STEPQ_NEW, "42");
        ASSERT_STR(o, want[i].old);
        ASSERT_STR(n, want[i].new_);
        /* Every name maps back to its rule and side, with the id. */
        enum stepq__side side;
        const char *id = NULL;
        size_t idlen = 99;
        ASSERT_EQ(stepq__keymap_match(&km, o, sdslen(o), &side, &id, &idlen), r);
        ASSERT_EQ(side, STEPQ_OLD);
        ASSERT_EQ(idlen, km.rules[r].per_id ? 2 : 0);
        if (km.rules[r].per_id)
            CHECK(memcmp(id, "42", 2) == 0);
        ASSERT_EQ(stepq__keymap_match(&km, n, sdslen(n), &side, &id, &idlen), r);
        ASSERT_EQ(side, STEPQ_NEW);
        sdsfree(o);
        sdsfree(n);
    }
    for (int role = 0; role < STEPQ_ROLE_COUNT; role++)
        CHECK(km.role[role] >= 0);
}

static void test_match_rejects_others(void)
{
    static const char *none[] = {
        "worker:1",    "workers:active", "worker:1:heartbeat",
        "job:",        "jobs:pending:x", "stepq:phase",
        "step:",       "xjob:1",         "worker::jobs",
        "worker:jobs", "job_events",     "steps:pendin",
    };
    stepq__keymap km;

    stepq__keymap_default(&km);
    for (size_t i = 0; i < sizeof(none) / sizeof(*none); i++) {
        if (stepq__keymap_match(&km, none[i], strlen(none[i]), NULL, NULL, NULL) != -1)
            FAILF("'%s' should match no rule", none[i]);
    }
}

/* Finding 10 of issue 10: an {id} is any bytes, ':' and NUL too, of any
 * length; a name two templates match goes to the more specific one. */
static void test_match_any_bytes(void)
{
    static const struct {
        const char *key;
        size_t len;
        const char *rule;
        enum stepq__side side;
        const char *id;
        size_t idlen;
    } want[] = {
        {"job:a:b", 7, "step", STEPQ_OLD, "a:b", 3},
        {"job:a\0b", 7, "step", STEPQ_OLD, "a\0b", 3},
        {"step:a\0b:c", 10, "step", STEPQ_NEW, "a\0b:c", 5},
        {"job:X:progress", 14, "progress", STEPQ_OLD, "X", 1},
        /* The ambiguity written down in docs/keymap.md: an id that itself
         * ends in ':progress' reads as the progress of the id before it. */
        {"job:X:progress:progress", 23, "progress", STEPQ_OLD, "X:progress", 10},
        {"job:1:progress:x", 16, "step", STEPQ_OLD, "1:progress:x", 12},
        {"job::", 5, "step", STEPQ_OLD, ":", 1},
        {"job::progress", 13, "step", STEPQ_OLD, ":progress", 9},
        {"worker:a:b:jobs", 15, "worker_steps", STEPQ_OLD, "a:b", 3},
        {"worker:a:jobs:steps", 19, "worker_steps", STEPQ_NEW, "a:jobs", 6},
        {"jobs:pending", 12, "pending", STEPQ_OLD, "", 0},
    };
    stepq__keymap km;

    stepq__keymap_default(&km);
    for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
        enum stepq__side side;
        const char *id = NULL;
        size_t idlen = 99;
        int r = stepq__keymap_match(&km, want[i].key, want[i].len, &side, &id, &idlen);
        if (r < 0 || strcmp(km.rules[r].name, want[i].rule) != 0 || side != want[i].side ||
            idlen != want[i].idlen || (idlen > 0 && memcmp(id, want[i].id, idlen) != 0))
            FAILF("key %zu: rule %d side %d idlen %zu, want %s/%d/%zu", i, r, (int)side, idlen,
                  want[i].rule, (int)want[i].side, want[i].idlen);
        /* The name the rule gives back for that id is the key itself. */
        if (r >= 0) {
            sds k = stepq__keymap_key_n(&km, (size_t)r, side, id, idlen);
            CHECK(sdslen(k) == want[i].len && memcmp(k, want[i].key, want[i].len) == 0);
            sdsfree(k);
        }
    }
    /* An id of 300 bytes (the walk used to copy ids into 200-byte buffers). */
    char big[4 + 300];
    memcpy(big, "job:", 4);
    memset(big + 4, 'i', 300);
    const char *id;
    size_t idlen;
    ASSERT_EQ(stepq__keymap_match(&km, big, sizeof(big), NULL, &id, &idlen), 0);
    ASSERT_EQ(idlen, 300);
    CHECK(id == big + 4);
}

/* Names that look like old per-id keys but that no rule maps: the walks
 * name them instead of leaving them behind. */
static void test_stray(void)
{
    stepq__keymap km;
    char err[256];

    stepq__keymap_default(&km);
    ASSERT_EQ(stepq__keymap_stray(&km, "job:", 4), 0);
    ASSERT_EQ(stepq__keymap_stray(&km, "worker::jobs", 12), 6);
    ASSERT_EQ(stepq__keymap_stray(&km, "worker:jobs", 11), 6);
    static const char *fine[] = {
        "job:1", "jobs:pending", "worker:1:heartbeat", "worker:1", "step:", "stepq:phase", "jobs:"};
    for (size_t i = 0; i < sizeof(fine) / sizeof(*fine); i++) {
        if (stepq__keymap_stray(&km, fine[i], strlen(fine[i])) != -1)
            FAILF("'%s' is not a stray", fine[i]);
    }
    CHECK(stepq__keymap_set_ns(&km, "n:", err, sizeof(err)) == STEPQ_OK);
    ASSERT_EQ(stepq__keymap_stray(&km, "n:job:", 6), 0);
    ASSERT_EQ(stepq__keymap_stray(&km, "job:", 4), -1);
}

/* Templates that nest: allowed on one side when both rename alike. */
static void test_rules_nesting(void)
{
    static const char ok[] = "rec   hash  t:{id}        u:{id}\n"
                             "log   list  t:{id}:log    u:{id}:log\n"
                             "head  hash  t:{id}:h:x    u:{id}:h:x\n"
                             "one   hash  t:fixed:log   u:fixed:log\n";
    stepq__keymap km;
    char err[256];

    if (stepq__keymap_parse(&km, ok, strlen(ok), err, sizeof(err)) != STEPQ_OK)
        FAILF("nested rules refused: %s", err);
    ASSERT_EQ(stepq__keymap_match(&km, "t:a:b:log", 9, NULL, NULL, NULL), 1);
    ASSERT_EQ(stepq__keymap_match(&km, "t:fixed:log", 11, NULL, NULL, NULL), 3);
    ASSERT_EQ(stepq__keymap_match(&km, "t:a:h:x", 7, NULL, NULL, NULL), 2);
    ASSERT_EQ(stepq__keymap_match(&km, "u:a:h", 5, NULL, NULL, NULL), 0);
}

static void test_namespace(void)
{
    stepq__keymap km;
    char err[256];

    stepq__keymap_default(&km);
    CHECK(stepq__keymap_set_ns(&km, "{t1}:", err, sizeof(err)) == STEPQ_OK);
    sds k = stepq__keymap_key(&km, 0, STEPQ_NEW, "9");
    ASSERT_STR(k, "{t1}:step:9");
    CHECK(stepq__keymap_match(&km, k, sdslen(k), NULL, NULL, NULL) == 0);
    CHECK(stepq__keymap_match(&km, "step:9", 6, NULL, NULL, NULL) == -1);
    sdsfree(k);
    k = stepq__keymap_glob(&km, 1, STEPQ_OLD);
    ASSERT_STR(k, "{t1}:job:*:progress");
    sdsfree(k);
    CHECK(stepq__keymap_set_ns(&km, "a b", err, sizeof(err)) == STEPQ_ERR);
}

static void test_rules_file_errors(void)
{
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"", "no rules found"},
        {"a hash job:{id}\n", "line 1: expected 4 fields"},
        {"a tree x:{id} y:{id}\n", "unknown type 'tree'"},
        {"a hash x:{id} y\n", "{id} must be in both"},
        {"a hash x:{id}:{id} y:{id}:{id}\n", "holds {id} twice"},
        {"a hash x:* y:*\n", "glob character"},
        {"a hash x y\nb set p q\n\na hash m n\n", "line 4: rule 'a' is defined twice"},
        {"A hash x y\n", "may hold only"},
        {"a hash same same\n", "a rule must rename"},
        /* Inside, but renamed otherwise than the outer rule would. */
        {"a hash x:{id} y:{id}\nb hash x:1 z:1\n", "both match key 'x:1'; the more specific"},
        {"a hash x:{id} y:{id}\nb hash x:{id}:p z:{id}:p\n", "both match key 'x:x:p'; the more"},
        {"a hash x:{id} y:{id}\nb hash x:{id}:p y:{id}:q\n", "both match key 'x:x:p'; the more"},
        /* Overlapping without either inside the other. */
        {"a hash p{id}q n1{id}\nb hash pz{id} n2{id}\n", "both match key 'pzxq'; make"},
        {"a hash job:{id}:progress n1:{id}\nb hash job:x1:progre{id} n2:{id}\n",
         "both match key 'job:x1:progrex:progress'"},
        /* The same names twice. */
        {"a hash x:{id} y:{id}\nb hash x:{id} z:{id}\n", "match the same names"},
        /* An old name that looks like a new one (of the same rule, or another). */
        {"a hash k{id} kz{id}\n", "rules 'a' and 'a' both match key 'kzx'; an old name"},
        {"a hash k:{id} m:{id}\nb hash m:{id}:p n:{id}\n", "an old name may not look"},
        {"pending set jobs:pending steps:pending\n", "must have type 'zset'"},
        {"a hash x:{ y:{\n", "brace outside"},
    };
    stepq__keymap km;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        int rc = stepq__keymap_parse(&km, bad[i].text, strlen(bad[i].text), err, sizeof(err));
        if (rc != STEPQ_ERR || strstr(err, bad[i].msg) == NULL)
            FAILF("rules %zu: expected error with '%s', got rc=%d '%s'", i, bad[i].msg, rc, err);
    }
}

static void test_rules_file_other_rename(void)
{
    static const char text[] = "# another system's keys\n"
                               "task   hash  task:{id}   item:{id}\n"
                               "queue  zset  tasks:q     items:q   # trailing comment\n"
                               "bus    channel t_ev      i_ev\n";
    stepq__keymap km;
    char err[256];

    REQUIRE(stepq__keymap_parse(&km, text, strlen(text), err, sizeof(err)) == STEPQ_OK);
    ASSERT_EQ(km.n, 3);
    ASSERT_EQ(km.role[STEPQ_ROLE_STEP], -1);
    ASSERT_EQ(stepq__keymap_match(&km, "item:7", 6, NULL, NULL, NULL), 0);
    ASSERT_EQ(stepq__keymap_match(&km, "tasks:q", 7, NULL, NULL, NULL), 1);
    /* Channels are not keys: never matched by a scan. */
    ASSERT_EQ(stepq__keymap_match(&km, "t_ev", 4, NULL, NULL, NULL), -1);
}

/* The templates travel old then new, role by role, in the order of
 * lua/contract.txt: indexed here by role, so the test holds whatever that
 * order is. */
static void test_lua_templates(void)
{
#define TPL(role, o, n) [2 * STEPQ_ROLE_##role] = o, [2 * STEPQ_ROLE_##role + 1] = n
    static const char *const want[2 * STEPQ_ROLE_COUNT] = {
        TPL(STEP, "{n}:job:{id}", "{n}:step:{id}"),
        TPL(PROGRESS, "{n}:job:{id}:progress", "{n}:step:{id}:progress"),
        TPL(PENDING, "{n}:jobs:pending", "{n}:steps:pending"),
        TPL(ACTIVE, "{n}:jobs:active", "{n}:steps:active"),
        TPL(COMPLETED, "{n}:jobs:completed", "{n}:steps:completed"),
        TPL(FAILED, "{n}:jobs:failed", "{n}:steps:failed"),
        TPL(WORKER_STEPS, "{n}:worker:{id}:jobs", "{n}:worker:{id}:steps"),
        TPL(EVENTS, "job_events", "step_events"),
    };
#undef TPL
    stepq__keymap km;
    sds t[2 * STEPQ_ROLE_COUNT];
    char err[256];

    stepq__keymap_default(&km);
    REQUIRE(stepq__keymap_set_ns(&km, "{n}:", err, sizeof(err)) == STEPQ_OK);
    REQUIRE(stepq__keymap_lua(&km, t) == STEPQ_OK);
    for (int i = 0; i < 2 * STEPQ_ROLE_COUNT; i++) {
        ASSERT_STR(t[i], want[i]);
        sdsfree(t[i]);
    }
}

int main(void)
{
    RUN(test_default_names);
    RUN(test_match_rejects_others);
    RUN(test_match_any_bytes);
    RUN(test_stray);
    RUN(test_rules_nesting);
    RUN(test_namespace);
    RUN(test_rules_file_errors);
    RUN(test_rules_file_other_rename);
    RUN(test_lua_templates);
    TEST_END();
}
