/*
 * cmd_migrate.c - `stepq migrate ...`: the operator's side of the key
 * migration. Each subcommand is one function; the table below dispatches.
 */
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "all_ns.h"
#include "cli.h"
#include "migrate_engine.h"
#include "status_doc.h"

/* Who is acting, for the audit log: $STEPQ_OPERATOR, else the login name. */
const char *migrate_operator(void)
{
    const char *who = getenv("STEPQ_OPERATOR");
    struct passwd *pw;

    if (who != NULL && *who != '\0')
        return who;
    pw = getpwuid(getuid());
    return pw ? pw->pw_name : "unknown";
}

static int migrate_phase(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate phase [PHASE] [--force] [--reason TEXT] [--json]\n"
        "Without PHASE, prints the stored phase. With PHASE, moves it one step forward or\n"
        "back (job, dual-write, dual-read, step-primary, step); --force skips the rules\n"
        "and is written to the audit log. Exit 4 when the move is refused.\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"force", no_argument, NULL, 'f'},
        {"reason", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    const char *reason = NULL;
    unsigned flags = 0;
    stepq_phase to, cur;
    char err[256];
    int c, rc;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "fr:", opts, NULL)) != -1) {
        if (c == 'f')
            flags |= STEPQ_MOVE_FORCE;
        else if (c == 'r')
            reason = optarg;
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (argc - optind > 1)
        return cli_usage_error(usage, "expected at most one phase");
    if (argc - optind == 1 && stepq_phase_parse(argv[optind], &to, err, sizeof(err)) != STEPQ_OK)
        return cli_usage_error(usage, "%s", err);
    stepq *q = cli_connect(cli, "stepq-migrate");
    if (argc - optind == 0) {
        rc = stepq_phase_get(q, &cur) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "phase");
        if (rc == EXIT_DONE && cli->json)
            cli_print_value(json_pack("{s:s}", "phase", stepq_phase_name(cur)));
        else if (rc == EXIT_DONE)
            puts(stepq_phase_name(cur));
    } else {
        rc = stepq_phase_get(q, &cur) == STEPQ_OK &&
                     stepq_phase_move(q, to, migrate_operator(), reason, flags) == STEPQ_OK
                 ? EXIT_DONE
                 : cli_fail(q, "phase");
        if (rc == EXIT_DONE && cli->json)
            cli_print_value(json_pack("{s:s, s:s}", "from", stepq_phase_name(cur), "phase",
                                      stepq_phase_name(to)));
        else if (rc == EXIT_DONE)
            printf("phase: %s\n", stepq_phase_name(to));
    }
    stepq_free(q);
    return rc;
}

