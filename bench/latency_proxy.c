/*
 * latency_proxy.c - a TCP proxy that adds a set delay to each direction,
 * so that any Redis client can be measured over a slow link on one
 * machine (the kernel's netem is not available here).
 *
 *   latency_proxy serve LISTEN_PORT TARGET RTT_MS
 *       listens on 127.0.0.1:LISTEN_PORT (0: a free port) and forwards
 *       every connection to TARGET (host:port, or the path of a unix
 *       socket), each byte held RTT_MS/2 in each direction; prints
 *       "port=P" on its first line once it listens. Runs until killed.
 *   latency_proxy ping HOST:PORT [N]
 *       N (default 50) PING round trips, one at a time; prints
 *       "rtt_ms_min=.. rtt_ms_p50=.. rtt_ms_max=..".
 *
 * Why a queue of timestamped chunks and not a sleep: a sleep per chunk
 * would add the delay once per chunk in a row (a pipeline would wait n
 * times). Each chunk read is stamped with the time it may leave and queued
 * per direction; one poll loop writes a chunk when its time comes. The
 * delay is the same for every chunk, so the queue is in time order and the
 * bytes leave in the order they came. Reading stops while a direction
 * holds more than QUEUE_MAX bytes (backpressure, bounded memory).
 */
#define _GNU_SOURCE /* ppoll */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define CHUNK     65536
#define QUEUE_MAX (32u << 20)

struct chunk {
    struct chunk *next;
    long long due_us; /* when it may leave */
    size_t len, off;
    char data[];
};

struct dir { /* one direction: bytes read from `from`, written to `to` */
    int from, to;
    struct chunk *head, *tail;
    size_t queued;
    int eof; /* `from` closed: shut `to` down once the queue is empty */
};

struct conn {
    int used;
    struct dir d[2]; /* 0 client -> server, 1 server -> client */
};

static struct conn conns[MAX_CONNS];
static long long delay_us;

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int connect_target(const char *target)
{
    int fd;

    if (target[0] == '/') {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", target);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
            if (fd >= 0)
                close(fd);
            return -1;
        }
    } else {
        char host[256];
        const char *colon = strrchr(target, ':');
        if (colon == NULL || (size_t)(colon - target) >= sizeof(host))
            return -1;
        memcpy(host, target, (size_t)(colon - target));
        host[colon - target] = '\0';
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
            return -1;
        fd = socket(res->ai_family, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
            if (fd >= 0)
                close(fd);
            freeaddrinfo(res);
            return -1;
        }
        freeaddrinfo(res);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    nonblock(fd);
    return fd;
}

static void conn_close(struct conn *c)
{
    for (int i = 0; i < 2; i++) {
        struct chunk *k = c->d[i].head;
        while (k != NULL) {
            struct chunk *n = k->next;
            free(k);
            k = n;
        }
    }
    close(c->d[0].from);
    close(c->d[0].to);
    memset(c, 0, sizeof(*c));
}

/* Reads what `from` has into a new chunk due delay_us from now; -1 when the
 * connection is to be closed. */
static int dir_read(struct dir *d)
{
    struct chunk *k = malloc(sizeof(*k) + CHUNK);
    if (k == NULL)
        return -1;
    ssize_t n = read(d->from, k->data, CHUNK);
    if (n <= 0) {
        free(k);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        d->eof = 1;
        return 0;
    }
    k->next = NULL;
    k->len = (size_t)n;
    k->off = 0;
    k->due_us = now_us() + delay_us;
    if (d->tail)
        d->tail->next = k;
    else
        d->head = k;
    d->tail = k;
    d->queued += (size_t)n;
    return 0;
}

/* Writes every chunk that is due; -1 on a write error. */
static int dir_write(struct dir *d, long long now)
{
    while (d->head != NULL && d->head->due_us <= now) {
        struct chunk *k = d->head;
        ssize_t n = write(d->to, k->data + k->off, k->len - k->off);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        k->off += (size_t)n;
        d->queued -= (size_t)n;
        if (k->off < k->len)
            return 0;
        d->head = k->next;
        if (d->head == NULL)
            d->tail = NULL;
        free(k);
    }
    if (d->head == NULL && d->eof == 1) {
        shutdown(d->to, SHUT_WR);
        d->eof = 2;
    }
    return 0;
}

