/*
 * backup.h - the backup file format (docs/backup-format.md): a streaming
 * writer and a validating reader, shared by backup.c (backup and restore)
 * and cleanup.c. Private to libstepq, its tests and its fuzz targets.
 *
 * The reader is pure: it touches no Redis and no global state, reads from a
 * memory buffer or a FILE*, checks every length against a cap before it
 * allocates, and hands each record to a callback. A libFuzzer target can
 * call stepq__bk_parse() on any bytes.
 */
#ifndef STEPQ_BACKUP_H
#define STEPQ_BACKUP_H

#include <stdint.h>
#include <stdio.h>

#include "stepq_private.h"

#define STEPQ_BK_MAGIC       "STEPQBK2" /* what the writer writes */
#define STEPQ_BK_MAGIC_V1    "STEPQBK1" /* still read: one DUMP per key only */
#define STEPQ_BK_VERSION     2
#define STEPQ_BK_HEADER_MAX  (1u << 20)   /* header JSON */
#define STEPQ_BK_KEY_MAX     (1u << 20)   /* one key name */
#define STEPQ_BK_DUMP_MAX    (512u << 20) /* one DUMP payload (Redis' proto-max-bulk-len) */
#define STEPQ_BK_REC_KEY     1
#define STEPQ_BK_REC_END     2
#define STEPQ_BK_REC_CHUNK   3            /* version 2: members of a big set or zset */
#define STEPQ_BK_REC_CEND    4            /* version 2: the end of a chunked key, its expiry */
#define STEPQ_BK_CHUNK_MAX   65536u       /* members in one chunk record */
#define STEPQ_BK_CHUNK_BYTES (512u << 20) /* member and score bytes in one chunk */
#define STEPQ_BK_SCORE_MAX   63u          /* one zset score as text */

/* What the header says, plus the trailer's figures once the parse ended. */
typedef struct stepq__bk_info {
    int version;
    char redis_version[32];
    char side[8];   /* "old" or "new" */
    char phase[16]; /* the stored phase when the backup was taken */
    char ns[64];
    char stepq_version[16];
    long long created_ms;
    char *rules; /* the key map as rules-file text; stepq__bk_info_release frees it */
    /* From the trailer (valid after a successful parse): */
    unsigned long long count;
    uint64_t checksum;
} stepq__bk_info;

void stepq__bk_info_release(stepq__bk_info *info); /* accepts a zeroed info */

/* One record; the pointers are valid only during the callback. A big set or
 * zset (version 2) comes as CHUNK records of its members, consecutive,
 * then one CEND record with its expiry; every record names its key, so a
 * caller that wants the names only (cleanup) may take each record's key
 * and meet a chunked key's name more than once. */
typedef struct stepq__bk_record {
    int kind; /* STEPQ_BK_REC_KEY, STEPQ_BK_REC_CHUNK or STEPQ_BK_REC_CEND */
    const char *key;
    size_t keylen;
    const char *dump; /* KEY: the DUMP payload */
    size_t dumplen;
    long long pexpireat; /* KEY, CEND: absolute expiry in ms, -1 none; CHUNK: -1 */
    char rtype;          /* CHUNK, CEND: 's' (set) or 'z' (zset) */
    size_t n;            /* CHUNK: members (1..STEPQ_BK_CHUNK_MAX) */
    /* CHUNK: the members and, for a zset, each one's score as text; NULL
     * with names_only (the bytes were checked and hashed, not kept). */
    const char *const *members;
    const size_t *mlens;
    const char *const *scores;
    const size_t *slens;
    unsigned long long chunks, nmembers; /* CEND: what the key's CHUNKs held */
} stepq__bk_record;

/* Called with each record in file order; returns 0 to go on, or a positive
 * value to stop the parse (stepq__bk_parse then returns that value). */
typedef int (*stepq__bk_fn)(const stepq__bk_record *rec, void *arg);

/* A source of compressed bytes: a FILE* (read from its current position) or
 * a memory buffer. */
