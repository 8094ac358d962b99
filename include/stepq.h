/*
 * stepq.h - the whole public API of libstepq, a Redis-backed step (job) queue
 * with the zero-downtime migration of its keys from job:* to step:* built in.
 *
 * Ownership rules, stated once:
 *   - A stepq handle is created by stepq_connect() and freed by stepq_free().
 *     stepq_connect() returns a handle even when it fails (check stepq_err());
 *     it returns NULL only when memory runs out.
 *   - Every `char **ret_*` output is a NUL-terminated string allocated by the
 *     library; the caller frees it with stepq_str_free(). Outputs are written
 *     only when the call returns STEPQ_OK.
 *   - Input strings are borrowed for the duration of the call.
 *   - A handle is not thread-safe: use one per thread.
 *   - Like hiredis, the library writes to sockets with write(2): a program
 *     should ignore SIGPIPE, or a connection Redis closed kills it.
 *
 * Errors: every function returns STEPQ_OK (0) or STEPQ_ERR (-1). On STEPQ_ERR,
 * stepq_err() says what kind of error it was and stepq_errstr() says what
 * happened and what to do. After STEPQ_E_IO or STEPQ_E_EOF the connection is
 * dropped; the next call reconnects (with backoff) before it runs.
 */
#ifndef STEPQ_H
#define STEPQ_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define STEPQ_VERSION_MAJOR 0
#define STEPQ_VERSION_MINOR 1
#define STEPQ_VERSION_PATCH 0
#define STEPQ_VERSION       "0.1.0"

#if defined(__GNUC__)
#define STEPQ_API __attribute__((visibility("default")))
#else
#define STEPQ_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define STEPQ_OK  0
#define STEPQ_ERR -1

/* The kinds of error a call can report (stepq_err). */
enum stepq_error {
    STEPQ_E_NONE = 0,
    STEPQ_E_IO,       /* connect, read or write failed or timed out */
    STEPQ_E_EOF,      /* the server closed the connection */
    STEPQ_E_PROTOCOL, /* the server answered something we did not expect */
    STEPQ_E_OOM,      /* out of memory */
    STEPQ_E_SERVER,   /* Redis returned an error */
    STEPQ_E_INVALID,  /* bad input from the caller: nothing was changed */
    STEPQ_E_NOTFOUND, /* no such step, or nothing to claim */
    STEPQ_E_CONFLICT, /* refused by a rule: stale token, forbidden phase move */
};

typedef struct stepq stepq;

/* ---------------------------------------------------------------------------
 * Connection
 * ------------------------------------------------------------------------- */

typedef struct stepq_options {
    int connect_timeout_ms;  /* 0: 2000 */
    int command_timeout_ms;  /* 0: 5000; -1: none (blocking commands) */
    int reconnect_tries;     /* 0: 5; attempts before a call gives up */
    const char *namespace_;  /* optional key prefix, e.g. "{tenant1}:"; NULL: none */
    const char *rules_file;  /* key-map rules file; NULL: the built-in job -> step map */
    const char *client_name; /* CLIENT SETNAME; NULL: "stepq" */
    int ignore_env_pin;      /* 1: do not read ENABLE_DUAL_WRITE_STEPS/PRIMARY_KEY_PATTERN */
    long long retention_ms;  /* how long an ended step's record is kept (its TTL); 0: 7 days;
                                else 1000 ms to 3650 days (STEPQ_RETENTION_MAX_MS) */
} stepq_options;

#define STEPQ_RETENTION_DEFAULT_MS 604800000LL    /* 7 days */
#define STEPQ_RETENTION_MAX_MS     315360000000LL /* 3650 days */

/*
 * Parses `url` (redis://[user[:password]@]host[:port][/db] or
 * unix:///path/to/sock[?db=N]; NULL or "" means $REDIS_URL, then
 * redis://127.0.0.1:6379), connects, authenticates, selects the database and
 * loads the scripts. `opts` may be NULL. Always returns a handle (NULL only on
 * OOM); check stepq_err(). A malformed URL sets STEPQ_E_INVALID.
 */
