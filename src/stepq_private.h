/*
 * stepq_private.h - the structures behind the opaque handle and the
 * stepq__ functions shared between the files of libstepq. Not installed.
 */
#ifndef STEPQ_PRIVATE_H
#define STEPQ_PRIVATE_H

#include <stdarg.h>
#include <stddef.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "stepq.h"
#include "stepq_text.h"
#include "scripts_gen.h"

#if defined(__GNUC__)
#define STEPQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define STEPQ_PRINTF(a, b)
#endif

/* ---------------------------------------------------------------------------
 * Allocation: every allocation goes through here, so a test can fail the Nth.
 * ------------------------------------------------------------------------- */
void *stepq__malloc(size_t n);
void *stepq__calloc(size_t n, size_t size);
void *stepq__realloc(void *p, size_t n);
char *stepq__strdup(const char *s);
void stepq__free(void *p);
/* Test hook: the n-th allocation from now on fails (0 disables). */
void stepq__alloc_fail_at(long n);

/* ---------------------------------------------------------------------------
 * URL (url.c)
 * ------------------------------------------------------------------------- */
typedef struct stepq__url {
    int is_unix;
    char *host; /* or the socket path when is_unix */
    int port;
    char *user; /* NULL: no ACL user */
    char *pass; /* NULL: no AUTH */
    int db;
} stepq__url;

/* Parses a Redis URL into u (caller-owned; release with stepq__url_release).
 * On error, writes a message into err and returns STEPQ_ERR. */
int stepq__url_parse(stepq__url *u, const char *url, char *err, size_t errlen);
void stepq__url_release(stepq__url *u);
/* Sets u->pass from STEPQ_REDIS_PASSWORD or the first line of the file
 * STEPQ_REDIS_PASSWORD_FILE when the URL has none (password.c). */
int stepq__url_password_env(stepq__url *u, char *err, size_t errlen);

/* ---------------------------------------------------------------------------
 * Key map (keymap.c)
 * ------------------------------------------------------------------------- */
enum stepq__keytype {
    STEPQ_KT_HASH,
    STEPQ_KT_ZSET,
    STEPQ_KT_SET,
    STEPQ_KT_LIST,
    STEPQ_KT_STRING,
    STEPQ_KT_CHANNEL,
};

/* The roles the queue needs from a key map (enum stepq__role: STEPQ_ROLE_STEP
 * ... STEPQ_ROLE_COUNT), in the order the Lua scripts receive their
 * templates, come from lua/contract.txt through contract_gen.h, with the
 * rest of the queue scripts' arguments. */
#include "contract_gen.h"

enum stepq__side { STEPQ_OLD = 0, STEPQ_NEW = 1 };

#define STEPQ_RULES_MAX 64
#define STEPQ_RULE_MAX  200 /* longest name or template */

typedef struct stepq__rule {
    char name[48];
    enum stepq__keytype type;
    char tpl[2][STEPQ_RULE_MAX]; /* old and new template, without namespace */
    int per_id;                  /* templates hold {id} */
    /* Each template's bytes before and after its {id} (all of it before,
     * none after, without one): set with tpl, read by every match, which
     * the walks make several times a key. */
    size_t plen[2], slen[2];
} stepq__rule;

typedef struct stepq__keymap {
    stepq__rule rules[STEPQ_RULES_MAX];
    size_t n;
    int role[STEPQ_ROLE_COUNT]; /* rule index of each role, -1 if absent */
    char ns[64];                /* namespace prefix of every key */
} stepq__keymap;

/* The built-in job -> step map of docs/keymap.md. */
void stepq__keymap_default(stepq__keymap *km);
/* Parses a rules file's text (docs/keymap.md); on error names the line and
 * what is wrong, and leaves km unusable. */
int stepq__keymap_parse(stepq__keymap *km, const char *text, size_t len, char *err, size_t errlen);
int stepq__keymap_load(stepq__keymap *km, const char *path, char *err, size_t errlen);
/* Sets the namespace; it must be at most 63 bytes without whitespace. */
int stepq__keymap_set_ns(stepq__keymap *km, const char *ns, char *err, size_t errlen);
const char *stepq__keytype_name(enum stepq__keytype t);
/* The name of rule `r` on `side` for `id` (ignored for fixed keys), with the
 * namespace: a new sds the caller frees. */
sds stepq__keymap_key(const stepq__keymap *km, size_t r, enum stepq__side side, const char *id);
/* Classifies a full key name: returns the rule index and writes the side,
 * or -1 when no rule matches. The id is a slice of the name: *ret_id points
 * into key and *ret_idlen is its length (any bytes, NUL too; 0 for a fixed
 * name); each of ret_side, ret_id, ret_idlen may be NULL. Where templates
 * nest (job:{id}:progress inside job:{id}) the most specific one wins. */
