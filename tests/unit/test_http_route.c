/* test_http_route.c - the HTTP request-line parser of `stepq serve`, table-driven. */
#include "test.h"
#include "http_route.h"

static const struct {
    const char *method, *path, *query;
    int status;
    enum http_route_id id;
    enum http_op op;
    const char *step_id, *state;
    long limit;
    const char *err; /* a substring of the error */
} cases[] = {
    {"POST", "/steps", NULL, 0, HTTP_ROUTE_STEPS, HTTP_OP_SUBMIT, "", "pending", 100, NULL},
    {"GET", "/steps", NULL, 0, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100, NULL},
    {"GET", "/steps", "state=failed&limit=7", 0, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "failed", 7,
     NULL},
    {"GET", "/steps", "st%61te=active&&", 0, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "active", 100,
     NULL},
    {"HEAD", "/steps", "limit=10000", 0, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 10000,
     NULL},
    {"GET", "/steps", "state=done", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "invalid state 'done'"},
    {"GET", "/steps", "limit=0", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "invalid limit '0'"},
    {"GET", "/steps", "limit=10001", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "invalid limit"},
    {"GET", "/steps", "limit=1x", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "invalid limit"},
    {"GET", "/steps", "limit", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "invalid limit ''"},
    {"GET", "/steps", "stat=active", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "unknown query parameter 'stat'"},
    {"GET", "/steps", "state=active&state=failed", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "",
     "active", 100, "given twice"},
    {"GET", "/steps", "state=%zz", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "invalid query string"},
    {"GET", "/steps", "state=a%00", 400, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "pending", 100,
     "invalid query string"},
    {"POST", "/steps", "state=nonsense", 0, HTTP_ROUTE_STEPS, HTTP_OP_SUBMIT, "", "pending", 100,
     NULL},
    {"GET", "/steps/abc-1.x_y", NULL, 0, HTTP_ROUTE_STEP, HTTP_OP_GET, "abc-1.x_y", "pending", 100,
     NULL},
    {"GET", "/steps/ab%63", NULL, 0, HTTP_ROUTE_STEP, HTTP_OP_GET, "abc", "pending", 100, NULL},
    {"GET", "/steps/a%3Ab", NULL, 400, HTTP_ROUTE_STEP, HTTP_OP_UNKNOWN, "", "pending", 100,
     "invalid step id 'a:b'"},
    {"GET", "/steps/a%2Fb", NULL, 400, HTTP_ROUTE_STEP, HTTP_OP_UNKNOWN, "", "pending", 100,
     "invalid step id"},
    {"GET", "/steps/", NULL, 400, HTTP_ROUTE_STEP, HTTP_OP_UNKNOWN, "", "pending", 100,
     "invalid step id ''"},
    {"GET", "/steps/%4", NULL, 400, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     "percent-encoding"},
    {"GET", "/steps/0123456789012345678901234567890123456789012345678901234567890123", NULL, 400,
     HTTP_ROUTE_STEP, HTTP_OP_UNKNOWN, "", "pending", 100, "invalid step id"},
    {"POST", "/steps/s1/cancel", NULL, 0, HTTP_ROUTE_STEP_CANCEL, HTTP_OP_CANCEL, "s1", "pending",
     100, NULL},
    {"GET", "/steps/s1/cancel", NULL, 405, HTTP_ROUTE_STEP_CANCEL, HTTP_OP_UNKNOWN, "s1", "pending",
     100, "method 'GET' is not allowed"},
    {"POST", "/steps/s1/uncancel", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     "no such path '/steps/s1/uncancel'"},
    {"DELETE", "/steps/s1", NULL, 405, HTTP_ROUTE_STEP, HTTP_OP_UNKNOWN, "s1", "pending", 100,
     "method 'DELETE'"},
    {"PUT", "/steps", NULL, 405, HTTP_ROUTE_STEPS, HTTP_OP_UNKNOWN, "", "pending", 100, "'PUT'"},
    {"GET", "/workers", "x=1", 0, HTTP_ROUTE_WORKERS, HTTP_OP_WORKERS, "", "pending", 100, NULL},
    {"POST", "/workers", NULL, 405, HTTP_ROUTE_WORKERS, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "/health", NULL, 0, HTTP_ROUTE_HEALTH, HTTP_OP_HEALTH, "", "pending", 100, NULL},
    {"HEAD", "/health", NULL, 0, HTTP_ROUTE_HEALTH, HTTP_OP_HEALTH, "", "pending", 100, NULL},
    {"GET", "/health/redis-migration", NULL, 0, HTTP_ROUTE_HEALTH_MIGRATION,
     HTTP_OP_HEALTH_MIGRATION, "", "pending", 100, NULL},
    {"GET", "/health/redis", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "/metrics", NULL, 0, HTTP_ROUTE_METRICS, HTTP_OP_METRICS, "", "pending", 100, NULL},
    {"GET", "/metrics/", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "/", NULL, 0, HTTP_ROUTE_ASSET, HTTP_OP_ASSET, "", "pending", 100, NULL},
    {"POST", "/", NULL, 405, HTTP_ROUTE_ASSET, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "/console.js", NULL, 0, HTTP_ROUTE_ASSET, HTTP_OP_ASSET, "", "pending", 100, NULL},
    {"GET", "/console.exe", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "/console/feed", NULL, 0, HTTP_ROUTE_CONSOLE_FEED, HTTP_OP_CONSOLE, "", "pending", 100,
     NULL},
    {"POST", "/migrate/phase", NULL, 0, HTTP_ROUTE_MIGRATE_PHASE, HTTP_OP_PHASE, "", "pending", 100,
     NULL},
    {"GET", "/migrate/phase", NULL, 405, HTTP_ROUTE_MIGRATE_PHASE, HTTP_OP_UNKNOWN, "", "pending",
     100, NULL},
    {"POST", "/migrate/throttle", NULL, 0, HTTP_ROUTE_MIGRATE_THROTTLE, HTTP_OP_THROTTLE, "",
     "pending", 100, NULL},
    {"POST", "/migrate/rollback", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     NULL},
    {"GET", "", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "steps", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "/a/b/c/d/e", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
    {"GET", "/a/b/c/d/e/f/g", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     NULL},
    /* A queue's paths under /q/{namespace}/ (issue 12). */
    {"GET", "/q/%7Bemails%7D:/steps/abc", NULL, 0, HTTP_ROUTE_STEP, HTTP_OP_GET, "abc", "pending",
     100, NULL},
    {"POST", "/q/e/steps/abc/cancel", NULL, 0, HTTP_ROUTE_STEP_CANCEL, HTTP_OP_CANCEL, "abc",
     "pending", 100, NULL},
    {"GET", "/q/e/steps", "state=failed", 0, HTTP_ROUTE_STEPS, HTTP_OP_LIST, "", "failed", 100,
     NULL},
    {"GET", "/q/e/health/redis-migration", NULL, 0, HTTP_ROUTE_HEALTH_MIGRATION,
     HTTP_OP_HEALTH_MIGRATION, "", "pending", 100, NULL},
    {"GET", "/q/e/metrics", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     "served once"},
    {"GET", "/q/e/", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     "served once"},
    {"GET", "/q//steps", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     "/q/NAMESPACE"},
    {"GET", "/q/e", NULL, 404, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     "/q/NAMESPACE"},
    {"GET", "/q/e%00x/steps", NULL, 400, HTTP_ROUTE_NONE, HTTP_OP_UNKNOWN, "", "pending", 100,
     NULL},
    {NULL, "/health", NULL, 405, HTTP_ROUTE_HEALTH, HTTP_OP_UNKNOWN, "", "pending", 100, NULL},
};

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        struct http_route r;
        const char *q = cases[i].query;
        int st = stepq__http_route_parse(cases[i].method, cases[i].path, strlen(cases[i].path), q,
                                         q ? strlen(q) : 0, &r);
        if (st != cases[i].status || r.status != st || r.id != cases[i].id || r.op != cases[i].op ||
            strcmp(r.step_id, cases[i].step_id) != 0 || strcmp(r.state, cases[i].state) != 0 ||
            r.limit != cases[i].limit || (cases[i].err && strstr(r.error, cases[i].err) == NULL) ||
            (st != 0) != (r.error[0] != '\0'))
            FAILF("case %zu: %s %s?%s: status %d id %d op %d step '%s' state '%s' limit %ld "
                  "error '%s'",
                  i, cases[i].method ? cases[i].method : "(null)", cases[i].path, q ? q : "", st,
                  r.id, r.op, r.step_id, r.state, r.limit, r.error);
    }
}

