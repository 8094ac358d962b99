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
        char id[64] = "";
        ASSERT_EQ(stepq__keymap_match(&km, o, sdslen(o), &side, id, sizeof(id)), r);
        ASSERT_EQ(side, STEPQ_OLD);
        if (km.rules[r].per_id)
            ASSERT_STR(id, "42");
        ASSERT_EQ(stepq__keymap_match(&km, n, sdslen(n), &side, id, sizeof(id)), r);
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
        "worker:1",       "workers:active", "worker:1:heartbeat", "job:",  "job:a:b",
        "jobs:pending:x", "stepq:phase",    "job:1:progress:x",   "step:", "xjob:1",
    };
    stepq__keymap km;

    stepq__keymap_default(&km);
    for (size_t i = 0; i < sizeof(none) / sizeof(*none); i++) {
        if (stepq__keymap_match(&km, none[i], strlen(none[i]), NULL, NULL, 0) != -1)
            FAILF("'%s' should match no rule", none[i]);
    }
}

static void test_namespace(void)
{
    stepq__keymap km;
    char err[256];

    stepq__keymap_default(&km);
    CHECK(stepq__keymap_set_ns(&km, "{t1}:", err, sizeof(err)) == STEPQ_OK);
    sds k = stepq__keymap_key(&km, 0, STEPQ_NEW, "9");
    ASSERT_STR(k, "{t1}:step:9");
    CHECK(stepq__keymap_match(&km, k, sdslen(k), NULL, NULL, 0) == 0);
    CHECK(stepq__keymap_match(&km, "step:9", 6, NULL, NULL, 0) == -1);
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
        {"a hash x:{id} y:{id}\nb hash x:1 z:1\n", "both match key"},
        /* Found by fuzz_rules: no sample id shows this overlap ('pzaq'). */
        {"a hash p{id}q n1{id}\nb hash pz{id} n2{id}\n", "both match key 'pzq'"},
        {"a hash job:{id}:progress n1:{id}\nb hash job:x1:progre{id} n2:{id}\n",
         "both match key 'job:x1:progress'"},
        {"a hash k{id} kz{id}\n", "rules 'a' and 'a' both match key 'kz"},
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
    ASSERT_EQ(stepq__keymap_match(&km, "item:7", 6, NULL, NULL, 0), 0);
    ASSERT_EQ(stepq__keymap_match(&km, "tasks:q", 7, NULL, NULL, 0), 1);
    /* Channels are not keys: never matched by a scan. */
    ASSERT_EQ(stepq__keymap_match(&km, "t_ev", 4, NULL, NULL, 0), -1);
}

static void test_lua_templates(void)
{
    static const char *want[] = {
        "{n}:job:{id}",
        "{n}:step:{id}",
        "{n}:job:{id}:progress",
        "{n}:step:{id}:progress",
        "{n}:jobs:pending",
        "{n}:steps:pending",
        "{n}:jobs:active",
        "{n}:steps:active",
        "{n}:jobs:completed",
        "{n}:steps:completed",
        "{n}:jobs:failed",
        "{n}:steps:failed",
        "{n}:worker:{id}:jobs",
        "{n}:worker:{id}:steps",
        "job_events",
        "step_events",
    };
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
    RUN(test_namespace);
    RUN(test_rules_file_errors);
    RUN(test_rules_file_other_rename);
    RUN(test_lua_templates);
    TEST_END();
}
