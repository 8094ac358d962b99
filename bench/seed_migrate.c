/*
 * seed_migrate.c - the seed document's migration script
 * (scripts/migrate-job-keys-to-steps.ts, Phase 4.3.2), written faithfully
 * in C as a benchmark contender:
 *
 *   keys = KEYS job:*
 *   for each key: step = key with ^job: replaced by step:
 *                 EXISTS step        -> skip when it exists
 *                 HGETALL key        -> data
 *                 HMSET step data    (when data is not empty)
 *
 * one blocking round trip per command, as the awaits in the original. Like
 * the original it catches an error per key (a non-hash key matching job:*
 * fails HGETALL with WRONGTYPE), counts it and goes on; it never sees the
 * queue collections (jobs:* does not match job:*) nor worker:{id}:jobs, and
 * drops TTLs. Its keys/s counts the keys it handles: those KEYS returned.
 *
 * With MAX_SECONDS (> 0) the loop stops after that long and the rate is
 * over the keys done by then, KEYS included: the loop's cost is the same
 * for every key, so a slice of a big run gives its rate without its hours.
 *
 * usage: seed_migrate URL [MAX_SECONDS]
 * prints: keys=K done=D migrated=M skipped=S errors=E seconds=T keys_per_s=R
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"

static const char *const prog = "seed_migrate";

/* One key; returns 1 migrated, 0 skipped, -1 error. */
static int migrate_one(redisContext *c, const redisReply *key)
{
    char *step = malloc(key->len + 2);
    int rc = -1;

    if (step == NULL)
        return -1;
    memcpy(step, "step:", 5);
    memcpy(step + 5, key->str + 4, key->len - 4);
    size_t slen = key->len + 1;
    redisReply *e = redisCommand(c, "EXISTS %b", step, slen);
    if (e == NULL)
        goto out;
    if (e->type == REDIS_REPLY_INTEGER && e->integer > 0) {
        rc = 0;
        freeReplyObject(e);
        goto out;
    }
    freeReplyObject(e);
    redisReply *d = redisCommand(c, "HGETALL %b", key->str, key->len);
    if (d == NULL || d->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(d);
        goto out;
    }
    if (d->elements > 0) {
        size_t argc = d->elements + 2;
        const char **argv = malloc(argc * sizeof(*argv));
        size_t *lens = malloc(argc * sizeof(*lens));
        if (argv != NULL && lens != NULL) {
            argv[0] = "HMSET";
            lens[0] = 5;
            argv[1] = step;
            lens[1] = slen;
            for (size_t i = 0; i < d->elements; i++) {
                argv[i + 2] = d->element[i]->str;
                lens[i + 2] = d->element[i]->len;
            }
            redisReply *w = redisCommandArgv(c, (int)argc, argv, lens);
            rc = w != NULL && w->type != REDIS_REPLY_ERROR ? 1 : -1;
            freeReplyObject(w);
        }
        free(argv);
        free(lens);
    } else {
        rc = 0;
    }
    freeReplyObject(d);
out:
    free(step);
    if (c->err) {
        fprintf(stderr, "%s: connection lost: %s\n", prog, c->errstr);
        exit(1);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: seed_migrate URL [MAX_SECONDS]\n");
        return 2;
    }
    double limit = argc == 3 ? strtod(argv[2], NULL) : 0;
    redisContext *c = bench_connect(prog, argv[1]);
    long migrated = 0, skipped = 0, errors = 0;
    double t0 = bench_now();
    redisReply *keys = redisCommand(c, "KEYS job:*");
    if (keys == NULL || keys->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "%s: KEYS failed\n", prog);
        return 1;
    }
    size_t done = 0;
    for (size_t i = 0; i < keys->elements; i++, done++) {
        if (limit > 0 && i % 1000 == 0 && bench_now() - t0 >= limit)
            break;
        int r = migrate_one(c, keys->element[i]);
        migrated += r == 1;
        skipped += r == 0;
        errors += r < 0;
    }
    double secs = bench_now() - t0;
    printf("keys=%zu done=%zu migrated=%ld skipped=%ld errors=%ld seconds=%.2f keys_per_s=%.0f\n",
           keys->elements, done, migrated, skipped, errors, secs, (double)done / secs);
    freeReplyObject(keys);
    redisFree(c);
    return 0;
}
