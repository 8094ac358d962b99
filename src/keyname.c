/*
 * keyname.c - key names as text for people: in messages, reports and the
 * progress callback.
 *
 * Key names are bytes: a name that is not UTF-8 cannot go into JSON as it
 * is (jansson refuses it), and one with a NUL byte cannot go into a C
 * string. So a name is written as it is only when it is plain: every byte
 * printable ASCII (0x21-0x7e) other than ' " and \; the messages then put
 * it in single quotes ('job:42'). Any other name is written the way
 * redis-cli quotes binary, in double quotes: \" \\ \n \r \t \a \b, and
 * \xhh for every other byte outside 0x20-0x7e ("job:\xff\x00"). Either
 * form is ASCII, tells which it is by its first character, and can be
 * pasted into redis-cli. Verify, backfill and cleanup all name keys this
 * way.
 */
#include <stdio.h>
#include <string.h>

#include "stepq_private.h"

static int name_is_plain(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x21 || c > 0x7e || c == '\'' || c == '"' || c == '\\')
            return 0;
    }
    return len > 0;
}

sds stepq__keyname_quote(sds out, const char *n, size_t len, char quote)
{
    static const char esc[] = "\n\r\t\a\b\"\\", letter[] = "nrtab\"\\";

    if (out != NULL && name_is_plain(n, len)) {
        out = quote ? sdscatlen(out, &quote, 1) : out;
        out = out ? sdscatlen(out, n, len) : NULL;
        return out && quote ? sdscatlen(out, &quote, 1) : out;
    }
    out = out ? sdscat(out, "\"") : NULL;
    for (size_t i = 0; out != NULL && i < len; i++) {
        unsigned char c = (unsigned char)n[i];
        const char *e = c != 0 ? strchr(esc, c) : NULL;
        if (e != NULL)
            out = sdscatprintf(out, "\\%c", letter[e - esc]);
        else if (c >= 0x20 && c <= 0x7e)
            out = sdscatlen(out, &n[i], 1);
        else
            out = sdscatprintf(out, "\\x%02x", c);
    }
    return out ? sdscat(out, "\"") : NULL;
}

void stepq__keyname_buf(char *buf, size_t size, const char *n, size_t len)
{
    sds s = stepq__keyname_quote(sdsempty(), n, len, 0);

    snprintf(buf, size, "%s", s ? s : "?");
    sdsfree(s);
}
