/*
 * test_backup_chunked.c - big sets and zsets in the backup (format 2): read
 * in chunks of members, restored chunk by chunk with the expiry last; the
 * key's existence decided once, at its first chunk; a restore cut in the
 * middle of one leaves it marked and the rerun says --replace; format 1
 * files still restore; a damaged chunk record is refused with nothing
 * written; cleanup still finds a chunked key in the backup.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>
#include "test.h"
#include "testlib.h"
#include "relay.h"
#include "stepq_private.h"
#include "backup.h"

static char BK[64], BK_BAD[64];
#define NSET  5000 /* members of jobs:completed: five chunks and more */
#define NZSET 3000 /* members of jobs:pending */

static void pipe_n(int n, const char *fmt)
{
    for (int i = 0; i < n; i++)
        redisAppendCommand(R, fmt, i, i);
    for (int i = 0; i < n; i++) {
        redisReply *r;
        redisGetReply(R, (void **)&r);
        freeReplyObject(r);
    }
}

/* Two big collections with an expiry, a few small keys. */
static long long fill(void)
{
    long long at = stepq__now_ms() + 3600 * 1000;

    t_flush();
    pipe_n(NSET, "SADD jobs:completed c%d");
    pipe_n(NZSET, "ZADD jobs:pending %d.25 p%d");
    freeReplyObject(t_cmd("ZADD jobs:pending inf pinf -inf pminf"));
    freeReplyObject(t_cmd("SADD jobs:completed %b", "bin\xff\x00m", (size_t)6));
    freeReplyObject(t_cmd("PEXPIREAT jobs:completed %lld", at));
    freeReplyObject(t_cmd("PEXPIREAT jobs:pending %lld", at + 7));
    freeReplyObject(t_cmd("SADD worker:w1:jobs s5"));
    freeReplyObject(t_cmd("HSET job:s1 type t"));
    return at;
}

struct kinds {
    long long key, chunk, cend, members;
};

static int count_kinds(const stepq__bk_record *rec, void *arg)
{
    struct kinds *k = arg;

    if (rec->kind == STEPQ_BK_REC_KEY)
        k->key++;
    else if (rec->kind == STEPQ_BK_REC_CHUNK)
        k->chunk++, k->members += (long long)rec->n;
    else
        k->cend++;
    return 0;
}

static int parse_file(const char *path, struct kinds *k, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    stepq__bk_src src = {.fp = fp};
    stepq__bk_info info;

    memset(k, 0, sizeof(*k));
    int rc = stepq__bk_parse(&src, &info, count_kinds, k, err, errlen);
    stepq__bk_info_release(&info);
    fclose(fp);
    return rc;
}

static void check_restored(long long at)
{
    ASSERT_EQ(t_int("SCARD jobs:completed"), NSET + 1);
    ASSERT_EQ(t_int("SISMEMBER jobs:completed c4999"), 1);
    ASSERT_EQ(t_int("SISMEMBER jobs:completed %b", "bin\xff\x00m", (size_t)6), 1);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), NZSET + 2);
    ASSERT_STR(t_str("ZSCORE jobs:pending p2999"), "2999.25");
    ASSERT_STR(t_str("ZSCORE jobs:pending pinf"), "inf");
    ASSERT_STR(t_str("ZSCORE jobs:pending pminf"), "-inf");
    ASSERT_EQ(t_int("PEXPIRETIME jobs:completed"), at);
    ASSERT_EQ(t_int("PEXPIRETIME jobs:pending"), at + 7);
    ASSERT_EQ(t_int("EXISTS stepq:restoring"), 0);
}

/* What the relay saw of restore_chunk.lua: at each 'end', whether the key
 * had an expiry already (it must not: the expiry goes last). */
struct watch {
    atomic_int ends, early_ttl, nexts, cut_at;
    int create_at_first; /* the 'first' of jobs:completed creates it first */
};

