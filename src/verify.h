/*
 * verify.h - what the three files of the verify share (docs/migration-engine.md,
 * "Verify"): verify.c walks the keyspace, re-checks mismatches and writes
 * the report; verify_hash.c reads hash pairs in MULTI/EXEC blocks and
 * compares and digests them in the client; verify_big.c compares big sets
 * and zsets member by member in chunks. Private to those files.
 */
#ifndef STEPQ_VERIFY_H
#define STEPQ_VERIFY_H

#include <stdint.h>

#include "stepq_private.h"

/* What an unexpected reply from our own scripts most likely means. */
#define STEPQ_VERIFY_SERVER "is the server redis-server 7 or later?"

/* A pair's verdict; the names are the ones verify_batch.lua replies with. */
enum stepq__verdict {
    STEPQ_V_EQUAL,
    STEPQ_V_MISSING,
    STEPQ_V_DIFFERENT,
    STEPQ_V_TTL,
    STEPQ_V_GONE,
    STEPQ_V_BIG
};

struct stepq__vcount {
    long long keys[2]; /* present on the side verified, and on the other */
    long long equal, missing, different, ttl_off;
};

/* A pair that differed, kept for the re-checks and the report. */
struct stepq__vbad {
    int rule;
    sds a, b;
    char type;
    enum stepq__verdict v;
    uint64_t ca, cb; /* this pair's share of the two digests */
};

struct vf_page;

/* One verify run: its options, counters, digests and the pairs at hand. */
typedef struct stepq__vf {
    stepq *q;
    stepq_verify_opts o;
    stepq_progress_fn fn;
    void *arg;
    enum stepq__side side;
    struct stepq__vcount per[STEPQ_RULES_MAX];
    uint64_t dig[2];
    struct stepq__vbad *bad;
    size_t nbad, capbad;
    stepq__pairs pairs;
    const stepq__pairs *cur; /* the pairs the verdicts at hand are of */
    stepq__pace pace;
    stepq__walk walk;
    int in_walk;          /* pages go through the walk's pipe */
    struct vf_page *held; /* pages with big pairs to compare on an empty pipe */
    long long done;
    long long unmapped; /* old-looking keys no rule maps (stepq__walk_strays) */
    char big[24], tol[24];
    long long tol_ms; /* tol as a number */
    long long started_at;
    char misses_at_start[24]; /* the stats' primary_misses when it began */
} stepq__vf;

/* Called with the verdict of pair k of v->cur and its two digest shares. */
typedef int (*stepq__verdict_fn)(stepq__vf *v, size_t k, enum stepq__verdict verdict, uint64_t ca,
                                 uint64_t cb);

/* A key's share of a side's digest: XXH64 of its name (an sds: any bytes)
 * and its content digest; 0 for an empty digest (verify.c). */
uint64_t stepq__verify_share(const sds name, const char *digest);

/* Queues the hash pairs of v->cur as MULTI/EXEC blocks of `batch` pairs
 * (verify_hash.c); returns how many pairs, (size_t)-1 with the error set. */
size_t stepq__verify_hashes_append(stepq__vf *v);
/* Reads the blocks of the n hash pairs queued and calls `each` with each
 * one found equal, marking it in done[]; the others are left to the
 * script. STEPQ_ERR with the error set. */
int stepq__verify_hashes_read(stepq__vf *v, size_t n, stepq__verdict_fn each, char *done);

/* Compares a big set or zset a with its twin b (both of `type`, "set" or
 * "zset", as verify_batch.lua found them) member by member; writes the
 * verdict and the two digest shares (verify_big.c). STEPQ_ERR with the
 * error set (STEPQ_E_PROTOCOL for a type it cannot compare). */
int stepq__verify_big(stepq__vf *v, const sds a, const sds b, const char *type,
                      enum stepq__verdict *ret, uint64_t *ca, uint64_t *cb);

#endif
