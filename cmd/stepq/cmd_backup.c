/*
 * cmd_backup.c - `stepq migrate backup`, `restore` and `cleanup`
 * (docs/backup.md): the operator's side of src/backup.c and src/cleanup.c.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "cli.h"
#include "migrate_engine.h"
#include "pause_watch.h"
#include "progress.h"

#define KEPT_SHOWN 10

/* Options every walk here takes: how to show progress. */
enum {
    OPT_JSON = 2000,
    OPT_QUIET,
    OPT_RATE,
    OPT_SIDE,
    OPT_REPLACE,
    OPT_DRY,
    OPT_FORCE,
    OPT_OUT,
    OPT_ADOPT,
    OPT_BIG
};

static void on_progress(long long done, long long total, const char *err_key, const char *err_msg,
                        void *arg)
{
    progress *p = arg;

    /* Backup, restore and cleanup report per-key trouble in their result,
     * not through the callback. */
    (void)err_key;
    (void)err_msg;
    progress_set_total(p, total);
    progress_update(p, done);
}

/* Parses the common --json/--quiet/--rate options; 1 when `c` was one. */
static int walk_opt(int c, enum progress_mode *mode, double *rate, const char *usage)
{
    switch (c) {
    case 'j': /* --json is a common option (cli.h): the first entry wins */
    case OPT_JSON:
        *mode = PROGRESS_JSON;
        return 1;
    case OPT_QUIET:
        *mode = PROGRESS_QUIET;
        return 1;
    case OPT_RATE:
        *rate = (double)cli_long(usage, "rate", optarg, 0, 100000000);
        return 1;
    default:
        return 0;
    }
}

#define WALK_OPTS                                                                                  \
    {"json", no_argument, NULL, OPT_JSON}, {"quiet", no_argument, NULL, OPT_QUIET},                \
    {                                                                                              \
        "rate", required_argument, NULL, OPT_RATE                                                  \
    }

int migrate_backup(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate backup --out FILE [--side old|new] [--rate N] [--big N]\n"
        "                            [--json|--quiet]\n"
        "Writes every key of one side of the key map (default: old), with its DUMP payload\n"
        "and absolute expiry, to FILE (zstd, docs/backup-format.md); reads it back to check\n"
        "it, then records it in stepq:backup. --rate limits keys per second. A set or zset\n"
        "of more than --big members (default 1000) is read and written in chunks of\n"
        "members, its expiry last.\n";
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         WALK_OPTS,
                                         {"out", required_argument, NULL, OPT_OUT},
                                         {"side", required_argument, NULL, OPT_SIDE},
                                         {"big", required_argument, NULL, OPT_BIG},
                                         {NULL, 0, NULL, 0}};
    stepq_backup_opts o = {0};
    stepq_backup_result res;
    enum progress_mode mode = PROGRESS_AUTO;
    const char *out = NULL;
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (c == OPT_OUT)
            out = optarg;
        else if (c == OPT_BIG)
            o.big = cli_long(usage, "big", optarg, 1, 1000000000);
        else if (c == OPT_SIDE && (strcmp(optarg, "old") == 0 || strcmp(optarg, "new") == 0))
            o.side_new = strcmp(optarg, "new") == 0;
        else if (c == OPT_SIDE)
            return cli_usage_error(usage, "unknown side '%s'; expected old or new", optarg);
        else if (!walk_opt(c, &mode, &o.rate, usage) && !cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (out == NULL)
        return cli_usage_error(usage, "--out FILE is required");
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-backup");
    progress *p = progress_new("backup", 0, mode, 10000);
    struct pause_watch *watch = pause_watch_start(cli, p);
    o.progress = on_progress;
    o.arg = p;
    int ok = stepq_backup(q, out, &o, &res) == STEPQ_OK;
    pause_watch_stop(watch);
    if (!ok) {
        progress_finish(p, 0, NULL);
        int rc = cli_fail(q, "backup");
        stepq_free(q);
        return rc;
    }
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:b}", "file", out, "side",
                          o.side_new ? "new" : "old", "keys", (json_int_t)res.keys, "vanished",
                          (json_int_t)res.vanished, "bytes", (json_int_t)res.bytes, "checksum",
                          res.checksum, "verified", 1);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    progress_finish_done(p, res.keys, mode == PROGRESS_JSON ? s : NULL);
    free(s);
    json_decref(j);
    if (mode != PROGRESS_JSON)
        printf("backup: %lld %s keys to '%s' (%lld bytes, checksum %s), verified; %lld "
               "vanished during the walk\n",
               res.keys, o.side_new ? "new" : "old", out, res.bytes, res.checksum, res.vanished);
    stepq_free(q);
    return EXIT_DONE;
}

