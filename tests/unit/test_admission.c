/* The upstream bound: slots and queue bounds, FIFO grants that never run inside acquire or
 * release, grants paced per loop turn, deadline-aware refusals and drops on a test clock,
 * cancellation, callbacks that acquire again, and teardown with tickets waiting (ASan checks
 * leaks). */
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
    int granted;
} events[MAX_EVENTS];
static int n_events;

typedef struct who {
    int id;
    pgw_admission *admission;
    int acquire_again; /* the callback acquires one more ticket (id + 100) */
    struct who *next_who;
} who;

static void record(int granted, void *ud)
{
    who *w = ud;
    if (n_events < MAX_EVENTS) {
        events[n_events].id = w->id;
        events[n_events].granted = granted;
    }
    n_events++;
    if (w->acquire_again && w->next_who) {
        pgw_admission_ticket *t;
        CHECK(pgw_admission_acquire(w->admission, 0, record, w->next_who, &t) ==
              PGW_ADMISSION_QUEUED);
    }
}

/* One loop iteration: every ready event once (a turn grants at most grants_per_turn). */
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

static void test_slots_queue_and_fifo(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 2, 3, 0);
    reset_events();
    who w[6];
    pgw_admission_ticket *t[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (who){.id = i};
    }
    /* Two find a free slot, three wait, the sixth is refused. */
    for (int i = 0; i < 5; i++)
        CHECK(pgw_admission_acquire(a, 0, record, &w[i], &t[i]) == PGW_ADMISSION_QUEUED);
    CHECK(pgw_admission_acquire(a, 0, record, &w[5], &t[5]) == PGW_ADMISSION_QUEUE_FULL);
    CHECK(t[5] == NULL);
    CHECK(n_events == 0); /* never inside acquire */
    pgw_admission_stats st;
    pgw_admission_stats_get(a, &st);
    CHECK(st.queued == 5 && st.in_flight == 0 && st.refused_full == 1);

    drain(base);
    CHECK(n_events == 2);
    CHECK(events[0].id == 0 && events[0].granted == 1);
    CHECK(events[1].id == 1 && events[1].granted == 1);
    pgw_admission_stats_get(a, &st);
    CHECK(st.in_flight == 2 && st.queued == 3);

    /* A release frees a slot; the next in line gets it on a later turn, not inside release. */
    pgw_admission_release(a, 10);
    CHECK(n_events == 2);
    drain(base);
    CHECK(n_events == 3 && events[2].id == 2);
    /* Queue room again: a new ticket is accepted behind the others. */
    CHECK(pgw_admission_acquire(a, 0, record, &w[5], &t[5]) == PGW_ADMISSION_QUEUED);
    pgw_admission_release(a, 10);
    pgw_admission_release(a, 10);
    drain(base);
    CHECK(n_events == 5 && events[3].id == 3 && events[4].id == 4);
    pgw_admission_release(a, 10);
    drain(base);
    CHECK(n_events == 6 && events[5].id == 5);
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
    who w1 = {.id = 1}, w2 = {.id = 2};
    pgw_admission_ticket *t;
    /* max_queued 0: a free slot still admits (the grant is only deferred) ... */
    CHECK(pgw_admission_acquire(a, 0, record, &w1, &t) == PGW_ADMISSION_QUEUED);
    /* ... but nothing may wait for a taken one. */
    CHECK(pgw_admission_acquire(a, 0, record, &w2, &t) == PGW_ADMISSION_QUEUE_FULL);
    drain(base);
    CHECK(n_events == 1 && events[0].id == 1 && events[0].granted == 1);
    CHECK(pgw_admission_acquire(a, 0, record, &w2, &t) == PGW_ADMISSION_QUEUE_FULL);
    pgw_admission_release(a, -1);
    CHECK(pgw_admission_acquire(a, 0, record, &w2, &t) == PGW_ADMISSION_QUEUED);
    drain(base);
    CHECK(n_events == 2 && events[1].id == 2);
    pgw_admission_stats st;
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms == 0); /* -1: no sample */
    pgw_admission_free(a);
    event_base_free(base);
}