static enum relay_action watch_chunks(int argc, const char *const *argv, const size_t *lens,
                                      void *arg)
{
    struct watch *w = arg;

    if (argc < 7 || !relay_arg_is(argc, argv, lens, 4, "stepq:restoring"))
        return RELAY_FORWARD;
    int completed = relay_arg_is(argc, argv, lens, 3, "jobs:completed");
    if (relay_arg_is(argc, argv, lens, 5, "end")) {
        atomic_fetch_add(&w->ends, 1);
        /* R is free: the main thread waits in stepq_restore. The chunks
         * before this end were forwarded, not necessarily run yet: wait
         * for the first one (its mark) before looking at the expiry. */
        for (int i = 0; i < 200 && !t_int("HEXISTS stepq:restoring %b", argv[3], lens[3]); i++)
            usleep(10 * 1000);
        if (t_int("PEXPIRETIME %b", argv[3], lens[3]) != -1)
            atomic_fetch_add(&w->early_ttl, 1);
    } else if (relay_arg_is(argc, argv, lens, 5, "first") && completed && w->create_at_first) {
        freeReplyObject(t_cmd("SADD jobs:completed intruder"));
    } else if (relay_arg_is(argc, argv, lens, 5, "next") && completed &&
               atomic_fetch_add(&w->nexts, 1) + 1 == atomic_load(&w->cut_at)) {
        return RELAY_CUT; /* a restore killed in the middle of the set */
    }
    return RELAY_FORWARD;
}

/* A restore whose commands pass watch_chunks; its return code. */
static int restore_watched(struct watch *w, unsigned flags, stepq_restore_result *rr)
{
    relay *rl;
    stepq *q = relay_stepq(&rl, watch_chunks, w);

    if (q == NULL)
        FAILF("cannot connect through the relay");
    int rc = q != NULL ? stepq_restore(q, BK, flags, NULL, NULL, rr) : STEPQ_ERR;
    stepq_free(q);
    if (q != NULL)
        relay_stop(rl);
    return rc;
}

/* The big collections go in chunks and come back whole, their expiry
 * applied after their last chunk. */
