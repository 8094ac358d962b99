/*
 * cluster.c - stepq as a Redis Cluster client (docs/cluster.md).
 *
 * A handle serves one namespace, and every key of a tagged namespace hashes
 * to one slot, so a handle needs one node: the master that owns that slot.
 * The seam is therefore narrow. The handle's one connection (q->rc) points
 * at that master instead of the URL's node (stepq__cluster_target), and the
 * commands sent one at a time go through stepq__cluster_send, which follows
 * the cluster's redirections. Pipelines (the walks' pages) write to the same
 * connection; a redirection met there drops the connection like a lost one,
 * and the walk waits and redoes its page (walk.c).
 *
 * Redirections, and why each is handled the way it is:
 *  - MOVED: the slot has a new owner (a finished reshard or a failover). The
 *    map is re-read and the command sent again to the owner.
 *  - ASK: the slot is migrating and the keys of this command are already on
 *    the target. A plain command is sent there once after ASKING. A script is
 *    not: a queue script learns step ids inside itself and would read, on the
 *    target, keys still on the source as absent. Scripts wait for the end of
 *    the migration (then MOVED leads to the new owner).
 *  - TRYAGAIN: some keys of a multi-key command moved and some not: wait.
 *  - CLUSTERDOWN, and "non local key" from a script: wait.
 * A queue script declares one more key, the guard, which is never written:
 * while the slot migrates the guard is always "missing" on the source, so
 * the server answers ASK or TRYAGAIN before the script runs. Without it a
 * script could start with all its declared keys present, write some keys,
 * then fail on a per-step key already moved: Redis does not roll back the
 * writes a failing script made.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stepq_private.h"

#define SEEDS_MAX       64
#define WAIT_DEFAULT_MS 20000
#define HOST_MAX        256

struct cl_node {
    char host[HOST_MAX];
    int port;
};

struct stepq__cluster {
    int slot;
    struct cl_node owner;
    char owner_id[41];
    struct cl_node seeds[SEEDS_MAX]; /* every node seen, the URL's first */
    size_t nseeds;
    int stale;          /* re-read the map before the next connection */
    int moved;          /* a command was answered by another node since the last look */
    long wait_ms;       /* how long a command waits out a moving slot */
    long wait_replicas; /* WAIT after each script (0: off) */
    long wait_replicas_ms;
    sds guard;
};

static long env_long(const char *name, long dflt, long min, long max)
{
    const char *v = getenv(name);
    long n;

    if (v == NULL || *v == '\0' || stepq__parse_long(v, min, max, &n) != STEPQ_OK)
        return dflt;
    return n;
}

static void add_seed(struct stepq__cluster *cl, const char *host, size_t hlen, int port)
{
    if (hlen == 0 || hlen >= HOST_MAX || port <= 0)
        return;
    for (size_t i = 0; i < cl->nseeds; i++)
        if (cl->seeds[i].port == port && strlen(cl->seeds[i].host) == hlen &&
            memcmp(cl->seeds[i].host, host, hlen) == 0)
            return;
    if (cl->nseeds == SEEDS_MAX)
        return;
    memcpy(cl->seeds[cl->nseeds].host, host, hlen);
    cl->seeds[cl->nseeds].host[hlen] = '\0';
    cl->seeds[cl->nseeds++].port = port;
}

/* Seeds beyond the URL's node: STEPQ_CLUSTER_SEEDS="host:port,host:port". */
static void add_env_seeds(struct stepq__cluster *cl)
{
    const char *v = getenv("STEPQ_CLUSTER_SEEDS");

    while (v != NULL && *v) {
        size_t n = strcspn(v, ", ");
        const char *colon = memchr(v, ':', n);
        if (colon != NULL) {
            char port[8] = "";
            long p;
            snprintf(port, sizeof(port), "%.*s", (int)(n - (size_t)(colon - v) - 1), colon + 1);
            if (stepq__parse_long(port, 1, 65535, &p) == STEPQ_OK)
                add_seed(cl, v, (size_t)(colon - v), (int)p);
        }
        v += n;
        v += strspn(v, ", ");
    }
}

void stepq__cluster_free(struct stepq__cluster *cl)
{
    if (cl == NULL)
        return;
    sdsfree(cl->guard);
    stepq__free(cl);
}

