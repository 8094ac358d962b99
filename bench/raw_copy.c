/*
 * raw_copy.c - the raw limit of a backfill on this server: SCAN the whole
 * database and COPY every old key of the key map to its new name, with no
 * checks, no scripts and no checkpoints. The COPYs of one page and the SCAN
 * of the next page go out in one pipeline, so a page costs one round trip.
 *
 * Old names: job:{id}[:...] -> step:{id}[:...], jobs:{x} -> steps:{x},
 * worker:{w}:jobs -> worker:{w}:steps. Other keys are left alone.
 *
 * usage: raw_copy URL [COUNT]   (SCAN COUNT, default 1000)
 * prints: keys=K copied=C seconds=T keys_per_s=R
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"

static const char *const prog = "raw_copy";

/* The new name of an old key into buf; 0 when the key is not an old one. */
static size_t new_name(const redisReply *k, char *buf, size_t cap)
{
    if (k->len + 2 > cap)
        return 0;
    if (k->len > 4 && memcmp(k->str, "job:", 4) == 0) {
        memcpy(buf, "step:", 5);
        memcpy(buf + 5, k->str + 4, k->len - 4);
        return k->len + 1;
    }
    if (k->len > 5 && memcmp(k->str, "jobs:", 5) == 0) {
        memcpy(buf, "steps:", 6);
        memcpy(buf + 6, k->str + 5, k->len - 5);
        return k->len + 1;
    }
    if (k->len > 12 && memcmp(k->str, "worker:", 7) == 0 &&
        memcmp(k->str + k->len - 5, ":jobs", 5) == 0 &&
        memchr(k->str + 7, ':', k->len - 12) == NULL) {
        memcpy(buf, k->str, k->len - 4);
        memcpy(buf + k->len - 4, "steps", 5);
        return k->len + 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: raw_copy URL [COUNT]\n");
        return 2;
    }
    const char *count = argc == 3 ? argv[2] : "1000";
    redisContext *c = bench_connect(prog, argv[1]);
    long keys = 0, copied = 0;
    double t0 = bench_now();
    char dst[1024];

    redisAppendCommand(c, "SCAN 0 COUNT %s", count);
    for (;;) {
        redisReply *page = bench_read(prog, c);
        if (page->type != REDIS_REPLY_ARRAY || page->elements != 2) {
            fprintf(stderr, "%s: unexpected SCAN reply\n", prog);
            return 1;
        }
        long sent = 0;
        const redisReply *names = page->element[1];
        for (size_t i = 0; i < names->elements; i++) {
            size_t n = new_name(names->element[i], dst, sizeof(dst));
            if (n == 0)
                continue;
            redisAppendCommand(c, "COPY %b %b", names->element[i]->str, names->element[i]->len, dst,
                               n);
            sent++;
        }
        int more = strcmp(page->element[0]->str, "0") != 0;
        if (more)
            redisAppendCommand(c, "SCAN %s COUNT %s", page->element[0]->str, count);
        freeReplyObject(page);
        for (long i = 0; i < sent; i++) {
            redisReply *r = bench_read(prog, c);
            copied += r->integer;
            freeReplyObject(r);
        }
        keys += sent;
        if (!more)
            break;
    }
    double secs = bench_now() - t0;
    printf("keys=%ld copied=%ld seconds=%.2f keys_per_s=%.0f\n", keys, copied, secs,
           (double)keys / secs);
    redisFree(c);
    return 0;
}
