/* Token buckets: per-caller limits (with a bounded, LRU-evicted table) and the upstream bucket
 * whose waits run on real libevent timers. */
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "service/rate_limit.h"
#include "test_util.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_off(void)
{
    pgw_rate_limit_options o = {0};
    pgw_rate_limit *rl = pgw_rate_limit_new(NULL, &o);
    CHECK(rl != NULL);
    for (int i = 0; i < 1000; i++)
        CHECK(pgw_rate_limit_caller_take(rl, "x", 0, NULL) == 1);
    pgw_rate_limit_wait *w = (pgw_rate_limit_wait *)1;
    CHECK(pgw_rate_limit_upstream_acquire(rl, 0, 0, NULL, NULL, &w) == PGW_RATE_LIMIT_GRANTED);
    CHECK(w == NULL);
    CHECK(pgw_rate_limit_caller_entries(rl) == 0);
    pgw_rate_limit_free(rl);
    /* NULL limiter: no limits */
    CHECK(pgw_rate_limit_caller_take(NULL, "x", 0, NULL) == 1);
    CHECK(pgw_rate_limit_upstream_acquire(NULL, 0, 0, NULL, NULL, NULL) == PGW_RATE_LIMIT_GRANTED);
    o.caller_rate = -1;
    CHECK(pgw_rate_limit_new(NULL, &o) == NULL);
}

static void test_caller(void)
{
    pgw_rate_limit_options o = {.caller_rate = 10, .caller_burst = 3};
    pgw_rate_limit *rl = pgw_rate_limit_new(NULL, &o);
    int64_t t = 1000000, retry = -1;
    /* the burst, then refusal */
    CHECK(pgw_rate_limit_caller_take(rl, "noisy", t, &retry) == 1);
    CHECK(pgw_rate_limit_caller_take(rl, "noisy", t, &retry) == 1);
    CHECK(pgw_rate_limit_caller_take(rl, "noisy", t, &retry) == 1);
    CHECK(pgw_rate_limit_caller_take(rl, "noisy", t, &retry) == 0);
    CHECK(retry == 100);
    /* another caller is not affected */
    CHECK(pgw_rate_limit_caller_take(rl, "quiet", t, NULL) == 1);
    /* refill at 10/s: one token after 100 ms, not before */
    CHECK(pgw_rate_limit_caller_take(rl, "noisy", t + 99, &retry) == 0);
    CHECK(retry == 1);
    CHECK(pgw_rate_limit_caller_take(rl, "noisy", t + 100, NULL) == 1);
    CHECK(pgw_rate_limit_caller_take(rl, "noisy", t + 100, NULL) == 0);
    /* the sustained rate over 10 s is 10/s (plus nothing: the bucket starts empty here) */
    int ok = 0;
    for (int64_t ms = 1; ms <= 10000; ms += 10)
        ok += pgw_rate_limit_caller_take(rl, "noisy", t + 100 + ms, NULL);
    CHECK(ok >= 99 && ok <= 101);
    /* never more than the burst after a long pause */
    t += 1000000;
    ok = 0;
    for (int i = 0; i < 10; i++)
        ok += pgw_rate_limit_caller_take(rl, "noisy", t, NULL);
    CHECK(ok == 3);
    /* callers without an identity share one bucket */
    CHECK(pgw_rate_limit_caller_take(rl, NULL, t, NULL) == 1);
    CHECK(pgw_rate_limit_caller_take(rl, "", t, NULL) == 1);
    CHECK(pgw_rate_limit_caller_take(rl, NULL, t, NULL) == 1);
    CHECK(pgw_rate_limit_caller_take(rl, "", t, NULL) == 0);
    pgw_rate_limit_free(rl);
}

static void test_caller_table_bounds(void)
{
    pgw_rate_limit_options o = {.caller_rate = 1, .caller_burst = 2, .caller_max_entries = 4};
    pgw_rate_limit *rl = pgw_rate_limit_new(NULL, &o);
    int64_t t = 5000;
    char id[32];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof(id), "caller-%d", i);
        CHECK(pgw_rate_limit_caller_take(rl, id, t, NULL) == 1);
        CHECK(pgw_rate_limit_caller_take(rl, id, t, NULL) == 1);
        CHECK(pgw_rate_limit_caller_take(rl, id, t, NULL) == 0);
    }
    CHECK(pgw_rate_limit_caller_entries(rl) == 4);
    /* caller-0 is used again, so caller-1 is now the least recently used */
    CHECK(pgw_rate_limit_caller_take(rl, "caller-0", t, NULL) == 0);
    CHECK(pgw_rate_limit_caller_take(rl, "caller-4", t, NULL) == 1);
    CHECK(pgw_rate_limit_caller_entries(rl) == 4);
    CHECK(pgw_rate_limit_caller_take(rl, "caller-0", t, NULL) == 0); /* kept: still empty */
    CHECK(pgw_rate_limit_caller_take(rl, "caller-2", t, NULL) == 0); /* kept */
    CHECK(pgw_rate_limit_caller_take(rl, "caller-1", t, NULL) == 1); /* evicted: fresh bucket */
    CHECK(pgw_rate_limit_caller_entries(rl) == 4);
    /* once idle long enough to be full again (burst / rate = 2 s), buckets are dropped */
    CHECK(pgw_rate_limit_caller_take(rl, "caller-9", t + 2500, NULL) == 1);
    CHECK(pgw_rate_limit_caller_entries(rl) == 1);
    /* many distinct identities stay within the bound */
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "many-%d", i);
        pgw_rate_limit_caller_take(rl, id, t + 3000, NULL);
    }
    CHECK(pgw_rate_limit_caller_entries(rl) == 4);
    pgw_rate_limit_free(rl);
}

