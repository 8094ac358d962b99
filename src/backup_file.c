/*
 * backup_file.c - the backup file format (docs/backup-format.md): a zstd
 * frame holding the magic, a length-prefixed JSON header, key records and
 * a trailer with the record count and an xxh64 of every byte before it.
 *
 * Integers are little-endian. The writer streams (one record in memory at a
 * time); the reader validates as it streams and never trusts a length before
 * checking it against its cap, and grows buffers only as bytes really
 * arrive, so a forged length cannot make it allocate what the file does not
 * hold.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <xxhash.h>
#include <zstd.h>

#include "stepq_private.h"
#include "backup.h"

#define ZSTD_LEVEL 3
#define GROW_STEP  (1u << 20)

void stepq__bk_info_release(stepq__bk_info *info)
{
    if (info == NULL)
        return;
    stepq__free(info->rules);
    info->rules = NULL;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* ---------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------- */

struct stepq__bk_writer {
    FILE *fp;
    ZSTD_CCtx *cctx;
    XXH64_state_t *xx;
    unsigned char *out;
    size_t outcap;
    unsigned long long count;
    /* The chunked key open (its CHUNKs written, its CEND not yet). */
    char *okey;
    size_t okeylen;
    char otype;
    unsigned long long ochunks, omembers;
    char errstr[128];
};

const char *stepq__bk_writer_errstr(const stepq__bk_writer *w)
{
    return w ? w->errstr : "out of memory";
}

/* Compresses n bytes (hashing them when `hash`), or ends the frame when
 * `end`, writing whatever zstd produces. */
static int w_put(stepq__bk_writer *w, const void *p, size_t n, int hash, int end)
{
    ZSTD_inBuffer in = {p, n, 0};
    size_t left;

    if (w->errstr[0] != '\0')
        return -1;
    if (hash)
        XXH64_update(w->xx, p, n);
    do {
        ZSTD_outBuffer out = {w->out, w->outcap, 0};
        left = ZSTD_compressStream2(w->cctx, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
        if (ZSTD_isError(left)) {
            snprintf(w->errstr, sizeof(w->errstr), "compression failed: %s",
                     ZSTD_getErrorName(left));
            return -1;
        }
        if (out.pos > 0 && fwrite(w->out, 1, out.pos, w->fp) != out.pos) {
            snprintf(w->errstr, sizeof(w->errstr), "write failed (disk full?)");
            return -1;
        }
    } while (end ? left != 0 : in.pos < in.size);
    return 0;
}

static char *header_json(const stepq__bk_info *info)
{
    json_t *o =
        json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "format", STEPQ_BK_VERSION,
                  "redis_version", info->redis_version, "side", info->side, "phase", info->phase,
                  "namespace", info->ns, "stepq_version", STEPQ_VERSION, "created_ms",
                  (json_int_t)info->created_ms, "rules", info->rules ? info->rules : "");
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

    json_decref(o);
    return s;
}

stepq__bk_writer *stepq__bk_writer_new(FILE *fp, const stepq__bk_info *info)
{
    stepq__bk_writer *w = stepq__calloc(1, sizeof(*w));
    char *hdr = NULL;
    unsigned char len[4];

    if (w == NULL)
        return NULL;
    w->fp = fp;
    w->cctx = ZSTD_createCCtx();
    w->xx = XXH64_createState();
    w->outcap = ZSTD_CStreamOutSize();
    w->out = stepq__malloc(w->outcap);
    hdr = header_json(info);
    if (w->cctx == NULL || w->xx == NULL || w->out == NULL || hdr == NULL)
        goto fail;
    XXH64_reset(w->xx, 0);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    put_u32(len, (uint32_t)strlen(hdr));
    w_put(w, STEPQ_BK_MAGIC, 8, 1, 0);
    w_put(w, len, 4, 1, 0);
    w_put(w, hdr, strlen(hdr), 1, 0);
    free(hdr);
    return w;
fail:
    free(hdr);
    stepq__bk_writer_free(w);
    return NULL;
}

