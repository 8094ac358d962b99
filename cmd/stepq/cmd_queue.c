/*
 * cmd_queue.c - the queue subcommands: submit, get, list, claim, progress,
 * complete, fail, cancel, events, workers, reap.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "cli.h"

/* Parses only the common options; leaves positional arguments. */
static void parse_common(struct cli *cli, int argc, char **argv, const char *usage)
{
    static const struct option opts[] = {CLI_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (!cli_common_opt(cli, c, usage))
            exit(cli_usage_error(usage, "unknown option"));
    }
}

/* Runs f(q, id) for `stepq NAME ID`, printing a JSON result if any. */
static int one_id(struct cli *cli, int argc, char **argv, const char *usage, const char **id)
{
    parse_common(cli, argc, argv, usage);
    if (argc - optind != 1)
        return cli_usage_error(usage, "expected one step id");
    *id = argv[optind];
    return EXIT_DONE;
}

int cmd_submit(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq submit [--type T] [--priority N] [--require CAP,...] [--max-attempts N]\n"
        "                    [--payload JSON|@FILE|-] [--json]\n"
        "Submits a step and prints its id alone ({\"id\": ...} with --json). Higher\n"
        "priorities run first. --payload @FILE reads the JSON from FILE, - from stdin.\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"type", required_argument, NULL, 't'},
        {"priority", required_argument, NULL, 'p'},
        {"require", required_argument, NULL, 'r'},
        {"max-attempts", required_argument, NULL, 'm'},
        {"payload", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    stepq_submit_opts o = {0};
    char id[STEPQ_ID_MAX];
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "t:p:r:m:d:", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            o.type = optarg;
            break;
        case 'p':
            o.priority = cli_long(usage, "priority", optarg, 0, 1000000);
            break;
        case 'r':
            o.requires = optarg;
            break;
        case 'm':
            o.max_attempts = cli_long(usage, "max attempts", optarg, 1, 1000);
            break;
        case 'd':
            o.payload = cli_text_arg(usage, "the payload", optarg);
            break;
        default:
            if (!cli_common_opt(cli, c, usage))
                return cli_usage_error(usage, "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-submit");
    int rc = stepq_submit(q, &o, id) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "submit");
    if (rc == EXIT_DONE && cli->json)
        cli_print_value(json_pack("{s:s}", "id", id));
    else if (rc == EXIT_DONE)
        puts(id);
    stepq_free(q);
    return rc;
}

int cmd_get(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq get ID\n"
                                "Prints the step as one JSON object, its progress under "
                                "\"progress\". Exit 3 when it does not exist.\n";
    const char *id = NULL;
    char *json;
    int rc = one_id(cli, argc, argv, usage, &id);

    if (rc != EXIT_DONE)
        return rc;
    stepq *q = cli_connect(cli, "stepq-get");
    rc = stepq_get(q, id, &json) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "get");
    if (rc == EXIT_DONE) {
        puts(json);
        stepq_str_free(json);
    }
    stepq_free(q);
    return rc;
}

int cmd_list(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq list STATE [--limit N] [--json]\n"
                                "Prints the ids of steps in STATE (pending, active, completed, "
                                "failed), one a line\n(with --json: {\"state\", \"limit\", "
                                "\"ids\"}, as GET /steps).\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS, {"limit", required_argument, NULL, 'n'}, {NULL, 0, NULL, 0}};
    long limit = 1000;
    char *json;
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "n:", opts, NULL)) != -1) {
        if (c == 'n')
            limit = cli_long(usage, "limit", optarg, 1, 100000);
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (argc - optind != 1)
        return cli_usage_error(usage, "expected one state");
    stepq *q = cli_connect(cli, "stepq-list");
    int rc =
        stepq_list(q, argv[optind], limit, &json) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "list");
    if (rc == EXIT_DONE && cli->json) {
        cli_print_value(json_pack("{s:s, s:I, s:o}", "state", argv[optind], "limit",
                                  (json_int_t)limit, "ids", json_loads(json, 0, NULL)));
        stepq_str_free(json);
    } else if (rc == EXIT_DONE) {
        /* One id a line reads best in shell pipelines. */
        json_t *ids = json_loads(json, 0, NULL), *v;
        size_t i;
        json_array_foreach(ids, i, v)
        {
            puts(json_string_value(v));
        }
        json_decref(ids);
        stepq_str_free(json);
    }
    stepq_free(q);
    return rc;
}