int stepq__keymap_match(const stepq__keymap *km, const char *key, size_t len,
                        enum stepq__side *ret_side, const char **ret_id, size_t *ret_idlen);
/* A name that looks like an old per-id key (it starts with an old
 * template's part before {id} and ends with the part after) that no rule
 * maps (its id would be empty): returns that rule's index, else -1. The
 * migration reports such keys by name rather than leave them behind. */
int stepq__keymap_stray(const stepq__keymap *km, const char *key, size_t len);
/* The name of rule `r` on `side` for the id of idlen bytes (any bytes). */
sds stepq__keymap_key_n(const stepq__keymap *km, size_t r, enum stepq__side side, const char *id,
                        size_t idlen);
/* The SCAN MATCH glob of a rule's side, with the namespace: a new sds. */
sds stepq__keymap_glob(const stepq__keymap *km, size_t r, enum stepq__side side);
/* The role templates as the scripts take them (old and new of each role,
 * with the namespace where they are keys), as new sds strings in out;
 * STEPQ_ERR on OOM (the caller frees what was made). */
int stepq__keymap_lua(const stepq__keymap *km, sds out[2 * STEPQ_ROLE_COUNT]);

/* ---------------------------------------------------------------------------
 * Key names for people (keyname.c)
 * ------------------------------------------------------------------------- */
/* Appends the name n (len bytes, any bytes) to out: as it is, in `quote`
 * (0: none), when every byte is printable ASCII other than ' " \; else in
 * double quotes with redis-cli's escapes. Returns the new sds; NULL on OOM
 * or when out is NULL. */
sds stepq__keyname_quote(sds out, const char *n, size_t len, char quote);
/* The same, unquoted when plain, into a fixed buffer (cut to fit). */
void stepq__keyname_buf(char *buf, size_t size, const char *n, size_t len);

/* ---------------------------------------------------------------------------
 * Numbers and shapes of replies (reply.c)
 * ------------------------------------------------------------------------- */
/* The one parser of a number in a reply: s (len bytes) must be a whole
 * number ('-' and digits, nothing else) that fits a long long. Otherwise
 * STEPQ_ERR, with a STEPQ_E_PROTOCOL error naming `what` (the script or
 * command, and the field) when q is not NULL: never a silent 0. */
int stepq__parse_ll(stepq *q, const char *s, size_t len, const char *what, long long *ret);
/* A reply that is a number: an integer, or a string (a hash field) that
 * stepq__parse_ll takes; nil and anything else is an error naming what. */
int stepq__reply_ll(stepq *q, const redisReply *r, const char *what, long long *ret);
/* Checks that r is an array of strlen(types) items, item i of type
 * types[i] ('i' integer, 's' string, 'a' array, '.' any); else a
 * STEPQ_E_PROTOCOL error naming what. */
int stepq__reply_shape(stepq *q, const redisReply *r, const char *types, const char *what);

/* ---------------------------------------------------------------------------
 * The handle (conn.c)
 * ------------------------------------------------------------------------- */
#define STEPQ_ERRSTR_MAX 1024

struct stepq {
    redisContext *rc;
    int err;
    char errstr[STEPQ_ERRSTR_MAX];
    stepq__url url;
    int connect_timeout_ms;
    int command_timeout_ms;
    int reconnect_tries;
    char client_name[64];
    stepq__keymap km;
    sds lua_tpl[2 * STEPQ_ROLE_COUNT]; /* stepq__keymap_lua(), sent with every queue script */
    int pin;                           /* pinned phase, or -1 */
    char pin_arg[16];                  /* the pin as the scripts take it ("" = stored phase) */
    sds k_phase, k_audit;              /* our own keys, in the namespace */
    sds k_stats, k_evseq, k_procs;
    sds k_backfill, k_verify; /* what the migration engine records */
    char shas[STEPQ_SCRIPT_COUNT][41];
    int scripts_loaded;
    char retention[24]; /* retention TTL in ms, as the scripts take it */
    char instance[33];  /* this handle's worker registrations (src/worker.c); "" until the first */
    char proc_id[96];   /* set by stepq_proc_announce */
    char proc_kind[32];
    /* A claim that may have happened but whose steps never reached the
     * caller (the connection failed in between): the next claim of the
     * same worker takes them with this token first (src/queue.c). */
    char claim_token[33];
    char claim_worker[64];
    /* Redis Cluster (src/cluster.c): NULL on one server, or until the
     * first connection found out; cluster_known says whether it did. */
    struct stepq__cluster *cl;
    int cluster_known;
    int ns_registered; /* the namespace is in the registry (registry.c) */
    /* stepq_set_stop_flag: when *stop is set, no wait for Redis lasts (conn.c). */
    const volatile sig_atomic_t *stop;
    long long stop_end; /* while stopping, the end of the connection attempt in course */
};

