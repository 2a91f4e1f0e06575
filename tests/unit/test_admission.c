/* The upstream bound: slots and queue bounds, FIFO grants, outcomes (grants and refusals alike)
 * that never run inside acquire or release, paced per loop turn, deadline-aware refusals and
 * drops on a test clock, cancellation, callbacks that acquire again, the timer's priority,
 * and teardown with tickets pending (ASan checks leaks). */
#include <event2/event.h>
#include <stdint.h>
#include <string.h>

#include "service/admission.h"
#include "test_util.h"

static int64_t fake_now;
static int64_t test_clock(void)
{
    return fake_now;
}

#define MAX_EVENTS 64
static struct {
    int id;
    pgw_admission_outcome outcome;
} events[MAX_EVENTS];
static int n_events;

typedef struct who {
    int id;
    pgw_admission *admission;
    struct who *then; /* the callback acquires a ticket for this one */
} who;

static void record(pgw_admission_outcome outcome, void *ud)
{
    who *w = ud;
    if (n_events < MAX_EVENTS) {
        events[n_events].id = w->id;
        events[n_events].outcome = outcome;
    }
    n_events++;
    if (w->then) {
        pgw_admission_ticket *t;
        CHECK(pgw_admission_acquire(w->admission, 0, record, w->then, &t) == 0);
    }
}

/* One loop iteration: every ready event once. */
static void turn(struct event_base *base)
{
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void drain(struct event_base *base)
{
    for (int i = 0; i < 100; i++)
        turn(base);
}

static pgw_admission *make(struct event_base *base, int in_flight, int queued, int per_turn)
{
    pgw_admission_options o = {
        .max_in_flight = in_flight,
        .max_queued = queued,
        .grants_per_turn = per_turn,
        .now_ms = test_clock,
    };
    return pgw_admission_new(base, &o);
}

static void reset_events(void)
{
    n_events = 0;
    memset(events, 0, sizeof(events));
}

static int acquire(pgw_admission *a, int64_t deadline, who *w)
{
    pgw_admission_ticket *t = NULL;
    int rc = pgw_admission_acquire(a, deadline, record, w, &t);
    CHECK(rc == 0 && t != NULL);
    return rc;
}

static void test_slots_queue_and_fifo(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 2, 3, 0);
    reset_events();
    who w[7];
    for (int i = 0; i < 7; i++)
        w[i] = (who){.id = i};
    /* Two find a free slot, three wait, the sixth is refused: decided now, told later. */
    for (int i = 0; i < 6; i++)
        acquire(a, 0, &w[i]);
    CHECK(n_events == 0); /* nothing runs inside acquire */
    pgw_admission_stats st;
    pgw_admission_stats_get(a, &st);
    CHECK(st.queued == 5 && st.refusing == 1 && st.in_flight == 0 && st.refused_full == 1);

    drain(base);
    CHECK(n_events == 3);
    /* The refusal is told first, then the grants in order. */
    CHECK(events[0].id == 5 && events[0].outcome == PGW_ADMISSION_FULL);
    CHECK(events[1].id == 0 && events[1].outcome == PGW_ADMISSION_GRANTED);
    CHECK(events[2].id == 1 && events[2].outcome == PGW_ADMISSION_GRANTED);
    pgw_admission_stats_get(a, &st);
    CHECK(st.in_flight == 2 && st.queued == 3 && st.refusing == 0);

    /* A release frees a slot; the next in line gets it on a later turn, not inside release. */
    pgw_admission_release(a, 10);
    CHECK(n_events == 3);
    drain(base);
    CHECK(n_events == 4 && events[3].id == 2 && events[3].outcome == PGW_ADMISSION_GRANTED);
    /* Room in the queue again: a new ticket waits behind the others. */
    acquire(a, 0, &w[6]);
    pgw_admission_release(a, 10);
    pgw_admission_release(a, 10);
    drain(base);
    CHECK(n_events == 6 && events[4].id == 3 && events[5].id == 4);
    pgw_admission_release(a, 10);
    drain(base);
    CHECK(n_events == 7 && events[6].id == 6 && events[6].outcome == PGW_ADMISSION_GRANTED);
    pgw_admission_stats_get(a, &st);
    CHECK(st.granted == 6 && st.queued == 0 && st.in_flight == 2);
    CHECK(st.typical_ms == 10);
    pgw_admission_free(a);
    event_base_free(base);
}

