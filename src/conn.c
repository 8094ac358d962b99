/*
 * conn.c - the handle: connect, authenticate, select, reconnect with
 * backoff, and run the embedded scripts with EVALSHA.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "stepq_private.h"

void stepq__set_error(stepq *q, int code, const char *fmt, ...)
{
    va_list ap;

    q->err = code;
    va_start(ap, fmt);
    vsnprintf(q->errstr, sizeof(q->errstr), fmt, ap);
    va_end(ap);
}

void stepq__clear_error(stepq *q)
{
    q->err = STEPQ_E_NONE;
    q->errstr[0] = '\0';
}

int stepq_err(const stepq *q)
{
    return q ? q->err : STEPQ_E_OOM;
}

const char *stepq_errstr(const stepq *q)
{
    return q ? q->errstr : "out of memory";
}

void stepq__drop(stepq *q)
{
    if (q->rc != NULL) {
        redisFree(q->rc);
        q->rc = NULL;
    }
    stepq__cluster_dropped(q);
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* ---------------------------------------------------------------------------
 * Waits a stop request cuts short (stepq_set_stop_flag)
 *
 * A process that was asked to stop (a worker's SIGTERM) must not wait for a
 * Redis that cannot answer: hiredis's blocking read retries EINTR and waits
 * out its whole timeout, and the reconnection loop would then try again for
 * seconds (on a cluster for STEPQ_CLUSTER_WAIT_MS). So every reply is waited
 * for here, in poll() slices that look at the flag; once it is set, a reply
 * gets at most STOP_WAIT_MS more, a connection attempt as long, and nothing
 * is tried twice. A Redis that answers is not cut short: what a stopping
 * worker still has to say (its reports, its deregistration) goes through.
 * ------------------------------------------------------------------------- */

#define STOP_WAIT_MS  1000
#define WAIT_SLICE_MS 50

void stepq_set_stop_flag(stepq *q, const volatile sig_atomic_t *flag)
{
    if (q != NULL)
        q->stop = flag;
}

int stepq__stopping(const stepq *q)
{
    return q->stop != NULL && *q->stop != 0;
}

int stepq__nap(const stepq *q, long ms)
{
    long long end = stepq__now_ms() + ms;

    for (;;) {
        if (stepq__stopping(q))
            return STEPQ_ERR;
        long long left = end - stepq__now_ms();
        if (left <= 0)
            return STEPQ_OK;
        stepq__sleep_ms(left < WAIT_SLICE_MS ? (long)left : WAIT_SLICE_MS);
    }
}

/* Waits until c's socket has bytes to read, within the command timeout and,
 * once a stop is requested, STOP_WAIT_MS. Sets c's error when it gives up. */
static int wait_readable(const stepq *q, redisContext *c)
{
    long long start = stepq__now_ms(), stop_at = 0;
    long long limit = q->command_timeout_ms > 0 ? start + q->command_timeout_ms : 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    for (;;) {
        long long now = stepq__now_ms();
        if (stop_at == 0 && stepq__stopping(q))
            stop_at = q->stop_end != 0 ? q->stop_end : now + STOP_WAIT_MS;
        long long end = stop_at != 0 && (limit == 0 || stop_at < limit) ? stop_at : limit;
        if (end != 0 && now >= end) {
            c->err = REDIS_ERR_IO;
            snprintf(c->errstr, sizeof(c->errstr), "no reply within %lld ms%s", now - start,
                     stop_at != 0 ? " (stopping)" : "");
            return REDIS_ERR;
        }
        int n = poll(&p, 1, WAIT_SLICE_MS);
        if (n > 0)
            return REDIS_OK; /* readable, closed or failed: the read tells */
        if (n < 0 && errno != EINTR) {
            c->err = REDIS_ERR_IO;
            snprintf(c->errstr, sizeof(c->errstr), "poll: %s", strerror(errno));
            return REDIS_ERR;
        }
    }
}

