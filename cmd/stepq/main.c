/*
 * main.c - the stepq command: git-style dispatch to subcommands.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <jansson.h>

#include "cli.h"

static const struct command {
    const char *name;
    int (*fn)(struct cli *, int, char **);
    const char *help;
} commands[] = {
    {"submit", cmd_submit, "submit a step; prints its id"},
    {"get", cmd_get, "print a step as JSON"},
    {"list", cmd_list, "list step ids by state"},
    {"claim", cmd_claim, "claim steps for a worker"},
    {"progress", cmd_progress, "report progress of a claimed step"},
    {"complete", cmd_complete, "complete a claimed step"},
    {"fail", cmd_fail, "fail an attempt of a claimed step"},
    {"cancel", cmd_cancel, "cancel a pending or active step"},
    {"events", cmd_events, "print lifecycle events"},
    {"workers", cmd_workers, "list workers"},
    {"reap", cmd_reap, "requeue the steps of dead workers"},
    {"migrate", cmd_migrate, "the job:* -> step:* key migration"},
    {"serve", cmd_serve, "serve the HTTP API and health endpoints"},
    {"worker", cmd_worker, "run a command for each claimed step"},
};

static const char main_usage[] =
    "usage: stepq [-u URL] [--namespace NS] [--rules FILE] [--retention D] COMMAND [ARGS]\n";

static void print_help(FILE *fp)
{
    fputs(main_usage, fp);
    fputs("       stepq --version\n", fp);
    fputs("\ncommands:\n", fp);
    for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++)
        fprintf(fp, "  %-10s %s\n", commands[i].name, commands[i].help);
    fputs("\nURL: redis://[user[:password]@]host[:port][/db] or unix:///path/to/sock[?db=N]\n"
          "     (default $REDIS_URL, then redis://127.0.0.1:6379)\n"
          "--retention D: how long ended steps are kept (default $STEPQ_RETENTION, then 7d);\n"
          "     D is a number with a unit: ms, s, m, h, d (none: ms)\n"
          "--json: every command that prints prints JSON\n"
          "exit codes: 0 done, 1 failed, 2 usage error, 3 not found or nothing to claim,\n"
          "            4 refused by a rule\n"
          "'stepq COMMAND --help' tells more.\n",
          fp);
}

int cli_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;

    fputs("stepq: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fputs(usage, stderr);
    return EXIT_USAGE;
}

int cli_common_opt(struct cli *cli, int c, const char *usage)
{
    switch (c) {
    case 'u':
        cli->url = optarg;
        return 1;
    case 1000:
        if (cli->nns == CLI_NS_MAX) {
            cli_usage_error(usage, "at most %d namespaces", CLI_NS_MAX);
            exit(EXIT_USAGE);
        }
        cli->nss[cli->nns++] = optarg;
        cli->ns = optarg;
        return 1;
    case 1001:
        cli->rules = optarg;
        return 1;
    case 1002:
        cli->retention = optarg;
        return 1;
    case 'j':
        cli->json = 1;
        return 1;
    case 'h':
        fputs(usage, stdout);
        exit(EXIT_DONE);
    default:
        return 0;
    }
}

int cli_exit_code(int err)
{
    switch (err) {
    case STEPQ_E_NONE:
        return EXIT_DONE;
    case STEPQ_E_INVALID:
        return EXIT_USAGE;
    case STEPQ_E_NOTFOUND:
        return EXIT_NOTFOUND;
    case STEPQ_E_CONFLICT:
        return EXIT_REFUSED;
    default:
        return EXIT_FAILED;
    }
}

int cli_fail(stepq *q, const char *what)
{
    fprintf(stderr, "stepq: %s: %s\n", what, stepq_errstr(q));
    return cli_exit_code(stepq_err(q));
}

/* The copies cli_namespaces made, freed at exit. */
static char *ns_copies[CLI_NS_MAX];
static size_t n_ns_copies;

