/*
 * member_cursor.c - a member cursor refused after a redirection that a
 * single command followed between two pages (stepq__queue_members, walk.c).
 * Run by tests/cluster/t_cluster_member_cursor.sh on the test cluster:
 *
 *   member_cursor URL NAMESPACE FROM TO OTHER
 *
 * NAMESPACE's slot is on the master at port FROM; TO and OTHER are the two
 * other masters. The backfill merges a big old set member by member (3000
 * members, SSCAN pages of about 200). Between two pages its pacing reads the
 * throttle hash, a command sent alone, which follows MOVED in cluster.c.
 * The pacing's clock (stepq__pace_clock) is this file's: it moves 1000 ms
 * at every reading, so the throttle is read between every two pages, and
 * once the merge recorded a member cursor it moves the slot to TO, with
 * nothing of the backfill on its way. The throttle's read then follows
 * MOVED to TO, and the next page would be read there with a cursor of
 * FROM's table: that page is refused, and the merge reads the set again
 * from member 0 on TO. Going on with the old cursor skips the members that
 * TO's table holds before it (the pages that fail on MOVED themselves are
 * redone anyway: only this path needs the refusal).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stepq_private.h"

#define MEMBERS 3000

static int passed, failed;
static const char *ns;
static int from, to, other, slot = -1, moved_at_page;
static redisContext *rf;
static long long fake_ms;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
            printf("ok   " __VA_ARGS__);                                                           \
        } else {                                                                                   \
            failed++;                                                                              \
            printf("FAIL " __VA_ARGS__);                                                           \
        }                                                                                          \
        printf("\n");                                                                              \
    } while (0)

static redisContext *node(int port)
{
    redisContext *c = redisConnect("127.0.0.1", port);

    if (c == NULL || c->err) {
        fprintf(stderr, "cannot connect to 127.0.0.1:%d\n", port);
        exit(1);
    }
    return c;
}

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        fprintf(stderr, "lost a connection to the cluster: %s\n", c->errstr);
        exit(1);
    }
    if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "redis: %s\n", r->str);
    return r;
}

static void node_id(redisContext *c, char id[41])
{
    redisReply *r = cmd(c, "CLUSTER MYID");
    snprintf(id, 41, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

/* The slot moved from `from` to `to` as redis-cli --cluster reshard does:
 * IMPORTING, MIGRATING, MIGRATE in batches, then SETSLOT NODE everywhere. */
static void reshard(void)
{
    redisContext *rt = node(to), *ro = node(other);
    char fid[41], tid[41];

    node_id(rf, fid);
    node_id(rt, tid);
    freeReplyObject(cmd(rt, "CLUSTER SETSLOT %d IMPORTING %s", slot, fid));
    freeReplyObject(cmd(rf, "CLUSTER SETSLOT %d MIGRATING %s", slot, tid));
    for (;;) {
        redisReply *k = cmd(rf, "CLUSTER GETKEYSINSLOT %d 100", slot);
        if (k->type != REDIS_REPLY_ARRAY || k->elements == 0) {
            freeReplyObject(k);
            break;
        }
        const char *argv[6 + 100];
        char port[8];
        snprintf(port, sizeof(port), "%d", to);
        int argc = 0;
        argv[argc++] = "MIGRATE";
        argv[argc++] = "127.0.0.1";
        argv[argc++] = port;
        argv[argc++] = "";
        argv[argc++] = "0";
        argv[argc++] = "5000";
        argv[argc++] = "KEYS";
        for (size_t i = 0; i < k->elements && argc < 6 + 100; i++)
            argv[argc++] = k->element[i]->str;
        freeReplyObject(redisCommandArgv(rf, argc, argv, NULL));
        freeReplyObject(k);
    }
    freeReplyObject(cmd(rt, "CLUSTER SETSLOT %d NODE %s", slot, tid));
    freeReplyObject(cmd(rf, "CLUSTER SETSLOT %d NODE %s", slot, tid));
    freeReplyObject(cmd(ro, "CLUSTER SETSLOT %d NODE %s", slot, tid));
    redisFree(rt);
    redisFree(ro);
}

/* The pacing's clock: 1000 ms a reading (the throttle is read between
 * every two pages), and the move once the merge is under way. */
static long long clock_that_moves_the_slot(void)
{
    static int readings;

    readings++;
    if (slot >= 0 && moved_at_page == 0) {
        redisReply *r = cmd(rf, "HGET %sstepq:backfill member_cursor", ns);
        int under_way = r->type == REDIS_REPLY_STRING && strcmp(r->str, "0") != 0;
        freeReplyObject(r);
        if (under_way) {
            /* Every command the backfill wrote has been sent (a page's
             * reply was just read); let Redis run them before the move,
             * so that none meets it: only the throttle's read will. */
            usleep(200000);
            reshard();
            moved_at_page = readings;
        }
    }
    return fake_ms += 1000;
}

static long long scard(int port, const char *key)
{
    redisContext *c = node(port);
    redisReply *r = cmd(c, "SCARD %s%s", ns, key);
    long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

    freeReplyObject(r);
    redisFree(c);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s URL NAMESPACE FROM TO OTHER\n", argv[0]);
        return 2;
    }
    ns = argv[2];
    from = atoi(argv[3]);
    to = atoi(argv[4]);
    other = atoi(argv[5]);
    rf = node(from);

    /* The old set is big (merged in chunks); the new one exists, so the
     * old one is merged into it member by member, not copied whole. */
    for (int i = 0; i < MEMBERS; i += 500) {
        const char *a[2 + 500];
        char buf[500][16];
        char key[128];
        int n = 0;
        snprintf(key, sizeof(key), "%sjobs:completed", ns);
        a[n++] = "SADD";
        a[n++] = key;
        for (int j = i; j < i + 500; j++) {
            snprintf(buf[j - i], sizeof(buf[0]), "m%d", j);
            a[n++] = buf[j - i];
        }
        freeReplyObject(redisCommandArgv(rf, n, a, NULL));
    }
    freeReplyObject(cmd(rf, "SADD %ssteps:completed m0", ns));
    freeReplyObject(cmd(rf, "HSET %sstepq:phase phase dual-write dual_write_since 1", ns));
    redisReply *k = cmd(rf, "CLUSTER KEYSLOT %sx", ns);
    slot = (int)k->integer;
    freeReplyObject(k);

    stepq_options o = {.namespace_ = ns};
    stepq *q = stepq_connect(argv[1], &o);
    if (q == NULL || stepq_err(q) != STEPQ_E_NONE) {
        fprintf(stderr, "cannot connect: %s\n", stepq_errstr(q));
        return 1;
    }
    stepq_backfill_opts bo = {.big = 10, .batch = 20};
    stepq_backfill_result res = {0};
    stepq__pace_clock = clock_that_moves_the_slot;
    int rc = stepq_backfill(q, &bo, NULL, NULL, &res);
    stepq__pace_clock = NULL;
    CHECK(rc == STEPQ_OK, "the backfill ends (%s)", rc == STEPQ_OK ? "done" : stepq_errstr(q));
    CHECK(moved_at_page > 0, "the slot moved between two pages of the member merge (reading %d)",
          moved_at_page);
    long long n = scard(to, "steps:completed");
    CHECK(n == MEMBERS, "the new set on the new owner holds every member: %lld of %d", n, MEMBERS);
    int clean = 0;
    stepq_verify_opts vo = {.big = 10, .batch = 20};
    rc = stepq_verify(q, &vo, NULL, NULL, &clean, NULL);
    CHECK(rc == STEPQ_OK && clean, "verify finds both sides equal");
    stepq_free(q);
    redisFree(rf);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