int stepq__get_reply(const stepq *q, redisContext *c, void **ret_reply)
{
    void *r = NULL;
    int done = 0;

    /* redisGetReply's steps, with the wait before each read ours. */
    if (redisGetReplyFromReader(c, &r) != REDIS_OK)
        return REDIS_ERR;
    while (r == NULL && !done) {
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return REDIS_ERR;
    }
    while (r == NULL) {
        if (wait_readable(q, c) != REDIS_OK || redisBufferRead(c) != REDIS_OK ||
            redisGetReplyFromReader(c, &r) != REDIS_OK)
            return REDIS_ERR;
    }
    *ret_reply = r;
    return REDIS_OK;
}

redisReply *stepq__ctx_command(const stepq *q, redisContext *c, const char *fmt, ...)
{
    va_list ap;
    void *r = NULL;

    va_start(ap, fmt);
    int rc = redisvAppendCommand(c, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK || stepq__get_reply(q, c, &r) != REDIS_OK)
        return NULL;
    return r;
}

redisReply *stepq__ctx_command_argv(const stepq *q, redisContext *c, int argc, const char **argv)
{
    void *r = NULL;

    if (redisAppendCommandArgv(c, argc, argv, NULL) != REDIS_OK ||
        stepq__get_reply(q, c, &r) != REDIS_OK)
        return NULL;
    return r;
}

/* Maps a failed hiredis context to our error kinds. */
static void set_io_error(stepq *q, const char *what)
{
    int kind = STEPQ_E_IO;
    const char *detail = "unknown error";

    if (q->rc != NULL) {
        detail = q->rc->errstr;
        if (q->rc->err == REDIS_ERR_EOF)
            kind = STEPQ_E_EOF;
        else if (q->rc->err == REDIS_ERR_PROTOCOL)
            kind = STEPQ_E_PROTOCOL;
        else if (q->rc->err == REDIS_ERR_OOM)
            kind = STEPQ_E_OOM;
    }
    const char *host;
    int port;
    stepq__cluster_target(q, &host, &port);
    if (q->url.is_unix && host == q->url.host)
        stepq__set_error(q, kind, "%s 'unix://%s': %s; check that redis-server runs there", what,
                         q->url.host, detail);
    else
        stepq__set_error(q, kind, "%s '%s:%d': %s; check that redis-server runs there", what, host,
                         port, detail);
}

/* Runs one command on a fresh connection during the handshake. */
/*
 * Error replies that mean "not now" rather than "no": the server is loading
 * its data after a restart, is busy with a long script, or has lost its
 * primary. They are reported as STEPQ_E_IO with the connection dropped, so
 * every caller retries them the way it retries a lost connection; taken as
 * final, a worker would drop the report of a step that ended while Redis
 * was coming back, and leave the step held by nobody.
 */
static int not_now(stepq *q, const redisReply *r)
{
    /* The cluster's redirections land here only from pipelines (single
     * commands follow them in cluster.c): the caller redoes its batch. */
    static const char *const prefixes[] = {"LOADING ", "BUSY ", "MASTERDOWN ", "TRYAGAIN ",
                                           "MOVED ",   "ASK ",  "CLUSTERDOWN "};

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (strncmp(r->str, prefixes[i], strlen(prefixes[i])) == 0 ||
            (i == 0 && q->cl != NULL && strstr(r->str, "non local key") != NULL)) {
            stepq__set_error(q, STEPQ_E_IO, "redis cannot answer now (%.160s); retry shortly",
                             r->str);
            stepq__drop(q);
            return 1;
        }
    }
    return 0;
}

static int handshake_cmd(stepq *q, int argc, const char **argv, const char *what)
{
    redisReply *r = stepq__ctx_command_argv(q, q->rc, argc, argv);

    if (r == NULL) {
        set_io_error(q, "connection lost during handshake with");
        return STEPQ_ERR;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (!not_now(q, r))
            stepq__set_error(q, STEPQ_E_SERVER, "%s failed: %s", what, r->str);
        freeReplyObject(r);
        return STEPQ_ERR;
    }
    freeReplyObject(r);
    return STEPQ_OK;
}

/* Loads every script in one round trip: all the SCRIPT LOADs are queued,
 * then their replies read (one per script, in order); over a slow link
 * this was a round trip a script at every connect. */
