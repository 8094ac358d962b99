/*
 * pause_watch.h - a thread that has a walk's progress say PAUSED at once
 * while the operator's throttle holds it (pause_watch.c).
 */
#ifndef STEPQ_PAUSE_WATCH_H
#define STEPQ_PAUSE_WATCH_H

#include "cli.h"
#include "progress.h"

struct pause_watch;

/* Starts watching stepq:throttle for `p` (NULL p: nothing, NULL returned).
 * Returns NULL when the thread cannot start (the walk goes on without). */
struct pause_watch *pause_watch_start(const struct cli *cli, progress *p);
/* Stops and frees the watcher; call before the progress is finished.
 * Accepts NULL. */
void pause_watch_stop(struct pause_watch *w);

#endif
