/*
 * test.h - the whole test harness: checks that print both values with file
 * and line, a runner, and the closing "N passed, N failed" line CI reads.
 */
#ifndef STEPQ_TEST_H
#define STEPQ_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures; /* failed checks in the current test */
static int tests_passed, tests_failed;

#define FAILF(...)                                                                                 \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        test_failures++;                                                                           \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAILF("check failed: %s", #cond);                                                      \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            FAILF("%s == %s: %lld != %lld", #a, #b, a_, b_);                                       \
    } while (0)

#define ASSERT_STR(a, b)                                                                           \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            FAILF("%s == %s: '%s' != '%s'", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");       \
    } while (0)

/* Stops the current test when a check it depends on failed. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            FAILF("required: %s", #cond);                                                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        test_failures = 0;                                                                         \
        fn();                                                                                      \
        if (test_failures == 0) {                                                                  \
            tests_passed++;                                                                        \
            printf("ok   %s\n", #fn);                                                              \
        } else {                                                                                   \
            tests_failed++;                                                                        \
            printf("FAIL %s (%d checks)\n", #fn, test_failures);                                   \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

#define TEST_END()                                                                                 \
    do {                                                                                           \
        printf("%d passed, %d failed\n", tests_passed, tests_failed);                              \
        return tests_failed ? 1 : 0;                                                               \
    } while (0)

#endif
