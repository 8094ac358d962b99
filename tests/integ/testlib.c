/* testlib.c - see testlib.h. */
#include <signal.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "testlib.h"

stepq *Q;
redisContext *R;

const char *t_url(void)
{
    const char *u = getenv("STEPQ_TEST_REDIS");

    if (u == NULL || *u == '\0') {
        fprintf(stderr, "STEPQ_TEST_REDIS is not set; run through ctest or tests/redis.sh\n");
        exit(1);
    }
    return u;
}

static redisContext *raw_connect(void)
{
    const char *u = t_url();
    char path[512];
    int db = 0;
    redisContext *c;

    if (sscanf(u, "unix://%511[^?]?db=%d", path, &db) < 1) {
        fprintf(stderr, "tests take a unix:// STEPQ_TEST_REDIS, got '%s'\n", u);
        exit(1);
    }
    c = redisConnectUnix(path);
    if (c == NULL || c->err) {
        fprintf(stderr, "cannot connect to %s\n", u);
        exit(1);
    }
    redisReply *r = redisCommand(c, "SELECT %d", db);
    freeReplyObject(r);
    return c;
}

void t_flush(void)
{
    freeReplyObject(t_cmd("FLUSHDB"));
}

void t_setup(void)
{
    R = raw_connect();
    if (t_int("DBSIZE") != 0) {
        const char *p = getenv("STEPQ_TEST_PRIVATE");
        if (p == NULL || strcmp(p, "1") != 0) {
            fprintf(stderr, "refusing to run: the test database is not empty\n");
            exit(1);
        }
        t_flush();
    }
    /* A killed connection must show up as an error, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    static char name[32];
    snprintf(name, sizeof(name), "test-%d", (int)getpid());
    stepq_options o = {.ignore_env_pin = 1, .client_name = name};
    Q = stepq_connect(t_url(), &o);
    if (Q == NULL || stepq_err(Q)) {
        fprintf(stderr, "stepq_connect: %s\n", stepq_errstr(Q));
        exit(1);
    }
}

void t_kill_q(void)
{
    char name[32];
    redisReply *r = t_cmd("CLIENT LIST");

    snprintf(name, sizeof(name), " name=test-%d ", (int)getpid());
    for (char *line = r->str; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        char *end = strchr(line, '\n');
        char *hit = strstr(line, name);
        if (hit != NULL && (end == NULL || hit < end)) {
            long long id = strtoll(line + 3, NULL, 10); /* "id=N " */
            freeReplyObject(t_cmd("CLIENT KILL ID %lld", id));
        }
    }
    freeReplyObject(r);
}

void t_teardown(void)
{
    stepq_free(Q);
    redisFree(R);
}

static redisReply *vcmd(const char *fmt, va_list ap)
{
    redisReply *r = redisvCommand(R, fmt, ap);

    if (r == NULL) {
        fprintf(stderr, "lost the test connection: %s\n", R->errstr);
        exit(1);
    }
    return r;
}

redisReply *t_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    return r;
}

long long t_int(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    freeReplyObject(r);
    return v;
}

int t_exists(const char *fmt, ...)
{
    char key[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof(key), fmt, ap);
    va_end(ap);
    return (int)t_int("EXISTS %s", key);
}

const char *t_str(const char *fmt, ...)
{
    static char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    buf[0] = '\0';
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        snprintf(buf, sizeof(buf), "%.*s", (int)r->len, r->str);
    freeReplyObject(r);
    return buf;
}

void t_phase(const char *phase)
{
    freeReplyObject(t_cmd("HSET stepq:phase phase %s", phase));
}

const char *t_field(const char *json, const char *name)
{
    static char buf[4096];
    json_t *o = json_loads(json ? json : "", JSON_DECODE_ANY, NULL);
    json_t *v = json_object_get(o, name);

    buf[0] = '\0';
    if (json_is_string(v)) {
        snprintf(buf, sizeof(buf), "%s", json_string_value(v));
    } else if (v != NULL) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(buf, sizeof(buf), "%s", s ? s : "");
        free(s);
    }
    json_decref(o);
    return buf;
}

struct t_events {
    redisContext *c;
    int marker;
    char ids[8][80];
    int nids;
};

void t_events_watch(t_events *e, const char *id)
{
    if (e->nids < 8)
        snprintf(e->ids[e->nids++], sizeof(e->ids[0]), "\"%s\"", id);
}

static int watched(const t_events *e, const char *msg)
{
    for (int i = 0; i < e->nids; i++) {
        if (strstr(msg, e->ids[i]) != NULL)
            return 1;
    }
    return 0;
}

t_events *t_events_start(void)
{
    t_events *e = calloc(1, sizeof(*e));

    e->c = raw_connect();
    redisReply *r = redisCommand(e->c, "SUBSCRIBE job_events step_events t_marker");
    freeReplyObject(r);
    for (int i = 0; i < 2; i++) { /* the other two subscribe confirmations */
        void *v;
        redisGetReply(e->c, &v);
        freeReplyObject(v);
    }
    return e;
}

/* Publishes a marker and reads until it comes back: everything published
 * before it has been delivered by then. */
void t_events_take(t_events *e, int *old_n, int *new_n)
{
    char mark[32];

    *old_n = *new_n = 0;
    snprintf(mark, sizeof(mark), "m%d", ++e->marker);
    freeReplyObject(t_cmd("PUBLISH t_marker %s", mark));
    for (;;) {
        void *v;
        if (redisGetReply(e->c, &v) != REDIS_OK) {
            fprintf(stderr, "lost the event connection\n");
            exit(1);
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
            const char *ch = r->element[1]->str;
            if (strcmp(ch, "t_marker") == 0 && strcmp(r->element[2]->str, mark) == 0) {
                freeReplyObject(r);
                return;
            }
            /* Every lifecycle event is one valid JSON object. Channels are
             * shared by every database, so this sees other tests' events
             * too, and a legacy id may hold a NUL (\u0000, valid JSON). */
            json_t *ev = json_loads(r->element[2]->str, JSON_ALLOW_NUL, NULL);
            if ((strcmp(ch, "job_events") == 0 || strcmp(ch, "step_events") == 0) &&
                !json_is_object(ev)) {
                fprintf(stderr, "invalid event JSON on %s: %s\n", ch, r->element[2]->str);
                exit(1);
            }
            json_decref(ev);
            if (!watched(e, r->element[2]->str))
                ;
            else if (strcmp(ch, "job_events") == 0)
                (*old_n)++;
            else if (strcmp(ch, "step_events") == 0)
                (*new_n)++;
        }
        freeReplyObject(r);
    }
}

void t_events_stop(t_events *e)
{
    redisFree(e->c);
    free(e);
}
