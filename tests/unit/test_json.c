/* test_json.c - a step's hash reply as JSON (stepq__step_object) and the
 * UTF-8 helpers it uses, with the inputs fuzzing found. */
#include <jansson.h>

#include "test.h"
#include "stepq_private.h"

/* A flat [field, value, ...] reply of n strings (given with their lengths). */
struct flat {
    redisReply r, el[8], *ptr[8];
};

static redisReply *flat(struct flat *f, size_t n, const char *const *s, const size_t *len)
{
    memset(f, 0, sizeof(*f));
    f->r.type = REDIS_REPLY_ARRAY;
    f->r.elements = n;
    f->r.element = f->ptr;
    for (size_t i = 0; i < n; i++) {
        f->el[i].type = REDIS_REPLY_STRING;
        f->el[i].str = (char *)s[i];
        f->el[i].len = len[i];
        f->ptr[i] = &f->el[i];
    }
    return &f->r;
}

static void test_step_object_shapes(void)
{
    const char *s[] = {"priority", "5",        "payload", "{\"w\":640}",
                       "result",   "not json", "type",    "x"};
    const size_t len[] = {8, 1, 7, 9, 6, 8, 4, 1};
    struct flat f;
    json_t *o = stepq__step_object(flat(&f, 8, s, len), NULL);

    REQUIRE(o != NULL);
    ASSERT_EQ(json_integer_value(json_object_get(o, "priority")), 5);
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(o, "payload"), "w")), 640);
    ASSERT_STR(json_string_value(json_object_get(o, "result")), "not json");
    ASSERT_STR(json_string_value(json_object_get(o, "type")), "x");
    json_decref(o);
}

/* Found by fuzz_step_object (fuzz/corpus/step_object/crash-utf8-field): a
 * field that is not UTF-8 (a progress message, a result) made the whole
 * step read as "out of memory". Bad bytes now become U+FFFD. */
static void test_step_object_bad_utf8(void)
{
    const char *s[] = {"type",
                       "a\xff"
                       "b",
                       "message",
                       "caf\xc3\xa9",
                       "k\xc3",
                       "v"};
    const size_t len[] = {4, 3, 7, 5, 2, 1};
    struct flat f;
    json_t *o = stepq__step_object(flat(&f, 6, s, len), NULL);

    REQUIRE(o != NULL);
    ASSERT_STR(json_string_value(json_object_get(o, "type")), "a\xef\xbf\xbd"
                                                              "b");
    ASSERT_STR(json_string_value(json_object_get(o, "message")), "caf\xc3\xa9");
    ASSERT_STR(json_string_value(json_object_get(o, "k\xef\xbf\xbd")), "v");
    char *text = json_dumps(o, JSON_COMPACT);
    CHECK(text != NULL);
    free(text);
    json_decref(o);
}

static void test_utf8(void)
{
    char msg[] = "near '\"\\ude0\xc3'; and \xe2\x82\xac ok \xed\xa0\x80 \xc0\xaf";
    sds r;

    ASSERT_EQ(stepq__utf8_seq("a", 1), 1);
    ASSERT_EQ(stepq__utf8_seq("\xc3\xa9", 2), 2);
    ASSERT_EQ(stepq__utf8_seq("\xe2\x82\xac", 3), 3);
    ASSERT_EQ(stepq__utf8_seq("\xf0\x9f\x98\x80", 4), 4);
    ASSERT_EQ(stepq__utf8_seq("\xc3", 1), 0);             /* cut short */
    ASSERT_EQ(stepq__utf8_seq("\xc0\xaf", 2), 0);         /* overlong */
    ASSERT_EQ(stepq__utf8_seq("\xe0\x80\xaf", 3), 0);     /* overlong */
    ASSERT_EQ(stepq__utf8_seq("\xed\xa0\x80", 3), 0);     /* a surrogate */
    ASSERT_EQ(stepq__utf8_seq("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    ASSERT_EQ(stepq__utf8_seq("\x80", 1), 0);
    stepq__utf8_scrub(msg);
    ASSERT_STR(msg, "near '\"\\ude0?'; and \xe2\x82\xac ok ??? ??");
    r = stepq__utf8_repair("a\xff\x00z", 4);
    REQUIRE(r != NULL);
    ASSERT_EQ(sdslen(r), 6);
    CHECK(memcmp(r, "a\xef\xbf\xbd\x00z", 6) == 0);
    sdsfree(r);
}

int main(void)
{
    RUN(test_step_object_shapes);
    RUN(test_step_object_bad_utf8);
    RUN(test_utf8);
    TEST_END();
}
