/*
 * pause_watch.c - tells a walk's progress at once when the operator's
 * throttle pauses it. The library's pacing (src/pace.c) waits while
 * stepq:throttle says paused and reports nothing meanwhile, so a bar would
 * just stop; this thread reads the switch on its own connection (a handle
 * is not shared between threads) every PAUSE_POLL_MS, from the start of the
 * walk, and has the progress say PAUSED or resumed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pause_watch.h"
#include "stepq_text.h"

#define PAUSE_POLL_MS 500

struct pause_watch {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    stepq *q;
    progress *p;
};

/* 1 paused, 0 not, -1 unknown (Redis unreachable: say nothing new). */
static int read_paused(stepq *q)
{
    int paused;

    return stepq_throttle_paused(q, &paused) == STEPQ_OK ? paused : -1;
}

static void *watch_loop(void *arg)
{
    struct pause_watch *w = arg;
    struct timespec until;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        pthread_mutex_unlock(&w->mu);
        int paused = read_paused(w->q);
        if (paused >= 0)
            progress_paused(w->p, paused);
        pthread_mutex_lock(&w->mu);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += PAUSE_POLL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct pause_watch *pause_watch_start(const struct cli *cli, progress *p)
{
    struct pause_watch *w;

    if (p == NULL || (w = calloc(1, sizeof(*w))) == NULL)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->p = p;
    w->q = cli_connect(cli, "stepq-pause-watch");
    if (pthread_create(&w->tid, NULL, watch_loop, w) != 0) {
        stepq_free(w->q);
        free(w);
        return NULL; /* the walk goes on, only without the notice */
    }
    return w;
}

void pause_watch_stop(struct pause_watch *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->tid, NULL);
    stepq_free(w->q);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