static void test_no_queue(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 1, 0, 0);
    reset_events();
    who w1 = {.id = 1}, w2 = {.id = 2}, w3 = {.id = 3};
    /* max_queued 0: a free slot still admits (the grant is only deferred) ... */
    acquire(a, 0, &w1);
    /* ... but nothing may wait for a taken one. */
    acquire(a, 0, &w2);
    drain(base);
    CHECK(n_events == 2);
    CHECK(events[0].id == 2 && events[0].outcome == PGW_ADMISSION_FULL);
    CHECK(events[1].id == 1 && events[1].outcome == PGW_ADMISSION_GRANTED);
    pgw_admission_release(a, -1);
    acquire(a, 0, &w3);
    drain(base);
    CHECK(n_events == 3 && events[2].id == 3 && events[2].outcome == PGW_ADMISSION_GRANTED);
    pgw_admission_stats st;
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms == 0); /* -1: no sample */
    pgw_admission_free(a);
    event_base_free(base);
}

static void test_paced(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 100, 100, 4);
    reset_events();
    who w[10];
    for (int i = 0; i < 10; i++) {
        w[i] = (who){.id = i};
        acquire(a, 0, &w[i]);
    }
    turn(base);
    CHECK(n_events == 4); /* one callback grants at most grants_per_turn */
    turn(base);
    CHECK(n_events == 8);
    turn(base);
    CHECK(n_events == 10);
    for (int i = 0; i < 10; i++)
        CHECK(events[i].id == i && events[i].outcome == PGW_ADMISSION_GRANTED);
    pgw_admission_free(a);

    /* Refusals are paced the same way. */
    a = make(base, 1, 0, 4);
    reset_events();
    for (int i = 0; i < 10; i++)
        acquire(a, 0, &w[i]);
    turn(base);
    CHECK(n_events == 5); /* four refusals, then the one grant */
    turn(base);
    CHECK(n_events == 9);
    drain(base);
    CHECK(n_events == 10);
    pgw_admission_stats st;
    pgw_admission_stats_get(a, &st);
    CHECK(st.refused_full == 9 && st.granted == 1);
    pgw_admission_free(a);
    event_base_free(base);
}

static void test_deadlines(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 1, 10, 0);
    reset_events();
    fake_now = 100000;
    who hold = {.id = 1}, early = {.id = 2}, late_ok = {.id = 3}, no_deadline = {.id = 4};
    /* Before any sample there is no service time to plan on: a short deadline is fine. */
    acquire(a, fake_now + 10, &hold);
    drain(base);
    CHECK(n_events == 1 && events[0].outcome == PGW_ADMISSION_GRANTED);
    pgw_admission_release(a, 1000);
    pgw_admission_stats st;
    pgw_admission_stats_get(a, &st);
    /* A first sample R starts the deviation at R/2 (as TCP does): planned R + 2 x R/2. */
    CHECK(st.typical_ms == 1000 && st.planned_ms == 2000);
    acquire(a, 0, &hold);
    drain(base);
    CHECK(n_events == 2 && events[1].outcome == PGW_ADMISSION_GRANTED); /* taken again */

    /* Waiting for the slot (~1 s) plus the planned service (2 s) does not fit in 1.5 s. */
    acquire(a, fake_now + 1500, &early);
    /* 5 s does; no deadline always does. */
    acquire(a, fake_now + 5000, &late_ok);
    acquire(a, 0, &no_deadline);
    pgw_admission_stats_get(a, &st);
    CHECK(st.refused_late == 1 && st.queued == 2 && st.refusing == 1);
    drain(base);
    CHECK(n_events == 3 && events[2].id == 2 && events[2].outcome == PGW_ADMISSION_LATE);

    /* The slot frees only 4.5 s later: the ticket with 0.5 s left is dropped (no slot taken),
     * the one without a deadline gets the slot. */
    fake_now += 4500;
    pgw_admission_release(a, 1000);
    drain(base);
    CHECK(n_events == 5);
    CHECK(events[3].id == 3 && events[3].outcome == PGW_ADMISSION_LATE);
    CHECK(events[4].id == 4 && events[4].outcome == PGW_ADMISSION_GRANTED);
    pgw_admission_stats_get(a, &st);
    CHECK(st.dropped == 1 && st.in_flight == 1 && st.queued == 0);

    /* A deadline already past is dropped even when it never had to wait. */
    pgw_admission_release(a, 1000);
    acquire(a, fake_now - 1, &early);
    drain(base);
    CHECK(n_events == 6 && events[5].id == 2 && events[5].outcome == PGW_ADMISSION_LATE);
    pgw_admission_free(a);
    event_base_free(base);
}