int stepq__bk_writer_add(stepq__bk_writer *w, const char *key, size_t keylen, const char *dump,
                         size_t dumplen, long long pexpireat)
{
    unsigned char head[5], mid[4], tail[8];

    if (keylen == 0 || keylen > STEPQ_BK_KEY_MAX || dumplen > STEPQ_BK_DUMP_MAX) {
        snprintf(w->errstr, sizeof(w->errstr), "key '%.*s' is too large for the backup format",
                 (int)(keylen > 64 ? 64 : keylen), key);
        return -1;
    }
    if (w->okey != NULL) {
        snprintf(w->errstr, sizeof(w->errstr), "a key written inside a chunked one");
        return -1;
    }
    head[0] = STEPQ_BK_REC_KEY;
    put_u32(head + 1, (uint32_t)keylen);
    put_u32(mid, (uint32_t)dumplen);
    put_u64(tail, (uint64_t)pexpireat);
    w_put(w, head, 5, 1, 0);
    w_put(w, key, keylen, 1, 0);
    w_put(w, mid, 4, 1, 0);
    w_put(w, dump, dumplen, 1, 0);
    if (w_put(w, tail, 8, 1, 0) != 0)
        return -1;
    w->count++;
    return 0;
}

/* The key and type that open a CHUNK or CEND record. */
static void w_key(stepq__bk_writer *w, unsigned char kind, const char *key, size_t keylen,
                  char rtype)
{
    unsigned char head[5];

    head[0] = kind;
    put_u32(head + 1, (uint32_t)keylen);
    w_put(w, head, 5, 1, 0);
    w_put(w, key, keylen, 1, 0);
    w_put(w, &rtype, 1, 1, 0);
}

int stepq__bk_writer_chunk(stepq__bk_writer *w, const char *key, size_t keylen, char rtype,
                           size_t n, const char *const *members, const size_t *mlens,
                           const char *const *scores, const size_t *slens)
{
    unsigned char len[4];
    size_t bytes = 0;

    for (size_t i = 0; i < n; i++)
        bytes += mlens[i] + (rtype == 'z' ? slens[i] : 0);
    if (keylen == 0 || keylen > STEPQ_BK_KEY_MAX || n == 0 || n > STEPQ_BK_CHUNK_MAX ||
        bytes > STEPQ_BK_CHUNK_BYTES || (rtype != 's' && rtype != 'z')) {
        snprintf(w->errstr, sizeof(w->errstr), "a chunk of '%.*s' is out of the format's range",
                 (int)(keylen > 64 ? 64 : keylen), key);
        return -1;
    }
    if (w->okey != NULL &&
        (w->okeylen != keylen || memcmp(w->okey, key, keylen) != 0 || w->otype != rtype)) {
        snprintf(w->errstr, sizeof(w->errstr), "a chunk of another key inside a chunked one");
        return -1;
    }
    if (w->okey == NULL) {
        if ((w->okey = stepq__malloc(keylen)) == NULL) {
            snprintf(w->errstr, sizeof(w->errstr), "out of memory");
            return -1;
        }
        memcpy(w->okey, key, keylen);
        w->okeylen = keylen;
        w->otype = rtype;
        w->ochunks = w->omembers = 0;
    }
    w_key(w, STEPQ_BK_REC_CHUNK, key, keylen, rtype);
    put_u32(len, (uint32_t)n);
    w_put(w, len, 4, 1, 0);
    for (size_t i = 0; i < n; i++) {
        if (rtype == 'z' && (slens[i] == 0 || slens[i] > STEPQ_BK_SCORE_MAX)) {
            snprintf(w->errstr, sizeof(w->errstr), "a score of '%.*s' is too long",
                     (int)(keylen > 64 ? 64 : keylen), key);
            return -1;
        }
        put_u32(len, (uint32_t)mlens[i]);
        w_put(w, len, 4, 1, 0);
        w_put(w, members[i], mlens[i], 1, 0);
        if (rtype == 'z') {
            unsigned char sl = (unsigned char)slens[i];
            w_put(w, &sl, 1, 1, 0);
            w_put(w, scores[i], slens[i], 1, 0);
        }
    }
    if (w->errstr[0] != '\0')
        return -1;
    w->ochunks++;
    w->omembers += n;
    w->count++;
    return 0;
}

