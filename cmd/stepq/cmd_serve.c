/*
 * cmd_serve.c - `stepq serve`: the HTTP API and health endpoints. Flags,
 * startup, signals and the thread that announces this process as live.
 *
 * Signals: SIGTERM and SIGINT are blocked in every thread (the pool threads
 * inherit the mask) and taken by the main thread with sigwait, so no handler
 * ever runs inside libmicrohttpd or hiredis. On either, the server stops
 * accepting, lets the requests in flight finish (up to --drain-timeout), and
 * exits 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "http.h"

#define ANNOUNCE_EVERY_MS 5000
#define ANNOUNCE_TTL_MS   15000

static const char usage[] =
    "usage: stepq serve [--listen ADDR:PORT] [--threads N] [--no-auth | --auth-reads]\n"
    "                   [--drain-timeout S] [--max-connections N] [--max-per-address N]\n"
    "                   [--idle-timeout S] [--head-timeout S]\n"
    "Serves the HTTP API and the console (docs/http.md) on ADDR:PORT (default\n"
    "127.0.0.1:8080; port 0 picks a free one). POST endpoints need 'Authorization:\n"
    "Bearer TOKEN' with TOKEN from $STEPQ_API_TOKEN (16 bytes or more); --auth-reads\n"
    "makes every GET need it too. Without a token serve refuses to start unless given\n"
    "--no-auth, which only a loopback address takes. Limits: --max-connections in all\n"
    "(default 4000), --max-per-address (64), --idle-timeout between bytes (30 s), and\n"
    "--head-timeout for a whole request head however its bytes trickle (10 s; 1 s\n"
    "while 4/5 of the connections are open).\n"
    "SIGTERM stops accepting, finishes requests in flight and exits 0.\n"
    "Several namespaces (--namespace A --namespace B, or A,B): each is served under\n"
    "/q/NAMESPACE/ (percent-encoded: /q/%7Bemails%7D:/steps); the first also on the\n"
    "old paths, and the console and /metrics are the first's.\n";

struct listen_addr {
    char host[64]; /* as given, without brackets */
    int ipv6;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
};

static int parse_port(const char *s, long *ret)
{
    char *end;

    errno = 0;
    *ret = strtol(s, &end, 10);
    return *s == '\0' || *end != '\0' || errno != 0 || *ret < 0 || *ret > 65535 ? -1 : 0;
}

/* ADDR:PORT with ADDR an IPv4 address, [IPv6] or localhost. */
static int parse_listen(const char *s, struct listen_addr *a)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    long port;
    size_t n;

    memset(a, 0, sizeof(*a));
    if (colon == NULL || colon == s || (n = (size_t)(colon - s)) >= sizeof(host))
        return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    if (parse_port(colon + 1, &port) != 0)
        return -1;
    snprintf(a->host, sizeof(a->host), "%s", host);
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        host[n - 1] = '\0';
        a->ipv6 = 1;
        a->v6.sin6_family = AF_INET6;
        a->v6.sin6_port = htons((uint16_t)port);
        return inet_pton(AF_INET6, host + 1, &a->v6.sin6_addr) == 1 ? 0 : -1;
    }
    a->v4.sin_family = AF_INET;
    a->v4.sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        return inet_pton(AF_INET, "127.0.0.1", &a->v4.sin_addr) == 1 ? 0 : -1;
    return inet_pton(AF_INET, host, &a->v4.sin_addr) == 1 ? 0 : -1;
}

/* ---------------------------------------------------------------------------
 * The announce thread: its own handle, so `stepq migrate status` lists us.
 * ------------------------------------------------------------------------- */
struct announcer {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    stepq *q[HTTP_SERVE_NS_MAX]; /* one per namespace: each namespace's status lists us */
    size_t n;
};