static int serve(int port, const char *target, double rtt_ms)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t alen = sizeof(a);

    delay_us = (long long)(rtt_ms * 500.0); /* half the round trip each way */
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 16) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "latency_proxy: cannot listen on 127.0.0.1:%d: %s\n", port,
                strerror(errno));
        return 1;
    }
    nonblock(ls);
    printf("port=%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        struct pollfd pf[1 + 2 * MAX_CONNS];
        int map[1 + 2 * MAX_CONNS], np = 0;
        long long now = now_us(), next = -1;
        pf[np].fd = ls;
        pf[np].events = POLLIN;
        map[np++] = -1;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (!conns[i].used)
                continue;
            for (int j = 0; j < 2; j++) {
                struct dir *d = &conns[i].d[j];
                short ev = 0;
                if (!d->eof && d->queued < QUEUE_MAX)
                    ev |= POLLIN;
                if (d->head != NULL && d->head->due_us <= now)
                    ev |= POLLOUT;
                else if (d->head != NULL && (next < 0 || d->head->due_us < next))
                    next = d->head->due_us;
                pf[np].fd = d->from;
                pf[np].events = ev;
                map[np++] = i * 2 + j;
            }
        }
        /* ppoll sleeps to the microsecond: no busy loop (a spinning proxy
         * would take a core from the contenders it measures). */
        struct timespec ts = {0, 0};
        if (next > now) {
            ts.tv_sec = (time_t)((next - now) / 1000000);
            ts.tv_nsec = (long)((next - now) % 1000000) * 1000;
        }
        if (ppoll(pf, (nfds_t)np, next < 0 ? NULL : &ts, NULL) < 0 && errno != EINTR)
            return 1;
        if (pf[0].revents & POLLIN) {
            int c = accept(ls, NULL, NULL);
            int slot = -1;
            for (int i = 0; i < MAX_CONNS && c >= 0; i++)
                if (!conns[i].used) {
                    slot = i;
                    break;
                }
            int s = slot >= 0 ? connect_target(target) : -1;
            if (s < 0) {
                if (c >= 0)
                    close(c);
            } else {
                nonblock(c);
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                conns[slot] = (struct conn){.used = 1};
                conns[slot].d[0] = (struct dir){.from = c, .to = s};
                conns[slot].d[1] = (struct dir){.from = s, .to = c};
            }
        }
        for (int p = 1; p < np; p++) {
            struct conn *c = &conns[map[p] / 2];
            if (c->used && (pf[p].revents & (POLLIN | POLLHUP | POLLERR)))
                if (dir_read(&c->d[map[p] % 2]) != 0)
                    conn_close(c);
        }
        now = now_us();
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &conns[i];
            if (!c->used)
                continue;
            if (dir_write(&c->d[0], now) != 0 || dir_write(&c->d[1], now) != 0 ||
                (c->d[0].eof == 2 && c->d[1].eof == 2))
                conn_close(c);
        }
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int ping(const char *target, int n)
{
    int fd = connect_target(target);
    double *t = calloc((size_t)n, sizeof(*t));
    char buf[64];

    if (fd < 0 || t == NULL) {
        fprintf(stderr, "latency_proxy: cannot connect to %s\n", target);
        return 1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    for (int i = 0; i < n; i++) {
        long long t0 = now_us();
        if (write(fd, "PING\r\n", 6) != 6)
            return 1;
        size_t got = 0;
        while (got < 7) { /* +PONG\r\n */
            ssize_t r = read(fd, buf + got, sizeof(buf) - got);
            if (r <= 0) {
                fprintf(stderr, "latency_proxy: connection closed during PING\n");
                return 1;
            }
            got += (size_t)r;
        }
        if (memcmp(buf, "+PONG\r\n", 7) != 0) {
            fprintf(stderr, "latency_proxy: unexpected reply to PING\n");
            return 1;
        }
        t[i] = (double)(now_us() - t0) / 1000.0;
    }
    qsort(t, (size_t)n, sizeof(*t), cmp_d);
    printf("rtt_ms_min=%.3f rtt_ms_p50=%.3f rtt_ms_max=%.3f\n", t[0], t[n / 2], t[n - 1]);
    free(t);
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 5 && strcmp(argv[1], "serve") == 0)
        return serve(atoi(argv[2]), argv[3], atof(argv[4]));
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "ping") == 0)
        return ping(argv[2], argc == 4 ? atoi(argv[3]) : 50);
    fprintf(stderr, "usage: latency_proxy serve LISTEN_PORT HOST:PORT|/unix.sock RTT_MS\n"
                    "       latency_proxy ping HOST:PORT [N]\n");
    return 2;
}
