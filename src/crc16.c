/*
 * crc16.c - the hash slot of a key, as Redis Cluster computes it: CRC16
 * (the XMODEM variant: polynomial 0x1021, initial value 0, no reflection)
 * of the key's hash tag, modulo 16384.
 *
 * Why bit by bit and not Redis's 256-entry table: a handle computes one
 * slot, once, when it connects; eight shifts per byte of a namespace's tag
 * cost nothing there, and a loop cannot hold a mistyped table entry.
 */
#include <string.h>

#include "stepq_private.h"

unsigned stepq__crc16(const char *buf, size_t len)
{
    unsigned crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)buf[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

/*
 * The hash tag rule (cluster spec): when the key holds a '{' and, after
 * it, a '}' with at least one byte in between, only the bytes between the
 * first '{' and the first '}' after it are hashed. Writes where the tag
 * starts and its length (the whole key when there is no tag).
 */
static int key_tag(const char *key, size_t len, size_t *ret_off, size_t *ret_len)
{
    const char *open = memchr(key, '{', len);

    if (open != NULL) {
        size_t s = (size_t)(open - key) + 1;
        const char *close = memchr(key + s, '}', len - s);
        if (close != NULL && close > key + s) {
            *ret_off = s;
            *ret_len = (size_t)(close - (key + s));
            return 1;
        }
    }
    *ret_off = 0;
    *ret_len = len;
    return 0;
}

int stepq__key_slot(const char *key, size_t len)
{
    size_t off, n;

    key_tag(key, len, &off, &n);
    return (int)(stepq__crc16(key + off, n) & (STEPQ_CLUSTER_SLOTS - 1));
}

/*
 * A namespace is sharded as one unit only when its own bytes hold the whole
 * tag: a '{' with its '}' inside the prefix. "{a" would take its closing
 * brace from whatever follows (a step id), and "{}" hashes the whole key,
 * so each step of such a namespace would land in a slot of its own.
 */
int stepq__ns_slot(const char *ns)
{
    size_t off, n, len = strlen(ns);

    if (!key_tag(ns, len, &off, &n))
        return -1;
    return (int)(stepq__crc16(ns + off, n) & (STEPQ_CLUSTER_SLOTS - 1));
}