static int load_scripts(stepq *q)
{
    int rc = STEPQ_OK;

    for (int i = 0; i < STEPQ_SCRIPT_COUNT; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", stepq__scripts[i].body};
        const size_t lens[] = {6, 4, stepq__scripts[i].len};
        if (redisAppendCommandArgv(q->rc, 3, argv, lens) != REDIS_OK) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory while loading scripts");
            stepq__drop(q); /* a partial pipeline must not stay queued */
            return STEPQ_ERR;
        }
    }
    for (int i = 0; i < STEPQ_SCRIPT_COUNT; i++) {
        redisReply *r = NULL;
        if (stepq__get_reply(q, q->rc, (void **)&r) != REDIS_OK || r == NULL) {
            set_io_error(q, "connection lost while loading scripts into");
            return STEPQ_ERR;
        }
        if (rc != STEPQ_OK) {
            freeReplyObject(r); /* the error is set: read the rest, to stay in step */
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR && not_now(q, r)) {
            freeReplyObject(r); /* dropped: nothing more to read */
            return STEPQ_ERR;   /* loading after a restart: the caller retries */
        }
        if (r->type != REDIS_REPLY_STRING || r->len != 40) {
            stepq__set_error(q, STEPQ_E_SERVER, "cannot load script '%s': %s",
                             stepq__scripts[i].name,
                             r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            rc = STEPQ_ERR;
        } else {
            memcpy(q->shas[i], r->str, 41);
        }
        freeReplyObject(r);
    }
    q->scripts_loaded = rc == STEPQ_OK;
    return rc;
}

static int connect_steps(stepq *q);

/* One connection attempt; once a stop is requested, all of it (connect and
 * handshake) within STOP_WAIT_MS. */
static int connect_once(stepq *q)
{
    q->stop_end = stepq__stopping(q) ? stepq__now_ms() + STOP_WAIT_MS : 0;
    int rc = connect_steps(q);
    q->stop_end = 0;
    return rc;
}

static int connect_steps(stepq *q)
{
    /* Once a stop is requested, one short attempt (see STOP_WAIT_MS). */
    int cms = q->connect_timeout_ms;
    struct timeval ctv = ms_tv(stepq__stopping(q) && cms > STOP_WAIT_MS ? STOP_WAIT_MS : cms);
    const char *host;
    int port;

    /* The URL's node, or on a cluster the owner of the namespace's slot. */
    stepq__cluster_target(q, &host, &port);
    q->rc = q->url.is_unix && host == q->url.host ? redisConnectUnixWithTimeout(host, ctv)
                                                  : redisConnectWithTimeout(host, port, ctv);
    if (q->rc == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while connecting");
        return STEPQ_ERR;
    }
    if (q->rc->err) {
        set_io_error(q, "cannot connect to");
        stepq__drop(q);
        return STEPQ_ERR;
    }
    if (q->command_timeout_ms > 0)
        redisSetTimeout(q->rc, ms_tv(q->command_timeout_ms));
    if (!q->url.is_unix)
        redisEnableKeepAlive(q->rc);

    int rc = STEPQ_OK;
    if (q->url.pass != NULL) {
        const char *a3[] = {"AUTH", q->url.user, q->url.pass};
        const char *a2[] = {"AUTH", q->url.pass};
        rc = q->url.user ? handshake_cmd(q, 3, a3, "AUTH (check the user and password)")
                         : handshake_cmd(q, 2, a2, "AUTH (check the password)");
    }
    if (rc == STEPQ_OK && !q->cluster_known) {
        rc = stepq__cluster_detect(q);
        const char *now_host;
        int now_port;
        stepq__cluster_target(q, &now_host, &now_port);
        if (rc == STEPQ_OK && (now_host != host || now_port != port)) {
            /* The URL named another node than the slot's owner. */
            stepq__drop(q);
            return connect_steps(q);
        }
    }
    char db[16];
    snprintf(db, sizeof(db), "%d", q->url.db);
    const char *sel[] = {"SELECT", db};
    if (rc == STEPQ_OK && q->url.db != 0)
        rc = handshake_cmd(q, 2, sel, "SELECT (check the database number)");
    const char *name[] = {"CLIENT", "SETNAME", q->client_name};
    if (rc == STEPQ_OK)
        rc = handshake_cmd(q, 3, name, "CLIENT SETNAME");
    if (rc == STEPQ_OK && !q->scripts_loaded)
        rc = load_scripts(q);
    if (rc != STEPQ_OK)
        stepq__drop(q);
    return rc;
}

