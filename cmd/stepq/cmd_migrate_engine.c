/*
 * cmd_migrate_engine.c - `stepq migrate backfill|verify|throttle|rollback`:
 * the operator's side of the migration engine (docs/migration.md). The
 * library does the work and reports progress through a callback; this file
 * draws it (cmd/stepq/progress.c) and maps errors to exit codes.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "migrate_engine.h"
#include "pause_watch.h"
#include "progress.h"
#include "status_doc.h"

enum {
    OPT_RATE = 2000,
    OPT_LATENCY,
    OPT_LAG,
    OPT_DRY,
    OPT_RESTART,
    OPT_LOG,
    OPT_SAMPLE,
    OPT_ROUNDS,
    OPT_TOL,
    OPT_REVERSE,
    OPT_PAUSE,
    OPT_RESUME,
    OPT_CLEAR,
    OPT_REASON,
    OPT_RECONCILE,
    OPT_REPAIR
};

/* The progress display starts with the first report, so that a refusal
 * (which does no work) prints its message alone. */
struct prog {
    progress *p;
    const char *what;
    enum progress_mode mode;
    long long log_every, done;
    const struct cli *cli;     /* to watch the throttle with (NULL: not) */
    struct pause_watch *watch; /* started with the display */
};

/* Ends the display: at 100 % when the walk completed. */
static void prog_end(struct prog *pr, long long done, const char *summary, int completed)
{
    pause_watch_stop(pr->watch);
    pr->watch = NULL;
    if (pr->p == NULL)
        return;
    if (completed)
        progress_finish_done(pr->p, done, summary);
    else
        progress_finish(pr->p, done, summary);
    pr->p = NULL;
}

static void on_progress(long long done, long long total, const char *key, const char *msg,
                        void *arg)
{
    struct prog *pr = arg;

    if (pr->p == NULL) {
        pr->p = progress_new(pr->what, total, pr->mode, pr->log_every);
        if (pr->cli != NULL)
            pr->watch = pause_watch_start(pr->cli, pr->p);
    }
    if (key != NULL) {
        progress_error(pr->p, key, msg);
        return;
    }
    pr->done = done;
    progress_set_total(pr->p, total);
    progress_update(pr->p, done);
}

static double parse_rate(const char *usage, const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (*s == '\0' || *end != '\0' || v < 0 || v > 1e9)
        exit(cli_usage_error(usage, "invalid rate '%s'; use keys per second, 0 for unlimited", s));
    return v;
}

/* ---------------------------------------------------------------------------
 * backfill
 * ------------------------------------------------------------------------- */

static const char backfill_usage[] =
    "usage: stepq migrate backfill [--batch N] [--rate KEYS_PER_S] [--max-latency-ms N]\n"
    "                              [--max-replica-lag S] [--dry-run] [--force] [--restart]\n"
    "                              [--repair] [--json] [--log-every N]\n"
    "Copies every old key (job:*, the queues, worker:{id}:jobs) to its new name with\n"
    "SCAN and atomic batches; resumes an interrupted run from its checkpoint. Needs\n"
    "phase dual-write or later (exit 4 otherwise) and room under maxmemory (--force\n"
    "overrides both, audited). Pause, resume or re-rate it while it runs with\n"
    "'stepq migrate throttle'. Batches are 100 keys, or 10 with --max-latency-ms so\n"
    "that no script holds Redis for long. Exit 1 when any key failed. Never in phase\n"
    "'step' (the old keys are stale there).\n"
    "--repair makes every new key equal to its old twin (and deletes new keys whose\n"
    "old twin is gone), atomically per pair, while writers run: the way out of a\n"
    "verify that found differences, and needed after a rollback to 'job' before\n"
    "'dual-read'. Only in phase 'dual-write'.\n"
    "--dry-run writes nothing, walks the keys, and prints the memory preflight (used,\n"
    "the copy's estimate, maxmemory) and its verdict: exit 4 when the real run would\n"
    "be refused.\n";

static char *backfill_summary(const stepq_backfill_result *r, int dry)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b}", "keys_total",
                          (json_int_t)r->keys_total, "keys_done", (json_int_t)r->keys_done,
                          "copied", (json_int_t)r->copied, "merged", (json_int_t)r->merged,
                          "skipped", (json_int_t)r->skipped, "gone", (json_int_t)r->gone, "errors",
                          (json_int_t)r->errors, "memory_estimate", (json_int_t)r->memory_estimate,
                          "resumed", r->resumed, "dry_run", dry);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* The memory preflight of a dry run, and its verdict: what the real run
 * would meet. Returns EXIT_REFUSED when it would be refused. */
