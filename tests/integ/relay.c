/* relay.c - see relay.h. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "relay.h"
#include "testlib.h"

struct relay {
    relay_hook hook;
    void *arg;
    char dir[64], path[108], url[256], server[512];
    int lfd, stop_fd[2];
    pthread_t thread;
    char *buf; /* client bytes not yet parsed into whole commands */
    size_t len, cap;
};

static void fatal(const char *what)
{
    fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int unix_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    if (strlen(path) >= sizeof(a.sun_path)) {
        fprintf(stderr, "relay: socket path '%s' is too long\n", path);
        exit(1);
    }
    memcpy(a.sun_path, path, strlen(path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        fatal("connect to the test server");
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Parses one "$len\r\nbytes\r\n" or "*n\r\n" header line number after the
 * prefix character at p; returns the position after its \r\n, or NULL when
 * the line is not complete. */
static const char *line_num(const char *p, const char *end, long *ret)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    if (nl == NULL)
        return NULL;
    *ret = strtol(p + 1, NULL, 10);
    return nl + 1;
}

/* The length of the first whole command in buf (a RESP array of bulk
 * strings, which is all hiredis sends), 0 when it is not complete yet;
 * fills argv/lens with its first RELAY_ARGV arguments. */
static size_t parse(const char *buf, size_t len, int *argc, const char **argv, size_t *lens)
{
    const char *p = buf, *end = buf + len;
    long n, l;

    if (len == 0 || *p != '*' || (p = line_num(p, end, &n)) == NULL)
        return 0;
    *argc = (int)n;
    for (long i = 0; i < n; i++) {
        if (p >= end || *p != '$' || (p = line_num(p, end, &l)) == NULL ||
            end - p < (ptrdiff_t)l + 2)
            return 0;
        if (i < RELAY_ARGV) {
            argv[i] = p;
            lens[i] = (size_t)l;
        }
        p += l + 2;
    }
    return (size_t)(p - buf);
}

/* Forwards the whole commands in r->buf; returns -1 on a cut or an error. */
static int client_bytes(struct relay *r, int sfd)
{
    const char *argv[RELAY_ARGV];
    size_t lens[RELAY_ARGV], n;
    int argc;

    while ((n = parse(r->buf, r->len, &argc, argv, lens)) > 0) {
        if (r->hook != NULL && r->hook(argc, argv, lens, r->arg) == RELAY_CUT)
            return -1;
        if (write_all(sfd, r->buf, n) != 0)
            return -1;
        memmove(r->buf, r->buf + n, r->len - n);
        r->len -= n;
    }
    return 0;
}

/* Relays one client until it leaves, the server does, or a cut; returns 1
 * after a cut. */
static int relay_client(struct relay *r, int cfd)
{
    int sfd = unix_connect(r->server);
    struct pollfd p[3] = {{cfd, POLLIN, 0}, {sfd, POLLIN, 0}, {r->stop_fd[0], POLLIN, 0}};
    char tmp[65536];
    int cut = 0;

    for (;;) {
        if (poll(p, 3, -1) < 0 && errno != EINTR)
            break;
        if (p[2].revents)
            break;
        if (p[1].revents) {
            ssize_t n = read(sfd, tmp, sizeof(tmp));
            if (n <= 0 || write_all(cfd, tmp, (size_t)n) != 0)
                break;
        }
        if (p[0].revents) {
            ssize_t n = read(cfd, tmp, sizeof(tmp));
            if (n <= 0)
                break;
            if (r->len + (size_t)n > r->cap) {
                r->cap = (r->len + (size_t)n) * 2;
                r->buf = realloc(r->buf, r->cap);
                if (r->buf == NULL)
                    fatal("out of memory");
            }
            memcpy(r->buf + r->len, tmp, (size_t)n);
            r->len += (size_t)n;
            if (client_bytes(r, sfd) != 0) {
                cut = 1;
                break;
            }
        }
    }
    close(cfd);
    if (cut) {
        /* What was forwarded runs to its end: read the server's replies
         * for a while before closing, so that Redis does not see the
         * client leave while commands it already holds are pending. */
        struct pollfd s = {sfd, POLLIN, 0};
        while (poll(&s, 1, 300) > 0 && read(sfd, tmp, sizeof(tmp)) > 0)
            ;
    }
    close(sfd);
    r->len = 0;
    return cut;
}

static void *run(void *arg)
{
    struct relay *r = arg;

    for (;;) {
        struct pollfd p[2] = {{r->lfd, POLLIN, 0}, {r->stop_fd[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return NULL;
        if (p[1].revents)
            return NULL;
        int cfd = accept(r->lfd, NULL, NULL);
        if (cfd >= 0 && relay_client(r, cfd)) {
            /* A cut client that reconnects must fail, as it would if its
             * process had died: no more connections. */
            close(r->lfd);
            r->lfd = -1;
            unlink(r->path);
            return NULL;
        }
    }
}

relay *relay_start(relay_hook hook, void *arg)
{
    struct relay *r = calloc(1, sizeof(*r));
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int db = 0;

    if (r == NULL)
        fatal("out of memory");
    r->hook = hook;
    r->arg = arg;
    if (sscanf(t_url(), "unix://%511[^?]?db=%d", r->server, &db) < 1) {
        fprintf(stderr, "relay: tests take a unix:// STEPQ_TEST_REDIS\n");
        exit(1);
    }
    snprintf(r->dir, sizeof(r->dir), "/tmp/stepq-relay.XXXXXX");
    if (mkdtemp(r->dir) == NULL)
        fatal("mkdtemp");
    snprintf(r->path, sizeof(r->path), "%s/s", r->dir);
    snprintf(r->url, sizeof(r->url), "unix://%s?db=%d", r->path, db);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", r->path);
    r->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(r->lfd, 4) != 0 || pipe(r->stop_fd) != 0)
        fatal("listen");
    if (pthread_create(&r->thread, NULL, run, r) != 0)
        fatal("pthread_create");
    return r;
}

const char *relay_url(const relay *r)
{
    return r->url;
}

void relay_stop(relay *r)
{
    if (r == NULL)
        return;
    if (write(r->stop_fd[1], "x", 1) != 1)
        fatal("stop");
    pthread_join(r->thread, NULL);
    if (r->lfd >= 0)
        close(r->lfd);
    close(r->stop_fd[0]);
    close(r->stop_fd[1]);
    unlink(r->path);
    rmdir(r->dir);
    free(r->buf);
    free(r);
}

int relay_arg_is(int argc, const char *const *argv, const size_t *lens, int i, const char *s)
{
    return i < argc && i < RELAY_ARGV && lens[i] == strlen(s) && memcmp(argv[i], s, lens[i]) == 0;
}

stepq *relay_stepq(relay **rl, relay_hook hook, void *arg)
{
    stepq_options o = {.ignore_env_pin = 1, .reconnect_tries = 1};

    *rl = relay_start(hook, arg);
    stepq *q = stepq_connect(relay_url(*rl), &o);
    if (q == NULL || stepq_err(q) != 0) {
        stepq_free(q);
        relay_stop(*rl);
        return NULL;
    }
    return q;
}
