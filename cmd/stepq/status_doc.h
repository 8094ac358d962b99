/*
 * status_doc.h - the typed status document shared by `stepq migrate status
 * --json`, GET /health/redis-migration and the console's feed
 * (status_doc.c; docs/http.md lists its fields).
 */
#ifndef STEPQ_STATUS_DOC_H
#define STEPQ_STATUS_DOC_H

#include <jansson.h>

#include "stepq.h"

/* Builds the document from Redis: a new reference in *ret_doc (NULL only
 * when out of memory). Returns 200 when healthy, 503 when unhealthy or
 * Redis is unreachable (then status is "unavailable"), 500 when out of
 * memory. */
int status_doc_build(stepq *q, json_t **ret_doc);
/* The document from stepq_status()'s raw JSON and the verdict's reasons
 * (borrowed), checked at `now` (ms). A new object. */
json_t *status_doc_from_raw(const json_t *raw, json_t *reasons, long long now);
/* A stepq record typed (numbers, flags as booleans, times with an _iso
 * twin): a new object. */
json_t *status_typed_record(const json_t *raw);
/* The throttle record typed: paused a boolean, rate a number or null. */
json_t *status_throttle_record(const json_t *raw);
/* ms since the epoch as ISO 8601 UTC with milliseconds; null for ms <= 0. */
json_t *status_iso(long long ms);
/* A JSON number or boolean as a whole number (0 otherwise). */
long long status_num(const json_t *v);
long long status_wall_ms(void);

#endif