static void print_status_text(const char *json)
{
    json_t *o = json_loads(json, 0, NULL), *v;
    size_t i;

    if (o == NULL) {
        puts(json);
        return;
    }
    json_t *ph = json_object_get(o, "phase");
    printf("phase      %s (pin of this process: %s)\n",
           json_string_value(json_object_get(ph, "phase")),
           json_string_value(json_object_get(ph, "pin")));
    if (json_object_get(ph, "reconciling") != NULL)
        printf("           a rollback out of 'step' is unfinished (reconciling): run 'stepq "
               "migrate rollback' to finish it\n");
    if (json_object_get(ph, "untrusted_since") != NULL)
        printf("           the new keys are untrusted since the rollback to 'job': run 'stepq "
               "migrate backfill --repair' in dual-write\n");
    json_t *marks = json_object_get(o, "restoring");
    if (json_integer_value(json_object_get(marks, "keys")) > 0)
        printf("           %lld keys were left partly written by a restore that did not finish "
               "(first: %s): run the restore of the same backup again with --replace, or delete "
               "each key and its mark (HDEL %s KEY)\n",
               (long long)json_integer_value(json_object_get(marks, "keys")),
               json_string_value(json_array_get(json_object_get(marks, "first"), 0)),
               json_string_value(json_object_get(marks, "hash")));
    printf("\n%-14s %-7s %-22s %10s   %-22s %10s\n", "rule", "type", "old", "keys", "new", "keys");
    json_array_foreach(json_object_get(o, "keys"), i, v)
    {
        printf("%-14s %-7s %-22s %10lld   %-22s %10lld\n",
               json_string_value(json_object_get(v, "rule")),
               json_string_value(json_object_get(v, "type")),
               json_string_value(json_object_get(v, "old")),
               (long long)json_integer_value(json_object_get(v, "old_keys")),
               json_string_value(json_object_get(v, "new")),
               (long long)json_integer_value(json_object_get(v, "new_keys")));
    }
    const char *k;
    printf("\ncounters  ");
    json_object_foreach(json_object_get(o, "counters"), k, v)
    {
        printf(" %s=%lld", k, (long long)json_integer_value(v));
    }
    /* The migration engine's records (cmd_migrate_engine.c writes them). */
    json_t *bf = json_object_get(o, "backfill"), *vf = json_object_get(o, "verify");
    if (json_object_size(bf) > 0)
        printf("\n\nbackfill   %s: %lld/%lld keys, copied %lld, merged %lld, errors %lld",
               json_string_value(json_object_get(bf, "state")),
               (long long)json_integer_value(json_object_get(bf, "keys_done")),
               (long long)json_integer_value(json_object_get(bf, "keys_total")),
               (long long)json_integer_value(json_object_get(bf, "copied")),
               (long long)json_integer_value(json_object_get(bf, "merged")),
               (long long)json_integer_value(json_object_get(bf, "errors")));
    if (json_object_size(vf) > 0)
        printf("\nverify     %s%s: equal %lld, missing %lld, different %lld, ttl_off %lld%s%s",
               json_integer_value(json_object_get(vf, "clean")) ? "clean" : "NOT clean",
               json_integer_value(json_object_get(vf, "reverse")) ? " (reverse)" : "",
               (long long)json_integer_value(json_object_get(vf, "equal")),
               (long long)json_integer_value(json_object_get(vf, "missing")),
               (long long)json_integer_value(json_object_get(vf, "different")),
               (long long)json_integer_value(json_object_get(vf, "ttl_off")),
               json_string_length(json_object_get(vf, "first_bad")) ? "; first: " : "",
               json_string_length(json_object_get(vf, "first_bad"))
                   ? json_string_value(json_object_get(vf, "first_bad"))
                   : "");
    printf("\n\nprocesses (%zu live)\n", json_array_size(json_object_get(o, "processes")));
    json_array_foreach(json_object_get(o, "processes"), i, v)
    {
        printf("  %-40s %-8s phase=%s\n", json_string_value(json_object_get(v, "id")),
               json_string_value(json_object_get(v, "kind")),
               json_string_value(json_object_get(v, "phase")));
    }
    printf("\naudit (last %zu)\n", json_array_size(json_object_get(o, "audit")));
    json_array_foreach(json_object_get(o, "audit"), i, v)
    {
        char *line = json_dumps(v, JSON_COMPACT);
        printf("  %s\n", line ? line : "?");
        free(line);
    }
    json_decref(o);
}

/* One namespace's row of `status --all-namespaces`: its phase and key
 * counts from stepq_status, and the node that serves it. NULL (with *rc
 * set, the error printed) when it could not be read. */
static json_t *status_row(const struct cli *cli, const char *ns, int *rc)
{
    stepq_options o = {.namespace_ = ns, .client_name = "stepq-migrate"};
    char *json = NULL, node[300] = "";
    json_t *row = NULL, *v;
    size_t i;

    o.rules_file = cli->rules ? cli->rules : getenv("STEPQ_RULES");
    stepq *q = stepq_connect(cli->url ? cli->url : getenv("REDIS_URL"), &o);
    if (q == NULL || stepq_status(q, &json) != STEPQ_OK) {
        fprintf(stderr, "stepq: status of namespace '%s': %s\n", ns,
                q ? stepq_errstr(q) : "out of memory");
        *rc = q ? cli_exit_code(stepq_err(q)) : EXIT_FAILED;
        stepq_free(q);
        return NULL;
    }
    stepq_server(q, node, sizeof(node));
    json_t *st = json_loads(json, 0, NULL), *ph = json_object_get(st, "phase");
    json_int_t old_keys = 0, new_keys = 0;
    json_array_foreach(json_object_get(st, "keys"), i, v)
    {
        old_keys += json_integer_value(json_object_get(v, "old_keys"));
        new_keys += json_integer_value(json_object_get(v, "new_keys"));
    }
    row = json_pack("{s:s, s:s, s:O?, s:I, s:I, s:b, s:b}", "namespace", ns, "server", node,
                    "phase", json_object_get(ph, "phase"), "old_keys", old_keys, "new_keys",
                    new_keys, "reconciling", json_object_get(ph, "reconciling") != NULL,
                    "untrusted", json_object_get(ph, "untrusted_since") != NULL);
    json_decref(st);
    stepq_str_free(json);
    stepq_free(q);
    return row;
}