int migrate_restore(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate restore FILE [--replace] [--force] [--dry-run] [--json|--quiet]\n"
        "Restores a backup. The whole file is checked first (a truncated or corrupt file is\n"
        "refused), and without --replace every key must be absent: nothing is written\n"
        "unless all of it can be. Keys whose expiry is past are skipped. A backup is an old\n"
        "state, so it goes only where stepq does not read it: old keys in phase 'step'\n"
        "(the rollback then rewrites them from the new ones), new keys in 'job' or\n"
        "'dual-write' (then untrusted until 'backfill --repair'); --force restores\n"
        "anyway (a disaster recovery, audited).\n";
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         WALK_OPTS,
                                         {"replace", no_argument, NULL, OPT_REPLACE},
                                         {"force", no_argument, NULL, OPT_FORCE},
                                         {"dry-run", no_argument, NULL, OPT_DRY},
                                         {NULL, 0, NULL, 0}};
    enum progress_mode mode = PROGRESS_AUTO;
    stepq_restore_result res;
    unsigned flags = 0;
    double rate = 0;
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (c == OPT_REPLACE)
            flags |= STEPQ_RESTORE_REPLACE;
        else if (c == OPT_FORCE)
            flags |= STEPQ_RESTORE_FORCE;
        else if (c == OPT_DRY)
            flags |= STEPQ_RESTORE_DRY_RUN;
        else if (!walk_opt(c, &mode, &rate, usage) && !cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (argc - optind != 1)
        return cli_usage_error(usage, "expected one backup FILE");
    stepq *q = cli_connect(cli, "stepq-restore");
    progress *p = progress_new("restore", 0, mode, 10000);
    int ok = stepq_restore(q, argv[optind], flags, on_progress, p, &res) == STEPQ_OK;
    int rc = EXIT_DONE;
    if (ok) {
        json_t *j =
            json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "file", argv[optind], "side", res.side,
                      "records", (json_int_t)res.records, "restored", (json_int_t)res.restored,
                      "expired", (json_int_t)res.expired, "existed", (json_int_t)res.existed,
                      "dry_run", (flags & STEPQ_RESTORE_DRY_RUN) != 0);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        progress_finish(p, res.restored, mode == PROGRESS_JSON ? s : NULL);
        free(s);
        json_decref(j);
        if (mode != PROGRESS_JSON)
            printf("restore%s: %lld records (%s side), %s %lld, %lld skipped as expired, %lld "
                   "existed%s\n",
                   flags & STEPQ_RESTORE_DRY_RUN ? " (dry run, nothing written)" : "", res.records,
                   res.side, flags & STEPQ_RESTORE_DRY_RUN ? "would restore" : "restored",
                   res.restored, res.expired, res.existed,
                   flags & STEPQ_RESTORE_REPLACE ? " (replaced)" : " (kept as they were)");
    } else {
        progress_finish(p, 0, NULL);
        rc = cli_fail(q, "restore");
    }
    stepq_free(q);
    return rc;
}

struct kept_report {
    progress *p;
    long long n;
};

static void on_kept(const char *key, size_t len, const char *why, void *arg)
{
    struct kept_report *k = arg;
    char name[256], msg[256];

    if (k->n++ >= KEPT_SHOWN)
        return;
    snprintf(name, sizeof(name), "%.*s", (int)len, key);
    snprintf(msg, sizeof(msg), "kept: %s", why);
    progress_error(k->p, name, msg);
}

static void on_cleanup_progress(long long done, long long total, const char *err_key,
                                const char *err_msg, void *arg)
{
    on_progress(done, total, err_key, err_msg, ((struct kept_report *)arg)->p);
}

