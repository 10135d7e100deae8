#include <pthread.h>

#include "cf_test.h"
#include "confide/core.h"

static void test_err_views(void)
{
    CHECK_STR(cf_err_name(CF_E_FULL), "CF_E_FULL");
    CHECK_STR(cf_strerror(CF_E_FULL), "queue full (backpressure)");
    CHECK(cf_err_is_retriable(CF_E_FULL));
    CHECK(!cf_err_is_retriable(CF_E_AUTH));
    CHECK_STR(cf_err_name(CF_OK), "CF_OK");
    CHECK(cf_strerror((cf_err)999) != NULL);
}

static void test_ring_order(void)
{
    cf_ring *r = NULL;
    REQUIRE(cf_ring_create(&r, 5) == CF_OK);
    CHECK_EQ(cf_ring_capacity(r), 8);
    for (uintptr_t i = 1; i <= 8; i++) {
        CHECK_OK(cf_ring_push(r, (void *)i));
    }
    for (uintptr_t i = 1; i <= 8; i++) {
        void *p = NULL;
        CHECK_OK(cf_ring_pop(r, &p));
        CHECK_EQ((uintptr_t)p, i);
    }
    void *p = NULL;
    CHECK_EQ(cf_ring_pop(r, &p), CF_E_EOF);
    cf_ring_close(r);
    CHECK_EQ(cf_ring_pop(r, &p), CF_E_STATE);
    cf_ring_destroy(r);
}

static void test_ring_full_is_backpressure(void)
{
    cf_ring *r = NULL;
    REQUIRE(cf_ring_create(&r, 4) == CF_OK);
    for (uintptr_t i = 1; i <= 4; i++) {
        CHECK_OK(cf_ring_push(r, (void *)i));
    }
    CHECK_EQ(cf_ring_push(r, (void *)5), CF_E_FULL);
    CHECK_EQ(cf_ring_size(r), 4);
    cf_ring_destroy(r);
}

#define N_ITEMS 200000
static void *consumer(void *arg)
{
    cf_ring *r = arg;
    uintptr_t expect = 1;
    void *p;
    while (cf_ring_pop_wait(r, &p) == CF_OK) {
        if ((uintptr_t)p != expect) {
            return (void *)1;
        }
        expect++;
    }
    return expect == N_ITEMS + 1 ? NULL : (void *)2;
}

static void test_ring_threads(void)
{
    cf_ring *r = NULL;
    REQUIRE(cf_ring_create(&r, 64) == CF_OK);
    pthread_t t;
    pthread_create(&t, NULL, consumer, r);
    for (uintptr_t i = 1; i <= N_ITEMS; i++) {
        cf_ring_push_wait(r, (void *)i);
    }
    cf_ring_close(r);
    void *res = (void *)9;
    pthread_join(t, &res);
    CHECK(res == NULL);
    cf_ring_destroy(r);
}

static void test_alloc_failure(void)
{
    for (long n = 1; n <= 2; n++) {
        cf_ring *r = NULL;
        cf_alloc_fail_after(n);
        CHECK_EQ(cf_ring_create(&r, 8), CF_E_NOMEM);
        CHECK(r == NULL);
    }
    cf_alloc_fail_after(0);
}

#include "cf_test_main.h"
