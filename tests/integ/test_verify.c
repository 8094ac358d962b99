/*
 * test_verify.c - the verify: clean on equal data; each kind of difference
 * found, counted per rule and named; mismatches that heal during the
 * re-checks converge; --reverse; --sample; big collections member by
 * member; the result recorded for status. Then the edges: names that are
 * not UTF-8 or hold a NUL byte, big collections whose twin has another
 * type (or is missing, or has an expiry the old one lacks), members with a
 * NUL byte, keys of a type the digest does not read.
 */
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "test.h"
#include "migratelib.h"

static char *run(stepq_verify_opts *o, int *clean)
{
    char *json = NULL;
    *clean = -1;
    if (stepq_verify(Q, o, NULL, NULL, clean, &json) != STEPQ_OK) {
        FAILF("verify: %s", stepq_errstr(Q));
        return NULL;
    }
    return json;
}

static void setup_copied(int n)
{
    t_flush();
    m_seed(n);
    t_phase("dual-write");
    if (m_backfill() < 0)
        FAILF("backfill failed");
}

static void test_clean(void)
{
    int clean;
    setup_copied(100);
    stepq_verify_opts o = {0};
    char *json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 1);
    ASSERT_STR(t_field(json, "missing"), "0");
    ASSERT_STR(t_field(json, "different"), "0");
    char dold[32];
    snprintf(dold, sizeof(dold), "%s", t_field(json, "digest_old"));
    ASSERT_STR(t_field(json, "digest_new"), dold);
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:verify clean"), "1");
    ASSERT_STR(t_str("HGET stepq:verify reverse"), "0");
    CHECK(atoll(t_str("HGET stepq:verify equal")) > 100);
}

/* The digest of a fixed keyspace is pinned: its form is compared between
 * runs and versions (a hash's field and value, a set member, a zset member
 * and its score, each length-prefixed), so a change to how it is computed
 * must not change what it is. The value is the one the first verify gave. */
/* Backfills what the caller wrote, then verifies with o: clean, and both
 * sides' digests `want`. */
static void expect_digest(stepq_verify_opts *o, const char *want)
{
    int clean;
    t_phase("dual-write");
    REQUIRE(m_backfill() >= 0);
    char *json = run(o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 1);
    ASSERT_STR(t_field(json, "digest_old"), want);
    ASSERT_STR(t_field(json, "digest_new"), want);
    stepq_str_free(json);
}

static void test_digest_pinned(void)
{
    t_flush();
    freeReplyObject(t_cmd("HSET job:P1 id P1 status pending payload %s", "{\"k\":1}"));
    freeReplyObject(t_cmd("HSET job:P1:progress percent 40 message half"));
    freeReplyObject(t_cmd("ZADD jobs:pending 5 P1 7 P2"));
    freeReplyObject(t_cmd("SADD jobs:active P3 P4 P5"));
    expect_digest(&(stepq_verify_opts){0}, "ed0e130bed1e6538");
}

/* The same keyspace with every collection compared member by member (big
 * = 1): the chunked digest is pinned too, to the value verify_members.lua
 * gave before the chunks were read in MULTI/EXEC and digested in the client
 * (verify_big.c), members with a NUL byte and a score that is not whole
 * among them. */
static void test_digest_pinned_chunked(void)
{
    t_flush();
    freeReplyObject(t_cmd("ZADD jobs:pending 5 P1 7 P2 2.5 %b", "P\0x", (size_t)3));
    freeReplyObject(t_cmd("SADD jobs:active P3 P4 P5 %b", "P\0y", (size_t)3));
    expect_digest(&(stepq_verify_opts){.big = 1}, "391f437d03e3d5bb");
}