void stepq__sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * Reconnects with exponential backoff (50 ms doubling to 2 s). Errors that
 * retrying cannot cure (a refused AUTH or SELECT) end the loop at once. On
 * a cluster the slot map is read again first, and the loop lasts as long as
 * a failover may (STEPQ_CLUSTER_WAIT_MS) rather than a number of tries. A
 * stop request (stepq_set_stop_flag) ends it after the attempt in course.
 */
int stepq__ensure(stepq *q)
{
    long delay = 50;
    long long deadline = 0;

    if (q->rc != NULL)
        return STEPQ_OK;
    if (q->k_verify == NULL) {
        /* stepq_connect() failed before it could build the key names. */
        stepq__set_error(q, STEPQ_E_INVALID,
                         "this handle failed to set up; read stepq_errstr() right after "
                         "stepq_connect() and create a new handle");
        return STEPQ_ERR;
    }
    for (int attempt = 0;; attempt++) {
        if (stepq__cluster_refresh_if_stale(q) == STEPQ_OK && connect_once(q) == STEPQ_OK) {
            /* The failed tries before this one are not the caller's error
             * (stepq_connect() reports whatever is left set). */
            stepq__clear_error(q);
            return STEPQ_OK;
        }
        if (q->err == STEPQ_E_SERVER || q->err == STEPQ_E_OOM || q->err == STEPQ_E_INVALID)
            return STEPQ_ERR;
        if (q->cl != NULL && deadline == 0)
            deadline = stepq__now_ms() + stepq__cluster_wait_ms(q);
        if (q->cl != NULL ? stepq__now_ms() >= deadline : attempt + 1 >= q->reconnect_tries)
            return STEPQ_ERR;
        /* Asked to stop: no second try, and no wait for one. */
        if (stepq__nap(q, delay) != STEPQ_OK)
            return STEPQ_ERR;
        delay = delay * 2 > 2000 ? 2000 : delay * 2;
    }
}

/* Parses "STEPQ_<CODE> text" script errors into our error kinds. */
void stepq__set_script_error(stepq *q, const char *str)
{
    static const struct {
        const char *prefix;
        int code;
    } map[] = {
        {"STEPQ_NOTFOUND ", STEPQ_E_NOTFOUND},
        {"STEPQ_CONFLICT ", STEPQ_E_CONFLICT},
        {"STEPQ_INVALID ", STEPQ_E_INVALID},
    };
    /* Redis prefixes script errors with "ERR " or wraps them; find ours. */
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const char *p = strstr(str, map[i].prefix);
        if (p != NULL) {
            const char *text = p + strlen(map[i].prefix);
            size_t n = strcspn(text, "\r\n");
            /* Drop the " script: <sha>, on @user_script..." tail Redis adds. */
            const char *tail = strstr(text, " script: ");
            if (tail != NULL && (size_t)(tail - text) < n)
                n = (size_t)(tail - text);
            stepq__set_error(q, map[i].code, "%.*s", (int)n, text);
            return;
        }
    }
    stepq__set_error(q, STEPQ_E_SERVER, "redis: %s", str);
}