static void test_chunked_round_trip(void)
{
    stepq_backup_result br;
    stepq_restore_result rr;
    struct kinds k;
    char err[256];
    long long at = fill();

    REQUIRE(stepq_backup(Q, BK, NULL, &br) == STEPQ_OK);
    ASSERT_EQ(br.keys, 4);
    REQUIRE(parse_file(BK, &k, err, sizeof(err)) == 0);
    ASSERT_EQ(k.key, 2);
    ASSERT_EQ(k.cend, 2);
    CHECK(k.chunk >= 8);
    ASSERT_EQ(k.members, NSET + 1 + NZSET + 2);

    t_flush();
    t_phase("step");
    struct watch w = {0};
    REQUIRE(restore_watched(&w, 0, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.records, 4);
    ASSERT_EQ(rr.restored, 4);
    ASSERT_EQ(rr.existed, 0);
    ASSERT_EQ(atomic_load(&w.ends), 2);
    ASSERT_EQ(atomic_load(&w.early_ttl), 0);
    check_restored(at);
    ASSERT_EQ(t_int("EXISTS job:s1"), 1);

    /* Again: every key exists, refused without --replace; with it, the same. */
    CHECK(stepq_restore(Q, BK, 0, NULL, NULL, &rr) == STEPQ_ERR);
    CHECK(strstr(stepq_errstr(Q), "already exists; use --replace") != NULL);
    freeReplyObject(t_cmd("SADD jobs:completed extra"));
    REQUIRE(stepq_restore(Q, BK, STEPQ_RESTORE_REPLACE, NULL, NULL, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.restored, 4);
    ASSERT_EQ(t_int("SISMEMBER jobs:completed extra"), 0);
    check_restored(at);

    /* An expiry passed since the backup: the collection is not brought back. */
    t_flush();
    pipe_n(2000, "SADD jobs:completed c%d");
    freeReplyObject(t_cmd("PEXPIREAT jobs:completed %lld", stepq__now_ms() + 300));
    REQUIRE(stepq_backup(Q, BK, NULL, &br) == STEPQ_OK);
    usleep(400 * 1000);
    t_flush();
    t_phase("step");
    REQUIRE(stepq_restore(Q, BK, 0, NULL, NULL, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.expired, 1);
    ASSERT_EQ(rr.restored, 0);
    ASSERT_EQ(t_int("EXISTS jobs:completed"), 0);
    ASSERT_EQ(t_int("EXISTS stepq:restoring"), 0);
}

/* A key that appears between the checking pass and its first chunk is
 * kept as it is (as RESTORE's BUSYKEY keeps a small one): decided once, at
 * the first chunk; the later chunks do not add to it. */
static void test_exists_at_first_chunk(void)
{
    stepq_restore_result rr;

    fill();
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    t_flush();
    t_phase("step");
    struct watch w = {.create_at_first = 1};
    REQUIRE(restore_watched(&w, 0, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.existed, 1);
    ASSERT_EQ(rr.restored, 3);
    ASSERT_EQ(t_int("SCARD jobs:completed"), 1);
    ASSERT_EQ(t_int("PEXPIRETIME jobs:completed"), -1);
    ASSERT_EQ(t_int("ZCARD jobs:pending"), NZSET + 2);
    ASSERT_EQ(t_int("EXISTS stepq:restoring"), 0);
}

/* A restore cut in the middle of a collection (as a kill would): the
 * partial key stays marked, without its expiry; the rerun refuses and
 * names it with the advice --replace, which completes it. */
static void test_killed_mid_collection(void)
{
    stepq_restore_result rr;
    long long at = fill();

    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    t_flush();
    t_phase("step");
    struct watch w = {.cut_at = 3};
    CHECK(restore_watched(&w, 0, &rr) == STEPQ_ERR);
    long long n = t_int("SCARD jobs:completed");
    CHECK(n > 0 && n < NSET);
    ASSERT_EQ(t_int("PEXPIRETIME jobs:completed"), -1);
    ASSERT_EQ(t_int("HEXISTS stepq:restoring jobs:completed"), 1);

    long long keys = t_int("DBSIZE");
    CHECK(stepq_restore(Q, BK, 0, NULL, NULL, &rr) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "'jobs:completed' was left partly written") != NULL);
    CHECK(strstr(stepq_errstr(Q), "--replace") != NULL);
    ASSERT_EQ(t_int("DBSIZE"), keys);
    ASSERT_EQ(t_int("SCARD jobs:completed"), n);
    CHECK(stepq_restore(Q, BK, STEPQ_RESTORE_DRY_RUN, NULL, NULL, &rr) == STEPQ_ERR);
    REQUIRE(stepq_restore(Q, BK, STEPQ_RESTORE_REPLACE, NULL, NULL, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.restored, 4);
    check_restored(at);
}

/* ---------------------------------------------------------------------------
 * Damaged files
 * ------------------------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *buf;

    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    rewind(fp);
    buf = malloc(*len + 1);
    if (fread(buf, 1, *len, fp) != *len)
        *len = 0;
    fclose(fp);
    return buf;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Offsets of the records of a decompressed file, walked by their lengths
 * (docs/backup-format.md); the trailer's offset last. */
static size_t walk(const unsigned char *b, size_t n, size_t *at, size_t max)
{
    size_t p = 8 + 4 + le32(b + 8), k = 0;

    while (p < n && k < max) {
        at[k++] = p;
        size_t klen = le32(b + p + 1), q = p + 5 + klen;
        if (b[p] == 2)
            break;
        if (b[p] == 1) {
            p = q + 4 + le32(b + q) + 8;
        } else if (b[p] == 4) {
            p = q + 1 + 24;
        } else {
            char t = (char)b[q];
            uint32_t m = le32(b + q + 1);
            q += 5;
            for (uint32_t i = 0; i < m; i++) {
                q += 4 + le32(b + q);
                if (t == 'z')
                    q += 1 + b[q];
            }
            p = q;
        }
    }
    return k;
}

/* The trailer made right again after an edit (count and xxh64), so that
 * the check that refuses is the record's own, not the checksum. */
static void reseal(unsigned char *b, size_t n, long long dcount)
{
    uint64_t c = 0;
    for (int i = 7; i >= 0; i--)
        c = c << 8 | b[n - 16 + i];
    put64(b + n - 16, c + (uint64_t)dcount);
    put64(b + n - 8, XXH64(b, n - 17, 0));
}

static void refused(const char *what, const unsigned char *raw, size_t n, const char *want)
{
    size_t cap = ZSTD_compressBound(n);
    unsigned char *z = malloc(cap);
    size_t zlen = ZSTD_compress(z, cap, raw, n, 3);
    FILE *fp = fopen(BK_BAD, "wb");
    fwrite(z, 1, zlen, fp);
    fclose(fp);
    free(z);
    t_flush();
    t_phase("step");
    for (unsigned flags = 0; flags <= STEPQ_RESTORE_REPLACE; flags++) {
        int rc = stepq_restore(Q, BK_BAD, flags, NULL, NULL, NULL);
        if (rc != STEPQ_ERR || stepq_err(Q) != STEPQ_E_INVALID ||
            strstr(stepq_errstr(Q), want) == NULL)
            FAILF("%s: rc %d, error %d '%s', want '%s'", what, rc, stepq_err(Q), stepq_errstr(Q),
                  want);
        if (t_int("DBSIZE") != 1) /* stepq:phase */
            FAILF("%s: %lld keys were written", what, t_int("DBSIZE") - 1);
    }
}

static void test_corrupt_chunk_refused(void)
{
    size_t len, at[64];

    fill();
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    unsigned char *good = slurp(BK, &len);
    unsigned char *raw = malloc(16 << 20), *b = malloc(16 << 20);
    size_t n = ZSTD_decompress(raw, 16 << 20, good, len);
    REQUIRE(!ZSTD_isError(n));
    size_t nrec = walk(raw, n, at, 64);
    REQUIRE(nrec > 4 && raw[at[nrec - 1]] == 2);
    size_t c = 0, e = 0, zc = 0; /* a chunk, an end, a zset chunk */
    for (size_t i = 0; i < nrec; i++) {
        if (raw[at[i]] == 3 && c == 0)
            c = at[i];
        if (raw[at[i]] == 4 && e == 0)
            e = at[i];
        if (raw[at[i]] == 3 && raw[at[i] + 5 + le32(raw + at[i] + 1)] == 'z' && zc == 0)
            zc = at[i];
    }
    REQUIRE(c > 0 && e > 0 && zc > 0);
    size_t ck = c + 5 + le32(raw + c + 1); /* the chunk's type byte */
    size_t ek = e + 5 + le32(raw + e + 1);

    /* Unchanged and resealed, it is still good: the edits below are what
     * each refusal is about. */
    memcpy(b, raw, n);
    reseal(b, n, 0);
    CHECK(memcmp(b, raw, n) == 0);

    memcpy(b, raw, n);
    b[ck] = 'q';
    reseal(b, n, 0);
    refused("unknown collection type", b, n, "unknown collection type");

    memcpy(b, raw, n);
    put64(b + ek + 1 + 8, le32(raw + ck + 1) + 12345ull); /* the end's member count */
    reseal(b, n, 0);
    refused("end counts off", b, n, "but the file holds");

    memcpy(b, raw, n);
    b[ck + 1] = 0, b[ck + 2] = 0, b[ck + 3] = 0, b[ck + 4] = 0; /* 0 members */
    reseal(b, n, 0);
    refused("empty chunk", b, n, "out of range");

    memcpy(b, raw, n);
    b[ck + 3] = 0x7f; /* more members than the cap */
    reseal(b, n, 0);
    refused("chunk over the cap", b, n, "out of range");

    /* The end record removed: the next key or the trailer comes first. */
    size_t elen = ek + 1 + 24 - e;
    memcpy(b, raw, e);
    memcpy(b + e, raw + e + elen, n - e - elen);
    reseal(b, n - elen, -1);
    refused("no end", b, n - elen, "before its end");

    /* A zset score that is not a number. */
    memcpy(b, raw, n);
    size_t zk = zc + 5 + le32(raw + zc + 1), m0 = zk + 5, s0 = m0 + 4 + le32(raw + m0);
    REQUIRE(raw[s0] >= 1);
    b[s0 + 1] = 'x';
    reseal(b, n, 0);
    refused("bad score", b, n, "is not a number");

    /* Chunk records in a format-1 file. */
    memcpy(b, raw, n);
    memcpy(b, "STEPQBK1", 8);
    for (size_t i = 12; i + 10 < n; i++)
        if (memcmp(b + i, "\"format\":2", 10) == 0) {
            b[i + 9] = '1';
            break;
        }
    reseal(b, n, 0);
    refused("chunk in version 1", b, n, "unknown record type 3");

    free(raw);
    free(b);
    free(good);
    unlink(BK_BAD);
}

/* A format-1 file (magic STEPQBK1, one DUMP per key), as stepq wrote
 * before chunks: made here from a format-2 file with no chunked key, whose
 * layout is the same. It still restores. */
static void test_format1_restores(void)
{
    stepq_backup_opts o = {.big = 100000};
    stepq_restore_result rr;
    size_t len;
    long long at = fill();

    REQUIRE(stepq_backup(Q, BK, &o, NULL) == STEPQ_OK);
    unsigned char *good = slurp(BK, &len);
    unsigned char *raw = malloc(16 << 20);
    size_t n = ZSTD_decompress(raw, 16 << 20, good, len);
    REQUIRE(!ZSTD_isError(n));
    memcpy(raw, "STEPQBK1", 8);
    for (size_t i = 12; i + 10 < n; i++)
        if (memcmp(raw + i, "\"format\":2", 10) == 0) {
            raw[i + 9] = '1';
            break;
        }
    reseal(raw, n, 0);
    size_t cap = ZSTD_compressBound(n);
    unsigned char *z = malloc(cap);
    size_t zlen = ZSTD_compress(z, cap, raw, n, 3);
    FILE *fp = fopen(BK, "wb");
    fwrite(z, 1, zlen, fp);
    fclose(fp);

    struct kinds k;
    char err[256];
    FILE *f1 = fopen(BK, "rb");
    stepq__bk_src src = {.fp = f1};
    stepq__bk_info info;
    REQUIRE(stepq__bk_parse(&src, &info, count_kinds, &k, err, sizeof(err)) == 0);
    ASSERT_EQ(info.version, 1);
    stepq__bk_info_release(&info);
    fclose(f1);

    t_flush();
    t_phase("step");
    REQUIRE(stepq_restore(Q, BK, 0, NULL, NULL, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.restored, 4);
    check_restored(at);
    free(z);
    free(raw);
    free(good);
}

/* Cleanup reads the backup's key names for its coverage check: a chunked
 * key is named by each of its records and must count as backed up. */
static void test_cleanup_sees_chunked(void)
{
    stepq_cleanup_result cr;

    t_flush();
    pipe_n(2500, "HSET job:c%d type t");
    pipe_n(2500, "HSET step:c%d type t");
    pipe_n(2500, "SADD jobs:completed c%d");
    freeReplyObject(t_cmd("COPY jobs:completed steps:completed"));
    REQUIRE(stepq_phase_move(Q, STEPQ_PHASE_STEP, "test", NULL, STEPQ_MOVE_FORCE) == STEPQ_OK);
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    struct kinds k;
    char err[256];
    REQUIRE(parse_file(BK, &k, err, sizeof(err)) == 0);
    ASSERT_EQ(k.cend, 1);
    CHECK(k.chunk >= 3);
    REQUIRE(stepq_cleanup(Q, BK, NULL, &cr) == STEPQ_OK);
    ASSERT_EQ(cr.not_in_backup, 0);
    ASSERT_EQ(cr.kept, 0);
    ASSERT_EQ(cr.deleted, 2501);
    ASSERT_EQ(t_int("EXISTS jobs:completed"), 0);
    ASSERT_EQ(t_int("SCARD steps:completed"), 2500);
}

int main(void)
{
    snprintf(BK, sizeof(BK), "/tmp/stepq-test-bkc-%d.bk", (int)getpid());
    snprintf(BK_BAD, sizeof(BK_BAD), "/tmp/stepq-test-bkc-%d.bad", (int)getpid());
    t_setup();
    RUN(test_chunked_round_trip);
    RUN(test_exists_at_first_chunk);
    RUN(test_killed_mid_collection);
    RUN(test_corrupt_chunk_refused);
    RUN(test_format1_restores);
    RUN(test_cleanup_sees_chunked);
    unlink(BK);
    t_teardown();
    TEST_END();
}
