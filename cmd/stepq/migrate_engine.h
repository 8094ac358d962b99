/*
 * migrate_engine.h - the migration engine's subcommands (cmd_migrate_engine.c),
 * dispatched from cmd_migrate.c's table.
 */
#ifndef STEPQ_MIGRATE_ENGINE_H
#define STEPQ_MIGRATE_ENGINE_H

#include "cli.h"

int migrate_backfill(struct cli *cli, int argc, char **argv);
int migrate_verify(struct cli *cli, int argc, char **argv);
int migrate_throttle(struct cli *cli, int argc, char **argv);
int migrate_rollback(struct cli *cli, int argc, char **argv);
/* Who runs the command, for the audit log (cmd_migrate.c). */
const char *migrate_operator(void);

#endif