STEPQ_API stepq *stepq_connect(const char *url, const stepq_options *opts);
STEPQ_API void stepq_free(stepq *q); /* accepts NULL */
STEPQ_API int stepq_err(const stepq *q);
STEPQ_API const char *stepq_errstr(const stepq *q);
STEPQ_API void stepq_str_free(char *s); /* frees any ret_ string; accepts NULL */

/* Checks that `url` is well formed without connecting. On error, writes a
 * message into errbuf (if not NULL) and returns STEPQ_ERR. */
STEPQ_API int stepq_url_check(const char *url, char *errbuf, size_t errlen);

/* Sends PING. */
STEPQ_API int stepq_ping(stepq *q);

/*
 * Lets a process that is stopping (a worker after SIGTERM) stop waiting for
 * a Redis that cannot answer. `flag` (may be NULL: none) is read, never
 * written, at every wait; a signal handler sets it. Once it is non-zero, a
 * call waits at most about a second more for a reply, makes one connection
 * attempt (at most a second) instead of reconnecting with backoff, and
 * waits out no moving slot or failover (STEPQ_CLUSTER_WAIT_MS); it fails
 * with STEPQ_E_IO as when Redis is unreachable. A Redis that answers is not
 * cut short, so the calls of a clean stop (reports, deregistration) still
 * work. A command whose reply was given up may have run, as after any lost
 * connection.
 */
STEPQ_API void stepq_set_stop_flag(stepq *q, const volatile sig_atomic_t *flag);

/* ---------------------------------------------------------------------------
 * Migration phase
 * ------------------------------------------------------------------------- */

typedef enum stepq_phase {
    STEPQ_PHASE_JOB = 0,      /* write old, read old */
    STEPQ_PHASE_DUAL_WRITE,   /* write both, read old */
    STEPQ_PHASE_DUAL_READ,    /* write both, read new, else old + lazy copy */
    STEPQ_PHASE_STEP_PRIMARY, /* write both, read new, else old (a miss) */
    STEPQ_PHASE_STEP,         /* write new, read new */
    STEPQ_PHASE_COUNT
} stepq_phase;

STEPQ_API const char *stepq_phase_name(stepq_phase p);
/* Parses a phase name; STEPQ_ERR with a message in errbuf if unknown. */
STEPQ_API int stepq_phase_parse(const char *name, stepq_phase *ret, char *errbuf, size_t errlen);

/* The phase stored in Redis (STEPQ_PHASE_JOB when none was ever stored). */
STEPQ_API int stepq_phase_get(stepq *q, stepq_phase *ret);

/* The phase this process runs in: its pin when ENABLE_DUAL_WRITE_STEPS or
 * PRIMARY_KEY_PATTERN is set, else -1 (follows the stored phase). */
STEPQ_API int stepq_phase_pin(const stepq *q);

enum stepq_move_flags {
    STEPQ_MOVE_FORCE = 1 << 0,     /* skip the one-step rule and preconditions */
    STEPQ_MOVE_RECONCILE = 1 << 1, /* stepq_rollback out of dual-read: old keys := new first */
};

/*
 * Moves the stored phase to `to`. Only a move of one step forward or back is
 * allowed (STEPQ_E_CONFLICT otherwise, unless STEPQ_MOVE_FORCE). The move is
 * compare-and-set against the phase read when the call began, and is written
 * to the audit log with `who` and `reason` (either may be NULL).
 */
STEPQ_API int stepq_phase_move(stepq *q, stepq_phase to, const char *who, const char *reason,
                               unsigned flags);

/*
 * Would stepq_phase_move(q, to, ...) pass the engine's rules now (the
 * preconditions, the pinned processes, an unfinished rollback out of
 * 'step')? Writes 1/0 into *ret_ok and, when 0, the refusal (what is
 * missing and what to run) into why. Changes and audits nothing; the
 * one-step rule is not part of it.
 */
STEPQ_API int stepq_move_allowed(stepq *q, stepq_phase to, int *ret_ok, char *why, size_t len);

/* The audit log, newest last, as a JSON array of at most `limit` entries. */
STEPQ_API int stepq_audit_tail(stepq *q, long limit, char **ret_json);

/* ---------------------------------------------------------------------------
 * Steps
 * ------------------------------------------------------------------------- */

