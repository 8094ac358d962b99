/*
 * benchutil.h - what the migration benchmarks share: a plain hiredis
 * connection from a stepq URL (redis://host:port/db or unix:///sock?db=N),
 * a monotonic clock, and a checked reply read. Header-only: each benchmark
 * is one small program.
 */
#ifndef STEPQ_BENCHUTIL_H
#define STEPQ_BENCHUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <hiredis/hiredis.h>

static inline double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Connects and selects the URL's database; exits 1 on failure. */
static inline redisContext *bench_connect(const char *prog, const char *url)
{
    char path[512], host[256];
    int db = 0, port = 6379;
    redisContext *c = NULL;

    if (sscanf(url, "unix://%511[^?]?db=%d", path, &db) >= 1) {
        c = redisConnectUnix(path);
    } else if (sscanf(url, "redis://%255[^:/]:%d/%d", host, &port, &db) >= 1) {
        c = redisConnect(host, port);
    } else {
        fprintf(stderr, "%s: unsupported url '%s'; use redis://host:port/db or unix:///sock?db=N\n",
                prog, url);
        exit(2);
    }
    if (c == NULL || c->err) {
        fprintf(stderr, "%s: cannot connect to '%s': %s\n", prog, url, c ? c->errstr : "oom");
        exit(1);
    }
    redisReply *r = redisCommand(c, "SELECT %d", db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "%s: cannot select db %d\n", prog, db);
        exit(1);
    }
    freeReplyObject(r);
    return c;
}

/* Reads one pipelined reply; exits 1 on a connection or server error. */
static inline redisReply *bench_read(const char *prog, redisContext *c)
{
    void *r = NULL;

    if (redisGetReply(c, &r) != REDIS_OK || r == NULL) {
        fprintf(stderr, "%s: connection lost: %s\n", prog, c->errstr);
        exit(1);
    }
    if (((redisReply *)r)->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "%s: redis error: %s\n", prog, ((redisReply *)r)->str);
        exit(1);
    }
    return r;
}

/* Reads and drops n pipelined replies. */
static inline void bench_drain(const char *prog, redisContext *c, long n)
{
    for (long i = 0; i < n; i++)
        freeReplyObject(bench_read(prog, c));
}

#endif