/* The namespace of /q/{namespace}/ comes out decoded; the old paths have none. */
static void test_namespace(void)
{
    struct http_route r;
    const char *p = "/q/%7Bemails%7D:/steps";

    ASSERT_EQ(stepq__http_route_parse("GET", p, strlen(p), NULL, 0, &r), 0);
    ASSERT_EQ(r.has_ns, 1);
    ASSERT_EQ(strcmp(r.ns, "{emails}:"), 0);
    ASSERT_EQ(stepq__http_route_parse("GET", "/steps", 6, NULL, 0, &r), 0);
    ASSERT_EQ(r.has_ns, 0);
    /* 64 bytes: one more than a namespace may have. */
    char longp[96];
    snprintf(longp, sizeof(longp), "/q/%064d/steps", 0);
    ASSERT_EQ(stepq__http_route_parse("GET", longp, strlen(longp), NULL, 0, &r), 404);
}

static void test_mutating_and_allow(void)
{
    struct http_route r;

    ASSERT_EQ(stepq__http_route_parse("POST", "/steps", 6, NULL, 0, &r), 0);
    ASSERT_EQ(r.mutating, 1);
    ASSERT_EQ(stepq__http_route_parse("GET", "/steps", 6, NULL, 0, &r), 0);
    ASSERT_EQ(r.mutating, 0);
    ASSERT_EQ(stepq__http_route_parse("POST", "/steps/x/cancel", 15, NULL, 0, &r), 0);
    ASSERT_EQ(r.mutating, 1);
    /* The console's actions change data: the glue asks for the token. */
    ASSERT_EQ(stepq__http_route_parse("POST", "/migrate/phase", 14, NULL, 0, &r), 0);
    ASSERT_EQ(r.mutating, 1);
    ASSERT_EQ(stepq__http_route_parse("POST", "/migrate/throttle", 17, NULL, 0, &r), 0);
    ASSERT_EQ(r.mutating, 1);
    ASSERT_EQ(stepq__http_route_parse("GET", "/console/feed", 13, NULL, 0, &r), 0);
    ASSERT_EQ(r.mutating, 0);
    ASSERT_EQ(stepq__http_route_parse("PATCH", "/steps/x", 8, NULL, 0, &r), 405);
    ASSERT_EQ(r.allowed, HTTP_M_GET | HTTP_M_HEAD);
}