/* `migrate status --all-namespaces`: one row per registered namespace. */
static int status_all(struct cli *cli, int as_json, const char *usage)
{
    json_t *list = NULL, *rows = json_array(), *v;
    size_t i;
    int worst = EXIT_DONE;

    if (cli->nns > 0)
        return cli_usage_error(usage, "give either --namespace or --all-namespaces");
    int rc = all_ns_list(cli, &list);
    if (rc != EXIT_DONE) {
        json_decref(rows);
        return rc;
    }
    if (!as_json)
        printf("%-24s %-21s %-13s %10s %10s\n", "namespace", "server", "phase", "old keys",
               "new keys");
    json_array_foreach(list, i, v)
    {
        const char *ns = json_string_value(v);
        json_t *row = status_row(cli, ns, &rc);
        if (row == NULL) {
            worst = worst == EXIT_DONE ? rc : worst;
            json_array_append_new(
                rows, json_pack("{s:s, s:s}", "namespace", ns, "error", "unreadable (see stderr)"));
            continue;
        }
        if (!as_json)
            printf("%-24s %-21s %-13s %10lld %10lld%s%s\n", *ns ? ns : "(default)",
                   json_string_value(json_object_get(row, "server")),
                   json_string_value(json_object_get(row, "phase")),
                   (long long)json_integer_value(json_object_get(row, "old_keys")),
                   (long long)json_integer_value(json_object_get(row, "new_keys")),
                   json_is_true(json_object_get(row, "reconciling")) ? "  reconciling" : "",
                   json_is_true(json_object_get(row, "untrusted")) ? "  new keys untrusted" : "");
        json_array_append_new(rows, row);
    }
    if (as_json)
        cli_print_value(json_pack("{s:o}", "namespaces", rows));
    else
        json_decref(rows);
    if (!as_json && json_array_size(list) == 0)
        puts("(no namespace is registered yet: a namespace registers at its first submit, "
             "worker or phase move)");
    json_decref(list);
    return worst;
}

static int migrate_status(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate status [--json] [--all-namespaces]\n"
        "Prints the phase, key counts per rule for both sides, counters (fallback reads,\n"
        "lazy migrations, misses), live processes with their phase, and the audit tail.\n"
        "--all-namespaces: one line per namespace of the registry (every namespace stepq\n"
        "wrote to on this server or cluster): the node serving it, its phase, its old\n"
        "and new keys.\n";
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         {"json", no_argument, NULL, 'j'},
                                         {"all-namespaces", no_argument, NULL, 'A'},
                                         {NULL, 0, NULL, 0}};
    int as_json = 0, all = 0, c;
    char *json;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "j", opts, NULL)) != -1) {
        if (c == 'j')
            as_json = 1;
        else if (c == 'A')
            all = 1;
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    if (all)
        return status_all(cli, as_json || cli->json, usage);
    stepq *q = cli_connect(cli, "stepq-migrate");
    if (as_json) {
        /* The typed document of /health/redis-migration (status_doc.c). */
        json_t *doc = NULL;
        int st = status_doc_build(q, &doc);
        int rc = st == 503 && strcmp(json_string_value(json_object_get(doc, "status")),
                                     "unavailable") == 0
                     ? cli_fail(q, "status")
                 : st == 500 ? EXIT_FAILED
                             : EXIT_DONE;
        char *text = rc == EXIT_DONE ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (text != NULL)
            puts(text);
        free(text);
        json_decref(doc);
        stepq_free(q);
        return rc;
    }
    int rc = stepq_status(q, &json) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "status");
    if (rc == EXIT_DONE) {
        print_status_text(json);
        stepq_str_free(json);
    }
    stepq_free(q);
    return rc;
}