static void test_estimates(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 1, 1, 0);
    pgw_admission_stats st;
    pgw_admission_release(a, 800);
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms == 800);
    /* One slow sample moves the average an eighth of the way. */
    pgw_admission_release(a, 8800);
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms == 1800);
    CHECK(st.planned_ms > st.typical_ms + 1000); /* and widens the deviation */
    for (int i = 0; i < 100; i++)
        pgw_admission_release(a, 200);
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms >= 200 && st.typical_ms <= 210);
    /* Steady samples: the deviation decays, the plan approaches the average. */
    CHECK(st.planned_ms >= st.typical_ms && st.planned_ms <= st.typical_ms + 20);
    CHECK(st.in_flight == 0); /* releases beyond the grants never go negative */
    pgw_admission_free(a);
    event_base_free(base);
}

static void test_cancel_and_reentrancy(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 1, 5, 0);
    reset_events();
    who second = {.id = 102};
    who first = {.id = 2, .admission = a, .then = &second};
    who gone = {.id = 1}, hold = {.id = 0}, refused = {.id = 9};
    pgw_admission_ticket *t_gone, *t;
    acquire(a, 0, &hold);
    CHECK(pgw_admission_acquire(a, 0, record, &gone, &t_gone) == 0);
    acquire(a, 0, &first);
    pgw_admission_cancel(t_gone);
    pgw_admission_cancel(NULL);
    drain(base);
    CHECK(n_events == 1 && events[0].id == 0);
    pgw_admission_release(a, 5);
    drain(base);
    /* The cancelled ticket never fires; the next one does, and acquires from its callback. */
    CHECK(n_events == 2 && events[1].id == 2);
    pgw_admission_release(a, 5);
    drain(base);
    CHECK(n_events == 3 && events[2].id == 102 && events[2].outcome == PGW_ADMISSION_GRANTED);

    /* A refused ticket can be withdrawn before it is told. */
    pgw_admission_free(a);
    a = make(base, 1, 0, 0);
    acquire(a, 0, &hold);
    drain(base);
    CHECK(pgw_admission_acquire(a, 0, record, &refused, &t) == 0);
    pgw_admission_cancel(t);
    drain(base);
    CHECK(n_events == 4 && events[3].id == 0);

    /* Freed with tickets pending (waiting and refused): no callback runs, nothing leaks. */
    who w1 = {.id = 7}, w2 = {.id = 8};
    pgw_admission_release(a, 5);
    acquire(a, 0, &w1);
    acquire(a, 0, &w2);
    pgw_admission_free(a);
    drain(base);
    CHECK(n_events == 4);
    event_base_free(base);
}

/* The timer runs at the priority given: behind every ready default-priority event. */
static int order[4], n_order;
static void default_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    order[n_order++ & 3] = 1;
}
static void granted_cb(pgw_admission_outcome outcome, void *ud)
{
    (void)outcome, (void)ud;
    order[n_order++ & 3] = 2;
}

static void test_priority(void)
{
    struct event_base *base = event_base_new();
    CHECK(event_base_priority_init(base, 3) == 0);
    pgw_admission_options o = {.max_in_flight = 4, .max_queued = 4, .event_priority = 2};
    pgw_admission *a = pgw_admission_new(base, &o);
    struct event *ev = event_new(base, -1, 0, default_cb, NULL);
    event_priority_set(ev, 1);
    pgw_admission_ticket *t;
    n_order = 0;
    CHECK(pgw_admission_acquire(a, 0, granted_cb, NULL, &t) == 0);
    event_active(ev, 0, 0); /* made ready after the grant's timer, yet runs first */
    drain(base);
    CHECK(n_order == 2 && order[0] == 1 && order[1] == 2);
    event_free(ev);
    pgw_admission_free(a);
    event_base_free(base);
}

int main(void)
{
    test_slots_queue_and_fifo();
    test_no_queue();
    test_paced();
    test_deadlines();
    test_estimates();
    test_cancel_and_reentrancy();
    test_priority();
    return pgw_test_finish("test_admission");
}
