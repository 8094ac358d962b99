/*
 * step_decode.h - the body of `POST /steps` decoded into submit options: a
 * pure function (bytes in, options out, no I/O, no globals), so that the
 * handler, its tests and a fuzzer share it.
 */
#ifndef STEPQ_STEP_DECODE_H
#define STEPQ_STEP_DECODE_H

#include <stddef.h>

#include "stepq.h"

#define STEP_JSON_DEPTH_MAX 64 /* deeper bodies are refused */

/* The decoded options; opts' strings point at the malloc'd copies below. */
struct step_decoded {
    stepq_submit_opts opts;
    char *type;     /* NULL: not given */
    char *requires; /* "a,b"; NULL: not given */
    char *payload;  /* compact JSON text; NULL: not given */
};

/*
 * Decodes one JSON object of at most the fields type (string), priority
 * (0..1000000), requires ("a,b" or ["a", "b"]), payload (any JSON) and
 * max_attempts (1..1000) from body[0..len) (no NUL needed; NULL with len 0
 * is an empty body). Refuses text nested deeper than STEP_JSON_DEPTH_MAX,
 * text that is not JSON, duplicate keys, other fields and values of the
 * wrong type or out of range.
 *
 * Returns STEPQ_OK with *ret filled (release it with stepq__step_decoded_release),
 * or STEPQ_ERR with *ret zeroed and a message in err (lowercase, valid
 * UTF-8, what is wrong and what to do). Names and values are not checked
 * further here: stepq_submit checks the type's characters.
 */
int stepq__step_decode(const char *body, size_t len, struct step_decoded *ret, char *err,
                       size_t errlen);

/* Frees what stepq__step_decode allocated; accepts a zeroed struct. */
void stepq__step_decoded_release(struct step_decoded *d);

#endif
