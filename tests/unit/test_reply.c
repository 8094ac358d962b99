/* test_reply.c - the one checked parser of numbers in replies (reply.c):
 * a malformed number is an error naming where it came from, never 0. */
#include "test.h"
#include "stepq_private.h"

static void test_parse_ll(void)
{
    static const struct {
        const char *s;
        size_t len;
        int ok;
        long long v;
    } cases[] = {
        {"0", 1, 1, 0},
        {"-5", 2, 1, -5},
        {"1700000000000", 13, 1, 1700000000000LL},
        {"9223372036854775807", 19, 1, 9223372036854775807LL},
        {"9223372036854775808", 19, 0, 0}, /* past a long long */
        {"12abc", 5, 0, 0},                /* strtoll read 12 */
        {"abc", 3, 0, 0},                  /* strtoll read 0 */
        {"", 0, 0, 0},
        {"-", 1, 0, 0},
        {" 1", 2, 0, 0},
        {"+1", 2, 0, 0},
        {"1\0002", 3, 0, 0}, /* a NUL inside: the C string said 1 */
        {"1.5", 3, 0, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        long long v = 42;
        int rc = stepq__parse_ll(NULL, cases[i].s, cases[i].len, "t", &v);
        if ((rc == STEPQ_OK) != cases[i].ok || (cases[i].ok && v != cases[i].v))
            FAILF("case %zu ('%s'): rc %d v %lld", i, cases[i].s, rc, v);
        if (!cases[i].ok && v != 42)
            FAILF("case %zu: a refused number wrote %lld", i, v);
    }
}

static void test_reply_shape(void)
{
    redisReply i1 = {.type = REDIS_REPLY_INTEGER, .integer = 3};
    char x[] = "x";
    redisReply s1 = {.type = REDIS_REPLY_STRING, .str = x, .len = 1};
    redisReply *els[] = {&i1, &s1};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = els};
    struct stepq handle; /* only its error fields are used: no connection */
    stepq *q = &handle;

    memset(&handle, 0, sizeof(handle));
    CHECK(stepq__reply_shape(q, &arr, "is", "t.lua") == STEPQ_OK);
    CHECK(stepq__reply_shape(q, &arr, "ii", "t.lua") == STEPQ_ERR);
    ASSERT_EQ(stepq_err(q), STEPQ_E_PROTOCOL);
    CHECK(strstr(stepq_errstr(q), "t.lua: item 2 is not a number") != NULL);
    CHECK(stepq__reply_shape(q, &arr, "iss", "t.lua") == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(q), "expected 3 items") != NULL);
    long long v = 0;
    CHECK(stepq__reply_ll(q, &i1, "t", &v) == STEPQ_OK && v == 3);
    CHECK(stepq__reply_ll(q, &s1, "the field f of t", &v) == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(q), "unexpected reply from the field f of t: 'x' is not a whole "
                                  "number") != NULL);
}

int main(void)
{
    RUN(test_parse_ll);
    RUN(test_reply_shape);
    TEST_END();
}