#define STEPQ_ID_MAX 64 /* the ids stepq makes (and worker ids, types) fit in this */
/* A step id the API takes (get, claim's ids, progress, complete, fail,
 * cancel) is 1 to STEPQ_STEP_ID_MAX - 1 bytes, any bytes but NUL: a step
 * the old system wrote may have any id ('a:b', 300 bytes). One the key map
 * reads as another key (ending in ':progress' with the built-in map) is
 * refused: its record would be another step's progress (docs/keymap.md). */
#define STEPQ_STEP_ID_MAX 4096

typedef struct stepq_submit_opts {
    const char *type;     /* NULL: "default" */
    long priority;        /* higher runs first; 0..1000000 */
    const char *requires; /* comma-separated capabilities, NULL: none */
    long max_attempts;    /* 0: 3 */
    const char *payload;  /* JSON text; NULL: "{}" */
} stepq_submit_opts;

/* Submits a step; writes its new UUIDv7 id into ret_id. */
STEPQ_API int stepq_submit(stepq *q, const stepq_submit_opts *o, char ret_id[STEPQ_ID_MAX]);
/* Submits n (1..100) steps in one round trip: o[i] describes step i (o may
 * be NULL: defaults), ret_ids[i] gets its id. Every step is checked first;
 * on an error nothing is submitted. */
STEPQ_API int stepq_submit_many(stepq *q, const stepq_submit_opts *o, size_t n,
                                char (*ret_ids)[STEPQ_ID_MAX]);

/* The step as one JSON object: every field of its hash and its progress
 * under "progress". STEPQ_E_NOTFOUND when it does not exist. */
STEPQ_API int stepq_get(stepq *q, const char *id, char **ret_json);

/* Ids in state pending, active, completed or failed, as a JSON array. */
STEPQ_API int stepq_list(stepq *q, const char *state, long limit, char **ret_json);

/*
 * Claims up to `max` steps (highest priority first, first in first out within
 * a priority) whose required capabilities are all in `caps`. Writes a JSON
 * array of claimed steps, each with its "id" and claim "token"; an empty
 * claim returns STEPQ_ERR with STEPQ_E_NOTFOUND. Two round trips: the claim
 * itself (atomic), then the records read as they are right after it (a step
 * cancelled in between is left out).
 */
STEPQ_API int stepq_claim(stepq *q, const char *worker, const char *const *caps, size_t ncaps,
                          long max, char **ret_json);

/* Progress, complete and fail check the claim token: STEPQ_E_CONFLICT when
 * the step is no longer held with that token. */
STEPQ_API int stepq_progress(stepq *q, const char *id, const char *token, long percent,
                             const char *message);
STEPQ_API int stepq_complete(stepq *q, const char *id, const char *token, const char *result);

/* One acknowledgement of a batch: `status` is written with STEPQ_E_NONE or
 * the error kind of that step alone (STEPQ_E_CONFLICT, STEPQ_E_NOTFOUND). */
typedef struct stepq_ack {
    const char *id, *token, *result;
    int status;
} stepq_ack;

/* Completes n (1..100) held steps in one round trip. A refused step does
 * not stop the others; the call returns STEPQ_ERR with the first refusal
 * when any was refused (see each ack's status). */
STEPQ_API int stepq_complete_many(stepq *q, stepq_ack *acks, size_t n);
/* Fails an attempt: the step is retried until max_attempts, then failed.
 * ret_final (may be NULL) is set to 1 when the step went to the failed set. */
STEPQ_API int stepq_fail(stepq *q, const char *id, const char *token, const char *error,
                         int *ret_final);
/* Cancels a pending or active step; STEPQ_E_CONFLICT if it already ended. */
STEPQ_API int stepq_cancel(stepq *q, const char *id);

/* ---------------------------------------------------------------------------
 * Workers
 * ------------------------------------------------------------------------- */

/*
 * A worker id is owned by one process at a time. A handle registers as one
 * instance (a random token made at its first registration), and its
 * heartbeats and its deregister act only on a registration of that
 * instance: a worker never renews or releases another process's.
 *
 * Registers a worker with its capabilities; its heartbeat lives ttl_ms.
 * Registering again from the same handle renews the registration.
 * STEPQ_E_CONFLICT when another live process (another instance whose
 * heartbeat is younger than ttl_ms) holds the id: pick another id or stop
 * that process. A dead one's registration is taken over, and the steps it
 * held are requeued first.
 */