static int print_preflight(const stepq_backfill_result *r, enum progress_mode mode)
{
    int refused = r->refusal[0] != '\0';

    if (mode == PROGRESS_JSON) {
        json_t *o =
            json_pack("{s:s, s:I, s:I, s:I, s:s, s:s?}", "event", "preflight", "memory_used",
                      (json_int_t)r->memory_used, "memory_estimate", (json_int_t)r->memory_estimate,
                      "maxmemory", (json_int_t)r->memory_max, "verdict", refused ? "refused" : "ok",
                      "refusal", refused ? r->refusal : NULL);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s != NULL)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        char max[64];
        if (r->memory_max > 0)
            snprintf(max, sizeof(max), "%.1f MiB", (double)r->memory_max / 1048576.0);
        else
            snprintf(max, sizeof(max), "none (0)");
        printf("preflight: memory used %.1f MiB, copy adds about %.1f MiB, maxmemory %s\n"
               "verdict:   %s%s\n",
               (double)r->memory_used / 1048576.0, (double)r->memory_estimate / 1048576.0, max,
               refused ? "the real run would be refused: " : "the real run would start",
               refused ? r->refusal : "");
    }
    return refused ? EXIT_REFUSED : EXIT_DONE;
}

int migrate_backfill(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"batch", required_argument, NULL, 'b'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"max-latency-ms", required_argument, NULL, OPT_LATENCY},
        {"max-replica-lag", required_argument, NULL, OPT_LAG},
        {"dry-run", no_argument, NULL, OPT_DRY},
        {"force", no_argument, NULL, 'f'},
        {"restart", no_argument, NULL, OPT_RESTART},
        {"repair", no_argument, NULL, OPT_REPAIR},
        {"json", no_argument, NULL, 'j'},
        {"log-every", required_argument, NULL, OPT_LOG},
        {NULL, 0, NULL, 0},
    };
    stepq_backfill_opts o = {0};
    stepq_backfill_result res = {0};
    enum progress_mode mode = PROGRESS_AUTO;
    long long log_every = 10000;
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "b:fj", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            o.batch = cli_long(backfill_usage, "batch", optarg, 1, 1000);
            break;
        case OPT_RATE:
            o.rate = parse_rate(backfill_usage, optarg);
            break;
        case OPT_LATENCY:
            o.max_latency_ms = cli_long(backfill_usage, "max-latency-ms", optarg, 1, 600000);
            break;
        case OPT_LAG:
            o.max_replica_lag = cli_long(backfill_usage, "max-replica-lag", optarg, 1, 86400);
            break;
        case OPT_DRY:
            o.dry_run = 1;
            break;
        case 'f':
            o.force = 1;
            break;
        case OPT_RESTART:
            o.restart = 1;
            break;
        case OPT_REPAIR:
            o.repair = 1;
            break;
        case 'j':
            mode = PROGRESS_JSON;
            break;
        case OPT_LOG:
            log_every = cli_long(backfill_usage, "log-every", optarg, 1, 1000000000);
            break;
        default:
            if (!cli_common_opt(cli, c, backfill_usage))
                return cli_usage_error(backfill_usage, "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error(backfill_usage, "unexpected argument '%s'", argv[optind]);
    o.who = migrate_operator();
    stepq *q = cli_connect(cli, "stepq-backfill");
    struct prog pr = {NULL, "backfill", mode, log_every, 0, cli, NULL};
    int rc = stepq_backfill(q, &o, on_progress, &pr, &res) == STEPQ_OK
                 ? EXIT_DONE
                 : cli_exit_code(stepq_err(q));
    /* A refusal did no work: its message is the whole story. */
    char *sum = rc == EXIT_REFUSED || rc == EXIT_USAGE ? NULL : backfill_summary(&res, o.dry_run);
    prog_end(&pr, res.keys_done, sum, rc == EXIT_DONE);
    free(sum);
    if (rc != EXIT_DONE)
        cli_fail(q, "backfill");
    else if (o.dry_run && !o.repair)
        rc = print_preflight(&res, mode);
    stepq_free(q);
    return rc;
}

/* ---------------------------------------------------------------------------
 * verify
 * ------------------------------------------------------------------------- */