void stepq__set_error(stepq *q, int code, const char *fmt, ...) STEPQ_PRINTF(3, 4);

/* The registry of namespaces (registry.c): one set per server or cluster,
 * with a hash tag of its own. */
#define STEPQ_REGISTRY_KEY "{stepq}:namespaces"
/* Adds the handle's namespace to the registry, once per handle; best
 * effort: leaves the handle's error as it was (a failed try is made again
 * at the next write). Called after a write succeeded. */
void stepq__ns_register(stepq *q);
void stepq__clear_error(stepq *q);
/* Makes sure the connection is up, reconnecting with backoff. */
int stepq__ensure(stepq *q);
/* Drops the connection after an IO or EOF error. */
void stepq__drop(stepq *q);
/* Has the caller asked the handle to stop waiting (stepq_set_stop_flag)? */
int stepq__stopping(const stepq *q);
/* Sleeps ms in short slices; STEPQ_ERR at once when a stop is requested. */
int stepq__nap(const stepq *q, long ms);
/* redisGetReply on c (the handle's connection or a short one of cluster.c),
 * waiting at most the handle's command timeout, and once a stop is
 * requested at most a second more; on giving up sets c's error. */
int stepq__get_reply(const stepq *q, redisContext *c, void **ret_reply);
/* redisCommand / redisCommandArgv through stepq__get_reply: the reply
 * (caller frees) or NULL with c's error set. */
redisReply *stepq__ctx_command(const stepq *q, redisContext *c, const char *fmt, ...);
redisReply *stepq__ctx_command_argv(const stepq *q, redisContext *c, int argc, const char **argv);

/* Runs a command (argv form, binary-safe). Returns the reply (caller frees
 * with freeReplyObject) or NULL with the error set; a Redis error reply is
 * turned into STEPQ_E_SERVER and freed. */
redisReply *stepq__command(stepq *q, int argc, const char **argv, const size_t *lens);
redisReply *stepq__commandf(stepq *q, const char *fmt, ...);
/* A field of INFO server ("redis_version") as text into buf, "" when the
 * server has no such field. */
int stepq__info_field(stepq *q, const char *field, char *buf, size_t len);

/*
 * Runs an embedded script with EVALSHA (loading it on NOSCRIPT). The queue
 * scripts take the KEYS and ARGV of lua/contract.txt around their own
 * arguments; stepq__eval_queue adds those. Script error
 * replies "STEPQ_<CODE> text" map to the matching STEPQ_E_ code with the
 * text as errstr. Returns the reply (caller frees) or NULL.
 */
redisReply *stepq__eval(stepq *q, enum stepq__script_id s, int nkeys, const char **keys, int nargs,
                        const char **args, const size_t *arglens);
/* The same with the key names' lengths (keylens may be NULL: C strings),
 * for names that may hold any byte. */
redisReply *stepq__eval_keys(stepq *q, enum stepq__script_id s, int nkeys, const char **keys,
                             const size_t *keylens, int nargs, const char **args,
                             const size_t *arglens);
/* Sets the handle's error from a "STEPQ_<CODE> text" string (a script's
 * error reply, or a per-item error of a batch). */
void stepq__set_script_error(stepq *q, const char *str);
redisReply *stepq__eval_queue(stepq *q, enum stepq__script_id s, int nargs, const char **args,
                              const size_t *arglens);

/* Appends the same call to the output buffer without waiting, for
 * pipelines; read the replies with stepq__read_reply. */
int stepq__append_eval(stepq *q, enum stepq__script_id s, int nkeys, const char **keys, int nargs,
                       const char **args, const size_t *arglens);
int stepq__append_eval_keys(stepq *q, enum stepq__script_id s, int nkeys, const char **keys,
                            const size_t *keylens, int nargs, const char **args,
                            const size_t *arglens);
redisReply *stepq__read_reply(stepq *q);
/* Reads one pipelined reply as it is, error replies included (for MULTI/EXEC,
 * whose errors are per command); NULL, with the connection dropped and the
 * error set, when the connection is lost. The caller frees. */
