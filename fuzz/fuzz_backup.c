/* fuzz_backup.c - libFuzzer target: the backup-file reader (src/backup_file.c).
 *
 * Each input is parsed twice: as it is (a whole backup file, so the zstd
 * layer is fuzzed) and compressed first into a valid zstd frame (so the
 * fuzzer reaches the magic, header, records and trailer behind the zstd
 * checksum). A file that parses is written again with the writer and must
 * read back with the same records. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "backup.h"

struct seen {
    unsigned long long n;
    XXH64_state_t *xx;
    stepq__bk_writer *w; /* when re-writing */
};

static int on_record(const stepq__bk_record *rec, void *arg)
{
    struct seen *s = arg;

    /* Every record delivered is within the format's caps. */
    if (rec->key == NULL || rec->keylen < 1 || rec->keylen > STEPQ_BK_KEY_MAX ||
        rec->dumplen > STEPQ_BK_DUMP_MAX || (rec->dumplen > 0 && rec->dump == NULL) ||
        rec->pexpireat < -1)
        __builtin_trap();
    s->n++;
    XXH64_update(s->xx, &rec->kind, sizeof(rec->kind));
    XXH64_update(s->xx, rec->key, rec->keylen);
    XXH64_update(s->xx, &rec->pexpireat, sizeof(rec->pexpireat));
    if (rec->kind == STEPQ_BK_REC_CHUNK) {
        /* A chunk: 1..CHUNK_MAX members, each score a number for a zset. */
        if (rec->n < 1 || rec->n > STEPQ_BK_CHUNK_MAX || rec->members == NULL ||
            (rec->rtype != 's' && rec->rtype != 'z') ||
            (rec->rtype == 'z') != (rec->scores != NULL))
            __builtin_trap();
        for (size_t i = 0; i < rec->n; i++) {
            XXH64_update(s->xx, rec->members[i], rec->mlens[i]);
            if (rec->scores != NULL)
                XXH64_update(s->xx, rec->scores[i], rec->slens[i]);
        }
        if (s->w != NULL &&
            stepq__bk_writer_chunk(s->w, rec->key, rec->keylen, rec->rtype, rec->n, rec->members,
                                   rec->mlens, rec->scores, rec->slens) != 0)
            __builtin_trap();
        return 0;
    }
    if (rec->kind == STEPQ_BK_REC_CEND) {
        XXH64_update(s->xx, &rec->nmembers, sizeof(rec->nmembers));
        if (s->w != NULL && stepq__bk_writer_cend(s->w, rec->pexpireat) != 0)
            __builtin_trap();
        return 0;
    }
    if (rec->kind != STEPQ_BK_REC_KEY)
        __builtin_trap();
    XXH64_update(s->xx, rec->dump, rec->dumplen);
    if (s->w != NULL && stepq__bk_writer_add(s->w, rec->key, rec->keylen, rec->dump, rec->dumplen,
                                             rec->pexpireat) != 0)
        __builtin_trap();
    return 0;
}

/* Parses mem[0..len); on success fills *ret_info (caller releases). */
static int parse(const unsigned char *mem, size_t len, struct seen *s, stepq__bk_info *info)
{
    stepq__bk_src src = {.mem = mem, .len = len};
    char err[256];
    int rc;

    XXH64_reset(s->xx, 0);
    s->n = 0;
    rc = stepq__bk_parse(&src, info, on_record, s, err, sizeof(err));
    if (rc != 0) {
        if (rc != -1 || err[0] == '\0')
            __builtin_trap(); /* every refusal says why */
        return -1;
    }
    if ((info->version != STEPQ_BK_VERSION && info->version != 1) || info->count != s->n ||
        info->rules == NULL || (strcmp(info->side, "old") != 0 && strcmp(info->side, "new") != 0))
        __builtin_trap();
    return 0;
}

/* A valid file, written again record by record, reads back the same. */
static void check_rewrite(const unsigned char *mem, size_t len, const stepq__bk_info *info,
                          XXH64_hash_t records)
{
    struct seen s = {.xx = XXH64_createState()};
    stepq__bk_info again;
    unsigned long long count;
    uint64_t sum;
    char *buf = NULL;
    size_t buflen = 0;
    FILE *fp = open_memstream(&buf, &buflen);

    if (fp == NULL || s.xx == NULL || (s.w = stepq__bk_writer_new(fp, info)) == NULL)
        __builtin_trap();
    if (parse(mem, len, &s, &again) != 0 || stepq__bk_writer_finish(s.w, &count, &sum) != 0 ||
        count != info->count)
        __builtin_trap();
    stepq__bk_info_release(&again);
    stepq__bk_writer_free(s.w);
    s.w = NULL;
    fclose(fp);
    if (parse((const unsigned char *)buf, buflen, &s, &again) != 0 ||
        XXH64_digest(s.xx) != records || again.count != count || again.checksum != sum ||
        strcmp(again.side, info->side) != 0 || strcmp(again.rules, info->rules) != 0)
        __builtin_trap();
    stepq__bk_info_release(&again);
    free(buf);
    XXH64_freeState(s.xx);
}

static void one(const unsigned char *mem, size_t len)
{
    struct seen s = {.xx = XXH64_createState()};
    stepq__bk_info info;

    if (s.xx == NULL)
        __builtin_trap();
    if (parse(mem, len, &s, &info) == 0)
        check_rewrite(mem, len, &info, XXH64_digest(s.xx));
    stepq__bk_info_release(&info);
    XXH64_freeState(s.xx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ZSTD_CCtx *cctx;
    size_t cap = ZSTD_compressBound(size), n;
    unsigned char *z, *plain;

    one(data, size);
    /* When the input ends like a trailer (type 2, count, checksum), the
     * checksum is set right, so that whole files can parse. */
    plain = malloc(size + 1);
    if (plain == NULL)
        __builtin_trap();
    memcpy(plain, data, size);
    if (size >= 17 && plain[size - 17] == STEPQ_BK_REC_END) {
        uint64_t sum = XXH64(plain, size - 17, 0);
        for (int i = 0; i < 8; i++)
            plain[size - 8 + i] = (unsigned char)(sum >> (8 * i));
    }
    if (cctx == NULL) {
        cctx = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    }
    z = malloc(cap);
    if (z == NULL || cctx == NULL)
        __builtin_trap();
    n = ZSTD_compress2(cctx, z, cap, plain, size);
    if (ZSTD_isError(n))
        __builtin_trap();
    one(z, n);
    free(z);
    free(plain);
    return 0;
}
