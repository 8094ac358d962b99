/*
 * http_console.h - the operator's console of `stepq serve` (http_console.c)
 * and the files of web/ embedded at build time (gen/web_gen.c).
 */
#ifndef STEPQ_HTTP_CONSOLE_H
#define STEPQ_HTTP_CONSOLE_H

#include <stddef.h>

/* One file of web/, NUL-terminated; the table ends with a NULL name. */
struct web_asset {
    const char *name;
    const char *body;
    size_t len;
};
extern const struct web_asset web_assets[];

struct http_server;
struct http_req;
struct http_answer;
#include "stepq.h"

/* GET /, /console.js, /console.css: the embedded file, or 404. */
void http_console_asset(const struct http_req *req, struct http_answer *ans);
/* GET /console/feed: the status document plus moves, queue and workers. */
void http_console_feed(struct http_server *s, stepq *q, struct http_answer *ans);
/* POST /migrate/phase {"to", "reason"?, "who"?}: one phase move. */
void http_console_phase(stepq *q, const struct http_req *req, struct http_answer *ans);
/* POST /migrate/throttle {"paused"?, "rate"?}: the throttle switch. */
void http_console_throttle(stepq *q, const struct http_req *req, struct http_answer *ans);

#endif
