/*
 * Minimal unit-test harness. A test file includes this header at the top, defines
 * `static void test_<case>(void)` for every line of its .cases file, and ends with
 *
 *     #include "cf_test_main.h"
 *
 * The binary runs one case by name (as ctest does) or every case with no argument.
 * Exit 0 pass, 1 fail, 77 skip.
 */
#ifndef CF_TEST_H
#define CF_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cf_test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            cf_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", __FILE__,         \
                    __LINE__, #a, #b, va_, vb_);                                                   \
            cf_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {                                 \
            fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,     \
                    sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                                   \
            cf_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int e_ = (int)(expr);                                                                      \
        if (e_ != 0) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK_OK failed: %s returned %d\n", __FILE__, __LINE__, #expr, \
                    e_);                                                                           \
            cf_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

/* Stops the current case when a precondition for the rest of it does not hold. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);             \
            cf_test_failures++;                                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CF_TEST_SKIP 77

/*
 * Path to a file under ../shared (data/ or vectors/), resolved next to the source tree.
 * When ../shared is absent: skip with a printed reason, unless CI=true, where it fails.
 * Returns a static buffer; exits the process (skip/fail) when the file is missing.
 */
static inline const char *cf_test_shared(const char *rel)
{
    static char path[4096];
    snprintf(path, sizeof(path), "%s/../shared/%s", CF_SOURCE_DIR, rel);
    if (access(path, R_OK) == 0) {
        return path;
    }
    const char *ci = getenv("CI");
    if (ci != NULL && strcmp(ci, "true") == 0) {
        fprintf(stderr, "FAIL: %s is missing and CI=true: ../shared must be present\n", path);
        exit(1);
    }
    fprintf(stderr, "SKIP: %s not found (../shared is absent in this checkout)\n", path);
    exit(CF_TEST_SKIP);
}

/* Reads a whole file into a malloc'd NUL-terminated buffer (free()). NULL on error. */
static inline char *cf_test_slurp(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        if (len_out != NULL) {
            *len_out = (size_t)n;
        }
    }
    return buf;
}

/* A fresh private temporary directory (static buffer). */
static inline const char *cf_test_tmpdir(void)
{
    static char dir[256];
    snprintf(dir, sizeof(dir), "/tmp/cf_test_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    return dir;
}

#endif