static redisReply *finish_reply(stepq *q, redisReply *r)
{
    if (r == NULL) {
        set_io_error(q, "lost the connection to");
        stepq__drop(q);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR && not_now(q, r)) {
        freeReplyObject(r);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        stepq__set_script_error(q, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Sends a formatted command (freed here) through the cluster-aware path. */
static redisReply *send_formatted(stepq *q, char *cmd, int len, int is_script)
{
    redisReply *r;

    if (len < 0) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while formatting a command");
        return NULL;
    }
    r = stepq__cluster_send(q, cmd, (size_t)len, is_script);
    redisFreeCommand(cmd);
    return r;
}

redisReply *stepq__command(stepq *q, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;

    stepq__clear_error(q);
    if (stepq__ensure(q) != STEPQ_OK)
        return NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    return finish_reply(q, send_formatted(q, cmd, len, 0));
}

redisReply *stepq__commandf(stepq *q, const char *fmt, ...)
{
    va_list ap;
    char *cmd = NULL;
    int len;

    stepq__clear_error(q);
    if (stepq__ensure(q) != STEPQ_OK)
        return NULL;
    va_start(ap, fmt);
    len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    return finish_reply(q, send_formatted(q, cmd, len, 0));
}

int stepq__info_field(stepq *q, const char *field, char *buf, size_t len)
{
    redisReply *r = stepq__commandf(q, "INFO server");
    size_t flen = strlen(field);

    if (r == NULL)
        return STEPQ_ERR;
    buf[0] = '\0';
    for (const char *p = r->str; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, field, flen) == 0 && p[flen] == ':') {
            snprintf(buf, len, "%.*s", (int)strcspn(p + flen + 1, "\r\n"), p + flen + 1);
            break;
        }
    }
    freeReplyObject(r);
    return STEPQ_OK;
}

#define EVAL_ARGS_MAX 2100 /* a backfill batch of 1000 pairs and its arguments */

/* Builds EVALSHA sha nkeys keys... args... into argv/lens. */
static int build_eval(stepq *q, enum stepq__script_id s, int nkeys, const char **keys,
                      const size_t *keylens, int nargs, const char **args, const size_t *arglens,
                      const char **argv, size_t *lens, char *nk)
{
    int argc = 0;

    if (3 + nkeys + nargs > EVAL_ARGS_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID, "too many script arguments");
        return -1;
    }
    argv[argc] = "EVALSHA";
    lens[argc++] = 7;
    argv[argc] = q->shas[s];
    lens[argc++] = 40;
    snprintf(nk, 16, "%d", nkeys);
    argv[argc] = nk;
    lens[argc++] = strlen(nk);
    for (int i = 0; i < nkeys; i++) {
        argv[argc] = keys[i];
        lens[argc++] = keylens ? keylens[i] : strlen(keys[i]);
    }
    for (int i = 0; i < nargs; i++) {
        argv[argc] = args[i];
        lens[argc++] = arglens ? arglens[i] : strlen(args[i]);
    }
    return argc;
}

redisReply *stepq__eval(stepq *q, enum stepq__script_id s, int nkeys, const char **keys, int nargs,
                        const char **args, const size_t *arglens)
{
    return stepq__eval_keys(q, s, nkeys, keys, NULL, nargs, args, arglens);
}

redisReply *stepq__eval_keys(stepq *q, enum stepq__script_id s, int nkeys, const char **keys,
                             const size_t *keylens, int nargs, const char **args,
                             const size_t *arglens)
{
    const char *argv[EVAL_ARGS_MAX];
    size_t lens[EVAL_ARGS_MAX];
    char nk[16];

    stepq__clear_error(q);
    if (stepq__ensure(q) != STEPQ_OK)
        return NULL;
    int argc = build_eval(q, s, nkeys, keys, keylens, nargs, args, arglens, argv, lens, nk);
    if (argc < 0)
        return NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *cmd = NULL;
        int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
        redisReply *r = send_formatted(q, cmd, len, 1);
        if (r == NULL && q->err == STEPQ_E_OOM)
            return NULL;
        /* After SCRIPT FLUSH or a restart without persistence the scripts are
         * gone: load them again once and retry. */
        if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 &&
            attempt == 0) {
            freeReplyObject(r);
            if (load_scripts(q) != STEPQ_OK) {
                stepq__drop(q);
                return NULL;
            }
            continue;
        }
        return finish_reply(q, r);
    }
    return NULL;
}

int stepq__append_eval(stepq *q, enum stepq__script_id s, int nkeys, const char **keys, int nargs,
                       const char **args, const size_t *arglens)
{
    return stepq__append_eval_keys(q, s, nkeys, keys, NULL, nargs, args, arglens);
}

