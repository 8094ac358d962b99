/*
 * test_backup.c - backup and restore: the round trip keeps every key, value
 * and absolute expiry; a corrupt, truncated or foreign file is refused with
 * nothing written; existing keys are refused without --replace.
 */
#include <stdint.h>
#include <unistd.h>
#include <zstd.h>
#include "test.h"
#include "testlib.h"
#include "stepq_private.h"
#include "backup.h"

static char BK[64], BK_BAD[64], BK_TMP[80];
#define NSTEPS 2500

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *buf = NULL;

    *len = 0;
    if (fp == NULL)
        return NULL;
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    rewind(fp);
    buf = malloc(*len + 1);
    if (fread(buf, 1, *len, fp) != *len)
        *len = 0;
    fclose(fp);
    return buf;
}

static void spit(const char *path, const void *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    fwrite(buf, 1, len, fp);
    fclose(fp);
}

/* The keys of every kind the key map knows, some with an expiry, plus keys
 * outside the map and on the new side (which an old backup leaves out). */
static long long fill(void)
{
    long long at = stepq__now_ms() + 3600 * 1000;

    t_flush();
    for (int i = 0; i < NSTEPS; i++)
        redisAppendCommand(R, "HSET job:s%d type t priority %d payload {\"i\":%d}", i, i % 7, i);
    for (int i = 0; i < NSTEPS; i++) {
        redisReply *r;
        redisGetReply(R, (void **)&r);
        freeReplyObject(r);
    }
    freeReplyObject(t_cmd("PEXPIREAT job:s1 %lld", at));
    freeReplyObject(t_cmd("HSET job:s1:progress percent 50"));
    freeReplyObject(t_cmd("ZADD jobs:pending 5 s1 7 s2"));
    freeReplyObject(t_cmd("SADD jobs:completed s3 s4"));
    freeReplyObject(t_cmd("PEXPIREAT jobs:completed %lld", at + 1));
    freeReplyObject(t_cmd("SADD worker:w1:jobs s5"));
    freeReplyObject(t_cmd("HSET job:%b f v", "bin\xff\x01id", (size_t)8));
    freeReplyObject(t_cmd("SET other:key x"));
    freeReplyObject(t_cmd("HSET step:s9 type t"));
    return at;
}

/* DUMP + PEXPIRETIME of one key, to compare before and after. */
static int same_key(const char *key, size_t klen, const char *dump, size_t dlen, long long exp)
{
    redisReply *d = t_cmd("DUMP %b", key, klen);
    long long e = t_int("PEXPIRETIME %b", key, klen);
    int same = d->type == REDIS_REPLY_STRING && d->len == dlen && memcmp(d->str, dump, dlen) == 0;
    freeReplyObject(d);
    if (!same && strcmp(t_str("TYPE %b", key, klen), "set") == 0) {
        /* A hashtable set may DUMP its members in another order. */
        freeReplyObject(t_cmd("RESTORE t:cmp 0 %b REPLACE", dump, dlen));
        long long n = t_int("SCARD t:cmp");
        same = n == t_int("SCARD %b", key, klen) && n == t_int("SINTERCARD 2 t:cmp %b", key, klen);
        freeReplyObject(t_cmd("DEL t:cmp"));
    }
    return same && e == exp;
}

/* DUMP updates a key's access time; OBJECT IDLETIME, EXISTS and
 * PEXPIRETIME do not. backup.c and cleanup.c depend on this. */
static void test_dump_touches_access_time(void)
{
    t_flush();
    freeReplyObject(t_cmd("SET job:lru x"));
    for (int i = 0; i < 40 && t_int("OBJECT IDLETIME job:lru") < 2; i++)
        usleep(100000);
    REQUIRE(t_int("OBJECT IDLETIME job:lru") >= 2);
    ASSERT_EQ(t_int("EXISTS job:lru"), 1);
    CHECK(t_int("PEXPIRETIME job:lru") == -1);
    CHECK(t_int("OBJECT IDLETIME job:lru") >= 2);
    freeReplyObject(t_cmd("DUMP job:lru"));
    ASSERT_EQ(t_int("OBJECT IDLETIME job:lru"), 0);
}

/* The backup reads each old key's idle time before its DUMP resets it, and
 * records the latest access it saw: one key read 3 s before the backup,
 * the others untouched for 5 s. (mutation backup_block_idle_blind: a
 * number other than the idle time makes every key look read 1 s before) */
