/* Coalescing: many waiters share one answer, leave, leaders without waiters, reentrant
 * joins from a waiter callback, and teardown with flights outstanding (ASan checks leaks). */
#include <stdint.h>
#include <string.h>

#include "cache/singleflight.h"
#include "test_util.h"

typedef struct waiter_state {
    int calls;
    int code;
    char msg[64];
    size_t data_len;
} waiter_state;

static void record_cb(const pgw_flight_result *r, void *ud)
{
    waiter_state *w = ud;
    w->calls++;
    w->code = r->code;
    snprintf(w->msg, sizeof w->msg, "%s", r->message ? r->message : "");
    w->data_len = r->data_len;
}

static void test_many_waiters(void)
{
    pgw_singleflight *sf = pgw_singleflight_new();
    waiter_state ws[50];
    memset(ws, 0, sizeof ws);
    int leader = -1;
    pgw_flight *first = NULL;
    for (int i = 0; i < 50; i++) {
        int is_leader = -1;
        pgw_flight_waiter *w = NULL;
        pgw_flight *f = pgw_singleflight_join(sf, "arn:x", record_cb, &ws[i], &is_leader, &w);
        CHECK(f != NULL && w != NULL);
        if (i == 0) {
            first = f;
            CHECK(is_leader == 1);
            leader = i;
        } else {
            CHECK(is_leader == 0 && f == first);
        }
    }
    CHECK(leader == 0);
    CHECK(pgw_singleflight_waiters(first) == 50);
    pgw_singleflight_stats st;
    pgw_singleflight_stats_get(sf, &st);
    CHECK(st.flights == 1 && st.coalesced == 49 && st.in_flight == 1);

    /* A different key is its own flight. */
    int is_leader = 0;
    waiter_state other = {0};
    pgw_flight *f2 = pgw_singleflight_join(sf, "arn:y", record_cb, &other, &is_leader, NULL);
    CHECK(is_leader == 1 && f2 != first);

    const uint8_t data[] = {1, 2, 3};
    pgw_flight_result r = {7, "shared answer", data, sizeof data, NULL};
    pgw_singleflight_complete(sf, first, &r);
    for (int i = 0; i < 50; i++)
        CHECK(ws[i].calls == 1 && ws[i].code == 7 && strcmp(ws[i].msg, "shared answer") == 0 &&
              ws[i].data_len == 3);
    CHECK(other.calls == 0);
    pgw_singleflight_stats_get(sf, &st);
    CHECK(st.in_flight == 1);

    /* After completion the key starts a new flight. */
    pgw_flight *f3 = pgw_singleflight_join(sf, "arn:x", NULL, NULL, &is_leader, NULL);
    CHECK(is_leader == 1 && f3 != NULL);
    pgw_singleflight_complete(sf, f3, NULL);
    pgw_singleflight_complete(sf, f2, &r);
    CHECK(other.calls == 1);
    pgw_singleflight_stats_get(sf, &st);
    CHECK(st.in_flight == 0 && st.flights == 3);
    pgw_singleflight_free(sf);
}

static void test_leave(void)
{
    pgw_singleflight *sf = pgw_singleflight_new();
    waiter_state a = {0}, b = {0}, c = {0};
    pgw_flight_waiter *wa, *wb, *wc;
    int lead;
    pgw_flight *f = pgw_singleflight_join(sf, "k", record_cb, &a, &lead, &wa);
    CHECK(lead == 1);
    pgw_singleflight_join(sf, "k", record_cb, &b, &lead, &wb);
    pgw_singleflight_join(sf, "k", record_cb, &c, &lead, &wc);
    pgw_singleflight_leave(wb);
    pgw_singleflight_leave(NULL);
    CHECK(pgw_singleflight_waiters(f) == 2);
    pgw_flight_result r = {1, "ok", NULL, 0, NULL};
    pgw_singleflight_complete(sf, f, &r);
    CHECK(a.calls == 1 && b.calls == 0 && c.calls == 1);

    /* Everyone leaves, including the leader's own waiter: the flight still completes fine. */
    f = pgw_singleflight_join(sf, "k", record_cb, &a, &lead, &wa);
    CHECK(lead == 1);
    pgw_singleflight_join(sf, "k", record_cb, &b, &lead, &wb);
    pgw_singleflight_leave(wa);
    pgw_singleflight_leave(wb);
    CHECK(pgw_singleflight_waiters(f) == 0);
    /* A newcomer still joins the running flight (the work continues). */
    pgw_singleflight_join(sf, "k", record_cb, &c, &lead, &wc);
    CHECK(lead == 0);
    pgw_singleflight_complete(sf, f, &r);
    CHECK(a.calls == 1 && b.calls == 0 && c.calls == 2);
    pgw_singleflight_stats st;
    pgw_singleflight_stats_get(sf, &st);
    CHECK(st.left == 3 && st.in_flight == 0);
    pgw_singleflight_free(sf);
}

