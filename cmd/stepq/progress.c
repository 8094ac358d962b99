/*
 * progress.c - see progress.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <jansson.h>

#include "progress.h"

/* The walk's thread reports; a pause watcher (pause_watch.c) may say
 * "paused" from another thread: mu orders their lines. */
struct progress {
    char what[32];
    long long total, last_logged;
    long long log_every;
    enum progress_mode mode;
    double start, last_draw;
    long long done;
    int paused;
    pthread_mutex_t mu;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

progress *progress_new(const char *what, long long total, enum progress_mode mode,
                       long long log_every)
{
    progress *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    snprintf(p->what, sizeof(p->what), "%s", what);
    p->total = total;
    p->mode = mode == PROGRESS_AUTO ? (isatty(2) ? PROGRESS_AUTO : PROGRESS_LOG) : mode;
    p->log_every = log_every > 0 ? log_every : 10000;
    p->start = now_s();
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void progress_set_total(progress *p, long long total)
{
    if (p != NULL)
        p->total = total;
}

double progress_rate(const progress *p)
{
    double el = now_s() - p->start;
    return el > 0 ? (double)p->done / el : 0;
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (s < 0 || s > 360000)
        snprintf(buf, n, "--:--");
    else
        snprintf(buf, n, "%d:%02d:%02d", (int)s / 3600, ((int)s / 60) % 60, (int)s % 60);
}

/* A walk whose total is not known counts up without a bar or an ETA. */
static void draw_unknown_total(progress *p, double rate)
{
    switch (p->mode) {
    case PROGRESS_AUTO:
        fprintf(stderr, "\r%s %lld keys, %.0f keys/s%s ", p->what, p->done, rate,
                p->paused ? " PAUSED" : "");
        break;
    case PROGRESS_LOG:
        fprintf(stderr, "%s: %lld keys, %.0f keys/s%s\n", p->what, p->done, rate,
                p->paused ? ", paused" : "");
        break;
    case PROGRESS_JSON:
        printf("{\"event\":\"progress\",\"what\":\"%s\",\"done\":%lld,\"total\":null,"
               "\"keys_per_s\":%.0f,\"eta_s\":null,\"paused\":%s}\n",
               p->what, p->done, rate, p->paused ? "true" : "false");
        fflush(stdout);
        break;
    case PROGRESS_QUIET:
        break;
    }
}

/* Draws done of total in one unit (keys): the total is never shown below
 * what is done (an estimate, and SCAN may see a key twice). */
static void draw(progress *p)
{
    double rate = progress_rate(p);
    char e[16];

    if (p->total <= 0) {
        draw_unknown_total(p, rate);
        return;
    }
    if (p->total < p->done)
        p->total = p->done;
    double eta = p->total > p->done && rate > 0 ? (double)(p->total - p->done) / rate : 0;
    int pct = (int)(100.0 * (double)p->done / (double)p->total);
    if (p->paused)
        snprintf(e, sizeof(e), "PAUSED");
    else
        fmt_eta(e, sizeof(e), eta);
    switch (p->mode) {
    case PROGRESS_AUTO: {
        char bar[31];
        int fill = pct * 30 / 100;
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(30 - fill));
        bar[30] = '\0';
        fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld keys %.0f keys/s %s%s ", p->what, bar, pct,
                p->done, p->total, rate, p->paused ? "" : "ETA ", e);
        break;
    }
    case PROGRESS_LOG:
        fprintf(stderr, "%s: %lld/%lld keys (%d%%), %.0f keys/s, eta %s\n", p->what, p->done,
                p->total, pct, rate, e);
        break;
    case PROGRESS_JSON:
        printf("{\"event\":\"progress\",\"what\":\"%s\",\"done\":%lld,\"total\":%lld,"
               "\"percent\":%d,\"keys_per_s\":%.0f,\"eta_s\":%.0f,\"paused\":%s}\n",
               p->what, p->done, p->total, pct, rate, eta, p->paused ? "true" : "false");
        fflush(stdout);
        break;
    case PROGRESS_QUIET:
        break;
    }
}