const char *stepq__cluster_guard(const stepq *q)
{
    return q->cl ? q->cl->guard : NULL;
}

long stepq__cluster_wait_ms(const stepq *q)
{
    return q->cl ? q->cl->wait_ms : 0;
}

void stepq__cluster_target(const stepq *q, const char **ret_host, int *ret_port)
{
    if (q->cl != NULL && q->cl->owner.port > 0) {
        *ret_host = q->cl->owner.host;
        *ret_port = q->cl->owner.port;
        return;
    }
    *ret_host = q->url.host;
    *ret_port = q->url.port;
}

void stepq__cluster_dropped(stepq *q)
{
    if (q->cl == NULL)
        return;
    q->cl->stale = 1;
    q->scripts_loaded = 0;
}

/* ---------------------------------------------------------------------------
 * Nodes and the slot map
 * ------------------------------------------------------------------------- */

/* A short-lived connection to one node, authenticated as the handle is:
 * for reading the map from a seed and for ASK. NULL when it fails. */
static redisContext *node_open(stepq *q, const char *host, int port)
{
    int ms = q->connect_timeout_ms < 1000 ? q->connect_timeout_ms : 1000;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);

    if (c == NULL || c->err) {
        redisFree(c);
        return NULL;
    }
    struct timeval ctv = {q->command_timeout_ms / 1000, (q->command_timeout_ms % 1000) * 1000};
    if (q->command_timeout_ms > 0)
        redisSetTimeout(c, ctv);
    if (q->url.pass != NULL) {
        const char *a3[] = {"AUTH", q->url.user, q->url.pass};
        const char *a2[] = {"AUTH", q->url.pass};
        redisReply *r = q->url.user ? stepq__ctx_command_argv(q, c, 3, a3)
                                    : stepq__ctx_command_argv(q, c, 2, a2);
        int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static int str_elem(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING;
}

/*
 * Reads CLUSTER SLOTS on c: every node it names becomes a seed, and the
 * master of the range holding our slot becomes the owner. Returns 1 when
 * the slot has an owner, 0 when not (cluster down for it), -1 on IO.
 */
static int read_slots(stepq *q, redisContext *c)
{
    struct stepq__cluster *cl = q->cl;
    redisReply *r = stepq__ctx_command(q, c, "CLUSTER SLOTS");
    int found = 0;

    if (r == NULL)
        return -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3)
            continue;
        for (size_t n = 2; n < e->elements; n++) {
            const redisReply *node = e->element[n];
            if (node->type == REDIS_REPLY_ARRAY && str_elem(node, 0) && node->elements >= 2 &&
                node->element[1]->type == REDIS_REPLY_INTEGER)
                add_seed(cl, node->element[0]->str, node->element[0]->len,
                         (int)node->element[1]->integer);
        }
        const redisReply *m = e->element[2];
        if (e->element[0]->integer > cl->slot || e->element[1]->integer < cl->slot ||
            m->type != REDIS_REPLY_ARRAY || !str_elem(m, 0) || m->element[0]->len >= HOST_MAX ||
            m->elements < 2 || m->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        if (cl->owner.port != (int)m->element[1]->integer ||
            strlen(cl->owner.host) != m->element[0]->len ||
            memcmp(cl->owner.host, m->element[0]->str, m->element[0]->len) != 0)
            cl->moved = 1; /* a failover or a finished reshard */
        memcpy(cl->owner.host, m->element[0]->str, m->element[0]->len + 1);
        cl->owner.port = (int)m->element[1]->integer;
        if (str_elem(m, 2))
            snprintf(cl->owner_id, sizeof(cl->owner_id), "%.40s", m->element[2]->str);
        found = 1;
    }
    freeReplyObject(r);
    return found;
}

