/* test_nameset.c - cleanup's bounded set of key-name hashes (nameset.c):
 * every hash added is found and no other, whether the set stayed in memory
 * or spilled to sorted runs on disk and was merged (duplicates across runs,
 * a partial last run, hashes at the ends of the range). */
#include <stdint.h>

#include "test.h"
#include "stepq_private.h"

/* A fixed pseudo-random sequence (splitmix64): reproducible, spread. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* n hashes mix(0..n), each added twice (the second time much later, in
 * another run), plus 0 and UINT64_MAX; looks up all and n others. */
static void check_set(uint64_t n, size_t run)
{
    stepq__nameset *s = run ? stepq__nameset_new_run(run) : stepq__nameset_new();
    REQUIRE(s != NULL);
    for (uint64_t i = 0; i < n; i++)
        REQUIRE(stepq__nameset_add(s, mix(i)) == 0);
    REQUIRE(stepq__nameset_add(s, 0) == 0);
    REQUIRE(stepq__nameset_add(s, UINT64_MAX) == 0);
    for (uint64_t i = 0; i < n; i += 3)
        REQUIRE(stepq__nameset_add(s, mix(i)) == 0);
    REQUIRE(stepq__nameset_seal(s) == 0);
    ASSERT_EQ((long long)stepq__nameset_count(s), (long long)n + 2);
    long long missing = 0, extra = 0;
    for (uint64_t i = 0; i < n; i++)
        missing += stepq__nameset_has(s, mix(i)) != 1;
    for (uint64_t i = n; i < 2 * n; i++)
        extra += stepq__nameset_has(s, mix(i)) != 0;
    ASSERT_EQ(missing, 0);
    ASSERT_EQ(extra, 0);
    ASSERT_EQ(stepq__nameset_has(s, 0), 1);
    ASSERT_EQ(stepq__nameset_has(s, UINT64_MAX), 1);
    ASSERT_EQ(stepq__nameset_has(s, 1), 0);
    stepq__nameset_free(s);
}

static void test_in_memory(void)
{
    check_set(1000, 0);
}

static void test_spilled(void)
{
    check_set(50000, 4096); /* 16 full runs (duplicates across them) and a partial one */
}

static void test_empty(void)
{
    stepq__nameset *s = stepq__nameset_new();
    REQUIRE(s != NULL);
    REQUIRE(stepq__nameset_seal(s) == 0);
    ASSERT_EQ(stepq__nameset_has(s, 42), 0);
    stepq__nameset_free(s);
}

int main(void)
{
    RUN(test_in_memory);
    RUN(test_spilled);
    RUN(test_empty);
    TEST_END();
}
