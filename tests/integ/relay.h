/*
 * relay.h - a relay between one client and the test's redis-server, for
 * races that must happen at one exact point.
 *
 * Some bugs show only when another client writes between two commands of
 * one call (a step cancelled between the claim script and the read of its
 * record; a process killed between two scripts of one pipelined page). A
 * sleep cannot place that write; this relay can: the client connects to the
 * relay's own unix socket (relay_url), every command it sends is parsed,
 * and a hook sees each one before it goes on to the real server. The hook
 * may act there (with another connection) and then let the command through,
 * or cut the connection: the commands before it reached Redis, this one and
 * those after it never do. The server is the test's real redis-server;
 * nothing is answered by the relay itself.
 */
#ifndef STEPQ_RELAY_H
#define STEPQ_RELAY_H

#include <stddef.h>

#include "stepq.h"

enum relay_action { RELAY_FORWARD, RELAY_CUT };

/* A command as the client sent it: argc arguments, each with its length
 * (at most RELAY_ARGV of them are given; argc is the real count). The hook
 * runs on the relay's thread while the client waits for the reply. */
#define RELAY_ARGV 1024
typedef enum relay_action (*relay_hook)(int argc, const char *const *argv, const size_t *lens,
                                        void *arg);

typedef struct relay relay;

/* Starts a relay to the test server (t_url()) with `hook` (NULL: forward
 * everything); exits the test binary when it cannot. One client
 * connection is relayed; after a cut, new connections are refused. */
relay *relay_start(relay_hook hook, void *arg);
/* The URL a stepq handle connects to (the test's database). */
const char *relay_url(const relay *r);
/* Stops the thread, closes everything and frees; accepts NULL. */
void relay_stop(relay *r);

/* A stepq handle whose every command passes a new relay with `hook` first
 * (*rl set); NULL (and the relay stopped) when it cannot connect. */
stepq *relay_stepq(relay **rl, relay_hook hook, void *arg);

/* Whether argument i of a command is the string s. */
int relay_arg_is(int argc, const char *const *argv, const size_t *lens, int i, const char *s);

#endif
