/*
 * all_ns.h - `stepq migrate ... --all-namespaces` (all_ns.c): a migrate
 * subcommand over every namespace of the registry, and the registry read.
 */
#ifndef STEPQ_ALL_NS_H
#define STEPQ_ALL_NS_H

#include <jansson.h>

#include "cli.h"

/* The registry's own namespace (its key is {stepq}:namespaces): a handle
 * that only lists namespaces connects with it. */
#define STEPQ_REGISTRY_NS "{stepq}:"

typedef int (*migrate_fn)(struct cli *, int, char **);

/* Whether argv (a subcommand's, argv[0] its name) asks --all-namespaces. */
int all_ns_wanted(int argc, char **argv);
/* Runs fn once per registered namespace, each in a child process, as
 * --namespace NS would; takes --keep-going and --parallel N out of argv.
 * Prints one line per namespace and a summary; returns the worst exit code
 * (0 < 3 < 4 < 1 < 2). */
int all_ns_run(struct cli *cli, const char *sub, int argc, char **argv, migrate_fn fn,
               const char *usage);
/* The registered namespaces as a new JSON array of strings in *ret;
 * returns an exit code (EXIT_DONE, or after printing why not). */
int all_ns_list(const struct cli *cli, json_t **ret);

#endif