static void test_records_last_read(void)
{
    t_flush();
    for (int i = 0; i < 20; i++)
        freeReplyObject(t_cmd("HSET job:r%d type t", i));
    usleep(2200 * 1000);
    long long read_at = stepq__now_ms();
    freeReplyObject(t_cmd("HGET job:r7 type"));
    usleep(3200 * 1000);
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    ASSERT_STR(t_str("HGET stepq:backup last_read_key"), "job:r7");
    long long at = atoll(t_str("HGET stepq:backup last_read_ms"));
    /* IDLETIME counts whole seconds on a clock of 1 s steps */
    if (at < read_at - 1500 || at > read_at + 1500)
        FAILF("last_read_ms %lld, the read was at %lld", at, read_at);
}

struct snap {
    long long n;
    int bad;
};

/* Checks each backed-up record against the server (after a restore). */
static int check_record(const stepq__bk_record *rec, void *arg)
{
    struct snap *s = arg;

    s->n++;
    if (!same_key(rec->key, rec->keylen, rec->dump, rec->dumplen, rec->pexpireat)) {
        s->bad++;
        fprintf(stderr, "  differs: '%.*s'\n", (int)rec->keylen, rec->key);
    }
    return 0;
}

static void test_round_trip(void)
{
    stepq_backup_result br;
    stepq_restore_result rr;
    long long at = fill();
    long long before = t_int("DBSIZE");

    REQUIRE(stepq_backup(Q, BK, NULL, &br) == STEPQ_OK);
    ASSERT_EQ(br.keys, NSTEPS + 5);
    ASSERT_EQ(br.vanished, 0);
    CHECK(access(BK_TMP, F_OK) != 0);
    ASSERT_STR(t_str("HGET stepq:backup verified"), "1");
    ASSERT_STR(t_str("HGET stepq:backup side"), "old");
    ASSERT_EQ(atoll(t_str("HGET stepq:backup keys")), NSTEPS + 5);
    ASSERT_STR(t_str("HGET stepq:backup checksum"), br.checksum);

    /* Everything restored into an empty database, with the same expiry
     * (old keys are restored in phase 'step': test_restore_phase_rules). */
    t_flush();
    t_phase("step");
    REQUIRE(stepq_restore(Q, BK, 0, NULL, NULL, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.records, NSTEPS + 5);
    ASSERT_EQ(rr.restored, NSTEPS + 5);
    ASSERT_EQ(rr.expired, 0);
    /* not other:key, step:s9; but stepq:phase and the restore's own write
     * window, stepq:own_reads */
    ASSERT_EQ(t_int("DBSIZE"), before - 2 + 2);
    ASSERT_EQ(t_int("LLEN stepq:own_reads"), 1);
    ASSERT_EQ(t_int("PEXPIRETIME job:s1"), at);
    ASSERT_EQ(t_int("PEXPIRETIME jobs:completed"), at + 1);
    ASSERT_EQ(t_int("PEXPIRETIME job:s2"), -1);
    ASSERT_STR(t_str("ZSCORE jobs:pending s2"), "7");
    ASSERT_EQ(t_int("EXISTS %b", "job:bin\xff\x01id", (size_t)12), 1);
    ASSERT_EQ(t_int("EXISTS step:s9"), 0);

    /* Every record of the file equals the key now in Redis. */
    FILE *fp = fopen(BK, "rb");
    stepq__bk_src src = {.fp = fp};
    stepq__bk_info info;
    struct snap s = {0};
    char err[256];
    REQUIRE(fp != NULL);
    ASSERT_EQ(stepq__bk_parse(&src, &info, check_record, &s, err, sizeof(err)), 0);
    fclose(fp);
    ASSERT_EQ(s.n, NSTEPS + 5);
    ASSERT_EQ(s.bad, 0);
    ASSERT_STR(info.side, "old");
    ASSERT_STR(info.phase, "job");
    CHECK(strstr(info.rules, "step hash job:{id} step:{id}") != NULL);
    stepq__bk_info_release(&info);
}

/* The new side on request; the same file parses from memory too. */
static void test_new_side_and_memory_source(void)
{
    stepq_backup_opts o = {.side_new = 1};
    stepq_backup_result br;
    stepq__bk_info info;
    char err[256];
    size_t len;

    fill();
    REQUIRE(stepq_backup(Q, BK, &o, &br) == STEPQ_OK);
    ASSERT_EQ(br.keys, 1);
    unsigned char *buf = slurp(BK, &len);
    stepq__bk_src src = {.mem = buf, .len = len};
    ASSERT_EQ(stepq__bk_parse(&src, &info, NULL, NULL, err, sizeof(err)), 0);
    ASSERT_EQ(info.count, 1);
    ASSERT_STR(info.side, "new");
    uint64_t sum = info.checksum;
    stepq__bk_info_release(&info);
    /* Names only (cleanup, the restore's check): the payloads are still
     * read and hashed, so the checksum agrees and a cut in a payload is
     * found. */
    stepq__bk_src names = {.mem = buf, .len = len, .names_only = 1};
    ASSERT_EQ(stepq__bk_parse(&names, &info, NULL, NULL, err, sizeof(err)), 0);
    ASSERT_EQ(info.count, 1);
    CHECK(info.checksum == sum);
    stepq__bk_info_release(&info);
    stepq__bk_src cut = {.mem = buf, .len = len - 40, .names_only = 1};
    ASSERT_EQ(stepq__bk_parse(&cut, &info, NULL, NULL, err, sizeof(err)), -1);
    stepq__bk_info_release(&info);
    free(buf);
}

/* A key whose expiry passed between backup and restore is skipped. */
static void test_expired_skipped(void)
{
    stepq_restore_result rr;

    long long at = stepq__now_ms() + 1500; /* room for a slow (sanitized) backup */

    t_flush();
    freeReplyObject(t_cmd("SET job:short x"));
    freeReplyObject(t_cmd("PEXPIREAT job:short %lld", at));
    freeReplyObject(t_cmd("SET job:long x"));
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    t_flush();
    t_phase("step");
    while (stepq__now_ms() <= at + 20)
        usleep(50000);
    REQUIRE(stepq_restore(Q, BK, 0, NULL, NULL, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.records, 2);
    ASSERT_EQ(rr.expired, 1);
    ASSERT_EQ(rr.restored, 1);
    ASSERT_EQ(t_int("EXISTS job:short"), 0);
    ASSERT_EQ(t_int("EXISTS job:long"), 1);
}

/* Without --replace an existing key refuses the whole restore; --dry-run
 * writes nothing; --replace overwrites. */
static void test_existing_refused(void)
{
    stepq_restore_result rr;

    fill();
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    t_phase("step");
    freeReplyObject(t_cmd("DEL job:s7"));
    freeReplyObject(t_cmd("HSET job:s1 type changed"));
    long long n = t_int("DBSIZE");
    CHECK(stepq_restore(Q, BK, 0, NULL, NULL, &rr) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_CONFLICT);
    CHECK(strstr(stepq_errstr(Q), "already exists; use --replace") != NULL);
    ASSERT_EQ(t_int("DBSIZE"), n);
    ASSERT_EQ(t_int("EXISTS job:s7"), 0);
    ASSERT_STR(t_str("HGET job:s1 type"), "changed");

    REQUIRE(stepq_restore(Q, BK, STEPQ_RESTORE_REPLACE | STEPQ_RESTORE_DRY_RUN, NULL, NULL, &rr) ==
            STEPQ_OK);
    ASSERT_EQ(rr.existed, NSTEPS + 4);
    ASSERT_EQ(t_int("EXISTS job:s7"), 0);
    REQUIRE(stepq_restore(Q, BK, STEPQ_RESTORE_REPLACE, NULL, NULL, &rr) == STEPQ_OK);
    ASSERT_EQ(rr.restored, NSTEPS + 5);
    ASSERT_EQ(t_int("EXISTS job:s7"), 1);
    ASSERT_STR(t_str("HGET job:s1 type"), "t");
}

/* Restores `buf` into an empty database: it must be refused as invalid
 * with `want` in the message, and nothing written. */
static void refused(const char *what, const void *buf, size_t len, const char *want)
{
    t_flush();
    spit(BK_BAD, buf, len);
    for (unsigned flags = 0; flags <= STEPQ_RESTORE_REPLACE; flags++) {
        int rc = stepq_restore(Q, BK_BAD, flags, NULL, NULL, NULL);
        if (rc != STEPQ_ERR || stepq_err(Q) != STEPQ_E_INVALID ||
            strstr(stepq_errstr(Q), want) == NULL)
            FAILF("%s: rc %d, error %d '%s', want '%s'", what, rc, stepq_err(Q), stepq_errstr(Q),
                  want);
        if (t_int("DBSIZE") != 0)
            FAILF("%s: %lld keys were written", what, t_int("DBSIZE"));
    }
}

/* The decompressed content of the good file, changed by `edit`, then
 * compressed again (so zstd itself finds nothing wrong). */
static void refused_edit(const char *what, const unsigned char *raw, size_t rlen,
                         void (*edit)(unsigned char *, size_t *), const char *want)
{
    unsigned char *copy = malloc(rlen + 64);
    size_t n = rlen;
    memcpy(copy, raw, rlen);
    edit(copy, &n);
    size_t cap = ZSTD_compressBound(n);
    unsigned char *z = malloc(cap);
    size_t zlen = ZSTD_compress(z, cap, copy, n, 3);
    refused(what, z, zlen, want);
    free(z);
    free(copy);
}

static void edit_magic(unsigned char *b, size_t *n)
{
    (void)n;
    b[0] = 'X';
}

static void edit_version(unsigned char *b, size_t *n)
{
    for (size_t i = 0; i + 10 <= *n; i++) {
        if (memcmp(b + i, "\"format\":2", 10) == 0) {
            b[i + 9] = '7';
            break;
        }
    }
}

static void edit_count(unsigned char *b, size_t *n)
{
    b[*n - 16] ^= 1; /* the trailer's record count */
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Changes one byte inside the DUMP payload of the record that holds the
 * middle of the stream: the records are walked by their lengths
 * (docs/backup-format.md), since where a record starts depends on the data. */
static void edit_record(unsigned char *b, size_t *n)
{
    size_t p = 8 + 4 + le32(b + 8);
    while (p + 9 < *n && b[p] == 1) {
        size_t klen = le32(b + p + 1);
        size_t dpos = p + 5 + klen + 4, dlen = le32(b + p + 5 + klen);
        if (dpos + dlen >= *n / 2 && dlen > 0) {
            b[dpos + dlen / 2] ^= 0x20;
            return;
        }
        p = dpos + dlen + 8;
    }
    b[*n / 2] ^= 0x20; /* not reached with a well-formed stream */
}

static void edit_junk(unsigned char *b, size_t *n)
{
    memcpy(b + *n, "junk", 4);
    *n += 4;
}

static void edit_no_trailer(unsigned char *b, size_t *n)
{
    (void)b;
    *n -= 17;
}

static void test_corrupt_refused(void)
{
    size_t len, rlen;

    fill();
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    unsigned char *good = slurp(BK, &len);
    REQUIRE(good != NULL && len > 100);
    unsigned char *raw = malloc(64 << 20);
    rlen = ZSTD_decompress(raw, 64 << 20, good, len);
    REQUIRE(!ZSTD_isError(rlen));

    refused("empty file", good, 0, "the file is empty");
    unsigned char rnd[4096];
    for (size_t i = 0; i < sizeof(rnd); i++)
        rnd[i] = (unsigned char)(rand() & 0xff);
    refused("random bytes", rnd, sizeof(rnd), "corrupt or not a stepq backup");
    size_t cuts[] = {1, 9, 100, len / 3, len / 2, len - 40, len - 5, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(*cuts); i++)
        refused("truncated", good, cuts[i], "truncated");
    unsigned char *flip = malloc(len + 8);
    memcpy(flip, good, len);
    flip[len / 2] ^= 0x01;
    refused("a flipped byte", flip, len, "refused");
    memcpy(flip + len, "tail", 4);
    flip[len / 2] ^= 0x01;
    refused("bytes after the frame", flip, len + 4, "after the end of the compressed stream");
    free(flip);

    refused_edit("wrong magic", raw, rlen, edit_magic, "bad magic");
    refused_edit("wrong version", raw, rlen, edit_version, "unsupported backup format version 7");
    refused_edit("trailer count off", raw, rlen, edit_count, "the trailer counts");
    refused_edit("a changed record", raw, rlen, edit_record, "checksum mismatch");
    refused_edit("data after the trailer", raw, rlen, edit_junk, "after the trailer");
    refused_edit("no trailer", raw, rlen, edit_no_trailer, "truncated");
    free(raw);
    free(good);
    unlink(BK_BAD);
}

/* A missing file is "not found", and nothing else happens. */
static void test_missing_file(void)
{
    t_flush();
    CHECK(stepq_restore(Q, "/nonexistent/stepq.bk", 0, NULL, NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_NOTFOUND);
    CHECK(stepq_backup(Q, "/nonexistent/dir/x.bk", NULL, NULL) == STEPQ_ERR);
    ASSERT_EQ(stepq_err(Q), STEPQ_E_IO);
    ASSERT_EQ(t_int("DBSIZE"), 0);
}

/* A backup is an old state: restored into a side the phase reads it brings
 * back steps that ended since (with --replace it rewinds live ones). Old
 * keys go back in 'step' only, new keys in 'job' and 'dual-write' only, and
 * are then untrusted until a repair; a refusal writes nothing and says
 * where to restore; --force passes and is audited. */
static void test_restore_phase_rules(void)
{
    static const char *const phases[] = {"job", "dual-write", "dual-read", "step-primary", "step"};
    stepq_backup_opts nb = {.side_new = 1};
    char bk_new[80];

    snprintf(bk_new, sizeof(bk_new), "%s.new", BK);
    t_flush();
    freeReplyObject(t_cmd("HSET job:X id X status pending"));
    freeReplyObject(t_cmd("HSET step:X id X status pending"));
    REQUIRE(stepq_backup(Q, BK, NULL, NULL) == STEPQ_OK);
    REQUIRE(stepq_backup(Q, bk_new, &nb, NULL) == STEPQ_OK);
    for (int i = 0; i < 5; i++) {
        for (int side = 0; side < 2; side++) {
            int allowed = side == 0 ? i == 4 : i <= 1;
            t_flush();
            t_phase(phases[i]);
            /* X completed since the backup, on both sides */
            freeReplyObject(t_cmd("HSET job:X id X status completed"));
            freeReplyObject(t_cmd("HSET step:X id X status completed"));
            int rc =
                stepq_restore(Q, side == 0 ? BK : bk_new, STEPQ_RESTORE_REPLACE, NULL, NULL, NULL);
            const char *k = side == 0 ? "HGET job:X status" : "HGET step:X status";
            if (allowed) {
                if (rc != STEPQ_OK)
                    FAILF("%s side in %s: %s", side ? "new" : "old", phases[i], stepq_errstr(Q));
                ASSERT_STR(t_str(k), "pending");
                ASSERT_EQ(t_int("HEXISTS stepq:phase untrusted_since"), side);
                continue;
            }
            CHECK(rc == STEPQ_ERR);
            if (strstr(stepq_errstr(Q), side == 0 ? "restore them in phase 'step'"
                                                  : "roll back to 'dual-write' first") == NULL)
                FAILF("%s side in %s: '%s'", side ? "new" : "old", phases[i], stepq_errstr(Q));
            ASSERT_STR(t_str(k), "completed");
        }
    }
    /* Forced: written, and the audit log says so. */
    t_flush();
    t_phase("dual-write");
    freeReplyObject(t_cmd("HSET job:X id X status completed"));
    REQUIRE(stepq_restore(Q, BK, STEPQ_RESTORE_REPLACE | STEPQ_RESTORE_FORCE, NULL, NULL, NULL) ==
            STEPQ_OK);
    ASSERT_STR(t_str("HGET job:X status"), "pending");
    CHECK(strstr(t_str("LINDEX stepq:audit -1"), "\"action\":\"restore\"") != NULL);
    unlink(bk_new);
}

int main(void)
{
    snprintf(BK, sizeof(BK), "/tmp/stepq-test-backup-%d.bk", (int)getpid());
    snprintf(BK_TMP, sizeof(BK_TMP), "%s.tmp", BK);
    snprintf(BK_BAD, sizeof(BK_BAD), "/tmp/stepq-test-backup-%d.bad", (int)getpid());
    t_setup();
    RUN(test_dump_touches_access_time);
    RUN(test_records_last_read);
    RUN(test_round_trip);
    RUN(test_new_side_and_memory_source);
    RUN(test_expired_skipped);
    RUN(test_existing_refused);
    RUN(test_restore_phase_rules);
    RUN(test_corrupt_refused);
    RUN(test_missing_file);
    unlink(BK);
    t_teardown();
    TEST_END();
}
