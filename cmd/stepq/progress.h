/*
 * progress.h - how a long walk (backfill, verify, cleanup) shows where it
 * is: a bar on a terminal, a log line every N keys otherwise, or JSON lines.
 * Done and total count one unit (keys); a total of 0 is unknown and shows
 * no bar; the bar says PAUSED while the operator's throttle holds the walk.
 */
#ifndef STEPQ_PROGRESS_H
#define STEPQ_PROGRESS_H

enum progress_mode {
    PROGRESS_AUTO = 0, /* a bar when stderr is a terminal, else log lines */
    PROGRESS_LOG,      /* a line on stderr every log_every keys */
    PROGRESS_JSON,     /* a JSON object per line on stdout */
    PROGRESS_QUIET,
};

typedef struct progress progress;

/* `what` names the walk ("backfill"); total may be 0 when unknown. */
progress *progress_new(const char *what, long long total, enum progress_mode mode,
                       long long log_every);
void progress_set_total(progress *p, long long total);
/* Reports that `done` keys are done; draws at most 10 times a second. */
void progress_update(progress *p, long long done);
/* Prints a per-key error (key, what went wrong): always shown. */
void progress_error(progress *p, const char *key, const char *msg);
/* Final line with the elapsed time and rate; frees p. `summary` (may be
 * NULL) is a JSON object text merged into the JSON line or printed. */
void progress_finish(progress *p, long long done, const char *summary);
/* The same for a walk that completed: what was done is the total, so the
 * bar ends at 100 % and done/done. */
void progress_finish_done(progress *p, long long done, const char *summary);
/* Says at once that the walk waits on the operator's pause (or goes on):
 * a line, and the bar shows PAUSED. Any thread (pause_watch.c). */
void progress_paused(progress *p, int paused);
/* Keys per second so far. */
double progress_rate(const progress *p);

#endif