static void test_paced_grants(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 100, 100, 4);
    reset_events();
    who w[10];
    pgw_admission_ticket *t;
    for (int i = 0; i < 10; i++) {
        w[i] = (who){.id = i};
        CHECK(pgw_admission_acquire(a, 0, record, &w[i], &t) == PGW_ADMISSION_QUEUED);
    }
    turn(base);
    CHECK(n_events == 4); /* one callback grants at most grants_per_turn */
    turn(base);
    CHECK(n_events == 8);
    turn(base);
    CHECK(n_events == 10);
    for (int i = 0; i < 10; i++)
        CHECK(events[i].id == i && events[i].granted == 1);
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
    pgw_admission_ticket *t;
    /* Before any sample there is no typical time: a short deadline is not refused. */
    CHECK(pgw_admission_acquire(a, fake_now + 10, record, &hold, &t) == PGW_ADMISSION_QUEUED);
    drain(base);
    CHECK(n_events == 1 && events[0].granted == 1);
    pgw_admission_release(a, 1000); /* typical: 1 s */
    CHECK(pgw_admission_acquire(a, 0, record, &hold, &t) == PGW_ADMISSION_QUEUED);
    drain(base);
    CHECK(n_events == 2 && events[1].granted == 1); /* the slot is taken again */

    /* Waiting for the slot (~1 s) plus a typical service (1 s) does not fit in 1.5 s. */
    CHECK(pgw_admission_acquire(a, fake_now + 1500, record, &early, &t) == PGW_ADMISSION_TOO_LATE);
    /* 5 s does; no deadline always does. */
    CHECK(pgw_admission_acquire(a, fake_now + 5000, record, &late_ok, &t) == PGW_ADMISSION_QUEUED);
    CHECK(pgw_admission_acquire(a, 0, record, &no_deadline, &t) == PGW_ADMISSION_QUEUED);
    pgw_admission_stats st;
    pgw_admission_stats_get(a, &st);
    CHECK(st.refused_late == 1 && st.queued == 2);

    /* The slot frees only 4.5 s later: the ticket with 0.5 s left is dropped (no slot taken),
     * the one without a deadline gets the slot. */
    fake_now += 4500;
    pgw_admission_release(a, 1000);
    drain(base);
    CHECK(n_events == 4);
    CHECK(events[2].id == 3 && events[2].granted == 0);
    CHECK(events[3].id == 4 && events[3].granted == 1);
    pgw_admission_stats_get(a, &st);
    CHECK(st.dropped == 1 && st.in_flight == 1 && st.queued == 0);

    /* A deadline already past is dropped even when it never had to wait. */
    pgw_admission_release(a, 1000);
    CHECK(pgw_admission_acquire(a, fake_now - 1, record, &early, &t) == PGW_ADMISSION_QUEUED);
    drain(base);
    CHECK(n_events == 5 && events[4].id == 2 && events[4].granted == 0);
    pgw_admission_free(a);
    event_base_free(base);
}

static void test_typical_is_a_moving_average(void)
{
    struct event_base *base = event_base_new();
    pgw_admission *a = make(base, 1, 1, 0);
    pgw_admission_stats st;
    pgw_admission_release(a, 800);
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms == 800);
    /* One slow sample moves it an eighth of the way. */
    pgw_admission_release(a, 8800);
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms == 1800);
    for (int i = 0; i < 100; i++)
        pgw_admission_release(a, 200);
    pgw_admission_stats_get(a, &st);
    CHECK(st.typical_ms >= 200 && st.typical_ms <= 210);
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
    who first = {.id = 2, .admission = a, .acquire_again = 1, .next_who = &second};
    who gone = {.id = 1}, hold = {.id = 0};
    pgw_admission_ticket *t_hold, *t_gone, *t_first;
    CHECK(pgw_admission_acquire(a, 0, record, &hold, &t_hold) == PGW_ADMISSION_QUEUED);
    CHECK(pgw_admission_acquire(a, 0, record, &gone, &t_gone) == PGW_ADMISSION_QUEUED);
    CHECK(pgw_admission_acquire(a, 0, record, &first, &t_first) == PGW_ADMISSION_QUEUED);
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
    CHECK(n_events == 3 && events[2].id == 102 && events[2].granted == 1);

    /* Freed with tickets waiting: their callbacks never run, nothing leaks. */
    who w1 = {.id = 7}, w2 = {.id = 8};
    pgw_admission_ticket *t;
    CHECK(pgw_admission_acquire(a, 0, record, &w1, &t) == PGW_ADMISSION_QUEUED);
    CHECK(pgw_admission_acquire(a, 0, record, &w2, &t) == PGW_ADMISSION_QUEUED);
    pgw_admission_free(a);
    drain(base);
    CHECK(n_events == 3);
    event_base_free(base);
}

/* The grant event runs at the priority given: behind every ready default-priority event. */
static int order[4], n_order;
static void default_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    order[n_order++ & 3] = 1;
}
static void granted_cb(int granted, void *ud)
{
    (void)granted, (void)ud;
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
    CHECK(pgw_admission_acquire(a, 0, granted_cb, NULL, &t) == PGW_ADMISSION_QUEUED);
    event_active(ev, 0, 0); /* made ready after the grant, yet runs first */
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
    test_paced_grants();
    test_deadlines();
    test_typical_is_a_moving_average();
    test_cancel_and_reentrancy();
    test_priority();
    return pgw_test_finish("test_admission");
}