/* Path and query are bytes with a length, not strings: no terminator is
 * read, and an embedded NUL is refused. */
static void test_lengths_and_limits(void)
{
    struct http_route r;
    char big[HTTP_PATH_MAX + 2];

    ASSERT_EQ(stepq__http_route_parse("GET", "/healthXYZ", 7, "limit=5", 0, &r), 0);
    ASSERT_EQ(r.id, HTTP_ROUTE_HEALTH);
    ASSERT_EQ(stepq__http_route_parse("GET", "/steps?x", 6, "state=active!", 12, &r), 0);
    ASSERT_STR(r.state, "active");
    ASSERT_EQ(stepq__http_route_parse("GET", "/steps/a\0b", 10, NULL, 0, &r), 400);
    memset(big, 'a', sizeof(big));
    big[0] = '/';
    ASSERT_EQ(stepq__http_route_parse("GET", big, sizeof(big), NULL, 0, &r), 414);
    ASSERT_EQ(stepq__http_route_parse("GET", "/steps", 6, big, HTTP_QUERY_MAX + 1, &r), 414);
}

static void test_pct_decode(void)
{
    char out[8];

    ASSERT_EQ(stepq__http_pct_decode("a%41+b", 6, out, sizeof(out)), 4);
    ASSERT_STR(out, "aA+b");
    ASSERT_EQ(stepq__http_pct_decode("%4", 2, out, sizeof(out)), -1);
    ASSERT_EQ(stepq__http_pct_decode("%g0", 3, out, sizeof(out)), -1);
    ASSERT_EQ(stepq__http_pct_decode("%00", 3, out, sizeof(out)), -1);
    ASSERT_EQ(stepq__http_pct_decode("12345678", 8, out, sizeof(out)), -1);
    ASSERT_EQ(stepq__http_pct_decode("1234567", 7, out, sizeof(out)), 7);
    ASSERT_EQ(stepq__http_pct_decode("", 0, out, sizeof(out)), 0);
    ASSERT_STR(out, "");
}

int main(void)
{
    RUN(test_table);
    RUN(test_namespace);
    RUN(test_mutating_and_allow);
    RUN(test_lengths_and_limits);
    RUN(test_pct_decode);
    TEST_END();
}
