/*
 * http_guard.c - a deadline for the whole request head of every connection
 * of `stepq serve`, which trickling bytes cannot extend.
 *
 * libmicrohttpd 0.9.75 has an idle timeout (MHD_OPTION_CONNECTION_TIMEOUT)
 * that every byte received resets: a client sending one byte every few
 * seconds holds a connection for ever, and enough of them hold every slot
 * (slowloris). Its per-address and total limits bound how many one address
 * and all of them may hold; this file bounds how long each may take to
 * send its head.
 *
 * MHD tells us when a connection opens and closes (MHD_OPTION_NOTIFY_CONNECTION);
 * we keep each in a list with the time its current head began. The access
 * handler marks the head arrived; the completion of a request starts the
 * next head's clock (keep-alive). A thread looks every 250 ms and shuts
 * down the socket of a connection whose head is late: shutdown(2) only, so
 * MHD sees the end of the stream in its own thread and closes the
 * connection itself; we never touch MHD's structures from here. The fd is
 * ours to shut down because the list holds it between MHD's "started" and
 * "closed" notices, under our mutex, and MHD closes the fd only after the
 * "closed" notice; getpeername() must still give the address recorded at
 * the start, as a second check.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>

#include "http.h"

#define GUARD_EVERY_MS 250

static long long mono_ms(void)
{
    return http_now_us() / 1000;
}

/* Our record of connection c (the socket context we set), or NULL. */
static struct http_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return i ? i->socket_context : NULL;
}

void http_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe)
{
    struct http_server *s = cls;
    struct http_guard *g = &s->guard;
    struct http_conn *hc;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *i =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (i == NULL || (hc = calloc(1, sizeof(*hc))) == NULL)
            return; /* not guarded: the idle timeout still holds */
        hc->fd = i->connect_fd;
        hc->peerlen = sizeof(hc->peer);
        if (getpeername(hc->fd, (struct sockaddr *)&hc->peer, &hc->peerlen) != 0)
            hc->peerlen = 0;
        hc->head_since_ms = mono_ms();
        pthread_mutex_lock(&g->mu);
        hc->next = g->conns;
        if (g->conns != NULL)
            g->conns->prev = hc;
        g->conns = hc;
        pthread_mutex_unlock(&g->mu);
        atomic_fetch_add(&g->open, 1);
        *socket_context = hc;
        return;
    }
    hc = *socket_context;
    if (hc == NULL)
        return;
    pthread_mutex_lock(&g->mu);
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        g->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_sub(&g->open, 1);
    free(hc);
    *socket_context = NULL;
}

void http_guard_head_done(struct MHD_Connection *c)
{
    struct http_conn *hc = conn_of(c);

    if (hc != NULL)
        atomic_store(&hc->head_done, 1);
}

void http_guard_request_done(struct MHD_Connection *c)
{
    struct http_conn *hc = c ? conn_of(c) : NULL;

    if (hc == NULL)
        return;
    /* Written by the connection's own thread; the guard reads it under its
     * mutex: a stale read only delays a cut by one round. */
    hc->head_since_ms = mono_ms();
    atomic_store(&hc->head_done, 0);
}

/* Whether fd is still connected to the peer recorded at its start. */
static int same_peer(const struct http_conn *hc)
{
    struct sockaddr_storage now;
    socklen_t len = sizeof(now);

    if (hc->peerlen == 0 || getpeername(hc->fd, (struct sockaddr *)&now, &len) != 0)
        return 0;
    return len == hc->peerlen && memcmp(&now, &hc->peer, len) == 0;
}

/*
 * Cuts the connections whose head is late. Under pressure (at least 4/5 of
 * the connection cap open) a head gets HTTP_HEAD_PRESSURE_MS instead: a
 * client that means to be answered sends its head in one packet, so what is
 * still incomplete then is what holds slots, and the server would otherwise
 * refuse newcomers until the full deadline.
 */
static void cut_late(struct http_guard *g)
{
    long long now = mono_ms();
    long long limit = g->head_timeout_ms;

    if (g->max_conns > 0 && (unsigned)atomic_load(&g->open) * 5 >= g->max_conns * 4 &&
        limit > HTTP_HEAD_PRESSURE_MS)
        limit = HTTP_HEAD_PRESSURE_MS;
    pthread_mutex_lock(&g->mu);
    for (struct http_conn *hc = g->conns; hc != NULL; hc = hc->next) {
        if (hc->cut || atomic_load(&hc->head_done) || now - hc->head_since_ms < limit ||
            !same_peer(hc))
            continue;
        shutdown(hc->fd, SHUT_RDWR);
        hc->cut = 1;
        atomic_fetch_add(&g->cut_total, 1);
    }
    pthread_mutex_unlock(&g->mu);
}

static void *guard_loop(void *arg)
{
    struct http_guard *g = arg;
    struct timespec until;

    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        pthread_mutex_unlock(&g->mu);
        cut_late(g);
        pthread_mutex_lock(&g->mu);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += GUARD_EVERY_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!g->stop && pthread_cond_timedwait(&g->cv, &g->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int http_guard_start(struct http_server *s)
{
    struct http_guard *g = &s->guard;

    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->head_timeout_ms = s->limits.head_timeout_ms;
    g->max_conns = s->limits.max_connections;
    if (g->head_timeout_ms <= 0)
        return STEPQ_OK;
    if (pthread_create(&g->tid, NULL, guard_loop, g) != 0)
        return STEPQ_ERR;
    g->running = 1;
    return STEPQ_OK;
}

/* After MHD_stop_daemon: every connection was closed and its record freed. */
void http_guard_stop(struct http_server *s)
{
    struct http_guard *g = &s->guard;

    if (g->running) {
        pthread_mutex_lock(&g->mu);
        g->stop = 1;
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->tid, NULL);
        g->running = 0;
    }
}