int stepq__bk_writer_cend(stepq__bk_writer *w, long long pexpireat)
{
    unsigned char t[24];

    if (w->okey == NULL || pexpireat < -1) {
        snprintf(w->errstr, sizeof(w->errstr), "the end of a chunked key that is not open");
        return -1;
    }
    w_key(w, STEPQ_BK_REC_CEND, w->okey, w->okeylen, w->otype);
    put_u64(t, w->ochunks);
    put_u64(t + 8, w->omembers);
    put_u64(t + 16, (uint64_t)pexpireat);
    if (w_put(w, t, sizeof(t), 1, 0) != 0)
        return -1;
    stepq__free(w->okey);
    w->okey = NULL;
    w->count++;
    return 0;
}

int stepq__bk_writer_finish(stepq__bk_writer *w, unsigned long long *ret_count,
                            uint64_t *ret_checksum)
{
    unsigned char t[17];
    uint64_t sum = XXH64_digest(w->xx);

    if (w->okey != NULL) {
        snprintf(w->errstr, sizeof(w->errstr), "a chunked key has no end");
        return -1;
    }

    t[0] = STEPQ_BK_REC_END;
    put_u64(t + 1, w->count);
    put_u64(t + 9, sum);
    w_put(w, t, sizeof(t), 0, 0);
    if (w_put(w, NULL, 0, 0, 1) != 0)
        return -1;
    *ret_count = w->count;
    *ret_checksum = sum;
    return 0;
}

void stepq__bk_writer_free(stepq__bk_writer *w)
{
    if (w == NULL)
        return;
    ZSTD_freeCCtx(w->cctx);
    if (w->xx != NULL)
        XXH64_freeState(w->xx);
    stepq__free(w->okey);
    stepq__free(w->out);
    stepq__free(w);
}

/* ---------------------------------------------------------------------------
 * Reader
 * ------------------------------------------------------------------------- */

struct rd {
    stepq__bk_src *src;
    ZSTD_DCtx *dctx;
    unsigned char *inbuf, *outbuf;
    size_t incap, outcap;
    ZSTD_inBuffer in;
    size_t opos, olen; /* decompressed bytes not consumed yet */
    int frame_done, src_eof;
    int version;            /* from the magic: 1 or 2 */
    unsigned long long off; /* decompressed offset, for messages */
    XXH64_state_t *xx;
    char *err;
    size_t errlen;
};