redisReply *stepq__read_raw(stepq *q);
/* Reads the replies of a pipelined MULTI, `queued` commands and EXEC, and
 * returns the EXEC reply as it is (the caller checks its shape). NULL with
 * the error set when MULTI or a queued command got an error reply (the
 * block is still read to its end, so the connection stays in step), or the
 * connection was lost, or an error said "not now" (a redirection, a busy or
 * loading server: STEPQ_E_IO, to be retried like a lost connection); in
 * those two the connection is dropped. */
redisReply *stepq__read_exec(stepq *q, size_t queued);

/* ---------------------------------------------------------------------------
 * Redis Cluster (crc16.c, cluster.c; docs/cluster.md)
 * ------------------------------------------------------------------------- */
#define STEPQ_CLUSTER_SLOTS 16384

/* CRC16/XMODEM of buf, as Redis Cluster hashes keys. */
unsigned stepq__crc16(const char *buf, size_t len);
/* The hash slot of a key (its hash tag's, when it has one). */
int stepq__key_slot(const char *key, size_t len);
/* The slot of every key of namespace ns, or -1 when ns holds no complete
 * hash tag of its own ('{name}'). */
int stepq__ns_slot(const char *ns);

/* Called by the handshake on the URL's node (q->rc, authenticated, before
 * SELECT): finds out with INFO whether it is a cluster node and, if so,
 * sets up q->cl and the slot map. Refuses (STEPQ_E_INVALID) a namespace
 * without a hash tag or a database other than 0 on a cluster. */
int stepq__cluster_detect(stepq *q);
/* The node the handle should talk to: the URL's before detection, the
 * owner of the namespace's slot after. */
void stepq__cluster_target(const stepq *q, const char **ret_host, int *ret_port);
/* Refreshes the slot map from the nodes known (the owner, then the seeds). */
int stepq__cluster_refresh(stepq *q);
/* The same, only when a dropped connection left the map in doubt. */
int stepq__cluster_refresh_if_stale(stepq *q);
/* The reconnect budget of stepq__ensure in ms: long enough for a replica
 * to be promoted when on a cluster, 0 on one server (count tries). */
long stepq__cluster_wait_ms(const stepq *q);
/* Notes that the connection was dropped: the map is re-read and the
 * scripts loaded again at the next connection (another node, maybe). */
void stepq__cluster_dropped(stepq *q);
/* Sends one formatted command (redisFormatCommand) to the namespace's
 * node and reads its reply, following MOVED (and ASK for plain commands),
 * waiting out TRYAGAIN, CLUSTERDOWN and a migrating slot with bounded
 * backoff. On one server it is one round trip. Returns the reply, error
 * replies included (the caller maps them), or NULL when the connection
 * failed (not dropped: the caller reports it). */
redisReply *stepq__cluster_send(stepq *q, const char *cmd, size_t len, int is_script);
/* The never-written key that queue scripts declare on a cluster, so that a
 * script never starts while its slot migrates (cluster.c explains). NULL
 * on one server. */
const char *stepq__cluster_guard(const stepq *q);
/* Whether, since the last call, a command was answered by another node than
 * the one the handle was on (ASK, MOVED), or the slot's owner changed (a
 * failover): a member cursor of SSCAN/ZSCAN means nothing there (walk.c).
 * Clears the mark. 0 on one server. */
int stepq__cluster_moved(stepq *q);
/* Waits (bounded) until the namespace's slot is neither migrating nor
 * importing, and writes the id of the node that owns it (41 bytes): a
 * walk whose owner changed between two pages starts over. STEPQ_OK at
 * once on one server (ret_id ""). */
int stepq__cluster_settled(stepq *q, char ret_id[41]);
void stepq__cluster_free(struct stepq__cluster *cl);

/* ---------------------------------------------------------------------------
 * Keyspace walks (scan.c)
 * ------------------------------------------------------------------------- */
/* Called with each batch of key names (an array reply, owned by the
 * caller); returns STEPQ_OK to go on. */
typedef int (*stepq__scan_fn)(stepq *q, const redisReply *keys, void *arg);
/* SCANs every key matching the glob `match`, `count` keys a round trip. */
int stepq__scan(stepq *q, const char *match, long count, stepq__scan_fn fn, void *arg);

/* ---------------------------------------------------------------------------
 * Pacing of bulk walks (pace.c)
 * ------------------------------------------------------------------------- */
typedef struct stepq__pace {
    stepq *q;
    double base_rate;     /* keys/s from the command line; 0: unlimited */
    double rate;          /* in force: the throttle hash may override it */
    long max_latency_ms;  /* back off while a PING takes longer; 0: off */
    long max_replica_lag; /* back off while a replica lags more (s); 0: off */
    int paused;
    double tokens;
    long long last_ms, throttle_ms, probe_ms, lag_ms;
    long backoffs; /* how often it waited for pause, latency or lag */
} stepq__pace;

