/*
 * progress.c - see progress.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "progress.h"

struct progress {
    char what[32];
    long long total, last_logged;
    long long log_every;
    enum progress_mode mode;
    double start, last_draw;
    long long done;
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

static void draw(progress *p)
{
    double rate = progress_rate(p);
    double eta = p->total > p->done && rate > 0 ? (double)(p->total - p->done) / rate : 0;
    int pct = p->total > 0 ? (int)(100.0 * (double)p->done / (double)p->total) : 0;
    char e[16];

    if (pct > 100)
        pct = 100; /* SCAN may see a key twice, and keys come and go */
    fmt_eta(e, sizeof(e), eta);
    switch (p->mode) {
    case PROGRESS_AUTO: {
        char bar[31];
        int fill = pct * 30 / 100;
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(30 - fill));
        bar[30] = '\0';
        fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld %.0f keys/s ETA %s ", p->what, bar, pct, p->done,
                p->total, rate, e);
        break;
    }
    case PROGRESS_LOG:
        fprintf(stderr, "%s: %lld/%lld keys (%d%%), %.0f keys/s, eta %s\n", p->what, p->done,
                p->total, pct, rate, e);
        break;
    case PROGRESS_JSON:
        printf("{\"event\":\"progress\",\"what\":\"%s\",\"done\":%lld,\"total\":%lld,"
               "\"keys_per_s\":%.0f,\"eta_s\":%.0f}\n",
               p->what, p->done, p->total, rate, eta);
        fflush(stdout);
        break;
    case PROGRESS_QUIET:
        break;
    }
}

void progress_update(progress *p, long long done)
{
    if (p == NULL)
        return;
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
}

void progress_error(progress *p, const char *key, const char *msg)
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
    free(p);
}
