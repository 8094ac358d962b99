/*
 * cli.h - what the stepq subcommands share: common options, connecting,
 * and the mapping of library errors to exit codes.
 */
#ifndef STEPQ_CLI_H
#define STEPQ_CLI_H

#include <getopt.h>
#include <stdio.h>

#include <jansson.h>

#include "stepq.h"

/* Exit codes: the contract scripts rely on (docs/errors.md). */
enum {
    EXIT_DONE = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_NOTFOUND = 3,
    EXIT_REFUSED = 4,
};

#define CLI_NS_MAX 64 /* namespaces one worker or serve takes */

struct cli {
    const char *url;             /* -u/--url, else $REDIS_URL */
    const char *ns;              /* --namespace, else $STEPQ_NAMESPACE */
    const char *nss[CLI_NS_MAX]; /* every --namespace given, in order (worker, serve) */
    size_t nns;
    const char *rules;     /* --rules, else $STEPQ_RULES */
    const char *retention; /* --retention, else $STEPQ_RETENTION; NULL: the library's 7 days */
    int json;              /* --json: print JSON (every command that prints takes it) */
};

/* Long options every subcommand takes, and their short letters. */
#define CLI_COMMON_OPTS                                                                            \
    {"url", required_argument, NULL, 'u'}, {"namespace", required_argument, NULL, 1000},           \
        {"rules", required_argument, NULL, 1001}, {"retention", required_argument, NULL, 1002},    \
        {"json", no_argument, NULL, 'j'},                                                          \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }
#define CLI_COMMON_SHORT "u:h"

/* Handles a common option; returns 1 when `c` was one, 0 otherwise. For -h
 * it prints `usage` and exits 0. */
int cli_common_opt(struct cli *cli, int c, const char *usage);
/* Prints "stepq: <msg>" and the usage line to stderr, returns EXIT_USAGE. */
int cli_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The namespaces of a command that takes several (worker, serve): every
 * --namespace, each split at commas, else $STEPQ_NAMESPACE split likewise;
 * none given: one, NULL (no prefix). Writes at most CLI_NS_MAX into ret
 * (strings that live until exit) and returns the count; exits with a usage
 * error on an empty name, a repeated one, or too many. */
size_t cli_namespaces(const struct cli *cli, const char *usage, const char **ret);
/* Connects, or prints why not; returns NULL after printing. A command that
 * takes one namespace refuses several (exit 2). */
stepq *cli_connect(const struct cli *cli, const char *client_name);
/* Prints the handle's error and returns its exit code. */
int cli_fail(stepq *q, const char *what);
/* Maps an error kind to an exit code. */
int cli_exit_code(int err);
/* Parses a long with bounds or exits with a usage error. */
long cli_long(const char *usage, const char *name, const char *s, long min, long max);
/* A duration: a whole number with a unit, ms, s, m, h or d (no unit: ms),
 * e.g. 7d, 3600s, 500. Returns the milliseconds, or -1 when s is not one. */
long long cli_duration_ms(const char *s);
/* The retention for stepq_options: --retention, else $STEPQ_RETENTION, else
 * 0 (the library's default); exits with a usage error when malformed. */
long long cli_retention_ms(const struct cli *cli);
/* The text of an argument that may name where it is: "-" reads stdin,
 * "@FILE" reads FILE (at most 1 MiB), anything else is itself. Exits with a
 * usage error (naming `what`) when it cannot be read. The result lives
 * until exit. */
const char *cli_text_arg(const char *usage, const char *what, const char *v);
/* Prints a JSON value compact with a newline; steals the reference. */
void cli_print_value(json_t *v);
/* Prints a JSON string pretty or compact, with a newline. */
void cli_print_json(const char *json, int pretty);

int cmd_submit(struct cli *cli, int argc, char **argv);
int cmd_get(struct cli *cli, int argc, char **argv);
int cmd_list(struct cli *cli, int argc, char **argv);
int cmd_claim(struct cli *cli, int argc, char **argv);
int cmd_progress(struct cli *cli, int argc, char **argv);
int cmd_complete(struct cli *cli, int argc, char **argv);
int cmd_fail(struct cli *cli, int argc, char **argv);
int cmd_cancel(struct cli *cli, int argc, char **argv);
int cmd_events(struct cli *cli, int argc, char **argv);
int cmd_workers(struct cli *cli, int argc, char **argv);
int cmd_reap(struct cli *cli, int argc, char **argv);
int cmd_migrate(struct cli *cli, int argc, char **argv);
/* migrate subcommands of cmd_backup.c */
int migrate_backup(struct cli *cli, int argc, char **argv);
int migrate_restore(struct cli *cli, int argc, char **argv);
int migrate_cleanup(struct cli *cli, int argc, char **argv);
int cmd_serve(struct cli *cli, int argc, char **argv);
int cmd_worker(struct cli *cli, int argc, char **argv);

#endif