static void *announce_loop(void *arg)
{
    struct announcer *an = arg;
    struct timespec until;

    pthread_mutex_lock(&an->mu);
    while (!an->stop) {
        pthread_mutex_unlock(&an->mu);
        /* A failure (Redis down) is retried on the next tick. */
        for (size_t i = 0; i < an->n; i++)
            stepq_proc_announce(an->q[i], "serve", ANNOUNCE_TTL_MS);
        pthread_mutex_lock(&an->mu);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += ANNOUNCE_EVERY_MS / 1000;
        while (!an->stop && pthread_cond_timedwait(&an->cv, &an->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&an->mu);
    for (size_t i = 0; i < an->n; i++)
        stepq_proc_withdraw(an->q[i]);
    return NULL;
}

static void announcer_stop(struct announcer *an)
{
    pthread_mutex_lock(&an->mu);
    an->stop = 1;
    pthread_cond_signal(&an->cv);
    pthread_mutex_unlock(&an->mu);
    pthread_join(an->tid, NULL);
}

/* ---------------------------------------------------------------------------
 * The command
 * ------------------------------------------------------------------------- */
struct serve_opts {
    const char *listen;
    long threads;
    int no_auth, auth_reads;
    long drain_s;
    long max_conns, max_per_addr, idle_s, head_s;
};

static int parse_args(struct cli *cli, int argc, char **argv, struct serve_opts *o)
{
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        {"listen", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"no-auth", no_argument, NULL, 'A'},
        {"drain-timeout", required_argument, NULL, 'D'},
        {"auth-reads", no_argument, NULL, 'R'},
        {"max-connections", required_argument, NULL, 'C'},
        {"max-per-address", required_argument, NULL, 'P'},
        {"idle-timeout", required_argument, NULL, 'I'},
        {"head-timeout", required_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    int c;

    o->listen = "127.0.0.1:8080";
    o->threads = 4;
    o->drain_s = 30;
    o->max_conns = 4000;
    o->max_per_addr = 64;
    o->idle_s = 30;
    o->head_s = 10;
    while ((c = getopt_long(argc, argv, CLI_COMMON_SHORT "l:t:", opts, NULL)) != -1) {
        if (c == 'l')
            o->listen = optarg;
        else if (c == 't')
            o->threads = cli_long(usage, "threads", optarg, 1, 64);
        else if (c == 'A')
            o->no_auth = 1;
        else if (c == 'D')
            o->drain_s = cli_long(usage, "drain timeout", optarg, 0, 3600);
        else if (c == 'R')
            o->auth_reads = 1;
        else if (c == 'C')
            o->max_conns = cli_long(usage, "max-connections", optarg, 1, 100000);
        else if (c == 'P')
            o->max_per_addr = cli_long(usage, "max-per-address", optarg, 1, 100000);
        else if (c == 'I')
            o->idle_s = cli_long(usage, "idle-timeout", optarg, 1, 3600);
        else if (c == 'H')
            o->head_s = cli_long(usage, "head-timeout", optarg, 1, 3600);
        else if (!cli_common_opt(cli, c, usage))
            return cli_usage_error(usage, "unknown option");
    }
    if (optind != argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    if (o->no_auth && o->auth_reads)
        return cli_usage_error(usage, "--auth-reads needs a token; drop --no-auth");
    return EXIT_DONE;
}

/* Each connection is a file descriptor: raises the soft limit as far as
 * the hard one allows, and holds the cap under what it gives (a server out
 * of descriptors refuses everyone, /health too). */
static unsigned fit_fd_limit(unsigned want)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)want + 64; /* Redis, the pool's pipes, the log */

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return want;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur >= need)
        return want;
    unsigned fit = rl.rlim_cur > 128 ? (unsigned)(rl.rlim_cur - 64) : 64;
    fprintf(stderr,
            "stepq serve: the file descriptor limit (%llu) holds %u connections, not %u; raise "
            "it (ulimit -n, LimitNOFILE=) for more\n",
            (unsigned long long)rl.rlim_cur, fit, want);
    return fit;
}

/* 127.0.0.0/8 or ::1: only this machine can connect. */
static int is_loopback(const struct listen_addr *a)
{
    if (a->ipv6)
        return IN6_IS_ADDR_LOOPBACK(&a->v6.sin6_addr);
    return (ntohl(a->v4.sin_addr.s_addr) >> 24) == 127;
}

/* The auth rules: a token long enough to resist guessing, and no server
 * without one where another machine can reach it. */
static int check_auth_setup(const struct serve_opts *o, const struct listen_addr *a,
                            const char *token)
{
    if (o->no_auth && !is_loopback(a))
        return cli_usage_error(usage,
                               "--no-auth on '%s', which is not a loopback address: anyone who "
                               "reaches it could move the phase; set STEPQ_API_TOKEN, or listen "
                               "on 127.0.0.1",
                               a->host);
    if (o->no_auth)
        return EXIT_DONE;
    if (token == NULL || *token == '\0')
        return cli_usage_error(usage, "no API token; set STEPQ_API_TOKEN (POST endpoints then "
                                      "need 'Authorization: Bearer TOKEN'), or pass --no-auth");
    if (strlen(token) < HTTP_TOKEN_MIN)
        return cli_usage_error(usage,
                               "STEPQ_API_TOKEN is %zu bytes; use %d or more, e.g. "
                               "$(head -c 32 /dev/urandom | base64)",
                               strlen(token), HTTP_TOKEN_MIN);
    return EXIT_DONE;
}

/*
 * The announcer's handle. It checks the URL, namespace, rules and pin once,
 * before any thread starts: a bad one is a usage error (NULL, printed). An
 * unreachable Redis is not: serve starts, /health answers 503 until Redis
 * answers, and every handle reconnects by itself.
 */
static stepq *serve_connect(struct http_server *s, size_t ns)
{
    char err[512];
    stepq *q;

    if (s->url != NULL && *s->url != '\0' &&
        stepq_url_check(s->url, err, sizeof(err)) != STEPQ_OK) {
        fprintf(stderr, "stepq: %s\n", err);
        return NULL;
    }
    q = stepq_connect(s->url, &s->opts[ns]);
    if (q == NULL) {
        fputs("stepq: out of memory\n", stderr);
        return NULL;
    }
    if (stepq_err(q) == STEPQ_E_INVALID) {
        fprintf(stderr, "stepq: serve: %s\n", stepq_errstr(q));
        stepq_free(q);
        return NULL;
    }
    if (stepq_err(q) != STEPQ_E_NONE)
        fprintf(stderr,
                "stepq serve: redis is not reachable yet (%s); /health answers 503 "
                "until it is\n",
                stepq_errstr(q));
    return q;
}

/* Waits for SIGTERM or SIGINT (blocked in every thread since startup). */
static int wait_signal(const sigset_t *set)
{
    int sig = 0;

    while (sigwait(set, &sig) != 0)
        ;
    return sig;
}

static int run(struct http_server *s, const struct serve_opts *o, const struct listen_addr *a,
               struct announcer *an, const sigset_t *set)
{
    int left;

    if (http_server_start(s, a->ipv6 ? (const void *)&a->v6 : (const void *)&a->v4, a->ipv6,
                          (int)o->threads) != STEPQ_OK)
        return EXIT_FAILED;
    if (pthread_create(&an->tid, NULL, announce_loop, an) != 0) {
        fputs("stepq: serve: cannot start the announce thread\n", stderr);
        return EXIT_FAILED;
    }
    fprintf(stderr, "stepq serve: listening on http://%s:%d (%ld threads, auth %s)\n", a->host,
            http_server_port(s), o->threads,
            s->token ? (s->auth_reads ? "on, reads too" : "on") : "off (--no-auth)");
    int sig = wait_signal(set);
    fprintf(stderr, "stepq serve: %s: draining %d request(s) in flight\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", atomic_load(&s->in_flight));
    left = http_server_drain(s, o->drain_s * 1000);
    announcer_stop(an);
    if (left > 0) {
        fprintf(stderr, "stepq serve: drain timed out with %d request(s) still in flight\n", left);
        return EXIT_FAILED;
    }
    fputs("stepq serve: stopped\n", stderr);
    return EXIT_DONE;
}

int cmd_serve(struct cli *cli, int argc, char **argv)
{
    static struct http_server s; /* big (the metrics); not on the stack */
    struct announcer an = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct serve_opts o = {0};
    struct listen_addr a;
    const char *token = getenv("STEPQ_API_TOKEN");
    sigset_t set;
    int rc = parse_args(cli, argc, argv, &o);

    if (rc != EXIT_DONE)
        return rc;
    if (parse_listen(o.listen, &a) != 0)
        return cli_usage_error(usage,
                               "invalid --listen '%s'; use ADDR:PORT, e.g. 127.0.0.1:8080 or "
                               "[::1]:8080",
                               o.listen);
    if ((rc = check_auth_setup(&o, &a, token)) != EXIT_DONE)
        return rc;
    s.auth_reads = o.auth_reads;
    s.limits.max_connections = fit_fd_limit((unsigned)o.max_conns);
    s.limits.max_per_address = (unsigned)o.max_per_addr;
    s.limits.idle_timeout_s = (unsigned)o.idle_s;
    s.limits.head_timeout_ms = o.head_s * 1000;
    s.url = cli->url ? cli->url : getenv("REDIS_URL");
    s.nns = cli_namespaces(cli, usage, s.nss);
    for (size_t i = 0; i < s.nns; i++) {
        s.opts[i].namespace_ = s.nss[i];
        s.opts[i].rules_file = cli->rules ? cli->rules : getenv("STEPQ_RULES");
        s.opts[i].client_name = "stepq-serve";
        s.opts[i].retention_ms = cli_retention_ms(cli);
        if ((an.q[i] = serve_connect(&s, i)) == NULL) {
            while (an.n > 0)
                stepq_free(an.q[--an.n]);
            return EXIT_USAGE;
        }
        an.n++;
    }
    s.token = o.no_auth ? NULL : token;
    s.token_len = s.token ? strlen(s.token) : 0;
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    rc = run(&s, &o, &a, &an, &set);
    http_server_release(&s);
    for (size_t i = 0; i < an.n; i++)
        stepq_free(an.q[i]);
    return rc;
}