static void print_verify_text(const char *json)
{
    json_t *o = json_loads(json, 0, NULL), *v;
    size_t i;

    if (o == NULL) {
        puts(json);
        return;
    }
    printf("verify %s%s: %s\n", json_is_true(json_object_get(o, "reverse")) ? "--reverse " : "",
           json_integer_value(json_object_get(o, "sample")) ? "(sample)" : "(all keys)",
           json_is_true(json_object_get(o, "clean")) ? "clean" : "DIFFERENCES FOUND");
    printf("%-14s %10s %10s %10s %8s %10s %8s\n", "rule", "old", "new", "equal", "missing",
           "different", "ttl_off");
    json_array_foreach(json_object_get(o, "rules"), i, v)
    {
        printf("%-14s %10lld %10lld %10lld %8lld %10lld %8lld\n",
               json_string_value(json_object_get(v, "rule")),
               (long long)json_integer_value(json_object_get(v, "old")),
               (long long)json_integer_value(json_object_get(v, "new")),
               (long long)json_integer_value(json_object_get(v, "equal")),
               (long long)json_integer_value(json_object_get(v, "missing")),
               (long long)json_integer_value(json_object_get(v, "different")),
               (long long)json_integer_value(json_object_get(v, "ttl_off")));
    }
    printf("digest old %s  new %s\n", json_string_value(json_object_get(o, "digest_old")),
           json_string_value(json_object_get(o, "digest_new")));
    json_array_foreach(json_object_get(o, "first_bad"), i, v)
    {
        printf("  %s\n", json_string_value(v));
    }
    long long unmapped = (long long)json_integer_value(json_object_get(o, "unmapped"));
    if (unmapped > 0)
        printf("unmapped: %lld key(s) look like old keys but no rule of the key map maps them "
               "(named above); rename or delete them, or map them in a rules file, then run "
               "'stepq migrate backfill' and verify again\n",
               unmapped);
    json_decref(o);
}

int migrate_verify(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate verify [--reverse] [--sample N] [--batch N] [--rounds N]\n"
        "                            [--ttl-tolerance-ms N] [--rate KEYS_PER_S] [--json]\n"
        "Compares every old key with its new twin (--reverse: every new key with its old\n"
        "twin, before a rollback into dual-write): type, content, TTL; collections member\n"
        "by member. Mismatches are re-checked --rounds times before they count. Prints\n"
        "counts per rule and the first offending keys; records the result for 'status'.\n"
        "Exit 1 when anything differs, or when a key looks old but no rule maps it.\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"reverse", no_argument, NULL, OPT_REVERSE},
        {"sample", required_argument, NULL, OPT_SAMPLE},
        {"batch", required_argument, NULL, 'b'},
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"ttl-tolerance-ms", required_argument, NULL, OPT_TOL},
        {"rate", required_argument, NULL, OPT_RATE},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    stepq_verify_opts o = {0};
    int as_json = 0, c, clean = 0;
    char *json = NULL;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "b:j", opts, NULL)) != -1) {
        switch (c) {
        case OPT_REVERSE:
            o.reverse = 1;
            break;
        case OPT_SAMPLE:
            o.sample = cli_long(usage, "sample", optarg, 1, 10000000);
            break;
        case 'b':
            o.batch = cli_long(usage, "batch", optarg, 1, 1000);
            break;
        case OPT_ROUNDS:
            /* 0 rounds is asked for as -1 (0 means the default in opts). */
            o.rounds = cli_long(usage, "rounds", optarg, 0, 100);
            if (o.rounds == 0)
                o.rounds = -1;
            break;
        case OPT_TOL:
            o.ttl_tolerance_ms = cli_long(usage, "ttl-tolerance-ms", optarg, 1, 3600000);
            break;
        case OPT_RATE:
            o.rate = parse_rate(usage, optarg);
            break;
        case 'j':
            as_json = 1;
            break;
        default:
            if (!cli_common_opt(cli, c, usage))
                return cli_usage_error(usage, "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-verify");
    struct prog pr = {NULL, "verify", as_json ? PROGRESS_QUIET : PROGRESS_AUTO, 10000, 0,
                      cli,  NULL};
    int rc = stepq_verify(q, &o, on_progress, &pr, &clean, &json) == STEPQ_OK
                 ? EXIT_DONE
                 : cli_fail(q, "verify");
    prog_end(&pr, pr.done, NULL, rc == EXIT_DONE);
    if (rc == EXIT_DONE) {
        if (as_json)
            puts(json);
        else
            print_verify_text(json);
        rc = clean ? EXIT_DONE : EXIT_FAILED;
    }
    stepq_str_free(json);
    stepq_free(q);
    return rc;
}

/* ---------------------------------------------------------------------------
 * rollback
 * ------------------------------------------------------------------------- */

int migrate_rollback(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate rollback [--force] [--reconcile] [--reason TEXT] [--json]\n"
        "Moves the phase one step back and does what that move needs: out of 'step' the\n"
        "old keys are rewritten from the new ones (old keys without a new twin are\n"
        "deleted; a live step only the old keys hold refuses the rollback, named, unless\n"
        "--force); out of 'dual-read' a 'verify --reverse' must come out clean (exit 4\n"
        "otherwise; --reconcile first makes the old keys equal to the new ones, which are\n"
        "the ones read there); back to 'job' the new keys stay for a later retry. Exit 3\n"
        "in 'job'.\n"
        "A rollback out of 'step' stopped between its two passes ('reconciling' in\n"
        "'migrate status') is finished by running it again; that run moves no further.\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"force", no_argument, NULL, 'f'},
        {"reconcile", no_argument, NULL, OPT_RECONCILE},
        {"reason", required_argument, NULL, OPT_REASON},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *reason = NULL;
    unsigned flags = 0;
    int as_json = 0, c;
    char *json = NULL;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "fj", opts, NULL)) != -1) {
        if (c == 'f')
            flags |= STEPQ_MOVE_FORCE;
        else if (c == OPT_RECONCILE)
            flags |= STEPQ_MOVE_RECONCILE;
        else if (c == OPT_REASON)
            reason = optarg;
        else if (c == 'j')
            as_json = 1;
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-migrate");
    struct prog pr = {NULL, "rollback", as_json ? PROGRESS_QUIET : PROGRESS_AUTO, 10000, 0};
    int rc =
        stepq_rollback(q, migrate_operator(), reason, flags, on_progress, &pr, &json) == STEPQ_OK
            ? EXIT_DONE
            : cli_fail(q, "rollback");
    if (pr.p != NULL)
        progress_finish(pr.p, pr.done, NULL);
    if (rc == EXIT_DONE) {
        if (as_json) {
            puts(json);
        } else {
            json_t *o = json_loads(json, 0, NULL);
            printf("phase: %s (was %s)\n", json_string_value(json_object_get(o, "to")),
                   json_string_value(json_object_get(o, "from")));
            if (json_object_get(o, "old_rewritten"))
                printf("old keys rewritten from new: %lld, deleted: %lld\n",
                       (long long)json_integer_value(json_object_get(o, "old_rewritten")),
                       (long long)json_integer_value(json_object_get(o, "old_deleted")));
            json_t *only = json_object_get(o, "old_only_keys"), *k;
            size_t i;
            if (only != NULL) {
                printf("live steps only the old keys held, %s:",
                       json_object_get(o, "old_only_deleted") ? "deleted (forced)" : "kept");
                json_array_foreach(only, i, k) printf(" %s", json_string_value(k));
                printf("\n");
            }
            if (json_object_get(o, "finished"))
                printf("finished: %s\n", json_string_value(json_object_get(o, "finished")));
            if (json_object_get(o, "note"))
                printf("note: %s\n", json_string_value(json_object_get(o, "note")));
            json_decref(o);
        }
    }
    stepq_str_free(json);
    stepq_free(q);
    return rc;
}