int stepq__cluster_refresh(stepq *q)
{
    struct stepq__cluster *cl = q->cl;

    if (cl == NULL)
        return STEPQ_OK;
    /* The owner first: after a reshard it knows; after a failover it is
     * gone and the next seed answers. A copy, as read_slots rewrites it. */
    struct cl_node owner = cl->owner;
    long long stop_at = 0;
    for (size_t i = 0; i <= cl->nseeds; i++) {
        const struct cl_node *n = i == 0 ? &owner : &cl->seeds[i - 1];
        /* Asked to stop: a second for all the nodes, not one per node. */
        if (stop_at == 0 && stepq__stopping(q))
            stop_at = stepq__now_ms() + 1000;
        if (stop_at != 0 && stepq__now_ms() >= stop_at)
            break;
        if (n->port <= 0)
            continue;
        redisContext *c = node_open(q, n->host, n->port);
        if (c == NULL)
            continue;
        int found = read_slots(q, c);
        redisFree(c);
        if (found == 1) {
            cl->stale = 0;
            return STEPQ_OK;
        }
    }
    stepq__set_error(q, STEPQ_E_IO,
                     "no node of the cluster serves slot %d of namespace '%s' now; check that "
                     "the cluster is up (redis-cli --cluster check) and retry",
                     cl->slot, q->km.ns);
    return STEPQ_ERR;
}

int stepq__cluster_refresh_if_stale(stepq *q)
{
    return q->cl != NULL && q->cl->stale ? stepq__cluster_refresh(q) : STEPQ_OK;
}

/* Is "cluster_enabled:1" in INFO cluster on q->rc? -1 on IO. */
static int cluster_enabled(stepq *q)
{
    redisReply *r = stepq__ctx_command(q, q->rc, "INFO cluster");
    int on;

    if (r == NULL)
        return -1;
    on = r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_enabled:1") != NULL;
    freeReplyObject(r);
    return on;
}

