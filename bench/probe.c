/*
 * probe.c - a foreground client's latency while something else loads Redis:
 * round trips at a fixed rate (alternately an HGET of an existing hash and
 * an HSET of the probe's own key), each timed, until SIGTERM/SIGINT or the
 * time limit. Prints the percentiles of the round trips it made.
 *
 * usage: probe URL RATE MAX_SECONDS
 * prints: samples=N p50_ms=A p99_ms=B max_ms=C
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"

static const char *const prog = "probe";
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double pct(const double *v, long n, double p)
{
    long i = (long)(p * (double)(n - 1) + 0.5);

    return n > 0 ? v[i] : 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: probe URL RATE MAX_SECONDS\n");
        return 2;
    }
    double rate = strtod(argv[2], NULL), limit = strtod(argv[3], NULL);
    if (rate < 1 || rate > 100000 || limit <= 0 || limit > 3600) {
        fprintf(stderr, "probe: rate 1-100000 per second and 0-3600 seconds, please\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    redisContext *c = bench_connect(prog, argv[1]);
    long cap = (long)(rate * limit) + 16, n = 0;
    double *lat = malloc((size_t)cap * sizeof(*lat));
    if (lat == NULL)
        return 1;
    double t0 = bench_now(), next = t0;
    while (!stop && n < cap && bench_now() - t0 < limit) {
        double t = bench_now();
        if (t < next) {
            usleep((useconds_t)((next - t) * 1e6));
            continue;
        }
        next += 1.0 / rate;
        if (next < t) /* never burst to catch up after a stall */
            next = t + 1.0 / rate;
        redisReply *r = n % 2 ? redisCommand(c, "HSET stepq-probe:%d at %ld", (int)getpid(), n)
                              : redisCommand(c, "HGET worker:w00 capabilities");
        if (r == NULL) {
            fprintf(stderr, "probe: connection lost: %s\n", c->errstr);
            return 1;
        }
        freeReplyObject(r);
        lat[n++] = (bench_now() - t) * 1000.0;
    }
    freeReplyObject(redisCommand(c, "DEL stepq-probe:%d", (int)getpid()));
    qsort(lat, (size_t)n, sizeof(*lat), cmp_double);
    printf("samples=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", n, pct(lat, n, 0.50),
           pct(lat, n, 0.99), n ? lat[n - 1] : 0);
    free(lat);
    redisFree(c);
    return 0;
}