/* Sets up pacing for a walk on q. The throttle hash `stepq:throttle`
 * (fields paused=1/0, rate=N) is re-read twice a second, so an operator can
 * pause, resume or re-rate a running walk (`stepq migrate throttle`). */
void stepq__pace_init(stepq__pace *p, stepq *q, double rate, long max_latency_ms,
                      long max_replica_lag);
/* Blocks until n more keys may be processed. STEPQ_ERR on a lost
 * connection (the error is set on p->q). */
int stepq__pace_wait(stepq__pace *p, long n);
/* Will the next stepq__pace_wait send a command (throttle hash, PING, INFO)?
 * The answer holds for now only: a caller with replies on their way asks,
 * empties its pipe when it says yes, and passes the answer as `io` to
 * stepq__pace_wait_io, which sends nothing when it is 0 (the checks then
 * wait for a later call). Calling stepq__pace_wait instead would send a
 * command whenever the clock crossed a check in between, and the caller's
 * next reply would be the throttle hash (the 5M-step backfill's "unexpected
 * reply from backfill_members.lua"). */
int stepq__pace_io_due(const stepq__pace *p);
int stepq__pace_wait_io(stepq__pace *p, long n, int io);
/* Tests only: the clock pacing reads (milliseconds, monotonic); NULL: the real one. */
extern long long (*stepq__pace_clock)(void);

/* ---------------------------------------------------------------------------
 * Helpers (util.c)
 * ------------------------------------------------------------------------- */
/* Writes a new UUIDv7 (time-ordered) as 36 chars + NUL. */
int stepq__uuid7(char out[37]);
/* A random hex token of 2*nbytes chars + NUL. */
int stepq__random_hex(char *out, size_t nbytes);
long long stepq__now_ms(void);
/* Sleeps ms milliseconds, through signals (conn.c). */
void stepq__sleep_ms(long ms);
/* Returns a malloc'd copy of s (for ret_ strings freed with stepq_str_free). */
char *stepq__strndup(const char *s, size_t n);
/* ---------------------------------------------------------------------------
 * UTF-8 (utf8.c): bytes made safe for JSON text
 * ------------------------------------------------------------------------- */
/* stepq__utf8_seq, stepq__utf8_scrub: stepq_text.h */
/* A valid UTF-8 copy of s[0..len), each bad byte replaced with U+FFFD: a
 * new sds (NULL on OOM). */
sds stepq__utf8_repair(const char *s, size_t len);

/* ---------------------------------------------------------------------------
 * JSON (json.c)
 * ------------------------------------------------------------------------- */
typedef struct json_t json_t;
/* A step's flat field/value reply (and its progress, may be NULL) as a JSON
 * object: a new reference, NULL on OOM. */
json_t *stepq__step_object(const redisReply *fields, const redisReply *progress);
/* Dumps v into a new *ret (freed with stepq_str_free) and drops the
 * reference to v (which may be NULL: an OOM error). */
int stepq__ret_json(stepq *q, json_t *v, char **ret);

/* ---------------------------------------------------------------------------
 * Status (status.c)
 * ------------------------------------------------------------------------- */
/* Live processes as a JSON array (expired announcements are removed). */
json_t *stepq__procs(stepq *q);
/* Key counts per rule and side from one SCAN of the namespace. */
json_t *stepq__key_counts(stepq *q);
/* A hash as a JSON object, whole numbers as integers. */
json_t *stepq__hash_counters(stepq *q, const char *key);

/* ---------------------------------------------------------------------------
 * The migration engine's walks (walk.c, backfill.c, verify.c, reconcile.c)
 * ------------------------------------------------------------------------- */
/* Called with each page of a namespace SCAN and the cursor that produced
 * it: resuming from that cursor redoes this page and nothing before it. */
typedef int (*stepq__page_fn)(stepq *q, const redisReply *keys, const char *cursor, void *arg);

/* A set of 64-bit key-name hashes in bounded memory (nameset.c): sorted
 * runs on a temporary file, merged when sealed, looked up with one read of
 * a block. Add, then seal, then look up. -1 on I/O error or OOM. */
typedef struct stepq__nameset stepq__nameset;
stepq__nameset *stepq__nameset_new(void);
/* The same with runs of `run` hashes (tests: many runs from few hashes). */
stepq__nameset *stepq__nameset_new_run(size_t run);
int stepq__nameset_add(stepq__nameset *s, uint64_t h);
int stepq__nameset_seal(stepq__nameset *s);
/* 1 when h was added, 0 when not, -1 on a read error. */
int stepq__nameset_has(stepq__nameset *s, uint64_t h);
size_t stepq__nameset_count(const stepq__nameset *s);
void stepq__nameset_free(stepq__nameset *s);