void progress_paused(progress *p, int paused)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->paused != paused) {
        p->paused = paused;
        if (p->mode == PROGRESS_JSON) {
            printf("{\"event\":\"%s\",\"what\":\"%s\",\"done\":%lld}\n",
                   paused ? "paused" : "resumed", p->what, p->done);
            fflush(stdout);
        } else if (p->mode != PROGRESS_QUIET) {
            fprintf(stderr,
                    paused ? "%s%s: PAUSED by 'stepq migrate throttle --pause' at %lld keys; "
                             "waiting (run 'stepq migrate throttle --resume')\n"
                           : "%s%s: resumed at %lld keys\n",
                    p->mode == PROGRESS_AUTO ? "\n" : "", p->what, p->done);
        }
        if (p->mode == PROGRESS_AUTO)
            draw(p);
    }
    pthread_mutex_unlock(&p->mu);
}

void progress_update(progress *p, long long done)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->done = done;
    double t = now_s();
    if (p->mode == PROGRESS_AUTO) {
        if (t - p->last_draw >= 0.1) {
            draw(p);
            p->last_draw = t;
        }
    } else if (done - p->last_logged >= p->log_every) {
        draw(p);
        p->last_logged = done;
    }
    pthread_mutex_unlock(&p->mu);
}

static void progress_error_locked(progress *p, const char *key, const char *msg);

void progress_error(progress *p, const char *key, const char *msg)
{
    if (p != NULL)
        pthread_mutex_lock(&p->mu);
    progress_error_locked(p, key, msg);
    if (p != NULL)
        pthread_mutex_unlock(&p->mu);
}

static void progress_error_locked(progress *p, const char *key, const char *msg)
{
    if (p != NULL && p->mode == PROGRESS_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "event", "error", "key", key, "error", msg);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s != NULL)
            puts(s);
        free(s);
        json_decref(o);
        return;
    }
    fprintf(stderr, "%s%s: error on key '%s': %s\n", p && p->mode == PROGRESS_AUTO ? "\n" : "",
            p ? p->what : "stepq", key, msg);
}

void progress_finish_done(progress *p, long long done, const char *summary)
{
    if (p == NULL)
        return;
    /* The walk went on to its end: a pause the watcher saw lift only now
     * (it reads the switch twice a second) is over all the same. */
    if (p->paused)
        progress_paused(p, 0);
    p->total = done;
    p->done = done;
    /* The last progress line says 100 %, in every mode (the bar's is drawn
     * by progress_finish). */
    if (p->mode == PROGRESS_LOG || p->mode == PROGRESS_JSON)
        draw(p);
    progress_finish(p, done, summary);
}

void progress_finish(progress *p, long long done, const char *summary)
{
    if (p == NULL)
        return;
    p->done = done;
    double el = now_s() - p->start;
    double rate = el > 0 ? (double)done / el : 0;
    if (p->mode == PROGRESS_JSON) {
        json_t *o = summary ? json_loads(summary, 0, NULL) : NULL;
        if (o == NULL)
            o = json_object();
        json_object_set_new(o, "event", json_string("done"));
        json_object_set_new(o, "what", json_string(p->what));
        json_object_set_new(o, "done", json_integer(done));
        json_object_set_new(o, "seconds", json_real(el));
        json_object_set_new(o, "keys_per_s", json_real(rate));
        char *s = json_dumps(o, JSON_COMPACT);
        if (s != NULL)
            puts(s);
        free(s);
        json_decref(o);
    } else if (p->mode != PROGRESS_QUIET) {
        if (p->mode == PROGRESS_AUTO) {
            draw(p);
            fputc('\n', stderr);
        }
        fprintf(stderr, "%s: %lld keys in %.1f s (%.0f keys/s)%s%s\n", p->what, done, el, rate,
                summary ? " " : "", summary ? summary : "");
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}