int stepq__cluster_detect(stepq *q)
{
    int on;

    if (q->cluster_known)
        return STEPQ_OK;
    on = cluster_enabled(q);
    if (on < 0) {
        stepq__set_error(q, STEPQ_E_IO, "connection lost while reading INFO cluster");
        return STEPQ_ERR;
    }
    if (!on) {
        q->cluster_known = 1;
        return STEPQ_OK;
    }
    int slot = stepq__ns_slot(q->km.ns);
    if (slot < 0) {
        /* Suggest the namespace itself as the tag: 'emails:' -> '{emails}:'. */
        char tag[48] = "";
        size_t n = 0;
        for (const char *p = q->km.ns; *p && n + 1 < sizeof(tag); p++)
            if (*p != '{' && *p != '}')
                tag[n++] = *p;
        while (n > 0 && tag[n - 1] == ':')
            n--;
        tag[n] = '\0';
        stepq__set_error(q, STEPQ_E_INVALID,
                         "namespace '%s' has no hash tag, and this redis is a cluster node: the "
                         "keys of one queue would spread over every slot, where no script can "
                         "reach them together; give the namespace a tag, e.g. --namespace "
                         "'{%s}:' (docs/cluster.md)",
                         q->km.ns, n ? tag : "myqueue");
        return STEPQ_ERR;
    }
    if (q->url.db != 0) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "database %d in the URL, and this redis is a cluster node, which has "
                         "database 0 only; drop '/%d' from the URL and use namespaces instead",
                         q->url.db, q->url.db);
        return STEPQ_ERR;
    }
    struct stepq__cluster *cl = stepq__calloc(1, sizeof(*cl));
    if (cl == NULL || (cl->guard = sdscatfmt(sdsempty(), "%sstepq:slot-guard", q->km.ns)) == NULL) {
        stepq__cluster_free(cl);
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    cl->slot = slot;
    cl->wait_ms = env_long("STEPQ_CLUSTER_WAIT_MS", WAIT_DEFAULT_MS, 0, 3600000);
    cl->wait_replicas = env_long("STEPQ_WAIT_REPLICAS", 0, 0, 16);
    cl->wait_replicas_ms = env_long("STEPQ_WAIT_MS", 100, 0, 60000);
    if (!q->url.is_unix)
        add_seed(cl, q->url.host, strlen(q->url.host), q->url.port);
    add_env_seeds(cl);
    q->cl = cl;
    if (read_slots(q, q->rc) != 1 && stepq__cluster_refresh(q) != STEPQ_OK)
        return STEPQ_ERR;
    q->cluster_known = 1;
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * Sending with redirections
 * ------------------------------------------------------------------------- */

enum redirect { R_NONE, R_MOVED, R_ASK, R_WAIT };

/* Classifies an error reply; for MOVED and ASK writes the slot and node. */
static enum redirect classify(const redisReply *r, int *ret_slot, struct cl_node *ret_node)
{
    int moved = strncmp(r->str, "MOVED ", 6) == 0, ask = strncmp(r->str, "ASK ", 4) == 0;

    if (moved || ask) {
        const char *p = r->str + (moved ? 6 : 4);
        char *end;
        long slot = strtol(p, &end, 10);
        const char *colon = strrchr(end, ':');
        if (end == p || *end != ' ' || colon == NULL || (size_t)(colon - end - 1) >= HOST_MAX)
            return R_NONE;
        memcpy(ret_node->host, end + 1, (size_t)(colon - end - 1));
        ret_node->host[colon - end - 1] = '\0';
        ret_node->port = atoi(colon + 1); /* digits checked by Redis; 0 fails connect */
        *ret_slot = (int)slot;
        return moved ? R_MOVED : R_ASK;
    }
    if (strncmp(r->str, "TRYAGAIN", 8) == 0 || strncmp(r->str, "CLUSTERDOWN", 11) == 0 ||
        strstr(r->str, "non local key") != NULL || strstr(r->str, "cluster is down") != NULL)
        return R_WAIT;
    return R_NONE;
}

/* Sends cmd to node once, preceded by ASKING when asking: the node may not
 * be the owner (a key of another slot, or of a slot being imported). */
static redisReply *send_to(stepq *q, const struct cl_node *node, const char *cmd, size_t len,
                           int asking)
{
    redisContext *c = node_open(q, node->host, node->port);
    void *r = NULL, *a = NULL;

    if (c == NULL)
        return NULL;
    if ((asking && redisAppendCommand(c, "ASKING") != REDIS_OK) ||
        redisAppendFormattedCommand(c, cmd, len) != REDIS_OK ||
        (asking && stepq__get_reply(q, c, &a) != REDIS_OK) ||
        stepq__get_reply(q, c, &r) != REDIS_OK)
        r = NULL;
    freeReplyObject(a);
    redisFree(c);
    return r;
}

/* After a script: WAIT for replicas when STEPQ_WAIT_REPLICAS asks it, so
 * that a failover loses fewer acknowledged writes (docs/cluster.md). */
static void wait_replicas(stepq *q)
{
    redisReply *r;

    if (q->cl->wait_replicas <= 0 || q->rc == NULL)
        return;
    r = stepq__ctx_command(q, q->rc, "WAIT %ld %ld", q->cl->wait_replicas, q->cl->wait_replicas_ms);
    freeReplyObject(r);
}

/* One wait of stepq__cluster_send's for the nodes to agree (a moving slot,
 * TRYAGAIN, no quorum, or owners that disagree): 0 when the waiting is over
 * (STEPQ_CLUSTER_WAIT_MS spent since the first, or a stop requested), else
 * 1 after a nap, the delay doubling up to 500 ms. */
static int wait_turn(stepq *q, long long *deadline, long *delay)
{
    long long now = stepq__now_ms();

    if (*deadline == 0)
        *deadline = now + q->cl->wait_ms;
    if (now >= *deadline || stepq__stopping(q))
        return 0;
    (void)stepq__nap(q, *delay); /* a stop: one more try, then the line above */
    *delay = *delay * 2 > 500 ? 500 : *delay * 2;
    return 1;
}

redisReply *stepq__cluster_send(stepq *q, const char *cmd, size_t len, int is_script)
{
    struct stepq__cluster *cl = q->cl;
    long long deadline = 0;
    long delay = 10;
    int moves = 0;

    for (;;) {
        redisReply *r = NULL;
        if (redisAppendFormattedCommand(q->rc, cmd, len) != REDIS_OK ||
            stepq__get_reply(q, q->rc, (void **)&r) != REDIS_OK)
            return NULL;
        if (cl == NULL || r == NULL || r->type != REDIS_REPLY_ERROR) {
            if (cl != NULL && is_script)
                wait_replicas(q);
            return r;
        }
        int slot = -1;
        struct cl_node node;
        enum redirect how = classify(r, &slot, &node);
        if (how == R_NONE)
            return r;
        if (how != R_WAIT && slot != cl->slot) {
            /* A key outside the namespace (none of stepq's own): its node
             * answers, our connection stays with the namespace's owner. */
            freeReplyObject(r);
            return send_to(q, &node, cmd, len, how == R_ASK);
        }
        if (how == R_ASK && !is_script) {
            freeReplyObject(r);
            cl->moved = 1;
            return send_to(q, &node, cmd, len, 1);
        }
        /* Sent back and forth: the nodes disagree on the owner (a reshard by
         * hand that told the source before the target, or the moment before
         * gossip catches up). Wait for them to agree, as for TRYAGAIN. */
        if (how == R_MOVED && ++moves > 4 && !wait_turn(q, &deadline, &delay))
            return r; /* the caller maps it to a "retry later" error */
        if (how == R_MOVED) {
            freeReplyObject(r);
            cl->moved = 1;
            cl->owner = node;
            cl->owner_id[0] = '\0';
            stepq__drop(q);
            cl->stale = 0; /* MOVED named the owner */
            if (stepq__ensure(q) != STEPQ_OK)
                return NULL;
            continue;
        }
        /* Wait: a migrating slot, TRYAGAIN, a cluster without quorum. */
        if (!wait_turn(q, &deadline, &delay))
            return r; /* the caller maps it to a "retry later" error */
        freeReplyObject(r);
    }
}

int stepq__cluster_moved(stepq *q)
{
    int m = q->cl != NULL && q->cl->moved;

    if (q->cl != NULL)
        q->cl->moved = 0;
    return m;
}

/* ---------------------------------------------------------------------------
 * A stable slot for walks
 * ------------------------------------------------------------------------- */

/*
 * Reads CLUSTER NODES on the connected node: does it own our slot, and is
 * the slot migrating or importing? The "myself" line lists the node's
 * ranges ("0-5460") and its open migrations ("[5461->-id]", "[5461-<-id]").
 * Writes the node's id. Returns 1 settled and ours, 0 not (moving, or
 * another node's), -1 on IO.
 */
static int slot_settled(stepq *q, char ret_id[41])
{
    redisReply *r;
    int owns = 0, moving = 0, nlines = 0;

    if (stepq__ensure(q) != STEPQ_OK)
        return -1;
    r = stepq__ctx_command(q, q->rc, "CLUSTER NODES");
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        stepq__drop(q);
        return -1;
    }
    sds *lines = sdssplitlen(r->str, (ssize_t)r->len, "\n", 1, &nlines);
    for (int i = 0; lines != NULL && i < nlines; i++) {
        int nf = 0;
        sds *f = sdssplitlen(lines[i], (ssize_t)sdslen(lines[i]), " ", 1, &nf);
        if (f != NULL && nf >= 8 && strstr(f[2], "myself") != NULL) {
            snprintf(ret_id, 41, "%.40s", f[0]);
            for (int j = 8; j < nf; j++) {
                char *end;
                if (f[j][0] == '[') {
                    moving |= strtol(f[j] + 1, NULL, 10) == q->cl->slot;
                    continue;
                }
                long lo = strtol(f[j], &end, 10);
                long hi = *end == '-' ? strtol(end + 1, NULL, 10) : lo;
                owns |= lo <= q->cl->slot && q->cl->slot <= hi;
            }
        }
        sdsfreesplitres(f, nf);
    }
    sdsfreesplitres(lines, nlines);
    freeReplyObject(r);
    return owns && !moving;
}

int stepq__cluster_settled(stepq *q, char ret_id[41])
{
    long long deadline;
    long delay = 20;

    ret_id[0] = '\0';
    if (q->cl == NULL)
        return STEPQ_OK;
    deadline = stepq__now_ms() + q->cl->wait_ms;
    for (;;) {
        int ok = slot_settled(q, ret_id);
        if (ok == 1)
            return STEPQ_OK;
        if (ok == 0) {
            /* Moving, or owned by another node now: read the map again. */
            stepq__drop(q);
        }
        if (stepq__now_ms() >= deadline || stepq__nap(q, delay) != STEPQ_OK) {
            stepq__set_error(q, STEPQ_E_IO,
                             "slot %d of namespace '%s' is still being moved between nodes "
                             "after %ld ms; the walk resumes when run again after the reshard",
                             q->cl->slot, q->km.ns, q->cl->wait_ms);
            return STEPQ_ERR;
        }
        delay = delay * 2 > 500 ? 500 : delay * 2;
    }
}
