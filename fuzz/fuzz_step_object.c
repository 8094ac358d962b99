/* fuzz_step_object.c - libFuzzer target: a step's hash reply as JSON
 * (stepq__step_object in src/json.c), what GET /steps/{id} and `stepq get`
 * answer with.
 *
 * The input is a list of elements, each a length byte and that many bytes;
 * length 0xFE is a nil element, 0xFF starts the progress reply. Elements
 * pair up as field, value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

#define ELEMS_MAX 64

struct flat {
    redisReply r;
    redisReply *ptr[ELEMS_MAX];
    redisReply el[ELEMS_MAX];
};

static void flat_push(struct flat *f, int type, const uint8_t *p, size_t n)
{
    redisReply *e = &f->el[f->r.elements];

    memset(e, 0, sizeof(*e));
    e->type = type;
    e->str = (char *)p;
    e->len = n;
    f->ptr[f->r.elements] = e;
    f->r.elements++;
}

/* The value stepq__step_object must give for field f = v (the last pair of
 * that name wins), when both are valid UTF-8 without NUL. */
static void check_field(const json_t *o, const redisReply *f, const redisReply *v, int has_progress)
{
    static const char *const int_fields[] = {
        "priority",   "attempts",   "max_attempts", "created_at",
        "updated_at", "claimed_at", "finished_at",  "percent",
    };
    char key[256];
    const json_t *got;
    int repaired;
    sds k;

    if (f->len >= sizeof(key) / 3 || memchr(f->str, 0, f->len) != NULL)
        return;
    /* Field names that are not UTF-8 are looked up as repaired (U+FFFD). */
    k = stepq__utf8_repair(f->str, f->len);
    memcpy(key, k, sdslen(k) + 1);
    repaired = sdslen(k) != f->len || memcmp(k, f->str, f->len) != 0;
    sdsfree(k);
    if (repaired) {
        /* Two such names may repair to one: only check it is there. */
        if (json_object_get(o, key) == NULL)
            __builtin_trap();
        return;
    }
    if (has_progress && strcmp(key, "progress") == 0)
        return;
    got = json_object_get(o, key);
    if (got == NULL)
        __builtin_trap(); /* a field was lost */
    if (strcmp(key, "payload") == 0 || strcmp(key, "result") == 0) {
        /* JSON comes back as that JSON, anything else as a string. */
        json_t *want = json_loadb(v->str, v->len, JSON_DECODE_ANY, NULL);
        if (want == NULL)
            want = json_stringn(v->str, v->len);
        if (want != NULL && !json_equal(want, got))
            __builtin_trap();
        json_decref(want);
        return;
    }
    if (json_is_string(got)) {
        /* A string holds the value itself when that is valid UTF-8. */
        json_t *want = json_stringn(v->str, v->len);
        if (want != NULL && !json_equal(want, got))
            __builtin_trap();
        json_decref(want);
        return;
    }
    for (size_t i = 0; i < sizeof(int_fields) / sizeof(*int_fields); i++) {
        if (strcmp(key, int_fields[i]) == 0) {
            if (!json_is_integer(got))
                __builtin_trap();
            return;
        }
    }
    __builtin_trap(); /* only payload and result come back as JSON */
}

/* Whether two field names land on one JSON key: a name is stored repaired
 * (U+FFFD) and ends at its first NUL byte (jansson keys are C strings). */
static int same_name(const redisReply *f, const redisReply *g)
{
    sds a = stepq__utf8_repair(f->str, f->len), b = stepq__utf8_repair(g->str, g->len);
    int same = a != NULL && b != NULL && strcmp(a, b) == 0;

    sdsfree(a);
    sdsfree(b);
    return same;
}

static void check(const json_t *o, const struct flat *fields, const struct flat *progress)
{
    char *text;
    json_t *back;

    if (o == NULL || !json_is_object(o))
        __builtin_trap(); /* NULL only on OOM */
    if (progress != NULL && !json_is_object(json_object_get(o, "progress")))
        __builtin_trap();
    for (size_t i = 0; i + 1 < fields->r.elements; i += 2) {
        const redisReply *f = fields->ptr[i], *v = fields->ptr[i + 1];
        int last = 1;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        for (size_t j = i + 2; j + 1 < fields->r.elements; j += 2) {
            const redisReply *g = fields->ptr[j];
            if (g->type == REDIS_REPLY_STRING && fields->ptr[j + 1]->type == REDIS_REPLY_STRING &&
                same_name(f, g))
                last = 0;
        }
        if (last)
            check_field(o, f, v, progress != NULL);
    }
    /* What the server sends is JSON that reads back the same. */
    text = json_dumps(o, JSON_COMPACT);
    if (text == NULL)
        __builtin_trap();
    back = json_loads(text, JSON_ALLOW_NUL, NULL); /* as http_routes.c reads it */
    if (back == NULL || !json_equal(back, o))
        __builtin_trap();
    json_decref(back);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct flat fields, progress;
    struct flat *cur = &fields;
    int has_progress = 0;
    size_t i = 0;
    json_t *o;

    fields.r.type = progress.r.type = REDIS_REPLY_ARRAY;
    fields.r.elements = progress.r.elements = 0;
    fields.r.element = fields.ptr;
    progress.r.element = progress.ptr;
    while (i < size && cur->r.elements < ELEMS_MAX) {
        uint8_t n = data[i++];
        if (n == 0xFF) {
            cur = &progress;
            has_progress = 1;
        } else if (n == 0xFE) {
            flat_push(cur, REDIS_REPLY_NIL, NULL, 0);
        } else {
            if (n > size - i)
                n = (uint8_t)(size - i);
            flat_push(cur, REDIS_REPLY_STRING, data + i, n);
            i += n;
        }
    }
    o = stepq__step_object(&fields.r, has_progress ? &progress.r : NULL);
    check(o, &fields, has_progress ? &progress : NULL);
    json_decref(o);
    return 0;
}