/* The walks' pipeline (walk_pipe.c; docs/migration-engine.md,
 * "Pipelining"). A reader reads the reply (or replies) of the command(s) it
 * was pushed for, in order, and acts on them; it may queue more commands
 * and push their readers, but never wait for a reply of its own. With
 * `abort` set it reads nothing and only lets go of ctx (the connection was
 * dropped after an error). */
typedef int (*stepq__reader_fn)(stepq *q, void *ctx, int abort);
struct stepq__wentry {
    stepq__reader_fn fn;
    void *ctx;
    long keys;
};
typedef struct stepq__window {
    struct stepq__wentry *e; /* a ring */
    size_t head, n, cap;
    long keys; /* keys whose replies are still to read */
} stepq__window;
/* Pushes the reader of a command just queued (redisAppendCommand...),
 * weighing `keys` until it has run. */
int stepq__window_push(stepq *q, stepq__window *w, stepq__reader_fn fn, void *ctx, long keys);
/* Runs every reader left; on an error the connection is dropped and the
 * rest are aborted (the first error is kept). */
int stepq__window_drain(stepq *q, stepq__window *w);
/* Runs the oldest reader (it reads its reply); nothing when the window is
 * empty. On an error the caller aborts the window (stepq__window_abort). */
int stepq__window_next(stepq *q, stepq__window *w);
/* Drops the connection (the replies on their way can no longer be matched)
 * and tells every reader left to let go of its context; keeps the error. */
void stepq__window_abort(stepq *q, stepq__window *w);
void stepq__window_release(stepq__window *w);

/* Pages of keys in flight at most in a walk without a latency bound. */
#define STEPQ_WALK_PAGES 4
/* Work a reader leaves for when the pipe is empty (see stepq__walk_idle). */
typedef int (*stepq__idle_fn)(stepq *q, void *arg);
typedef struct stepq__walk {
    stepq__window win;
    char cursor[32], page_cursor[32], count[24];
    sds match;
    long cap; /* no new SCAN while this many keys are in flight */
    int scan_out, scan_done, hold, want_idle;
    redisReply *page; /* a SCAN reply waiting for the driver */
    stepq__idle_fn idle;
    void *arg;
    /* On a cluster: the slot's owner when the walk began, the cursor of
     * the page in flight (redone after a redirection), the retry budget. */
    char owner[41], sent_cursor[32];
    long long deadline;
    int redo;
} stepq__walk;
/* On a cluster (nothing on one server): waits until the namespace's slot
 * is settled and sets cursor to "0" (*ret_restarted) when its owner is not
 * `owner` (41 bytes, "" at first; updated). walk.c explains. */
int stepq__walk_settle(stepq *q, char owner[41], char cursor[32], int *ret_restarted);
/* May a failed page be redone? 1 on a cluster, for a lost connection or a
 * redirection, within the wait budget counted from *deadline (0: now). */
int stepq__walk_retry(stepq *q, long long *deadline);
/* A pipelined SCAN of the namespace from `from` (walk_pipe.c): fn gets each
 * page and the cursor that produced it, and queues the page's commands on
 * w->win (stepq__window_push) without waiting for them; at most `cap` keys
 * in flight (stepq__walk_cap). `idle` (may be NULL) runs on an empty pipe
 * whenever a reader asked for it (stepq__walk_idle) and at the end. */
int stepq__walk_run(stepq *q, stepq__walk *w, const char *from, long count, long cap,
                    stepq__page_fn fn, stepq__idle_fn idle, void *arg);
/* The same with a SCAN MATCH pattern of the caller's (NULL: the namespace
 * and `*`): a walk that wants fewer names than the namespace's. MATCH does
 * not spare Redis the visit of a key it filters out, only its reply. */
int stepq__walk_run_match(stepq *q, stepq__walk *w, const char *match, const char *from, long count,
                          long cap, stepq__page_fn fn, stepq__idle_fn idle, void *arg);
/* Asks for the walk's idle work once the pipe has drained (a reader that
 * must wait for replies of its own, e.g. a big collection merged in chunks). */
void stepq__walk_idle(stepq__walk *w);
/* stepq__pace_wait from inside a walk: drains the pipe first when the
 * pacing will talk to Redis (the throttle hash, a PING, INFO). */
int stepq__walk_pace(stepq *q, stepq__walk *w, stepq__pace *p, long n);
/* Writes what is queued on the connection now, without waiting for a
 * reply (a page function that sends the next SCAN before its own work). */