typedef struct waiter {
    int fired;
    int64_t at_ms;
    int order;
} waiter;

static int fire_count;

static void on_due(void *ud)
{
    waiter *w = ud;
    w->fired++;
    w->at_ms = mono_ms();
    w->order = ++fire_count;
}

static void test_upstream(void)
{
    struct event_base *base = event_base_new();
    pgw_rate_limit_options o = {
        .upstream_rate = 20, .upstream_burst = 2, .upstream_max_wait_ms = 200};
    pgw_rate_limit *rl = pgw_rate_limit_new(base, &o);
    int64_t t0 = mono_ms();
    pgw_rate_limit_wait *h[8] = {0};
    waiter w[8];
    memset(w, 0, sizeof(w));

    /* the burst goes at once */
    CHECK(pgw_rate_limit_upstream_acquire(rl, t0, 0, on_due, &w[0], &h[0]) ==
          PGW_RATE_LIMIT_GRANTED);
    CHECK(pgw_rate_limit_upstream_acquire(rl, t0, 0, on_due, &w[1], &h[1]) ==
          PGW_RATE_LIMIT_GRANTED);
    /* then one token every 50 ms, reserved in order, up to the 200 ms bound */
    for (int i = 2; i < 6; i++)
        CHECK(pgw_rate_limit_upstream_acquire(rl, t0, 0, on_due, &w[i], &h[i]) ==
              PGW_RATE_LIMIT_WAIT);
    CHECK(pgw_rate_limit_upstream_waiting(rl) == 4);
    /* the fifth token would be due after 250 ms: refused now, not after waiting */
    CHECK(pgw_rate_limit_upstream_acquire(rl, t0, 0, on_due, &w[6], &h[6]) ==
          PGW_RATE_LIMIT_REJECTED);
    CHECK(h[6] == NULL);
    /* cancelling the last reservation frees its slot for the next caller ... */
    pgw_rate_limit_upstream_cancel(rl, h[5]);
    CHECK(pgw_rate_limit_upstream_waiting(rl) == 3);
    /* ... unless that caller's deadline comes before the token */
    CHECK(pgw_rate_limit_upstream_acquire(rl, t0, t0 + 150, on_due, &w[6], &h[6]) ==
          PGW_RATE_LIMIT_REJECTED);
    CHECK(pgw_rate_limit_upstream_acquire(rl, t0, t0 + 500, on_due, &w[6], &h[6]) ==
          PGW_RATE_LIMIT_WAIT);

    struct timeval limit = {2, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);

    CHECK(w[0].fired == 0 && w[1].fired == 0); /* granted synchronously: no callback */
    CHECK(w[5].fired == 0);                    /* cancelled */
    for (int i = 2; i < 5; i++)
        CHECK(w[i].fired == 1);
    CHECK(w[6].fired == 1);
    /* in order, each about 50 ms after the previous. libevent times timers with Linux's coarse
     * monotonic clock (a few ms granularity), so one may fire up to ~4 ms "early" by ours. */
    CHECK(w[2].order < w[3].order && w[3].order < w[4].order && w[4].order < w[6].order);
    CHECK(w[2].at_ms - t0 >= 45);
    CHECK(w[4].at_ms - t0 >= 145);
    CHECK(w[6].at_ms - t0 >= 195);
    CHECK(w[6].at_ms - t0 < 1000);
    CHECK(pgw_rate_limit_upstream_waiting(rl) == 0);

    /* freeing with a wait pending drops it without a callback (and without leaking) */
    int64_t t1 = mono_ms();
    waiter late = {0};
    pgw_rate_limit_wait *lh = NULL;
    while (pgw_rate_limit_upstream_acquire(rl, t1, 0, on_due, &late, &lh) == PGW_RATE_LIMIT_GRANTED)
        ;
    CHECK(lh != NULL);
    pgw_rate_limit_free(rl);
    CHECK(late.fired == 0);
    event_base_free(base);
}

int main(void)
{
    test_off();
    test_caller();
    test_caller_table_bounds();
    test_upstream();
    return pgw_test_finish("test_rate_limit");
}
