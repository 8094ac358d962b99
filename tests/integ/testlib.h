/*
 * testlib.h - what the integration tests share: a stepq handle and a raw
 * hiredis connection to the test server, and an event recorder.
 */
#ifndef STEPQ_TESTLIB_H
#define STEPQ_TESTLIB_H

#include <hiredis/hiredis.h>
#include "stepq.h"

/* The URL of the test database ($STEPQ_TEST_REDIS). Exits 1 when unset. */
const char *t_url(void);
/* Connects both; empties the database when the harness owns the server
 * (STEPQ_TEST_PRIVATE=1), else refuses to run on a non-empty database. */
void t_setup(void);
void t_teardown(void);
/* Kills Q's connection on the server side (only Q's: tests run in parallel). */
void t_kill_q(void);
extern stepq *Q;
extern redisContext *R;

/* Raw commands on R; the helpers abort the test binary on a lost connection. */
redisReply *t_cmd(const char *fmt, ...);
long long t_int(const char *fmt, ...);
int t_exists(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A string reply as a static buffer ("" when nil). */
const char *t_str(const char *fmt, ...);
void t_flush(void);
void t_phase(const char *phase); /* stores the phase directly */

/* A JSON field of a step as text (static buffer); "" when absent. */
const char *t_field(const char *json, const char *name);

/* Records which events channels got messages. */
typedef struct t_events t_events;
t_events *t_events_start(void);
/* Waits for everything published so far; returns how many messages came on
 * job_events (old) and step_events (new). Channels are shared by all the
 * databases of the server, so only messages that mention one of the ids
 * given to t_events_watch count (other tests run at the same time). */
void t_events_take(t_events *e, int *old_n, int *new_n);
void t_events_watch(t_events *e, const char *id);
void t_events_stop(t_events *e);

#endif