static int fail(struct rd *r, const char *fmt, ...) STEPQ_PRINTF(2, 3);
static int fail(struct rd *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Reads more compressed bytes; sets src_eof when there are none. */
static void src_fill(struct rd *r)
{
    stepq__bk_src *s = r->src;
    size_t n;

    if (s->fp != NULL) {
        n = fread(r->inbuf, 1, r->incap, s->fp);
    } else {
        n = s->len - s->pos < r->incap ? s->len - s->pos : r->incap;
        memcpy(r->inbuf, s->mem + s->pos, n);
        s->pos += n;
    }
    r->in.src = r->inbuf;
    r->in.size = n;
    r->in.pos = 0;
    if (n == 0)
        r->src_eof = 1;
}

/* Decompresses more bytes into outbuf. 0 when some came, -1 on error. */
static int refill(struct rd *r)
{
    while (!r->frame_done) {
        if (r->in.pos == r->in.size) {
            src_fill(r);
            if (r->src_eof)
                return fail(r, "the file is truncated: the compressed stream ends early");
        }
        ZSTD_outBuffer out = {r->outbuf, r->outcap, 0};
        size_t rc = ZSTD_decompressStream(r->dctx, &out, &r->in);
        if (ZSTD_isError(rc))
            return fail(r, "the file is corrupt or not a stepq backup: zstd says '%s'",
                        ZSTD_getErrorName(rc));
        if (rc == 0)
            r->frame_done = 1;
        if (out.pos > 0) {
            r->opos = 0;
            r->olen = out.pos;
            return 0;
        }
    }
    return fail(r, "the file is truncated: the data ends at byte %llu before the trailer", r->off);
}

/* Copies the next n decompressed bytes into dst (hashing them when
 * `hash`). */
static int need(struct rd *r, void *dst, size_t n, int hash)
{
    unsigned char *d = dst;

    while (n > 0) {
        if (r->opos == r->olen && refill(r) != 0)
            return -1;
        size_t k = r->olen - r->opos < n ? r->olen - r->opos : n;
        memcpy(d, r->outbuf + r->opos, k);
        if (hash)
            XXH64_update(r->xx, d, k);
        r->opos += k;
        r->off += k;
        d += k;
        n -= k;
    }
    return 0;
}

/* Reads n bytes into *buf (capacity *cap) from offset `at`, growing it
 * only as the bytes arrive, so a forged length costs at most what the file
 * holds. The bytes are NUL-terminated. */
static int need_at(struct rd *r, char **buf, size_t *cap, size_t at, size_t n)
{
    size_t have = 0;

    while (have < n) {
        size_t want = n - have < GROW_STEP ? n - have : GROW_STEP;
        if (at + have + want + 1 > *cap) {
            size_t ncap = at + have + want + 1;
            if (ncap < 2 * *cap)
                ncap = 2 * *cap; /* appends (chunk members) grow geometrically */
            char *nb = stepq__realloc(*buf, ncap);
            if (nb == NULL)
                return fail(r, "out of memory while reading a record of %zu bytes", n);
            *buf = nb;
            *cap = ncap;
        }
        if (need(r, *buf + at + have, want, 1) != 0)
            return -1;
        have += want;
    }
    if (*buf == NULL || at + n + 1 > *cap) { /* n == 0: the loop allocated nothing */
        char *nb = stepq__realloc(*buf, at + n + 1);
        if (nb == NULL)
            return fail(r, "out of memory");
        *buf = nb;
        *cap = at + n + 1;
    }
    (*buf)[at + n] = '\0';
    return 0;
}

static int need_grow(struct rd *r, char **buf, size_t *cap, size_t n)
{
    return need_at(r, buf, cap, 0, n);
}

/* Skips n bytes, checking and hashing them (names_only). */
static int skip(struct rd *r, size_t n)
{
    unsigned char scratch[4096];

    for (size_t left = n; left > 0;) {
        size_t k = left < sizeof(scratch) ? left : sizeof(scratch);
        if (need(r, scratch, k, 1) != 0)
            return -1;
        left -= k;
    }
    return 0;
}

static int copy_str(struct rd *r, json_t *o, const char *name, char *dst, size_t cap)
{
    const char *v = json_string_value(json_object_get(o, name));

    if (v == NULL || strlen(v) >= cap)
        return fail(r, "the header's '%s' is missing or too long", name);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int parse_header(struct rd *r, stepq__bk_info *info)
{
    unsigned char magic[8], len[4];
    char *text = NULL;
    size_t cap = 0;
    json_error_t je;
    int rc = -1;

    if (need(r, magic, 8, 1) != 0)
        return -1;
    if (memcmp(magic, STEPQ_BK_MAGIC, 7) != 0)
        return fail(r, "not a stepq backup (bad magic)");
    if (memcmp(magic, STEPQ_BK_MAGIC, 8) == 0)
        r->version = STEPQ_BK_VERSION;
    else if (memcmp(magic, STEPQ_BK_MAGIC_V1, 8) == 0)
        r->version = 1;
    else
        return fail(r, "unsupported backup format '%.8s'; this stepq reads %s and %s",
                    (char *)magic, STEPQ_BK_MAGIC_V1, STEPQ_BK_MAGIC);
    if (need(r, len, 4, 1) != 0)
        return -1;
    uint32_t n = get_u32(len);
    if (n == 0 || n > STEPQ_BK_HEADER_MAX)
        return fail(r, "the header length %u is out of range (1..%u)", n, STEPQ_BK_HEADER_MAX);
    if (need_grow(r, &text, &cap, n) != 0)
        goto out;
    json_t *o = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        fail(r, "the header is not a JSON object: %s", je.text);
        json_decref(o);
        goto out;
    }
    json_t *ver = json_object_get(o, "format");
    if (!json_is_integer(ver) || json_integer_value(ver) != r->version) {
        fail(r, "unsupported backup format version %lld in a file whose magic says %d",
             (long long)json_integer_value(ver), r->version);
    } else if (copy_str(r, o, "redis_version", info->redis_version, sizeof(info->redis_version)) ==
                   0 &&
               copy_str(r, o, "side", info->side, sizeof(info->side)) == 0 &&
               copy_str(r, o, "phase", info->phase, sizeof(info->phase)) == 0 &&
               copy_str(r, o, "namespace", info->ns, sizeof(info->ns)) == 0 &&
               copy_str(r, o, "stepq_version", info->stepq_version, sizeof(info->stepq_version)) ==
                   0) {
        const char *rules = json_string_value(json_object_get(o, "rules"));
        info->version = r->version;
        info->created_ms = json_integer_value(json_object_get(o, "created_ms"));
        if (strcmp(info->side, "old") != 0 && strcmp(info->side, "new") != 0)
            fail(r, "the header's side '%s' is neither 'old' nor 'new'", info->side);
        else if ((info->rules = stepq__strdup(rules ? rules : "")) == NULL)
            fail(r, "out of memory");
        else
            rc = 0;
    }
    json_decref(o);
out:
    stepq__free(text);
    return rc;
}

/* The trailer: count and checksum must match, and nothing may follow it,
 * neither inside the zstd frame nor after it. */
static int parse_trailer(struct rd *r, stepq__bk_info *info, unsigned long long count)
{
    unsigned char t[16];
    uint64_t sum = XXH64_digest(r->xx);

    if (need(r, t, 16, 0) != 0)
        return -1;
    if (get_u64(t) != count)
        return fail(r, "the trailer counts %llu records but the file holds %llu",
                    (unsigned long long)get_u64(t), count);
    if (get_u64(t + 8) != sum)
        return fail(r, "checksum mismatch: the trailer says %016llx, the data gives %016llx",
                    (unsigned long long)get_u64(t + 8), (unsigned long long)sum);
    while (r->opos == r->olen && !r->frame_done) {
        if (refill(r) != 0)
            return -1;
    }
    if (r->opos != r->olen)
        return fail(r, "unexpected data after the trailer at byte %llu", r->off);
    if (r->in.pos == r->in.size)
        src_fill(r);
    if (r->in.pos != r->in.size)
        return fail(r, "unexpected bytes after the end of the compressed stream");
    info->count = count;
    info->checksum = sum;
    return 0;
}

struct recbuf {
    char *key, *dump;
    size_t keycap, dumpcap;
    /* A chunk: its member and score bytes, and where each one lies. */
    size_t *off, *len, *soff, *slen, idxcap;
    const char **mp, **sp;
    /* The chunked key open: its name, type and what its chunks held. */
    char *okey;
    size_t okeycap, okeylen;
    char otype;
    unsigned long long ochunks, omembers;
};

static void recbuf_free(struct recbuf *b)
{
    stepq__free(b->key);
    stepq__free(b->dump);
    stepq__free(b->off);
    stepq__free(b->len);
    stepq__free(b->soff);
    stepq__free(b->slen);
    stepq__free(b->mp);
    stepq__free(b->sp);
    stepq__free(b->okey);
}

/* A record's key: u32 length (capped), then the name. */
static int parse_key(struct rd *r, struct recbuf *b, stepq__bk_record *rec)
{
    unsigned char len[4];

    if (need(r, len, 4, 1) != 0)
        return -1;
    rec->keylen = get_u32(len);
    if (rec->keylen == 0 || rec->keylen > STEPQ_BK_KEY_MAX)
        return fail(r, "a key length of %zu at byte %llu is out of range (1..%u)", rec->keylen,
                    r->off - 4, STEPQ_BK_KEY_MAX);
    if (need_grow(r, &b->key, &b->keycap, rec->keylen) != 0)
        return -1;
    rec->key = b->key;
    return 0;
}

static int parse_record(struct rd *r, struct recbuf *b, stepq__bk_record *rec)
{
    unsigned char len[4], exp[8];

    if (parse_key(r, b, rec) != 0 || need(r, len, 4, 1) != 0)
        return -1;
    rec->dumplen = get_u32(len);
    if (rec->dumplen > STEPQ_BK_DUMP_MAX)
        return fail(r, "a DUMP length of %zu at byte %llu is over the cap of %u", rec->dumplen,
                    r->off - 4, STEPQ_BK_DUMP_MAX);
    if (r->src->names_only) {
        if (skip(r, rec->dumplen) != 0) /* checked and hashed, not kept */
            return -1;
    } else if (need_grow(r, &b->dump, &b->dumpcap, rec->dumplen) != 0) {
        return -1;
    }
    if (need(r, exp, 8, 1) != 0)
        return -1;
    rec->dump = r->src->names_only ? NULL : b->dump;
    rec->pexpireat = (long long)get_u64(exp);
    if (rec->pexpireat < -1)
        return fail(r, "key '%.*s' has an impossible expiry %lld", (int)rec->keylen, rec->key,
                    rec->pexpireat);
    return 0;
}

/* A zset score as Redis prints it: a whole decimal or inf, never NaN. */
static int score_ok(const char *p, size_t n)
{
    char tmp[STEPQ_BK_SCORE_MAX + 1], *end;

    if (n == 0 || n > STEPQ_BK_SCORE_MAX || isspace((unsigned char)p[0]))
        return 0;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    if (memchr(tmp, '\0', n) != NULL)
        return 0;
    double d = strtod(tmp, &end);
    return end == tmp + n && !isnan(d);
}

/* Grows the chunk's index arrays to hold member i. */
static int chunk_index(struct rd *r, struct recbuf *b, size_t i)
{
    if (i < b->idxcap)
        return 0;
    size_t cap = b->idxcap ? 2 * b->idxcap : 256;
    size_t *arr[4] = {b->off, b->len, b->soff, b->slen};
    for (int k = 0; k < 4; k++) {
        size_t *n = stepq__realloc(arr[k], cap * sizeof(*n));
        if (n == NULL) {
            b->off = arr[0], b->len = arr[1], b->soff = arr[2], b->slen = arr[3];
            return fail(r, "out of memory while reading a chunk");
        }
        arr[k] = n;
    }
    b->off = arr[0], b->len = arr[1], b->soff = arr[2], b->slen = arr[3];
    b->idxcap = cap;
    return 0;
}

/* The key and type that open a CHUNK or CEND record. */
static int parse_ckey(struct rd *r, struct recbuf *b, stepq__bk_record *rec)
{
    if (parse_key(r, b, rec) != 0 || need(r, &rec->rtype, 1, 1) != 0)
        return -1;
    if (rec->rtype != 's' && rec->rtype != 'z')
        return fail(r, "key '%.*s' has an unknown collection type %d at byte %llu",
                    (int)rec->keylen, rec->key, rec->rtype, r->off - 1);
    return 0;
}

/* Type 3: u32 n (1..CHUNK_MAX), then n times: u32 length, member, and for
 * a zset u8 length and the score's text. The chunks of one key are
 * consecutive: the first opens it, the CEND closes it. */
static int parse_chunk(struct rd *r, struct recbuf *b, stepq__bk_record *rec)
{
    unsigned char len[4];
    size_t bytes = 0, raw = 0; /* buffer offset (pieces NUL-ended); bytes the file holds */

    if (parse_ckey(r, b, rec) != 0 || need(r, len, 4, 1) != 0)
        return -1;
    if (b->okeylen > 0 && (b->okeylen != rec->keylen || memcmp(b->okey, rec->key, rec->keylen) ||
                           b->otype != rec->rtype))
        return fail(r,
                    "a chunk of '%.*s' at byte %llu comes inside the chunked key '%.*s' "
                    "before its end",
                    (int)rec->keylen, rec->key, r->off - 4, (int)b->okeylen, b->okey);
    rec->n = get_u32(len);
    if (rec->n == 0 || rec->n > STEPQ_BK_CHUNK_MAX)
        return fail(r, "a chunk of %zu members at byte %llu is out of range (1..%u)", rec->n,
                    r->off - 4, STEPQ_BK_CHUNK_MAX);
    if (b->okeylen == 0) {
        char *nk = stepq__realloc(b->okey, rec->keylen + 1);
        if (nk == NULL)
            return fail(r, "out of memory");
        memcpy(nk, rec->key, rec->keylen);
        b->okey = nk;
        b->okeycap = rec->keylen + 1;
        b->okeylen = rec->keylen;
        b->otype = rec->rtype;
        b->ochunks = b->omembers = 0;
    }
    for (size_t i = 0; i < rec->n; i++) {
        unsigned char sl = 0;
        if (need(r, len, 4, 1) != 0)
            return -1;
        size_t ml = get_u32(len);
        if (ml > STEPQ_BK_CHUNK_BYTES - raw)
            return fail(r, "a chunk of '%.*s' at byte %llu holds more than %u bytes",
                        (int)rec->keylen, rec->key, r->off - 4, STEPQ_BK_CHUNK_BYTES);
        if (!r->src->names_only && chunk_index(r, b, i) != 0)
            return -1;
        if (r->src->names_only) {
            if (skip(r, ml) != 0)
                return -1;
        } else {
            b->off[i] = bytes;
            b->len[i] = ml;
            if (need_at(r, &b->dump, &b->dumpcap, bytes, ml) != 0)
                return -1;
        }
        bytes += ml + 1; /* each piece NUL-terminated in the buffer */
        raw += ml;
        if (rec->rtype != 'z')
            continue;
        char sc[STEPQ_BK_SCORE_MAX + 1];
        if (need(r, &sl, 1, 1) != 0)
            return -1;
        if (sl > STEPQ_BK_CHUNK_BYTES - raw)
            return fail(r, "a chunk of '%.*s' at byte %llu holds more than %u bytes",
                        (int)rec->keylen, rec->key, r->off - 1, STEPQ_BK_CHUNK_BYTES);
        raw += sl;
        if (sl == 0 || sl > STEPQ_BK_SCORE_MAX)
            return fail(r, "a score length of %u at byte %llu is out of range (1..%u)", sl,
                        r->off - 1, STEPQ_BK_SCORE_MAX);
        if (need(r, sc, sl, 1) != 0)
            return -1;
        if (!score_ok(sc, sl))
            return fail(r, "the score '%.*s' at byte %llu is not a number", (int)sl, sc,
                        r->off - sl);
        if (!r->src->names_only) {
            b->soff[i] = bytes;
            b->slen[i] = sl;
            if (bytes + sl + 1 > b->dumpcap) {
                size_t ncap = 2 * b->dumpcap > bytes + sl + 1 ? 2 * b->dumpcap : bytes + sl + 1;
                char *nb = stepq__realloc(b->dump, ncap);
                if (nb == NULL)
                    return fail(r, "out of memory");
                b->dump = nb;
                b->dumpcap = ncap;
            }
            memcpy(b->dump + bytes, sc, sl);
            b->dump[bytes + sl] = '\0';
        }
        bytes += sl + 1u;
    }
    b->ochunks++;
    b->omembers += rec->n;
    rec->pexpireat = -1;
    if (r->src->names_only)
        return 0;
    const char **mp = stepq__realloc(b->mp, rec->n * sizeof(*mp));
    if (mp != NULL)
        b->mp = mp;
    const char **sp = mp ? stepq__realloc(b->sp, rec->n * sizeof(*sp)) : NULL;
    if (sp != NULL)
        b->sp = sp;
    if (mp == NULL || sp == NULL)
        return fail(r, "out of memory");
    for (size_t i = 0; i < rec->n; i++) {
        mp[i] = b->dump + b->off[i];
        sp[i] = rec->rtype == 'z' ? b->dump + b->soff[i] : NULL;
    }
    rec->members = mp;
    rec->mlens = b->len;
    rec->scores = rec->rtype == 'z' ? sp : NULL;
    rec->slens = rec->rtype == 'z' ? b->slen : NULL;
    return 0;
}

/* Type 4: u64 chunks, u64 members, i64 expiry: the end of the open
 * chunked key, which must agree with what its chunks held. */
static int parse_cend(struct rd *r, struct recbuf *b, stepq__bk_record *rec)
{
    unsigned char t[24];

    if (parse_ckey(r, b, rec) != 0 || need(r, t, sizeof(t), 1) != 0)
        return -1;
    if (b->okeylen == 0 || b->okeylen != rec->keylen ||
        memcmp(b->okey, rec->key, rec->keylen) != 0 || b->otype != rec->rtype)
        return fail(r, "the end of the chunked key '%.*s' at byte %llu has no chunks before it",
                    (int)rec->keylen, rec->key, r->off - 24);
    rec->chunks = get_u64(t);
    rec->nmembers = get_u64(t + 8);
    rec->pexpireat = (long long)get_u64(t + 16);
    if (rec->chunks != b->ochunks || rec->nmembers != b->omembers)
        return fail(r,
                    "the end of the chunked key '%.*s' counts %llu chunks and %llu members "
                    "but the file holds %llu and %llu",
                    (int)rec->keylen, rec->key, rec->chunks, rec->nmembers, b->ochunks,
                    b->omembers);
    if (rec->pexpireat < -1)
        return fail(r, "key '%.*s' has an impossible expiry %lld", (int)rec->keylen, rec->key,
                    rec->pexpireat);
    b->okeylen = 0;
    return 0;
}

static int parse_body(struct rd *r, stepq__bk_info *info, stepq__bk_fn fn, void *arg)
{
    struct recbuf b = {0};
    unsigned long long count = 0;
    int rc = -1;

    for (;;) {
        unsigned char type;
        stepq__bk_record rec = {0};
        if (need(r, &type, 1, 0) != 0)
            break;
        if (type == STEPQ_BK_REC_END && b.okeylen > 0) {
            fail(r, "the chunked key '%.*s' has no end before the trailer", (int)b.okeylen, b.okey);
            break;
        }
        if (type == STEPQ_BK_REC_END) {
            rc = parse_trailer(r, info, count);
            break;
        }
        int chunked = r->version >= 2 && (type == STEPQ_BK_REC_CHUNK || type == STEPQ_BK_REC_CEND);
        if (type != STEPQ_BK_REC_KEY && !chunked) {
            fail(r, "unknown record type %u at byte %llu", type, r->off - 1);
            break;
        }
        if (type == STEPQ_BK_REC_KEY && b.okeylen > 0) {
            fail(r, "a key at byte %llu comes inside the chunked key '%.*s' before its end",
                 r->off - 1, (int)b.okeylen, b.okey);
            break;
        }
        XXH64_update(r->xx, &type, 1);
        rec.kind = type;
        int prc = type == STEPQ_BK_REC_KEY     ? parse_record(r, &b, &rec)
                  : type == STEPQ_BK_REC_CHUNK ? parse_chunk(r, &b, &rec)
                                               : parse_cend(r, &b, &rec);
        if (prc != 0)
            break;
        count++;
        int stop = fn != NULL ? fn(&rec, arg) : 0;
        if (stop != 0) {
            rc = stop;
            break;
        }
    }
    recbuf_free(&b);
    return rc;
}

int stepq__bk_parse(stepq__bk_src *src, stepq__bk_info *info, stepq__bk_fn fn, void *arg, char *err,
                    size_t errlen)
{
    struct rd r = {.src = src, .err = err, .errlen = errlen};
    int rc = -1;

    memset(info, 0, sizeof(*info));
    err[0] = '\0';
    r.dctx = ZSTD_createDCtx();
    r.xx = XXH64_createState();
    r.incap = ZSTD_DStreamInSize();
    r.outcap = ZSTD_DStreamOutSize();
    r.inbuf = stepq__malloc(r.incap);
    r.outbuf = stepq__malloc(r.outcap);
    if (r.dctx == NULL || r.xx == NULL || r.inbuf == NULL || r.outbuf == NULL) {
        fail(&r, "out of memory");
        goto out;
    }
    XXH64_reset(r.xx, 0);
    src_fill(&r);
    if (r.src_eof) {
        fail(&r, "the file is empty");
        goto out;
    }
    if (parse_header(&r, info) == 0)
        rc = parse_body(&r, info, fn, arg);
out:
    if (rc == -1)
        stepq__bk_info_release(info);
    ZSTD_freeDCtx(r.dctx);
    if (r.xx != NULL)
        XXH64_freeState(r.xx);
    stepq__free(r.inbuf);
    stepq__free(r.outbuf);
    return rc;
}