static void test_finds_each_difference(void)
{
    int clean;
    setup_copied(40);
    freeReplyObject(t_cmd("HSET step:L00001 status tampered"));
    freeReplyObject(t_cmd("DEL step:L00006:progress"));
    freeReplyObject(t_cmd("EXPIRE step:L00002 99999"));
    freeReplyObject(t_cmd("SREM steps:active L00009"));
    /* Hash pairs are compared in the client (verify_hash.c): values of the same
     * length, a field only on one side, a field/value boundary moved, and an
     * expiry inside the tolerance (equal). */
    freeReplyObject(t_cmd("HSET job:L00003 extra aa"));
    freeReplyObject(t_cmd("HSET step:L00003 extra bb"));
    freeReplyObject(t_cmd("HSET step:L00004 only_new 1"));
    freeReplyObject(t_cmd("HSET job:L00005 ab c"));
    freeReplyObject(t_cmd("HSET step:L00005 a bc"));
    freeReplyObject(t_cmd("PEXPIRE job:L00007 100000000"));
    freeReplyObject(t_cmd("PEXPIRE step:L00007 100000500"));
    stepq_verify_opts o = {.rounds = 1, .pause_ms = 1};
    char *json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "missing"), "1");
    ASSERT_STR(t_field(json, "different"), "5");
    ASSERT_STR(t_field(json, "ttl_off"), "1");
    CHECK(strstr(json, "job:L00001") != NULL);
    CHECK(strstr(json, "job:L00006:progress") != NULL);
    char dold[32];
    snprintf(dold, sizeof(dold), "%s", t_field(json, "digest_old"));
    CHECK(strcmp(dold, t_field(json, "digest_new")) != 0);
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:verify clean"), "0");
    CHECK(strstr(t_str("HGET stepq:verify first_bad"), "job:L00001") != NULL);
}

/* A difference that heals between the rounds (a dual write caught
 * mid-flight) is not reported. */
static void test_converges(void)
{
    int clean;
    setup_copied(40);
    freeReplyObject(t_cmd("HSET step:L00001 status in-flight"));
    pid_t pid = fork();
    if (pid == 0) {
        redisContext *c = redisConnectUnix(R->unix_sock.path);
        const char *db = strstr(t_url(), "db=");
        freeReplyObject(redisCommand(c, "SELECT %s", db ? db + 3 : "0"));
        usleep(150000);
        freeReplyObject(redisCommand(c, "HSET step:L00001 status active"));
        redisFree(c);
        _exit(0);
    }
    stepq_verify_opts o = {.rounds = 5, .pause_ms = 100};
    char *json = run(&o, &clean);
    waitpid(pid, NULL, 0);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 1);
    char dold[32];
    snprintf(dold, sizeof(dold), "%s", t_field(json, "digest_old"));
    ASSERT_STR(t_field(json, "digest_new"), dold);
    stepq_str_free(json);
}

static void test_reverse(void)
{
    int clean;
    setup_copied(20);
    stepq_verify_opts o = {.reverse = 1, .rounds = -1};
    char *json = run(&o, &clean);
    ASSERT_EQ(clean, 1);
    stepq_str_free(json);
    /* A step that exists only on the new side: fine forward, missing in
     * reverse (a rollback to reads of the old keys would lose it). */
    freeReplyObject(t_cmd("HSET step:NEW1 id NEW1 status pending"));
    stepq_verify_opts f = {.rounds = -1};
    json = run(&f, &clean);
    ASSERT_EQ(clean, 1);
    stepq_str_free(json);
    json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "missing"), "1");
    CHECK(strstr(json, "step:NEW1") != NULL);
    stepq_str_free(json);
    ASSERT_STR(t_str("HGET stepq:verify reverse"), "1");
}

static void test_sample(void)
{
    int clean;
    setup_copied(400);
    stepq_verify_opts o = {.sample = 20};
    char *json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 1);
    long long eq = atoll(t_field(json, "equal"));
    /* 20 sampled per-id keys at most, plus the 6 fixed keys. */
    CHECK(eq > 6 && eq <= 26);
    stepq_str_free(json);
}