int cmd_claim(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq claim --worker W [--capability C]... [--count N]\n"
        "Claims the best pending step(s) W can run and prints each as JSON with its \"id\"\n"
        "and claim \"token\". Exit 3 when there is nothing to claim.\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"worker", required_argument, NULL, 'w'},
        {"capability", required_argument, NULL, 'c'},
        {"count", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    const char *worker = NULL, *caps[64];
    size_t ncaps = 0;
    long count = 1;
    char *json;
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "w:c:n:", opts, NULL)) != -1) {
        if (c == 'w') {
            worker = optarg;
        } else if (c == 'c') {
            if (ncaps == 64)
                return cli_usage_error(usage, "at most 64 capabilities");
            caps[ncaps++] = optarg;
        } else if (c == 'n') {
            count = cli_long(usage, "count", optarg, 1, 1000);
        } else if (!cli_common_opt(cli, c, usage)) {
            return cli_usage_error(usage, "unknown option");
        }
    }
    if (worker == NULL || optind != argc)
        return cli_usage_error(usage, "--worker is required and takes no other arguments");
    stepq *q = cli_connect(cli, "stepq-claim");
    int rc = stepq_claim(q, worker, caps, ncaps, count, &json) == STEPQ_OK ? EXIT_DONE
                                                                           : cli_fail(q, "claim");
    if (rc == EXIT_DONE) {
        /* One claimed step: the object alone, as scripts expect. */
        if (count == 1 && json[0] == '[') {
            size_t n = strlen(json);
            printf("%.*s\n", (int)(n - 2), json + 1);
        } else {
            puts(json);
        }
        stepq_str_free(json);
    }
    stepq_free(q);
    return rc;
}

/* progress, complete and fail share: ID --token T plus one text option. */
static int held(struct cli *cli, int argc, char **argv, const char *usage, const char *textopt,
                const char **id, const char **token, const char **text, long *percent)
{
    struct option opts[] = {
        CLI_COMMON_OPTS,
        {"token", required_argument, NULL, 'T'},
        {textopt, required_argument, NULL, 'x'},
        {"percent", required_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    int c;

    *token = *text = NULL;
    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "T:", opts, NULL)) != -1) {
        if (c == 'T')
            *token = optarg;
        else if (c == 'x')
            *text = cli_text_arg(usage, textopt, optarg);
        else if (c == 'P' && percent != NULL)
            *percent = cli_long(usage, "percent", optarg, 0, 100);
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (argc - optind != 1 || *token == NULL)
        return cli_usage_error(usage, "expected one step id and --token");
    *id = argv[optind];
    return EXIT_DONE;
}

int cmd_progress(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq progress ID --token T --percent N [--message M]\n";
    const char *id = NULL, *token = NULL, *msg = NULL;
    long pct = -1;
    int rc = held(cli, argc, argv, usage, "message", &id, &token, &msg, &pct);

    if (rc != EXIT_DONE)
        return rc;
    if (pct < 0)
        return cli_usage_error(usage, "--percent is required");
    stepq *q = cli_connect(cli, "stepq-progress");
    rc = stepq_progress(q, id, token, pct, msg) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "progress");
    stepq_free(q);
    return rc;
}

int cmd_complete(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq complete ID --token T [--result TEXT]\n";
    const char *id = NULL, *token = NULL, *result = NULL;
    int rc = held(cli, argc, argv, usage, "result", &id, &token, &result, NULL);

    if (rc != EXIT_DONE)
        return rc;
    stepq *q = cli_connect(cli, "stepq-complete");
    rc = stepq_complete(q, id, token, result) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "complete");
    stepq_free(q);
    return rc;
}

int cmd_fail(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq fail ID --token T [--error TEXT]\n"
                                "Prints 'retry' or 'failed' (no attempts left).\n";
    const char *id = NULL, *token = NULL, *error = NULL;
    int final = 0;
    int rc = held(cli, argc, argv, usage, "error", &id, &token, &error, NULL);

    if (rc != EXIT_DONE)
        return rc;
    stepq *q = cli_connect(cli, "stepq-fail");
    rc = stepq_fail(q, id, token, error, &final) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "fail");
    if (rc == EXIT_DONE && cli->json)
        cli_print_value(json_pack("{s:s, s:s}", "id", id, "outcome", final ? "failed" : "retry"));
    else if (rc == EXIT_DONE)
        puts(final ? "failed" : "retry");
    stepq_free(q);
    return rc;
}

