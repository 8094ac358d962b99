/* migratelib.c - see migratelib.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migratelib.h"

long m_seed(int n)
{
    static const char *const states[] = {"pending", "active", "completed", "failed"};
    long keys = 0;

    for (int i = 0; i < n; i++) {
        char id[16];
        const char *st = states[i % 4];
        snprintf(id, sizeof(id), "L%05d", i);
        redisAppendCommand(R,
                           "HSET job:%s id %s type legacy priority %d status %s payload {\"n\":%d} "
                           "attempts %d max_attempts 3 created_at %d legacy_field x%d",
                           id, id, i % 5, st, i, i % 4 == 0 ? 0 : 1, 1700000000 + i, i);
        keys++;
        if (i % 3 == 0) {
            redisAppendCommand(R, "HSET job:%s:progress percent %d message step%d", id, i % 100, i);
            keys++;
        }
        if (i % 4 == 0)
            redisAppendCommand(R, "ZADD jobs:pending %d %s", i % 5, id);
        else if (i % 4 == 1)
            redisAppendCommand(R, "SADD jobs:active %s", id);
        else if (i % 4 == 2)
            redisAppendCommand(R, "SADD jobs:completed %s", id);
        else
            redisAppendCommand(R, "SADD jobs:failed %s", id);
        if (i % 4 == 1) {
            redisAppendCommand(R, "SADD worker:w%d:jobs %s", i % 7, id);
            redisAppendCommand(R, "HSET job:%s worker w%d", id, i % 7);
        } else {
            redisAppendCommand(R, "PING");
            redisAppendCommand(R, "PING");
        }
        if (i % 4 >= 2)
            redisAppendCommand(R, "EXPIRE job:%s %d", id, 3600 + i);
        else
            redisAppendCommand(R, "PING");
    }
    for (int i = 0; i < n; i++) {
        int per = i % 3 == 0 ? 6 : 5;
        for (int k = 0; k < per; k++) {
            void *r;
            if (redisGetReply(R, &r) != REDIS_OK) {
                fprintf(stderr, "seed: lost the connection\n");
                exit(1);
            }
            freeReplyObject(r);
        }
    }
    for (int w = 0; w < 7 && w < n; w++) {
        freeReplyObject(t_cmd("HSET worker:w%d id w%d capabilities gpu", w, w));
        freeReplyObject(t_cmd("SADD workers:active w%d", w));
    }
    freeReplyObject(t_cmd("EXPIRE jobs:completed 86400"));
    freeReplyObject(t_cmd("EXPIRE jobs:failed 86400"));
    return keys + 4 + (n > 7 ? 7 : n);
}

long long m_count(const char *glob)
{
    char cursor[32] = "0";
    long long n = 0;

    do {
        redisReply *r = t_cmd("SCAN %s MATCH %s COUNT 1000", cursor, glob);
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        n += (long long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

int m_verify(int reverse)
{
    stepq_verify_opts o = {.reverse = reverse};
    int clean = 0;
    char *json = NULL;

    if (stepq_verify(Q, &o, NULL, NULL, &clean, &json) != STEPQ_OK) {
        fprintf(stderr, "  verify: %s\n", stepq_errstr(Q));
        return 0;
    }
    if (!clean)
        fprintf(stderr, "  verify%s: %s\n", reverse ? " --reverse" : "", json);
    stepq_str_free(json);
    return clean;
}

/* The new name of an old key of the built-in map, or "" when it is not one. */
static int twin_of(const char *k, char *out, size_t n)
{
    size_t len = strlen(k);

    if (strncmp(k, "jobs:", 5) == 0)
        return snprintf(out, n, "steps:%s", k + 5) > 0;
    if (strncmp(k, "job:", 4) == 0)
        return snprintf(out, n, "step:%s", k + 4) > 0;
    if (strncmp(k, "worker:", 7) == 0 && len > 5 && strcmp(k + len - 5, ":jobs") == 0)
        return snprintf(out, n, "%.*s:steps", (int)(len - 5), k) > 0;
    return 0;
}