static void test_big_collection(void)
{
    int clean;
    t_flush();
    t_phase("dual-write");
    for (int i = 0; i < 3000; i++) {
        redisAppendCommand(R, "ZADD jobs:pending %d p%d", i % 7, i);
        redisAppendCommand(R, "ZADD steps:pending %d p%d", i % 7, i);
    }
    for (int i = 0; i < 6000; i++) {
        void *r;
        redisGetReply(R, &r);
        freeReplyObject(r);
    }
    stepq_verify_opts o = {.big = 500, .batch = 100, .rounds = 1, .pause_ms = 1};
    char *json = run(&o, &clean);
    ASSERT_EQ(clean, 1);
    char digest[64];
    snprintf(digest, sizeof(digest), "%s", t_field(json, "digest_old"));
    stepq_str_free(json);
    /* The digest is the content's, whatever the chunking; and a scan page
     * larger than one script can take is split (was "too many script
     * arguments" from batch 210 on). */
    static const long batches[] = {7, 85, 500, 1000};
    for (size_t i = 0; i < sizeof(batches) / sizeof(*batches); i++) {
        long batch = batches[i];
        stepq_verify_opts ob = o;
        ob.batch = batch;
        json = run(&ob, &clean);
        REQUIRE(json != NULL);
        ASSERT_EQ(clean, 1);
        if (strcmp(t_field(json, "digest_old"), digest) != 0)
            FAILF("batch %ld: digest %s, with batch 100 %s", batch, t_field(json, "digest_old"),
                  digest);
        stepq_str_free(json);
    }
    freeReplyObject(t_cmd("ZADD steps:pending 99 p17"));
    json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "1");
    CHECK(strstr(json, "jobs:pending") != NULL);
    stepq_str_free(json);
    freeReplyObject(t_cmd("ZADD steps:pending 3 p17 1 extra"));
    json = run(&o, &clean);
    ASSERT_EQ(clean, 0); /* an extra member on the new side: sizes differ */
    stepq_str_free(json);
}

/* What the progress callback was told about bad keys, one line each:
 * "err_key | err_msg". */
static char cb_lines[4096];

static void on_progress(long long done, long long total, const char *key, const char *msg,
                        void *arg)
{
    size_t n = strlen(cb_lines);

    (void)done, (void)total, (void)arg;
    if (key != NULL)
        snprintf(cb_lines + n, sizeof(cb_lines) - n, "%s | %s\n", key, msg ? msg : "(null)");
}

/* Verifies with the callback; *clean is -1 and NULL is returned when verify
 * failed (the error is printed). */
static char *run_cb(stepq_verify_opts *o, int *clean)
{
    char *json = NULL;
    cb_lines[0] = '\0';
    *clean = -1;
    if (stepq_verify(Q, o, on_progress, NULL, clean, &json) != STEPQ_OK) {
        FAILF("verify: %s", stepq_errstr(Q));
        return NULL;
    }
    return json;
}

/* Whether the report's first_bad holds exactly `line`. */
static int has_first_bad(const char *json, const char *line)
{
    json_t *o = json_loads(json, 0, NULL), *x;
    size_t i;
    int found = 0;

    json_array_foreach(json_object_get(o, "first_bad"), i, x)
    {
        found |= strcmp(json_string_value(x), line) == 0;
    }
    if (!found)
        fprintf(stderr, "  no first_bad line '%s' in %s\n", line, json);
    json_decref(o);
    return found;
}

/* A key whose name is not UTF-8 was counted but never named: jansson refuses
 * the line, and it went missing from first_bad without a word. Every bad key
 * is named, in redis-cli's quoted form when its name is not plain ASCII, in
 * the report, the record and through the callback. */
