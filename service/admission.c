#include "service/admission.h"

#include <event2/event.h>
#include <stdlib.h>

#include "service/clock.h"

#define DEFAULT_GRANTS_PER_TURN 16
/* The typical service time moves 1/2^EWMA_SHIFT of the way to each new sample: a few dozen samples
 * follow a change of upstream latency, one slow call does not swing it. */
#define EWMA_SHIFT 3

/* A waiting ticket: owned by the admission until its callback starts (or it is cancelled). */
struct pgw_admission_ticket {
    pgw_admission *admission;
    pgw_admission_ticket *prev, *next;
    int64_t deadline_ms;
    int waited; /* queued behind taken slots: subject to the deadline check at its turn */
    pgw_admission_cb cb;
    void *user_data;
};

struct pgw_admission {
    pgw_admission_options options;
    /* Zero-delay timer that grants the head of the queue; pending while a grant is possible.
     * A timer, not event_active: libevent would run a re-activated event again in the same
     * pass, before it polls for I/O. */
    struct event *turn;
    pgw_admission_ticket *head, *tail;
    int queued;
    int in_flight;
    int64_t typical_x8; /* the typical hold time in ms << EWMA_SHIFT (fixed point) */
    int has_typical;
    pgw_admission_stats stats;
};

static int64_t now_ms(const pgw_admission *a)
{
    return a->options.now_ms ? a->options.now_ms() : pgw_now_mono_ms();
}

static void unlink_ticket(pgw_admission_ticket *t)
{
    pgw_admission *a = t->admission;
    if (t->prev)
        t->prev->next = t->next;
    else
        a->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        a->tail = t->prev;
    a->queued--;
}

/* Makes sure a turn comes when one could grant or drop something. */
static void schedule_turn(pgw_admission *a)
{
    if (a->head && a->in_flight < a->options.max_in_flight && !evtimer_pending(a->turn, NULL)) {
        struct timeval zero = {0, 0};
        evtimer_add(a->turn, &zero);
    }
}

/* One turn: the first tickets in line get their slot, or are dropped when their deadline no
 * longer leaves a typical service time. Bounded, so a long queue is served over many turns. */
static void on_turn(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pgw_admission *a = arg;
    for (int n = 0; n < a->options.grants_per_turn; n++) {
        pgw_admission_ticket *t = a->head;
        if (!t || a->in_flight >= a->options.max_in_flight)
            break;
        unlink_ticket(t);
        int64_t now = now_ms(a);
        int64_t typical = a->typical_x8 >> EWMA_SHIFT;
        int late = t->deadline_ms &&
                   (now >= t->deadline_ms || (t->waited && now + typical > t->deadline_ms));
        pgw_admission_cb cb = t->cb;
        void *user_data = t->user_data;
        free(t);
        if (late) {
            a->stats.dropped++;
        } else {
            a->in_flight++;
            a->stats.granted++;
        }
        cb(!late, user_data);
    }
    schedule_turn(a);
}

pgw_admission *pgw_admission_new(struct event_base *base, const pgw_admission_options *options)
{
    pgw_admission *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->options = *options;
    if (a->options.max_in_flight < 1)
        a->options.max_in_flight = 1;
    if (a->options.max_queued < 0)
        a->options.max_queued = 0;
    if (a->options.grants_per_turn <= 0)
        a->options.grants_per_turn = DEFAULT_GRANTS_PER_TURN;
    a->turn = evtimer_new(base, on_turn, a);
    if (!a->turn) {
        free(a);
        return NULL;
    }
    if (a->options.event_priority > 0)
        event_priority_set(a->turn, a->options.event_priority);
    return a;
}

void pgw_admission_free(pgw_admission *a)
{
    if (!a)
        return;
    while (a->head) {
        pgw_admission_ticket *t = a->head;
        unlink_ticket(t);
        free(t);
    }
    event_free(a->turn);
    free(a);
}

pgw_admission_verdict pgw_admission_acquire(pgw_admission *a, int64_t deadline_ms,
                                            pgw_admission_cb cb, void *user_data,
                                            pgw_admission_ticket **ticket)
{
    *ticket = NULL;
    int free_slots = a->options.max_in_flight - a->in_flight;
    /* Tickets ahead of this one that will not find a free slot: the ones that wait. */
    int waiting_ahead = a->queued - (free_slots > 0 ? free_slots : 0);
    int waits = waiting_ahead >= 0;
    if (waits && waiting_ahead >= a->options.max_queued) {
        a->stats.refused_full++;
        return PGW_ADMISSION_QUEUE_FULL;
    }
    if (waits && deadline_ms && a->has_typical) {
        /* In steady state a slot frees every typical/max_in_flight ms. */
        int64_t typical = a->typical_x8 >> EWMA_SHIFT;
        int64_t wait = typical * (waiting_ahead + 1) / a->options.max_in_flight;
        if (now_ms(a) + wait + typical > deadline_ms) {
            a->stats.refused_late++;
            return PGW_ADMISSION_TOO_LATE;
        }
    }
    pgw_admission_ticket *t = calloc(1, sizeof(*t));
    if (!t) {
        a->stats.refused_full++;
        return PGW_ADMISSION_QUEUE_FULL;
    }
    t->admission = a;
    t->deadline_ms = deadline_ms;
    t->waited = waits;
    t->cb = cb;
    t->user_data = user_data;
    t->prev = a->tail;
    if (a->tail)
        a->tail->next = t;
    else
        a->head = t;
    a->tail = t;
    a->queued++;
    schedule_turn(a);
    *ticket = t;
    return PGW_ADMISSION_QUEUED;
}

void pgw_admission_cancel(pgw_admission_ticket *t)
{
    if (!t)
        return;
    unlink_ticket(t);
    free(t);
}

void pgw_admission_release(pgw_admission *a, int64_t held_ms)
{
    if (a->in_flight > 0)
        a->in_flight--;
    if (held_ms >= 0) {
        if (!a->has_typical) {
            a->typical_x8 = held_ms << EWMA_SHIFT;
            a->has_typical = 1;
        } else {
            a->typical_x8 += held_ms - (a->typical_x8 >> EWMA_SHIFT);
        }
    }
    schedule_turn(a);
}

void pgw_admission_stats_get(const pgw_admission *a, pgw_admission_stats *out)
{
    *out = a->stats;
    out->in_flight = a->in_flight;
    out->queued = a->queued;
    out->typical_ms = a->has_typical ? a->typical_x8 >> EWMA_SHIFT : 0;
}