typedef struct stepq__bk_src {
    FILE *fp;
    const unsigned char *mem;
    size_t len, pos;
    /* The DUMP payloads are read, checked and hashed but not kept (the
     * records' dump is NULL): memory stays flat whatever the largest key. */
    int names_only;
} stepq__bk_src;

/*
 * Parses and validates a whole backup stream: the zstd frame (complete,
 * its content checksum right, nothing after it), the magic, the header's
 * format version and fields, every record's type and lengths (capped), the
 * trailer's record count and xxh64 checksum, and that nothing follows the
 * trailer. Calls fn (may be NULL) with each record as it goes; records
 * before a defect are delivered before the defect is found, so a caller
 * that must not act on a bad file runs one pass with a checking callback
 * first.
 *
 * Returns 0 when the whole stream is valid (info filled: header and
 * trailer), -1 on a defect (a message naming it in err, info released), or
 * the positive value fn returned to stop early. The caller releases info in every case
 * (stepq__bk_info_release). Allocates only buffers it frees itself.
 */
int stepq__bk_parse(stepq__bk_src *src, stepq__bk_info *info, stepq__bk_fn fn, void *arg, char *err,
                    size_t errlen);

/* The streaming writer: a header, records, then the trailer. */
typedef struct stepq__bk_writer stepq__bk_writer;

/* Starts a backup stream on fp (borrowed; the caller closes it) with the
 * given header fields (info->rules may be NULL). NULL on OOM. */
stepq__bk_writer *stepq__bk_writer_new(FILE *fp, const stepq__bk_info *info);
/* Appends one record. -1 on a write or compression error (see errstr). */
int stepq__bk_writer_add(stepq__bk_writer *w, const char *key, size_t keylen, const char *dump,
                         size_t dumplen, long long pexpireat);
/* Appends one chunk of n members of the big set or zset `key` (rtype 's'
 * or 'z'; scores, as Redis prints them, for a zset). The chunks of one key
 * are consecutive and end with stepq__bk_writer_cend; -1 otherwise. */
int stepq__bk_writer_chunk(stepq__bk_writer *w, const char *key, size_t keylen, char rtype,
                           size_t n, const char *const *members, const size_t *mlens,
                           const char *const *scores, const size_t *slens);
/* Ends the chunked key open in w, with its absolute expiry (-1 none). */
int stepq__bk_writer_cend(stepq__bk_writer *w, long long pexpireat);
/* Writes the trailer and ends the zstd frame; returns the record count and
 * checksum. -1 on error. */
int stepq__bk_writer_finish(stepq__bk_writer *w, unsigned long long *ret_count,
                            uint64_t *ret_checksum);
/* The last error of the writer, "" if none. */
const char *stepq__bk_writer_errstr(const stepq__bk_writer *w);
void stepq__bk_writer_free(stepq__bk_writer *w); /* accepts NULL */

/* ---------------------------------------------------------------------------
 * Shared by backup.c and cleanup.c (they need a handle)
 * ------------------------------------------------------------------------- */

/* The key map as rules-file text (what a backup header records): a new sds. */
sds stepq__bk_rules_text(const stepq__keymap *km);
/* Opens a backup file for reading; STEPQ_E_NOTFOUND/STEPQ_E_IO naming it. */
FILE *stepq__bk_open(stepq *q, const char *path);
/* Validates the file at fp from its start, calling fn with each record.
 * On a defect sets STEPQ_E_INVALID naming the file and the defect. */
/* stepq__bk_check for callers that need the key names only (cleanup, the
 * restore's checking pass): the DUMP payloads are not kept. */
int stepq__bk_check_names(stepq *q, FILE *fp, const char *path, stepq__bk_info *info,
                          stepq__bk_fn fn, void *arg);
int stepq__bk_check(stepq *q, FILE *fp, const char *path, stepq__bk_info *info, stepq__bk_fn fn,
                    void *arg);

#endif /* STEPQ_BACKUP_H */