/* Reentrancy: a waiter callback that looks the same key up again. */
typedef struct reenter_ctx {
    pgw_singleflight *sf;
    pgw_flight *completing;
    pgw_flight *new_flight;
    int new_is_leader;
    int calls;
    waiter_state inner;
    pgw_flight_waiter *victim; /* a later waiter of the same flight to remove */
} reenter_ctx;

static void reenter_cb(const pgw_flight_result *r, void *ud)
{
    reenter_ctx *c = ud;
    c->calls++;
    c->new_flight =
        pgw_singleflight_join(c->sf, "arn:r", record_cb, &c->inner, &c->new_is_leader, NULL);
    if (c->victim) {
        pgw_singleflight_leave(c->victim);
        c->victim = NULL;
    }
}

static void test_reentrancy(void)
{
    pgw_singleflight *sf = pgw_singleflight_new();
    reenter_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.sf = sf;
    int lead;
    waiter_state later = {0}, last = {0};
    ctx.completing = pgw_singleflight_join(sf, "arn:r", reenter_cb, &ctx, &lead, NULL);
    CHECK(lead == 1);
    pgw_singleflight_join(sf, "arn:r", record_cb, &later, &lead, &ctx.victim);
    pgw_singleflight_join(sf, "arn:r", record_cb, &last, &lead, NULL);
    pgw_flight_result r = {3, "first", NULL, 0, NULL};
    pgw_singleflight_complete(sf, ctx.completing, &r);
    CHECK(ctx.calls == 1);
    CHECK(ctx.new_flight != NULL && ctx.new_is_leader == 1);
    CHECK(later.calls == 0); /* left from inside the callback */
    CHECK(last.calls == 1 && last.code == 3);
    CHECK(ctx.inner.calls == 0); /* the new flight has not completed */
    pgw_singleflight_stats st;
    pgw_singleflight_stats_get(sf, &st);
    CHECK(st.in_flight == 1);
    pgw_flight_result r2 = {4, "second", NULL, 0, NULL};
    pgw_singleflight_complete(sf, ctx.new_flight, &r2);
    CHECK(ctx.inner.calls == 1 && ctx.inner.code == 4);
    pgw_singleflight_free(sf);
}

static void test_many_flights_and_free(void)
{
    pgw_singleflight *sf = pgw_singleflight_new();
    pgw_flight *flights[500];
    waiter_state ws = {0};
    char key[32];
    for (int i = 0; i < 500; i++) {
        int lead;
        snprintf(key, sizeof key, "key-%d", i);
        flights[i] = pgw_singleflight_join(sf, key, record_cb, &ws, &lead, NULL);
        CHECK(lead == 1);
    }
    for (int i = 0; i < 500; i++) { /* lookups still find each after the table grew */
        int lead;
        snprintf(key, sizeof key, "key-%d", i);
        CHECK(pgw_singleflight_join(sf, key, NULL, NULL, &lead, NULL) == flights[i] && lead == 0);
    }
    for (int i = 0; i < 250; i++)
        pgw_singleflight_complete(sf, flights[i], NULL);
    CHECK(ws.calls == 250);
    pgw_singleflight_free(sf); /* 250 outstanding: dropped without callbacks */
    CHECK(ws.calls == 250);
}

int main(void)
{
    test_many_waiters();
    test_leave();
    test_reentrancy();
    test_many_flights_and_free();
    return pgw_test_finish("test_cache_singleflight");
}
