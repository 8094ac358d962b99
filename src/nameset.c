/*
 * nameset.c - a set of 64-bit key-name hashes in bounded memory: cleanup's
 * coverage check (is this old key in the backup?) at any key count
 * (docs/backup.md, "Coverage with bounded memory").
 *
 * The hashes are added in any order; up to RUN hashes are sorted in memory
 * and, past that, written out as sorted runs to an unlinked temporary file.
 * Sealing merges the runs (a heap of one cursor per run, each reading
 * MERGE_BUF hashes at a time) into one sorted file without duplicates and
 * keeps in memory only the first hash of every BLOCK hashes. A lookup finds
 * its block in that index and reads the block (4 KiB) with one pread. So
 * memory is RUN * 8 bytes while adding, and then 8 bytes every BLOCK keys
 * (about 100 KiB for 6 million keys, 1.6 MiB for 100 million); the price is
 * 8 bytes a key of temporary disk and one pread of 4 KiB (from the page
 * cache) a lookup. A set of up to RUN hashes never touches the disk.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stepq_private.h"

#define RUN       (1u << 19) /* hashes sorted in memory at a time: 4 MiB */
#define BLOCK     512        /* hashes a lookup reads: 4 KiB */
#define MERGE_BUF 4096       /* hashes read at a time from each run */