STEPQ_API int stepq_worker_register(stepq *q, const char *worker, const char *const *caps,
                                    size_t ncaps, long ttl_ms);
/* Renews the heartbeat. STEPQ_E_NOTFOUND when the worker was reaped (register
 * again); STEPQ_E_CONFLICT when another process took the id over since (this
 * one must stop, or run under another id). */
STEPQ_API int stepq_worker_heartbeat(stepq *q, const char *worker, long ttl_ms);
/* Requeues whatever the worker still holds and removes it. STEPQ_E_CONFLICT,
 * and nothing done, when another process's registration holds the id. */
STEPQ_API int stepq_worker_deregister(stepq *q, const char *worker);
/* Workers and their state as a JSON array. */
STEPQ_API int stepq_workers(stepq *q, char **ret_json);
/* The queue's depth per state, on the old and the new keys:
 * {"pending":{"old":N,"new":N},"active":...,"completed":...,"failed":...}. */
STEPQ_API int stepq_queue_depth(stepq *q, char **ret_json);
/* Requeues the steps of workers whose heartbeat is older than
 * timeout_ms (or gone); writes how many steps were requeued. One pass of
 * stepq_reap_pass with only a timeout. */
STEPQ_API int stepq_reap(stepq *q, long timeout_ms, long *ret_requeued);

typedef struct stepq_reap_opts {
    long timeout_ms;     /* a worker whose heartbeat is older (or gone) is dead; 0 or more */
    long keep_completed; /* cap of the completed set (count); 0: none */
    long keep_failed;    /* cap of the failed set (count); 0: none */
    long prune_count;    /* members of each ended set looked at a pass (SSCAN COUNT,
                            1..10000); 0: 100 */
} stepq_reap_opts;

typedef struct stepq_reap_result {
    long requeued;        /* active steps of dead workers requeued (or failed: no attempts left) */
    long stale;           /* stale entries: steps dropped from the active or a worker's set */
    long workers_removed; /* dead workers removed */
    long pruned;          /* completed/failed members whose record is gone or disagrees */
    long capped;          /* ended steps removed (record too) to hold the keep_ caps */
} stepq_reap_result;

/*
 * One pass of the reaper. The records are the truth, the sets indexes: a
 * member of the active set or of a worker's set is requeued only when its
 * record says `active`, held by a dead worker (its `worker` field; for a
 * record of the old system without one, the worker whose set holds it).
 * Any other member (record gone, step ended, held by another worker) is a
 * stale entry: removed from that set, counted in ret->stale and in the
 * stats hash (stale_dropped), never requeued.
 *
 * Then the completed and failed sets are pruned, a page of about
 * prune_count members each (an SSCAN whose cursor is kept in Redis, so
 * successive passes walk the whole set with bounded work each): a member
 * whose record is gone (its retention TTL passed) or says another status is
 * dropped (ret->pruned); while a set holds more than its keep_ cap, the
 * page's members with the oldest finished_at are removed with their
 * records (ret->capped) - oldest first within a page, not across the set.
 * ret may be NULL.
 */
STEPQ_API int stepq_reap_pass(stepq *q, const stepq_reap_opts *opts, stepq_reap_result *ret);

/* ---------------------------------------------------------------------------
 * Live processes and status
 * ------------------------------------------------------------------------- */

/* Registers this process as live (kind: "worker", "serve", ...), with its
 * pin; call again at least every ttl_ms. */
STEPQ_API int stepq_proc_announce(stepq *q, const char *kind, long ttl_ms);
STEPQ_API int stepq_proc_withdraw(stepq *q);

/* The migration status (phase, key counts per rule and side, live
 * processes, counters, audit tail) as one JSON object. */
STEPQ_API int stepq_status(stepq *q, char **ret_json);