static void test_names_not_utf8(void)
{
    int clean;
    setup_copied(10);
    freeReplyObject(t_cmd("HSET %b f old", "job:\xff\xfe\"A", (size_t)8));
    freeReplyObject(t_cmd("HSET %b f new", "step:\xff\xfe\"A", (size_t)9));
    freeReplyObject(t_cmd("HSET %b f 1", "job:caf\xc3\xa9 x", (size_t)11));
    freeReplyObject(t_cmd("HSET step:L00001 status tampered"));
    freeReplyObject(t_cmd("HSET %s f 1", "job:it's"));
    freeReplyObject(t_cmd("HSET %s f 1", "job:a\\b"));
    freeReplyObject(t_cmd("HSET %s f 1", "job:q\"q"));
    stepq_verify_opts o = {.rounds = -1};
    char *json = run_cb(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "2");
    ASSERT_STR(t_field(json, "missing"), "4");
    CHECK(has_first_bad(json, "missing \"job:q\\\"q\" (twin \"step:q\\\"q\")"));
    CHECK(has_first_bad(json, "missing \"job:it's\" (twin \"step:it's\")"));
    CHECK(has_first_bad(json, "missing \"job:a\\\\b\" (twin \"step:a\\\\b\")"));
    CHECK(has_first_bad(json, "different \"job:\\xff\\xfe\\\"A\" (twin \"step:\\xff\\xfe\\\"A\")"));
    CHECK(has_first_bad(json, "missing \"job:caf\\xc3\\xa9 x\" (twin \"step:caf\\xc3\\xa9 x\")"));
    CHECK(has_first_bad(json, "different 'job:L00001' (twin 'step:L00001')"));
    stepq_str_free(json);
    CHECK(strstr(t_str("HGET stepq:verify first_bad"), "\"job:\\xff\\xfe\\\"A\"") != NULL);
    CHECK(strstr(cb_lines, "\"job:\\xff\\xfe\\\"A\" | different from its twin "
                           "\"step:\\xff\\xfe\\\"A\"\n") != NULL);
    CHECK(strstr(cb_lines, "job:L00001 | different from its twin 'step:L00001'\n") != NULL);
    CHECK(strstr(cb_lines, "\"job:caf\\xc3\\xa9 x\" | its twin "
                           "\"step:caf\\xc3\\xa9 x\" is missing\n") != NULL);
    if (test_failures)
        fprintf(stderr, "  callback said:\n%s", cb_lines);
}

/* A NUL byte in a key name: the name was cut at it (a C string), so the
 * pair compared was two absent keys, 'gone', not counted: a clean verify
 * over a difference. */
static void test_names_with_nul(void)
{
    int clean;
    setup_copied(10);
    freeReplyObject(t_cmd("HSET %b f v", "job:n\0a", (size_t)7));
    freeReplyObject(t_cmd("HSET %b f w", "step:n\0a", (size_t)8));
    freeReplyObject(t_cmd("HSET %b f v", "job:n\0b", (size_t)7));
    freeReplyObject(t_cmd("HSET %b f v", "job:n\0c", (size_t)7));
    freeReplyObject(t_cmd("HSET %b f v", "step:n\0c", (size_t)8));
    freeReplyObject(t_cmd("SADD %b m", "worker:n\0d:jobs", (size_t)15));
    freeReplyObject(t_cmd("SADD %b x", "worker:n\0d:steps", (size_t)16));
    /* What a name cut at its NUL would read instead: equal. */
    freeReplyObject(t_cmd("HSET job:n f v"));
    freeReplyObject(t_cmd("HSET step:n f v"));
    stepq_verify_opts o = {.rounds = -1};
    char *json = run_cb(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "2");
    ASSERT_STR(t_field(json, "missing"), "1");
    CHECK(has_first_bad(json, "different \"job:n\\x00a\" (twin \"step:n\\x00a\")"));
    CHECK(has_first_bad(json, "missing \"job:n\\x00b\" (twin \"step:n\\x00b\")"));
    CHECK(has_first_bad(json, "different \"worker:n\\x00d:jobs\" (twin \"worker:n\\x00d:steps\")"));
    stepq_str_free(json);
    /* The equal one counts as equal, under its own name: the digest of the
     * old side covers it, so changing it changes the digest. */
    freeReplyObject(t_cmd("DEL %b %b %b %b %b", "job:n\0a", (size_t)7, "step:n\0a", (size_t)8,
                          "job:n\0b", (size_t)7, "worker:n\0d:jobs", (size_t)15,
                          "worker:n\0d:steps", (size_t)16));
    json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 1);
    char d1[32];
    snprintf(d1, sizeof(d1), "%s", t_field(json, "digest_old"));
    stepq_str_free(json);
    freeReplyObject(t_cmd("HSET %b f v2", "job:n\0c", (size_t)7));
    freeReplyObject(t_cmd("HSET %b f v2", "step:n\0c", (size_t)8));
    json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 1);
    CHECK(strcmp(d1, t_field(json, "digest_old")) != 0);
    stepq_str_free(json);
    /* Two names that differ only after the NUL byte swap their contents:
     * the digest is over the whole names, so it changes. */
    freeReplyObject(t_cmd("HSET %b f v3", "job:n\0d", (size_t)7));
    freeReplyObject(t_cmd("HSET %b f v3", "step:n\0d", (size_t)8));
    json = run(&o, &clean);
    REQUIRE(json != NULL);
    snprintf(d1, sizeof(d1), "%s", t_field(json, "digest_old"));
    stepq_str_free(json);
    freeReplyObject(t_cmd("HSET %b f v3", "job:n\0c", (size_t)7));
    freeReplyObject(t_cmd("HSET %b f v3", "step:n\0c", (size_t)8));
    freeReplyObject(t_cmd("HSET %b f v2", "job:n\0d", (size_t)7));
    freeReplyObject(t_cmd("HSET %b f v2", "step:n\0d", (size_t)8));
    json = run(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 1);
    CHECK(strcmp(d1, t_field(json, "digest_old")) != 0);
    stepq_str_free(json);
    /* A big collection under such a name, compared member by member. */
    for (int i = 0; i < 60; i++) {
        freeReplyObject(t_cmd("SADD %b m%d", "worker:n\0e:jobs", (size_t)15, i));
        freeReplyObject(t_cmd("SADD %b m%d", "worker:n\0e:steps", (size_t)16, i == 7 ? 99 : i));
        freeReplyObject(t_cmd("SADD worker:n m%d", i)); /* what a cut name would compare */
    }
    stepq_verify_opts ob = {.rounds = -1, .big = 20};
    json = run(&ob, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "1");
    CHECK(has_first_bad(json, "different \"worker:n\\x00e:jobs\" (twin \"worker:n\\x00e:steps\")"));
    stepq_str_free(json);
}