int stepq__walk_flush(stepq *q);
/* Keys in flight at most for a walk of `count`-key pages: STEPQ_WALK_PAGES
 * pages; with a latency bound two (one script running, one behind it). */
long stepq__walk_cap(long count, long max_latency_ms);

/* A page of `batches` batches of `batch` (at most 5000); one batch when
 * the walk watches latency (max_latency_ms > 0), so that a foreground
 * client never queues behind more than one of its scripts. */
long stepq__page_count(long batch, long batches, long max_latency_ms);
/* The SCAN COUNT of a walk of `batch`-pair scripts: ten batches a page, so
 * that one round trip carries ten scripts (at most 5000 names); one batch a
 * page when the walk watches latency (max_latency_ms > 0), so that a
 * foreground client never queues behind more than one of its scripts. */
long stepq__walk_count(long batch, long max_latency_ms);
/* Members a SSCAN/ZSCAN page of a big collection asks for: with a latency
 * bound one batch; else fifty, at most 5000. Member cursors chain (a page's
 * comes with the one before it), so a collection's pages cannot overlap and
 * each costs a round trip: over a 2 ms link, pages of 1000 left Redis idle
 * for most of a big collection's walk (verify's `jobs:completed`). */
long stepq__member_count(long batch, long max_latency_ms);

/* Queues the SSCAN (type 's') or ZSCAN of a member page of `key` (`len`
 * bytes) from `cursor`, and reads such a reply in turn, updating cursor:
 * the reply {cursor, members} (caller frees), or NULL with the error set. */
int stepq__queue_members(stepq *q, const char *key, size_t len, char type, const char *cursor,
                         const char *count);
redisReply *stepq__read_members(stepq *q, char cursor[32]);
/* After a member scan failed: 1 when it may start over from member cursor
 * 0 (a cluster, a lost connection or a redirection, within the wait budget
 * counted from *deadline (0: now), the slot settled), else 0 with the
 * error standing. A member cursor is worth nothing on
 * another node (walk.c). */
int stepq__members_retry(stepq *q, long long *deadline);

/* Pairs of key names (one rule, one id, two sides) for the batch scripts. */
typedef struct stepq__pairs {
    sds *keys;   /* 2 per pair: the side walked first, then its twin */
    char *types; /* one letter per pair (h s z l t), NUL-terminated */
    int *rule;
    size_t n, cap;
} stepq__pairs;
/* Adds the pair of rule r for id (NULL for a fixed key), `first` side first. */
int stepq__pairs_add(stepq__pairs *p, const stepq__keymap *km, size_t r, enum stepq__side first,
                     const char *id);
/* The same for an id of idlen bytes (any byte, NUL included). */
int stepq__pairs_add_n(stepq__pairs *p, const stepq__keymap *km, size_t r, enum stepq__side first,
                       const char *id, size_t idlen);
void stepq__pairs_clear(stepq__pairs *p);
void stepq__pairs_release(stepq__pairs *p);
/* Adds the per-id keys of `page` that are on `side` (fixed keys are left
 * to the caller); returns how many keys were added. */
long stepq__pairs_from_page(stepq__pairs *p, const stepq__keymap *km, const redisReply *page,
                            enum stepq__side side);
/* Reports every name of `page` that looks like an old per-id key but that
 * no rule maps (stepq__keymap_stray) to fn, by name (keyname.c) with what
 * to do; returns how many. The walks count them as errors. */
long stepq__walk_strays(stepq *q, const redisReply *page, stepq_progress_fn fn, void *arg,
                        long long done, long long total);
/*
 * Runs script s over the pairs in pipelined scripts of `batch` pairs each:
 * KEYS = prefix keys, then the pair keys; ARGV = args, then (when
 * with_types) the batch's type letters. Writes one reply per script into
 * replies (caller frees each; the array holds ceil(n/batch) entries);
 * STEPQ_ERR when any script failed (the others are freed).
 */
int stepq__pairs_run(stepq *q, enum stepq__script_id s, const stepq__pairs *p, long batch,
                     int nprefix, const char **prefix, int nargs, const char **args, int with_types,
                     redisReply **replies);
/* Queues one script s over pairs [lo, hi) of p (at most 1000), laid out as
 * stepq__pairs_run lays them; its reply is for the caller to read. */
int stepq__pairs_append(stepq *q, enum stepq__script_id s, const stepq__pairs *p, size_t lo,
                        size_t hi, int nprefix, const char **prefix, int nargs, const char **args,
                        int with_types);
