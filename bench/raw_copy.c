/*
 * raw_copy.c - the raw limit of a backfill on this server: SCAN the whole
 * database and COPY every old key of the key map to its new name, with no
 * checks, no scripts and no checkpoints. The COPYs of one page and the SCAN
 * of the next page go out in one pipeline, so a page costs one round trip.
 *
 * Old names: job:{id}[:...] -> step:{id}[:...], jobs:{x} -> steps:{x},
 * worker:{w}:jobs -> worker:{w}:steps. Other keys are left alone.
 *
 * With --read (after a backfill) it is the floor of a verify instead: the
 * same SCAN, and each old key and its new twin read whole (HGETALL for a
 * step's per-id hashes, DUMP for the few others), with no expiry, no
 * atomic snapshot and no comparison. A verify must at least read both keys
 * of every pair, so it cannot run faster than this on the same server.
 *
 * usage: raw_copy [--read] URL [COUNT]   (SCAN COUNT, default 1000)
 * prints: keys=K copied=C seconds=T keys_per_s=R (copied: pairs read, with --read)
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

/* Sends the read of one key whole: HGETALL for a per-id key (a hash in
 * the key map), DUMP for any other. */
static void append_read(redisContext *c, const char *name, size_t len, int per_id)
{
    redisAppendCommand(c, per_id ? "HGETALL %b" : "DUMP %b", name, len);
}

int main(int argc, char **argv)
{
    int read = argc > 1 && strcmp(argv[1], "--read") == 0;

    argc -= read;
    argv += read;
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: raw_copy [--read] URL [COUNT]\n");
        return 2;
    }
    const char *count = argc == 3 ? argv[2] : "1000";
    redisContext *c = bench_connect(prog, argv[1]);
    long keys = 0, copied = 0;
    double t0 = bench_now();
    char dst[1024];

    /* The read finds the old names among both sides' (a verify's SCAN
     * matches the old side's too); the copy starts with the old side only. */
    const char *match = read ? "[jw]*" : "*";

    redisAppendCommand(c, "SCAN 0 COUNT %s MATCH %s", count, match);
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
            const redisReply *k = names->element[i];
            if (read) {
                int per_id = memcmp(k->str, "job:", 4) == 0;
                append_read(c, k->str, k->len, per_id);
                append_read(c, dst, n, per_id);
            } else {
                redisAppendCommand(c, "COPY %b %b", k->str, k->len, dst, n);
            }
            sent++;
        }
        int more = strcmp(page->element[0]->str, "0") != 0;
        if (more)
            redisAppendCommand(c, "SCAN %s COUNT %s MATCH %s", page->element[0]->str, count, match);
        freeReplyObject(page);
        for (long i = 0; i < sent * (read ? 2 : 1); i++) {
            redisReply *r = bench_read(prog, c);
            copied += read ? i % 2 : r->integer;
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