/* Writes n members m0..m(n-1) to a set (type 's') or zset on R, pipelined. */
static void fill(const char *key, char type, int n)
{
    for (int i = 0; i < n; i++) {
        if (type == 's')
            redisAppendCommand(R, "SADD %s m%d", key, i);
        else
            redisAppendCommand(R, "ZADD %s %d m%d", key, i % 5, i);
    }
    for (int i = 0; i < n; i++) {
        void *r;
        redisGetReply(R, &r);
        freeReplyObject(r);
    }
}

/* An old set or zset above `big` whose twin has another type aborted the
 * verify with a bare WRONGTYPE (verify_members ran SMISMEMBER on a string):
 * no key named, no other pair reported. It is a difference, named, and the
 * walk goes on. */
static void test_big_twin_other_type(void)
{
    int clean;
    t_flush();
    t_phase("dual-write");
    fill("jobs:active", 's', 60);
    freeReplyObject(t_cmd("SET steps:active not-a-set"));
    fill("jobs:pending", 'z', 60);
    fill("steps:pending", 's', 60); /* a set where a zset was: the same members */
    freeReplyObject(t_cmd("HSET job:A f 1"));
    freeReplyObject(t_cmd("HSET step:A f 2"));
    stepq_verify_opts o = {.big = 20, .rounds = 1, .pause_ms = 1};
    char *json = run_cb(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "3");
    CHECK(has_first_bad(json, "different 'jobs:active' (twin 'steps:active')"));
    CHECK(has_first_bad(json, "different 'jobs:pending' (twin 'steps:pending')"));
    CHECK(has_first_bad(json, "different 'job:A' (twin 'step:A')"));
    stepq_str_free(json);
}

/* A big collection the map says is something else (a legacy job:X that is
 * a set) was walked with the map's type: ZSCAN on a set, WRONGTYPE. It is
 * compared as what it is. */
static void test_big_other_than_map_says(void)
{
    int clean;
    t_flush();
    t_phase("dual-write");
    fill("job:S1", 's', 60);
    fill("step:S1", 's', 60);
    fill("job:S2", 'z', 60);
    fill("step:S2", 'z', 60);
    freeReplyObject(t_cmd("ZADD step:S2 7 m3"));
    stepq_verify_opts o = {.big = 20, .rounds = -1};
    char *json = run_cb(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "1");
    CHECK(has_first_bad(json, "different 'job:S2' (twin 'step:S2')"));
    stepq_str_free(json);
}