/* `migrate forget-namespace NS`: the registry's only removal (registry.c). */
static int migrate_forget(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq migrate forget-namespace NAMESPACE\n"
        "Takes NAMESPACE out of the registry of namespaces ('status --all-namespaces' and\n"
        "every --all-namespaces command stop listing it). Refused (exit 4) while it is in\n"
        "use: keys of its queue on either side, a live stepq process, a registered worker.\n"
        "Exit 3 when it is not registered. Its next submit, worker or phase move lists it\n"
        "again.\n";
    static const struct option opts[] = {CLI_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (argc - optind != 1)
        return cli_usage_error(usage, "expected one namespace (the default one is '')");
    if (cli->nns > 0)
        return cli_usage_error(usage, "give the namespace as the argument, not --namespace");
    cli->ns = argv[optind];
    stepq *q = cli_connect(cli, "stepq-migrate");
    int rc = stepq_namespace_forget(q) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "forget-namespace");
    if (rc == EXIT_DONE && cli->json)
        cli_print_value(json_pack("{s:s, s:b}", "namespace", cli->ns, "forgotten", 1));
    else if (rc == EXIT_DONE)
        printf("namespace '%s' forgotten\n", cli->ns);
    stepq_free(q);
    return rc;
}

static const struct subcommand {
    const char *name;
    int (*fn)(struct cli *, int, char **);
    const char *help;
} subcommands[] = {
    {"phase", migrate_phase, "print or move the migration phase"},
    {"status", migrate_status, "phase, key counts, counters, live processes, audit"},
    {"backfill", migrate_backfill, "copy the old keys to the new ones (resumable)"},
    {"verify", migrate_verify, "compare every old key with its new twin (--reverse: new with old)"},
    {"throttle", migrate_throttle, "pause, resume or re-rate a running walk"},
    {"rollback", migrate_rollback, "move one phase back, doing what that move needs"},
    {"backup", migrate_backup, "write one side's keys to a checked, compressed file"},
    {"restore", migrate_restore, "restore a backup file (checked whole before writing)"},
    {"cleanup", migrate_cleanup, "delete old keys whose new twin exists (phase step)"},
    {"forget-namespace", migrate_forget, "take a namespace nothing uses out of the registry"},
};

int cmd_migrate(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq migrate SUBCOMMAND [ARGS]\n";

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        FILE *fp = argc < 2 ? stderr : stdout;
        fputs(usage, fp);
        fputs("Every subcommand but forget-namespace also runs over every namespace of the\n"
              "registry (one line per namespace and a summary; docs/cluster.md):\n"
              "  stepq migrate SUBCOMMAND --all-namespaces [--keep-going] [--parallel N] [ARGS]\n",
              fp);
        fputs("\nsubcommands:\n", fp);
        for (size_t i = 0; i < sizeof(subcommands) / sizeof(*subcommands); i++)
            fprintf(fp, "  %-16s %s\n", subcommands[i].name, subcommands[i].help);
        return argc < 2 ? EXIT_USAGE : EXIT_DONE;
    }
    static const char all_usage[] =
        "usage: stepq migrate SUBCOMMAND --all-namespaces [--keep-going] [--parallel N] [ARGS]\n"
        "Runs SUBCOMMAND with ARGS once per namespace of the registry, N at a time (default\n"
        "1), one line each and a summary; stops at the first refusal or failure unless\n"
        "--keep-going. A file argument gets one file per namespace: a directory\n"
        "(DIR/NAMESPACE.stepqbak) or a template with %n. Exit: the worst of the runs,\n"
        "in the order 0 < 3 < 4 < 1 < 2.\n";
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(*subcommands); i++) {
        if (strcmp(argv[1], subcommands[i].name) == 0) {
            optind = 0;
            if (subcommands[i].fn != migrate_status && subcommands[i].fn != migrate_forget &&
                all_ns_wanted(argc - 1, argv + 1))
                return all_ns_run(cli, subcommands[i].name, argc - 1, argv + 1, subcommands[i].fn,
                                  all_usage);
            return subcommands[i].fn(cli, argc - 1, argv + 1);
        }
    }
    return cli_usage_error(usage, "unknown migrate subcommand '%s'; see 'stepq migrate --help'",
                           argv[1]);
}