static void free_ns_copies(void)
{
    for (size_t i = 0; i < n_ns_copies; i++)
        free(ns_copies[i]);
}

/* Splits one comma list into ret[*n...]; exits on an empty name. */
static void split_ns(const char *usage, const char *list, const char **ret, size_t *n)
{
    const char *p = list;

    for (;;) {
        size_t len = strcspn(p, ",");
        if (len == 0)
            exit(cli_usage_error(usage, "empty namespace in '%s'; give names separated by commas",
                                 list));
        if (*n == CLI_NS_MAX || n_ns_copies == CLI_NS_MAX)
            exit(cli_usage_error(usage, "at most %d namespaces", CLI_NS_MAX));
        char *c = strndup(p, len);
        if (c == NULL)
            exit(cli_usage_error(usage, "out of memory"));
        if (n_ns_copies == 0)
            atexit(free_ns_copies);
        ns_copies[n_ns_copies++] = c;
        for (size_t i = 0; i < *n; i++) {
            if (strcmp(ret[i], c) == 0)
                exit(cli_usage_error(usage, "namespace '%s' is given twice; give it once", c));
        }
        ret[(*n)++] = c;
        if (p[len] == '\0')
            return;
        p += len + 1;
    }
}

size_t cli_namespaces(const struct cli *cli, const char *usage, const char **ret)
{
    const char *env = getenv("STEPQ_NAMESPACE");
    size_t n = 0;

    for (size_t i = 0; i < cli->nns; i++)
        split_ns(usage, cli->nss[i], ret, &n);
    if (n == 0 && env != NULL && *env != '\0')
        split_ns(usage, env, ret, &n);
    if (n == 0)
        ret[n++] = NULL;
    return n;
}

stepq *cli_connect(const struct cli *cli, const char *client_name)
{
    stepq_options o = {0};
    char err[512];
    const char *url = cli->url ? cli->url : getenv("REDIS_URL");

    if (url != NULL && *url != '\0' && stepq_url_check(url, err, sizeof(err)) != STEPQ_OK) {
        fprintf(stderr, "stepq: %s\n", err);
        exit(EXIT_USAGE);
    }
    if (cli->nns > 1) {
        fprintf(stderr,
                "stepq: %zu namespaces given; this command works on one (only 'worker' and "
                "'serve' take several; 'migrate' takes --all-namespaces)\n",
                cli->nns);
        exit(EXIT_USAGE);
    }
    o.namespace_ = cli->ns ? cli->ns : getenv("STEPQ_NAMESPACE");
    o.rules_file = cli->rules ? cli->rules : getenv("STEPQ_RULES");
    o.client_name = client_name;
    o.retention_ms = cli_retention_ms(cli);
    stepq *q = stepq_connect(url, &o);
    if (q == NULL) {
        fputs("stepq: out of memory\n", stderr);
        exit(EXIT_FAILED);
    }
    if (stepq_err(q) != STEPQ_E_NONE) {
        int code = cli_fail(q, "cannot connect");
        stepq_free(q);
        exit(code);
    }
    return q;
}

long long cli_duration_ms(const char *s)
{
    static const struct {
        const char *unit;
        long long ms;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    char *end;
    long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(*units); i++) {
        if (strcmp(end, units[i].unit) == 0)
            return v > LLONG_MAX / units[i].ms ? -1 : v * units[i].ms;
    }
    return -1;
}

long long cli_retention_ms(const struct cli *cli)
{
    const char *s = cli->retention ? cli->retention : getenv("STEPQ_RETENTION");
    const char *what = cli->retention ? "--retention" : "STEPQ_RETENTION";

    if (s == NULL || *s == '\0')
        return 0;
    long long ms = cli_duration_ms(s);
    if (ms < 1000 || ms > STEPQ_RETENTION_MAX_MS) {
        fprintf(stderr,
                "stepq: invalid %s '%s'; use a duration from 1s to 3650d, e.g. 7d, 12h, 3600s "
                "or milliseconds\n",
                what, s);
        exit(EXIT_USAGE);
    }
    return ms;
}

