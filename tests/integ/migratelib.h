/*
 * migratelib.h - what the migration engine's tests share: legacy data in
 * the seed's layout, and checks that both keyspaces hold the same data.
 */
#ifndef STEPQ_MIGRATELIB_H
#define STEPQ_MIGRATELIB_H

#include "testlib.h"

/* Writes n legacy steps (ids L00000...) in the seed's layout on R: hashes in
 * every state, progress hashes, the four queue collections (completed and
 * failed with a TTL, completed steps' hashes too), worker:{id}:jobs sets
 * and worker hashes. Returns how many keys it wrote. */
long m_seed(int n);
/* The number of keys matching a glob (SCAN). */
long long m_count(const char *glob);
/* Verifies (forward or reverse); returns 1 when clean. Prints the report
 * when not. */
int m_verify(int reverse);
/* Checks that every old key's twin exists with the same type, content and
 * expiry (within 2 s), and the reverse; returns the number of mismatches and
 * prints the first few. Independent of stepq_verify. */
long m_sides_equal(void);
/* Runs backfill with defaults (asserts success); returns copied. */
long long m_backfill(void);

#endif