/* The namespaces stepq has written to on this server (this database) or
 * this cluster, as a sorted JSON array of strings: each adds itself to the
 * registry `{stepq}:namespaces` at its first submit, worker registration or
 * phase move (docs/cluster.md). Any handle lists them, whatever its own
 * namespace. */
STEPQ_API int stepq_namespaces(stepq *q, char **ret_json);
/* Takes the handle's namespace out of the registry. STEPQ_E_CONFLICT while
 * it is in use: keys of its queue on either side, a live stepq process
 * announced in it, a registered worker; STEPQ_E_NOTFOUND when it is not
 * registered. Its next write (submit, worker, phase move) lists it again. */
STEPQ_API int stepq_namespace_forget(stepq *q);
/* Where this handle's namespace is served, into buf: "host:port" (on a
 * cluster, the master that owns the namespace's slot, as last known) or the
 * socket path. */
STEPQ_API void stepq_server(const stepq *q, char *buf, size_t len);

/* The channels the phase publishes to, as a JSON array of names. */
STEPQ_API int stepq_event_channels(stepq *q, char **ret_json);

/* Subscribes to the channels of the current phase and calls `fn` with each
 * event (its JSON text), dropping duplicates by event id, until `fn` returns
 * non-zero or `max_events` (>0) were delivered. Blocks. */
typedef int (*stepq_event_fn)(const char *json, size_t len, void *arg);
STEPQ_API int stepq_events_follow(stepq *q, long max_events, stepq_event_fn fn, void *arg);

/* ---------------------------------------------------------------------------
 * The migration engine: backfill, verify, rollback (docs/migration-engine.md)
 *
 * Long walks report progress through a callback, so the library still never
 * prints: `done` and `total` count keys (and members of the big collections),
 * total is an estimate (0 when unknown). A per-key error comes with the key
 * and a message in `err_key`/`err_msg` (both NULL otherwise).
 * ------------------------------------------------------------------------- */

typedef void (*stepq_progress_fn)(long long done, long long total, const char *err_key,
                                  const char *err_msg, void *arg);

typedef struct stepq_backfill_opts {
    long batch;             /* keys per script (1..1000); 0: 100, or 10 with max_latency_ms */
    double rate;            /* keys/s; 0: unlimited (stepq:throttle may override) */
    long max_latency_ms;    /* back off while a PING is slower; 0: off */
    long max_replica_lag;   /* back off while a replica lags more (s); 0: off */
    int dry_run;            /* count what would be copied; write nothing */
    int force;              /* skip the phase and memory preflight checks (audited) */
    int restart;            /* ignore an interrupted run's checkpoint; start over */
    long long memory_limit; /* bytes the copy may grow to; 0: the server's maxmemory */
    long big;               /* collections above this many members merge in chunks; 0: 1000 */
    const char *who;        /* for the audit log when forced; NULL: "unknown" */
    int repair;             /* make every new key equal to its old twin (dual-write only) */
} stepq_backfill_opts;

typedef struct stepq_backfill_result {
    long long keys_total;      /* the estimate the run started with */
    long long keys_done;       /* keys and big-collection members walked */
    long long copied;          /* keys copied whole (COPY, with TTL); with repair: rewritten */
    long long merged;          /* collection members added */
    long long skipped;         /* keys already there */
    long long gone;            /* keys that vanished from the source meanwhile; with repair:
                                  new keys deleted because their old twin is gone */
    long long errors;          /* per-key errors (reported through the callback) */
    long long memory_estimate; /* bytes the copy was estimated to add */
    int resumed;               /* 1: the run went on from a checkpoint */
    /* The preflight: used_memory and the limit it was held against
     * (maxmemory or opts->memory_limit; 0: none), and, for a dry run, why
     * the real run would be refused (empty: it would run). */
    long long memory_used, memory_max;
    char refusal[1024];
} stepq_backfill_result;