/* Big collections: a twin that is missing, a twin with an expiry the old
 * one lacks, and members that differ only after a NUL byte (members went to
 * the script as C strings: "m\0a" and "m\0b" both became "m", absent from
 * both keys, skipped: equal). */
static void test_big_edges(void)
{
    int clean;
    t_flush();
    t_phase("dual-write");
    fill("jobs:active", 's', 60);
    fill("jobs:failed", 's', 60);
    fill("steps:failed", 's', 60);
    freeReplyObject(t_cmd("PEXPIRE steps:failed 100000000"));
    fill("jobs:completed", 's', 60);
    fill("steps:completed", 's', 60);
    freeReplyObject(t_cmd("SADD jobs:completed %b", "m\0a", (size_t)3));
    freeReplyObject(t_cmd("SADD steps:completed %b", "m\0b", (size_t)3));
    fill("jobs:pending", 'z', 60);
    fill("steps:pending", 'z', 60);
    freeReplyObject(t_cmd("ZADD jobs:pending 1 %b", "m\0a", (size_t)3));
    freeReplyObject(t_cmd("ZADD steps:pending 1 %b", "m\0b", (size_t)3));
    stepq_verify_opts o = {.big = 20, .rounds = -1};
    char *json = run_cb(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "missing"), "1");
    ASSERT_STR(t_field(json, "ttl_off"), "1");
    ASSERT_STR(t_field(json, "different"), "2");
    CHECK(has_first_bad(json, "missing 'jobs:active' (twin 'steps:active')"));
    CHECK(has_first_bad(json, "ttl off 'jobs:failed' (twin 'steps:failed')"));
    CHECK(has_first_bad(json, "different 'jobs:completed' (twin 'steps:completed')"));
    CHECK(has_first_bad(json, "different 'jobs:pending' (twin 'steps:pending')"));
    stepq_str_free(json);
    /* The same with a sample of the members. */
    o.sample = 1000;
    json = run_cb(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    CHECK(has_first_bad(json, "different 'jobs:completed' (twin 'steps:completed')"));
    CHECK(has_first_bad(json, "different 'jobs:pending' (twin 'steps:pending')"));
    stepq_str_free(json);
}

/* A key of a type the digest does not read (a stream) had the digest
 * 'stream:0:-' on both sides, whatever it held: two different streams were
 * equal. Such keys are compared by their DUMP payloads. */
static void test_other_types(void)
{
    int clean;
    t_flush();
    t_phase("dual-write");
    freeReplyObject(t_cmd("XADD job:ST1 1-1 f 1"));
    freeReplyObject(t_cmd("XADD step:ST1 1-1 f 2"));
    freeReplyObject(t_cmd("XADD job:ST2 1-1 f 1"));
    freeReplyObject(t_cmd("COPY job:ST2 step:ST2"));
    stepq_verify_opts o = {.rounds = -1};
    char *json = run_cb(&o, &clean);
    REQUIRE(json != NULL);
    ASSERT_EQ(clean, 0);
    ASSERT_STR(t_field(json, "different"), "1");
    ASSERT_STR(t_field(json, "equal"), "1");
    CHECK(has_first_bad(json, "different 'job:ST1' (twin 'step:ST1')"));
    stepq_str_free(json);
}

int main(void)
{
    t_setup();
    RUN(test_clean);
    RUN(test_digest_pinned);
    RUN(test_digest_pinned_chunked);
    RUN(test_finds_each_difference);
    RUN(test_converges);
    RUN(test_reverse);
    RUN(test_sample);
    RUN(test_big_collection);
    RUN(test_names_not_utf8);
    RUN(test_names_with_nul);
    RUN(test_big_twin_other_type);
    RUN(test_big_other_than_map_says);
    RUN(test_big_edges);
    RUN(test_other_types);
    t_teardown();
    TEST_END();
}
