/* The gateway's own bound on concurrent calls: refuses past the bound, gives places back, a
 * NULL limit admits everything, and under contention from several threads the count never
 * goes past the bound and returns to zero. */
#include <pthread.h>
#include <stdatomic.h>

#include "service/call_limit.h"
#include "test_util.h"

static void test_bound(void)
{
    pgw_call_limit *l = pgw_call_limit_new(3);
    CHECK(pgw_call_limit_max(l) == 3);
    CHECK(pgw_call_limit_enter(l) && pgw_call_limit_enter(l) && pgw_call_limit_enter(l));
    CHECK(pgw_call_limit_current(l) == 3);
    CHECK(!pgw_call_limit_enter(l));
    CHECK(pgw_call_limit_current(l) == 3); /* a refusal takes nothing */
    pgw_call_limit_leave(l);
    CHECK(pgw_call_limit_enter(l));
    CHECK(!pgw_call_limit_enter(l));
    for (int i = 0; i < 3; i++)
        pgw_call_limit_leave(l);
    CHECK(pgw_call_limit_current(l) == 0);
    pgw_call_limit_free(l);

    /* No limit configured: everything is admitted. */
    CHECK(pgw_call_limit_enter(NULL));
    pgw_call_limit_leave(NULL);
    CHECK(pgw_call_limit_max(NULL) == 0 && pgw_call_limit_current(NULL) == 0);
    /* A bound below 1 is 1. */
    l = pgw_call_limit_new(0);
    CHECK(pgw_call_limit_max(l) == 1);
    pgw_call_limit_free(l);
}

#define THREADS 4
#define ROUNDS  200000
static pgw_call_limit *shared;
static atomic_int inside, max_inside, admitted;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (!pgw_call_limit_enter(shared))
            continue;
        int now = atomic_fetch_add(&inside, 1) + 1;
        int seen = atomic_load(&max_inside);
        while (now > seen && !atomic_compare_exchange_weak(&max_inside, &seen, now))
            ;
        atomic_fetch_add(&admitted, 1);
        atomic_fetch_sub(&inside, 1);
        pgw_call_limit_leave(shared);
    }
    return NULL;
}

static void test_threads(void)
{
    shared = pgw_call_limit_new(2);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&max_inside) <= 2);
    CHECK(atomic_load(&admitted) > 0);
    CHECK(pgw_call_limit_current(shared) == 0);
    pgw_call_limit_free(shared);
}

int main(void)
{
    test_bound();
    test_threads();
    return pgw_test_finish("test_call_limit");
}