/* Sorted, canonical dump of a key: type, then its elements, sorted. */
static char *dump(const char *k)
{
    char type[16];
    snprintf(type, sizeof(type), "%s", t_str("TYPE %s", k));
    redisReply *r = NULL;
    if (strcmp(type, "hash") == 0)
        r = t_cmd("HGETALL %s", k);
    else if (strcmp(type, "set") == 0)
        r = t_cmd("SMEMBERS %s", k);
    else if (strcmp(type, "zset") == 0)
        r = t_cmd("ZRANGE %s 0 -1 WITHSCORES", k);
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    len = (size_t)snprintf(out, cap, "%s|", type);
    /* Pair up hash fields / zset scores, then sort the entries. */
    size_t step = strcmp(type, "set") == 0 ? 1 : 2, n = r ? r->elements / step : 0;
    char **ents = calloc(n + 1, sizeof(*ents));
    for (size_t i = 0; i < n; i++) {
        const char *a = r->element[i * step]->str;
        const char *b = step == 2 ? r->element[i * step + 1]->str : "";
        size_t el = strlen(a) + strlen(b) + 3;
        ents[i] = malloc(el);
        snprintf(ents[i], el, "%s=%s", a, b);
    }
    for (size_t i = 1; i < n; i++) /* insertion sort: small keys */
        for (size_t j = i; j > 0 && strcmp(ents[j - 1], ents[j]) > 0; j--) {
            char *t = ents[j];
            ents[j] = ents[j - 1];
            ents[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        size_t el = strlen(ents[i]);
        while (len + el + 2 > cap)
            out = realloc(out, cap *= 2);
        memcpy(out + len, ents[i], el);
        len += el;
        out[len++] = ';';
        out[len] = '\0';
        free(ents[i]);
    }
    free(ents);
    freeReplyObject(r);
    return out;
}

static long compare_side(const char *glob, int old_first)
{
    char cursor[32] = "0";
    long bad = 0;

    do {
        redisReply *r = t_cmd("SCAN %s MATCH %s COUNT 1000", cursor, glob);
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const char *k = r->element[1]->element[i]->str;
            char tw[256];
            if (old_first) {
                if (!twin_of(k, tw, sizeof(tw)))
                    continue;
            } else {
                /* new -> old: only the keys of the map */
                size_t len = strlen(k);
                if (strncmp(k, "steps:", 6) == 0)
                    snprintf(tw, sizeof(tw), "jobs:%s", k + 6);
                else if (strncmp(k, "step:", 5) == 0)
                    snprintf(tw, sizeof(tw), "job:%s", k + 5);
                else if (strncmp(k, "worker:", 7) == 0 && len > 6 &&
                         strcmp(k + len - 6, ":steps") == 0)
                    snprintf(tw, sizeof(tw), "%.*s:jobs", (int)(len - 6), k);
                else
                    continue;
            }
            char *a = dump(k), *b = dump(tw);
            long long ea = t_int("PEXPIRETIME %s", k), eb = t_int("PEXPIRETIME %s", tw);
            int ttl_bad = (ea == -1) != (eb == -1) || llabs(ea - eb) > 2000;
            if (strcmp(a, b) != 0 || ttl_bad) {
                if (bad < 5)
                    fprintf(stderr, "  '%s' [%s] vs '%s' [%s] expiry %lld/%lld\n", k, a, tw, b, ea,
                            eb);
                bad++;
            }
            free(a);
            free(b);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return bad;
}

long m_sides_equal(void)
{
    return compare_side("*", 1) + compare_side("*", 0);
}

long long m_backfill(void)
{
    stepq_backfill_result res = {0};

    if (stepq_backfill(Q, NULL, NULL, NULL, &res) != STEPQ_OK) {
        fprintf(stderr, "  backfill: %s\n", stepq_errstr(Q));
        return -1;
    }
    return res.copied;
}