/*
 * Copies every key of the old keyspace to its new name (docs/migration-engine.md):
 * one SCAN of the namespace, batches of atomic scripts, the queue collections
 * merged member by member; progress checkpointed in Redis (stepq:backfill)
 * after every batch, so a run that was killed resumes where it stopped.
 * Refuses (STEPQ_E_CONFLICT) unless the stored phase is dual-write or later
 * and no live process is pinned to 'job', and when the estimated copy would
 * pass maxmemory; opts->force skips both. Returns STEPQ_ERR with
 * STEPQ_E_SERVER when per-key errors happened (the run went on; the record
 * says 'failed'). opts may be NULL; fn may be NULL; ret may be NULL.
 *
 * With opts->repair, every new key is made equal to its old twin instead,
 * atomically per pair, and a new key whose old twin is gone is deleted: the
 * way out after a rollback to 'job', which leaves the new keys holding the
 * state of then (marked untrusted; the move to 'dual-read' needs a repair
 * first). Only in 'dual-write', where the old keys are the ones read
 * (STEPQ_E_CONFLICT otherwise, forced or not).
 */
STEPQ_API int stepq_backfill(stepq *q, const stepq_backfill_opts *opts, stepq_progress_fn fn,
                             void *arg, stepq_backfill_result *ret);

typedef struct stepq_verify_opts {
    long batch;            /* pairs per script (1..1000); 0: 100 */
    long sample;           /* verify about this many random keys; 0: all */
    int reverse;           /* new against old (before a rollback into dual-write) */
    long rounds;           /* re-checks of mismatches under live load; 0: 3; -1: none */
    long pause_ms;         /* between re-checks; 0: 200 */
    long ttl_tolerance_ms; /* 0: 2000 */
    long big;            /* collections above this many members are compared in chunks; 0: 10000 */
    double rate;         /* keys/s; 0: unlimited */
    long max_latency_ms; /* back off while a PING is slower; 0: off */
    long first_bad;      /* offending keys kept in the report; 0: 10 */
} stepq_verify_opts;

/*
 * Compares every key of one side with its twin: type, content (digests,
 * computed atomically per pair), TTL within the tolerance, collections member
 * by member; mismatches are re-checked for a few rounds before they count.
 * Writes the report (counts per rule, first offenders, a digest per side) as
 * JSON into ret_json and records it in stepq:verify; *ret_clean is 1 when
 * nothing differs. Each key that still differs is named to fn (err_key,
 * with a name that is not plain ASCII quoted as redis-cli quotes binary,
 * docs/migration-engine.md). ret_json and ret_clean may be NULL.
 */
STEPQ_API int stepq_verify(stepq *q, const stepq_verify_opts *opts, stepq_progress_fn fn, void *arg,
                           int *ret_clean, char **ret_json);

/*
 * Moves the phase one step back and does what that move needs: out of
 * 'step' the old keys are first made equal to the new ones (new is the
 * truth; old keys without a new twin are deleted), and once more after the
 * move; out of 'dual-read' a clean `verify --reverse` is run first
 * (STEPQ_E_CONFLICT when it is not clean); the other moves are moves.
 * STEPQ_E_NOTFOUND in phase 'job'. Writes what was done as JSON.
 */
STEPQ_API int stepq_rollback(stepq *q, const char *who, const char *reason, unsigned flags,
                             stepq_progress_fn fn, void *arg, char **ret_json);

/*
 * Makes every old key equal to its new twin (new is the truth) and deletes
 * old keys without one. Used by stepq_rollback and by moves out of 'step';
 * writes the number of keys rewritten and deleted (either may be NULL).
 */
STEPQ_API int stepq_reconcile_old(stepq *q, stepq_progress_fn fn, void *arg, long long *ret_copied,
                                  long long *ret_deleted);

/* Sets the throttle a running walk reads twice a second: paused (1/0, or -1
 * to leave it) and rate (keys/s; 0: unlimited; -1: leave it; -2: clear the
 * override, back to the walk's own --rate). */
STEPQ_API int stepq_throttle(stepq *q, int paused, double rate);
/* Whether the throttle is paused now: 1/0 into *ret_paused. */
STEPQ_API int stepq_throttle_paused(stepq *q, int *ret_paused);

/* ---------------------------------------------------------------------------
 * Backup, restore and cleanup of the migration (docs/backup.md)
 * ------------------------------------------------------------------------- */