int stepq__append_eval_keys(stepq *q, enum stepq__script_id s, int nkeys, const char **keys,
                            const size_t *keylens, int nargs, const char **args,
                            const size_t *arglens)
{
    const char *argv[EVAL_ARGS_MAX];
    size_t lens[EVAL_ARGS_MAX];
    char nk[16];

    if (stepq__ensure(q) != STEPQ_OK)
        return STEPQ_ERR;
    int argc = build_eval(q, s, nkeys, keys, keylens, nargs, args, arglens, argv, lens, nk);
    if (argc < 0)
        return STEPQ_ERR;
    if (redisAppendCommandArgv(q->rc, argc, argv, lens) != REDIS_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while queueing a command");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

redisReply *stepq__read_raw(stepq *q)
{
    void *r = NULL;

    if (q->rc == NULL || stepq__get_reply(q, q->rc, &r) != REDIS_OK || r == NULL) {
        stepq__set_error(q, STEPQ_E_IO, "lost the connection to redis: %s",
                         q->rc ? q->rc->errstr : "not connected");
        stepq__drop(q);
        return NULL;
    }
    return r;
}

redisReply *stepq__read_exec(stepq *q, size_t queued)
{
    int rc = STEPQ_OK;

    for (size_t i = 0; i < 1 + queued; i++) {
        redisReply *r = stepq__read_raw(q);
        if (r == NULL)
            return NULL;
        /* A redirection or a busy server refuses the queued commands as it
         * refuses a script: retried as a lost connection (the pipe is
         * dropped), not taken as final. */
        if (r->type == REDIS_REPLY_ERROR && not_now(q, r)) {
            freeReplyObject(r);
            return NULL;
        }
        if (r->type == REDIS_REPLY_ERROR && rc == STEPQ_OK) {
            stepq__set_error(q, STEPQ_E_SERVER, "redis: %s", r->str);
            rc = STEPQ_ERR;
        }
        freeReplyObject(r);
    }
    redisReply *exec = stepq__read_raw(q);
    if (exec != NULL && exec->type == REDIS_REPLY_ERROR && not_now(q, exec)) {
        freeReplyObject(exec);
        return NULL;
    }
    if (exec != NULL && rc != STEPQ_OK) {
        freeReplyObject(exec);
        exec = NULL;
    }
    return exec;
}

redisReply *stepq__read_reply(stepq *q)
{
    void *r = NULL;

    if (q->rc == NULL) {
        stepq__set_error(q, STEPQ_E_IO, "not connected");
        return NULL;
    }
    if (stepq__get_reply(q, q->rc, &r) != REDIS_OK)
        r = NULL;
    return finish_reply(q, r);
}

/* The layout is lua/contract.txt's (contract_gen.h): each slot is filled
 * by its name there, so the prelude's indices and these cannot disagree. */
redisReply *stepq__eval_queue(stepq *q, enum stepq__script_id s, int nargs, const char **args,
                              const size_t *arglens)
{
    _Static_assert(STEPQ_QKEY_COUNT == 3 && STEPQ_QARG_OWN == 2 && STEPQ_QTAIL_COUNT == 1,
                   "lua/contract.txt has a slot stepq__eval_queue does not fill");
    /* On a cluster one more key, never written and not in the contract,
     * keeps the script from starting while its slot migrates
     * (src/cluster.c); the scripts read only the contract's keys. */
    const char *guard = stepq__cluster_guard(q);
    const char *keys[STEPQ_QKEY_COUNT + 1] = {
        [STEPQ_QKEY_PHASE] = q->k_phase,
        [STEPQ_QKEY_STATS] = q->k_stats,
        [STEPQ_QKEY_EVSEQ] = q->k_evseq,
        [STEPQ_QKEY_COUNT] = guard,
    };
    const char *argv[EVAL_ARGS_MAX];
    size_t lens[EVAL_ARGS_MAX];
    const int ntpl = 2 * STEPQ_ROLE_COUNT, tpl = STEPQ_QARG_OWN + nargs, tail = tpl + ntpl;

    if (tail + STEPQ_QTAIL_COUNT > EVAL_ARGS_MAX - 8) {
        stepq__set_error(q, STEPQ_E_INVALID, "too many script arguments");
        return NULL;
    }
    for (int role = 0; role < STEPQ_ROLE_COUNT; role++) {
        if (q->km.role[role] < 0) {
            stepq__set_error(q, STEPQ_E_INVALID,
                             "the key map has no rule for the queue's role #%d; the queue "
                             "needs " STEPQ_ROLE_NAMES_TEXT,
                             role);
            return NULL;
        }
    }
    argv[STEPQ_QARG_PIN] = q->pin_arg;
    lens[STEPQ_QARG_PIN] = strlen(q->pin_arg);
    argv[STEPQ_QARG_NS] = q->km.ns;
    lens[STEPQ_QARG_NS] = strlen(q->km.ns);
    for (int i = 0; i < nargs; i++) {
        argv[STEPQ_QARG_OWN + i] = args[i];
        lens[STEPQ_QARG_OWN + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    for (int i = 0; i < ntpl; i++) {
        argv[tpl + i] = q->lua_tpl[i];
        lens[tpl + i] = sdslen(q->lua_tpl[i]);
    }
    /* Event ids: a random base per call, the script numbers its events. */
    char evbase[17];
    if (stepq__random_hex(evbase, 8) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_IO, "cannot read random bytes for event ids");
        return NULL;
    }
    argv[tail + STEPQ_QTAIL_EVBASE] = evbase;
    lens[tail + STEPQ_QTAIL_EVBASE] = 16;
    return stepq__eval(q, s, STEPQ_QKEY_COUNT + (guard != NULL), keys, tail + STEPQ_QTAIL_COUNT,
                       argv, lens);
}

/* ---------------------------------------------------------------------------
 * Construction
 * ------------------------------------------------------------------------- */

static int parse_bool_env(const char *name, const char *v, int *ret, char *err, size_t errlen)
{
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off", ""};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *ret = 1;
            return STEPQ_OK;
        }
    }
    for (size_t i = 0; i < 5; i++) {
        if (strcasecmp(v, no[i]) == 0) {
            *ret = 0;
            return STEPQ_OK;
        }
    }
    snprintf(err, errlen, "%s='%s' is not a boolean; use true or false", name, v);
    return STEPQ_ERR;
}

/*
 * The seed's flags pin a process's phase (design.md): job+off = job,
 * job+on = dual-write, step+on = step-primary, step+off = step. With
 * neither set, the process follows the phase stored in Redis.
 */
static int read_pin(stepq *q)
{
    const char *dual = getenv("ENABLE_DUAL_WRITE_STEPS");
    const char *prim = getenv("PRIMARY_KEY_PATTERN");
    int on = 0, step;

    q->pin = -1;
    q->pin_arg[0] = '\0';
    if ((dual == NULL || *dual == '\0') && (prim == NULL || *prim == '\0'))
        return STEPQ_OK;
    if (dual != NULL && parse_bool_env("ENABLE_DUAL_WRITE_STEPS", dual, &on, q->errstr,
                                       sizeof(q->errstr)) != STEPQ_OK) {
        q->err = STEPQ_E_INVALID;
        return STEPQ_ERR;
    }
    if (prim == NULL || *prim == '\0' || strcmp(prim, "job") == 0) {
        step = 0;
    } else if (strcmp(prim, "step") == 0) {
        step = 1;
    } else {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "PRIMARY_KEY_PATTERN='%s' is unknown; expected job or step", prim);
        return STEPQ_ERR;
    }
    q->pin = step ? (on ? STEPQ_PHASE_STEP_PRIMARY : STEPQ_PHASE_STEP)
                  : (on ? STEPQ_PHASE_DUAL_WRITE : STEPQ_PHASE_JOB);
    snprintf(q->pin_arg, sizeof(q->pin_arg), "%s", stepq_phase_name((stepq_phase)q->pin));
    return STEPQ_OK;
}

