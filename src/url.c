/*
 * url.c - parsing of Redis URLs:
 *
 *   redis://[user[:password]@]host[:port][/db]
 *   unix:///path/to/sock[?db=N]
 *
 * User and password may be percent-encoded. Error messages never repeat the
 * URL, because it may hold a password.
 */
#include <stdio.h>
#include <string.h>

#include "stepq_private.h"

#define URL_FORMS "redis://[user[:password]@]host[:port][/db] or unix:///path/to/sock[?db=N]"
#define URL_MAX   4096

void stepq__url_release(stepq__url *u)
{
    if (u == NULL)
        return;
    stepq__free(u->host);
    stepq__free(u->user);
    stepq__free(u->pass);
    memset(u, 0, sizeof(*u));
}

/* Percent-decodes s[0..n) into a new string; NULL on a bad escape or a NUL. */
static char *decode(const char *s, size_t n, int *bad)
{
    char *out = stepq__malloc(n + 1);
    size_t j = 0;

    *bad = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[j++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? stepq__hexval(s[i + 1]) : -1;
        int lo = i + 2 < n ? stepq__hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            *bad = 1;
            stepq__free(out);
            return NULL;
        }
        out[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[j] = '\0';
    return out;
}

static int fail(char *err, size_t errlen, const char *what)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "malformed Redis URL: %s; expected " URL_FORMS, what);
    return STEPQ_ERR;
}

static int parse_db(const char *s, int *ret)
{
    long v;

    if (stepq__parse_long(s, 0, 1000000, &v) != STEPQ_OK)
        return STEPQ_ERR;
    *ret = (int)v;
    return STEPQ_OK;
}

static int parse_unix(stepq__url *u, const char *rest, char *err, size_t errlen)
{
    const char *q = strchr(rest, '?');
    size_t plen = q ? (size_t)(q - rest) : strlen(rest);

    if (plen == 0 || rest[0] != '/')
        return fail(err, errlen, "the socket path must be absolute (unix:///path)");
    if (q != NULL) {
        if (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &u->db) != STEPQ_OK)
            return fail(err, errlen, "the only query is ?db=N with N a number from 0");
    }
    u->is_unix = 1;
    u->host = stepq__strndup(rest, plen);
    return u->host ? STEPQ_OK : fail(err, errlen, "out of memory");
}

static int parse_userinfo(stepq__url *u, const char *s, size_t n, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    int bad = 0;

    if (colon == NULL) {
        /* redis://secret@host is the old form with a password only. */
        u->pass = decode(s, n, &bad);
    } else {
        if (colon > s)
            u->user = decode(s, (size_t)(colon - s), &bad);
        if (!bad)
            u->pass = decode(colon + 1, n - (size_t)(colon - s) - 1, &bad);
    }
    if (bad)
        return fail(err, errlen, "a bad percent escape in the user or password");
    if ((colon == NULL || colon > s) && u->user == NULL && u->pass == NULL)
        return fail(err, errlen, "out of memory");
    return STEPQ_OK;
}

static int parse_hostport(stepq__url *u, const char *s, size_t n, char *err, size_t errlen)
{
    const char *host = s, *port = NULL;
    size_t hlen = n;

    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return fail(err, errlen, "an IPv6 host must be closed with ']'");
        host = s + 1;
        hlen = (size_t)(close - s - 1);
        if (close + 1 < s + n) {
            if (close[1] != ':')
                return fail(err, errlen, "only ':port' may follow an IPv6 host");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon != NULL) {
            hlen = (size_t)(colon - s);
            port = colon + 1;
        }
    }
    if (hlen == 0)
        return fail(err, errlen, "the host is empty");
    for (size_t i = 0; i < hlen; i++) {
        if (host[i] == '@' || host[i] == '/' || host[i] == '?' || host[i] == ' ')
            return fail(err, errlen, "the host has a character that cannot be in a host");
    }
    u->port = 6379;
    if (port != NULL) {
        char buf[8];
        size_t plen = (size_t)(s + n - port);
        long v;
        if (plen == 0 || plen >= sizeof(buf))
            return fail(err, errlen, "the port must be a number from 1 to 65535");
        memcpy(buf, port, plen);
        buf[plen] = '\0';
        if (stepq__parse_long(buf, 1, 65535, &v) != STEPQ_OK)
            return fail(err, errlen, "the port must be a number from 1 to 65535");
        u->port = (int)v;
    }
    u->host = stepq__strndup(host, hlen);
    return u->host ? STEPQ_OK : fail(err, errlen, "out of memory");
}

static int parse_tcp(stepq__url *u, const char *rest, char *err, size_t errlen)
{
    const char *slash = strchr(rest, '/');
    const char *end = slash ? slash : rest + strlen(rest);
    const char *at = NULL;

    /* The last '@' before the path separates the user info: a password may
     * hold '@' only percent-encoded, but be lenient about it. */
    for (const char *p = rest; p < end; p++) {
        if (*p == '@')
            at = p;
    }
    if (strchr(rest, '?') != NULL)
        return fail(err, errlen, "redis:// URLs take no query; put the database after '/'");
    if (at != NULL && parse_userinfo(u, rest, (size_t)(at - rest), err, errlen) != STEPQ_OK)
        return STEPQ_ERR;
    const char *hp = at ? at + 1 : rest;
    if (parse_hostport(u, hp, (size_t)(end - hp), err, errlen) != STEPQ_OK)
        return STEPQ_ERR;
    if (slash != NULL && slash[1] != '\0' && parse_db(slash + 1, &u->db) != STEPQ_OK)
        return fail(err, errlen, "the database after '/' must be a number from 0");
    return STEPQ_OK;
}

int stepq__url_parse(stepq__url *u, const char *url, char *err, size_t errlen)
{
    int rc;

    memset(u, 0, sizeof(*u));
    if (url == NULL || *url == '\0')
        return fail(err, errlen, "the URL is empty");
    if (strlen(url) > URL_MAX)
        return fail(err, errlen, "the URL is longer than 4096 bytes");
    for (const char *p = url; *p; p++) {
        if ((unsigned char)*p <= ' ')
            return fail(err, errlen, "the URL holds a space or a control character");
    }
    if (strncmp(url, "redis://", 8) == 0) {
        rc = parse_tcp(u, url + 8, err, errlen);
    } else if (strncmp(url, "unix://", 7) == 0) {
        rc = parse_unix(u, url + 7, err, errlen);
    } else if (strncmp(url, "rediss://", 9) == 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen,
                     "TLS (rediss://) is not supported: this build's hiredis has no SSL; "
                     "use redis:// through a TLS tunnel");
        rc = STEPQ_ERR;
    } else {
        rc = fail(err, errlen, "unknown scheme");
    }
    if (rc != STEPQ_OK)
        stepq__url_release(u);
    return rc;
}

int stepq_url_check(const char *url, char *errbuf, size_t errlen)
{
    stepq__url u;

    if (stepq__url_parse(&u, url, errbuf, errlen) != STEPQ_OK)
        return STEPQ_ERR;
    stepq__url_release(&u);
    return STEPQ_OK;
}
