/*
 * A small test harness. Each test file is one executable; main() calls
 * test_init() (arms a watchdog so a hung test fails instead of blocking
 * CI) and then its cases with TEST_RUN. A failed check prints the file,
 * line, expression and both values, and ends the process with status 1.
 * The closing line is "N passed, N failed".
 */
#ifndef DADC_TEST_UTIL_H
#define DADC_TEST_UTIL_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void test_init(const char *name, unsigned timeout_s);
int test_finish(void);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
void test_case_begin(const char *name);
void test_case_end(void);

#define TEST_RUN(fn)                                                       \
    do {                                                                   \
        test_case_begin(#fn);                                              \
        fn();                                                              \
        test_case_end();                                                   \
    } while (0)

#define CHECK(expr)                                                        \
    do {                                                                   \
        if (!(expr))                                                       \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #expr);             \
    } while (0)

#define CHECK_INT(a, op, b)                                                \
    do {                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                \
        if (!(a_ op b_))                                                   \
            test_fail(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a,    \
                      #op, #b, a_, b_);                                    \
    } while (0)

#define CHECK_EQ(a, b) CHECK_INT(a, ==, b)

#define CHECK_NEAR(a, b, tol)                                              \
    do {                                                                   \
        double a_ = (double)(a), b_ = (double)(b);                         \
        if (!(fabs(a_ - b_) <= (tol)))                                     \
            test_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %g)", \
                      #a, #b, a_, b_, (double)(tol));                      \
    } while (0)

#define CHECK_STR(a, b)                                                    \
    do {                                                                   \
        const char *a_ = (a), *b_ = (b);                                   \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)               \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"",    \
                      #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");     \
    } while (0)

/* Check that haystack contains needle. */
#define CHECK_CONTAINS(hay, needle)                                        \
    do {                                                                   \
        const char *h_ = (hay), *n_ = (needle);                            \
        if (h_ == NULL || strstr(h_, n_) == NULL)                          \
            test_fail(__FILE__, __LINE__, "%s contains \"%s\": \"%s\"",    \
                      #hay, n_, h_ ? h_ : "(null)");                       \
    } while (0)

/*
 * A fresh temporary directory for this test, removed (recursively) at
 * test_finish. The returned path is static storage.
 */
const char *test_tmpdir(void);

/* test_tmpdir()/name, in a static rotating buffer. */
const char *test_path(const char *name);

/* Write len bytes to path; fails the test on error. */
void test_write_file(const char *path, const void *buf, size_t len);

/* Read a whole file (malloc'd, NUL-terminated); fails the test on error. */
char *test_read_file(const char *path, size_t *len);

/*
 * The MNIST directory from DADC_MNIST_DIR, or NULL (with a message) when
 * the files are not there.
 */
const char *test_mnist_dir(void);

/* Directory holding the built programs (DADC_BIN_DIR), never NULL. */
const char *test_bin_dir(void);

#endif
