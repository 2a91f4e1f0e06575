/* A minimal assertion kit for the C unit tests: each CHECK failure prints where and why, the
 * test keeps going, and pgw_test_finish() turns the tally into the exit status ctest reads
 * (77 = skipped). */
#ifndef PGW_TEST_UTIL_H
#define PGW_TEST_UTIL_H

#include <stdio.h>
#include <string.h>

static int pgw_test_failures;
static int pgw_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        pgw_test_checks++;                                                                         \
        if (!(cond)) {                                                                             \
            pgw_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        pgw_test_checks++;                                                                         \
        if (g_ == NULL || w_ == NULL || strcmp(g_, w_) != 0) {                                     \
            pgw_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s\n  got:  %s\n  want: %s\n", __FILE__, __LINE__, #got,       \
                    g_ ? g_ : "(null)", w_ ? w_ : "(null)");                                       \
        }                                                                                          \
    } while (0)

static inline int pgw_test_finish(const char *name)
{
    if (pgw_test_failures) {
        fprintf(stderr, "%s: %d of %d checks failed\n", name, pgw_test_failures, pgw_test_checks);
        return 1;
    }
    printf("%s: all %d checks passed\n", name, pgw_test_checks);
    return 0;
}

#endif
