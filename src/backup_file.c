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

int stepq__bk_writer_finish(stepq__bk_writer *w, unsigned long long *ret_count,
                            uint64_t *ret_checksum)
{
    unsigned char t[17];
    uint64_t sum = XXH64_digest(w->xx);

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

/* Reads n bytes into *buf (capacity *cap), growing it only as the bytes
 * arrive, so a forged length costs at most what the file holds. */
static int need_grow(struct rd *r, char **buf, size_t *cap, size_t n)
{
    size_t have = 0;

    while (have < n) {
        size_t want = n - have < GROW_STEP ? n - have : GROW_STEP;
        if (have + want + 1 > *cap) {
            char *nb = stepq__realloc(*buf, have + want + 1);
            if (nb == NULL)
                return fail(r, "out of memory while reading a record of %zu bytes", n);
            *buf = nb;
            *cap = have + want + 1;
        }
        if (need(r, *buf + have, want, 1) != 0)
            return -1;
        have += want;
    }
    if (*buf == NULL) { /* n == 0: the loop allocated nothing */
        *buf = stepq__malloc(1);
        if (*buf == NULL)
            return fail(r, "out of memory");
        *cap = 1;
    }
    (*buf)[n] = '\0';
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
    if (memcmp(magic, STEPQ_BK_MAGIC, 8) != 0)
        return fail(r, "unsupported backup format '%.8s'; this stepq reads %s", (char *)magic,
                    STEPQ_BK_MAGIC);
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
    if (!json_is_integer(ver) || json_integer_value(ver) != STEPQ_BK_VERSION) {
        fail(r, "unsupported backup format version %lld; this stepq reads version %d",
             (long long)json_integer_value(ver), STEPQ_BK_VERSION);
    } else if (copy_str(r, o, "redis_version", info->redis_version, sizeof(info->redis_version)) ==
                   0 &&
               copy_str(r, o, "side", info->side, sizeof(info->side)) == 0 &&
               copy_str(r, o, "phase", info->phase, sizeof(info->phase)) == 0 &&
               copy_str(r, o, "namespace", info->ns, sizeof(info->ns)) == 0 &&
               copy_str(r, o, "stepq_version", info->stepq_version, sizeof(info->stepq_version)) ==
                   0) {
        const char *rules = json_string_value(json_object_get(o, "rules"));
        info->version = STEPQ_BK_VERSION;
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
};

static int parse_record(struct rd *r, struct recbuf *b, stepq__bk_record *rec)
{
    unsigned char len[4], exp[8];

    if (need(r, len, 4, 1) != 0)
        return -1;
    rec->keylen = get_u32(len);
    if (rec->keylen == 0 || rec->keylen > STEPQ_BK_KEY_MAX)
        return fail(r, "a key length of %zu at byte %llu is out of range (1..%u)", rec->keylen,
                    r->off - 4, STEPQ_BK_KEY_MAX);
    if (need_grow(r, &b->key, &b->keycap, rec->keylen) != 0 || need(r, len, 4, 1) != 0)
        return -1;
    rec->dumplen = get_u32(len);
    if (rec->dumplen > STEPQ_BK_DUMP_MAX)
        return fail(r, "a DUMP length of %zu at byte %llu is over the cap of %u", rec->dumplen,
                    r->off - 4, STEPQ_BK_DUMP_MAX);
    if (r->src->names_only) {
        /* Checked and hashed a piece at a time, not kept. */
        unsigned char scratch[4096];
        for (size_t left = rec->dumplen; left > 0;) {
            size_t k = left < sizeof(scratch) ? left : sizeof(scratch);
            if (need(r, scratch, k, 1) != 0)
                return -1;
            left -= k;
        }
    } else if (need_grow(r, &b->dump, &b->dumpcap, rec->dumplen) != 0) {
        return -1;
    }
    if (need(r, exp, 8, 1) != 0)
        return -1;
    rec->key = b->key;
    rec->dump = r->src->names_only ? NULL : b->dump;
    rec->pexpireat = (long long)get_u64(exp);
    if (rec->pexpireat < -1)
        return fail(r, "key '%.*s' has an impossible expiry %lld", (int)rec->keylen, rec->key,
                    rec->pexpireat);
    return 0;
}

static int parse_body(struct rd *r, stepq__bk_info *info, stepq__bk_fn fn, void *arg)
{
    struct recbuf b = {0};
    unsigned long long count = 0;
    int rc = -1;

    for (;;) {
        unsigned char type;
        stepq__bk_record rec;
        if (need(r, &type, 1, 0) != 0)
            break;
        if (type == STEPQ_BK_REC_END) {
            rc = parse_trailer(r, info, count);
            break;
        }
        if (type != STEPQ_BK_REC_KEY) {
            fail(r, "unknown record type %u at byte %llu", type, r->off - 1);
            break;
        }
        XXH64_update(r->xx, &type, 1);
        if (parse_record(r, &b, &rec) != 0)
            break;
        count++;
        int stop = fn != NULL ? fn(&rec, arg) : 0;
        if (stop != 0) {
            rc = stop;
            break;
        }
    }
    stepq__free(b.key);
    stepq__free(b.dump);
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
