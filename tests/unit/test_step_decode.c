/* test_step_decode.c - the POST /steps body decoder, table-driven. */
#include <jansson.h>

#include "test.h"
#include "step_decode.h"

static const struct {
    const char *body;
    const char *err; /* NULL: decodes; else a prefix of the error */
} cases[] = {
    {"{}", NULL},
    {"{\"type\":\"resize\",\"priority\":5,\"requires\":[\"gpu\",\"x86\"],\"payload\":{\"w\":640},"
     "\"max_attempts\":2}",
     NULL},
    {"{\"requires\":\"a,b\",\"payload\":null,\"priority\":0,\"max_attempts\":1000}", NULL},
    {"", "invalid JSON at line 1, column 0: "},
    {"{\"type\": }", "invalid JSON at line 1, column 10: "},
    {"{\n  \"type\": \"a\",\n  oops\n}", "invalid JSON at line 3, column "},
    {"[1]", "the body must be a JSON object with type, priority"},
    {"\"a\"", "invalid JSON at line 1, column 3: '[' or '{' expected"},
    {"{\"typ\":\"a\"}", "unknown field 'typ'; a step takes type, priority, requires"},
    {"{\"type\":1}", "field 'type' must be a string"},
    {"{\"priority\":\"5\"}", "field 'priority' must be a whole number"},
    {"{\"priority\":1.5}", "field 'priority' must be a whole number"},
    {"{\"priority\":-1}", "invalid priority '-1'; use 0 to 1000000"},
    {"{\"priority\":1000001}", "invalid priority"},
    {"{\"max_attempts\":0}", "invalid max_attempts"},
    {"{\"max_attempts\":1001}", "invalid max_attempts"},
    {"{\"max_attempts\":true}", "field 'max_attempts' must be a whole number"},
    {"{\"requires\":[\"a\",1]}", "field 'requires' must be a string \"a,b\" or an array"},
    {"{\"requires\":{}}", "field 'requires' must be a string"},
    {"{\"type\":\"a\",\"type\":\"b\"}", "invalid JSON at line 1, column "},
    {"{\"type\":\"a\\u0000b\"}", "invalid JSON at line 1, column "},
};

static void test_table(void)
{
    char err[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        struct step_decoded d;
        int rc = stepq__step_decode(cases[i].body, strlen(cases[i].body), &d, err, sizeof(err));
        if (cases[i].err == NULL) {
            if (rc != STEPQ_OK)
                FAILF("case %zu '%s': %s", i, cases[i].body, err);
        } else if (rc != STEPQ_ERR || strncmp(err, cases[i].err, strlen(cases[i].err)) != 0) {
            FAILF("case %zu '%s': rc %d, error '%s', want '%s'", i, cases[i].body, rc,
                  rc ? err : "", cases[i].err);
        }
        stepq__step_decoded_release(&d);
    }
}

static void test_fields(void)
{
    const char *b = "{\"type\":\"resize\",\"priority\":5,\"requires\":[\"gpu\",\"x86\"],"
                    "\"payload\":{\"w\": 640},\"max_attempts\":2}";
    struct step_decoded d;
    char err[256];

    REQUIRE(stepq__step_decode(b, strlen(b), &d, err, sizeof(err)) == STEPQ_OK);
    ASSERT_STR(d.opts.type, "resize");
    ASSERT_EQ(d.opts.priority, 5);
    ASSERT_STR(d.opts.requires, "gpu,x86");
    ASSERT_STR(d.opts.payload, "{\"w\":640}");
    ASSERT_EQ(d.opts.max_attempts, 2);
    stepq__step_decoded_release(&d);

    REQUIRE(stepq__step_decode("{}", 2, &d, err, sizeof(err)) == STEPQ_OK);
    CHECK(d.opts.type == NULL && d.opts.requires == NULL && d.opts.payload == NULL);
    ASSERT_EQ(d.opts.priority, 0);
    ASSERT_EQ(d.opts.max_attempts, 0);
    stepq__step_decoded_release(&d);

    /* A NULL body is an empty one; the length bounds the text. */
    CHECK(stepq__step_decode(NULL, 0, &d, err, sizeof(err)) == STEPQ_ERR);
    CHECK(stepq__step_decode("{}xxx", 2, &d, err, sizeof(err)) == STEPQ_OK);
    stepq__step_decoded_release(&d);
}

static void test_depth(void)
{
    char body[256], err[256];
    struct step_decoded d;
    int n;

    /* {"payload": + N brackets: 1 + N levels in all. */
    for (int depth = 63; depth <= 64; depth++) {
        n = snprintf(body, sizeof(body), "{\"payload\":");
        for (int i = 0; i < depth; i++)
            body[n++] = '[';
        for (int i = 0; i < depth; i++)
            body[n++] = ']';
        body[n++] = '}';
        int rc = stepq__step_decode(body, (size_t)n, &d, err, sizeof(err));
        if (depth == 63) {
            ASSERT_EQ(rc, STEPQ_OK);
        } else {
            ASSERT_EQ(rc, STEPQ_ERR);
            CHECK(strstr(err, "nested deeper than 64 levels; flatten the payload") != NULL);
            CHECK(strncmp(err, "invalid JSON at line 1, column 75:", 34) == 0);
        }
        stepq__step_decoded_release(&d);
    }
    /* Brackets inside strings do not count. */
    n = snprintf(body, sizeof(body), "{\"payload\":\"");
    for (int i = 0; i < 100; i++)
        body[n++] = '[';
    n += snprintf(body + n, sizeof(body) - (size_t)n, "\\\"\"}");
    ASSERT_EQ(stepq__step_decode(body, (size_t)n, &d, err, sizeof(err)), STEPQ_OK);
    stepq__step_decoded_release(&d);
}

/* Found by fuzz_step_json (fuzz/corpus/step_json/crash-utf8-error): jansson
 * quotes the bytes near a defect, a cut UTF-8 character among them, and the
 * server then could not put the message into its JSON answer (500, no
 * body). Every message is valid UTF-8 now. */
static void test_errors_are_utf8(void)
{
    static const char *const bodies[] = {
        "{\"payload\":[[[[\"\\u00e9\\ud83d\\ude0\xc3\xa9\xc3\xc3\xa9\"{:00\"]]]],\"type\":\"x\"}",
        "{\"a\xff\":1}",
        /* '%.64s' of a field name cuts its 2-byte character in half. */
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9\":1}",
    };
    char err[512];

    for (size_t i = 0; i < sizeof(bodies) / sizeof(*bodies); i++) {
        struct step_decoded d;
        ASSERT_EQ(stepq__step_decode(bodies[i], strlen(bodies[i]), &d, err, sizeof(err)),
                  STEPQ_ERR);
        json_t *o = json_pack("{s:s}", "error", err);
        if (o == NULL)
            FAILF("body %zu: the error is not UTF-8: %s", i, err);
        json_decref(o);
    }
}

int main(void)
{
    RUN(test_table);
    RUN(test_fields);
    RUN(test_depth);
    RUN(test_errors_are_utf8);
    TEST_END();
}