static void cleanup_summary(progress *p, const stepq_cleanup_result *res, unsigned flags,
                            enum progress_mode mode)
{
    json_t *j =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "old_keys", (json_int_t)res->old_keys,
                  "deleted", (json_int_t)res->deleted, "kept", (json_int_t)res->kept, "adopted",
                  (json_int_t)res->adopted, "not_in_backup", (json_int_t)res->not_in_backup, "gone",
                  (json_int_t)res->gone, "dry_run", (flags & STEPQ_CLEANUP_DRY_RUN) != 0);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

    progress_finish_done(p, res->deleted + res->kept + res->gone + res->not_in_backup,
                         mode == PROGRESS_JSON ? s : NULL);
    free(s);
    json_decref(j);
    if (mode != PROGRESS_JSON)
        printf("cleanup%s: %lld old keys, %s %lld, kept %lld holding steps the new side lacks, "
               "%s %lld such steps, kept %lld written after the checks, %lld already gone\n",
               flags & STEPQ_CLEANUP_DRY_RUN ? " (dry run, nothing deleted)" : "", res->old_keys,
               flags & STEPQ_CLEANUP_DRY_RUN ? "would delete" : "deleted", res->deleted, res->kept,
               flags & STEPQ_CLEANUP_DRY_RUN ? "would adopt" : "adopted", res->adopted,
               res->not_in_backup, res->gone);
}

int migrate_cleanup(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate cleanup --backup FILE [--adopt] [--rate N] [--force] [--dry-run]\n"
        "                             [--json|--quiet]\n"
        "Deletes the old keys (UNLINK, in paced batches), deciding from the records: a step's\n"
        "old keys go when the new side knows where the step is, or when it ended; an old\n"
        "collection goes when every member does. Only in phase 'step', with a backup of the\n"
        "old keys taken in that phase that holds every old key; refused (exit 4) while a live\n"
        "process is pinned to a phase that reads old keys or old keys were read after the\n"
        "switch (--force overrides these two, audited). Exit 1 when old keys were kept\n"
        "because they hold steps the new side lacks (written by the old application after\n"
        "the switch); --adopt moves those steps to the new side as pending, then deletes.\n";
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         WALK_OPTS,
                                         {"backup", required_argument, NULL, OPT_OUT},
                                         {"force", no_argument, NULL, OPT_FORCE},
                                         {"dry-run", no_argument, NULL, OPT_DRY},
                                         {"adopt", no_argument, NULL, OPT_ADOPT},
                                         {NULL, 0, NULL, 0}};
    enum progress_mode mode = PROGRESS_AUTO;
    stepq_cleanup_opts o = {0};
    stepq_cleanup_result res;
    const char *backup = NULL;
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (c == OPT_OUT)
            backup = optarg;
        else if (c == OPT_FORCE)
            o.flags |= STEPQ_CLEANUP_FORCE;
        else if (c == OPT_ADOPT)
            o.flags |= STEPQ_CLEANUP_ADOPT;
        else if (c == OPT_DRY)
            o.flags |= STEPQ_CLEANUP_DRY_RUN;
        else if (!walk_opt(c, &mode, &o.rate, usage) && !cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (backup == NULL)
        return cli_usage_error(usage, "--backup FILE is required: cleanup needs a backup of "
                                      "the old keys ('stepq migrate backup --out FILE')");
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-cleanup");
    struct kept_report k = {progress_new("cleanup", 0, mode, 10000), 0};
    struct pause_watch *watch = pause_watch_start(cli, k.p);
    o.who = migrate_operator();
    o.progress = on_cleanup_progress;
    o.kept = on_kept;
    o.arg = &k;
    int ok = stepq_cleanup(q, backup, &o, &res) == STEPQ_OK;
    pause_watch_stop(watch);
    int rc = EXIT_DONE;
    if (ok) {
        cleanup_summary(k.p, &res, o.flags, mode);
        if (res.kept > 0) {
            fprintf(stderr,
                    "stepq: cleanup: %lld old keys were kept because they hold steps the new "
                    "side lacks (the first %d are named above): something wrote them after the "
                    "switch (is the old application still running?); stop that writer, then "
                    "run 'stepq migrate cleanup --adopt' to move those steps to the new side\n",
                    res.kept, KEPT_SHOWN);
            rc = EXIT_FAILED;
        }
    } else {
        progress_finish(k.p, 0, NULL);
        rc = cli_fail(q, "cleanup");
    }
    stepq_free(q);
    return rc;
}