long cli_long(const char *usage, const char *name, const char *s, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        exit(cli_usage_error(usage, "invalid %s '%s'; use a whole number from %ld to %ld", name, s,
                             min, max));
    return v;
}

void cli_print_json(const char *json, int pretty)
{
    if (pretty) {
        json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
        char *s = v ? json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY) : NULL;
        json_decref(v);
        if (s != NULL) {
            puts(s);
            free(s);
            return;
        }
    }
    puts(json);
}

#define TEXT_ARG_MAX (1024 * 1024)

/* The texts read by cli_text_arg, freed at exit (a command reads two at most). */
static char *text_args[4];
static size_t n_text_args;

static void free_text_args(void)
{
    for (size_t i = 0; i < n_text_args; i++)
        free(text_args[i]);
}

const char *cli_text_arg(const char *usage, const char *what, const char *v)
{
    FILE *fp;
    char *buf;
    size_t n;

    if (strcmp(v, "-") != 0 && v[0] != '@')
        return v;
    fp = strcmp(v, "-") == 0 ? stdin : fopen(v + 1, "rb");
    if (fp == NULL)
        exit(cli_usage_error(usage, "cannot read %s from '%s': %s; name a readable file", what,
                             v + 1, strerror(errno)));
    buf = malloc(TEXT_ARG_MAX + 1);
    if (buf == NULL)
        exit(cli_usage_error(usage, "out of memory reading %s", what));
    n = fread(buf, 1, TEXT_ARG_MAX + 1, fp);
    if (ferror(fp) || n > TEXT_ARG_MAX)
        exit(cli_usage_error(usage, "cannot read %s from '%s': %s", what,
                             fp == stdin ? "standard input" : v + 1,
                             n > TEXT_ARG_MAX ? "larger than 1 MiB" : strerror(errno)));
    if (fp != stdin)
        fclose(fp);
    buf[n] = '\0';
    if (strlen(buf) != n)
        exit(cli_usage_error(usage, "%s from '%s' holds a NUL byte; send text", what,
                             fp == stdin ? "standard input" : v + 1));
    /* A file's final newline is not part of the value. */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    char *fit = realloc(buf, n + 1);
    buf = fit ? fit : buf;
    if (n_text_args == sizeof(text_args) / sizeof(*text_args))
        exit(cli_usage_error(usage, "too many arguments read from files"));
    if (n_text_args == 0)
        atexit(free_text_args);
    text_args[n_text_args++] = buf;
    return buf; /* freed at exit */
}

void cli_print_value(json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    if (s != NULL)
        puts(s);
    free(s);
    json_decref(v);
}

int main(int argc, char **argv)
{
    struct cli cli = {0};
    static const struct option opts[] = {
        CLI_COMMON_OPTS, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    int c;

    /* A connection Redis closed must be an error the library reports, not
     * a signal that kills us in the middle of a write. */
    signal(SIGPIPE, SIG_IGN);

    /* Global options stop at the first word that is not one (the command). */
    while ((c = getopt_long(argc, argv, "+" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (c == 'h') {
            print_help(stdout);
            return EXIT_DONE;
        }
        if (c == 'V') {
            if (cli.json)
                cli_print_value(json_pack("{s:s}", "version", STEPQ_VERSION));
            else
                printf("stepq %s\n", STEPQ_VERSION);
            return EXIT_DONE;
        }
        if (!cli_common_opt(&cli, c, main_usage))
            return cli_usage_error(main_usage, "unknown option");
    }
    if (optind >= argc) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[optind];
    for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++) {
        if (strcmp(name, commands[i].name) == 0) {
            int sub_argc = argc - optind;
            optind = 0; /* glibc: restart getopt on the subcommand's argv */
            return commands[i].fn(&cli, sub_argc, argv + (argc - sub_argc));
        }
    }
    return cli_usage_error(main_usage, "unknown command '%s'; see 'stepq --help'", name);
}