typedef struct stepq_backup_opts {
    int side_new;               /* 0: the old keys (job side), 1: the new ones */
    double rate;                /* keys/s; 0: unlimited (stepq:throttle still applies) */
    stepq_progress_fn progress; /* may be NULL */
    void *arg;
    long big; /* sets and zsets above this many members are backed up in chunks; 0: 1000 */
} stepq_backup_opts;

typedef struct stepq_backup_result {
    long long keys;     /* records written */
    long long vanished; /* keys gone between SCAN and DUMP: skipped */
    long long bytes;    /* size of the file */
    char checksum[17];  /* the trailer's xxh64, hex */
} stepq_backup_result;

/*
 * Writes every key of one side of the key map, with its DUMP payload and
 * absolute expiry, to `path` (docs/backup-format.md): streamed through
 * path.tmp, read back and validated, then renamed into place, and recorded
 * in stepq:backup with verified=1. `opts` and `ret` may be NULL.
 */
STEPQ_API int stepq_backup(stepq *q, const char *path, const stepq_backup_opts *opts,
                           stepq_backup_result *ret);

enum stepq_restore_flags {
    STEPQ_RESTORE_REPLACE = 1 << 0, /* overwrite keys that exist */
    STEPQ_RESTORE_DRY_RUN = 1 << 1, /* check everything, write nothing */
    STEPQ_RESTORE_FORCE = 1 << 2,   /* restore into a side the phase reads (audited) */
};

typedef struct stepq_restore_result {
    long long records;  /* records in the file */
    long long restored; /* keys written (would be, with DRY_RUN) */
    long long expired;  /* skipped: their expiry is already past */
    long long existed;  /* keys that existed (replaced with REPLACE) */
    char side[8];       /* the side the backup holds */
} stepq_restore_result;

/*
 * Restores a backup. The whole file is validated first (and, without
 * REPLACE, every key is checked to be absent); a truncated or corrupt file
 * or an existing key is refused before anything is written (STEPQ_E_INVALID,
 * STEPQ_E_CONFLICT naming the key). Keys whose expiry is past are skipped.
 */
STEPQ_API int stepq_restore(stepq *q, const char *path, unsigned flags, stepq_progress_fn fn,
                            void *arg, stepq_restore_result *ret);

enum stepq_cleanup_flags {
    STEPQ_CLEANUP_FORCE = 1 << 0,   /* delete although old keys seem read (audited) */
    STEPQ_CLEANUP_DRY_RUN = 1 << 1, /* run every check, delete nothing */
    STEPQ_CLEANUP_ADOPT = 1 << 2,   /* move steps only the old side knows to the new side */
};

typedef struct stepq_cleanup_opts {
    unsigned flags;
    double rate;                /* keys/s; 0: unlimited (stepq:throttle still applies) */
    const char *who;            /* for the audit entry of a forced run; NULL: "unknown" */
    stepq_progress_fn progress; /* may be NULL */
    /* Called with each old key kept, and why (the step it would lose). */
    void (*kept)(const char *key, size_t len, const char *why, void *arg);
    void *arg;
} stepq_cleanup_opts;

typedef struct stepq_cleanup_result {
    long long old_keys;      /* old keys found by the checks */
    long long deleted;       /* deleted (would be, with DRY_RUN) */
    long long kept;          /* kept: the new side lacks a step they hold (see `kept`) */
    long long adopted;       /* steps moved to the new side (ADOPT) */
    long long not_in_backup; /* kept: appeared after the check pass (not seen by it) */
    long long gone;          /* vanished meanwhile */
} stepq_cleanup_result;

/*
 * Deletes the old keys after the switch (seed 4.3.5). Refused
 * (STEPQ_E_CONFLICT, nothing deleted) unless the phase is `step`, the backup
 * at `backup_path` is valid, of the old side, of this key map, taken in
 * phase `step`, and holds every old key; and, unless FORCE, while a live
 * process is pinned to a phase that reads old keys or an old key was read
 * after the switch. Deletes with UNLINK in paced batches, only old keys
 * whose new twin exists. `opts` and `ret` may be NULL.
 */
STEPQ_API int stepq_cleanup(stepq *q, const char *backup_path, const stepq_cleanup_opts *opts,
                            stepq_cleanup_result *ret);

#ifdef __cplusplus
}
#endif

#endif /* STEPQ_H */