struct stepq__nameset {
    size_t run;    /* hashes a run holds (RUN; smaller in tests) */
    uint64_t *buf; /* the run being filled; when small, the whole set */
    size_t n;
    FILE *runs; /* sorted runs, RUN hashes each but the last */
    size_t nruns;
    FILE *set; /* the sealed set, when it spilled */
    uint64_t *index;
    size_t nblocks, total;
    int sealed;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts buf[0..n) and drops duplicates; returns how many are left. */
static size_t sort_unique(uint64_t *buf, size_t n)
{
    size_t w = 0;

    qsort(buf, n, sizeof(*buf), cmp_u64);
    for (size_t i = 0; i < n; i++)
        if (w == 0 || buf[w - 1] != buf[i])
            buf[w++] = buf[i];
    return w;
}

stepq__nameset *stepq__nameset_new_run(size_t run)
{
    stepq__nameset *s = stepq__calloc(1, sizeof(*s));

    if (s != NULL && (s->buf = stepq__malloc(run * sizeof(*s->buf))) == NULL) {
        stepq__free(s);
        s = NULL;
    }
    if (s != NULL)
        s->run = run;
    return s;
}

stepq__nameset *stepq__nameset_new(void)
{
    return stepq__nameset_new_run(RUN);
}

/* Writes the full buffer out as one sorted run (padded to s->run with its last
 * hash, so that every run has the same length and a reader knows where it
 * ends: duplicates vanish in the merge). */
static int spill(stepq__nameset *s)
{
    if (s->runs == NULL && (s->runs = tmpfile()) == NULL)
        return -1;
    size_t m = sort_unique(s->buf, s->n);
    for (size_t i = m; i < s->run; i++)
        s->buf[i] = s->buf[m - 1];
    if (fwrite(s->buf, sizeof(*s->buf), s->run, s->runs) != s->run)
        return -1;
    s->nruns++;
    s->n = 0;
    return 0;
}

int stepq__nameset_add(stepq__nameset *s, uint64_t h)
{
    if (s->n == s->run && spill(s) != 0)
        return -1;
    s->buf[s->n++] = h;
    return 0;
}

/* One run's cursor in the merge. */
struct rcur {
    uint64_t *b;
    size_t at, len; /* in b */
    off_t next;     /* offset of the next hashes to read */
    off_t end;
};

static int rcur_fill(FILE *f, struct rcur *c)
{
    size_t want = (size_t)(c->end - c->next) / sizeof(uint64_t);
    if (want > MERGE_BUF)
        want = MERGE_BUF;
    c->at = 0;
    c->len = 0;
    if (want == 0)
        return 0;
    ssize_t got = pread(fileno(f), c->b, want * sizeof(uint64_t), c->next);
    if (got != (ssize_t)(want * sizeof(uint64_t)))
        return -1;
    c->len = want;
    c->next += got;
    return 0;
}

/* Appends h to the sealed set (when it differs from the last one). */
static int emit(stepq__nameset *s, uint64_t h, uint64_t *last, int *any)
{
    if (*any && h == *last)
        return 0;
    if (s->total % BLOCK == 0) {
        uint64_t *ix = stepq__realloc(s->index, (s->nblocks + 1) * sizeof(*ix));
        if (ix == NULL)
            return -1;
        s->index = ix;
        s->index[s->nblocks++] = h;
    }
    if (fwrite(&h, sizeof(h), 1, s->set) != 1)
        return -1;
    s->total++;
    *last = h;
    *any = 1;
    return 0;
}

/* Merges the runs and the buffer (the last, partial run) into s->set. */
static int merge(stepq__nameset *s)
{
    size_t k = s->nruns + (s->n > 0);
    struct rcur *c = stepq__calloc(k, sizeof(*c));
    size_t *heap = stepq__calloc(k, sizeof(*heap)), nh = 0;
    uint64_t last = 0;
    int any = 0, rc = -1;

    if (c == NULL || heap == NULL || fflush(s->runs) != 0 || (s->set = tmpfile()) == NULL)
        goto out;
    for (size_t i = 0; i < s->nruns; i++) {
        c[i].b = stepq__malloc(MERGE_BUF * sizeof(uint64_t));
        c[i].next = (off_t)(i * s->run * sizeof(uint64_t));
        c[i].end = c[i].next + (off_t)(s->run * sizeof(uint64_t));
        if (c[i].b == NULL || rcur_fill(s->runs, &c[i]) != 0)
            goto out;
    }
    if (s->n > 0) { /* the buffer is a run of its own, already in memory */
        c[k - 1].b = s->buf;
        c[k - 1].len = sort_unique(s->buf, s->n);
    }
    /* A min-heap of the runs by their current hash. */
#define TOP(i) (c[heap[i]].b[c[heap[i]].at])
    for (size_t i = 0; i < k; i++) {
        if (c[i].len == 0)
            continue;
        size_t j = nh++;
        heap[j] = i;
        while (j > 0 && TOP((j - 1) / 2) > TOP(j)) {
            size_t p = (j - 1) / 2, t = heap[p];
            heap[p] = heap[j];
            heap[j] = t;
            j = p;
        }
    }
    while (nh > 0) {
        struct rcur *r = &c[heap[0]];
        if (emit(s, r->b[r->at], &last, &any) != 0)
            goto out;
        if (++r->at == r->len &&
            (r == &c[k - 1] && s->n > 0 ? (r->len = 0, 0) : rcur_fill(s->runs, r)) != 0)
            goto out;
        if (r->at >= r->len)
            heap[0] = heap[--nh];
        for (size_t j = 0;;) { /* sift down */
            size_t l = 2 * j + 1, m = j;
            if (l < nh && TOP(l) < TOP(m))
                m = l;
            if (l + 1 < nh && TOP(l + 1) < TOP(m))
                m = l + 1;
            if (m == j)
                break;
            size_t t = heap[m];
            heap[m] = heap[j];
            heap[j] = t;
            j = m;
        }
    }
#undef TOP
    rc = fflush(s->set) == 0 ? 0 : -1;
out:
    for (size_t i = 0; c != NULL && i < s->nruns; i++)
        stepq__free(c[i].b);
    stepq__free(c);
    stepq__free(heap);
    return rc;
}

int stepq__nameset_seal(stepq__nameset *s)
{
    if (s->sealed)
        return 0;
    s->sealed = 1;
    if (s->runs == NULL) {
        s->n = sort_unique(s->buf, s->n);
        return 0;
    }
    int rc = merge(s);
    fclose(s->runs);
    s->runs = NULL;
    stepq__free(s->buf);
    s->buf = NULL;
    s->n = 0;
    return rc;
}

static int in_sorted(const uint64_t *a, size_t n, uint64_t h)
{
    return n > 0 && bsearch(&h, a, n, sizeof(*a), cmp_u64) != NULL;
}

int stepq__nameset_has(stepq__nameset *s, uint64_t h)
{
    uint64_t block[BLOCK];

    if (s->set == NULL)
        return in_sorted(s->buf, s->n, h);
    /* The last block whose first hash is <= h. */
    size_t lo = 0, hi = s->nblocks;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (s->index[mid] <= h)
            lo = mid;
        else
            hi = mid;
    }
    if (s->nblocks == 0 || s->index[lo] > h)
        return 0;
    size_t n = s->total - lo * BLOCK < BLOCK ? s->total - lo * BLOCK : BLOCK;
    ssize_t got =
        pread(fileno(s->set), block, n * sizeof(uint64_t), (off_t)(lo * BLOCK * sizeof(uint64_t)));
    if (got != (ssize_t)(n * sizeof(uint64_t)))
        return -1;
    return in_sorted(block, n, h);
}

size_t stepq__nameset_count(const stepq__nameset *s)
{
    return s->set != NULL ? s->total : s->n;
}

void stepq__nameset_free(stepq__nameset *s)
{
    if (s == NULL)
        return;
    if (s->runs != NULL)
        fclose(s->runs);
    if (s->set != NULL)
        fclose(s->set);
    stepq__free(s->buf);
    stepq__free(s->index);
    stepq__free(s);
}
