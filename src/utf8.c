/*
 * utf8.c - making bytes safe for JSON text. jansson refuses strings that
 * are not valid UTF-8 (json_stringn and json_pack return NULL), so anything
 * that quotes bytes a user or a peer sent into a JSON document goes through
 * here first.
 */
#include <string.h>

#include "stepq_private.h"

size_t stepq__utf8_seq(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n;
    unsigned long cp;

    if (len == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        n = 2, cp = p[0] & 0x1F;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        n = 3, cp = p[0] & 0x0F;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        n = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF. */
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) ||
        cp > 0x10FFFF)
        return 0;
    return n;
}

void stepq__utf8_scrub(char *s)
{
    size_t len = strlen(s);

    for (size_t i = 0; i < len;) {
        size_t n = stepq__utf8_seq(s + i, len - i);
        if (n == 0) {
            s[i++] = '?';
            continue;
        }
        i += n;
    }
}

sds stepq__utf8_repair(const char *s, size_t len)
{
    sds out = sdsMakeRoomFor(sdsempty(), len);

    for (size_t i = 0; out != NULL && i < len;) {
        size_t n = stepq__utf8_seq(s + i, len - i);
        if (n == 0) {
            out = sdscatlen(out, "\xEF\xBF\xBD", 3); /* U+FFFD */
            i++;
        } else {
            out = sdscatlen(out, s + i, n);
            i += n;
        }
    }
    return out;
}