int stepq_phase_pin(const stepq *q)
{
    return q->pin;
}

static int setup_keys(stepq *q, const stepq_options *o)
{
    char err[STEPQ_ERRSTR_MAX];

    if (o->rules_file != NULL) {
        if (stepq__keymap_load(&q->km, o->rules_file, err, sizeof(err)) != STEPQ_OK) {
            stepq__set_error(q, STEPQ_E_INVALID, "%s", err);
            return STEPQ_ERR;
        }
    } else {
        stepq__keymap_default(&q->km);
    }
    if (stepq__keymap_set_ns(&q->km, o->namespace_, err, sizeof(err)) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_INVALID, "%s", err);
        return STEPQ_ERR;
    }
    const char *ns = q->km.ns;
    if (stepq__keymap_lua(&q->km, q->lua_tpl) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    q->k_phase = sdscatfmt(sdsempty(), "%sstepq:phase", ns);
    q->k_audit = sdscatfmt(sdsempty(), "%sstepq:audit", ns);
    q->k_stats = sdscatfmt(sdsempty(), "%sstepq:stats", ns);
    q->k_evseq = sdscatfmt(sdsempty(), "%sstepq:evseq", ns);
    q->k_procs = sdscatfmt(sdsempty(), "%sstepq:procs", ns);
    q->k_backfill = sdscatfmt(sdsempty(), "%sstepq:backfill", ns);
    q->k_verify = sdscatfmt(sdsempty(), "%sstepq:verify", ns);
    if (!q->k_phase || !q->k_audit || !q->k_stats || !q->k_evseq || !q->k_procs || !q->k_backfill ||
        !q->k_verify) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

stepq *stepq_connect(const char *url, const stepq_options *opts)
{
    stepq_options none = {0};
    const stepq_options *o = opts ? opts : &none;
    stepq *q = stepq__calloc(1, sizeof(*q));

    if (q == NULL)
        return NULL;
    q->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000;
    q->command_timeout_ms = o->command_timeout_ms != 0 ? o->command_timeout_ms : 5000;
    q->reconnect_tries = o->reconnect_tries > 0 ? o->reconnect_tries : 5;
    snprintf(q->client_name, sizeof(q->client_name), "%s",
             o->client_name ? o->client_name : "stepq");
    q->pin = -1;
    long long ret_ms = o->retention_ms != 0 ? o->retention_ms : STEPQ_RETENTION_DEFAULT_MS;
    snprintf(q->retention, sizeof(q->retention), "%lld", ret_ms);
    if (ret_ms < 1000 || ret_ms > STEPQ_RETENTION_MAX_MS) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid retention %lld ms; use 1000 ms to 3650 days (0: 7 days)", ret_ms);
        return q;
    }
    if (url == NULL || *url == '\0')
        url = getenv("REDIS_URL");
    if (url == NULL || *url == '\0')
        url = "redis://127.0.0.1:6379";
    if (stepq__url_parse(&q->url, url, q->errstr, sizeof(q->errstr)) != STEPQ_OK ||
        stepq__url_password_env(&q->url, q->errstr, sizeof(q->errstr)) != STEPQ_OK) {
        q->err = STEPQ_E_INVALID;
        return q;
    }
    if (!o->ignore_env_pin && read_pin(q) != STEPQ_OK)
        return q;
    if (setup_keys(q, o) != STEPQ_OK)
        return q;
    stepq__ensure(q);
    return q;
}

void stepq_free(stepq *q)
{
    if (q == NULL)
        return;
    stepq__drop(q);
    stepq__cluster_free(q->cl);
    stepq__url_release(&q->url);
    for (int i = 0; i < 2 * STEPQ_ROLE_COUNT; i++)
        sdsfree(q->lua_tpl[i]);
    sdsfree(q->k_phase);
    sdsfree(q->k_audit);
    sdsfree(q->k_stats);
    sdsfree(q->k_evseq);
    sdsfree(q->k_procs);
    sdsfree(q->k_backfill);
    sdsfree(q->k_verify);
    stepq__free(q);
}

int stepq_ping(stepq *q)
{
    redisReply *r = stepq__commandf(q, "PING");

    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}