/* Makes every key of the other side equal to its twin on side `truth`
 * (reconcile.c): COPY REPLACE where the truth exists, DEL where it does
 * not; with `dry`, counts only. `mode` (lua/reconcile_batch.lua): 'plain';
 * or, old from new, what to do with old steps the new side does not know
 * (live old-only records, members only the old side knows): 'check' (write
 * nothing), 'keep' or 'delete'; each counted and the first named. */
#define STEPQ_RC_NAMES 10
typedef struct stepq__rc_result {
    long long copied, deleted, unknown;
    sds names[STEPQ_RC_NAMES]; /* escaped, quoted */
    size_t nnames;
} stepq__rc_result;
int stepq__reconcile(stepq *q, enum stepq__side truth, int dry, const char *mode,
                     stepq_progress_fn fn, void *arg, stepq__rc_result *res);
void stepq__rc_result_release(stepq__rc_result *res);
/* Appends an entry to the audit log: `o` (consumed) gets ts, host and pid. */
int stepq__audit(stepq *q, json_t *o);
/* A move or rollback refused by a rule (STEPQ_E_CONFLICT set) goes into the
 * audit log with the rule's text (phase_rules.c); the error is kept. Other
 * errors are not refusals and are not audited. */
void stepq__audit_refusal(stepq *q, stepq_phase from, stepq_phase to, const char *who);

/* ---------------------------------------------------------------------------
 * Phase moves (phase.c) and the rules they meet (phase_rules.c)
 * ------------------------------------------------------------------------- */
/* stepq_phase_move for the library itself: `reconciled` says the caller
 * (rollback) made the old keys equal to the new ones already. */
int stepq__phase_move(stepq *q, stepq_phase to, const char *who, const char *reason, unsigned flags,
                      int reconciled);
/* Is the move from -> to allowed by the preconditions and the pins
 * (phase_rules.c)? Writes 1/0 into *ret_ok and, when 0, what is missing and
 * what to run into why (the console shows each move's verdict). */
int stepq__move_check(stepq *q, stepq_phase from, stepq_phase to, int *ret_ok, char *why,
                      size_t len);
/* Before a move (after the one-step rule): the preconditions and the pins
 * (a refusal is audited; a forced move writes the rule it skips into
 * `skipped`), then the first reconcile out of 'step' unless `reconciled`. */
int stepq__move_guard(stepq *q, stepq_phase from, stepq_phase to, const char *who, unsigned flags,
                      int reconciled, char *skipped, size_t len);
/* After a move: the second reconcile out of 'step'. */
int stepq__move_done(stepq *q, stepq_phase from, stepq_phase to);

/* ---------------------------------------------------------------------------
 * The reconcile out of 'step' (rollback.c)
 * ------------------------------------------------------------------------- */
/* Pass 1 (before the move: refuses, unless `force`, when old-only steps
 * would be deleted; marks `reconciling`) or pass 2 (after it: clears the
 * mark) of the reconcile of a rollback out of 'step'. What the move's guard
 * runs (phase_rules.c). */
int stepq__rollback_reconcile(stepq *q, int pass, int force);
/* Is a rollback out of 'step' between its two reconcile passes (the phase
 * hash's `reconciling`)? Backfill and every other move refuse meanwhile,
 * with this advice; running the rollback again finishes it. */
int stepq__reconciling(stepq *q, int *ret);
#define STEPQ__RECONCILING_ADVICE                                                                  \
    "a rollback out of 'step' has not finished reconciling the old keys (they miss what was "      \
    "written in 'step'); run 'stepq migrate rollback' to finish it"
/* ---------------------------------------------------------------------------
 * stepq's own touches of the old keys after the switch (own_reads.c)
 * ------------------------------------------------------------------------- */
#define STEPQ_WINDOWS_MAX 100
typedef struct stepq__windows {
    long long lo[STEPQ_WINDOWS_MAX], hi[STEPQ_WINDOWS_MAX]; /* ms */
    size_t n;
} stepq__windows;
/* Records that this process touched old keys from lo to hi (ms). */
int stepq__own_reads_add(stepq *q, long long lo, long long hi);
/* After a run that began at `lo` and ended with `rc`: records its window
 * (also when it failed: it touched keys all the same, and then its error is
 * kept) and returns rc, or STEPQ_ERR when the record failed. */
int stepq__own_reads_note(stepq *q, long long lo, int rc);
/* Loads the recorded windows into w (caller-owned). */
int stepq__own_reads_load(stepq *q, stepq__windows *w);
/* Was an access at `at` (ms) one of ours, within `slack` ms of a window? */
int stepq__own_read(const stepq__windows *w, long long at, long long slack);

/* A field of a record hash as a number (0 when absent). */
long long stepq__json_ll(const json_t *o, const char *field);

#endif /* STEPQ_PRIVATE_H */
