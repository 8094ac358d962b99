/*
 * alloc.c - the allocation wrappers every file of libstepq goes through, so
 * that a test can make the n-th allocation fail (curl torture, SQLite
 * FAULTSIM) and check that each error path cleans up.
 */
#include <stdlib.h>
#include <string.h>

#include "stepq_private.h"

static long fail_countdown; /* 0: never fail */

void stepq__alloc_fail_at(long n)
{
    fail_countdown = n;
}

static int should_fail(void)
{
    if (fail_countdown <= 0)
        return 0;
    return --fail_countdown == 0;
}

void *stepq__malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n);
}

void *stepq__calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : calloc(n, size);
}

void *stepq__realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n);
}

char *stepq__strdup(const char *s)
{
    return stepq__strndup(s, strlen(s));
}

char *stepq__strndup(const char *s, size_t n)
{
    char *p = stepq__malloc(n + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void stepq__free(void *p)
{
    free(p);
}

void stepq_str_free(char *s)
{
    stepq__free(s);
}