/* ---------------------------------------------------------------------------
 * throttle
 * ------------------------------------------------------------------------- */

int migrate_throttle(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate throttle [--pause | --resume] [--rate KEYS_PER_S | --clear]\n"
        "Pauses, resumes or re-rates a running backfill, verify or cleanup (read twice a\n"
        "second from stepq:throttle). --clear drops the rate override. Without options,\n"
        "prints the throttle.\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"pause", no_argument, NULL, OPT_PAUSE},
        {"resume", no_argument, NULL, OPT_RESUME},
        {"rate", required_argument, NULL, OPT_RATE},
        {"clear", no_argument, NULL, OPT_CLEAR},
        {NULL, 0, NULL, 0},
    };
    int paused = -1, c, any = 0;
    double rate = -1;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (c == OPT_PAUSE || c == OPT_RESUME) {
            if (paused >= 0)
                return cli_usage_error(usage, "give one of --pause and --resume");
            paused = c == OPT_PAUSE;
        } else if (c == OPT_RATE || c == OPT_CLEAR) {
            if (rate != -1)
                return cli_usage_error(usage, "give one of --rate and --clear");
            rate = c == OPT_CLEAR ? -2 : parse_rate(usage, optarg);
        } else if (!cli_common_opt(cli, c, usage)) {
            return cli_usage_error(usage, "unknown option");
        }
        any = 1;
    }
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-migrate");
    int rc = EXIT_DONE;
    if (any && stepq_throttle(q, paused, rate) != STEPQ_OK)
        rc = cli_fail(q, "throttle");
    char *json = NULL;
    if (rc == EXIT_DONE && stepq_status(q, &json) == STEPQ_OK) {
        json_t *o = json_loads(json, 0, NULL);
        json_t *t = json_object_get(o, "throttle");
        if (cli->json) {
            cli_print_value(status_throttle_record(t));
        } else {
            char *s = t ? json_dumps(t, JSON_COMPACT) : NULL;
            printf("throttle: %s\n", s ? s : "{}");
            free(s);
        }
        json_decref(o);
        stepq_str_free(json);
    } else if (rc == EXIT_DONE) {
        rc = cli_fail(q, "throttle");
    }
    stepq_free(q);
    return rc;
}