int cmd_cancel(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq cancel ID\n"
                                "Cancels a pending or active step. Exit 4 if it already ended.\n";
    const char *id = NULL;
    int rc = one_id(cli, argc, argv, usage, &id);

    if (rc != EXIT_DONE)
        return rc;
    stepq *q = cli_connect(cli, "stepq-cancel");
    rc = stepq_cancel(q, id) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "cancel");
    stepq_free(q);
    return rc;
}

static int print_event(const char *json, size_t len, void *arg)
{
    (void)arg;
    printf("%.*s\n", (int)len, json);
    fflush(stdout);
    return 0;
}

int cmd_events(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq events [--follow] [--count N]\n"
        "Without --follow, prints the channels the current phase publishes to.\n"
        "With --follow, prints each lifecycle event (JSON, one a line) as it comes,\n"
        "duplicates of the dual phases dropped, until interrupted or N events.\n";
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"follow", no_argument, NULL, 'f'},
        {"count", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    int follow = 0, c;
    long count = 0;
    char *json;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "fn:", opts, NULL)) != -1) {
        if (c == 'f')
            follow = 1;
        else if (c == 'n')
            count = cli_long(usage, "count", optarg, 1, 1000000000);
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-events");
    int rc;
    if (follow) {
        rc = stepq_events_follow(q, count, print_event, NULL) == STEPQ_OK ? EXIT_DONE
                                                                          : cli_fail(q, "events");
    } else {
        rc = stepq_event_channels(q, &json) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "events");
        if (rc == EXIT_DONE) {
            puts(json);
            stepq_str_free(json);
        }
    }
    stepq_free(q);
    return rc;
}

int cmd_workers(struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: stepq workers\nPrints the registered workers as JSON.\n";
    char *json;

    parse_common(cli, argc, argv, usage);
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    stepq *q = cli_connect(cli, "stepq-workers");
    int rc = stepq_workers(q, &json) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "workers");
    if (rc == EXIT_DONE) {
        puts(json);
        stepq_str_free(json);
    }
    stepq_free(q);
    return rc;
}

int cmd_reap(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: stepq reap [--timeout-ms N] [--keep-completed N] [--keep-failed N]\n"
        "Runs one pass of the reaper: requeues the steps of workers whose heartbeat is\n"
        "older than N ms (default 30000) or gone, drops stale entries (set members whose\n"
        "record says otherwise), prunes a page of the completed and failed sets (ids whose\n"
        "record is gone; the oldest steps over a --keep- cap) and prints what it did as\n"
        "JSON: {\"requeued\", \"stale\", \"workers_removed\", \"pruned\", \"capped\"}.\n";
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         {"timeout-ms", required_argument, NULL, 't'},
                                         {"keep-completed", required_argument, NULL, 'K'},
                                         {"keep-failed", required_argument, NULL, 'F'},
                                         {NULL, 0, NULL, 0}};
    stepq_reap_opts o = {.timeout_ms = 30000};
    stepq_reap_result res;
    int c;

    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "t:", opts, NULL)) != -1) {
        if (c == 't')
            o.timeout_ms = cli_long(usage, "timeout", optarg, 0, 86400000);
        else if (c == 'K')
            o.keep_completed = cli_long(usage, "keep-completed", optarg, 1, 1000000000);
        else if (c == 'F')
            o.keep_failed = cli_long(usage, "keep-failed", optarg, 1, 1000000000);
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    stepq *q = cli_connect(cli, "stepq-reap");
    int rc = stepq_reap_pass(q, &o, &res) == STEPQ_OK ? EXIT_DONE : cli_fail(q, "reap");
    if (rc == EXIT_DONE)
        printf("{\"requeued\":%ld,\"stale\":%ld,\"workers_removed\":%ld,\"pruned\":%ld,"
               "\"capped\":%ld}\n",
               res.requeued, res.stale, res.workers_removed, res.pruned, res.capped);
    stepq_free(q);
    return rc;
}
