/*
 * util.c - ids, tokens, clocks and checked number parsing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>

#include "stepq_private.h"

static int fill_random(unsigned char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return STEPQ_ERR;
        }
        got += (size_t)r;
    }
    return STEPQ_OK;
}

long long stepq__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, a 12-bit counter, then
 * random bits with the version and variant set. The text form sorts by time,
 * which is what makes "first in, first out within a priority" fall out of the
 * pending zset's lexicographic order among equal scores. Within one
 * millisecond the counter keeps the order (RFC 9562, 6.2, method 1): a batch
 * of 50 steps is made in well under a millisecond, and random bits there
 * would hand them out in random order. The counter starts at a random value
 * below 2048 each new millisecond; when it runs out, the millisecond is
 * borrowed from the next one; a clock that steps back is not followed. Per
 * thread: ids of one submitter are in order, those of concurrent ones need
 * not be.
 */
int stepq__uuid7(char out[37])
{
    static _Thread_local unsigned long long last_ms;
    static _Thread_local unsigned counter;
    unsigned char b[16];
    unsigned long long ms = (unsigned long long)stepq__now_ms();

    if (fill_random(b + 6, 10) != STEPQ_OK)
        return STEPQ_ERR;
    if (ms > last_ms) {
        last_ms = ms;
        counter = ((unsigned)b[6] << 8 | b[7]) & 0x7ff;
    } else if (++counter > 0xfff) {
        last_ms++;
        counter = 0;
    }
    ms = last_ms;
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (counter >> 8));
    b[7] = (unsigned char)(counter & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return STEPQ_OK;
}

int stepq__random_hex(char *out, size_t nbytes)
{
    unsigned char b[32];

    if (nbytes > sizeof(b) || fill_random(b, nbytes) != STEPQ_OK)
        return STEPQ_ERR;
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return STEPQ_OK;
}

int stepq__hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int stepq__parse_long(const char *s, long min, long max, long *ret)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return STEPQ_ERR;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return STEPQ_ERR;
    *ret = v;
    return STEPQ_OK;
}

int stepq__valid_id(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.';
        if (!ok || n >= STEPQ_ID_MAX - 1)
            return 0;
    }
    return n > 0;
}
