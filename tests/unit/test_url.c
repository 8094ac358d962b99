/* test_url.c - Redis URL parsing, table-driven. */
#include "test.h"
#include "stepq_private.h"

static const struct {
    const char *url;
    int ok;
    int is_unix;
    const char *host;
    int port;
    const char *user, *pass;
    int db;
} cases[] = {
    {"redis://localhost", 1, 0, "localhost", 6379, NULL, NULL, 0},
    {"redis://127.0.0.1:6380/3", 1, 0, "127.0.0.1", 6380, NULL, NULL, 3},
    {"redis://:secret@h:1/0", 1, 0, "h", 1, NULL, "secret", 0},
    {"redis://secret@h", 1, 0, "h", 6379, NULL, "secret", 0},
    {"redis://alice:p%40ss@h:7000/2", 1, 0, "h", 7000, "alice", "p@ss", 2},
    {"redis://[::1]:6390", 1, 0, "::1", 6390, NULL, NULL, 0},
    {"redis://h/", 1, 0, "h", 6379, NULL, NULL, 0},
    {"unix:///tmp/r.sock", 1, 1, "/tmp/r.sock", 0, NULL, NULL, 0},
    {"unix:///tmp/r.sock?db=5", 1, 1, "/tmp/r.sock", 0, NULL, NULL, 5},
    {"", 0, 0, NULL, 0, NULL, NULL, 0},
    {"localhost:6379", 0, 0, NULL, 0, NULL, NULL, 0},
    {"http://h", 0, 0, NULL, 0, NULL, NULL, 0},
    {"rediss://h", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h:0", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h:65536", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h:12ab", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h:", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h/x", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h/-1", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h?db=1", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://u:p%4@h", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://u:p%00@h", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://[::1", 0, 0, NULL, 0, NULL, NULL, 0},
    {"redis://h st", 0, 0, NULL, 0, NULL, NULL, 0},
    {"unix://relative.sock", 0, 0, NULL, 0, NULL, NULL, 0},
    {"unix:///s?database=1", 0, 0, NULL, 0, NULL, NULL, 0},
    {"unix:///s?db=x", 0, 0, NULL, 0, NULL, NULL, 0},
};

static void test_url_table(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        stepq__url u;
        char err[256] = "";
        int rc = stepq__url_parse(&u, cases[i].url, err, sizeof(err));
        if ((rc == STEPQ_OK) != cases[i].ok) {
            FAILF("'%s': expected %s, got %s (%s)", cases[i].url, cases[i].ok ? "ok" : "error",
                  rc == STEPQ_OK ? "ok" : "error", err);
            if (rc == STEPQ_OK)
                stepq__url_release(&u);
            continue;
        }
        if (!cases[i].ok) {
            /* Every error says what is expected, and never echoes a password. */
            CHECK(strlen(err) > 10);
            CHECK(strstr(err, "secret") == NULL);
            continue;
        }
        ASSERT_EQ(u.is_unix, cases[i].is_unix);
        ASSERT_STR(u.host, cases[i].host);
        if (!u.is_unix)
            ASSERT_EQ(u.port, cases[i].port);
        if (cases[i].user)
            ASSERT_STR(u.user, cases[i].user);
        else
            CHECK(u.user == NULL);
        if (cases[i].pass)
            ASSERT_STR(u.pass, cases[i].pass);
        else
            CHECK(u.pass == NULL);
        ASSERT_EQ(u.db, cases[i].db);
        stepq__url_release(&u);
    }
}

static void test_url_error_hides_password(void)
{
    char err[256];

    CHECK(stepq_url_check("redis://alice:secret@h:99999", err, sizeof(err)) == STEPQ_ERR);
    CHECK(strstr(err, "secret") == NULL);
    CHECK(strstr(err, "port") != NULL);
}

static void test_phase_names(void)
{
    stepq_phase p;
    char err[256];

    for (int i = 0; i < STEPQ_PHASE_COUNT; i++) {
        CHECK(stepq_phase_parse(stepq_phase_name((stepq_phase)i), &p, err, sizeof(err)) ==
              STEPQ_OK);
        ASSERT_EQ(p, i);
    }
    CHECK(stepq_phase_parse("dualread", &p, err, sizeof(err)) == STEPQ_ERR);
    ASSERT_STR(err, "unknown phase 'dualread'; expected one of: job, dual-write, dual-read, "
                    "step-primary, step");
}

/* Ids of one thread sort in the order they were made. */
static void test_uuid7_sorts_by_time(void)
{
    char a[37], b[37];

    CHECK(stepq__uuid7(a) == STEPQ_OK);
    for (int i = 0; i < 10000; i++) {
        CHECK(stepq__uuid7(b) == STEPQ_OK);
        /* Strictly in order, within a millisecond too (the counter): ten
         * thousand ids take a few milliseconds, so most share one. */
        if (strcmp(a, b) >= 0)
            FAILF("id %d not after the one before: %s then %s", i, a, b);
        ASSERT_EQ(b[14], '7');
        ASSERT_EQ(b[19] == '8' || b[19] == '9' || b[19] == 'a' || b[19] == 'b', 1);
        memcpy(a, b, sizeof(a));
    }
    CHECK(stepq__valid_id(a));
}

int main(void)
{
    RUN(test_url_table);
    RUN(test_url_error_hides_password);
    RUN(test_phase_names);
    RUN(test_uuid7_sorts_by_time);
    TEST_END();
}
